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
and is only counted. Messages without a stamp are counted as unverified.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: The payload key holding the stamp.
STAMP_KEY = "convlog"
#: Record sources that came from the bus (the others are the recorder's own, imports, ...).
BUS_SOURCES = ("sub", "pull")
#: The payload ``type`` of a heartbeat.
HEARTBEAT = "publisher.heartbeat"


def stamp_of(value: Any) -> tuple[str, int] | None:
    """The ``(publisher, seq)`` stamp of a parsed payload, or None when it has none
    (or a malformed one: the publisher must be a string and seq an integer >= 0)."""
    if value.__class__ is not dict:
        return None
    stamp = value.get(STAMP_KEY)
    if stamp.__class__ is not dict:
        return None
    publisher = stamp.get("publisher")
    seq = stamp.get("seq")
    if publisher.__class__ is not str or seq.__class__ is not int or seq < 0:
        return None
    return publisher, seq


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


@dataclass(slots=True)
class GapDetector:
    """Follows publisher stamps and reports gaps.

    Attributes:
        publishers: publisher id -> :class:`PublisherState`.
        unverified: messages received without a stamp.
    """

    publishers: dict[str, PublisherState] = field(default_factory=dict)
    unverified: int = 0

    def observe(self, publisher: str, seq: int, record_seq: int, heartbeat: bool = False) -> Gap | None:
        """Take one stamp into account.

        Args:
            publisher: the stamp's publisher id.
            seq: the stamp's seq (for a heartbeat: the last seq the publisher sent).
            record_seq: the log seq of the record carrying it.
            heartbeat: whether it came in a heartbeat.

        Returns:
            the :class:`Gap` it reveals, or None.
        """
        state = self.publishers.get(publisher)
        if state is None:
            state = self.publishers[publisher] = PublisherState()
        state.last_record = record_seq
        if not heartbeat:
            state.messages += 1
        expected = state.seq + (0 if heartbeat else 1)
        if seq == expected:
            state.seq = seq
            return None
        if seq > expected:
            gap = Gap(publisher, state.seq + 1, seq - 1 if not heartbeat else seq, seq, heartbeat)
            state.missing += gap.last - gap.first + 1
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

    def observe_value(self, value: Any, kind: str, record_seq: int) -> Gap | None:
        """Take a parsed payload into account: its stamp if it has one, else count it
        as unverified (heartbeats without a valid stamp are not counted).

        Returns:
            the :class:`Gap` it reveals, or None.
        """
        stamp = stamp_of(value)
        if stamp is None:
            if kind != HEARTBEAT:
                self.unverified += 1
            return None
        return self.observe(stamp[0], stamp[1], record_seq, heartbeat=kind == HEARTBEAT)

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
        """JSON-friendly snapshot (for ``recovery/state.json``)."""
        return {
            "unverified": self.unverified,
            "publishers": {
                pid: {
                    "seq": s.seq,
                    "messages": s.messages,
                    "missing": s.missing,
                    "restarts": s.restarts,
                    "duplicates": s.duplicates,
                    "last_record": s.last_record,
                }
                for pid, s in self.publishers.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Any) -> GapDetector:
        """Invert :meth:`to_dict`; anything malformed gives an empty detector."""
        detector = cls()
        if not isinstance(data, dict):
            return detector
        unverified = data.get("unverified")
        detector.unverified = unverified if isinstance(unverified, int) else 0
        publishers = data.get("publishers")
        if isinstance(publishers, dict):
            for pid, raw in publishers.items():
                if isinstance(pid, str) and isinstance(raw, dict):
                    detector.publishers[pid] = PublisherState(
                        **{k: v for k, v in raw.items() if k in PublisherState.__slots__ and isinstance(v, int)}
                    )
        return detector

    def summary(self) -> dict[str, Any]:
        """Totals for ``recorder.stop`` and status: publishers, missing, restarts, ..."""
        states = self.publishers.values()
        return {
            "publishers": len(self.publishers),
            "missing": sum(s.missing for s in states),
            "restarts": sum(s.restarts for s in states),
            "duplicates": sum(s.duplicates for s in states),
            "unverified": self.unverified,
        }


def stamp_payload(payload: bytes, publisher: str, seq: int, encoded_publisher: bytes | None = None) -> bytes | None:
    """Insert a stamp as the first key of a JSON object payload, without re-serializing it.

    Args:
        payload: JSON bytes.
        publisher, seq: the stamp.
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
