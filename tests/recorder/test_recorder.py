"""End-to-end tests of the recorder: a real broker and real ``convlog record`` processes on
loopback ports, real traffic (the Shearwater recordings, ShareGPT conversations), real
SIGTERM and SIGKILL, and the log read back from disk.
"""

from __future__ import annotations

import base64
import collections
import os
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest
import zmq

from conftest import (
    Bus,
    Proc,
    convlog_cmd,
    free_port,
    records,
    shearwater_file,
    spawn,
    wait_for_records,
)
from convlog.bus.publisher import Publisher, file_messages
from convlog.cli.sharegpt import conversations, native_events
from convlog.core.record import RECORDER_KINDS, decode_bytes
from convlog.core.view import EMPTY
from convlog.store import replay
from convlog.store.segment import list_segments, open_segment, segment_key, segment_size

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- helpers


def stop(proc: Proc) -> None:
    """SIGTERM a recorder and require a clean exit (0)."""
    code = proc.terminate()
    assert code == 0, f"recorder exited with {code} on SIGTERM:\n{proc.output()}"


def read_segment(path: Path) -> bytes:
    """A segment's bytes, decompressed when the recorder has sealed it."""
    with open_segment(path) as fh:
        return fh.read()


def segment_lines(directory: Path) -> list[tuple[Path, bytes]]:
    """Every line of every segment, in order, as raw bytes (newline included)."""
    out = []
    for _, path in list_segments(directory):
        data = read_segment(path)
        out.extend((path, line + b"\n") for line in data.split(b"\n")[:-1])
    return out


def assert_log_whole(directory: Path) -> list[dict]:
    """The log is well formed: every segment holds only complete JSON lines ending in a
    newline, is named by its first record's seq, and seq runs 1..N without gap or
    duplicate across all segments. Returns the records."""
    segments = list_segments(directory)
    assert segments, f"no segment in {directory}"
    seqs = []
    for first, path in segments:
        data = read_segment(path)
        assert data, f"empty segment {path.name}"
        assert data.endswith(b"\n"), f"{path.name} ends with a torn line: {data[-80:]!r}"
        assert segment_key(path) == f"{first:020d}.jsonl"  # sealed: .jsonl.zst
        lines = data.split(b"\n")[:-1]
        parsed = [orjson.loads(line) for line in lines]
        assert all(isinstance(r, dict) for r in parsed)
        assert parsed[0]["seq"] == first, f"{path.name} starts with seq {parsed[0]['seq']}"
        seqs.extend(r["seq"] for r in parsed)
    assert seqs == list(range(1, len(seqs) + 1)), "seq is not 1..N without gap or duplicate"
    found = records(directory)
    assert [r["seq"] for r in found] == seqs
    return found


def sub_records(found: list[dict]) -> list[dict]:
    """The records of messages received on the SUB socket, in order, without the
    publishers' heartbeats."""
    return [r for r in found if r["source"] == "sub" and r["kind"] != "publisher.heartbeat"]


def unstamped(record: dict, pub: Publisher, number: int) -> dict:
    """The record's data without the publisher's stamp, after checking that the stamp
    names ``pub`` and carries seq ``number``."""
    data = dict(record["data"])
    assert data.pop("convlog") == {"publisher": pub.publisher_id, "seq": number}, f"stamp of message {number}"
    return data


def assert_no_gaps(found: list[dict]) -> None:
    """No record says messages went missing."""
    assert [r["data"] for r in found if r["kind"] == "recorder.gap"] == []


def assert_started_and_stopped(found: list[dict], directory: Path) -> None:
    """The log opens with ``recorder.start``, ends with ``recorder.stop``, and the state
    file says the stop was clean."""
    assert found[0]["kind"] == "recorder.start"
    assert found[-1]["kind"] == "recorder.stop"
    state = orjson.loads((directory / "recovery" / "state.json").read_bytes())
    assert state["clean"] is True


def publish_paced(pub: Publisher, directory: Path, messages: list[tuple[bytes, bytes]], chunk: int = 500) -> None:
    """Publish in bursts of ``chunk`` messages, each once the previous one is in the log.

    The reference broker keeps libzmq's default high-water mark (1,000 messages) and
    drops beyond it, so an unpaced burst can lose messages before they reach the
    recorder; pacing keeps every test about the recorder."""
    for start in range(0, len(messages), chunk):
        for topic, payload in messages[start:start + chunk]:
            pub.send(topic, payload)
        wait_for_records(directory, min(start + chunk, len(messages)), timeout_s=60)


