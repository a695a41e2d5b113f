"""Private files: what convlog creates under a log directory is 0600/0700 whatever the
umask (or the configured group modes), another local user reads nothing and cannot reach
the recorder, and a control socket path squatted by another user is refused by the
recorder and by clients (convlog.store.modes, convlog.bus.control).

The tests that need a second user create one (``useradd``) and so need root; they are
skipped otherwise. They run a real broker, real recorders and real ``convlog`` commands
as subprocesses, the second user's through ``runuser``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from conftest import Bus, Proc, answering, convlog_cmd, wait_for_records
from convlog.bus import control
from convlog.store import modes


@dataclass
class User:
    """A second local user made for a test."""

    name: str
    uid: int
    gid: int

    def run(self, args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``args`` as this user (``runuser``), with exactly ``env``."""
        return subprocess.run(["runuser", "-u", self.name, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
                               *args], capture_output=True, text=True, input=stdin, timeout=120)


@pytest.fixture
def other_user() -> Iterator[User]:
    """A fresh local user (no home), removed at the end; skips unless root with useradd."""
    if os.geteuid() != 0:
        pytest.skip("a second local user is made with useradd, which needs root")
    if not (shutil.which("useradd") and shutil.which("runuser") and shutil.which("userdel")):
        pytest.skip("useradd, userdel or runuser is missing")
    name = f"cvlpriv{os.getpid() % 100000}"
    made = subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"useradd failed: {made.stderr.strip()}")
    try:
        ids = subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True).stdout
        gid = subprocess.run(["id", "-g", name], capture_output=True, text=True, check=True).stdout
        yield User(name, int(ids), int(gid))
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory the second user can traverse (pytest's tmp dirs are 0700 root's), with
    ``tmp/`` (1777) as the temporary directory of every process the tests start."""
    path = Path(tempfile.mkdtemp(prefix="convlog-private-", dir="/tmp"))
    path.chmod(0o755)
    (path / "tmp").mkdir()
    (path / "tmp").chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def env_for(base: Path, **extra: str) -> dict[str, str]:
    """An environment without ``XDG_RUNTIME_DIR`` whose temporary directory is ``base/tmp``."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "TMPDIR")}
    return {**env, "TMPDIR": str(base / "tmp"), **extra}


def user_env(base: Path) -> dict[str, str]:
    """The second user's environment (``env -i``): a PATH, the temporary directory, and
    where to find convlog and its dependencies (this environment's site-packages)."""
    paths = [str(Path(control.__file__).resolve().parents[2]), sysconfig.get_paths()["purelib"],
             sysconfig.get_paths()["platlib"]]
    return {"PATH": "/usr/bin:/bin", "TMPDIR": str(base / "tmp"), "HOME": "/", "PYTHONPATH": ":".join(paths)}


