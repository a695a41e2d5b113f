"""Writing into a log directory whose recorder is not running: ``convlog recover`` and
``convlog import``.

:class:`OfflineWriter` is the writer side of the recorder without the sockets: it takes
the writer lock, repairs the tail exactly as the recorder does at start
(:func:`convlog.store.log.recover`), notes an unclean previous shutdown or a repair with a
``recorder.recovered`` record like the recorder, appends, and closes with everything
fsynced and ``recovery/state.json`` marked clean at the writer's position.

:func:`repair` is ``convlog recover``: only that repair. :func:`import_legacy` is
``convlog import``: legacy ConversationEvent files (the Shearwater recorder's JSONL)
become ``message`` records with source ``import`` whose ``data`` is each original line
byte for byte (spliced like a received payload, see :class:`convlog.core.ingest.Ingest`).
Importing is idempotent: a line whose SHA-256 (``meta.sha256`` of an existing
``import`` record) is already in the log is skipped.

Importing through a *running* recorder needs its control channel (a later issue);
until then the lock refuses it with :class:`ImportLockedError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import orjson

from convlog.core.ingest import Ingest
from convlog.core.record import make_line
from convlog.core.wire import is_legacy
from convlog.store.clock import Clock
from convlog.store.log import (
    EVENTS,
    LogLock,
    LogLockedError,
    RecoveryReport,
    SegmentWriter,
    list_segments,
    read_state,
    recover,
)
from convlog.store.replay import NoLogError

#: The source of imported records.
SOURCE = "import"
#: Bytes of lines gathered before one write (and one progress report).
BATCH_BYTES = 1 << 20
#: Input bytes consumed between two progress reports.
PROGRESS_BYTES = 1 << 18


class ImportLockedError(LogLockedError):
    """A recorder (or another writer) holds the lock of the directory to import into."""

    def __init__(self, error: LogLockedError) -> None:
        super().__init__(error.directory, error.holder)

    def __str__(self) -> str:
        return (
            f"{super().__str__()}; stop it to import (importing through a running recorder comes with "
            "its control channel in a later issue)"
        )


class OfflineWriter:
    """The writer of a log directory whose recorder is not running.

    Use as a context manager: entering takes the lock and recovers the tail (the
    :class:`~convlog.store.log.RecoveryReport` is in :attr:`recovery`); leaving normally
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

    def room(self) -> int:
        """Bytes that fit in the current segment before it rotates (opens the writer)."""
        writer = self._writer or self._open_writer()
        return writer.segment_bytes - writer.offset

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
        recovery: what :func:`convlog.store.log.recover` found (and quarantined).
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


