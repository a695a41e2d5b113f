"""Loss detection: publisher stamps, gaps, restarts — the pure detector and the real recorder."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Bus, records, wait_for_final_heartbeat, wait_for_records
from convlog.core.gaps import GapDetector, stamp_of, stamp_payload
from convlog.store import replay
from convlog.store.segment import list_segments


def test_stamp_payload_inserts_a_first_key_without_reserializing() -> None:
    """Stamping keeps the payload's bytes after the new first key and stays valid JSON."""
    payload = b'{"a": 123456789012345678901234567890, "b": [1, 2]}'
    stamped = stamp_payload(payload, "agent-a", 7)
    assert stamped.startswith(b'{"convlog":{"publisher":"agent-a","seq":7},')
    assert stamped.endswith(b'"a": 123456789012345678901234567890, "b": [1, 2]}')
    assert stamp_of(orjson.loads(stamped)) == ("agent-a", 7)
    assert orjson.loads(stamp_payload(b" { } ", 'we"ird', 1)) == {"convlog": {"publisher": 'we"ird', "seq": 1}}
    assert stamp_payload(b"[1, 2]", "p", 1) is None and stamp_payload(b"text", "p", 1) is None


def test_malformed_stamps_are_not_stamps() -> None:
    """Only a string publisher with a non-negative integer seq counts as a stamp."""
    for value in ({"convlog": {"publisher": 1, "seq": 1}}, {"convlog": {"publisher": "p", "seq": "1"}},
                  {"convlog": {"publisher": "p", "seq": -1}}, {"convlog": "p"}, [1], None):
        assert stamp_of(value) is None


def test_detector_reports_gaps_restarts_duplicates_and_unverified() -> None:
    """A jump is a gap; seq 1 again is a restart; a repeat is a duplicate; a heartbeat
    reveals a lost tail; unstamped messages count as unverified."""
    d = GapDetector()
    assert d.observe("p", 1, 10) is None and d.observe("p", 2, 11) is None
    gap = d.observe("p", 6, 12)
    assert (gap.first, gap.last, gap.seen, gap.heartbeat) == (3, 5, 6, False)
    assert d.observe("p", 6, 13) is None and d.publishers["p"].duplicates == 1
    tail = d.observe("p", 9, 14, heartbeat=True)
    assert (tail.first, tail.last, tail.heartbeat) == (7, 9, True)
    assert d.observe("p", 9, 15, heartbeat=True) is None
    assert d.observe("p", 1, 16) is None and d.publishers["p"].restarts == 1
    d.observe_value({"no": "stamp"}, "message", 17)
    d.observe_value({"type": "publisher.heartbeat"}, "publisher.heartbeat", 18)
    assert d.summary() == {"publishers": 1, "missing": 6, "restarts": 1, "duplicates": 1, "unverified": 1,
                           "invalid": 0, "evicted": 0, "closed": 0}
    assert GapDetector.from_dict(orjson.loads(orjson.dumps(d.to_dict()))) == d
    assert GapDetector.from_dict("garbage") == GapDetector()


@settings(max_examples=300, deadline=None)
@given(total=st.integers(1, 60), kept=st.sets(st.integers(1, 60)), beat=st.booleans())
def test_gaps_name_exactly_the_messages_that_never_arrived(total: int, kept: set[int], beat: bool) -> None:
    """For any subset of a publisher's messages 1..N arriving in order, followed (or not)
    by its heartbeat, the gaps reported cover exactly the seqs that did not arrive
    (with the heartbeat: all of them; without: all up to the last that arrived)."""
    arrived = sorted(s for s in kept if s <= total)
    d = GapDetector()
    missing: set[int] = set()
    for index, seq in enumerate(arrived):
        gap = d.observe("p", seq, index)
        if gap:
            missing |= set(range(gap.first, gap.last + 1))
    if beat:
        gap = d.observe("p", total, len(arrived), heartbeat=True)
        if gap:
            missing |= set(range(gap.first, gap.last + 1))
    end = total if beat else (arrived[-1] if arrived else 0)
    assert missing == set(range(1, end + 1)) - set(arrived)
    assert d.summary()["missing"] == len(missing)


def test_replay_returns_only_gaps_whose_record_is_missing() -> None:
    """Replaying logged records updates the detector and returns the gaps that have no
    ``recorder.gap`` record after them (a crash cut it off), not those that do."""
    def msg(seq: int, n: int) -> dict:
        return {"seq": seq, "kind": "message", "source": "sub", "data": {"convlog": {"publisher": "p", "seq": n}}}

    logged = [
        msg(1, 1), msg(2, 4),
        {"seq": 3, "kind": "recorder.gap", "source": "recorder", "data": {"publisher": "p", "first": 2, "last": 3}},
        msg(4, 7),  # its gap record (5..6) never made it to the log
    ]
    d = GapDetector()
    missing = d.replay(logged)
    assert [(g.first, g.last) for g in missing] == [(5, 6)]
    assert d.publishers["p"].seq == 7 and d.observe("p", 8, 5) is None


