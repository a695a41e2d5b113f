"""Running unattended: ``convlog launch`` (exactly one recorder per directory, even when
five agents launch at once; with ``--sync URL`` exactly one ``convlog sync`` into a real
PostgreSQL), the ``ensure_running`` API, resume context for hooks,
``status`` health and ``doctor`` against a real broker, and the sd_notify datagrams of a
real recorder process received on a real Unix datagram socket.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from conftest import Bus, Proc, answering, convlog_cmd, records, wait_for_records
from convlog.bus import control
from convlog.cli import launcher
from convlog.store.lock import pid_alive

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- helpers


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(convlog_cmd(*args), capture_output=True, text=True, timeout=120)


def recorder_processes(directory: Path) -> list[psutil.Process]:
    """Live ``convlog record --dir DIRECTORY`` processes (zombies not counted)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or "record" not in cmdline or "convlog" not in cmdline:
            continue
        with contextlib.suppress(ValueError, IndexError):
            if cmdline[cmdline.index("--dir") + 1] == str(directory):
                found.append(proc)
    return found


def sync_processes(directory: Path) -> list[psutil.Process]:
    """Live ``convlog sync --dir DIRECTORY`` processes (zombies not counted)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or "sync" not in cmdline or "convlog" not in cmdline:
            continue
        with contextlib.suppress(ValueError, IndexError):
            if cmdline[cmdline.index("--dir") + 1] == str(directory):
                found.append(proc)
    return found


def wait_gone(proc: psutil.Process, timeout_s: float = 10.0) -> None:
    """Wait until ``proc`` has exited (a zombie counts: it holds no locks, and a detached
    process is reaped by whoever inherited it, not by us)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"pid {proc.pid} still runs after {timeout_s} s")
        time.sleep(0.02)


@pytest.fixture
def detached() -> Iterator[list[Path]]:
    """Directories whose detached recorders and syncs (started by ``launch``, not by the
    test) are killed at teardown, whatever the test's outcome."""
    directories: list[Path] = []
    yield directories
    for directory in directories:
        for proc in [*sync_processes(directory), *recorder_processes(directory)]:
            with contextlib.suppress(psutil.Error):
                proc.kill()
                wait_gone(proc)




def wait_status(directory: Path, until: Any, what: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Poll ``status`` until ``until(reply)`` holds; return that reply."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = control.request(directory, "status")
        if until(reply):
            return reply
        if time.monotonic() > deadline:
            pytest.fail(f"status never showed {what}: {reply}")
        time.sleep(0.1)




def message(session: str, i: int) -> tuple[bytes, bytes]:
    event = {"type": "message", "session_id": session, "message_id": f"{session}-m{i}", "sender": "agent",
             "role": "assistant", "content": f"step {i} of {session}"}
    return session.encode(), orjson.dumps(event)


# --------------------------------------------------------------------------- launch


def test_five_launches_at_once_start_exactly_one_recorder(bus: Bus, tmp_path: Path, detached: list[Path]) -> None:
    """Five ``convlog launch --quiet`` started together on one directory all exit 0
    silently; one recorder process runs (the lock holder, the pid ``status`` reports,
    the only ``convlog record`` for the directory) and the log has one
    ``recorder.start``. ``convlog stop`` then stops it and the process is gone."""
    directory = tmp_path / "log"
    detached.append(directory)
    args = convlog_cmd("launch", "--dir", str(directory), "--sub", bus.xpub, "--quiet")
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(5)]
    results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert (out, err) == ("", "")

    status = control.request(directory, "status")
    pid = status["pid"]
    holder = launcher.lock_holder(directory)
    assert holder is not None and holder["pid"] == pid
    assert [p.pid for p in recorder_processes(directory)] == [pid]
    starts = [r for r in records(directory) if r["kind"] == "recorder.start"]
    assert len(starts) == 1 and starts[0]["data"]["pid"] == pid
    log_text = (directory / launcher.LOG_NAME).read_text()
    assert log_text.count("--- convlog launch:") == 1

    again = cli("launch", "--dir", str(directory), "--sub", bus.xpub)
    assert again.returncode == 0
    assert f"already running: pid {pid}" in again.stdout

    stopped = cli("stop", "--dir", str(directory))
    assert stopped.returncode == 0, stopped.stderr
    assert f"pid {pid}" in stopped.stdout
    assert not pid_alive(pid)
    assert recorder_processes(directory) == []
    assert not control.socket_path(directory).exists()
    assert records(directory)[-1]["kind"] == "recorder.stop"
    assert cli("status", "--dir", str(directory)).returncode == 3


