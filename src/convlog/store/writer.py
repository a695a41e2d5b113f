"""The segment writer: appends whole lines to the last segment of a log, rotates
segments by size and fsyncs them per policy, and reports its durable position (the
high-water mark) for ``recovery/state.json``.

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
most a torn last line, which :func:`convlog.store.recovery.recover` moves to quarantine.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convlog.core.chain import GENESIS, Chain, record_link
from convlog.core.record import parse_line
from convlog.store.checkpoint import CheckpointError, read_horizon
from convlog.store.fsync import fdatasync, fsync_dir
from convlog.store.segment import (
    EVENTS,
    complete_end,
    ensure_layout,
    is_sealed,
    lines_backwards,
    list_segments,
    segment_name,
)
from convlog.store.state import write_state


def log_head(directory: Path) -> str:
    """The chain link the next record appended to a log follows
    (:mod:`convlog.core.chain`): the ``chain`` of its last record; :data:`GENESIS` when
    that record carries none or is unreadable, or when the log has no record and no
    base; the base's chain when every record is before the horizon.

    Args:
        directory: the log directory (recovered: its last line is whole).

    Returns:
        64 hex digits (or the last record's chain as found).

    Raises:
        OSError: when a segment cannot be read.
    """
    for _, path in reversed(list_segments(directory)):
        for _, line in lines_backwards(path, complete_end(path)):
            try:
                return record_link(parse_line(line)) or GENESIS
            except ValueError:
                return GENESIS
    try:
        horizon = read_horizon(directory)
    except CheckpointError:
        return GENESIS
    return horizon.chain if horizon is not None and horizon.chain else GENESIS


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
        chain: link each record to the one before it (:mod:`convlog.core.chain`): every
            line written gets its ``chain`` member, continuing from :func:`log_head`.
            False: lines are written as given (``[recorder] chain = false``).

    Attributes:
        written_seq / durable_seq: last seq written to the file / known fsynced.
        segment / offset: current segment path and its size in bytes.
        bytes_written: bytes appended by this writer (all segments).
        fsyncs / fsync_seconds: fsyncs done and the seconds they took in total.
        on_fsync: called with each fsync's duration in seconds (for metrics), or None.
        on_rotate: called with the path of a segment just finished by :meth:`rotate`
            (fsynced, no longer written), or None; it runs on the writing thread, so it
            must only hand the path on (the recorder queues it for sealing).
        chain: the :class:`~convlog.core.chain.Chain` linking the lines, or None.
    """

    def __init__(
        self,
        directory: Path,
        next_seq: int,
        segment_bytes: int = 64 * 1024 * 1024,
        fsync: str = "interval",
        interval_ms: int = 50,
        fresh: bool = False,
        chain: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.chain = Chain(log_head(self.directory)) if chain else None
        self.segment_bytes = segment_bytes
        self.policy = fsync
        self.interval_ns = interval_ms * 1_000_000
        self.written_seq = self.durable_seq = next_seq - 1
        self.fsyncs = 0
        self.fsync_seconds = 0.0
        self.bytes_written = 0
        self.on_fsync: Callable[[float], None] | None = None
        self.on_rotate: Callable[[Path], None] | None = None
        self.last_error: OSError | None = None
        self._unsynced_since: int | None = None
        segments = list_segments(self.directory)
        if not fresh and segments and not is_sealed(segments[-1][1]) and segments[-1][1].stat().st_size < segment_bytes:
            self._open(segments[-1][1])
        else:
            self._open(self.directory / EVENTS / segment_name(next_seq))
        self.durable_offset = self.offset

    def _open(self, path: Path) -> None:
        """Make ``path`` the current segment; the previous one (if any) is closed only
        once the new one is open, so a failure leaves the writer on the old one."""
        # 0o666: the process umask gives the configured file_mode (convlog.store.modes)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
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
        """Append whole lines ending with the record ``last_seq``, linked into the chain
        first when :attr:`chain` is set (a write that fails leaves the chain's head as
        it was, so the same lines can be given again).

        Under ``always`` pass one record per call: it is fsynced before returning.

        Raises:
            OSError: when the bytes could not be written (disk full, file-size limit,
                I/O error). The segment is then cut back to its last whole record, as if
                nothing had been written, so the caller can retry the same bytes. A
                failed fsync or rotation after a successful write does not raise: it is
                kept in ``last_error`` and retried by the next :meth:`sync`/write.
        """
        chain = self.chain
        head = None
        if chain is not None:
            head = chain.head
            data = chain.link_lines(data)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            if len(view) != len(data):
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self.offset)
            if chain is not None:
                chain.head = head  # type: ignore[assignment]
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
        fdatasync(self._fd)
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
        finished = self.segment
        self._open(self.directory / EVENTS / segment_name(self.written_seq + 1))
        self.durable_offset = self.offset
        if self.on_rotate is not None and finished != self.segment:
            self.on_rotate(finished)

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
