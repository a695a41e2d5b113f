"""Shared fixtures: real brokers and recorders as subprocesses on free loopback ports,
real log directories in tmp dirs, the real Shearwater recordings from ../shared, and a
real PostgreSQL server (``pg_server``, ``pg_url``; see tests/pg_server.py).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from convlog.bus.publisher import NoSubscriberError, Publisher
from convlog.cli.demo import free_port
from convlog.store.segment import iter_records, list_segments
from pg_server import PgServer, create_database, drop_database

REPO = Path(__file__).resolve().parent.parent
#: The test folders mirror the packages; a few tests build on another folder's log
#: builders (``test_fold.fold_logs``, ``test_checkpoint.LogBuilder``,
#: ``test_gaps.assert_every_message_recorded_or_reported``), importable whichever
#: files a run selects.
sys.path[:0] = [str(REPO / "tests" / part) for part in ("core", "store") if str(REPO / "tests" / part) not in sys.path]
SHARED_DATA = Path(os.environ.get("CONVLOG_SHARED_DATA", REPO.parent / "shared" / "data"))
SHEARWATER = SHARED_DATA / "shearwater"


#: Recorder environment that keeps finished segments plain (``compress = "none"``), for
#: tests that read or damage the bytes of segment files directly.
PLAIN = {"CONVLOG_COMPRESS": "none"}


def shearwater_file(name: str) -> Path:
    """Path of a real Shearwater recording; fails the test (not skips) when missing,
    since CI always has ../shared beside the repository."""
    path = SHEARWATER / name
    if not path.exists():
        pytest.fail(f"test input {path} is missing (tests read ../shared/data; set CONVLOG_SHARED_DATA)")
    return path


def convlog_cmd(*args: str) -> list[str]:
    """Command line running the convlog CLI with this interpreter."""
    return [sys.executable, "-m", "convlog", *args]


#: A ``convlog`` run whose unlink(2) and rename(2) take 20 ms each, as on a slow or busy
#: disk: the steps of a crash-safe rewrite (write, rename, remove) then last long enough
#: for a kill -9 to land among them, whatever the machine's load.
_SLOW_DISK = """
import os, sys, time
for name in ("unlink", "replace"):
    def slow(*args, _real=getattr(os, name), **kwargs):
        time.sleep(0.02)
        return _real(*args, **kwargs)
    setattr(os, name, slow)
from convlog.cli.commands import main
main(sys.argv[1:])
"""


def slow_disk_cmd(*args: str) -> list[str]:
    """Command line running the convlog CLI on a slow disk (see ``_SLOW_DISK``)."""
    return [sys.executable, "-c", _SLOW_DISK, *args]


@dataclass
class Proc:
    """A convlog subprocess with its output in a file."""

    popen: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait; SIGKILL (and fail) when it does not stop in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                pytest.fail(f"process did not stop on SIGTERM within {timeout_s} s:\n{self.output()}")
        return self.popen.returncode

    def kill9(self) -> None:
        """SIGKILL (kill -9) and reap."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()


def spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> Proc:
    """Start ``python -m convlog ARGS`` with stdout+stderr appended to ``log_path``."""
    with log_path.open("ab") as fh:
        popen = subprocess.Popen(
            convlog_cmd(*args), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    return Proc(popen, log_path)


@dataclass
class Bus:
    """A running reference broker and helpers to run recorders against it."""

    tmp: Path
    xsub: str
    xpub: str
    broker: Proc
    procs: list[Proc] = field(default_factory=list)

    def start_broker(self) -> Proc:
        """(Re)start the broker on the same ports (after a stop)."""
        self.broker = spawn(["broker", "--xsub", self.xsub, "--xpub", self.xpub], self.tmp / "broker.log")
        return self.broker

    def recorder(self, directory: Path, *extra: str, env: dict[str, str] | None = None) -> Proc:
        """Start a recorder on ``directory`` subscribed to this broker."""
        proc = spawn(["record", "--dir", str(directory), "--sub", self.xpub, *extra],
                     directory.parent / f"{directory.name}.recorder.log", env=env)
        self.procs.append(proc)
        return proc

    def publisher(
        self, proc: Proc | None = None, timeout_s: float = 20.0, context=None, heartbeat_s: float | None = 1.0
    ) -> Publisher:
        """A publisher connected to the broker, returned once a subscription arrived.

        Fails the test with the recorder's output when ``proc`` exits first. Pass an own
        ``context`` to be able to ``term()`` it, which returns once everything queued
        has left the publisher.
        """
        pub = Publisher(self.xsub, context=context, heartbeat_s=heartbeat_s)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                pub.wait_for_subscriber(0.2)
                return pub
            except NoSubscriberError:
                if proc is not None and proc.popen.poll() is not None:
                    pub.close(0)
                    pytest.fail(f"recorder exited with {proc.popen.returncode}:\n{proc.output()}")
                if time.monotonic() > deadline:
                    pub.close(0)
                    pytest.fail("no subscriber reached the broker in time")


@contextlib.contextmanager
def running_bus(tmp: Path) -> Iterator[Bus]:
    """A reference broker (libzmq default high-water marks) on free loopback ports, its
    output in ``tmp``; it and every recorder started through it are killed at the end."""
    xsub, xpub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    b = Bus(tmp, xsub, xpub, broker=None)  # type: ignore[arg-type]
    b.start_broker()
    try:
        yield b
    finally:
        for proc in [*b.procs, b.broker]:
            if proc.popen.poll() is None:
                proc.kill9()


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    """A reference broker for one test (see :func:`running_bus`)."""
    with running_bus(tmp_path) as b:
        yield b


def records(directory: Path) -> list[dict]:
    """All complete records of a log directory, in order."""
    return list(iter_records(directory))


def _received(found: list[dict], source: str) -> int:
    return sum(1 for r in found if r["source"] == source and r["kind"] != "publisher.heartbeat")


def wait_for_records(directory: Path, count: int, timeout_s: float = 30.0, kind_source: str = "sub") -> list[dict]:
    """Wait until ``count`` records with ``source == kind_source`` (publishers' heartbeats
    not counted) are in the log.

    Returns:
        all records of the log at that moment (fails the test on timeout).
    """
    deadline = time.monotonic() + timeout_s
    found: list[dict] = []
    while time.monotonic() < deadline:
        if list_segments(directory):
            found = records(directory)
            if _received(found, kind_source) >= count:
                return found
        time.sleep(0.05)
    got = _received(found, kind_source)
    pytest.fail(f"only {got} of {count} {kind_source} records reached {directory} in {timeout_s} s")


def wait_for_final_heartbeat(directory: Path, last_seq: int, timeout_s: float = 30.0) -> None:
    """Wait until a publisher's heartbeat carrying ``last_seq`` (sent by its close()) is
    in the log: everything it sent before has been recorded or reported missing."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        beats = [r for r in records(directory) if r["kind"] == "publisher.heartbeat"]
        if beats and beats[-1]["data"]["convlog"]["seq"] == last_seq:
            return
        time.sleep(0.1)
    pytest.fail(f"no heartbeat with seq {last_seq} reached {directory} in {timeout_s} s")


def answering(directory: Path, proc: Proc, timeout_s: float = 30.0) -> dict[str, Any]:
    """Wait until the recorder of ``directory`` answers ``status`` on its control channel;
    return the reply. Fails the test with the recorder's output when it exits first."""
    from convlog.bus import control

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return control.request(directory, "status", timeout_s=2.0)
        except control.NotRunningError:
            if proc.popen.poll() is not None:
                pytest.fail(f"recorder exited with {proc.popen.returncode}:\n{proc.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the recorder of {directory} did not answer within {timeout_s} s:\n{proc.output()}")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL server for the whole run, started on first use and stopped
    (its directory removed) at the end; fails with the server's log when it cannot start.

    Tests that crash, stop or reconfigure a server make their own ``PgServer`` instead.
    """
    server = PgServer()
    try:
        yield server.start()
    finally:
        server.close()


_DATABASES = itertools.count(1)


@pytest.fixture
def pg_url(pg_server: PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh, empty database on ``pg_server`` for this test alone, dropped
    (its connections closed) after it."""
    name = f"t{next(_DATABASES)}_{re.sub(r'[^a-z0-9_]+', '_', request.node.name.lower())}"[:63]
    url = create_database(pg_server.url, name)
    yield url
    if pg_server.is_running():
        drop_database(pg_server.url, name)
