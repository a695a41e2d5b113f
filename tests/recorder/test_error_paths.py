"""Error paths with real parts: real ``convlog record`` subprocesses on a real broker, real
disk faults (a file-size limit for EFBIG, a full tmpfs for ENOSPC, a shut-down ext4 on a
loop device for EIO), real damaged log directories for ``convlog verify``, and the CLI
run as a subprocess. Nothing is mocked.

The ENOSPC and EIO tests mount file systems, so they need root; they are skipped with
the reason when mounting is not possible.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import resource
import shutil
import stat
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import (
    Bus,
    Proc,
    answering,
    convlog_cmd,
    records,
    running_bus,
    spawn,
    wait_for_final_heartbeat,
    wait_for_records,
)
from convlog.bus import control
from convlog.cli.demo import free_port
from convlog.store.segment import list_segments, segment_key
from convlog.store.state import read_state

#: Messages recorded before a fault is provoked (about 35 KB: the recorder's own output
#: file stays far below the segment size, which the EFBIG fault uses as the limit).
BEFORE = 30
#: Messages sent while the fault lasts.
DURING = 10


# --------------------------------------------------------------------------- helpers


def message(i: int) -> tuple[bytes, bytes]:
    """Topic and payload of the native message number ``i`` (about 1 KB)."""
    body = {"type": "message", "session_id": "faults", "message_id": f"f{i}", "sender": "ann",
            "content": f"{i} " + "x" * 900}
    return b"faults", orjson.dumps(body)


def start_recorder(
    bus: Bus, directory: Path, *extra: str, sub: str | None = None, log_path: Path | None = None,
    umask: int | None = None,
) -> Proc:
    """Start ``convlog record`` on ``directory`` (subscribed to the bus's broker, or to
    ``sub``), its output in ``log_path`` (default beside the directory), with
    ``recovery/state.json`` refreshed every 100 ms and, given ``umask``, that umask. The
    bus kills it at the end of the test."""
    log_path = log_path or directory.parent / f"{directory.name}.recorder.log"

    def set_umask() -> None:
        if umask is not None:
            os.umask(umask)

    with log_path.open("ab") as fh:
        popen = subprocess.Popen(
            convlog_cmd("record", "--dir", str(directory), "--sub", sub or bus.xpub, *extra),
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=set_umask,
            env={**os.environ, "CONVLOG_STATE_INTERVAL_MS": "100"},
        )
    proc = Proc(popen, log_path)
    bus.procs.append(proc)
    return proc


def cli(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m convlog ARGS`` as a subprocess and capture its output."""
    return subprocess.run(convlog_cmd(*args), capture_output=True, text=True, timeout=timeout_s)


