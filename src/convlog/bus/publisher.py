"""Publishing to a broker: the :class:`Publisher` library and ``convlog publish FILE``
(a JSONL file of payloads, legacy ConversationEvent records sent as they are, or a JSON
export document turned back into native events).

The publisher connects an XPUB socket (not a PUB) to the broker's XSUB endpoint. An
XSUB forwards its subscribers' subscriptions upstream, and an XPUB can read them, so
:meth:`Publisher.wait_for_subscriber` knows when someone (the recorder) is really
subscribed instead of sleeping and hoping: the "slow joiner" problem of the ZeroMQ
guide, chapter 2, "Getting the Message Out". ``XPUB_NODROP`` makes a full send queue
block the sender instead of dropping, so any loss is the broker's or the subscriber's,
never the publisher's.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import zmq

from convlog.bus.broker import DEFAULT_XSUB
from convlog.bus.curve import REFUSAL_EVENTS, ClientKeys, refusal_reason
from convlog.core.gaps import HEARTBEAT, stamp_payload
from convlog.core.wire import DEFAULT_SESSION_FIELDS, LegacyRecordError, is_legacy, parse_legacy, session_of


class NoSubscriberError(Exception):
    """No subscription reached the publisher within the wait time."""


class PublishFileError(ValueError):
    """A file to publish, or lines of it, cannot be turned into bus messages
    (``file:line: reason``, one line per bad line)."""


@dataclass(frozen=True, slots=True)
class SkippedLine:
    """A line of a file to publish that was not sent: file (as given), 1-based line,
    reason. ``str()`` is ``file:line: reason``, as ``convlog import`` reports lines."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def default_publisher_id() -> str:
    """``<host>:<pid>:<4 random hex>``: unique per process, so a restarted process is a
    new publisher. Pass a stable ``publisher_id`` to have restarts counted instead."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Publisher:
    """Sends ``[topic, payload]`` messages to a broker's XSUB endpoint, stamped for loss
    detection (see :mod:`convlog.core.gaps`).

    Args:
        endpoint: the broker's XSUB endpoint (default ``tcp://127.0.0.1:5555``).
        sndhwm: send high-water mark, messages (with ``XPUB_NODROP`` a full queue
            blocks :meth:`send` rather than dropping).
        context: a ZeroMQ context to use (default: the process-wide instance).
        publisher_id: the id in the stamps (default :func:`default_publisher_id`).
        stamp: stamp JSON object payloads with ``{"convlog": {"publisher", "seq"}}``;
            other payloads are sent as they are (and count as unverified).
        heartbeat_s: when nothing was sent for this long (seconds), send a heartbeat
            carrying the last seq (on topic ``convlog.heartbeat``), from an APScheduler
            background job; 0 or None: no heartbeats. A last heartbeat is sent by
            :meth:`close`.
        curve: own and broker keys (:class:`convlog.bus.curve.ClientKeys`) for a broker
            serving CURVE; None: a plain connection.

    The socket is used under a lock, so :meth:`send` may be called from any one thread
    while the heartbeat job runs. Use as a context manager, or call :meth:`close`.
    """

    HEARTBEAT_TOPIC = b"convlog.heartbeat"

    def __init__(
        self,
        endpoint: str = DEFAULT_XSUB,
        sndhwm: int = 100_000,
        context: zmq.Context | None = None,
        publisher_id: str | None = None,
        stamp: bool = True,
        heartbeat_s: float | None = 1.0,
        curve: ClientKeys | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.XPUB)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.XPUB_NODROP, 1)
        self._sock.setsockopt(zmq.LINGER, 10_000)
        #: With CURVE: a monitor of the handshake's failures, to say why no subscriber came.
        self._monitor: zmq.Socket | None = None
        if curve is not None:
            curve.apply(self._sock)
            self._monitor = self._sock.get_monitor_socket(sum(REFUSAL_EVENTS))
        self._sock.connect(endpoint)
        self.publisher_id = publisher_id or default_publisher_id()
        self._encoded_id = orjson.dumps(self.publisher_id)
        self.stamp = stamp
        self.sent = 0
        self.seq = 0
        self.subscriptions: set[bytes] = set()
        self._lock = threading.Lock()
        self._last_send = time.monotonic()
        self._closed = False
        self._scheduler = None
        if stamp and heartbeat_s:
            from apscheduler.schedulers.background import BackgroundScheduler

            self._scheduler = BackgroundScheduler(daemon=True)
            self._scheduler.add_job(
                self._heartbeat_if_idle, "interval", seconds=heartbeat_s, args=(heartbeat_s,),
                max_instances=1, coalesce=True,
            )
            self._scheduler.start()

    def wait_for_subscriber(self, timeout_s: float = 10.0, topic: bytes | None = None) -> bytes:
        """Block until a subscription arrives from the broker.

        Args:
            timeout_s: how long to wait, seconds.
            topic: wait for a subscription that covers this topic (a subscribed prefix
                of it); None: any subscription.

        Returns:
            the subscribed prefix (``b""`` for everything).

        Raises:
            NoSubscriberError: when none arrives in time.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            for prefix in self.subscriptions:
                if topic is None or topic.startswith(prefix):
                    return prefix
            left_ms = int((deadline - time.monotonic()) * 1000)
            with self._lock:
                ready = left_ms > 0 and self._sock.poll(min(left_ms, 100), zmq.POLLIN)
                if ready:
                    self._read_subscriptions()
            if left_ms <= 0:
                what = "no subscriber" if topic is None else f"no subscriber of topic {topic!r}"
                refused = self._refusal()
                hint = (f"the broker refused this publisher's CURVE handshake: {refused}; is its key in the "
                        "broker's allow directory, and --curve-server the broker's key?" if refused else
                        "is the broker running and the recorder connected to its XPUB side?")
                raise NoSubscriberError(f"{what} reached {self.endpoint} within {timeout_s:g} s ({hint})")

    def _refusal(self) -> str | None:
        """Why the broker refused the last CURVE handshake, if it did (from the monitor)."""
        from zmq.utils.monitor import recv_monitor_message

        reason = None
        while self._monitor is not None:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            reason = refusal_reason(event["event"], event["value"])
        return reason

    def _read_subscriptions(self) -> None:
        while True:
            try:
                event = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if event[:1] == b"\x01":
                self.subscriptions.add(event[1:])
            elif event[:1] == b"\x00":
                self.subscriptions.discard(event[1:])

    def send(self, topic: bytes, payload: bytes) -> None:
        """Publish one two-frame message, stamped when it is a JSON object (blocks
        while the send queue is full)."""
        with self._lock:
            if self.stamp:
                stamped = stamp_payload(payload, self.publisher_id, self.seq + 1, self._encoded_id)
                if stamped is not None:
                    self.seq += 1
                    payload = stamped
            self._sock.send_multipart((topic, payload))
            self.sent += 1
            self._last_send = time.monotonic()

    def send_frames(self, frames: Iterable[bytes]) -> None:
        """Publish one message with any number of frames, exactly as given (unstamped)."""
        with self._lock:
            self._sock.send_multipart(list(frames))
            self.sent += 1
            self._last_send = time.monotonic()

    def heartbeat(self, closing: bool = False) -> None:
        """Send a heartbeat now: ``{"type": "publisher.heartbeat", "convlog": {...,
        "seq": <last seq sent>}}`` on topic ``convlog.heartbeat``.

        Args:
            closing: add ``"closing": true``: the publisher says goodbye, so the
                recorder does not report it silent (see :mod:`convlog.core.gaps`).
        """
        with self._lock:
            if self._closed:
                return
            body = b'{"type":"' + HEARTBEAT.encode() + (b'","closing":true}' if closing else b'"}')
            payload = stamp_payload(body, self.publisher_id, self.seq, self._encoded_id)
            assert payload is not None
            self._sock.send_multipart((self.HEARTBEAT_TOPIC, payload))
            self._last_send = time.monotonic()

    def _heartbeat_if_idle(self, idle_s: float) -> None:
        if time.monotonic() - self._last_send >= idle_s:
            self.heartbeat()

    def close(self, linger_ms: int = 10_000, heartbeat: bool = True) -> None:
        """Send a last heartbeat (when stamping and ``heartbeat``; it carries
        ``"closing": true``), then close the socket, waiting up to ``linger_ms`` for
        queued messages to leave. Idempotent."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self._closed:
            return
        if self.stamp and linger_ms and heartbeat:
            self.heartbeat(closing=True)
        with self._lock:
            self._closed = True
            if self._monitor is not None:
                self._sock.disable_monitor()
                self._monitor.close(linger=0)
            self._sock.close(linger=linger_ms)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: ``fmt`` values of :func:`file_messages` (``convlog publish --format``).
FILE_FORMATS = ("auto", "native", "legacy", "export-json")

#: Bytes read from the start of a file to recognise a JSON export document.
_HEAD_BYTES = 4096
#: Non-blank lines :func:`detect_format` looks at for one that is JSON.
DETECT_LINES = 100
#: Skipped lines named by the :class:`PublishFileError` of :func:`file_messages` (the
#: others are counted).
MAX_REPORTED = 100


def detect_format(path: str | Path) -> str:
    """The format ``auto`` means for a file: ``export-json`` when it starts like a JSON
    export document (:func:`convlog.core.document.looks_like_document`) or its first
    JSON line is a whole one (keys in any order), ``legacy`` when its first line that is
    JSON (among the first :data:`DETECT_LINES` non-blank ones, so that one damaged line
    at the top does not decide) is a legacy ConversationEvent record, else ``native``.

    Raises:
        OSError: when the file cannot be read.
    """
    from convlog.core.document import JSON_FORMAT, looks_like_document

    with Path(path).open("rb") as fh:
        if looks_like_document(fh.read(_HEAD_BYTES)):
            return "export-json"
        fh.seek(0)
        looked = 0
        for raw in fh:
            if not raw.strip():
                continue
            looked += 1
            if looked > DETECT_LINES:
                break
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict) and value.get("format") == JSON_FORMAT and "sessions" in value:
                return "export-json"
            return "legacy" if is_legacy(value) else "native"
    return "native"


def document_messages(path: str | Path, topic: str | None = None) -> list[tuple[bytes, bytes]]:
    """Read a JSON export document (``convlog export --format json``) as the native bus
    events that re-create its sessions (:func:`convlog.core.document.document_events`). The
    whole file is read and checked before anything is returned, so a bad document
    publishes nothing; it is held in memory meanwhile (peak about 7 times the file's
    size, measured on an 18 MB export; JSONL exports stream instead).

    Args:
        path: the file.
        topic: topic for every message; default: the event's session id.

    Returns:
        ``(topic, payload)`` pairs, the payloads compact JSON objects.

    Raises:
        PublishFileError: ``<path>: <reason>`` when the file is not JSON or not a
            readable export document.
        OSError: when the file cannot be read.
    """
    from convlog.core.document import ExportDocumentError, document_events

    try:
        doc = orjson.loads(Path(path).read_bytes().removeprefix(b"\xef\xbb\xbf"))
    except orjson.JSONDecodeError as exc:
        raise PublishFileError(f"{path}: not a JSON document: {exc}") from None
    try:
        events = document_events(doc)
    except ExportDocumentError as exc:
        raise PublishFileError(f"{path}: {exc}") from None
    fixed = topic.encode() if topic is not None else None
    return [(fixed or event["session_id"].encode(), orjson.dumps(event)) for event in events]


def file_messages(
    path: str | Path,
    topic: str | None = None,
    fmt: str = "auto",
    on_skip: Callable[[SkippedLine], None] | None = None,
) -> Iterator[tuple[bytes, bytes]]:
    """Read a file as bus messages.

    Args:
        path: the file.
        topic: topic for every message; default: the legacy sender's name, or the
            payload's session id, or ``convlog``.
        fmt: ``native`` (each line of a JSONL file is sent as the payload, byte for
            byte), ``legacy`` (each line a legacy ConversationEvent record, checked by
            :func:`convlog.core.wire.parse_legacy` and sent as it is, every field
            included, on the topic of its ``SpeakerName``: the recorder records it as
            ``convlog import`` would, see :mod:`convlog.store.importer`),
            ``export-json`` (a JSON export document turned back into native events, see
            :func:`document_messages`; read and checked whole, here) or ``auto`` (see
            :func:`detect_format`).
        on_skip: called with each line skipped in ``legacy`` mode (not JSON, not an
            object, missing or mistyped fields), as it is met; the lines after it are
            still read. None: skipped lines are gathered and reported by one
            :class:`PublishFileError` raised after the last message was yielded
            (naming the first :data:`MAX_REPORTED`, counting all).

    Returns:
        an iterator of ``(topic, payload)`` pairs (lines read as it is consumed). Blank
        lines are skipped.

    Raises:
        PublishFileError: a bad export document (at once); without ``on_skip``, after
            the last message, when lines were skipped: one ``file:line: reason`` line per
            skipped line, then how many were skipped and how many sent.
        ValueError: for an unknown ``fmt``.
    """
    if fmt not in FILE_FORMATS:
        raise ValueError(f"unknown file format {fmt!r} (one of {', '.join(FILE_FORMATS)})")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "export-json":
        return iter(document_messages(path, topic))
    if fmt == "legacy":
        return _legacy_messages(path, topic, on_skip)
    return _native_messages(path, topic)


def _legacy_messages(
    path: str | Path, topic: str | None, on_skip: Callable[[SkippedLine], None] | None
) -> Iterator[tuple[bytes, bytes]]:
    """The lines of a legacy ConversationEvent file as bus messages (see :func:`file_messages`)."""
    fixed = topic.encode() if topic is not None else None
    skipped: list[SkippedLine] = []
    sent = 0
    with Path(path).open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                sender, _ = parse_legacy(line)
            except LegacyRecordError as exc:
                bad = SkippedLine(str(path), number, str(exc))
                if on_skip is not None:
                    on_skip(bad)
                else:
                    skipped.append(bad)  # the first MAX_REPORTED are named
                continue
            yield (sender if fixed is None else fixed), line
            sent += 1
    if skipped:
        lines = "\n".join(str(bad) for bad in skipped[:MAX_REPORTED])
        more = f"\n... and {len(skipped) - MAX_REPORTED} more" if len(skipped) > MAX_REPORTED else ""
        raise PublishFileError(
            f"{lines}{more}\n{len(skipped)} invalid line{'s' if len(skipped) != 1 else ''} skipped, "
            f"{sent} message{'s' if sent != 1 else ''} sent"
        )


def _native_messages(path: str | Path, topic: str | None) -> Iterator[tuple[bytes, bytes]]:
    """The lines of a JSONL file as payloads, byte for byte (see :func:`file_messages`)."""
    with Path(path).open("rb") as fh:
        for raw in fh:
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            if topic is not None:
                yield topic.encode(), line
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                value = None
            session = session_of(value, DEFAULT_SESSION_FIELDS) if isinstance(value, dict) else None
            yield (session or "convlog").encode(), line


@dataclass(slots=True)
class PublishReport:
    """Result of :func:`publish`: messages sent and wall time (seconds)."""

    sent: int
    seconds: float

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.sent / self.seconds if self.seconds > 0 else float("inf")


def publish(
    messages: Iterable[tuple[bytes, bytes]],
    endpoint: str = DEFAULT_XSUB,
    rate: float | None = None,
    wait_s: float | None = 10.0,
    publisher: Publisher | None = None,
) -> PublishReport:
    """Publish messages at a steady rate or as fast as possible.

    Args:
        messages: ``(topic, payload)`` pairs.
        endpoint: the broker's XSUB endpoint (ignored when ``publisher`` is given).
        rate: messages per second, or None for as fast as possible.
        wait_s: first wait this long for a subscriber (None: don't wait).
        publisher: an open publisher to use (left open).

    Returns:
        a :class:`PublishReport`.

    Raises:
        NoSubscriberError: when waiting and no subscriber appeared.
    """
    own = publisher is None
    pub = publisher or Publisher(endpoint)
    try:
        if wait_s is not None:
            pub.wait_for_subscriber(wait_s)
        started = time.perf_counter()
        count = 0
        interval = 1.0 / rate if rate else 0.0
        for topic, payload in messages:
            if interval:
                ahead = started + count * interval - time.perf_counter()
                if ahead > 0.001:
                    time.sleep(ahead)
            pub.send(topic, payload)
            count += 1
        return PublishReport(count, time.perf_counter() - started)
    finally:
        if own:
            pub.close()
