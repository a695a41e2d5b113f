"""``convlog sync`` puts every record of every log into PostgreSQL exactly once, measured
end to end with real processes: a real broker, real recorders writing small segments
(rotation and sealing happen), real ShareGPT conversations published the whole time,
``convlog sync`` subprocesses (on a slowed connection, so that most kills land inside a
transaction) killed with SIGKILL at 20 random moments and a PostgreSQL
server killed and started again in the middle; then the database is compared with the
logs seq by seq (kind, session, payload digest, chain). A streaming replica made with
pg_basebackup answers like the primary, and a second ``sync --once`` writes nothing.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from conftest import Bus, Proc, answering, convlog_cmd, records, running_bus, wait_for_records
from convlog.cli.sharegpt import conversations, native_events
from convlog.db.search import search_text
from convlog.store.identity import read_log_id
from pg_server import PgServer, wait_caught_up

#: Small segments, so that the recorders rotate and seal while the syncs read.
SEGMENT_BYTES = "20000"
#: Most characters of a ShareGPT turn published (keeps the stream steady, not bursty).
TURN_CHARS = 3000
#: Records per sync transaction in the kill test: small, so that a sync catching up after a
#: restart writes many transactions, and a kill lands among them.
BATCH = "25"

Digest = tuple[int, str | None, str | None, str | None, str | None]


#: A ``convlog`` run whose every SQL statement waits 10 ms first, as over a slow network
#: to a busy database: a batch's transaction (lock, COPY, INSERT, dirty sessions,
#: position, projection) then lasts long enough for a kill -9 to land inside it, not
#: only in the follower's idle poll. Nothing else changes: the real CLI, the real server.
_SLOW_DB = """
import sys, time
import psycopg
for cls in (psycopg.Connection, psycopg.Cursor):
    def slow(self, *args, _real=cls.execute, **kwargs):
        time.sleep(0.01)
        return _real(self, *args, **kwargs)
    cls.execute = slow
from convlog.cli.commands import main
main(sys.argv[1:])
"""


# ---------------------------------------------------------------------------- helpers


def sync_cmd(directory: Path, url: str, *mode: str) -> list[str]:
    return ["sync", "--db", url, "--dir", str(directory), *mode]


def spawn_slow_sync(directory: Path, url: str, log_path: Path, app: str) -> Proc:
    """``convlog sync --follow`` on a slow database (see ``_SLOW_DB``), its connection
    named ``app`` (``application_name``, to see in pg_stat_activity what it was doing)."""
    with log_path.open("ab") as fh:
        popen = subprocess.Popen([sys.executable, "-c", _SLOW_DB, *sync_cmd(directory, url, "--follow", "--batch",
                                                                            BATCH)],
                                 stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**os.environ, "PGAPPNAME": app})
    return Proc(popen, log_path)


def backend_state(url: str, app: str) -> str:
    """What the sync named ``app`` was doing in the database: its backend's state
    (``active``, ``idle in transaction``, ``idle``) or ``no connection``."""
    try:
        state = one(url, "SELECT state FROM pg_stat_activity WHERE application_name = %s", (app,))
    except psycopg.OperationalError:
        return "database down"
    return state or "no connection"


def sync_once(directory: Path, url: str) -> str:
    """Run ``convlog sync --once`` to the end; return its output (fails on non-zero)."""
    result = subprocess.run(convlog_cmd(*sync_cmd(directory, url, "--once")), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def log_digests(directory: Path) -> list[Digest]:
    """``(seq, kind, session, meta.sha256, chain)`` of every record of the log, in order."""
    out: list[Digest] = []
    for record in records(directory):
        meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
        session = record.get("session")
        out.append((record["seq"], record.get("kind"), session if isinstance(session, str) or session is None
                    else orjson.dumps(session).decode(), meta.get("sha256"), record.get("chain")))
    return out


def db_digests(url: str, log_id: str) -> list[Digest]:
    """The same tuples as :func:`log_digests`, from ``convlog.records`` of one log."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [tuple(row) for row in conn.execute(  # type: ignore[misc]
            "SELECT seq, kind, session, meta->>'sha256', chain FROM convlog.records WHERE log_id = %s ORDER BY seq",
            (log_id,))]


