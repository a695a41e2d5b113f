"""Hostile and odd input: the findings of the adversarial trial, each pinned by a
test that failed on the code before the fix. Pure parts are tested directly; the rest on a
real recorder (a real broker, real ``convlog record`` processes, real files).

The end-to-end attacks with random frames, control requests and kill -9 are in
``test_attack.py``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import Bus, answering, convlog_cmd, records, wait_for_records
from convlog.bus import control
from convlog.bus.publisher import Publisher
from convlog.core.fold import State, fold
from convlog.core.gaps import GapDetector
from convlog.core.ingest import Ingest
from convlog.core.record import MAX_DEPTH, MAX_WIRE_INT, decode_bytes, dump_json, make_line, parse_line
from convlog.core.view import payload_text, stream_text
from convlog.store.clock import Clock
from convlog.store.recovery import recover
from convlog.store.replay import load, parse_as_of
from convlog.store.segment import EVENTS, QUARANTINE_FILE, RECOVERY, STATE_FILE, ensure_layout, list_segments
from convlog.store.writer import SegmentWriter

TS = "2026-11-21T12:00:00.000000Z"


def run(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``convlog ARGS`` as a subprocess, capturing text output."""
    return subprocess.run(convlog_cmd(*args), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=timeout_s)


def wait_until(check, what: str, timeout_s: float = 30.0):
    """Poll ``check()`` until it returns a true value; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- 1. forged stamps


def test_forged_stamps_are_counted_invalid_and_the_state_always_serialises() -> None:
    """Finding 1: seq 2**64-1, then 1, then 2**64-1 from one publisher, and a second
    publisher at 2**64-1: no stamp out of 0..2**63-1 reaches the arithmetic, every count
    stays below 2**63, and the state and summary serialise with orjson."""
    detector = GapDetector()
    for record_seq, (publisher, seq) in enumerate(
        [("evil", 2**64 - 1), ("evil", 1), ("evil", 2**64 - 1), ("other", 2**64 - 1), ("evil", -1),
         ("evil", True), ("evil", 1.5), (7, 3), ("ok", MAX_WIRE_INT), ("ok", 1), ("ok", MAX_WIRE_INT)], 1):
        detector.observe_value({"convlog": {"publisher": publisher, "seq": seq}}, "message", record_seq)
    detector.observe_value({"convlog": "not a stamp"}, "message", 12)
    summary = detector.summary()
    assert summary["invalid"] == 8 and summary["publishers"] == 2
    assert detector.publishers["ok"].missing <= MAX_WIRE_INT and summary["missing"] <= MAX_WIRE_INT
    orjson.dumps(detector.to_dict())
    orjson.dumps(summary)
    again = GapDetector.from_dict(orjson.loads(orjson.dumps(detector.to_dict())))
    assert again.to_dict() == detector.to_dict()


def test_a_state_file_with_numbers_past_64_bits_is_read_without_them() -> None:
    """Finding 1 (restart loop): a state.json holding counts no JSON writer can carry
    back is read without them instead of poisoning the next save."""
    raw = b'{"unverified": 18446744073709551616, "publishers": {"evil": {"seq": 18446744073709551615, "missing": 5}}}'
    detector = GapDetector.from_dict(orjson.loads(raw))
    assert detector.unverified == 0 and detector.publishers["evil"].seq == 0
    assert detector.publishers["evil"].missing == 5
    orjson.dumps(detector.to_dict())


def test_dump_json_writes_what_orjson_refuses() -> None:
    """Readers and the control channel serialise through dump_json: nesting past 254
    levels and integers past 64 bits come out as the same JSON (checked by the stdlib)."""
    import json

    deep: list = []
    node = deep
    for _ in range(5000):
        node.append([])
        node = node[0]
    assert dump_json(deep) == b"[" * 5001 + b"]" * 5001
    value = {"big": 2**70, "neg": -(2**65), "deep": [[[["x", 1.5, True]]]], "text": "\u00e9", "n": None}
    out = dump_json(value)
    assert json.loads(out) == value
    assert dump_json(value, option=orjson.OPT_APPEND_NEWLINE) == out + b"\n"


def test_a_control_request_nested_deep_is_refused_not_fatal() -> None:
    """Finding 1 (control variant): an ``append`` whose data is nested past MAX_DEPTH is
    a clear error, never a record the recorder cannot write (shallower data, even past
    orjson's 254 levels, is written: see test_attack)."""
    data: dict = {}
    node = data
    for _ in range(MAX_DEPTH + 1):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(control.ControlError, match="nested deeper"):
        control.parse_request(dump_json({"op": "append", "kind": "session.crystal", "session": "s", "data": data}))


# --------------------------------------------------------------------------- 2, 3. deep payloads


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1023, 1024, 1030])
def test_payloads_too_deep_for_readers_are_stored_in_base64(depth: int) -> None:
    """Finding 3: a payload nested past MAX_DEPTH (whether as content of a native message
    or as the whole payload; 1024 is what broke the line) is stored as raw base64 with
    the reason; the line parses back and decode_bytes gives the exact payload."""
    ingest = Ingest()
    for payload in (
        b"[" * depth + b"]" * depth,
        b'{"type":"message","session_id":"deep","content":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}",
    ):
        record = parse_line(ingest.line([b"topic", payload], 1, TS, "sub"))
        assert record["kind"] == "raw" and record["meta"]["encoding"] == "base64"
        assert f"nested {depth} levels" in record["meta"]["reason"]
        assert decode_bytes(record["data"]) == payload


