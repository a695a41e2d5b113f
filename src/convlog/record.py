"""The log record: its fields, its kinds, and how one is turned into one JSONL line.

Pure code, no I/O. A record is one line of UTF-8 JSON ending in ``\\n``::

    {"seq": 1, "ts": "2026-11-21T12:00:00.000001Z", "kind": "message", "source": "sub",
     "topic": "agent.a", "session": "s1", "data": <payload>, "meta": {...}}

and, only for messages of three frames or more, ``"extra_frames": [<frame>, ...]``.

``data`` is the payload exactly as received. When the payload is JSON (RFC 8259, as
accepted by orjson) its bytes are spliced into the line unchanged, so big integers,
key order and duplicate keys survive byte for byte; the only change is that a raw LF
*between tokens* becomes a space so the record stays on one line (a JSON string cannot
hold a raw LF, so no value changes). Any other payload is stored
in one of two documented forms, and ``meta.encoding`` says which:

* ``{"text": "<the payload decoded as UTF-8>"}`` with ``meta.encoding == "text"``;
* ``{"base64": "<RFC 4648 base64 of the bytes>"}`` with ``meta.encoding == "base64"``
  when the bytes are not valid UTF-8.

Extra frames always use one of those two forms. The topic is the first frame decoded
as UTF-8, or its base64 with ``meta.topic_encoding == "base64"``.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson
from orjson import Fragment

_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE

#: Kinds a publisher may send as the payload's ``type`` (DESIGN.md, event vocabulary).
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
    {"recorder.start", "recorder.stop", "recorder.recovered", "recorder.gap", "recorder.dropped"}
)

UNKNOWN = "unknown"
RAW = "raw"

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


class Clock:
    """Formats receive times as RFC 3339 UTC with microseconds (``...T12:00:00.000001Z``).

    Caches the formatted second so the hot path does one integer split and one
    f-string per record. Not thread-safe; one per writer.
    """

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format_ns(self, ns: int) -> str:
        """Format ``ns`` (nanoseconds since the Unix epoch, UTC) per RFC 3339."""
        second, rest = divmod(ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{rest // 1000:06d}Z"

    def now(self) -> str:
        """The current time, formatted by :meth:`format_ns`."""
        return self.format_ns(time.time_ns())


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
        seq, ts, kind, source, topic, session: the record's fields (see the module doc).
        data: any JSON-serializable value.
        meta: enrichment, default empty.

    Returns:
        the line, as :func:`format_line`.

    Raises:
        TypeError: when ``data`` or ``meta`` is not JSON-serializable.
    """
    head = {"seq": seq, "ts": ts, "kind": kind, "source": source, "topic": topic, "session": session}
    return format_line(head, orjson.dumps(data), meta or {})


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
