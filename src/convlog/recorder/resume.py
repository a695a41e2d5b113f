"""Where a starting recorder resumes: the log's recovered tail, the highest seq ever
written (seq never repeats), the publishers' last seqs, and the ``recorder.start`` data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from convlog import __version__
from convlog.core.gaps import Gap, GapDetector
from convlog.core.record import MAX_WIRE_INT
from convlog.recorder.config import Config
from convlog.store.checkpoint import CheckpointInfo, list_checkpoints, publishers_start
from convlog.store.clock import Clock
from convlog.store.recovery import RecoveryReport, recover
from convlog.store.segment import (
    RECOVERY,
    STATE_FILE,
    find_record,
    follow,
    iter_records,
    segment_key,
    segment_path,
    segment_size,
)
from convlog.store.state import read_state

log = logging.getLogger("convlog.recorder")


@dataclass
class ResumePoint:
    """What a start found (see :func:`resume_point`).

    Attributes:
        prior: ``recovery/state.json`` as a dict ({} when missing or unusable).
        report: what recovery of the log's tail did.
        checkpoints: the checkpoints on disk, oldest first.
        seq: the highest seq ever written; the next record gets ``seq + 1``.
        lost: ``[first, last]`` seqs written before but missing from the log, or None.
        discarded: what the start could not use, as texts for ``recorder.recovered``.
    """

    prior: dict[str, Any]
    report: RecoveryReport
    checkpoints: list[CheckpointInfo]
    seq: int
    lost: list[int] | None
    discarded: list[str]


def resume_point(directory: Path, clock: Clock) -> ResumePoint:
    """Recover the log's tail and find the seq to continue after (the lock must be held).

    Also floors ``clock`` at the last record's ``ts`` (best effort), so record times
    never go back across a restart.

    Args:
        directory: the log directory.
        clock: the recorder's clock.

    Returns:
        the :class:`ResumePoint`.

    Raises:
        OSError: when the directory cannot be read or repaired.
    """
    discarded: list[str] = []
    prior = usable_state(directory, discarded)
    report = recover(directory, clock)
    if report.reason:
        log.warning(
            "recovered %s: moved %d bytes (%d lines) to quarantine: %s",
            report.segment, report.quarantined_bytes, report.quarantined_lines, report.reason,
        )
    infos = list_checkpoints(directory)
    # seq never repeats: continue after the highest seq ever written, whether the log,
    # the state or a checkpoint knows it (records after the log's end were lost).
    # (a checkpoint counts when its header holds a cut: a stray file's name alone does not)
    cut_seqs = [info.seq for info in infos if info.ts is not None]
    known = [v for v in (prior.get("written_seq"), prior.get("durable_seq"), *cut_seqs[-1:])
             if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_WIRE_INT]
    high = max([report.last_seq, *known])
    lost = [report.last_seq + 1, high] if high > report.last_seq else None
    if lost:
        log.error("the log ends at seq %d but seq %d was written before: records %d..%d are lost; "
                  "continuing at seq %d", report.last_seq, high, lost[0], lost[1], high + 1)
    if report.last_seq:
        with contextlib.suppress(OSError, ValueError):  # the floor is a nicety: never a reason not to start
            last = find_record(directory, report.last_seq)
            if last is not None:
                clock.floor(str(last.get("ts")))
    return ResumePoint(prior, report, infos, high, lost, discarded)


def usable_state(directory: Path, discarded: list[str]) -> dict[str, Any]:
    """``recovery/state.json`` when it can be used; an unreadable one is renamed aside
    (``state.json.unusable-<ns>``, never deleted), noted in ``discarded``, and the start
    goes on without it (from checkpoints and the log).

    Args:
        directory: the log directory.
        discarded: appended to when the file is unusable.

    Returns:
        the state dict, or {} when there is none or it is unusable.
    """
    path = directory / RECOVERY / STATE_FILE
    prior = read_state(directory)
    if prior is not None or not path.exists():
        return prior or {}
    aside = path.with_name(f"{STATE_FILE}.unusable-{time.time_ns()}")
    try:
        os.replace(path, aside)
    except OSError as exc:
        log.error("cannot move the unusable %s aside: %s", path, exc)
        aside = path
    log.error("%s is not a JSON object: kept as %s; rebuilding from checkpoints and the log", path, aside.name)
    discarded.append(f"{STATE_FILE} (unreadable, kept as {aside.name})")
    return {}


def restore_publishers(
    directory: Path, prior: dict[str, Any], last_seq: int, config: Config
) -> tuple[GapDetector, list[Gap]]:
    """Rebuild the publishers' last seqs: the snapshot in state.json (or in the newest
    checkpoint, when that one is newer), then the stamps of the records written after
    it, so messages sent while the recorder was down are reported as gaps by the first
    message after the restart.

    Args:
        directory: the log directory.
        prior: ``recovery/state.json`` as a dict ({} for none).
        last_seq: seq of the last record in the log.
        config: the settings (``max_publishers``; ``fsync`` for a warning).

    Returns:
        ``(detector, unreported)``: the detector to use, and the gaps the records
        reveal whose ``recorder.gap`` record is missing (a crash between the two lines).

    Raises:
        Exception: any error of a damaged state or checkpoint (the caller starts
            without seqs then).
    """
    detector = GapDetector.from_dict(prior.get("publishers"), config.max_publishers)
    as_of = prior.get("publishers_seq")
    as_of = as_of if isinstance(as_of, int) and 0 <= as_of <= last_seq else 0
    if isinstance(prior.get("publishers_seq"), int) and prior["publishers_seq"] > last_seq:
        log.warning(
            "state.json knew records up to seq %d but the log ends at %d: records were lost "
            "(power failure with fsync=%s?)", prior["publishers_seq"], last_seq, config.fsync,
        )
    segment, offset = prior.get("segment"), prior.get("written_offset")
    path = segment_path(directory, str(segment))  # sealed since, perhaps
    if (
        as_of == prior.get("written_seq") and isinstance(offset, int)
        and path.is_file() and segment_size(path) >= offset
    ):
        # Only what was written after the snapshot (nothing, after a clean stop).
        tail: Any = (record for record, _, _ in follow(directory, (segment_key(path), offset)))
    elif (found := publishers_start(directory, last_seq)) is not None and found[2] > as_of:
        # No usable state.json (a crash before it was first written, a lost file):
        # the newest checkpoint's snapshot, then only the records after its cut.
        detector, position, as_of = found
        detector.max_publishers = config.max_publishers
        tail = (record for record, _, _ in follow(directory, position))
    else:
        tail = iter_records(directory, start_seq=as_of + 1)
    unreported = detector.replay(record for record in tail if record["seq"] > as_of)
    return detector, unreported


def start_data(config: Config) -> dict[str, Any]:
    """The ``recorder.start`` record's data: ``{"version", "pid", "host", "zmq",
    "pyzmq", "endpoints": {"sub", "pull"}, "config"}``."""
    return {
        "version": __version__,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "zmq": zmq.zmq_version(),
        "pyzmq": zmq.__version__,
        "endpoints": {"sub": list(config.sub), "pull": config.pull},
        "config": config.summary(),
    }
