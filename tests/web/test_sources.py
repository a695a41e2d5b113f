"""The web sources' fold cache on a real log written by the segment writer: a slow
whole-log fold is answered stale while it is made again in the background, and the new
one answers once made; a fast one is made again at once."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from convlog.core.ingest import Ingest
from convlog.store.segment import ensure_layout
from convlog.store.writer import SegmentWriter
from convlog.web.sources import ReplayCache


def write_messages(writer: SegmentWriter, first: int, count: int) -> None:
    ingest = Ingest()
    lines = []
    for seq in range(first, first + count):
        event = {"type": "message", "session_id": f"s{seq % 7}", "message_id": f"m{seq}", "sender": "a",
                 "content": f"message {seq}"}
        lines.append(ingest.line([b"t", orjson.dumps(event)], seq, f"2026-12-06T08:00:{seq % 60:02d}.000000Z", "sub"))
    writer.write(b"".join(lines), first + count - 1)


def test_a_slow_fold_is_answered_stale_and_made_again_in_the_background(tmp_path: Path) -> None:
    ensure_layout(tmp_path)
    writer = SegmentWriter(tmp_path, 1, fsync="never")
    write_messages(writer, 1, 50)
    fast, slow = ReplayCache(tmp_path), ReplayCache(tmp_path)
    slow.SLOW_FOLD_S = 0.0  # every fold counts as slow: the background path
    assert fast.get().state.last_seq == slow.get().state.last_seq == 50
    write_messages(writer, 51, 10)
    assert fast.get().state.last_seq == 60  # folded again at once
    assert slow.get().state.last_seq == 50  # the last fold, while the next is made
    deadline = time.monotonic() + 10
    while slow.get().state.last_seq != 60:
        assert time.monotonic() < deadline, "the background fold never answered"
        time.sleep(0.01)
    assert slow.get(upto_seq=55).state.last_seq == 55  # an as-of view is folded at once
    writer.close()