def small_event(i: int, session: str = "burst") -> tuple[bytes, bytes]:
    """A small native ``message`` event numbered ``i``."""
    event = {"type": "message", "session_id": session, "message_id": f"m{i}", "sender": "bench", "content": f"#{i}"}
    return session.encode(), orjson.dumps(event)


# --------------------------------------------------------------------------- 1. real traffic


def test_shearwater_traffic_is_recorded_exactly_and_folds_into_its_contexts(bus: Bus, tmp_path: Path) -> None:
    """All 2,783 legacy records of current_session.jsonl, turned back into bus messages and
    published through the reference broker, are recorded as ``message`` records whose
    data equals what was published, in order, with seq 1..N; the recorder stops cleanly
    on SIGTERM; the fold has one session per ContextId with as many messages as the
    file has records for it."""
    path = shearwater_file("current_session.jsonl")
    legacy = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    assert len(legacy) == 2783
    messages = list(file_messages(path))
    assert len(messages) == 2783

    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    pub = bus.publisher(rec)
    publish_paced(pub, directory, messages)
    stop(rec)
    pub.close(0)

    found = assert_log_whole(directory)
    assert_started_and_stopped(found, directory)
    got = sub_records(found)
    assert len(got) == 2783
    assert {r["kind"] for r in got} == {"message"}
    for index, (record, (topic, payload)) in enumerate(zip(got, messages, strict=True)):
        assert record["topic"] == topic.decode(), f"message {index}: topic"
        assert unstamped(record, pub, index + 1) == orjson.loads(payload), f"message {index}: data differs"
    assert_no_gaps(found)

    state = replay.load(directory).state
    per_context = collections.Counter(event["ContextId"] for event in legacy)
    assert len(per_context) == 1239 and "unknown" in per_context
    with_messages = {sid: len(s.visible) for sid, s in state.sessions.items() if s.visible}
    assert set(with_messages) == set(per_context)
    assert with_messages == dict(per_context)


# --------------------------------------------------------------------------- 2. ShareGPT content


def test_sharegpt_turns_are_recorded_and_shown_exactly(bus: Bus, tmp_path: Path) -> None:
    """300 ShareGPT conversations published turn by turn as native ``message`` events are
    recorded with ``data`` equal to the event (content equal to the turn text), and the
    fold shows each conversation's turns, in order, with exactly their text."""
    convs = list(conversations(limit=300))
    assert len(convs) == 300
    events = [event for conv in convs for event in native_events(conv)]

    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    pub = bus.publisher(rec)
    publish_paced(pub, directory, [(event["session_id"].encode(), orjson.dumps(event)) for event in events])
    stop(rec)
    pub.close(0)

    found = assert_log_whole(directory)
    assert_started_and_stopped(found, directory)
    got = sub_records(found)
    assert len(got) == len(events)
    for number, (record, event) in enumerate(zip(got, events, strict=True), 1):
        assert record["kind"] == "message"
        assert record["session"] == event["session_id"]
        assert record["data"]["content"] == event["content"], f"content of {event['message_id']}"
        assert unstamped(record, pub, number) == event
    assert_no_gaps(found)

    loaded = replay.load(directory)
    wrong = []
    for conv in convs:
        shown = loaded.messages(f"sharegpt-{conv.id}")
        texts = [m.text for m in shown]
        expected = [text or EMPTY for _, text in conv.turns]  # an empty turn is shown marked
        if texts != expected:
            diff = [(i, e[:40], t[:40]) for i, (e, t) in enumerate(zip(expected, texts, strict=False)) if e != t]
            wrong.append((conv.id, len(expected), len(texts), diff[:3]))
    assert wrong == [], f"{len(wrong)} conversations shown differently from their turns: {wrong[:5]}"


# --------------------------------------------------------------------------- 3. bad input


def _reconstruct(record: dict) -> tuple[list[bytes], object]:
    """The frames a record says were received: topic frame (if any) and payload as bytes
    when they were stored encoded, the parsed JSON value otherwise, then extra frames."""
    meta = record["meta"]
    frames: list[bytes] = []
    if record["topic"] is not None:
        topic = record["topic"]
        frames.append(base64.b64decode(topic) if meta.get("topic_encoding") == "base64" else topic.encode())
    if meta.get("encoding") in ("text", "base64"):
        payload: object = decode_bytes(record["data"])
    else:
        payload = ("json", record["data"])
    extra = [decode_bytes(frame) for frame in record.get("extra_frames", [])]
    return frames + extra, payload


