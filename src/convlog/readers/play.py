"""Re-publish recorded messages onto a bus: ``convlog play`` (like ``ros2 bag play``).

Each selected record is turned back into the frames that arrived (:func:`record_frames`)
and sent to a broker's XSUB endpoint, paced by the original receive times scaled by a
rate (:func:`schedule`), or as fast as possible.

The frames, exactly (the inverse of :mod:`convlog.core.wire` / :mod:`convlog.core.record`):

* the topic frame is ``topic`` as UTF-8, or the bytes of its base64 when
  ``meta.topic_encoding == "base64"``; a message of one frame (``meta.frames == 1``,
  ``topic`` null) has no topic frame;
* the payload is the record's ``data`` **as it stands in the line**: JSON payloads were
  spliced into the line byte for byte, so their bytes are cut out of the line
  (:func:`member_span`), not re-serialized (key order, number spelling, escapes and
  whitespace survive); non-JSON payloads are decoded from their documented form
  (``{"text"}`` or ``{"base64"}``, ``meta.encoding``);
* ``extra_frames`` (frames after the second) are decoded the same way.

The one change the recorder makes to a payload is a raw LF between JSON tokens, which
becomes a space in the log (:func:`convlog.core.record.one_line_json`); ``meta.lf`` names
their offsets and they are put back (:func:`convlog.core.record.restore_newlines`). When the
record has ``meta.sha256`` (every received record does) the rebuilt payload is checked
against it; a mismatch (a record written before ``meta.lf`` existed, or a damaged one)
is sent anyway and counted as ``altered`` in the report.

What is played (:class:`Selection`): by default the records that came from the bus
(source ``sub``). Records PUSHed straight to the recorder (``pull``), written by the
session commands (``control``) or imported from files (``import``) were never on the
bus and are only played when their source is asked for. The recorder's own records
(``recorder.*``) and publishers' heartbeats (``publisher.heartbeat``) are never played,
nor are purged records (``convlog purge`` removed their payload: there is nothing to send).
Only the records in the log when play starts are played: a recorder that writes the
same log from the broker played into (a feedback loop) does not make it play its own
output. Payloads are sent as recorded, loss-detection stamps included: a recorder behind the
broker sees the original publishers' sequence numbers, so a filtered play (``--session``,
``--since``) looks to it like messages missing and it writes ``recorder.gap`` records.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlog.core.payload import PayloadError, data_bytes, member_span, stored_payload
from convlog.core.record import decode_bytes, is_purged, parse_line
from convlog.core.view import plural
from convlog.store.segment import complete_end, iter_lines, lines_backwards, list_segments

if TYPE_CHECKING:
    from convlog.bus.curve import ClientKeys

__all__ = [
    "DEFAULT_SOURCES",
    "Planned",
    "PlayError",
    "PlayReport",
    "Selection",
    "data_bytes",
    "end_seq",
    "member_span",
    "plan",
    "play",
    "record_frames",
    "schedule",
]

#: Sources played unless others are asked for.
DEFAULT_SOURCES: frozenset[str] = frozenset({"sub"})
#: Kinds never played.
NEVER_PLAYED = frozenset({"publisher.heartbeat"})


class PlayError(PayloadError):
    """A record's frames cannot be rebuilt (the line or its fields are malformed)."""


class NothingToPlayError(Exception):
    """No record of the log matched the selection."""


# --------------------------------------------------------------------------- frames

@dataclass(frozen=True, slots=True)
class Frames:
    """A record's message as it arrived.

    Attributes:
        frames: the frames, in order.
        exact: True when the payload matches the record's ``meta.sha256``, False when
            it does not (a JSON payload whose raw LF the recorder turned into a space),
            None when the record has no hash. For a redacted record (``meta.redactions``)
            the payload is the one stored, checked against ``meta.stored_sha256``: True
            says the stored bytes were rebuilt (not the bytes received, which hold the
            secrets and were never stored).
    """

    frames: list[bytes]
    exact: bool | None