@pytest.mark.parametrize("depth", [260, MAX_DEPTH])
def test_a_payload_up_to_the_limit_is_still_json_and_readers_render_it(depth: int) -> None:
    """Finding 2: nesting up to MAX_DEPTH (past orjson's 254 levels to serialise) stays
    spliced JSON, read back as the same value, and rendered by the readers' depth-safe
    dump."""
    content = b"[" * (depth - 1) + b"]" * (depth - 1)
    payload = b'{"type":"message","session_id":"s","content":' + content + b"}"
    line = Ingest().line([b"t", payload], 1, TS, "sub")
    record = parse_line(line)
    # (compared as text: == on lists 1000 deep passes Python's recursion limit)
    assert record["kind"] == "message" and payload in line and dump_json(record["data"]) == payload.replace(b" ", b"")
    assert payload_text(record) == content.decode()


# --------------------------------------------------------------------------- recovery


def _valid_line(seq: int) -> bytes:
    return make_line(seq, TS, "message", "sub", "t", "s", {"type": "message", "n": seq, "text": "x" * (seq % 7)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    count=st.integers(1, 40),
    garbage=st.lists(st.tuples(st.integers(0, 40), st.one_of(
        st.binary(min_size=1, max_size=30).map(lambda b: b.replace(b"\n", b"") + b"\n"),
        st.sampled_from([b"[" * 1025 + b"]" * 1025 + b"\n", b'{"seq": "x", "kind": 1}\n', b"\n", b"{}\n"]),
    )), max_size=6),
    torn=st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")),
    durable=st.booleans(),
)
def test_recovery_keeps_every_whole_valid_record(tmp_path_factory, count: int, garbage, torn: bytes,
                                                durable: bool) -> None:
    """Any log with garbage lines inserted anywhere in its live segment and a torn tail:
    recover keeps every whole valid record, byte for byte and in order; only garbage and
    the torn tail reach quarantine; seq goes on after the highest record."""
    directory = tmp_path_factory.mktemp("log")
    (directory / EVENTS).mkdir(parents=True)
    (directory / RECOVERY).mkdir()
    valid = [_valid_line(seq) for seq in range(1, count + 1)]
    lines = list(valid)
    for at, junk in sorted(garbage, reverse=True):
        # with a durable offset after the first record, garbage goes after it
        lines.insert(max(1 if durable else 0, min(at, len(lines))), junk)
    segment = directory / EVENTS / f"{1:020d}.jsonl"
    segment.write_bytes(b"".join(lines) + torn)
    if durable:  # a state naming the end of the first record as durable
        (directory / RECOVERY / STATE_FILE).write_bytes(orjson.dumps(
            {"segment": segment.name, "durable_offset": len(valid[0]), "durable_seq": 1}))
    bad_lines = sum(1 for line in lines if line not in valid) + (1 if torn else 0)
    first_bad = min((i for i, line in enumerate(lines) if line not in valid), default=len(lines))
    event(f"bad lines: {min(bad_lines, 3)}{'+' if bad_lines > 3 else ''}")
    event("valid records after a bad line" if any(lines.index(v) > first_bad for v in valid)
          else "no valid record after a bad line")
    report = recover(directory)
    assert segment.read_bytes() == b"".join(valid)
    assert report.last_seq == count and report.quarantined_lines == bad_lines
    if bad_lines:
        quarantined = (directory / RECOVERY / QUARANTINE_FILE).read_bytes().splitlines()
        assert len(quarantined) == bad_lines
    assert recover(directory).reason is None  # idempotent


def test_an_unusable_state_file_is_kept_aside_and_the_recorder_starts(bus: Bus, tmp_path: Path) -> None:
    """A recorder that cannot read its state.json keeps it aside (renamed, not deleted),
    writes recorder.recovered saying so, and records; no restart loop."""
    directory = tmp_path / "log"
    (directory / RECOVERY).mkdir(parents=True)
    (directory / RECOVERY / STATE_FILE).write_bytes(b'{"publishers": [not json')
    proc = bus.recorder(directory)
    answering(directory, proc)
    aside = [p for p in (directory / RECOVERY).iterdir() if p.name.startswith(f"{STATE_FILE}.unusable-")]
    assert len(aside) == 1 and aside[0].read_bytes() == b'{"publishers": [not json'
    recovered = [r for r in records(directory) if r["kind"] == "recorder.recovered"]
    assert recovered and "state.json" in recovered[0]["data"]["discarded"][0]
    assert proc.terminate() == 0


# --------------------------------------------------------------------------- 4. the live segment


@pytest.mark.slow
def test_a_deleted_live_segment_is_noticed_and_seq_never_repeats(bus: Bus, tmp_path: Path) -> None:
    """Finding 4: rm of the segment being written while publishing: the recorder starts a
    fresh segment at the next seq, writes recorder.degraded naming the lost range, status
    turns unhealthy with the reason, and a restart continues after the highest seq."""
    directory = tmp_path / "log"
    proc = bus.recorder(directory, "--fsync", "interval")
    pub = bus.publisher(proc, heartbeat_s=None)
    for n in range(50):
        pub.send(b"t", orjson.dumps({"type": "message", "session_id": "s", "message_id": f"a{n}", "content": "x"}))
    wait_for_records(directory, 50)
    doomed = list_segments(directory)[-1][1]
    doomed.unlink()
    for n in range(50):
        pub.send(b"t", orjson.dumps({"type": "message", "session_id": "s", "message_id": f"b{n}", "content": "y"}))
    degraded = wait_until(lambda: [r for r in records(directory) if r["kind"] == "recorder.degraded"],
                          "a recorder.degraded record")
    data = degraded[0]["data"]
    assert data["segment"] == doomed.name and data["problem"] == "deleted"
    assert data["lost"][0] == 1 and data["lost"][1] >= 50
    status = control.request(directory, "status")
    assert not status["healthy"] and any(doomed.name in p and "deleted" in p for p in status["problems"])
    result = run("status", "--dir", str(directory))
    assert result.returncode == 1 and "deleted" in result.stdout
    pub.close()
    assert proc.terminate() == 0
    last = max(r["seq"] for r in records(directory))
    proc = bus.recorder(directory)
    answering(directory, proc)
    assert proc.terminate() == 0
    seqs = [r["seq"] for r in records(directory)]
    assert seqs == sorted(set(seqs)) and min(seqs) > data["lost"][1] and max(seqs) > last


def test_the_writer_notices_a_replaced_or_truncated_segment(tmp_path: Path) -> None:
    """SegmentWriter.check_file tells deleted, replaced and truncated apart, and
    restart_segment starts the next seq in a new file."""
    ensure_layout(tmp_path)
    writer = SegmentWriter(tmp_path, next_seq=1)
    writer.write(_valid_line(1) + _valid_line(2), 2)
    assert writer.check_file() is None
    os.truncate(writer.segment, 10)
    assert writer.check_file().startswith("truncated to 10 bytes")
    replacement = writer.segment.with_name("other")
    replacement.write_bytes(b"")
    os.replace(replacement, writer.segment)
    assert writer.check_file() == "replaced by another file"
    writer.segment.unlink()
    assert writer.check_file() == "deleted"
    assert writer.restart_segment().name == f"{3:020d}.jsonl" and writer.check_file() is None
    writer.close()


# --------------------------------------------------------------------------- 5. stream copies


def test_a_stream_received_twice_is_shown_once() -> None:
    """Finding 5: deltas "Hello ", "world" and an end sent over the bus and PUSHed too
    show as "Hello world" with one copy, not "Hello Hello worldworld"."""
    state = State()
    parts = [("message.delta", {"delta": "Hello "}), ("message.delta", {"delta": "world"}), ("message.end", {})]
    log = []
    seq = 0
    for kind, extra in parts:
        for source in ("sub", "pull"):
            seq += 1
            log.append({"seq": seq, "ts": TS, "kind": kind, "source": source, "session": "s",
                        "data": {"type": kind, "session_id": "s", "message_id": "m1", **extra},
                        "meta": {"message_id": "m1"}})
    for record in log:
        fold(state, record)
    stream = state.streams[("s", "m1")]
    by_seq = {r["seq"]: r for r in log}
    parts_of = [by_seq[s] for s in sorted({*stream.delta_seqs, stream.end_seq})]
    assert stream_text(parts_of) == "Hello world"
    assert state.sessions["s"].copies == {"m1": 1}


# --------------------------------------------------------------------------- 7. bounded state


def test_the_publisher_table_is_bounded_and_the_state_stays_small() -> None:
    """Finding 7: 300k distinct publisher ids keep at most max_publishers in the table
    (least recently seen evicted, counted), and the serialised state stays under 2 MB."""
    detector = GapDetector()
    for n in range(300_000):
        detector.observe(f"publisher-{n:08d}@host-{n % 97}", 1, n + 1)
    assert len(detector.publishers) <= 10_000 and detector.evicted >= 290_000
    assert f"publisher-{299_999:08d}@host-{299_999 % 97}" in detector.publishers  # the newest stay
    assert len(orjson.dumps(detector.to_dict())) < 2 * 1024 * 1024


# --------------------------------------------------------------------------- 8. status truth


@pytest.mark.slow
def test_status_tells_the_truth(bus: Bus, tmp_path: Path) -> None:
    """Finding 8: a publisher that closed with a goodbye is not silent; one that went quiet
    without one is a warning, not unhealthy; a deleted checkpoint is not named."""
    directory = tmp_path / "log"
    proc = bus.recorder(directory, env={"CONVLOG_SILENCE_THRESHOLD_S": "1", "CONVLOG_STATE_INTERVAL_MS": "100"})
    pub = bus.publisher(proc, heartbeat_s=None)
    pub.send(b"t", orjson.dumps({"type": "message", "session_id": "s", "content": "hi"}))
    pub.close()  # says goodbye
    wait_until(lambda: any(isinstance(r["data"], dict) and r["data"].get("closing") for r in records(directory)),
               "the goodbye heartbeat")
    time.sleep(1.5)
    status = control.request(directory, "status")
    assert status["healthy"] and not status["warnings"], status
    quiet = bus.publisher(proc, heartbeat_s=None)
    quiet.send(b"t", orjson.dumps({"type": "message", "session_id": "s", "content": "still here"}))
    quiet.close(heartbeat=False)  # gone without a word
    wait_for_records(directory, 2)
    time.sleep(1.5)
    status = control.request(directory, "status")
    assert status["healthy"] and any("silent" in w for w in status["warnings"]), status
    # a checkpoint, then its deletion
    created = control.request(directory, "checkpoint")
    name = created["checkpoint"]
    assert control.request(directory, "status")["last_checkpoint"]["file"] == name
    (directory / "checkpoints" / name).unlink()
    assert (control.request(directory, "status")["last_checkpoint"] or {}).get("file") != name
    assert proc.terminate() == 0


@pytest.mark.slow
def test_failing_state_writes_make_status_unhealthy(bus: Bus, tmp_path: Path) -> None:
    """Finding 8: when recovery/state.json cannot be written (here a directory stands at
    its temporary file's place, which fails for root too), status is unhealthy naming
    the file, and healthy again once writes work; ``status | head -1`` keeps the exit code."""
    directory = tmp_path / "log"
    proc = bus.recorder(directory, env={"CONVLOG_STATE_INTERVAL_MS": "100"})
    answering(directory, proc)
    pub = bus.publisher(proc, heartbeat_s=None)
    blocker = directory / RECOVERY / f".{STATE_FILE}.{proc.popen.pid}.tmp"
    blocker.mkdir()
    pub.send(b"t", orjson.dumps({"type": "message", "session_id": "s", "content": "one"}))
    status = wait_until(lambda: (s := control.request(directory, "status")) and not s["healthy"] and s,
                        "status to turn unhealthy")
    assert any(f"recovery/{STATE_FILE} cannot be written" in p for p in status["problems"]), status
    errors = wait_until(lambda: [r for r in records(directory) if r["kind"] == "recorder.error"], "a recorder.error")
    assert errors[0]["data"]["what"] == f"writing recovery/{STATE_FILE}" and "IsADirectoryError" in \
        errors[0]["data"]["error"]
    result = status_into_head(directory)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    blocker.rmdir()
    pub.send(b"t", orjson.dumps({"type": "message", "session_id": "s", "content": "two"}))
    wait_until(lambda: control.request(directory, "status")["healthy"], "status to be healthy again")
    result = status_into_head(directory)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    pub.close()
    assert proc.terminate() == 0


def status_into_head(directory: Path) -> subprocess.CompletedProcess[str]:
    """``convlog status --dir DIR | head -1`` under ``set -o pipefail`` (the exit code is
    status's own, unless the closed pipe made it fail)."""
    command = f"set -o pipefail; {shlex.join(convlog_cmd('status', '--dir', str(directory)))} | head -1"
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------- 9. time


def test_the_clock_never_goes_back_and_notes_the_step() -> None:
    """Finding 9: a wall clock stepped back gives the last time again until it catches
    up, and the step is kept for meta.clock_step_s."""
    day = 86_400 * 10**9
    readings = iter([2 * day, day, day + 5, 2 * day + 1000])
    clock = Clock(lambda: next(readings))
    times = [clock.now() for _ in range(3)]
    assert times[0] == times[1] == times[2] and clock.step_ns == day
    assert clock.now() > times[0]


def test_as_of_now_sees_records_stamped_in_the_future(tmp_path: Path) -> None:
    """Finding 9: a log whose first session was recorded with a clock a day fast still
    shows every session at ``--as-of now`` (and at a future time); a past time before the
    first record shows none."""
    future = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() + 86_400))
    ensure_layout(tmp_path)
    writer = SegmentWriter(tmp_path, next_seq=1)
    lines = [make_line(1, future, "message", "sub", "t", "early", {"type": "message", "content": "a"}),
             make_line(2, future, "message", "sub", "t", "later", {"type": "message", "content": "b"})]
    writer.write(b"".join(lines), 2)
    writer.close()
    for text in ("now", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))):
        seq, ts = parse_as_of(text)
        assert sorted(load(tmp_path, upto_seq=seq, as_of_ts=ts).state.sessions) == ["early", "later"]
    assert parse_as_of("2020-01-01T00:00:00Z")[1] == "2020-01-01T00:00:00.000000Z"
    result = run("sessions", "--dir", str(tmp_path), "--as-of", "now", "--json")
    assert result.returncode == 0 and "later" in result.stdout


