"""A log's identity: ``DIR/log_id``, a UUID (RFC 9562, version 4) made once and kept,
so that records from several hosts' logs can share one database (``convlog sync``
writes each record under ``(log_id, seq)``).

The file holds the UUID's text and a newline; it is made by the first writer or
follower that needs it (the recorder at start, ``convlog sync``): written to a
temporary file, fsynced, then hard-linked into place, which fails when another process
made it first (that one is then read), so it is never replaced or changed. A copy of a
log directory keeps its id: two copies synced into one database are one log there (the
database keeps each ``(log_id, seq)`` once).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from convlog.store.fsync import fsync_dir, write_atomic

LOG_ID_FILE = "log_id"


class LogIdError(ValueError):
    """``DIR/log_id`` exists but does not hold a UUID (the message names the file)."""


def read_log_id(directory: Path) -> str | None:
    """The log's id, or None when it has none yet.

    Args:
        directory: the log directory.

    Returns:
        the UUID in its canonical text form (lowercase, with hyphens), or None.

    Raises:
        LogIdError: when the file exists but holds no UUID.
        OSError: when it exists but cannot be read.
    """
    path = Path(directory) / LOG_ID_FILE
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise LogIdError(f"{path}: not a log id (a UUID): {text[:60]!r}") from None


def ensure_log_id(directory: Path) -> str:
    """The log's id, made (a random UUID, written atomically) when it has none.

    Args:
        directory: an existing log directory.

    Returns:
        the UUID's canonical text.

    Raises:
        LogIdError: when ``DIR/log_id`` holds no UUID (it is never overwritten).
        OSError: when it cannot be read or written.
    """
    found = read_log_id(directory)
    if found is not None:
        return found
    path = Path(directory) / LOG_ID_FILE
    made = str(uuid.uuid4())
    tmp = path.with_name(f".{LOG_ID_FILE}.{os.getpid()}.{made[:8]}.tmp")
    write_atomic(tmp, f"{made}\n".encode())
    try:
        os.link(tmp, path)  # never replaces: of two processes making one at once, the first wins
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    fsync_dir(path.parent)
    found = read_log_id(directory)
    assert found is not None
    return found
