"""Frames in, one log line out: decode, enrich, format. Pure code, no I/O.

This is the recorder's per-message work (its hot path), kept apart from the sockets
and files so it can be tested and measured on its own. The payload's JSON bytes are
spliced into the line instead of being parsed and re-serialized.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from hashlib import sha256

import orjson
from orjson import Fragment, JSONDecodeError

from convlog.core.enrich import Enricher
from convlog.core.gaps import Gap, GapDetector
from convlog.core.record import RAW, encode_bytes, format_line, may_be_deep, one_line
from convlog.core.redact import Redactor
from convlog.core.wire import DEFAULT_SESSION_FIELDS, classify, decode

_loads = orjson.loads
_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE


class Ingest:
    """Turns received messages into log lines.

    Args:
        enricher: computes ``meta``.
        session_fields: fields naming the session, in order (see :func:`convlog.core.wire.decode`).
        detector: follows publisher stamps (see :mod:`convlog.core.gaps`); a new one if None.
        verify: check stamps at all (off when the recorder subscribes to topic prefixes
            only, since a publisher's messages on other topics would look missing).
        redactor: replaces secrets in every frame before the line is built (see
            :mod:`convlog.core.redact`), or None to store the bytes as received.

    Attributes:
        kinds: records produced so far, by ``(kind, source)`` (a running count, for
            ``recorder.stop`` and metrics).
        gaps: gaps revealed by the messages given to :meth:`line` and not yet taken by
            the caller (who writes a ``recorder.gap`` record for each and clears it).
        redactions: secrets replaced so far, by rule id (a running count).

    A redacted record's ``meta`` has ``redactions`` (rule id → count), ``sha256`` and
    ``bytes`` of the payload as received and ``stored_sha256`` of the payload stored.
    """

    __slots__ = ("_complete", "_pending", "detector", "enricher", "gaps", "kinds", "redactions", "redactor",
                 "session_fields", "verify")

    def __init__(
        self,
        enricher: Enricher | None = None,
        session_fields: Sequence[str] = DEFAULT_SESSION_FIELDS,
        detector: GapDetector | None = None,
        verify: bool = True,
        redactor: Redactor | None = None,
    ) -> None:
        self.enricher = enricher or Enricher()
        self.detector = detector or GapDetector()
        self.verify = verify
        self.gaps: list[Gap] = []
        self.session_fields = tuple(session_fields)
        self.kinds: dict[tuple[str, str], int] = {}
        self._complete = self.enricher.complete
        self.redactor = redactor
        self.redactions: dict[str, int] = {}
        self._pending: tuple[bytes, dict[str, int]] | None = None

    def use(self, enricher: Enricher) -> None:
        """Compute ``meta`` with ``enricher`` from the next record on (a rules reload)."""
        self.enricher = enricher
        self._complete = enricher.complete

    def line(self, frames: Sequence[bytes], seq: int, ts: str, source: str) -> bytes:
        """Build the log line of one received message.

        The common message (two frames, a UTF-8 topic, a JSON object payload) takes a
        short path that calls the same :func:`convlog.core.wire.classify` and
        :meth:`convlog.core.enrich.Enricher.complete` as the general one
        (:meth:`general_line`) and yields the same bytes (a property test holds them
        equal); it only skips the intermediate :class:`~convlog.core.wire.Decoded`.

        Args:
            frames: the message's frames as received.
            seq: the seq to assign.
            ts: receive time, RFC 3339 (see :class:`convlog.store.clock.Clock`).
            source: ``sub``, ``pull``, … .

        Returns:
            one line of UTF-8 JSON ending in ``\\n``. Never raises for any frames.
        """
        if self.redactor is not None:
            frames = self._redact(frames)
        try:
            return self._line(frames, seq, ts, source)
        finally:
            self._pending = None

    def _line(self, frames: Sequence[bytes], seq: int, ts: str, source: str) -> bytes:
        if len(frames) == 2:
            topic_frame, payload = frames
            try:
                topic = topic_frame.decode("utf-8")
                value = _loads(payload)
            except (UnicodeDecodeError, JSONDecodeError):
                pass
            else:
                # A long payload with more brackets than MAX_DEPTH may be too deep to
                # store as JSON: the general path decides (see convlog.core.record.too_deep).
                if type(value) is dict and not may_be_deep(payload):
                    kind, session, meta, text = classify(value, self.session_fields)
                    if self.verify:
                        self._check_stamp(value, kind, seq)
                    kinds = self.kinds
                    key = (kind, source)
                    kinds[key] = kinds.get(key, 0) + 1
                    data, newlines = one_line(payload)
                    if newlines is not None:
                        meta["lf"] = newlines
                    return _dumps(
                        {
                            "seq": seq,
                            "ts": ts,
                            "kind": kind,
                            "source": source,
                            "topic": topic,
                            "session": topic if session is None else session,
                            "data": Fragment(data),
                            "meta": (self._complete(meta, payload, kind, text) if self._pending is None
                                     else self._redacted_meta(self._complete(meta, payload, kind, text))),
                        },
                        option=_NEWLINE,
                    )
        return self._general_line(frames, seq, ts, source)

    def general_line(self, frames: Sequence[bytes], seq: int, ts: str, source: str) -> bytes:
        """Build the line of any message through :func:`convlog.core.wire.decode` (see
        :meth:`line`; secrets are replaced as there)."""
        if self.redactor is not None:
            frames = self._redact(frames)
        try:
            return self._general_line(frames, seq, ts, source)
        finally:
            self._pending = None

    def _general_line(self, frames: Sequence[bytes], seq: int, ts: str, source: str) -> bytes:
        decoded = decode(frames, self.session_fields)
        kind = decoded.kind
        if self.verify:
            self._check_stamp(decoded.value, kind, seq)
        key = (kind, source)
        self.kinds[key] = self.kinds.get(key, 0) + 1
        head = {
            "seq": seq,
            "ts": ts,
            "kind": kind,
            "source": source,
            "topic": decoded.topic,
            "session": decoded.session,
        }
        meta = self.enricher.meta(decoded)
        if self._pending is not None:
            meta = self._redacted_meta(meta)
        return format_line(head, decoded.data_json, meta, decoded.extra_frames)

    def fallback_line(self, frames: Sequence[bytes], seq: int, ts: str, source: str, reason: str) -> bytes:
        """The line of a message that :meth:`line` could not build (it is not known to
        happen; this keeps the bytes if it ever does): kind ``raw``, every frame in
        base64, ``meta.reason`` saying why.

        Returns:
            one line; never raises.
        """
        if self.redactor is not None:
            frames = self._redact(frames, tally=False)  # line() counted them already
            pending, self._pending = self._pending, None
            reason = self.redactor.redact(reason.encode("utf-8", "replace")).decode("utf-8", "replace")
        else:
            pending = None
        topic = encode_bytes(frames[0])[0] if len(frames) > 1 else None
        payload = frames[1] if len(frames) > 1 else (frames[0] if frames else b"")
        key = (RAW, source)
        self.kinds[key] = self.kinds.get(key, 0) + 1
        head = {"seq": seq, "ts": ts, "kind": RAW, "source": source,
                "topic": next(iter(topic.values())) if topic else None, "session": None}
        meta = {"encoding": "base64", "reason": reason, "frames": len(frames), "bytes": len(payload)}
        if topic and "base64" in topic:
            meta["topic_encoding"] = "base64"
        extra = [{"base64": base64.b64encode(f).decode("ascii")} for f in frames[2:]] or None
        data = orjson.dumps({"base64": base64.b64encode(payload).decode("ascii")})
        if pending is not None:
            self._pending = pending
            meta = self._redacted_meta(meta)
            self._pending = None
        return format_line(head, data, meta, extra)

    def _redact(self, frames: Sequence[bytes], tally: bool = True) -> Sequence[bytes]:
        """``frames`` with secrets replaced (the same object when none); sets ``_pending``.

        The payload (frame 1, or 0 of a one-frame message) is redacted as JSON
        (:meth:`convlog.core.redact.Redactor.redact_json`: it stays valid JSON when it
        was), the other frames as bytes.
        """
        redactor = self.redactor
        assert redactor is not None
        if not frames or not redactor.may_hold(b"\n".join(frames)):
            return frames
        counts: dict[str, int] = {}
        at = 1 if len(frames) > 1 else 0
        out = [redactor.redact_json(f, counts) if i == at else redactor.redact(f, counts)
               for i, f in enumerate(frames)]
        if not counts:
            return frames
        self._pending = (frames[at], counts)
        if tally:
            for rule, n in counts.items():
                self.redactions[rule] = self.redactions.get(rule, 0) + n
        return out

    def _redacted_meta(self, meta: dict) -> dict:
        """Add ``redactions`` and ``stored_sha256`` to ``meta``; put back ``bytes``,
        ``chars`` and ``sha256`` of the payload as received."""
        assert self._pending is not None
        received, counts = self._pending
        stored = meta.get("sha256")
        meta["bytes"] = len(received)
        if "chars" in meta:
            meta["chars"] = len(received.decode("utf-8", "replace"))
        meta["sha256"] = sha256(received).hexdigest()
        if stored is not None and stored != meta["sha256"]:
            meta["stored_sha256"] = stored
        meta["redactions"] = dict(sorted(counts.items()))
        return meta

    def _check_stamp(self, value: object, kind: str, seq: int) -> None:
        gap = self.detector.observe_value(value, kind, seq)
        if gap is not None:
            self.gaps.append(gap)
