"""Benchmark: the recorder's per-message work (its hot path) against an earlier revision.

What one message costs the recording thread between receiving its frames and writing
its line: the receive time (``Clock.now``), :meth:`convlog.core.ingest.Ingest.line` (decode,
classify, stamp check, enrichment, the depth pre-check, one ``orjson.dumps``) and the
clock-step check of the receive loop. Sockets and disk are left out, so the figure is
steady enough to see a fraction of a microsecond, which ``bench_record.py``'s
end-to-end CPU figures (±10-15 % on a shared machine) cannot.

The same messages (ShareGPT conversations as native ``message`` events, stamped like a
:class:`convlog.bus.publisher.Publisher`'s, ~1 KB, as ``bench_record.py`` sends them) go
through the current source tree and through ``--baseline REV`` (exported with
``git archive`` into a temporary directory), each in its own interpreter, alternating
``--rounds`` times; the figure of each side is the least of its rounds (the run least
disturbed by other work on the machine). Printed: µs per message of both, the
difference and the ratio, and PASS/FAIL against the target (current - baseline <=
``--budget-us``, 0.5 µs by default). A missed target does not change the exit
code.

Run (from the project root, with the ``demo`` extra installed)::

    python scripts/bench_ingest.py --baseline 52aa16e
    python scripts/bench_ingest.py --baseline HEAD~3 --messages 50000 --rounds 7
    python scripts/bench_ingest.py --redact --budget-us 2   # redaction on vs off, this tree
    python scripts/bench_ingest.py --chain --budget-us 8    # hash chain on vs off, this tree

With ``--redact`` both sides are this tree, "baseline" without a redactor and
"current" with the built-in rules (:mod:`convlog.core.redact`), so the difference is
the per-message cost of redaction. With ``--chain``, likewise, "current" also links
each line into the hash chain (:class:`convlog.core.chain.Chain`, the segment writer's
extra work per record), so the difference is the per-message cost of the chain.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Run inside each interpreter: builds the messages, times the hot path, prints JSON.
_WORKER = r"""
import json, sys, time
import orjson
try:  # the package layout (core/store/cli)
    from convlog.core.ingest import Ingest
    from convlog.store.clock import Clock
    from convlog.core.gaps import stamp_payload
    from convlog.cli.sharegpt import conversations, native_events
except ImportError:  # a baseline from before it: one flat package
    from convlog.ingest import Ingest
    from convlog.record import Clock
    from convlog.gaps import stamp_payload
    from convlog.sharegpt import conversations, native_events

count = int(sys.argv[1])
redact = "redact" in sys.argv[2:]
link = None
if "chain" in sys.argv[2:]:  # the segment writer's linking of each line (convlog.core.chain)
    from convlog.core.chain import Chain
    link = Chain().link_lines
events = []
for conv in conversations():
    events.extend(native_events(conv))
    if len(events) >= min(count, 50_000):
        break
messages = []
for i in range(count):
    event = dict(events[i % len(events)])
    event["message_id"] = f"bench-{i:07d}"
    payload = stamp_payload(orjson.dumps(event), "bench", i + 1)
    messages.append([event["session_id"].encode(), payload])
if redact:  # the recorder's default: the built-in rules of convlog.core.redact
    from convlog.core.redact import Redactor
    ingest = Ingest(redactor=Redactor())
else:
    ingest = Ingest()
clock = Clock()
line, stamp = ingest.line, clock.now
started = time.perf_counter()
for seq, frames in enumerate(messages, 1):
    ts = stamp()
    data = line(frames, seq, ts, "sub")
    if link is not None:
        data = link(data)
    if getattr(clock, "step_ns", 0):  # the receive loop's clock-step check (absent in older versions)
        pass
elapsed = time.perf_counter() - started
print(json.dumps({"us_per_message": elapsed / count * 1e6,
                  "bytes": sum(len(p) for _, p in messages) / count,
                  "source": __import__("convlog").__file__}))
"""


def export_revision(rev: str, into: Path) -> Path:
    """Extract ``src/`` of git revision ``rev`` into ``into``; return its ``src`` path.

    Raises:
        subprocess.CalledProcessError: when ``rev`` is not a revision of this repository.
    """
    archive = into / "src.tar"
    with archive.open("wb") as fh:
        subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "src"], stdout=fh, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def measure(src: Path, count: int, modes: tuple[str, ...] = ()) -> dict:
    """One timed pass of ``count`` messages through the hot path of the code in ``src``
    (``modes``: ``"redact"`` with the built-in redaction rules, ``"chain"`` with each
    line linked into the hash chain as the segment writer does)."""
    argv = [sys.executable, "-c", _WORKER, str(count), *modes]
    result = subprocess.run(argv, capture_output=True, text=True,
                            check=True, env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    return json.loads(result.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git revision to compare with (a commit before a change)")
    parser.add_argument("--redact", action="store_true",
                        help="instead of a revision, compare this tree with redaction on (the recorder's default) "
                             "against off (--no-redact)")
    parser.add_argument("--chain", action="store_true",
                        help="instead of a revision, compare this tree with each line linked into the hash chain "
                             "(the recorder's default) against without (--no-chain)")
    parser.add_argument("--messages", type=int, default=30_000, help="messages per timed pass (default 30,000)")
    parser.add_argument("--rounds", type=int, default=5, help="timed passes per side, alternating (default 5)")
    parser.add_argument("--budget-us", type=float, default=0.5,
                        help="allowed extra µs per message of the current tree (default 0.5)")
    parser.add_argument("--json", dest="json_path", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if sum((args.baseline is not None, args.redact, args.chain)) != 1:
        parser.error("give --baseline REV, --redact or --chain (one of them)")
    if args.redact:
        args.baseline = "this tree, redaction off"
    if args.chain:
        args.baseline = "this tree, no chain"
    same_tree = args.redact or args.chain
    modes = ("redact",) if args.redact else ("chain",) if args.chain else ()
    with tempfile.TemporaryDirectory(prefix="convlog-bench-ingest-") as tmp:
        sides = ({"baseline": ROOT / "src", "current": ROOT / "src"} if same_tree
                 else {"baseline": export_revision(args.baseline, Path(tmp)), "current": ROOT / "src"})
        runs: dict[str, list[float]] = {name: [] for name in sides}
        info: dict[str, dict] = {}
        for round_ in range(args.rounds):
            for name, src in sides.items():
                figures = measure(src, args.messages, modes if name == "current" else ())
                runs[name].append(figures["us_per_message"])
                info[name] = figures
                print(f"round {round_ + 1}: {name:8} {figures['us_per_message']:.3f} µs/message", flush=True)
                time.sleep(0.2)
    best = {name: min(values) for name, values in runs.items()}
    extra = best["current"] - best["baseline"]
    verdict = "PASS" if extra <= args.budget_us else "FAIL"
    print(f"messages of {info['current']['bytes']:.0f} bytes on average, {args.messages:,} per pass, "
          f"least of {args.rounds} passes")
    print(f"baseline ({args.baseline}): {best['baseline']:.3f} µs/message")
    print(f"current tree:        {best['current']:.3f} µs/message")
    print(f"current - baseline:  {extra:+.3f} µs/message (ratio {best['current'] / best['baseline']:.3f}); "
          f"target <= +{args.budget_us} µs: {verdict}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"baseline": args.baseline, "runs": runs, "best": best,
                                                    "extra_us": extra, "target": verdict}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