@pytest.fixture
def python(other_user: User, base: Path) -> str:
    """An interpreter the second user can run that imports convlog: this one, or the
    system's of the same version (this one may live in root's private home)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        done = other_user.run([candidate, "-c", "import convlog.cli.commands, zmq"], user_env(base))
        if done.returncode == 0:
            return candidate
    pytest.skip(f"no Python {version} that the second user can run imports convlog (this one: {sys.executable})")


def start(bus: Bus, directory: Path, env: dict[str, str], *extra: str) -> Proc:
    """Start ``convlog record`` on ``directory`` with umask 022 and ``env``."""
    log_path = directory.parent / f"{directory.name}.recorder.log"
    with log_path.open("ab") as fh:
        popen = subprocess.Popen(
            convlog_cmd("record", "--dir", str(directory), "--sub", bus.xpub, *extra),
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=lambda: os.umask(0o022), env=env,
        )
    proc = Proc(popen, log_path)
    bus.procs.append(proc)
    return proc


def record_some(bus: Bus, directory: Path, proc: Proc, count: int = 30) -> None:
    """Publish ``count`` messages and wait until they are in the log."""
    pub = bus.publisher(proc, heartbeat_s=None)
    for i in range(1, count + 1):
        body = {"session_id": "s1", "message_id": f"m{i}", "role": "user", "content": f"secret number {i} " * 20}
        pub.send(b"chat", orjson.dumps(body))
    wait_for_records(directory, count)
    pub.close(0, heartbeat=False)


def tree(directory: Path) -> tuple[list[Path], list[Path]]:
    """Every directory (``directory`` included) and every file under it."""
    dirs, files = [directory], []
    for root, names, filenames in os.walk(directory):
        dirs += [Path(root) / n for n in names]
        files += [Path(root) / n for n in filenames]
    return dirs, files


#: Run as the second user: tries to read each path given on stdin (JSON list); prints the
#: ones it could read.
READ_ALL = (
    "import json, sys\n"
    "ok = []\n"
    "for p in json.load(sys.stdin):\n"
    "    try:\n"
    "        open(p, 'rb').read(1)\n"
    "        ok.append(p)\n"
    "    except OSError:\n"
    "        pass\n"
    "print(json.dumps(ok))\n"
)


def readable_by(user: User, python: str, base: Path, paths: list[Path]) -> list[str]:
    """The paths ``user`` can open and read."""
    done = user.run([python, "-c", READ_ALL], user_env(base), stdin=json.dumps([str(p) for p in paths]))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_modes(directory: Path, file_mode: int, dir_mode: int) -> list[Path]:
    """Every directory under ``directory`` has ``dir_mode``, every file ``file_mode``,
    all owned by us; returns the files."""
    dirs, files = tree(directory)
    assert files, "the log has files"
    wrong = [f"{p} {stat.S_IMODE(p.lstat().st_mode):04o}" for p in dirs
             if stat.S_IMODE(p.lstat().st_mode) & 0o777 != dir_mode]
    wrong += [f"{p} {stat.S_IMODE(p.lstat().st_mode):04o}" for p in files
              if stat.S_IMODE(p.lstat().st_mode) != file_mode]
    assert not wrong, f"expected files {file_mode:04o}, directories {dir_mode:04o}: {wrong}"
    assert all(p.lstat().st_uid == os.geteuid() for p in dirs + files)
    return files


# --------------------------------------------------------------------------- pure parts


def test_parse_mode_and_check_modes() -> None:
    """Modes are octal strings; file_mode must be dir_mode without execute bits."""
    assert modes.parse_mode("0600") == 0o600 and modes.parse_mode("750") == 0o750 and modes.parse_mode("0o640") == 0o640
    for bad in (600, "", "0800", "rw-------", "04700"):
        with pytest.raises(ValueError):
            modes.parse_mode(bad)
    modes.check_modes(0o600, 0o700)
    modes.check_modes(0o640, 0o750)
    for file_mode, dir_mode in ((0o640, 0o700), (0o600, 0o600), (0o600, 0o500)):
        with pytest.raises(ValueError):
            modes.check_modes(file_mode, dir_mode)
    assert modes.umask_for(0o700) == 0o077 and modes.umask_for(0o750) == 0o027


def test_bad_mode_settings_are_one_line_errors(tmp_path: Path) -> None:
    """A malformed or inconsistent CONVLOG_FILE_MODE is refused in one line, no traceback."""
    for extra in ({"CONVLOG_FILE_MODE": "rw"}, {"CONVLOG_FILE_MODE": "0640"}):
        done = subprocess.run(convlog_cmd("info", "--dir", str(tmp_path / "none")), capture_output=True, text=True,
                              env={**os.environ, **extra}, timeout=60)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("convlog: ") and "Traceback" not in done.stderr, done.stderr


def test_socket_path_falls_back_to_a_private_runtime_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """recovery/control.sock when short and recovery/ is closed to others' writes; else
    <runtime dir>/<hash>.sock, under $XDG_RUNTIME_DIR/convlog or <tmp>/convlog-<uid>."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    tempfile.tempdir = None
    try:
        short = tmp_path / "log"
        assert control.socket_path(short) == short / "recovery" / "control.sock"
        (short / "recovery").mkdir(parents=True)
        short.chmod(0o700)
        (short / "recovery").chmod(0o777)  # anyone could put a socket there
        fallback = control.socket_path(short)
        assert fallback.parent == tmp_path / "tmp" / f"convlog-{os.geteuid()}"
        long = tmp_path / ("d" * 100) / "log"
        assert control.socket_path(long).parent == fallback.parent
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
        assert control.socket_path(long).parent == tmp_path / "run" / "convlog"
    finally:
        tempfile.tempdir = None