def test_bad_input_is_recorded_losslessly_and_recording_continues(bus: Bus, tmp_path: Path) -> None:
    """Messages that are not JSON, not UTF-8, empty, of one or three frames, 10 MB large,
    JSON of unexpected shapes (including a forged ``recorder.stop``), pretty-printed or
    holding a big integer are each recorded so the original frames can be rebuilt byte
    for byte (JSON: the same value, spliced unchanged), none becomes a recorder kind,
    and the recorder keeps recording and stops cleanly afterwards."""
    big_int = b"123456789012345678901234567890"
    pretty = orjson.dumps({"type": "note", "items": [1, 2, {"deep": "x y"}]}, option=orjson.OPT_INDENT_2)
    assert b"\n" in pretty
    pretty_crlf = pretty.replace(b"\n", b"\r\n")
    sent: list[list[bytes]] = [
        [b"t.text", b"hello, this is { not json"],
        [b"t.binary", b"\xff\xfe\x00\x01binary\x80\x81"],
        [b"t.empty", b""],
        [b"\xff\xfenon-utf8-topic", b'{"x": 1}'],
        [b"only one frame, not json"],
        [b'{"one": "frame", "json": true}'],
        [b"t.three", b'{"type": "message", "session_id": "s3", "content": "hi"}', b"\x00\x01\xffbinary third"],
        [b"t.four", b"payload", b"text third", b""],
        [b"t.bigjson", b'"' + b"y" * 10_000_000 + b'"'],
        [b"t.bigbin", os.urandom(10 * 1024 * 1024)],
        [b"t.list", b"[1, 2, 3]"],
        [b"t.number", b"42"],
        [b"t.forged", b'{"type": "recorder.stop"}'],
        [b"t.forged2", b'{"type": "recorder.start", "pid": 1}'],
        [b"t.typeint", b'{"type": 5}'],
        [b"t.pretty", pretty],
        [b"t.pretty.crlf", pretty_crlf],
        [b"t.bigint", b'{"n": ' + big_int + b', "dup": 1, "dup": 2}'],
    ]
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    pub = bus.publisher(rec)
    for frames in sent:
        pub.send_frames(frames)
    wait_for_records(directory, len(sent), timeout_s=60)
    assert rec.popen.poll() is None, f"recorder died on bad input:\n{rec.output()}"

    pub.send(b"t.after", b'{"type": "message", "session_id": "after", "message_id": "a1", "content": "still here"}')
    wait_for_records(directory, len(sent) + 1)
    stop(rec)
    pub.close(0)

    found = assert_log_whole(directory)
    assert_started_and_stopped(found, directory)
    raw_by_seq = {orjson.loads(line)["seq"]: line for _, line in segment_lines(directory)}
    got = sub_records(found)
    assert len(got) == len(sent) + 1
    for frames, record in zip(sent, got, strict=False):
        label = frames[0][:20] if len(frames) > 1 else b"<1 frame>"
        assert record["kind"] not in RECORDER_KINDS, f"{label!r} became {record['kind']}"
        payload = frames[1] if len(frames) >= 2 else frames[0]
        rebuilt, value = _reconstruct(record)
        if len(frames) == 1:
            assert record["topic"] is None, label
            assert record["meta"]["frames"] == 1, label
        if len(frames) >= 3:
            assert record["meta"]["frames"] == len(frames), label
        expected_frames = [frames[0], *frames[2:]] if len(frames) >= 2 else []
        assert rebuilt == expected_frames, f"{label!r}: topic or extra frames differ"
        if isinstance(value, bytes):
            assert value == payload, f"{label!r}: payload bytes differ"
            assert record["kind"] == "raw", label
        else:
            assert value[1] == orjson.loads(payload), f"{label!r}: JSON value differs"
            if b"\n" not in payload:
                assert payload in raw_by_seq[record["seq"]], f"{label!r}: JSON bytes not spliced unchanged"
        assert record["meta"]["bytes"] == len(payload), label

    by_label = {frames[0]: record for frames, record in zip(sent, got, strict=False) if len(frames) > 1}
    assert by_label[b"t.text"]["meta"]["encoding"] == "text"
    assert by_label[b"t.binary"]["meta"]["encoding"] == "base64"
    assert by_label[b"t.empty"]["meta"]["encoding"] == "text"
    assert by_label[b"\xff\xfenon-utf8-topic"]["meta"]["topic_encoding"] == "base64"
    assert by_label[b"t.bigbin"]["meta"]["encoding"] == "base64"
    assert by_label[b"t.bigjson"]["data"] == "y" * 10_000_000
    assert by_label[b"t.bigjson"]["meta"].get("oversize") is True
    assert by_label[b"t.bigbin"]["meta"].get("oversize") is True
    for label in (b"t.forged", b"t.forged2", b"t.typeint", b"t.list", b"t.number"):
        assert by_label[label]["kind"] == "unknown", label
    assert by_label[b"t.forged"]["source"] == "sub"
    assert b'"n": ' + big_int in raw_by_seq[by_label[b"t.bigint"]["seq"]]
    assert b'"dup": 1, "dup": 2' in raw_by_seq[by_label[b"t.bigint"]["seq"]]
    assert raw_by_seq[by_label[b"t.pretty"]["seq"]].count(b"\n") == 1
    assert raw_by_seq[by_label[b"t.pretty.crlf"]["seq"]].count(b"\n") == 1
    # Only the recorder writes recorder kinds: one start and one stop, from source "recorder".
    own = [r for r in found if r["kind"] in RECORDER_KINDS]
    assert [r["kind"] for r in own] == ["recorder.start", "recorder.stop"]
    assert {r["source"] for r in own} == {"recorder"}
    assert got[-1]["data"]["content"] == "still here"


