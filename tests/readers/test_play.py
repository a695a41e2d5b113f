"""``convlog play``: recorded messages re-published through a second real broker into a
second recorder arrive with the same topics and payload bytes, in the same order, paced
like the original; the frame decoder and the schedule are checked as laws."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from conftest import Bus, convlog_cmd, records, running_bus, wait_for_records
from convlog.cli.demo import free_port
from convlog.core.ingest import Ingest
from convlog.core.payload import PayloadError
from convlog.core.record import parse_line
from convlog.core.view import plural
from convlog.readers.play import (
    PlayError,
    Selection,
    data_bytes,
    member_span,
    plan,
    record_frames,
    resolve_sessions,
    schedule,
)
from convlog.store.replay import UnknownSessionError

TS = "2026-11-21T12:00:00.000001Z"


# --------------------------------------------------------------------------- frames: laws

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def json_payloads(draw: st.DrawFn) -> bytes:
    """JSON texts spelled in many ways: spacing (newlines included), escapes, key order."""
    value = draw(json_values)
    indent = draw(st.none() | st.integers(0, 2))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]))
    text = json.dumps(value, indent=indent, separators=separators, ensure_ascii=draw(st.booleans()))
    pad = draw(st.sampled_from(["", " ", "\t", "\r"]))
    return (pad + text + pad).encode("utf-8")


frames_strategy = st.lists(
    st.binary(max_size=20) | st.text(max_size=20).map(lambda t: t.encode("utf-8")) | json_payloads(),
    min_size=0,
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(frames_strategy)
def test_frames_come_back_as_they_arrived(frames: list[bytes]) -> None:
    """Law: for any message, the frames rebuilt from the recorder's log line are the
    frames received, byte for byte, raw LFs between JSON tokens included (the log holds
    them as spaces, ``meta.lf`` gives them back), and they are reported exact."""
    line = Ingest(verify=False).line(frames, 1, TS, "sub")
    if not frames:
        with pytest.raises(PlayError):
            record_frames(line)
        return
    rebuilt = record_frames(line)
    record = parse_line(line)
    if "encoding" not in record["meta"]:  # JSON spliced in: the fast path and the walk agree
        span = member_span(line, "data")
        assert span is not None and line[span[0] : span[1]] == data_bytes(line, record)
        spaced = line.replace(b'{"seq":', b'{ "seq" :', 1)  # not convlog's layout: the walk is used
        assert record_frames(spaced).frames == rebuilt.frames
    if any(b"\n" in frame for frame in frames):
        event("a frame holds a raw LF")
    assert rebuilt.frames == frames and rebuilt.exact is True


def test_a_record_without_newline_offsets_is_played_as_stored_and_reported_altered() -> None:
    """A record written before ``meta.lf`` existed (or with it damaged) holds a payload's
    raw LFs as spaces: it is played as stored and reported not exact."""
    payload = b'{"type": "message",\n"content": "x"}'
    line = Ingest(verify=False).line([b"t", payload], 1, TS, "sub")
    old = line.replace(b'"lf":[19],', b"")
    assert old != line
    rebuilt = record_frames(old)
    assert rebuilt.frames == [b"t", payload.replace(b"\n", b" ")] and rebuilt.exact is False


@given(st.dictionaries(st.text(max_size=6), json_values, min_size=1, max_size=6), st.data())
def test_member_span_finds_raw_values(obj: dict[str, Any], data: st.DataObject) -> None:
    """Law: in any JSON object text, the span of a member holds exactly that member's
    value (whatever spacing it was written with)."""
    text = json.dumps(obj, indent=data.draw(st.none() | st.integers(0, 2))).encode()
    key = data.draw(st.sampled_from(sorted(obj)))
    span = member_span(text, key)
    assert span is not None
    assert json.loads(text[span[0] : span[1]]) == obj[key]
    assert member_span(text, key + "\x00missing") is None


def test_malformed_records_are_refused() -> None:
    """A record whose data or frames are not in a documented form cannot be rebuilt."""
    good = parse_line(Ingest().line([b"t", b"\xff\xfe"], 1, TS, "sub"))
    assert good["meta"]["encoding"] == "base64"
    bad = dict(good, data={"base64": "***"})
    with pytest.raises(PlayError):
        record_frames(orjson.dumps(bad), bad)
    bad = dict(good, data="x")
    with pytest.raises(PlayError):
        record_frames(orjson.dumps(bad), bad)
    with pytest.raises(PlayError):
        record_frames(b"not json")
    with pytest.raises(PayloadError):  # (PlayError's base: the walk lives in convlog.core.payload)
        member_span(b"[1, 2]", "data")


# --------------------------------------------------------------------------- schedule: laws

times = st.lists(st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=30)
rates = st.floats(min_value=0.01, max_value=100, allow_nan=False)


@given(times, rates)
def test_schedule_is_monotonic_and_starts_at_zero(ts: list[float | None], rate: float) -> None:
    """Offsets never go back in time and the first is 0, whatever the clock did."""
    offsets = list(schedule(ts, rate))
    assert len(offsets) == len(ts)
    assert all(b >= a for a, b in itertools.pairwise(offsets))
    assert not offsets or offsets[0] == 0


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=30), rates)
def test_schedule_scales_the_original_spacing(ts: list[float], rate: float) -> None:
    """For times in order, offset = (t - t0) / rate: rate 2 halves every gap."""
    ts = sorted(ts)
    offsets = list(schedule(ts, rate))
    assert offsets == pytest.approx([(t - ts[0]) / rate for t in ts], rel=1e-9, abs=1e-9)
    assert list(schedule(ts, None)) == [0.0] * len(ts)


def test_schedule_refuses_a_bad_rate() -> None:
    with pytest.raises(ValueError):
        list(schedule([1.0], 0))


def test_selection_and_session_names() -> None:
    """By default only what came from the bus is played, never the recorder's own
    records or heartbeats; --session names resolve like show's (id or unique prefix)."""
    ingest = Ingest()

    def rec(seq: int, source: str, kind: str = "message", session: str = "s1") -> bytes:
        event = {"type": kind, "session_id": session, "message_id": f"m{seq}", "content": "x"}
        line = ingest.line([session.encode(), orjson.dumps(event)], seq, TS, source)
        return line

    lines = [rec(1, "sub"), rec(2, "pull"), rec(3, "control", "session.start"),
             rec(4, "sub", "publisher.heartbeat"), rec(5, "sub", session="s2"), rec(6, "import")]
    lines.insert(0, b'{"seq":0}\n')
    assert [p.seq for p in plan(lines, Selection(), None)] == [1, 5]
    assert [p.seq for p in plan(lines, Selection(sources=frozenset({"pull", "import"})), None)] == [2, 6]
    assert [p.seq for p in plan(lines, Selection(sessions=frozenset({"s2"})), None)] == [5]
    assert [p.seq for p in plan(lines, Selection(since_seq=2, until_seq=4), None)] == []
    prefixed = list(plan(lines, Selection(), None, b"re."))
    assert [p.frames[0] for p in prefixed] == [b"re.s1", b"re.s2"]
    assert resolve_sessions(["s1", "abc", "raw-topic"], ["s1", "s1/x", "abcdef"]) == {"s1", "abcdef", "raw-topic"}
    with pytest.raises(UnknownSessionError):
        resolve_sessions(["s"], ["s1", "s2"])


