"""Benchmark: the storage side. What do sealed (zstd) segments cost and save, and do
the commands that summarise the whole log stay fast at 10M records?

Sections (``--only`` picks some, comma-separated; all by default):

``ratio``
    The recorded ShareGPT log (all 17,671 conversations, 129k messages, published by
    ``convlog publish`` through ``convlog broker`` into ``convlog record`` with its
    default settings: 64 MiB segments sealed by the recorder, zstd level 3, 1 MiB
    frames; the recording of ``scripts/bench_read.py``, imported from it). Its sealed
    segments' compression ratio against a plain ``zstd -3`` (one frame, the ``zstd``
    command, else pyzstd) of the same plain bytes in the same run. Target: >= 0.9 of it.
``levels``
    The first ``--level-sample-mib`` MiB of that log sealed in memory (1 MiB frames) at
    each of ``--levels``: ratio, plain ``zstd -L`` ratio, and CPU seconds per GiB to
    seal and to decompress (``time.process_time``, one thread), so that the default
    level is chosen by measurement.
``frames``
    The same log sealed with frames of ``--frame-sizes``: ratio, and find-by-seq
    (:func:`convlog.store.segment.find_record`) for ``--lookups`` random seqs of the
    sealed segments, cold (the per-process frame cache emptied before each lookup: a
    new ``convlog`` process) and warm (random order, cache kept), against the same
    lookups on the plain log.
``cpu``
    The recorder's CPU per message and its rate with ``compress = "none"`` and
    ``"zstd"`` at each of ``--cpu-levels`` (``CONVLOG_COMPRESS``,
    ``CONVLOG_COMPRESS_LEVEL``), the same recording ``--rounds`` times each,
    interleaved; CPU from its first record until every finished segment is sealed
    (the sealing thread counted), the least over the rounds (interference only adds
    CPU). Target: zstd at the default level <= 1.10 x none. The first recording at the
    default level is the log of the other sections.
``find``
    Sealed against plain, on the ShareGPT log (each conversation's messages in a row)
    and on a synthetic log of ``--synthetic-records`` records of 200 interleaved
    sessions in 16 MiB segments (what the former ``bench_sealed.py`` measured): find-by-seq
    cold and warm, ``show`` of one session (in process, best of 3), ``tail -n 50`` and
    a whole fold. Target: sealed <= 2 x plain.
``scale``
    A log of ``--scale-records`` records (10M; ``scripts/storage_scale.py``: written
    straight into 64 MiB segments, sealed, 10 checkpoints by the recorder's
    Checkpointer, the newest 20,000 records before the end; ``--scale-log`` keeps or
    reuses it) and one of a tenth of that: ``convlog info``, ``sessions``, ``replay``,
    ``verify`` and ``reindex`` as processes: wall time, CPU and peak RSS
    (``wait4``). Targets: info and sessions < 2 s at 10M; verify's and reindex's peak
    RSS at 10M <= 1.5 x at a tenth (they stream: memory does not grow with the log).
``retention``
    Runs when ``convlog prune --help`` works, else says it is skipped. ``replay``
    from a base: a synthetic log pruned with ``convlog prune --dir DIR --max-bytes
    SIZE`` (half its size) and its checkpoints removed must fold (from
    ``DIR/base.json``) to the state the whole log folded to, plus the prune's own
    ``recorder.pruned`` record. Disk: a
    recorder with ``[retention] max_bytes`` and ``action = "delete"`` records 5 x that
    bound of ShareGPT messages; ``events/`` sampled every 20 ms must stay under it.

Only ratios measured in the same run are compared (the machines are shared and
noisy). Each figure is printed with its target and PASS or MISS; a miss does not
change the exit code (0 unless something crashed).

Run (from the project root, with the ``demo`` and ``test`` extras installed)::

    python scripts/bench_storage.py --quick                  # small logs, ~3 minutes
    python scripts/bench_storage.py --only ratio,levels,frames,find,cpu   # ~8 minutes
    python scripts/bench_storage.py --only scale --scale-log /tmp/scale10m   # builds it once (~4 min)
    python scripts/bench_storage.py --only scale --scale-log /tmp/scale10m --no-reindex
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyzstd
from click.testing import CliRunner
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench_read import record_log, write_events
from benchmark import free_port, stop_process, vm_hwm_mb
from convlog.cli.commands import main as cli
from convlog.core.record import make_line
from convlog.readers.tail import newest
from convlog.recorder.config import Config
from convlog.store.replay import load
from convlog.store.seal import FRAME_BYTES, seal_segment, sealable
from convlog.store.segment import (
    EVENTS,
    clear_caches,
    ensure_layout,
    find_record,
    is_sealed,
    list_segments,
    open_segment,
    segment_key,
)
from convlog.store.writer import SegmentWriter
from storage_scale import build_scale_log

SECTIONS = ("ratio", "levels", "frames", "cpu", "find", "scale", "retention")
#: The recorder's default zstd level (``compress_level``).
DEFAULT_LEVEL = Config().compress_level
QUICK_CONVERSATIONS = 2_000
RATIO_TARGET = 0.9
CPU_TARGET = 1.10
READ_TARGET = 2.0
SUMMARY_TARGET_S = 2.0
RSS_TARGET = 1.5
ZSTD = shutil.which("zstd")


# -- results ----------------------------------------------------------------------------------


@dataclass
class Report:
    """Figures and targets of one run; printed as it goes, written with ``--json``."""

    console: Console
    figures: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def target(self, name: str, ok: bool | None, detail: str) -> None:
        """One target: PASS, MISS, or SKIP when it could not be measured (``ok`` None)."""
        self.targets.append({"target": name, "pass": ok, "detail": detail})
        mark = {True: "[green]PASS[/green]", False: "[red]MISS[/red]", None: "[yellow]SKIP[/yellow]"}[ok]
        self.console.print(f"{mark} {escape(name)}: {escape(detail)}", highlight=False)

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        table = Table(*columns, title=title, title_justify="left", pad_edge=False)
        for row in rows:
            table.add_row(*row)
        self.console.print(table)


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """The least wall time of ``repeat`` calls, seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def measured(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a command to its end: wall seconds, CPU seconds (user + system, ``wait4``),
    peak RSS in MiB (``VmHWM``, read every 10 ms while it runs: the rusage of a child
    also counts the parent's pages it was forked with), exit code and its stderr's tail."""
    started = time.perf_counter()
    peak = 0.0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        while True:
            hwm = vm_hwm_mb(proc.pid)
            peak = max(peak, hwm or 0.0)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.01)
        wall = time.perf_counter() - started
        err.seek(0)
        tail = err.read()[-400:].decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": peak,
            "exit": proc.returncode, "stderr": tail.strip()}


def seal_bytes(data: bytes, level: int, frame_bytes: int = FRAME_BYTES) -> bytes:
    """``data`` sealed in memory as :func:`convlog.store.seal.seal_segment` seals a file."""
    out = io.BytesIO()
    with pyzstd.SeekableZstdFile(out, "w", level_or_option=level, max_frame_content_size=frame_bytes) as dst:
        for start in range(0, len(data), 1 << 20):
            dst.write(data[start:start + (1 << 20)])
    return out.getvalue()


def plain_zstd_size(path: Path, level: int) -> int:
    """Bytes of a plain ``zstd -LEVEL`` of a file (one thread, one frame): the ``zstd``
    command when installed, else pyzstd."""
    if ZSTD is not None:
        done = subprocess.run([ZSTD, f"-{level}", "-T1", "-q", "-c", str(path)], capture_output=True, check=True)
        return len(done.stdout)
    return len(pyzstd.compress(path.read_bytes(), level))


def plain_copy(directory: Path, target: Path) -> Path:
    """A copy of a log with its sealed segments decompressed back to plain files."""
    shutil.copytree(directory, target, ignore=shutil.ignore_patterns("recorder.lock", "index"))
    for path in sorted((target / EVENTS).iterdir()):
        if is_sealed(path):
            with open_segment(path) as src, path.with_name(segment_key(path)).open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            path.unlink()
    return target


# -- the recorded ShareGPT log ---------------------------------------------------------------


class Corpus:
    """The ShareGPT conversations recorded through a broker (``bench_read.record_log``),
    once per setting asked for; the first recording with sealing on is the log the
    other sections read."""

    def __init__(self, args: argparse.Namespace, work: Path, report: Report) -> None:
        self.args, self.work, self.report = args, work, report
        self.log: Path | None = args.sharegpt_log
        self._events: tuple[Path, int] | None = None
        self._plain: Path | None = None

    def events(self) -> tuple[Path, int]:
        if self._events is None:
            path = self.work / "events.jsonl"
            convs, messages = write_events(path, self.args.conversations)
            self.report.say(f"{convs:,} ShareGPT conversations, {messages:,} messages")
            self._events = (path, messages)
        return self._events

    def record(self, name: str, compress: str, level: int = DEFAULT_LEVEL) -> dict[str, Any]:
        """Record the conversations with ``compress`` (``none``/``zstd``) at zstd
        ``level`` into a new log."""
        events, messages = self.events()
        directory = self.work / name
        env = {**os.environ, "CONVLOG_COMPRESS": compress, "CONVLOG_COMPRESS_LEVEL": str(level),
               "CONVLOG_SEGMENT_BYTES": str(self.args.segment_mib << 20)}

        def sealed() -> None:  # the seals of the segments rotated away from count too
            deadline = time.monotonic() + 300
            while compress == "zstd" and sealable(directory) and time.monotonic() < deadline:
                time.sleep(0.05)

        result = record_log(self.work, directory, events, messages, self.args.rate, lambda _text: None, env=env,
                            before_stop=sealed)
        result["directory"] = directory
        if compress == "zstd" and level == DEFAULT_LEVEL and self.log is None:
            self.log = directory
        return result

    def sealed_log(self) -> Path:
        if self.log is None:
            self.report.say(f"recording the ShareGPT log at {self.args.rate:,.0f} messages/s …")
            self.record("corpus", "zstd")
        assert self.log is not None
        return self.log

    def plain_log(self) -> Path:
        if self._plain is None:
            self._plain = plain_copy(self.sealed_log(), self.work / "corpus-plain")
        return self._plain


# -- sections -----------------------------------------------------------------------------------


def section_cpu(args: argparse.Namespace, corpus: Corpus, report: Report) -> None:
    levels = [int(v) for v in args.cpu_levels.split(",")]
    modes = [("none", DEFAULT_LEVEL)] + [("zstd", level) for level in levels]
    report.say(f"[bold]cpu[/bold]: recording with compress none and zstd at levels {levels}, "
               f"{args.rounds} rounds each …")
    runs: dict[str, list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        for compress, level in modes:
            name = compress if compress == "none" else f"zstd -{level}"
            result = corpus.record(f"cpu-{compress}-{level}-{round_}", compress, level)
            runs.setdefault(name, []).append(result)
            report.say(f"  {name:8}: {result['recorded']:,} of {result['sent']:,} recorded in "
                       f"{result['record_s']:.1f} s, recorder CPU {result['recorder_cpu_s']:.2f} s")
            if result["directory"] != corpus.log:
                shutil.rmtree(result["directory"], ignore_errors=True)
    rows, cpu = [], {}
    for name, results in runs.items():
        per = [r["recorder_cpu_s"] / r["recorded"] * 100_000 for r in results if r["recorder_cpu_s"] and r["recorded"]]
        cpu[name] = min(per) if per else None
        rate = statistics.median(r["recorded"] / r["record_s"] for r in results)
        lost = max(r["lost"] for r in results)
        versus = f"{cpu[name] / cpu['none']:.2f} x" if cpu[name] and cpu.get("none") else "-"
        rows.append([name, f"{rate:,.0f}", f"{lost:,}", f"{cpu[name]:.2f}" if cpu[name] else "-", versus,
                     ", ".join(f"{p:.2f}" for p in per)])
    report.table("recording the ShareGPT log (CPU: from the first record until every rotated segment is sealed)",
                 ["compress", "msg/s (median)", "lost (max)", "CPU s / 100k msgs (least)", "vs none", "every round"],
                 rows)
    report.figures["cpu"] = {"runs": {m: [{k: v for k, v in r.items() if k != "directory"} for r in rs]
                                      for m, rs in runs.items()}, "cpu_per_100k": cpu}
    default = f"zstd -{DEFAULT_LEVEL}"
    if cpu.get("none") and cpu.get(default):
        ratio = cpu[default] / cpu["none"]
        report.target(f"recorder CPU per message, {default} (the default) <= {CPU_TARGET:.2f} x none",
                      ratio <= CPU_TARGET, f"{ratio:.2f} x ({cpu[default]:.2f} vs {cpu['none']:.2f} s per 100k "
                      "messages)")


def section_ratio(args: argparse.Namespace, corpus: Corpus, report: Report) -> None:
    log = corpus.sealed_log()
    sealed = [path for _, path in list_segments(log) if is_sealed(path)]
    report.say(f"[bold]ratio[/bold]: {len(sealed)} sealed segments of {log}, against plain zstd -3 of the same bytes …")
    if not sealed:
        report.target(f"sealed ratio >= {RATIO_TARGET} x plain zstd -3", None, "no sealed segment (log too small)")
        return
    plain = corpus.plain_log()
    before = after = zstd3 = 0
    for path in sealed:
        original = plain / EVENTS / segment_key(path)
        before += original.stat().st_size
        after += path.stat().st_size
        zstd3 += plain_zstd_size(original, 3)
    ratio, reference = before / after, before / zstd3
    report.figures["ratio"] = {"segments": len(sealed), "plain_bytes": before, "sealed_bytes": after,
                               "zstd3_bytes": zstd3, "sealed_ratio": ratio, "zstd3_ratio": reference,
                               "zstd": ZSTD or "pyzstd"}
    report.say(f"  {before / 2**20:,.1f} MiB plain -> sealed {after / 2**20:,.1f} MiB ({ratio:.2f} x); "
               f"plain zstd -3 ({'zstd command' if ZSTD else 'pyzstd'}) {zstd3 / 2**20:,.1f} MiB ({reference:.2f} x)")
    report.target(f"sealed ratio >= {RATIO_TARGET} x plain zstd -3", ratio / reference >= RATIO_TARGET,
                  f"{ratio / reference:.3f} ({ratio:.2f} x vs {reference:.2f} x)")


def _sample(corpus: Corpus, mib: int) -> bytes:
    """The first ``mib`` MiB of the recorded log's lines."""
    out = bytearray()
    for _, path in list_segments(corpus.plain_log()):
        out += path.read_bytes()[: (mib << 20) - len(out)]
        if len(out) >= mib << 20:
            break
    return bytes(out)


def section_levels(args: argparse.Namespace, corpus: Corpus, report: Report) -> None:
    data = _sample(corpus, args.level_sample_mib)
    levels = [int(v) for v in args.levels.split(",")]
    report.say(f"[bold]levels[/bold]: {len(data) / 2**20:.0f} MiB of the recorded log sealed at levels {levels} …")
    sample = Path(tempfile.mkstemp(prefix="bench-storage-sample-")[1])
    sample.write_bytes(data)
    rows, figures = [], []
    try:
        for level in levels:
            started = time.process_time()
            sealed = seal_bytes(data, level)
            seal_cpu = time.process_time() - started
            started = time.process_time()
            with pyzstd.SeekableZstdFile(io.BytesIO(sealed), "r") as fh:
                while fh.read(1 << 20):
                    pass
            read_cpu = time.process_time() - started
            plain = plain_zstd_size(sample, level)
            gib = len(data) / 2**30
            figures.append({"level": level, "ratio": len(data) / len(sealed), "plain_ratio": len(data) / plain,
                            "seal_cpu_s_per_gib": seal_cpu / gib, "read_cpu_s_per_gib": read_cpu / gib})
            f = figures[-1]
            rows.append([str(level), f"{f['ratio']:.2f}", f"{f['plain_ratio']:.2f}",
                         f"{f['ratio'] / f['plain_ratio']:.3f}", f"{f['seal_cpu_s_per_gib']:.1f}",
                         f"{f['read_cpu_s_per_gib']:.1f}"])
    finally:
        sample.unlink()
    report.table("zstd level (1 MiB frames): ratio and CPU", ["level", "sealed ratio", "plain zstd -L ratio",
                 "sealed / plain", "seal CPU s/GiB", "read CPU s/GiB"], rows)
    report.figures["levels"] = figures


def _lookups(directory: Path, seqs: list[int], cold: bool) -> float:
    """Mean seconds of one ``find_record`` over ``seqs`` (caches emptied before each
    lookup when ``cold``, and before the first in any case)."""
    clear_caches()
    started = time.perf_counter()
    for seq in seqs:
        if cold:
            clear_caches()
        record = find_record(directory, seq)
        if record is None or record["seq"] != seq:
            raise RuntimeError(f"find_record({directory}, {seq}) gave {record and record['seq']}")
    return (time.perf_counter() - started) / len(seqs)


def _sealed_seqs(directory: Path, count: int, seed: int = 1) -> list[int]:
    """``count`` random seqs of the sealed segments of a log."""
    segments = list_segments(directory)
    ranges = [(first, segments[i + 1][0]) for i, (first, path) in enumerate(segments[:-1]) if is_sealed(path)]
    everything = [seq for low, high in ranges for seq in range(low, high)]
    return random.Random(seed).sample(everything, min(count, len(everything)))


def section_frames(args: argparse.Namespace, corpus: Corpus, report: Report) -> None:
    plain = corpus.plain_log()
    sizes = [parse_size(v) for v in args.frame_sizes.split(",")]
    report.say(f"[bold]frames[/bold]: the recorded log sealed with frames of "
               f"{', '.join(size_text(s) for s in sizes)}; {args.lookups} random find-by-seq each …")
    rows, figures = [], []
    for frame in sizes:
        directory = corpus.work / f"frames-{frame}"
        shutil.copytree(plain, directory)
        before = after = 0
        for path in [p for _, p in list_segments(directory)][:-1]:
            done = seal_segment(path, level=3, frame_bytes=frame)
            before, after = before + done.before, after + done.after
        seqs = _sealed_seqs(directory, args.lookups)
        base = min(_lookups(plain, seqs, False) for _ in range(2))
        cold = min(_lookups(directory, seqs, True) for _ in range(2))
        warm = min(_lookups(directory, seqs, False) for _ in range(2))
        figures.append({"frame_bytes": frame, "ratio": before / after, "plain_us": base * 1e6, "cold_us": cold * 1e6,
                        "warm_us": warm * 1e6})
        rows.append([size_text(frame), f"{before / after:.2f}", f"{base * 1e6:,.0f}", f"{cold * 1e6:,.0f}",
                     f"{cold / base:.1f} x", f"{warm * 1e6:,.0f}", f"{warm / base:.1f} x"])
        shutil.rmtree(directory)
    report.table("frame size: ratio and find-by-seq (µs per lookup; plain: the same seqs in the plain log)",
                 ["frame", "ratio", "plain", "sealed cold", "cold / plain", "sealed warm", "warm / plain"], rows)
    report.figures["frames"] = figures


def _show_session(directory: Path) -> str:
    """The session with the most visible messages."""
    state = load(directory).state
    return max(state.sessions, key=lambda sid: len(state.sessions[sid].visible))


def _compare(name: str, plain: Path, sealed: Path, args: argparse.Namespace, report: Report) -> dict[str, Any]:
    runner = CliRunner()
    session = _show_session(plain)
    seqs = _sealed_seqs(sealed, args.lookups)
    out: dict[str, Any] = {"session": session, "messages": len(load(plain).state.visible(session))}
    for label, directory in (("plain", plain), ("sealed", sealed)):
        out[label] = {
            "find_cold_us": min(_lookups(directory, seqs, True) for _ in range(2)) * 1e6,
            "find_warm_us": min(_lookups(directory, seqs, False) for _ in range(2)) * 1e6,
            "show_s": best_of(lambda d=directory: runner.invoke(cli, ["show", session, "--dir", str(d)])),
            "tail_ms": best_of(lambda d=directory: newest(d, 50)) * 1e3,
            "fold_s": best_of(lambda d=directory: load(d, use_checkpoints=False), repeat=1),
        }
    p, s = out["plain"], out["sealed"]
    report.table(f"{name}: sealed against plain ({len(seqs)} random seqs of the sealed segments; show {session}, "
                 f"{out['messages']:,} messages)",
                 ["", "find cold µs", "find warm µs", "show s", "tail -n 50 ms", "whole fold s"],
                 [[label, f"{f['find_cold_us']:,.0f}", f"{f['find_warm_us']:,.0f}", f"{f['show_s']:.3f}",
                   f"{f['tail_ms']:.2f}", f"{f['fold_s']:.2f}"] for label, f in (("plain", p), ("sealed", s))])
    for what, key in (("find-by-seq, cold (a new process)", "find_cold_us"), ("find-by-seq, warm", "find_warm_us"),
                      ("show", "show_s")):
        ratio = s[key] / p[key]
        report.target(f"{name}: {what}, sealed <= {READ_TARGET:.0f} x plain", ratio <= READ_TARGET,
                      f"{ratio:.2f} x ({s[key]:,.3g} vs {p[key]:,.3g} {'s' if key.endswith('_s') else 'µs'})")
    return out


def build_synthetic(directory: Path, records: int, segment_bytes: int) -> None:
    """``records`` message records of 200 interleaved sessions (~300-byte lines)."""
    words = ["alpha", "beta", "gamma", "delta", "zeta", "tool", "call", "result", "agent", "plan", "error", "retry"]
    ensure_layout(directory)
    rng = random.Random(7)
    writer = SegmentWriter(directory, next_seq=1, segment_bytes=segment_bytes, fsync="never")
    for seq in range(1, records + 1):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 60)))
        session = f"s{seq % 200}"
        writer.write(make_line(seq, "2026-11-21T00:00:00.000000Z", "message", "sub", "t", session,
                               {"type": "message", "session_id": session, "content": text},
                               {"message_id": f"m{seq}"}), seq)
    writer.close()