# --------------------------------------------------------------------------- with a second user


@pytest.mark.slow
def test_umask_022_log_is_private_and_another_user_reads_nothing_nor_reaches_the_recorder(
    bus: Bus, other_user: User, python: str, base: Path
) -> None:
    """With umask 022, a recorder (4 KiB segments, sealed) and ``convlog search`` make
    every directory under DIR 0700 and every file 0600; the second user can read none of
    them, and ``convlog status`` as that user does not reach the recorder (nor does a
    direct connection to its socket) while ours does."""
    directory = base / "log"
    env = env_for(base)
    proc = start(bus, directory, env, "--segment-bytes", "4096")
    record_some(bus, directory, proc)
    assert answering(directory, proc)["pid"] == proc.popen.pid
    sock = control.socket_path(directory)
    assert sock == directory / "recovery" / "control.sock"
    info = sock.lstat()
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600

    theirs = other_user.run([python, "-m", "convlog", "status", "--dir", str(directory)], user_env(base))
    assert theirs.returncode != 0 and "Traceback" not in theirs.stderr, theirs.stdout + theirs.stderr
    assert not theirs.stdout.strip(), theirs.stdout  # click refuses the unreadable --dir
    client = other_user.run([python, "-c", (
        "from pathlib import Path\n"
        "from convlog.bus import control\n"
        "try:\n"
        f"    control.request(Path({str(directory)!r}), 'status', timeout_s=2.0)\n"
        "    print('answered')\n"
        "except control.NotRunningError as exc:\n"
        "    print('not running')\n")], user_env(base))
    assert client.stdout.strip() == "not running", client.stdout + client.stderr
    direct = [python, "-c", (
        "import sys, zmq\n"
        "s = zmq.Context().socket(zmq.REQ); s.setsockopt(zmq.LINGER, 0)\n"
        f"s.connect('ipc://{sock}'); s.send(b'{{\"op\": \"status\"}}')\n"
        "print('answered' if s.poll(2000) else 'no answer')\n")]
    done = other_user.run(direct, user_env(base))
    assert done.stdout.strip() == "no answer", done.stdout + done.stderr
    # Even with the file system opened to them, the recorder takes no connection from
    # another uid (ZMQ_IPC_FILTER_UID: the peer's SO_PEERCRED).
    for path, mode in ((directory, 0o711), (sock.parent, 0o711), (sock, 0o666)):
        path.chmod(mode)
    done = other_user.run(direct, user_env(base))
    assert done.stdout.strip() == "no answer", done.stdout + done.stderr
    for path, mode in ((directory, 0o700), (sock.parent, 0o700), (sock, 0o600)):
        path.chmod(mode)

    assert proc.terminate() == 0, proc.output()
    searched = subprocess.run(convlog_cmd("search", "--dir", str(directory), "secret"), capture_output=True,
                              text=True, env=env, preexec_fn=lambda: os.umask(0o022), timeout=120)
    assert searched.returncode == 0 and "secret" in searched.stdout, searched.stderr
    files = assert_modes(directory, 0o600, 0o700)
    names = {p.name for p in files}
    assert any(n.endswith(".zst") for n in names) and "state.json" in names and "search.sqlite" in names, names
    assert readable_by(other_user, python, base, files) == []