# --------------------------------------------------------------------------- 4. crash in a burst


def test_kill9_during_a_burst_then_restart_recovers_a_gapless_log(bus: Bus, tmp_path: Path) -> None:
    """A recorder killed with SIGKILL in the middle of a 30,000-message burst, whose last
    segment then ends in a torn line, is restarted on the same directory: the torn bytes
    go to quarantine with a reason, a ``recorder.recovered`` record says what was
    salvaged, no segment keeps a torn line, seq stays 1..N across the crash, and the log
    still folds."""
    total = 30_000
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    pub = bus.publisher(rec)
    burst = [small_event(i) for i in range(total)]

    def send_all() -> None:
        for topic, payload in burst:
            pub.send(topic, payload)

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    line_bytes = len(burst[0][1]) + 200
    deadline = time.monotonic() + 60
    while True:
        size = sum(path.stat().st_size for _, path in list_segments(directory))
        if size > 3000 * line_bytes:
            break
        assert time.monotonic() < deadline, "the burst never reached the log"
        time.sleep(0.001)
    rec.kill9()
    sender.join(60)
    assert not sender.is_alive(), "publisher blocked after the recorder died"
    pub.close(0)

    before = records(directory)
    recorded_before = len(sub_records(before))
    assert 0 < recorded_before < total, f"kill was not in the middle of the burst ({recorded_before} recorded)"
    last = list_segments(directory)[-1][1]
    if last.read_bytes().endswith(b"\n"):
        with last.open("ab") as fh:
            fh.write(b'{"seq": 99999, "ts": "tor')
    content = last.read_bytes()
    torn = content[content.rfind(b"\n") + 1:]
    assert torn

    rec2 = bus.recorder(directory)
    bus.publisher(rec2).close(0)
    stop(rec2)

    found = assert_log_whole(directory)
    assert found[-1]["kind"] == "recorder.stop"
    assert [r["seq"] for r in found[: len(before)]] == [r["seq"] for r in before]
    quarantine = directory / "recovery" / "quarantine.jsonl"
    assert quarantine.exists()
    entries = [orjson.loads(line) for line in quarantine.read_bytes().splitlines()]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["reason"] and "torn" in entry["reason"]
    assert decode_bytes({k: entry[k] for k in ("text", "base64") if k in entry}) == torn
    assert entry["bytes"] == len(torn)
    recovered = [r for r in found if r["kind"] == "recorder.recovered"]
    assert len(recovered) == 1
    data = recovered[0]["data"]
    assert data["quarantined_bytes"] == len(torn) > 0
    assert data["previous_shutdown"] == "unclean"
    assert data["last_seq"] == before[-1]["seq"] == recovered[0]["seq"] - 1
    starts = [r["seq"] for r in found if r["kind"] == "recorder.start"]
    assert len(starts) == 2 and starts[1] == recovered[0]["seq"] + 1

    state = replay.load(directory).state
    assert len(state.sessions["burst"].visible) == recorded_before


