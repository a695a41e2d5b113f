"""Sealing finished segments while recording: a thread of its own compresses each
segment the writer rotates away from (:func:`convlog.store.seal.seal_segment`), so the
recording thread only hands a path over. At start it also queues the finished segments
left plain (by ``compress = "none"`` earlier, or a stop while sealing)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from convlog.store.seal import Sealed, seal_segment, sealable
from convlog.store.writer import SegmentWriter

log = logging.getLogger("convlog.recorder")


class Sealer:
    """Seals finished segments on a background thread.

    Args:
        directory: the log directory.
        level: zstd compression level (1-22).
        lock: held while sealing one segment (shared with checkpoints and retention,
            :attr:`convlog.recorder.jobs.Jobs.log_lock`); None for none.

    Attributes:
        sealed: totals of what was sealed since start.
        errors: segments that could not be sealed (they stay plain and readable).
        after_seal: called (on the sealer's thread) after each segment sealed, or None;
            the recorder applies ``max_bytes`` retention then.
    """

    def __init__(self, directory: Path, level: int = 3, lock: threading.Lock | None = None) -> None:
        self.directory = Path(directory)
        self.level = level
        self._lock = lock or threading.Lock()
        self.after_seal: Callable[[], None] | None = None
        self.sealed = Sealed()
        self.errors = 0
        self._queue: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, writer: SegmentWriter) -> None:
        """Queue the finished plain segments (all but ``writer``'s current one), hook
        ``writer.on_rotate`` to queue each segment it finishes, and start the thread."""
        for path in sealable(self.directory):
            if path != writer.segment:
                self._queue.put(path)
        writer.on_rotate = self.submit
        self._thread = threading.Thread(target=self._run, name="convlog-sealer", daemon=True)
        self._thread.start()

    def submit(self, path: Path) -> None:
        """Queue one finished segment (called on the recording thread: only a put)."""
        self._queue.put(path)

    def stop(self, timeout: float | None = None) -> None:
        """Finish the segment being sealed (those still queued stay plain until the
        next start or ``convlog compress``) and end the thread.

        Args:
            timeout: seconds to wait for the thread at most (None: until it ends).
        """
        if self._thread is None:
            return
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            path = self._queue.get()
            if path is None or self._stop.is_set():
                return
            try:
                with self._lock:
                    done = seal_segment(path, self.level)
            except FileNotFoundError:
                continue  # gone (sealed already, or removed)
            except (OSError, ValueError) as exc:
                self.errors += 1
                log.warning("could not seal %s (it stays plain): %s", path.name, exc)
                continue
            self.sealed.add(done)
            log.debug("sealed %s: %d -> %d bytes", path.name, done.before, done.after)
            if self.after_seal is not None:
                self.after_seal()
