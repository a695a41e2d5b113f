"""Checkpoints on real log directories: the replay law, refusal of a checkpoint that no
longer matches the log, pruning, time travel on a real recording, the CLI and the
recorder's own checkpoints."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_fold import Item, fold_logs

from conftest import Bus, records, shearwater_file, wait_for_records
from convlog.cli.commands import main
from convlog.core.fold import fold_all
from convlog.core.ingest import Ingest
from convlog.core.record import BUS_KINDS
from convlog.core.wire import legacy_to_bus
from convlog.store.checkpoint import Checkpointer, list_checkpoints, prune
from convlog.store.replay import load
from convlog.store.segment import ensure_layout, iter_records, list_segments
from convlog.store.verify import verify
from convlog.store.writer import SegmentWriter


class LogBuilder:
    """Writes records into a real log directory with the real writer, one at a time."""

    def __init__(self, directory: Path, segment_bytes: int = 4096) -> None:
        ensure_layout(directory)
        self.directory = directory
        self.ingest = Ingest()
        self.writer = SegmentWriter(directory, next_seq=1, segment_bytes=segment_bytes, fsync="never")
        self.seq = 0

    def add(self, event: dict, ts: str = "2026-11-21T12:00:00.000000Z", source: str = "sub") -> None:
        """Record ``event`` as received on the bus (``sub``: topic and payload) or PUSHed
        to the recorder (``pull``: the payload alone)."""
        self.seq += 1
        payload = orjson.dumps(event)
        frames = [payload] if source == "pull" else [str(event.get("session_id", "t")).encode(), payload]
        self.writer.write(self.ingest.line(frames, self.seq, ts, source), self.seq)

    def close(self) -> None:
        self.writer.close()


def all_records(directory: Path) -> list[dict]:
    return list(iter_records(directory))


def bus_event(item: Item) -> tuple[dict, str]:
    """The bus message (payload, source) that records as the fold-law ``item`` (see
    test_fold.fold_logs): the parameters at the top level beside ``type`` and
    ``session_id``, the message identity from ``meta``. An item no publisher could send
    (no string session, ``data`` not an object, a kind outside the bus vocabulary)
    becomes a payload of another shape, recorded as ``unknown``."""
    kind, session, data, meta = item[:4]
    source = item[4] if len(item) > 4 and item[4] in ("sub", "pull") else "sub"
    if kind in BUS_KINDS and isinstance(session, str) and (data is None or isinstance(data, dict)):
        message = {**(data or {}), "type": kind, "session_id": session}
        if isinstance(meta, dict):
            message |= {key: meta[key] for key in ("message_id", "sender", "role") if meta.get(key) is not None}
    else:
        message = {"unexpected": "shape", "kind": kind if isinstance(kind, str) else None}
    try:
        orjson.dumps(message)
    except TypeError:  # an integer past 64 bits in a junk value
        message = {"unexpected": "shape"}
    return message, source


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=fold_logs(min_ops=2, max_ops=50), data=st.data())
def test_state_from_a_checkpoint_plus_tail_equals_folding_everything(items: list[Item], data: st.DataObject) -> None:
    """For random logs (mostly valid forks, rewinds, checkpoints, crystals, streams and
    copies through ``sub`` and ``pull``), checkpoints at random cut points inside the log
    and random targets: the state loaded from the newest checkpoint at or before the
    target plus the records after it equals folding every record up to the target (and
    equals loading without checkpoints)."""
    n = len(items)
    cut_points = set(data.draw(st.lists(st.integers(1, n - 1), min_size=1, max_size=3), label="cuts"))
    targets = set(data.draw(st.lists(st.integers(1, n), max_size=3), label="targets")) | {n}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "log"
        builder = LogBuilder(directory)
        for index, item in enumerate(items, 1):
            payload, source = bus_event(item)
            builder.add(payload, source=source)
            if index in cut_points:
                builder.writer.sync()
                Checkpointer(directory).checkpoint()
        builder.close()
        everything = all_records(directory)
        assert [r["seq"] for r in everything] == list(range(1, n + 1))
        for target in sorted(targets):
            expected = fold_all(everything[:target])
            loaded = load(directory, upto_seq=target)
            assert loaded.state == expected
            assert load(directory, upto_seq=target, use_checkpoints=False).state == expected
            assert loaded.refused == []
            below = [cut for cut in cut_points if cut <= target]
            if not below:
                assert loaded.checkpoint is None
                continue
            assert loaded.checkpoint is not None and int(loaded.checkpoint.name[:20]) == max(below)
            tail = everything[max(below) : target]
            if tail:
                event("checkpoint law: records folded after a loaded checkpoint")
                for kind in sorted({r["kind"] for r in tail}):
                    event(f"checkpoint law: tail after a loaded checkpoint holds {kind}")
                if any(r["source"] == "pull" for r in tail):
                    event("checkpoint law: tail after a loaded checkpoint holds a pull copy")


def build(directory: Path, count: int = 200) -> None:
    builder = LogBuilder(directory, segment_bytes=2048)
    for i in range(count):
        builder.add({"type": "message", "session_id": f"s{i % 5}", "message_id": f"m{i}", "content": f"#{i}"})
    builder.close()


def test_a_checkpoint_that_no_longer_matches_the_log_is_refused(tmp_path: Path) -> None:
    """Changing the log under a checkpoint makes replay refuse it (with the reason) and
    fall back to an older checkpoint or the start; verify reports it too."""
    directory = tmp_path / "log"
    build(directory)
    newest = Checkpointer(directory).checkpoint(label="late")
    header = orjson.loads(newest.read_bytes().split(b"\n", 1)[0])
    segment = next(path for _, path in list_segments(directory) if path.name == header["cut"]["segment"])
    data = bytearray(segment.read_bytes())
    data[10:12] = b"99" if data[10:12] != b"99" else b"88"
    segment.write_bytes(bytes(data))
    loaded = load(directory)
    assert loaded.checkpoint is None and len(loaded.refused) == 1
    assert "digest mismatch" in loaded.refused[0] and newest.name in loaded.refused[0]
    report = verify(directory)
    assert any(p.where == f"checkpoints/{newest.name}" and "digest mismatch" in p.reason for p in report.problems)


def test_automatic_checkpoints_are_pruned_labelled_kept(tmp_path: Path) -> None:
    """Only the newest K automatic checkpoints stay; labelled ones are never pruned."""
    directory = tmp_path / "log"
    builder = LogBuilder(directory)
    for i in range(20):
        builder.add({"type": "message", "session_id": "s", "message_id": f"m{i}", "content": "x"})
        builder.writer.sync()
        Checkpointer(directory, keep=3).checkpoint(label="first" if i == 0 else None)
    builder.close()
    infos = list_checkpoints(directory)
    assert [i.label for i in infos if i.label] == ["first"]
    assert [i.seq for i in infos if i.label is None] == [18, 19, 20]
    assert prune(directory, keep=1) and len([i for i in list_checkpoints(directory) if i.label is None]) == 1


def test_time_travel_on_a_real_recording_with_forks_and_rewinds(tmp_path: Path) -> None:
    """The Shearwater recovery file, replayed with forks and rewinds interleaved and one
    second of receive time per record: the state as of any time equals folding the
    records received up to then, whether a checkpoint is used or not."""
    directory = tmp_path / "log"
    builder = LogBuilder(directory, segment_bytes=64 * 1024)
    legacy = [orjson.loads(line) for line in shearwater_file("crash_recovery.jsonl").read_bytes().splitlines()]
    second = 0

    def ts() -> str:
        return f"2026-11-21T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}.000000Z"

    contexts: list[str] = []
    for index, legacy_event in enumerate(legacy):
        topic, payload = legacy_to_bus(legacy_event)
        builder.seq += 1
        builder.writer.write(builder.ingest.line([topic, payload], builder.seq, ts(), "sub"), builder.seq)
        second += 1
        context = legacy_event["ContextId"]
        if context not in contexts:
            contexts.append(context)
        if index % 50 == 25:
            builder.add({"type": "session.checkpoint", "session_id": context, "name": f"c{index}"}, ts())
            second += 1
        if index % 50 == 40:
            builder.add({"type": "session.fork", "session_id": f"{context}-fork{index}", "parent": context, "at": 1,
                         "name": f"b{index}"}, ts())
            builder.add({"type": "session.rewind", "session_id": context, "to": 1}, ts())
            second += 1
        if index in (120, 260):
            builder.writer.sync()
            Checkpointer(directory).checkpoint()
    builder.close()
    everything = all_records(directory)
    forks = [r for r in everything if r["kind"] == "session.fork"]
    assert len(forks) >= 8
    for probe in (5, 130, 131, 300, second):
        as_of = f"2026-11-21T{probe // 3600:02d}:{probe // 60 % 60:02d}:{probe % 60:02d}.000000Z"
        expected = fold_all(r for r in everything if r["ts"] <= as_of)
        loaded = load(directory, as_of_ts=as_of)
        assert loaded.state == expected, f"as of {as_of}"
        assert load(directory, as_of_ts=as_of, use_checkpoints=False).state == expected
    assert load(directory, as_of_ts="2026-11-21T00:05:00.000000Z").checkpoint is not None


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_checkpoint_commands(tmp_path: Path) -> None:
    """``checkpoint create --label``, ``checkpoints`` and ``checkpoint delete`` on a real
    log; ``replay --as-of`` uses the checkpoint; bad labels and seqs are one-line errors."""
    directory = tmp_path / "log"
    build(directory, 50)
    code, out, err = run("checkpoint", "create", "--label", "before-change", "--dir", str(directory))
    assert code == 0, err
    assert out.strip() == "checkpoint 00000000000000000050-before-change.json"
    code, out, _ = run("checkpoints", "--dir", str(directory), "--json")
    rows = orjson.loads(out)
    assert [(r["seq"], r["label"], r["sessions"]) for r in rows] == [(50, "before-change", 5)]
    code, out, _ = run("replay", "--dir", str(directory), "--json", "--as-of", "50")
    assert orjson.loads(out)["from_checkpoint"] == "00000000000000000050-before-change.json"
    code, out, _ = run("sessions", "--dir", str(directory), "--json", "--as-of", "10")
    assert sum(row["messages"] for row in orjson.loads(out)) == 10
    code, _, err = run("checkpoint", "create", "--label", "no spaces", "--dir", str(directory))
    assert code == 1 and "convlog: invalid label 'no spaces'" in err
    code, _, err = run("replay", "--dir", str(directory), "--as-of", "last tuesday-ish")
    assert code == 2 and "is neither a seq nor a time" in err
    code, out, _ = run("checkpoint", "delete", "before-change", "--dir", str(directory))
    assert code == 0 and list_checkpoints(directory) == []
    code, _, err = run("checkpoint", "delete", "before-change", "--dir", str(directory))
    assert code == 1 and "no checkpoint labelled 'before-change'" in err


@pytest.mark.slow
def test_the_recorder_writes_checkpoints_on_its_timer_and_at_stop(bus: Bus, tmp_path: Path) -> None:
    """With a 1 s checkpoint interval the running recorder writes checkpoints that match
    its log, and one more at clean stop that includes ``recorder.stop``; a create while
    it runs is written through its control channel."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory, env={"CONVLOG_CHECKPOINT_INTERVAL_S": "1"})
    pub = bus.publisher(rec)
    for i in range(30):
        pub.send(b"cp", orjson.dumps({"type": "message", "session_id": "cp", "message_id": f"m{i}", "content": "x"}))
    wait_for_records(directory, 30)
    deadline = time.monotonic() + 10
    while not list_checkpoints(directory) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list_checkpoints(directory), "no checkpoint within 10 s at a 1 s interval"
    # A labelled checkpoint while it runs is written by the recorder itself.
    code, out, err = run("checkpoint", "create", "--label", "x", "--dir", str(directory))
    assert code == 0 and "written by the running recorder" in out, err
    assert any(info.label == "x" for info in list_checkpoints(directory))
    assert rec.terminate() == 0
    pub.close(0)
    found = records(directory)
    newest = list_checkpoints(directory)[-1]
    assert newest.seq == found[-1]["seq"] and found[-1]["kind"] == "recorder.stop"
    assert verify(directory).ok, verify(directory).problems
    assert load(directory).checkpoint == newest.path
    assert os.path.getsize(newest.path) > 0