# --------------------------------------------------------------------------- 5. drain at stop


def test_sigterm_writes_everything_already_delivered(bus: Bus, tmp_path: Path) -> None:
    """20,000 messages fully sent by the publisher and then an immediate SIGTERM: the
    recorder drains what libzmq delivered before stopping, so all 20,000 are in the log,
    and it exits 0. The broker runs with no high-water mark (``--hwm 0``) so that it
    cannot drop any of the burst: what is checked is the recorder's drain alone."""
    total = 20_000
    bus.broker.kill9()  # replaced, not under test
    bus.broker = spawn(["broker", "--xsub", bus.xsub, "--xpub", bus.xpub, "--hwm", "0"], tmp_path / "broker.log")
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    ctx = zmq.Context()
    try:
        pub = bus.publisher(rec, context=ctx)
        for i in range(total):
            pub.send(*small_event(i, "drain"))
        pub.close(linger_ms=30_000)
    finally:
        ctx.term()  # returns once every queued message has left the publisher
    stop(rec)

    found = assert_log_whole(directory)
    assert_started_and_stopped(found, directory)
    got = sub_records(found)
    assert len(got) == total
    assert [r["data"]["message_id"] for r in got] == [f"m{i}" for i in range(total)]
    assert_no_gaps(found)
    beats = [r for r in found if r["kind"] == "publisher.heartbeat"]
    assert beats and beats[-1]["data"]["convlog"]["seq"] == total  # close() says how many were sent


# --------------------------------------------------------------------------- 6. the lock


def test_second_recorder_on_the_same_directory_is_refused(bus: Bus, tmp_path: Path) -> None:
    """A second recorder on a directory already being recorded exits non-zero with one
    line naming the first recorder's pid, and the first keeps recording."""
    directory = tmp_path / "log"
    first = bus.recorder(directory)
    pub = bus.publisher(first)
    pub.send(*small_event(1, "lock"))
    wait_for_records(directory, 1)

    second = spawn(["record", "--dir", str(directory), "--sub", bus.xpub], tmp_path / "second.log")
    bus.procs.append(second)
    code = second.popen.wait(30)
    assert code != 0
    output = second.output().strip()
    assert len(output.splitlines()) == 1, f"expected one line, got:\n{output}"
    assert "Traceback" not in output
    assert f"pid {first.popen.pid}" in output

    assert first.popen.poll() is None, "the first recorder stopped"
    pub.send(*small_event(2, "lock"))
    wait_for_records(directory, 2)
    stop(first)
    pub.close(0)
    found = assert_log_whole(directory)
    assert_started_and_stopped(found, directory)
    assert [r["kind"] for r in found].count("recorder.start") == 1
    assert [r["data"]["message_id"] for r in sub_records(found)] == ["m1", "m2"]


# --------------------------------------------------------------------------- 7. broker restart


