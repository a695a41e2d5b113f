"""What the interactive menu (:mod:`convlog.cli.menu`) reads of the log between screens:
the folded state kept current by folding only new records (:class:`CurrentFold`) and the
most recent messages, read backwards from the end of the log (:func:`recent_records`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from convlog.cli.menu_core import RECENT_COUNT, RECENT_KINDS
from convlog.core.fold import State
from convlog.readers.tail import RecordFilter, newest
from convlog.store.replay import Replay
from convlog.store.segment import list_segments, segment_key, segment_path, segment_size

# --------------------------------------------------------------------------- reading the end of the log


def recent_records(directory: Path, count: int = RECENT_COUNT, kinds: frozenset[str] = RECENT_KINDS) -> list[dict]:
    """The last ``count`` records of the given kinds, read backwards from the end of the
    last segment (and earlier segments only when it holds too few), so the cost follows
    what is shown, not the size of the log (:func:`convlog.readers.tail.newest`). Unreadable
    lines are skipped.

    Args:
        directory: the log directory.
        count: how many records (>= 0).
        kinds: the record kinds wanted.

    Returns:
        up to ``count`` records, oldest first (``[]`` when the directory has no log).

    Raises:
        OSError: when a segment cannot be read.
    """
    if count <= 0:
        return []
    return [found.record for found in newest(directory, count, RecordFilter.of(kinds=kinds)).records]


# --------------------------------------------------------------------------- shell


#: Records folded between two progress reports of :meth:`CurrentFold.replay`.
_PROGRESS_RECORDS = 4096


class CurrentFold:
    """The fold of a log kept current while the menu runs: the first :meth:`replay`
    starts like :func:`convlog.store.replay.load` (the newest checkpoint whose cut matches the
    log, then the records after it); later calls fold only the records appended since
    (:func:`convlog.store.segment.follow` from the last position, across segment rotation), so
    going back and forth between screens does not fold the log again.

    When the log no longer holds the position (its segment is gone or shorter: the log
    was recovered, replaced or rebuilt) the fold starts over.

    Args:
        directory: the log directory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._state: State | None = None
        self._position: tuple[str, int] | None = None
        self._checkpoint: Path | None = None
        self._refused: list[str] = []

    def _holds_position(self) -> bool:
        if self._position is None:
            return True
        name, offset = self._position
        try:
            return segment_size(segment_path(self.directory, name)) >= offset
        except OSError:
            return False

    def replay(self, progress: Callable[[int, int], None] | None = None) -> Replay:
        """Bring the fold up to date and return it (the state is shared between calls
        and changes with them: do not keep one across a later call).

        Args:
            progress: called as ``progress(done, total)`` in bytes of log folded by this
                call, every few thousand records and at the end (not when nothing is new).

        Returns:
            a :class:`~convlog.store.replay.Replay` of the whole log as written so far.

        Raises:
            NoLogError: when the directory has no segments.
            CheckpointError, OSError: when the log or a checkpoint cannot be read.
        """
        from convlog.core.fold import fold
        from convlog.store.checkpoint import best_start
        from convlog.store.replay import NoLogError
        from convlog.store.segment import follow

        if not list_segments(self.directory):
            raise NoLogError.in_directory(self.directory)
        if self._state is None or not self._holds_position():
            start = best_start(self.directory)
            self._state, self._position = start.state, start.position
            self._checkpoint, self._refused = start.checkpoint, start.refused
        state = self._state
        starts, total = {}, 0  # segment name -> bytes of the log before it
        for _, path in list_segments(self.directory):
            starts[segment_key(path)] = total
            total += segment_size(path)
        base = 0 if self._position is None else starts.get(self._position[0], 0) + self._position[1]
        count = 0
        for record, segment, offset in follow(self.directory, self._position):
            fold(state, record)
            self._position = (segment, offset)
            count += 1
            if progress is not None and count % _PROGRESS_RECORDS == 0:
                done = starts.get(segment, total) + offset - base
                progress(done, max(total - base, done))
        if progress is not None and count:
            done = starts.get(self._position[0], total) + self._position[1] - base if self._position else 0
            progress(done, max(total - base, done))
        return Replay(directory=self.directory, state=state, checkpoint=self._checkpoint, refused=self._refused)
