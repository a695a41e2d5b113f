"""The recorder's scheduled jobs (APScheduler, one background thread): the periodic
checkpoint, retention (``[retention]``, :mod:`convlog.store.retention`) and the systemd
watchdog ping; a checkpoint or a prune asked for on the control channel runs there too.

Checkpoints, prunes and the sealer (:mod:`convlog.recorder.sealer`) take turns on
:attr:`Jobs.log_lock`: a prune never removes a segment being sealed or read for a
checkpoint. The ``recorder.pruned`` record is handed to the recording loop (the log's
one writer) through :attr:`Jobs.records`, and the prune waits until it is written
before removing anything. Checkpoints and prunes first take the rewrite lock, shared
(:func:`convlog.store.lock.rewrite_lock`): they wait while ``convlog purge`` rewrites
the log.

A checkpoint folds the records written since the previous one (read back from the
files, complete lines only, so the recording loop never waits for it) and writes the
state with its cut. The fold is not kept current between checkpoints: at about 12 µs
per record (parse + fold) that would double the recorder's CPU per message at high rates.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from convlog.core.retention import Limits
from convlog.recorder.config import Config
from convlog.recorder.faults import Faults
from convlog.recorder.notify import Notifier
from convlog.recorder.sequencer import error_text
from convlog.store.checkpoint import Checkpointer, CheckpointError, CheckpointInfo, list_checkpoints
from convlog.store.clock import Clock
from convlog.store.heads import HeadSigner
from convlog.store.lock import rewrite_lock
from convlog.store.retention import PruneReport, prune
from convlog.store.segment import CHECKPOINTS
from convlog.store.sync_state import synced_seq

log = logging.getLogger("convlog.recorder")


def checkpoint_summary(info: CheckpointInfo) -> dict[str, Any]:
    """A checkpoint as status names it: ``{"file", "seq", "created", "label"}``."""
    return {"file": info.path.name, "seq": info.seq, "created": info.created, "label": info.label}


class Jobs:
    """The scheduler and the checkpoints this recorder knows of.

    Args:
        directory: the log directory.
        config: the recorder's settings (``checkpoint_interval_s``, ``checkpoint_keep``).
        notifier: systemd notifications (status line, watchdog).
        faults: a failing checkpoint is noted in ``file_errors["checkpoint"]`` until one
            succeeds, and once in ``thread_errors``.

    Attributes:
        last_checkpoint: the newest checkpoint written by this recorder, ``{"file",
            "seq", "created" (RFC 3339), "label"}``, or None.
        checkpoint_at_start: the newest one on disk when the recorder opened, or None.
        loop_tick: monotonic time of the recording loop's last iteration, seconds (the
            loop sets it; the watchdog reads it).
        log_lock: held while a checkpoint, a prune or a seal works on the segments.
        records: ``(kind, data, written)`` for the loop to write; it sets ``written``.
        last_prune: the newest prune's report data (``recorder.pruned``'s), or None.
        pruned_segments: segments retention let go of since start.
        pruned_bytes: their bytes on disk.
        signer: signs the chain head at each checkpoint (``[recorder] sign_key``,
            :class:`~convlog.store.heads.HeadSigner`), or None.
        last_signed: the newest signed head written by this recorder, or None.
    """

    #: How long a prune waits for the loop to write its record, seconds.
    RECORD_WAIT_S = 30.0

    def __init__(self, directory: Path, config: Config, notifier: Notifier, faults: Faults) -> None:
        self.directory = directory
        self.config = config
        self.notifier = notifier
        self.faults = faults
        self.last_checkpoint: dict[str, Any] | None = None
        self.checkpoint_at_start: dict[str, Any] | None = None
        self.loop_tick = time.monotonic()
        self.log_lock = threading.Lock()
        self.records: collections.deque[tuple[str, dict[str, Any], threading.Event]] = collections.deque()
        self.last_prune: dict[str, Any] | None = None
        self.pruned_segments = 0
        self.pruned_bytes = 0
        self.signer: HeadSigner | None = None
        self.last_signed: dict[str, Any] | None = None
        self._scheduler: Any = None
        self._prune_queued = threading.Event()

    def start(self) -> None:
        """Start the scheduler: a checkpoint every ``checkpoint_interval_s`` seconds, and
        the watchdog ping when systemd asks for one. Jobs never overlap (``max_instances
        1``, missed runs coalesced)."""
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(daemon=True, job_defaults={"max_instances": 1, "coalesce": True})
        scheduler.add_job(self.checkpoint, "interval", seconds=self.config.checkpoint_interval_s)
        if self.config.retention().active:
            scheduler.add_job(self.retention, "interval", seconds=self.config.retention_interval_s,
                              next_run_time=datetime.now(UTC) + timedelta(seconds=1))
        watchdog_s = self.notifier.watchdog_interval_s
        if watchdog_s:
            scheduler.add_job(self.watchdog, "interval", seconds=watchdog_s, args=(watchdog_s,))
        scheduler.start()
        self._scheduler = scheduler

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        """Run ``job(*args)`` once, now, in the scheduler's thread.

        Raises:
            AssertionError: when the scheduler is not running.
        """
        assert self._scheduler is not None
        self._scheduler.add_job(job, args=args)

    def shutdown(self) -> None:
        """Stop the scheduler, waiting for a running job to finish (no-op when not started)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None

    def checkpoint(self, label: str | None = None) -> Path | None:
        """Write a checkpoint: load the newest good one, fold what was written since,
        write the new one, under the rewrite lock (shared: it waits while ``convlog purge``
        rewrites the log). Runs in the job's thread (or at stop), so recording never
        waits for it; the folded state is released afterwards, so the recorder's memory
        does not grow with the log between checkpoints.

        Args:
            label: keep it under this name (never pruned); None for an automatic one.

        Returns:
            the checkpoint written, or None when none was needed or writing failed (logged).

        Raises:
            Exception: :class:`~convlog.store.checkpoint.CheckpointError`, ``OSError``
                or any other error of the checkpoint, only when ``label`` is given
                (someone asked for it and gets the reason).
        """
        file_errors = self.faults.file_errors
        try:
            # The rewrite lock first, shared: a purge rewriting the log holds it exclusively (it
            # rebuilds the checkpoints), and waits for the sealer, which takes log_lock.
            with rewrite_lock(self.directory, exclusive=False), self.log_lock:
                checkpointer = Checkpointer(self.directory, keep=self.config.checkpoint_keep, clock=Clock(),
                                            signer=self.signer)
                for reason in checkpointer.refused:
                    log.warning("checkpoint refused: %s", reason)
                path = checkpointer.checkpoint(label)
                if checkpointer.signed is not None:
                    self.last_signed = checkpointer.signed
        except (CheckpointError, OSError) as exc:
            if "checkpoint" not in file_errors:
                self.faults.thread_errors.append(("writing a checkpoint", exc))
            file_errors["checkpoint"] = f"a checkpoint cannot be written: {exc}"
            if label is not None:
                raise
            log.error("writing a checkpoint failed: %s", exc)
            return None
        except Exception as exc:
            if "checkpoint" not in file_errors:
                self.faults.thread_errors.append(("writing a checkpoint", exc))
            file_errors["checkpoint"] = f"a checkpoint cannot be written: {error_text(exc)}"
            if label is not None:
                raise
            log.exception("writing a checkpoint failed")
            return None
        file_errors.pop("checkpoint", None)
        if path is not None:
            # This runs in the job's thread: a clock of its own (the recorder's is not shared).
            self.last_checkpoint = {"file": path.name, "seq": checkpointer.state.last_seq,
                                    "created": Clock().now(), "label": label}
            log.info("checkpoint %s", path.name)
            self.notifier.status(f"recording; checkpoint at seq {checkpointer.state.last_seq}")
        return path

    def prune_soon(self) -> None:
        """Queue one run of :meth:`retention` in the scheduler's thread, unless one is
        queued already (called from the sealer's thread after each seal)."""
        if self._scheduler is None or self._prune_queued.is_set():
            return
        self._prune_queued.set()
        self.submit(self.retention)

    def retention(self) -> None:
        """The scheduled prune: ``[retention]`` as configured (errors are logged and
        noted in ``file_errors["retention"]`` until a prune succeeds)."""
        self._prune_queued.clear()
        config = self.config
        self.prune(config.retention(), config.retention_action,
                   str(config.retention_archive_dir) if config.retention_archive_dir else None)

    def prune(self, limits: Limits, action: str, archive_dir: str | None, dry_run: bool = False,
              raise_errors: bool = False) -> PruneReport | None:
        """Apply retention now (:func:`convlog.store.retention.prune`), under
        :attr:`log_lock`; the ``recorder.pruned`` record goes through :attr:`records`.

        Args:
            limits: the limits (seconds, bytes).
            action: ``"delete"`` or ``"archive"``.
            archive_dir: the archive for ``"archive"``.
            dry_run: only report what would go.
            raise_errors: raise a failure (a control request) instead of logging it.

        Returns:
            the report, or None when it failed (logged).
        """
        try:
            with rewrite_lock(self.directory, exclusive=False), self.log_lock:  # not while a purge runs
                report = prune(self.directory, limits, action, archive_dir, dry_run, announce=self._announce,
                               live_reserve=self.config.segment_bytes,
                               synced_seq=synced_seq(self.directory) if self.config.sync_db else None)
        except Exception as exc:
            if "retention" not in self.faults.file_errors:
                self.faults.thread_errors.append(("applying retention", exc))
            self.faults.file_errors["retention"] = f"retention cannot be applied: {error_text(exc)}"
            if raise_errors:
                raise
            log.error("applying retention failed: %s", exc)
            return None
        self.faults.file_errors.pop("retention", None)
        if report.segments and not dry_run:
            self.last_prune = report.as_data()
            self.pruned_segments += len(report.segments)
            self.pruned_bytes += report.removed_bytes
            log.info("retention: %s %d segment(s), %d records, %d bytes (base at seq %s)", action,
                     len(report.segments), report.records, report.removed_bytes, report.base)
        if report.held_for_sync:
            log.info("retention: %d segment(s) due wait until convlog sync has written them (%s)",
                     report.held_for_sync, "[sync] db is set")
        return report

    def _announce(self, report: PruneReport) -> None:
        """Hand the ``recorder.pruned`` record to the loop and wait until it is written."""
        written = threading.Event()
        self.records.append(("recorder.pruned", report.as_data(), written))
        if not written.wait(self.RECORD_WAIT_S):
            log.warning("the recorder.pruned record was not written within %g s; pruning anyway",
                        self.RECORD_WAIT_S)

    def watchdog(self, interval_s: float) -> None:
        """Tell systemd the recorder is alive (``WATCHDOG=1``), but only while the
        recording loop is: its last iteration must be younger than ``interval_s``
        seconds (sd_watchdog_enabled(3))."""
        if time.monotonic() - self.loop_tick < interval_s:
            self.notifier.watchdog()

    def signing(self) -> dict[str, Any] | None:
        """What status says of signing: None without a signing key, else ``{"key"
        (key id), "last_seq" and "last_signed" (the newest head this recorder signed,
        None before its first checkpoint)}``."""
        if self.signer is None:
            return None
        last = self.last_signed or {}
        return {"key": self.signer.key_id, "last_seq": last.get("seq"), "last_signed": last.get("signed")}

    def newest_checkpoint(self) -> dict[str, Any] | None:
        """The newest checkpoint this recorder knows of, when its file still exists
        (else the newest one on disk: a deleted checkpoint is never named).

        Returns:
            ``{"file", "seq", "created", "label"}``, or None when there is none (or the
            checkpoints cannot be listed).
        """
        known = self.last_checkpoint or self.checkpoint_at_start
        if known is not None and (self.directory / CHECKPOINTS / known["file"]).exists():
            return known
        try:
            infos = list_checkpoints(self.directory)
        except OSError:
            return None
        if not infos:
            return None
        return checkpoint_summary(infos[-1])
