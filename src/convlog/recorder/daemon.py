"""The recorder: sockets in, whole lines out. The imperative shell around
:mod:`convlog.core.ingest` and :mod:`convlog.store.log`.

One thread does everything, in a loop: poll the SUB (and optional PULL) socket, drain
what libzmq has queued (up to a batch), turn each message into a line, write the batch
in one ``write``, and fsync per the policy. Bursts wait in libzmq's I/O thread, which
keeps reading from the network into the SUB socket's queue (its receive high-water
mark, default 1,000,000 messages) while this thread writes; see the ZeroMQ guide,
chapter 2, "High-Water Marks". This thread runs at a lower priority than the I/O
thread (``processing_nice``) so that, on shared cores, reading the network wins over
turning the queue into records; after emptying the queue it pauses briefly
(:data:`BATCH_PAUSE_S`) so a steady trickle is handled in batches.

Stop (SIGTERM or SIGINT): stop polling for new work, keep draining what libzmq already
delivered until nothing arrives for 100 ms or ``drain_timeout_ms`` passes, write it,
fsync, write ``recorder.stop``, mark the state clean, exit 0.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zmq

from convlog import __version__
from convlog.bus import control
from convlog.core.gaps import Gap, GapDetector
from convlog.core.ingest import Ingest
from convlog.core.record import MAX_WIRE_INT, make_line, with_meta
from convlog.recorder.config import Config
from convlog.recorder.notify import Notifier
from convlog.store.checkpoint import Checkpointer, CheckpointError, checkpoint_name, list_checkpoints, publishers_start
from convlog.store.clock import Clock
from convlog.store.log import (
    CHECKPOINTS,
    EVENTS,
    RECOVERY,
    STATE_FILE,
    LogLock,
    SegmentWriter,
    find_record,
    follow,
    iter_records,
    last_seq_in,
    list_segments,
    read_state,
    recover,
    segment_first_seq,
    write_state,
)

log = logging.getLogger("convlog.recorder")

_NOBLOCK = int(zmq.NOBLOCK)
#: Messages taken from one socket before the batch is written.
BATCH_MESSAGES = 1024
#: Pause after a drain that emptied the queue, seconds: at a steady trickle this turns
#: one wake-up (poll, exception, write) per message into one per batch. It adds at most
#: this much latency; libzmq keeps receiving meanwhile. Not used with fsync "always".
BATCH_PAUSE_S = 0.005
#: Retry of failed writes: first after this many seconds, doubling up to the maximum.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
#: Quiet time that ends the drain at stop, milliseconds.
DRAIN_QUIET_MS = 100
#: Control requests answered per loop iteration (the rest wait for the next one).
CONTROL_BATCH = 16
#: Window of the rate reported by ``status``, seconds.
RATE_WINDOW_S = 60.0
#: Pause after an unexpected error in the recording loop, seconds (no busy loop of errors).
LOOP_ERROR_PAUSE_S = 0.05
#: Longest text of an exception kept in a ``recorder.error`` record, characters.
ERROR_TEXT_CHARS = 500


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
    """

    def __init__(self, config: Config, reload_config: Callable[[], Config] | None = None) -> None:
        self.config = config
        self._reload_config = reload_config
        self._rules_watcher: Any = None
        self._reloads: collections.deque[Any] = collections.deque()  # convlog.recorder.reload.Reload, from its thread
        self.directory = Path(config.dir)
        self.clock = Clock()
        # Gap detection needs every message of a stamped publisher: only when the
        # subscription is to everything (see convlog.core.gaps).
        self.ingest = Ingest(config.enricher(), config.session_fields, verify=tuple(config.topics) == ("",))
        self.ingest.detector.max_publishers = config.max_publishers
        self.seq = 0
        self.received: dict[str, int] = {}
        # Records the recorder writes itself (recorder.*, control), by (kind, source),
        # and totals since start for metrics: gap records and the messages they name,
        # messages dropped past the held-bytes bound.
        self.own_kinds: dict[tuple[str, str], int] = {}
        self.gap_records = 0
        self.gap_missing = 0
        self.dropped_total = 0
        self._stop = False
        self._ctx: zmq.Context | None = None
        self._writer: SegmentWriter | None = None
        self._lock: LogLock | None = None
        self._started_ns = 0
        self._scheduler: Any = None
        # Disk faults: records held while writes fail, and messages dropped past the bound.
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._held_seq = 0
        self._degraded: dict[str, Any] | None = None
        self._dropped: dict[str, Any] | None = None
        self._backoff_s = RETRY_FIRST_S
        self._next_retry = 0.0
        # Status: wall time of the newest record received, monotonic time of the last
        # message from the bus and of the last loop iteration, rate samples, endpoints.
        self._newest_ts: str | None = None
        self._last_bus = 0.0
        self._loop_tick = time.monotonic()
        self._rate: collections.deque[tuple[float, int]] = collections.deque()
        self._connected: dict[str, bool] = {endpoint: False for endpoint in config.sub}
        self._start_seq = 0
        self._started_mono = time.monotonic()
        self._last_checkpoint: dict[str, Any] | None = None
        self._checkpoint_at_start: dict[str, Any] | None = None  # the newest one when opened
        self.metrics: Any = None  # convlog.recorder.metrics.MetricsServer with --metrics
        # Control channel: replies finished by other threads (a checkpoint), sent by the loop.
        self._control: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._replies: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self.notifier = Notifier()
        # Faults that make status unhealthy until they clear: recovery files that cannot
        # be written (by file), and segments that went away under the writer (until a
        # restart). Errors caught and recorded as recorder.error records, by what failed.
        self._file_errors: dict[str, str] = {}
        self._lost_segments: list[dict[str, Any]] = []
        self.errors: dict[str, int] = {}
        # Failures in other threads (state writer, checkpoint job), written as
        # recorder.error records by the recording loop: (what, exception).
        self._thread_errors: collections.deque[tuple[str, BaseException]] = collections.deque()
        # state.json is written by one background thread from a snapshot taken here.
        self._state_pool: Any = None
        self._state_future: Any = None

    def request_stop(self, *_: Any) -> None:
        """Ask the loop to stop (safe to call from a signal handler)."""
        self._stop = True

    # -- set-up ---------------------------------------------------------------------------

    def open(self) -> None:
        """Take the lock, recover the tail, open the writer, write ``recorder.start``.

        With ``metrics`` configured, the metrics endpoint starts once the lock is held.

        Raises:
            LogLockedError: when another recorder writes this directory.
            OSError: when the directory cannot be prepared, or the metrics address
                cannot be bound (nothing is written then).
        """
        self._lock = LogLock(self.directory, command=" ".join(sys.argv)).acquire()
        if self.config.metrics:
            from convlog.recorder.metrics import serve

            try:
                self.metrics = serve(self, self.config.metrics)
            except OSError:
                self._lock.release()
                raise
            log.info("serving Prometheus metrics at %s", self.metrics.url)
        discarded: list[str] = []
        prior = self._usable_state(discarded)
        report = recover(self.directory, self.clock)
        if report.reason:
            log.warning(
                "recovered %s: moved %d bytes (%d lines) to quarantine: %s",
                report.segment, report.quarantined_bytes, report.quarantined_lines, report.reason,
            )
        infos = list_checkpoints(self.directory)
        # seq never repeats: continue after the highest seq ever written, whether the log,
        # the state or a checkpoint knows it (records after the log's end were lost).
        # (a checkpoint counts when its header holds a cut: a stray file's name alone does not)
        cut_seqs = [info.seq for info in infos if info.ts is not None]
        known = [v for v in (prior.get("written_seq"), prior.get("durable_seq"), *cut_seqs[-1:])
                 if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_WIRE_INT]
        high = max([report.last_seq, *known])
        lost = [report.last_seq + 1, high] if high > report.last_seq else None
        if lost:
            log.error("the log ends at seq %d but seq %d was written before: records %d..%d are lost; "
                      "continuing at seq %d", report.last_seq, high, lost[0], lost[1], high + 1)
        self.seq = high
        if report.last_seq:
            with contextlib.suppress(OSError, ValueError):  # the floor is a nicety: never a reason not to start
                last = find_record(self.directory, report.last_seq)
                if last is not None:
                    self.clock.floor(str(last.get("ts")))
        self._writer = SegmentWriter(
            self.directory,
            next_seq=self.seq + 1,
            segment_bytes=self.config.segment_bytes,
            fsync=self.config.fsync,
            interval_ms=self.config.fsync_interval_ms,
            fresh=lost is not None,
        )
        if self.metrics is not None:
            self._writer.on_fsync = self.metrics.fsync.observe
        if infos:
            self._checkpoint_at_start = {"file": infos[-1].path.name, "seq": infos[-1].seq,
                                         "created": infos[-1].created, "label": infos[-1].label}
        self._save_state(clean=False)  # before writing anything: a crash from here on is unclean
        try:
            self._restore_publishers(prior, report.last_seq)
        except Exception as exc:  # a damaged state or checkpoint must not stop the start
            log.exception("could not restore the publishers' seqs: starting with none")
            self.ingest.detector = GapDetector(max_publishers=self.config.max_publishers)
            discarded.append(f"publishers' seqs ({_error_text(exc)})")
        if (report.last_seq and (not report.was_clean or report.reason)) or discarded or lost:
            self._append_own("recorder.recovered", {**report.as_data(), "discarded": discarded, "lost": lost})
        self._start_seq = self.seq
        self._started_ns = time.time_ns()
        self._started_mono = time.monotonic()
        self._append_own("recorder.start", self._start_data())
        self._writer.sync()
        self._save_state(clean=False)

    def _usable_state(self, discarded: list[str]) -> dict[str, Any]:
        """``recovery/state.json`` when it can be used; an unreadable one is renamed
        aside (``state.json.unusable-<ns>``, never deleted), noted in ``discarded``, and
        the start goes on without it (from checkpoints and the log)."""
        path = self.directory / RECOVERY / STATE_FILE
        prior = read_state(self.directory)
        if prior is not None or not path.exists():
            return prior or {}
        aside = path.with_name(f"{STATE_FILE}.unusable-{time.time_ns()}")
        try:
            os.replace(path, aside)
        except OSError as exc:
            log.error("cannot move the unusable %s aside: %s", path, exc)
            aside = path
        log.error("%s is not a JSON object: kept as %s; rebuilding from checkpoints and the log", path, aside.name)
        discarded.append(f"{STATE_FILE} (unreadable, kept as {aside.name})")
        return {}

    def _restore_publishers(self, prior: dict[str, Any], last_seq: int) -> None:
        """Rebuild the publishers' last seqs: the snapshot in state.json (or in the newest
        checkpoint, when that one is newer), then the stamps of the records written after
        it, so messages sent while this recorder was down are reported as gaps by the
        first message after the restart. A gap those records reveal whose
        ``recorder.gap`` record is missing (a crash between the two lines) is written
        now, marked ``restored``."""
        detector = GapDetector.from_dict(prior.get("publishers"), self.config.max_publishers)
        as_of = prior.get("publishers_seq")
        as_of = as_of if isinstance(as_of, int) and 0 <= as_of <= last_seq else 0
        if isinstance(prior.get("publishers_seq"), int) and prior["publishers_seq"] > last_seq:
            log.warning(
                "state.json knew records up to seq %d but the log ends at %d: records were lost "
                "(power failure with fsync=%s?)", prior["publishers_seq"], last_seq, self.config.fsync,
            )
        segment, offset = prior.get("segment"), prior.get("written_offset")
        path = self.directory / EVENTS / str(segment)
        if (
            as_of == prior.get("written_seq") and isinstance(offset, int)
            and path.is_file() and path.stat().st_size >= offset
        ):
            # Only what was written after the snapshot (nothing, after a clean stop).
            tail: Any = (record for record, _, _ in follow(self.directory, (path.name, offset)))
        elif (found := publishers_start(self.directory, last_seq)) is not None and found[2] > as_of:
            # No usable state.json (a crash before it was first written, a lost file):
            # the newest checkpoint's snapshot, then only the records after its cut.
            detector, position, as_of = found
            detector.max_publishers = self.config.max_publishers
            tail = (record for record, _, _ in follow(self.directory, position))
        else:
            tail = iter_records(self.directory, start_seq=as_of + 1)
        unreported = detector.replay(record for record in tail if record["seq"] > as_of)
        self.ingest.detector = detector
        for gap in unreported:
            log.warning("publisher %s: gap seq %d..%d found in the log had no record: writing it",
                        gap.publisher, gap.first, gap.last)
            self._append_own("recorder.gap", {**gap.as_data(), "restored": True})

    def _start_data(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "zmq": zmq.zmq_version(),
            "pyzmq": zmq.__version__,
            "endpoints": {"sub": list(self.config.sub), "pull": self.config.pull},
            "config": self.config.summary(),
        }

    def _append_own(
        self, kind: str, data: dict[str, Any], source: str = "recorder", session: str | None = None
    ) -> None:
        assert self._writer is not None
        line = make_line(self.seq + 1, self.clock.now(), kind, source, None, session, data)
        self.seq += 1
        self._count_own(kind, source)
        self._write(line, self.seq)

    def _error_line(self, seq: int, what: str, exc: BaseException, about: int | None) -> bytes:
        """The ``recorder.error`` record for something that failed and was got over."""
        self._count_own("recorder.error", "recorder")
        self.errors[what] = self.errors.get(what, 0) + 1
        log.error("%s failed (seq %s): %s", what, about, _error_text(exc))
        return make_line(seq, self.clock.now(), "recorder.error", "recorder", None, None,
                         {"what": what, "error": _error_text(exc), "seq": about})

    def record_error(self, what: str, exc: BaseException, about: int | None = None) -> None:
        """Write a ``recorder.error`` record: ``what`` failed with ``exc`` (about record
        ``about``, if any) and the recorder went on. Never raises: when even that record
        cannot be made, the error is only logged.

        Args:
            what: what was being done, e.g. ``"control request"``.
            exc: the exception caught.
            about: the seq of the record involved, or None.
        """
        try:
            line = self._error_line(self.seq + 1, what, exc, about)
            self.seq += 1
            self._write(line, self.seq)
        except Exception:
            log.exception("could not record an error of %s", what)

    def _count_own(self, kind: str, source: str) -> None:
        key = (kind, source)
        self.own_kinds[key] = self.own_kinds.get(key, 0) + 1

    def counters(self) -> dict[str, Any]:
        """A snapshot of the running counts, for metrics (safe to call from another
        thread: each dict is copied in one C-level step).

        Returns:
            ``{"records": {(kind, source): n}, "received": {source: n}, "bytes_written",
            "gap_records", "gap_missing", "dropped", "last_seq", "newest_ts" (RFC 3339 or
            None), "checkpoint_created" (RFC 3339 or None), "held_bytes", "degraded"
            (bool), "publishers_known", "started_ns"}``; counts since this start.
        """
        writer = self._writer
        checkpoint = self._last_checkpoint or self._checkpoint_at_start
        return {
            "records": self._records(),
            "received": self.received.copy(),
            "bytes_written": writer.bytes_written if writer else 0,
            "gap_records": self.gap_records,
            "gap_missing": self.gap_missing,
            "dropped": self.dropped_total,
            "last_seq": self.seq,
            "newest_ts": self._newest_ts,
            "checkpoint_created": checkpoint["created"] if checkpoint else None,
            "held_bytes": self._held_bytes,
            "degraded": self._degraded is not None,
            "publishers_known": len(self.ingest.detector.publishers),
            "started_ns": self._started_ns,
        }

    def _records(self) -> dict[tuple[str, str], int]:
        """Records written since start by ``(kind, source)``: messages and the recorder's own."""
        records = self.ingest.kinds.copy()
        for key, n in self.own_kinds.copy().items():
            records[key] = records.get(key, 0) + n
        return records

    def records_by_kind(self) -> dict[str, int]:
        """Records written since start, by kind (messages and the recorder's own)."""
        out: dict[str, int] = {}
        for (kind, _source), n in self._records().items():
            out[kind] = out.get(kind, 0) + n
        return dict(sorted(out.items()))

    def _state_snapshot(self, clean: bool) -> dict[str, Any]:
        """What ``recovery/state.json`` gets now (taken on the recording thread)."""
        assert self._writer is not None
        # The detector has seen every record up to self.seq; those not written yet (held
        # while writes fail) make publishers_seq differ from written_seq, and the
        # restore then reads the log by seq instead of from the written offset.
        return self._writer.state_fields(
            clean, self.clock.now(),
            {"publishers_seq": self.seq, "publishers": self.ingest.detector.to_dict()},
        )

    def _save_state(self, clean: bool) -> None:
        """Write ``recovery/state.json`` now, on this thread (at start and stop), after
        any write still running in the background."""
        if self._state_future is not None:
            self._state_future.result()
        self._store_state(self._state_snapshot(clean))

    def _save_state_soon(self) -> None:
        """Write ``recovery/state.json`` in the background: the snapshot is taken here,
        the serialising, fsync and rename happen in the state thread, so the recording
        thread never waits for the disk. Skipped while the previous write still runs."""
        if self._state_future is not None and not self._state_future.done():
            return
        if self._state_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._state_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convlog-state")
        self._state_future = self._state_pool.submit(self._store_state, self._state_snapshot(False))

    def _store_state(self, snapshot: dict[str, Any]) -> None:
        """Write a state snapshot; a failure is logged once and makes status unhealthy
        until a later write succeeds."""
        try:
            write_state(self.directory, snapshot)
        except Exception as exc:
            if "state" not in self._file_errors:
                log.error("cannot write %s/%s/%s: %s", self.directory, RECOVERY, STATE_FILE, _error_text(exc))
                self._thread_errors.append((f"writing recovery/{STATE_FILE}", exc))
            self._file_errors["state"] = f"recovery/{STATE_FILE} cannot be written: {_error_text(exc)}"
        else:
            if self._file_errors.pop("state", None) is not None:
                log.warning("recovery/%s written again", STATE_FILE)

    def _sockets(self) -> list[tuple[zmq.Socket, str]]:
        self._ctx = zmq.Context()
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, self.config.rcvhwm)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RECONNECT_IVL, 100)
        sub.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sub.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        sub.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
        for prefix in self.config.topics:
            sub.setsockopt(zmq.SUBSCRIBE, prefix.encode("utf-8"))
        # Connection events of the SUB socket, for status (which endpoints are connected).
        self._monitor = sub.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        for endpoint in self.config.sub:
            sub.connect(endpoint)
        sockets = [(sub, "sub")]
        if self.config.pull:
            pull = self._ctx.socket(zmq.PULL)
            pull.setsockopt(zmq.RCVHWM, self.config.rcvhwm)
            pull.setsockopt(zmq.LINGER, 0)
            pull.bind(self.config.pull)
            sockets.append((pull, "pull"))
        return sockets

    # -- disk faults -----------------------------------------------------------------------

    def _write(self, data: bytes, last_seq: int) -> None:
        """Write whole lines, or hold them in memory while writes fail (in order: once
        anything is held, later lines queue behind it until :meth:`_retry` succeeds)."""
        if not self._held:
            try:
                self._writer.write(data, last_seq)  # type: ignore[union-attr]
                return
            except OSError as exc:
                self._degraded = {"since": self.clock.now(), "error": _describe(exc), "retries": 0,
                                  "first_seq": last_seq - data.count(b"\n") + 1}
                self._backoff_s = RETRY_FIRST_S
                self._next_retry = time.monotonic() + self._backoff_s
                log.error(
                    "cannot write to %s (%s): holding records in memory (up to %d bytes) and retrying",
                    self._writer.segment, _describe(exc), self.config.held_bytes,  # type: ignore[union-attr]
                )
        self._held.append(data)
        self._held_bytes += len(data)
        self._held_seq = last_seq

    def _retry(self) -> None:
        """Try to write what is held; on success write ``recorder.degraded`` (and
        ``recorder.dropped``) records saying what happened."""
        assert self._writer is not None and self._degraded is not None
        try:
            self._writer.write(b"".join(self._held), self._held_seq)
        except OSError as exc:
            self._degraded["retries"] += 1
            self._degraded["error"] = _describe(exc)
            self._backoff_s = min(self._backoff_s * 2, RETRY_MAX_S)
            self._next_retry = time.monotonic() + self._backoff_s
            log.warning(
                "still cannot write (%s): %d records (%d bytes) held%s; next try in %.1f s", _describe(exc),
                self._held_seq - self._degraded["first_seq"] + 1, self._held_bytes,
                f", {self._dropped['messages']} messages dropped" if self._dropped else "", self._backoff_s,
            )
            return
        degraded, dropped = self._degraded, self._dropped
        degraded.update(until=self.clock.now(), held_records=self._held_seq - degraded["first_seq"] + 1,
                        held_bytes=self._held_bytes, last_seq=self._held_seq)
        self._held.clear()
        self._held_bytes = 0
        self._degraded = self._dropped = None
        log.warning("writing again: %d held records written", degraded["held_records"])
        self._append_own("recorder.degraded", degraded)
        if dropped is not None:
            dropped["until"] = degraded["until"]
            self._append_own("recorder.dropped", dropped)
            log.error("%d messages were dropped while writes failed (held bytes at the bound)", dropped["messages"])

    def _drop(self, sock: zmq.Socket, source: str, limit: int) -> int:
        """Receive up to ``limit`` messages and drop them, counting (the held bytes are at
        their bound). They get no seq, so seq stays gapless; a ``recorder.dropped``
        record counts them once writes succeed again."""
        count = 0
        while count < limit:
            try:
                sock.recv_multipart(_NOBLOCK)
            except zmq.Again:
                break
            count += 1
        if count:
            if self._dropped is None:
                self._dropped = {"messages": 0, "bytes_bound": self.config.held_bytes, "since": self.clock.now(),
                                 "after_seq": self.seq, "by_source": {}}
            self._dropped["messages"] += count
            self.dropped_total += count
            by_source = self._dropped["by_source"]
            by_source[source] = by_source.get(source, 0) + count
            self.received[source] = self.received.get(source, 0) + count
        return count

    def _sync_if_due(self) -> None:
        """Group commit when due; a failed fsync or rotation is logged, makes status
        unhealthy, and is retried at the next one."""
        writer = self._writer
        assert writer is not None
        try:
            synced = writer.maybe_sync()
        except OSError as exc:
            writer.last_error = exc
            synced = False
        if writer.last_error is not None:
            text = _describe(writer.last_error)
            if "segment" not in self._file_errors:
                log.error("fsync/rotation of %s failed: %s (retrying)", writer.segment, text)
            self._file_errors["segment"] = f"fsync or rotation of {writer.segment.name} failed: {text}"
            writer.last_error = None
        elif synced and self._file_errors.pop("segment", None) is not None:
            log.warning("fsync of %s works again", writer.segment.name)

    def _check_segment(self) -> None:
        """Notice a segment deleted, replaced or truncated under the writer (compares the
        open file with the path, once per fsync interval): start a fresh segment at the
        next seq, write ``recorder.degraded`` naming the records lost, and keep status
        unhealthy until a restart acknowledges it."""
        writer = self._writer
        assert writer is not None
        problem = writer.check_file()
        if problem is None:
            return
        old = writer.segment
        first = segment_first_seq(old.name) or 0
        lost_first = first
        if problem.startswith("truncated"):
            with contextlib.suppress(OSError, ValueError):
                lost_first = max(first, last_seq_in(old) + 1)
        lost = [lost_first, writer.written_seq] if lost_first <= writer.written_seq else None
        try:
            writer.restart_segment()
        except OSError as exc:
            self._file_errors["segment"] = f"{old.name} was {problem} and no new segment can be made: {_describe(exc)}"
            return
        event = {"reason": f"segment {problem} under the recorder", "segment": old.name, "problem": problem,
                 "lost": lost, "lost_records": lost[1] - lost[0] + 1 if lost else 0, "since": self.clock.now(),
                 "new_segment": writer.segment.name}
        self._lost_segments.append(event)
        log.error("segment %s was %s under the recorder: records %s lost; writing on in %s", old.name, problem,
                  f"{lost[0]}..{lost[1]}" if lost else "none", writer.segment.name)
        self._append_own("recorder.degraded", event)
        self._save_state_soon()

    # -- the loop -------------------------------------------------------------------------

    def _gap_line(self, gap: Gap, seq: int) -> bytes:
        """The ``recorder.gap`` record for a gap, logged as a warning too."""
        log.warning(
            "publisher %s: %d message(s) missing (seq %d..%d)", gap.publisher, gap.last - gap.first + 1,
            gap.first, gap.last,
        )
        self._count_own("recorder.gap", "recorder")
        self.gap_records += 1
        self.gap_missing += gap.last - gap.first + 1
        return make_line(seq, self.clock.now(), "recorder.gap", "recorder", None, None, gap.as_data())

    def _drain(self, sock: zmq.Socket, source: str, limit: int) -> int:
        """Receive up to ``limit`` queued messages from ``sock`` and write them."""
        writer = self._writer
        assert writer is not None
        line = self.ingest.line
        gaps = self.ingest.gaps
        clock = self.clock
        stamp = clock.now
        first = seq = self.seq
        last = seq + limit
        own = 0  # recorder.gap records written among the messages
        lines: list[bytes] = []
        # Write early when the batch reaches the segment limit, so rotation happens at
        # the first record boundary past it; under "always" every record is written
        # (and fsynced) on its own.
        room = 0 if writer.policy == "always" else writer.segment_bytes - writer.offset
        pending = 0
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
                data = self.ingest.fallback_line(frames, seq, ts, source, _error_text(exc))
                lines.append(data)
                pending += len(data)
                seq += 1
                own += 1
                data = self._error_line(seq, "decoding a message", exc, seq - 1)
            if clock.step_ns:
                data = with_meta(data, "clock_step_s", clock.step_ns / 1e9)
                log.warning("the wall clock went back %.6f s: record times hold at the last one until it catches up",
                            clock.step_ns / 1e9)
                clock.step_ns = 0
            lines.append(data)
            pending += len(data)
            if gaps:
                for gap in gaps:
                    seq += 1
                    own += 1
                    data = self._gap_line(gap, seq)
                    lines.append(data)
                    pending += len(data)
                gaps.clear()
            if pending >= room:
                self._write(b"".join(lines), seq)
                lines.clear()
                pending = 0
                room = 0 if writer.policy == "always" else writer.segment_bytes - writer.offset
        if lines:
            self._write(b"".join(lines), seq)
        self.seq = seq
        count = seq - first - own
        if count:
            self.received[source] = self.received.get(source, 0) + count
            self._newest_ts = ts
            self._last_bus = time.monotonic()
        return count

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
        if self._writer is None:
            self.open()
        writer = self._writer
        assert writer is not None
        sockets = self._sockets()
        self._start_jobs()
        self._watch_rules()
        self._yield_to_network()
        poller = zmq.Poller()
        for sock, _ in sockets:
            poller.register(sock, zmq.POLLIN)
        control_sock = self._bind_control()
        poller.register(control_sock, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        self.notifier.ready(f"recording {', '.join(self.config.sub)} into {self.directory}, seq from {self.seq + 1}")
        log.info(
            "recording %s%s into %s (fsync=%s, seq from %d)",
            ", ".join(self.config.sub),
            f" and PULL {self.config.pull}" if self.config.pull else "",
            self.directory, self.config.fsync, self.seq + 1,
        )
        state_every_ns = self.config.state_interval_ms * 1_000_000
        pause_s = 0.0 if writer.policy == "always" else BATCH_PAUSE_S
        next_state = time.monotonic_ns() + state_every_ns
        # The live segment is compared with its path once per fsync interval.
        check_every_ns = writer.interval_ns
        next_check = time.monotonic_ns() + check_every_ns
        saved_position = writer.position()
        try:
            while not self._stop:
                try:
                    due = writer.due_ns()
                    timeout_ms = 200 if due is None else max(1, due // 1_000_000)
                    if self._held:
                        timeout_ms = min(timeout_ms, max(1, int((self._next_retry - time.monotonic()) * 1000)))
                    ready = dict(poller.poll(timeout_ms))
                    drained = 0
                    if self._held and time.monotonic() >= self._next_retry:
                        self._retry()
                    full = self._held_bytes >= self.config.held_bytes
                    for sock, source in sockets:
                        if sock in ready:
                            take = self._drop if full else self._drain
                            drained = max(drained, take(sock, source, BATCH_MESSAGES))
                    if control_sock in ready:
                        self._serve_control(control_sock)
                    while self._replies:
                        control_sock.send_multipart([*self._replies.popleft()])
                    while self._reloads:
                        self._apply_reload(self._reloads.popleft())
                    while self._thread_errors:
                        self.record_error(*self._thread_errors.popleft())
                    if self._monitor is not None and self._monitor in ready:
                        self._connection_events()
                    self._sync_if_due()
                    if time.monotonic_ns() >= next_check:
                        next_check = time.monotonic_ns() + check_every_ns
                        self._check_segment()
                    if 0 < drained < BATCH_MESSAGES and pause_s:
                        # The queue ran dry: let messages gather for a moment so the next
                        # wake-up takes a batch (one poll and one write for many records).
                        time.sleep(pause_s)
                    now = time.monotonic_ns()
                    self._loop_tick = now / 1e9
                    if now >= next_state:
                        next_state = now + state_every_ns
                        self._sample_rate(now / 1e9)
                        position = writer.position()
                        if position != saved_position or "state" in self._file_errors:
                            self._save_state_soon()
                            saved_position = position
                except Exception as exc:  # one failure is recorded; the loop goes on
                    self.record_error("the recording loop", exc)
                    time.sleep(LOOP_ERROR_PAUSE_S)
            self.notifier.stopping("draining, then writing the final checkpoint")
            self._drain_at_stop(sockets)
        finally:
            for sock, _ in sockets:
                sock.close(linger=0)
            if self._monitor is not None:
                self._monitor.close(linger=0)
            self._close_control()
            if self._ctx is not None:
                self._ctx.term()
        return self.close()

    def _watch_rules(self) -> None:
        """Start watching the configuration file for rule changes (when there is one)."""
        source = Path(self.config.source)
        if self._reload_config is None or self.config.source in ("defaults", "") or not source.is_file():
            return
        from convlog.recorder.reload import RulesWatcher

        self._rules_watcher = RulesWatcher(source, self._reload_config, self.config, self._reloads.append)
        self._rules_watcher.start()
        log.info("watching %s for enrichment rule changes", source)

    def _apply_reload(self, result: Any) -> None:
        """Apply a :class:`convlog.recorder.reload.Reload` between two records and record it."""
        data = result.data
        if result.enricher is not None:
            self.ingest.use(result.enricher)
            self.config = result.config
            log.info("reloaded %s: %s changed, %d rule(s) in force", data["file"], ", ".join(data["changed"]),
                     data["rules"])
        if data["error"] is not None:
            log.error("rules not reloaded, the previous ones stay in force: %s", data["error"])
        if data["restart_needed"]:
            log.warning("%s: %s changed; that takes a restart of the recorder", data["file"],
                        ", ".join(data["restart_needed"]))
        self._append_own("recorder.config", data)
        if self._writer is not None:
            self._writer.sync()  # rare, and the next records depend on it

    def _start_jobs(self) -> None:
        """A background job (APScheduler) writes a checkpoint every
        ``checkpoint_interval_s``: it folds the records written since the previous one
        (read back from the files, complete lines only, so the recording loop never
        waits for it) and writes the state with its cut. The fold is not kept current
        between checkpoints: at about 12 µs per record (parse + fold) that would double
        the recorder's CPU per message at high rates."""
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(daemon=True, job_defaults={"max_instances": 1, "coalesce": True})
        scheduler.add_job(self._job_checkpoint, "interval", seconds=self.config.checkpoint_interval_s)
        watchdog_s = self.notifier.watchdog_interval_s
        if watchdog_s:
            scheduler.add_job(self._job_watchdog, "interval", seconds=watchdog_s, args=(watchdog_s,))
        scheduler.start()
        self._scheduler = scheduler

    def _job_checkpoint(self, label: str | None = None) -> Path | None:
        """Write a checkpoint: load the newest good one, fold what was written since,
        write the new one. This runs in the job's thread, so recording never waits for
        it, and the folded state is released afterwards, so the recorder's memory does
        not grow with the log between checkpoints.

        Args:
            label: keep it under this name (never pruned); None for an automatic one.

        Returns:
            the checkpoint written, or None when none was needed or writing failed (logged).
        """
        try:
            checkpointer = Checkpointer(self.directory, keep=self.config.checkpoint_keep, clock=Clock())
            for reason in checkpointer.refused:
                log.warning("checkpoint refused: %s", reason)
            path = checkpointer.checkpoint(label)
        except (CheckpointError, OSError) as exc:
            if "checkpoint" not in self._file_errors:
                self._thread_errors.append(("writing a checkpoint", exc))
            self._file_errors["checkpoint"] = f"a checkpoint cannot be written: {exc}"
            if label is not None:
                raise
            log.error("writing a checkpoint failed: %s", exc)
            return None
        except Exception as exc:
            if "checkpoint" not in self._file_errors:
                self._thread_errors.append(("writing a checkpoint", exc))
            self._file_errors["checkpoint"] = f"a checkpoint cannot be written: {_error_text(exc)}"
            if label is not None:
                raise
            log.exception("writing a checkpoint failed")
            return None
        self._file_errors.pop("checkpoint", None)
        if path is not None:
            # This runs in the job's thread: a clock of its own (the recorder's is not shared).
            self._last_checkpoint = {"file": path.name, "seq": checkpointer.state.last_seq,
                                     "created": Clock().now(), "label": label}
            log.info("checkpoint %s", path.name)
            self.notifier.status(f"recording; checkpoint at seq {checkpointer.state.last_seq}")
        return path

    def _job_watchdog(self, interval_s: float) -> None:
        """Tell systemd the recorder is alive (``WATCHDOG=1``), but only while the
        recording loop is: its last iteration must be younger than the interval
        (sd_watchdog_enabled(3))."""
        if time.monotonic() - self._loop_tick < interval_s:
            self.notifier.watchdog()

    # -- control channel ------------------------------------------------------------------

    def _bind_control(self) -> zmq.Socket:
        """Bind the control ROUTER socket (see :mod:`convlog.bus.control`), mode 0600. A socket
        file left by a recorder that died is removed first: this one holds the lock."""
        assert self._ctx is not None
        path = control.socket_path(self.directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        old = os.umask(0o177)  # the socket file is created 0600, with no window
        try:
            sock.bind(f"ipc://{path}")
        finally:
            os.umask(old)
        self._control = sock
        return sock

    def _close_control(self) -> None:
        if self._control is not None:
            self._control.close(linger=0)
            self._control = None
            with contextlib.suppress(OSError):  # a failed disk must not skip the stop that names lost seqs
                control.socket_path(self.directory).unlink(missing_ok=True)

    def _serve_control(self, sock: zmq.Socket) -> None:
        """Answer the queued control requests (a checkpoint is answered when written)."""
        for _ in range(CONTROL_BATCH):
            try:
                frames = sock.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 3 or frames[-2] != b"":
                continue  # not a REQ envelope: nothing to answer
            route, body = frames[:-1], frames[-1]
            try:
                request = control.parse_request(body)
                reply = self._answer(route, request)
            except (control.ControlError, CheckpointError) as exc:
                reply = control.error_reply(str(exc))
            except OSError as exc:
                reply = control.error_reply(_describe(exc))
            except Exception as exc:  # nothing a peer sends may stop the recorder
                self.record_error("answering a control request", exc)
                reply = control.error_reply(f"internal error: {_error_text(exc)}")
            if reply is not None:
                try:
                    sock.send_multipart([*route, reply])
                except zmq.ZMQError as exc:
                    log.warning("could not send a control reply: %s", exc)

    def _answer(self, route: list[bytes], request: control.Request) -> bytes | None:
        """The reply to one request, or None when it will be sent later."""
        writer = self._writer
        assert writer is not None
        op, params = request.op, request.params
        if op == "status":
            return control.ok_reply(self.status())
        if op == "flush":
            writer.sync()
            return control.ok_reply({"durable_seq": writer.durable_seq})
        if op == "rotate":
            writer.rotate()
            return control.ok_reply({"segment": writer.segment.name})
        if op == "stop":
            log.info("stop requested on the control channel")
            self.request_stop()
            return control.ok_reply({"stopping": True, "pid": os.getpid()})
        if op == "append":
            if self._held:
                raise control.ControlError("the log cannot be written at the moment (disk fault): try again later")
            self._append_own(params["kind"], params["data"], source="control", session=params["session"])
            writer.sync()  # a control record is rare and someone waits for it: make it durable
            return control.ok_reply({"seq": self.seq})
        # checkpoint: written in the scheduler's thread; the loop sends the reply.
        label = params["label"]
        if label is not None:
            checkpoint_name(0, label)  # CheckpointError (an error reply) for a bad label
        assert self._scheduler is not None
        self._scheduler.add_job(self._checkpoint_for, args=(route, label))
        return None

    def _checkpoint_for(self, route: list[bytes], label: str | None) -> None:
        """Write a checkpoint for a control request and queue the reply."""
        try:
            path = self._job_checkpoint(label)
            reply = control.ok_reply({"checkpoint": path.name if path else None,
                                      "seq": self._last_checkpoint["seq"] if path and self._last_checkpoint else None})
        except Exception as exc:  # any failure becomes the reply
            reply = control.error_reply(f"checkpoint failed: {exc}")
        self._replies.append((*route, reply))  # type: ignore[arg-type]

    def _connection_events(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        assert self._monitor is not None
        while True:
            try:
                event = recv_monitor_message(self._monitor, _NOBLOCK)
            except zmq.Again:
                return
            where = event.get("endpoint")
            where = where.decode() if isinstance(where, bytes) else where
            if where in self._connected:
                self._connected[where] = event["event"] == zmq.EVENT_CONNECTED

    def _sample_rate(self, now: float) -> None:
        self._rate.append((now, self.seq))
        while self._rate and now - self._rate[0][0] > RATE_WINDOW_S:
            self._rate.popleft()

    def status(self) -> dict[str, Any]:
        """What ``convlog status`` shows, as JSON-friendly values.

        Returns:
            ``{"pid", "started", "uptime_s", "directory", "endpoints": [{"endpoint",
            "kind", "connected"}], "records" (written since start), "last_seq", "bytes"
            (log size), "rate_1m" (records/s over the last minute), "newest_ts",
            "newest_age_s", "last_checkpoint", "fsync": {"policy", "lag_s", "durable_seq"},
            "disk": {"used_bytes", "free_bytes"}, "gaps": {publishers, missing, ...},
            "drops", "held_bytes", "degraded", "publishers": {"known", "open", "silent_s"},
            "errors": {what: count}, "received": {source: messages}, "metrics" (URL or
            None), "healthy", "problems": [str], "warnings": [str]}``; times in seconds.
            Unhealthy (``problems``): an endpoint not connected, writes failing, drops, a
            recovery file (state, segment fsync/rotation, checkpoint) that cannot be
            written, a segment that went away under the recorder; publishers silent past
            ``silence_threshold_s`` are a warning (a problem with ``silence_unhealthy``),
            and publishers that closed with a goodbye heartbeat are not counted.
        """
        writer = self._writer
        assert writer is not None
        now = time.monotonic()
        rate = 0.0
        if self._rate:
            then, seq = self._rate[0]
            if now - then > 0.5:
                rate = (self.seq - seq) / (now - then)
        newest_age = None
        if self._newest_ts is not None:
            newest_age = round(time.time() - _epoch(self._newest_ts), 3)
        last_checkpoint = self._newest_checkpoint()
        used = 0
        for _, path in list_segments(self.directory):
            with contextlib.suppress(OSError):
                used += path.stat().st_size
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            free = None
        detector = self.ingest.detector
        known = len(detector.publishers)
        open_publishers = detector.open_publishers()
        # Since the last message or heartbeat from the bus (or since the start).
        silent = round(now - (self._last_bus or self._started_mono), 3)
        lag = 0.0
        if writer.durable_seq < writer.written_seq and writer.due_ns() is not None:
            lag = round(max(0.0, writer.interval_ns - writer.due_ns()) / 1e9, 6)
        problems = []
        warnings = []
        for where, up in self._connected.items():
            if not up:
                problems.append(f"not connected to {where}")
        if self._degraded is not None:
            problems.append(f"writes failing since {self._degraded['since']}: {self._degraded['error']}")
        if self._dropped is not None:
            problems.append(f"{self._dropped['messages']} messages dropped (held bytes at the bound)")
        problems.extend(self._file_errors.values())
        for event in self._lost_segments:
            lost = event["lost"]
            problems.append(f"segment {event['segment']} was {event['problem']} under the recorder at "
                            f"{event['since']}: " + (f"records {lost[0]}..{lost[1]} lost" if lost else "no record lost")
                            + " (a restart acknowledges it)")
        threshold = self.config.silence_threshold_s
        if open_publishers and silent > threshold:
            text = (f"{open_publishers} publisher(s) that did not say goodbye silent for {silent:.0f} s "
                    f"(threshold {threshold:g} s)")
            (problems if self.config.silence_unhealthy else warnings).append(text)
        return {
            "pid": os.getpid(),
            "started": _rfc3339(self._started_ns),
            "uptime_s": round((time.time_ns() - self._started_ns) / 1e9, 3),
            "directory": str(self.directory),
            "endpoints": [{"endpoint": e, "kind": "sub", "connected": up} for e, up in self._connected.items()]
            + ([{"endpoint": self.config.pull, "kind": "pull", "connected": True}] if self.config.pull else []),
            "records": self.seq - self._start_seq,
            "last_seq": self.seq,
            "bytes": used,
            "rate_1m": round(rate, 3),
            "newest_ts": self._newest_ts,
            "newest_age_s": newest_age,
            "last_checkpoint": last_checkpoint,
            "fsync": {"policy": writer.policy, "lag_s": lag, "durable_seq": writer.durable_seq},
            "disk": {"used_bytes": used, "free_bytes": free},
            "gaps": detector.summary(),
            "drops": self._dropped["messages"] if self._dropped else 0,
            "held_bytes": self._held_bytes,
            "degraded": [self._degraded["error"]] if self._degraded else [],
            "publishers": {"known": known, "open": open_publishers, "silent_s": silent},
            "errors": dict(self.errors),
            "received": dict(self.received),
            "metrics": self.metrics.url if self.metrics is not None else None,
            "healthy": not problems,
            "problems": problems,
            "warnings": warnings,
        }

    def _newest_checkpoint(self) -> dict[str, Any] | None:
        """The newest checkpoint this recorder knows of, when its file still exists
        (else the newest one on disk: a deleted checkpoint is never named)."""
        known = self._last_checkpoint or self._checkpoint_at_start
        if known is not None and (self.directory / CHECKPOINTS / known["file"]).exists():
            return known
        try:
            infos = list_checkpoints(self.directory)
        except OSError:
            return None
        if not infos:
            return None
        newest = infos[-1]
        return {"file": newest.path.name, "seq": newest.seq, "created": newest.created, "label": newest.label}

    def _yield_to_network(self) -> None:
        """Lower the scheduling priority of this (the processing) thread only.

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

    def _drain_at_stop(self, sockets: list[tuple[zmq.Socket, str]]) -> None:
        deadline = time.monotonic() + self.config.drain_timeout_ms / 1000
        poller = zmq.Poller()
        for sock, _ in sockets:
            poller.register(sock, zmq.POLLIN)
        while time.monotonic() < deadline:
            ready = dict(poller.poll(DRAIN_QUIET_MS))
            if not ready:
                break
            for sock, source in sockets:
                if sock in ready:
                    self._drain(sock, source, BATCH_MESSAGES)

    def close(self) -> int:
        """Write ``recorder.stop``, fsync, mark the state clean and release the lock.

        Returns:
            0, or 1 when records held after failed writes could still not be written
            (they are lost; the error says which seqs) — the state is left unclean.
        """
        writer = self._writer
        if writer is None:
            return 0
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self._rules_watcher is not None:
            self._rules_watcher.stop()
            self._rules_watcher = None
        if self._held:
            self._retry()
        uptime = (time.time_ns() - self._started_ns) / 1e9
        if not self._held:
            self._append_own(
                "recorder.stop",
                {
                    "reason": "signal" if self._stop else "end",
                    "uptime_s": round(uptime, 3),
                    "received": dict(self.received),
                    "records_by_kind": self.records_by_kind(),
                    "publishers": self.ingest.detector.summary(),
                    "fsyncs": writer.fsyncs,
                    "fsync_seconds": round(writer.fsync_seconds, 6),
                },
            )
        error = None
        if self._held:
            assert self._degraded is not None
            error = (
                f"{self._held_seq - self._degraded['first_seq'] + 1} records "
                f"(seq {self._degraded['first_seq']}..{self._held_seq}) could not be written: {self._degraded['error']}"
            )
        else:
            try:
                writer.sync()
            except OSError as exc:
                error = f"the last fsync failed ({_describe(exc)}): recent records may not be durable"
        if error is None:
            self._save_state(clean=True)
            self._job_checkpoint()
        with contextlib.suppress(OSError):
            writer.close()
        self._writer = None
        if self._state_pool is not None:
            self._state_pool.shutdown(wait=True)
            self._state_pool = None
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
    """Plain ``LEVEL name: message`` lines on stderr, as journald expects."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("convlog")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 UTC with microseconds (as record ``ts``)."""
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(ts: str) -> float:
    """Seconds since the epoch of a record ``ts`` (RFC 3339, ``Z``)."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _error_text(exc: BaseException) -> str:
    """``TypeName: message`` of an exception, cut to :data:`ERROR_TEXT_CHARS`."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_TEXT_CHARS else text[:ERROR_TEXT_CHARS] + "…"


def _describe(exc: OSError) -> str:
    """``ENOSPC: No space left on device``-style text for an OSError."""
    name = errno.errorcode.get(exc.errno or 0, "OSError")
    return f"{name}: {exc.strerror or exc}"
