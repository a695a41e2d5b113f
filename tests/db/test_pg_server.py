"""The PostgreSQL test infrastructure (tests/pg_server.py, the ``pg_server`` and
``pg_url`` fixtures) does what the sync tests will rely on, with real servers: a fresh
database per test, committed rows surviving a kill -9, a streaming replica that follows
the primary and refuses writes, and a failed start reported with the server's log.
"""

from __future__ import annotations

import psycopg
import pytest

from pg_server import PgServer, database_url, find_pg_bin, wait_caught_up


def _count(url: str, table: str = "t") -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_pg_url_is_a_fresh_database_on_a_durable_loopback_server(pg_url: str) -> None:
    """pg_url is an empty database of its own on a server listening on 127.0.0.1 with
    fsync on and WAL for replicas; a table can be created, written and read through it."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] != "postgres"
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            (["fsync", "wal_level", "listen_addresses", "synchronous_commit"],),
        ).fetchall())
        assert settings == {"fsync": "on", "wal_level": "replica", "listen_addresses": "127.0.0.1",
                            "synchronous_commit": "on"}
        conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        assert conn.execute("SELECT body FROM t ORDER BY id").fetchall() == [("one",), ("two",)]


def test_each_test_gets_another_database(pg_url: str, pg_server: PgServer) -> None:
    """The database of the test before was dropped: only this test's remains besides
    the server's own."""
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        names = [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")]
    assert sorted(names) == sorted(["postgres", pg_url.rsplit("/", 1)[1]])


def test_committed_rows_survive_kill9_and_uncommitted_ones_do_not() -> None:
    """After SIGKILL of the postmaster and its children, start() runs crash recovery and
    every committed row is there; a transaction still open at the crash is not. A fast
    restart keeps port and data; close() leaves no process and no directory behind."""
    server = PgServer()
    with server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id bigint PRIMARY KEY)")
            for i in range(100):
                conn.execute("INSERT INTO t VALUES (%s)", (i,))
        open_tx = psycopg.connect(server.url)
        open_tx.execute("INSERT INTO t SELECT generate_series(1000, 1999)")
        server.kill9()
        assert not server.is_running()
        open_tx.close()
        server.start()
        assert "not properly shut down; automatic recovery in progress" in server.log()
        assert _count(server.url) == 100
        port = server.port
        server.restart()
        assert server.port == port
        assert _count(server.url) == 100
        pid = server.postmaster_pid()
    assert pid is not None
    assert not server.is_running()
    assert not server.base.exists()


def test_replica_follows_the_primary_and_refuses_writes(pg_server: PgServer, pg_url: str) -> None:
    """A streaming replica of the session server answers with the rows the primary
    committed after the backup, once caught up, and a write to it fails as read-only."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id bigint PRIMARY KEY)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 10)")
    replica = pg_server.replica()
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("INSERT INTO t SELECT generate_series(11, 25)")
        wait_caught_up(pg_server, replica, timeout_s=30)
        replica_url = database_url(replica.url, pg_url.rsplit("/", 1)[1])
        assert replica.port != pg_server.port
        assert _count(replica_url) == 25
        with psycopg.connect(replica_url, autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("INSERT INTO t VALUES (26)")
    finally:
        replica.close()
    assert not replica.base.exists()


def test_a_server_that_cannot_start_fails_with_its_log() -> None:
    """A start that fails (here a bad setting) fails the test with the server's log, which
    says why, and leaves nothing running."""
    with PgServer() as server:
        server.stop()
        with (server.datadir / "postgresql.conf").open("a") as fh:
            fh.write("shared_buffers = 'lots'\n")
        with pytest.raises(pytest.fail.Exception) as failure:
            server.start(timeout_s=20)
        assert "the server did not start" in str(failure.value)
        assert 'invalid value for parameter "shared_buffers"' in str(failure.value)
        assert not server.is_running()


def test_find_pg_bin_has_the_server_programs() -> None:
    """find_pg_bin names one directory with initdb, pg_ctl, postgres and pg_basebackup."""
    directory = find_pg_bin()
    assert all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres", "pg_basebackup"))