def test_recorder_survives_a_broker_restart(bus: Bus, tmp_path: Path) -> None:
    """The broker is stopped and started again on the same ports while the recorder runs:
    the recorder reconnects and resubscribes on its own, and every message published
    after the restart is recorded."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    pub = bus.publisher(rec)
    for i in range(50):
        pub.send(*small_event(i, "restart"))
    wait_for_records(directory, 50)
    pub.close(0)

    assert bus.broker.terminate() == 0, bus.broker.output()
    bus.start_broker()
    pub2 = bus.publisher(rec)
    for i in range(50, 150):
        pub2.send(*small_event(i, "restart"))
    wait_for_records(directory, 150)
    assert rec.popen.poll() is None
    stop(rec)
    pub2.close(0)

    found = assert_log_whole(directory)
    assert_started_and_stopped(found, directory)
    assert [r["kind"] for r in found].count("recorder.start") == 1
    ids = [r["data"]["message_id"] for r in sub_records(found)]
    assert ids == [f"m{i}" for i in range(150)]


# --------------------------------------------------------------------------- 8. segments


def test_segments_rotate_by_size_and_seq_continues_across_restarts(bus: Bus, tmp_path: Path) -> None:
    """With ``--segment-bytes 20000`` a few hundred ~1 KB messages fill several segments,
    each named by its first record's seq and rotated at the first record boundary past
    the limit; seq is contiguous across segments and continues after a restart."""
    limit = 20_000
    directory = tmp_path / "log"

    def run(first: int, count: int) -> None:
        rec = bus.recorder(directory, "--segment-bytes", str(limit))
        pub = bus.publisher(rec)
        for i in range(first, first + count):
            event = {"type": "message", "session_id": "seg", "message_id": f"m{i}", "content": f"{i:06d}" + "z" * 1000}
            pub.send(b"seg", orjson.dumps(event))
        wait_for_records(directory, first + count)
        stop(rec)
        pub.close(0)

    def assert_rotated_at_limit() -> None:
        for _, path in list_segments(directory):
            with open_segment(path) as fh:  # sealed by the recorder, or the live one
                lines = fh.read().split(b"\n")[:-1]
            before_last = sum(len(line) + 1 for line in lines[:-1])
            assert before_last < limit, (
                f"{path.name} holds {len(lines)} records, {segment_size(path)} bytes: "
                f"not rotated at the first record boundary past {limit} bytes"
            )

    run(0, 300)
    after_first = assert_log_whole(directory)
    assert_rotated_at_limit()
    assert len(list_segments(directory)) >= 5
    run(300, 100)

    found = assert_log_whole(directory)
    assert_rotated_at_limit()
    assert len(list_segments(directory)) >= 7
    assert found[: len(after_first)] == after_first
    assert found[len(after_first)]["kind"] == "recorder.start"
    assert found[len(after_first)]["seq"] == after_first[-1]["seq"] + 1
    ids = [r["data"]["message_id"] for r in sub_records(found)]
    assert ids == [f"m{i}" for i in range(400)]


# --------------------------------------------------------------------------- 9. config errors


def _record_with(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        convlog_cmd("record", "--dir", str(tmp_path / "log"), "--sub", f"tcp://127.0.0.1:{free_port()}", *args),
        capture_output=True, timeout=60, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[recorder]\nfsync = always\n", [":2:", "syntax"]),
        ("# durability\n[recorder]\nfsync = \"sometimes\"\n", [":3:", "recorder.fsync", "sometimes", "always"]),
        ("[recorder]\nfsync = \"sometimes\"\n", [":2:", "recorder.fsync", "must be one of"]),
    ],
    ids=["toml-syntax", "bad-fsync-line3", "bad-fsync-line2"],
)
def test_bad_config_file_stops_the_recorder_at_start(tmp_path: Path, text: str, needles: list[str]) -> None:
    """A config file with a TOML syntax error or an invalid value stops ``convlog record``
    at start: non-zero exit, one line on stderr naming the file, line and key or reason,
    no traceback, and nothing recorded."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = _record_with(tmp_path, "--config", str(path))
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr
    assert f"{path}:" in stderr
    for needle in needles:
        assert needle in stderr, f"{needle!r} missing from {stderr!r}"
    assert not (tmp_path / "log" / "events").exists()


def test_bad_environment_value_stops_the_recorder_at_start(tmp_path: Path) -> None:
    """``CONVLOG_FSYNC=sometimes`` stops ``convlog record`` at start with one line naming
    the variable, no traceback, and a non-zero exit."""
    result = _record_with(tmp_path, env={"CONVLOG_FSYNC": "sometimes"})
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr
    assert "CONVLOG_FSYNC" in stderr and "sometimes" in stderr
    assert not (tmp_path / "log" / "events").exists()


# --------------------------------------------------------------------------- 10. PULL


def test_pushed_envelope_is_recorded_and_counted_as_a_copy(bus: Bus, tmp_path: Path) -> None:
    """A Shearwater PUSH envelope sent to ``--pull`` is recorded with source ``pull``, kind
    ``message`` and the inner context id as session; the same message also published on
    the bus is shown once by the fold, with 2 copies."""
    pull = f"tcp://127.0.0.1:{free_port()}"
    directory = tmp_path / "log"
    inner = {
        "message_id": "claude_code_1764590299526",
        "sender_id": "claude_code",
        "timestamp": "2025-12-01T06:58:19.526765",
        "context_id": "handshake_test",
        "content": {"message": "Handshake initiated from Claude Code"},
        "metadata": {"sender_role": "Agent"},
    }
    envelope = {"event_type": "sent", "agent": "claude_code", "timestamp": "2025-12-01T06:58:19.527", "message": inner}
    rec = bus.recorder(directory, "--pull", pull)
    pub = bus.publisher(rec)
    pub.send(b"claude_code", orjson.dumps(inner))
    ctx = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        push.connect(pull)
        push.send(orjson.dumps(envelope))
        push.close(linger=10_000)
    finally:
        ctx.term()
    wait_for_records(directory, 1, kind_source="pull")
    wait_for_records(directory, 1)
    stop(rec)
    pub.close(0)

    found = assert_log_whole(directory)
    assert_started_and_stopped(found, directory)
    pulled = [r for r in found if r["source"] == "pull"]
    assert len(pulled) == 1
    record = pulled[0]
    assert record["kind"] == "message"
    assert record["session"] == "handshake_test"
    assert record["topic"] is None
    assert record["data"] == envelope
    assert record["meta"]["message_id"] == inner["message_id"]

    shown = replay.load(directory).messages("handshake_test")
    assert len(shown) == 1
    assert shown[0].copies == 2
    assert shown[0].text == "Handshake initiated from Claude Code"


