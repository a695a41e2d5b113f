"""``convlog purge`` on real logs: a log recorded by a real recorder through a real broker
(several sessions, a fork of the purged one, sealed segments, checkpoints, a search
index, a quarantine entry and exports under the log directory), purged offline and
with the recorder running; afterwards no byte of the purged session's text is left in
any file under the directory, every other session reads as before, the log verifies
and its seqs are gapless. ``convlog purge`` killed with kill -9 at every one of its
durable steps (and at random moments) leaves a log that verifies with every record
readable once, and running it again finishes the job. A property: purging a random
session of a random log folds to the state of the log without that session's records,
with and without the rebuilt checkpoints."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest
import pyzstd
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_checkpoint import LogBuilder, bus_event
from test_compress import ZSTD
from test_fold import fold_logs

from conftest import Bus, answering, convlog_cmd, records, running_bus, wait_for_records
from convlog.cli.commands import main
from convlog.cli.commands.sessions import PURGE_STOP_AT
from convlog.cli.session_control import purge_session
from convlog.core.chain import BODY_DIGEST, CHAIN
from convlog.core.fold import fold_all
from convlog.core.purge import purged_line
from convlog.core.record import PURGED_KIND, is_purged, parse_line
from convlog.store.checkpoint import Checkpointer, list_checkpoints, load_checkpoint
from convlog.store.purge import BASE_FILE, PURGE_FILE, purge
from convlog.store.replay import load
from convlog.store.seal import seal_segment
from convlog.store.segment import RECOVERY, is_sealed, list_segments, open_segment, segment_key
from convlog.store.verify import verify

#: The session purged, its fork, and two sessions that must not change.
PURGED, FORK, OTHERS = "patient-7", "patient-7/alt", ("other-1", "other-2")
#: Words only the purged session's records hold: message text, a streamed message, the
#: crystal's summary, the title, the sender, the checkpoint name, the model, message ids.
SECRET = ("zanzibarquux", "plumbobvortex", "quillfeatherglyph", "vortexdeltapart", "flibbertigibbet",
          "glimmerwick", "kestrelhue", "heronpeak", "snorkelwhale", "msgidtoucan", "tornwordmarzipan")
#: Words of the fork's own messages and of the other sessions (they stay).
FORK_WORD, OTHER_WORDS = "heronlantern", ("alphaone", "betatwo")
_EXPORTED = re.compile(rb'"(exported_at|as_of_seq)":("[^"]*"|\d+)')


def run(*args: str) -> tuple[int, str, str]:
    """Run the CLI in this process; returns exit code, stdout, stderr."""
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def event(kind: str, session: str, **fields: object) -> tuple[bytes, bytes]:
    return session.encode(), orjson.dumps({"type": kind, "session_id": session, **fields})


def secret_message(i: int, word: str) -> tuple[bytes, bytes]:
    return event("message", PURGED, message_id=f"msgidtoucan{i}", sender="kestrelhue", role="user",
                 content=f"{word} number {i} " + "y" * 80)


def other_message(session: str, i: int) -> tuple[bytes, bytes]:
    word = OTHER_WORDS[OTHERS.index(session)]
    return event("message", session, message_id=f"{session}-m{i}", sender="ann", content=f"{word} number {i} "
                 + "z" * 80)


def record_log(bus: Bus, directory: Path) -> None:
    """A real recording: the purged session (title, messages, a stream, a session
    checkpoint, a crystal, usage), a fork of it with messages of its own, two other
    sessions; 4 KiB segments sealed by the recorder, a labelled checkpoint taken
    through it and the one it writes at stop. The purged session's records come last,
    so some are in the live segment."""
    rec = bus.recorder(directory, "--segment-bytes", "4096")
    pub = bus.publisher(rec, heartbeat_s=None)
    sent = 1
    pub.send(*event("session.start", PURGED, title="Glimmerwick intake"))
    for i in range(12):
        pub.send(*other_message("other-1", i))
        pub.send(*other_message("other-2", i))
        pub.send(*secret_message(i, "zanzibarquux plumbobvortex"))
        sent += 3
    wait_for_records(directory, sent)
    answering(directory, rec)
    code, out, err = run("fork", PURGED, "--at", "2", "--name", "alt", "--dir", str(directory))
    assert code == 0, out + err
    for i in range(3):
        pub.send(*event("message", FORK, message_id=f"f{i}", sender="ann", content=f"{FORK_WORD} own {i}"))
    pub.send(*event("session.checkpoint", PURGED, name="heronpeak"))
    pub.send(*event("session.crystal", PURGED, summary="flibbertigibbet so far", upto=4))
    pub.send(*event("llm.request", PURGED, model="snorkelwhale", input_tokens=10, output_tokens=5))
    pub.send(*event("message.delta", PURGED, message_id="msgidtoucan-s", sender="kestrelhue", delta="vortexdeltapart "))
    pub.send(*event("message.end", PURGED, message_id="msgidtoucan-s", content="vortexdeltapart whole"))
    sent += 8
    wait_for_records(directory, sent)
    code, out, err = run("checkpoint", "create", "--label", "mid", "--dir", str(directory))
    assert code == 0, out + err
    for i in range(12, 20):
        pub.send(*other_message("other-1", i))
        pub.send(*other_message("other-2", i))
        sent += 2
    for i in range(20, 26):
        pub.send(*secret_message(i, "quillfeatherglyph"))
        sent += 1
    wait_for_records(directory, sent)
    pub.close(0)
    assert rec.terminate() == 0, rec.output()


def add_derived_files(directory: Path) -> None:
    """What people and readers add under a log directory: the search index (built by a
    search), a quarantine entry salvaged from a torn line of the purged session
    (``convlog recover``), exports written under the directory, and a note naming it."""
    last = list_segments(directory)[-1][1]
    next_seq = records(directory)[-1]["seq"] + 1
    torn = (b'{"seq":%d,"ts":"2026-01-01T00:00:00.000000Z","kind":"message","source":"sub","topic":"patient-7",'
            b'"session":"patient-7","data":{"type":"message","content":"tornwordmarzipan and zanzibar' % next_seq)
    with last.open("ab") as fh:
        fh.write(torn)
    assert run("recover", str(directory))[0] == 0
    assert (directory / RECOVERY / "quarantine.jsonl").read_bytes().count(b"\n") == 1
    code, out, _ = run("search", "zanzibarquux", "--json", "--dir", str(directory))
    assert code == 0 and orjson.loads(out), out
    for session, fmt in ((PURGED, "markdown"), (FORK, "json"), ("other-1", "markdown")):
        code, out, err = run("export", session, "--format", fmt, "--out", str(directory / "exports") + "/",
                             "--dir", str(directory))
        assert code == 0, out + err
    (directory / "notes.txt").write_text(f"ask about {PURGED} on monday\n")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The log of :func:`record_log` with :func:`add_derived_files`, recorded once per
    module; tests work on copies."""
    tmp = tmp_path_factory.mktemp("purge")
    directory = tmp / "log"
    with running_bus(tmp) as bus:
        record_log(bus, directory)
    add_derived_files(directory)
    sealed = [path for _, path in list_segments(directory) if is_sealed(path)]
    assert len(sealed) >= 3 and not is_sealed(list_segments(directory)[-1][1])
    assert {info.label for info in list_checkpoints(directory)} >= {"mid", None}
    yield directory


