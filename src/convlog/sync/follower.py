"""The sync follower: reads a log from where the database says it stopped and writes its
records in batches (:func:`convlog.db.writer.write_batch`); the views made from them, the
search projection (:func:`convlog.db.search.index`) and the sessions they touched
(:func:`convlog.db.projection.project`), follow after.

Records first: a batch's transaction holds only its records (and what is read off
them row by row: positions, llm requests, gaps), so they are durable and readable as
soon as they can be. The views are made from the database's records afterwards, each in
its own transactions with its own position: by ``--once`` when the records are all
written, and by ``--follow`` in two more threads, one per view, each on its own
connection (:class:`ViewMaker`: the search vectors are PostgreSQL's work, the
projections mostly the fold's in Python, so the two overlap). The search rows are made
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
from convlog.db.projection import project_all
from convlog.db.rows import parse_ts, pg_text, record_row
from convlog.db.schema import first_line, migrate
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
#: The niceness of the threads making the views (setpriority(2)), above the records'.
VIEWS_NICE = 10
#: Back-off after a database error: first and longest wait, seconds.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0


def redact_url(url: str) -> str:
    """A database URL without its password (for logs, status and files)."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(url)
    except Exception:
        return "<database>"
    if "password" in params:
        params["password"] = "***"
    if url.startswith(("postgresql://", "postgres://")):
        host = params.get("host", "")
        port = f":{params['port']}" if params.get("port") else ""
        user = f"{params['user']}@" if params.get("user") else ""
        return f"postgresql://{user}{host}{port}/{params.get('dbname', '')}"
    return make_conninfo(**params)


def _extract(record: dict[str, Any]) -> list[Step]:
    """The fold's steps of one ``llm.request`` or ``recorder.gap`` record (on its own)."""
    steps: list[Step] = []
    fold(State(), record, observe=steps.append)
    return steps


def _log_end(directory: Path) -> int | None:
    """The recorder's written seq from ``recovery/state.json`` (None when unknown)."""
    try:
        state = orjson.loads((directory / RECOVERY / "state.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    seq = state.get("written_seq") if isinstance(state, dict) else None
    return seq if isinstance(seq, int) else None


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
        self._views: list[ViewMaker] = []

    # -- the database --------------------------------------------------------------------

    def open(self) -> Any:
        """A new connection to the database, set up for the sync (autocommit, JSON
        parsed by orjson, commits not waiting for their WAL flush).

        Raises:
            psycopg.Error: when the database cannot be reached.
        """
        import psycopg
        from psycopg.types.json import set_json_loads

        conn = self._connect() if self._connect is not None else psycopg.connect(self.url, autocommit=True)
        set_json_loads(orjson.loads, conn)
        # A commit does not wait for its WAL flush: a database crash may lose the last
        # transactions whole (records and position together, never one without the
        # other), and the sync then writes them again. Exactly once either way.
        conn.execute("SET synchronous_commit = off")
        return conn

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
                     log_seq=max(end or 0, last[0]))

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
            if not follow:
                return self._run(follow, poll_s)
            self._views = [ViewMaker(self, "search", self.make_search_rows),
                           ViewMaker(self, "projections", self.make_projections, paced=True)]
            for views in self._views:
                views.start()
            try:
                return self._run(follow, poll_s)
            finally:
                for views in self._views:
                    views.halt.set()
                    views.wanted.set()
                for views in self._views:
                    views.join(timeout=30)
                self._views = []

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
        for views in self._views:
            views.wanted.set()
        return False

    def make_views(self, conn: Any) -> None:
        """Bring the views of this log up to its records in the database, one after the
        other (:meth:`make_search_rows`, :meth:`make_projections`).

        Raises:
            psycopg.Error: when the database fails (what was made stays made).
        """
        self.make_search_rows(conn)
        self.make_projections(conn)

    def make_search_rows(self, conn: Any) -> None:
        """This log's search rows up to its records in the database
        (:func:`convlog.db.search.index_all`).

        Raises:
            psycopg.Error: when the database fails (what was made stays made).
        """
        self.stats.indexed += index_all(conn, self.log_id)

    def make_projections(self, conn: Any) -> None:
        """Every session marked dirty projected (:func:`convlog.db.projection.project_all`,
        other logs' sessions too).

        Raises:
            psycopg.Error: when the database fails (what was made stays made).
        """
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


class ViewMaker(threading.Thread):
    """A ``--follow`` thread making one view on its own connection: when woken after a
    batch, and at least every :data:`VIEWS_EVERY_S` (other logs' followers mark sessions
    dirty too); at most that often while the records are behind the log, or always
    with ``paced``. A database error is logged once per outage and retried with the
    follower's back-off; the records go on meanwhile.

    Args:
        follower: the follower whose log it makes views of (its :meth:`Follower.open`,
            ``log_id`` and stats are used).
        view: its name in logs and the thread's name.
        make: makes the view, given the connection (e.g. :meth:`Follower.make_search_rows`).
        paced: at most every :data:`VIEWS_EVERY_S` even when the records are caught up.
    """

    def __init__(self, follower: Follower, view: str, make: Callable[[Any], None], paced: bool = False) -> None:
        super().__init__(name=f"convlog-sync-{view}", daemon=True)
        self.follower = follower
        self.view = view
        self.make = make
        self.paced = paced
        #: Set after each batch (and to stop).
        self.wanted = threading.Event()
        #: Set to stop.
        self.halt = threading.Event()

    def run(self) -> None:
        # Records first: this thread yields the CPU to the records' thread (Linux
        # schedules threads one by one; raising one's own niceness needs no privilege).
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), VIEWS_NICE)
        follower = self.follower
        conn: Any = None
        backoff = RETRY_FIRST_S
        failing = False
        while not self.halt.is_set():
            self.wanted.wait(VIEWS_EVERY_S)
            self.wanted.clear()
            if self.halt.is_set() or not follower.log_id:
                continue
            started = time.monotonic()
            try:
                if conn is None:
                    conn = follower.open()
                self.make(conn)
                if failing:
                    log.warning("%s of %s: database %s reachable again", self.view, follower.log_id, follower.where)
                failing, backoff = False, RETRY_FIRST_S
            except Exception as exc:  # psycopg.Error and what a dropped connection raises
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                follower.stats.view_errors += 1
                if not failing:
                    log.error("%s of %s: database %s: %s; retrying", self.view, follower.log_id, follower.where,
                              first_line(exc))
                failing = True
                self.halt.wait(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
                continue
            if self.paced or follower.stats.lag_records > 0:  # records first while behind
                self.halt.wait(max(0.0, VIEWS_EVERY_S - (time.monotonic() - started)))
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
