"""Benchmark: how fast, how far behind and how big is ``convlog sync`` into PostgreSQL?

Everything runs against a real local PostgreSQL: by default one started for the run the
way the tests start theirs (``tests/pg_server.py``: initdb + pg_ctl in a fresh directory
under /tmp, 127.0.0.1 on a free port, ``fsync = on``, ``shared_buffers = 32MB``), or an
existing server with ``--db URL`` (its user must be allowed to CREATE DATABASE; the
databases made for the run are dropped at the end). Each part gets a fresh database.

1. Throughput (in-process, not the CLI): a log of ``--records`` records (default
   100,000) is built from real payloads (ShareGPT conversations as native ``message``
   events, ~1 KB, stamped like a :class:`convlog.bus.publisher.Publisher`'s), each made
   into a line by :meth:`convlog.core.ingest.Ingest.line` and written with
   :class:`convlog.store.writer.SegmentWriter` (hash chain on, plain segments, not
   sealed). Then ``Follower(directory, url).run(follow=False)`` (what ``convlog sync
   --once`` runs) is timed into a fresh database. It writes the records first, then
   makes the views from them (the search projection, then the session projections;
   see convlog.sync.follower). Two rates: records/s *into the database* (from the start,
   schema migration included, until the last batch of records is committed: what the
   target is about), and records/s of the whole sync with the views made. The
   follower's parts are timed by wrapping them for the run (``Follower.read_batch``,
   ``write_batch``, ``index_all`` and ``project_all`` as the follower calls them), so
   each is measured in the same run, not from a second one. Target >= 20,000/s.
2. Naive baseline, same run, same records: one ``INSERT INTO convlog.records (...)
   VALUES (...)`` per record in autocommit mode (each its own transaction, so one WAL
   flush each) into another fresh database with the same schema
   (:func:`convlog.db.schema.migrate`), values from :func:`convlog.db.rows.record_row`,
   reading the same log; capped at ``--naive-seconds`` (default 20), its rate computed
   from what it did. Printed: sync / naive.
3. Lag while recording: ``convlog broker``, ``convlog record`` (defaults: fsync interval
   50 ms, redaction, chain, zstd sealing of 64 MiB segments) and ``convlog sync --follow``
   run as subprocesses; a publisher subprocess (``bench_record.py``'s publisher role)
   sends at ``--lag-rate`` msg/s (default 5,000) for ``--lag-seconds`` (default 20).
   This process polls the database every ``--poll-ms`` (50 ms) for new rows
   (``SELECT seq, ts FROM convlog.records WHERE seq > %s ORDER BY seq``) and takes the
   wall clock when each poll returns: a record's lag = that time - its ``ts`` (the
   recorder's receive time, same machine and clock). It is late by at most one poll
   interval plus the query's time (an upper bound on the true lag; both are printed).
   Lags are of the published messages (records with ``source = 'sub'``). A second
   poller does the same for the search rows (``convlog.search`` joined to the records'
   ``ts``): how long until a message is findable by ``search --db``. At the end the
   publisher is done, the recorder is stopped (SIGTERM), and the database must hold
   every record of the log (count and last seq); then the time from the publisher's end
   until the views are made (search position at the log's end, no dirty session) is
   taken. Target p99 < 1 s (of the records).
4. Size: ``pg_total_relation_size`` of ``convlog.records`` (table, TOAST and indexes),
   of ``convlog.search`` and of all ``convlog`` tables together, per record, against the log's bytes per
   record on disk (part 1: plain segments; part 3: as the recorder left them, zstd-sealed
   segments and the plain open one, counted separately).

A table (rich) and PASS/FAIL lines are printed; a missed target does not change the
exit code (1 only when something crashed or records are missing). A ``CHECKPOINT`` is
issued before each part, so none pays for the WAL of the one before. ``--profile PATH``
also writes a cProfile of the part-1 sync (``python -m pstats PATH``), made by a
second, untimed sync of the same log into another database.

Run (from the project root, with the ``test`` and ``demo`` extras installed)::

    python scripts/bench_sync.py --quick                # 20,000 records, 5 s of lag
    python scripts/bench_sync.py                        # 100,000 records, 20 s at 5,000/s
    python scripts/bench_sync.py --db postgresql://me@127.0.0.1/postgres --json /tmp/sync.json
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench_record import Lines, prepare, read_messages
from benchmark import Processes, fmt, free_port, print_targets, ratio, write_json

ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT_TARGET = 20_000.0
LAG_P99_TARGET_S = 1.0


# -- the server ------------------------------------------------------------------------------


class Server:
    """The PostgreSQL of the run: our own (tests/pg_server.py) or ``--db URL``; the
    databases made for the run are dropped by :meth:`close`, our server stopped and
    removed."""

    def __init__(self, url: str | None) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        import pg_server

        self._pg = pg_server
        self.own = None
        if url is None:
            self.own = pg_server.PgServer().start()
            url = self.own.url
        self.url = url
        self.made: list[str] = []

    def database(self, tag: str) -> str:
        name = f"bench_sync_{tag}_{uuid.uuid4().hex[:8]}"
        url = self._pg.create_database(self.url, name)
        self.made.append(name)
        return url

    def close(self) -> None:
        try:
            if self.own is None:
                for name in self.made:
                    with contextlib.suppress(Exception):
                        self._pg.drop_database(self.url, name)
        finally:
            if self.own is not None:
                self.own.close()


def db_sizes(url: str) -> dict[str, int]:
    """Bytes of ``convlog.records`` (with TOAST and indexes) and of all convlog tables."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        records = conn.execute("SELECT pg_total_relation_size('convlog.records')").fetchone()[0]
        search = conn.execute("SELECT pg_total_relation_size('convlog.search')").fetchone()[0]
        total = conn.execute("""SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
                                JOIN pg_namespace n ON n.oid = c.relnamespace
                                WHERE n.nspname = 'convlog' AND c.relkind IN ('r', 'p')""").fetchone()[0]
        heap = conn.execute("SELECT pg_relation_size('convlog.records')").fetchone()[0]
        toast = conn.execute("""SELECT coalesce(pg_total_relation_size(reltoastrelid), 0) FROM pg_class
                                WHERE oid = 'convlog.records'::regclass""").fetchone()[0]
        indexes = conn.execute("SELECT pg_indexes_size('convlog.records')").fetchone()[0]
    return {"records": int(records), "search": int(search), "all_tables": int(total), "records_heap": int(heap),
            "records_toast": int(toast), "records_indexes": int(indexes)}