def wait_status(
    directory: Path, proc: Proc, until: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = 30.0
) -> dict[str, Any]:
    """Poll the recorder's ``status`` until ``until(reply)``; fail with the last reply
    and the recorder's output after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = answering(directory, proc)
        if until(status):
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"status never showed {what} within {timeout_s} s: {status}\n{proc.output()[-3000:]}")
        time.sleep(0.05)


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll ``condition`` every 50 ms; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s} s")
        time.sleep(0.05)


def publish(pub: Any, first: int, last: int) -> None:
    """Send messages ``first..last``."""
    for i in range(first, last + 1):
        pub.send(*message(i))


def require_root(what: str) -> None:
    """Skip the test unless it runs as root (it mounts a file system)."""
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (mount)")


def run_or_skip(args: list[str], what: str) -> None:
    """Run a set-up command (mkfs, mount); skip the test with its error when it fails."""
    if shutil.which(args[0]) is None:
        pytest.skip(f"{what}: {args[0]} is not installed")
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"{what}: {' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")


def unmount(target: Path) -> None:
    """Unmount ``target``; lazily when it is still busy (a process that did not die yet)."""
    if subprocess.run(["umount", str(target)], capture_output=True, timeout=60).returncode != 0:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=60)


# --------------------------------------------------------------------------- disk faults


class Fault:
    """A real disk fault under a recorder's log directory.

    Attributes:
        errno_name: the error the recorder's writes get (``EFBIG``, ``ENOSPC``, ``EIO``).
        directory: the log directory (on the faulty file system).
        log_path: the recorder's output, on a healthy file system.
    """

    errno_name = ""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.directory = tmp / "log"
        self.log_path = tmp / "recorder.log"

    def provoke(self, proc: Proc | None) -> None:
        """Make the next writes fail (those of the running recorder ``proc``, if any)."""
        raise NotImplementedError

    def lift(self, proc: Proc | None) -> None:
        """Let writes succeed again (for the running ``proc``, or for the next recorder)."""

    def make_readable(self) -> None:
        """After the recorder exited: make the log readable for the checks."""

    def close(self) -> None:
        """Undo the set-up (unmount)."""


class FileSizeLimit(Fault):
    """EFBIG: the recorder's RLIMIT_FSIZE is set (prlimit) to its segment's size."""

    errno_name = "EFBIG"

    def provoke(self, proc: Proc | None) -> None:
        assert proc is not None, "the limit is set on a running recorder"
        size = list_segments(self.directory)[-1][1].stat().st_size
        assert os.path.getsize(self.log_path) < size, "the recorder's own output must stay writable"
        resource.prlimit(proc.popen.pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

    def lift(self, proc: Proc | None) -> None:
        if proc is not None and proc.popen.poll() is None:
            resource.prlimit(proc.popen.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


class FullTmpfs(Fault):
    """ENOSPC: the log is on a 4 MiB tmpfs, filled up by a filler file."""

    errno_name = "ENOSPC"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        require_root("a tmpfs for ENOSPC")
        self.mount = tmp / "mnt"
        self.mount.mkdir()
        run_or_skip(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(self.mount)], "ENOSPC")
        self.directory = self.mount / "log"
        self.filler = self.mount / "filler"

    def provoke(self, proc: Proc | None) -> None:
        chunk = b"\0" * 65536
        with self.filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
            while True:
                fh.write(chunk)
        assert shutil.disk_usage(self.mount).free < 65536

    def lift(self, proc: Proc | None) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        unmount(self.mount)


#: ``EXT4_IOC_SHUTDOWN`` (``_IOR('X', 125, __u32)``) and its flag that first syncs the
#: file system (everything written before the shutdown stays), as xfstests' godown does.
EXT4_IOC_SHUTDOWN = 0x8004587D
EXT4_GOING_FLAGS_DEFAULT = 0


class ShutDownExt4(Fault):
    """EIO: the log is on an ext4 file system on a loop device, shut down with
    ``EXT4_IOC_SHUTDOWN``: every later read and write on it fails with EIO, as when a
    disk goes away. Remounting it afterwards makes what was written before readable."""

    errno_name = "EIO"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        require_root("an ext4 loop mount for EIO")
        self.image = tmp / "ext4.img"
        with self.image.open("wb") as fh:
            fh.truncate(32 * 1024 * 1024)
        run_or_skip(["mkfs.ext4", "-q", "-F", str(self.image)], "EIO")
        self.mount = tmp / "mnt"
        self.mount.mkdir()
        run_or_skip(["mount", "-o", "loop", str(self.image), str(self.mount)], "EIO")
        self.directory = self.mount / "log"

    def provoke(self, proc: Proc | None) -> None:
        fd = os.open(self.mount, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_DEFAULT))
        except OSError as exc:
            pytest.skip(f"EIO: EXT4_IOC_SHUTDOWN is not supported here: {exc}")
        finally:
            os.close(fd)

    def make_readable(self) -> None:
        unmount(self.mount)
        subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mount)], check=True, timeout=60)

    def close(self) -> None:
        unmount(self.mount)


FAULTS: dict[str, type[Fault]] = {"EFBIG": FileSizeLimit, "ENOSPC": FullTmpfs, "EIO": ShutDownExt4}


@pytest.fixture
def fault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fault]:
    """The disk fault named by the test's parameter, undone (unmounted) at the end.
    Request it before ``bus`` so that the recorders are killed before the unmount."""
    made = FAULTS[request.param](tmp_path)
    try:
        yield made
    finally:
        made.close()


def record_until_fault(bus: Bus, fault: Fault) -> tuple[Proc, Any, dict[str, Any]]:
    """Start a recorder on the fault's directory, record BEFORE messages, provoke the
    fault, send DURING more, and wait until the recorder has received them all and holds
    records because its writes fail. Returns the recorder, the (quiet, open) publisher
    and that status reply."""
    rec = start_recorder(bus, fault.directory, log_path=fault.log_path)
    answering(fault.directory, rec)
    pub = bus.publisher(rec, heartbeat_s=None)
    publish(pub, 1, BEFORE)
    wait_for_records(fault.directory, BEFORE)
    fault.provoke(rec)
    publish(pub, BEFORE + 1, BEFORE + DURING)
    status = wait_status(
        fault.directory, rec,
        lambda s: s["received"].get("sub") == BEFORE + DURING and s["held_bytes"] > 0 and bool(s["degraded"]),
        f"all {BEFORE + DURING} messages received and records held",
    )
    return rec, pub, status


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    ["EFBIG", "ENOSPC", "EIO"],
    indirect=True,
)
def test_stop_while_writes_still_fail_exits_1_and_names_the_lost_seqs(fault: Fault, bus: Bus) -> None:
    """Stopped (SIGTERM) while its writes still fail, the recorder exits 1 and its log
    names the records it could not write: ``stopping uncleanly: N records (seq A..B)
    could not be written: ERRNO``, A being the first seq not on disk and B the last seq
    it gave. The log on disk is whole up to A-1 without ``recorder.stop``, the state is
    left unclean and verifies; a recorder started afterwards writes
    ``recorder.recovered`` at seq A and reports the lost stamped messages as a gap."""
    rec, pub, status = record_until_fault(bus, fault)
    assert status["degraded"][0].startswith(f"{fault.errno_name}: "), status
    last_given = status["last_seq"]
    code = rec.terminate(60)
    fault.make_readable()
    output = rec.output()
    assert code == 1, output
    stopped = re.search(r"stopping uncleanly: (\d+) records \(seq (\d+)\.\.(\d+)\) could not be written: (\w+)",
                        output)
    assert stopped is not None, output
    found = records(fault.directory)
    first_lost = found[-1]["seq"] + 1
    # Records the recorder writes about itself meanwhile (a recorder.error when the
    # state file cannot be written either, as on EIO) are held too: B may be past the
    # last seq status had given.
    assert int(stopped[3]) >= last_given
    last_given = int(stopped[3])
    assert [int(stopped[1]), int(stopped[2]), int(stopped[3]), stopped[4]] == [
        last_given - first_lost + 1, first_lost, last_given, fault.errno_name]
    assert [r["seq"] for r in found] == list(range(1, first_lost))
    assert "recorder.stop" not in {r["kind"] for r in found}
    assert read_state(fault.directory)["clean"] is False
    verified = cli("verify", str(fault.directory))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    fault.lift(None)
    again = start_recorder(bus, fault.directory, log_path=fault.log_path)
    answering(fault.directory, again)
    recovered = records(fault.directory)[first_lost - 1]
    assert (recovered["seq"], recovered["kind"]) == (first_lost, "recorder.recovered")

    def heartbeat_recorded() -> bool:
        pub.heartbeat()
        return any(r["kind"] == "publisher.heartbeat" for r in records(fault.directory))

    wait_until(heartbeat_recorded, "the restarted recorder records the publisher's heartbeat")
    pub.close(0, heartbeat=False)
    found = records(fault.directory)
    recorded = {r["data"]["convlog"]["seq"] for r in found if r["kind"] == "message"}
    lost = set(range(1, BEFORE + DURING + 1)) - recorded
    assert lost, "some messages were only held when the recorder stopped"
    gaps = [r["data"] for r in found if r["kind"] == "recorder.gap"]
    assert {seq for gap in gaps for seq in range(gap["first"], gap["last"] + 1)} == lost
    assert again.terminate() == 0, again.output()
    assert cli("verify", str(fault.directory)).returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["ENOSPC"], indirect=True)
def test_a_full_disk_holds_records_and_writes_them_once_space_is_freed(fault: Fault, bus: Bus) -> None:
    """On a full file system (ENOSPC, not only EFBIG) the recorder keeps running and
    holds what it receives; ``convlog status`` exits 1 naming ENOSPC. Once space is
    freed it writes everything it held, then a ``recorder.degraded`` record with the
    ENOSPC error; nothing is lost or dropped, seq is gapless and the log verifies."""
    rec, pub, _ = record_until_fault(bus, fault)
    shown = cli("status", "--dir", str(fault.directory), timeout_s=60)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "UNHEALTHY" in shown.stdout and "ENOSPC: No space left on device" in shown.stdout, shown.stdout
    assert max(path.stat().st_size for _, path in list_segments(fault.directory)) > 0
    assert rec.popen.poll() is None, "the recorder must keep running while the disk is full"

    fault.lift(rec)
    wait_until(lambda: any(r["kind"] == "recorder.degraded" for r in records(fault.directory)),
               "recorder.degraded written once space was freed")
    pub.close()
    wait_for_final_heartbeat(fault.directory, BEFORE + DURING)
    wait_status(fault.directory, rec, lambda s: s["healthy"], "healthy again")
    assert rec.terminate() == 0, rec.output()
    found = records(fault.directory)
    assert [r["seq"] for r in found] == list(range(1, len(found) + 1))
    degraded = [r["data"] for r in found if r["kind"] == "recorder.degraded"]
    assert len(degraded) == 1 and degraded[0]["error"].startswith("ENOSPC"), degraded
    assert degraded[0]["held_records"] >= 1
    assert not any(r["kind"] == "recorder.dropped" for r in found)
    ids = [r["meta"]["message_id"] for r in found if r["kind"] == "message"]
    assert ids == [f"f{i}" for i in range(1, BEFORE + DURING + 1)]
    verified = cli("verify", str(fault.directory))
    assert verified.returncode == 0, verified.stdout


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["EIO"], indirect=True)
def test_an_io_error_holds_records_status_names_it_and_the_log_stays_whole(fault: Fault, bus: Bus) -> None:
    """When the file system fails with EIO (an ext4 shut down under the recorder) the
    recorder keeps running and holds its records; ``convlog status`` exits 1 naming EIO.
    Stopped, it exits 1; the file system mounted again holds a whole log up to the last
    record written before the fault, which verifies, and a new recorder continues it."""
    rec, pub, status = record_until_fault(bus, fault)
    assert any("EIO: Input/output error" in problem for problem in status["problems"]), status
    shown = cli("status", "--dir", str(fault.directory), "--json", timeout_s=60)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    reported = orjson.loads(shown.stdout)
    assert reported["running"] is True and reported["healthy"] is False
    assert reported["degraded"] == ["EIO: Input/output error"]
    assert rec.popen.poll() is None, "the recorder must keep running while writes fail"
    pub.close(0, heartbeat=False)
    assert rec.terminate(60) == 1, rec.output()

    fault.make_readable()
    found = records(fault.directory)
    ids = [r["meta"]["message_id"] for r in found if r["kind"] == "message"]
    assert ids[:BEFORE] == [f"f{i}" for i in range(1, BEFORE + 1)]
    assert [r["seq"] for r in found] == list(range(1, len(found) + 1))
    verified = cli("verify", str(fault.directory))
    assert verified.returncode == 0, verified.stdout
    again = start_recorder(bus, fault.directory, log_path=fault.log_path)
    answering(fault.directory, again)
    after = records(fault.directory)
    assert after[len(found)]["kind"] == "recorder.recovered" and after[len(found)]["seq"] == len(found) + 1
    assert again.terminate() == 0, again.output()
    assert cli("verify", str(fault.directory)).returncode == 0


# --------------------------------------------------------------------------- convlog status


@pytest.mark.slow
def test_status_reports_an_endpoint_nobody_listens_on_until_a_broker_appears(bus: Bus, tmp_path: Path) -> None:
    """A recorder whose ``--sub`` endpoint has no broker behind it runs, but ``convlog
    status`` exits 1 with ``UNHEALTHY`` and ``not connected to ENDPOINT`` (and the same
    problem in ``--json``); when a broker starts on that endpoint the recorder connects
    by itself and status exits 0."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    directory = tmp_path / "log"
    rec = start_recorder(bus, directory, sub=endpoint)
    answering(directory, rec)
    shown = cli("status", "--dir", str(directory), timeout_s=60)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("UNHEALTHY"), shown.stdout
    assert f"  problem: not connected to {endpoint}" in lines
    assert f"  sub {endpoint}: NOT connected" in lines
    as_json = cli("status", "--dir", str(directory), "--json", timeout_s=60)
    assert as_json.returncode == 1
    reported = orjson.loads(as_json.stdout)
    assert reported["running"] is True and reported["healthy"] is False
    assert f"not connected to {endpoint}" in reported["problems"]
    assert reported["endpoints"] == [{"endpoint": endpoint, "kind": "sub", "connected": False}]

    late = spawn(["broker", "--xsub", f"tcp://127.0.0.1:{free_port()}", "--xpub", endpoint], tmp_path / "late.log")
    bus.procs.append(late)
    wait_status(directory, rec, lambda s: s["healthy"], "connected once the broker runs")
    healthy = cli("status", "--dir", str(directory), timeout_s=60)
    assert healthy.returncode == 0, healthy.stdout
    assert healthy.stdout.startswith("healthy") and f"sub {endpoint}: connected" in healthy.stdout
    assert rec.terminate() == 0, rec.output()


