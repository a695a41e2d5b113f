"""``convlog info``: what a log directory holds, like ``ros2 bag info``.

One pass over every record (:class:`LogTally`, pure: records in, counts out) gives the
time span, records by kind and by source, records per segment, the publishers seen in
loss-detection stamps (:class:`convlog.core.gaps.GapDetector`, as the recorder follows them)
and in ``recorder.gap`` records, gaps and drops. Sessions come from the fold
(:func:`convlog.store.replay.load`, which starts from the newest matching checkpoint and is
cut at the last seq the pass saw, so both describe the same log). Checkpoints, disk
use and quarantine are read from the directory. Nothing is cached: every call reads
the log again.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from convlog.core.gaps import GapDetector
from convlog.core.view import own_time
from convlog.store.checkpoint import list_checkpoints, read_horizon
from convlog.store.replay import NoLogError, load
from convlog.store.segment import (
    CHECKPOINTS,
    EVENTS,
    QUARANTINE_FILE,
    RECOVERY,
    follow,
    list_segments,
    segment_key,
)

#: The parts of a log directory whose disk use is reported on their own; anything else
#: is counted as ``other``. ``index`` holds derived search indexes.
DISK_PARTS = (EVENTS, CHECKPOINTS, "index", RECOVERY)
#: Bytes read between two progress updates.
_PROGRESS_STEP = 1 << 20


def _span_s(first: str | None, last: str | None) -> float | None:
    """Seconds from ``first`` to ``last`` (RFC 3339 texts), or None when either is
    missing or not a time."""
    if first is None or last is None:
        return None
    try:
        start = datetime.fromisoformat(first.replace("Z", "+00:00"))
        end = datetime.fromisoformat(last.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (end - start).total_seconds()


def _count(value: Any) -> int:
    """A non-negative integer field of a recorder record, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(slots=True)
class LogTally:
    """Counts over the records of a log, fed in seq order. Pure: no I/O.

    Attributes:
        records: records counted.
        first_seq, last_seq: lowest and highest seq seen (0 when none).
        first_ts, last_ts: earliest and latest receive time (RFC 3339 text, which
            compares as time), or None.
        own_records, first_own_ts, last_own_ts: messages that carry a time of their own
            (:func:`convlog.core.view.own_time`: a legacy ``Timestamp``, a payload
            ``timestamp``/``ts``/``created_at``), and the earliest and latest of those
            times: for imported data, when the conversation happened.
        by_kind, by_source: records per kind and per source (``None`` source as ``-``).
        by_segment: records per segment file name.
        publishers: the stamps of bus records (``sub``/``pull``) followed as the
            recorder follows them (messages, last seq, missing, restarts, duplicates).
        gap_records, gap_missing: ``recorder.gap`` records and the messages they say
            are missing (``data.missing``); ``gaps_by_publisher`` the same per publisher.
        drop_records, dropped: ``recorder.dropped`` records and the messages they say
            were dropped (``data.messages``).
    """

    records: int = 0
    first_seq: int = 0
    last_seq: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    own_records: int = 0
    first_own_ts: str | None = None
    last_own_ts: str | None = None
    by_kind: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    by_segment: Counter[str] = field(default_factory=Counter)
    publishers: GapDetector = field(default_factory=GapDetector)
    gap_records: int = 0
    gap_missing: int = 0
    gaps_by_publisher: Counter[str] = field(default_factory=Counter)
    drop_records: int = 0
    dropped: int = 0

    def add(self, record: dict[str, Any], segment: str) -> None:
        """Count one record (as :func:`convlog.core.record.parse_line` returns it) read from
        ``segment``."""
        seq = record["seq"]
        kind = record["kind"]
        self.records += 1
        if not self.first_seq or seq < self.first_seq:
            self.first_seq = seq
        self.last_seq = max(self.last_seq, seq)
        ts = record.get("ts")
        if isinstance(ts, str):
            if self.first_ts is None or ts < self.first_ts:
                self.first_ts = ts
            if self.last_ts is None or ts > self.last_ts:
                self.last_ts = ts
        if kind == "message":
            own = own_time(record)
            if own is not None:
                self.own_records += 1
                if self.first_own_ts is None or own < self.first_own_ts:
                    self.first_own_ts = own
                if self.last_own_ts is None or own > self.last_own_ts:
                    self.last_own_ts = own
        self.by_kind[kind] += 1
        source = record.get("source")
        self.by_source[source if isinstance(source, str) else "-"] += 1
        self.by_segment[segment] += 1
        self.publishers.observe_record(record)
        data = record.get("data")
        if kind == "recorder.gap" and isinstance(data, dict):
            missing = _count(data.get("missing"))
            self.gap_records += 1
            self.gap_missing += missing
            publisher = data.get("publisher")
            self.gaps_by_publisher[publisher if isinstance(publisher, str) else "-"] += missing
        elif kind == "recorder.dropped" and isinstance(data, dict):
            self.drop_records += 1
            self.dropped += _count(data.get("messages"))

    def duration_s(self) -> float | None:
        """Seconds from the earliest to the latest receive time, or None when the times
        are missing or not RFC 3339."""
        return _span_s(self.first_ts, self.last_ts)

    def own_duration_s(self) -> float | None:
        """Seconds from the earliest to the latest of the messages' own times, or None
        when no message carries one."""
        return _span_s(self.first_own_ts, self.last_own_ts)

    def publisher_rows(self) -> list[dict[str, Any]]:
        """One dict per publisher (id, messages, last stamp seq, missing, restarts,
        duplicates, last record seq, missing according to ``recorder.gap`` records),
        sorted by id; publishers known only from gap records are included."""
        ids = set(self.publishers.publishers) | {p for p in self.gaps_by_publisher if p != "-"}
        rows = []
        for pid in sorted(ids):
            state = self.publishers.publishers.get(pid)
            rows.append({
                "id": pid,
                "messages": state.messages if state else 0,
                "last_stamp_seq": state.seq if state else None,
                "missing": state.missing if state else 0,
                "restarts": state.restarts if state else 0,
                "duplicates": state.duplicates if state else 0,
                "last_record": state.last_record if state else None,
                "gap_missing": self.gaps_by_publisher.get(pid, 0),
            })
        return rows


