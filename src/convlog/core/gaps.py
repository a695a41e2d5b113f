"""Loss detection: publisher stamps and the gaps they reveal. Pure code, no I/O.

A publisher that wants its losses detected stamps every JSON object payload with one
top-level key (plain JSON, easy from any language)::

    {"convlog": {"publisher": "agent-a", "seq": 17}, ...the payload's own fields...}

``publisher`` names the sender (stable across its restarts if it wants restarts told
apart from new publishers); ``seq`` counts its messages from 1, +1 per message. When
idle it sends a heartbeat carrying the last seq it sent, so a lost tail is noticed too::

    {"type": "publisher.heartbeat", "convlog": {"publisher": "agent-a", "seq": 17}}

:class:`GapDetector` follows each publisher's seq. A jump forward is a gap (the
messages in between never reached the recorder: dropped at a broker's high-water mark,
sent while the recorder or the broker was down, ...); a seq back at 1 is a restart of
the publisher; anything else at or below the last seq is a duplicate or a late copy
and is only counted. Messages without a stamp are counted as unverified; a stamp
whose publisher is not a string or whose seq is not an integer in
``0 <= seq <= 2**63 - 1`` is counted as invalid and never used in arithmetic (the
message itself is recorded like any other).

A publisher that closes says so in its last heartbeat (``"closing": true`` beside the
stamp); it is then not reported silent until it sends again.

The table of publishers is bounded (``max_publishers``, default 10,000): past it, the
least recently seen publishers are evicted and counted (``evicted``); one that comes
back is followed as a new publisher.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from convlog.core.record import MAX_WIRE_INT

#: The payload key holding the stamp.
STAMP_KEY = "convlog"
#: Record sources that came from the bus (the others are the recorder's own, imports, ...).
BUS_SOURCES = ("sub", "pull")
#: The payload ``type`` of a heartbeat.
HEARTBEAT = "publisher.heartbeat"
#: Default bound of the publisher table (see :class:`GapDetector`).
MAX_PUBLISHERS = 10_000


def stamp_of(value: Any) -> tuple[str, int] | None:
    """The ``(publisher, seq)`` stamp of a parsed payload, or None when it has none or a
    malformed one: ``publisher`` must be a string and ``seq`` an integer with
    ``0 <= seq <= MAX_WIRE_INT`` (2**63 - 1). :meth:`GapDetector.observe_value`
    applies the same rule inline and counts malformed stamps as invalid."""
    if value.__class__ is not dict:
        return None
    stamp = value.get(STAMP_KEY)
    if stamp.__class__ is not dict:
        return None
    publisher = stamp.get("publisher")
    seq = stamp.get("seq")
    if publisher.__class__ is not str or seq.__class__ is not int or not 0 <= seq <= MAX_WIRE_INT:
        return None
    return publisher, seq


def _add(total: int, n: int) -> int:
    """``total + n``, saturating at :data:`MAX_WIRE_INT` so counts always serialise. Used
    for ``missing``, which a forged stamp can grow by 2**63 at a time; counts that grow
    by one per message received cannot reach the bound."""
    total += n
    return total if total <= MAX_WIRE_INT else MAX_WIRE_INT


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages of one publisher known to be missing.

    Attributes:
        publisher: the publisher id.
        first, last: the missing seqs, inclusive.
        seen: the seq that revealed the gap (a message, or a heartbeat's last seq).
        heartbeat: True when a heartbeat revealed it (the lost messages were the
            publisher's latest).
    """

    publisher: str
    first: int
    last: int
    seen: int
    heartbeat: bool = False

    def as_data(self) -> dict[str, Any]:
        """The gap as the ``data`` of a ``recorder.gap`` record."""
        return {
            "publisher": self.publisher,
            "first": self.first,
            "last": self.last,
            "missing": self.last - self.first + 1,
            "seen": self.seen,
            "by": "heartbeat" if self.heartbeat else "message",
        }


@dataclass(slots=True)
class PublisherState:
    """What the detector knows of one publisher: last seq, counts, last record seen."""

    seq: int = 0
    messages: int = 0
    missing: int = 0
    restarts: int = 0
    duplicates: int = 0
    last_record: int = 0
    closing: bool = False


