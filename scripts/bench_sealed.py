"""Benchmark: reading sealed (zstd) segments against the same log plain.

Writes a log of ``--records`` message records (ShareGPT-like sizes are not needed here:
words drawn at random, ~300 bytes a line) in ``--segment-mib`` segments, copies it,
seals the copy's finished segments (:func:`convlog.store.offline.compress`) and times,
on both: find-by-seq (``find_record`` for ``--lookups`` random seqs), ``show``
(the CLI, one session, in-process), the newest 50 records (``tail -n 50``) and a whole
fold (``replay``, no checkpoints). Prints one line per figure.

Run (from the project root)::

    python scripts/bench_sealed.py                 # 400,000 records, 16 MiB segments
    python scripts/bench_sealed.py --records 100000 --segment-mib 4
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

from convlog.cli.commands import main
from convlog.core.record import make_line
from convlog.readers.tail import newest
from convlog.store.offline import compress
from convlog.store.replay import load
from convlog.store.segment import ensure_layout, find_record
from convlog.store.writer import SegmentWriter

WORDS = ["alpha", "beta", "gamma", "delta", "zeta", "tool", "call", "result", "agent", "plan", "error", "retry"]


def build(directory: Path, records: int, segment_bytes: int) -> None:
    """Write ``records`` message records over 200 sessions."""
    ensure_layout(directory)
    rng = random.Random(7)
    writer = SegmentWriter(directory, next_seq=1, segment_bytes=segment_bytes, fsync="never")
    for seq in range(1, records + 1):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60)))
        writer.write(make_line(seq, "2026-11-21T00:00:00.000000Z", "message", "sub", "t", f"s{seq % 200}",
                               {"type": "message", "session_id": f"s{seq % 200}", "content": text}), seq)
    writer.close()


def timed(what: str, fn, repeat: int = 3) -> float:
    """Best of ``repeat`` runs, seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--segment-mib", type=int, default=16)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--level", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sealed-"))
    try:
        plain, sealed = work / "plain", work / "sealed"
        build(plain, args.records, args.segment_mib << 20)
        shutil.copytree(plain, sealed)
        started = time.perf_counter()
        done = compress(sealed, args.level)
        took = time.perf_counter() - started
        print(f"sealed {done.segments} segments: {done.before / 2**20:.1f} MiB -> {done.after / 2**20:.1f} MiB "
              f"(ratio {done.ratio:.1f}x) in {took:.2f} s ({done.before / 2**20 / took:.0f} MiB/s, level {args.level})")
        seqs = random.Random(1).sample(range(1, args.records + 1), args.lookups)
        runner = CliRunner()
        for name, directory in (("plain", plain), ("sealed", sealed)):
            lookup = timed("find", lambda d=directory: [find_record(d, s) for s in seqs])
            show = timed("show", lambda d=directory: runner.invoke(main, ["show", "s17", "--dir", str(d)]))
            tail = timed("tail", lambda d=directory: newest(d, 50))
            fold = timed("fold", lambda d=directory: load(d, use_checkpoints=False), repeat=1)
            print(f"{name:6}: find-by-seq {lookup / args.lookups * 1e6:7.0f} µs/lookup · show {show * 1e3:6.0f} ms · "
                  f"tail -n 50 {tail * 1e3:5.1f} ms · whole fold {fold:5.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
