"""Retention on real logs: ``convlog prune`` lets the oldest finished segments go after
writing the log's base, every fold from the base equals the fold of everything, time
travel before the horizon is a clear error, archives keep what went with a manifest and
read back, a real recorder keeps its disk under ``max_bytes`` by itself, and kill -9 at
random points of a prune leaves a log that verifies with every kept record once."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_checkpoint import LogBuilder, bus_event
from test_compress import line, write_log
from test_fold import fold_logs

from conftest import Bus, answering, convlog_cmd, records, slow_disk_cmd
from convlog.bus import control
from convlog.cli.commands import main
from convlog.core.retention import Limits, SegmentSpan, leftovers, plan, reserve_live
from convlog.readers.info import gather
from convlog.store.archive import MANIFEST_FILE, check_archive, file_sha256
from convlog.store.checkpoint import BeforeHorizonError, Checkpointer, list_checkpoints, read_horizon
from convlog.store.offline import compress, prune_offline
from convlog.store.replay import PRUNED_TEXT, load
from convlog.store.retention import log_bytes, prune
from convlog.store.search import SearchIndex
from convlog.store.segment import EVENTS, list_segments
from convlog.store.verify import verify
from convlog.store.writer import SegmentWriter


def run(*args: str) -> tuple[int, str]:
    """Run the CLI in this process; returns exit code and output (stdout and stderr)."""
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def keep_after(directory: Path, segments: int) -> int:
    """The ``max_bytes`` that lets exactly the first ``segments`` segments go."""
    return sum(path.stat().st_size for _, path in list_segments(directory)[segments:])


# --------------------------------------------------------------------------- the plan (pure)


def span(first: int, last: int, ts: str, size: int, finished: bool = True) -> SegmentSpan:
    return SegmentSpan(f"{first:020d}.jsonl", first, last, ts, ts, size, finished)


def test_plan_lets_the_oldest_finished_segments_go_by_age_then_by_size() -> None:
    now = datetime(2026, 12, 6, tzinfo=UTC)
    old = "2026-08-01T00:00:00.000000Z"
    young = "2026-12-05T00:00:00.000000Z"
    spans = [span(1, 10, old, 100), span(11, 20, old, 100), span(21, 30, young, 100), span(31, 40, young, 100),
             span(41, 45, young, 50, finished=False)]
    assert plan(spans, Limits(), now) == []
    by_age = plan(spans, Limits(max_age_s=timedelta(days=90).total_seconds()), now)
    assert [(d.span.first_seq, d.reason) for d in by_age] == [(1, "max_age"), (11, "max_age")]
    by_size = plan(spans, Limits(max_bytes=260), now)
    assert [(d.span.first_seq, d.reason) for d in by_size] == [(1, "max_bytes"), (11, "max_bytes")]
    both = plan(spans, Limits(max_age_s=timedelta(days=1).total_seconds(), max_bytes=10), now)
    # never the live segment, however far over the limits the log is
    assert [d.span.first_seq for d in both] == [1, 11, 21, 31]
    # a young segment blocks the older-by-name ones after it: only a prefix goes
    mixed = [span(1, 10, young, 100), span(11, 20, old, 100), span(21, 30, young, 1, finished=False)]
    assert plan(mixed, Limits(max_age_s=timedelta(days=2).total_seconds()), now) == []


def test_leftovers_and_the_live_reserve_are_pure_decisions() -> None:
    """Segments wholly at or before the base's seq are leftovers (never the live one);
    the live segment counts as at least the reserve, a finished one as it is."""
    ts = "2026-12-01T00:00:00.000000Z"
    spans = [span(1, 10, ts, 100), span(11, 20, ts, 100), span(21, 25, ts, 30, finished=False)]
    assert [s.first_seq for s in leftovers(spans, 10)] == [1]
    assert [s.first_seq for s in leftovers(spans, 20)] == [1, 11]
    assert leftovers(spans, 0) == [] and leftovers(spans[2:], 99) == []
    assert [s.bytes for s in reserve_live(spans, 64)] == [100, 100, 64]
    assert reserve_live(spans, 10) == spans and reserve_live(spans[:2], 999) == spans[:2]


def test_config_reads_the_retention_table_and_names_a_bad_value(tmp_path: Path) -> None:
    from convlog.recorder.config import ConfigError, load_config

    good = tmp_path / "good.toml"
    good.write_text('[retention]\nmax_age = "90d"\nmax_bytes = "50GiB"\naction = "archive"\n'
                    'archive_dir = "/srv/archive"\ninterval_s = 60\n')
    config = load_config(good, env={})
    assert config.retention() == Limits(90 * 86400, 50 * 2**30)
    assert (config.retention_action, str(config.retention_archive_dir), config.retention_interval_s) == \
        ("archive", "/srv/archive", 60)
    assert load_config(env={}).retention().active is False
    for text, key, at in (('[retention]\nmax_age = "soon"\n', "retention.max_age", 2),
                            ('[retention]\n\nmax_bytes = "12 parsecs"\n', "retention.max_bytes", 3),
                            ('[retention]\naction = "shred"\n', "retention.action", 2),
                            ('[retention]\nmax_age = "1d"\naction = "archive"\n', "retention.archive_dir", 3)):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(bad, env={})
        assert (caught.value.key, caught.value.line) == (key, at), str(caught.value)
    env = load_config(env={"CONVLOG_RETENTION_MAX_BYTES": "1MiB"})
    assert env.retention_max_bytes == 2**20
    with pytest.raises(ConfigError, match="CONVLOG_RETENTION_MAX_AGE"):
        load_config(env={"CONVLOG_RETENTION_MAX_AGE": "-3d"})


# --------------------------------------------------------------------------- the fold law


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=fold_logs(min_ops=8, max_ops=70), segment_bytes=st.integers(300, 3000),
       cuts=st.lists(st.floats(0.2, 1), min_size=1, max_size=3), checkpoints=st.lists(st.floats(0, 1), max_size=3),
       archive=st.booleans(), sealed=st.booleans())
def test_fold_from_the_base_and_the_tail_equals_folding_everything(
    items: list, segment_bytes: int, cuts: list[float], checkpoints: list[float], archive: bool, sealed: bool
) -> None:
    """For random logs (forks, rewinds, checkpoints, crystals, deletes, streams), random
    segment sizes, checkpoints at random seqs and one to three prunes at random segment
    boundaries (sealed or plain, deleted or archived): folding the pruned log (from its
    newest checkpoint, or from its base alone) equals folding the whole log, at its end
    and as of every seq after the horizon; before the horizon is an error naming it; an
    archive folds to the state at its last seq."""
    with tempfile.TemporaryDirectory() as tmp:
        directory, whole = Path(tmp) / "log", Path(tmp) / "whole"
        builder = LogBuilder(directory, segment_bytes=segment_bytes)
        marks = sorted(int(f * len(items)) for f in checkpoints)
        for index, item in enumerate(items, 1):
            payload, source = bus_event(item)
            builder.add(payload, source=source)
            while marks and marks[0] <= index:
                marks.pop(0)
                builder.writer.sync()
                Checkpointer(directory).checkpoint()
        builder.close()
        if sealed:
            compress(directory, level=1)
        shutil.copytree(directory, whole)
        last = builder.seq
        expected = {seq: load(whole, upto_seq=seq, use_checkpoints=False).state for seq in range(1, last + 1)}
        segments = len(list_segments(directory))
        event(f"segments: {min(segments, 6)}{'+' if segments >= 6 else ''}")
        done = prunes = 0
        for cut in sorted(cuts):
            goes = int(cut * (segments - 1))
            if goes <= done:
                continue
            report = prune(directory, Limits(max_bytes=keep_after(whole, goes)),
                           "archive" if archive else "delete", Path(tmp) / "archive" if archive else None)
            assert len(report.segments) == goes - done
            done, prunes = goes, prunes + 1
        horizon = read_horizon(directory)
        if horizon is None:
            event("nothing pruned")
            assert done == 0
            return
        event(f"prunes: {prunes}")
        spanning = [sid for sid, s in expected[last].sessions.items() if s.first_seq <= horizon.seq < s.last_seq]
        event(f"a session spans the horizon: {bool(spanning)}")
        assert load(directory).state == expected[last]
        assert load(directory, use_checkpoints=False).state == expected[last]
        for seq in range(horizon.seq, last + 1):
            assert load(directory, upto_seq=seq).state == expected[seq]
        if horizon.seq > 1:
            with pytest.raises(BeforeHorizonError, match=f"seq {horizon.seq}"):
                load(directory, upto_seq=horizon.seq - 1)
        assert verify(directory).ok, verify(directory).problems
        assert [r["seq"] for r in records(directory)] == list(range(horizon.seq + 1, last + 1))
        if archive:
            assert check_archive(Path(tmp) / "archive").ok
            assert load(Path(tmp) / "archive").state == expected[horizon.seq]


# --------------------------------------------------------------------------- the CLI


def test_convlog_prune_deletes_the_oldest_segments_and_readers_start_at_the_base(tmp_path: Path) -> None:
    """``prune --dry-run`` changes nothing; ``prune --max-bytes`` lets the oldest whole
    segments go and writes the base; sessions, show (the pruned messages are named as
    such), search, info and verify work from it; ``--as-of`` before the horizon is one
    readable line; a ``recorder.pruned`` record says what went."""
    directory = tmp_path / "log"
    write_log(directory, 6000, segment_bytes=40_000)
    compress(directory)
    whole = tmp_path / "whole"
    shutil.copytree(directory, whole)
    before = sorted(p.name for p in (directory / EVENTS).iterdir())
    limit = keep_after(directory, 4) + 2000  # room for what the prune appends (recovered, pruned)

    code, out = run("prune", str(directory), "--max-bytes", str(limit), "--dry-run")
    assert code == 0 and "would delete 4 segments" in out, out
    assert sorted(p.name for p in (directory / EVENTS).iterdir()) == before and read_horizon(directory) is None

    with SearchIndex(directory) as index:  # indexed before the prune: its rows for pruned seqs go
        index.update()
    code, out = run("prune", str(directory), "--max-bytes", str(limit), "--json")
    assert code == 0, out
    data = orjson.loads(out)
    horizon = read_horizon(directory)
    assert horizon is not None and data["base"] == horizon.seq == data["last_seq"]
    assert data["segments"] == [name.removesuffix(".zst") for name in before[:4]]
    assert data["reasons"] == {"max_bytes": 4} and data["action"] == "delete"
    assert log_bytes(directory) <= limit
    last = records(directory)[-1]
    assert last["kind"] == "recorder.pruned" and last["data"]["segments"] == data["segments"]

    # the fold, sessions and show start from the base
    state = load(whole).state
    assert load(directory, upto_seq=state.last_seq).state == state
    assert run("sessions", "--dir", str(directory))[1] == run("sessions", "--dir", str(whole))[1]
    shown = run("show", "s1", "--dir", str(directory))[1]
    full = run("show", "s1", "--dir", str(whole))[1]
    assert shown.splitlines()[0] == full.splitlines()[0]  # the same count of messages
    assert PRUNED_TEXT in shown and shown.splitlines()[-1] == full.splitlines()[-1]
    # search finds what is kept, not what went
    kept, gone = horizon.seq + 5, horizon.seq - 5
    assert run("search", f"{kept}", "--dir", str(directory))[1].count(f"seq {kept}") == 1
    assert f"seq {gone}" not in run("search", f"{gone}", "--dir", str(directory))[1]
    # time travel before the horizon: one line naming it
    code, out = run("show", "s1", "--as-of", str(horizon.seq - 10), "--dir", str(directory))
    assert code == 1 and out.count("\n") == 1 and f"horizon: records up to seq {horizon.seq}" in out, out
    # info and verify
    info = gather(directory)
    assert info["horizon"]["seq"] == horizon.seq and info["horizon"]["pruned"]["segments"] == 4
    assert "horizon:" in run("info", "--dir", str(directory))[1]
    report = verify(directory)
    assert report.ok, report.problems
    assert any("starts after its base" in note for note in report.notes)
    # a second prune by age: nothing is that old
    code, out = run("prune", str(directory), "--max-age", "3650d")
    assert code == 0 and "nothing to prune" in out


def test_prune_misuse_is_one_readable_line(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    write_log(directory, 200, segment_bytes=4000)
    for args, needle in ((["prune", str(directory)], "no retention limit"),
                         (["prune", str(directory), "--max-age", "soon"], "--max-age"),
                         (["prune", str(directory), "--max-bytes", "-5"], "--max-bytes"),
                         (["prune", str(tmp_path / "none"), "--max-age", "1d"], "no event log")):
        code, out = run(*args)
        assert code != 0 and needle in out and "Traceback" not in out, (args, out)


def test_archive_keeps_what_went_with_a_manifest_and_reads_back(tmp_path: Path) -> None:
    """Two prunes into one archive: the archive is a log (``--dir`` reads it: verify,
    sessions, show) whose manifest names every segment with its sha256; ``import
    --archive`` reads its records into another log; a changed file is refused."""
    directory = tmp_path / "log"
    write_log(directory, 4000, segment_bytes=30_000)
    compress(directory)
    whole = tmp_path / "whole"
    shutil.copytree(directory, whole)
    Checkpointer(directory).checkpoint()  # at the end: it stays; the archive takes none
    archive = tmp_path / "archive"
    # (+ 1500 bytes: room for the records a prune appends)
    first = prune_offline(directory, Limits(max_bytes=keep_after(directory, 2) + 1500), "archive", archive)
    second = prune_offline(directory, Limits(max_bytes=keep_after(directory, 3) + 1500), "archive", archive)
    assert len(first.segments) == 2 and len(second.segments) == 3
    manifest = orjson.loads((archive / MANIFEST_FILE).read_bytes())
    assert [e["first_seq"] for e in manifest["segments"]] == [d.span.first_seq for d in
                                                              [*first.segments, *second.segments]]
    for entry in manifest["segments"]:
        assert file_sha256(archive / EVENTS / entry["name"]) == entry["sha256"]
    assert check_archive(archive).ok
    assert verify(archive).ok
    cut = second.segments[-1].span.last_seq
    assert load(archive).state == load(whole, upto_seq=cut).state
    assert run("show", "s2", "--dir", str(archive))[0] == 0
    assert [r["seq"] for r in records(archive)] == list(range(1, cut + 1))
    # the log's base, the archive's horizon
    assert read_horizon(directory).seq == cut and read_horizon(archive) is None

    other = tmp_path / "other"
    code, out = run("import", "--archive", str(archive), "--dir", str(other))
    assert code == 0 and f"imported {cut:,} records" in out, out
    imported = records(other)
    assert [r["data"] for r in imported if r["kind"] == "message"] == \
        [r["data"] for r in records(whole)[:cut] if r["kind"] == "message"]
    victim = archive / EVENTS / manifest["segments"][1]["name"]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    code, out = run("import", "--archive", str(archive), "--dir", str(tmp_path / "third"))
    assert code == 1 and "sha256 differs" in out and out.count("\n") == 1, out


def test_purging_an_archive_keeps_its_manifest_true(tmp_path: Path) -> None:
    """``convlog purge SESSION --dir ARCHIVE`` (right to erasure reaches the archive too):
    the session's text is gone from the archive's files, and its manifest is brought up
    to date, so the archive still checks and imports."""
    directory = tmp_path / "log"
    write_log(directory, 3000, segment_bytes=30_000)
    compress(directory)
    archive = tmp_path / "archive"
    prune_offline(directory, Limits(max_bytes=keep_after(directory, 3) + 1500), "archive", archive)
    secret = [r["data"]["content"] for r in records(archive) if r.get("session") == "s3"][:5]
    assert secret
    code, out = run("purge", "s3", "--yes", "--dir", str(archive))
    assert code == 0, out
    check = check_archive(archive)
    assert check.ok, check.problems
    assert not any(r.get("data") for r in records(archive) if r.get("session") == "s3" and r["kind"] == "message")
    for text in secret:
        assert all(text.encode() not in line for line in _decompressed(archive)), text
    code, out = run("import", "--archive", str(archive), "--dir", str(tmp_path / "other"))
    assert code == 0, out


def _decompressed(directory: Path) -> list[bytes]:
    """The bytes of every file under ``directory``, zstd files decompressed."""
    import pyzstd

    out = []
    for path in directory.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            out.append(pyzstd.decompress(data) if path.name.endswith(".zst") else data)
    return out


# --------------------------------------------------------------------------- the recorder


def received(directory: Path, count: int, timeout_s: float = 30.0) -> None:
    """Wait until the running recorder says it received ``count`` bus messages (the log
    cannot say: retention lets the oldest go)."""
    deadline = time.monotonic() + timeout_s
    got = 0
    while time.monotonic() < deadline:
        try:
            got = control.request(directory, "status", timeout_s=5)["received"].get("sub", 0)
        except control.ControlError:
            got = 0
        if got >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"the recorder received only {got} of {count} messages in {timeout_s} s")


def test_a_recorder_keeps_its_log_under_max_bytes_and_prunes_on_request(bus: Bus, tmp_path: Path) -> None:
    """A real recorder with 4 KiB segments and ``[retention] max_bytes = "16KiB"``
    (checked every second) lets its oldest sealed segments go while it records 5× that
    bound, writing ``recorder.pruned`` records; every session still folds with all its
    messages; ``convlog prune`` while it runs is carried out by it; the log verifies."""
    directory = tmp_path / "log"
    config = tmp_path / "convlog.toml"
    config.write_text('[retention]\nmax_bytes = "16KiB"\ninterval_s = 1\n')
    rec = bus.recorder(directory, "--segment-bytes", "4096", "--config", str(config), "--metrics", "127.0.0.1:0")
    pub = bus.publisher(rec, heartbeat_s=None)
    answering(directory, rec)
    sent = 0
    peak = 0
    for _ in range(20):
        for _message in range(60):
            sent += 1
            pub.send(f"s{sent % 3}".encode(), orjson.dumps({
                "type": "message", "session_id": f"s{sent % 3}", "message_id": f"m{sent}", "sender": "ann",
                "content": f"message {sent} " + "words " * random.Random(sent).randint(5, 40)}))
        received(directory, sent)
        time.sleep(0.3)
        peak = max(peak, log_bytes(directory))
    bound = 16 * 1024  # max_bytes: the live segment counts as a whole one, so it holds between prunes
    deadline = time.monotonic() + 30
    while log_bytes(directory) > bound and time.monotonic() < deadline:
        time.sleep(0.2)
    horizon = read_horizon(directory)
    assert horizon is not None, rec.output()
    print(f"peak {peak} bytes, now {log_bytes(directory)}, pruned {horizon.pruned}")
    # (a segment just rotated counts plain until it is sealed and the prune after it runs)
    assert log_bytes(directory) <= bound and peak <= bound + 4096
    assert horizon.pruned["bytes"] + log_bytes(directory) >= 5 * bound  # it wrote 5x the bound
    pruned = [r for r in records(directory) if r["kind"] == "recorder.pruned"]
    assert pruned and all(r["source"] == "recorder" for r in pruned)
    # every session still has every message it was sent, folded from the base
    state = load(directory).state
    assert sum(len(state.visible(f"s{i}")) for i in range(3)) == sent

    code, out = run("status", "--dir", str(directory))
    assert "retention: max_bytes 16,384 (delete); last delete of" in out, out
    status = control.request(directory, "status", timeout_s=5)
    scraped = urllib.request.urlopen(status["metrics"], timeout=5).read().decode()
    segments = re.search(r"^convlog_pruned_segments_total (\S+)$", scraped, re.M)
    # every prune was this recorder's (the log began with it); more may have come since
    assert segments is not None and float(segments.group(1)) >= horizon.pruned["segments"], scraped
    code, out = run("prune", str(directory), "--max-bytes", "1", "--dry-run")
    assert code == 0 and "would delete" in out, out
    code, out = run("prune", str(directory), "--max-bytes", "1", "--json")  # done by the recorder
    assert code == 0 and orjson.loads(out)["segments"], out
    assert read_horizon(directory).seq == orjson.loads(out)["last_seq"]
    pub.close(0)
    assert rec.terminate() == 0, rec.output()
    report = verify(directory)
    assert report.ok, report.problems


# --------------------------------------------------------------------------- kill -9


@pytest.mark.slow
def test_kill9_of_convlog_prune_at_random_points_leaves_a_verified_log(tmp_path: Path) -> None:
    """``convlog prune`` (deleting, or archiving) killed with kill -9 at 24 random moments
    (a third on a normal disk, the rest on a slow one, so that kills land both in the
    fold before anything changes and among the removals after the base is written)
    leaves a log that ``convlog verify`` accepts, whose records after its horizon are
    each there once and fold to the same state as the whole log, and a second prune
    completes it (the archive then matches its manifest)."""
    original = tmp_path / "original"
    write_log(original, 30000, segment_bytes=300_000)
    compress(original, level=1)
    expected = records(original)
    last = expected[-1]["seq"]
    whole_state = load(original).state
    segments = len(list_segments(original))
    goes = segments * 2 // 3
    # + room for what the prunes append (recorder.recovered, recorder.pruned naming the
    # segments), less than any segment so the same segments go however often it is run
    slack = min(path.stat().st_size for _, path in list_segments(original)[:-1]) // 2
    assert slack > 8000
    limit = keep_after(original, goes) + slack

    def command(directory: Path, archive: Path | None, slow: bool) -> list[str]:
        args = ["prune", str(directory), "--max-bytes", str(limit)] + (["--archive", str(archive)] if archive else [])
        return slow_disk_cmd(*args) if slow else convlog_cmd(*args)

    durations = {}
    for slow in (False, True):  # how long a whole run takes, to spread the kills over it
        trial = tmp_path / f"trial{slow}"
        shutil.copytree(original, trial)
        started = time.monotonic()
        subprocess.run(command(trial, tmp_path / f"a{slow}", slow), check=True, capture_output=True)
        durations[slow] = time.monotonic() - started
    rng = random.Random(20261206)
    after_base = 0
    for attempt in range(24):
        directory = tmp_path / f"log{attempt}"
        archive = tmp_path / f"archive{attempt}" if attempt % 2 else None
        slow = attempt % 3 != 0
        shutil.copytree(original, directory)
        proc = subprocess.Popen(command(directory, archive, slow), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3 * durations[slow], durations[slow]))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        horizon = read_horizon(directory)
        after_base += horizon is not None and len(list_segments(directory)) > segments - goes
        code, out = run("verify", str(directory))
        assert code == 0, out
        start = horizon.seq + 1 if horizon is not None else 1
        assert [r for r in records(directory) if start <= r["seq"] <= last] == expected[start - 1:]
        assert load(directory, upto_seq=last).state == whole_state
        code, out = run("prune", str(directory), "--max-bytes", str(limit),
                        *(["--archive", str(archive)] if archive else []))
        assert code == 0, out
        horizon = read_horizon(directory)
        assert horizon is not None and len(list_segments(directory)) == segments - goes
        assert [r for r in records(directory) if r["seq"] <= last] == expected[horizon.seq:]
        assert load(directory, upto_seq=last).state == whole_state and verify(directory).ok
        if archive is not None:
            assert check_archive(archive).ok
            assert load(archive).state == load(original, upto_seq=horizon.seq).state
        shutil.rmtree(directory)
        if archive is not None:
            shutil.rmtree(archive, ignore_errors=True)
    assert after_base >= 3, after_base  # kills landed between the base and the last removal


def test_checkpoints_before_the_horizon_go_and_later_ones_stay_usable(tmp_path: Path) -> None:
    """A prune removes the checkpoints whose cut it passes (labelled ones too: their
    records are gone) and keeps the later ones, which stay usable: their cuts list
    pruned segments, which are no longer checked."""
    directory = tmp_path / "log"
    write_log(directory, 1500, segment_bytes=20_000)
    assert Checkpointer(directory, keep=100).checkpoint("early") is not None
    writer = SegmentWriter(directory, next_seq=1501, segment_bytes=20_000, fsync="never")
    for seq in range(1501, 3001):
        writer.write(line(seq, f"s{seq % 5}", f"later {seq}"), seq)
    writer.sync()
    writer.save_state(False, "2026-11-21T00:00:00.000000Z")
    writer.close()
    assert Checkpointer(directory, keep=100).checkpoint("end") is not None
    whole = load(directory, use_checkpoints=False).state
    report = prune(directory, Limits(max_bytes=keep_after(directory, len(list_segments(directory)) - 2)))
    assert report.base is not None and report.base > 1500
    assert [name.split("-", 1)[1] for name in report.checkpoints] == ["early.json"]
    assert [info.label for info in list_checkpoints(directory)] == ["end"]
    replay = load(directory)
    assert replay.checkpoint is not None and replay.checkpoint.name.endswith("-end.json") and not replay.refused
    assert replay.state == whole
    assert verify(directory).ok


def test_a_prune_that_fails_makes_the_recorder_unhealthy_and_it_records_on(bus: Bus, tmp_path: Path) -> None:
    """An archive directory that cannot be made (a file is in the way): every prune
    fails, the recorder records on, says why in a ``recorder.error`` record and in
    ``status`` (unhealthy, exit 1), and removes nothing; once the way is clear, the next
    prune succeeds and status is healthy again."""
    directory = tmp_path / "log"
    blocker = tmp_path / "archive"
    blocker.write_text("not a directory")
    config = tmp_path / "convlog.toml"
    config.write_text(f'[retention]\nmax_bytes = "8KiB"\naction = "archive"\narchive_dir = "{blocker}"\n'
                      "interval_s = 1\n")
    rec = bus.recorder(directory, "--segment-bytes", "4096", "--config", str(config))
    pub = bus.publisher(rec, heartbeat_s=None)
    answering(directory, rec)
    for i in range(400):
        pub.send(b"s", orjson.dumps({"type": "message", "session_id": "s", "message_id": f"m{i}",
                                     "content": f"message {i} " + "words " * 20}))
    received(directory, 400)
    deadline = time.monotonic() + 20
    status: dict = {}
    while time.monotonic() < deadline:
        status = control.request(directory, "status", timeout_s=5)
        if not status["healthy"]:
            break
        time.sleep(0.2)
    assert any("retention cannot be applied" in p for p in status["problems"]), status
    assert run("status", "--dir", str(directory))[0] == 1
    assert read_horizon(directory) is None and records(directory)[0]["seq"] == 1
    assert any(r["kind"] == "recorder.error" and "retention" in r["data"]["what"] for r in records(directory))
    blocker.unlink()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not control.request(directory, "status", timeout_s=5)["healthy"]:
        time.sleep(0.2)
    assert control.request(directory, "status", timeout_s=5)["healthy"]
    assert read_horizon(directory) is not None and check_archive(blocker).ok
    pub.close(0)
    assert rec.terminate() == 0, rec.output()
    assert verify(directory).ok


def test_a_damaged_base_is_one_line_everywhere_and_the_recorder_records_on(bus: Bus, tmp_path: Path) -> None:
    """base.json is a file under the log directory, so untrusted: garbage, a bad cut, an
    empty file or a truncated one makes every fold one line naming it (exit 1), verify
    names it as a problem, and a recorder started on the log still records."""
    directory = tmp_path / "log"
    write_log(directory, 2000, segment_bytes=20_000)
    prune(directory, Limits(max_bytes=keep_after(directory, 3)))
    good = (directory / "base.json").read_bytes()
    for data in (b"garbage\n", b'{"format":1,"cut":{"seq":"x"}}\n', b"", good[:-10]):
        (directory / "base.json").write_bytes(data)
        for args in (["sessions"], ["show", "s1"], ["info"], ["replay"]):
            code, out = run(*args, "--dir", str(directory))
            assert code == 1 and out.count("\n") == 1 and "base.json" in out and "Traceback" not in out, (args, out)
        report = verify(directory)
        assert not report.ok and report.problems[0].where == "base.json", report.problems
    rec = bus.recorder(directory)
    pub = bus.publisher(rec, heartbeat_s=None)
    pub.send(b"s", orjson.dumps({"type": "message", "session_id": "s", "message_id": "after", "content": "still here"}))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(r.get("data", {}).get("message_id") == "after"
                                                  for r in records(directory) if r["kind"] == "message"):
        time.sleep(0.05)
    assert any(r["kind"] == "message" and r["data"].get("message_id") == "after" for r in records(directory))
    pub.close(0)
    assert rec.terminate() == 0, rec.output()
    (directory / "base.json").write_bytes(good)
    assert verify(directory).ok


def test_a_damaged_manifest_is_one_line_for_import_and_prune(tmp_path: Path) -> None:
    """manifest.json is untrusted too: garbage, a list of numbers, entries without seqs or
    with a path for a name make ``import --archive`` and ``prune --archive`` stop with
    one line (exit 1), nothing imported and nothing removed."""
    directory = tmp_path / "log"
    write_log(directory, 1500, segment_bytes=20_000)
    archive = tmp_path / "archive"
    prune_offline(directory, Limits(max_bytes=keep_after(directory, 2) + 1500), "archive", archive)
    segments = len(list_segments(directory))
    for data in (b"garbage", b'{"format":1,"segments":[1,2]}', b'{"format":1,"segments":[{"name":"x"}]}',
                 b'{"format":1,"segments":[{"name":"../../etc/passwd","first_seq":1,"last_seq":2}]}'):
        (archive / MANIFEST_FILE).write_bytes(data)
        code, out = run("import", "--archive", str(archive), "--dir", str(tmp_path / "other"))
        assert code == 1 and out.count("\n") == 1 and "Traceback" not in out, (data, out)
        assert not (tmp_path / "other" / EVENTS).exists() or not list_segments(tmp_path / "other")
        code, out = run("prune", str(directory), "--max-bytes", "1", "--archive", str(archive))
        assert code == 1 and out.count("\n") == 1 and "Traceback" not in out, (data, out)
        assert len(list_segments(directory)) == segments


def test_what_prune_and_purge_create_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """With umask 022, ``convlog prune --archive`` and ``convlog purge`` (as processes)
    create base.json, the archive's files and directories, the rewritten segments and
    rebuilt index private: 0600 files, 0700 directories."""
    directory = tmp_path / "log"
    write_log(directory, 2000, segment_bytes=20_000)
    archive = tmp_path / "archive"
    before = os.umask(0o022)
    try:
        subprocess.run(convlog_cmd("prune", str(directory), "--max-bytes", str(keep_after(directory, 3) + 1500),
                                   "--archive", str(archive)), check=True, capture_output=True)
        subprocess.run(convlog_cmd("search", "alpha", "--dir", str(directory)), check=True, capture_output=True)
        subprocess.run(convlog_cmd("purge", "s2", "--yes", "--dir", str(directory)), check=True, capture_output=True)
    finally:
        os.umask(before)
    created = [directory / "base.json", archive, archive / MANIFEST_FILE, archive / EVENTS,
               *(archive / EVENTS).iterdir(), *(directory / "index").iterdir(),
               *(p for _, p in list_segments(directory))]
    for path in created:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