def test_launch_of_a_recorder_that_cannot_start_prints_its_log(tmp_path: Path, detached: list[Path]) -> None:
    """A recorder that exits at start (an invalid config) makes ``launch`` exit 1 with
    the last lines of the recorder's log, which name the config error; nothing runs."""
    directory = tmp_path / "log"
    detached.append(directory)
    bad = tmp_path / "bad.toml"
    bad.write_text('[recorder]\nfsync = "sometimes"\n')
    result = cli("launch", "--dir", str(directory), "--config", str(bad), "--quiet")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "the recorder exited with status 1" in result.stderr
    assert f"{bad}:2: recorder.fsync: must be one of always, interval, never (got 'sometimes')" in result.stderr
    assert str(directory / launcher.LOG_NAME) in result.stderr
    assert result.stdout == ""
    assert recorder_processes(directory) == []
    assert launcher.lock_holder(directory) is None
    assert cli("status", "--dir", str(directory)).returncode == 3


def test_ensure_running_starts_once_then_finds_it(bus: Bus, tmp_path: Path, detached: list[Path]) -> None:
    """The Python API: the first call starts a recorder (``started`` True), the second
    finds the same one running (``started`` False); ``stop_recorder`` stops it."""
    directory = tmp_path / "log"
    detached.append(directory)
    first = launcher.ensure_running(directory, ["--sub", bus.xpub])
    assert first.started is True
    assert first.status["pid"] == first.pid and first.log == directory / launcher.LOG_NAME
    assert [p.pid for p in recorder_processes(directory)] == [first.pid]
    second = launcher.ensure_running(directory, ["--sub", bus.xpub])
    assert (second.started, second.pid) == (False, first.pid)
    assert launcher.stop_recorder(directory) == first.pid
    assert not pid_alive(first.pid)
    assert recorder_processes(directory) == []


