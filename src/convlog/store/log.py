"""The event log on disk: segments, the writer, the reader, recovery and the lock.

Layout of a log directory (DESIGN.md, "The event log")::

    events/<first seq, 20 digits>.jsonl   segments; only the last one is written
    recovery/state.json                   last durable position, clean-shutdown flag
    recovery/quarantine.jsonl             bytes salvaged from torn or invalid lines
    recovery/recorder.lock                held (flock) by the one running writer

Durability (``fsync`` policy of :class:`SegmentWriter`):

``always``
    every record is written and fsynced on its own before the next is written. A
    power failure loses only the record being written (and what libzmq still held).
``interval`` (default)
    group commit: records are written as they arrive (so a crash of the recorder
    process loses nothing written) and fsynced together at most ``interval_ms``
    (default 50 ms) after the first unsynced write. A power failure loses at most
    the records of the last ``interval_ms`` plus the duration of one fsync.
``never``
    records are written but fsynced only at rotation and clean stop; the kernel
    writes them back on its own schedule (Linux: ``vm.dirty_expire_centisecs``,
    30 s by default). A power failure can lose that much.

In every policy a record is one ``write`` of whole lines, so a crash can leave at
most a torn last line, which :func:`recover` moves to quarantine.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from convlog.core.record import encode_bytes, parse_line
from convlog.store.clock import Clock

EVENTS = "events"
RECOVERY = "recovery"
CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
QUARANTINE_FILE = "quarantine.jsonl"
LOCK_FILE = "recorder.lock"
SEGMENT_SUFFIX = ".jsonl"
SEQ_DIGITS = 20


#: fdatasync(2) where the platform has it: it flushes the data and the metadata needed
#: to read it back (the file size) but not the modification time, like PostgreSQL's
#: default ``wal_sync_method``. Elsewhere fsync.
_fdatasync = getattr(os, "fdatasync", os.fsync)


class LogLockedError(Exception):
    """Another process holds the writer lock of a log directory.

    Attributes:
        holder: what the holder wrote in the lock file (pid, host, started, command),
            or an empty dict when it could not be read.
    """

    def __init__(self, directory: Path, holder: dict[str, Any]) -> None:
        self.directory, self.holder = directory, holder
        who = f"pid {holder.get('pid', '?')}"
        if holder.get("host"):
            who += f" on {holder['host']}"
        if holder.get("started"):
            who += f" since {holder['started']}"
        super().__init__(f"{directory} is already being written by {who} ({LOCK_FILE})")


def segment_name(first_seq: int) -> str:
    """File name of the segment whose first record has ``first_seq``."""
    return f"{first_seq:0{SEQ_DIGITS}d}{SEGMENT_SUFFIX}"


def segment_first_seq(name: str) -> int | None:
    """The first seq a segment file name stands for (``00000000000000000042.jsonl`` ->
    42), or None when the name is not a segment's."""
    stem = name.removesuffix(SEGMENT_SUFFIX)
    return int(stem) if name.endswith(SEGMENT_SUFFIX) and stem.isdigit() else None


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """The segments of a log directory.

    Args:
        directory: the log directory.

    Returns:
        ``[(first_seq, path), ...]`` sorted by first seq; files whose name is not a
        seq are ignored.
    """
    events = Path(directory) / EVENTS
    out = []
    if events.is_dir():
        for path in events.iterdir():
            first = segment_first_seq(path.name)
            if first is not None:
                out.append((first, path))
    out.sort()
    return out