def test_verify_reads_checkpoints_as_a_stream_and_still_finds_a_bad_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify never builds a checkpoint's state (its memory would grow with the log):
    it streams the state line; a state line cut short, a state that ends at another seq
    than its cut, and a binary part of the wrong size are still problems."""
    import convlog.store.checkpoint as checkpoint

    builder = LogBuilder(tmp_path / "log")
    for i in range(40):
        builder.add({"type": "message", "session_id": f"s{i % 3}", "message_id": f"m{i}", "content": f"hi {i}"})
    builder.close()
    path = Checkpointer(tmp_path / "log").checkpoint("x")
    assert path is not None

    def refuse(*_: object) -> None:
        raise AssertionError("verify built a state")

    monkeypatch.setattr(checkpoint, "load_checkpoint", refuse)
    assert verify(tmp_path / "log").ok
    header, state, blob = path.read_bytes().split(b"\n", 2)
    damaged = {
        "state line cut short": header + b"\n" + state[: len(state) // 2] + b"\n" + blob,
        "another last seq": header + b"\n" + state.replace(b'"last_seq":40', b'"last_seq":39', 1) + b"\n" + blob,
        "binary part too long": header + b"\n" + state + b"\n" + blob + b"\0",
    }
    assert b'"last_seq":40' in state
    for what, data in damaged.items():
        path.write_bytes(data)
        report = verify(tmp_path / "log")
        assert [p.where for p in report.problems] == [f"checkpoints/{path.name}"], (what, report.problems)
