"""Crash test: a recorder killed with SIGKILL at 30 random moments under a steady,
stamped stream, and restarted each time, leaves a log that verifies, with a gapless
seq, every byte it had written, every torn tail in quarantine, and every message it
missed while it was down named by a ``recorder.gap``.

Real parts only: the reference broker, the recorder and the publisher are separate
processes on loopback sockets; the kills are real ``kill -9``. The moments are drawn
from ``random.Random(SEED)`` (``CONVLOG_CRASH_SEED`` overrides the seed); the seed is in
every failure message.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_gaps import assert_every_message_recorded_or_reported

from conftest import Bus, Proc, records
from convlog.core.record import decode_bytes, parse_line
from convlog.store.segment import (
    QUARANTINE_FILE,
    RECOVERY,
    iter_records,
    list_segments,
    open_segment,
    segment_key,
    segment_path,
    segment_size,
)
from convlog.store.state import read_state
from convlog.store.verify import verify

SEED = int(os.environ.get("CONVLOG_CRASH_SEED", "20261121"))
KILLS = 30
RATE = 2000  # messages per second
#: Small segments, so that some kills land around a rotation.
SEGMENT_BYTES = 256 * 1024
PUBLISHER_ID = "crash-publisher"

#: The publisher process: stamped native events at a steady rate through the broker until
#: the stop file appears, then close() (the final heartbeat carries the last seq) and
#: ctx.term() (returns once that heartbeat has left), then one JSON line on stdout.
PUBLISHER_SCRIPT = r"""
import os, sys, time
import orjson, zmq
from convlog.bus.publisher import Publisher

endpoint, publisher_id, stop_path, rate = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
ctx = zmq.Context()
pub = Publisher(endpoint, context=ctx, publisher_id=publisher_id)
pub.wait_for_subscriber(60)
filler = "steady stream, déjà vu → " * 12
started = time.monotonic()
i = 0
while not os.path.exists(stop_path):
    due = int((time.monotonic() - started) * rate)
    while i < due:
        i += 1
        event = {"type": "message", "session_id": "crash", "message_id": f"m{i}", "content": f"{i} {filler}"}
        pub.send(b"crash", orjson.dumps(event))
    time.sleep(0.002)
pub.close()
ctx.term()
print(orjson.dumps({"publisher": pub.publisher_id, "sent": pub.seq}).decode(), flush=True)
"""


@dataclass
class Kill:
    """What one kill left on disk (read after the process was reaped, before the restart).

    Attributes:
        number: 1-based kill number.
        state: ``recovery/state.json`` as read just before the kill.
        segment: name of the last segment.
        complete: bytes of whole lines in the last segment.
        last_seq: seq of the last whole record of the log.
        torn: the bytes after the last whole line of the last segment: what the recorder
            left of a line (usually nothing) plus what the test appended as a torn write.
        appended: the part of ``torn`` that the test appended.
    """

    number: int
    state: dict[str, Any] | None
    segment: str
    complete: int
    last_seq: int
    torn: bytes
    appended: bytes


def read_segment(path: Path) -> bytes:
    """A segment's bytes, decompressed when the recorder has sealed it."""
    with open_segment(path) as fh:
        return fh.read()


def whole_prefix(data: bytes) -> int:
    """Length of the whole lines at the start of ``data``."""
    return data.rfind(b"\n") + 1


def last_whole_seq(data: bytes) -> int | None:
    """Seq of the last whole line of a segment's bytes, or None when it has none."""
    end = whole_prefix(data)
    if not end:
        return None
    return parse_line(data[data.rfind(b"\n", 0, end - 1) + 1:end])["seq"]


def wait_until_started(directory: Path, rec: Proc, after_seq: int, why: str) -> None:
    """Wait until ``rec`` has written and fsynced its ``recorder.start``: its own state.json
    (the pid is in it) with a durable seq past the log's end before it started."""
    deadline = time.monotonic() + 60
    while True:
        state = read_state(directory)
        if (state and state.get("pid") == rec.popen.pid and isinstance(state.get("durable_seq"), int)
                and state["durable_seq"] > after_seq):
            return
        if rec.popen.poll() is not None:
            pytest.fail(f"{why}: recorder exited with {rec.popen.returncode}:\n{rec.output()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{why}: recorder did not write recorder.start within 60 s:\n{rec.output()[-4000:]}")
        time.sleep(0.01)