@pytest.mark.slow
def test_status_reports_failing_writes_then_dropping_then_health(bus: Bus, tmp_path: Path) -> None:
    """With writes failing (EFBIG) ``convlog status`` exits 1 and names the error
    (``writes failing since ...: EFBIG``); once the held records reach the configured
    ``held_bytes`` and messages are dropped it exits 1 naming ``N messages dropped (held
    bytes at the bound)``, N being the count in ``--json`` and later in the
    ``recorder.dropped`` record; once writes succeed again it exits 0."""
    config = tmp_path / "convlog.toml"
    bound = 8192
    config.write_text(f"[recorder]\nheld_bytes = {bound}\n")
    fault = FileSizeLimit(tmp_path)
    directory = fault.directory
    rec = start_recorder(bus, directory, "--config", str(config), log_path=fault.log_path)
    answering(directory, rec)
    pub = bus.publisher(rec, heartbeat_s=None)
    publish(pub, 1, BEFORE)
    wait_for_records(directory, BEFORE)
    fault.provoke(rec)

    pub.send(*message(BEFORE + 1))
    held = wait_status(directory, rec, lambda s: s["held_bytes"] > 0, "a record held")
    assert held["drops"] == 0 and held["healthy"] is False
    assert any(re.fullmatch(r"writes failing since \S+: EFBIG: File too large", p) for p in held["problems"]), held
    shown = cli("status", "--dir", str(directory), timeout_s=60)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert shown.stdout.startswith("UNHEALTHY")
    assert re.search(r"problem: writes failing since \S+: EFBIG: File too large", shown.stdout), shown.stdout
    assert "messages dropped" not in shown.stdout

    sent = BEFORE + 1
    for _ in range(4):  # about 20 KB in bursts: past the 8 KB bound, so the rest is dropped
        publish(pub, sent + 1, sent + 5)
        sent += 5
        time.sleep(0.2)
    dropping = wait_status(directory, rec, lambda s: s["drops"] > 0 and s["received"].get("sub") == sent,
                           "messages dropped")
    assert dropping["held_bytes"] >= bound
    assert f"{dropping['drops']} messages dropped (held bytes at the bound)" in dropping["problems"]
    shown = cli("status", "--dir", str(directory), timeout_s=60)
    assert shown.returncode == 1, shown.stdout
    assert f"problem: {dropping['drops']} messages dropped (held bytes at the bound)" in shown.stdout
    assert f"dropped {dropping['drops']}" in shown.stdout
    reported = orjson.loads(cli("status", "--dir", str(directory), "--json", timeout_s=60).stdout)
    assert reported["drops"] == dropping["drops"] and reported["degraded"] == ["EFBIG: File too large"]

    fault.lift(rec)
    wait_status(directory, rec, lambda s: s["healthy"], "healthy once writes succeed")
    assert cli("status", "--dir", str(directory), timeout_s=60).returncode == 0
    pub.close(0, heartbeat=False)
    assert rec.terminate() == 0, rec.output()
    dropped = [r["data"] for r in records(directory) if r["kind"] == "recorder.dropped"]
    assert [d["messages"] for d in dropped] == [dropping["drops"]]
    assert dropped[0]["bytes_bound"] == bound


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["ENOSPC"], indirect=True)
def test_a_recorder_started_on_a_full_disk_refuses_in_one_line(fault: Fault, bus: Bus) -> None:
    """A recorder started on a file system with no space left exits 1 with one
    ``convlog:`` line naming ENOSPC's message and writes no segment; once space is
    freed a recorder starts on the same directory and the log verifies."""
    fault.provoke(None)
    rec = start_recorder(bus, fault.directory, log_path=fault.log_path)
    assert rec.popen.wait(60) == 1, rec.output()
    lines = rec.output().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convlog: "), lines
    assert os.strerror(errno.ENOSPC) in lines[0]
    assert list_segments(fault.directory) == []

    fault.lift(None)
    again = start_recorder(bus, fault.directory, log_path=fault.tmp / "again.log")
    assert answering(fault.directory, again)["last_seq"] == 1
    assert again.terminate() == 0, again.output()
    assert [r["kind"] for r in records(fault.directory)] == ["recorder.start", "recorder.stop"]
    assert cli("verify", str(fault.directory)).returncode == 0


