"""``convlog info`` and ``convlog sessions`` answer from the newest checkpoint plus the
records after it: the same figures as a pass over the whole log, without reading the
records the checkpoint covers; a checkpoint written before the fold kept its tally
(format 2) is read by a pass from the start."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from convlog.cli.commands import main
from convlog.core.record import make_line
from convlog.readers.info import gather
from convlog.store import segment
from convlog.store.checkpoint import Checkpointer, list_checkpoints
from convlog.store.seal import compress_log
from convlog.store.segment import ensure_layout
from convlog.store.writer import SegmentWriter

TOTAL = 3000
CHECKPOINT_AT = 2800


def _line(seq: int) -> bytes:
    """A varied record: stamped bus messages of 7 sessions (some with a time of their own),
    a gap, a drop, a control record, a stream, an import, a heartbeat."""
    ts = f"2026-11-21T00:{seq // 60 % 60:02d}:{seq % 60:02d}.000000Z"
    session = f"s{seq % 7}"
    stamp = {"publisher": "p1" if seq % 2 else "p2", "seq": seq // 2 + 1}
    if seq == 1:
        return make_line(seq, ts, "recorder.start", "recorder", None, None, {"pid": 1})
    if seq % 500 == 0:
        return make_line(seq, ts, "recorder.gap", "recorder", None, None,
                         {"publisher": "p1", "first": 10_000 + seq, "last": 10_002 + seq, "missing": 3})
    if seq % 700 == 0:
        return make_line(seq, ts, "recorder.dropped", "recorder", None, None, {"messages": seq // 100})
    if seq % 900 == 0:
        return make_line(seq, ts, "session.delete", "control", None, "s3", {"type": "session.delete"})
    if seq % 50 in (1, 2):
        kind = "message.delta" if seq % 50 == 1 else "message.end"
        return make_line(seq, ts, kind, "sub", session, session,
                         {"convlog": stamp, "type": kind, "session_id": session, "content": "part"},
                         {"message_id": f"st{seq // 50}"})
    if seq % 333 == 0:
        return make_line(seq, ts, "publisher.heartbeat", "sub", "p1", None,
                         {"convlog": stamp, "type": "publisher.heartbeat"})
    data: dict[str, Any] = {"convlog": stamp, "type": "message", "session_id": session, "content": f"hello {seq}"}
    if seq % 3 == 0:
        data["timestamp"] = f"2025-0{1 + seq % 9}-1{seq % 10}T10:00:00Z"
    source = "import" if seq % 97 == 0 else "sub"
    return make_line(seq, ts, "message", source, session, session, data, {"message_id": f"m{seq}"})


def build(directory: Path, checkpoint: bool = True, sealed: bool = True) -> None:
    """``TOTAL`` records in ~20 KB segments, a checkpoint after ``CHECKPOINT_AT`` (by the
    recorder's Checkpointer), the finished segments sealed."""
    ensure_layout(directory)
    writer = SegmentWriter(directory, next_seq=1, segment_bytes=20_000, fsync="never")
    for seq in range(1, TOTAL + 1):
        writer.write(_line(seq), seq)
        if checkpoint and seq == CHECKPOINT_AT:
            Checkpointer(directory).checkpoint()
    writer.close()
    if sealed:
        compress_log(directory, level=1)


def comparable(info: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on where the pass started."""
    return {key: value for key, value in info.items()
            if key not in ("directory", "read", "checkpoints", "disk", "sessions")} | {
        "sessions": {k: v for k, v in info["sessions"].items() if k != "from_checkpoint"}}


@pytest.fixture()
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The seqs of the log lines parsed by the segment readers (follow, find, iter)."""
    seqs: list[int] = []
    original = segment.parse_line

    def counting(line: bytes) -> dict[str, Any]:
        record = original(line)
        seqs.append(record["seq"])
        return record

    monkeypatch.setattr(segment, "parse_line", counting)
    return seqs


def test_info_reads_only_the_records_after_the_newest_checkpoint(tmp_path: Path, parsed: list[int]) -> None:
    """With a checkpoint at 2,800 of 3,000 records, ``gather`` parses the 200 records
    after it (and the first and last records of the log, for the time span), and says
    so in ``read``."""
    directory = tmp_path / "log"
    build(directory)
    parsed.clear()
    info = gather(directory)
    assert info["sessions"]["from_checkpoint"] == f"{CHECKPOINT_AT:020d}.json"
    assert info["read"]["records"] == TOTAL - CHECKPOINT_AT
    assert sorted(set(parsed)) == [1, *range(CHECKPOINT_AT + 1, TOTAL + 1)]
    assert info["records"] == TOTAL and info["last_seq"] == TOTAL


def test_info_from_a_checkpoint_equals_info_from_the_whole_log(tmp_path: Path) -> None:
    """The figures from the checkpoint plus the tail are those of a pass over every
    record: counts by kind and source, own times, publishers, gaps, drops, sessions,
    records per segment, time span; and they are what a direct count gives."""
    with_checkpoint = tmp_path / "with"
    build(with_checkpoint)
    without = tmp_path / "without"
    shutil.copytree(with_checkpoint, without)
    shutil.rmtree(without / "checkpoints")
    (without / "checkpoints").mkdir()
    info, whole = gather(with_checkpoint), gather(without)
    assert info["sessions"]["from_checkpoint"] and whole["sessions"]["from_checkpoint"] is None
    assert whole["read"]["records"] == TOTAL
    assert comparable(info) == comparable(whole)
    records = [orjson.loads(_line(seq)) for seq in range(1, TOTAL + 1)]
    assert info["by_source"] == {s: sum(1 for r in records if r["source"] == s) for s in ("control", "import",
                                                                                       "recorder", "sub")}
    own = sorted(r["data"]["timestamp"] for r in records if r["kind"] == "message" and "timestamp" in r["data"])
    assert info["own"]["records"] == len(own)
    assert (info["own"]["first_ts"], info["own"]["last_ts"]) == (own[0].replace("Z", ".000000Z"),
                                                                 own[-1].replace("Z", ".000000Z"))
    drops = [r["data"]["messages"] for r in records if r["kind"] == "recorder.dropped"]
    assert info["drops"] == {"records": len(drops), "messages": sum(drops)}
    assert info["gaps"] == {"records": TOTAL // 500, "missing": 3 * (TOTAL // 500)}
    assert (info["first_ts"], info["last_ts"]) == (records[0]["ts"], records[-1]["ts"])
    assert sum(s["records"] for s in info["segments"]) == TOTAL
    assert {p["id"] for p in info["publishers"]} == {"p1", "p2"}
    assert info["sessions"]["deleted"] == 1


def test_info_with_a_format_2_checkpoint_reads_the_whole_log(tmp_path: Path, parsed: list[int]) -> None:
    """A checkpoint whose state has no tally (written before format 3) cannot answer
    for the records before it: ``info`` reads them too, only to count them, folds from
    the checkpoint, and gives the same figures; ``sessions`` starts from it."""
    directory = tmp_path / "log"
    build(directory)
    reference = gather(directory)
    path = list_checkpoints(directory)[-1].path
    header, state_line, blob = path.read_bytes().split(b"\n", 2)
    state = orjson.loads(state_line)
    state["state"]["version"] = 2
    del state["state"]["tally"]
    path.write_bytes(b"\n".join([header, orjson.dumps(state), blob]))
    parsed.clear()
    old = gather(directory)
    assert old["sessions"]["from_checkpoint"] == path.name and old["read"]["records"] == TOTAL
    assert sorted(set(parsed)) == list(range(1, TOTAL + 1))
    assert comparable(old) == comparable(reference)
    result = CliRunner().invoke(main, ["replay", "--json", "--dir", str(directory)])
    assert orjson.loads(result.stdout)["from_checkpoint"] == path.name


def test_sessions_reads_only_the_records_after_the_newest_checkpoint(tmp_path: Path, parsed: list[int]) -> None:
    """``convlog sessions`` folds from the newest checkpoint: it parses only the records
    after it, and lists what a fold of the whole log lists."""
    directory = tmp_path / "log"
    build(directory)
    parsed.clear()
    result = CliRunner().invoke(main, ["sessions", "--json", "--all", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    assert set(parsed) == set(range(CHECKPOINT_AT + 1, TOTAL + 1))
    plain = tmp_path / "plain"
    build(plain, checkpoint=False, sealed=False)
    assert orjson.loads(result.stdout) == orjson.loads(
        CliRunner().invoke(main, ["sessions", "--json", "--all", "--dir", str(plain)]).stdout)


@pytest.mark.parametrize("keep_checkpoint", [True, False])
def test_info_after_a_prune_describes_the_records_the_log_holds(tmp_path: Path, keep_checkpoint: bool) -> None:
    """After ``convlog prune`` let the oldest segments go, ``info`` takes the base's
    counts off: records, kinds, sources, gaps and drops are those of the records left
    (counted directly), the segments' records add up to them, and the sessions are the
    whole fold's; from the base alone and from a checkpoint after it alike."""
    directory = tmp_path / "log"
    build(directory)
    sessions_before = gather(directory)["sessions"]
    size = sum(path.stat().st_size for _, path in segment.list_segments(directory))
    result = CliRunner().invoke(main, ["prune", "--dir", str(directory), "--max-bytes", str(size // 2)])
    assert result.exit_code == 0, result.output
    assert (directory / "base.json").exists()
    if not keep_checkpoint:
        for info in list_checkpoints(directory):
            info.path.unlink()
    else:
        Checkpointer(directory).checkpoint()
    info = gather(directory)
    assert info["sessions"]["from_checkpoint"] == ("base.json" if not keep_checkpoint else
                                                   list_checkpoints(directory)[-1].path.name)
    left = list(segment.iter_records(directory))
    assert info["records"] == len(left) == sum(s["records"] for s in info["segments"])
    assert info["first_seq"] == left[0]["seq"] > 1
    assert info["by_kind"] == dict(sorted(Counter(r["kind"] for r in left).items()))
    assert info["by_source"] == dict(sorted(Counter(r["source"] for r in left).items()))
    gaps = [r for r in left if r["kind"] == "recorder.gap"]
    assert info["gaps"] == {"records": len(gaps), "missing": sum(r["data"]["missing"] for r in gaps)}
    drops = [r["data"]["messages"] for r in left if r["kind"] == "recorder.dropped"]
    assert info["drops"] == {"records": len(drops), "messages": sum(drops)}
    assert {k: v for k, v in info["sessions"].items() if k != "from_checkpoint"} == {
        k: v for k, v in sessions_before.items() if k != "from_checkpoint"}
    stamped = Counter(r["data"]["convlog"]["publisher"] for r in left
                      if r["source"] == "sub" and r["kind"] != "publisher.heartbeat")
    assert {p["id"]: p["messages"] for p in info["publishers"]} == dict(stamped)
