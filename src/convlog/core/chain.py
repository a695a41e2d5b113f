"""The hash chain through the log: every record is bound to the one before it. Pure.

Each record the writer appends carries, as its last top-level member, ``"chain"``: the
hex SHA-256 *link* of that record, computed from the link before it::

    link(n) = SHA-256( link(n-1) "\\n" body(n) "\\n" kept(n) )      # hex text of each link

* ``link(n-1)`` is the ``chain`` of the record before it in seq order; for the first
  record of a log, and after a record that carries no chain (written before chaining or
  with ``chain = false``), it is :data:`GENESIS` (64 zeros); for the first record after
  a base (retention) it is the base's ``chain``.
* ``kept(n)`` is the compact JSON of what a purged record keeps, in this order:
  ``{"seq", "ts", "kind", "source", "session", "meta": {"bytes", "sha256",
  "stored_sha256"}}`` (a top-level field null when absent; a ``meta`` field only when
  present with that type, :data:`KEPT_META`).
* ``body(n)`` is the hex SHA-256 of the compact JSON, keys sorted, of everything else: ``topic``,
  ``extra_frames`` and every other ``meta`` field, and ``data`` *unless* the record has
  a payload digest (``meta.stored_sha256`` or ``meta.sha256``), which then stands for
  it: the payload is checked against that digest (:func:`convlog.core.payload.digest_problem`),
  and the digest is bound into the chain through ``kept``. A purged record has lost
  its body, so ``convlog purge`` keeps its digest as ``meta.body_sha256``.

So the chain binds digests, not raw bytes: redaction (done before the record is written:
``meta.sha256`` is the digest of the bytes received, ``meta.stored_sha256`` of the bytes
stored) and purge (which keeps both digests and the body's) leave every link valid,
while an edit, insertion, deletion, reorder, truncation in the middle or swap of
segments breaks the link of the first record after it. The chain cannot, on its own,
show that records were cut off the *end* of a log, or that the whole log was rewritten
with a new chain: checkpoints and the base record the chain head at their cut, and
signed heads (:mod:`convlog.store.signing`) bind it to a key kept elsewhere.

The construction is a plain hash chain as in RFC 6962's Merkle tree logs reduced to a
list (and Crosby & Wallach, "Efficient Data Structures for Tamper-Evident Logging",
2009, section 3); SHA-256 is FIPS 180-4.
"""

from __future__ import annotations

from collections.abc import Mapping
from hashlib import sha256
from typing import Any

import orjson

from convlog.core.record import dump_json

#: The link before the first record of a chain (64 hex zeros).
GENESIS = "0" * 64
#: The top-level member holding a record's link.
CHAIN = "chain"
#: ``meta`` field of a purged record keeping the digest of the body it lost.
BODY_DIGEST = "body_sha256"
#: Top-level fields a purged record keeps, bound into the chain as they are.
KEPT_FIELDS: tuple[str, ...] = ("seq", "ts", "kind", "source", "session")
#: ``meta`` fields a purged record keeps (when the original had them with these types):
#: the payload's size in bytes and its digests (as received, as stored).
KEPT_META: tuple[tuple[str, type], ...] = (("bytes", int), ("sha256", str), ("stored_sha256", str))

_SORTED = orjson.OPT_SORT_KEYS
_SKIP = frozenset((*KEPT_FIELDS, CHAIN))
_SKIP_WITH_DATA = _SKIP | {"data"}
_LINK_END = b'"}\n'
_LINK_START = b',"chain":"'
#: Bytes linking adds to a line (``,"chain":"<64 hex digits>"``).
LINK_BYTES = len(_LINK_START) + 64 + 1
_HEX = frozenset("0123456789abcdef")


def kept_meta(meta: Any) -> dict[str, Any]:
    """The ``meta`` fields a purged record keeps (:data:`KEPT_META`), from any value.

    Args:
        meta: a record's ``meta`` (anything: a non-object keeps nothing).

    Returns:
        a new dict with those fields that are present with the right type (a bool is not
        an int here), in :data:`KEPT_META` order.
    """
    kept: dict[str, Any] = {}
    if meta.__class__ is dict or isinstance(meta, Mapping):
        get = meta.get
        value = get("bytes")
        if value.__class__ is int:
            kept["bytes"] = value
        value = get("sha256")
        if value.__class__ is str:
            kept["sha256"] = value
        value = get("stored_sha256")
        if value.__class__ is str:
            kept["stored_sha256"] = value
    return kept


def has_payload_digest(meta: Any) -> bool:
    """Whether a record's ``data`` is bound through a digest (``meta.stored_sha256`` or
    ``meta.sha256``, a string) rather than through the body."""
    return isinstance(meta, Mapping) and (meta.get("stored_sha256").__class__ is str
                                          or meta.get("sha256").__class__ is str)