def copy_of(directory: Path, target: Path) -> Path:
    shutil.copytree(directory, target, ignore=shutil.ignore_patterns("recorder.lock"))
    return target


def file_texts(directory: Path) -> Iterator[tuple[Path, bytes]]:
    """Every file under the directory as bytes, and sealed segments decompressed too."""
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        yield path, data
        if path.name.endswith(".zst"):
            yield path, pyzstd.decompress(data)


def secrets_in(directory: Path, words: tuple[str, ...] = SECRET) -> list[tuple[str, str]]:
    """``(file, word)`` for every secret word found in any file under the directory."""
    return [(str(path.relative_to(directory)), word) for path, data in file_texts(directory)
            for word in words if word.encode() in data.lower()]


def views(directory: Path) -> dict[str, bytes]:
    """What people read of the sessions that must not change."""
    out = {}
    for args in (["show", "other-1"], ["show", "other-2", "--format", "json"], ["search", "alphaone", "--json"],
                 ["search", "betatwo"], ["export", "other-1", "--format", "json"], ["export", "other-2"],
                 ["show", "other-1", "--as-of", "30"]):
        code, text, err = run(*args, "--dir", str(directory))
        assert code == 0, (args, err)
        out[" ".join(args)] = _EXPORTED.sub(b"", text.encode())
    return out


