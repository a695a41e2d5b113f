"""``recovery/state.json``: the last durable position of the writer and the
clean-shutdown flag, read leniently and written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from convlog.store.fsync import write_atomic
from convlog.store.segment import RECOVERY, STATE_FILE


def read_state(directory: Path) -> dict[str, Any] | None:
    """Read ``recovery/state.json``; None when missing or unreadable."""
    try:
        value = orjson.loads((Path(directory) / RECOVERY / STATE_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def write_state(directory: Path, state: dict[str, Any]) -> None:
    """Write ``recovery/state.json`` atomically (see :func:`convlog.store.fsync.write_atomic`), compact JSON
    (``jq .`` shows it indented).

    Raises:
        OSError: when it cannot be written (the old file is left as it was).
        TypeError: when ``state`` holds a value JSON cannot carry.
    """
    write_atomic(Path(directory) / RECOVERY / STATE_FILE, orjson.dumps(state))
