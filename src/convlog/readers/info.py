"""``convlog info``: what a log directory holds, like ``ros2 bag info``.

It answers from the newest checkpoint plus the records after it, not by reading the
whole log: the fold's state (:class:`convlog.core.fold.State`, which a checkpoint
carries) counts records by kind, and its :class:`~convlog.core.fold.Tally` by source,
the messages' own times and drops; the checkpoint's header holds the publishers'
stamps as the recorder follows them (:class:`convlog.core.gaps.GapDetector`). The
records after the checkpoint are folded and observed in one pass, so the counts and
the sessions describe the same records even while a recorder appends. The time span
comes from the first record of the log and the last one folded (``ts`` never goes
back in seq order), records per segment from the segments' names (seqs run +1 across
segments), sizes from file sizes; checkpoints, disk use and quarantine from the
directory. With no usable checkpoint the pass folds from the log's first record; with
one written before the tally was kept (state format 2) it also reads the records the
checkpoint covers, only to count them. When retention let the oldest segments go, the
counts of the log's base (``base.json``) are taken off, so the figures describe the
records the log holds (the sessions stay those of the whole fold, and the messages' own
times span every message folded, those let go of included). Nothing is cached.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from convlog.core.fold import Gap, State, Tally, fold
from convlog.core.gaps import GapDetector
from convlog.store.checkpoint import BASE_FILE, Start, best_start, list_checkpoints, load_checkpoint, read_horizon
from convlog.store.replay import NoLogError
from convlog.store.segment import (
    CHECKPOINTS,
    EVENTS,
    QUARANTINE_FILE,
    RECOVERY,
    bytes_from,
    find_record,
    follow,
    iter_records,
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


def publisher_rows(publishers: GapDetector, gaps: list[Gap], base: GapDetector | None = None
                   ) -> list[dict[str, Any]]:
    """One dict per publisher (id, messages, last stamp seq, missing, restarts,
    duplicates, last record seq, missing according to the ``recorder.gap`` records
    folded into ``gaps``), sorted by id; publishers known only from gap records are
    included. With ``base`` (the stamps as of the log's base), its counts are taken
    off, so that the rows count the records the log holds; a publisher seen only
    before the base is left out."""
    gap_missing: Counter[str] = Counter()
    for gap in gaps:
        if gap.publisher is not None:
            gap_missing[gap.publisher] += gap.last - gap.first + 1
    rows = []
    for pid in sorted(set(publishers.publishers) | set(gap_missing)):
        state = publishers.publishers.get(pid)
        before = base.publishers.get(pid) if base is not None else None
        row = {
            "id": pid,
            "messages": (state.messages if state else 0) - (before.messages if before else 0),
            "last_stamp_seq": state.seq if state else None,
            "missing": (state.missing if state else 0) - (before.missing if before else 0),
            "restarts": (state.restarts if state else 0) - (before.restarts if before else 0),
            "duplicates": (state.duplicates if state else 0) - (before.duplicates if before else 0),
            "last_record": state.last_record if state else None,
            "gap_missing": gap_missing.get(pid, 0),
        }
        if before is None or any(row[k] for k in ("messages", "missing", "restarts", "duplicates", "gap_missing")):
            rows.append(row)
    return rows


@dataclass(frozen=True, slots=True)
class _Counts:
    """The counters of a state as of the log's base, taken off the figures so that they
    describe the records the log holds (retention let the earlier ones go).

    Attributes:
        seq: the base's last seq.
        records, kinds: the state's counts.
        sources, dropped: its tally's, or None when the figures do not include them.
        publishers: the stamps as of the base, or None.
    """

    seq: int
    records: int
    kinds: dict[str, int]
    sources: dict[str, int] | None
    dropped: int
    publishers: GapDetector | None


def _counts(state: State, publishers: GapDetector | None) -> _Counts:
    tally = state.tally
    return _Counts(state.last_seq, state.records, dict(state.kinds), None if tally is None else dict(tally.sources),
                   0 if tally is None else tally.dropped,
                   None if publishers is None else GapDetector.from_dict(publishers.to_dict()))


def _base_counts(directory: Path, start: Start) -> _Counts | None:
    """The counts as of the log's base (``base.json``), or None when it has none."""
    horizon = read_horizon(directory)
    if horizon is None:
        return None
    if start.checkpoint is not None and start.checkpoint == horizon.path:
        return None  # taken by the caller before folding on
    _cut, state = load_checkpoint(horizon.path)
    with horizon.path.open("rb") as fh:
        header = orjson.loads(fh.readline())
    stamps = header.get("publishers") if isinstance(header, dict) else None
    return _counts(state, GapDetector.from_dict(stamps) if isinstance(stamps, dict) else None)


def _less(counts: dict[str, int], base: dict[str, int]) -> dict[str, int]:
    """``counts`` minus ``base``, without the keys left at 0, sorted."""
    return dict(sorted((key, n - base.get(key, 0)) for key, n in counts.items() if n - base.get(key, 0) > 0))


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


def gather(directory: Path, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Describe a log directory from its newest usable checkpoint and the records after
    it (see the module doc).

    Args:
        directory: the log directory.
        progress: called as ``progress(bytes read, bytes to read)`` about every MiB of
            the records read after the checkpoint (decompressed bytes), and once at the end.

    Returns:
        a JSON-friendly dict: ``directory``; ``records``, ``first_seq``, ``last_seq``;
        ``first_ts``, ``last_ts``, ``duration_s`` (receive times); ``own`` (the
        messages' own times: ``records``, ``first_ts``, ``last_ts``, ``duration_s``);
        ``by_kind``, ``by_source``;
        ``sessions`` (``live``, ``deleted``, ``forks``, ``from_checkpoint``);
        ``read`` (what was read after it: ``records``, ``bytes``);
        ``publishers`` (see :func:`publisher_rows`), ``unverified``;
        ``gaps`` (``records``, ``missing``); ``drops`` (``records``, ``messages``);
        ``read_errors`` (invalid lines among those read); ``segments`` (``name``,
        ``first_seq``, ``bytes``, ``records``); ``checkpoints`` (``count``,
        ``bytes``, ``labelled``, ``newest``); ``disk`` (per part: ``bytes``,
        ``allocated``, ``files``; and ``total``); ``quarantine`` (see
        :func:`quarantine_summary`).

    Raises:
        NoLogError: when the directory has no segment.
        OSError: when a file cannot be read.
    """
    directory = Path(directory)
    if not list_segments(directory):
        raise NoLogError.in_directory(directory)
    start = best_start(directory)
    state, publishers, position = start.state, start.publishers, start.position
    covered = state.last_seq  # records up to it are folded into the checkpoint's state
    base = _base_counts(directory, start)
    if base is None and start.checkpoint is not None and start.checkpoint.name == BASE_FILE:
        base = _counts(state, publishers)  # the fold starts at the base: its counts as they are now
    recount_tally, recount_publishers = state.tally is None, publishers is None
    if recount_tally or recount_publishers:
        # A checkpoint from before the tally (state format 2), or without the publishers'
        # stamps: the records it covers are read too, only to count them.
        position = None
    tally = state.tally = state.tally if state.tally is not None else Tally()
    publishers = publishers if publishers is not None else GapDetector()
    errors: list[dict[str, Any]] = []
    total = bytes_from(directory, 1) if position is None else _bytes_after(directory, position)
    done = reported = read = counted = 0
    before, current, last = 0, None, None  # bytes of the segments finished, the segment read, the last record
    for record, segment, offset in follow(
        directory, position, on_error=lambda s, n, r: errors.append({"segment": s, "line": n, "reason": r})
    ):
        seq = record["seq"]
        if seq > covered:
            fold(state, record)
            publishers.observe_record(record)
            last = record
        elif seq > counted:  # as the fold counted it when the checkpoint was written
            counted = seq
            if recount_tally:
                tally.add(record, record["kind"])
            if recount_publishers:
                publishers.observe_record(record)
        read += 1
        if segment != current:
            if current is not None:
                before = done
            current, skipped = segment, (position[1] if position and segment == position[0] else 0)
        done = before + offset - skipped
        if progress is not None and done - reported >= _PROGRESS_STEP:
            progress(done, max(total, done))
            reported = done
    if progress is not None:
        progress(done, max(total, done))
    first = next(iter_records(directory), None)
    if last is None and state.last_seq:
        last = find_record(directory, state.last_seq)
    first_ts = first.get("ts") if first is not None and isinstance(first.get("ts"), str) else None
    last_ts = last.get("ts") if last is not None and isinstance(last.get("ts"), str) else None
    infos = state.session_list(include_deleted=True)
    gaps = [gap for gap in state.gaps if base is None or gap.seq > base.seq]
    segments = list_segments(directory)
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
        "records": state.records - (base.records if base else 0),
        "first_seq": first["seq"] if first is not None else 0,
        "last_seq": state.last_seq,
        "first_ts": first_ts,
        "last_ts": last_ts,
        "duration_s": _span_s(first_ts, last_ts),
        "own": {
            "records": tally.own_messages,
            "first_ts": tally.first_own,
            "last_ts": tally.last_own,
            "duration_s": _span_s(tally.first_own, tally.last_own),
        },
        "by_kind": _less(state.kinds, base.kinds if base else {}),
        "by_source": _less(tally.sources, base.sources if base and base.sources is not None else {}),
        "sessions": {
            "live": sum(1 for s in infos if s.deleted_seq is None),
            "deleted": sum(1 for s in infos if s.deleted_seq is not None),
            "forks": sum(1 for s in infos if s.parent is not None),
            "from_checkpoint": start.checkpoint.name if start.checkpoint else None,
        },
        "read": {"records": read, "bytes": done},
        "publishers": publisher_rows(publishers, gaps, base.publishers if base else None),
        "unverified": publishers.unverified - (base.publishers.unverified if base and base.publishers else 0),
        "gaps": {"records": state.kinds.get("recorder.gap", 0) - (base.kinds.get("recorder.gap", 0) if base else 0),
                 "missing": sum(gap.last - gap.first + 1 for gap in gaps)},
        "drops": {"records": state.kinds.get("recorder.dropped", 0) - (base.kinds.get("recorder.dropped", 0)
                                                                       if base else 0),
                  "messages": tally.dropped - (base.dropped if base and base.sources is not None else 0)},
        "read_errors": errors,
        "segments": [
            {"name": path.name, "first_seq": first_seq, "bytes": _size(path),
             "records": max(0, (segments[i + 1][0] if i + 1 < len(segments) else state.last_seq + 1) - first_seq)}
            for i, (first_seq, path) in enumerate(segments)
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


def _bytes_after(directory: Path, position: tuple[str, int]) -> int:
    """Bytes of the log after ``position`` (``(segment key, offset)``), decompressed."""
    segments = list_segments(directory)
    keys = [segment_key(path) for _, path in segments]
    name, offset = segment_key(position[0]), position[1]
    if name not in keys:
        return 0
    return bytes_from(directory, segments[keys.index(name)][0]) - offset


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
