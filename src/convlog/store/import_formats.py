"""The formats ``convlog import`` reads, line by line: legacy ConversationEvent records
(the Shearwater recorder's JSONL), records of another convlog log, and OpenAI chat JSONL
(``{"role", "content"}`` lines, or ``{"messages": [...]}`` conversations). Each file's
format is detected from its content (:func:`detect_format`); each line becomes the
entries to write (:class:`ImportEntry`) or the reason it is invalid. Pure but for
:func:`detect_format`, which reads the file's first lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

import orjson
import pyzstd

from convlog.core.gaps import HEARTBEAT
from convlog.core.ingest import Ingest
from convlog.core.record import (
    BUS_KINDS,
    IMPORT_SOURCE,
    PURGED_KIND,
    RAW,
    RECORDER_KINDS,
    UNKNOWN,
    dump_json,
    format_line,
    is_purged,
)
from convlog.core.redact import Redactor, merge
from convlog.core.wire import LegacyRecordError, is_legacy, json_type_name, parse_legacy

#: ``fmt`` values of :func:`import_files`: ``legacy`` (ConversationEvent records),
#: ``convlog`` (records as a recorder writes them), ``openai`` (chat messages
#: ``{"role", "content"}`` or conversations ``{"messages": [...]}``), ``auto`` (by content).
FORMATS = ("auto", "legacy", "convlog", "openai")
#: Non-blank lines :func:`detect_format` reads for one of a known format.
DETECT_LINES = 100
#: Kinds of convlog records that only mean something in the log that wrote them.
_LOCAL_KINDS = RECORDER_KINDS | {HEARTBEAT, PURGED_KIND}
#: Kinds a convlog record may have to be imported.
_IMPORTABLE_KINDS = (BUS_KINDS - {HEARTBEAT}) | {UNKNOWN, RAW}
#: ``meta`` fields of a convlog record that describe the log it was in, not its data.
_LOCAL_META = ("clock_step_s",)


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
        return f"{json_type_name(value)}, not an object"
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
    for number, _raw, line in numbered_lines(path):
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
class ImportEntry:
    """One record to write: the digests that mean it is already in the log
    (``present_if``), those it adds (``marks``), and how to build its line from a seq
    and a time."""

    present_if: tuple[str, ...]
    marks: tuple[str, ...]
    build: Callable[[int, str], bytes]


#: Outcome of one input line: records to write, a reason it is invalid, or None for a
#: valid line that is not imported (see :attr:`ImportReport.skipped`).
Outcome = list[ImportEntry] | str | None


def legacy_outcome(line: bytes, ingest: Ingest) -> Outcome:
    """A legacy ConversationEvent line as the record ``convlog publish`` of it gives
    through a recorder (source ``import``, the line byte for byte as ``data``).

    Args:
        line: the input line, without its line ending.
        ingest: the per-message step that builds the record line.

    Returns:
        one :class:`ImportEntry` keyed by the line's SHA-256, or the reason the line is
        not a legacy record (see :func:`convlog.core.wire.parse_legacy`).
    """
    try:
        topic, _ = parse_legacy(line)
    except LegacyRecordError as exc:
        return str(exc)
    digest = sha256(line).hexdigest()
    return [ImportEntry((digest,), (digest,),
                        lambda seq, ts: ingest.general_line([topic, line], seq, ts, IMPORT_SOURCE))]


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


def _field_type(obj: dict[str, Any], key: str) -> str:
    """What ``obj[key]`` is (:func:`convlog.core.wire.json_type_name`), or ``missing``."""
    return json_type_name(obj[key]) if key in obj else "missing"


def convlog_outcome(line: bytes, name: str, redactor: Redactor | None = None) -> Outcome:
    """A record line of another log as a record of this one (see :func:`import_files`);
    with ``redactor``, secrets in its data, topic, session and extra frames are replaced
    (``meta.redactions`` counts them)."""
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
        return f"not a convlog record: seq is {_field_type(value, 'seq')}, not a positive integer"
    if type(kind) is not str:
        return f"not a convlog record: kind is {_field_type(value, 'kind')}, not a string"
    if kind in _LOCAL_KINDS or is_purged(value):
        return None  # a purged record (convlog purge) carries nothing to import
    if kind not in _IMPORTABLE_KINDS:
        return f"kind {kind!r} is not a record kind convlog imports"
    if type(ts) is not str:
        return f"not a convlog record: ts is {_field_type(value, 'ts')}, not a string"
    if "data" not in value:
        return "not a convlog record: data is missing"
    meta = value.get("meta", {})
    if type(meta) is not dict:
        return f"meta is {json_type_name(meta)}, not an object"
    for key in ("source", "topic", "session"):
        if type(value.get(key)) not in (str, type(None)):
            return f"{key} is {json_type_name(value[key])}, not a string or null"
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
    topic, session = value.get("topic"), value.get("session")
    if redactor is not None:
        counts: dict[str, int] = {}
        red = redactor.redact_json(data_json, counts)
        if red is not data_json:
            data_json = red
            kept.pop("lf", None)  # offsets into bytes that changed
        topic, session = (_redact_str(redactor, v, counts) for v in (topic, session))
        if extra is not None:
            extra = orjson.loads(redactor.redact_json(orjson.dumps(extra), counts))
        if counts:
            earlier = kept.get("redactions")
            kept["redactions"] = dict(earlier) if isinstance(earlier, dict) else {}
            merge(counts, kept["redactions"])
    try:
        orjson.dumps(kept)
    except TypeError as exc:
        return f"meta cannot be written: {exc}"
    payload_digest = kept.get("sha256") if isinstance(kept.get("sha256"), str) else None
    present_if = (digest, payload_digest) if source == IMPORT_SOURCE and payload_digest else (digest,)
    marks = (digest, payload_digest) if payload_digest else (digest,)

    def build(new_seq: int, now: str) -> bytes:
        head = {"seq": new_seq, "ts": now, "kind": kind, "source": IMPORT_SOURCE, "topic": topic, "session": session}
        return format_line(head, data_json, dict(kept), extra)

    return [ImportEntry(present_if, marks, build)]


def _redact_str(redactor: Redactor, value: str | None, counts: dict[str, int]) -> str | None:
    if value is None:
        return None
    raw = value.encode("utf-8", "surrogatepass")
    red = redactor.redact(raw, counts)
    return value if red is raw else red.decode("utf-8", "surrogatepass")


def _openai_event(message: Any, session: str, message_id: str) -> dict[str, Any] | str:
    """An OpenAI chat message as a native ``message`` event, or why it cannot be one."""
    if type(message) is not dict:
        return f"{json_type_name(message)}, not a message object"
    role = message.get("role")
    if type(role) is not str or not role:
        return f"role is {_field_type(message, 'role')}, not a non-empty string"
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
                return f"content[{index}] is {json_type_name(part)}, not a text part"
        text = "\n".join(texts)
    else:
        return f"content is {json_type_name(content)}, not a string, a list of parts or null"
    event: dict[str, Any] = {"type": "message", "session_id": session, "message_id": message_id, "role": role}
    if type(message.get("name")) is str:
        event["sender"] = message["name"]
    event["content"] = text
    if type(content) is not str or set(message) - {"role", "content"}:
        event["openai"] = message  # parts, names, tool calls: the original, whole
    return event


def openai_outcome(line: bytes, number: int, file_session: str, stem: str, ingest: Ingest) -> Outcome:
    """An OpenAI chat line: one message of the file's conversation, or a whole
    conversation (``{"messages": [...]}``) in a session of its own."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if type(value) is not dict:
        return f"{json_type_name(value)}, not an OpenAI chat message or conversation object"
    events: list[dict[str, Any]] = []
    if "messages" in value:
        messages = value["messages"]
        if type(messages) is not list:
            return f"messages is {json_type_name(messages)}, not a list"
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
        entries.append(ImportEntry(
            (digest,), (digest,),
            lambda seq, ts, topic=topic, payload=payload: ingest.general_line([topic, payload], seq, ts, IMPORT_SOURCE),
        ))
    return entries


def file_session(path: str | Path) -> tuple[str, str]:
    """``(stem, session)`` for the conversation of an OpenAI file of message lines: the
    file's name without its last extension, and that stem with 8 hex digits of the
    SHA-256 of the file's absolute path."""
    resolved = Path(path).resolve()
    stem = resolved.stem or "openai"
    return stem, f"{stem}-{sha256(str(resolved).encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def numbered_lines(path: str | Path) -> Iterator[tuple[int, bytes, bytes]]:
    """``(number, raw line, line without its LF/CRLF ending)`` for each line of a file;
    a file whose name ends in ``.zst`` is decompressed (zstd, e.g. a sealed segment of an
    archive: the seek table's skippable frame is no data)."""
    with (pyzstd.ZstdFile(path, "rb") if str(path).endswith(".zst") else open(path, "rb")) as fh:
        for number, raw in enumerate(fh, 1):
            yield number, raw, raw.rstrip(b"\r\n")
