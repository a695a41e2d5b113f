"""A real PostgreSQL server for the tests: initdb, pg_ctl and pg_basebackup, no mocks.

``PgServer`` makes a cluster in a fresh directory under /tmp (not pytest's ``tmp_path``,
which the ``postgres`` user cannot read), listening on 127.0.0.1 only on a free port,
with durability left on (``fsync = on``) so that crash tests mean something, and WAL
kept for streaming replicas (``PgServer.replica``). initdb refuses to run as root: when
the tests run as root the server's programs run as the ``postgres`` user through
``runuser``; otherwise they run as the current user.

Every server started here is killed when the interpreter exits (``atexit``), even when a
test or a fixture failed before stopping it, and its directory is removed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
import pytest
from psycopg import sql

from convlog.cli.demo import free_port

#: The programs a test server needs, all from the same directory.
_PROGRAMS = ("initdb", "pg_ctl", "postgres", "pg_basebackup")
#: The user the server runs as when the tests run as root.
SERVER_USER = "postgres"
#: Settings of every test server, appended to its postgresql.conf.
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "wal_level": "replica",
    "max_wal_senders": "5",
    "wal_keep_size": "'64MB'",
    "hot_standby": "on",
    "shared_buffers": "'32MB'",
    "max_connections": "50",
}
_START_TIMEOUT_S = 60.0
_STARTED: list[PgServer] = []


def _has_programs(directory: Path) -> bool:
    return all((directory / name).is_file() and os.access(directory / name, os.X_OK) for name in _PROGRAMS)


def _version_key(directory: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", directory.parent.name)) or (0,)


def find_pg_bin() -> Path:
    """The directory holding initdb, pg_ctl, postgres and pg_basebackup.

    Looks at ``pg_config --bindir`` first, then the newest /usr/lib/postgresql/*/bin,
    then the directory of ``initdb`` on PATH; fails the test (not skips) when none has
    all four, since CI installs the server (see .ci/run).
    """
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for directory in candidates:
        if _has_programs(directory):
            return directory
    looked = ", ".join(str(c) for c in candidates) or "nothing"
    pytest.fail(
        f"PostgreSQL server programs ({', '.join(_PROGRAMS)}) not found (looked in: {looked}); "
        "install them, e.g. apt-get install postgresql (.ci/run does)"
    )


def _as_root() -> bool:
    return os.geteuid() == 0


def _server_env() -> dict[str, str]:
    """The environment without PG* variables, which could point libpq elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}


def _run(cmd: list[str], cwd: Path, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run one of the server's programs as the server's user; output captured."""
    if _as_root():
        cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
    return subprocess.run(cmd, cwd=cwd, env=_server_env(), capture_output=True, text=True, timeout=timeout_s)


def _make_base() -> Path:
    """A fresh private directory under /tmp, owned by the server's user."""
    base = Path(tempfile.mkdtemp(prefix="convlog-pg-", dir="/tmp"))
    if _as_root():
        try:
            user = pwd.getpwnam(SERVER_USER)
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            pytest.fail(f"tests run as root but there is no {SERVER_USER!r} user to run PostgreSQL as")
        os.chown(base, user.pw_uid, user.pw_gid)
    return base


class PgServer:
    """One PostgreSQL cluster in its own directory, on its own port.

    ``start()`` makes the cluster on first use (initdb) and starts it; ``stop()``,
    ``kill9()`` and ``restart()`` keep the directory, ``close()`` stops and removes it.
    """

    def __init__(self, bin_dir: Path | None = None, *, _base: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_pg_bin()
        self.base = _base or _make_base()
        self.datadir = self.base / "data"
        self.log_path = self.base / "server.log"
        self.port = free_port()
        self.is_replica = False
        _STARTED.append(self)

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database as the ``postgres`` superuser."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def __repr__(self) -> str:
        return f"PgServer(port={self.port}, datadir={self.datadir})"

    def log(self) -> str:
        """The server's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _prog(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _fail(self, what: str, result: subprocess.CompletedProcess[str] | None = None) -> NoReturn:
        output = f"{result.stdout}{result.stderr}" if result is not None else ""
        pytest.fail(f"{what} ({self!r})\n{output}\n--- server log {self.log_path} ---\n{self.log()}")

    def _write_settings(self) -> None:
        """Append this server's settings (port and socket last, so a replica's own win)."""
        settings = {**_SETTINGS, "port": str(self.port), "unix_socket_directories": f"'{self.base}'"}
        with (self.datadir / "postgresql.conf").open("a") as fh:
            fh.write("\n# convlog tests (tests/pg_server.py)\n")
            fh.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _initdb(self) -> None:
        result = _run([self._prog("initdb"), "-D", str(self.datadir), "--auth=trust", "-U", "postgres",
                       "-E", "UTF8", "--locale=C", "--no-sync"], cwd=self.base)
        if result.returncode != 0:
            self._fail("initdb failed", result)
        self._write_settings()

    def is_running(self) -> bool:
        """Whether the postmaster of this data directory is alive."""
        pid = self.postmaster_pid()
        return pid is not None and _alive(pid)

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid from ``postmaster.pid``, or None when there is none."""
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def start(self, timeout_s: float = _START_TIMEOUT_S) -> PgServer:
        """Start the server (initdb first when the cluster does not exist yet) and wait
        until it accepts connections; fails the test with the server's log otherwise.

        A port taken since it was chosen is replaced by another free one. A server
        already running is only waited for.
        """
        if self.is_running():
            self.wait_ready(timeout_s)
            return self
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb()
        for _attempt in range(3):
            log_size = self.log_path.stat().st_size if self.log_path.exists() else 0
            result = _run([self._prog("pg_ctl"), "-D", str(self.datadir), "-l", str(self.log_path),
                           "-w", "-t", str(int(timeout_s)), "start"], cwd=self.base, timeout_s=timeout_s + 30)
            if result.returncode == 0:
                self.wait_ready(timeout_s)
                return self
            if "Address already in use" not in self.log()[log_size:]:
                break
            self.port = free_port()
            self._write_settings()
        self._fail("the server did not start", result)

    def wait_ready(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Wait until a connection over TCP succeeds (deadline, not a fixed sleep)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if not self.is_running():
                    self._fail(f"the server exited while starting: {exc}")
                if time.monotonic() > deadline:
                    self._fail(f"the server did not accept connections within {timeout_s} s: {exc}")
                time.sleep(0.05)

    def stop(self, mode: str = "fast", timeout_s: float = 60.0) -> None:
        """``pg_ctl stop -m MODE`` (smart, fast or immediate) and wait for it."""
        if not self.is_running():
            return
        result = _run([self._prog("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", str(int(timeout_s)),
                       "stop"], cwd=self.base, timeout_s=timeout_s + 30)
        if result.returncode != 0 and self.is_running():
            self._fail(f"pg_ctl stop -m {mode} failed", result)

    def restart(self, timeout_s: float = _START_TIMEOUT_S) -> PgServer:
        """Stop (fast) and start again on the same port and data."""
        self.stop()
        return self.start(timeout_s)

    def kill9(self, timeout_s: float = 30.0) -> None:
        """SIGKILL the postmaster and every process it started, as a crash of the machine
        would stop them: nothing gets to flush or clean up. The data stays for start()."""
        pid = self.postmaster_pid()
        if pid is None or not _alive(pid):
            return
        try:
            procs = [psutil.Process(pid)]
            procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while alive := [proc.pid for proc in procs if _running(proc)]:
            if time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL processes {alive} survived SIGKILL for {timeout_s} s")
            time.sleep(0.01)
        # The next postmaster refuses to start while the pid in postmaster.pid exists, and
        # a zombie exists until whoever inherited it (init) reaps it, which can take
        # seconds. A zombie holds nothing (no shared memory, no port), so once every
        # process is dead the lock files (postmaster.pid, the socket's .lock) are as
        # stale as after a power cut: remove them, as postgres itself would on finding
        # their pid gone.
        reap_deadline = time.monotonic() + 0.2
        while psutil.pid_exists(pid) and procs[0].is_running():
            if time.monotonic() > reap_deadline:
                for lock in [self.datadir / "postmaster.pid", *self.base.glob(".s.PGSQL.*.lock")]:
                    lock.unlink(missing_ok=True)
                break
            time.sleep(0.01)

    def close(self) -> None:
        """Stop the server (kill -9 when a fast stop fails) and remove its directory."""
        try:
            self.stop()
        except BaseException:  # pytest.fail included: it must not keep the directory or the server
            self.kill9()
        finally:
            if self.is_running():
                self.kill9()
            shutil.rmtree(self.base, ignore_errors=True)
            with contextlib.suppress(ValueError):
                _STARTED.remove(self)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def replica(self, timeout_s: float = _START_TIMEOUT_S) -> PgServer:
        """A streaming standby of this (running) server, started on its own free port.

        Made with ``pg_basebackup -R -X stream``, so it follows the primary from the
        backup on; ``wait_caught_up`` waits until it has replayed what the primary wrote.
        """
        standby = PgServer(self.bin_dir)
        result = _run([self._prog("pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                       "-D", str(standby.datadir), "-R", "-X", "stream", "--checkpoint=fast"],
                      cwd=standby.base, timeout_s=timeout_s + 30)
        if result.returncode != 0:
            standby.close()
            self._fail("pg_basebackup failed", result)
        standby.is_replica = True
        standby._write_settings()
        return standby.start(timeout_s)


def _running(proc: psutil.Process) -> bool:
    """Whether ``proc`` still runs: not exited, its pid not reused, and not a zombie
    (which is dead, only waiting for its parent to reap it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs (see ``_running``)."""
    try:
        return _running(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def _url_of(server: PgServer | str) -> str:
    return server.url if isinstance(server, PgServer) else server


def wait_caught_up(primary: PgServer | str, replica: PgServer | str, timeout_s: float = 30.0) -> str:
    """Wait until ``replica`` has replayed the primary's WAL up to its current position.

    Compares ``pg_current_wal_lsn()`` on the primary, taken once, with
    ``pg_last_wal_replay_lsn()`` on the replica; fails the test on timeout.

    Returns:
        the primary's LSN that was waited for.
    """
    with psycopg.connect(_url_of(primary), autocommit=True) as conn:
        target = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(_url_of(replica), autocommit=True) as conn:
        while True:
            replayed, done = conn.execute(
                "SELECT pg_last_wal_replay_lsn()::text, pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
            ).fetchone()
            if done:
                return target
            if time.monotonic() > deadline:
                log = replica.log() if isinstance(replica, PgServer) else ""
                pytest.fail(f"replica replayed up to {replayed}, not {target}, within {timeout_s} s\n{log}")
            time.sleep(0.02)


def database_url(url: str, name: str) -> str:
    """``url`` with its database replaced by ``name``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_database(url: str, name: str) -> str:
    """Create an empty database ``name`` on the server of ``url``; return its URL."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(url, name)


def drop_database(url: str, name: str) -> None:
    """Drop database ``name`` on the server of ``url``, closing its connections."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@atexit.register
def _kill_leftovers() -> None:
    """Kill every server still running when the interpreter exits, and remove its files."""
    for server in list(_STARTED):
        with contextlib.suppress(BaseException):
            server.kill9()
        shutil.rmtree(server.base, ignore_errors=True)
    _STARTED.clear()