def fsync_dir(path: Path) -> None:
    """fsync a directory so a file created or renamed in it survives power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, rename, fsync dir.

    Raises:
        OSError: when any step fails (the old file is then left as it was).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_state(directory: Path) -> dict[str, Any] | None:
    """Read ``recovery/state.json``; None when missing or unreadable."""
    try:
        value = orjson.loads((Path(directory) / RECOVERY / STATE_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def write_state(directory: Path, state: dict[str, Any]) -> None:
    """Write ``recovery/state.json`` atomically (see :func:`write_atomic`), compact JSON
    (``jq .`` shows it indented).

    Raises:
        OSError: when it cannot be written (the old file is left as it was).
        TypeError: when ``state`` holds a value JSON cannot carry.
    """
    write_atomic(Path(directory) / RECOVERY / STATE_FILE, orjson.dumps(state))


def ensure_layout(directory: Path) -> None:
    """Create the directory and its ``events``, ``recovery`` and ``checkpoints`` parts."""
    for part in (EVENTS, RECOVERY, CHECKPOINTS):
        (Path(directory) / part).mkdir(parents=True, exist_ok=True)


class LogLock:
    """The exclusive writer lock of a log directory (``flock`` on
    ``recovery/recorder.lock``). The kernel releases it when the holder dies, even by
    kill -9, so a stale lock file never blocks a restart.

    Args:
        directory: the log directory (created if missing).
        command: a description of the holder, written into the lock file.

    Raises:
        LogLockedError: from :meth:`acquire` when another process holds it.
    """

    def __init__(self, directory: Path, command: str = "convlog record") -> None:
        self.directory = Path(directory)
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> LogLock:
        """Take the lock without waiting; returns self."""
        ensure_layout(self.directory)
        path = self.directory / RECOVERY / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = orjson.loads(os.pread(fd, 65536, 0) or b"{}")
            except orjson.JSONDecodeError:
                holder = {}
            os.close(fd)
            raise LogLockedError(self.directory, holder if isinstance(holder, dict) else {}) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": Clock().now(),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps(info), 0)
        self._fd = fd
        return self

    @staticmethod
    def last_holder(directory: Path) -> dict[str, Any] | None:
        """What the last holder wrote in ``recovery/recorder.lock`` (pid, host, started,
        command), whether or not it still holds the lock (see :meth:`is_held`).

        Returns:
            the holder's dict, or None when there is no readable lock file or it names
            no integer pid.
        """
        try:
            holder = orjson.loads((Path(directory) / RECOVERY / LOCK_FILE).read_bytes() or b"{}")
        except (OSError, orjson.JSONDecodeError):
            return None
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None

    @staticmethod
    def is_held(directory: Path) -> bool:
        """Whether some process holds the writer lock of ``directory`` right now: a
        non-blocking ``flock`` probe, released at once (the lock file's pid only names
        the last holder, which may have released it and still be alive).

        Returns:
            False when there is no lock file or nobody holds it.
        """
        path = Path(directory) / RECOVERY / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a probe lock taken
        return False

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LogLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


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
    size = path.stat().st_size
    with path.open("rb") as fh:
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
    valid, gapless records. The caller must hold the :class:`LogLock`.

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
    segments = list_segments(directory)
    # Drop empty trailing segments (created just before a crash) from consideration.
    while segments and segments[-1][1].stat().st_size == 0 and len(segments) > 1:
        segments[-1][1].unlink()
        segments.pop()
    if not segments:
        return RecoveryReport(last_seq=0, segment=None, offset=0, was_clean=was_clean)
    first_seq, path = segments[-1]
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


class SegmentWriter:
    """Appends whole lines to the last segment, rotating and fsyncing per policy.

    Args:
        directory: the log directory (already recovered; the caller holds the lock).
        next_seq: the seq the next record will carry (``RecoveryReport.last_seq + 1``).
        segment_bytes: rotate once a segment reaches this size (bytes); rotation
            happens at the first record boundary after it.
        fsync: ``always``, ``interval`` or ``never`` (see the module doc).
        interval_ms: the group-commit bound for ``interval``, milliseconds.
        fresh: start a new segment named by ``next_seq`` even when the last one has
            room (the log does not end at ``next_seq - 1``: seqs known to be lost are
            not reused).

    Attributes:
        written_seq / durable_seq: last seq written to the file / known fsynced.
        segment / offset: current segment path and its size in bytes.
        bytes_written: bytes appended by this writer (all segments).
        fsyncs / fsync_seconds: fsyncs done and the seconds they took in total.
        on_fsync: called with each fsync's duration in seconds (for metrics), or None.
    """

    def __init__(
        self,
        directory: Path,
        next_seq: int,
        segment_bytes: int = 64 * 1024 * 1024,
        fsync: str = "interval",
        interval_ms: int = 50,
        fresh: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.policy = fsync
        self.interval_ns = interval_ms * 1_000_000
        self.written_seq = self.durable_seq = next_seq - 1
        self.fsyncs = 0
        self.fsync_seconds = 0.0
        self.bytes_written = 0
        self.on_fsync: Callable[[float], None] | None = None
        self.last_error: OSError | None = None
        self._unsynced_since: int | None = None
        segments = list_segments(self.directory)
        if not fresh and segments and segments[-1][1].stat().st_size < segment_bytes:
            self._open(segments[-1][1])
        else:
            self._open(self.directory / EVENTS / segment_name(next_seq))
        self.durable_offset = self.offset

    def _open(self, path: Path) -> None:
        """Make ``path`` the current segment; the previous one (if any) is closed only
        once the new one is open, so a failure leaves the writer on the old one."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        old, self._fd = getattr(self, "_fd", -1), fd
        if old >= 0:
            os.close(old)
        self.segment = path
        self.offset = os.fstat(fd).st_size
        fsync_dir(path.parent)

    def check_file(self) -> str | None:
        """Whether the current segment is still the file this writer appends to: not
        deleted, not replaced by another file, not cut shorter than what was written
        (compares the open descriptor's inode and size with the path's).

        Returns:
            None when it is, else what happened (``"deleted"``, ``"replaced by another
            file"``, ``"truncated to N bytes (M written)"``).
        """
        try:
            on_disk = os.stat(self.segment)
        except FileNotFoundError:
            return "deleted"
        except OSError as exc:
            return f"unreadable ({exc.strerror or exc})"
        mine = os.fstat(self._fd)
        if (on_disk.st_dev, on_disk.st_ino) != (mine.st_dev, mine.st_ino):
            return "replaced by another file"
        if mine.st_size < self.offset:
            return f"truncated to {mine.st_size} bytes ({self.offset} written)"
        return None

    def restart_segment(self) -> Path:
        """Start a new segment named by the next seq after a :meth:`check_file` problem
        (the events directory is created again if it went too). A foreign file already
        at that name is moved aside (``<name>.foreign-<ns>``), never overwritten.

        Returns:
            the new segment's path.

        Raises:
            OSError: when it cannot be created (the writer stays on the old file).
        """
        ensure_layout(self.directory)
        path = self.directory / EVENTS / segment_name(self.written_seq + 1)
        if path.exists():
            os.replace(path, path.with_name(f"{path.name}.foreign-{time.time_ns()}"))
        self._open(path)
        self.durable_offset = self.offset
        self.durable_seq = self.written_seq
        self._unsynced_since = None
        return path

    def write(self, data: bytes, last_seq: int) -> None:
        """Append whole lines ending with the record ``last_seq``.

        Under ``always`` pass one record per call: it is fsynced before returning.

        Raises:
            OSError: when the bytes could not be written (disk full, file-size limit,
                I/O error). The segment is then cut back to its last whole record, as if
                nothing had been written, so the caller can retry the same bytes. A
                failed fsync or rotation after a successful write does not raise: it is
                kept in ``last_error`` and retried by the next :meth:`sync`/write.
        """
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            if len(view) != len(data):
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self.offset)
            raise
        self.offset += len(data)
        self.bytes_written += len(data)
        self.written_seq = last_seq
        try:
            if self.policy == "always":
                self.sync()
            elif self._unsynced_since is None:
                self._unsynced_since = time.monotonic_ns()
            if self.offset >= self.segment_bytes:
                self.rotate()
        except OSError as exc:
            self.last_error = exc

    def due_ns(self) -> int | None:
        """Nanoseconds until the group commit is due (0: now), or None if nothing waits."""
        if self._unsynced_since is None or self.policy != "interval":
            return None
        return max(0, self._unsynced_since + self.interval_ns - time.monotonic_ns())

    def maybe_sync(self) -> bool:
        """fsync when the ``interval`` group commit is due; True when it synced."""
        due = self.due_ns()
        if due == 0:
            self.sync()
            return True
        return False

    def sync(self) -> None:
        """fsync (fdatasync) the current segment now; everything written becomes durable."""
        if self.durable_seq == self.written_seq and self.durable_offset == self.offset:
            self._unsynced_since = None
            return
        started = time.perf_counter()
        _fdatasync(self._fd)
        took = time.perf_counter() - started
        self.fsync_seconds += took
        self.fsyncs += 1
        if self.on_fsync is not None:
            self.on_fsync(took)
        self.durable_seq = self.written_seq
        self.durable_offset = self.offset
        self._unsynced_since = None

    def rotate(self) -> None:
        """Close the current segment (fsynced) and start one named by the next seq."""
        self.sync()
        self._open(self.directory / EVENTS / segment_name(self.written_seq + 1))
        self.durable_offset = self.offset

    def save_state(self, clean: bool, ts: str, extra: dict[str, Any] | None = None) -> None:
        """Write ``recovery/state.json`` atomically: format, this writer's durable
        position, the clean-shutdown flag, pid and time (``ts``), over ``extra`` (fields
        other writers keep there, such as the recorder's publisher snapshot).

        Raises:
            OSError: when it cannot be written.
        """
        write_state(self.directory, self.state_fields(clean, ts, extra))

    def state_fields(self, clean: bool, ts: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The content :meth:`save_state` writes, as a dict (to be written later, for
        instance by another thread, with :func:`write_state`)."""
        return {**(extra or {}), "format": 1, **self.position(), "clean": clean, "pid": os.getpid(), "updated": ts}

    def position(self) -> dict[str, Any]:
        """The durable and the written position in the current segment, for
        ``recovery/state.json``."""
        return {
            "segment": self.segment.name,
            "durable_offset": self.durable_offset,
            "durable_seq": self.durable_seq,
            "written_seq": self.written_seq,
            "written_offset": self.offset,
        }

    def close(self) -> None:
        """fsync and close."""
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1


def iter_records(
    directory: Path,
    start_seq: int = 1,
    upto_seq: int | None = None,
    on_error: Callable[[str, int, str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the records of a log in seq order.

    Starts at the segment holding ``start_seq`` (segments are named by first seq), so
    reading the end of a long log does not scan it all; see :func:`follow` for torn
    and invalid lines.

    Args:
        directory: the log directory.
        start_seq: first seq wanted.
        upto_seq: last seq wanted (inclusive), or None for all.
        on_error: callback for invalid lines: ``(segment name, line number, reason)``.

    Yields:
        record dicts as :func:`convlog.core.record.parse_line` returns them.
    """
    segments = list_segments(directory)
    if not segments:
        return
    index = max(0, bisect.bisect_right([first for first, _ in segments], start_seq) - 1)
    for record, _segment, _offset in follow(directory, (segments[index][1].name, 0), on_error):
        seq = record["seq"]
        if seq < start_seq:
            continue
        if upto_seq is not None and seq > upto_seq:
            return
        yield record


def segments_from(directory: Path, start_seq: int) -> list[Path]:
    """The segment paths from the one holding ``start_seq`` on (bisect over the names)."""
    segments = list_segments(directory)
    index = max(0, bisect.bisect_right([first for first, _ in segments], start_seq) - 1)
    return [path for _first, path in segments[index:]]


def iter_lines(
    directory: Path, start_seq: int = 1, progress: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """Yield the whole lines (with their LF) of a log, in order, from the segment that
    holds ``start_seq`` (segments are named by their first seq).

    A torn last line of the last segment (a write in progress) is not yielded; a torn
    line inside an earlier segment is skipped. Lines are not validated: parse them with
    :func:`convlog.core.record.parse_line`.

    Args:
        directory: the log directory.
        start_seq: the first seq wanted (earlier lines of its segment are yielded too).
        progress: called with the bytes read since its last call (about every 1 MiB).

    Yields:
        line bytes.
    """
    pending = 0
    for path in segments_from(directory, start_seq):
        with path.open("rb") as fh:
            for line in fh:
                pending += len(line)
                if progress is not None and pending >= 1 << 20:
                    progress(pending)
                    pending = 0
                if line.endswith(b"\n"):
                    yield line
    if progress is not None and pending:
        progress(pending)


def bytes_from(directory: Path, start_seq: int = 1) -> int:
    """Bytes :func:`iter_lines` reads from ``start_seq`` on (for a progress bar's total)."""
    total = 0
    for path in segments_from(directory, start_seq):
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def _seq_at(fh: Any, offset: int, size: int) -> tuple[int, int, bytes] | None:
    """The first whole record starting at or after ``offset``: ``(start, seq, line)``,
    or None when there is none before ``size``. Invalid lines are stepped over."""
    fh.seek(offset)
    if offset:
        fh.readline()  # the rest of a line cut in the middle
    while True:
        start = fh.tell()
        if start >= size:
            return None
        line = fh.readline()
        if not line.endswith(b"\n"):
            return None
        try:
            return start, parse_line(line)["seq"], line
        except ValueError:
            continue


def find_record(directory: Path, seq: int) -> dict[str, Any] | None:
    """The record with ``seq``, found without scanning: the segment by its name (first
    seq, bisect), then the line by binary search over byte offsets (records are sorted
    by seq inside a segment). About log2(segment size / line size) reads.

    Returns:
        the record, or None when the log has no record ``seq``.
    """
    segments = list_segments(directory)
    index = bisect.bisect_right([first for first, _ in segments], seq) - 1
    if index < 0:
        return None
    path = segments[index][1]
    size = path.stat().st_size
    with path.open("rb") as fh:
        low, high = 0, size  # invariant: the line of ``seq``, if any, starts in [low, high)
        while high - low > 4096:
            middle = (low + high) // 2
            found = _seq_at(fh, middle, high)
            if found is None or found[1] > seq:
                high = middle
            elif found[1] == seq:
                return parse_line(found[2])
            else:
                low = found[0]
        fh.seek(low)  # 0 or the start of a line found above
        return scan_for_seq(fh, seq)


def scan_for_seq(fh: Any, seq: int, limit: int | None = None) -> dict[str, Any] | None:
    """Read complete lines from ``fh``'s position (a line start) until the record
    ``seq``: records are sorted by seq inside a segment, so it stops at a higher seq.
    Invalid lines are passed over.

    Args:
        fh: a segment opened in binary mode, positioned at a line start.
        seq: the seq wanted.
        limit: lines read at most (None: to the end).

    Returns:
        the record, or None when it is not there.
    """
    for number, line in enumerate(fh):
        if (limit is not None and number >= limit) or not line.endswith(b"\n"):
            break
        try:
            record = parse_line(line)
        except ValueError:
            continue
        if record["seq"] == seq:
            return record
        if record["seq"] > seq:
            break
    return None


def read_seqs(directory: Path, seqs: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Fetch the records with the given seqs.

    A few seqs spread over a long log are looked up one by one (:func:`find_record`);
    many seqs close together are read in one forward pass.

    Returns:
        ``{seq: record}`` for those found.
    """
    wanted = sorted(set(seqs))
    if not wanted:
        return {}
    span = wanted[-1] - wanted[0] + 1
    if len(wanted) * 64 < span:
        out = {}
        for seq in wanted:
            record = find_record(directory, seq)
            if record is not None:
                out[seq] = record
        return out
    out = {}
    want = set(wanted)
    for record in iter_records(directory, start_seq=wanted[0], upto_seq=wanted[-1]):
        if record["seq"] in want:
            out[record["seq"]] = record
    return out


def follow(
    directory: Path,
    position: tuple[str, int] | None = None,
    on_error: Callable[[str, int, str], None] | None = None,
) -> Iterator[tuple[dict[str, Any], str, int]]:
    """Yield the complete records after a byte position, with the position after each.

    Args:
        directory: the log directory.
        position: ``(segment name, byte offset)`` just after the last record already
            seen, or None to start at the beginning of the log.

    Yields:
        ``(record, segment name, offset after its line)``. Stops at the end of what is
        written; an incomplete last line (a write in progress) is left for the next
        call. Invalid lines are skipped and reported to ``on_error(segment name,
        line number, reason)``; line numbers count from the start position.
    """
    segments = list_segments(directory)
    names = [path.name for _, path in segments]
    if position is None:
        index, offset = 0, 0
    else:
        name, offset = position
        if name not in names:
            return
        index = names.index(name)
    last = segments[-1][1] if segments else None
    for _, path in segments[index:]:
        with path.open("rb") as fh:
            fh.seek(offset)
            for number, line in enumerate(fh, 1):
                if not line.endswith(b"\n"):
                    if path == last:
                        return  # a write in progress: the next call reads it whole
                    if on_error is not None:
                        on_error(path.name, number, f"torn line: {len(line)} bytes without a newline")
                    break
                offset += len(line)
                try:
                    record = parse_line(line)
                except ValueError as exc:
                    if on_error is not None:
                        on_error(path.name, number, str(exc))
                    continue
                yield record, path.name, offset
        offset = 0


# -- reading from the end ---------------------------------------------------------------------

#: First read size when reading a segment backwards, bytes (doubled up to 4 MiB per read).
BACKWARD_CHUNK = 1 << 16


def complete_end(path: Path, chunk: int | None = None) -> int:
    """Byte offset just after the last newline of a segment (0 when it has none): the
    end of its complete lines; a line still being written is not included. Reads
    backwards from the end in chunks of ``chunk`` bytes (default ``BACKWARD_CHUNK``, 64 KiB), doubling.

    Raises:
        OSError: when the file cannot be read.
    """
    with path.open("rb") as fh:
        pos = fh.seek(0, 2)
        chunk = chunk or BACKWARD_CHUNK
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            data = fh.read(pos - start)
            cut = data.rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            pos = start
            chunk = min(chunk * 2, 1 << 22)
    return 0


def lines_backwards(path: Path, end: int, chunk: int | None = None) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a segment before byte ``end`` (a line boundary), newest
    first, read from the end in chunks of ``chunk`` bytes (default ``BACKWARD_CHUNK``, 64 KiB), doubling up
    to 4 MiB (a longer line is assembled from several chunks).

    Yields:
        ``(byte offset of the line, line bytes with its newline)``.

    Raises:
        OSError: when the file cannot be read.
    """
    with path.open("rb") as fh:
        pos, rest, chunk = end, b"", chunk or BACKWARD_CHUNK
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            data = fh.read(pos - start) + rest
            pieces = data.split(b"\n")
            offsets = [start]
            for piece in pieces[:-1]:
                offsets.append(offsets[-1] + len(piece) + 1)
            rest = pieces[0]  # may begin before ``start``: completed by the next chunk
            for offset, line in zip(reversed(offsets[1:]), reversed(pieces[1:]), strict=True):
                if line.strip():
                    yield offset, line + b"\n"
            pos = start
            chunk = min(chunk * 2, 1 << 22)
        if rest.strip():
            yield 0, rest + b"\n"
