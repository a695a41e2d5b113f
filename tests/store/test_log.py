"""The segment log on real files: writing, rotation, reading by seq, tail recovery, the lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convlog.core.record import make_line
from convlog.store.lock import LogLock, LogLockedError
from convlog.store.recovery import recover, scan_tail
from convlog.store.segment import (
    EVENTS,
    QUARANTINE_FILE,
    RECOVERY,
    iter_records,
    list_segments,
    read_seqs,
    segment_name,
)
from convlog.store.state import read_state, write_state
from convlog.store.writer import SegmentWriter


def line(seq: int, text: str = "x") -> bytes:
    return make_line(seq, "2026-11-21T00:00:00.000000Z", "message", "sub", "t", "s", {"content": text})


def write_records(directory: Path, first: int, last: int, **kwargs) -> SegmentWriter:
    writer = SegmentWriter(directory, next_seq=first, **kwargs)
    for seq in range(first, last + 1):
        writer.write(line(seq, "y" * 50), seq)
    return writer


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    directory = tmp_path / "log"
    (directory / EVENTS).mkdir(parents=True)
    (directory / RECOVERY).mkdir()
    return directory


def test_segments_rotate_by_size_and_are_named_by_first_seq(logdir: Path) -> None:
    """Segments rotate at the size limit, each named by its first record's seq."""
    writer = write_records(logdir, 1, 100, segment_bytes=2000)
    writer.close()
    segments = list_segments(logdir)
    assert len(segments) > 3
    for first, path in segments:
        assert path.name == segment_name(first) and len(path.name) == 20 + len(".jsonl")
        with path.open("rb") as fh:
            assert orjson.loads(fh.readline())["seq"] == first
    assert [r["seq"] for r in iter_records(logdir)] == list(range(1, 101))


def test_reader_starts_at_the_segment_holding_start_seq(logdir: Path) -> None:
    """Reading from a seq opens the right segment and stops at upto_seq; read_seqs fetches by seq."""
    write_records(logdir, 1, 100, segment_bytes=2000).close()
    assert [r["seq"] for r in iter_records(logdir, start_seq=57, upto_seq=60)] == [57, 58, 59, 60]
    got = read_seqs(logdir, [3, 99, 42, 500])
    assert sorted(got) == [3, 42, 99]


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_fsync_policies_durable_position(logdir: Path, policy: str) -> None:
    """always fsyncs each record; interval after the group-commit bound; never only at close."""
    writer = write_records(logdir, 1, 10, fsync=policy, interval_ms=1)
    if policy == "always":
        assert writer.durable_seq == 10 and writer.fsyncs == 10
    elif policy == "never":
        assert writer.durable_seq == 0 and writer.due_ns() is None
    else:
        import time

        time.sleep(0.002)
        assert writer.maybe_sync() and writer.durable_seq == 10
    writer.close()
    assert writer.durable_seq == 10


def test_state_file_is_written_atomically(logdir: Path) -> None:
    """state.json round-trips and no temp file is left behind."""
    write_state(logdir, {"durable_seq": 5, "clean": True})
    assert read_state(logdir) == {"durable_seq": 5, "clean": True}
    assert sorted(p.name for p in (logdir / RECOVERY).iterdir()) == ["state.json"]


def test_recover_moves_torn_tail_to_quarantine(logdir: Path) -> None:
    """A torn last line is quarantined with its reason and the segment truncated to whole records."""
    write_records(logdir, 1, 20).close()
    segment = list_segments(logdir)[-1][1]
    whole = segment.stat().st_size
    with segment.open("ab") as fh:
        fh.write(b'{"seq": 21, "ts": "torn')
    report = recover(logdir)
    assert report.last_seq == 20 and report.quarantined_bytes == len(b'{"seq": 21, "ts": "torn')
    assert "torn line" in report.reason
    assert segment.stat().st_size == whole
    entry = orjson.loads((logdir / RECOVERY / QUARANTINE_FILE).read_bytes())
    assert entry["text"] == '{"seq": 21, "ts": "torn' and entry["segment"] == segment.name
    assert recover(logdir).quarantined_bytes == 0  # idempotent


def test_recover_quarantines_bad_lines_and_keeps_the_records_after_them(logdir: Path) -> None:
    """A garbage line and a record whose seq goes back are quarantined; the valid records
    after them stay, byte for byte; a seq that jumps forward is kept and reported as a gap."""
    write_records(logdir, 1, 5).close()
    segment = list_segments(logdir)[-1][1]
    before = segment.read_bytes()
    seven, eight = line(7), line(8)
    with segment.open("ab") as fh:
        fh.write(b"not a record\n" + line(3) + seven + eight)
    report = recover(logdir)
    assert report.last_seq == 8 and report.quarantined_lines == 2 and report.kept_after == 2
    assert report.reason.startswith("invalid record") and "1 more" in report.reason
    assert report.seq_gaps == [[6, 6]]
    assert segment.read_bytes() == before + seven + eight
    entries = [orjson.loads(e) for e in (logdir / RECOVERY / QUARANTINE_FILE).read_bytes().splitlines()]
    assert entries[0]["reason"].startswith("invalid record: ") and entries[0]["text"] == "not a record\n"
    assert entries[1]["reason"] == "seq 3 after seq 5"
    assert recover(logdir).quarantined_bytes == 0  # idempotent


