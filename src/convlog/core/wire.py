"""Decoding ZeroMQ frames into record parts, and the bus shapes convlog knows.

Pure code, no I/O: :func:`decode` turns the frames of one message into a
:class:`Decoded` (kind, topic, session, the ``data`` JSON to splice, and the identity
fields the fold needs). It never raises and never loses a byte: whatever it cannot
understand becomes ``unknown`` (JSON of another shape) or ``raw`` (not JSON), with the
bytes kept as documented in :mod:`convlog.core.record`.

Shapes recognised (see ``shared/data/shearwater/README.md`` for the foreign ones):

``native``
    a JSON object whose ``type`` is in :data:`convlog.core.record.BUS_KINDS`.
``shearwater``
    a Shearwater bus message: an object with ``message_id``, ``content`` and a sender
    (``from`` or ``sender_id``); its ``type`` is a Shearwater type (``handshake``, …).
``shearwater.push``
    the envelope the Shearwater agents PUSHed to the recorder:
    ``{"event_type": "sent"|"received", "agent": …, "message": {<bus message>}}``.
``legacy``
    a legacy ConversationEvent record (``Id``, ``SpeakerName``, ``Message``, …).

Frames: with two frames, the first is the topic and the second the payload (the
ZeroMQ guide's pub-sub envelope, chapter 2, "Pub-Sub Message Envelopes"). A single
frame is the payload with no topic (PUSH sockets send one frame). Frames after the
second are kept in ``extra_frames``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from convlog.core.record import (
    BUS_KINDS,
    RAW,
    UNKNOWN,
    deep_reason,
    encode_bytes,
    one_line,
    too_deep,
)

#: Default fields, in order, whose first present string value names the session.
DEFAULT_SESSION_FIELDS: tuple[str, ...] = (
    "session_id",
    "session",
    "conversation_id",
    "context_id",
    "ContextId",
    "thread_id",
)


@dataclass(slots=True)
class Decoded:
    """What one bus message decodes to (everything but seq, time and enrichment).

    Attributes:
        kind: the record kind (``message``, ``session.fork``, …, ``unknown``, ``raw``).
        topic: first frame as text (base64 when not UTF-8), or None for one frame.
        session: session id, or None.
        data_json: the ``data`` value as one line of JSON bytes, ready to splice.
        payload: the payload frame as received (for sizes and hashing).
        value: the parsed payload when it is JSON, else None.
        meta: identity fields found by decoding: ``shape``, ``message_id``,
            ``sender``, ``role``, ``encoding``, ``topic_encoding``, ``frames``,
            ``event_type`` — only those that apply.
        text: the human text of the message when one was found (for rules), else None.
        extra_frames: encoded frames after the payload, or None.
    """

    kind: str
    topic: str | None
    session: str | None
    data_json: bytes
    payload: bytes
    value: Any
    meta: dict[str, Any]
    text: str | None
    extra_frames: list[dict[str, str]] | None


def _str(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        return value
    if kind is int:
        return str(value)
    return None


def session_of(obj: dict[str, Any], fields: Sequence[str]) -> str | None:
    """Return the first present session field of ``obj`` as a string.

    Args:
        obj: a decoded JSON object.
        fields: field names to try, in order.

    Returns:
        the value of the first field holding a string (or integer, as text), else None.
    """
    get = obj.get
    for name in fields:
        value = get(name)
        if value is not None:
            if value.__class__ is str:
                return value
            value = _str(value)
            if value is not None:
                return value
    return None


def content_text(content: Any) -> str | None:
    """The human text of a message ``content``: a string, or ``content["message"]``,
    ``["text"]`` or ``["content"]`` when it is an object holding a string there.

    Args:
        content: a JSON value.

    Returns:
        the text, or None when there is none.
    """
    kind = type(content)
    if kind is str:
        return content
    if kind is dict:
        for key in ("message", "text", "content"):
            value = content.get(key)
            if isinstance(value, str):
                return value
    return None


def _legacy_text(message: Any) -> str | None:
    if isinstance(message, str):
        try:
            return content_text(orjson.loads(message))
        except orjson.JSONDecodeError:
            return message
    return content_text(message)


def classify(obj: Any, fields: Sequence[str]) -> tuple[str, str | None, dict[str, Any], str | None]:
    """Classify a parsed JSON payload.

    Args:
        obj: the parsed payload.
        fields: session fields, in order.

    Returns:
        ``(kind, session, identity, text)``: identity holds ``shape`` and, where
        known, ``message_id``, ``sender``, ``role`` and ``event_type``.
    """
    if type(obj) is not dict:
        return UNKNOWN, None, {"shape": "json"}, None
    get = obj.get
    kind = get("type")
    if kind.__class__ is str and kind in BUS_KINDS:
        # The recorder's hot path: plain string fields are taken as they are and only
        # other types go through _put's conversion.
        ident: dict[str, Any] = {"shape": "native"}
        value = get("message_id")
        if value.__class__ is str:
            ident["message_id"] = value
        elif value is not None:
            _put(ident, "message_id", value)
        value = get("sender") or get("from")
        if value.__class__ is str:
            ident["sender"] = value
        elif value is not None:
            _put(ident, "sender", value)
        value = get("role")
        if value.__class__ is str:
            ident["role"] = value
        elif value is not None:
            _put(ident, "role", value)
        if kind == "message":
            text = get("content")
            if text.__class__ is not str:
                text = content_text(text)
        else:
            text = _str(get("delta")) if kind == "message.delta" else None
        return kind, session_of(obj, fields), ident, text
    if "message_id" in obj and "content" in obj and ("sender_id" in obj or "from" in obj):
        ident = {"shape": "shearwater"}
        metadata = get("metadata")
        _put(ident, "message_id", get("message_id"))
        _put(ident, "sender", get("sender_id") or get("from"))
        _put(ident, "role", metadata.get("sender_role") if type(metadata) is dict else None)
        _put(ident, "recipient", get("to"))
        _put(ident, "bus_type", kind)
        return "message", session_of(obj, fields), ident, content_text(get("content"))
    inner = get("message")
    if "event_type" in obj and type(inner) is dict:
        kind, session, ident, text = classify(inner, fields)
        ident["shape"] = "shearwater.push"
        _put(ident, "event_type", get("event_type"))
        if "sender" not in ident:
            _put(ident, "sender", get("agent"))
        return kind, session if session is not None else session_of(obj, fields), ident, text
    if "Id" in obj and "SpeakerName" in obj and "Message" in obj:
        ident = {"shape": "legacy"}
        _put(ident, "message_id", get("Id"))
        _put(ident, "sender", get("SpeakerName"))
        _put(ident, "role", get("SpeakerRole"))
        return "message", session_of(obj, fields), ident, _legacy_text(get("Message"))
    return UNKNOWN, session_of(obj, fields), {"shape": "json"}, None


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    text = _str(value)
    if text is not None:
        target[key] = text


def decode(frames: Sequence[bytes], fields: Sequence[str] = DEFAULT_SESSION_FIELDS) -> Decoded:
    """Decode the frames of one ZeroMQ message. Never raises; never drops a byte.

    Args:
        frames: the message's frames as received (``recv_multipart``); may be empty.
        fields: session id fields, in order; the topic is the fallback session.

    Returns:
        a :class:`Decoded`. ``data_json`` is the payload's own bytes when it is JSON
        (see :func:`convlog.core.record.one_line_json`), else the encoded form.
    """
    count = len(frames)
    extra = None
    meta: dict[str, Any] | None = None
    if count == 2:
        topic_frame, payload = frames
    elif count < 2:
        payload = frames[0] if count else b""
        topic_frame = None
        meta = {"frames": count}
    else:
        topic_frame, payload = frames[0], frames[1]
        meta = {"frames": count}
        extra = [encode_bytes(f)[0] for f in frames[2:]]
    topic = None
    if topic_frame is not None:
        try:
            topic = topic_frame.decode("utf-8")
        except UnicodeDecodeError:
            topic = base64.b64encode(topic_frame).decode("ascii")
            meta = meta or {}
            meta["topic_encoding"] = "base64"
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        depth = too_deep(payload)
        if depth:  # JSON-like text nested past orjson's 1024 levels: as any too-deep payload
            return _too_deep(topic, payload, meta, extra, depth)
        encoded_value, encoding = encode_bytes(payload)
        meta = meta or {}
        meta["encoding"] = encoding
        return Decoded(
            RAW, topic, topic, orjson.dumps(encoded_value), payload, None, meta,
            encoded_value.get("text"), extra,
        )
    depth = too_deep(payload)
    if depth:
        return _too_deep(topic, payload, meta, extra, depth)
    kind, session, ident, text = classify(value, fields)
    if meta:
        ident.update(meta)
    payload_json, newlines = one_line(payload)
    if newlines is not None:
        ident["lf"] = newlines
    return Decoded(
        kind, topic, topic if session is None else session, payload_json, payload, value, ident, text, extra
    )


def _too_deep(topic: str | None, payload: bytes, meta: dict[str, Any] | None,
              extra: list[dict[str, str]] | None, depth: int) -> Decoded:
    """A payload nested deeper than every reader can take back: stored like bytes that
    are not JSON, in base64 with ``meta.reason`` (lossless; play sends the same bytes)."""
    meta = meta or {}
    meta["encoding"] = "base64"
    meta["reason"] = deep_reason(depth)
    encoded_value = {"base64": base64.b64encode(payload).decode("ascii")}
    return Decoded(RAW, topic, topic, orjson.dumps(encoded_value), payload, None, meta, None, extra)


def legacy_to_bus(event: dict[str, Any]) -> tuple[bytes, bytes]:
    """Turn a legacy ConversationEvent record back into the bus message it came from.

    Follows ``shared/data/shearwater/README.md``: ``message_id`` = ``Id``,
    ``timestamp`` = ``Timestamp``, ``sender_id`` = ``SpeakerName``, ``context_id`` =
    ``ContextId``, ``content`` = the object parsed from ``Message`` (the string itself
    when it is not JSON), ``metadata`` = ``Metadata``; the topic is the sender's name.

    Args:
        event: one parsed legacy record.

    This is the Shearwater bus shape, which has no place for ``SpeakerRole``,
    ``TimestampEnd``, ``ConversationType`` or other top-level fields: ``convlog
    publish`` sends the record itself instead (see :func:`parse_legacy`), so that a
    published file and an imported one give the same records.

    Returns:
        ``(topic, payload)`` as bytes.

    Raises:
        KeyError: when ``Id`` or ``SpeakerName`` is missing.
    """
    message = event.get("Message")
    if isinstance(message, str):
        try:
            content = orjson.loads(message)
        except orjson.JSONDecodeError:
            content = message
    else:
        content = message
    payload = {
        "message_id": event["Id"],
        "timestamp": event.get("Timestamp"),
        "sender_id": event["SpeakerName"],
        "context_id": event.get("ContextId"),
        "content": content,
        "metadata": event.get("Metadata"),
    }
    return str(event["SpeakerName"]).encode("utf-8"), orjson.dumps(payload)


def is_legacy(event: Any) -> bool:
    """True when ``event`` looks like a legacy ConversationEvent record."""
    return isinstance(event, dict) and "Id" in event and "SpeakerName" in event and "Message" in event


class LegacyRecordError(ValueError):
    """A line that is not a usable legacy ConversationEvent record; ``str()`` is the
    reason (without file and line, which the caller adds)."""


#: Fields of a legacy record that readers use: ``(name, accepted JSON types, what the
#: reason says is expected)``; the first three are required. ``type(None)`` stands for
#: JSON null; ``int`` never accepts a boolean. Other top-level fields may hold anything.
LEGACY_FIELDS: tuple[tuple[str, tuple[type, ...], str], ...] = (
    ("Id", (str, int), "a string or an integer"),
    ("SpeakerName", (str, int), "a string"),
    ("Message", (str, dict, type(None)), "a string, an object or null"),
    ("SpeakerRole", (str, type(None)), "a string or null"),
    ("ContextId", (str, int, type(None)), "a string, an integer or null"),
    ("Timestamp", (str, type(None)), "a string or null"),
    ("TimestampEnd", (str, type(None)), "a string or null"),
    ("Metadata", (dict, type(None)), "an object or null"),
    ("ConversationType", (int, type(None)), "an integer or null"),
)

_JSON_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
                    bool: "a boolean", type(None): "null"}


def json_type_name(value: Any) -> str:
    """What a parsed JSON value is, for an error message: ``an object``, ``an array``,
    ``a string``, ``an integer``, ``a number``, ``a boolean``, ``null`` (``a value``
    for anything else)."""
    return _JSON_TYPE_NAMES.get(type(value), "a value")


def _shown(value: Any, limit: int = 60) -> str:
    """A value as JSON for a reason: ASCII only, so no control or escape character of a
    foreign file reaches the terminal the reason is printed on."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_legacy(line: bytes) -> tuple[bytes, dict[str, Any]]:
    """Parse and check one line of a legacy ConversationEvent file: the one reading of
    those files, shared by ``convlog import`` and ``convlog publish --format legacy``.

    A valid line is a JSON object with ``Id``, ``SpeakerName`` and ``Message`` whose
    known fields (:data:`LEGACY_FIELDS`) hold the JSON types readers expect. The line
    itself is what gets recorded (as the payload, byte for byte), so every field,
    known or not, is kept; :func:`classify` reads it as shape ``legacy`` (``sender``
    from ``SpeakerName``, ``role`` from ``SpeakerRole``, session from ``ContextId``).

    Args:
        line: one line, without its line ending.

    Returns:
        ``(topic, record)``: the topic is the ``SpeakerName`` as UTF-8 bytes; the record
        the parsed object.

    Raises:
        LegacyRecordError: why the line is not a usable record (``not JSON: ...``,
            ``not a legacy ConversationEvent record (...)``, ``SpeakerRole is 5, not a
            string or null``, ...).
    """
    try:
        value: Any = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise LegacyRecordError(f"not JSON: {exc}") from None
    if type(value) is not dict:
        raise LegacyRecordError(
            f"not a legacy ConversationEvent record ({json_type_name(value)}, not an object)"
        )
    if not is_legacy(value):
        raise LegacyRecordError("not a legacy ConversationEvent record (needs Id, SpeakerName and Message)")
    for name, accepted, expected in LEGACY_FIELDS:
        if name not in value:
            continue
        field_value = value[name]
        if type(field_value) not in accepted:
            raise LegacyRecordError(f"{name} is {_shown(field_value)}, not {expected}")
    return str(value["SpeakerName"]).encode("utf-8"), value
