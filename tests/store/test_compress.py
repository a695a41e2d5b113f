"""Sealed (zstd) segments on real files: a real recorder seals the segments it rotates
away from while recording, every reader gives the same answers on the sealed log as on
the same log plain, ``zstd -dc`` gives the original lines, ``convlog compress`` killed
with kill -9 at random points leaves a log that verifies with every record once, and
folding a sealed log equals folding it plain."""

from __future__ import annotations

import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import orjson
import pytest
import pyzstd
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_checkpoint import LogBuilder, bus_event
from test_fold import fold_logs

from conftest import Bus, answering, convlog_cmd, records, slow_disk_cmd, wait_for_records
from convlog.bus import control
from convlog.cli.commands import main
from convlog.core.record import make_line
from convlog.readers.info import gather
from convlog.readers.tail import Follower, newest
from convlog.store.checkpoint import best_start, list_checkpoints
from convlog.store.lock import LogLock, LogLockedError
from convlog.store.offline import compress
from convlog.store.recovery import recover
from convlog.store.replay import load
from convlog.store.seal import seal_segment, settle
from convlog.store.search import SearchIndex
from convlog.store.segment import (
    EVENTS,
    SEALED_BLOCK,
    SEALING_SUFFIX,
    ensure_layout,
    find_record,
    follow,
    is_sealed,
    iter_records,
    list_segments,
    open_segment,
    read_seqs,
    segment_key,
    segment_size,
)
from convlog.store.verify import verify
from convlog.store.writer import SegmentWriter

ZSTD = shutil.which("zstd") or ("/usr/bin/zstd" if Path("/usr/bin/zstd").exists() else None)


def run(*args: str) -> tuple[int, str]:
    """Run the CLI in this process; returns exit code and stdout."""
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout


def line(seq: int, session: str = "s", text: str = "x") -> bytes:
    return make_line(seq, "2026-11-21T00:00:00.000000Z", "message", "sub", "t", session, {"content": text})


def write_log(directory: Path, count: int, segment_bytes: int) -> None:
    """``count`` message records in segments of about ``segment_bytes``."""
    ensure_layout(directory)
    writer = SegmentWriter(directory, next_seq=1, segment_bytes=segment_bytes, fsync="never")
    rng = random.Random(count)
    for seq in range(1, count + 1):
        words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "zeta"]) for _ in range(rng.randint(1, 30)))
        writer.write(line(seq, f"s{seq % 5}", f"{words} {seq}"), seq)
    writer.sync()
    writer.save_state(False, "2026-11-21T00:00:00.000000Z")  # no recorder.stop: not clean
    writer.close()


def plain_copy(directory: Path, target: Path) -> Path:
    """A copy of a log with every sealed segment decompressed back to its plain file
    (by ``pyzstd``, not by the code under test), checkpoints and state kept."""
    shutil.copytree(directory, target, ignore=shutil.ignore_patterns("recorder.lock", "index"))
    for path in sorted((target / EVENTS).iterdir()):
        if path.name.endswith(".jsonl.zst"):
            path.with_name(path.name.removesuffix(".zst")).write_bytes(pyzstd.decompress(path.read_bytes()))
            path.unlink()
    return target


def sealed_names(directory: Path) -> list[str]:
    return [path.name for _, path in list_segments(directory) if is_sealed(path)]


# --------------------------------------------------------------------------- the recorder seals


