"""The recovery snapshot: ``recovery/state.json``, written in the background.

The snapshot (the writer's position, the publishers' seqs) is taken on the recording
thread; serialising it, the fsync and the rename happen in one background thread, so
recording never waits for the disk. At start and stop it is written in the foreground.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convlog.core.gaps import GapDetector
from convlog.recorder.faults import Faults
from convlog.recorder.sequencer import error_text
from convlog.store.clock import Clock
from convlog.store.segment import RECOVERY, STATE_FILE
from convlog.store.state import write_state
from convlog.store.writer import SegmentWriter

log = logging.getLogger("convlog.recorder")


def take_snapshot(
    writer: SegmentWriter, clock: Clock, seq: int, detector: GapDetector, clean: bool
) -> dict[str, Any]:
    """What ``recovery/state.json`` gets now (call it on the recording thread).

    Args:
        writer: the open segment writer (its position and durable seq).
        clock: the recorder's clock (the snapshot's ``ts``).
        seq: seq of the last record numbered (written or held).
        detector: the publishers' last seqs, as of ``seq``.
        clean: True only at a clean stop.

    Returns:
        the state dict (see :meth:`convlog.store.writer.SegmentWriter.state_fields`), with
        ``publishers_seq`` and ``publishers``.
    """
    # The detector has seen every record up to seq; those not written yet (held while
    # writes fail) make publishers_seq differ from written_seq, and the restore then
    # reads the log by seq instead of from the written offset.
    return writer.state_fields(clean, clock.now(), {"publishers_seq": seq, "publishers": detector.to_dict()})


class StateSnapshots:
    """Writes ``recovery/state.json`` for one log directory.

    Args:
        directory: the log directory.
        faults: a failed write is noted in ``file_errors["state"]`` (status unhealthy)
            until a later one succeeds, and once in ``thread_errors``.
        take: makes the snapshot, ``take(clean) -> dict`` (on the recording thread).
    """

    def __init__(self, directory: Path, faults: Faults, take: Callable[[bool], dict[str, Any]]) -> None:
        self.directory = directory
        self.faults = faults
        self.take = take
        self._pool: Any = None  # a ThreadPoolExecutor once the first background write starts
        self._future: Any = None  # the Future of the last background write

    def save(self, clean: bool) -> None:
        """Write the state now, on this thread (at start and stop), after any write still
        running in the background. A failure is noted, not raised."""
        if self._future is not None:
            self._future.result()
        self.store(self.take(clean))

    def save_soon(self) -> None:
        """Write the state (not clean) in the background: the snapshot is taken here,
        the rest happens in the state thread. Skipped while the previous write still runs."""
        if self._future is not None and not self._future.done():
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convlog-state")
        self._future = self._pool.submit(self.store, self.take(False))

    def store(self, snapshot: dict[str, Any]) -> None:
        """Write a state snapshot; a failure is logged once and makes status unhealthy
        until a later write succeeds. Never raises."""
        file_errors = self.faults.file_errors
        try:
            write_state(self.directory, snapshot)
        except Exception as exc:
            if "state" not in file_errors:
                log.error("cannot write %s/%s/%s: %s", self.directory, RECOVERY, STATE_FILE, error_text(exc))
                self.faults.thread_errors.append((f"writing recovery/{STATE_FILE}", exc))
            file_errors["state"] = f"recovery/{STATE_FILE} cannot be written: {error_text(exc)}"
        else:
            if file_errors.pop("state", None) is not None:
                log.warning("recovery/%s written again", STATE_FILE)

    def close(self) -> None:
        """Wait for a background write still running and stop the state thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
