"""``convlog doctor``: endpoint probes against a real broker, and the checks run_checks
composes (config, directory, recorder, SUB endpoints, silence, clock)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from conftest import Proc, spawn
from convlog.bus.probe import Probe, probe_endpoint
from convlog.cli.demo import free_port
from convlog.core.record import make_line
from convlog.recorder.doctor import (
    XSUB_FIX,
    Check,
    check_clock,
    check_recorder,
    check_retention,
    check_silence,
    run_checks,
)
from convlog.store.segment import LOCK_FILE, RECOVERY, ensure_layout, segment_name


def wait_listening(endpoint: str, timeout_s: float = 15.0) -> None:
    """Wait until something accepts connections at ``endpoint`` (a broker starting up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe_endpoint(endpoint, 0.5).reachable:
            return
        time.sleep(0.05)
    pytest.fail(f"nothing listening at {endpoint} after {timeout_s} s")


def start_broker(tmp: Path, xsub: str, xpub: str) -> Proc:
    """``convlog broker`` as a subprocess, returned once both endpoints accept."""
    proc = spawn(["broker", "--xsub", xsub, "--xpub", xpub], tmp / "broker.log")
    try:
        wait_listening(xsub)
        wait_listening(xpub)
    except BaseException:
        proc.kill9()
        raise
    return proc


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A reference broker on free loopback ports, shared by this module: ``(xsub, xpub)``."""
    xsub, xpub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    proc = start_broker(tmp_path_factory.mktemp("broker"), xsub, xpub)
    try:
        yield xsub, xpub
    finally:
        proc.terminate()


def one_line(text: str) -> bool:
    return bool(text) and "\n" not in text


# --- probe_endpoint ---------------------------------------------------------------


def test_probe_xpub_port_is_ok_for_sub(broker: tuple[str, str]) -> None:
    """The broker's XPUB port: reachable, named XPUB, a SUB's handshake succeeds."""
    _, xpub = broker
    probe = probe_endpoint(xpub)
    assert probe == Probe(xpub, True, "XPUB", True, probe.detail)
    assert one_line(probe.detail) and "XPUB" in probe.detail


def test_probe_xsub_port_is_named_and_refused(broker: tuple[str, str]) -> None:
    """The broker's XSUB port (the Shearwater mistake): reachable, named XSUB, not ok for
    a SUB; the same answer every time, although which side of the handshake gives up
    first is a race inside libzmq."""
    xsub, _ = broker
    for _ in range(10):
        probe = probe_endpoint(xsub)
        assert (probe.reachable, probe.socket_type, probe.ok_for_sub) == (True, "XSUB", False)
        assert one_line(probe.detail) and "XSUB" in probe.detail and "receives nothing" in probe.detail


def test_probe_closed_port_is_unreachable_at_once() -> None:
    """Nothing listening: unreachable, and the answer comes long before the timeout."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    probe = probe_endpoint(endpoint, timeout_s=2.0)
    assert time.monotonic() - started < 1.0
    assert (probe.reachable, probe.socket_type, probe.ok_for_sub) == (False, None, False)
    assert "nothing listening" in probe.detail and one_line(probe.detail)


def test_probe_silent_listener_returns_within_timeout() -> None:
    """A TCP listener that never speaks ZMTP: the probe gives up at its timeout, not later."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        endpoint = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        probe = probe_endpoint(endpoint, timeout_s=0.5)
        elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 1.5
    assert (probe.reachable, probe.ok_for_sub) == (True, False)
    assert "no ZMTP handshake" in probe.detail


@pytest.mark.parametrize(
    "endpoint", ["nonsense", "", "tcp://127.0.0.1", "tcp://127.0.0.1:notaport", "tcp://*:5556", "foo://x",
                 "inproc://bus", "ipc://"],
)
def test_probe_bad_endpoint_string_does_not_raise(endpoint: str) -> None:
    """A malformed or unprobeable endpoint gives an unreachable probe with the reason."""
    probe = probe_endpoint(endpoint, timeout_s=1.0)
    assert (probe.endpoint, probe.reachable, probe.ok_for_sub, probe.socket_type) == (endpoint, False, False, None)
    assert one_line(probe.detail)


def test_probe_ipc_endpoints(tmp_path: Path) -> None:
    """ipc:// works like tcp://: a broker's XPUB and XSUB sockets in tmp_path are told
    apart, and a path nobody bound is unreachable."""
    xsub, xpub = f"ipc://{tmp_path}/xsub.sock", f"ipc://{tmp_path}/xpub.sock"
    proc = start_broker(tmp_path, xsub, xpub)
    try:
        good, bad = probe_endpoint(xpub), probe_endpoint(xsub)
    finally:
        proc.terminate()
    assert (good.reachable, good.socket_type, good.ok_for_sub) == (True, "XPUB", True)
    assert (bad.reachable, bad.socket_type, bad.ok_for_sub) == (True, "XSUB", False)
    missing = probe_endpoint(f"ipc://{tmp_path}/nobody.sock", timeout_s=1.0)
    assert (missing.reachable, missing.ok_for_sub) == (False, False)
    assert "nothing listening" in missing.detail


# --- run_checks -------------------------------------------------------------------


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def assert_well_formed(checks: list[Check]) -> None:
    for check in checks:
        assert one_line(check.message), check
        if check.ok:
            assert check.fix is None, check
        else:
            assert check.fix is not None and one_line(check.fix), check


def test_run_checks_flags_sub_pointed_at_xsub(
    broker: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recorder configured with the broker's XPUB and XSUB ports: only the XSUB
    endpoint is flagged among the endpoints, with the plain fix; with no recorder
    running the recorder check fails too, and everything else passes."""
    monkeypatch.delenv("CONVLOG_CONFIG", raising=False)
    xsub, xpub = broker
    checks = run_checks(None, tmp_path / "logs", [xpub, xsub], None)
    assert [c.name for c in checks] == [
        "config", "directory", "recorder", f"sub {xpub}", f"sub {xsub}", "silence", "clock", "retention",
        "database",
    ]
    assert_well_formed(checks)
    assert {c.name for c in checks if not c.ok} == {"recorder", f"sub {xsub}"}
    flagged = by_name(checks)[f"sub {xsub}"]
    assert flagged.fix == XSUB_FIX
    assert "XSUB" in flagged.message
    assert "not running" in by_name(checks)["recorder"].message
    assert "would be created" in by_name(checks)["directory"].message


def test_retention_check_names_a_bound_it_cannot_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``[retention]``: off passes and says so; a max_bytes under two segments, one larger
    than the disk, or an archive directory that cannot be written fails with a fix; a
    sound one passes naming its limits."""
    monkeypatch.delenv("CONVLOG_CONFIG", raising=False)
    logs = tmp_path / "logs"
    assert "off" in check_retention(None, logs).message and check_retention(None, logs).ok
    path = tmp_path / "convlog.toml"
    cases = (
        ('[recorder]\nsegment_bytes = 1048576\n[retention]\nmax_bytes = "1MiB"\n', "less than two segments"),
        ('[retention]\nmax_bytes = "900PiB"\n', "the disk fills first"),
    )
    for text, needle in cases:
        path.write_text(text)
        check = check_retention(path, logs)
        assert not check.ok and needle in check.message and check.fix, check
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        path.write_text(f'[retention]\nmax_age = "30d"\naction = "archive"\narchive_dir = "{locked}/a"\n')
        check = check_retention(path, logs)
        assert not check.ok and "cannot be written" in check.message
    path.write_text(f'[retention]\nmax_age = "30d"\nmax_bytes = "1GiB"\naction = "archive"\n'
                    f'archive_dir = "{tmp_path}/archive"\n')
    check = check_retention(path, logs)
    assert check.ok and "max_age 30 d" in check.message and "archive to" in check.message, check


def test_bad_config_file_is_flagged_with_file_and_line(tmp_path: Path) -> None:
    """An invalid value in the TOML file fails the config check naming file:line: key."""
    path = tmp_path / "convlog.toml"
    path.write_text('[recorder]\ndir = "logs"\nfsync = "sometimes"\n')
    checks = run_checks(path, tmp_path, [f"tcp://127.0.0.1:{free_port()}"], None, probe_timeout_s=0.5)
    assert_well_formed(checks)
    config = checks[0]
    assert config.name == "config" and not config.ok
    assert f"{path}:3: recorder.fsync:" in config.message
    assert f"{path}:3" in config.fix


def test_silence_flagged_only_when_publishers_are_known(broker: tuple[str, str], tmp_path: Path) -> None:
    """Known publishers silent past the threshold fail the silence check; no known
    publishers, or recent traffic, pass; a status with fields missing does not break it."""
    _, xpub = broker
    status = {
        "pid": os.getpid(), "uptime_s": 600.0, "records": 42, "healthy": False, "degraded": [],
        "publishers": {"known": 2, "silent_s": 300.0}, "newest_ts": None,
    }
    checks = run_checks(None, tmp_path, [xpub], status, silence_s=120.0)
    assert_well_formed(checks)
    silence = by_name(checks)["silence"]
    assert not silence.ok and "300 s" in silence.message and "120 s" in silence.message
    assert by_name(checks)["recorder"].ok and by_name(checks)[f"sub {xpub}"].ok
    assert check_silence({**status, "publishers": {"known": 0, "silent_s": None}}).ok
    assert check_silence({**status, "publishers": {"known": 2, "silent_s": 5.0}}).ok
    assert not check_silence({"publishers": {"known": 1}, "newest_age_s": 500.0}, silence_s=120.0).ok
    for partial in ({}, {"publishers": None}, {"publishers": {"known": "many"}}):
        assert check_silence(partial).ok


def test_recorder_check_reads_the_lock_file(tmp_path: Path) -> None:
    """With no answer on the control channel, the lock file tells a recorder that is
    gone (dead pid) from one that is alive but does not answer."""
    ensure_layout(tmp_path)
    lock = tmp_path / RECOVERY / LOCK_FILE
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_bytes(orjson.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "2025-01-01T00:00:00Z"}))
    gone = check_recorder(tmp_path, None)
    assert not gone.ok and f"pid {dead.pid}" in gone.message and "gone" in gone.message and gone.fix
    # A live process that holds the lock (flock) but does not answer: hung. The same
    # process once it has released the lock (as an offline writer does): not running.
    hold = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); "
            "print('held', flush=True); sys.stdin.readline(); fcntl.flock(fd, fcntl.LOCK_UN); "
            "print('released', flush=True); time.sleep(30)")
    alive = subprocess.Popen([sys.executable, "-c", hold, str(lock), "convlog-record-stand-in"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert alive.stdout is not None and alive.stdin is not None
        assert alive.stdout.readline().strip() == "held"  # exec'd, so /proc/PID/cmdline is the child's
        lock.write_bytes(orjson.dumps({"pid": alive.pid, "host": socket.gethostname()}))
        hung = check_recorder(tmp_path, None)
        alive.stdin.write("go\n")
        alive.stdin.flush()
        assert alive.stdout.readline().strip() == "released"
        idle = check_recorder(tmp_path, None)
    finally:
        alive.kill()
        alive.wait()
    assert not hung.ok and "does not answer" in hung.message and f"kill {alive.pid}" in hung.fix
    assert not idle.ok and "not running: no process holds" in idle.message and "convlog record" in idle.fix
    degraded = check_recorder(tmp_path, {"pid": 1, "degraded": ["disk full: holding records"]})
    assert not degraded.ok and "disk full" in degraded.message


def write_record(directory: Path, ts: str) -> None:
    ensure_layout(directory)
    line = make_line(1, ts, "message", "sub", "chat", "s1", {"text": "hi"})
    (directory / "events" / segment_name(1)).write_bytes(line)


def test_clock_check(tmp_path: Path) -> None:
    """A newest record from the future or a clock before 2020 fail the clock check; a
    record from the past passes."""
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    write_record(tmp_path / "ahead", future)
    ahead = check_clock(tmp_path / "ahead", None)
    assert not ahead.ok and "in the future" in ahead.message and "seq 1" in ahead.message
    write_record(tmp_path / "fine", "2024-05-01T12:00:00.000000Z")
    assert check_clock(tmp_path / "fine", None).ok
    assert check_clock(tmp_path / "empty", None).ok
    assert not check_clock(tmp_path / "fine", None, now_s=1_000_000_000).ok


def test_directory_that_cannot_exist_is_flagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A --dir below a regular file fails the directory check with a fix."""
    monkeypatch.delenv("CONVLOG_CONFIG", raising=False)
    (tmp_path / "file").write_text("x")
    checks = run_checks(None, tmp_path / "file" / "logs", [], None)
    assert_well_formed(checks)
    directory = by_name(checks)["directory"]
    assert not directory.ok and "not a directory" in directory.message
    assert not by_name(checks)["sub"].ok
