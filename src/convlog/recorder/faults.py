"""Faults the recorder got over but still reports: the state several parts share.

The durable writer, the state snapshots and the checkpoint job note here what fails;
status reads it (a fault makes the recorder unhealthy until it clears), and the
recording loop turns failures of other threads into ``recorder.error`` records.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Faults:
    """Open faults, shared by the recorder's parts (one instance per recorder).

    Attributes:
        file_errors: recovery files that cannot be written, by file (``"state"``,
            ``"segment"``, ``"checkpoint"``) -> the text status shows; an entry is
            removed when a later write of that file succeeds.
        lost_segments: segments that went away under the writer, one event dict each
            (as in their ``recorder.degraded`` record); kept until a restart.
        thread_errors: failures in other threads (state writer, checkpoint job) as
            ``(what, exception)``, appended there and written as ``recorder.error``
            records by the recording loop (a deque: appends and pops are thread-safe).
    """

    file_errors: dict[str, str] = field(default_factory=dict)
    lost_segments: list[dict[str, Any]] = field(default_factory=list)
    thread_errors: collections.deque[tuple[str, BaseException]] = field(default_factory=collections.deque)