@pytest.mark.slow
def test_a_publisher_said_goodbye_in_its_last_heartbeat(bus: Bus, tmp_path: Path) -> None:
    """Publisher.close sends its last heartbeat with ``closing: true`` (what status reads)."""
    directory = tmp_path / "log"
    proc = bus.recorder(directory)
    pub = bus.publisher(proc, heartbeat_s=None)
    pub.send(b"t", b'{"type":"message","session_id":"s","content":"x"}')
    pub.close()
    beats = wait_until(lambda: [r for r in records(directory) if r["kind"] == "publisher.heartbeat"],
                       "the last heartbeat")
    assert beats[-1]["data"]["closing"] is True
    assert answering(directory, proc)["publishers"]["open"] == 0
    assert proc.terminate() == 0


def test_publisher_closing_heartbeat_without_broker_is_harmless() -> None:
    """A publisher closed with nobody listening does not raise."""
    Publisher("tcp://127.0.0.1:1", heartbeat_s=None).close(linger_ms=0)


# --------------------------------------------------------------------------- readers


#: Records as a damaged or foreign file under the log directory may hold them: every
#: field of an unexpected type (all still whole lines with an integer seq and a kind).
ODD_RECORDS = [
    {"kind": "message", "session": "s1", "data": {"type": "message", "content": "hi", "message_id": "m1"},
     "meta": {"message_id": "m1"}},
    {"kind": "message", "session": 123, "data": [1, 2], "meta": [1]},
    {"kind": "message", "session": "s1", "data": None, "meta": {"message_id": 5, "sender": {"a": 1}}},
    {"kind": "message.delta", "session": "s1", "data": {"delta": [1]}, "meta": {"message_id": "m2"}},
    {"kind": "message.end", "session": "s1", "data": "x", "meta": {"message_id": "m2"}},
    {"kind": "session.fork", "session": "s2", "data": {"parent": "s1", "at": 10**30}, "meta": "meta"},
    {"kind": "session.crystal", "session": "s1", "data": {"summary": {"deep": [[[]]]}, "upto": -1}, "meta": {}},
    {"kind": "llm.request", "session": "s1", "data": {"usage": {"input_tokens": 10**40}, "cost_usd": "NaN"},
     "meta": {}},
    {"kind": "raw", "session": "s1", "data": {"base64": "!!!"}, "meta": {"encoding": "base64"}},
    {"kind": "raw", "session": "s1", "data": {"text": 5}, "meta": {"encoding": "text"}},
    {"kind": "message", "session": "s1", "data": {"type": "message", "content": 2**70, "message_id": "m3"},
     "meta": {"message_id": "m3", "bytes": "x"}},
    {"kind": "message", "session": "s1", "data": {"type": "message", "content": {"text": ["a"]}}, "meta": None},
    {"kind": "recorder.gap", "session": None, "data": {"publisher": "p", "first": 5, "last": 2**70}, "meta": {}},
    {"kind": "message", "session": "s1", "ts": 12345, "data": {"type": "message", "content": "t"}, "meta": {}},
    {"kind": "message", "session": "s1", "data": {"type": "message", "content": [[[[[[[[[["x"]]]]]]]]]]},
     "meta": {"message_id": ["m"]}},
]


