"""``convlog import``: files of other formats into a log whose recorder is not running,
through :class:`convlog.store.offline.OfflineWriter`.

:func:`import_files` detects each file's format from
its content (:func:`convlog.store.import_formats.detect_format`). Legacy ConversationEvent files (the Shearwater
recorder's JSONL) become ``message`` records with source ``import`` whose ``data`` is
each original line byte for byte (spliced like a received payload, see
:class:`convlog.core.ingest.Ingest`), the same records ``convlog publish`` of the file
gives through a recorder; records of another convlog log keep their data, kind, session
and meta under new seqs, with ``meta.origin``; OpenAI chat JSONL becomes native
``message`` events. Importing is idempotent: a line whose SHA-256 (``meta.sha256`` or
``meta.origin.sha256`` of an existing ``import`` record) is already in the log is skipped.

A running recorder holds the writer lock, and the import is refused with
:class:`convlog.store.offline.ImportLockedError`: stop it first, or publish the file
onto its bus (``convlog publish``), which records the same lines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from convlog.core.ingest import Ingest
from convlog.core.record import IMPORT_SOURCE
from convlog.core.redact import Redactor
from convlog.core.view import plural
from convlog.store.import_formats import (
    FORMATS,
    ImportFormatError,
    Outcome,
    convlog_outcome,
    detect_format,
    file_session,
    legacy_outcome,
    numbered_lines,
    openai_outcome,
)
from convlog.store.lock import LogLockedError
from convlog.store.offline import ImportLockedError, OfflineWriter
from convlog.store.recovery import RecoveryReport
from convlog.store.segment import list_segments, open_segment

#: Bytes of lines gathered before one write (and one progress report).
BATCH_BYTES = 1 << 20
#: Input bytes consumed between two progress reports.
PROGRESS_BYTES = 1 << 18


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
    """What :func:`import_files` did.

    Attributes:
        files: input files given.
        imported: records written.
        present: valid lines skipped because the log (or this run) already had them.
        skipped: valid convlog records not imported because they only mean something
            in their own log (``recorder.*`` records, publishers' heartbeats).
        invalid: lines that could not be imported, with the reason; a file of no
            known format is one entry naming its first non-blank line.
        formats: the format read for each file (``str(path)`` -> one of
            :data:`FORMATS` without ``auto``); files of no known format are absent.
        first_seq / last_seq: seqs of the first and last imported record (None when none).
        recovery: what recovering the tail found before importing (None when the log
            was not opened: nothing to import).
        recovered_seq: seq of the ``recorder.recovered`` record written first, or None.
    """

    files: int
    imported: int = 0
    present: int = 0
    skipped: int = 0
    invalid: list[InvalidLine] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)
    first_seq: int | None = None
    last_seq: int | None = None
    recovery: RecoveryReport | None = None
    recovered_seq: int | None = None

    def summary(self) -> str:
        """``imported N records from F files (S already present, I invalid)`` (counts agreeing
        with their nouns), with
        ``, K skipped`` before the parenthesis closes when records were skipped."""
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        return (
            f"imported {plural(self.imported, 'record')} from {plural(self.files, 'file')} "
            f"({self.present} already present, {len(self.invalid)} invalid{skipped})"
        )


def imported_hashes(directory: str | Path) -> set[str]:
    """The digests that mark lines as already imported: ``meta.sha256`` and
    ``meta.origin.sha256`` (the input line of an imported convlog record) of the records
    with source ``import`` in a log.

    One streaming pass; only lines containing ``"import"`` are parsed. Torn and invalid
    lines are skipped (``convlog verify`` reports them).

    Returns:
        hex SHA-256 digests.
    """
    found: set[str] = set()
    for _, path in list_segments(directory):
        with open_segment(path) as fh:
            for line in fh:
                if b'"import"' not in line or not line.endswith(b"\n"):
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(record, dict) or record.get("source") != IMPORT_SOURCE:
                    continue
                meta = record.get("meta")
                if not isinstance(meta, dict):
                    continue
                digest = meta.get("sha256")
                if isinstance(digest, str):
                    found.add(digest)
                origin = meta.get("origin")
                digest = origin.get("sha256") if isinstance(origin, dict) else None
                if isinstance(digest, str):
                    found.add(digest)
    return found


# --------------------------------------------------------------------------- importing


def import_files(
    directory: str | Path,
    files: Sequence[str | Path],
    progress: Callable[[int], None] | None = None,
    fmt: str = "auto",
    redact: bool = True,
) -> ImportReport:
    """Import JSONL files into a log whose recorder is not running.

    Each file is read in its format (``fmt``, or for ``auto`` the one
    :func:`detect_format` finds in its content). Every record written has source
    ``import`` and ``ts`` the import time; each line stays a line of the input's
    format, so blank lines are skipped and invalid ones are reported (file, line,
    reason), not imported, and do not stop the import. A line already imported
    (:func:`imported_hashes`) is skipped, so importing a file twice adds nothing.

    * ``legacy``, ConversationEvent records (checked by
      :func:`convlog.core.wire.parse_legacy`): one ``message`` record per line, topic
      the ``SpeakerName``, session the ``ContextId``, ``data`` the line's bytes as they
      were (every field, the original ids and times included), ``meta`` as the recorder
      computes it for the same payload (``shape: legacy``, ``message_id``, ``sender``,
      ``role``, ``sha256`` of the line, ...): the records ``convlog publish`` into a
      running recorder gives.
    * ``convlog``, records as a recorder writes them (a segment of another log): kind,
      topic, session, ``data`` (its bytes), ``extra_frames`` and ``meta`` are kept; the
      record gets a seq of this log; ``meta.origin`` says where it came from
      (``file`` name, ``seq``, ``ts``, ``source`` there, ``sha256`` of the line, and the
      record's own earlier ``origin``); ``meta.clock_step_s`` (about the other log's
      clock) is left out. ``recorder.*`` records and publishers' heartbeats describe
      the other log only and are skipped (:attr:`ImportReport.skipped`).
    * ``openai``, chat JSONL: a line ``{"role", "content"}`` is one message of the
      file's conversation (session ``<file stem>-<8 hex of its absolute path's
      SHA-256>``, message id ``<session>:<line>``); a line ``{"messages": [...]}`` is a
      whole conversation (session ``<file stem>-<12 hex of the line's SHA-256>``,
      message ids ``<session>:<1-based index>``; its other keys are not kept). Each
      message becomes a native ``message`` event (``role``, ``sender`` from ``name``,
      ``content`` the text: a string, or the text parts of a list joined by newlines),
      with the original message under ``openai`` when it holds more than a role and a
      string content.

    A file of no known format is reported as one invalid entry naming its first
    non-blank line (:class:`ImportFormatError`'s reason); when no file can be read the
    log is not opened (nothing is written or created).

    Args:
        directory: the log directory (created if missing).
        files: the input files, read in order.
        progress: called with the number of input bytes consumed since its last call.
        fmt: one of :data:`FORMATS`.
        redact: replace secrets by the built-in rules of :mod:`convlog.core.redact` (as
            the recorder does by default): in payloads, topics and extra frames; a
            ``convlog`` record's data, topic and session.

    Returns:
        an :class:`ImportReport`.

    Raises:
        ImportLockedError: when a recorder holds the directory's lock.
        OSError: when an input cannot be read or the log cannot be written.
        ValueError: for an unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown import format {fmt!r} (one of {', '.join(FORMATS)})")
    for path in files:  # unreadable inputs fail before the log is touched
        with open(path, "rb"):
            pass
    report = ImportReport(files=len(files))
    plan: list[tuple[str | Path, str | None]] = []
    for path in files:
        try:
            found = detect_format(path) if fmt == "auto" else fmt
        except ImportFormatError as exc:
            report.invalid.append(InvalidLine(exc.path, exc.line, exc.reason))
            if progress is not None:
                progress(Path(path).stat().st_size)
            continue
        if found is not None:
            report.formats[str(path)] = found
        plan.append((path, found))
    if report.invalid and not report.formats:
        return report
    try:
        with OfflineWriter(directory, "convlog import") as offline:
            report.recovery, report.recovered_seq = offline.recovery, offline.recovered_seq
            _import_files(offline, plan, progress, report, Redactor() if redact else None)
    except LogLockedError as exc:  # only taking the lock raises it
        raise ImportLockedError(exc) from None
    order = {str(path): index for index, path in enumerate(files)}
    report.invalid.sort(key=lambda bad: (order.get(bad.path, len(order)), bad.line))
    return report


def _import_files(
    offline: OfflineWriter,
    plan: Sequence[tuple[str | Path, str | None]],
    progress: Callable[[int], None] | None,
    report: ImportReport,
    redactor: Redactor | None = None,
) -> None:
    seen = imported_hashes(offline.directory)
    ingest = Ingest(redactor=redactor)
    now = offline.clock.now
    lines: list[bytes] = []
    pending = consumed = room = 0
    seq = offline.seq
    for path, fmt in plan:
        stem, whole_file = file_session(path)
        name = Path(path).name
        for number, raw, line in numbered_lines(path):
            consumed += len(raw)
            if progress is not None and consumed >= PROGRESS_BYTES:
                progress(consumed)
                consumed = 0
            if not line.strip():
                continue
            outcome: Outcome
            if fmt == "legacy":
                outcome = legacy_outcome(line, ingest)
            elif fmt == "convlog":
                outcome = convlog_outcome(line, name, redactor)
            else:
                outcome = openai_outcome(line, number, whole_file, stem, ingest)
            if outcome is None:
                report.skipped += 1
                continue
            if isinstance(outcome, str):
                report.invalid.append(InvalidLine(str(path), number, outcome))
                continue
            for entry in outcome:
                if any(digest in seen for digest in entry.present_if):
                    report.present += 1
                    continue
                seen.update(entry.marks)
                if not lines:
                    room = min(BATCH_BYTES, offline.room())
                seq += 1
                data = entry.build(seq, now())
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