# --------------------------------------------------------------------------- control socket


@pytest.mark.slow
def test_control_socket_is_0600_whatever_the_umask_and_after_a_stale_one(bus: Bus, tmp_path: Path) -> None:
    """The control socket (at :func:`convlog.bus.control.socket_path`) is a socket file of
    mode 0600 owned by the recorder's user, even when the recorder runs with umask 000:
    in ``recovery/`` and, for a directory whose path is too long for a Unix socket, in
    the per-user runtime directory. A recorder killed by SIGKILL leaves its socket; the next
    one replaces it (made 0666 meanwhile) with a new 0600 socket that answers."""
    short = tmp_path / "log"
    long = tmp_path / ("d" * 100) / "log"
    long.parent.mkdir()
    assert control.socket_path(short) == short / "recovery" / "control.sock"
    assert not control.socket_path(long).is_relative_to(long)
    procs = {directory: start_recorder(bus, directory, umask=0) for directory in (short, long)}

    def assert_private(directory: Path) -> None:
        info = os.stat(control.socket_path(directory))
        assert stat.S_ISSOCK(info.st_mode), oct(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600, oct(info.st_mode)
        assert info.st_uid == os.geteuid()

    for directory, proc in procs.items():
        answering(directory, proc)
        assert_private(directory)
        # umask 000, yet the log's directories are private (convlog.store.modes; tests/store/test_private.py)
        assert os.stat(directory / "events").st_mode & 0o777 == 0o700

    procs[short].kill9()
    stale = control.socket_path(short)
    assert stale.exists()
    stale.chmod(0o666)
    again = start_recorder(bus, short, umask=0)
    assert answering(short, again)["pid"] == again.popen.pid
    assert_private(short)
    for proc in (again, procs[long]):
        assert proc.terminate() == 0, proc.output()
    assert not control.socket_path(short).exists() and not control.socket_path(long).exists()


# --------------------------------------------------------------------------- convlog verify


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A log written by a real recorder (4 KiB segments, so several of them) and stopped
    cleanly, with its stop checkpoint. Tests damage copies (:func:`copy_of`)."""
    tmp = tmp_path_factory.mktemp("recorded")
    directory = tmp / "log"
    with running_bus(tmp) as bus:
        rec = start_recorder(bus, directory, "--segment-bytes", "4096")
        pub = bus.publisher(rec, heartbeat_s=None)
        publish(pub, 1, 24)
        wait_for_records(directory, 24)
        pub.close(0, heartbeat=False)
        assert rec.terminate() == 0, rec.output()
    assert len(list_segments(directory)) >= 4
    assert cli("verify", str(directory)).returncode == 0
    yield directory


def copy_of(recorded: Path, tmp_path: Path) -> Path:
    """A private copy of the recorded log (without the lock file)."""
    directory = tmp_path / "log"
    shutil.copytree(recorded, directory, ignore=shutil.ignore_patterns("recorder.lock"))
    return directory


def verify_problems(directory: Path) -> tuple[int, list[str], str]:
    """Run ``convlog verify DIR``: exit code, problem lines (no NOTE lines, no summary),
    summary line."""
    done = cli("verify", str(directory))
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert lines, done.stderr
    return done.returncode, [line for line in lines[:-1] if not line.startswith("NOTE ")], lines[-1]


def state_of(directory: Path) -> dict[str, Any]:
    """The parsed ``recovery/state.json`` of a log."""
    state = read_state(directory)
    assert state is not None
    return state


def write_state_bytes(directory: Path, data: bytes) -> None:
    """Replace ``recovery/state.json`` with ``data``, byte for byte."""
    (directory / "recovery" / "state.json").write_bytes(data)


MALFORMED_STATES: dict[str, tuple[Callable[[dict[str, Any]], bytes], str]] = {
    "truncated JSON": (lambda s: orjson.dumps(s)[:25], r"recovery/state\.json: not JSON: .+"),
    "empty file": (lambda s: b"", r"recovery/state\.json: not JSON: .+"),
    "not UTF-8": (lambda s: b"\xff\xfe{}", r"recovery/state\.json: not JSON: .+"),
    "an array": (lambda s: b"[1, 2]", r"recovery/state\.json: not a JSON object"),
    "offset as a string": (lambda s: orjson.dumps({**s, "durable_offset": str(s["durable_offset"])}),
                           r"recovery/state\.json: durable_offset is '\d+', not a non-negative integer"),
    "negative seq": (lambda s: orjson.dumps({**s, "durable_seq": -1}),
                     r"recovery/state\.json: durable_seq is -1, not a non-negative integer"),
    "boolean seq": (lambda s: orjson.dumps({**s, "durable_seq": True}),
                    r"recovery/state\.json: durable_seq is True, not a non-negative integer"),
    "no segment": (lambda s: orjson.dumps({k: v for k, v in s.items() if k != "segment"}),
                   r"recovery/state\.json: segment is None, not a string"),
    "clean not a bool": (lambda s: orjson.dumps({**s, "clean": "yes"}),
                         r"recovery/state\.json: clean is 'yes', not true or false"),
    "unknown format": (lambda s: orjson.dumps({**s, "format": 2}),
                       r"recovery/state\.json: unknown format 2 \(expected 1\)"),
    "segment that does not exist": (lambda s: orjson.dumps({**s, "segment": "00000000000000009999.jsonl"}),
                                    r"recovery/state\.json: segment 00000000000000009999\.jsonl does not exist "
                                    r"in events/"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(MALFORMED_STATES))
def test_verify_names_a_malformed_state_json(recorded: Path, tmp_path: Path, case: str) -> None:
    """A malformed ``recovery/state.json`` (not JSON, not an object, a field of the wrong
    type, an unknown format, a segment that does not exist) makes ``convlog verify``
    exit 1 with exactly one ``recovery/state.json: reason`` line naming what is wrong."""
    directory = copy_of(recorded, tmp_path)
    make, expected = MALFORMED_STATES[case]
    write_state_bytes(directory, make(state_of(directory)))
    code, problems, summary = verify_problems(directory)
    assert code == 1, problems
    assert len(problems) == 1 and re.fullmatch(expected, problems[0]), (problems, expected)
    assert summary.endswith(", 1 problem")


@pytest.mark.slow
@pytest.mark.parametrize("index", [1, 0], ids=["middle segment", "first segment"])
def test_verify_names_a_missing_segment(recorded: Path, tmp_path: Path, index: int) -> None:
    """With a segment deleted, ``convlog verify`` exits 1: the first record after it is
    reported as ``events/<next>:1: seq S where E was expected (N records missing)``, N
    being the deleted segment's record count, and the stop checkpoint's cut names the
    missing segment; ``--json`` says the same."""
    directory = copy_of(recorded, tmp_path)
    segments = list_segments(directory)
    (first, gone), (following, after) = segments[index], segments[index + 1]
    gone.unlink()
    count = following - first
    code, problems, summary = verify_problems(directory)
    assert code == 1
    assert problems[0] == (f"events/{after.name}:1: seq {following} where {first} was expected "
                           f"({count} records missing)"), problems
    # the cut names a segment by its key (the plain name), sealed or not
    assert any(p.startswith("checkpoints/") and f"segment {segment_key(gone)} is missing" in p
               for p in problems[1:]), problems
    assert summary.endswith(f", {len(problems)} problems")
    report = orjson.loads(cli("verify", str(directory), "--json").stdout)
    assert report["ok"] is False
    assert report["problems"][0] == {"where": f"events/{after.name}", "line": 1,
                                     "reason": f"seq {following} where {first} was expected ({count} records missing)"}


def _inside_last_record(directory: Path, state: dict[str, Any]) -> tuple[dict[str, Any], str]:
    offset = state["durable_offset"] - 10  # inside the last record (recorder.stop)
    return ({**state, "durable_offset": offset},
            f"recovery/state.json: durable_offset {offset} is not at a record boundary of {state['segment']}")


def _inside_a_middle_segment(directory: Path, state: dict[str, Any]) -> tuple[dict[str, Any], str]:
    _, path = list_segments(directory)[1]
    first_line = len(path.read_bytes().splitlines(keepends=True)[0])
    offset = first_line + 3  # three bytes into its second record
    return ({**state, "segment": path.name, "durable_offset": offset, "clean": False},
            f"recovery/state.json: durable_offset {offset} is not at a record boundary of {path.name}")


def _beyond_the_end(directory: Path, state: dict[str, Any]) -> tuple[dict[str, Any], str]:
    size = (directory / "events" / state["segment"]).stat().st_size
    return ({**state, "durable_offset": size + 100},
            f"recovery/state.json: durable_offset {size + 100} is beyond the end of {state['segment']} ({size} bytes)")


OFF_BOUNDARY: dict[str, Callable[[Path, dict[str, Any]], tuple[dict[str, Any], str]]] = {
    "inside the last record": _inside_last_record,
    "inside a record of a middle segment": _inside_a_middle_segment,
    "beyond the end of the segment": _beyond_the_end,
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(OFF_BOUNDARY))
def test_verify_names_a_durable_offset_off_a_record_boundary(recorded: Path, tmp_path: Path, case: str) -> None:
    """A ``recovery/state.json`` whose ``durable_offset`` is not at the end of a whole
    record of its segment (inside one, or past the segment's end) makes ``convlog
    verify`` exit 1 with exactly one line naming the offset and the segment."""
    directory = copy_of(recorded, tmp_path)
    state, expected = OFF_BOUNDARY[case](directory, state_of(directory))
    write_state_bytes(directory, orjson.dumps(state))
    code, problems, summary = verify_problems(directory)
    assert code == 1
    assert problems == [expected]
    assert summary.endswith(", 1 problem")