def test_recorder_seals_rotated_segments_and_every_reader_agrees(bus: Bus, tmp_path: Path) -> None:
    """A real recorder with 4 KiB segments (compress = "zstd" by default) seals the
    segments it rotates away from while it records (the live one stays plain). On the
    log so recorded, every reader gives what it gives on the same log with each sealed
    segment decompressed back to a plain file: replay/fold, sessions, show, search and
    reindex, tail -n and a follower's position, export, info, verify, find-by-seq and
    the checkpoint written at stop."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory, "--segment-bytes", "4096")
    pub = bus.publisher(rec, heartbeat_s=None)
    for i in range(300):
        pub.send(f"s{i % 4}".encode(), orjson.dumps({"type": "message", "session_id": f"s{i % 4}",
                                                "message_id": f"m{i}", "sender": "alice",
                                                "content": f"hello {i} {'needle' if i % 50 == 7 else 'hay'}"}))
    wait_for_records(directory, 300)
    deadline = time.monotonic() + 30
    while len(sealed_names(directory)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(sealed_names(directory)) >= 5, [p.name for _, p in list_segments(directory)]
    assert not is_sealed(list_segments(directory)[-1][1])  # the live segment stays plain
    answering(directory, rec)
    control.request(directory, "checkpoint", timeout_s=10, label="mid")
    pub.close(0)
    assert rec.terminate() == 0, rec.output()
    assert list_checkpoints(directory)

    plain = plain_copy(directory, tmp_path / "plain")
    assert not sealed_names(plain)
    segments = list_segments(directory)
    assert [segment_key(p) for _, p in segments] == [p.name for _, p in list_segments(plain)]
    assert [segment_size(p) for _, p in segments] == [p.stat().st_size for _, p in list_segments(plain)]

    # the records, by every way of reading them
    everything = records(plain)
    assert records(directory) == everything
    assert list(follow(directory)) == list(follow(plain))
    last = everything[-1]["seq"]
    for seq in range(1, last + 1):
        assert find_record(directory, seq) == find_record(plain, seq)
    picked = random.Random(1).sample(range(1, last + 1), 20)
    assert read_seqs(directory, picked) == read_seqs(plain, picked)
    assert list(iter_records(directory, start_seq=last // 2)) == list(iter_records(plain, start_seq=last // 2))

    # the fold, with and without the checkpoints (whose cuts were taken on plain segments)
    assert load(directory).state == load(plain).state == load(plain, use_checkpoints=False).state
    assert load(directory).checkpoint is not None and load(directory).refused == []
    start_sealed, start_plain = best_start(directory), best_start(plain)
    assert start_sealed.position == start_plain.position and start_sealed.state == start_plain.state

    # tail: the newest records and a follower that goes on from the position
    assert newest(directory, 25, raw=True) == newest(plain, 25, raw=True)
    follower = Follower(directory, newest(directory, 0).position, last - 10, raw=True)
    assert [t.line for t in follower.poll().records] == [t.line for t in Follower(
        plain, newest(plain, 0).position, last - 10, raw=True).poll().records]

    # info: the same counts (the segments' names and bytes on disk differ by design)
    info_sealed, info_plain = gather(directory), gather(plain)
    for data in (info_sealed, info_plain):
        for segment in data["segments"]:
            segment.pop("name"), segment.pop("bytes")
        data.pop("directory", None), data.pop("disk", None)
    assert info_sealed == info_plain

    # verify
    for log in (directory, plain):
        report = verify(log)
        assert report.ok, report.problems
        assert report.records == len(everything)

    # the CLI readers print the same
    exported_at = re.compile(r'"exported_at":"[^"]*"')
    for args in (["sessions"], ["show", "s1"], ["show", "s2", "--format", "json"], ["show", "s3", "--as-of", "150"],
                 ["tail", "-n", "7"], ["search", "needle"], ["export", "--all", "--format", "json"], ["replay"]):
        code_sealed, out_sealed = run(*args, "--dir", str(directory))
        code_plain, out_plain = run(*args, "--dir", str(plain))
        assert code_sealed == code_plain == 0, (args, out_sealed)
        out_sealed = exported_at.sub("", out_sealed.replace(str(directory), "DIR"))
        assert out_sealed == exported_at.sub("", out_plain.replace(str(plain), "DIR")), args

    # the search index: built on the sealed log, then rebuilt
    with SearchIndex(directory) as index, SearchIndex(plain) as other:
        assert index.count() == other.count() and index.last_seq == other.last_seq
    assert run("reindex", "--dir", str(directory))[0] == 0
    assert run("search", "needle", "--dir", str(directory)) == run("search", "needle", "--dir", str(plain))

    # zstd -dc gives each sealed segment's lines byte for byte
    if ZSTD is not None:
        for _, path in segments:
            if is_sealed(path):
                out = subprocess.run([ZSTD, "-dc", str(path)], capture_output=True, check=True).stdout
                assert out == (plain / EVENTS / segment_key(path)).read_bytes()


def test_recorder_with_compress_none_leaves_segments_plain_and_seals_them_on_the_next_start(
    bus: Bus, tmp_path: Path
) -> None:
    """``compress = "none"`` keeps every segment plain; a later recorder with the
    default seals the finished ones left plain at its start, and the log reads the same."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory, "--segment-bytes", "4096", env={"CONVLOG_COMPRESS": "none"})
    pub = bus.publisher(rec, heartbeat_s=None)
    for i in range(120):
        pub.send(b"s", orjson.dumps({"type": "message", "session_id": "s", "content": f"hello {i}"}))
    wait_for_records(directory, 120)
    pub.close(0)
    assert rec.terminate() == 0, rec.output()
    assert len(list_segments(directory)) >= 4 and not sealed_names(directory)
    before = records(directory)
    rec = bus.recorder(directory, "--segment-bytes", "4096")
    answering(directory, rec)
    deadline = time.monotonic() + 30
    while len(sealed_names(directory)) < len(list_segments(directory)) - 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(sealed_names(directory)) == len(list_segments(directory)) - 1
    assert rec.terminate() == 0, rec.output()
    assert records(directory)[: len(before)] == before
    assert verify(directory).ok