def record_frames(line: bytes, record: Mapping[str, Any] | None = None) -> Frames:
    """Rebuild the frames of a received message from its log line. Pure.

    Args:
        line: the record's line as in the log.
        record: the line already parsed (parsed here when None).

    Returns:
        the :class:`Frames` (see the module doc for the rules).

    Raises:
        PlayError: when the line is not a record, it had no frames, its ``data`` or
            ``extra_frames`` are not in a documented form, or its base64 is invalid.
    """
    if record is None:
        try:
            record = parse_line(line)
        except ValueError as exc:
            raise PlayError(f"invalid record: {exc}") from None
    meta = record.get("meta")
    meta = meta if isinstance(meta, Mapping) else {}
    count = meta.get("frames", 2)
    if count == 0:
        raise PlayError("the message had no frames")
    try:
        payload = stored_payload(line, record)
        frames = [payload]
        if count != 1:
            topic = record.get("topic")
            if not isinstance(topic, str):
                raise PlayError("the record has no topic")
            if meta.get("topic_encoding") == "base64":
                topic_frame = decode_bytes({"base64": topic})
            else:
                topic_frame = topic.encode("utf-8", "surrogatepass")
            frames.insert(0, topic_frame)
            extra = record.get("extra_frames")
            if extra is not None:
                if not isinstance(extra, list) or not all(isinstance(f, dict) for f in extra):
                    raise PlayError("extra_frames is not a list of encoded frames")
                frames.extend(decode_bytes(f) for f in extra)
    except ValueError as exc:  # PayloadError, binascii.Error, orjson errors, decode_bytes
        if isinstance(exc, PlayError):
            raise
        raise PlayError(str(exc)) from None
    digest = meta.get("stored_sha256") or meta.get("sha256")
    exact = None if not isinstance(digest, str) else sha256(payload).hexdigest() == digest
    return Frames(frames, exact)


# --------------------------------------------------------------------------- selection and pacing


@dataclass(frozen=True, slots=True)
class Selection:
    """Which records are played.

    Attributes:
        sessions: session ids to play (None: all).
        sources: record sources to play (default :data:`DEFAULT_SOURCES`).
        since_seq, until_seq: inclusive seq bounds (None: open).
        since_ts, until_ts: inclusive receive-time bounds, RFC 3339 as in records
            (``2026-11-21T12:00:00.000000Z``; see :func:`convlog.store.replay.parse_as_of`),
            compared as text, which orders them in time.
    """

    sessions: frozenset[str] | None = None
    sources: frozenset[str] = DEFAULT_SOURCES
    since_seq: int | None = None
    until_seq: int | None = None
    since_ts: str | None = None
    until_ts: str | None = None

    def accepts(self, record: Mapping[str, Any]) -> bool:
        """True when ``record`` is to be played."""
        kind = record.get("kind")
        if not isinstance(kind, str) or kind.startswith("recorder.") or kind in NEVER_PLAYED or is_purged(record):
            return False
        if record.get("source") not in self.sources:
            return False
        if self.sessions is not None and record.get("session") not in self.sessions:
            return False
        seq = record["seq"]
        if (self.since_seq is not None and seq < self.since_seq) or (self.until_seq is not None and
                                                                     seq > self.until_seq):
            return False
        ts = record.get("ts")
        if self.since_ts is not None or self.until_ts is not None:
            if not isinstance(ts, str):
                return False
            if (self.since_ts is not None and ts < self.since_ts) or (self.until_ts is not None and
                                                                      ts > self.until_ts):
                return False
        return True

    def past_end(self, record: Mapping[str, Any]) -> bool:
        """True when no later record can be accepted (past ``until_seq``)."""
        return self.until_seq is not None and record["seq"] > self.until_seq


def ts_seconds(ts: Any) -> float | None:
    """Seconds since the Unix epoch of an RFC 3339 time (``...Z`` or with an offset), or
    None when ``ts`` is not one."""
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return None


def schedule(times: Iterable[float | None], rate: float | None) -> Iterator[float]:
    """When to send each message, relative to the first. Pure.

    ``offset[i] = max(offset[i-1], (t[i] - t[0]) / rate)``: the original spacing
    divided by ``rate``, never going back in time (a receive clock that stepped back
    sends at once). A message without a time goes with the one before it.

    Args:
        times: original receive times, seconds (any epoch), or None when unknown.
        rate: speed factor (2 = twice as fast), > 0; None: as fast as possible
            (every offset 0).

    Yields:
        offsets in seconds, non-decreasing, the first 0.

    Raises:
        ValueError: when ``rate`` is not > 0.
    """
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0, not {rate!r}")
    first: float | None = None
    last = 0.0
    for t in times:
        if rate is None or t is None:
            yield last
            continue
        if first is None:
            first = t
        last = max(last, (t - first) / rate)
        yield last


