"""systemd integration: the units as install-systemd.sh renders them (the sync unit and
its 0600 environment file with ``--db``), checked by the real ``systemd-analyze verify``;
the sd_notify protocol of :class:`convlog.recorder.notify.Notifier` against real
``AF_UNIX``/``SOCK_DGRAM`` sockets (a path and an abstract name); and the installer's
usage errors and ``--user`` rendering.

The installer is only ever run here with ``--dry-run`` or with arguments it rejects
before touching anything.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO
from convlog.recorder.notify import Notifier

INSTALLER = REPO / "scripts" / "install-systemd.sh"
UNITS = ("convlog-broker.service", "convlog-recorder.service")
#: With ``--db URL``.
SYNC_UNITS = (*UNITS, "convlog-sync.service")
#: A URL with a password, which must end up in the environment file only.
DB_URL = "postgresql://convlog:pa%ss$word@db.example.org:5433/convlog?sslmode=require"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or ("/usr/bin/systemd-analyze"
                                                      if Path("/usr/bin/systemd-analyze").exists() else None)


# --- the installer --------------------------------------------------------------------


def convlog_executable() -> str:
    """The real installed ``convlog`` entry point (verify checks that ExecStart exists):
    the one beside this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "convlog"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("convlog")
    if found is None:
        pytest.fail("the convlog executable is not installed (pip install -e .)")
    return found