def wait_for_record(
    directory: Path, after_seq: int, match: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = 60
) -> dict[str, Any]:
    """The first record after ``after_seq`` for which ``match(record)`` holds (waits for it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for record in iter_records(directory, start_seq=after_seq + 1):
            if match(record):
                return record
        if time.monotonic() > deadline:
            pytest.fail(f"seed {SEED}: {what} did not reach the log within {timeout_s} s")
        time.sleep(0.05)


def check_durable_position(directory: Path, state: dict[str, Any], kill: int) -> int:
    """state.json read before a kill names a record boundary of a segment that exists
    after it, and ``durable_seq`` is the seq of the record ending there. Returns it."""
    where = f"seed {SEED}, kill {kill}: state.json {state}"
    path = segment_path(directory, state["segment"])  # sealed since, perhaps
    assert path.exists(), f"{where}: its segment does not exist after the kill"
    data = read_segment(path)
    offset, seq = state["durable_offset"], state["durable_seq"]
    assert offset <= whole_prefix(data), f"{where}: durable_offset is past the whole lines ({len(data)} bytes)"
    if offset == 0:
        assert seq == int(state["segment"].removesuffix(".jsonl")) - 1, f"{where}: durable_seq at offset 0"
    else:
        assert data[offset - 1:offset] == b"\n", f"{where}: durable_offset is not at a line end"
        assert last_whole_seq(data[:offset]) == seq, f"{where}: the record ending at durable_offset has another seq"
    return seq


def start_publisher(bus: Bus, tmp_path: Path, stop_file: Path) -> subprocess.Popen[bytes]:
    """The publisher process (see :data:`PUBLISHER_SCRIPT`); its stderr goes to publisher.log."""
    with (tmp_path / "publisher.log").open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-c", PUBLISHER_SCRIPT, bus.xsub, PUBLISHER_ID, str(stop_file), str(RATE)],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
        )


@pytest.mark.slow
def test_kill9_at_random_moments_under_a_steady_stream_loses_nothing_written(bus: Bus, tmp_path: Path) -> None:
    """Under a steady stamped stream (2,000 messages/s), the recorder is killed with
    SIGKILL 30 times, each at a random moment 0.05-0.6 s after its ``recorder.start``
    was durable, and restarted on the same directory; on about half the kills the test
    appends a torn partial line to the last segment, as a write cut short would.
    Afterwards:

    * ``convlog verify`` finds no problem and seq runs 1..N without duplicate or hole;
    * every whole line that was on disk when a kill struck is still there, byte for
      byte (a process crash loses nothing written; recovery may only cut a torn tail),
      and the durable position state.json claimed before each kill is a record boundary
      holding ``durable_seq``;
    * each kill's torn bytes are one quarantine entry (segment, offset and bytes exact),
      and there is no other entry;
    * each restart writes one ``recorder.recovered`` (unclean shutdown, the last whole
      seq, the quarantined bytes) followed by ``recorder.start``: 30 and 31 of them;
    * every publisher seq 1..sent is either recorded or inside exactly one
      ``recorder.gap`` (the messages sent while the recorder was down), there is at
      least one gap, and ``recorder.stop``'s totals agree with the gap records.
    """
    rng = random.Random(SEED)
    started_at = time.monotonic()
    directory = tmp_path / "log"
    stop_file = tmp_path / "stop-publisher"
    seg_flag = ("--segment-bytes", str(SEGMENT_BYTES))

    def recorder() -> Proc:
        env = {"CONVLOG_STATE_INTERVAL_MS": "100"} if rng.random() < 0.5 else None
        return bus.recorder(directory, *seg_flag, env=env)

    rec = recorder()
    publisher = start_publisher(bus, tmp_path, stop_file)
    kills: list[Kill] = []
    prefixes: list[tuple[int, str, int, str]] = []  # (kill, segment, whole-line bytes, sha256 of them)
    sizes: dict[str, int] = {}
    after_seq = 0
    try:
        for number in range(1, KILLS + 1):
            wait_until_started(directory, rec, after_seq, f"seed {SEED}, before kill {number}")
            time.sleep(rng.uniform(0.05, 0.6))
            state = read_state(directory)
            rec.kill9()

            segments = list_segments(directory)
            assert segments, f"seed {SEED}, kill {number}: no segment"
            for index, (_, path) in enumerate(segments):  # sealed (.zst) ones read decompressed, by key
                size = segment_size(path)
                if sizes.get(segment_key(path)) == size:
                    continue
                sizes[segment_key(path)] = size
                data = read_segment(path)
                complete = whole_prefix(data)
                if index < len(segments) - 1:
                    assert complete == len(data), f"seed {SEED}, kill {number}: {path.name} (not last) ends torn"
                prefixes.append((number, segment_key(path), complete, hashlib.sha256(data[:complete]).hexdigest()))
            last_path = segments[-1][1]
            last_data = last_path.read_bytes()
            complete = whole_prefix(last_data)
            last_seq = None
            for _, path in reversed(segments):
                last_seq = last_whole_seq(read_segment(path) if path != last_path else last_data)
                if last_seq is not None:
                    break
            assert last_seq is not None and last_seq > after_seq, f"seed {SEED}, kill {number}: nothing written"
            if state is not None:
                durable = check_durable_position(directory, state, number)
                assert durable <= last_seq, f"seed {SEED}, kill {number}: durable_seq {durable} > last seq {last_seq}"

            appended = b""
            if rng.random() < 0.5:
                line = orjson.dumps({
                    "seq": last_seq + 1, "ts": "2026-11-21T12:00:00.000000Z", "kind": "message", "source": "sub",
                    "topic": "crash", "session": "crash",
                    "data": {"type": "message", "session_id": "crash", "message_id": f"torn-{number}",
                             "content": "déjà vu → a write cut short"},
                })
                appended = line[:rng.randrange(1, len(line))]  # may end inside a UTF-8 character
                with last_path.open("ab") as fh:
                    fh.write(appended)
            kills.append(Kill(number, state, last_path.name, complete, last_seq,
                              last_data[complete:] + appended, appended))
            after_seq = last_seq
            rec = recorder()

        wait_until_started(directory, rec, after_seq, f"seed {SEED}, after the last kill")
        wait_for_record(directory, after_seq, lambda r: r["kind"] == "message", "a message for the last recorder")
        time.sleep(0.5)
        stop_file.touch()
        out, _ = publisher.communicate(timeout=60)
        assert publisher.returncode == 0, (
            f"seed {SEED}: publisher exited with {publisher.returncode}:\n{(tmp_path / 'publisher.log').read_text()}"
        )
        sent = orjson.loads(out.splitlines()[-1])["sent"]
        wait_for_record(
            directory, after_seq,
            lambda r: r["kind"] == "publisher.heartbeat" and r["data"]["convlog"]["seq"] == sent,
            f"the publisher's final heartbeat (seq {sent})",
        )
        assert rec.terminate() == 0, f"seed {SEED}: recorder did not stop cleanly:\n{rec.output()[-4000:]}"
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()

    # The log as a whole.
    report = verify(directory)
    assert report.ok, f"seed {SEED}: convlog verify found problems:\n" + "\n".join(map(str, report.problems))
    found = records(directory)
    seqs = [r["seq"] for r in found]
    assert seqs == list(range(1, len(found) + 1)), f"seed {SEED}: seq has a duplicate or a hole"
    assert found[-1]["kind"] == "recorder.stop"

    # Nothing written before a kill was lost or changed.
    for number, name, length, digest in prefixes:
        if not length:
            continue
        path = segment_path(directory, name)
        assert path.exists(), f"seed {SEED}, kill {number}: segment {name} disappeared"
        with open_segment(path) as fh:
            now = hashlib.sha256(fh.read(length)).hexdigest()
        assert now == digest, f"seed {SEED}, kill {number}: the first {length} bytes of {name} changed"

    # Each kill's torn bytes, and nothing else, in quarantine.
    quarantine_path = directory / RECOVERY / QUARANTINE_FILE
    entries = [orjson.loads(line) for line in quarantine_path.read_bytes().splitlines()] \
        if quarantine_path.exists() else []
    torn_kills = [k for k in kills if k.torn]
    got = [(e["segment"], e["offset"], decode_bytes({k: e[k] for k in ("text", "base64") if k in e}))
           for e in entries]
    expected = [(k.segment, k.complete, k.torn) for k in torn_kills]
    assert got == expected, f"seed {SEED}: quarantine entries differ from the torn tails of kills " \
        f"{[k.number for k in torn_kills]}"
    for entry in entries:
        assert entry["reason"].startswith("torn line"), f"seed {SEED}: quarantine reason {entry['reason']!r}"
        assert entry["bytes"] == len(decode_bytes({k: entry[k] for k in ("text", "base64") if k in entry}))

    # One recorder.recovered per kill, each followed by the restarted recorder's start.
    by_seq = {r["seq"]: r for r in found}
    recovered = [r for r in found if r["kind"] == "recorder.recovered"]
    starts = [r for r in found if r["kind"] == "recorder.start"]
    assert len(recovered) == KILLS and len(starts) == KILLS + 1, \
        f"seed {SEED}: {len(recovered)} recorder.recovered, {len(starts)} recorder.start"
    for kill, record in zip(kills, recovered, strict=True):
        data = record["data"]
        where = f"seed {SEED}, kill {kill.number}: recorder.recovered {data}"
        assert record["seq"] == kill.last_seq + 1, where
        assert data["last_seq"] == kill.last_seq and data["previous_shutdown"] == "unclean", where
        assert data["quarantined_bytes"] == len(kill.torn), where
        assert by_seq[record["seq"] + 1]["kind"] == "recorder.start", where

    # Every stamped message recorded or reported missing, exactly once.
    gaps = assert_every_message_recorded_or_reported(directory, PUBLISHER_ID, sent)
    assert gaps, f"seed {SEED}: messages sent while the recorder was down must be reported as gaps"
    totals = found[-1]["data"]["publishers"]
    assert totals["missing"] == sum(g["missing"] for g in gaps), f"seed {SEED}: recorder.stop totals {totals}"
    assert totals["duplicates"] == 0 and totals["restarts"] == 0, f"seed {SEED}: recorder.stop totals {totals}"

    recorded = sum(1 for r in found if r["kind"] == "message")
    print(
        f"\ncrash test (seed {SEED}): {KILLS} kills in {time.monotonic() - started_at:.1f} s; {len(found)} records "
        f"in {report.segments} segments; {sent} sent, {recorded} recorded, {len(gaps)} gaps "
        f"({sum(g['missing'] for g in gaps)} missing); torn tails: {len(torn_kills)} "
        f"({sum(1 for k in kills if len(k.torn) > len(k.appended))} left by the recorder itself); "
        f"{sum(1 for k in kills if k.complete == 0)} kills with an empty last segment (just rotated)"
    )
