"""``DIR/recovery/sync.json``: what ``convlog sync`` last wrote into the database for
this log (written by the follower after each transaction, atomically), read by
``convlog status`` for the lag and by retention, which keeps every segment holding a
record the database does not have yet when a sync is configured.

The database's own position (``convlog.positions``) stays the truth the follower
resumes from; this file is a local copy for readers that do not connect to it::

    {"log_id": "…", "db": "postgresql://user@host:5432/db", "seq": 4182,
     "segment": "00000000000000004001.jsonl", "offset": 51200,
     "lag_records": 0, "lag_s": 0.0, "updated": "2026-12-06T04:40:00.000000Z", "pid": 4242}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from convlog.store.fsync import write_atomic
from convlog.store.segment import RECOVERY

SYNC_FILE = "sync.json"


def sync_path(directory: Path) -> Path:
    """``DIR/recovery/sync.json``."""
    return Path(directory) / RECOVERY / SYNC_FILE


def read_sync_state(directory: Path) -> dict[str, Any] | None:
    """The file parsed, or None when it is missing or not a JSON object."""
    try:
        data = orjson.loads(sync_path(directory).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def synced_seq(directory: Path) -> int:
    """The last seq the sync says the database holds (0 when no sync wrote one)."""
    data = read_sync_state(directory)
    seq = data.get("seq") if data is not None else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else 0


def write_sync_state(directory: Path, state: dict[str, Any]) -> None:
    """Write the file atomically (temp file, fsync, rename).

    Raises:
        OSError: when it cannot be written.
    """
    write_atomic(sync_path(directory), orjson.dumps(state))
