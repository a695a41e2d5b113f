"""What a person sees of a record: its sender, role and text. Pure code, no I/O.

The fold keeps references (seqs); the read side fetches those records from the log
and asks this module for their text, whatever bus shape they arrived in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from convlog.core.record import IMPORT_SOURCE, dump_json, format_ts
from convlog.core.wire import content_text

#: What is shown for a message whose source wrote nothing (an empty text or content,
#: ``{}``, the Shearwater recorder's empty ``Message``), instead of nothing or a bare
#: ``{}``. A display marker only: :func:`message_text` (what exports carry) never
#: holds it.
EMPTY = "(empty: the source wrote nothing)"
_EMPTY_VALUES = ("", "{}", "[]", "null")
#: What is shown for a purged record (``convlog purge`` removed its payload), by
#: :func:`message_text` and so by every reader that shows a record's text.
PURGED = "(purged)"


def is_empty(text: str) -> bool:
    """True when a message's text (:func:`message_text`) says nothing: blank, or only
    ``{}``, ``[]`` or ``null``. Decided on the text alone, so a message whose text
    is carried elsewhere (an export document) and recorded again is marked the same.
    """
    return text.strip() in _EMPTY_VALUES


def shown_text(kind: str | None, text: str) -> str:
    """What is shown of a message of record ``kind`` whose text is ``text``: :data:`EMPTY`
    for an empty ``message`` (see :func:`is_empty`), else the text. Streamed parts
    (``message.delta``, ``message.end``) are shown as they are.
    """
    return EMPTY if kind == "message" and is_empty(text) else text


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 message``, ``2 messages``, ``1,234 records``: a count with its noun agreeing.

    Args:
        count: how many.
        noun: the singular; the plural is ``many``, or the singular plus ``s``.

    Returns:
        the text.
    """
    return f"{count:,} {noun if count == 1 else (many or noun + 's')}"


#: The payload fields that carry a message's own time, in the order they are tried: the
#: legacy ConversationEvent's ``Timestamp``, then the usual names in bus payloads.
OWN_TIME_FIELDS = ("Timestamp", "timestamp", "ts", "created_at", "created")
#: Epoch numbers below this are seconds; up to 1e3 times more milliseconds, and so on
#: (the convention of JavaScript's ``Date.now()`` and of most JSON APIs).
_EPOCH_SECONDS_BELOW = 1e11
_EPOCH_UNITS = (1, 1000, 1_000_000, 1_000_000_000)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def own_time(record: dict[str, Any]) -> str | None:
    """The time a message carries itself (when its sender says it was written), as
    opposed to the record's ``ts``, the time the recorder (or an import) received it.

    Looks at the top-level fields of the payload (``data``) named in
    :data:`OWN_TIME_FIELDS`, first one that holds a time wins. Accepted values: ISO
    8601 / RFC 3339 text (a time without an offset, as the legacy recorder wrote, is
    taken as UTC) and Unix epoch numbers in seconds, milliseconds, microseconds or
    nanoseconds (told apart by size: unambiguous for times from 1974 to 5138).

    Args:
        record: a parsed record (``seq``, ``ts``, ``kind``, ``data``, ...).

    Returns:
        the time in the records' ``ts`` form (RFC 3339 UTC with microseconds, ``Z``),
        or None when the payload carries no usable time. Never raises.
    """
    data = record.get("data")
    if not isinstance(data, dict):
        return None
    for key in OWN_TIME_FIELDS:
        value = data.get(key)
        if value is not None:
            when = _as_time(value)
            if when is not None:
                return when
    return None


def on_time(record: dict[str, Any], as_of_ts: str) -> bool:
    """Whether ``record`` belongs to the log as it was at ``as_of_ts`` (RFC 3339 text in
    the records' form).

    A record counts from its receive time ``ts``, except an imported one
    (``source`` ``import``): its time is the message's own time
    (:func:`own_time`, e.g. a legacy ``Timestamp``) when it carries
    one, since an import writes a conversation that happened before it was imported.

    Returns:
        True when that time is at or before ``as_of_ts``.
    """
    if record.get("source") == IMPORT_SOURCE:
        own = own_time(record)
        if own is not None:
            return own <= as_of_ts
    return str(record.get("ts")) <= as_of_ts


