"""The recorder: sockets in, whole lines out. The imperative shell around
:mod:`convlog.core.ingest` and the segment writer (:mod:`convlog.store.writer`).

One thread does everything, in a loop: poll the SUB (and optional PULL) socket, drain
what libzmq has queued (up to a batch), turn each message into a line, write the batch
in one ``write``, and fsync per the policy. :class:`Recorder` composes the parts, each
in its module:

* :mod:`~convlog.recorder.loop` — the recording loop (poll, drain, timed work);
* :mod:`~convlog.recorder.receive` — the bus sockets and the drain of a batch;
* :mod:`~convlog.recorder.sequencer` — seqs and the recorder's own records;
* :mod:`~convlog.recorder.durable` — the durable writer (group commit, hold, retry, drop);
* :mod:`~convlog.recorder.snapshot` — ``recovery/state.json`` in the background;
* :mod:`~convlog.recorder.resume` — where a start continues (recovery, seqs, publishers);
* :mod:`~convlog.recorder.control_server` — answering the control channel;
* :mod:`~convlog.recorder.jobs` — the scheduled checkpoint and watchdog;
* :mod:`~convlog.recorder.status` — status and the metrics counters;
* :mod:`~convlog.recorder.reload` — enrichment rules reloaded while recording.

Stop (SIGTERM or SIGINT): stop polling for new work, keep draining what libzmq already
delivered until nothing arrives for 100 ms or ``drain_timeout_ms`` passes, write it,
fsync, write ``recorder.stop``, mark the state clean, exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from convlog.core.gaps import GapDetector
from convlog.core.ingest import Ingest
from convlog.recorder.config import Config, wildcard_bind
from convlog.recorder.control_server import ControlServer
from convlog.recorder.durable import DurableWriter, describe
from convlog.recorder.faults import Faults
from convlog.recorder.jobs import Jobs, checkpoint_summary
from convlog.recorder.loop import RecordingLoop
from convlog.recorder.notify import Notifier
from convlog.recorder.receive import Receiver
from convlog.recorder.reload import RuleReloads
from convlog.recorder.resume import restore_publishers, resume_point, start_data
from convlog.recorder.sealer import Sealer
from convlog.recorder.sequencer import Sequencer, error_text
from convlog.recorder.snapshot import StateSnapshots, take_snapshot
from convlog.recorder.status import Reporter
from convlog.store import modes
from convlog.store.clock import Clock
from convlog.store.heads import HeadSigner
from convlog.store.lock import LogLock
from convlog.store.signing import load_private_key
from convlog.store.writer import SegmentWriter

log = logging.getLogger("convlog.recorder")


class Recorder:
    """A recorder bound to one log directory.

    Args:
        config: validated settings (see :mod:`convlog.recorder.config`).
        reload_config: loads the configuration again as at start (same file,
            environment and flags). With it, and a configuration file, the recorder
            watches the file and applies changed enrichment rules while recording (see
            :mod:`convlog.recorder.reload`).

    Attributes:
        seq: seq of the last record written.
        received: messages received, by source.
        own_kinds, errors, gap_records, gap_missing: the recorder's own records since
            start (see :class:`~convlog.recorder.sequencer.Sequencer`).
        dropped_total: messages dropped past the held-bytes bound since start.
        metrics: the :class:`~convlog.recorder.metrics.MetricsServer` with ``metrics``, else None.
        loop: the receive loop; the other parts (``receiver``, ``sequencer``,
            ``durable``, ``snapshots``, ``control_server``, ``jobs``, ``reporter``,
            ``reloads``, ``faults``) are described in the module doc.
    """

    def __init__(self, config: Config, reload_config: Callable[[], Config] | None = None) -> None:
        self.directory = Path(config.dir)
        self.clock = Clock()
        # Gap detection needs every message of a stamped publisher: only when the
        # subscription is to everything (see convlog.core.gaps).
        self.ingest = Ingest(config.enricher(), config.session_fields, verify=tuple(config.topics) == ("",),
                             redactor=config.redactor())
        self.ingest.detector.max_publishers = config.max_publishers
        self.metrics: Any = None
        self.notifier = Notifier()
        self.faults = Faults()
        self.durable = DurableWriter(self.clock, config.held_bytes, self.faults)
        self.sequencer = Sequencer(self.clock, self.durable)
        self.receiver = Receiver(config, self.ingest, self.clock, self.sequencer, self.durable)
        self.snapshots = StateSnapshots(self.directory, self.faults, self._snapshot)
        self.jobs = Jobs(self.directory, config, self.notifier, self.faults)
        if config.sign_key is not None:  # (checked by load_config: it loads)
            self.jobs.signer = HeadSigner(self.directory, load_private_key(config.sign_key), self.clock)
        self.reporter = Reporter(config, self.directory, self.ingest, self.sequencer, self.durable,
                                 self.receiver, self.jobs, self.faults)
        self.control_server = ControlServer(self.directory, self.sequencer, self.durable, self.jobs,
                                            self.status, self.request_stop)
        self.control_server.redactor = self.ingest.redactor
        self.reloads = RuleReloads(config, reload_config, self.ingest, self.sequencer.append, self.durable)
        self.loop = RecordingLoop(config, self.directory, self.receiver, self.durable, self.sequencer,
                                  self.control_server, self.snapshots, self.reporter, self.jobs, self.faults,
                                  self.notifier, self.reloads.apply_pending)
        self.sealer = (Sealer(self.directory, config.compress_level, self.jobs.log_lock)
                       if config.compress == "zstd" else None)
        self._lock: LogLock | None = None

    # The state lives in the parts; these keep the Recorder's attributes.
    @property
    def config(self) -> Config:
        """The configuration in force (its enrichment rules change with a reload)."""
        return self.reloads.config

    @config.setter
    def config(self, value: Config) -> None:
        self.reloads.config = value

    @property
    def seq(self) -> int:
        """Seq of the last record written."""
        return self.sequencer.seq

    @seq.setter
    def seq(self, value: int) -> None:
        self.sequencer.seq = value

    received = property(lambda self: self.receiver.received, doc="Messages received since start, by source.")
    own_kinds = property(lambda self: self.sequencer.own_kinds, doc="Own records since start, by (kind, source).")
    errors = property(lambda self: self.sequencer.errors, doc="recorder.error records since start, by what failed.")
    gap_records = property(lambda self: self.sequencer.gap_records, doc="recorder.gap records since start.")
    gap_missing = property(lambda self: self.sequencer.gap_missing, doc="Messages named by those gap records.")
    dropped_total = property(lambda self: self.durable.dropped_total, doc="Messages dropped since start.")

    def request_stop(self, *_: Any) -> None:
        """Ask the loop to stop (safe to call from a signal handler; arguments ignored)."""
        self.loop.stopping = True

    def open(self) -> None:
        """Take the lock, recover the tail, open the writer, write ``recorder.start``.

        With ``metrics`` configured, the metrics endpoint starts once the lock is held.

        Raises:
            LogLockedError: when another recorder writes this directory.
            UnsafeSocketError: when the control socket's directory is not ours
                (:meth:`ControlServer.prepare`; nothing is written then).
            OSError: when the directory cannot be prepared, or the metrics address
                cannot be bound (nothing is written then).
        """
        # From here on everything this process creates has the configured modes
        # (convlog.store.modes), whatever umask it was started with.
        modes.apply(self.config.file_mode, self.config.dir_mode)
        self.control_server.prepare()
        self._lock = LogLock(self.directory, command=" ".join(sys.argv)).acquire()
        for what, address in (("the PULL endpoint", self.config.pull), ("the metrics endpoint", self.config.metrics)):
            if address and wildcard_bind(address):
                log.warning("%s %s listens on every interface: anyone who can reach this host can %s; bind "
                            "127.0.0.1 (or a trusted interface) unless that is intended", what, address,
                            "write into the log" if what.endswith("PULL endpoint") else "read its counters")
        if self.config.metrics:
            from convlog.recorder.metrics import serve

            try:
                self.metrics = serve(self, self.config.metrics)
            except OSError:
                self._lock.release()
                raise
            log.info("serving Prometheus metrics at %s", self.metrics.url)
        point = resume_point(self.directory, self.clock)
        report, lost, discarded = point.report, point.lost, point.discarded
        self.sequencer.seq = point.seq
        writer = self.durable.segment_writer = SegmentWriter(
            self.directory,
            next_seq=point.seq + 1,
            segment_bytes=self.config.segment_bytes,
            fsync=self.config.fsync,
            interval_ms=self.config.fsync_interval_ms,
            fresh=lost is not None,
            chain=self.config.chain,
        )
        if self.metrics is not None:
            writer.on_fsync = self.metrics.fsync.observe
        if point.checkpoints:
            self.jobs.checkpoint_at_start = checkpoint_summary(point.checkpoints[-1])
        self.snapshots.save(clean=False)  # before writing anything: a crash from here on is unclean
        try:
            self._restore_publishers(point.prior, report.last_seq)
        except Exception as exc:  # a damaged state or checkpoint must not stop the start
            log.exception("could not restore the publishers' seqs: starting with none")
            self.ingest.detector = GapDetector(max_publishers=self.config.max_publishers)
            discarded.append(f"publishers' seqs ({error_text(exc)})")
        if (report.last_seq and (not report.was_clean or report.reason)) or discarded or lost:
            self.sequencer.append("recorder.recovered", {**report.as_data(), "discarded": discarded, "lost": lost})
        self.reporter.mark_start()
        self.sequencer.append("recorder.start", start_data(self.config))
        writer.sync()
        self.snapshots.save(clean=False)

    def _restore_publishers(self, prior: dict[str, Any], last_seq: int) -> None:
        """Rebuild the publishers' last seqs (see :func:`convlog.recorder.resume.restore_publishers`);
        a gap found in the log whose ``recorder.gap`` record is missing is written now,
        marked ``restored``."""
        detector, unreported = restore_publishers(self.directory, prior, last_seq, self.config)
        self.ingest.detector = detector
        for gap in unreported:
            log.warning("publisher %s: gap seq %d..%d found in the log had no record: writing it",
                        gap.publisher, gap.first, gap.last)
            self.sequencer.append("recorder.gap", {**gap.as_data(), "restored": True})

    def _snapshot(self, clean: bool) -> dict[str, Any]:
        """The state snapshot now (recording thread): see :func:`convlog.recorder.snapshot.take_snapshot`."""
        assert self.durable.segment_writer is not None
        return take_snapshot(self.durable.segment_writer, self.clock, self.sequencer.seq, self.ingest.detector, clean)

    def record_error(self, what: str, exc: BaseException, about: int | None = None) -> None:
        """Write a ``recorder.error`` record (see :meth:`Sequencer.record_error`; never raises)."""
        self.sequencer.record_error(what, exc, about)

    def counters(self) -> dict[str, Any]:
        """A snapshot of the running counts since this start, for metrics; safe to call
        from another thread. Shape: :meth:`convlog.recorder.status.Reporter.counters`."""
        return self.reporter.counters()

    def records_by_kind(self) -> dict[str, int]:
        """Records written since start, by kind (messages and the recorder's own)."""
        return self.reporter.records_by_kind()

    def status(self) -> dict[str, Any]:
        """What ``convlog status`` shows, as JSON-friendly values (times in seconds).
        Shape and health rules: :meth:`convlog.recorder.status.Reporter.status`."""
        return self.reporter.status(self.metrics.url if self.metrics is not None else None)

    def run(self) -> int:
        """Record until asked to stop. Installs SIGTERM/SIGINT handlers when called
        from the main thread.

        Returns:
            the process exit code (0 after a clean stop).

        Raises:
            LogLockedError, OSError, zmq.ZMQError: at start, before anything is written.
        """
        if threading.current_thread() is threading.main_thread():
            # Before the lock and recovery, so a SIGTERM during start-up also ends in a
            # clean stop rather than the default action.
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        if self.durable.segment_writer is None:
            self.open()
        ctx = zmq.Context()
        sockets = self.receiver.open_sockets(ctx)
        # The job and watching threads start before this thread lowers its priority.
        self.jobs.start()
        if self.sealer is not None:
            self.sealer.start(self.durable.segment_writer)
        if self.config.retention_max_bytes is not None:
            # A size limit is checked as each finished segment is sealed (or, plain, as it
            # is finished), not only on the timer, so the log never outgrows it by much.
            if self.sealer is not None:
                self.sealer.after_seal = self.jobs.prune_soon
            else:
                self.durable.segment_writer.on_rotate = lambda _path: self.jobs.prune_soon()
        self.reloads.start()
        self.receiver.yield_to_network()
        self.loop.run(ctx, sockets)
        return self.close()

    def close(self) -> int:
        """Write ``recorder.stop``, fsync, mark the state clean and release the lock.

        Returns:
            0, or 1 when records held after failed writes could still not be written
            (they are lost; the error says which seqs) — the state is left unclean.
        """
        writer, durable = self.durable.segment_writer, self.durable
        if writer is None:
            return 0
        self.jobs.shutdown()
        self.reloads.stop()
        if self.sealer is not None:
            self.sealer.stop()
        if durable.held:
            durable.retry(self.sequencer.append)
        uptime = (time.time_ns() - self.reporter.started_ns) / 1e9
        if not durable.held:
            reason = "signal" if self.loop.stopping else "end"
            self.sequencer.append("recorder.stop", self.reporter.stop_data(reason, uptime))
        error = None
        if durable.held:
            error = durable.lost_text()
        else:
            try:
                writer.sync()
            except OSError as exc:
                error = f"the last fsync failed ({describe(exc)}): recent records may not be durable"
        if error is None:
            self.snapshots.save(clean=True)
            self.jobs.checkpoint()
        with contextlib.suppress(OSError):
            writer.close()
        durable.segment_writer = None
        self.snapshots.close()
        if self._lock is not None:
            self._lock.release()
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if error is not None:
            log.error("stopping uncleanly: %s", error)
            return 1
        log.info(
            "stopped cleanly at seq %d after %.1f s (%s)",
            self.seq, uptime, ", ".join(f"{k}={v}" for k, v in self.received.items()) or "nothing received",
        )
        return 0


def configure_logging(level: str = "INFO") -> None:
    """Plain ``LEVEL name: message`` lines on stderr, as journald expects.

    Args:
        level: a :mod:`logging` level name, e.g. ``"INFO"``.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("convlog")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
