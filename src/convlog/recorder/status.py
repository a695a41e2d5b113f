"""Status and counters of a running recorder: what ``convlog status`` shows (through the
control channel) and what the metrics endpoint serves. Read-only over the recorder's
parts, apart from its own start marks and rate samples.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from convlog.core.ingest import Ingest
from convlog.recorder.config import Config
from convlog.recorder.durable import DurableWriter
from convlog.recorder.faults import Faults
from convlog.recorder.jobs import Jobs
from convlog.recorder.receive import Receiver
from convlog.recorder.sequencer import Sequencer
from convlog.store.segment import list_segments
from convlog.store.sync_state import read_sync_state

#: Window of the rate reported by ``status``, seconds.
RATE_WINDOW_S = 60.0


def rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 UTC with microseconds (as record ``ts``)."""
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch(ts: str) -> float:
    """Seconds since the epoch of a record ``ts`` (RFC 3339, ``Z``)."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class Reporter:
    """Builds the status reply and the metrics counters from the recorder's parts.

    Args:
        config: the recorder's settings (endpoints, silence threshold).
        directory: the log directory (size on disk, free space).
        ingest: message counts by kind and the publishers' gap detector.
        sequencer, durable, receiver, jobs, faults: the recorder's parts read.

    Attributes:
        started_ns: wall time of the start, nanoseconds since the epoch.
        started_mono: monotonic time of the start, seconds.
        start_seq: seq of the last record before this start's ``recorder.start``.
    """

    def _sync(self, seq: int) -> dict[str, Any] | None:
        """What ``DIR/recovery/sync.json`` says of ``convlog sync`` (None when no sync
        wrote one and none is configured): its fields, ``configured`` ([sync] db), and
        ``lag_records`` against this recorder's seq."""
        state = read_sync_state(self.directory)
        if state is None and not self.config.sync_db:
            return None
        state = dict(state or {})
        synced = state.get("seq") if isinstance(state.get("seq"), int) else 0
        state["configured"] = bool(self.config.sync_db)
        state["lag_records"] = max(0, seq - synced)
        return state

    def __init__(
        self, config: Config, directory: Path, ingest: Ingest, sequencer: Sequencer, durable: DurableWriter,
        receiver: Receiver, jobs: Jobs, faults: Faults,
    ) -> None:
        self.config = config
        self.directory = directory
        self.ingest = ingest
        self.sequencer = sequencer
        self.durable = durable
        self.receiver = receiver
        self.jobs = jobs
        self.faults = faults
        self.started_ns = 0
        self.started_mono = time.monotonic()
        self.start_seq = 0
        self._rate: collections.deque[tuple[float, int]] = collections.deque()

    def mark_start(self) -> None:
        """Note the start (now, at the current seq): ``records`` and ``uptime_s`` count from here."""
        self.start_seq = self.sequencer.seq
        self.started_ns = time.time_ns()
        self.started_mono = time.monotonic()

    def sample_rate(self, now: float) -> None:
        """Keep ``(now, seq)`` for the rate, dropping samples older than :data:`RATE_WINDOW_S`.

        Args:
            now: monotonic time, seconds.
        """
        self._rate.append((now, self.sequencer.seq))
        while self._rate and now - self._rate[0][0] > RATE_WINDOW_S:
            self._rate.popleft()

    def status(self, metrics_url: str | None) -> dict[str, Any]:
        """What ``convlog status`` shows, as JSON-friendly values.

        Args:
            metrics_url: the metrics endpoint's URL, or None when not serving.

        Returns:
            ``{"pid", "started", "uptime_s", "directory", "endpoints": [{"endpoint",
            "kind", "connected"}], "records" (written since start), "last_seq", "bytes"
            (log size), "rate_1m" (records/s over the last minute), "newest_ts",
            "newest_age_s", "last_checkpoint", "retention": {"limits" (``[retention]``, or
            None), "last_prune" (the newest ``recorder.pruned`` data, or None)},
            "redact": {"enabled", "rules" (ids in use), "redactions" (rule id: secrets
            replaced since start)},
            "chain": {"enabled", "head" (the last link written), "signing" (None, or
            ``{"key", "last_seq", "last_signed"}``: :meth:`Jobs.signing`)},
            "fsync": {"policy", "lag_s", "durable_seq"},
            "compress" (``zstd``: finished segments are sealed, or ``none``),
            "sync" (None, or what ``convlog sync`` last wrote: ``seq``, ``db``, ``lag_records``,
            ``lag_s``, ``updated``, ``configured``),
            "curve" (``{"secret", "server"}`` certificate paths when the SUB socket is a
            CURVE client, else None),
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
        writer = self.durable.segment_writer
        assert writer is not None
        seq = self.sequencer.seq
        receiver, durable, faults = self.receiver, self.durable, self.faults
        now = time.monotonic()
        rate = 0.0
        if self._rate:
            then, then_seq = self._rate[0]
            if now - then > 0.5:
                rate = (seq - then_seq) / (now - then)
        newest_age = None
        if receiver.newest_ts is not None:
            newest_age = round(time.time() - epoch(receiver.newest_ts), 3)
        last_checkpoint = self.jobs.newest_checkpoint()
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
        silent = round(now - (receiver.last_bus or self.started_mono), 3)
        lag = 0.0
        if writer.durable_seq < writer.written_seq and writer.due_ns() is not None:
            lag = round(max(0.0, writer.interval_ns - writer.due_ns()) / 1e9, 6)
        problems = []
        warnings = []
        for where, up in receiver.connected.items():
            if not up:
                refused = receiver.refused.get(where)
                problems.append(f"not connected to {where}"
                                + (f" (CURVE handshake refused: {refused})" if refused else ""))
        if durable.degraded is not None:
            problems.append(f"writes failing since {durable.degraded['since']}: {durable.degraded['error']}")
        if durable.dropped is not None:
            problems.append(f"{durable.dropped['messages']} messages dropped (held bytes at the bound)")
        problems.extend(faults.file_errors.values())
        for event in faults.lost_segments:
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
            "started": rfc3339(self.started_ns),
            "uptime_s": round((time.time_ns() - self.started_ns) / 1e9, 3),
            "directory": str(self.directory),
            "endpoints": [{"endpoint": e, "kind": "sub", "connected": up} for e, up in receiver.connected.items()]
            + ([{"endpoint": self.config.pull, "kind": "pull", "connected": True}] if self.config.pull else []),
            "records": seq - self.start_seq,
            "last_seq": seq,
            "bytes": used,
            "rate_1m": round(rate, 3),
            "newest_ts": receiver.newest_ts,
            "newest_age_s": newest_age,
            "last_checkpoint": last_checkpoint,
            "retention": {"limits": self.config.retention_summary(), "last_prune": self.jobs.last_prune},
            "redact": {"enabled": self.ingest.redactor is not None,
                       "rules": list(self.ingest.redactor.ids) if self.ingest.redactor is not None else [],
                       "redactions": dict(sorted(self.ingest.redactions.items()))},
            "chain": {"enabled": writer.chain is not None,
                      "head": writer.chain.head if writer.chain is not None else None,
                      "signing": self.jobs.signing()},
            "fsync": {"policy": writer.policy, "lag_s": lag, "durable_seq": writer.durable_seq},
            "compress": self.config.compress,
            "curve": self.config.curve_summary(),
            "sync": self._sync(seq),
            "disk": {"used_bytes": used, "free_bytes": free},
            "gaps": detector.summary(),
            "drops": durable.dropped["messages"] if durable.dropped else 0,
            "held_bytes": durable.held_bytes,
            "degraded": [durable.degraded["error"]] if durable.degraded else [],
            "publishers": {"known": known, "open": open_publishers, "silent_s": silent},
            "errors": dict(self.sequencer.errors),
            "received": dict(receiver.received),
            "metrics": metrics_url,
            "healthy": not problems,
            "problems": problems,
            "warnings": warnings,
        }

    def stop_data(self, reason: str, uptime_s: float) -> dict[str, Any]:
        """The ``recorder.stop`` record's data, now.

        Args:
            reason: ``"signal"`` (asked to stop) or ``"end"``.
            uptime_s: seconds since the start.

        Returns:
            ``{"reason", "uptime_s" (seconds), "received": {source: messages},
            "records_by_kind": {kind: records}, "publishers" (the gap summary), "fsyncs",
            "fsync_seconds"}``.
        """
        writer = self.durable.segment_writer
        assert writer is not None
        return {
            "reason": reason,
            "uptime_s": round(uptime_s, 3),
            "received": dict(self.receiver.received),
            "records_by_kind": self.records_by_kind(),
            "publishers": self.ingest.detector.summary(),
            "fsyncs": writer.fsyncs,
            "fsync_seconds": round(writer.fsync_seconds, 6),
        }

    def counters(self) -> dict[str, Any]:
        """A snapshot of the running counts, for metrics (safe to call from another
        thread: each dict is copied in one C-level step).

        Returns:
            ``{"records": {(kind, source): n}, "received": {source: n}, "bytes_written",
            "gap_records", "gap_missing", "dropped", "last_seq", "newest_ts" (RFC 3339 or
            None), "checkpoint_created" (RFC 3339 or None), "held_bytes", "degraded"
            (bool), "publishers_known", "started_ns", "pruned_segments", "pruned_bytes",
            "redactions": {rule id: secrets replaced}}``;
            counts since this start.
        """
        writer = self.durable.segment_writer
        jobs = self.jobs
        checkpoint = jobs.last_checkpoint or jobs.checkpoint_at_start
        return {
            "records": self.records(),
            "received": self.receiver.received.copy(),
            "bytes_written": writer.bytes_written if writer else 0,
            "gap_records": self.sequencer.gap_records,
            "gap_missing": self.sequencer.gap_missing,
            "dropped": self.durable.dropped_total,
            "last_seq": self.sequencer.seq,
            "newest_ts": self.receiver.newest_ts,
            "checkpoint_created": checkpoint["created"] if checkpoint else None,
            "held_bytes": self.durable.held_bytes,
            "degraded": self.durable.degraded is not None,
            "publishers_known": len(self.ingest.detector.publishers),
            "started_ns": self.started_ns,
            "pruned_segments": jobs.pruned_segments,
            "pruned_bytes": jobs.pruned_bytes,
            "redactions": self.ingest.redactions.copy(),
        }

    def records(self) -> dict[tuple[str, str], int]:
        """Records written since start by ``(kind, source)``: messages and the recorder's own."""
        records = self.ingest.kinds.copy()
        for key, n in self.sequencer.own_kinds.copy().items():
            records[key] = records.get(key, 0) + n
        return records

    def records_by_kind(self) -> dict[str, int]:
        """Records written since start, by kind (messages and the recorder's own), sorted by kind."""
        out: dict[str, int] = {}
        for (kind, _source), n in self.records().items():
            out[kind] = out.get(kind, 0) + n
        return dict(sorted(out.items()))
