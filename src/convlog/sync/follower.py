"""The sync follower: reads a log from where the database says it stopped and writes its
records in batches (:func:`convlog.db.writer.write_batch`); the views made from them, the
search projection (:func:`convlog.db.search.index`) and the sessions they touched
(:func:`convlog.db.projection.project`), follow after.

Records first: a batch's transaction holds only its records (and what is read off
them row by row: positions, llm requests, gaps), so they are durable and readable as
soon as they can be. The views are made from the database's records afterwards, each in
its own transactions with its own position: by ``--once`` when the records are all
written, and by ``--follow`` in a child process (:class:`ViewProcess`: folding a
family in Python would otherwise hold the records' thread back on the GIL) at a lower
priority, one thread per view, each on its own connection (the search vectors are
PostgreSQL's work, the projections mostly the fold's, so the two overlap). The search rows are made
after each batch once the records are caught up, at most every :data:`VIEWS_EVERY_S`
while they are behind; the projections at most every :data:`VIEWS_EVERY_S` always (a
projection folds a session's whole family again, so a long session busy with messages
would otherwise be folded after every batch). Both are exactly once on their own (see
their modules), so a crash between the two only delays the views.

Where it starts: the position the database acknowledged for this log (``convlog.positions``,
written in the same transaction as the records), never a local file, so a crash of the
follower, the recorder or the database between any two steps loses and repeats
nothing. When that position's segment is gone (retention let it go after it was synced),
it reads on from the segment holding the next seq. The log's identity is
``DIR/log_id`` (:mod:`convlog.store.identity`).

After each batch it writes ``DIR/recovery/sync.json`` (the position and the lag, for
``convlog status`` and for retention, which keeps every segment not yet synced), and
updates its Prometheus metrics. When the database goes away it logs once, retries with
a back-off (0.5 s doubling to 30 s) and resumes by itself; ``--once`` ends when the log's
end is written, ``--follow`` waits for new records (watchfiles, or a poll).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from convlog.core.fold import State, Step, fold
from convlog.core.record import PURGED_KIND
from convlog.db.projection import project_all
from convlog.db.rows import parse_ts, pg_text, record_row
from convlog.db.schema import first_line, migrate, redact_url
from convlog.db.search import index_all
from convlog.db.writer import Batch, Position, note_log_end, register_log, write_batch
from convlog.store.identity import ensure_log_id
from convlog.store.segment import EVENTS, RECOVERY, follow_lines, list_segments, segment_key, segments_from
from convlog.store.sync_state import sync_path, write_sync_state

log = logging.getLogger("convlog.sync")

#: Most records per batch (one transaction).
BATCH_RECORDS = 5000
#: Most line bytes per batch.
BATCH_BYTES = 16 * 1024 * 1024
#: The views are made at most this often, seconds: the search rows while the records
#: are behind the log (after each batch once caught up), the projections always.
VIEWS_EVERY_S = 1.0
#: The niceness of the views' process (setpriority(2)), above the records'.
VIEWS_NICE = 10
#: Back-off after a database error: first and longest wait, seconds.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0




def _extract(record: dict[str, Any]) -> list[Step]:
    """The fold's steps of one ``llm.request`` or ``recorder.gap`` record (on its own)."""
    steps: list[Step] = []
    fold(State(), record, observe=steps.append)
    return steps


def _purge_of(record: dict[str, Any]) -> tuple[str, str | None, int | None] | None:
    """``(session, before, upto_seq)`` of a ``session.purged`` record
    (:func:`convlog.core.purge.purged_data`), or None when its data is not that shape."""
    data = record.get("data")
    if not isinstance(data, dict):
        return None
    session, before, upto = data.get("session"), data.get("before"), data.get("upto_seq")
    if not isinstance(session, str) or not (before is None or isinstance(before, str)):
        return None
    return session, before, upto if isinstance(upto, int) and not isinstance(upto, bool) else None


