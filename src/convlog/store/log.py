"""The event log on disk, as one import: the names of :mod:`convlog.store.segment`
(layout, names, reading), :mod:`convlog.store.writer` (the segment writer and its fsync
policies), :mod:`convlog.store.recovery` (recover, quarantine),
:mod:`convlog.store.state` (``recovery/state.json``), :mod:`convlog.store.lock` (the
directory lock) and :mod:`convlog.store.fsync`, re-exported unchanged.

New code imports from those modules; this one keeps the earlier import path working.
"""

from __future__ import annotations

from convlog.store.fsync import fsync_dir, write_atomic
from convlog.store.lock import LogLock, LogLockedError
from convlog.store.recovery import RecoveryReport, TailSort, last_seq_in, recover, scan_tail, sort_tail
from convlog.store.segment import (
    BACKWARD_CHUNK,
    CHECKPOINTS,
    EVENTS,
    LOCK_FILE,
    QUARANTINE_FILE,
    RECOVERY,
    SEGMENT_SUFFIX,
    SEQ_DIGITS,
    STATE_FILE,
    bytes_from,
    complete_end,
    ensure_layout,
    find_record,
    follow,
    iter_lines,
    iter_records,
    lines_backwards,
    list_segments,
    read_seqs,
    scan_for_seq,
    segment_first_seq,
    segment_name,
    segments_from,
)
from convlog.store.state import read_state, write_state
from convlog.store.writer import SegmentWriter

__all__ = [
    "BACKWARD_CHUNK",
    "CHECKPOINTS",
    "EVENTS",
    "LOCK_FILE",
    "QUARANTINE_FILE",
    "RECOVERY",
    "SEGMENT_SUFFIX",
    "SEQ_DIGITS",
    "STATE_FILE",
    "LogLock",
    "LogLockedError",
    "RecoveryReport",
    "SegmentWriter",
    "TailSort",
    "bytes_from",
    "complete_end",
    "ensure_layout",
    "find_record",
    "follow",
    "fsync_dir",
    "iter_lines",
    "iter_records",
    "last_seq_in",
    "lines_backwards",
    "list_segments",
    "read_seqs",
    "read_state",
    "recover",
    "scan_for_seq",
    "scan_tail",
    "segment_first_seq",
    "segment_name",
    "segments_from",
    "sort_tail",
    "write_atomic",
    "write_state",
]
