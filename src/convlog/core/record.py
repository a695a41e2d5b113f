"""The log record: its fields, its kinds, and how one is turned into one JSONL line.

Pure code, no I/O. A record is one line of UTF-8 JSON ending in ``\\n``::

    {"seq": 1, "ts": "2026-11-21T12:00:00.000001Z", "kind": "message", "source": "sub",
     "topic": "agent.a", "session": "s1", "data": <payload>, "meta": {...}}

and, only for messages of three frames or more, ``"extra_frames": [<frame>, ...]``.

``data`` is the payload exactly as received. When the payload is JSON (RFC 8259, as
accepted by orjson) its bytes are spliced into the line unchanged, so big integers,
key order and duplicate keys survive byte for byte; the only change is that a raw LF
*between tokens* becomes a space so the record stays on one line (a JSON string cannot
hold a raw LF, so no value changes), and ``meta.lf`` lists the byte offsets of those LFs
so the exact bytes can be rebuilt (:func:`restore_newlines`; ``convlog play`` does). Any other payload is stored
in one of two documented forms, and ``meta.encoding`` says which:

* ``{"text": "<the payload decoded as UTF-8>"}`` with ``meta.encoding == "text"``;
* ``{"base64": "<RFC 4648 base64 of the bytes>"}`` with ``meta.encoding == "base64"``
  when the bytes are not valid UTF-8, or when they are JSON nested deeper than
  :data:`MAX_DEPTH` levels (then ``meta.reason`` says so), which not every reader
  could parse back or re-serialise.

Extra frames always use one of those two forms. The topic is the first frame decoded
as UTF-8, or its base64 with ``meta.topic_encoding == "base64"``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from orjson import Fragment

_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE

#: Kinds a publisher may send as the payload's ``type`` (docs/log-format.md, ``kind``).
BUS_KINDS: frozenset[str] = frozenset(
    {
        "message",
        "message.delta",
        "message.end",
        "session.start",
        "session.fork",
        "session.rewind",
        "session.checkpoint",
        "session.crystal",
        "session.delete",
        "llm.request",
        "publisher.heartbeat",
    }
)

#: Kinds the recorder writes about itself; a publisher cannot forge them.
RECORDER_KINDS: frozenset[str] = frozenset(
    {"recorder.start", "recorder.stop", "recorder.recovered", "recorder.gap", "recorder.dropped",
     "recorder.degraded", "recorder.error", "recorder.config", "recorder.pruned"}
)

#: Kind of the record ``convlog purge`` writes about what it removed (docs/log-format.md,
#: "Purge"). Like the recorder's own kinds, a publisher cannot send it: a payload whose
#: ``type`` is ``session.purged`` is recorded as ``unknown``.
PURGED_KIND = "session.purged"

UNKNOWN = "unknown"
RAW = "raw"
#: ``source`` of the records ``convlog import`` writes.
IMPORT_SOURCE = "import"

#: Deepest nesting of arrays and objects a payload may have to be stored as JSON (the
#: payload's outermost array or object is level 1). orjson parses at most 1024 levels,
#: and a record adds a level around ``data`` (export documents a few more); a deeper
#: payload is stored in its base64 form with ``meta.reason`` (see :func:`too_deep`), so
#: every stored line, and every export of it, parses back. (orjson serialises at most
#: 254 levels: readers write what they read with :func:`dump_json`, which has no limit.)
MAX_DEPTH = 1000
#: A payload shorter than this cannot nest deeper than :data:`MAX_DEPTH` (each level
#: takes an opening and a closing bracket), bytes: the recorder skips the check.
SHALLOW_BYTES = 2 * MAX_DEPTH + 2
#: Largest integer the recorder takes from the wire into arithmetic or persisted state
#: (a publisher stamp's seq must be below it): a signed 64-bit integer, which every JSON
#: reader of the log (orjson, jq, PostgreSQL's bigint) holds exactly.
MAX_WIRE_INT = 2**63 - 1
#: How far ahead of the wall clock a previous record's ``ts`` may be for
#: :meth:`Clock.floor` to keep later records after it, seconds (7 days).
MAX_FLOOR_AHEAD_S = 7 * 86400


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion.

    Args:
        value: what ``orjson.loads`` returned.

    Returns:
        0 for a scalar, 1 for a flat array or object, +1 per level below.
    """
    deepest = 0
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, level = pop()
        if item.__class__ is dict:
            item = item.values()
        elif item.__class__ is not list:
            continue
        if level > deepest:
            deepest = level
        for child in item:
            if child.__class__ is dict or child.__class__ is list:
                push((child, level + 1))
    return deepest


