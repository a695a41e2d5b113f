"""A log record as a row of ``convlog.records``: what each column gets, made safe for
PostgreSQL. Pure (no connection).

PostgreSQL text cannot hold NUL characters and ``jsonb`` cannot hold the ``\\u0000``
escape, while a record may carry either (a payload is stored as received). So:

* ``data`` is the payload's JSON text exactly as the line holds it (big integers, key
  order and duplicate keys as received) given to ``jsonb``; when it holds ``\\u0000``,
  ``data`` is null and ``data_json`` (type ``json``, which keeps text as it is) holds
  it instead. A payload that is not JSON is in the log's own lossless form,
  ``{"text": ...}`` or ``{"base64": ...}`` (``meta.encoding`` says which).
* ``meta`` and ``extra_frames`` go to ``jsonb`` with any ``\\u0000`` made ``\\ufffd``;
  text columns (``topic``, ``session``, ``kind``, ``source``) with NUL made U+FFFD, and
  a non-string value as its JSON text.
* ``ts`` is parsed as RFC 3339 (null when it is not), ``ts_text`` keeps it as written.

The searchable text is not a column here: :mod:`convlog.db.search` makes it from the
written records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from convlog.core.payload import PayloadError, data_bytes

#: The columns of ``convlog.records`` a row fills, in order.
COLUMNS = ("log_id", "seq", "ts", "ts_text", "kind", "source", "topic", "session", "data", "data_json", "meta",
           "extra_frames", "chain")

_NUL_ESCAPE = "\\u0000"


def parse_ts(value: Any) -> datetime | None:
    """An RFC 3339 time (the records' ``ts``) as an aware datetime, or None when it is
    not one."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def pg_text(value: Any) -> str | None:
    """A value for a PostgreSQL ``text`` column: a string with NUL made U+FFFD (and what
    UTF-8 cannot hold replaced), anything else but None as its JSON text."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = orjson.dumps(value, default=str).decode()
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def jsonb_text(value: Any) -> str | None:
    """A parsed JSON value as text ``jsonb`` accepts (``\\u0000`` made ``\\ufffd``), or
    None for None."""
    if value is None:
        return None
    text = orjson.dumps(value, default=str).decode()
    return text.replace(_NUL_ESCAPE, "\\ufffd") if _NUL_ESCAPE in text else text


def record_row(log_id: str, line: bytes, record: dict[str, Any]) -> tuple[Any, ...]:
    """The ``convlog.records`` row of one record (values in :data:`COLUMNS` order).

    Args:
        log_id: the log's id.
        line: the record's line as in the log.
        record: the line parsed (:func:`convlog.core.record.parse_line`).

    Returns:
        a tuple for ``COPY``.
    """
    data_json: str | None = None
    try:
        raw = data_bytes(line, record).decode("utf-8", "replace").strip()
    except PayloadError:
        raw = None
    if raw is None or raw == "":
        data = jsonb_text(record.get("data"))
    elif _NUL_ESCAPE in raw:
        data, data_json = None, raw
    else:
        data = raw
    chain = record.get("chain")
    return (
        log_id,
        record["seq"],
        parse_ts(record.get("ts")),
        pg_text(record.get("ts")),
        pg_text(record.get("kind")),
        pg_text(record.get("source")),
        pg_text(record.get("topic")),
        pg_text(record.get("session")),
        data,
        data_json,
        jsonb_text(record.get("meta")),
        jsonb_text(record.get("extra_frames")),
        chain if isinstance(chain, str) else None,
    )