def section_find(args: argparse.Namespace, corpus: Corpus, report: Report) -> None:
    report.say("[bold]find[/bold]: reading sealed against plain …")
    figures = {"sharegpt": _compare("ShareGPT log", corpus.plain_log(), corpus.sealed_log(), args, report)}
    plain, sealed = corpus.work / "synthetic-plain", corpus.work / "synthetic-sealed"
    build_synthetic(plain, args.synthetic_records, 16 << 20)
    shutil.copytree(plain, sealed)
    for path in sealable(sealed):
        seal_segment(path)
    figures["synthetic"] = _compare(f"synthetic log ({args.synthetic_records:,} records, 200 interleaved sessions)",
                                    plain, sealed, args, report)
    report.figures["find"] = figures


def section_scale(args: argparse.Namespace, work: Path, report: Report) -> None:
    big = args.scale_log or work / "scale"
    small = big.with_name(big.name + "-tenth")
    for directory, records in ((big, args.scale_records), (small, args.scale_records // 10)):
        if not (directory / EVENTS).is_dir():
            report.say(f"[bold]scale[/bold]: building a log of {records:,} records in {directory} …")
            built = build_scale_log(directory, records, say=lambda text: None)
            report.say(f"  {built['segments']} segments, {built['bytes'] / 2**30:.2f} GiB of lines sealed into "
                       f"{built['sealed_bytes'] / 2**30:.2f} GiB, in {built['build_s']:.0f} s")
    env = {**os.environ, "COLUMNS": "120"}
    commands = [["info", "--json"], ["sessions"], ["replay"], ["verify"]] + ([] if args.no_reindex else [["reindex"]])
    rows, figures = [], {}
    start = measured(["convlog", "--version"], env)
    for cmd in commands:
        for directory, label in ((small, "tenth"), (big, "full")):
            report.say(f"  convlog {' '.join(cmd)} on the {label} log …")
            done = measured(["convlog", *cmd, "--dir", str(directory)], env)
            figures[f"{cmd[0]} {label}"] = done
            rows.append([f"convlog {' '.join(cmd)}", label, f"{done['wall_s']:.2f}", f"{done['cpu_s']:.2f}",
                         f"{done['rss_mb']:,.0f}", str(done["exit"])])
            if done["exit"] != 0 and cmd[0] != "verify":
                report.say(f"  [red]exit {done['exit']}[/red]: {done['stderr']}")
    report.table(f"summaries at {args.scale_records:,} records (full) and a tenth (interpreter start alone: "
                 f"{start['wall_s']:.2f} s, {start['rss_mb']:.0f} MiB)",
                 ["command", "log", "wall s", "CPU s", "peak RSS MiB", "exit"], rows)
    report.figures["scale"] = {"records": args.scale_records, "interpreter": start, "commands": figures}
    for cmd in ("info", "sessions"):
        wall = figures[f"{cmd} full"]["wall_s"]
        report.target(f"convlog {cmd} at {args.scale_records:,} records < {SUMMARY_TARGET_S:.0f} s",
                      wall < SUMMARY_TARGET_S and figures[f"{cmd} full"]["exit"] == 0, f"{wall:.2f} s")
    for cmd in ("verify", "reindex"):
        if f"{cmd} full" not in figures:
            report.target(f"convlog {cmd}: constant memory", None, "skipped (--no-reindex)")
            continue
        ratio = figures[f"{cmd} full"]["rss_mb"] / figures[f"{cmd} tenth"]["rss_mb"]
        report.target(f"convlog {cmd}: peak RSS at full <= {RSS_TARGET} x at a tenth", ratio <= RSS_TARGET,
                      f"{ratio:.2f} x ({figures[f'{cmd} full']['rss_mb']:,.0f} vs "
                      f"{figures[f'{cmd} tenth']['rss_mb']:,.0f} MiB; {figures[f'{cmd} full']['wall_s']:.0f} s "
                      f"at full)")


def prune_available() -> bool:
    """Whether this convlog has ``convlog prune`` (retention)."""
    return subprocess.run(["convlog", "prune", "--help"], capture_output=True).returncode == 0


def _replay_summary(directory: Path) -> dict[str, Any]:
    done = subprocess.run(["convlog", "replay", "--json", "--dir", str(directory)], capture_output=True, check=True)
    return json.loads(done.stdout)


def section_retention(args: argparse.Namespace, corpus: Corpus, work: Path, report: Report) -> None:
    if not prune_available():
        report.say("[bold]retention[/bold]: [yellow]skipped[/yellow]: `convlog prune --help` fails (no retention "
                   "in this convlog)")
        report.target("replay from a base equals the fold of the whole log", None, "skipped: no convlog prune")
        report.target("events/ stays under [retention] max_bytes", None, "skipped: no convlog prune")
        report.figures["retention"] = "skipped: no convlog prune"
        return
    figures: dict[str, Any] = {}
    # replay from a base
    directory = work / "retention-base"
    build_scale_log(directory, args.retention_records, segment_bytes=4 << 20, checkpoints=3,
                    say=lambda text: None)
    whole = _replay_summary(directory)
    events = sum(path.stat().st_size for _, path in list_segments(directory))
    bound = events // 2
    pruned = measured(["convlog", "prune", "--dir", str(directory), "--max-bytes", str(bound)])
    for path in (directory / "checkpoints").glob("*.json"):
        path.unlink()  # only the base is left to start from
    started = time.perf_counter()
    after = _replay_summary(directory)
    took = time.perf_counter() - started
    left = sum(path.stat().st_size for _, path in list_segments(directory))
    # The prune appends its own record (recorder.pruned): the whole log's figures plus it.
    added = {kind: n - whole["records_by_kind"].get(kind, 0) for kind, n in after["records_by_kind"].items()
             if kind == "recorder.pruned"}
    expected = {**whole, "last_seq": whole["last_seq"] + sum(added.values()),
                "records": whole["records"] + sum(added.values()),
                "records_by_kind": {**whole["records_by_kind"], **{k: whole["records_by_kind"].get(k, 0) + n
                                                                   for k, n in added.items()}}}
    keys = ("last_seq", "records", "records_by_kind", "sessions", "deleted_sessions", "forks", "messages_visible",
            "duplicates", "usage")
    differ = [k for k in keys if expected.get(k) != after.get(k)]
    same = not differ
    figures["base"] = {"events_bytes": events, "max_bytes": bound, "left_bytes": left, "prune": pruned,
                       "replay_s": took, "from_checkpoint": after.get("from_checkpoint"), "same": same}
    report.say(f"[bold]retention[/bold]: pruned {events / 2**20:.1f} MiB of segments to {left / 2**20:.1f} MiB "
               f"(--max-bytes {bound / 2**20:.1f} MiB) in {pruned['wall_s']:.2f} s; replay from "
               f"{after.get('from_checkpoint')} in {took:.2f} s")
    report.target("replay from a base equals the fold of the whole log",
                  same and (directory / "base.json").exists() and pruned["exit"] == 0,
                  f"{'the same ' + ', '.join(keys) if same else 'different ' + ', '.join(differ)} "
                  f"(with the prune's own {sum(added.values())} recorder.pruned record); base.json "
                  f"{'present' if (directory / 'base.json').exists() else 'missing'}; prune exit {pruned['exit']}")
    # disk held under max_bytes
    bound = args.retention_max_mib << 20
    events_path, _messages = corpus.events()
    target_bytes = 5 * bound
    lines, total = [], 0
    with events_path.open("rb") as fh:
        for line in fh:
            lines.append(line)
            total += len(line) + 450  # a record is the payload plus ~450 bytes of fields and meta
            if total >= target_bytes:
                break
    feed = work / "retention-events.jsonl"
    feed.write_bytes(b"".join(lines))
    config = work / "retention.toml"
    config.write_text(f'[recorder]\nsegment_bytes = {max(1 << 20, bound // 8)}\n\n'
                      f'[retention]\nmax_bytes = "{args.retention_max_mib}MiB"\naction = "delete"\n')
    log = work / "retention-disk"
    xsub, xpub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    broker = subprocess.Popen(["convlog", "broker", "--xsub", xsub, "--xpub", xpub, "--hwm", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recorder = subprocess.Popen(["convlog", "record", "--config", str(config), "--dir", str(log), "--sub", xpub,
                                 "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = peak_all = 0
    failed = None
    try:
        publisher = subprocess.Popen(["convlog", "publish", str(feed), "--endpoint", xsub, "--rate",
                                      str(args.retention_rate), "--wait", "60", "--format", "native"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        settled: float | None = None  # after the last message: 10 s more for the last seals and prunes
        while settled is None or time.monotonic() < settled:
            peak = max(peak, _tree_bytes(log / EVENTS))
            peak_all = max(peak_all, _tree_bytes(log))
            if recorder.poll() is not None:
                failed = f"the recorder exited with {recorder.returncode}: " + (
                    recorder.stderr.read().decode(errors="replace")[-300:] if recorder.stderr else "")
                break
            if settled is None and publisher.poll() is not None:
                settled = time.monotonic() + 10
                if publisher.returncode != 0:
                    failed = "convlog publish failed: " + (
                        publisher.stderr.read().decode(errors="replace")[-300:] if publisher.stderr else "")
            time.sleep(0.02)
    finally:
        stop_process(recorder, 60)
        stop_process(broker)
        stop_process(publisher)
    final = _tree_bytes(log / EVENTS)
    figures["disk"] = {"max_bytes": bound, "written_bytes": total, "messages": len(lines), "peak_events_bytes": peak,
                       "peak_dir_bytes": peak_all, "final_events_bytes": final, "failed": failed}
    if failed is not None:
        report.target(f"events/ stays under [retention] max_bytes ({args.retention_max_mib} MiB)", False,
                      failed.strip())
    else:
        report.say(f"  recorded {len(lines):,} messages (~{total / 2**20:.0f} MiB, {total / bound:.1f} x the bound): "
                   f"events/ peaked at {peak / 2**20:.1f} MiB, ended at {final / 2**20:.1f} MiB; the whole "
                   f"directory peaked at {peak_all / 2**20:.1f} MiB")
        report.target(f"events/ stays under [retention] max_bytes ({args.retention_max_mib} MiB)", peak <= bound,
                      f"peak {peak / 2**20:.1f} MiB = {peak / bound:.2f} x the bound (segments of "
                      f"{max(1 << 20, bound // 8) / 2**20:.0f} MiB)")
    report.figures["retention"] = figures


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


# -- main ----------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``256K``, ``1M``, ``4MiB``, ``1048576`` -> bytes."""
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


def size_text(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 and not size % (1 << 20) else f"{size >> 10} KiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_CONVERSATIONS:,} conversations in 4 MiB segments, 1M records at scale, 1 round")
    parser.add_argument("--conversations", type=int, help="ShareGPT conversations to record (default: all)")
    parser.add_argument("--rate", type=float, default=20_000, help="messages/s published (default 20000)")
    parser.add_argument("--segment-mib", type=int, help="the recorder's segment size, MiB (default 64; quick 4)")
    parser.add_argument("--sharegpt-log", type=Path, help="reuse this recorded (sealed) ShareGPT log")
    parser.add_argument("--rounds", type=int, help="recordings per setting in cpu (default 2; quick 1)")
    parser.add_argument("--cpu-levels", default="1,3", help="zstd levels recorded with in cpu (default 1,3)")
    parser.add_argument("--levels", default="1,2,3,4,5,6,9,12,19", help="zstd levels of the levels table")
    parser.add_argument("--level-sample-mib", type=int, default=32, help="MiB of the log for the levels table")
    parser.add_argument("--frame-sizes", default="256K,512K,1M,2M,4M", help="frame sizes of the frames table")
    parser.add_argument("--lookups", type=int, default=300, help="random find-by-seq lookups per measurement")
    parser.add_argument("--synthetic-records", type=int, help="records of find's synthetic log (default 400000)")
    parser.add_argument("--scale-records", type=int, help="records of the scale log (default 10000000; quick 1M)")
    parser.add_argument("--scale-log", type=Path, help="build the scale log here and keep it, or reuse it")
    parser.add_argument("--no-reindex", action="store_true", help="skip convlog reindex at scale (~10 min at 10M)")
    parser.add_argument("--retention-records", type=int, default=400_000, help="records of the log pruned")
    parser.add_argument("--retention-max-mib", type=int, default=16, help="[retention] max_bytes of the disk run")
    parser.add_argument("--retention-rate", type=float, default=2_000, help="messages/s of the disk run")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a new temp dir, removed)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    args.conversations = args.conversations or (QUICK_CONVERSATIONS if args.quick else None)
    args.segment_mib = args.segment_mib or (4 if args.quick else 64)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.synthetic_records = args.synthetic_records or (100_000 if args.quick else 400_000)
    args.scale_records = args.scale_records or (1_000_000 if args.quick else 10_000_000)
    report = Report(Console(highlight=False, width=None if sys.stdout.isatty() else 150))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-storage-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(args, work, report)
    report.figures["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    try:
        for name in SECTIONS:  # cpu first records the log the others read
            if name not in only:
                continue
            if name == "cpu":
                section_cpu(args, corpus, report)
        for name in SECTIONS:
            if name not in only or name == "cpu":
                continue
            if name == "scale":
                section_scale(args, work, report)
            elif name == "retention":
                section_retention(args, corpus, work, report)
            else:
                {"ratio": section_ratio, "levels": section_levels, "frames": section_frames,
                 "find": section_find}[name](args, corpus, report)
        missed = [t["target"] for t in report.targets if t["pass"] is False]
        report.say(escape("targets missed: " + ("; ".join(missed) if missed else "none")))
    finally:
        if args.json:
            args.json.write_text(json.dumps({"figures": report.figures, "targets": report.targets}, indent=2,
                                            default=str) + "\n")
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