def too_deep(payload: bytes) -> int:
    """The nesting depth of a JSON payload when it exceeds :data:`MAX_DEPTH`, else 0.

    Measured on the bytes as they will be stored (brackets outside strings), not on the
    parsed value, where a later duplicate key may have dropped a deep part. Cheap for
    ordinary payloads: only those :func:`may_be_deep` names are scanned.

    Args:
        payload: JSON bytes (or bytes that look like JSON but orjson refused).

    Returns:
        the depth (> :data:`MAX_DEPTH`) or 0 when the payload may be stored as JSON.
    """
    if not may_be_deep(payload):
        return 0
    depth = text_depth(payload)
    return depth if depth > MAX_DEPTH else 0


def may_be_deep(payload: bytes) -> bool:
    """The cheap half of :func:`too_deep` (the recorder's fast path asks it alone): False
    when ``payload`` cannot nest deeper than :data:`MAX_DEPTH`, being shorter than
    :data:`SHALLOW_BYTES` or holding at most :data:`MAX_DEPTH` brackets."""
    return len(payload) >= SHALLOW_BYTES and many_brackets(payload)


def many_brackets(payload: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether ``payload`` holds more than ``limit`` ``[`` and ``{`` bytes in all (a
    payload nested deeper than ``limit`` does). Steps from one bracket to the next with
    ``bytes.find`` (memchr), so a long payload with few brackets, the usual message,
    costs a few calls, and a bracket-heavy one stops at ``limit``."""
    find = payload.find
    count = 0
    for bracket in (b"[", b"{"):
        at = find(bracket)
        while at >= 0:
            count += 1
            if count > limit:
                return True
            at = find(bracket, at + 1)
    return False


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(rb"[^\[\]{}]+")
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def text_depth(payload: bytes) -> int:
    """Deepest nesting of brackets outside JSON strings in ``payload`` (0 for none).

    Args:
        payload: JSON text as bytes, valid or not (an unclosed string hides the rest).

    Returns:
        the greatest number of ``[``/``{`` open at once.
    """
    brackets = _NOT_BRACKETS.sub(b"", _STRINGS.sub(b"", payload))
    deepest = level = 0
    for step in brackets.translate(_BRACKET_STEPS):
        level += 1 if step == 1 else -1
        if level > deepest:
            deepest = level
    return deepest


def deep_reason(depth: int) -> str:
    """``meta.reason`` of a payload stored in base64 because it is nested ``depth`` levels."""
    return f"JSON nested {depth} levels deep (stored as JSON up to {MAX_DEPTH})"


def dump_json(
    value: Any, option: int = 0, default: Callable[[Any], Any] | None = None, errors: str = "replace"
) -> bytes:
    """Serialise any value parsed from the log, the bus or a request: ``orjson.dumps``,
    or, for what orjson refuses (nesting past 254 levels, integers past 64 bits), the
    same JSON through an iterative encoder that has neither limit.

    Args:
        value: a JSON-like value (dict with str keys, list, str, int, float, bool, None).
        option: orjson options (``OPT_INDENT_2``, ``OPT_APPEND_NEWLINE``, ...); the
            fallback writes compact JSON and honours only ``OPT_APPEND_NEWLINE``.
        default: called for values orjson cannot serialise (as ``orjson.dumps``); the
            fallback uses ``str`` of them when None.
        errors: what the fallback does with a lone surrogate in a str, which UTF-8
            cannot hold: ``"replace"`` (written as ``?``), or ``"strict"`` (raise).

    Returns:
        UTF-8 JSON bytes. Never raises for values made of JSON types with ``"replace"``.

    Raises:
        UnicodeEncodeError: with ``errors="strict"``, for a lone surrogate.
    """
    try:
        return orjson.dumps(value, option=option, default=default)
    except TypeError:
        # A lone surrogate in a str cannot be UTF-8 (orjson refuses it too): written as
        # "?" (errors="replace"), so the output is always valid UTF-8 JSON.
        text = _encode_iterative(value, default or str).encode("utf-8", errors)
        return text + b"\n" if option & orjson.OPT_APPEND_NEWLINE else text


def _encode_iterative(value: Any, default: Callable[[Any], Any]) -> str:
    """Compact JSON of ``value`` with an explicit stack (no recursion limit, any int)."""
    out: list[str] = []
    stack: list[list[Any]] = []  # [iterator, closing bracket, is an object, first item]
    scalar = json.JSONEncoder(ensure_ascii=False, default=default, separators=(",", ":")).encode

    def open_value(item: Any) -> None:
        if isinstance(item, dict):
            out.append("{")
            stack.append([iter(item.items()), "}", True, True])
        elif isinstance(item, list | tuple):
            out.append("[")
            stack.append([iter(item), "]", False, True])
        elif (isinstance(item, float) and item != item) or item in (float("inf"), float("-inf")):
            out.append("null")  # as orjson writes NaN and infinities
        else:
            out.append(scalar(item))

    open_value(value)
    while stack:
        frame = stack[-1]
        try:
            item = next(frame[0])
        except StopIteration:
            out.append(frame[1])
            stack.pop()
            continue
        if not frame[3]:
            out.append(",")
        frame[3] = False
        if frame[2]:
            key, item = item
            out.append(scalar(key if isinstance(key, str) else str(key)))
            out.append(":")
        open_value(item)
    return "".join(out)

def encode_bytes(frame: bytes) -> tuple[dict[str, str], str]:
    """Encode non-JSON bytes losslessly for a record.

    Args:
        frame: the bytes as received.

    Returns:
        ``({"text": str}, "text")`` when ``frame`` is valid UTF-8, else
        ``({"base64": str}, "base64")`` (RFC 4648 standard alphabet, padded).
    """
    try:
        return {"text": frame.decode("utf-8")}, "text"
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(frame).decode("ascii")}, "base64"


def decode_bytes(value: dict[str, str]) -> bytes:
    """Invert :func:`encode_bytes`.

    Args:
        value: ``{"text": str}`` or ``{"base64": str}``.

    Returns:
        the original bytes.

    Raises:
        ValueError: when ``value`` is neither form.
    """
    if "text" in value:
        return value["text"].encode("utf-8")
    if "base64" in value:
        return base64.b64decode(value["base64"], validate=True)
    raise ValueError(f"not an encoded frame: {sorted(value)!r}")


def one_line_json(payload: bytes) -> bytes:
    """Return JSON payload bytes that are safe to splice into one JSONL line.

    Args:
        payload: bytes already known to be valid JSON.

    Returns:
        ``payload`` itself, or a copy in which raw LF bytes (which valid JSON can only
        hold as whitespace between tokens) are replaced by spaces. A raw CR is JSON
        whitespace too and does not end a line, so it is kept.
    """
    if b"\n" in payload:
        return payload.replace(b"\n", b" ")
    return payload


def one_line(payload: bytes) -> tuple[bytes, list[int] | None]:
    """A JSON payload ready to splice into a line, and what ``meta.lf`` keeps of it:
    :func:`one_line_json` and, when it changed the bytes, :func:`newline_offsets`.

    Returns:
        ``(bytes to splice, LF offsets or None)``.
    """
    data = one_line_json(payload)
    return data, (None if data is payload else newline_offsets(payload))


def newline_offsets(payload: bytes) -> list[int]:
    """Byte offsets of the raw LFs in a payload: kept in ``meta.lf`` when
    :func:`one_line_json` turns them into spaces, so the exact bytes can be rebuilt
    (:func:`restore_newlines`).

    Returns:
        the offsets, ascending (empty when there is none).
    """
    offsets = []
    at = payload.find(b"\n")
    while at >= 0:
        offsets.append(at)
        at = payload.find(b"\n", at + 1)
    return offsets


def restore_newlines(data: bytes, offsets: Any) -> bytes:
    """Invert :func:`one_line_json` with the offsets of :func:`newline_offsets`: the
    spaces at ``offsets`` become LFs again. Offsets that are not integers pointing at a
    space in ``data`` (a damaged record) are ignored.

    Returns:
        the payload as received.
    """
    if not isinstance(offsets, list) or not offsets:
        return data
    out = bytearray(data)
    for at in offsets:
        if type(at) is int and 0 <= at < len(out) and out[at] == 0x20:
            out[at] = 0x0A
    return bytes(out)


def format_line(
    head: dict[str, Any],
    data_json: bytes,
    meta: dict[str, Any],
    extra_frames: list[dict[str, str]] | None = None,
) -> bytes:
    """Assemble one record line.

    One ``orjson.dumps`` call: the payload's JSON bytes go in as an ``orjson.Fragment``
    (spliced unchanged, not re-parsed) and the newline comes from
    ``OPT_APPEND_NEWLINE``.

    Args:
        head: ``seq``, ``ts``, ``kind``, ``source``, ``topic``, ``session`` in that
            order; completed in place with ``data``, ``meta`` and ``extra_frames``.
        data_json: the ``data`` value as JSON bytes on one line.
        meta: the enrichment object.
        extra_frames: encoded frames after the payload, or None.

    Returns:
        the line, UTF-8 JSON terminated by ``\\n``.
    """
    head["data"] = Fragment(data_json)
    head["meta"] = meta
    if extra_frames:
        head["extra_frames"] = extra_frames
    return _dumps(head, option=_NEWLINE)


def make_line(
    seq: int,
    ts: str,
    kind: str,
    source: str,
    topic: str | None,
    session: str | None,
    data: Any,
    meta: dict[str, Any] | None = None,
) -> bytes:
    """Serialize a record built by the recorder itself (``recorder.*``, control, import).

    Args:
        seq: the record's ``seq`` field (see the module doc).
        ts: the record's ``ts`` field (see the module doc).
        kind: the record's ``kind`` field (see the module doc).
        source: the record's ``source`` field (see the module doc).
        topic: the record's ``topic`` field (see the module doc).
        session: the record's ``session`` field (see the module doc).
        data: any JSON-serializable value.
        meta: enrichment, default empty.

    Returns:
        the line, as :func:`format_line`.

    Raises:
        TypeError: when ``data`` or ``meta`` cannot be written as JSON (a lone
            surrogate, a non-JSON type; an integer past 64 bits in ``meta``). In
            ``data``, nesting or integers orjson refuses are written by
            :func:`dump_json` (callers keep such data below :data:`MAX_DEPTH`).
    """
    head = {"seq": seq, "ts": ts, "kind": kind, "source": source, "topic": topic, "session": session}
    try:
        # Nesting past orjson's limit or integers past 64 bits: dump_json's encoder.
        data_json = dump_json(data, default=_not_json, errors="strict")
    except (TypeError, UnicodeEncodeError) as exc:
        raise TypeError(f"record data cannot be written as JSON: {exc}") from None
    return format_line(head, data_json, meta or {})


_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hours?|d|days?|w|weeks?)(?:\s+ago)?$", re.IGNORECASE)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400,
           "days": 86400, "w": 604800, "week": 604800, "weeks": 604800}


def parse_when(text: str, now: datetime) -> datetime:
    """A time as people write it on a command line: ISO 8601 / RFC 3339 (UTC unless a
    zone is given), ``now``, ``today`` and ``yesterday`` (midnight UTC), or a span
    before ``now``: ``90s``, ``15m``, ``1h``, ``2d``, ``1w`` (``ago`` may follow).

    Args:
        text: the value.
        now: the current time (timezone-aware), for the relative forms.

    Returns:
        a timezone-aware UTC datetime.

    Raises:
        ValueError: when it is none of these.
    """
    value = text.strip()
    lowered = value.lower()
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if lowered == "now":
        return now.astimezone(UTC)
    if lowered == "today":
        return midnight
    if lowered == "yesterday":
        return midnight - timedelta(days=1)
    ago = _AGO.match(value)
    if ago:
        return now.astimezone(UTC) - timedelta(seconds=float(ago.group(1)) * _UNIT_S[ago.group(2).lower()])
    when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def format_ts(when: datetime) -> str:
    """A datetime in the records' ``ts`` form (RFC 3339 UTC, microseconds, ``Z``), which
    compares correctly as text."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def with_meta(line: bytes, key: str, value: Any) -> bytes:
    """Add one ``meta`` field to a line made by :func:`format_line`, without
    re-serialising ``data`` (its bytes stay as received).

    Args:
        line: a record line; its ``meta`` object is the last ``,"meta":{`` in it
            (only ``extra_frames``, encoded frames, may follow it).
        key: the field's name (a plain identifier).
        value: a JSON-serialisable value.

    Returns:
        the new line, or ``line`` unchanged when it has no ``meta`` object.
    """
    at = line.rfind(b',"meta":{')
    if at < 0:
        return line
    at += len(b',"meta":{')
    field = orjson.dumps(key) + b":" + orjson.dumps(value)
    return line[:at] + field + (b"" if line[at:at + 1] == b"}" else b",") + line[at:]


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not a JSON type")


def parse_line(line: bytes) -> dict[str, Any]:
    """Parse one log line into a record dict.

    Args:
        line: one line, with or without its trailing newline.

    Returns:
        the record as a dict.

    Raises:
        ValueError: when the line is not a JSON object with an integer ``seq`` and a
            string ``kind`` (orjson.JSONDecodeError is a ValueError).
    """
    record = orjson.loads(line)
    if not isinstance(record, dict):
        raise ValueError("record is not a JSON object")
    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError("record has no positive integer seq")
    if not isinstance(record.get("kind"), str):
        raise ValueError("record has no kind")
    return record


def is_purged(record: Any) -> bool:
    """Whether a parsed record is a purged one: its payload was removed by ``convlog
    purge`` and only ``seq``, ``ts``, ``kind``, ``source``, ``session`` and
    ``meta.sha256``/``meta.bytes`` stay, with ``meta.purged: true`` (docs/log-format.md,
    "Purge"). Readers treat it as carrying nothing.

    Args:
        record: a parsed record (any value: False for anything else).

    Returns:
        True when ``record["meta"]["purged"] is True``.
    """
    meta = record.get("meta") if isinstance(record, dict) else None
    return isinstance(meta, dict) and meta.get("purged") is True
