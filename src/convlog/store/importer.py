"""Writing into a log directory whose recorder is not running: ``convlog recover`` and
``convlog import``.

:class:`OfflineWriter` is the writer side of the recorder without the sockets: it takes
the writer lock, repairs the tail exactly as the recorder does at start
(:func:`convlog.store.recovery.recover`), notes an unclean previous shutdown or a repair with a
``recorder.recovered`` record like the recorder, appends, and closes with everything
fsynced and ``recovery/state.json`` marked clean at the writer's position.

:func:`repair` is ``convlog recover``: only that repair. :func:`import_files` (the
CLI's :func:`import_legacy`) is ``convlog import``: each file's format is detected from
its content (:func:`detect_format`). Legacy ConversationEvent files (the Shearwater
recorder's JSONL) become ``message`` records with source ``import`` whose ``data`` is
each original line byte for byte (spliced like a received payload, see
:class:`convlog.core.ingest.Ingest`), the same records ``convlog publish`` of the file
gives through a recorder; records of another convlog log keep their data, kind, session
and meta under new seqs, with ``meta.origin``; OpenAI chat JSONL becomes native
``message`` events. Importing is idempotent: a line whose SHA-256 (``meta.sha256`` or
``meta.origin.sha256`` of an existing ``import`` record) is already in the log is skipped.

Importing through a *running* recorder needs its control channel (a later issue);
until then the lock refuses it with :class:`ImportLockedError`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import orjson

from convlog.core.gaps import HEARTBEAT
from convlog.core.ingest import Ingest
from convlog.core.record import BUS_KINDS, RAW, RECORDER_KINDS, UNKNOWN, dump_json, format_line, make_line
from convlog.core.wire import LegacyRecordError, is_legacy, parse_legacy
from convlog.store.clock import Clock
from convlog.store.lock import LogLock, LogLockedError
from convlog.store.recovery import RecoveryReport, recover
from convlog.store.replay import NoLogError
from convlog.store.segment import EVENTS, list_segments
from convlog.store.state import read_state
from convlog.store.writer import SegmentWriter

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
        """``imported N records from F files (S already present, I invalid)``, with
        ``, K skipped`` before the parenthesis closes when records were skipped."""
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        return (
            f"imported {self.imported} records from {self.files} files "
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
        with path.open("rb") as fh:
            for line in fh:
                if b'"import"' not in line or not line.endswith(b"\n"):
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(record, dict) or record.get("source") != SOURCE:
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


# --------------------------------------------------------------------------- formats

#: ``fmt`` values of :func:`import_files`: ``legacy`` (ConversationEvent records),
#: ``convlog`` (records as a recorder writes them), ``openai`` (chat messages
#: ``{"role", "content"}`` or conversations ``{"messages": [...]}``), ``auto`` (by content).
FORMATS = ("auto", "legacy", "convlog", "openai")
#: Non-blank lines :func:`detect_format` reads for one of a known format.
DETECT_LINES = 100
#: Kinds of convlog records that only mean something in the log that wrote them.
_LOCAL_KINDS = RECORDER_KINDS | {HEARTBEAT}
#: Kinds a convlog record may have to be imported.
_IMPORTABLE_KINDS = (BUS_KINDS - {HEARTBEAT}) | {UNKNOWN, RAW}
#: ``meta`` fields of a convlog record that describe the log it was in, not its data.
_LOCAL_META = ("clock_step_s",)
_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
               bool: "a boolean", type(None): "null"}


class ImportFormatError(ValueError):
    """A file is in none of the formats :func:`import_files` reads.

    Attributes:
        path: the file, as given.
        line: the 1-based line the reason is about (its first non-blank line).
        reason: why that line is none of them.
    """

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason}")


def _shape_of(value: Any) -> str | None:
    """The import format a parsed line belongs to, or None."""
    if is_legacy(value):
        return "legacy"
    if type(value) is not dict:
        return None
    if "seq" in value and "kind" in value and "data" in value:
        return "convlog"
    if type(value.get("messages")) is list or ("role" in value and "content" in value):
        return "openai"
    return None


def _not_a_format(value: Any) -> str:
    if type(value) is not dict:
        return f"{_JSON_NAMES.get(type(value), 'a value')}, not an object"
    # JSON-escaped, ASCII only: a foreign key cannot put escape sequences on a terminal.
    keys = ", ".join(json.dumps(key)[1:-1] for key in list(value)[:6]) + (", ..." if len(value) > 6 else "")
    return f"an object with keys {keys or '(none)'}"


def detect_format(path: str | Path) -> str | None:
    """The import format of a file, from its content: the first line (among the first
    :data:`DETECT_LINES` non-blank ones) that is a legacy ConversationEvent record
    (``Id``, ``SpeakerName``, ``Message``), a convlog record (``seq``, ``kind``,
    ``data``) or an OpenAI chat line (``role`` and ``content``, or ``messages``) decides.

    Args:
        path: the file.

    Returns:
        ``legacy``, ``convlog`` or ``openai``; None when the file has no non-blank line.

    Raises:
        ImportFormatError: naming the first non-blank line and why it is none of them.
        OSError: when the file cannot be read.
    """
    first: tuple[int, str] | None = None
    looked = 0
    for number, _raw, line in _lines(path):
        if not line.strip():
            continue
        if looked == DETECT_LINES:
            break
        looked += 1
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            reason = f"not JSON: {exc}"
        else:
            shape = _shape_of(value)
            if shape is not None:
                return shape
            reason = _not_a_format(value)
        if first is None:
            first = number, reason
    if first is None:
        return None
    number, reason = first
    which = "not" if looked == 1 else f"and none of the first {looked} non-blank lines is"
    raise ImportFormatError(
        str(path), number,
        f"{reason}; {which} a legacy ConversationEvent record, a convlog record or an OpenAI chat "
        "message (nothing imported from this file)",
    )


# --------------------------------------------------------------------------- lines to records


@dataclass(slots=True)
class _Entry:
    """One record to write: the digests that mean it is already in the log
    (``present_if``), those it adds (``marks``), and how to build its line from a seq
    and a time."""

    present_if: tuple[str, ...]
    marks: tuple[str, ...]
    build: Callable[[int, str], bytes]


#: Outcome of one input line: records to write, a reason it is invalid, or None for a
#: valid line that is not imported (see :attr:`ImportReport.skipped`).
_Outcome = list[_Entry] | str | None


def _legacy_outcome(line: bytes, ingest: Ingest) -> _Outcome:
    try:
        topic, _ = parse_legacy(line)
    except LegacyRecordError as exc:
        return str(exc)
    digest = sha256(line).hexdigest()
    return [_Entry((digest,), (digest,), lambda seq, ts: ingest.general_line([topic, line], seq, ts, SOURCE))]


_WS = re.compile(r"[ \t\n\r]*")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _members(text: str) -> dict[str, tuple[Any, int, int]]:
    """The top-level members of a JSON object text: name -> ``(value, start, end)``, the
    character span of the value's own text (so it can be copied exactly). The standard
    library's parser keeps integers of any size.

    Raises:
        ValueError: when ``text`` is not one JSON object.
        RecursionError: for values nested deeper than the parser goes.
    """
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    if text[pos:pos + 1] != "{":
        raise ValueError("not a JSON object")
    pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    found: dict[str, tuple[Any, int, int]] = {}
    if text[pos:pos + 1] == "}":
        pos += 1
    else:
        while True:
            if text[pos:pos + 1] != '"':
                raise ValueError(f"a member name was expected at character {pos}")
            name, pos = _DECODER.raw_decode(text, pos)
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            if text[pos:pos + 1] != ":":
                raise ValueError(f"':' was expected at character {pos}")
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            value, end = _DECODER.raw_decode(text, pos)
            found[name] = (value, pos, end)
            pos = _WS.match(text, end).end()  # type: ignore[union-attr]
            mark = text[pos:pos + 1]
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            if mark == "}":
                break
            if mark != ",":
                raise ValueError(f"',' or '}}' was expected at character {pos}")
    if _WS.match(text, pos).end() != len(text):  # type: ignore[union-attr]
        raise ValueError(f"text after the object at character {pos}")
    return found


def _named(value: Any) -> str:
    return _JSON_NAMES.get(type(value), "a value")


def _convlog_outcome(line: bytes, name: str) -> _Outcome:
    """A record line of another log as a record of this one (see :func:`import_files`)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8: {exc}"
    try:
        members = _members(text)
    except RecursionError:
        # Data nested near the recorder's limit: parsed by orjson and written again
        # (the same values; its bytes may differ from the original's spacing).
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            return f"not JSON: {exc}"
        members = {key: (value, -1, -1) for key, value in record.items()}
    except ValueError as exc:
        return f"not JSON: {exc}"
    value = {key: member[0] for key, member in members.items()}
    seq, kind, ts, source = value.get("seq"), value.get("kind"), value.get("ts"), value.get("source")
    if type(seq) is not int or seq < 1:
        return f"not a convlog record: seq is {_named(seq) if 'seq' in value else 'missing'}, not a positive integer"
    if type(kind) is not str:
        return f"not a convlog record: kind is {_named(kind) if 'kind' in value else 'missing'}, not a string"
    if kind in _LOCAL_KINDS:
        return None
    if kind not in _IMPORTABLE_KINDS:
        return f"kind {kind!r} is not a record kind convlog imports"
    if type(ts) is not str:
        return f"not a convlog record: ts is {_named(ts) if 'ts' in value else 'missing'}, not a string"
    if "data" not in value:
        return "not a convlog record: data is missing"
    meta = value.get("meta", {})
    if type(meta) is not dict:
        return f"meta is {_named(meta)}, not an object"
    for key in ("source", "topic", "session"):
        if type(value.get(key)) not in (str, type(None)):
            return f"{key} is {_named(value[key])}, not a string or null"
    extra = value.get("extra_frames")
    if extra is not None and not (
        type(extra) is list and all(type(f) is dict and len(f) == 1 and type(f.get("text", f.get("base64"))) is str
                                    for f in extra)
    ):
        return "extra_frames is not a list of encoded frames ({\"text\"} or {\"base64\"})"
    _, start, end = members["data"]
    digest = sha256(line).hexdigest()
    origin: dict[str, Any] = {"file": name, "seq": seq, "ts": ts, "source": source, "sha256": digest}
    if "origin" in meta:
        origin["origin"] = meta["origin"]
    kept = {key: item for key, item in meta.items() if key not in _LOCAL_META and key != "origin"}
    if start >= 0:
        data_json = text[start:end].encode("utf-8")
    else:
        data_json = dump_json(value["data"])
        kept.pop("lf", None)  # offsets into bytes that were written again
    kept["origin"] = origin
    try:
        orjson.dumps(kept)
    except TypeError as exc:
        return f"meta cannot be written: {exc}"
    payload_digest = kept.get("sha256") if isinstance(kept.get("sha256"), str) else None
    present_if = (digest, payload_digest) if source == SOURCE and payload_digest else (digest,)
    marks = (digest, payload_digest) if payload_digest else (digest,)
    topic, session = value.get("topic"), value.get("session")

    def build(new_seq: int, now: str) -> bytes:
        head = {"seq": new_seq, "ts": now, "kind": kind, "source": SOURCE, "topic": topic, "session": session}
        return format_line(head, data_json, dict(kept), extra)

    return [_Entry(present_if, marks, build)]


