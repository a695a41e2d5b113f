"""Recovery of a log directory after a crash: validate the tail of the last segment,
move torn and invalid lines to ``recovery/quarantine.jsonl`` and cut or rewrite the
segment so it ends with whole, valid records (:func:`recover`); the pure tail checks
(:func:`scan_tail`, :func:`sort_tail`) and the last seq of a closed segment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from convlog.core.record import encode_bytes, parse_line
from convlog.store.clock import Clock
from convlog.store.fsync import fsync_dir
from convlog.store.seal import settle
from convlog.store.segment import (
    QUARANTINE_FILE,
    RECOVERY,
    ensure_layout,
    is_sealed,
    lines_backwards,
    list_segments,
    open_segment,
    segment_size,
)
from convlog.store.state import read_state


@dataclass(slots=True)
class RecoveryReport:
    """What :func:`recover` found and did.

    Attributes:
        last_seq: seq of the last valid record (0 for an empty log).
        segment: name of the last segment, or None when there is none.
        offset: byte length of that segment after repair.
        was_clean: the previous writer marked a clean shutdown.
        quarantined_bytes: bytes moved to quarantine (0 when the tail was whole).
        quarantined_lines: lines (whole or torn) among them.
        reason: why they were moved (the first reason, and how many more), or None.
        scanned_bytes: bytes of the tail that were validated.
        kept_after: valid records kept that came after a quarantined line (the segment
            was rewritten without the bad lines), 0 when only a tail was cut.
        seq_gaps: ``[first, last]`` seq ranges missing between the kept records.
    """

    last_seq: int
    segment: str | None
    offset: int
    was_clean: bool
    quarantined_bytes: int = 0
    quarantined_lines: int = 0
    reason: str | None = None
    scanned_bytes: int = 0
    kept_after: int = 0
    seq_gaps: list[list[int]] = field(default_factory=list)

    def as_data(self) -> dict[str, Any]:
        """The report as the ``data`` of a ``recorder.recovered`` record."""
        return {
            "last_seq": self.last_seq,
            "segment": self.segment,
            "offset": self.offset,
            "previous_shutdown": "clean" if self.was_clean else "unclean",
            "quarantined_bytes": self.quarantined_bytes,
            "quarantined_lines": self.quarantined_lines,
            "reason": self.reason,
            "scanned_bytes": self.scanned_bytes,
            "kept_after": self.kept_after,
            "seq_gaps": self.seq_gaps,
        }


def last_seq_in(path: Path) -> int:
    """Seq of the last valid record of a closed segment (0 if it has none).

    Reads backwards from the end; an invalid last line (corruption inside a segment
    that was fsynced at rotation, which ``convlog verify`` reports) is stepped over
    rather than trusted or allowed to stop recovery.
    """
    with open_segment(path) as fh:
        size = fh.seek(0, 2)
        chunk = 4096
        while True:
            start = max(0, size - chunk)
            fh.seek(start)
            data = fh.read(size - start)
            lines = data.split(b"\n")
            if start > 0:
                lines = lines[1:]  # maybe cut in the middle
            for line in reversed(lines):
                if line.strip():
                    try:
                        return parse_line(line)["seq"]
                    except ValueError:
                        continue
            if start == 0:
                return 0
            chunk *= 4


def scan_tail(data: bytes, expected_seq: int) -> tuple[int, int, str | None]:
    """Validate the lines of a segment tail. Pure.

    Args:
        data: bytes from a record boundary to the end of the segment.
        expected_seq: the seq the first line must have.

    Returns:
        ``(valid_bytes, last_seq, reason)``: the length of the valid prefix, the seq of
        its last record (``expected_seq - 1`` when none), and why the rest is invalid
        (None when everything is valid).
    """
    pos = 0
    seq = expected_seq - 1
    length = len(data)
    while pos < length:
        end = data.find(b"\n", pos)
        if end < 0:
            return pos, seq, f"torn line: {length - pos} bytes without a newline"
        try:
            record = parse_line(data[pos:end])
        except ValueError as exc:
            return pos, seq, f"invalid record: {exc}"
        if record["seq"] != seq + 1:
            return pos, seq, f"seq {record['seq']} where {seq + 1} was expected"
        seq = record["seq"]
        pos = end + 1
    return pos, seq, None


@dataclass(slots=True)
class TailSort:
    """A segment tail sorted into whole records to keep and lines to quarantine (see
    :func:`sort_tail`).

    Attributes:
        keep: ``(start, end)`` byte spans of the lines to keep, in order.
        bad: ``(start, end, reason)`` byte spans to quarantine, in order; a torn last
            line (no newline) is the last one.
        last_seq: seq of the last kept record (``expected_seq - 1`` when none).
        seq_gaps: ``[first, last]`` seqs missing between kept records (a record whose
            line was unreadable, or seqs that jumped).
    """

    keep: list[tuple[int, int]]
    bad: list[tuple[int, int, str]]
    last_seq: int
    seq_gaps: list[list[int]]

    def first_bad(self) -> int | None:
        """Start of the first span to quarantine, or None when there is none."""
        return self.bad[0][0] if self.bad else None


def sort_tail(data: bytes, expected_seq: int) -> TailSort:
    """Sort the lines of a segment tail into records to keep and lines to quarantine. Pure.

    A line is kept when it is a whole record (:func:`convlog.core.record.parse_line`)
    whose seq is above every seq kept before it; anything else goes to quarantine: a
    torn last line (bytes after the last newline), a line that is not a record, or a
    record whose seq does not move forward (a repeated or older seq). A valid record
    after a bad line is kept: one unreadable line never costs the records after it.

    Args:
        data: bytes from a record boundary to the end of the segment.
        expected_seq: the seq the first record should have.

    Returns:
        a :class:`TailSort`.
    """
    keep: list[tuple[int, int]] = []
    bad: list[tuple[int, int, str]] = []
    gaps: list[list[int]] = []
    seq = expected_seq - 1
    pos, length = 0, len(data)
    while pos < length:
        end = data.find(b"\n", pos)
        if end < 0:
            bad.append((pos, length, f"torn line: {length - pos} bytes without a newline"))
            break
        try:
            record = parse_line(data[pos:end])
        except ValueError as exc:
            bad.append((pos, end + 1, f"invalid record: {exc}"))
        else:
            if record["seq"] <= seq:
                bad.append((pos, end + 1, f"seq {record['seq']} after seq {seq}"))
            else:
                if record["seq"] > seq + 1:
                    gaps.append([seq + 1, record["seq"] - 1])
                seq = record["seq"]
                keep.append((pos, end + 1))
        pos = end + 1
    return TailSort(keep, bad, seq, gaps)


def recover(directory: Path, clock: Clock | None = None) -> RecoveryReport:
    """Bring a log directory to a consistent end: the last segment holds only whole,
    valid, gapless records. The caller must hold the :class:`convlog.store.lock.LogLock`.

    Starts from the durable position in ``recovery/state.json`` when it names the
    last segment and falls on a record boundary (everything before it was fsynced and
    validated), else from the start of the last segment. The lines after it are sorted
    by :func:`sort_tail`: only a torn tail and lines that are not whole records with a
    seq moving forward are appended to ``recovery/quarantine.jsonl`` (one JSON line
    each: time, segment, offset, reason, bytes as ``text`` or ``base64``, fsynced);
    then the segment is truncated, or, when valid records follow a bad line, rewritten
    without the bad lines (temporary file, fsync, rename). A valid record is never
    quarantined. The state file only says where to start: the seq expected there is
    read from the record before it, not taken from the file.

    Args:
        directory: the log directory.
        clock: time source for the quarantine entry.

    Returns:
        a :class:`RecoveryReport`.

    Raises:
        OSError: when the directory cannot be read or repaired.
    """
    directory = Path(directory)
    ensure_layout(directory)
    state = read_state(directory) or {}
    was_clean = bool(state.get("clean"))
    settle(directory)  # what a crash while sealing a segment left
    segments = list_segments(directory)
    # Drop empty trailing segments (created just before a crash) from consideration.
    while segments and segments[-1][1].stat().st_size == 0 and len(segments) > 1:
        segments[-1][1].unlink()
        segments.pop()
    if not segments:
        return RecoveryReport(last_seq=0, segment=None, offset=0, was_clean=was_clean)
    first_seq, path = segments[-1]
    if is_sealed(path):  # sealed: complete when sealed, nothing to repair (the next segment starts fresh)
        return RecoveryReport(last_seq=last_seq_in(path), segment=path.name.removesuffix(".zst"),
                              offset=segment_size(path), was_clean=was_clean)
    start, expected = 0, first_seq
    if (
        state.get("segment") == path.name
        and isinstance(state.get("durable_offset"), int)
        and isinstance(state.get("durable_seq"), int)
        and 0 < state["durable_offset"] <= path.stat().st_size
    ):
        # Trusted only when it ends a whole record (a damaged or foreign state.json
        # could name any offset): the seq expected next is that record's seq + 1.
        before = _record_before(path, state["durable_offset"])
        if before is not None:
            start, expected = state["durable_offset"], before + 1
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(start)
        tail = fh.read()
    found = sort_tail(tail, expected)
    last_seq = found.last_seq
    if not found.keep and start == 0 and len(segments) > 1:
        for _, earlier in reversed(segments[:-1]):
            last_seq = last_seq_in(earlier)
            if last_seq:
                break
    report = RecoveryReport(last_seq=last_seq, segment=path.name, offset=size, was_clean=was_clean,
                            scanned_bytes=len(tail), seq_gaps=found.seq_gaps)
    first_bad = found.first_bad()
    if first_bad is None:
        return report
    reasons = [reason for _, _, reason in found.bad]
    reason = reasons[0] + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "")
    if not found.keep and start == 0 and len(segments) > 1 and last_seq + 1 != first_seq:
        reason = f"{reason}; previous segment ends at seq {last_seq}"
    _quarantine(directory, path.name, start, tail, found.bad, clock or Clock())
    kept_after = [(a, b) for a, b in found.keep if a > first_bad]
    if kept_after:
        # Valid records after a bad line: rewrite the segment without the bad lines
        # (a new file renamed over the old one, so a crash leaves one or the other).
        _rewrite_segment(path, start + first_bad, b"".join(tail[a:b] for a, b in kept_after))
    else:
        with path.open("r+b") as fh:
            fh.truncate(start + first_bad)
            fh.flush()
            os.fsync(fh.fileno())
    bad_bytes = sum(b - a for a, b, _ in found.bad)
    report.offset = start + first_bad + sum(b - a for a, b in kept_after)
    report.quarantined_bytes = bad_bytes
    report.quarantined_lines = len(found.bad)
    report.kept_after = len(kept_after)
    report.reason = reason
    return report


def _record_before(path: Path, offset: int) -> int | None:
    """The seq of the record whose line ends exactly at ``offset``, or None when the
    byte before ``offset`` is not a newline or that line is not a record."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset - 1)
            if fh.read(1) != b"\n":
                return None
        for _start, line in lines_backwards(path, offset):
            return parse_line(line)["seq"]
    except (OSError, ValueError):
        return None
    return None