def test_recorder_config_rejects_a_bad_compress_setting(tmp_path: Path) -> None:
    """The config loader names the file, line and reason for a bad compress setting."""
    from convlog.recorder.config import ConfigError, load_config

    config = tmp_path / "convlog.toml"
    config.write_text('[recorder]\ndir = "log"\ncompress = "gzip"\n')
    with pytest.raises(ConfigError) as info:
        load_config(config, env={})
    assert "convlog.toml" in str(info.value) and ":3:" in str(info.value) and "zstd" in str(info.value)
    config.write_text('[recorder]\ncompress_level = 30\n')
    with pytest.raises(ConfigError, match=r":2: .*compress_level.*1 to 22"):
        load_config(config, env={})
    config.write_text('[recorder]\ncompress = "none"\ncompress_level = 9\n')
    loaded = load_config(config, env={})
    assert (loaded.compress, loaded.compress_level) == ("none", 9)


# --------------------------------------------------------------------------- convlog compress


def test_convlog_compress_seals_all_but_the_live_segment_byte_for_byte(tmp_path: Path) -> None:
    """``convlog compress`` seals every finished segment (a large one in several 1 MiB
    frames), prints a summary, leaves the live one plain, refuses while a writer holds
    the lock, and ``zstd -dc`` of each sealed segment is its original bytes; seeking
    into a multi-frame segment finds every record."""
    directory = tmp_path / "log"
    write_log(directory, 60000, segment_bytes=3 << 20)
    originals = {path.name: path.read_bytes() for _, path in list_segments(directory)}
    assert len(originals) >= 3
    with LogLock(directory, command="test"), pytest.raises(LogLockedError):
        compress(directory)
    code, out = run("compress", str(directory))
    assert code == 0, out
    assert f"compressed {len(originals) - 1} segments: " in out and "ratio" in out
    segments = list_segments(directory)
    assert [is_sealed(p) for _, p in segments] == [True] * (len(segments) - 1) + [False]
    for _, path in segments[:-1]:
        with open_segment(path) as fh:
            assert fh.seek_table_info[0] >= 2  # frames
        if ZSTD is not None:
            out_bytes = subprocess.run([ZSTD, "-dc", str(path)], capture_output=True, check=True).stdout
            assert out_bytes == originals[segment_key(path)]
        assert pyzstd.decompress(path.read_bytes()) == originals[segment_key(path)]
    for seq in random.Random(2).sample(range(1, 60001), 300):
        assert find_record(directory, seq)["seq"] == seq
    # the lines around each block boundary of the in-memory search, and many seqs at once
    ends = [(record["seq"], offset) for record, _key, offset in follow(directory)]
    near = [seq for (seq, end), (_, before) in zip(ends[1:], ends, strict=False)
            if any(abs(before - k * SEALED_BLOCK) < 700 for k in range(1, 4))]
    assert len(near) >= 10
    for seq in near:
        assert find_record(directory, seq)["seq"] == seq
    wanted = list(range(1, 60001, 97))
    assert sorted(read_seqs(directory, wanted)) == wanted
    assert find_record(directory, 60001) is None
    assert "nothing to compress" in run("compress", str(directory))[1]
    assert verify(directory).ok


def test_a_crash_while_sealing_leaves_one_complete_copy_that_recovery_settles(tmp_path: Path) -> None:
    """The states a crash can leave (a partial temp file; the sealed file beside the
    plain one) read the same, verify with notes only, and recovery removes the leftovers."""
    directory = tmp_path / "log"
    write_log(directory, 3000, segment_bytes=40000)
    expected = records(directory)
    first, second = [path for _, path in list_segments(directory)[:2]]
    (first.with_name(first.name + SEALING_SUFFIX.removeprefix(".jsonl"))).write_bytes(b"(\xb5/\xfd partial")
    kept = second.read_bytes()
    seal_segment(second)
    second.write_bytes(kept)  # as if the crash came before the plain one was removed
    assert records(directory) == expected
    report = verify(directory)
    assert report.ok, report.problems
    assert len([note for note in report.notes if "recovery removes" in note]) == 2
    with LogLock(directory, command="test"):
        recover(directory)
    names = sorted(p.name for p in (directory / EVENTS).iterdir())
    assert not any(name.endswith(".tmp") for name in names) and second.name not in names
    assert records(directory) == expected
    assert settle(directory) == []