def _openai_event(message: Any, session: str, message_id: str) -> dict[str, Any] | str:
    """An OpenAI chat message as a native ``message`` event, or why it cannot be one."""
    if type(message) is not dict:
        return f"{_named(message)}, not a message object"
    role = message.get("role")
    if type(role) is not str or not role:
        return f"role is {_named(role) if 'role' in message else 'missing'}, not a non-empty string"
    content = message.get("content")
    if type(content) is str:
        text = content
    elif content is None:
        text = ""
    elif type(content) is list:
        texts = []
        for index, part in enumerate(content):
            if type(part) is str:
                texts.append(part)
            elif type(part) is dict:
                if type(part.get("text")) is str:
                    texts.append(part["text"])
            else:
                return f"content[{index}] is {_named(part)}, not a text part"
        text = "\n".join(texts)
    else:
        return f"content is {_named(content)}, not a string, a list of parts or null"
    event: dict[str, Any] = {"type": "message", "session_id": session, "message_id": message_id, "role": role}
    if type(message.get("name")) is str:
        event["sender"] = message["name"]
    event["content"] = text
    if type(content) is not str or set(message) - {"role", "content"}:
        event["openai"] = message  # parts, names, tool calls: the original, whole
    return event


def _openai_outcome(line: bytes, number: int, file_session: str, stem: str, ingest: Ingest) -> _Outcome:
    """An OpenAI chat line: one message of the file's conversation, or a whole
    conversation (``{"messages": [...]}``) in a session of its own."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if type(value) is not dict:
        return f"{_named(value)}, not an OpenAI chat message or conversation object"
    events: list[dict[str, Any]] = []
    if "messages" in value:
        messages = value["messages"]
        if type(messages) is not list:
            return f"messages is {_named(messages)}, not a list"
        session = f"{stem}-{sha256(line).hexdigest()[:12]}"
        for index, message in enumerate(messages, 1):
            event = _openai_event(message, session, f"{session}:{index}")
            if isinstance(event, str):
                return f"messages[{index - 1}]: {event}"
            events.append(event)
    elif "role" in value and "content" in value:
        event = _openai_event(value, file_session, f"{file_session}:{number}")
        if isinstance(event, str):
            return event
        events.append(event)
    else:
        return "not an OpenAI chat message (needs role and content) or conversation (needs messages)"
    entries = []
    for event in events:
        payload = orjson.dumps(event)
        digest = sha256(payload).hexdigest()
        topic = event["session_id"].encode("utf-8")
        entries.append(_Entry(
            (digest,), (digest,),
            lambda seq, ts, topic=topic, payload=payload: ingest.general_line([topic, payload], seq, ts, SOURCE),
        ))
    return entries


def _file_session(path: str | Path) -> tuple[str, str]:
    """``(stem, session)`` for the conversation of an OpenAI file of message lines: the
    file's name without its last extension, and that stem with 8 hex digits of the
    SHA-256 of the file's absolute path."""
    resolved = Path(path).resolve()
    stem = resolved.stem or "openai"
    return stem, f"{stem}-{sha256(str(resolved).encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