def _quarantine(directory: Path, segment: str, start: int, tail: bytes, bad: list[tuple[int, int, str]],
                clock: Clock) -> None:
    """Append each bad span to ``recovery/quarantine.jsonl`` (one JSON line each: time,
    segment, offset, reason, bytes as ``text`` or ``base64``) and fsync it."""
    entries = []
    ts = clock.now()
    for a, b, reason in bad:
        encoded, _ = encode_bytes(tail[a:b])
        entries.append(orjson.dumps({"ts": ts, "segment": segment, "offset": start + a, "reason": reason,
                                     "bytes": b - a, **encoded}) + b"\n")
    with (directory / RECOVERY / QUARANTINE_FILE).open("ab") as q:
        q.write(b"".join(entries))
        q.flush()
        os.fsync(q.fileno())


def _rewrite_segment(path: Path, cut: int, rest: bytes) -> None:
    """Replace ``path`` by its first ``cut`` bytes followed by ``rest``: a temporary file,
    fsync, rename over ``path``, fsync of the directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.rewrite")
    with path.open("rb") as src, tmp.open("wb") as dst:
        remaining = cut
        while remaining:
            chunk = src.read(min(remaining, 1 << 20))
            if not chunk:
                break
            dst.write(chunk)
            remaining -= len(chunk)
        dst.write(rest)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