def body_digest(record: Mapping[str, Any]) -> str:
    """The hex SHA-256 of a record's body: everything the chain does not bind as kept
    (see the module doc). For a purged record, whatever it keeps in ``meta.body_sha256``
    (checked by the link, not here).

    Args:
        record: a parsed record (the ``chain`` member, if any, is left out).

    Returns:
        64 hex digits (for a purged record, ``meta.body_sha256`` as found, or ``""``
        when it has none).
    """
    return _body(record, record.get("meta"), kept_meta(record.get("meta")))


def _body(record: Mapping[str, Any], meta: Any, kept: dict[str, Any]) -> str:
    if meta.__class__ is dict or isinstance(meta, Mapping):
        if meta.get("purged") is True:
            digest = meta.get(BODY_DIGEST)
            return digest if isinstance(digest, str) else ""
        skip = _SKIP_WITH_DATA if "sha256" in kept or "stored_sha256" in kept else _SKIP
        body = {key: value for key, value in record.items() if key not in skip}
        body["meta"] = {key: value for key, value in meta.items() if key not in kept} if kept else meta
    else:
        body = {key: value for key, value in record.items() if key not in _SKIP}
    return sha256(dump_json(body, option=_SORTED)).hexdigest()


def kept_json(record: Mapping[str, Any]) -> bytes:
    """The canonical JSON of what a purged record keeps (see the module doc)."""
    return _kept_json(record, kept_meta(record.get("meta")))


def _kept_json(record: Mapping[str, Any], kept: dict[str, Any]) -> bytes:
    get = record.get
    return dump_json({"seq": get("seq"), "ts": get("ts"), "kind": get("kind"), "source": get("source"),
                      "session": get("session"), "meta": kept})


def link(prev: str, record: Mapping[str, Any]) -> str:
    """The link of ``record`` after a record whose link is ``prev``.

    Args:
        prev: the link before it (hex text as found; :data:`GENESIS` for none).
        record: the parsed record (its own ``chain`` member, if any, is ignored).

    Returns:
        64 hex digits.
    """
    meta = record.get("meta")
    kept = kept_meta(meta)
    material = b"%s\n%s\n%s" % (prev.encode("utf-8", "replace"), _body(record, meta, kept).encode("utf-8", "replace"),
                                _kept_json(record, kept))
    return sha256(material).hexdigest()


def is_link(value: Any) -> bool:
    """Whether ``value`` has the shape of a link: 64 lowercase hex digits."""
    return isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)


def record_link(record: Mapping[str, Any]) -> str | None:
    """The ``chain`` a parsed record carries, or None when it carries none (or not a
    string)."""
    value = record.get(CHAIN)
    return value if isinstance(value, str) else None


class Chain:
    """The writer's side: links lines as they are appended.

    Args:
        head: the link of the last record of the log (None or a record without a
            chain: :data:`GENESIS`).

    Attributes:
        head: the link of the last line linked.
    """

    def __init__(self, head: str | None = None) -> None:
        self.head = head if head is not None else GENESIS

    def link_lines(self, data: bytes) -> bytes:
        """Link whole record lines: each gets ``"chain":"<link>"`` as its last member.

        Never raises: a line that is not a JSON object ending in ``}`` (which no convlog
        writer makes) is left as it is and the next line links from :data:`GENESIS`, as
        ``verify`` expects after a record with no chain; a line that already carries a
        chain is left as it is and the next links from that chain.

        Args:
            data: whole lines made by :func:`convlog.core.record.format_line` (a JSON
                object per line, each ending in ``}`` and a newline).

        Returns:
            the lines with their links; ``head`` is then the last one's.
        """
        head = self.head
        out = []
        start = 0
        end = data.find(b"\n")
        while end >= 0:
            line = data[start:end + 1]
            start = end + 1
            end = data.find(b"\n", start)
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = None
            if record.__class__ is not dict or not line.endswith(b"}\n") or len(record) == 0:
                out.append(line)
                head = GENESIS
                continue
            if CHAIN in record:
                out.append(line)
                found = record[CHAIN]
                head = found if isinstance(found, str) else GENESIS
                continue
            head = link(head, record)
            out.append(line[:-2])
            out.append(_LINK_START)
            out.append(head.encode())
            out.append(_LINK_END)
        out.append(data[start:])
        self.head = head
        return b"".join(out)


def chain_problem(prev: str, record: Mapping[str, Any]) -> str | None:
    """Why a record's ``chain`` is not the link after ``prev``, or None when it is.

    Args:
        prev: the link the record should follow (:data:`GENESIS` after a record with no
            chain or at the start of the log, the base's chain after a base).
        record: the parsed record; one that carries no chain is not checked here (the
            caller decides whether a missing chain is allowed).

    Returns:
        None, or the reason in words.
    """
    found = record.get(CHAIN)
    if found is None:
        return None
    if not is_link(found):
        return "its chain is not a 64-digit hex link"
    meta = record.get("meta")
    if isinstance(meta, Mapping) and meta.get("purged") is True and not is_link(meta.get(BODY_DIGEST)):
        return "it is purged but keeps no meta.body_sha256 for its chain"
    if link(prev, record) != found:
        return ("its chain does not follow the record before it "
                "(this record or one before it was edited, inserted, removed or reordered)")
    return None