def _log_end(directory: Path) -> int | None:
    """The recorder's written seq from ``recovery/state.json`` (None when unknown)."""
    try:
        state = orjson.loads((directory / RECOVERY / "state.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    seq = state.get("written_seq") if isinstance(state, dict) else None
    return seq if isinstance(seq, int) else None


def open_connection(url: str, connect: Callable[[], Any] | None = None) -> Any:
    """A new connection to the database, set up for the sync: autocommit, JSON parsed by
    orjson, commits not waiting for their WAL flush.

    Args:
        url: the database URL.
        connect: opens the connection instead of ``psycopg.connect(url)`` (tests).

    Raises:
        psycopg.Error: when the database cannot be reached.
    """
    import psycopg
    from psycopg.types.json import set_json_loads

    conn = connect() if connect is not None else psycopg.connect(url, autocommit=True)
    set_json_loads(orjson.loads, conn)
    # A commit does not wait for its WAL flush: a database crash may lose the last
    # transactions whole (records and position together, never one without the
    # other), and the sync then writes them again. Exactly once either way.
    conn.execute("SET synchronous_commit = off")
    return conn


class SyncLockedError(Exception):
    """Another ``convlog sync`` already follows this log directory (the message names its
    pid): one follower per log and host (``DIR/recovery/sync.lock``, flock)."""


@contextlib.contextmanager
def sync_lock(directory: Path) -> Iterator[None]:
    """Hold ``DIR/recovery/sync.lock`` (flock, exclusive, not waiting) for one follower.

    Raises:
        SyncLockedError: when another process holds it.
        OSError: when it cannot be created.
    """
    import fcntl

    path = Path(directory) / RECOVERY / "sync.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            raise SyncLockedError(f"a convlog sync (pid {holder}) already follows {directory}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def sync_running(directory: Path) -> bool:
    """Whether a follower holds ``DIR/recovery/sync.lock`` now."""
    try:
        with sync_lock(directory):
            return False
    except SyncLockedError:
        return True
    except OSError:
        return False


@dataclass(slots=True)
class SyncStats:
    """What the follower did since it started (status, metrics, tests).

    Attributes:
        records: records new to the database.
        batches: batches written.
        errors: database errors met (each followed by a retry).
        seq: the last seq the database holds for this log.
        lag_records: records of the log not yet in the database (as last seen).
        lag_s: how long the oldest of them has waited, seconds (0 when caught up).
        projected: dirty sessions projected.
        indexed: records the search projection moved past.
        view_errors: database errors met while making the views (each retried).
    """

    records: int = 0
    batches: int = 0
    errors: int = 0
    seq: int = 0
    lag_records: int = 0
    lag_s: float = 0.0
    projected: int = 0
    indexed: int = 0
    view_errors: int = 0
    last_error: str | None = None
    started: float = field(default_factory=time.time)


class Follower:
    """Follows one log directory into one database.

    Args:
        directory: the log directory.
        url: the PostgreSQL connection URL (libpq form, ``postgresql://…``).
        batch_records: most records per transaction.
        on_batch: called after each batch with the :class:`SyncStats` (metrics), or None.
        connect: opens a connection (default ``psycopg.connect(url)``); for tests.
    """

    def __init__(self, directory: Path, url: str, batch_records: int = BATCH_RECORDS,
                 on_batch: Callable[[SyncStats], None] | None = None,
                 connect: Callable[[], Any] | None = None) -> None:
        self.directory = Path(directory)
        self.url = url
        self.where = redact_url(url)
        self.batch_records = batch_records
        self.on_batch = on_batch
        self._connect = connect
        self.stats = SyncStats()
        self.stop = threading.Event()
        self.log_id = ""
        self._conn: Any = None
        self._position: Position | None = None
        self._views: ViewProcess | None = None
        #: The ``convlog`` logger's level name the views' process gets (``--follow``).
        self.log_level = logging.getLevelName(logging.getLogger("convlog").getEffectiveLevel())

    # -- the database --------------------------------------------------------------------

    def open(self) -> Any:
        """A new connection to the database, set up for the sync
        (:func:`open_connection`, or the ``connect`` given for tests).

        Raises:
            psycopg.Error: when the database cannot be reached.
        """
        return open_connection(self.url, self._connect)

    def connect(self) -> Any:
        """Connect (:meth:`open`), migrate the schema and register this log; returns the
        connection.

        Raises:
            psycopg.Error, SchemaError: when the database cannot be used.
        """
        conn = self.open()
        migrate(conn)
        self.log_id = ensure_log_id(self.directory)
        return conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                self._conn.close()
            self._conn = None

    # -- reading the log -----------------------------------------------------------------

    def _lines(self, position: Position | None) -> Iterator[tuple[bytes, dict[str, Any], str, int]]:
        """The log's complete records after ``position`` (see the module doc)."""
        after = position.seq if position is not None else 0
        if position is None:
            yield from follow_lines(self.directory, None, self._on_error)
            return
        names = {segment_key(path) for _, path in list_segments(self.directory)}
        if segment_key(position.segment) in names:
            yield from follow_lines(self.directory, (position.segment, position.offset), self._on_error)
            return
        # The segment went (retention, after it was synced): from the one holding the next seq.
        paths = segments_from(self.directory, after + 1)
        if not paths:
            return
        for line, record, key, offset in follow_lines(self.directory, (segment_key(paths[0]), 0), self._on_error):
            if record["seq"] > after:
                yield line, record, key, offset

    def _on_error(self, segment: str, line: int, reason: str) -> None:
        log.warning("skipping a line of %s (line %d from the read position): %s", segment, line, reason)

    def read_batch(self, position: Position | None) -> Batch | None:
        """The next batch after ``position``, or None when the log has nothing new.

        Raises:
            OSError: when a segment cannot be read.
        """
        rows: list[tuple[Any, ...]] = []
        sessions: set[str] = set()
        llm: list[tuple[Any, ...]] = []
        gaps: list[tuple[Any, ...]] = []
        purges: list[tuple[str, str | None, int | None]] = []
        size = 0
        last: tuple[int, str, int] | None = None
        after = position.seq if position is not None else 0
        for line, record, key, offset in self._lines(position):
            seq = record["seq"]
            if seq <= after:
                continue  # a record the database has (a log rewritten by purge keeps its seqs)
            rows.append(record_row(self.log_id, line, record))
            session = record.get("session")
            if isinstance(session, str):
                sessions.add(session)
            kind = record.get("kind")
            if kind == PURGED_KIND:
                purge = _purge_of(record)
                if purge is not None:
                    purges.append(purge)
            if kind in ("llm.request", "recorder.gap"):
                for step in _extract(record):
                    if step.effect == "llm.request":
                        d = step.detail
                        llm.append((seq, parse_ts(record.get("ts")), pg_text(step.session), pg_text(d["model"]),
                                    d["input_tokens"], d["output_tokens"], d["cost_usd"]))
                    elif step.effect == "gap":
                        gap = step.detail["gap"]
                        gaps.append((seq, parse_ts(gap.ts), pg_text(gap.publisher), gap.first, gap.last))
            last = (seq, key, offset)
            after = seq
            size += len(line)
            if len(rows) >= self.batch_records or size >= BATCH_BYTES:
                break
        if last is None:
            return None
        end = _log_end(self.directory)
        return Batch(rows, sessions, llm, gaps, Position(last[0], last[1], last[2]),
                     log_seq=max(end or 0, last[0]), purges=purges)

    # -- the loop ------------------------------------------------------------------------

    def run(self, follow: bool, poll_s: float = 1.0) -> int:
        """Sync until the log's end (``follow`` False) or until :attr:`stop` is set,
        holding the log's sync lock (:func:`sync_lock`).

        Database errors are retried with a back-off (logged once per outage); a log
        that cannot be read stops it.

        Returns:
            0.

        Raises:
            SyncLockedError: when another follower holds the log.
            OSError: when the log cannot be read.
            SchemaError: when the database's schema is newer than this convlog's.
        """
        with sync_lock(self.directory):
            try:
                return self._run(follow, poll_s)
            finally:
                if self._views is not None:
                    self._views.stop()
                    self._views.read_into(self.stats)
                    self._views = None

    def _run(self, follow: bool, poll_s: float) -> int:
        from psycopg import errors

        from convlog.db.schema import DatabaseError, SchemaError

        #: Errors no retry can mend: the database refuses writes (a standby) or this user.
        fatal = (errors.ReadOnlySqlTransaction, errors.InsufficientPrivilege)
        backoff = RETRY_FIRST_S
        failing = False
        while not self.stop.is_set():
            try:
                if self._conn is None:
                    self._conn = self.connect()
                    position = register_log(self._conn, self.log_id, socket.gethostname(), str(self.directory))
                    if follow and self._views is None:  # the schema is there now
                        self._views = ViewProcess(self.url, self.log_id, self.log_level)
                    if failing:
                        log.warning("database %s reachable again: resuming at seq %s", self.where,
                                    position.seq if position else 0)
                    failing = False
                    backoff = RETRY_FIRST_S
                caught_up = self.step(position)
                position = self._position
                if caught_up:
                    if not follow:
                        self.make_views(self._conn)
                        log.info("log %s (%s) is in %s up to seq %d: %d records written by this run",
                                 self.log_id, self.directory, self.where, self.stats.seq or
                                 (position.seq if position else 0), self.stats.records)
                        self._close()
                        return 0
                    self._wait(poll_s)
            except (SchemaError, OSError):
                self._close()
                raise
            except fatal as exc:
                self._close()
                what = "is read-only (a standby? give the primary's URL)" if isinstance(
                    exc, errors.ReadOnlySqlTransaction) else "refuses this user"
                raise DatabaseError(f"database {self.where} {what}: {first_line(exc)}") from None
            except Exception as exc:  # psycopg.Error and what a dropped connection raises
                self._close()
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {first_line(exc)}"
                if not failing:
                    log.error("database %s: %s; retrying", self.where, self.stats.last_error)
                failing = True
                self.stop.wait(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
        self._close()
        return 0

    def step(self, position: Position | None) -> bool:
        """Write one batch after ``position`` (the views follow: see the module doc).

        Returns:
            True when the log had nothing new (caught up).
        """
        self._position = position
        batch = self.read_batch(position)
        stats = self.stats
        if batch is None:
            end = _log_end(self.directory)
            stats.lag_records, stats.lag_s = 0, 0.0
            if position is not None:
                note_log_end(self._conn, self.log_id, max(end or 0, position.seq))
            self._save(position)
            return True
        written = write_batch(self._conn, self.log_id, batch)
        stats.records += written
        stats.batches += 1
        stats.seq = batch.position.seq
        self._position = batch.position
        behind = max(0, (batch.log_seq or 0) - batch.position.seq)
        stats.lag_records = behind
        last_ts = batch.rows[-1][2] if batch.rows else None
        stats.lag_s = (max(0.0, (datetime.now(UTC) - last_ts).total_seconds())
                       if behind and isinstance(last_ts, datetime) else 0.0)
        self._save(batch.position)
        if self.on_batch is not None:
            self.on_batch(stats)
        if self._views is not None:
            self._views.poke(behind=stats.lag_records > 0)
            self._views.read_into(stats)
        return False

    def make_views(self, conn: Any) -> None:
        """Bring the views of this log up to its records in the database, one after the
        other: its search rows (:func:`convlog.db.search.index_all`), then every session
        marked dirty (:func:`convlog.db.projection.project_all`, other logs' too).
        ``--once`` does this; ``--follow`` has its :class:`ViewProcess`.

        Raises:
            psycopg.Error: when the database fails (what was made stays made).
        """
        self.stats.indexed += index_all(conn, self.log_id)
        self.stats.projected += project_all(conn)

    def _save(self, position: Position | None) -> None:
        """Write ``DIR/recovery/sync.json`` (a failure is logged, never raised)."""
        data = {"log_id": self.log_id, "db": self.where, "seq": position.seq if position else 0,
                "segment": position.segment if position else None, "offset": position.offset if position else 0,
                "lag_records": self.stats.lag_records, "lag_s": round(self.stats.lag_s, 3),
                "updated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "pid": os.getpid()}
        try:
            write_sync_state(self.directory, data)
        except OSError as exc:
            log.warning("cannot write %s: %s", sync_path(self.directory), exc)

    def _wait(self, timeout_s: float) -> None:
        """Wait until the log changes (watchfiles on ``events/``: inotify where there is
        one), at most ``timeout_s`` seconds, or until :attr:`stop` is set."""
        from watchfiles import watch

        events = self.directory / EVENTS
        if not events.is_dir():
            self.stop.wait(timeout_s)
            return
        for _changes in watch(events, stop_event=self.stop, debounce=20, step=20,
                              rust_timeout=int(timeout_s * 1000), yield_on_timeout=True):
            return


@dataclass
class ViewSignals:
    """What the follower's process and its views' process share (``multiprocessing``
    objects of one context).

    Attributes:
        wanted: per view (``"search"``, ``"projections"``), set by the follower after
            each batch, cleared by the view when it starts a round.
        halt: set to stop the views' process.
        behind: 1 while the records are behind the log (the views wait their turn).
        counters: ``indexed``, ``projected`` and ``errors`` (shared 64-bit integers).
    """

    wanted: dict[str, Any]
    halt: Any
    behind: Any
    counters: dict[str, Any]

    @classmethod
    def make(cls, context: Any) -> ViewSignals:
        """New signals from a ``multiprocessing`` context."""
        return cls(wanted={view: context.Event() for view in VIEWS}, halt=context.Event(),
                   behind=context.Value("b", 0), counters={name: context.Value("q", 0)
                                                          for name in ("indexed", "projected", "errors")})

    def add(self, name: str, count: int) -> None:
        counter = self.counters[name]
        with counter.get_lock():
            counter.value += count


#: The views made by ``--follow``'s second process, each in a thread of its own.
VIEWS = ("search", "projections")


class ViewProcess:
    """``--follow``'s views, made in a child process (its own interpreter, so folding
    a family never holds the records' thread back on the GIL), at niceness
    :data:`VIEWS_NICE` (the records get the CPU first). It runs one :class:`ViewMaker`
    thread per view; it ends when :meth:`stop` is called or when its parent is gone
    (a ``kill -9`` of the sync), checked every :data:`VIEWS_EVERY_S`.

    Args:
        url: the database URL.
        log_id: the log's id (its search rows are made; every dirty session is projected).
        level: the :mod:`logging` level name of the ``convlog`` logger in the child.
    """

    def __init__(self, url: str, log_id: str, level: str) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.signals = ViewSignals.make(context)
        self.process = context.Process(target=_views_main, args=(url, log_id, level, self.signals, os.getpid()),
                                       name="convlog-sync-views", daemon=True)
        self.process.start()

    def poke(self, behind: bool) -> None:
        """After a batch: the views have work; ``behind`` says the records are behind the log."""
        self.signals.behind.value = int(behind)
        for event in self.signals.wanted.values():
            event.set()

    def read_into(self, stats: SyncStats) -> None:
        """Copy the views' counters into the follower's stats (for metrics)."""
        counters = self.signals.counters
        stats.indexed, stats.projected, stats.view_errors = (
            counters["indexed"].value, counters["projected"].value, counters["errors"].value)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the views' process to end and wait for it (then terminate it)."""
        self.signals.halt.set()
        for event in self.signals.wanted.values():
            event.set()
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


def _views_main(url: str, log_id: str, level: str, signals: ViewSignals, parent: int) -> None:
    """The views' process (see :class:`ViewProcess`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("convlog")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, VIEWS_NICE)  # this thread; the view threads inherit it
    where = redact_url(url)

    def make_search(conn: Any) -> None:
        signals.add("indexed", index_all(conn, log_id))

    def make_projections(conn: Any) -> None:
        signals.add("projected", project_all(conn))

    def connect() -> Any:
        return open_connection(url)

    makers = [ViewMaker("search", make_search, connect, signals, log_id, where),
              ViewMaker("projections", make_projections, connect, signals, log_id, where, paced=True)]
    for maker in makers:
        maker.start()
    while not signals.halt.wait(VIEWS_EVERY_S):
        if os.getppid() != parent:
            log.warning("views of %s: the sync that started them is gone; stopping", log_id)
            signals.halt.set()
    for event in signals.wanted.values():
        event.set()
    for maker in makers:
        maker.join(30)


class ViewMaker(threading.Thread):
    """A thread of the views' process making one view on its own connection: when
    woken after a batch, and at least every :data:`VIEWS_EVERY_S` (other logs'
    followers mark sessions dirty too); at most that often while the records are behind
    the log, or always with ``paced``. A database error is logged once per outage and
    retried with the follower's back-off; the records go on meanwhile.

    Args:
        view: a name of :data:`VIEWS` (its signal, its name in logs and the thread's).
        make: makes the view, given the connection.
        open_connection: opens a connection (:func:`open_connection`).
        signals: what it shares with the follower's process.
        log_id, where: what names the log and the database in its messages.
        paced: at most every :data:`VIEWS_EVERY_S` even when the records are caught up.
    """

    def __init__(self, view: str, make: Callable[[Any], None], open_connection: Callable[[], Any],
                 signals: ViewSignals, log_id: str, where: str, paced: bool = False) -> None:
        super().__init__(name=f"convlog-sync-{view}", daemon=True)
        self.view, self.make, self.open_connection = view, make, open_connection
        self.signals, self.log_id, self.where, self.paced = signals, log_id, where, paced

    def run(self) -> None:
        signals = self.signals
        wanted, halt = signals.wanted[self.view], signals.halt
        conn: Any = None
        backoff = RETRY_FIRST_S
        failing = False
        while not halt.is_set():
            wanted.wait(VIEWS_EVERY_S)
            wanted.clear()
            if halt.is_set():
                break
            started = time.monotonic()
            try:
                if conn is None:
                    conn = self.open_connection()
                self.make(conn)
                if failing:
                    log.warning("%s of %s: database %s reachable again", self.view, self.log_id, self.where)
                failing, backoff = False, RETRY_FIRST_S
            except Exception as exc:  # psycopg.Error and what a dropped connection raises
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                signals.add("errors", 1)
                if not failing:
                    log.error("%s of %s: database %s: %s; retrying", self.view, self.log_id, self.where,
                              first_line(exc))
                failing = True
                halt.wait(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
                continue
            if self.paced or signals.behind.value:  # records first while behind
                halt.wait(max(0.0, VIEWS_EVERY_S - (time.monotonic() - started)))
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