@dataclass(frozen=True, slots=True)
class Planned:
    """One message to send.

    Attributes:
        offset: seconds after the first message.
        frames: the frames (topic prefix applied).
        seq: the record it comes from.
        exact: see :attr:`Frames.exact`.
    """

    offset: float
    frames: list[bytes]
    seq: int
    exact: bool | None


@dataclass(slots=True)
class PlanCounts:
    """What :func:`plan` left out: ``unreadable`` lines, ``unrebuildable`` records
    (with the first reason), read by :func:`play` for its report."""

    unreadable: int = 0
    unrebuildable: int = 0
    first_problem: str | None = None


def plan(
    lines: Iterable[bytes],
    selection: Selection,
    rate: float | None,
    topic_prefix: bytes = b"",
    counts: PlanCounts | None = None,
) -> Iterator[Planned]:
    """The messages to send, in log order, with their offsets. Pure (over ``lines``).

    Args:
        lines: log lines in seq order (:func:`convlog.store.segment.iter_lines`).
        selection: which records.
        rate: see :func:`schedule`.
        topic_prefix: prepended to each topic frame (messages of one frame have none and
            are sent unchanged).
        counts: filled with what was left out.

    Yields:
        :class:`Planned` messages.
    """
    counts = counts if counts is not None else PlanCounts()
    times: deque[float | None] = deque()
    offsets = schedule(_drain(times), rate)
    for line in lines:
        try:
            record = parse_line(line)
        except ValueError:
            counts.unreadable += 1
            continue
        if selection.past_end(record):
            return
        if not selection.accepts(record):
            continue
        try:
            frames = record_frames(line, record)
        except PlayError as exc:
            counts.unrebuildable += 1
            if counts.first_problem is None:
                counts.first_problem = f"seq {record['seq']}: {exc}"
            continue
        out = frames.frames
        if topic_prefix and len(out) > 1:
            out = [topic_prefix + out[0], *out[1:]]
        times.append(ts_seconds(record.get("ts")))
        yield Planned(next(offsets), out, record["seq"], frames.exact)


def _drain(queue: deque[float | None]) -> Iterator[float | None]:
    """Yield the items appended to ``queue``, one each time the consumer asks (so
    :func:`schedule` paces a stream as it is read)."""
    while queue:
        yield queue.popleft()


# --------------------------------------------------------------------------- the shell


@dataclass(slots=True)
class PlayReport:
    """What :func:`play` did.

    Attributes:
        sent: messages sent.
        bytes: bytes sent (all frames).
        seconds: wall time from the first send to the last (seconds).
        altered: messages whose payload differs from the recorded hash (see the module doc).
        unreadable, unrebuildable: lines and records left out; ``first_problem`` says why.
    """

    sent: int = 0
    bytes: int = 0
    seconds: float = 0.0
    altered: int = 0
    unreadable: int = 0
    unrebuildable: int = 0
    first_problem: str | None = None

    def summary(self, endpoint: str) -> str:
        """One line: ``played N messages (B bytes) in S s to ENDPOINT`` and what was left out."""
        line = f"played {plural(self.sent, 'message')} ({self.bytes:,} bytes) in {self.seconds:.2f} s to {endpoint}"
        notes = []
        if self.altered:
            notes.append(f"{self.altered} payloads differ from their recorded hash (raw LF turned into a space)")
        if self.unreadable:
            notes.append(f"{self.unreadable} unreadable lines skipped")
        if self.unrebuildable:
            notes.append(f"{self.unrebuildable} records not rebuildable (first: {self.first_problem})")
        return line + ("; " + "; ".join(notes) if notes else "")