def test_launch_resume_prints_the_crystal_and_the_messages_after_it(
    bus: Bus, tmp_path: Path, detached: list[Path]
) -> None:
    """After messages and a crystal over the first two, ``launch --resume latest``
    prints the resume context: as JSON the summary and exactly the messages after it;
    as markdown the summary and their text."""
    directory = tmp_path / "log"
    detached.append(directory)
    started = cli("launch", "--dir", str(directory), "--sub", bus.xpub)
    assert started.returncode == 0 and "recorder started" in started.stdout
    pub = bus.publisher(heartbeat_s=None)
    for i in range(1, 5):
        pub.send(*message("agent-7", i))
    wait_for_records(directory, 4)
    pub.close(0, heartbeat=False)
    crystal = cli("crystal", "agent-7", "--summary", "Set up the repo; tests pass.", "--upto", "2",
                  "--dir", str(directory))
    assert crystal.returncode == 0 and "(recorder)" in crystal.stdout

    as_json = cli("launch", "--dir", str(directory), "--resume", "latest", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert "already running" in as_json.stderr
    context = orjson.loads(as_json.stdout)
    assert context["session"] == "agent-7"
    assert context["crystal"]["upto"] == 2 and context["crystal"]["summary"] == "Set up the repo; tests pass."
    assert [m["text"] for m in context["messages"]] == ["step 3 of agent-7", "step 4 of agent-7"]

    markdown = cli("launch", "--dir", str(directory), "--quiet", "--resume", "agent-7")
    assert markdown.returncode == 0 and markdown.stderr == ""
    assert "Set up the repo; tests pass." in markdown.stdout
    assert "step 4 of agent-7" in markdown.stdout and "step 1 of agent-7" not in markdown.stdout
    assert cli("stop", "--dir", str(directory)).returncode == 0


def db_count(url: str, sql: str = "SELECT count(*) FROM convlog.records") -> int:
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except psycopg.errors.UndefinedTable:  # the follower has not made the schema yet
        return 0


def wait_db_count(url: str, count: int, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (found := db_count(url)) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: {found} records in the database, not {count}, after {timeout_s} s")
        time.sleep(0.1)


def test_launch_sync_runs_one_follower_into_postgresql_and_restarts_a_killed_one(
    bus: Bus, tmp_path: Path, detached: list[Path], pg_url: str
) -> None:
    """``launch --sync URL`` twice starts one recorder and one ``convlog sync --follow``
    (the second call starts nothing); the URL is in the follower's environment, not its
    command line; what is published reaches ``convlog.records`` in a real PostgreSQL.
    After the follower is killed, ``launch --sync`` starts a new one, which carries on
    from where the database stopped (every record once)."""
    from convlog.sync.follower import sync_running

    directory = tmp_path / "log"
    detached.append(directory)
    args = ("launch", "--dir", str(directory), "--sub", bus.xpub, "--sync", pg_url)
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert "recorder started" in first.stdout and "sync started: pid " in first.stdout
    [follower] = sync_processes(directory)
    assert f"sync started: pid {follower.pid}, {directory} (log {directory / launcher.SYNC_LOG_NAME})" in first.stdout
    assert sync_running(directory)
    assert pg_url not in " ".join(follower.cmdline()) and "--db" not in follower.cmdline()
    assert follower.environ()["CONVLOG_DB"] == pg_url
    recorder_pid = control.request(directory, "status")["pid"]

    second = cli(*args)
    assert second.returncode == 0, second.stderr
    assert f"recorder already running: pid {recorder_pid}" in second.stdout
    assert f"sync already running: pid {follower.pid}" in second.stdout
    assert [p.pid for p in sync_processes(directory)] == [follower.pid]
    assert [p.pid for p in recorder_processes(directory)] == [recorder_pid]
    sync_log = (directory / launcher.SYNC_LOG_NAME).read_text()
    assert sync_log.count("--- convlog launch:") == 1 and pg_url not in sync_log

    pub = bus.publisher(heartbeat_s=None)
    for i in range(1, 5):
        pub.send(*message("agent-db", i))
    in_log = len(wait_for_records(directory, 4))
    wait_db_count(pg_url, in_log, "the first follower")

    follower.kill()
    wait_gone(follower)
    # The kernel lets go of the flock when the last thread of the killed process is gone,
    # which can be a moment after its main thread became a zombie.
    deadline = time.monotonic() + 10
    while sync_running(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sync_running(directory) and sync_processes(directory) == []
    for i in range(5, 8):
        pub.send(*message("agent-db", i))
    in_log = len(wait_for_records(directory, 7))
    pub.close(0, heartbeat=False)

    again = cli(*args, "--quiet")
    assert again.returncode == 0, again.stderr
    assert (again.stdout, again.stderr) == ("", "")
    [restarted] = sync_processes(directory)
    assert restarted.pid != follower.pid and sync_running(directory)
    assert [p.pid for p in recorder_processes(directory)] == [recorder_pid]
    wait_db_count(pg_url, in_log, "the restarted follower")
    assert db_count(pg_url, "SELECT count(DISTINCT seq) FROM convlog.records") == db_count(pg_url)
    assert db_count(pg_url, "SELECT count(*) FROM convlog.records WHERE session = 'agent-db'") == 7

    restarted.terminate()   # SIGTERM: the follower ends after the batch in flight, status 0
    wait_gone(restarted)
    assert cli("stop", "--dir", str(directory)).returncode == 0
    assert sync_processes(directory) == [] and recorder_processes(directory) == []


def test_launch_sync_that_cannot_start_prints_its_log(bus: Bus, tmp_path: Path, detached: list[Path]) -> None:
    """A follower that exits at once makes ``launch --sync`` exit 1 with the last lines
    of ``DIR/sync.log``; the recorder it started keeps running. (A schema newer than
    this convlog's is such a failure; here: a directory whose sync.lock cannot be made.)"""
    directory = tmp_path / "log"
    detached.append(directory)
    assert cli("launch", "--dir", str(directory), "--sub", bus.xpub, "--quiet").returncode == 0
    (directory / "recovery" / launcher.SYNC_LOCK).mkdir()  # open(2) of the lock file fails: EISDIR
    result = cli("launch", "--dir", str(directory), "--sync", "postgresql://nobody@127.0.0.1:1/none", "--quiet")
    assert result.returncode == 1
    assert "convlog: convlog sync exited with status 1; last lines of " \
           f"{directory / launcher.SYNC_LOG_NAME}:" in result.stderr
    assert "sync.lock" in result.stderr and "Traceback" not in result.stderr
    assert sync_processes(directory) == []
    assert len(recorder_processes(directory)) == 1
    assert cli("stop", "--dir", str(directory)).returncode == 0


# --------------------------------------------------------------------------- status and doctor


def test_status_unhealthy_when_known_publishers_go_silent_healthy_when_idle(bus: Bus, tmp_path: Path) -> None:
    """With ``silence_threshold_s = 1`` and ``silence_unhealthy = true``: a recorder whose
    only publisher sent stamped messages and then nothing (no heartbeats, no goodbye) is
    reported unhealthy (exit 1, naming the silence); without ``silence_unhealthy`` the
    same silence is a warning (exit 0); a recorder with no known publishers stays
    healthy (exit 0) however long it is idle."""
    config = tmp_path / "convlog.toml"
    config.write_text("[recorder]\nsilence_threshold_s = 1\nsilence_unhealthy = true\n")
    warn_config = tmp_path / "warn.toml"
    warn_config.write_text("[recorder]\nsilence_threshold_s = 1\n")
    silent_dir, idle_dir, warn_dir = tmp_path / "silent", tmp_path / "idle", tmp_path / "warn"
    rec = bus.recorder(silent_dir, "--config", str(config))
    answering(silent_dir, rec)
    warned = bus.recorder(warn_dir, "--config", str(warn_config))
    answering(warn_dir, warned)
    pub = bus.publisher(heartbeat_s=None)
    for i in range(1, 3):
        pub.send(*message("s", i))
    wait_for_records(silent_dir, 2)
    wait_for_records(warn_dir, 2)
    pub.close(0, heartbeat=False)

    idle = bus.recorder(idle_dir, "--config", str(config))
    answering(idle_dir, idle)

    wait_status(silent_dir, lambda s: not s["healthy"] and s["publishers"]["silent_s"] > 1, "the silence")
    result = cli("status", "--dir", str(silent_dir))
    assert result.returncode == 1, result.stdout
    assert "UNHEALTHY" in result.stdout and "1 publisher(s) that did not say goodbye silent" in result.stdout
    as_json = cli("status", "--dir", str(silent_dir), "--json")
    assert as_json.returncode == 1
    reported = orjson.loads(as_json.stdout)
    assert reported["healthy"] is False and reported["publishers"]["known"] == 1
    assert any("silent" in problem for problem in reported["problems"])

    wait_status(idle_dir, lambda s: s["endpoints"][0]["connected"] and s["publishers"]["silent_s"] > 1.5,
                "a connected recorder idle past the threshold")
    result = cli("status", "--dir", str(idle_dir))
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith("healthy")
    reported = orjson.loads(cli("status", "--dir", str(idle_dir), "--json").stdout)
    assert reported["healthy"] is True and reported["publishers"]["known"] == 0 and reported["problems"] == []

    wait_status(warn_dir, lambda s: s["publishers"]["silent_s"] > 1.5, "the silence without silence_unhealthy")
    result = cli("status", "--dir", str(warn_dir))
    assert result.returncode == 0 and "warning: 1 publisher(s) that did not say goodbye silent" in result.stdout
    assert rec.terminate() == 0 and idle.terminate() == 0 and warned.terminate() == 0


def test_doctor_names_a_sub_pointed_at_the_xsub_port(
    bus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``doctor --sub <XSUB port>`` exits 1 and names the XSUB mistake on that
    endpoint's line; with the XPUB port and a running recorder every check passes."""
    monkeypatch.delenv("CONVLOG_CONFIG", raising=False)
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    answering(directory, rec)
    wrong = cli("doctor", "--dir", str(directory), "--sub", bus.xsub)
    assert wrong.returncode == 1
    line = next(line for line in wrong.stdout.splitlines() if f"sub {bus.xsub}" in line)
    assert line.startswith("FAIL") and "XSUB" in line
    assert "point --sub at its XPUB port" in wrong.stdout
    right = cli("doctor", "--dir", str(directory), "--sub", bus.xpub)
    assert right.returncode == 0, right.stdout
    assert all(line.startswith("ok") for line in right.stdout.splitlines()), right.stdout
    assert rec.terminate() == 0


# --------------------------------------------------------------------------- sd_notify


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A Unix datagram socket bound in a short temporary directory (sun_path is 108 bytes)."""
    where = Path(tempfile.mkdtemp(prefix="cln-", dir="/tmp"))
    path = str(where / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(where, ignore_errors=True)


def receive_until(sock: socket.socket, wanted: str, proc: Proc, timeout_s: float = 30.0) -> list[dict[str, str]]:
    """Datagrams (as KEY=VALUE dicts) up to and including the first that has ``wanted``."""
    got: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout_s
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            if proc.popen.poll() is not None and wanted != "STOPPING":
                break
            continue
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        got.append(fields)
        if wanted in fields:
            return got
    pytest.fail(f"no {wanted}= datagram (received {got}):\n{proc.output()[-2000:]}")


def test_recorder_sends_ready_watchdog_and_stopping(
    bus: Bus, tmp_path: Path, notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under NOTIFY_SOCKET and WATCHDOG_USEC (no WATCHDOG_PID) the recorder sends
    ``READY=1`` with its own MAINPID once it answers, then ``WATCHDOG=1`` pings; on
    SIGTERM it sends ``STOPPING=1`` and exits 0."""
    sock, path = notify_socket
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    directory = tmp_path / "log"
    rec = bus.recorder(directory, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    ready = receive_until(sock, "READY", rec)[-1]
    assert ready["READY"] == "1" and ready["MAINPID"] == str(rec.popen.pid)
    assert str(directory) in ready["STATUS"]
    assert control.request(directory, "status")["pid"] == rec.popen.pid
    pings = receive_until(sock, "WATCHDOG", rec)
    assert pings[-1]["WATCHDOG"] == "1"
    assert all("READY" not in fields for fields in pings)
    rec.popen.send_signal(signal.SIGTERM)
    stopping = receive_until(sock, "STOPPING", rec)[-1]
    assert stopping["STOPPING"] == "1"
    assert rec.popen.wait(60) == 0, rec.output()
    assert records(directory)[-1]["kind"] == "recorder.stop"
    assert "cannot notify systemd" not in rec.output()


# --------------------------------------------------------------------------- launch --menu


@pytest.mark.parametrize(("answer", "expected"), [
    ("1", ("session", 0)), (" 3 ", ("session", 2)), ("c1", ("checkpoint", 0)), ("C2", ("checkpoint", 1)),
    ("q", ("quit", -1)), ("Q", ("quit", -1)), ("0", None), ("4", None), ("c3", None), ("c", None), ("x", None),
    ("", None), ("-1", None),
])
def test_parse_pick(answer: str, expected: tuple[str, int] | None) -> None:
    from convlog.cli.output import parse_pick

    assert parse_pick(answer, sessions=3, checkpoints=2) == expected


def test_launch_menu_resumes_a_session_as_of_a_checkpoint(bus: Bus, tmp_path: Path, detached: list[Path]) -> None:
    """In a real pseudo-terminal: ``launch --menu`` lists sessions and checkpoints;
    picking the checkpoint taken before a crystal, then the session, prints the resume
    context as it was then (no crystal, the messages up to then); picking the session
    directly prints today's (the crystal)."""
    import pexpect
    directory = tmp_path / "log"
    detached.append(directory)
    assert cli("launch", "--dir", str(directory), "--sub", bus.xpub).returncode == 0
    pub = bus.publisher(heartbeat_s=None)
    for i in range(1, 4):
        pub.send(*message("agent-9", i))
    wait_for_records(directory, 3)
    pub.close(0, heartbeat=False)
    made = cli("checkpoint", "create", "--label", "before-summary", "--dir", str(directory))
    assert made.returncode == 0, made.stderr
    assert cli("crystal", "agent-9", "--summary", "Later summary.", "--upto", "3",
               "--dir", str(directory)).returncode == 0

    def menu() -> Any:
        child = pexpect.spawn(convlog_cmd("launch")[0], [*convlog_cmd("launch")[1:], "--dir", str(directory), "--menu"],
                              encoding="utf-8", timeout=60, dimensions=(50, 160))
        child.expect("checkpoints")
        child.expect("before-summary")
        child.expect(r"resume which session")
        return child

    child = menu()
    child.sendline("c1")
    child.expect("sessions as of seq")
    child.expect(r"resume which session")
    child.sendline("1")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    then = child.before
    assert "Resume context: session agent-9" in then and "step 3 of agent-9" in then
    assert "Later summary." not in then

    child = menu()
    child.sendline("1")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Later summary." in child.before

    child = menu()
    child.sendline("c9")  # not listed: asked again, nothing printed
    child.expect("not in the lists above")
    child.sendline("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Resume context" not in child.before
    assert cli("stop", "--dir", str(directory)).returncode == 0
