"""The views the sync makes after the records (the search projection and the session
projections), against a real PostgreSQL: a projection running while a batch is being
written leaves that batch's sessions marked; a version 1 database migrates with its
search texts carried over; the search rows follow the records exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import psycopg
import pytest

from conftest import convlog_cmd
from convlog.core.ingest import Ingest
from convlog.core.record import parse_line
from convlog.db.projection import project
from convlog.db.rows import record_row
from convlog.db.schema import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version
from convlog.db.search import index, index_all, search_lag
from convlog.db.writer import Batch, Position, register_log, write_batch

pytestmark = pytest.mark.slow

LOG_ID = str(uuid.UUID(int=7))


def message_lines(first: int, count: int, session: str) -> list[bytes]:
    """``count`` message records of ``session`` from seq ``first``, through the
    recorder's own line builder."""
    ingest = Ingest()
    lines = []
    for seq in range(first, first + count):
        event = {"type": "message", "session_id": session, "message_id": f"{session}-{seq}", "sender": "agent",
                 "content": f"message {seq} about the quixotic heliotrope"}
        lines.append(ingest.line([session.encode(), orjson.dumps(event)], seq,
                                 f"2026-12-06T07:00:{seq % 60:02d}.000000Z", "sub"))
    return lines


def batch_of(lines: list[bytes], sessions: set[str]) -> Batch:
    rows = [record_row(LOG_ID, line, parse_line(line)) for line in lines]
    last = rows[-1][1]
    return Batch(rows, sessions, [], [], Position(last, "00000000000000000001", 100 * last), log_seq=last)


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def test_a_projection_during_a_batch_leaves_its_sessions_marked(pg_url: str) -> None:
    """The batch marks a session that is already marked while a projection takes the
    marked sessions: the projection must not unmark it, or the batch's records would
    never be projected (seen with the views made beside the records)."""
    with connect(pg_url) as writer, connect(pg_url) as projector:
        migrate(writer)
        register_log(writer, LOG_ID, "host", "/log")
        write_batch(writer, LOG_ID, batch_of(message_lines(1, 2, "s"), {"s"}))
        # The second batch's transaction is open (its writes done, not committed) ...
        with writer.transaction():
            write_batch(writer, LOG_ID, batch_of(message_lines(3, 2, "s"), {"s"}))
            # ... when a projection runs: it cannot see these records, so it must leave "s".
            project(projector)
        assert projector.execute("SELECT session FROM convlog.dirty").fetchall() == [("s",)]
        project(projector)
        assert projector.execute("SELECT messages FROM convlog.sessions WHERE session = 's'").fetchone() == (4,)
        assert projector.execute("SELECT count(*) FROM convlog.dirty").fetchone() == (0,)


def test_search_rows_follow_the_records_once(pg_url: str) -> None:
    with connect(pg_url) as conn:
        migrate(conn)
        register_log(conn, LOG_ID, "host", "/log")
        write_batch(conn, LOG_ID, batch_of(message_lines(1, 30, "s"), {"s"}))
        assert search_lag(conn, LOG_ID) == 30  # the records first
        assert index(conn, LOG_ID, limit=20) == 20 and search_lag(conn, LOG_ID) == 10
        assert index_all(conn, LOG_ID) == 10 and index_all(conn, LOG_ID) == 0
        write_batch(conn, LOG_ID, batch_of(message_lines(31, 5, "s"), {"s"}))
        assert index_all(conn, LOG_ID) == 5
        rows = conn.execute("SELECT seq, text FROM convlog.search ORDER BY seq").fetchall()
        assert [seq for seq, _ in rows] == list(range(1, 36))
        assert rows[34][1] == "message 35 about the quixotic heliotrope"


