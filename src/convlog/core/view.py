"""What a person sees of a record: its sender, role and text. Pure code, no I/O.

The fold keeps references (seqs); the read side fetches those records from the log
and asks this module for their text, whatever bus shape they arrived in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from convlog.core.record import dump_json
from convlog.core.wire import content_text

#: What is shown for a message whose source wrote nothing (an empty text or content,
#: ``{}``, the Shearwater recorder's empty ``Message``), instead of nothing or a bare
#: ``{}``.
EMPTY = "(empty: the source wrote nothing)"
_EMPTY_VALUES = ("", "{}", "[]", "null")


def _empty(content: Any) -> bool:
    if isinstance(content, str):
        return content.strip() in _EMPTY_VALUES
    return content == {} or content == []


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 message``, ``2 messages``, ``1,234 records``: a count with its noun agreeing.

    Args:
        count: how many.
        noun: the singular; the plural is ``many``, or the singular plus ``s``.

    Returns:
        the text.
    """
    return f"{count:,} {noun if count == 1 else (many or noun + 's')}"


def _dump(value: Any) -> str:
    return dump_json(value).decode("utf-8", "replace")


def payload_text(record: dict[str, Any]) -> str:
    """The human text of one ``message``/``message.delta``/``message.end``/``raw``
    record, whatever its shape (native, Shearwater, PUSH envelope, legacy).

    Args:
        record: a parsed record.

    Returns:
        the message text; the JSON of the content when it has no text field;
        ``<N bytes, base64>`` for binary payloads; :data:`EMPTY` for a message whose
        content is empty (``""``, ``{}``, ``[]``); for a record that cannot be shown
        (a damaged or foreign line whose fields have unexpected types) a placeholder
        naming its seq. Never raises.
    """
    try:
        return _payload_text(record)
    except Exception as exc:  # one record must not break a reader
        return unshowable(record, exc)


def unshowable(record: Any, exc: BaseException) -> str:
    """The placeholder shown for a record no reader can render: ``<record SEQ cannot be
    shown: TypeName>``."""
    seq = record.get("seq") if isinstance(record, dict) else None
    return f"<record {seq if isinstance(seq, int) else '?'} cannot be shown: {type(exc).__name__}>"


def _payload_text(record: dict[str, Any]) -> str:
    data = record.get("data")
    meta = record.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    encoding = meta.get("encoding")
    if encoding == "text" and isinstance(data, dict):
        return str(data.get("text", ""))
    if encoding == "base64":
        return f"<{meta.get('bytes', '?')} bytes, base64>"
    if not isinstance(data, dict):
        return _dump(data)
    shape = meta.get("shape")
    if shape == "shearwater.push" and isinstance(data.get("message"), dict):
        data = data["message"]
    kind = record.get("kind")
    if kind == "message.delta":
        delta = data.get("delta")
        return delta if isinstance(delta, str) else ""
    if shape == "legacy":
        message = data.get("Message")
        if _empty(message):
            return EMPTY
        if isinstance(message, str):
            try:
                parsed = orjson.loads(message)
            except orjson.JSONDecodeError:
                return message
            return _text_or_json(parsed) or EMPTY
        return _text_or_json(message) or EMPTY
    content = data.get("content")
    if content is None:
        return "" if kind == "message.end" else _dump(data)
    if kind == "message" and _empty(content):
        return EMPTY
    text = _text_or_json(content)
    return EMPTY if kind == "message" and not text else text


def _text_or_json(content: Any) -> str:
    text = content_text(content)
    return _dump(content) if text is None else text


@dataclass(frozen=True, slots=True)
class ShownMessage:
    """One visible message, ready to display.

    Attributes:
        index: 1-based position in the session's visible list.
        message_id, sender, role: identity (None when unknown).
        seq: seq of the record (first delta for streams).
        ts: receive time of that record (RFC 3339).
        text: the body.
        copies: times the message was recorded (1 = no duplicate).
        streamed: assembled from ``message.delta`` records.
        complete: False for a stream that never ended.
    """

    index: int
    message_id: str
    sender: str | None
    role: str | None
    seq: int
    ts: str | None
    text: str
    copies: int = 1
    streamed: bool = False
    complete: bool = True

    def as_dict(self) -> dict[str, Any]:
        """The message as a JSON-friendly dict (its fields by name)."""
        return asdict(self)


def stream_text(records: Sequence[dict[str, Any]]) -> str:
    """Assemble a streamed message from its delta records (in seq order) and, when
    present, its end record: the end's ``content`` wins when it carries one.

    Returns:
        the text.
    """
    parts: list[str] = []
    for record in records:
        if record.get("kind") == "message.end":
            data = record.get("data")
            if isinstance(data, dict) and data.get("content") is not None:
                return payload_text(record)
        else:
            parts.append(payload_text(record))
    return "".join(parts)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` made safe to print on a terminal: CRLF becomes LF, and every other
    control character (ESC, CR, BEL, backspace, the C1 range, ...) becomes a visible
    ``\\xNN``, so an escape sequence recorded in a message cannot move the cursor,
    switch to the alternate screen, retitle or otherwise break the terminal it is read
    on. Newlines and tabs stay.

    Returns:
        the text to print.
    """
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text.replace("\r\n", "\n"))