# --------------------------------------------------------------------------- importing


def import_files(
    directory: str | Path,
    files: Sequence[str | Path],
    progress: Callable[[int], None] | None = None,
    fmt: str = "auto",
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
            _import_files(offline, plan, progress, report)
    except LogLockedError as exc:  # only taking the lock raises it
        raise ImportLockedError(exc) from None
    order = {str(path): index for index, path in enumerate(files)}
    report.invalid.sort(key=lambda bad: (order.get(bad.path, len(order)), bad.line))
    return report


def import_legacy(
    directory: str | Path,
    files: Sequence[str | Path],
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """``convlog import``: :func:`import_files` with each file's format detected from
    its content (legacy ConversationEvent records, convlog records, OpenAI chat JSONL).
    Same arguments, result and errors."""
    return import_files(directory, files, progress)


def _import_files(
    offline: OfflineWriter,
    plan: Sequence[tuple[str | Path, str | None]],
    progress: Callable[[int], None] | None,
    report: ImportReport,
) -> None:
    seen = imported_hashes(offline.directory)
    ingest = Ingest()
    now = offline.clock.now
    lines: list[bytes] = []
    pending = consumed = room = 0
    seq = offline.seq
    for path, fmt in plan:
        stem, file_session = _file_session(path)
        name = Path(path).name
        for number, raw, line in _lines(path):
            consumed += len(raw)
            if progress is not None and consumed >= PROGRESS_BYTES:
                progress(consumed)
                consumed = 0
            if not line.strip():
                continue
            outcome: _Outcome
            if fmt == "legacy":
                outcome = _legacy_outcome(line, ingest)
            elif fmt == "convlog":
                outcome = _convlog_outcome(line, name)
            else:
                outcome = _openai_outcome(line, number, file_session, stem, ingest)
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


def _lines(path: str | Path) -> Iterator[tuple[int, bytes, bytes]]:
    """``(number, raw line, line without its LF/CRLF ending)`` for each line of a file."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            yield number, raw, raw.rstrip(b"\r\n")
