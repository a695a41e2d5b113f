"""The wall clock behind every record ``ts``: RFC 3339 UTC with microseconds, never
going back. Kept out of :mod:`convlog.core` (which reads no clock) and below every
writer: the recorder, import, checkpoints and session control all stamp through it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from convlog.core.record import MAX_FLOOR_AHEAD_S


class Clock:
    """Formats receive times as RFC 3339 UTC with microseconds (``...T12:00:00.000001Z``),
    never going back: a wall clock stepped backwards (NTP, a manual fix) gives the
    previous time again until it catches up, so record ``ts`` is monotonic and folding
    by time (``--as-of``) sees every record in seq order. The size of the step is kept
    in :attr:`step_ns` for the caller to note (``meta.clock_step_s``).

    Caches the formatted second so the hot path does one integer split and one
    f-string per record. Not thread-safe; one per writer.

    Args:
        time_ns: the wall clock, nanoseconds since the Unix epoch (``time.time_ns``).

    Attributes:
        step_ns: the largest backwards step seen since the caller last reset it to 0,
            nanoseconds.
    """

    __slots__ = ("_last", "_prefix", "_second", "_time_ns", "step_ns")

    def __init__(self, time_ns: Callable[[], int] = time.time_ns) -> None:
        self._second = -1
        self._prefix = ""
        self._last = 0
        self._time_ns = time_ns
        self.step_ns = 0

    def floor(self, ts: str) -> None:
        """Never give a time before ``ts`` (a record ``ts``, e.g. the log's last one
        when a recorder starts), so ``ts`` stays monotonic across restarts too.
        A malformed ``ts``, or one more than :data:`MAX_FLOOR_AHEAD_S` ahead of the
        wall clock (a damaged file must not freeze the clock), is ignored."""
        try:
            when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except (AttributeError, ValueError):
            return
        if when.tzinfo is None:
            return
        ns = int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000
        if ns - self._time_ns() <= MAX_FLOOR_AHEAD_S * 1_000_000_000:
            self._last = max(self._last, ns)

    def format_ns(self, ns: int) -> str:
        """Format ``ns`` (nanoseconds since the Unix epoch, UTC) per RFC 3339."""
        second, rest = divmod(ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{rest // 1000:06d}Z"

    def now(self) -> str:
        """The current time, formatted by :meth:`format_ns`; never before the previous
        call's (see the class doc)."""
        ns = self._time_ns()
        if ns < self._last:
            if self._last - ns > self.step_ns:
                self.step_ns = self._last - ns
            ns = self._last
        else:
            self._last = ns
        return self.format_ns(ns)