def test_recover_uses_durable_offset_from_state(logdir: Path) -> None:
    """Recovery validates only what follows the durable position recorded in state.json."""
    writer = write_records(logdir, 1, 50)
    writer.sync()
    write_state(logdir, {**writer.position(), "clean": False})
    durable = writer.offset
    writer.write(line(51), 51)  # (with its chain link: longer than line(51))
    written = writer.offset - durable
    writer.close()
    report = recover(logdir)
    assert report.last_seq == 51 and report.scanned_bytes == written > len(line(51))


def test_recover_after_rotation_with_torn_first_line(logdir: Path) -> None:
    """A new segment whose only line is torn is emptied; seq resumes from the previous segment."""
    write_records(logdir, 1, 30, segment_bytes=1000).close()
    torn = logdir / EVENTS / segment_name(31)
    torn.write_bytes(b'{"seq": 31, "ts')
    report = recover(logdir)
    assert report.last_seq == 30 and report.segment == torn.name and report.quarantined_bytes == 15
    assert torn.stat().st_size == 0
    writer = SegmentWriter(logdir, next_seq=31)
    assert writer.segment == torn
    writer.write(line(31), 31)
    writer.close()
    assert [r["seq"] for r in iter_records(logdir)] == list(range(1, 32))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(0, 30), cut=st.floats(0, 1), garbage=st.binary(max_size=40))
def test_recovery_law_keeps_exactly_the_whole_prefix(tmp_path: Path, count: int, cut: float, garbage: bytes) -> None:
    """For any crash point (a log cut at any byte, plus garbage): recovery keeps exactly the
    records whose lines were whole, and everything else lands in quarantine."""
    data = b"".join(line(seq) for seq in range(1, count + 1))
    keep = int(len(data) * cut)
    tail = data[:keep] + garbage
    valid, last, reason = scan_tail(tail, 1)
    kept = tail[:valid]
    # What is kept is whole original lines: a prefix of the real log ending at a newline...
    assert data.startswith(kept) and (not kept or kept.endswith(b"\n"))
    assert last == kept.count(b"\n")
    # ...and nothing whole is lost: every line complete before the cut is kept.
    assert valid >= data[:keep].rfind(b"\n") + 1
    # Anything not kept has a reason.
    assert (reason is None) == (valid == len(tail))


def test_lock_refuses_second_writer_and_names_holder(tmp_path: Path) -> None:
    """A second writer gets an error naming the holder's pid; the lock dies with its holder."""
    directory = tmp_path / "log"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from convlog.store.lock import LogLock; LogLock(sys.argv[1]).acquire(); "
         "print('locked', flush=True); time.sleep(60)", str(directory)],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(LogLockedError, match=f"pid {holder.pid}"):
            LogLock(directory).acquire()
    finally:
        holder.kill()
        holder.wait()
    LogLock(directory).acquire().release()  # released by the kernel at kill -9


def test_reader_skips_torn_tail_and_reports_invalid_lines(logdir: Path) -> None:
    """Readers never yield a torn last line and report invalid lines with segment and line number."""
    write_records(logdir, 1, 3).close()
    segment = list_segments(logdir)[-1][1]
    content = segment.read_bytes().split(b"\n")
    segment.write_bytes(content[0] + b"\nnot json\n" + b"\n".join(content[1:]) + b'{"seq": 4')
    errors = []
    got = [r["seq"] for r in iter_records(logdir, on_error=lambda s, n, r: errors.append((s, n)))]
    assert got == [1, 2, 3] and errors == [(segment.name, 2)]
    os.sync()


def test_recover_steps_over_an_invalid_last_line_of_the_previous_segment(logdir: Path) -> None:
    """If the last segment holds only a torn line and the previous segment ends with an
    invalid one, recovery still finds the last valid record instead of failing."""
    write_records(logdir, 1, 30, segment_bytes=1000).close()
    last_first, last_path = list_segments(logdir)[-1]
    with last_path.open("ab") as fh:
        fh.write(b"garbage that is not json\n")
    torn = logdir / EVENTS / segment_name(last_first + 1000)
    torn.write_bytes(b'{"seq": ')
    report = recover(logdir)
    assert report.last_seq == 30 and report.quarantined_bytes == len(b'{"seq": ')


def test_find_record_by_seq_without_scanning(logdir: Path) -> None:
    """Every seq is found by bisecting segments and binary-searching byte offsets, also
    with invalid lines in between; absent seqs give None; sparse read_seqs agrees."""
    writer = SegmentWriter(logdir, next_seq=1, segment_bytes=64 * 1024)
    for seq in range(1, 3001):
        writer.write(line(seq, "z" * (seq % 97)), seq)
        if seq == 1500:
            writer.write(b"not a record\n", seq)
    writer.close()
    from convlog.store.segment import find_record

    assert len(list_segments(logdir)) > 3
    for seq in (1, 2, 777, 1500, 1501, 2047, 3000):
        assert find_record(logdir, seq)["seq"] == seq
    assert find_record(logdir, 0) is None and find_record(logdir, 3001) is None
    assert sorted(read_seqs(logdir, [5, 2999, 1400])) == [5, 1400, 2999]
    assert all(find_record(logdir, seq)["seq"] == seq for seq in range(1, 3001, 37))
