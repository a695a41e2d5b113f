"""Building a big log quickly for ``bench_storage.py``'s scale section: records written
straight into segments with the record format functions (no bus, no recorder), the
finished segments sealed, and checkpoints written by the recorder's
:class:`convlog.store.checkpoint.Checkpointer` along the way.

The log looks like a busy bus: ``message`` records of ``SESSIONS`` sessions, ``ACTIVE``
of them interleaved at any time, stamped by one publisher (``bench``) with a
heartbeat every 1,000 records, a streamed message (two deltas and an end) every 200,
an ``llm.request`` every 97, a ``recorder.gap`` every 250,000 (3 stamps skipped) and
a ``session.delete`` every 500,000; ``recorder.start`` first and ``recorder.stop``
last, with a clean ``recovery/state.json``. Lines are about 450 bytes.

Run alone (from the project root) to build one and keep it::

    python scripts/storage_scale.py /tmp/scale-log --records 10000000
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convlog.core.record import make_line
from convlog.store.checkpoint import Checkpointer
from convlog.store.seal import compress_log
from convlog.store.segment import ensure_layout, list_segments
from convlog.store.writer import SegmentWriter

WORDS = ["alpha", "beta", "gamma", "delta", "zeta", "tool", "call", "result", "agent", "plan", "error", "retry",
         "deploy", "config", "the", "and", "with", "from", "kubernetes", "python", "database", "quantum"]
SESSIONS = 20_000
ACTIVE = 64
PUBLISHER = "bench"
#: Records written per ``write(2)``.
BATCH = 2_000
#: A fake payload digest (the recorder writes the payload's SHA-256; its cost is not the subject here).
SHA = "0" * 64


def _ts(seq: int) -> str:
    """A receive time 100 µs after the previous record's (monotonic in seq)."""
    micros = seq * 100
    seconds, micros = divmod(micros, 1_000_000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"2026-11-{1 + days:02d}T{hours:02d}:{minutes:02d}:{seconds:02d}.{micros:06d}Z"


class _Records:
    """The records of the synthetic bus, one line at a time."""

    def __init__(self, seed: int = 10) -> None:
        rng = random.Random(seed)
        self.texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(4096)]
        self.stamp = 0

    def _stamp(self) -> dict[str, Any]:
        self.stamp += 1
        return {"publisher": PUBLISHER, "seq": self.stamp}

    def line(self, seq: int) -> bytes:
        """The line of record ``seq`` (2 and up; 1 is ``recorder.start``)."""
        ts = _ts(seq)
        session = f"bench-{((seq // 2000) * ACTIVE + seq % ACTIVE) % SESSIONS}"
        if seq % 1000 == 0:
            data = {"convlog": {"publisher": PUBLISHER, "seq": self.stamp}, "type": "publisher.heartbeat"}
            return make_line(seq, ts, "publisher.heartbeat", "sub", PUBLISHER, None, data, {"shape": "native"})
        if seq % 250_000 == 1:
            first = self.stamp + 1
            self.stamp += 3
            return make_line(seq, ts, "recorder.gap", "recorder", None, None,
                             {"publisher": PUBLISHER, "first": first, "last": first + 2, "missing": 3})
        if seq % 500_000 == 2:
            return make_line(seq, ts, "session.delete", "control", None, session, {"type": "session.delete"})
        text = self.texts[seq % len(self.texts)]
        if seq % 97 == 0:
            data = {"convlog": self._stamp(), "type": "llm.request", "session_id": session, "model": "m1",
                    "input_tokens": 100 + seq % 900, "output_tokens": 50 + seq % 400, "cost_usd": 0.001}
            return make_line(seq, ts, "llm.request", "sub", session, session, data, {"shape": "native"})
        phase = seq % 200
        if phase in (10, 11, 12):  # a streamed message of one session: two deltas, then its end
            session = f"bench-{(((seq - phase) // 2000) * ACTIVE + (seq - phase) % ACTIVE) % SESSIONS}"
            kind = "message.end" if phase == 12 else "message.delta"
            mid = f"stream-{seq - phase}"
            data = {"convlog": self._stamp(), "type": kind, "session_id": session, "message_id": mid,
                    "sender": "agent", "role": "assistant", ("content" if phase == 12 else "delta"): text}
            meta = {"shape": "native", "message_id": mid, "sender": "agent", "role": "assistant"}
            return make_line(seq, ts, kind, "sub", session, session, data, meta)
        sender, role = ("user", "user") if seq % 2 else ("agent", "assistant")
        mid = f"m{seq}"
        data = {"convlog": self._stamp(), "type": "message", "session_id": session, "message_id": mid,
                "sender": sender, "role": role, "content": text}
        meta = {"shape": "native", "message_id": mid, "sender": sender, "role": role, "bytes": 60 + len(text),
                "chars": 60 + len(text), "sha256": SHA}
        return make_line(seq, ts, "message", "sub", session, session, data, meta)


def build_scale_log(directory: Path, records: int, segment_bytes: int = 64 << 20, checkpoints: int = 10,
                    tail: int = 20_000, level: int = 3, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Write a log of ``records`` records (see the module doc) into a new ``directory``:
    ``checkpoints`` checkpoints spread over it, the newest ``tail`` records before the
    end, and every finished segment sealed at zstd ``level``.

    Returns:
        ``{"records", "segments", "bytes" (the lines), "sealed_bytes", "build_s",
        "checkpoint_s", "seal_s"}`` (seconds of wall time).
    """
    ensure_layout(directory)
    started = time.perf_counter()
    writer = SegmentWriter(directory, next_seq=1, segment_bytes=segment_bytes, fsync="never")
    writer.write(make_line(1, _ts(1), "recorder.start", "recorder", None, None, {"pid": 1}), 1)
    source = _Records()
    marks = {max(2, (records - tail) * (k + 1) // checkpoints) for k in range(checkpoints)}
    checkpointer: Checkpointer | None = None
    checkpoint_s = 0.0
    batch: list[bytes] = []
    for seq in range(2, records):
        batch.append(source.line(seq))
        if len(batch) >= BATCH or seq in marks:
            writer.write(b"".join(batch), seq)
            batch.clear()
        if seq in marks:
            took = time.perf_counter()
            checkpointer = checkpointer or Checkpointer(directory, keep=checkpoints + 2)
            checkpointer.checkpoint()
            checkpoint_s += time.perf_counter() - took
            say(f"  {seq:,} records, checkpoint written ({time.perf_counter() - started:,.0f} s)")
    batch.append(make_line(records, _ts(records), "recorder.stop", "recorder", None, None, {"reason": "bench"}))
    writer.write(b"".join(batch), records)
    writer.sync()
    writer.save_state(True, _ts(records))
    writer.close()
    plain = sum(path.stat().st_size for _, path in list_segments(directory))
    took = time.perf_counter()
    sealed = compress_log(directory, level)
    seal_s = time.perf_counter() - took
    return {"records": records, "segments": len(list_segments(directory)), "bytes": plain,
            "sealed_bytes": plain - sealed.before + sealed.after, "build_s": time.perf_counter() - started,
            "checkpoint_s": checkpoint_s, "seal_s": seal_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--checkpoints", type=int, default=10)
    args = parser.parse_args()
    print(build_scale_log(args.directory, args.records, checkpoints=args.checkpoints))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