@dataclass(slots=True)
class GapDetector:
    """Follows publisher stamps and reports gaps.

    Attributes:
        publishers: publisher id -> :class:`PublisherState`, at most ``max_publishers``.
        unverified: messages received without a stamp.
        invalid: messages (and heartbeats) whose stamp was malformed or out of range.
        evicted: publishers dropped from the table, least recently seen first, to keep
            it at ``max_publishers``.
        max_publishers: the bound of the table (publishers).
    """

    publishers: dict[str, PublisherState] = field(default_factory=dict)
    unverified: int = 0
    invalid: int = 0
    evicted: int = 0
    max_publishers: int = MAX_PUBLISHERS

    def observe(self, publisher: str, seq: int, record_seq: int, heartbeat: bool = False) -> Gap | None:
        """Take one stamp into account.

        Args:
            publisher: the stamp's publisher id.
            seq: the stamp's seq (for a heartbeat: the last seq the publisher sent),
                ``0 <= seq <= MAX_WIRE_INT`` (see :func:`stamp_of`).
            record_seq: the log seq of the record carrying it.
            heartbeat: whether it came in a heartbeat.

        Returns:
            the :class:`Gap` it reveals, or None.
        """
        state = self.publishers.get(publisher)
        if state is None:
            if len(self.publishers) >= self.max_publishers:
                self._evict()
            state = self.publishers[publisher] = PublisherState()
        state.last_record = record_seq
        if not heartbeat:
            state.messages += 1
            state.closing = False
        expected = state.seq + (0 if heartbeat else 1)
        if seq == expected:
            state.seq = seq
            return None
        if seq > expected:
            gap = Gap(publisher, state.seq + 1, seq - 1 if not heartbeat else seq, seq, heartbeat)
            state.missing = _add(state.missing, gap.last - gap.first + 1)
            state.seq = seq
            return gap
        if not heartbeat and seq == 1 and state.seq >= 1:
            state.restarts += 1
            state.seq = 1
            return None
        if heartbeat and seq == 0 and state.seq > 0:
            state.restarts += 1
            state.seq = 0
            return None
        if not heartbeat:
            state.duplicates += 1
        return None

    def _evict(self) -> None:
        """Drop the least recently seen publishers: down to 95 % of the bound, so the
        scan (O(n log k)) runs once per ``max_publishers / 20`` new publishers."""
        excess = len(self.publishers) - self.max_publishers + max(1, self.max_publishers // 20)
        oldest = heapq.nsmallest(excess, self.publishers.items(), key=lambda item: item[1].last_record)
        for publisher, _ in oldest:
            del self.publishers[publisher]
        self.evicted += len(oldest)

    def observe_value(self, value: Any, kind: str, record_seq: int) -> Gap | None:
        """Take a parsed payload into account: its stamp if it has one, else count it
        as unverified, or as invalid when its stamp is malformed (heartbeats without a
        stamp are not counted). A heartbeat with ``"closing": true`` marks the
        publisher as closed (not silent) until its next message.

        Returns:
            the :class:`Gap` it reveals, or None.
        """
        # stamp_of's rule inlined (this runs for every message the recorder receives),
        # telling a missing stamp from a malformed one.
        stamp = value.get(STAMP_KEY, False) if value.__class__ is dict else False
        if stamp is False:
            if kind != HEARTBEAT:
                self.unverified += 1
            return None
        if stamp.__class__ is dict:
            publisher = stamp.get("publisher")
            seq = stamp.get("seq")
            if publisher.__class__ is str and seq.__class__ is int and 0 <= seq <= MAX_WIRE_INT:
                if kind != HEARTBEAT:
                    return self.observe(publisher, seq, record_seq)
                gap = self.observe(publisher, seq, record_seq, heartbeat=True)
                if value.get("closing") is True:
                    self.publishers[publisher].closing = True
                return gap
        self.invalid += 1
        return None

    def open_publishers(self) -> int:
        """Publishers known and not closed (their last word was not a closing heartbeat)."""
        return sum(1 for state in self.publishers.values() if not state.closing)

    def observe_record(self, record: dict[str, Any]) -> Gap | None:
        """Take a parsed log record into account as when it was received: the stamp of a
        record from the bus (source ``sub`` or ``pull``); other records are ignored.

        Returns:
            the :class:`Gap` it reveals, or None.
        """
        if record.get("source") not in BUS_SOURCES:
            return None
        return self.observe_value(record.get("data"), record["kind"], record["seq"])

    def replay(self, records: Iterable[dict[str, Any]]) -> list[Gap]:
        """Bring the detector up to date with records already in the log.

        Stamps of ``sub``/``pull`` records are observed as when they were received.
        Every gap they reveal should be followed in the log by its ``recorder.gap``
        record; the gaps whose record is missing (a crash cut the write between the
        two lines) are returned, in order, for the caller to write.

        Args:
            records: parsed records, in seq order, after the detector's snapshot.

        Returns:
            the gaps without a ``recorder.gap`` record.
        """
        unreported: dict[tuple[Any, Any, Any], Gap] = {}
        for record in records:
            if record.get("source") in BUS_SOURCES:
                gap = self.observe_record(record)
                if gap is not None:
                    unreported[(gap.publisher, gap.first, gap.last)] = gap
            elif record.get("kind") == "recorder.gap" and isinstance(record.get("data"), dict):
                data = record["data"]
                unreported.pop((data.get("publisher"), data.get("first"), data.get("last")), None)
        return list(unreported.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly snapshot (for ``recovery/state.json``): every number is below
        2**63, so it always serialises; about 150 bytes a publisher."""
        return {
            "unverified": self.unverified,
            "invalid": self.invalid,
            "evicted": self.evicted,
            "publishers": {
                pid: {
                    "seq": s.seq,
                    "messages": s.messages,
                    "missing": s.missing,
                    "restarts": s.restarts,
                    "duplicates": s.duplicates,
                    "last_record": s.last_record,
                    **({"closing": True} if s.closing else {}),
                }
                for pid, s in self.publishers.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Any, max_publishers: int = MAX_PUBLISHERS) -> GapDetector:
        """Invert :meth:`to_dict`. Malformed parts are left out (a malformed file gives
        an empty detector); numbers outside ``0..MAX_WIRE_INT`` are dropped; past
        ``max_publishers`` the least recently seen are evicted."""
        detector = cls(max_publishers=max_publishers)
        if not isinstance(data, dict):
            return detector
        for name in ("unverified", "invalid", "evicted"):
            value = data.get(name)
            setattr(detector, name, value if _count(value) else 0)
        publishers = data.get("publishers")
        if isinstance(publishers, dict):
            for pid, raw in publishers.items():
                if isinstance(pid, str) and isinstance(raw, dict):
                    detector.publishers[pid] = PublisherState(
                        **{k: v for k, v in raw.items() if k in _INT_FIELDS and _count(v)},
                        closing=raw.get("closing") is True,
                    )
            if len(detector.publishers) > max_publishers:
                detector._evict()
        return detector

    def summary(self) -> dict[str, Any]:
        """Totals for ``recorder.stop`` and status: publishers, missing, restarts, ..."""
        states = self.publishers.values()
        return {
            "publishers": len(self.publishers),
            "missing": min(sum(s.missing for s in states), MAX_WIRE_INT),
            "restarts": min(sum(s.restarts for s in states), MAX_WIRE_INT),
            "duplicates": min(sum(s.duplicates for s in states), MAX_WIRE_INT),
            "unverified": self.unverified,
            "invalid": self.invalid,
            "evicted": self.evicted,
            "closed": sum(1 for s in states if s.closing),
        }


_INT_FIELDS = frozenset(name for name in PublisherState.__slots__ if name != "closing")


def _count(value: Any) -> bool:
    """Whether ``value`` is a count :meth:`GapDetector.from_dict` takes: an int (not a
    bool) in ``0..MAX_WIRE_INT``."""
    return value.__class__ is int and 0 <= value <= MAX_WIRE_INT


def stamp_payload(payload: bytes, publisher: str, seq: int, encoded_publisher: bytes | None = None) -> bytes | None:
    """Insert a stamp as the first key of a JSON object payload, without re-serializing it.

    Args:
        payload: JSON bytes.
        publisher: the stamp's publisher id.
        seq: the stamp's sequence number.
        encoded_publisher: ``publisher`` already JSON-encoded (a cache for callers).

    Returns:
        the stamped payload, or None when ``payload`` does not start with ``{`` (not a
        JSON object; it is then sent unstamped).
    """
    body = payload.lstrip()
    if not body.startswith(b"{"):
        return None
    if encoded_publisher is None:
        import orjson

        encoded_publisher = orjson.dumps(publisher)
    stamp = b'{"convlog":{"publisher":' + encoded_publisher + b',"seq":' + str(seq).encode() + b"}"
    rest = body[1:].lstrip()
    return stamp + (b"}" if rest.startswith(b"}") else b"," + rest)