def run_installer(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_STATE_HOME": str(home / ".local" / "state")}
    return subprocess.run(["bash", str(INSTALLER), *args], capture_output=True, text=True, env=env, timeout=30)


def dry_run(*args: str, home: Path) -> dict[str, str]:
    """The files ``install-systemd.sh --dry-run`` would write, by path."""
    result = run_installer("--dry-run", "--prefix-bin", convlog_executable(), *args, home=home)
    assert result.returncode == 0, result.stderr
    parts = re.split(r"^==> (.+) <==\n", result.stdout, flags=re.MULTILINE)
    assert parts[0] == "", f"output before the first file: {parts[0]!r}"
    files = dict(zip(parts[1::2], parts[2::2], strict=True))
    for path in files:
        assert f"would write {path}" in result.stderr
    return files


def render(directory: Path, *args: str, home: Path, names: tuple[str, ...] = UNITS) -> dict[str, str]:
    """Render the units ``names`` (default the two installed without ``--db``) into
    ``directory``; returns their text by unit name."""
    units = {}
    for path, text in dry_run(*args, home=home).items():
        name = Path(path).name
        if name.endswith(".service"):
            (directory / name).write_text(text)
            units[name] = text
    assert sorted(units) == sorted(names)
    return units


def settings(text: str) -> list[tuple[str, str]]:
    """(key, value) of every assignment in a unit file, comments and sections left out."""
    return [tuple(line.split("=", 1)) for line in text.splitlines()  # type: ignore[misc]
            if "=" in line and not line.startswith(("#", ";", "["))]


def test_usage_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for args in (["--bogus"], ["--dir"], ["--dir", "relative/path"], ["--xpub", "not-an-endpoint"],
                 ["--dir", "/has space"], ["--dry-run", "--xsub"], ["--db"], ["--db="]):
        result = run_installer(*args, home=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("install-systemd.sh: ")
    assert not any(tmp_path.iterdir()), "a usage error wrote something"


def test_help_exits_0(tmp_path: Path) -> None:
    result = run_installer("--help", home=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: install-systemd.sh [--user]")


def test_system_units_as_rendered(tmp_path: Path) -> None:
    convlog = convlog_executable()
    files = dry_run("--xsub", "tcp://0.0.0.0:6555", "--xpub", "tcp://*:6556", home=tmp_path)
    assert set(files) >= {"/etc/systemd/system/convlog-recorder.service",
                          "/etc/systemd/system/convlog-broker.service", "/etc/convlog/recorder.toml"}
    recorder = dict(settings(files["/etc/systemd/system/convlog-recorder.service"]))
    assert recorder["ExecStart"] == (f"{convlog} record --config /etc/convlog/recorder.toml"
                                     " --dir /var/lib/convlog --sub tcp://127.0.0.1:6556")
    assert recorder["Type"] == "notify" and recorder["NotifyAccess"] == "main"
    assert recorder["WatchdogSec"] == "30" and recorder["Restart"] == "on-failure"
    assert recorder["User"] == "convlog" and recorder["StateDirectory"] == "convlog"
    assert recorder["ProtectSystem"] == "strict" and recorder["NoNewPrivileges"] == "yes"
    assert recorder["ReadWritePaths"] == "-/var/lib/convlog"
    broker = dict(settings(files["/etc/systemd/system/convlog-broker.service"]))
    assert broker["ExecStart"] == f"{convlog} broker --xsub tcp://0.0.0.0:6555 --xpub tcp://*:6556"
    for text in files.values():
        assert not re.search(r"@[A-Z_]+@", text), "a placeholder was left in"
    # The default config is valid for the recorder.
    from convlog.recorder.config import load_config

    config_path = tmp_path / "recorder.toml"
    config_path.write_text(files["/etc/convlog/recorder.toml"])
    assert load_config(config_path, env={}).fsync == "interval"


def test_user_units_drop_what_a_user_manager_cannot_apply(tmp_path: Path) -> None:
    files = dry_run("--user", home=tmp_path)
    unit_dir = tmp_path / ".config" / "systemd" / "user"
    assert set(files) == {str(unit_dir / name) for name in UNITS} | {str(tmp_path / ".config/convlog/recorder.toml")}
    for path, text in files.items():
        keys = [key for key, _ in settings(text)]
        for dropped in ("User", "Group", "DynamicUser", "ProtectSystem", "ProtectHome", "PrivateDevices",
                        "CapabilityBoundingSet", "ReadWritePaths"):
            assert dropped not in keys, (path, dropped)
        assert not re.search(r"^(User|DynamicUser)=", text, flags=re.MULTILINE)
        assert not any("network-online.target" in value for _, value in settings(text))
    recorder = dict(settings(files[str(unit_dir / "convlog-recorder.service")]))
    assert recorder["ExecStart"].endswith("record --config %E/convlog/recorder.toml --dir %S/convlog"
                                          " --sub tcp://127.0.0.1:5556")
    assert recorder["WantedBy"] == "default.target"
    assert recorder["NoNewPrivileges"] == "yes" and recorder["MemoryDenyWriteExecute"] == "yes"


def test_db_installs_the_sync_unit_and_a_0600_environment_file(tmp_path: Path) -> None:
    """``--db URL``: the sync unit follows the recorder's directory, reads the URL from
    /etc/convlog/sync.env (written 0600, owned by the service user, the URL single-quoted
    so systemd takes ``%`` and ``$`` literally) and never contains the URL itself; it is
    enabled with the other two."""
    convlog = convlog_executable()
    result = run_installer("--dry-run", "--prefix-bin", convlog, "--dir", "/srv/convlog", "--db", DB_URL,
                           home=tmp_path)
    assert result.returncode == 0, result.stderr
    files = dry_run("--dir", "/srv/convlog", "--db", DB_URL, home=tmp_path)
    unit_path = "/etc/systemd/system/convlog-sync.service"
    sync = dict(settings(files[unit_path]))
    assert sync["ExecStart"] == f"{convlog} sync --follow --dir /srv/convlog"
    assert sync["EnvironmentFile"] == "/etc/convlog/sync.env"
    assert sync["Type"] == "simple" and sync["Restart"] == "on-failure"
    assert sync["SyslogIdentifier"] == "convlog-sync" and sync["User"] == "convlog"
    assert sync["ReadWritePaths"] == "-/srv/convlog"
    assert set(sync["RestrictAddressFamilies"].split()) >= {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert ("Wants", "convlog-recorder.service") in settings(files[unit_path])
    assert ("After", "convlog-recorder.service") in settings(files[unit_path])
    assert ("After", "network-online.target") in settings(files[unit_path])
    for path, text in files.items():
        if path != "/etc/convlog/sync.env":
            assert DB_URL not in text and "pa%ss" not in text, path
    env_lines = [line for line in files["/etc/convlog/sync.env"].splitlines() if not line.startswith("#")]
    assert env_lines == [f"CONVLOG_DB='{DB_URL}'"]
    assert "would write /etc/convlog/sync.env (mode 0600, owner convlog:convlog)" in result.stderr
    assert "would run: systemctl enable --now convlog-broker.service convlog-recorder.service " \
           "convlog-sync.service" in result.stderr
    assert DB_URL not in result.stderr

    user = dry_run("--user", "--db", DB_URL, home=tmp_path)
    env_path = str(tmp_path / ".config/convlog/sync.env")
    assert set(user) == {str(tmp_path / ".config/systemd/user" / name) for name in SYNC_UNITS} | {
        str(tmp_path / ".config/convlog/recorder.toml"), env_path}
    user_sync = dict(settings(user[str(tmp_path / ".config/systemd/user/convlog-sync.service")]))
    assert user_sync["EnvironmentFile"] == "%E/convlog/sync.env"
    assert user_sync["ExecStart"].endswith(" sync --follow --dir %S/convlog")
    assert "User" not in user_sync and user_sync["WantedBy"] == "default.target"
    assert f"CONVLOG_DB='{DB_URL}'" in user[env_path].splitlines()
    mode_note = run_installer("--dry-run", "--user", "--prefix-bin", convlog, "--db", DB_URL, home=tmp_path)
    assert f"would write {env_path} (mode 0600)\n" in mode_note.stderr


def test_without_db_no_sync_unit(tmp_path: Path) -> None:
    result = run_installer("--dry-run", "--prefix-bin", convlog_executable(), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "convlog-sync" not in result.stdout + result.stderr and "sync.env" not in result.stdout


@pytest.mark.parametrize("url", ["postgresql://u:it's@h/db", "postgresql://h/db\nEVIL=1"])
def test_db_url_that_cannot_be_quoted_is_a_usage_error(url: str, tmp_path: Path) -> None:
    result = run_installer("--dry-run", "--prefix-bin", convlog_executable(), "--db", url, home=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("install-systemd.sh: --db must not contain single quotes")
    assert len(result.stderr.splitlines()) == 1


def test_percent_in_a_path_is_escaped(tmp_path: Path) -> None:
    files = dry_run("--dir", "/srv/conv%log", home=tmp_path)
    recorder = dict(settings(files["/etc/systemd/system/convlog-recorder.service"]))
    assert " --dir /srv/conv%%log " in recorder["ExecStart"]
    assert recorder["ReadWritePaths"] == "-/srv/conv%%log"


# --- systemd-analyze verify ---------------------------------------------------------------

needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                   reason="systemd-analyze is not installed (Debian package systemd)")


def verify(directory: Path, *, user: bool = False, names: tuple[str, ...] = UNITS) -> list[str]:
    """Run ``systemd-analyze [--user] verify`` on our units in ``directory``; returns the
    output lines that concern them (the host's own units may add unrelated warnings)."""
    assert SYSTEMD_ANALYZE is not None
    env = dict(os.environ)
    if user:
        runtime = directory / "runtime"
        runtime.mkdir(mode=0o700)
        env["XDG_RUNTIME_DIR"] = str(runtime)   # a user manager needs one, even offline
    command = [SYSTEMD_ANALYZE, *(["--user"] if user else []), "verify", "--man=no",
               *(str(directory / name) for name in names)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=directory, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines()
            if str(directory) in line or any(name in line for name in names)]


@needs_analyze
def test_systemd_analyze_verify_system_units(tmp_path: Path) -> None:
    render(tmp_path, home=tmp_path)
    assert verify(tmp_path) == []


@needs_analyze
def test_systemd_analyze_verify_user_units(tmp_path: Path) -> None:
    render(tmp_path, "--user", home=tmp_path)
    assert verify(tmp_path, user=True) == []


@needs_analyze
def test_systemd_analyze_verify_system_units_with_sync(tmp_path: Path) -> None:
    render(tmp_path, "--db", DB_URL, home=tmp_path, names=SYNC_UNITS)
    assert verify(tmp_path, names=SYNC_UNITS) == []


@needs_analyze
def test_systemd_analyze_verify_user_units_with_sync(tmp_path: Path) -> None:
    render(tmp_path, "--user", "--db", DB_URL, home=tmp_path, names=SYNC_UNITS)
    assert verify(tmp_path, user=True, names=SYNC_UNITS) == []


@needs_analyze
def test_systemd_analyze_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """The filter above is not vacuous: verify does report problems in our units."""
    units = render(tmp_path, home=tmp_path)
    broken = units["convlog-recorder.service"].replace("WatchdogSec=30", "WatchdogSec=thirty\nNoSuchKey=1")
    (tmp_path / "convlog-recorder.service").write_text(broken)
    problems = "\n".join(verify(tmp_path))
    assert "thirty" in problems and "NoSuchKey" in problems


# --- the notify protocol ----------------------------------------------------------------


class Receiver:
    """A bound ``AF_UNIX``/``SOCK_DGRAM`` socket playing the service manager's part: it
    asks for the sender's credentials (``SO_PASSCRED``), as systemd does to apply
    ``NotifyAccess=main``."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(2.0)

    def receive(self) -> tuple[bytes, int]:
        """The next datagram and the pid of its sender."""
        ucred = struct.calcsize("3i")
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(ucred))
        pids = [struct.unpack("3i", payload[:ucred])[0] for level, kind, payload in ancillary
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS]
        assert len(pids) == 1
        return data, pids[0]

    def pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
            return True
        except BlockingIOError:
            return False
        finally:
            self.sock.settimeout(2.0)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def warnings() -> Iterator[list[logging.LogRecord]]:
    """What the notifier logs on ``convlog.recorder`` (caught on that logger itself: the
    recorder's logging set-up stops propagation to the root logger that caplog uses)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("convlog.recorder")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: socket paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="convlog-") as name:
        yield Path(name)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    address = str(short_dir / "notify") if request.param == "path" else f"@convlog-test-{uuid.uuid4().hex}"
    rx = Receiver(address)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    yield rx
    rx.close()


def test_notifications_are_received_exactly(receiver: Receiver, warnings: list[logging.LogRecord]) -> None:
    notifier = Notifier()
    assert notifier.enabled
    pid = os.getpid()
    assert notifier.ready("recording tcp://127.0.0.1:5556 into /var/lib/convlog")
    assert receiver.receive() == (
        f"READY=1\nSTATUS=recording tcp://127.0.0.1:5556 into /var/lib/convlog\nMAINPID={pid}".encode(), pid)
    assert notifier.status("seq 42\ncheckpoint 00000000000000000040.json")
    assert receiver.receive() == (b"STATUS=seq 42 checkpoint 00000000000000000040.json", pid)
    assert notifier.status("état → ok")
    assert receiver.receive() == ("STATUS=état → ok".encode(), pid)    # UTF-8, as systemd requires
    assert notifier.watchdog()
    assert receiver.receive() == (b"WATCHDOG=1", pid)
    assert notifier.stopping("draining, then final checkpoint")
    assert receiver.receive() == (b"STOPPING=1\nSTATUS=draining, then final checkpoint", pid)
    assert notifier.ready()
    assert receiver.receive() == (f"READY=1\nMAINPID={pid}".encode(), pid)
    assert notifier.stopping()
    assert receiver.receive() == (b"STOPPING=1", pid)
    assert not receiver.pending()
    assert warnings == []
    notifier.close()


def test_reconnects_when_the_socket_is_recreated(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = str(short_dir / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    first = Receiver(address)
    notifier = Notifier()
    assert notifier.watchdog()
    assert first.receive()[0] == b"WATCHDOG=1"
    first.close()
    os.unlink(address)
    second = Receiver(address)
    assert notifier.watchdog()           # the stale connection fails, a fresh one is made
    assert second.receive()[0] == b"WATCHDOG=1"
    second.close()


def test_noop_without_notify_socket(monkeypatch: pytest.MonkeyPatch, warnings: list[logging.LogRecord]) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    assert (notifier.ready("x"), notifier.status("x"), notifier.watchdog(), notifier.stopping("x")) == (
        False, False, False, False)
    assert warnings == []


@pytest.mark.parametrize("address", ["{dir}/missing/notify", "{dir}/not-a-socket", "relative/notify",
                                     "@convlog-test-nobody-listens"])
def test_failures_never_raise_and_warn_once(
    address: str, short_dir: Path, monkeypatch: pytest.MonkeyPatch, warnings: list[logging.LogRecord]
) -> None:
    (short_dir / "not-a-socket").write_text("")
    monkeypatch.setenv("NOTIFY_SOCKET", address.format(dir=short_dir))
    notifier = Notifier()
    assert notifier.enabled
    for _ in range(3):
        assert notifier.ready("x") is False
        assert notifier.status("x") is False
        assert notifier.watchdog() is False
        assert notifier.stopping() is False
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "NOTIFY_SOCKET=" in warnings[0].getMessage()


def test_starts_sending_once_the_socket_appears(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = str(short_dir / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    notifier = Notifier()
    assert notifier.status("early") is False
    rx = Receiver(address)
    assert notifier.status("later") is True
    assert rx.receive()[0] == b"STATUS=later"
    rx.close()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", "self", 15.0),          # WatchdogSec=30: ping every 15 s
        ("30000000", None, 15.0),            # no WATCHDOG_PID: applies to this process
        ("30000000", "other", None),         # for another process (e.g. our parent)
        ("1000", "self", 0.0005),
        ("0", "self", None),                 # 0 = disabled
        ("", None, None),
        (None, None, None),
        ("soon", "self", None),              # invalid: treated as not enabled
        ("30000000", "pid-1", None),
    ],
)
def test_watchdog_interval(
    usec: str | None, pid: str | None, expected: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    for name, value in (("WATCHDOG_USEC", usec),
                        ("WATCHDOG_PID", {"self": str(os.getpid()), "other": str(os.getppid())}.get(pid, pid))):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert Notifier().watchdog_interval_s == expected
