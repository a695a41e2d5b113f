"""Writing into a log directory whose recorder is not running: the writer side of the
recorder without the sockets (:class:`OfflineWriter`), used by ``convlog import``,
session control and ``convlog purge`` with no recorder running, ``convlog recover``
(:func:`repair`), ``convlog compress`` (:func:`compress`) and ``convlog prune``
(:func:`prune_offline`).

:class:`OfflineWriter` takes the writer lock, repairs the tail exactly as the recorder
does at start (:func:`convlog.store.recovery.recover`), notes an unclean previous
shutdown or a repair with a ``recorder.recovered`` record like the recorder, appends,
and closes with everything fsynced and ``recovery/state.json`` marked clean at the
writer's position.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convlog.core.record import make_line
from convlog.core.retention import Limits
from convlog.store.clock import Clock
from convlog.store.lock import LogLock, LogLockedError
from convlog.store.recovery import RecoveryReport, recover
from convlog.store.replay import NoLogError
from convlog.store.retention import PruneReport, prune
from convlog.store.seal import Sealed, compress_log, seal_segment
from convlog.store.segment import EVENTS, is_sealed, list_segments
from convlog.store.state import read_state
from convlog.store.writer import SegmentWriter


class ImportLockedError(LogLockedError):
    """A recorder (or another writer) holds the lock of the directory to import into."""

    def __init__(self, error: LogLockedError) -> None:
        super().__init__(error.directory, error.holder)

    def __str__(self) -> str:
        return (
            f"{super().__str__()}; stop it to import, or publish the file onto its bus "
            "(convlog publish), which records the same lines"
        )


class OfflineWriter:
    """The writer of a log directory whose recorder is not running.

    Use as a context manager: entering takes the lock and recovers the tail (the
    :class:`~convlog.store.recovery.RecoveryReport` is in :attr:`recovery`); leaving normally
    fsyncs and marks the state clean; leaving by an exception leaves the state as it
    was (unclean once anything was written), so the next writer recovers.

    Args:
        directory: the log directory (created if missing).
        command: how the lock file names the holder.
        clock: time source for records.

    Attributes:
        seq: seq of the last record in the log.
        recovery: what recovery found, once entered.
        recovered_seq: seq of the ``recorder.recovered`` record written, or None.
    """

    def __init__(self, directory: str | Path, command: str, clock: Clock | None = None) -> None:
        self.directory = Path(directory)
        self.command = command
        self.clock = clock or Clock()
        self.seq = 0
        self.recovery: RecoveryReport | None = None
        self.recovered_seq: int | None = None
        self._lock: LogLock | None = None
        self._writer: SegmentWriter | None = None
        self._prior_state: dict[str, Any] = {}

    def __enter__(self) -> OfflineWriter:
        self._lock = LogLock(self.directory, command=self.command).acquire()
        try:
            self._prior_state = read_state(self.directory) or {}
            report = self.recovery = recover(self.directory, self.clock)
            self.seq = report.last_seq
            # As the recorder (daemon.Recorder.open): say in the log what recovery found.
            if report.last_seq and (not report.was_clean or report.reason):
                self.append(
                    make_line(self.seq + 1, self.clock.now(), "recorder.recovered", "recorder", None, None,
                              report.as_data()),
                    self.seq + 1,
                )
                self.recovered_seq = self.seq
        except BaseException:
            self._abandon()
            raise
        return self

    def append(self, lines: bytes, last_seq: int) -> None:
        """Append whole lines ending with record ``last_seq`` (group commit per ``interval``).

        Raises:
            OSError: when the write fails.
        """
        writer = self._writer or self._open_writer()
        writer.write(lines, last_seq)
        self.seq = last_seq
        writer.maybe_sync()

    def sync(self) -> None:
        """fsync what was appended so far (a record someone acts on right after).

        Raises:
            OSError: when the fsync fails.
        """
        if self._writer is not None:
            self._writer.sync()

    def room(self) -> int:
        """Bytes that fit in the current segment before it rotates (opens the writer)."""
        writer = self._writer or self._open_writer()
        return writer.segment_bytes - writer.offset

    def seal_last(self, level: int = 3) -> Path | None:
        """Seal the last segment (``convlog purge`` rewrites only finished, sealed ones):
        the writer on it is closed first, and a new empty segment is started, so
        ``recovery/state.json`` names that one before the sealed one is rewritten.

        Args:
            level: zstd compression level.

        Returns:
            the sealed file, or None when the last segment was sealed already (or there
            is none).

        Raises:
            OSError: when it cannot be sealed (the plain segment is then left as it was).
        """
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        segments = list_segments(self.directory)
        if not segments or is_sealed(segments[-1][1]):
            return None
        path = segments[-1][1]
        seal_segment(path, level)
        self._open_writer()  # the last segment is sealed: a new one named by the next seq
        return path.with_name(path.name + ".zst")

    def _open_writer(self) -> SegmentWriter:
        self._writer = SegmentWriter(self.directory, next_seq=self.seq + 1, fsync="interval")
        self._save_state(clean=False)
        return self._writer

    def _save_state(self, clean: bool) -> None:
        assert self._writer is not None
        # Fields this writer does not maintain (the recorder's publisher snapshot, which
        # describes records before the ones appended here) are carried over unchanged.
        self._writer.save_state(clean, self.clock.now(), self._prior_state)

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            self._abandon()
            return
        try:
            report = self.recovery
            repaired = report is not None and (report.reason is not None or not report.was_clean)
            if self._writer is None and repaired and list_segments(self.directory):
                self._open_writer()
            if self._writer is not None:
                self._writer.sync()
                self._save_state(clean=True)
                self._writer.close()
                self._writer = None
        finally:
            self._abandon()

    def _abandon(self) -> None:
        """Close what is open without marking anything clean."""
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.close()
            self._writer = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None


@dataclass(slots=True)
class RepairReport:
    """What :func:`repair` found and did.

    Attributes:
        recovery: what :func:`convlog.store.recovery.recover` found (and quarantined).
        recovered_seq: seq of the ``recorder.recovered`` record appended, or None.
    """

    recovery: RecoveryReport
    recovered_seq: int | None


def repair(directory: str | Path, clock: Clock | None = None) -> RepairReport:
    """Repair the tail of a log whose recorder is not running, as the recorder does at
    start: a torn or invalid tail goes to quarantine and the segment is truncated; when
    that happened or the previous writer did not stop cleanly, a ``recorder.recovered``
    record says so; then the state is marked clean.

    Args:
        directory: the log directory.
        clock: time source.

    Returns:
        a :class:`RepairReport`.

    Raises:
        NoLogError: when ``directory`` has no ``events/`` folder.
        LogLockedError: when a recorder (or another writer) holds the lock.
    """
    directory = Path(directory)
    if not (directory / EVENTS).is_dir():
        raise NoLogError.in_directory(directory)
    with OfflineWriter(directory, "convlog recover", clock) as writer:
        assert writer.recovery is not None
        return RepairReport(writer.recovery, writer.recovered_seq)


def compress(
    directory: str | Path, level: int = 3, on_segment: Callable[[Path, Sealed], None] | None = None
) -> Sealed:
    """Seal the finished segments of a log whose recorder is not running (``convlog
    compress``): every plain segment but the last becomes ``<name>.jsonl.zst`` (see
    :mod:`convlog.store.seal`), under the writer lock; what an interrupted seal left is
    settled first. The live (last) segment and the records are not touched.

    Args:
        directory: the log directory.
        level: zstd compression level (1-22).
        on_segment: called after each segment with its path and :class:`Sealed`.

    Returns:
        the totals (segments sealed, bytes before and after).

    Raises:
        NoLogError: when ``directory`` has no ``events/`` folder.
        LogLockedError: when a recorder (or another writer) holds the lock.
        OSError: when a segment cannot be sealed (those before it stay sealed).
    """
    directory = Path(directory)
    if not (directory / EVENTS).is_dir():
        raise NoLogError.in_directory(directory)
    lock = LogLock(directory, command="convlog compress").acquire()
    try:
        return compress_log(directory, level, on_segment)
    finally:
        lock.release()


def prune_offline(
    directory: str | Path,
    limits: Limits,
    action: str = "delete",
    archive_dir: str | Path | None = None,
    dry_run: bool = False,
    clock: Clock | None = None,
    synced_seq: int | None = None,
) -> PruneReport:
    """Apply retention to a log whose recorder is not running (``convlog prune``):
    :func:`convlog.store.retention.prune` under the writer lock, its ``recorder.pruned``
    record appended before anything is removed. A dry run takes no lock and changes nothing.

    Args:
        directory: the log directory.
        limits: the limits (seconds, bytes).
        action: ``"delete"`` or ``"archive"``.
        archive_dir: the archive for ``"archive"``.
        dry_run: only report what would go.
        clock: time source for the record and the base.
        synced_seq: with a sync configured, the last seq the database holds (later
            segments wait); None without one.

    Returns:
        the :class:`~convlog.store.retention.PruneReport`.

    Raises:
        NoLogError: when ``directory`` has no ``events/`` folder.
        LogLockedError: when a recorder (or another writer) holds the lock.
        RetentionError, CheckpointError, OSError: see :func:`~convlog.store.retention.prune`.
    """
    directory = Path(directory)
    if not list_segments(directory):
        raise NoLogError.in_directory(directory)
    if dry_run:
        return prune(directory, limits, action, archive_dir, dry_run=True, clock=clock, synced_seq=synced_seq)
    with OfflineWriter(directory, "convlog prune", clock) as writer:

        def announce(report: PruneReport) -> None:
            seq = writer.seq + 1
            writer.append(make_line(seq, writer.clock.now(), "recorder.pruned", "recorder", None, None,
                                    report.as_data()), seq)
            writer.sync()

        return prune(directory, limits, action, archive_dir, announce=announce, clock=writer.clock,
                     synced_seq=synced_seq)