def one(url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row is not None and len(row) == 1 else row


def position(url: str, log_id: str | None) -> tuple[int, int] | None:
    """``(seq, records)`` of ``convlog.positions`` for one log (None when absent, also
    when no sync has made the schema yet)."""
    if log_id is None:
        return None
    try:
        return one(url, "SELECT seq, records FROM convlog.positions WHERE log_id = %s", (log_id,))
    except psycopg.errors.UndefinedTable:
        return None


def local_sessions(directory: Path) -> dict[str, int]:
    """Session id -> messages, as ``convlog sessions --json`` folds them from the log."""
    result = subprocess.run(convlog_cmd("sessions", "--json", "--dir", str(directory), "--limit", "100000"),
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return {row["id"]: row["messages"] for row in orjson.loads(result.stdout)}


def db_sessions(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return dict(conn.execute("SELECT session, messages FROM convlog.sessions WHERE NOT deleted"))  # type: ignore[arg-type]


def assert_database_holds_the_log_once(url: str, directory: Path) -> int:
    """Every record of the log in ``convlog.records`` once, with its kind, session,
    payload digest and chain; the position at the log's last seq, counting each record
    once. Returns the log's record count."""
    log_id = read_log_id(directory)
    assert log_id, f"no log_id in {directory}"
    expected = log_digests(directory)
    assert expected, f"{directory} holds no records"
    seqs = [d[0] for d in expected]
    assert seqs == list(range(1, len(seqs) + 1)), "the log itself is not seq 1..N"
    got = db_digests(url, log_id)
    count, distinct = one(url, "SELECT count(*), count(DISTINCT seq) FROM convlog.records WHERE log_id = %s",
                          (log_id,))
    assert count == distinct == len(expected), (
        f"{directory}: database {count} rows ({distinct} seqs), log {len(expected)}")
    missing = sorted(set(seqs) - {d[0] for d in got})
    extra = sorted({d[0] for d in got} - set(seqs))
    assert not missing and not extra, f"{directory}: seqs missing {missing[:20]}, extra {extra[:20]}"
    differ = [(e, g) for e, g in zip(expected, got, strict=True) if e != g]
    assert not differ, f"{directory}: {len(differ)} records differ, first {differ[:3]}"
    assert position(url, log_id) == (seqs[-1], len(expected)), f"{directory}: position {position(url, log_id)}"
    return len(expected)


def turns() -> Iterator[dict[str, Any]]:
    """ShareGPT conversations as native ``message`` events, turns cut to TURN_CHARS."""
    for conv in conversations(limit=2000):
        for event in native_events(conv, prefix=""):
            yield event | {"content": event["content"][:TURN_CHARS]}


class Stream(threading.Thread):
    """Publishes real messages at a steady rate on ``topic`` until stopped; its own
    publisher (made and used in this thread only)."""

    def __init__(self, bus: Bus, topic: str, rate_hz: float, recorder: Proc) -> None:
        super().__init__(daemon=True)
        self.bus, self.topic, self.period, self.recorder = bus, topic, 1.0 / rate_hz, recorder
        self.halt = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            pub = self.bus.publisher(self.recorder)
            try:
                events = turns()
                while not self.halt.is_set():
                    event = next(events)
                    event["session_id"] = f"{self.topic}-{event['session_id']}"
                    pub.send(self.topic.encode(), orjson.dumps(event))
                    self.sent += 1
                    self.halt.wait(self.period)
            finally:
                pub.close(2000)
        except BaseException as exc:  # handed to the test's thread
            self.error = exc


def record_log(bus: Bus, directory: Path, sessions_prefix: str, count: int) -> None:
    """Record ``count`` ShareGPT turns (sessions prefixed) into ``directory`` with a real
    recorder, then stop it (SIGTERM)."""
    rec = bus.recorder(directory, "--segment-bytes", SEGMENT_BYTES)
    answering(directory, rec)
    pub = bus.publisher(rec, heartbeat_s=None)
    for n, event in enumerate(itertools.islice(turns(), count), 1):
        event["session_id"] = f"{sessions_prefix}-{event['session_id']}"
        pub.send(event["session_id"].encode(), orjson.dumps(event))
        if n % 200 == 0:
            wait_for_records(directory, n)
    wait_for_records(directory, count)
    pub.close(1000)
    assert rec.terminate() == 0, rec.output()


@contextlib.contextmanager
def own_server() -> Iterator[PgServer]:
    server = PgServer().start()
    try:
        yield server
    finally:
        server.close()


# ------------------------------------------------------------- 1. kill -9, many times


@pytest.mark.slow
def test_the_database_holds_every_record_once_after_twenty_kill9s_and_a_database_restart(tmp_path: Path) -> None:
    """Two recorders write two logs (20 KB segments, sealed as they rotate) from two
    steady streams of ShareGPT turns; a ``sync --follow --batch 25`` per log, on a slowed
    connection (``_SLOW_DB``) so that most kills land inside a transaction, is SIGKILLed
    at 20 random moments 0.1-1.5 s apart and started again each time; halfway PostgreSQL is
    killed (SIGKILL of the postmaster and its children) and started again, and the syncs
    that ran across it resume by themselves. Once the streams and recorders stop and the
    followers catch up, each log is in the database exactly once: the same seqs, the
    same (kind, session, sha256, chain) per seq, count = distinct seqs = the log's count,
    the position at the log's last seq having counted each record once; every session
    of the logs is projected with the messages the local fold counts; and a final
    ``sync --once`` writes nothing."""
    rng = random.Random(20261206)
    dirs = {"a": tmp_path / "log-a", "b": tmp_path / "log-b"}
    started = time.monotonic()
    with own_server() as pg, running_bus(tmp_path) as bus:
        url = pg.url
        syncs: dict[str, Proc] = {}
        names: dict[str, str] = {}
        landed: collections.Counter[str] = collections.Counter()
        streams: list[Stream] = []
        try:
            recorders = {name: bus.recorder(d, "--segment-bytes", SEGMENT_BYTES, "--topic", name)
                         for name, d in dirs.items()}
            for name, d in dirs.items():
                answering(d, recorders[name])
            streams = [Stream(bus, name, 60.0, recorders[name]) for name in dirs]
            for stream in streams:
                stream.start()
            for d in dirs.values():
                wait_for_records(d, 20)
            apps = itertools.count()
            for name, d in dirs.items():
                syncs[name] = spawn_slow_sync(d, url, tmp_path / f"sync-{name}.log", app := f"sync-{next(apps)}")
                names[name] = app

            kills = 0
            for moment in range(20):
                time.sleep(rng.uniform(0.1, 1.5))
                name = rng.choice(sorted(dirs))
                assert syncs[name].popen.poll() is None, f"sync {name} exited:\n{syncs[name].output()}"
                landed[backend_state(url, names[name])] += 1
                syncs[name].kill9()
                kills += 1
                syncs[name] = spawn_slow_sync(dirs[name], url, tmp_path / f"sync-{name}.log",
                                              app := f"sync-{next(apps)}")
                names[name] = app
                if moment == 9:
                    restart_database_under_running_syncs(pg, url, dirs, syncs)
            assert kills == 20
            inside = landed["active"] + landed["idle in transaction"]
            assert inside >= 5, f"only {inside} of 20 kills landed while a sync was in the database: {landed}"

            for stream in streams:
                stream.halt.set()
            for stream in streams:
                stream.join(30)
                assert stream.error is None, repr(stream.error)
                assert stream.sent > 100
            for rec in recorders.values():
                assert rec.terminate() == 0, rec.output()

            # The followers (the last started ones) catch up with the stopped logs.
            ends = {name: records(d)[-1]["seq"] for name, d in dirs.items()}
            deadline = time.monotonic() + 60
            for name, d in dirs.items():
                log_id = read_log_id(d)
                while (position(url, log_id) or (0, 0))[0] != ends[name]:
                    assert syncs[name].popen.poll() is None, f"sync {name} exited:\n{syncs[name].output()}"
                    assert time.monotonic() < deadline, (
                        f"sync {name} at {position(url, log_id)}, log ends at {ends[name]}:\n{syncs[name].output()}")
                    time.sleep(0.1)
            for proc in syncs.values():
                assert proc.terminate() == 0, proc.output()
        finally:
            for stream in streams:
                stream.halt.set()
            for proc in syncs.values():
                proc.kill9()

        totals = {name: assert_database_holds_the_log_once(url, d) for name, d in dirs.items()}
        for name, d in dirs.items():
            segments = list((d / "events").iterdir())
            assert len(segments) >= 5, f"{name}: only {len(segments)} segments, rotation not exercised"
            assert any(p.name.endswith(".zst") for p in segments), f"{name}: no sealed segment"
            out = sync_once(d, url)
            assert " 0 records written by this run" in out, out
            assert_database_holds_the_log_once(url, d)
            assert_search_holds_the_log_once(url, d)

        local: dict[str, int] = {}
        for d in dirs.values():
            mine = local_sessions(d)
            assert not set(mine) & set(local), "the two logs' sessions were meant to be disjoint"
            local |= mine
        assert db_sessions(url) == local
    elapsed = time.monotonic() - started
    print(f"records per log {totals}, sessions {len(local)}, kills landed {dict(landed)}, {elapsed:.1f} s")


def assert_search_holds_the_log_once(url: str, directory: Path) -> None:
    """The search projection made after the kills: one ``convlog.search`` row for each
    record of the log that has searchable text (:func:`convlog.db.search.search_text` of
    the record as the log holds it), with that text, and its position at the log's end."""
    log_id = read_log_id(directory)
    expected = {}
    for record in records(directory):
        text = search_text(record)
        if text:
            expected[record["seq"]] = hashlib.sha256(text.encode()).hexdigest()
    assert len(expected) > 100, f"{directory}: only {len(expected)} records with text"
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT seq, text FROM convlog.search WHERE log_id = %s ORDER BY seq", (log_id,)).fetchall()
    got = {seq: hashlib.sha256(text.encode()).hexdigest() for seq, text in rows}
    assert len(rows) == len(got) == len(expected), f"{directory}: {len(rows)} search rows, {len(expected)} texts"
    assert got == expected, f"{directory}: search rows differ from the log's texts"
    assert one(url, "SELECT seq FROM convlog.search_positions WHERE log_id = %s", (log_id,)) == max(
        record["seq"] for record in records(directory))


def restart_database_under_running_syncs(pg: PgServer, url: str, dirs: dict[str, Path],
                                         syncs: dict[str, Proc]) -> None:
    """SIGKILL PostgreSQL with the syncs running, start it again after a second, and
    wait until every log's position moves on with the same sync processes (no restart
    of theirs: the follower's back-off and reconnect)."""
    for name, d in dirs.items():
        deadline = time.monotonic() + 30
        while position(url, read_log_id(d)) is None:
            assert time.monotonic() < deadline, f"nothing of {d} synced before the crash:\n{syncs[name].output()}"
            time.sleep(0.1)
    procs = dict(syncs)
    pg.kill9()
    time.sleep(1.0)
    pg.start()
    assert pg.url == url, "the server came back on another port"
    # What the database holds after crash recovery; the streams go on, so it must grow.
    before = {name: position(url, read_log_id(d))[0] for name, d in dirs.items()}
    deadline = time.monotonic() + 30
    for name, d in dirs.items():
        while position(url, read_log_id(d))[0] <= before[name]:
            assert procs[name].popen.poll() is None, f"sync {name} exited after the crash:\n{procs[name].output()}"
            assert time.monotonic() < deadline, (
                f"sync {name} did not resume after the database restart:\n{procs[name].output()}")
            time.sleep(0.1)
        assert procs[name] is syncs[name]
    # A sync started just before the crash may first connect after it; one that ran
    # across it says it lost the database and found it again.
    assert any("reachable again" in proc.output() for proc in procs.values()), [p.output() for p in procs.values()]


# ------------------------------------------------------------- 2. a streaming replica


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PgServer, PgServer, Path]]:
    """A primary of its own with one recorded log synced into it (``sync --once``), and a
    streaming replica of it (pg_basebackup -R -X stream, then a standby) caught up."""
    tmp = tmp_path_factory.mktemp("replica")
    directory = tmp / "log"
    with running_bus(tmp) as bus:
        record_log(bus, directory, "r", 600)
    with own_server() as primary:
        sync_once(directory, primary.url)
        replica = primary.replica()
        try:
            wait_caught_up(primary, replica)
            yield primary, replica, directory
        finally:
            replica.close()


SNAPSHOT_QUERIES = {
    "sessions": "SELECT * FROM convlog.sessions ORDER BY session",
    "messages": "SELECT * FROM convlog.messages ORDER BY session, position",
    "records": "SELECT count(*), min(seq), max(seq), md5(string_agg(seq || ':' || coalesce(meta->>'sha256', '')"
               " || ':' || coalesce(chain, ''), ',' ORDER BY seq)) FROM convlog.records",
    "positions": "SELECT log_id, seq, segment, \"offset\", records FROM convlog.positions ORDER BY log_id",
    "llm_requests": "SELECT count(*) FROM convlog.llm_requests",
}


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {name: conn.execute(query).fetchall() for name, query in SNAPSHOT_QUERIES.items()}


@pytest.mark.slow
def test_a_streaming_replica_answers_like_the_primary(replicated: tuple[PgServer, PgServer, Path]) -> None:
    """The replica, once caught up, returns the same sessions rows (every column), the
    same messages, the same records (count, seqs and a digest of sha256 and chain per
    seq) and positions as the primary; it is a standby and refuses writes."""
    primary, replica, directory = replicated
    on_primary, on_replica = snapshot(primary.url), snapshot(replica.url)
    assert on_primary["records"][0][0] == len(records(directory))
    assert len(on_primary["sessions"]) == len(local_sessions(directory)) > 10
    assert on_replica == on_primary
    assert one(replica.url, "SELECT pg_is_in_recovery()") is True
    with psycopg.connect(replica.url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM convlog.sessions")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO convlog.dirty (session) VALUES ('x')")
    assert snapshot(replica.url) == on_primary


@pytest.mark.slow
def test_sync_once_pointed_at_the_replica_fails_instead_of_retrying_forever(
        replicated: tuple[PgServer, PgServer, Path]) -> None:
    """``convlog sync --once`` given the standby's URL (a mistake an operator can make)
    ends with an error that says the database is read-only, within seconds, and the
    standby still answers like the primary."""
    primary, replica, directory = replicated
    try:
        result = subprocess.run(convlog_cmd(*sync_cmd(directory, replica.url, "--once")), capture_output=True,
                                text=True, timeout=15)
    except subprocess.TimeoutExpired as exc:  # run() killed it
        pytest.fail(f"sync --once on the standby still running after 15 s: {exc.stderr!r}")
    assert result.returncode != 0
    assert "read-only" in result.stderr, result.stderr
    assert snapshot(replica.url) == snapshot(primary.url)


def sessions_cli_has_db() -> bool:
    result = subprocess.run(convlog_cmd("sessions", "--help"), capture_output=True, text=True, timeout=60)
    return "--db" in result.stdout


@pytest.mark.slow
def test_sessions_db_on_the_replica_prints_what_it_prints_on_the_primary(
        replicated: tuple[PgServer, PgServer, Path]) -> None:
    """``convlog sessions --db URL --json`` prints the same on the primary and on the
    caught-up replica, and the same sessions as the local fold of the log."""
    if not sessions_cli_has_db():
        pytest.skip("convlog sessions has no --db option yet (compared through SQL only)")
    primary, replica, directory = replicated
    outputs = []
    for url in (primary.url, replica.url):
        result = subprocess.run(convlog_cmd("sessions", "--db", url, "--json", "--limit", "100000"),
                                capture_output=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(orjson.loads(result.stdout))
    assert outputs[0] == outputs[1]
    assert {row["id"]: row["messages"] for row in outputs[0]} == local_sessions(directory)


# ------------------------------------------------------------- 3. twice, and two logs


def xmins(url: str) -> list[tuple[str, int, str]]:
    """``(log_id, seq, xmin)`` of every record row: the transaction that wrote it."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT log_id::text, seq, xmin::text FROM convlog.records ORDER BY 1, 2").fetchall()


def test_a_second_sync_once_writes_nothing_and_two_logs_keep_their_own_rows(bus: Bus, tmp_path: Path,
                                                                            pg_url: str) -> None:
    """``sync --once`` run again on a log already in the database writes nothing: the
    same rows from the same transactions (xmin), the same position and record count,
    and says 0 records. A second log (its seqs overlapping the first's 1..N) synced
    into the same database gets rows under its own log_id and leaves the first's as
    they were; each log's rows match it seq by seq."""
    first, second = tmp_path / "first", tmp_path / "second"
    record_log(bus, first, "one", 120)
    record_log(bus, second, "two", 80)

    out = sync_once(first, pg_url)
    assert f" {len(records(first))} records written by this run" in out, out
    first_id = read_log_id(first)
    rows, pos = xmins(pg_url), position(pg_url, first_id)
    out = sync_once(first, pg_url)
    assert " 0 records written by this run" in out, out
    assert xmins(pg_url) == rows
    assert position(pg_url, first_id) == pos
    assert_database_holds_the_log_once(pg_url, first)

    sync_once(second, pg_url)
    second_id = read_log_id(second)
    assert second_id != first_id
    assert [row for row in xmins(pg_url) if row[0] == first_id] == rows
    assert assert_database_holds_the_log_once(pg_url, first) == len(records(first))
    assert assert_database_holds_the_log_once(pg_url, second) == len(records(second))
    assert one(pg_url, "SELECT count(*) FROM convlog.records") == len(records(first)) + len(records(second))
    assert db_sessions(pg_url) == local_sessions(first) | local_sessions(second)


def test_two_recorders_of_the_same_traffic_give_each_message_once(bus: Bus, tmp_path: Path, pg_url: str) -> None:
    """Two recorders hearing the same ShareGPT turns write two logs; both synced into one
    database, every record of each log is there once under its own log_id, and each
    session is projected once with the messages either log's local fold counts (each
    message once, the other log's copy not counted as another message)."""
    dirs = [tmp_path / "host1", tmp_path / "host2"]
    recs = [bus.recorder(d, "--segment-bytes", SEGMENT_BYTES) for d in dirs]
    for d, rec in zip(dirs, recs, strict=True):
        answering(d, rec)
    pub = bus.publisher(recs[0], heartbeat_s=None)
    deadline = time.monotonic() + 20
    while True:  # both recorders subscribed: a probe message reaches both logs
        pub.send(b"probe", orjson.dumps({"type": "message", "session_id": "probe", "message_id": "p",
                                         "sender": "t", "content": "probe"}))
        time.sleep(0.2)
        if all((d / "events").is_dir() and any(r["source"] == "sub" for r in records(d)) for d in dirs):
            break
        assert time.monotonic() < deadline, "the recorders did not both subscribe"
    events = list(itertools.islice(turns(), 150))
    for n, event in enumerate(events, 1):
        pub.send(event["session_id"].encode(), orjson.dumps(event))
        if n % 50 == 0:
            time.sleep(0.2)
    for d in dirs:
        found = records(d)
        wait_for_records(d, len(events) + sum(1 for r in found if r.get("session") == "probe"))
    pub.close(1000)
    for rec in recs:
        assert rec.terminate() == 0, rec.output()

    local = [local_sessions(d) for d in dirs]
    assert set(local[0]) == set(local[1])
    for d in dirs:
        sync_once(d, pg_url)
    for d in dirs:
        assert_database_holds_the_log_once(pg_url, d)
    projected = db_sessions(pg_url)
    assert set(projected) == set(local[0])
    wrong = {s: (projected[s], local[0][s], local[1][s]) for s in projected
             if s != "probe" and not projected[s] == local[0][s] == local[1][s]}
    assert not wrong, f"sessions projected with other message counts (db, log 1, log 2): {wrong}"
    assert sum(n for s, n in projected.items() if s != "probe") == len(events)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        per_session = dict(conn.execute("SELECT session, count(*) FROM convlog.messages GROUP BY session"))
    assert {s: n for s, n in per_session.items() if n} == {s: n for s, n in projected.items() if n}