@dataclass(frozen=True, slots=True)
class DiskUse:
    """Bytes under one part of a log directory: apparent size (sum of file sizes),
    allocated size (``st_blocks`` x 512, what ``du`` shows) and file count."""

    bytes: int
    allocated: int
    files: int

    def as_dict(self) -> dict[str, int]:
        """The figures as a JSON-friendly dict."""
        return {"bytes": self.bytes, "allocated": self.allocated, "files": self.files}


def disk_use(path: Path) -> DiskUse:
    """Total size of the regular files under ``path`` (a file or a directory; symlinks
    and sockets not counted). Files that vanish while counted are left out. Zero when
    it does not exist."""
    size = allocated = files = 0
    walked = ([Path(root) / name for root, _dirs, names in os.walk(path) for name in names]
              if not path.is_file() else [path])
    for item in walked:
        try:
            st = item.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        size += st.st_size
        allocated += st.st_blocks * 512
        files += 1
    return DiskUse(size, allocated, files)


def quarantine_summary(directory: Path) -> dict[str, int]:
    """What ``recovery/quarantine.jsonl`` holds: its size (bytes), entries (lines),
    bytes salvaged (the entries' ``bytes`` fields) and unreadable entries."""
    path = Path(directory) / RECOVERY / QUARANTINE_FILE
    out = {"file_bytes": 0, "entries": 0, "salvaged_bytes": 0, "unreadable_entries": 0}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return out
    out["file_bytes"] = len(data)
    for line in data.splitlines():
        if not line.strip():
            continue
        out["entries"] += 1
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            out["unreadable_entries"] += 1
            continue
        out["salvaged_bytes"] += _count(entry.get("bytes")) if isinstance(entry, dict) else 0
    return out


