"""Benchmark: how soon does ``convlog tail -f`` print a record after the recorder writes it?

Set-up (all real processes on free 127.0.0.1 ports, in a fresh directory): a reference
broker (``convlog broker``), a recorder (``convlog record``) with small segments
(``--segment-bytes``, so the log rotates every second or so), and ``convlog tail -f
--json -n 0`` whose stdout is a pipe read by a thread of this script. A publisher in this
script sends native ``message`` events paced at ``RATE`` messages/s (each ~500 bytes,
with a unique ``message_id``), after one warm-up message has gone all the way through.

Two clocks, both ``time.time()`` in this process except the record's own ``ts``:

* **written** (the figure judged): a thread of this script polls the segment files
  every ``POLL_S`` (2 ms) and notes when each record's complete line first appears in
  a segment. Latency = moment the line arrives on tail's stdout - that moment. The poll
  sees a line up to one poll interval after it was written, so this figure can be up
  to ``POLL_S`` too low; it includes watchfiles' notification delay, tail's read,
  parse and print, and the pipe.
* **ts**: latency from the record's ``ts`` (the recorder's receive time, before its
  write) to the same arrival: adds the recorder's own receive-to-write delay.

"After a rotation" = the first benchmark record of each new segment: tail must notice
the new file, finish the old one and open the new one.

Target: median written-to-printed latency < 200 ms, including across a
rotation. ``measure_tail`` is imported by ``bench_read.py``, which prints the PASS/FAIL
line; run alone it prints a table and the same line::

    python3 scripts/bench_tail.py --quick     # ~10 s
    python3 scripts/bench_tail.py             # 30 s of traffic
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from benchmark import free_port, parse_ts, stop_process
from convlog.bus.publisher import NoSubscriberError, Publisher
from convlog.store.segment import list_segments, open_segment, segment_key, segment_size

RATE = 20.0  # messages per second
SECONDS_FULL = 30.0
SECONDS_QUICK = 6.0
SEGMENT_BYTES = 8_000  # about 12 records per segment: a rotation every ~0.6 s
POLL_S = 0.002
DRAIN_S = 30.0


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "convlog", *args]


def _percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1, nearest rank) of ``values``, or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class SegmentWatcher(threading.Thread):
    """Polls the segments every ``POLL_S`` and notes when each complete line appears:
    ``seen[message_id] = (time.time(), segment name, seq)``."""

    def __init__(self, directory: Path) -> None:
        super().__init__(daemon=True)
        self.directory = directory
        self.seen: dict[str, tuple[float, str, int]] = {}
        self.stop = threading.Event()
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, bytes] = {}

    def run(self) -> None:
        """Poll until :attr:`stop` is set."""
        while not self.stop.is_set():
            for _, path in list_segments(self.directory):  # sealed ones by their plain name
                key = segment_key(path)
                offset = self._offsets.get(key, 0)
                try:
                    size = segment_size(path)
                    if size <= offset:
                        continue
                    with open_segment(path) as fh:
                        fh.seek(offset)
                        data = fh.read(size - offset)
                except FileNotFoundError:
                    continue
                now = time.time()
                self._offsets[key] = offset + len(data)
                data = self._partial.pop(key, b"") + data
                *lines, rest = data.split(b"\n")
                if rest:
                    self._partial[key] = rest
                for line in lines:
                    record = orjson.loads(line)
                    data_field = record.get("data")
                    if record.get("kind") == "message" and isinstance(data_field, dict):
                        mid = data_field.get("message_id")
                        if isinstance(mid, str):
                            self.seen.setdefault(mid, (now, key, record["seq"]))
            time.sleep(POLL_S)


class TailReader(threading.Thread):
    """Reads ``convlog tail -f --json`` lines from its stdout, noting when each arrives:
    ``arrived[message_id] = (time.time(), record ts)``."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.arrived: dict[str, tuple[float, str]] = {}
        self.lines = 0
        self.changed = threading.Condition()

    def run(self) -> None:
        """Read lines until tail's stdout closes."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.time()
            record = orjson.loads(line)
            data = record.get("data")
            with self.changed:
                self.lines += 1
                if record.get("kind") == "message" and isinstance(data, dict):
                    self.arrived.setdefault(str(data.get("message_id")), (now, record["ts"]))
                self.changed.notify_all()

    def wait_for(self, mid: str, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for message ``mid`` to be printed; False when
        it was not (or tail exited)."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while mid not in self.arrived:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return False
                self.changed.wait(min(left, 0.5))
        return True


def _event(mid: str, i: int) -> bytes:
    text = f"benchmark message {i}: " + "lorem ipsum dolor sit amet " * 16
    return orjson.dumps({"type": "message", "session_id": "bench", "message_id": mid, "sender": "bench",
                         "content": text})


def measure_tail(workdir: Path, quick: bool) -> dict[str, Any]:
    """Run the benchmark once in ``workdir`` (a fresh log directory is made inside).

    Args:
        workdir: a scratch directory.
        quick: ``SECONDS_QUICK`` of traffic instead of ``SECONDS_FULL``.

    Returns:
        ``{"median_ms", "p95_ms"}`` (written-to-printed latency, milliseconds, all
        benchmark records), ``"rotation_median_ms"``, ``"rotation_p95_ms"`` (only the
        first record of each new segment), ``"ts_median_ms"``, ``"ts_p95_ms"`` (from the
        record's ``ts``), ``"samples"`` (records measured), ``"rotations"`` (segments
        started during the traffic), ``"missing"`` (records tail never printed),
        ``"rate"``, ``"seconds"``, ``"poll_ms"``. Latencies are None without samples.

    Raises:
        RuntimeError: when a process exits early or no subscription reaches the publisher.
    """
    seconds = SECONDS_QUICK if quick else SECONDS_FULL
    directory = Path(tempfile.mkdtemp(prefix="bench-tail-", dir=workdir)) / "log"
    xsub, xpub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    logs = directory.parent
    procs: list[subprocess.Popen[bytes]] = []
    watcher = SegmentWatcher(directory)
    pub: Publisher | None = None
    tail: subprocess.Popen[bytes] | None = None
    try:
        with (logs / "broker.log").open("wb") as fh:
            procs.append(subprocess.Popen(_cmd("broker", "--xsub", xsub, "--xpub", xpub), stdout=fh, stderr=fh))
        with (logs / "recorder.log").open("wb") as fh:
            procs.append(subprocess.Popen(
                _cmd("record", "--dir", str(directory), "--sub", xpub, "--segment-bytes", str(SEGMENT_BYTES)),
                stdout=fh, stderr=fh))
        pub = Publisher(xsub, heartbeat_s=None)
        try:
            pub.wait_for_subscriber(30.0)
        except NoSubscriberError:
            raise RuntimeError(f"the recorder did not subscribe: {(logs / 'recorder.log').read_text()}") from None
        with (logs / "tail.log").open("wb") as fh:
            tail = subprocess.Popen(_cmd("tail", "-f", "--json", "-n", "0", "--dir", str(directory)),
                                    stdout=subprocess.PIPE, stderr=fh)
        reader = TailReader(tail)
        reader.start()
        watcher.start()
        # Warm-up: one message all the way through, so tail is watching before we measure.
        for attempt in range(100):
            pub.send(b"bench", _event(f"warmup-{attempt}", -1))
            if reader.wait_for(f"warmup-{attempt}", 0.3):
                break
        else:
            raise RuntimeError(f"tail printed nothing: {(logs / 'tail.log').read_text()}")
        count = int(RATE * seconds)
        ids = [f"bench-{i}" for i in range(count)]
        segments_before = {segment_key(path) for _, path in list_segments(directory)}
        started = time.monotonic()
        for i, mid in enumerate(ids):
            delay = started + i / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pub.send(b"bench", _event(mid, i))
        for mid in ids:
            if not reader.wait_for(mid, max(0.1, DRAIN_S - (time.monotonic() - started - seconds))):
                break
    finally:
        watcher.stop.set()
        if pub is not None:
            pub.close(0)
        if tail is not None:
            stop_process(tail, sig=2)  # SIGINT, as Ctrl-C
        for proc in reversed(procs):
            stop_process(proc)
    watcher.join(5)

    written: list[float] = []
    from_ts: list[float] = []
    after_rotation: list[float] = []
    first_in_segment: dict[str, tuple[int, str]] = {}
    for mid in ids:
        if mid in watcher.seen:
            _, segment, seq = watcher.seen[mid]
            earlier = first_in_segment.get(segment)
            if segment not in segments_before and (earlier is None or seq < earlier[0]):
                first_in_segment[segment] = (seq, mid)
    firsts = {mid for _, mid in first_in_segment.values()}
    for mid in ids:
        if mid not in reader.arrived or mid not in watcher.seen:
            continue
        printed, ts = reader.arrived[mid]
        latency = (printed - watcher.seen[mid][0]) * 1000
        written.append(latency)
        from_ts.append((printed - parse_ts(ts)) * 1000)
        if mid in firsts:
            after_rotation.append(latency)
    return {
        "median_ms": statistics.median(written) if written else None,
        "p95_ms": _percentile(written, 0.95),
        "rotation_median_ms": statistics.median(after_rotation) if after_rotation else None,
        "rotation_p95_ms": _percentile(after_rotation, 0.95),
        "ts_median_ms": statistics.median(from_ts) if from_ts else None,
        "ts_p95_ms": _percentile(from_ts, 0.95),
        "samples": len(written),
        "rotations": len(first_in_segment),
        "missing": sum(1 for mid in ids if mid not in reader.arrived),
        "rate": RATE,
        "seconds": seconds,
        "poll_ms": POLL_S * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    """Run :func:`measure_tail` and print its figures as a table with the target line."""
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{SECONDS_QUICK:.0f} s of traffic instead of "
                                                            f"{SECONDS_FULL:.0f} s")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-tail-") as tmp:
        result = measure_tail(Path(tmp), args.quick)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}"

    table = Table(title=f"convlog tail -f: latency, {result['rate']:.0f} msg/s for {result['seconds']:.0f} s",
                  title_justify="left")
    for column in ("records", "samples", "median ms", "p95 ms"):
        table.add_column(column, justify="left" if column == "records" else "right")
    table.add_row("all (written -> printed)", str(result["samples"]), ms(result["median_ms"]), ms(result["p95_ms"]))
    table.add_row("after a rotation (written -> printed)", str(result["rotations"]), ms(result["rotation_median_ms"]),
                  ms(result["rotation_p95_ms"]))
    table.add_row("all (ts -> printed)", str(result["samples"]), ms(result["ts_median_ms"]), ms(result["ts_p95_ms"]))
    console.print(table)
    console.print(f"records never printed: {result['missing']}; write times seen by a {result['poll_ms']:.0f} ms poll")
    median = result["median_ms"]
    rotation = result["rotation_median_ms"]
    ok = median is not None and rotation is not None and median < 200 and rotation < 200 and not result["missing"]
    mark = "[green]PASS[/green]" if ok else "[red]FAIL[/red]"
    console.print(f"  {mark} tail -f median < 200 ms (all {ms(median)} ms, after rotation {ms(rotation)} ms)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