# --------------------------------------------------------------------------- through real brokers


@pytest.fixture
def second_bus(tmp_path: Path) -> Iterator[Bus]:
    """A second reference broker (the one played into)."""
    tmp = tmp_path / "b"
    tmp.mkdir()
    with running_bus(tmp) as bus:
        yield bus


#: JSON payloads whose exact spelling a re-serializer would change.
ODD_JSON = [
    b'{"type": "message", "session_id": "s1", "message_id": "a", "content": "caf\\u00e9", "n": 1.50}',
    b'{"session_id":"s1","message_id":"b","type":"message","big":123456789012345678901234567890,"content":"x"}',
    b'{"type":"message","session_id":"s1","message_id":"c","dup":1,"dup":2,"content":"\\ud83d\\ude00"}',
    b'  {"type":"message","session_id":"s1","message_id":"d","content":"tab\\tand \\"quotes\\""}\t',
    b'{"type":"message","session_id":"s1","message_id":"e","content":{"message":"nested","list":[1,{}]}}',
]


def bus_records(directory: Path) -> list[dict[str, Any]]:
    """The records that came from the bus (publishers' heartbeats left out)."""
    return [r for r in records(directory) if r["source"] == "sub" and r["kind"] != "publisher.heartbeat"]


def wire(record: dict[str, Any]) -> tuple[Any, ...]:
    """What a record says arrived: topic, frame count, encodings, payload hash and size,
    extra frames."""
    meta = record["meta"]
    return (record["topic"], meta.get("frames"), meta.get("encoding"), meta.get("topic_encoding"),
            meta["sha256"], meta["bytes"], record.get("extra_frames"))