@pytest.mark.slow
def test_group_modes_let_the_group_read_but_not_reach_the_recorder(
    bus: Bus, other_user: User, python: str, base: Path
) -> None:
    """With CONVLOG_FILE_MODE 0640 / CONVLOG_DIR_MODE 0750 (and umask 022), the files are
    0640 and directories 0750; in a setgid parent of the second user's group, that user
    reads every file, yet ``convlog status`` as that user still does not reach the recorder."""
    parent = base / "group"
    parent.mkdir()
    os.chown(parent, -1, other_user.gid)
    parent.chmod(0o2750)
    directory = parent / "log"
    env = env_for(base, CONVLOG_FILE_MODE="0640", CONVLOG_DIR_MODE="0750")
    proc = start(bus, directory, env, "--segment-bytes", "4096")
    record_some(bus, directory, proc)
    answering(directory, proc)
    theirs = other_user.run([python, "-m", "convlog", "status", "--dir", str(directory)], user_env(base))
    assert theirs.returncode != 0 and '"ok"' not in theirs.stdout, theirs.stdout + theirs.stderr
    assert proc.terminate() == 0, proc.output()
    files = assert_modes(directory, 0o640, 0o750)
    assert sorted(readable_by(other_user, python, base, files)) == sorted(map(str, files))


@pytest.mark.slow
def test_squatted_control_socket_is_refused_by_recorder_and_client(
    bus: Bus, other_user: User, python: str, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For a log whose path is too long for recovery/control.sock, the socket lives in
    <tmp>/convlog-<uid>/. When the second user created that directory first (mode 0777,
    with a socket at our path), the recorder refuses to start, in one clear line and
    writing nothing, and ``convlog status`` refuses to talk to the squatted socket. A
    socket in our own directory that belongs to someone else is refused too. Once the
    squat is gone, the recorder makes the directory 0700 and answers."""
    directory = base / ("d" * 100) / "log"
    directory.parent.mkdir()
    env = env_for(base)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(base / "tmp"))  # this process's clients look where the recorder does
    monkeypatch.setattr(tempfile, "tempdir", None)
    sock = control.socket_path(directory)
    assert sock.parent == base / "tmp" / f"convlog-{os.geteuid()}"
    squat = other_user.run([python, "-c", (
        "import os, socket\n"
        f"os.mkdir({str(sock.parent)!r}); os.chmod({str(sock.parent)!r}, 0o777)\n"
        f"socket.socket(socket.AF_UNIX).bind({str(sock)!r})\n")], user_env(base))
    assert squat.returncode == 0, squat.stderr
    assert sock.parent.stat().st_uid == other_user.uid and sock.exists()

    status = subprocess.run(convlog_cmd("status", "--dir", str(directory)), capture_output=True, text=True,
                            env=env, timeout=60)
    assert status.returncode != 0 and "Traceback" not in status.stderr, status.stdout + status.stderr
    assert status.stderr.startswith("convlog: ") and f"owned by uid {other_user.uid}" in status.stderr, status.stderr

    proc = start(bus, directory, env)
    assert proc.popen.wait(60) != 0
    out = proc.output()
    assert "Traceback" not in out and f"owned by uid {other_user.uid}" in out, out
    assert not (directory / "events").exists() or not any((directory / "events").iterdir()), "nothing written"
    assert sock.exists(), "the squatter's socket was left alone"

    shutil.rmtree(sock.parent)  # the administrator removes the squat
    proc = start(bus, directory, env)
    assert answering(directory, proc)["pid"] == proc.popen.pid
    info = sock.parent.lstat()
    assert info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o700

    # A socket file in our directory that belongs to another user is not trusted.
    assert proc.terminate() == 0, proc.output()
    stray = socket.socket(socket.AF_UNIX)
    stray.bind(str(sock))
    os.chown(sock, other_user.uid, -1)
    status = subprocess.run(convlog_cmd("status", "--dir", str(directory)), capture_output=True, text=True,
                            env=env, timeout=60)
    stray.close()
    assert status.returncode != 0 and f"owned by uid {other_user.uid}" in status.stderr, status.stderr
