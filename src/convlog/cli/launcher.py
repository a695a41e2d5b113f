"""Make sure exactly one recorder runs for a log directory (for agents' startup hooks).

:func:`ensure_running` returns at once when a recorder answers on the directory's
control channel; otherwise it starts one detached (``convlog record`` in its own
session, output appended to ``<dir>/recorder.log``) and waits until it answers
``status``. Launchers that race (five agents starting at the same moment) are
serialized by an ``flock`` on ``<dir>/recovery/launch.lock``: the first starts the
recorder and holds the launch lock until it answers; the others then find it running.
The recorder's own writer lock (:class:`convlog.store.lock.LogLock`) stays the guarantee that
a directory never has two writers, whoever starts them.

:func:`ensure_sync_running` does the same for the directory's ``convlog sync --follow``
(into PostgreSQL): started detached under the same launch lock, output appended to
``<dir>/sync.log``, the database URL passed in ``$CONVLOG_DB`` (not on the command line,
so not in ``ps``); it runs once it holds ``<dir>/recovery/sync.lock``
(:func:`convlog.sync.follower.sync_lock`), which stays the guarantee of one follower per
log.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convlog.bus import control
from convlog.store.lock import LogLock, pid_alive
from convlog.store.segment import RECOVERY, ensure_layout

#: The recorder's output (stdout and stderr) when started by :func:`ensure_running`.
LOG_NAME = "recorder.log"
#: The follower's output when started by :func:`ensure_sync_running`.
SYNC_LOG_NAME = "sync.log"
#: The follower's lock file in ``<dir>/recovery`` (it writes its pid there once it holds it).
SYNC_LOCK = "sync.lock"
LAUNCH_LOCK = "launch.lock"
#: How often the launcher asks whether the recorder answers yet, seconds.
POLL_S = 0.05


class LaunchError(Exception):
    """The recorder or the follower could not be started (the message ends with the last
    lines of its log)."""


@dataclass(frozen=True, slots=True)
class Launch:
    """What :func:`ensure_running` found or did.

    Attributes:
        pid: the running recorder's pid.
        started: True when this call started it, False when it was running already.
        status: its ``status`` reply (see :meth:`convlog.recorder.daemon.Recorder.status`).
        log: the file its output goes to (when started by a launcher).
    """

    pid: int
    started: bool
    status: dict[str, Any]
    log: Path


@dataclass(frozen=True, slots=True)
class SyncLaunch:
    """What :func:`ensure_sync_running` found or did.

    Attributes:
        pid: the running follower's pid (as its lock file says; 0 when unreadable).
        started: True when this call started it, False when it was running already.
        log: the file its output goes to (when started by a launcher).
    """

    pid: int
    started: bool
    log: Path


def _tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip()
    except OSError:
        return ""


def _status(directory: Path, timeout_s: float) -> dict[str, Any] | None:
    try:
        return control.request(directory, "status", timeout_s=timeout_s)
    except control.NotRunningError:
        return None


def ensure_running(
    directory: Path,
    record_args: tuple[str, ...] | list[str] = (),
    timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
) -> Launch:
    """Return the directory's running recorder, starting one if none answers.

    Args:
        directory: the log directory (created if missing).
        record_args: extra arguments for ``convlog record`` (``--sub``, ``--config``, ...);
            ``--dir`` is added.
        timeout_s: how long to wait for the launch lock and for the new recorder to
            answer, seconds (recovery of a big log's tail happens before it answers).
        env: environment for the recorder (default: this process's).

    Returns:
        a :class:`Launch`.

    Raises:
        LaunchError: the recorder exited or did not answer in time (with its log's tail).
        OSError: the directory cannot be prepared.
    """
    directory = Path(directory)
    log_path = directory / LOG_NAME
    found = _status(directory, 2.0)
    if found is not None:
        return Launch(int(found["pid"]), False, found, log_path)
    ensure_layout(directory)
    deadline = time.monotonic() + timeout_s
    with _launch_lock(directory, deadline, timeout_s):
        found = _status(directory, 2.0)  # started by the launcher that held the lock
        if found is not None:
            return Launch(int(found["pid"]), False, found, log_path)
        return _start(directory, list(record_args), log_path, deadline, env)


@contextlib.contextmanager
def _launch_lock(directory: Path, deadline: float, timeout_s: float) -> Iterator[None]:
    """Hold ``<dir>/recovery/launch.lock`` (flock), waiting for it until ``deadline``.

    Raises:
        LaunchError: when another launcher holds it past the deadline.
    """
    path = directory / RECOVERY / LAUNCH_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LaunchError(f"another launcher held {path} for more than {timeout_s:g} s") from None
                time.sleep(POLL_S)
        yield
    finally:
        os.close(fd)  # releases the launch lock


def _spawn_detached(command: list[str], log_path: Path, env: Any, header: str) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own (it outlives the launcher), its output
    appended to ``log_path`` after a ``header`` line."""
    with log_path.open("ab") as out:
        out.write(f"{header}\n".encode())
        out.flush()
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, close_fds=True)


def _start(directory: Path, record_args: list[str], log_path: Path, deadline: float,
           env: dict[str, str] | None) -> Launch:
    command = [sys.executable, "-m", "convlog", "record", "--dir", str(directory), *record_args]
    proc = _spawn_detached(command, log_path, env, f"--- convlog launch: {' '.join(command)}")
    while time.monotonic() < deadline:
        found = _status(directory, 1.0)
        if found is not None:
            return Launch(int(found["pid"]), int(found["pid"]) == proc.pid, found, log_path)
        code = proc.poll()
        if code is not None:
            # Another recorder (not started by a launcher) may hold the log and still be
            # starting: then it is the one to wait for.
            holder = lock_holder(directory)
            if holder is None:
                raise LaunchError(f"the recorder exited with status {code}; last lines of {log_path}:\n"
                                  f"{_tail(log_path)}")
        time.sleep(POLL_S)
    raise LaunchError(f"the recorder did not answer within the timeout; last lines of {log_path}:\n{_tail(log_path)}")


def ensure_sync_running(
    directory: Path,
    url: str,
    timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
) -> SyncLaunch:
    """Return the directory's running ``convlog sync --follow``, starting one if none
    holds ``<dir>/recovery/sync.lock``.

    The new follower runs detached (its own session, output appended to
    ``<dir>/sync.log``) with ``url`` in ``$CONVLOG_DB``, never on its command line. It
    counts as running once it holds the sync lock; it connects to the database after
    that and retries by itself while the database is unreachable, so a database that is
    down does not fail the launch (its log says why nothing arrives). Call it once the
    directory's recorder runs (:func:`ensure_running`): ``convlog sync`` refuses a
    directory without an event log.

    Args:
        directory: the log directory (created if missing).
        url: the PostgreSQL connection URL (``postgresql://…``).
        timeout_s: how long to wait for the launch lock and for the new follower to take
            the sync lock, seconds.
        env: environment for the follower (default: this process's); ``CONVLOG_DB`` is
            set to ``url`` in it.

    Returns:
        a :class:`SyncLaunch`.

    Raises:
        LaunchError: the follower exited or did not take the sync lock in time (with its
            log's tail).
        OSError: the directory cannot be prepared.
    """
    from convlog.sync.follower import sync_running

    directory = Path(directory)
    log_path = directory / SYNC_LOG_NAME
    if sync_running(directory):
        return SyncLaunch(_sync_pid(directory), False, log_path)
    ensure_layout(directory)
    deadline = time.monotonic() + timeout_s
    with _launch_lock(directory, deadline, timeout_s):
        if sync_running(directory):  # started by the launcher that held the lock
            return SyncLaunch(_sync_pid(directory), False, log_path)
        return _start_sync(directory, url, log_path, deadline, env)


def _sync_pid(directory: Path) -> int:
    """The pid the follower wrote into its lock file (0 when there is none)."""
    try:
        return int((directory / RECOVERY / SYNC_LOCK).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _start_sync(directory: Path, url: str, log_path: Path, deadline: float,
                env: dict[str, str] | None) -> SyncLaunch:
    from convlog.sync.follower import sync_running

    command = [sys.executable, "-m", "convlog", "sync", "--follow", "--dir", str(directory)]
    child_env = {**(os.environ if env is None else env), "CONVLOG_DB": url}
    proc = _spawn_detached(command, log_path, child_env,
                           f"--- convlog launch: {' '.join(command)} (database in $CONVLOG_DB)")
    while time.monotonic() < deadline:
        # The follower writes its pid into the lock file once it holds the lock; reading
        # the file (rather than probing the flock, as sync_running does) cannot make the
        # starting follower find the lock taken.
        if _sync_pid(directory) == proc.pid:
            return SyncLaunch(proc.pid, True, log_path)
        code = proc.poll()
        if code is not None:
            if sync_running(directory):  # another follower (not started by a launcher) has the log
                return SyncLaunch(_sync_pid(directory), False, log_path)
            raise LaunchError(f"convlog sync exited with status {code}; last lines of {log_path}:\n"
                              f"{_tail(log_path)}")
        time.sleep(POLL_S)
    raise LaunchError(f"convlog sync did not take {directory / RECOVERY / SYNC_LOCK} within the timeout; "
                      f"last lines of {log_path}:\n{_tail(log_path)}")


def lock_holder(directory: Path) -> dict[str, Any] | None:
    """Who holds the directory's writer lock, as its lock file says (pid, host, started,
    command), or None when the process named there is gone (or there is no lock file).

    A process is looked up by pid (Linux: a zombie counts as gone); the lock itself is not
    touched, so this never gets in the way of a recorder taking it.
    """
    holder = LogLock.last_holder(directory)
    return holder if holder is not None and pid_alive(holder["pid"]) else None




def stop_recorder(directory: Path, timeout_s: float = 120.0) -> int:
    """Ask the directory's recorder to stop and wait until its process has exited.

    Args:
        directory: the log directory.
        timeout_s: how long to wait for the exit, seconds (it drains and writes a final
            checkpoint first).

    Returns:
        the pid of the recorder that stopped.

    Raises:
        control.NotRunningError: when no recorder answers.
        TimeoutError: when it is still running after ``timeout_s``.
    """
    reply = control.request(Path(directory), "stop", timeout_s=10.0)
    pid = int(reply["pid"])
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the recorder (pid {pid}) is still running after {timeout_s:g} s")
        time.sleep(POLL_S)
    return pid