def play(
    directory: Path,
    endpoint: str,
    selection: Selection,
    rate: float | None = 1.0,
    topic_prefix: str = "",
    wait_s: float | None = 10.0,
    progress: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    curve: ClientKeys | None = None,
) -> PlayReport:
    """Play the selected records of a log onto a broker.

    Connects an unstamped :class:`convlog.bus.publisher.Publisher` (an XPUB socket with
    ``XPUB_NODROP``, no heartbeats) to ``endpoint``, waits until a subscription reaches
    it, then sends each message at ``its offset`` after the first (see :func:`schedule`),
    and closes, waiting up to 10 s for queued messages to leave.

    Args:
        directory: the log directory.
        endpoint: the broker's XSUB endpoint.
        selection: which records.
        rate: speed factor (1 = original pacing), None for as fast as possible.
        topic_prefix: prepended to each topic.
        wait_s: seconds to wait for a subscriber; None or 0 to send at once.
        progress: called with log bytes read.
        sleep: how to wait (seconds).
        curve: own and broker keys for a broker serving CURVE (see
            :class:`convlog.bus.curve.ClientKeys`); None: a plain connection.

    Returns:
        a :class:`PlayReport`.

    Raises:
        NoSubscriberError: when no subscription arrived within ``wait_s``.
        NothingToPlayError: when no record matched the selection.
        zmq.ZMQError: for an invalid endpoint.
    """
    from convlog.bus.publisher import Publisher

    report = PlayReport()
    counts = PlanCounts()
    start_seq = selection.since_seq or 1
    end = end_seq(directory)
    if selection.until_seq is None or selection.until_seq > end:
        # Only what is in the log now: a recorder writing this log from the broker played
        # into would otherwise feed the played messages back forever.
        selection = replace(selection, until_seq=end)
    publisher = Publisher(endpoint, stamp=False, heartbeat_s=None, curve=curve)
    linger_ms = 10_000
    try:
        if wait_s:
            publisher.wait_for_subscriber(wait_s)
        started = last = 0.0
        for item in plan(iter_lines(directory, start_seq, progress), selection, rate,
                         topic_prefix.encode("utf-8"), counts):
            now = time.monotonic()
            if not report.sent:
                started = now
            delay = started + item.offset - now
            if delay > 0:
                sleep(delay)
            publisher.send_frames(item.frames)
            last = time.monotonic()
            report.sent += 1
            report.bytes += sum(len(frame) for frame in item.frames)
            report.altered += item.exact is False
        report.seconds = last - started
    except BaseException:
        linger_ms = 0
        raise
    finally:
        with contextlib.suppress(Exception):
            publisher.close(linger_ms=linger_ms, heartbeat=False)
    report.unreadable, report.unrebuildable, report.first_problem = (
        counts.unreadable, counts.unrebuildable, counts.first_problem)
    if not report.sent:
        raise NothingToPlayError(_nothing(selection, report))
    return report


def end_seq(directory: Path) -> int:
    """The seq of the last whole record of a log now (0 when it has none), read
    backwards from the end of its last segment (a line being written and invalid lines
    are stepped over).

    Raises:
        OSError: when a segment cannot be read.
    """
    for _first, path in reversed(list_segments(directory)):
        for _offset, line in lines_backwards(path, complete_end(path)):
            with contextlib.suppress(ValueError):
                return parse_line(line)["seq"]
    return 0


def _nothing(selection: Selection, report: PlayReport) -> str:
    what = []
    if selection.sessions is not None:
        what.append(f"session {', '.join(sorted(selection.sessions))}")
    what.append(f"source {', '.join(sorted(selection.sources))}")
    if selection.since_seq or selection.since_ts:
        what.append(f"since {selection.since_seq or selection.since_ts}")
    if selection.until_seq or selection.until_ts:
        what.append(f"until {selection.until_seq or selection.until_ts}")
    extra = f" ({report.unrebuildable} not rebuildable: {report.first_problem})" if report.unrebuildable else ""
    return f"nothing to play: no recorded message matches {'; '.join(what)}{extra}"


def resolve_sessions(names: Iterable[str], session_ids: Collection[str]) -> frozenset[str]:
    """Session ids for ``--session`` values. Pure.

    Each name is a folded session's id, else the one folded id starting with it; a
    name no folded id starts with is taken as it is (records of ``unknown`` or ``raw``
    kind carry sessions the fold keeps nothing for).

    Args:
        names: the values given.
        session_ids: the folded sessions' ids.

    Returns:
        the ids to play.

    Raises:
        UnknownSessionError: when a name is the prefix of several ids and none exactly.
    """
    from convlog.store.replay import UnknownSessionError

    out = set()
    for name in names:
        if name in session_ids:
            out.add(name)
            continue
        matches = sorted(sid for sid in session_ids if sid.startswith(name))
        if len(matches) > 1:
            raise UnknownSessionError(f"session {name!r} is ambiguous: {', '.join(matches[:5])}…")
        out.add(matches[0] if matches else name)
    return frozenset(out)