def log_sizes(directory: Path) -> dict[str, int]:
    """Bytes of the log's segment files on disk: sealed (zstd) and plain."""
    from convlog.store.segment import is_sealed, list_segments

    sealed = plain = 0
    for _, path in list_segments(directory):
        size = path.stat().st_size
        if is_sealed(path):
            sealed += size
        else:
            plain += size
    return {"sealed_zstd": sealed, "plain": plain, "total": sealed + plain}


def db_count(url: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        count, last = conn.execute("SELECT count(*), coalesce(max(seq), 0) FROM convlog.records").fetchone()
    return int(count), int(last)


def log_count(directory: Path) -> tuple[int, int]:
    from convlog.store.segment import iter_lines

    count = last = 0
    for line in iter_lines(directory):
        count += 1
        last = orjson.loads(line)["seq"]
    return count, last


# -- part 1: the log and the sync ------------------------------------------------------------


def build_log(directory: Path, messages: list[tuple[bytes, bytes]]) -> None:
    """A log of one record per message, as the recorder would write it (no fsync)."""
    from convlog.core.gaps import stamp_payload
    from convlog.core.ingest import Ingest
    from convlog.store.clock import Clock
    from convlog.store.segment import ensure_layout
    from convlog.store.writer import SegmentWriter

    ensure_layout(directory)
    ingest, clock = Ingest(), Clock()
    writer = SegmentWriter(directory, 1, fsync="never")
    chunk: list[bytes] = []
    for seq, (topic, payload) in enumerate(messages, 1):
        stamped = stamp_payload(payload, "bench-sync", seq) or payload
        chunk.append(ingest.line([topic, stamped], seq, clock.now(), "sub"))
        if len(chunk) == 1000:
            writer.write(b"".join(chunk), seq)
            chunk.clear()
    if chunk:
        writer.write(b"".join(chunk), len(messages))
    writer.save_state(True, clock.now())
    writer.close()


@dataclass
class SyncResult:
    records: int = 0
    seconds: float = 0.0
    rate: float | None = None
    read_s: float = 0.0
    write_s: float = 0.0
    index_s: float = 0.0
    project_s: float = 0.0
    records_seconds: float = 0.0
    records_rate: float | None = None
    other_s: float = 0.0
    batches: int = 0
    projected: int = 0


def checkpoint(url: str) -> None:
    """``CHECKPOINT`` (when allowed), so a part does not pay for the previous one's WAL."""
    import psycopg

    with contextlib.suppress(psycopg.Error), psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def run_sync(directory: Path, url: str) -> SyncResult:
    """``Follower(directory, url).run(follow=False)``, its parts timed (see the module doc)."""
    import convlog.sync.follower as follower_mod

    times = {"read": 0.0, "write": 0.0, "index": 0.0, "project": 0.0, "last_write_end": 0.0}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                ended = time.perf_counter()
                times[name] += ended - started
                if name == "write":
                    times["last_write_end"] = ended
        return wrapper

    saved = (follower_mod.write_batch, follower_mod.project_all, follower_mod.index_all,
             follower_mod.Follower.read_batch)
    follower_mod.write_batch = timed("write", saved[0])
    follower_mod.project_all = timed("project", saved[1])
    follower_mod.index_all = timed("index", saved[2])
    follower_mod.Follower.read_batch = timed("read", saved[3])  # type: ignore[method-assign]
    try:
        follower = follower_mod.Follower(directory, url)
        started = time.perf_counter()
        follower.run(follow=False)
        seconds = time.perf_counter() - started
    finally:
        follower_mod.write_batch, follower_mod.project_all, follower_mod.index_all = saved[0], saved[1], saved[2]
        follower_mod.Follower.read_batch = saved[3]  # type: ignore[method-assign]
    r = SyncResult(records=follower.stats.records, seconds=seconds, batches=follower.stats.batches,
                   projected=follower.stats.projected, read_s=times["read"], write_s=times["write"],
                   index_s=times["index"], project_s=times["project"])
    r.other_s = seconds - r.read_s - r.write_s - r.index_s - r.project_s
    r.rate = r.records / seconds if seconds > 0 else None
    r.records_seconds = times["last_write_end"] - started
    r.records_rate = r.records / r.records_seconds if r.records_seconds > 0 else None
    return r


def profile_sync(directory: Path, url: str, path: str) -> float:
    """The same sync under cProfile (a separate run into its own database: the profiler
    slows the Python side, so the timed run is not profiled); returns its seconds."""
    from convlog.sync.follower import Follower

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    Follower(directory, url).run(follow=False)
    profiler.disable()
    profiler.dump_stats(path)
    return time.perf_counter() - started


@dataclass
class NaiveResult:
    records: int = 0
    seconds: float = 0.0
    rate: float | None = None
    capped: bool = False


def run_naive(directory: Path, url: str, cap_s: float) -> NaiveResult:
    """One autocommitted INSERT per record, rows built as the follower builds them."""
    import psycopg

    from convlog.db.rows import COLUMNS, record_row
    from convlog.db.schema import migrate
    from convlog.store.identity import ensure_log_id
    from convlog.store.segment import follow_lines

    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        log_id = ensure_log_id(directory)
        sql = (f"INSERT INTO convlog.records ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})")
        result = NaiveResult()
        started = time.perf_counter()
        deadline = started + cap_s
        for line, record, _key, _offset in follow_lines(directory, None):
            conn.execute(sql, record_row(log_id, line, record))
            result.records += 1
            if time.perf_counter() >= deadline:
                result.capped = True
                break
        result.seconds = time.perf_counter() - started
    result.rate = result.records / result.seconds if result.seconds > 0 else None
    return result


# -- part 3: lag while recording -------------------------------------------------------------


@dataclass
class LagResult:
    published: int = 0
    publish_rate: float | None = None
    observed: int = 0
    p50_s: float | None = None
    p99_s: float | None = None
    max_s: float | None = None
    mean_s: float | None = None
    polls: int = 0
    poll_query_ms_p50: float | None = None
    poll_query_ms_max: float | None = None
    search_observed: int = 0
    search_p50_s: float | None = None
    search_p99_s: float | None = None
    views_after_s: float | None = None
    log_records: int = 0
    log_last_seq: int = 0
    db_records: int = 0
    db_last_seq: int = 0
    complete: bool = False
    log_bytes: dict[str, int] = field(default_factory=dict)
    db_bytes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


#: What the pollers ask: new records; new search rows (with their records' times).
RECORDS_POLL = "SELECT seq, ts, source FROM convlog.records WHERE seq > %s ORDER BY seq"
SEARCH_POLL = """SELECT s.seq, r.ts, r.source FROM convlog.search s JOIN convlog.records r USING (log_id, seq)
                 WHERE s.seq > %s ORDER BY s.seq"""


class Poller(threading.Thread):
    """Polls the database for new rows (``query``: seq, ts, source after a seq); each
    row's observation time is when the poll returned."""

    def __init__(self, url: str, interval_s: float, query: str = RECORDS_POLL) -> None:
        super().__init__(daemon=True)
        self.url, self.interval_s, self.query = url, interval_s, query
        self.stop = threading.Event()
        self.lags: list[float] = []
        self.query_s: list[float] = []
        self.last_seq = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.stop.is_set():
                    started = time.time()
                    rows = conn.execute(self.query, (self.last_seq,)).fetchall()
                    seen = time.time()
                    self.query_s.append(seen - started)
                    for seq, ts, source in rows:
                        if source == "sub" and ts is not None:
                            self.lags.append(seen - ts.timestamp())
                        self.last_seq = seq
                    self.stop.wait(max(0.0, self.interval_s - (time.time() - started)))
        except BaseException as exc:  # reported by the driver
            self.error = exc


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def wait_for(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


def run_lag(procs: Processes, workdir: Path, url: str, messages_path: Path, rate: float, seconds: float,
            poll_s: float) -> LagResult:
    import psycopg

    result = LagResult()
    count = int(rate * seconds)
    logdir = workdir / "log-lag"
    xsub, xpub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    convlog = [sys.executable, "-m", "convlog"]
    procs.spawn([*convlog, "broker", "--xsub", xsub, "--xpub", xpub], "broker")
    recorder = procs.spawn([*convlog, "record", "--dir", str(logdir), "--sub", xpub, "--log-level", "warning"],
                           "recorder")
    wait_for(lambda: (logdir / "events").is_dir() and any((logdir / "events").iterdir()), 60, "the recorder's log")
    sync = procs.spawn([*convlog, "sync", "--follow", "--db", url, "--dir", str(logdir), "--log-level", "WARNING"],
                       "sync")

    def sync_ready() -> bool:
        if sync.poll() is not None:
            raise RuntimeError(f"convlog sync exited with {sync.returncode} (see {workdir}/sync.stderr)")
        with contextlib.suppress(psycopg.Error), psycopg.connect(url, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM convlog.records").fetchone()[0] > 0
        return False

    wait_for(sync_ready, 60, "convlog sync to write the recorder's first records")
    poller = Poller(url, poll_s)
    poller.start()
    search_poller = Poller(url, poll_s, SEARCH_POLL)
    search_poller.start()
    pub = procs.spawn([sys.executable, str(ROOT / "scripts" / "bench_record.py"), "--role", "publish", "--xsub", xsub,
                       "--messages", str(messages_path), "--count", str(count), "--rate", str(rate)],
                      "publisher", stdout=True, stdin=True)
    pub_lines = Lines(pub)
    if not pub_lines.ready.wait(90):
        raise RuntimeError(f"publisher not ready (see {workdir}/publisher.stderr)")
    assert pub.stdin is not None
    pub.stdin.write(b"go\n")
    pub.stdin.flush()
    pub.wait(seconds + 180)
    published_at = time.monotonic()
    pub_lines.join(10)
    report = pub_lines.sent()
    if report:
        result.published, result.publish_rate = report
    else:
        result.notes.append("publisher did not report")
    # Stop the recorder (it writes recorder.stop), then the database must catch up with the log.
    from benchmark import stop_process

    stop_process(recorder, 60.0)
    result.log_records, result.log_last_seq = log_count(logdir)
    try:
        wait_for(lambda: poller.last_seq >= result.log_last_seq or poller.error is not None, 120,
                 "the database to hold the log's last record")
    except RuntimeError as exc:
        result.notes.append(str(exc))
    poller.stop.set()
    poller.join(10)
    if poller.error is not None:
        result.notes.append(f"poller: {type(poller.error).__name__}: {poller.error}")

    def views_made() -> bool:
        with psycopg.connect(url, autocommit=True) as conn:
            searched = conn.execute("SELECT coalesce(max(seq), 0) FROM convlog.search_positions").fetchone()[0]
            dirty = conn.execute("SELECT count(*) FROM convlog.dirty").fetchone()[0]
        return searched >= result.log_last_seq and dirty == 0

    try:
        wait_for(views_made, 120, "the search rows and projections to catch up")
        result.views_after_s = time.monotonic() - published_at
    except RuntimeError as exc:
        result.notes.append(str(exc))
    search_poller.stop.set()
    search_poller.join(10)
    search_lags = search_poller.lags
    result.search_observed = len(search_lags)
    if search_lags:
        result.search_p50_s, result.search_p99_s = percentile(search_lags, 50), percentile(search_lags, 99)
    stop_process(sync, 30.0)
    result.db_records, result.db_last_seq = db_count(url)
    result.complete = (result.db_records == result.log_records and result.db_last_seq == result.log_last_seq)
    lags = poller.lags
    result.observed = len(lags)
    if lags:
        result.p50_s, result.p99_s = percentile(lags, 50), percentile(lags, 99)
        result.max_s, result.mean_s = max(lags), statistics.fmean(lags)
    result.polls = len(poller.query_s)
    if poller.query_s:
        result.poll_query_ms_p50 = statistics.median(poller.query_s) * 1000
        result.poll_query_ms_max = max(poller.query_s) * 1000
    result.log_bytes = log_sizes(logdir)
    result.db_bytes = db_sizes(url)
    return result


# -- the driver --------------------------------------------------------------------------------


def per_record(value: int | None, records: int) -> float | None:
    return value / records if value is not None and records else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--db", metavar="URL", help="an existing PostgreSQL server (default: start one for the run)")
    parser.add_argument("--records", type=int, default=100_000, help="records of the throughput log (default 100000)")
    parser.add_argument("--naive-seconds", type=float, default=20.0, help="time cap of the naive loop (default 20)")
    parser.add_argument("--lag-rate", type=float, default=5_000.0, help="msg/s while recording (default 5000)")
    parser.add_argument("--lag-seconds", type=float, default=20.0, help="seconds of publishing (default 20)")
    parser.add_argument("--poll-ms", type=float, default=50.0, help="database poll interval for the lag (default 50)")
    parser.add_argument("--quick", action="store_true", help="20,000 records, 5 s of lag, naive capped at 10 s")
    parser.add_argument("--skip-lag", action="store_true", help="parts 1, 2 and 4 only")
    parser.add_argument("--lag-only", action="store_true", help="part 3 only (e.g. to try other --lag-rate values)")
    parser.add_argument("--profile", metavar="PATH", help="write a cProfile of the part-1 sync here")
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--workdir", help="directory for logs and temp files (default: a new one under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.lag_seconds, args.naive_seconds = 20_000, 5.0, 10.0

    args.load_start = os.getloadavg()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_sync-"))
    workdir.mkdir(parents=True, exist_ok=True)
    procs = Processes(workdir)
    say = procs.say
    lag_count = int(args.lag_rate * args.lag_seconds)
    messages_path = workdir / "messages.bin"
    if args.lag_only:
        args.records = 0
    say(f"preparing {max(args.records, lag_count):,} messages in {messages_path} ...")
    mean = prepare(messages_path, max(args.records, lag_count))
    server: Server | None = None
    sync_r = naive_r = None
    lag_r: LagResult | None = None
    sizes: dict[str, Any] = {}
    crashed = False
    try:
        say("starting PostgreSQL ..." if args.db is None else f"using {args.db} ...")
        server = Server(args.db)
        if not args.lag_only:
            logdir = workdir / "log-throughput"
            say(f"1. building a log of {args.records:,} records in {logdir} ...")
            build_log(logdir, read_messages(str(messages_path), args.records))
            log_records, _ = log_count(logdir)
            say("   syncing it (Follower.run(follow=False), in-process) ...")
            sync_url = server.database("sync")
            checkpoint(server.url)
            sync_r = run_sync(logdir, sync_url)
            say(f"   {sync_r.records:,} records in the database after {sync_r.records_seconds:.2f} s: "
                f"{fmt(sync_r.records_rate)}/s; views made after {sync_r.seconds:.2f} s: {fmt(sync_r.rate)}/s")
            sizes = {"log_records": log_records, "log_bytes": log_sizes(logdir), "db_bytes": db_sizes(sync_url)}
            say(f"2. naive: one autocommitted INSERT per record, at most {args.naive_seconds:g} s ...")
            naive_url = server.database("naive")
            checkpoint(server.url)
            naive_r = run_naive(logdir, naive_url, args.naive_seconds)
            say(f"   {naive_r.records:,} records in {naive_r.seconds:.2f} s: {fmt(naive_r.rate)}/s")
            if args.profile:
                say(f"   profiling the same sync into another database ({args.profile}) ...")
                profile_url = server.database("profile")
                checkpoint(server.url)
                say(f"   {profile_sync(logdir, profile_url, args.profile):.2f} s under cProfile")
        if not args.skip_lag:
            checkpoint(server.url)
            say(f"3. lag: recording {args.lag_rate:,.0f} msg/s for {args.lag_seconds:g} s "
                "with convlog sync --follow ...")
            lag_r = run_lag(procs, workdir, server.database("lag"), messages_path, args.lag_rate, args.lag_seconds,
                            args.poll_ms / 1000)
            say(f"   p50 {fmt(lag_r.p50_s, '.3f')} s, p99 {fmt(lag_r.p99_s, '.3f')} s, "
                f"db {lag_r.db_records:,} / log {lag_r.log_records:,}")
    except BaseException as exc:
        crashed = True
        say(f"FAILED: {type(exc).__name__}: {exc} (process output in {workdir})")
        if isinstance(exc, KeyboardInterrupt):
            raise
    finally:
        procs.cleanup()
        if server is not None:
            server.close()
        if not args.keep and not crashed:
            shutil.rmtree(workdir, ignore_errors=True)

    args.load_end = os.getloadavg()
    report_ok = report(args, mean, sync_r, naive_r, lag_r, sizes)
    return 1 if crashed or not report_ok else 0


def report(args: argparse.Namespace, mean: float, sync_r: SyncResult | None, naive_r: NaiveResult | None,
           lag_r: LagResult | None, sizes: dict[str, Any]) -> bool:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    header = (f"convlog sync benchmark: {args.records:,} records (ShareGPT payloads, mean {mean:,.0f} B), "
              f"lag at {args.lag_rate:,.0f} msg/s x {args.lag_seconds:g} s; "
              f"{'server ' + args.db if args.db else 'own PostgreSQL (tests/pg_server.py settings)'}; "
              f"{os.cpu_count()} CPUs, load average (1 min) {args.load_start[0]:.1f} at the start, "
              f"{args.load_end[0]:.1f} at the end (other work on the machine disturbs every figure)")
    table = Table(title=header, title_justify="left")
    for name, justify in (("what", "left"), ("figure", "right"), ("detail", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    ratios: dict[str, float | None] = {}
    targets: list[dict[str, Any]] = []
    ok = True
    if sync_r:
        table.add_row("(1) sync, records/s into the database", fmt(sync_r.records_rate),
                      f"{sync_r.records:,} records committed {sync_r.records_seconds:.2f} s after the start, "
                      f"{sync_r.batches} batches (Follower.run(follow=False), in-process)")
        table.add_row("    records/s with the views made", fmt(sync_r.rate),
                      f"{sync_r.seconds:.2f} s until the search rows and {sync_r.projected:,} sessions' "
                      "projections were made too")
        table.add_row("    read + rows (s)", fmt(sync_r.read_s, ".2f"),
                      "Follower.read_batch: segments, parsing, record_row")
        table.add_row("    write_batch (s)", fmt(sync_r.write_s, ".2f"), "COPY, INSERT … ON CONFLICT, position, commit")
        table.add_row("    search projection (s)", fmt(sync_r.index_s, ".2f"), "index_all: texts, to_tsvector, GIN")
        table.add_row("    session projections (s)", fmt(sync_r.project_s, ".2f"), "project_all")
        table.add_row("    other (s)", fmt(sync_r.other_s, ".2f"), "connect, migrate, register, sync.json")
        targets.append({"target": f"sync >= {THROUGHPUT_TARGET:,.0f} records/s into the database",
                        "pass": None if sync_r.records_rate is None else sync_r.records_rate >= THROUGHPUT_TARGET,
                        "detail": f"{fmt(sync_r.records_rate)}/s ({fmt(sync_r.rate)}/s with the views)"})
    if naive_r:
        table.add_row("(2) naive INSERT per record, records/s", fmt(naive_r.rate),
                      f"{naive_r.records:,} records in {naive_r.seconds:.2f} s"
                      + (f" (capped at {args.naive_seconds:g} s)" if naive_r.capped else ""))
        ratios["sync / naive records/s"] = ratio(sync_r.rate if sync_r else None, naive_r.rate)
    if sizes:
        n = sizes["log_records"]
        db, lg = sizes["db_bytes"], sizes["log_bytes"]
        table.add_row("(4) convlog.records, B/record", fmt(per_record(db["records"], n)),
                      f"heap {fmt(per_record(db['records_heap'], n))}, "
                      f"TOAST {fmt(per_record(db['records_toast'], n))}, "
                      f"indexes {fmt(per_record(db['records_indexes'], n))}")
        table.add_row("    convlog.search, B/record", fmt(per_record(db["search"], n)), "text, tsvector, GIN")
        table.add_row("    all convlog tables, B/record", fmt(per_record(db["all_tables"], n)), "")
        table.add_row("    log, B/record", fmt(per_record(lg["total"], n)),
                      f"plain segments (not sealed), {lg['total']:,} B for {n:,} records")
        ratios["db (records) / log bytes"] = ratio(db["records"], lg["total"])
        ratios["db (all tables) / log bytes"] = ratio(db["all_tables"], lg["total"])
    if lag_r:
        table.add_row("(3) lag p50 (s)", fmt(lag_r.p50_s, ".3f"),
                      f"{lag_r.observed:,} published messages observed; published {lag_r.published:,} "
                      f"at {fmt(lag_r.publish_rate)}/s")
        table.add_row("    lag p99 (s)", fmt(lag_r.p99_s, ".3f"),
                      f"observation late by <= {args.poll_ms:g} ms poll + query (p50 "
                      f"{fmt(lag_r.poll_query_ms_p50, '.1f')} ms, max {fmt(lag_r.poll_query_ms_max, '.1f')} ms)")
        table.add_row("    lag max (s)", fmt(lag_r.max_s, ".3f"), f"mean {fmt(lag_r.mean_s, '.3f')} s")
        table.add_row("    search rows lag p50 / p99 (s)",
                      f"{fmt(lag_r.search_p50_s, '.3f')} / {fmt(lag_r.search_p99_s, '.3f')}",
                      f"{lag_r.search_observed:,} published messages findable by search --db (same polling)")
        table.add_row("    views caught up (s)", fmt(lag_r.views_after_s, ".2f"),
                      "after the publisher ended: search rows at the log's end, no session left to project")
        table.add_row("    records db / log", f"{lag_r.db_records:,} / {lag_r.log_records:,}",
                      f"last seq {lag_r.db_last_seq:,} / {lag_r.log_last_seq:,}")
        n = lag_r.log_records
        lb = lag_r.log_bytes
        if lb:
            table.add_row("    log as recorded, B/record", fmt(per_record(lb["total"], n)),
                          f"zstd-sealed {lb['sealed_zstd']:,} B + plain {lb['plain']:,} B")
        if lag_r.db_bytes:
            table.add_row("    convlog.records, B/record", fmt(per_record(lag_r.db_bytes["records"], n)),
                          f"all tables {fmt(per_record(lag_r.db_bytes['all_tables'], n))}")
        if lag_r.notes:
            table.add_row("    notes", "", "; ".join(lag_r.notes))
        targets.append({"target": f"lag p99 < {LAG_P99_TARGET_S:g} s",
                        "pass": None if lag_r.p99_s is None else lag_r.p99_s < LAG_P99_TARGET_S,
                        "detail": f"p99 {fmt(lag_r.p99_s, '.3f')} s (poll {args.poll_ms:g} ms)"})
        targets.append({"target": "no record missing (db == log)", "pass": lag_r.complete,
                        "detail": f"{lag_r.db_records:,} / {lag_r.log_records:,}"})
        ok = lag_r.complete
    console.print(table)
    print_targets(console, ratios, targets)
    if args.json_path:
        write_json(args.json_path,
                   {"records": args.records, "naive_seconds": args.naive_seconds, "lag_rate": args.lag_rate,
                    "lag_seconds": args.lag_seconds, "poll_ms": args.poll_ms, "db": args.db,
                    "mean_payload_bytes": mean, "cpus": os.cpu_count(), "load_start": args.load_start,
                    "load_end": args.load_end},
                   {"sync": asdict(sync_r) if sync_r else None, "naive": asdict(naive_r) if naive_r else None,
                    "lag": asdict(lag_r) if lag_r else None, "sizes": sizes},
                   ratios, targets)
    return ok


if __name__ == "__main__":
    sys.exit(main())
