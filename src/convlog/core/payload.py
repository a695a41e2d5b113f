"""A record's payload as it is stored: the raw bytes of ``data`` in its line, rebuilt into
the payload (spliced JSON with its LFs put back, or the ``text``/``base64`` form
decoded), and checked against the digest the recorder kept. Pure.

``convlog play`` sends these bytes back onto a bus; ``convlog verify`` checks every
record's payload against ``meta.stored_sha256`` (a redacted record: the bytes stored)
or ``meta.sha256`` (the bytes received, which are the bytes stored otherwise), so an
edit of a payload that leaves its digest alone is found.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from hashlib import sha256
from typing import Any

import orjson

from convlog.core.record import decode_bytes, restore_newlines


class PayloadError(ValueError):
    """A record's payload cannot be rebuilt (the line or its fields are malformed)."""


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.S)
_SPACE = re.compile(rb"[ \t\r\n]*")


def member_span(line: bytes, key: str) -> tuple[int, int] | None:
    """Where the raw value of a top-level member of a JSON object lies in its bytes.

    Walks the object's members (strings skipped whole, brackets counted), so the value
    of ``key`` is found without parsing it and whatever bytes it was written with.

    Args:
        line: one JSON object (RFC 8259), e.g. a log line (a trailing LF is fine).
        key: the member name (compared after decoding the JSON name).

    Returns:
        ``(start, end)``: ``line[start:end]`` is everything between the member's ``:``
        and the ``,`` or ``}`` that ends it (whitespace around the value included); None
        when the object has no such member.

    Raises:
        PayloadError: when ``line`` is not shaped like a JSON object.
    """
    pos = _SPACE.match(line, 0).end()  # type: ignore[union-attr]
    if line[pos : pos + 1] != b"{":
        raise PayloadError("not a JSON object")
    pos += 1
    while True:
        pos = _SPACE.match(line, pos).end()  # type: ignore[union-attr]
        if line[pos : pos + 1] == b"}":
            return None
        name = _STRING.match(line, pos)
        if name is None:
            raise PayloadError(f"expected a member name at byte {pos}")
        pos = _SPACE.match(line, name.end()).end()  # type: ignore[union-attr]
        if line[pos : pos + 1] != b":":
            raise PayloadError(f"expected ':' at byte {pos}")
        start = pos + 1
        depth = 0
        end = None
        for token in _TOKEN.finditer(line, start):
            char = token.group()
            if char in (b"{", b"["):
                depth += 1
            elif char in (b"}", b"]"):
                if depth == 0:
                    end = token.start()
                    break
                depth -= 1
            elif char == b"," and depth == 0:
                end = token.start()
                break
        if end is None:
            raise PayloadError("unterminated object")
        if orjson.loads(name.group()) == key:
            return start, end
        if line[end : end + 1] == b"}":
            return None
        pos = end + 1


def data_bytes(line: bytes, record: Mapping[str, Any]) -> bytes:
    """The raw bytes of a record's ``data`` as they stand in its line. Pure.

    Fast path for lines laid out as convlog writes them (one ``orjson.dumps``, no
    whitespace): the members before ``data`` and after it, serialized again by orjson
    from the parsed record, must be exactly the line's start and end, and then what lies
    between is the data, whatever its size. Otherwise the members are walked
    (:func:`member_span`).

    Args:
        line: the record's line.
        record: the line parsed.

    Returns:
        the bytes.

    Raises:
        PayloadError: when the line has no ``data`` member or is not a JSON object.
    """
    keys = list(record)
    if "data" in record:
        at = keys.index("data")
        try:
            head = orjson.dumps({key: record[key] for key in keys[:at]})[:-1] + b',"data":' if at else b'{"data":'
            after = keys[at + 1 :]
            tail = (b"," + orjson.dumps({key: record[key] for key in after})[1:] if after else b"}") + b"\n"
        except TypeError:  # a value orjson does not write (an integer past 64 bits)
            head = tail = b"\x00"
        if line.startswith(head) and line.endswith(tail) and len(line) >= len(head) + len(tail):
            return line[len(head) : len(line) - len(tail)]
    span = member_span(line, "data")
    if span is None:
        raise PayloadError("the record has no data")
    return line[span[0] : span[1]]


def stored_payload(line: bytes, record: Mapping[str, Any]) -> bytes:
    """The payload a record stores, as bytes: ``data``'s ``text`` or ``base64`` form
    decoded (``meta.encoding``), else ``data``'s raw JSON bytes with the LFs the recorder
    turned into spaces put back (``meta.lf``, :func:`convlog.core.record.restore_newlines`).

    Args:
        line: the record's line as in the log.
        record: the line parsed.

    Returns:
        the bytes (the bytes received, unless the record was redacted).

    Raises:
        PayloadError: when ``data`` is missing or not in its documented form.
    """
    meta = record.get("meta")
    meta = meta if isinstance(meta, Mapping) else {}
    encoding = meta.get("encoding")
    try:
        if encoding in ("text", "base64"):
            data = record.get("data")
            if not isinstance(data, dict):
                raise PayloadError(f"data is not a {{{encoding!r}}} object")
            return decode_bytes(data)
        return restore_newlines(data_bytes(line, record), meta.get("lf"))
    except PayloadError:
        raise
    except (ValueError, TypeError) as exc:  # binascii.Error, orjson errors, decode_bytes
        raise PayloadError(str(exc)) from None


def digest_problem(line: bytes, record: Mapping[str, Any]) -> str | None:
    """Why a record's payload does not match the digest the recorder kept, or None when it
    does or there is nothing to check (no digest: the recorder's own records; a purged
    record, whose payload is gone on purpose).

    The digest is ``meta.stored_sha256`` when present (a redacted record), else
    ``meta.sha256``.
    """
    meta = record.get("meta")
    if not isinstance(meta, Mapping) or meta.get("purged") is True:
        return None
    key = "stored_sha256" if isinstance(meta.get("stored_sha256"), str) else "sha256"
    digest = meta.get(key)
    if not isinstance(digest, str):
        return None
    try:
        payload = stored_payload(line, record)
    except PayloadError as exc:
        return f"its payload cannot be rebuilt to check meta.{key}: {exc}"
    if sha256(payload).hexdigest() != digest:
        return f"its payload does not match meta.{key} (edited after it was recorded?)"
    return None