# --------------------------------------------------------------------------- the real recorder


def gaps_in(directory: Path) -> list[dict]:
    return [r["data"] for r in records(directory) if r["kind"] == "recorder.gap"]


def event(i: int) -> tuple[bytes, bytes]:
    return b"loss", orjson.dumps({"type": "message", "session_id": "loss", "message_id": f"m{i}", "content": str(i)})


def test_skipped_stamps_become_gap_records_reported_by_replay(bus: Bus, tmp_path: Path) -> None:
    """Messages a publisher stamped but the recorder never got are named by a
    ``recorder.gap`` record right after the message that revealed them, and replay
    reports the gap."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    pub = bus.publisher(rec)
    pub.send(*event(1))
    pub.seq += 3  # three stamped messages lost on the way
    pub.send(*event(5))
    wait_for_records(directory, 2)
    assert rec.terminate() == 0
    pub.close(0)
    found = records(directory)
    kinds = [r["kind"] for r in found if r["kind"] in ("message", "recorder.gap")]
    assert kinds == ["message", "message", "recorder.gap"]
    assert gaps_in(directory) == [{"publisher": pub.publisher_id, "first": 2, "last": 4, "missing": 3, "seen": 5,
                                   "by": "message"}]
    gaps = replay.load(directory).state.gaps
    assert [(g.publisher, g.first, g.last) for g in gaps] == [(pub.publisher_id, 2, 4)]
    stop = found[-1]["data"]["publishers"]
    assert stop["missing"] == 3 and stop["publishers"] == 1


def test_messages_sent_while_the_recorder_was_killed_are_reported(bus: Bus, tmp_path: Path) -> None:
    """kill -9 the recorder, keep publishing, restart it: the first message after the
    restart reveals exactly the messages sent while it was down."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    pub = bus.publisher(rec)
    for i in range(1, 11):
        pub.send(*event(i))
    wait_for_records(directory, 10)
    rec.kill9()
    time.sleep(0.5)  # the broker notices the subscriber is gone and stops forwarding
    for i in range(11, 16):
        pub.send(*event(i))  # nobody is subscribed: these are lost
    rec = bus.recorder(directory)
    pub.subscriptions.clear()
    pub.wait_for_subscriber(20)  # the restarted recorder's subscription
    pub.send(*event(16))
    wait_for_records(directory, 11)
    assert rec.terminate() == 0
    pub.close(0)
    assert [(g["first"], g["last"]) for g in gaps_in(directory)] == [(11, 15)]
    assert_every_message_recorded_or_reported(directory, pub.publisher_id, 16)


def assert_every_message_recorded_or_reported(directory: Path, publisher: str, total: int) -> list[dict]:
    """Every seq 1..total of ``publisher`` is either in the log or inside exactly one
    ``recorder.gap``, never both. Returns the gaps."""
    found = records(directory)
    recorded = [r["data"]["convlog"]["seq"] for r in found
                if r["kind"] == "message" and r["data"].get("convlog", {}).get("publisher") == publisher]
    gaps = [g for g in gaps_in(directory) if g["publisher"] == publisher]
    reported = [seq for g in gaps for seq in range(g["first"], g["last"] + 1)]
    assert len(recorded) == len(set(recorded)), "a message was recorded twice"
    assert len(reported) == len(set(reported)), "a message was reported missing twice"
    assert not set(recorded) & set(reported), "a recorded message was also reported missing"
    assert sorted(recorded + reported) == list(range(1, total + 1))
    return gaps


def test_broker_restart_mid_stream_is_recorded_as_a_gap(bus: Bus, tmp_path: Path) -> None:
    """A broker restart in the middle of a steady stream: the recorder reconnects by
    itself, and every message of the stream is either recorded or named by a
    ``recorder.gap`` (the messages lost with the broker, and those it dropped before the
    recorder had subscribed again)."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    pub = bus.publisher(rec)
    sent = 0

    def stream(seconds: float) -> None:
        nonlocal sent
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sent += 1
            pub.send(*event(sent))
            time.sleep(0.001)

    stream(1.0)
    assert bus.broker.terminate() == 0
    # The broker is down long enough for the recorder's reconnect interval to back off
    # past a second, while the publisher reconnects every 100 ms: the publisher's queue
    # reaches the new broker before the recorder has subscribed again, so messages
    # are lost (after 0.5 s the two could reconnect together and lose nothing).
    stream(2.5)
    bus.start_broker()
    stream(4.0)  # long enough for the recorder's reconnect (its interval backs off to 2 s)
    pub.close()  # the final heartbeat tells the recorder the last seq
    wait_for_final_heartbeat(directory, sent)
    assert rec.popen.poll() is None, "the recorder should have reconnected, not exited"
    assert rec.terminate() == 0
    gaps = assert_every_message_recorded_or_reported(directory, pub.publisher_id, sent)
    assert gaps, "messages sent around the restart were lost, so a gap must be recorded"


def test_a_lost_tail_is_revealed_by_the_heartbeat(bus: Bus, tmp_path: Path) -> None:
    """Messages lost at the end of a stream are reported when the idle publisher's
    heartbeat (sent by the APScheduler job) tells the recorder its last seq."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    from convlog.bus.publisher import Publisher

    pub = Publisher(bus.xsub, heartbeat_s=0.2)
    pub.wait_for_subscriber(20)
    pub.send(*event(1))
    pub.seq += 2  # the last two messages never arrive
    deadline = time.monotonic() + 20
    while not gaps_in(directory) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rec.terminate() == 0
    pub.close(0)
    assert [(g["first"], g["last"], g["by"]) for g in gaps_in(directory)] == [(2, 3, "heartbeat")]