# --------------------------------------------------------------------------- 11. endpoints and topics


def test_one_recorder_subscribes_to_two_brokers(bus: Bus, tmp_path: Path) -> None:
    """``--sub`` given twice: one recorder records the traffic of two brokers."""
    xsub2, xpub2 = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    second = spawn(["broker", "--xsub", xsub2, "--xpub", xpub2], tmp_path / "broker2.log")
    bus.procs.append(second)
    directory = tmp_path / "log"
    rec = bus.recorder(directory, "--sub", xpub2)
    pub1 = bus.publisher(rec)
    pub2 = Publisher(xsub2)
    pub2.wait_for_subscriber(20)
    pub1.send(*small_event(1, "one"))
    pub2.send(*small_event(2, "two"))
    found = wait_for_records(directory, 2)
    assert {r["session"] for r in sub_records(found)} == {"one", "two"}
    stop(rec)
    pub1.close(0)
    pub2.close(0)
    assert second.terminate() == 0


def test_topic_prefixes_limit_the_subscription(bus: Bus, tmp_path: Path) -> None:
    """``--topic`` subscribes to the given prefixes only; other topics are not received."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory, "--topic", "agent.", "--topic", "ops")
    pub = bus.publisher(rec)
    pub.wait_for_subscriber(20, topic=b"agent.a")
    pub.wait_for_subscriber(20, topic=b"opsroom")
    pub.send(b"chat.x", b'{"n": 0}')
    pub.send(b"agent.a", b'{"n": 1}')
    pub.send(b"opsroom", b'{"n": 2}')
    pub.send(b"other", b'{"n": 3}')
    pub.send(b"agent.b", b'{"n": 4}')
    found = wait_for_records(directory, 3)
    stop(rec)
    pub.close(0)
    assert [r["data"]["n"] for r in sub_records(records(directory))] == [1, 2, 4]
    assert found


def test_publish_command_replays_a_recording_at_a_rate(bus: Bus, tmp_path: Path) -> None:
    """``convlog publish FILE --rate N`` (a real subprocess) sends every legacy record of
    the Shearwater recovery file as its bus payload; the recorder gets all of them."""
    source = shearwater_file("crash_recovery.jsonl")
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    bus.publisher(rec).close(0)  # the recorder is subscribed
    result = subprocess.run(
        convlog_cmd("publish", str(source), "--endpoint", bus.xsub, "--rate", "2000"),
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "published 414 messages" in result.stderr
    found = wait_for_records(directory, 414)
    stop(rec)
    ids = [r["meta"]["message_id"] for r in sub_records(found)]
    expected = [orjson.loads(line)["Id"] for line in source.read_bytes().splitlines()]
    assert ids == expected


def test_fsync_always_makes_every_record_durable_before_the_next(bus: Bus, tmp_path: Path) -> None:
    """With ``--fsync always`` every received record is fsynced on its own: after the
    messages arrive, the state's durable seq reaches the last record without waiting
    for a group commit, and a clean stop leaves a whole log."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory, "--fsync", "always")
    pub = bus.publisher(rec)
    for i in range(100):
        pub.send(*small_event(i, "always"))
    found = wait_for_records(directory, 100)
    stop(rec)
    pub.close(0)
    found = assert_log_whole(directory)
    assert_started_and_stopped(found, directory)
    stop_data = found[-1]["data"]
    assert stop_data["fsyncs"] >= 100  # one per record (plus the recorder's own)
    state = orjson.loads((directory / "recovery" / "state.json").read_bytes())
    assert state["durable_seq"] == found[-1]["seq"]