@pytest.mark.slow
def test_readers_never_die_on_odd_records(tmp_path: Path) -> None:
    """Every reader exits 0 without a traceback on a log of records whose fields have
    unexpected types (a damaged or foreign file under the log directory)."""
    import json

    ensure_layout(tmp_path)
    writer = SegmentWriter(tmp_path, next_seq=1)
    data = b"".join(
        (json.dumps({"seq": seq, "ts": odd.get("ts", TS), "kind": odd["kind"], "source": "sub", "topic": "t",
                     "session": odd["session"], "data": odd["data"], "meta": odd["meta"]}) + "\n").encode()
        for seq, odd in enumerate(ODD_RECORDS, 1))
    writer.write(data, len(ODD_RECORDS))
    writer.close()
    commands = [["sessions"], ["sessions", "--json"], ["show", "s1"], ["show", "s1", "--format", "markdown"],
                ["show", "s1", "--format", "json"], ["replay"], ["search", "hi"], ["search", "x", "--json"],
                ["tail", "-n", "20"], ["tail", "-n", "20", "--json"], ["info"], ["info", "--json"],
                ["export", "--all", "--out", str(tmp_path / "exports")], ["export", "s1", "--format", "csv"],
                ["export", "s1", "--with-history", "--format", "json"], ["resume", "latest"], ["checkpoints"]]
    for command in commands:
        result = run(*command, "--dir", str(tmp_path))
        assert result.returncode == 0 and "Traceback" not in result.stderr, (command, result.stderr[-2000:])
