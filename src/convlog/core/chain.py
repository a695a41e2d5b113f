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
* ``body(n)`` is the hex SHA-256 of the record's line as written before its link was
  added (the line without its ``,"chain":"…"`` member), with the raw value of ``data``
  left out when the record has a payload digest (``meta.stored_sha256`` or
  ``meta.sha256``): that digest then stands for the payload, which ``verify`` checks
  against it (:func:`convlog.core.payload.digest_problem`), and the digest is bound
  through ``kept``. A purged record has lost its body, so ``convlog purge`` keeps the
  digest of the original's as ``meta.body_sha256``.

So the chain binds digests, not raw payload bytes: redaction (done before the record is
written: ``meta.sha256`` is the digest of the bytes received, ``meta.stored_sha256`` of
the bytes stored) and purge (which keeps both digests and the body's) leave every link
valid, while an edit, insertion, deletion, reorder, truncation in the middle or swap of
segments breaks the link at or right after it. The chain cannot, on its own, show that
records were cut off the *end* of a log, or that the whole log was rewritten with a new
chain: checkpoints and the base record the chain head at their cut, and signed heads
(:mod:`convlog.store.heads`) bind it to a key kept elsewhere.

The body is taken from the line's bytes, not from a re-serialised record, so linking
costs the writer two small parses (the members before ``data`` and from ``meta`` on)
and two SHA-256 over the line without its payload, not a parse of the payload.

The construction is a plain hash chain as in RFC 6962's Merkle tree logs reduced to a
list (and Crosby & Wallach, "Efficient Data Structures for Tamper-Evident Logging",
2009, section 3); SHA-256 is FIPS 180-4.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

import orjson

from convlog.core.payload import PayloadError, member_span
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

_LINK_START = b',"chain":"'
_LINK_END = b'"}\n'
#: Bytes linking adds to a line (``,"chain":"<64 hex digits>"``).
LINK_BYTES = len(_LINK_START) + 64 + 1
_DATA_MEMBER = b',"data":'
_META_MEMBER = b',"meta":{'
_TAIL_KEYS = frozenset(("meta", "extra_frames"))
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


def kept_json(record: Mapping[str, Any], kept: dict[str, Any] | None = None) -> bytes:
    """The compact JSON of what a purged record keeps (see the module doc); ``kept``:
    its :func:`kept_meta`, when already at hand."""
    get = record.get
    return dump_json({"seq": get("seq"), "ts": get("ts"), "kind": get("kind"), "source": get("source"),
                      "session": get("session"), "meta": kept_meta(get("meta")) if kept is None else kept})


def unlinked(line: bytes) -> bytes | None:
    """A linked line as it was before its link was added (its last member,
    ``,"chain":"<64 hex digits>"``, cut), or None when it does not end that way."""
    cut = len(line) - LINK_BYTES - 2
    if cut > 0 and line.endswith(_LINK_END) and line[cut:cut + len(_LINK_START)] == _LINK_START:
        return line[:cut] + b"}\n"
    return None


def _split(line: bytes) -> tuple[dict[str, Any], int, int] | None:
    """A line laid out as :func:`convlog.core.record.format_line` writes it, parsed
    without its ``data``: the members before ``,"data":`` and from ``,"meta":{`` on are
    parsed alone, so a long payload is not parsed. Returns the record without ``data``
    and where the raw value of ``data`` lies, or None for any other line.

    A raw ``,"data":`` or ``,"meta":{`` cannot stand inside a JSON string (its quotes
    would be escaped); one nested in an object leaves the part cut there unbalanced, so
    it does not parse and None is returned.
    """
    at = line.find(_DATA_MEMBER)
    meta_at = line.rfind(_META_MEMBER)
    if at < 0 or meta_at <= at:
        return None
    try:
        record = orjson.loads(line[:at] + b"}")
        tail = orjson.loads(b"{" + line[meta_at + 1:])
    except orjson.JSONDecodeError:
        return None
    if record.__class__ is not dict or tail.__class__ is not dict or not tail.keys() <= _TAIL_KEYS \
            or "data" in record or not record.keys().isdisjoint(tail):
        return None
    record.update(tail)
    return record, at + len(_DATA_MEMBER), meta_at


def _body(line: bytes, kept: Mapping[str, Any], span: tuple[int, int] | None) -> str:
    """``body(n)`` of an unlinked line (see the module doc), given its kept ``meta``
    fields (:func:`kept_meta`); ``span`` is where the raw value of ``data`` lies (found
    here when None and needed)."""
    if "sha256" not in kept and "stored_sha256" not in kept:
        return sha256(line).hexdigest()
    if span is None:
        try:
            span = member_span(line, "data")
        except PayloadError:
            span = None
        if span is None:
            return sha256(line).hexdigest()
    digest = sha256(line[:span[0]])
    digest.update(line[span[1]:])
    return digest.hexdigest()


def body_digest(line: bytes, record: Mapping[str, Any]) -> str:
    """``body(n)`` of a record from its line: what ``convlog purge`` keeps as
    ``meta.body_sha256`` (for a record already purged, the one it keeps).

    Args:
        line: the record's line as in the log (linked or not).
        record: the line parsed.

    Returns:
        64 hex digits (for a purged record, ``meta.body_sha256`` as found, or ``""``).
    """
    meta = record.get("meta")
    if isinstance(meta, Mapping) and meta.get("purged") is True:
        kept = meta.get(BODY_DIGEST)
        return kept if isinstance(kept, str) else ""
    line = unlinked(line) or line
    split = _split(line)
    return _body(line, kept_meta(meta), split[1:] if split is not None else None)


def _link(prev: str, body: str, record: Mapping[str, Any], kept: dict[str, Any]) -> str:
    """``link(n)`` (see the module doc) from the link before, ``body(n)``, the record and
    its kept ``meta`` fields."""
    return sha256(b"%s\n%s\n%s" % (prev.encode("utf-8", "replace"), body.encode("utf-8", "replace"),
                                   kept_json(record, kept))).hexdigest()


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
        append = out.append
        start = 0
        end = data.find(b"\n")
        while end >= 0:
            line = data[start:end + 1]
            start = end + 1
            end = data.find(b"\n", start)
            split = _split(line) if line.endswith(b"}\n") else None
            if split is not None and CHAIN not in split[0]:
                record, span = split[0], split[1:]
            else:
                span = None
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    record = None
                if record.__class__ is not dict or not line.endswith(b"}\n") or len(record) == 0:
                    append(line)
                    head = GENESIS
                    continue
                if CHAIN in record:
                    append(line)
                    found = record[CHAIN]
                    head = found if isinstance(found, str) else GENESIS
                    continue
            kept = kept_meta(record.get("meta"))
            head = _link(head, _body(line, kept, span), record, kept)
            append(line[:-2])
            append(_LINK_START)
            append(head.encode())
            append(_LINK_END)
        append(data[start:])
        self.head = head
        return b"".join(out)


def chain_problem(prev: str, line: bytes, record: Mapping[str, Any]) -> str | None:
    """Why a record's ``chain`` is not the link after ``prev``, or None when it is.

    Args:
        prev: the link the record should follow (:data:`GENESIS` after a record with no
            chain or at the start of the log, the base's chain after a base).
        line: the record's line as in the log.
        record: the line parsed; one that carries no chain is not checked here (the
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
    kept = kept_meta(meta)
    if isinstance(meta, Mapping) and meta.get("purged") is True:
        if not is_link(meta.get(BODY_DIGEST)):
            return "it is purged but keeps no meta.body_sha256 for its chain"
        body = meta[BODY_DIGEST]
    else:
        before = unlinked(line)
        if before is None:
            return "its chain is not the last member of its line (the line was edited)"
        split = _split(before)
        body = _body(before, kept, split[1:] if split is not None else None)
    if _link(prev, body, record, kept) != found:
        return ("its chain does not follow the record before it "
                "(this record or one before it was edited, inserted, removed or reordered)")
    return None


@dataclass(slots=True)
class ChainWalk:
    """The verifier's side: the chain checked record by record, in seq order, with the
    same rule the writer follows for what a link follows (:class:`Chain`): after a
    record with no chain, :data:`GENESIS`.

    Attributes:
        prev: the link the next record must follow; None when it cannot be known (the
            first record after a base written before the chain was kept, or after an
            unreadable line), so that record's link is taken as it is.
        chained: records carrying a chain; unchained: records carrying none.
        first_chained: seq of the first record carrying a chain, or None.
        unchained_after: records with no chain that came after a chained one.
        wanted: seqs whose links checkpoints and signed heads need; links: those links
            (None for a record with no chain).
    """

    prev: str | None = GENESIS
    chained: int = 0
    unchained: int = 0
    first_chained: int | None = None
    unchained_after: int = 0
    wanted: set[int] = field(default_factory=set)
    links: dict[int, str | None] = field(default_factory=dict)

    def step(self, line: bytes, record: dict[str, Any]) -> str | None:
        """Check one valid record's link (``line`` as in the log, ``record`` parsed) and
        move on; returns the problem or None."""
        found = record_link(record)
        seq = record["seq"]
        if seq in self.wanted:
            self.links[seq] = found
        if CHAIN not in record:
            self.unchained += 1
            if self.chained:
                self.unchained_after += 1
            self.prev = GENESIS
            return None
        self.chained += 1
        if self.first_chained is None:
            self.first_chained = seq
        problem = chain_problem(self.prev, line, record) if self.prev is not None else None
        if problem is None and self.prev is None and not is_link(found):
            problem = "its chain is not a 64-digit hex link"
        self.prev = found if found is not None else GENESIS
        return problem

    def lost(self) -> None:
        """A line that is not a record came next: it hides the link the record after it
        follows, so that record's link is taken as it is."""
        self.prev = None