def purged_form(before: dict, after: dict) -> dict:
    """What purging record ``before`` gives, but for ``meta.body_sha256``, a digest of its
    line (these tests keep records, not lines), taken from ``after``; the chain check of
    ``verify`` is what checks that digest."""
    expected = parse_line(purged_line({key: value for key, value in before.items() if key != CHAIN}))
    if CHAIN in before:
        expected["meta"][BODY_DIGEST] = (after.get("meta") or {}).get(BODY_DIGEST)
        expected[CHAIN] = before[CHAIN]
    return expected


def assert_purged_log(directory: Path, original: list[dict], upto: int) -> list[dict]:
    """Every record up to ``upto`` is the original or, for the purged session's, its
    purged form; seqs run 1.. without a gap; returns the records."""
    now = records(directory)
    assert [r["seq"] for r in now] == list(range(1, len(now) + 1))
    for before, after in zip(original[:upto], now, strict=False):
        if before.get("session") == PURGED and before["kind"] != PURGED_KIND:
            assert after == purged_form(before, after), before["seq"]
        else:
            assert after == before
    return now


# --------------------------------------------------------------------------- offline


def test_purge_leaves_no_byte_of_the_session_under_the_directory(recorded: Path, tmp_path: Path) -> None:
    """``convlog purge`` (a real subprocess, no recorder running) rewrites every segment
    holding the session, keeping sealed ones sealed and sealing the live one; afterwards
    no file under the directory (segments decompressed, checkpoints, the SQLite index
    and its WAL read raw, quarantine, exports) holds a word of the session's text, while
    the other sessions read, search and export exactly as before, the fork keeps its
    own messages, checkpoints keep their names, the log verifies with gapless seqs and
    ``zstd -dc`` reads every sealed segment. A second run finds nothing to purge."""
    directory = copy_of(recorded, tmp_path / "log")
    original = records(directory)
    assert secrets_in(directory)  # the test is meaningful: the words are there before
    before = views(directory)
    checkpoint_names = sorted(info.path.name for info in list_checkpoints(directory))
    holding = {segment_key(path) for _, path in list_segments(directory)
               if any(r["session"] == PURGED for r in _segment_records(path))}

    result = subprocess.run(convlog_cmd("purge", PURGED, "--yes", "--json", "--dir", str(directory)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    mine = [r for r in original if r["session"] == PURGED and r["kind"] != PURGED_KIND]
    assert report["records"] == len(mine) and report["via"] == "direct"
    assert set(report["segments"]) == holding
    assert sorted(report["checkpoints"]) == checkpoint_names
    assert report["index"] == "rebuilt" and report["quarantine"] == 1
    assert sorted(report["exports_removed"]) == ["exports/patient-7%2Falt.json", "exports/patient-7.md"]
    assert report["untouched"] == ["notes.txt"]

    assert secrets_in(directory) == []
    code, out, _ = run("search", "zanzibarquux", "--json", "--dir", str(directory))
    assert code == 0 and orjson.loads(out) == []
    assert views(directory) == before
    now = assert_purged_log(directory, original, len(original))
    assert len(now) == len(original) + 1
    record = now[-1]
    assert (record["kind"], record["source"], record["session"]) == (PURGED_KIND, "control", PURGED)
    assert record["data"]["records"] == len(mine) and record["data"]["uid"] >= 0
    assert (record["data"]["first_seq"], record["data"]["last_seq"]) == (mine[0]["seq"], mine[-1]["seq"])
    purged = [r for r in now if is_purged(r)]
    assert all(set(r["meta"]) <= {"purged", "sha256", "stored_sha256", "bytes", "body_sha256"} and r["data"] is None
               and r["topic"] is None
               for r in purged)
    assert all(r["meta"]["sha256"] == o["meta"]["sha256"] for r, o in zip(purged, mine, strict=True)
               if "sha256" in o["meta"])

    segments = list_segments(directory)
    assert all(is_sealed(path) for _, path in segments if segment_key(path) in holding)
    if ZSTD is not None:
        for _, path in segments:
            if is_sealed(path):
                out_bytes = subprocess.run([ZSTD, "-dc", str(path)], capture_output=True, check=True).stdout
                with open_segment(path) as fh:
                    assert out_bytes == fh.read()
    report_verify = verify(directory)
    assert report_verify.ok, report_verify.problems
    assert any("purged record" in note for note in report_verify.notes)

    state = load(directory).state
    assert PURGED not in state.sessions and set(OTHERS) <= set(state.sessions)
    fork = state.sessions[FORK]
    assert fork.parent is None and len(fork.visible) == 3  # its own messages; the inherited ones went
    code, out, _ = run("show", FORK, "--dir", str(directory))
    assert code == 0 and out.count(FORK_WORD) == 3
    assert sorted(info.path.name for info in list_checkpoints(directory)) == checkpoint_names
    assert load(directory).checkpoint is not None and load(directory).refused == []
    assert load(directory).state == load(directory, use_checkpoints=False).state

    code, out, _ = run("purge", PURGED, "--yes", "--dir", str(directory))
    assert code == 0 and "nothing to purge" in out
    assert len(records(directory)) == len(now)


def _segment_records(path: Path) -> list[dict]:
    with open_segment(path) as fh:
        return [parse_line(line) for line in fh if line.endswith(b"\n")]


def test_purge_before_a_time_takes_only_the_earlier_records(tmp_path: Path) -> None:
    """``--before TIME`` purges the session's records received before it and nothing
    after: the later messages stay visible, the earlier words are gone from every file."""
    directory = tmp_path / "log"
    builder = LogBuilder(directory, segment_bytes=1500)
    for i in range(10):
        builder.add({"type": "message", "session_id": "s", "message_id": f"m{i}",
                     "content": f"{'early' if i < 6 else 'late'}word{i}"}, ts=f"2026-11-21T12:00:{i:02d}.000000Z")
        builder.add({"type": "message", "session_id": "t", "message_id": f"t{i}", "content": f"keep {i}"},
                    ts=f"2026-11-21T12:00:{i:02d}.500000Z")
    builder.close()
    original = records(directory)
    code, out, err = run("purge", "s", "--before", "2026-11-21T12:00:06Z", "--yes", "--dir", str(directory))
    assert code == 0, err
    assert "purged 6 records of session s" in out
    assert secrets_in(directory, tuple(f"earlyword{i}" for i in range(6))) == []
    assert len(secrets_in(directory, tuple(f"lateword{i}" for i in range(6, 10)))) >= 4
    state = load(directory).state
    assert [message.text for message in load(directory).messages("s")] == [f"lateword{i}" for i in range(6, 10)]
    assert state.visible("t") == [r["seq"] for r in original if r["session"] == "t"]
    assert verify(directory).ok


def test_purge_takes_the_session_out_of_base_json(recorded: Path, tmp_path: Path) -> None:
    """After retention let the oldest segments go (``convlog prune``), the log's base
    ``DIR/base.json`` holds the state of the records before the horizon and cannot be
    folded again: a purge takes the session out of it (its state, streams, usage, the
    messages and senders its fork inherited), rebuilds the checkpoints after it, and the
    log verifies with no word of the session left."""
    directory = copy_of(recorded, tmp_path / "log")
    sizes = sum(path.stat().st_size for _, path in list_segments(directory))
    code, out, err = run("prune", "--max-bytes", str(sizes // 2), "--dir", str(directory))
    assert code == 0, out + err
    _cut, base = load_checkpoint(directory / BASE_FILE)
    assert PURGED in base.sessions and base.sessions[FORK].parent == PURGED
    code, out, err = run("purge", PURGED, "--yes", "--dir", str(directory))
    assert code == 0, err
    assert "base.json: the session taken out of its state" in out
    _cut, base = load_checkpoint(directory / BASE_FILE)
    assert PURGED not in base.sessions and not any(key[0] == PURGED for key in base.streams)
    assert base.sessions[FORK].parent is None and "kestrelhue" not in base.sessions[FORK].speakers
    assert set(OTHERS) <= set(base.sessions)
    assert secrets_in(directory) == []
    report = verify(directory)
    assert report.ok, report.problems
    state = load(directory).state
    assert PURGED not in state.sessions and len(state.sessions[FORK].visible) == 3
    assert state == load(directory, use_checkpoints=False).state


def test_a_dry_run_changes_nothing_and_a_pending_purge_is_finished_first(recorded: Path, tmp_path: Path) -> None:
    """``--dry-run`` lists what would go and leaves every file as it was; with an
    interrupted purge pending, another session cannot be purged until it is finished
    (one readable line), and verify notes the pending one."""
    directory = copy_of(recorded, tmp_path / "log")
    files = {path: data for path, data in file_texts(directory)}
    code, out, _ = run("purge", PURGED, "--dry-run", "--dir", str(directory))
    assert code == 0 and "would purge" in out and "nothing was changed" in out
    assert {path: data for path, data in file_texts(directory)} == files
    with pytest.raises(RuntimeError):  # as if it crashed there
        purge(directory, PURGED, on_step=_stop_after("segment"))
    assert (directory / RECOVERY / PURGE_FILE).exists()
    report = verify(directory)
    assert report.ok and any(PURGE_FILE in note and PURGED in note for note in report.notes)
    code, _, err = run("purge", "other-1", "--yes", "--dir", str(directory))
    assert code == 1 and err.count("\n") == 1 and "interrupted purge of session 'patient-7'" in err
    code, out, err = run("purge", PURGED, "--yes", "--dir", str(directory))
    assert code == 0 and "finished purging" in out, err
    assert secrets_in(directory) == [] and verify(directory).ok


def _stop_after(prefix: str):
    def on_step(name: str) -> None:
        if name.startswith(prefix):
            raise RuntimeError(f"stopped after {name}")
    return on_step


# --------------------------------------------------------------------------- a recorder running


def test_purge_with_the_recorder_running_goes_through_it(bus: Bus, tmp_path: Path) -> None:
    """With a recorder writing the log, purge asks it to rotate away from the live
    segment, waits for its sealer, rewrites the sealed segments and appends the
    session.purged record through it; the recorder goes on recording (the session's
    later messages included), its checkpoints are clean, and after it stops the log
    verifies with no word of the purged text left."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory, "--segment-bytes", "4096")
    pub = bus.publisher(rec, heartbeat_s=None)
    for i in range(20):
        pub.send(*other_message("other-1", i))
        pub.send(*secret_message(i, "zanzibarquux"))
    wait_for_records(directory, 40)
    answering(directory, rec)
    live = list_segments(directory)[-1][1]
    assert any(r["session"] == PURGED for r in _segment_records(live))
    code, out, err = run("purge", PURGED, "--yes", "--json", "--dir", str(directory))
    assert code == 0, err
    report = orjson.loads(out)
    assert report["via"] == "recorder" and report["records"] == 20 and segment_key(live) in report["segments"]
    assert is_sealed(list_segments(directory)[[segment_key(p) for _, p in list_segments(directory)].index(
        segment_key(live))][1])
    pub.send(*event("message", PURGED, message_id="later", sender="nurse", content="afterpurgeword"))
    pub.send(*other_message("other-1", 99))
    wait_for_records(directory, 42)
    code, out, _ = run("checkpoint", "create", "--label", "after", "--dir", str(directory))
    assert code == 0
    pub.close(0)
    assert rec.terminate() == 0, rec.output()
    assert secrets_in(directory, ("zanzibarquux", "kestrelhue", "msgidtoucan1")) == []
    found = records(directory)
    purged_record = [r for r in found if r["kind"] == PURGED_KIND]
    assert len(purged_record) == 1 and purged_record[0]["source"] == "control"
    state = load(directory).state
    assert len(state.sessions[PURGED].visible) == 1  # the message after the purge
    assert load(directory).state == load(directory, use_checkpoints=False).state
    assert verify(directory).ok, verify(directory).problems


# --------------------------------------------------------------------------- kill -9


def _steps(recorded: Path, tmp_path: Path) -> tuple[list[str], Path]:
    """The durable steps of a purge of the recorded log (run on a copy), and that copy."""
    names: list[str] = []
    reference = copy_of(recorded, tmp_path / "reference")
    purge_session(reference, PURGED, on_step=names.append)
    return names, reference


def _wait_stopped(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> bool:
    """Wait until ``proc`` stopped itself (SIGSTOP at its step); False when it exited."""
    process = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if process.status() == psutil.STATUS_STOPPED:
            return True
        time.sleep(0.01)
    pytest.fail(f"convlog purge (pid {proc.pid}) neither stopped nor ended within {timeout_s} s")


def _check_after_kill(directory: Path, original: list[dict], upto: int, reference: list[dict]) -> None:
    """The log a kill left verifies, reads every record once (original or purged), and a
    second purge finishes the job: no secret left, one session.purged record, the
    records up to the purge's last seq those of an uninterrupted purge."""
    code, out, _ = run("verify", str(directory))
    assert code == 0, out
    if (directory / RECOVERY / PURGE_FILE).exists():
        assert PURGE_FILE in out
    now = records(directory)
    assert [r["seq"] for r in now] == list(range(1, len(now) + 1))
    for before, after in zip(original, now, strict=False):
        assert after == before or (before["session"] == PURGED and after == purged_form(before, after))
    code, out, err = run("purge", PURGED, "--yes", "--dir", str(directory))
    assert code == 0, out + err
    assert secrets_in(directory) == []
    final = records(directory)
    assert final[:upto] == reference[:upto]
    assert len([r for r in final if r["kind"] == PURGED_KIND]) == 1
    assert not (directory / RECOVERY / PURGE_FILE).exists()
    assert verify(directory).ok
    assert load(directory).state.sessions.keys() == load(directory, use_checkpoints=False).state.sessions.keys()


@pytest.mark.slow
def test_kill9_of_convlog_purge_at_every_step_leaves_a_verified_log(recorded: Path, tmp_path: Path) -> None:
    """``convlog purge`` (a subprocess) stopped at each of its durable steps (at least
    20: the intent, the live segment's seal, each removed checkpoint, each segment's
    temporary file and its rename, each rebuilt checkpoint, the index, quarantine,
    exports, the record, the end) and killed there with kill -9, and killed at random
    moments besides: every time ``convlog verify`` accepts the log, every record is
    read once, the original or its purged form, and the same purge run again finishes."""
    names, reference_dir = _steps(recorded, tmp_path)
    assert len(names) >= 20, names
    reference = records(reference_dir)
    original = records(recorded)
    upto = len(original)
    points = list(range(1, len(names) + 1))
    if len(points) > 30:  # every step of a bigger log would take long: 30 of them, spread
        points = sorted(random.Random(7).sample(points, 30))
    for point in points:
        directory = copy_of(recorded, tmp_path / f"at{point}")
        proc = subprocess.Popen(convlog_cmd("purge", PURGED, "--yes", "--dir", str(directory)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, PURGE_STOP_AT: str(point)})
        assert _wait_stopped(proc), f"the purge ended before step {point} ({names[point - 1]})"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _check_after_kill(directory, original, upto, reference)
        shutil.rmtree(directory)
    # Random moments, inside the steps too (a temporary file half written, a seal halfway).
    trial = copy_of(recorded, tmp_path / "trial")
    started = time.monotonic()
    subprocess.run(convlog_cmd("purge", PURGED, "--yes", "--dir", str(trial)), check=True, capture_output=True)
    whole = time.monotonic() - started
    rng = random.Random(20261206)
    for attempt in range(6):
        directory = copy_of(recorded, tmp_path / f"random{attempt}")
        proc = subprocess.Popen(convlog_cmd("purge", PURGED, "--yes", "--dir", str(directory)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3 * whole, whole))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _check_after_kill(directory, original, upto, reference)
        shutil.rmtree(directory)


# --------------------------------------------------------------------------- the fold law


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=fold_logs(min_ops=3, max_ops=50), data=st.data())
def test_a_purged_log_folds_as_the_log_without_the_session(items: list, data: st.DataObject) -> None:
    """For random logs in random segments (some sealed, with checkpoints at random cuts),
    purging a random session with :func:`convlog.store.purge.purge` leaves a log whose
    fold, from the rebuilt checkpoints or from the start, equals folding the original
    records without that session's (sessions, streams, usage, gaps, refused records);
    it verifies, and every other record is unchanged."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "log"
        builder = LogBuilder(directory, segment_bytes=data.draw(st.integers(400, 3000), label="segment bytes"))
        cuts = set(data.draw(st.lists(st.integers(1, len(items)), max_size=3), label="checkpoints"))
        for index, item in enumerate(items, 1):
            payload, source = bus_event(item)
            builder.add(payload, source=source)
            if index in cuts:
                builder.writer.sync()
                Checkpointer(directory).checkpoint()
        builder.close()
        for _first, path in list_segments(directory)[:-1]:
            if data.draw(st.booleans(), label="seal"):
                seal_segment(path, level=1)
        original = records(directory)
        sessions = sorted({r["session"] for r in original if isinstance(r.get("session"), str)})
        if not sessions:
            return
        session = data.draw(st.sampled_from(sessions), label="session")
        purge(directory, session)
        expected = fold_all(r for r in original if r.get("session") != session)
        for loaded in (load(directory).state, load(directory, use_checkpoints=False).state):
            assert loaded.sessions == expected.sessions
            assert loaded.streams == expected.streams
            assert (loaded.usage, loaded.gaps, loaded.errors, loaded.unsessioned) == (
                expected.usage, expected.gaps, expected.errors, expected.unsessioned)
        now = records(directory)
        for before, after in zip(original, now, strict=False):
            assert after == (purged_form(before, after) if before.get("session") == session else before)
        assert verify(directory).ok
