"""The receive side: the SUB (and optional PULL) sockets, and turning what libzmq has
queued into numbered lines, a batch at a time.

Bursts wait in libzmq's I/O thread, which keeps reading from the network into the SUB
socket's queue (its receive high-water mark, default 1,000,000 messages) while the
recording thread writes; see the ZeroMQ guide, chapter 2, "High-Water Marks". The
recording thread runs at a lower priority than the I/O thread (``processing_nice``) so
that, on shared cores, reading the network wins over turning the queue into records.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import zmq

from convlog.bus.curve import REFUSAL_EVENTS, ClientKeys, refusal_reason
from convlog.core.chain import LINK_BYTES
from convlog.core.ingest import Ingest
from convlog.core.record import with_meta
from convlog.recorder.config import Config
from convlog.recorder.durable import DurableWriter
from convlog.recorder.sequencer import Sequencer, error_text
from convlog.store.clock import Clock

log = logging.getLogger("convlog.recorder")

_NOBLOCK = int(zmq.NOBLOCK)
#: Messages taken from one socket before the batch is written.
BATCH_MESSAGES = 1024
#: Quiet time that ends the drain at stop, milliseconds.
DRAIN_QUIET_MS = 100


class Receiver:
    """The recorder's bus sockets and what came in through them.

    Args:
        config: the recorder's settings (endpoints, topics, ``rcvhwm``, ``processing_nice``,
            ``drain_timeout_ms``).
        ingest: turns frames into lines (and finds gaps).
        clock: the recorder's clock (receive times).
        sequencer: numbers the records and makes the gap and error lines.
        durable: where the lines go.

    Attributes:
        received: messages received since start, by source (``"sub"``, ``"pull"``),
            dropped ones included.
        newest_ts: receive time (RFC 3339) of the newest message written, or None.
        last_bus: monotonic time of the last message from the bus, seconds (0: none yet).
        connected: SUB endpoint -> connected now (from the socket monitor).
        monitor: the SUB socket's monitor socket (connection events), once opened.
    """

    def __init__(
        self, config: Config, ingest: Ingest, clock: Clock, sequencer: Sequencer, durable: DurableWriter
    ) -> None:
        self.config = config
        self.ingest = ingest
        self.clock = clock
        self.sequencer = sequencer
        self.durable = durable
        self.received: dict[str, int] = {}
        self.newest_ts: str | None = None
        self.last_bus = 0.0
        self.connected: dict[str, bool] = {endpoint: False for endpoint in config.sub}
        self.monitor: zmq.Socket | None = None
        #: The SUB socket is a CURVE client (``curve_secret`` / ``curve_server``).
        self.curve = config.curve_secret is not None and config.curve_server is not None
        #: SUB endpoint -> why the broker refused the last handshake (CURVE), cleared on success.
        self.refused: dict[str, str] = {}
        self.sockets: list[tuple[zmq.Socket, str]] = []

    def open_sockets(self, ctx: zmq.Context) -> list[tuple[zmq.Socket, str]]:
        """Connect the SUB socket (and its monitor) and bind the PULL one, when configured.

        With ``curve_secret`` / ``curve_server`` set, the SUB socket is a CURVE client
        (:func:`convlog.bus.curve.connect_as`) of a broker that serves CURVE on its XPUB.

        Args:
            ctx: the context to make them in.

        Returns:
            ``[(socket, source)]``: ``(sub, "sub")`` then ``(pull, "pull")`` if any.

        Raises:
            zmq.ZMQError: for an endpoint that cannot be connected or bound.
            CurveError: for a certificate that cannot be used (checked at configuration
                already; it may have changed since).
        """
        sub = ctx.socket(zmq.SUB)
        if self.curve:
            assert self.config.curve_secret is not None and self.config.curve_server is not None
            ClientKeys.load(self.config.curve_secret, self.config.curve_server).apply(sub)
        sub.setsockopt(zmq.RCVHWM, self.config.rcvhwm)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RECONNECT_IVL, 100)
        sub.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sub.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        sub.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
        for prefix in self.config.topics:
            sub.setsockopt(zmq.SUBSCRIBE, prefix.encode("utf-8"))
        # Connection events of the SUB socket, for status (which endpoints are connected);
        # with CURVE a connection counts once its handshake succeeded.
        events = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED
        if self.curve:
            events = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | sum(REFUSAL_EVENTS)
        self.monitor = sub.get_monitor_socket(events)
        for endpoint in self.config.sub:
            sub.connect(endpoint)
        self.sockets = [(sub, "sub")]
        if self.config.pull:
            pull = ctx.socket(zmq.PULL)
            pull.setsockopt(zmq.RCVHWM, self.config.rcvhwm)
            pull.setsockopt(zmq.LINGER, 0)
            pull.bind(self.config.pull)
            self.sockets.append((pull, "pull"))
        return self.sockets

    def close_sockets(self) -> None:
        """Close the bus sockets and the monitor, dropping what is still queued."""
        for sock, _ in self.sockets:
            sock.close(linger=0)
        if self.monitor is not None:
            self.monitor.close(linger=0)

    def drain(self, sock: zmq.Socket, source: str, limit: int) -> int:
        """Receive up to ``limit`` queued messages from ``sock`` and write them, numbered
        from ``sequencer.seq + 1``; a gap a message reveals gets its ``recorder.gap``
        record right after it.

        Args:
            sock: a SUB or PULL socket with messages queued (it is not waited on).
            source: ``"sub"`` or ``"pull"``, the records' ``source``.
            limit: most messages to take, e.g. :data:`BATCH_MESSAGES`.

        Returns:
            messages received (the recorder's own records among them not counted).
        """
        writer = self.durable.segment_writer
        assert writer is not None
        write = self.durable.write
        sequencer = self.sequencer
        line = self.ingest.line
        gaps = self.ingest.gaps
        clock = self.clock
        stamp = clock.now
        first = seq = sequencer.seq
        last = seq + limit
        own = 0  # recorder.gap records written among the messages
        lines: list[bytes] = []
        # Write early when the batch reaches the segment limit, so rotation happens at
        # the first record boundary past it; under "always" every record is written
        # (and fsynced) on its own.
        room = 0 if writer.policy == "always" else writer.segment_bytes - writer.offset
        pending = 0
        extra = LINK_BYTES if writer.chain is not None else 0  # what the writer's chain adds to each line
        recv = sock.recv
        while seq < last:
            # recv_multipart without its per-call enum conversions and RCVMORE
            # getsockopt: a zero-copy Frame knows whether more parts follow, and
            # .bytes copies it out (one copy, as recv_multipart makes).
            try:
                frame = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                break
            frames = [frame.bytes]
            while frame.more:
                frame = recv(copy=False)
                frames.append(frame.bytes)
            seq += 1
            ts = stamp()
            try:
                data = line(frames, seq, ts, source)
            except Exception as exc:  # never for any frames (property-tested); if it did, keep the bytes
                data = self.ingest.fallback_line(frames, seq, ts, source, error_text(exc))
                lines.append(data)
                pending += len(data) + extra
                seq += 1
                own += 1
                data = sequencer.error_line(seq, "decoding a message", exc, seq - 1)
            if clock.step_ns:
                data = with_meta(data, "clock_step_s", clock.step_ns / 1e9)
                log.warning("the wall clock went back %.6f s: record times hold at the last one until it catches up",
                            clock.step_ns / 1e9)
                clock.step_ns = 0
            lines.append(data)
            pending += len(data) + extra
            if gaps:
                for gap in gaps:
                    seq += 1
                    own += 1
                    data = sequencer.gap_line(gap, seq)
                    lines.append(data)
                    pending += len(data) + extra
                gaps.clear()
            if pending >= room:
                write(b"".join(lines), seq)
                lines.clear()
                pending = 0
                room = 0 if writer.policy == "always" else writer.segment_bytes - writer.offset
        if lines:
            write(b"".join(lines), seq)
        sequencer.seq = seq
        count = seq - first - own
        if count:
            self.received[source] = self.received.get(source, 0) + count
            self.newest_ts = ts
            self.last_bus = time.monotonic()
        return count

    def drop(self, sock: zmq.Socket, source: str, limit: int) -> int:
        """Receive up to ``limit`` messages and drop them, counting (the held bytes are at
        their bound, see :meth:`convlog.recorder.durable.DurableWriter.count_dropped`).

        Args:
            sock: a SUB or PULL socket.
            source: ``"sub"`` or ``"pull"``.
            limit: most messages to take.

        Returns:
            messages dropped.
        """
        count = 0
        while count < limit:
            try:
                sock.recv_multipart(_NOBLOCK)
            except zmq.Again:
                break
            count += 1
        if count:
            self.durable.count_dropped(source, count, self.sequencer.seq)
            self.received[source] = self.received.get(source, 0) + count
        return count

    def drain_at_stop(self) -> None:
        """Keep draining what libzmq already delivered until nothing arrives for
        :data:`DRAIN_QUIET_MS` or ``drain_timeout_ms`` passes (milliseconds)."""
        deadline = time.monotonic() + self.config.drain_timeout_ms / 1000
        poller = zmq.Poller()
        for sock, _ in self.sockets:
            poller.register(sock, zmq.POLLIN)
        while time.monotonic() < deadline:
            ready = dict(poller.poll(DRAIN_QUIET_MS))
            if not ready:
                break
            for sock, source in self.sockets:
                if sock in ready:
                    self.drain(sock, source, BATCH_MESSAGES)

    def connection_events(self) -> None:
        """Read the monitor's queued connection events into :attr:`connected`."""
        from zmq.utils.monitor import recv_monitor_message

        assert self.monitor is not None
        while True:
            try:
                event = recv_monitor_message(self.monitor, _NOBLOCK)
            except zmq.Again:
                return
            where = event.get("endpoint")
            where = where.decode() if isinstance(where, bytes) else where
            if where not in self.connected:
                continue
            kind = event["event"]
            if kind in REFUSAL_EVENTS:
                reason = refusal_reason(kind, event["value"])
                if self.refused.get(where) != reason:  # once per change, not at every reconnect
                    log.warning("the broker at %s refused the CURVE handshake: %s (is this recorder's key in its "
                                "allow directory, and curve_server the broker's key?)", where, reason)
                self.refused[where] = reason
                self.connected[where] = False
                continue
            up = kind in (zmq.EVENT_CONNECTED, zmq.EVENT_HANDSHAKE_SUCCEEDED)
            if up and self.refused.pop(where, None) is not None:
                log.info("CURVE handshake with %s succeeded", where)
            self.connected[where] = up

    def yield_to_network(self) -> None:
        """Lower the scheduling priority of the calling (the processing) thread only, by
        ``processing_nice``.

        Linux keeps a nice value per thread, and threads inherit it when created: libzmq's
        I/O thread, started with the sockets, keeps normal priority and keeps reading the
        network into the receive queue, while this thread, which turns the queue into
        records, gives way to it and to a broker on the same cores. A burst then waits in
        the recorder's queue (its high-water mark) instead of being dropped at the
        broker's XPUB. Best effort: skipped where not supported.
        """
        step = self.config.processing_nice
        if step <= 0 or not hasattr(os, "setpriority"):
            return
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + step)
        except OSError as exc:
            log.debug("could not lower the processing thread's priority: %s", exc)