def test_a_version_1_database_migrates_with_its_search_texts(pg_url: str, tmp_path: Path) -> None:
    """A database synced by the first schema (text and vector in ``records``) is brought
    to the current one by the next sync: its texts move to ``convlog.search``, nothing
    is indexed twice, and search finds what it found before."""
    version_1 = dict(MIGRATIONS)[1]
    with connect(pg_url) as conn:
        with conn.transaction():
            conn.execute("CREATE SCHEMA convlog")
            conn.execute("CREATE TABLE convlog.schema_version (version integer PRIMARY KEY, "
                         "migrated timestamptz NOT NULL DEFAULT now())")
            for statement in version_1:
                conn.execute(statement)
            conn.execute("INSERT INTO convlog.schema_version (version) VALUES (1)")
            conn.execute("INSERT INTO convlog.logs (log_id) VALUES (%s)", (LOG_ID,))
            conn.execute("""INSERT INTO convlog.records (log_id, seq, ts, kind, session, meta, search_text)
                            VALUES (%s, 1, now(), 'message', 's', '{"sender": "agent"}', 'the quixotic heliotrope'),
                                   (%s, 2, now(), 'recorder.start', NULL, '{}', NULL)""", (LOG_ID, LOG_ID))
            conn.execute("""INSERT INTO convlog.positions (log_id, seq, segment, "offset", records)
                            VALUES (%s, 2, '00000000000000000001', 10, 2)""", (LOG_ID,))
        assert schema_version(conn) == 1
        assert migrate(conn) == 1 and schema_version(conn) == SCHEMA_VERSION
        assert conn.execute("SELECT log_id::text, seq, text FROM convlog.search").fetchall() == [
            (LOG_ID, 1, "the quixotic heliotrope")]
        assert conn.execute("SELECT seq FROM convlog.search_positions").fetchall() == [(2,)]
        assert index_all(conn, LOG_ID) == 0
        columns = {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'convlog' "
            "AND table_name = 'records'")}
        assert "search_text" not in columns and "search" not in columns
    import subprocess

    result = subprocess.run(convlog_cmd("search", "heliotrope", "--db", pg_url, "--json"), capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert [(hit["seq"], hit["session"]) for hit in orjson.loads(result.stdout)] == [(1, "s")]


def test_follow_makes_the_views_in_a_child_that_ends_with_it(pg_url: str, tmp_path: Path) -> None:
    """``sync --follow`` makes the search rows and projections in its views' process;
    after a ``kill -9`` of the sync, that process ends by itself (within a second or so),
    and a new sync takes over the log."""
    import signal
    import subprocess
    import time

    import psutil

    from convlog.store.segment import ensure_layout
    from convlog.store.writer import SegmentWriter

    log = tmp_path / "log"
    ensure_layout(log)
    writer = SegmentWriter(log, 1, fsync="never")
    lines = message_lines(1, 40, "s1")
    writer.write(b"".join(lines), len(lines))
    writer.close()

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(convlog_cmd("sync", "--follow", "--db", pg_url, "--dir", str(log)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def views_made(conn: psycopg.Connection) -> bool:
        try:
            searched = conn.execute("SELECT coalesce(max(s.seq), 0) = max(p.seq) FROM convlog.positions p "
                                    "LEFT JOIN convlog.search_positions s USING (log_id)").fetchone()[0]
            projected = conn.execute("SELECT count(*) FROM convlog.sessions").fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return False
        return bool(searched) and projected > 0

    sync = start()
    try:
        deadline = time.monotonic() + 60
        with connect(pg_url) as conn:
            while not views_made(conn):
                assert sync.poll() is None and time.monotonic() < deadline, sync.stderr.read() if sync.stderr else ""
                time.sleep(0.1)
        # The views' process (and multiprocessing's resource tracker beside it).
        children = psutil.Process(sync.pid).children()
        assert any("spawn_main" in " ".join(c.cmdline()) for c in children), [c.cmdline() for c in children]
        sync.send_signal(signal.SIGKILL)
        sync.wait(10)
        for child in children:
            child.wait(10)  # raises psutil.TimeoutExpired when it outlives its parent
    finally:
        if sync.poll() is None:
            sync.kill()
            sync.wait(10)
    again = start()
    try:
        time.sleep(1.0)
        assert again.poll() is None, again.stderr.read() if again.stderr else ""
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == 0
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    finally:
        if again.poll() is None:
            again.kill()
            again.wait(10)


def test_a_purge_reaches_the_database(pg_url: str, tmp_path: Path) -> None:
    """``convlog purge`` rewrites records the sync has already written (their seqs stay,
    so they are not read again): its ``session.purged`` record makes the sync purge the
    same rows in the database, drop their search rows and project the session again.
    The other session is untouched, and the database then answers as the log does."""
    import subprocess

    from convlog.store.segment import ensure_layout
    from convlog.store.writer import SegmentWriter

    log = tmp_path / "log"
    ensure_layout(log)
    writer = SegmentWriter(log, 1, fsync="never")
    ingest = Ingest()
    lines = []
    for seq in range(1, 21):
        session = "gone" if seq % 2 else "kept"
        event = {"type": "message", "session_id": session, "message_id": f"{session}-{seq}", "sender": "agent",
                 "content": f"the {'xylophonic' if session == 'gone' else 'marimbaphonic'} secret {seq}"}
        lines.append(ingest.line([session.encode(), orjson.dumps(event)], seq,
                                 f"2026-12-06T07:00:{seq:02d}.000000Z", "sub"))
    writer.write(b"".join(lines), 20)
    writer.close()

    def cli(*args: str) -> bytes:
        result = subprocess.run(convlog_cmd(*args), capture_output=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    cli("sync", "--db", pg_url, "--dir", str(log), "--once")
    assert len(orjson.loads(cli("search", "xylophonic", "--db", pg_url, "--json", "--limit", "50"))) == 10
    cli("purge", "gone", "--yes", "--dir", str(log))
    cli("sync", "--db", pg_url, "--dir", str(log), "--once")
    with connect(pg_url) as conn:
        rows = conn.execute("SELECT session, data, data_json, topic, meta FROM convlog.records "
                            "WHERE session = 'gone' AND kind = 'message'").fetchall()
        assert len(rows) == 10
        for _session, data, data_json, topic, meta in rows:
            assert (data, data_json, topic) == (None, None, None) and meta["purged"] is True and meta["sha256"]
            assert "sender" not in meta
        kept = conn.execute("SELECT count(*) FROM convlog.records WHERE session = 'kept' AND data IS NOT NULL")
        assert kept.fetchone() == (10,)
        text = " ".join(str(row) for row in conn.execute("SELECT * FROM convlog.records").fetchall())
        text += " ".join(str(row) for row in conn.execute("SELECT * FROM convlog.search").fetchall())
        text += " ".join(str(row) for row in conn.execute("SELECT * FROM convlog.messages").fetchall())
        assert "xylophonic" not in text  # no byte of what was said is left in the database
    assert orjson.loads(cli("search", "xylophonic", "--db", pg_url, "--json")) == []
    assert len(orjson.loads(cli("search", "marimbaphonic", "--db", pg_url, "--json", "--limit", "50"))) == 10
    local = {row["id"]: row["messages"] for row in orjson.loads(cli("sessions", "--dir", str(log), "--json", "--all"))}
    remote = {row["id"]: row["messages"] for row in orjson.loads(cli("sessions", "--db", pg_url, "--json", "--all"))}
    assert remote == local and remote["kept"] == 10