def test_a_gap_record_lost_in_a_crash_is_written_at_restart(bus: Bus, tmp_path: Path) -> None:
    """If a crash cuts the log between a message that reveals a gap and its
    ``recorder.gap`` record, the restarted recorder finds the gap in the log and writes
    the record (marked ``restored``), so the loss is still reported exactly once."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    pub = bus.publisher(rec)
    pub.send(*event(1))
    pub.seq += 2
    pub.send(*event(4))
    wait_for_records(directory, 2)
    assert rec.terminate() == 0
    pub.close(0)
    segment = list_segments(directory)[-1][1]
    lines = segment.read_bytes().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if b'"recorder.gap"' in line)
    segment.write_bytes(b"".join(lines[:cut]))  # the crash: the gap line never made it
    state = directory / "recovery" / "state.json"
    state.write_bytes(orjson.dumps({**orjson.loads(state.read_bytes()), "clean": False}))
    rec = bus.recorder(directory)
    bus.publisher(rec).close(0)  # running again
    assert rec.terminate() == 0
    gaps = gaps_in(directory)
    assert [(g["first"], g["last"], g.get("restored")) for g in gaps] == [(2, 3, True)]


def test_restart_without_state_json_takes_the_publishers_from_the_checkpoint(bus: Bus, tmp_path: Path) -> None:
    """A restart that finds no ``recovery/state.json`` (lost, or a crash before its first
    write) rebuilds the publishers' seqs from the newest checkpoint's snapshot plus the
    records after its cut: a publisher that goes on where it was reports no false gap,
    and a real one is still found."""
    from convlog.store.checkpoint import list_checkpoints, publishers_start

    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    pub = bus.publisher(rec)
    for n in range(1, 4):
        pub.send(*event(n))
    wait_for_records(directory, 3)
    assert rec.terminate() == 0  # a clean stop writes a checkpoint
    pub.close(0)
    newest = list_checkpoints(directory)[-1]
    header = orjson.loads(newest.path.read_bytes().split(b"\n", 1)[0])
    assert header["publishers"]["publishers"][pub.publisher_id]["seq"] == 3
    found = publishers_start(directory, newest.seq)
    assert found is not None and found[2] == newest.seq
    (directory / "recovery" / "state.json").unlink()

    rec = bus.recorder(directory)
    from convlog.bus.publisher import Publisher

    again = Publisher(bus.xsub, publisher_id=pub.publisher_id, heartbeat_s=None)
    again.seq = 3  # the same publisher, going on
    again.wait_for_subscriber(20)
    again.send(*event(4))
    again.seq += 1  # seq 5 is lost
    again.send(*event(6))
    wait_for_records(directory, 5)
    assert rec.terminate() == 0
    again.close(0)
    assert [(g["publisher"], g["first"], g["last"]) for g in gaps_in(directory)] == [(pub.publisher_id, 5, 5)]


def test_a_checkpoint_whose_cut_no_longer_matches_gives_no_publishers_snapshot(tmp_path: Path) -> None:
    """publishers_start only trusts a checkpoint whose cut still matches the log."""
    from convlog.core.ingest import Ingest
    from convlog.store.checkpoint import Checkpointer, publishers_start
    from convlog.store.clock import Clock
    from convlog.store.segment import ensure_layout
    from convlog.store.writer import SegmentWriter

    directory = tmp_path / "log"
    ensure_layout(directory)
    writer = SegmentWriter(directory, next_seq=1, fsync="never")
    ingest, clock = Ingest(), Clock()
    for n in range(1, 4):
        payload = stamp_payload(orjson.dumps({"type": "message", "session_id": "s", "text": str(n)}), "p", n)
        assert payload is not None
        writer.write(ingest.line((b"s", payload), n, clock.now(), "sub"), n)
    writer.close()
    Checkpointer(directory).checkpoint()
    found = publishers_start(directory, 10)
    assert found is not None and found[0].publishers["p"].seq == 3
    segment = list_segments(directory)[-1][1]
    segment.write_bytes(segment.read_bytes().replace(b'"text":"1"', b'"text":"9"'))
    assert publishers_start(directory, 10) is None
