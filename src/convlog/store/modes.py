"""The permissions of what convlog creates under a log directory, and private directories.

A log holds whole conversations: by default every file convlog creates under the log
directory is mode 0600 and every directory 0700, whatever the umask it was started with
(the recorder's ``[recorder] file_mode`` / ``dir_mode`` settings, or ``CONVLOG_FILE_MODE``
/ ``CONVLOG_DIR_MODE``, open them to a group, e.g. ``"0640"`` / ``"0750"``).

How: a process that writes a log sets its umask from the modes (:func:`apply`), so every
file and directory it makes afterwards (segments, ``state.json``, checkpoints, the lock,
the search index and SQLite's ``-wal``/``-shm`` beside it, quarantined pieces, archives,
exports) is created with them, with no window in which it is more open, by whichever
code or library makes it. That is why ``file_mode`` must be ``dir_mode`` without the
execute bits (:func:`check_modes`): one umask gives both. Files and directories that
already exist keep their modes: convlog never chmods what it did not just create, so
logs written before with looser modes stay readable by the same readers (tighten them
with ``chmod -R go-rwx DIR``).

See umask(2) and mkdir(2): a new file's mode is the mode asked for minus the umask's bits.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

#: Default mode of the files convlog creates under a log directory.
DEFAULT_FILE_MODE = 0o600
#: Default mode of the directories convlog creates under a log directory.
DEFAULT_DIR_MODE = 0o700


class UnsafeDirectoryError(OSError):
    """A directory that must be private is not (owned by another user, open to others,
    a symlink or not a directory); the message says which and what to do."""


def parse_mode(value: object) -> int:
    """Parse a permission setting: an octal string such as ``"0600"`` (or ``"600"``).

    Args:
        value: the setting as read from TOML or the environment.

    Returns:
        the mode bits (0 to 0o777).

    Raises:
        ValueError: for anything else (an int is refused too: ``600`` in TOML is decimal).
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be an octal string such as \"0600\"")
    text = value.strip()
    text = text[2:] if text[:2].lower() == "0o" else text
    if not text or any(c not in "01234567" for c in text):
        raise ValueError(f"{value!r} is not an octal mode such as \"0600\"")
    mode = int(text, 8)
    if mode > 0o777:
        raise ValueError(f"{value!r} has bits beyond 0777 (setuid, setgid and sticky are not allowed)")
    return mode


def check_modes(file_mode: int, dir_mode: int) -> None:
    """Check a pair of modes can be used together.

    Args:
        file_mode: mode of new files (no execute bits).
        dir_mode: mode of new directories (the owner needs rwx).

    Raises:
        ValueError: when ``dir_mode`` does not give the owner rwx, or ``file_mode`` is
            not ``dir_mode`` without its execute bits.
    """
    if dir_mode & 0o700 != 0o700:
        raise ValueError(f"dir_mode {dir_mode:04o} must give the owner rwx (0700)")
    if file_mode != dir_mode & 0o666:
        raise ValueError(
            f"file_mode {file_mode:04o} must be dir_mode {dir_mode:04o} without the execute bits "
            f"({dir_mode & 0o666:04o}): both come from one umask"
        )


def umask_for(dir_mode: int) -> int:
    """The umask that creates directories ``dir_mode`` and files ``dir_mode & 0o666``."""
    return 0o777 & ~dir_mode


def apply(file_mode: int = DEFAULT_FILE_MODE, dir_mode: int = DEFAULT_DIR_MODE) -> int:
    """Make this process create files and directories with these modes (sets the umask).

    Args:
        file_mode: mode of new files.
        dir_mode: mode of new directories.

    Returns:
        the previous umask.

    Raises:
        ValueError: see :func:`check_modes`.
    """
    check_modes(file_mode, dir_mode)
    return os.umask(umask_for(dir_mode))


def from_env(env: os._Environ[str] | dict[str, str] | None = None) -> tuple[int, int]:
    """The modes named by ``CONVLOG_FILE_MODE`` / ``CONVLOG_DIR_MODE`` (defaults 0600 / 0700).

    Raises:
        ValueError: for a malformed value or a pair :func:`check_modes` refuses.
    """
    env = os.environ if env is None else env
    file_mode = parse_mode(env["CONVLOG_FILE_MODE"]) if env.get("CONVLOG_FILE_MODE") else DEFAULT_FILE_MODE
    dir_mode = parse_mode(env["CONVLOG_DIR_MODE"]) if env.get("CONVLOG_DIR_MODE") else DEFAULT_DIR_MODE
    check_modes(file_mode, dir_mode)
    return file_mode, dir_mode


def check_private_dir(path: Path, open_bits: int = 0o077) -> None:
    """Check a directory is ours: a real directory (not a symlink), owned by this
    process's effective uid, with none of ``open_bits`` set.

    Args:
        path: the directory.
        open_bits: mode bits that must be clear (0o077: nobody else may do anything;
            0o022: nobody else may create or remove entries).

    Raises:
        UnsafeDirectoryError: naming what is wrong.
        OSError: when it cannot be examined (FileNotFoundError when it is missing).
    """
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeDirectoryError(f"{path} is a symlink, not a private directory: refusing to use it")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectoryError(f"{path} is not a directory: refusing to use it")
    if info.st_uid != os.geteuid():
        raise UnsafeDirectoryError(
            f"{path} is owned by uid {info.st_uid}, not by us (uid {os.geteuid()}): refusing to use it "
            "(someone may have created it first; remove it)"
        )
    if stat.S_IMODE(info.st_mode) & open_bits:
        raise UnsafeDirectoryError(
            f"{path} has mode {stat.S_IMODE(info.st_mode):04o}, open to other users: refusing to use it "
            "(chmod 700 it, or remove it)"
        )


def private_mkdir(path: Path) -> Path:
    """Create a directory of mode 0700 (its parent must exist) or check an existing one
    with :func:`check_private_dir`.

    Args:
        path: the directory.

    Returns:
        ``path``.

    Raises:
        UnsafeDirectoryError: when it exists and is not private.
        OSError: when it cannot be created.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    check_private_dir(path)
    return path