def gather(
    directory: Path,
    progress: Callable[[int], None] | None = None,
    fold_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Describe a log directory (reads every record once, then folds from the newest
    matching checkpoint).

    Args:
        directory: the log directory.
        progress: called with the bytes of the log read since its last call (for a
            progress bar over the segments' total size).
        fold_progress: passed to :func:`convlog.store.replay.load` (bytes folded, bytes to
            fold after the checkpoint it starts from).

    Returns:
        a JSON-friendly dict: ``directory``; ``records``, ``first_seq``, ``last_seq``;
        ``first_ts``, ``last_ts``, ``duration_s`` (receive times); ``own`` (the
        messages' own times: ``records``, ``first_ts``, ``last_ts``, ``duration_s``);
        ``by_kind``, ``by_source``;
        ``sessions`` (``live``, ``deleted``, ``forks``, ``from_checkpoint``);
        ``publishers`` (see :meth:`LogTally.publisher_rows`), ``unverified``;
        ``gaps`` (``records``, ``missing``); ``drops`` (``records``, ``messages``);
        ``read_errors``; ``segments`` (``name``, ``first_seq``, ``bytes``,
        ``records``); ``checkpoints`` (``count``, ``bytes``, ``labelled``,
        ``newest``); ``disk`` (per part: ``bytes``, ``allocated``, ``files``; and
        ``total``); ``quarantine`` (see :func:`quarantine_summary`).

    Raises:
        NoLogError: when the directory has no segment.
        OSError: when a file cannot be read.
    """
    directory = Path(directory)
    if not list_segments(directory):
        raise NoLogError.in_directory(directory)
    tally = LogTally()
    errors: list[dict[str, Any]] = []
    finished = reported = 0  # bytes of the segments already read; bytes reported
    current, current_end = None, 0
    for record, segment, offset in follow(
        directory, None, on_error=lambda s, n, r: errors.append({"segment": s, "line": n, "reason": r})
    ):
        tally.add(record, segment)
        if progress is not None:
            if segment != current:
                finished += current_end
                current = segment
            current_end = offset
            if finished + offset - reported >= _PROGRESS_STEP:
                progress(finished + offset - reported)
                reported = finished + offset
    if progress is not None and finished + current_end > reported:
        progress(finished + current_end - reported)
    # The fold covers exactly the records counted above, even while a recorder appends.
    replay = load(directory, upto_seq=tally.last_seq, progress=fold_progress) if tally.last_seq else None
    infos = replay.state.session_list(include_deleted=True) if replay else []
    checkpoints = list_checkpoints(directory)
    newest = checkpoints[-1] if checkpoints else None
    disk = {part: disk_use(directory / part) for part in DISK_PARTS}
    everything = disk_use(directory)
    other = DiskUse(
        everything.bytes - sum(d.bytes for d in disk.values()),
        everything.allocated - sum(d.allocated for d in disk.values()),
        everything.files - sum(d.files for d in disk.values()),
    )
    return {
        "directory": str(directory),
        "records": tally.records,
        "first_seq": tally.first_seq,
        "last_seq": tally.last_seq,
        "first_ts": tally.first_ts,
        "last_ts": tally.last_ts,
        "duration_s": tally.duration_s(),
        "own": {
            "records": tally.own_records,
            "first_ts": tally.first_own_ts,
            "last_ts": tally.last_own_ts,
            "duration_s": tally.own_duration_s(),
        },
        "by_kind": dict(sorted(tally.by_kind.items())),
        "by_source": dict(sorted(tally.by_source.items())),
        "sessions": {
            "live": sum(1 for s in infos if s.deleted_seq is None),
            "deleted": sum(1 for s in infos if s.deleted_seq is not None),
            "forks": sum(1 for s in infos if s.parent is not None),
            "from_checkpoint": replay.checkpoint.name if replay and replay.checkpoint else None,
        },
        "publishers": tally.publisher_rows(),
        "unverified": tally.publishers.unverified,
        "gaps": {"records": tally.gap_records, "missing": tally.gap_missing},
        "drops": {"records": tally.drop_records, "messages": tally.dropped},
        "read_errors": errors,
        "segments": [
            {"name": path.name, "first_seq": first, "bytes": _size(path),
             "records": tally.by_segment.get(segment_key(path), 0)}
            for first, path in list_segments(directory)
        ],
        "checkpoints": {
            "count": len(checkpoints),
            "bytes": sum(info.size for info in checkpoints),
            "labelled": [info.label for info in checkpoints if info.label],
            "newest": None if newest is None else {
                "file": newest.path.name, "seq": newest.seq, "ts": newest.ts, "label": newest.label,
            },
        },
        "disk": {
            **{part: use.as_dict() for part, use in disk.items()},
            "other": other.as_dict(),
            "total": everything.as_dict(),
        },
        "quarantine": quarantine_summary(directory),
        "horizon": horizon_summary(directory),
    }


def horizon_summary(directory: Path) -> dict[str, Any] | None:
    """The log's horizon, when retention let its oldest segments go: ``{"seq"`` (the last
    record let go of), ``"ts"`` (its receive time), ``"pruned"`` (what went: segments,
    records, bytes, first/last seq and time, action, archive_dir, at)``}``, or None.

    Raises:
        CheckpointError: when the base cannot be read.
    """
    horizon = read_horizon(directory)
    if horizon is None:
        return None
    return {"seq": horizon.seq, "ts": horizon.ts, "pruned": horizon.pruned}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
