"""Frames in, one log line out: decode, enrich, format. Pure code, no I/O.

This is the recorder's per-message work (its hot path), kept apart from the sockets
and files so it can be tested and measured on its own. The payload's JSON bytes are
spliced into the line instead of being parsed and re-serialized.
"""

from __future__ import annotations

from collections.abc import Sequence

from convlog.enrich import Enricher
from convlog.record import format_line
from convlog.wire import DEFAULT_SESSION_FIELDS, decode


class Ingest:
    """Turns received messages into log lines.

    Args:
        enricher: computes ``meta``.
        session_fields: fields naming the session, in order (see :func:`convlog.wire.decode`).

    Attributes:
        kinds: records produced so far, by kind (a running count, for status).
    """

    __slots__ = ("enricher", "kinds", "session_fields")

    def __init__(
        self,
        enricher: Enricher | None = None,
        session_fields: Sequence[str] = DEFAULT_SESSION_FIELDS,
    ) -> None:
        self.enricher = enricher or Enricher()
        self.session_fields = tuple(session_fields)
        self.kinds: dict[str, int] = {}

    def line(self, frames: Sequence[bytes], seq: int, ts: str, source: str) -> bytes:
        """Build the log line of one received message.

        Args:
            frames: the message's frames as received.
            seq: the seq to assign.
            ts: receive time, RFC 3339 (see :class:`convlog.record.Clock`).
            source: ``sub``, ``pull``, … .

        Returns:
            one line of UTF-8 JSON ending in ``\\n``. Never raises for any frames.
        """
        decoded = decode(frames, self.session_fields)
        kind = decoded.kind
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        head = {
            "seq": seq,
            "ts": ts,
            "kind": kind,
            "source": source,
            "topic": decoded.topic,
            "session": decoded.session,
        }
        return format_line(head, decoded.data_json, self.enricher.meta(decoded), decoded.extra_frames)