@pytest.mark.slow
def test_kill9_of_convlog_compress_at_random_points_leaves_a_verified_log(tmp_path: Path) -> None:
    """``convlog compress`` killed with kill -9 at 24 random moments (spread over its
    whole run, on a normal and on a slow disk) leaves a log that ``convlog verify`` accepts, with every record readable
    exactly once, and a second ``convlog compress`` completes it."""
    original = tmp_path / "original"
    write_log(original, 40000, segment_bytes=150_000)
    expected = records(original)
    count = len(list_segments(original))
    # How long a whole run takes (interpreter start included), to spread the kills over it.
    # A third of the runs on a normal disk, the rest on a slow one (conftest.slow_disk_cmd),
    # so kills land among the renames and removals however loaded the machine is.
    durations = {}
    for slow in (False, True):
        trial = tmp_path / f"trial{slow}"
        shutil.copytree(original, trial)
        started = time.monotonic()
        subprocess.run((slow_disk_cmd if slow else convlog_cmd)("compress", str(trial)), check=True,
                       capture_output=True)
        durations[slow] = time.monotonic() - started
    rng = random.Random(20261205)
    interrupted = 0
    for attempt in range(24):
        directory = tmp_path / f"log{attempt}"
        shutil.copytree(original, directory)
        slow = attempt % 3 != 0
        proc = subprocess.Popen((slow_disk_cmd if slow else convlog_cmd)("compress", str(directory)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2 * durations[slow], durations[slow]))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        sealed = len(sealed_names(directory))
        interrupted += 0 < sealed < count - 1 or any(
            p.name.endswith(".tmp") for p in (directory / EVENTS).iterdir())
        code, out = run("verify", str(directory))
        assert code == 0, out
        assert records(directory) == expected
        assert load(directory, use_checkpoints=False).state == load(original, use_checkpoints=False).state
        code, out = run("compress", str(directory))
        assert code == 0, out
        assert len(sealed_names(directory)) == count - 1
        assert records(directory) == expected and verify(directory).ok
        shutil.rmtree(directory)
    assert interrupted >= 5  # most kills landed while it was sealing, not before or after


# --------------------------------------------------------------------------- the fold law


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=fold_logs(min_ops=2, max_ops=60), segment_bytes=st.integers(300, 6000),
       seal=st.lists(st.booleans(), min_size=1, max_size=40))
def test_folding_a_sealed_log_equals_folding_it_plain(items: list, segment_bytes: int, seal: list[bool]) -> None:
    """For random logs, random segment sizes and a random choice of segments to seal,
    the fold (and every record, by seq and forwards) is the same as on the plain log."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "log"
        builder = LogBuilder(directory, segment_bytes=segment_bytes)
        for item in items:
            payload, source = bus_event(item)
            builder.add(payload, source=source)
        builder.close()
        plain_state = load(directory, use_checkpoints=False).state
        plain_records = records(directory)
        for index, (_first, path) in enumerate(list_segments(directory)[:-1]):
            if seal[index % len(seal)]:
                seal_segment(path, level=1)
        assert load(directory, use_checkpoints=False).state == plain_state
        assert records(directory) == plain_records
        for record in plain_records:
            assert find_record(directory, record["seq"]) == record


def test_verify_reports_a_damaged_sealed_segment(tmp_path: Path) -> None:
    """A sealed segment cut short is a problem ``convlog verify`` names (exit 1); it
    costs readers its own records, never the reader: every other record is read, the
    damage is reported as a read error, and every read command still answers."""
    directory = tmp_path / "log"
    write_log(directory, 2000, segment_bytes=40000)
    compress(directory)
    segments = list_segments(directory)
    (first, sealed), (after, _) = segments[1], segments[2]
    assert is_sealed(sealed)
    sealed.write_bytes(sealed.read_bytes()[:-20])
    code, out = run("verify", str(directory))
    assert code == 1
    assert f"events/{sealed.name}: unreadable: " in out
    errors: list[tuple[str, int, str]] = []
    seqs = [record["seq"] for record, _, _ in follow(directory, None, lambda *e: errors.append(e))]
    assert seqs == [*range(1, first), *range(after, 2001)]
    assert [(name, reason.split(":")[0]) for name, _, reason in errors] == [
        (segment_key(sealed), "unreadable from here")]
    assert find_record(directory, first) is None and find_record(directory, after)["seq"] == after
    for command in (["sessions"], ["show", "s1"], ["search", "alpha"], ["info"], ["tail", "-n", "3"],
                    ["export", "s1", "--format", "csv"], ["replay"]):
        code, out = run(*command, "--dir", str(directory))
        assert code == 0 and "Traceback" not in out, (command, out[-500:])
