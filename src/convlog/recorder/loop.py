"""The recording loop: one thread polls the bus sockets, the control socket and the
socket monitor, drains what libzmq has queued, writes it, and between batches does the
timed work (group commit, retry of held writes, segment check, state snapshot).

After a drain that emptied the queue it pauses briefly (:data:`BATCH_PAUSE_S`) so a
steady trickle is handled in batches. At stop it keeps draining what libzmq already
delivered (see :meth:`convlog.recorder.receive.Receiver.drain_at_stop`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from convlog.recorder.config import Config
from convlog.recorder.control_server import ControlServer
from convlog.recorder.durable import DurableWriter
from convlog.recorder.faults import Faults
from convlog.recorder.jobs import Jobs
from convlog.recorder.notify import Notifier
from convlog.recorder.receive import BATCH_MESSAGES, Receiver
from convlog.recorder.sequencer import Sequencer
from convlog.recorder.snapshot import StateSnapshots
from convlog.recorder.status import Reporter

log = logging.getLogger("convlog.recorder")

#: Pause after a drain that emptied the queue, seconds: at a steady trickle this turns
#: one wake-up (poll, exception, write) per message into one per batch. It adds at most
#: this much latency; libzmq keeps receiving meanwhile. Not used with fsync "always".
BATCH_PAUSE_S = 0.005
#: Pause after an unexpected error in the recording loop, seconds (no busy loop of errors).
LOOP_ERROR_PAUSE_S = 0.05


class RecordingLoop:
    """Runs the recorder's parts on the recording thread until asked to stop.

    Args:
        config: the recorder's settings (``state_interval_ms``, endpoints for the log).
        directory: the log directory (for the start message).
        parts: the recorder's receiver, durable writer, sequencer, control server,
            snapshots, reporter, jobs, faults and notifier.
        between_batches: called once per iteration on the recording thread, for work
            queued by other threads (rules reloads).

    Attributes:
        stopping: set (e.g. from a signal handler) to end the loop.
    """

    def __init__(
        self, config: Config, directory: Path, receiver: Receiver, durable: DurableWriter, sequencer: Sequencer,
        control_server: ControlServer, snapshots: StateSnapshots, reporter: Reporter, jobs: Jobs, faults: Faults,
        notifier: Notifier, between_batches: Callable[[], None],
    ) -> None:
        self.config = config
        self.directory = directory
        self.receiver = receiver
        self.durable = durable
        self.sequencer = sequencer
        self.control_server = control_server
        self.snapshots = snapshots
        self.reporter = reporter
        self.jobs = jobs
        self.faults = faults
        self.notifier = notifier
        self.between_batches = between_batches
        self.stopping = False

    def write_job_records(self) -> None:
        """Write the records the job thread handed over (``recorder.pruned``), make them
        durable, and tell the waiting job."""
        records = self.jobs.records
        while records:
            kind, data, written = records.popleft()
            self.sequencer.append(kind, data)
            writer = self.durable.segment_writer
            if writer is not None and not self.durable.held:
                writer.sync()
            written.set()

    def run(self, ctx: zmq.Context, sockets: list[tuple[zmq.Socket, str]]) -> None:
        """Bind the control socket, record until :attr:`stopping`, drain, then close the
        sockets and terminate ``ctx``. An error in one iteration is written as a
        ``recorder.error`` record and the loop goes on.

        Args:
            ctx: the context of the bus sockets (the control socket is made in it too).
            sockets: ``[(socket, source)]`` from :meth:`Receiver.open_sockets`.

        Raises:
            OSError, zmq.ZMQError: when the control socket cannot be bound.
        """
        writer, durable, receiver, faults = self.durable.segment_writer, self.durable, self.receiver, self.faults
        control_server, sequencer, config = self.control_server, self.sequencer, self.config
        assert writer is not None
        poller = zmq.Poller()
        for sock, _ in sockets:
            poller.register(sock, zmq.POLLIN)
        control_sock = control_server.bind(ctx)
        poller.register(control_sock, zmq.POLLIN)
        monitor = receiver.monitor
        if monitor is not None:
            poller.register(monitor, zmq.POLLIN)
        self.notifier.ready(f"recording {', '.join(config.sub)} into {self.directory}, seq from {sequencer.seq + 1}")
        log.info(
            "recording %s%s into %s (fsync=%s, seq from %d)",
            ", ".join(config.sub), f" and PULL {config.pull}" if config.pull else "",
            self.directory, config.fsync, sequencer.seq + 1,
        )
        state_every_ns = config.state_interval_ms * 1_000_000
        pause_s = 0.0 if writer.policy == "always" else BATCH_PAUSE_S
        next_state = time.monotonic_ns() + state_every_ns
        # The live segment is compared with its path once per fsync interval.
        check_every_ns = writer.interval_ns
        next_check = time.monotonic_ns() + check_every_ns
        saved_position = writer.position()
        append = sequencer.append
        try:
            while not self.stopping:
                try:
                    due = writer.due_ns()
                    timeout_ms = 200 if due is None else max(1, due // 1_000_000)
                    if durable.held:
                        timeout_ms = min(timeout_ms, max(1, int((durable.next_retry - time.monotonic()) * 1000)))
                    ready = dict(poller.poll(timeout_ms))
                    drained = 0
                    if durable.held and time.monotonic() >= durable.next_retry:
                        durable.retry(append)
                    take = receiver.drop if durable.full else receiver.drain
                    for sock, source in sockets:
                        if sock in ready:
                            drained = max(drained, take(sock, source, BATCH_MESSAGES))
                    if control_sock in ready:
                        control_server.serve()
                    control_server.send_replies()
                    self.between_batches()
                    while faults.thread_errors:
                        sequencer.record_error(*faults.thread_errors.popleft())
                    if self.jobs.records:
                        self.write_job_records()
                    if monitor is not None and monitor in ready:
                        receiver.connection_events()
                    durable.sync_if_due()
                    if time.monotonic_ns() >= next_check:
                        next_check = time.monotonic_ns() + check_every_ns
                        if durable.check_segment(append):
                            self.snapshots.save_soon()
                    if 0 < drained < BATCH_MESSAGES and pause_s:
                        # The queue ran dry: let messages gather for a moment so the next
                        # wake-up takes a batch (one poll and one write for many records).
                        time.sleep(pause_s)
                    now = time.monotonic_ns()
                    self.jobs.loop_tick = now / 1e9
                    if now >= next_state:
                        next_state = now + state_every_ns
                        self.reporter.sample_rate(now / 1e9)
                        position = writer.position()
                        if position != saved_position or "state" in faults.file_errors:
                            self.snapshots.save_soon()
                            saved_position = position
                except Exception as exc:  # one failure is recorded; the loop goes on
                    sequencer.record_error("the recording loop", exc)
                    time.sleep(LOOP_ERROR_PAUSE_S)
            self.notifier.stopping("draining, then writing the final checkpoint")
            receiver.drain_at_stop()
        finally:
            receiver.close_sockets()
            control_server.close()
            ctx.term()