@dataclass(slots=True)
class InvalidLine:
    """An input line that was not imported: file (as given), 1-based line, reason."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(slots=True)
class ImportReport:
    """What :func:`import_legacy` did.

    Attributes:
        files: input files read.
        imported: records written.
        present: valid lines skipped because the log (or this run) already had them.
        invalid: lines that are not legacy records, with the reason.
        first_seq / last_seq: seqs of the first and last imported record (None when none).
        recovery: what recovering the tail found before importing.
        recovered_seq: seq of the ``recorder.recovered`` record written first, or None.
    """

    files: int
    imported: int = 0
    present: int = 0
    invalid: list[InvalidLine] = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None
    recovery: RecoveryReport | None = None
    recovered_seq: int | None = None

    def summary(self) -> str:
        """``imported N records from F files (S already present, I invalid)``."""
        return (
            f"imported {self.imported} records from {self.files} files "
            f"({self.present} already present, {len(self.invalid)} invalid)"
        )


def imported_hashes(directory: str | Path) -> set[str]:
    """SHA-256 digests (``meta.sha256``) of the records with source ``import`` in a log.

    One streaming pass; only lines containing ``"import"`` are parsed. Torn and invalid
    lines are skipped (``convlog verify`` reports them).
    """
    found: set[str] = set()
    for _, path in list_segments(directory):
        with path.open("rb") as fh:
            for line in fh:
                if b'"import"' not in line or not line.endswith(b"\n"):
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("source") == SOURCE:
                    meta = record.get("meta")
                    digest = meta.get("sha256") if isinstance(meta, dict) else None
                    if isinstance(digest, str):
                        found.add(digest)
    return found


def _legacy_topic(line: bytes) -> tuple[bytes | None, str | None]:
    """The topic (the sender's name) of a legacy record line, or why it is not one."""
    try:
        value: Any = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON: {exc}"
    if not is_legacy(value):
        return None, "not a legacy ConversationEvent record (needs Id, SpeakerName and Message)"
    speaker = value["SpeakerName"]
    if isinstance(speaker, bool) or not isinstance(speaker, str | int):
        return None, f"SpeakerName is {speaker!r}, not a string"
    return str(speaker).encode("utf-8"), None


def import_legacy(
    directory: str | Path,
    files: Sequence[str | Path],
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import legacy ConversationEvent JSONL files into a log whose recorder is not running.

    Each valid line becomes one record: kind ``message``, source ``import``, topic the
    ``SpeakerName``, session the ``ContextId`` (the first field of
    :data:`convlog.core.wire.DEFAULT_SESSION_FIELDS` present), ``data`` the line's bytes as
    they were (without the line ending), ``ts`` the import time, ``meta`` as the
    recorder computes it (``shape: legacy``, ``message_id``, ``sender``, ``sha256`` of
    the line, …). The original ids and times stay in ``data``. Blank lines are skipped;
    invalid lines are counted and reported, not imported, and do not stop the import.

    Args:
        directory: the log directory (created if missing).
        files: the input files, read in order.
        progress: called with the number of input bytes consumed since its last call.

    Returns:
        an :class:`ImportReport`.

    Raises:
        ImportLockedError: when a recorder holds the directory's lock.
        OSError: when an input cannot be read or the log cannot be written.
    """
    for path in files:  # unreadable inputs fail before the log is touched
        with open(path, "rb"):
            pass
    report = ImportReport(files=len(files))
    try:
        with OfflineWriter(directory, "convlog import") as offline:
            report.recovery, report.recovered_seq = offline.recovery, offline.recovered_seq
            _import_files(offline, files, progress, report)
    except LogLockedError as exc:  # only taking the lock raises it
        raise ImportLockedError(exc) from None
    return report


def _import_files(
    offline: OfflineWriter, files: Sequence[str | Path], progress: Callable[[int], None] | None, report: ImportReport
) -> None:
    seen = imported_hashes(offline.directory)
    ingest = Ingest()
    now = offline.clock.now
    lines: list[bytes] = []
    pending = consumed = room = 0
    seq = offline.seq
    for path in files:
        for number, raw, line in _lines(path):
            consumed += len(raw)
            if progress is not None and consumed >= PROGRESS_BYTES:
                progress(consumed)
                consumed = 0
            if not line.strip():
                continue
            topic, reason = _legacy_topic(line)
            if topic is None:
                report.invalid.append(InvalidLine(str(path), number, reason or "invalid"))
                continue
            digest = sha256(line).hexdigest()
            if digest in seen:
                report.present += 1
                continue
            seen.add(digest)
            if not lines:
                room = min(BATCH_BYTES, offline.room())
            seq += 1
            data = ingest.general_line([topic, line], seq, now(), SOURCE)
            lines.append(data)
            pending += len(data)
            report.imported += 1
            if report.first_seq is None:
                report.first_seq = seq
            # Written once the batch fills the segment, so rotation happens at the first
            # record boundary past its size (as the recorder does).
            if pending >= room:
                offline.append(b"".join(lines), seq)
                lines.clear()
                pending = 0
    if lines:
        offline.append(b"".join(lines), seq)
    if progress is not None and consumed:
        progress(consumed)
    report.last_seq = seq if report.imported else None


def _lines(path: str | Path) -> Iterator[tuple[int, bytes, bytes]]:
    """``(number, raw line, line without its LF/CRLF ending)`` for each line of a file."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            yield number, raw, raw.rstrip(b"\r\n")
