"""Live: the records a log directory gains, as server-sent events (``/api/events``), from
the same reader as ``convlog tail -f`` (:mod:`convlog.readers.tail`).

One :class:`LiveFeed` per server watches the log's ``events/`` directory with
:func:`convlog.readers.tail.watch_log` in one daemon thread, started when the first
client connects; each change wakes every connected stream. Each stream has its own
:class:`convlog.readers.tail.Follower` (its position, its filter), which reads the
complete records appended since its last read, across rotations and recorder restarts,
exactly as ``convlog tail -f`` does.

Each event is one record: ``id:`` its seq, ``data:`` its line exactly as it is in the
log (what ``convlog tail --json`` prints, without the newline). A client that
reconnects with ``Last-Event-ID: SEQ`` (an ``EventSource`` does it by itself) gets the
records after that seq, with none lost and none repeated; a new client gets the newest
``n`` matching records first (``tail -n N -f``; none by default). Then a comment
``: following after seq SEQ`` says from where on every record will come (a client that
must not miss one waits for it); further comments (``: ping``) keep idle connections
open every :data:`PING_S` seconds.

Live reads a log directory (``convlog serve --dir``); with ``--db`` there is no Live
(the endpoint answers 404 and the page says so).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
from sse_starlette import ServerSentEvent

from convlog.readers.tail import Follower, RecordFilter, TailRecord, newest, watch_log
from convlog.store.segment import list_segments, segment_key

#: Seconds between keep-alive comments on an idle stream.
PING_S = 15

#: Records sent at most when a stream starts (``?n=``).
BACKLOG_MAX = 500


def start_position(directory: Path, after: int) -> tuple[str, int] | None:
    """Where to start reading for the records after seq ``after``: the start of the
    segment that holds ``after + 1`` (segments are named by their first seq), or None
    (the log's beginning) when there is no segment yet."""
    segments = list_segments(directory)
    if not segments:
        return None
    index = bisect.bisect_right([first for first, _ in segments], after + 1) - 1
    return segment_key(segments[max(0, index)][1]), 0


def event_of(item: TailRecord) -> ServerSentEvent:
    """One record as an event: its seq as the id, its log line (without the newline) as
    the data."""
    line = (item.line or b"").rstrip(b"\r\n").decode("utf-8", "replace")
    return ServerSentEvent(data=line, id=str(item.record["seq"]))


class LiveFeed:
    """The records appended to one log directory, for any number of streams.

    Args:
        directory: the log directory (it need not exist yet: the watch waits for it).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._waiting: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._thread: threading.Thread | None = None

    # -- the watch thread

    def _wake_all(self) -> None:
        with self._lock:
            waiting = list(self._waiting)
        for loop, event in waiting:
            with contextlib.suppress(RuntimeError):  # that loop is closed: its stream is gone
                loop.call_soon_threadsafe(event.set)

    def _watch(self) -> None:
        while not self.stop.is_set():
            try:
                watch_log(self.directory, self._wake_all, self.stop)
            except Exception as exc:
                print(f"convlog serve: watching {self.directory} for Live failed: {exc}; retrying",
                      file=sys.stderr, flush=True)
                self._wake_all()
                self.stop.wait(1.0)

    def _subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._waiting.add((asyncio.get_running_loop(), event))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="convlog-live-watch", daemon=True)
                self._thread.start()
        return event

    def _unsubscribe(self, event: asyncio.Event) -> None:
        with self._lock:
            self._waiting = {(loop, e) for loop, e in self._waiting if e is not event}

    def close(self) -> None:
        """End the watch thread (within one watchfiles step)."""
        self.stop.set()

    # -- one stream

    async def events(self, keep: RecordFilter, after: int | None, backlog: int) -> AsyncIterator[ServerSentEvent]:
        """The events of one client: after seq ``after`` (a reconnection's
        ``Last-Event-ID``) or, when None, the newest ``backlog`` matching records, then
        each new matching record as it is appended, until the client goes away or
        the server stops.

        Args:
            keep: which records (``?session=``, ``?kind=``).
            after: send the records after this seq.
            backlog: for a new client, how many of the newest records to send first.
        """
        if after is not None:
            position = await anyio.to_thread.run_sync(start_position, self.directory, after)
            follower = Follower(self.directory, position, after, keep, raw=True)
        else:
            start = await anyio.to_thread.run_sync(lambda: newest(self.directory, backlog, keep, raw=True))
            for item in start.records:
                yield event_of(item)
            follower = Follower(self.directory, start.position, start.last_seq, keep, raw=True)
        # Every record after this seq will come: a client may act (publish, test) from here on.
        yield ServerSentEvent(comment=f"following after seq {follower.last_seq}")
        wake = self._subscribe()
        try:
            while True:
                wake.clear()  # before reading: a change during the read wakes the next wait
                batch = await anyio.to_thread.run_sync(follower.poll)
                for item in batch.records:
                    yield event_of(item)
                await wake.wait()
        finally:
            self._unsubscribe(wake)
