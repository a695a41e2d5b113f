"""The durable writer: whole lines into the segments, group commit, and disk faults.

Wraps :class:`convlog.store.writer.SegmentWriter` (which appends, rotates and fsyncs) with
what the recorder does when the disk misbehaves: while writes fail, lines are held in
memory in order and retried with a doubling back-off; past ``held_bytes`` new messages
are dropped (counted, given no seq); once a write succeeds again a ``recorder.degraded``
(and ``recorder.dropped``) record says what happened. A failed group-commit fsync or
rotation, and a segment deleted, replaced or truncated under the writer, are noted in
:class:`convlog.recorder.faults.Faults` for status.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from collections.abc import Callable
from typing import Any

from convlog.recorder.faults import Faults
from convlog.store.clock import Clock
from convlog.store.recovery import last_seq_in
from convlog.store.segment import segment_first_seq
from convlog.store.writer import SegmentWriter

log = logging.getLogger("convlog.recorder")

#: Retry of failed writes: first after this many seconds, doubling up to the maximum.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0

#: Writes one of the recorder's own records: ``append(kind, data)``.
Append = Callable[[str, dict[str, Any]], Any]


def describe(exc: OSError) -> str:
    """``ENOSPC: No space left on device``-style text for an OSError.

    Args:
        exc: the error; its ``errno`` names it (``OSError`` when it has none).

    Returns:
        ``"NAME: strerror"`` (the exception's text when it has no strerror).
    """
    name = errno.errorcode.get(exc.errno or 0, "OSError")
    return f"{name}: {exc.strerror or exc}"


class DurableWriter:
    """Writes lines to the log, holding them in memory while writes fail.

    Args:
        clock: the recorder's clock (times in the degraded/dropped records).
        held_bytes: bound of the bytes held while writes fail; past it messages are dropped.
        faults: where fsync/rotation failures and lost segments are noted.

    Attributes:
        segment_writer: the open :class:`SegmentWriter` (None before ``open`` and after
            ``close`` of the recorder); the receive loop reads its ``policy``,
            ``segment_bytes`` and ``offset`` to cut batches at the segment limit.
        held: lines (whole, each ending in a newline) waiting for a write to succeed.
        held_bytes: their size, bytes.
        held_seq: seq of the last line held.
        degraded: while writes fail, ``{"since", "error", "retries", "first_seq"}``; else None.
        dropped: while messages are dropped, ``{"messages", "bytes_bound", "since",
            "after_seq", "by_source"}``; else None.
        dropped_total: messages dropped since start.
        next_retry: monotonic time of the next retry, seconds.
    """

    def __init__(self, clock: Clock, held_bytes: int, faults: Faults) -> None:
        self.clock = clock
        self.bound = held_bytes
        self.faults = faults
        self.segment_writer: SegmentWriter | None = None
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.held_seq = 0
        self.degraded: dict[str, Any] | None = None
        self.dropped: dict[str, Any] | None = None
        self.dropped_total = 0
        self._backoff_s = RETRY_FIRST_S
        self.next_retry = 0.0

    @property
    def full(self) -> bool:
        """True when the held bytes reached their bound (new messages are dropped)."""
        return self.held_bytes >= self.bound

    def write(self, data: bytes, last_seq: int) -> None:
        """Write whole lines, or hold them in memory while writes fail (in order: once
        anything is held, later lines queue behind it until :meth:`retry` succeeds).

        Args:
            data: one or more complete lines (bytes ending in a newline).
            last_seq: seq of the last line in ``data``.

        Never raises OSError: a failed write starts holding (logged, status degraded).
        """
        if not self.held:
            try:
                self.segment_writer.write(data, last_seq)  # type: ignore[union-attr]
                return
            except OSError as exc:
                self.degraded = {"since": self.clock.now(), "error": describe(exc), "retries": 0,
                                 "first_seq": last_seq - data.count(b"\n") + 1}
                self._backoff_s = RETRY_FIRST_S
                self.next_retry = time.monotonic() + self._backoff_s
                log.error(
                    "cannot write to %s (%s): holding records in memory (up to %d bytes) and retrying",
                    self.segment_writer.segment, describe(exc), self.bound,  # type: ignore[union-attr]
                )
        self.held.append(data)
        self.held_bytes += len(data)
        self.held_seq = last_seq

    def retry(self, append: Append) -> None:
        """Try to write what is held; on success write, through ``append``, a
        ``recorder.degraded`` record (and a ``recorder.dropped`` one) saying what happened.
        A failure doubles the back-off (up to :data:`RETRY_MAX_S`) and is logged.

        Args:
            append: writes one of the recorder's own records, ``append(kind, data)``.
        """
        assert self.segment_writer is not None and self.degraded is not None
        try:
            self.segment_writer.write(b"".join(self.held), self.held_seq)
        except OSError as exc:
            self.degraded["retries"] += 1
            self.degraded["error"] = describe(exc)
            self._backoff_s = min(self._backoff_s * 2, RETRY_MAX_S)
            self.next_retry = time.monotonic() + self._backoff_s
            log.warning(
                "still cannot write (%s): %d records (%d bytes) held%s; next try in %.1f s", describe(exc),
                self.held_seq - self.degraded["first_seq"] + 1, self.held_bytes,
                f", {self.dropped['messages']} messages dropped" if self.dropped else "", self._backoff_s,
            )
            return
        degraded, dropped = self.degraded, self.dropped
        degraded.update(until=self.clock.now(), held_records=self.held_seq - degraded["first_seq"] + 1,
                        held_bytes=self.held_bytes, last_seq=self.held_seq)
        self.held.clear()
        self.held_bytes = 0
        self.degraded = self.dropped = None
        log.warning("writing again: %d held records written", degraded["held_records"])
        append("recorder.degraded", degraded)
        if dropped is not None:
            dropped["until"] = degraded["until"]
            append("recorder.dropped", dropped)
            log.error("%d messages were dropped while writes failed (held bytes at the bound)", dropped["messages"])

    def count_dropped(self, source: str, count: int, after_seq: int) -> None:
        """Count ``count`` messages from ``source`` dropped past the bound; they get no
        seq (seq stays gapless) and a ``recorder.dropped`` record counts them once
        writes succeed again.

        Args:
            source: ``"sub"`` or ``"pull"``.
            count: messages dropped (> 0).
            after_seq: seq of the last record written before them (kept from the first drop).
        """
        if self.dropped is None:
            self.dropped = {"messages": 0, "bytes_bound": self.bound, "since": self.clock.now(),
                            "after_seq": after_seq, "by_source": {}}
        self.dropped["messages"] += count
        self.dropped_total += count
        by_source = self.dropped["by_source"]
        by_source[source] = by_source.get(source, 0) + count

    def lost_text(self) -> str:
        """What is lost when held records can never be written, for the stop.

        Returns:
            ``"N records (seq A..B) could not be written: ERROR"``.
        """
        assert self.degraded is not None
        return (
            f"{self.held_seq - self.degraded['first_seq'] + 1} records "
            f"(seq {self.degraded['first_seq']}..{self.held_seq}) could not be written: {self.degraded['error']}"
        )

    def sync_if_due(self) -> None:
        """Group commit when due; a failed fsync or rotation is logged, makes status
        unhealthy (``faults.file_errors["segment"]``), and is retried at the next one."""
        writer = self.segment_writer
        assert writer is not None
        file_errors = self.faults.file_errors
        try:
            synced = writer.maybe_sync()
        except OSError as exc:
            writer.last_error = exc
            synced = False
        if writer.last_error is not None:
            text = describe(writer.last_error)
            if "segment" not in file_errors:
                log.error("fsync/rotation of %s failed: %s (retrying)", writer.segment, text)
            file_errors["segment"] = f"fsync or rotation of {writer.segment.name} failed: {text}"
            writer.last_error = None
        elif synced and file_errors.pop("segment", None) is not None:
            log.warning("fsync of %s works again", writer.segment.name)

    def check_segment(self, append: Append) -> bool:
        """Notice a segment deleted, replaced or truncated under the writer (compares the
        open file with the path): start a fresh segment at the next seq, write (through
        ``append``) ``recorder.degraded`` naming the records lost, and keep status
        unhealthy until a restart acknowledges it (``faults.lost_segments``).

        Args:
            append: writes one of the recorder's own records, ``append(kind, data)``.

        Returns:
            True when a segment went away and a new one was started (the caller saves
            the state soon), else False.
        """
        writer = self.segment_writer
        assert writer is not None
        problem = writer.check_file()
        if problem is None:
            return False
        old = writer.segment
        first = segment_first_seq(old.name) or 0
        lost_first = first
        if problem.startswith("truncated"):
            with contextlib.suppress(OSError, ValueError):
                lost_first = max(first, last_seq_in(old) + 1)
        lost = [lost_first, writer.written_seq] if lost_first <= writer.written_seq else None
        try:
            writer.restart_segment()
        except OSError as exc:
            self.faults.file_errors["segment"] = (
                f"{old.name} was {problem} and no new segment can be made: {describe(exc)}"
            )
            return False
        event = {"reason": f"segment {problem} under the recorder", "segment": old.name, "problem": problem,
                 "lost": lost, "lost_records": lost[1] - lost[0] + 1 if lost else 0, "since": self.clock.now(),
                 "new_segment": writer.segment.name}
        self.faults.lost_segments.append(event)
        log.error("segment %s was %s under the recorder: records %s lost; writing on in %s", old.name, problem,
                  f"{lost[0]}..{lost[1]}" if lost else "none", writer.segment.name)
        append("recorder.degraded", event)
        return True