def span_s(found: list[dict[str, Any]]) -> float:
    """Seconds between the first and the last record's receive time."""
    from convlog.readers.play import ts_seconds

    first, last = ts_seconds(found[0]["ts"]), ts_seconds(found[-1]["ts"])
    assert first is not None and last is not None
    return last - first


def play(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(convlog_cmd("play", *args), capture_output=True, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"convlog play exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    return proc


@pytest.fixture
def recorded(bus: Bus, tmp_path: Path) -> Path:
    """A log recorded through a real broker: JSON payloads in odd spellings sent 0.3 s
    apart, a three-frame message, binary and text payloads, a non-UTF-8 topic, and a
    second session."""
    directory = tmp_path / "a"
    rec = bus.recorder(directory)
    pub = bus.publisher(rec, heartbeat_s=None)
    for payload in ODD_JSON:
        pub.send_frames([b"s1", payload])
        time.sleep(0.3)
    pub.send_frames([b"s1", b'{"type":"message","session_id":"s1","message_id":"f","content":"3 frames"}',
                     b"\x00\x01binary", b"text frame"])
    pub.send_frames([b"raw.topic", b"\xff\xfe\x00 not utf-8"])
    pub.send_frames([b"\xc3\x28topic", b"plain text, not JSON"])
    for n in range(3):
        pub.send(b"s2", orjson.dumps({"type": "message", "session_id": "s2", "message_id": f"s2-{n}",
                                      "content": f"second {n}"}))
    pub.close()
    wait_for_records(directory, len(ODD_JSON) + 6)
    assert rec.terminate() == 0
    return directory


def test_play_gives_the_same_bytes_in_order_and_pacing(recorded: Path, second_bus: Bus, tmp_path: Path) -> None:
    """Played at --rate 1 into a second broker and recorder: the same topics, frame
    counts, encodings, payload hashes and extra frames, in the same order; the spacing
    follows the original (loosely); --max is faster; --topic-prefix is applied."""
    original = bus_records(recorded)
    assert len(original) == len(ODD_JSON) + 6
    assert {r["meta"].get("encoding") for r in original} == {None, "base64", "text"}

    target = tmp_path / "b1"
    rec = second_bus.recorder(target)
    second_bus.publisher(rec, heartbeat_s=None).close(0)
    result = play("--dir", str(recorded), "--to", second_bus.xsub, "--wait", "20")
    assert f"played {plural(len(original), 'message')}" in result.stderr.decode()
    wait_for_records(target, len(original))
    replayed = bus_records(target)
    assert rec.terminate() == 0
    assert [wire(r) for r in replayed] == [wire(r) for r in original]
    for before, after in zip(original, replayed, strict=True):
        assert before["data"] == after["data"] and before["kind"] == after["kind"]
    assert not [r for r in records(target) if r["kind"] == "recorder.gap"]
    paced = span_s(replayed[: len(ODD_JSON)])
    source = span_s(original[: len(ODD_JSON)])
    assert source >= 1.0
    assert 0.5 * source <= paced <= source + 5.0

    fast = tmp_path / "b2"
    rec = second_bus.recorder(fast)
    second_bus.publisher(rec, heartbeat_s=None).close(0)
    play("--dir", str(recorded), "--to", second_bus.xsub, "--max", "--topic-prefix", "replay/")
    wait_for_records(fast, len(original))
    assert rec.terminate() == 0
    quick = bus_records(fast)
    assert span_s(quick[: len(ODD_JSON)]) < 0.5 * source
    for before, after in zip(original, quick, strict=True):
        assert after["meta"]["sha256"] == before["meta"]["sha256"]
        if before["meta"].get("topic_encoding") == "base64":
            assert base64.b64decode(after["topic"]) == b"replay/" + base64.b64decode(before["topic"])
        else:
            assert after["topic"] == "replay/" + before["topic"]


def test_play_one_session_at_double_rate(recorded: Path, second_bus: Bus, tmp_path: Path) -> None:
    """--session plays only that session; --rate 2 halves the spacing (loosely)."""
    target = tmp_path / "b3"
    rec = second_bus.recorder(target)
    second_bus.publisher(rec, heartbeat_s=None).close(0)
    play("--dir", str(recorded), "--to", second_bus.xsub, "--session", "s1", "--rate", "2")
    original = [r for r in bus_records(recorded) if r["session"] == "s1"]
    wait_for_records(target, len(original))
    assert rec.terminate() == 0
    replayed = bus_records(target)
    assert [r["meta"]["sha256"] for r in replayed] == [r["meta"]["sha256"] for r in original]
    source = span_s(original[: len(ODD_JSON)])
    assert 0.25 * source <= span_s(replayed[: len(ODD_JSON)]) <= source


def test_play_failures_are_one_line(recorded: Path, tmp_path: Path) -> None:
    """No subscriber, --rate with --max, no matching record, a bad --since, a missing
    log: exit non-zero with one readable line."""
    nobody = f"tcp://127.0.0.1:{free_port()}"
    cases = [
        (["--to", nobody, "--wait", "0.3"], "no subscriber"),
        (["--to", nobody, "--rate", "2", "--max"], "exclude each other"),
        (["--to", nobody, "--wait", "0", "--session", "nope"], "nothing to play"),
        (["--to", nobody, "--since", "the day before"], "neither a seq nor"),
    ]
    for args, words in cases:
        proc = play("--dir", str(recorded), *args, check=False)
        err = proc.stderr.decode()
        assert proc.returncode != 0 and words in err and "Traceback" not in err, (args, err)
    proc = play("--dir", str(tmp_path / "none"), "--to", nobody, check=False)
    assert proc.returncode == 1 and "no event log" in proc.stderr.decode()


def test_play_into_the_broker_its_own_recorder_listens_to(recorded: Path, bus: Bus) -> None:
    """Played into the broker whose recorder writes the same log, play stops at the end
    the log had when it started instead of replaying its own output forever."""
    original = bus_records(recorded)
    rec = bus.recorder(recorded)
    bus.publisher(rec, heartbeat_s=None).close(0)
    result = play("--dir", str(recorded), "--to", bus.xsub, "--max")
    assert f"played {plural(len(original), 'message')}" in result.stderr.decode()
    wait_for_records(recorded, 2 * len(original))
    assert rec.terminate() == 0
    again = bus_records(recorded)
    assert [r["meta"]["sha256"] for r in again] == [r["meta"]["sha256"] for r in original] * 2


def test_end_seq_steps_over_a_torn_line(tmp_path: Path) -> None:
    """The end of a log is its last whole record, whatever follows it."""
    from convlog.readers.play import end_seq
    from convlog.store.segment import ensure_layout
    from convlog.store.writer import SegmentWriter

    ensure_layout(tmp_path)
    assert end_seq(tmp_path) == 0
    writer = SegmentWriter(tmp_path, next_seq=1, segment_bytes=600)
    ingest = Ingest()
    for seq in range(1, 8):
        writer.write(ingest.line([b"t", b'{"type":"message","content":"%d"}' % seq], seq, TS, "sub"), seq)
    writer.close()
    assert end_seq(tmp_path) == 7
    last = sorted((tmp_path / "events").iterdir())[-1]
    with last.open("ab") as fh:
        fh.write(b'{"seq":8,"ts":"')
    assert end_seq(tmp_path) == 7
    (tmp_path / "events" / "00000000000000000099.jsonl").write_bytes(b"")
    assert end_seq(tmp_path) == 7


def test_purged_records_are_never_played() -> None:
    """A purged record (``convlog purge`` removed its payload) has nothing to send: play's
    plan leaves it out, whatever the selection, and plays the records around it."""
    from convlog.core.purge import purged_line

    ingest = Ingest()
    lines = [ingest.line([b"s", orjson.dumps({"type": "message", "session_id": "s", "content": f"m{i}"})], i,
                         f"2026-11-21T12:00:0{i}.000000Z", "sub") for i in range(1, 4)]
    lines[1] = purged_line(parse_line(lines[1]), lines[1])
    planned = list(plan(lines, Selection(), None))
    assert [item.seq for item in planned] == [1, 3]
    assert list(plan(lines, Selection(sessions=frozenset({"s"}), since_seq=2, until_seq=2), None)) == []
