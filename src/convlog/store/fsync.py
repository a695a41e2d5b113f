"""fsync for the event log: the data of a segment (fdatasync), directories after a file is
created or renamed in them, and atomic replacement of a small file (temp file, fsync,
rename, fsync of the directory)."""

from __future__ import annotations

import os
from pathlib import Path

#: fdatasync(2) where the platform has it: it flushes the data and the metadata needed
#: to read it back (the file size) but not the modification time, like PostgreSQL's
#: default ``wal_sync_method``. Elsewhere fsync.
fdatasync = getattr(os, "fdatasync", os.fsync)


def fsync_dir(path: Path) -> None:
    """fsync a directory so a file created or renamed in it survives power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, rename, fsync dir.

    Raises:
        OSError: when any step fails (the old file is then left as it was).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # 0o666: the process umask gives the configured file_mode (convlog.store.modes)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