def times_text(sent: str | None, received: object) -> str:
    """When a message was sent (its own time) and received, for people: ``sent
    2025-12-02 00:55:51 · received 2026-12-05 22:08:36``; one time when both fall in
    the same second (``sent and received ...``, live traffic with synchronised clocks)
    or when only the receive time is known (``received ...``). Times are UTC, to the
    second.

    Args:
        sent: the message's own time (:func:`own_time`), or None.
        received: the record's ``ts`` (any value: a damaged record's is shown as
            it is), or None.

    Returns:
        the text (``received ?`` when neither is known). Never raises.
    """
    def second(ts: object) -> str:
        return ts[:19].replace("T", " ") if isinstance(ts, str) else repr(ts)

    if not isinstance(received, str) and received is not None:
        received = repr(received)  # a damaged record: shown as it is, never a crash
    if sent is None:
        return f"received {second(received) if received else '?'}"
    if received is None:
        return f"sent {second(sent)}"
    if second(sent) == second(received):
        return f"sent and received {second(received)}"
    return f"sent {second(sent)} · received {second(received)}"


def _as_time(value: Any) -> str | None:
    """``value`` (text or an epoch number) as ``ts`` text, or None."""
    when: datetime | None = None
    try:
        if isinstance(value, str):
            if not 10 <= len(value) <= 40:
                return None
            when = datetime.fromisoformat(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
        elif isinstance(value, int | float) and not isinstance(value, bool) and value == value:
            for unit in _EPOCH_UNITS:
                if abs(value) < _EPOCH_SECONDS_BELOW * unit:
                    # Integers in whole microseconds, so nanoseconds in 2500 stay exact.
                    micros = value * 1_000_000 // unit if isinstance(value, int) else round(value * 1e6 / unit)
                    when = _EPOCH + timedelta(microseconds=micros)
                    break
        if when is None:
            return None
        text = format_ts(when)
    except (ValueError, OverflowError, OSError):
        return None
    # Four-digit years from 1970 only: ``ts`` text compares as time only then.
    return text if len(text) == 27 and text >= "1970" else None


def _dump(value: Any) -> str:
    return dump_json(value).decode("utf-8", "replace")


def payload_text(record: dict[str, Any]) -> str:
    """The human text of one ``message``/``message.delta``/``message.end``/``raw``
    record, whatever its shape (native, Shearwater, PUSH envelope, legacy), as shown.

    Args:
        record: a parsed record.

    Returns:
        :func:`message_text`, or :data:`EMPTY` for a ``message`` whose text is empty
        (see :func:`shown_text`). Never raises.
    """
    return shown_text(record.get("kind") if isinstance(record, dict) else None, message_text(record))


def message_text(record: dict[str, Any]) -> str:
    """The text one ``message``/``message.delta``/``message.end``/``raw`` record
    carries, whatever its shape (native, Shearwater, PUSH envelope, legacy), as its
    source wrote it (never the display marker :data:`EMPTY`).

    Args:
        record: a parsed record.

    Returns:
        the message text; the JSON of the content when it has no text field;
        ``<N bytes, base64>`` for binary payloads; :data:`PURGED` for a purged record;
        for a record that cannot be shown
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
    if meta.get("purged") is True:
        return PURGED
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
        if isinstance(message, str):
            try:
                parsed = orjson.loads(message)
            except orjson.JSONDecodeError:
                return message
            return _text_or_json(parsed)
        return _text_or_json(message)
    content = data.get("content")
    if content is None:
        return "" if kind == "message.end" else _dump(data)
    return _text_or_json(content)


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
        sent: the message's own time (:func:`own_time`), or None when it carries none.
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
    sent: str | None = None

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
                return message_text(record)
        else:
            parts.append(message_text(record))
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
