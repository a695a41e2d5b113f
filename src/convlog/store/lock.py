"""The locks of a log directory: the writer lock, one writer per log directory (an
``flock`` on ``recovery/recorder.lock`` that names its holder), and the rewrite lock
that keeps checkpoint writers out while ``convlog purge`` rewrites segments and
checkpoints (:func:`rewrite_lock`, ``recovery/rewrite.lock``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from convlog.store.clock import Clock
from convlog.store.segment import LOCK_FILE, RECOVERY, ensure_layout


class LogLockedError(Exception):
    """Another process holds the writer lock of a log directory.

    Attributes:
        holder: what the holder wrote in the lock file (pid, host, started, command),
            or an empty dict when it could not be read.
    """

    def __init__(self, directory: Path, holder: dict[str, Any]) -> None:
        self.directory, self.holder = directory, holder
        who = f"pid {holder.get('pid', '?')}"
        if holder.get("host"):
            who += f" on {holder['host']}"
        if holder.get("started"):
            who += f" since {holder['started']}"
        super().__init__(f"{directory} is already being written by {who} ({LOCK_FILE})")


class LogLock:
    """The exclusive writer lock of a log directory (``flock`` on
    ``recovery/recorder.lock``). The kernel releases it when the holder dies, even by
    kill -9, so a stale lock file never blocks a restart.

    Args:
        directory: the log directory (created if missing).
        command: a description of the holder, written into the lock file.

    Raises:
        LogLockedError: from :meth:`acquire` when another process holds it.
    """

    def __init__(self, directory: Path, command: str = "convlog record") -> None:
        self.directory = Path(directory)
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> LogLock:
        """Take the lock without waiting; returns self."""
        ensure_layout(self.directory)
        path = self.directory / RECOVERY / LOCK_FILE
        # 0o666: the process umask gives the configured file_mode (convlog.store.modes)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = orjson.loads(os.pread(fd, 65536, 0) or b"{}")
            except orjson.JSONDecodeError:
                holder = {}
            os.close(fd)
            raise LogLockedError(self.directory, holder if isinstance(holder, dict) else {}) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": Clock().now(),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps(info), 0)
        self._fd = fd
        return self

    @staticmethod
    def last_holder(directory: Path) -> dict[str, Any] | None:
        """What the last holder wrote in ``recovery/recorder.lock`` (pid, host, started,
        command), whether or not it still holds the lock (see :meth:`is_held`).

        Returns:
            the holder's dict, or None when there is no readable lock file or it names
            no integer pid.
        """
        try:
            holder = orjson.loads((Path(directory) / RECOVERY / LOCK_FILE).read_bytes() or b"{}")
        except (OSError, orjson.JSONDecodeError):
            return None
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None

    @staticmethod
    def is_held(directory: Path) -> bool:
        """Whether some process holds the writer lock of ``directory`` right now: a
        non-blocking ``flock`` probe, released at once (the lock file's pid only names
        the last holder, which may have released it and still be alive).

        Returns:
            False when there is no lock file or nobody holds it.
        """
        path = Path(directory) / RECOVERY / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a probe lock taken
        return False

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LogLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


#: The rewrite lock's file in ``recovery/`` (see :func:`rewrite_lock`).
REWRITE_LOCK_FILE = "rewrite.lock"


@contextlib.contextmanager
def rewrite_lock(directory: Path, exclusive: bool) -> Iterator[None]:
    """Hold the rewrite lock of a log directory (``flock`` on ``recovery/rewrite.lock``,
    waiting for it): ``convlog purge`` holds it exclusively from the moment it removes the
    checkpoints it will rebuild until they are rebuilt over the rewritten segments, and
    a checkpoint writer (the recorder's checkpoint job) holds it shared while it reads
    the newest checkpoint, folds and writes the next one, so it never writes a state
    folded from records a purge is removing. Released when the block ends, and by the
    kernel when the holder dies.

    Args:
        directory: the log directory (``recovery/`` is created if missing).
        exclusive: True for a purge, False for a checkpoint writer.

    Raises:
        OSError: when the lock file cannot be opened.
    """
    folder = Path(directory) / RECOVERY
    folder.mkdir(parents=True, exist_ok=True)
    # 0o666: the process umask gives the configured file_mode (convlog.store.modes)
    fd = os.open(folder / REWRITE_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)

def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie (Linux ``/proc``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    return True
