"""The offline tools on real logs: ``convlog verify``, ``convlog recover`` and
``convlog import``, run through the CLI on logs written by a real recorder (a real
broker and ``convlog record`` subprocess) and on the real Shearwater recording.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from conftest import PLAIN, Bus, records, running_bus, shearwater_file, wait_for_records
from convlog.cli.commands import main
from convlog.store import replay
from convlog.store.segment import QUARANTINE_FILE, RECOVERY, list_segments, segment_name
from convlog.store.state import read_state, write_state

MESSAGES = 60


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI in this process; returns exit code, stdout, stderr."""
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def problem_lines(stdout: str) -> list[str]:
    """The problem lines of ``verify`` output (without NOTE lines and the summary)."""
    lines = stdout.splitlines()
    return [line for line in lines[:-1] if not line.startswith("NOTE ")]


def segment_lines(path: Path) -> list[bytes]:
    """The lines of a segment, newline included."""
    return path.read_bytes().splitlines(keepends=True)


def native(i: int) -> tuple[bytes, bytes]:
    event = {"type": "message", "session_id": f"s{i % 3}", "message_id": f"m{i}", "sender": "ann",
             "content": f"message number {i} " + "x" * 100}
    return f"s{i % 3}".encode(), orjson.dumps(event)


def record_some(bus: Bus, directory: Path, *extra: str) -> None:
    """Record ``MESSAGES`` native messages with a real recorder and leave it running.
    Its segments stay plain (``compress = "none"``): these tests damage and read
    segment bytes directly; sealed segments are tested in test_compress.py."""
    proc = bus.recorder(directory, *extra, env=PLAIN)
    pub = bus.publisher(proc)
    for i in range(MESSAGES):
        pub.send(*native(i))
    wait_for_records(directory, MESSAGES)
    pub.close(0)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A log written by a real recorder through a real broker and stopped cleanly by
    SIGTERM, with 4 KiB segments so that it has several. Recorded once per module; tests
    that change it work on a copy (:func:`copy_of`)."""
    tmp = tmp_path_factory.mktemp("recorded")
    directory = tmp / "log"
    with running_bus(tmp) as bus:
        record_some(bus, directory, "--segment-bytes", "4096")
        for proc in bus.procs:
            assert proc.terminate() == 0, proc.output()
    assert len(list_segments(directory)) >= 4
    yield directory


def copy_of(recorded: Path, tmp_path: Path) -> Path:
    """A private copy of the recorded log, without its lock file and without the
    checkpoint the recorder wrote at stop (damage before a cut also invalidates the
    checkpoint; that is tested in test_checkpoint.py, these tests are about segments)."""
    directory = tmp_path / "log"
    shutil.copytree(recorded, directory, ignore=shutil.ignore_patterns("recorder.lock", "*.json"))
    (directory / "recovery").mkdir(exist_ok=True)
    shutil.copy2(recorded / "recovery" / "state.json", directory / "recovery" / "state.json")
    return directory


# --------------------------------------------------------------------------- verify


def test_verify_passes_on_a_log_written_by_a_real_recorder(bus: Bus, tmp_path: Path) -> None:
    """A log recorded by a real recorder and stopped by SIGTERM verifies: no problem,
    exit 0, and the summary counts its segments, records and last seq."""
    directory = tmp_path / "log"
    record_some(bus, directory, "--segment-bytes", "8192")
    assert bus.procs[0].terminate() == 0
    found = records(directory)
    code, out, _ = run("verify", str(directory))
    assert code == 0, out
    assert problem_lines(out) == []
    segments = len(list_segments(directory))
    assert out.splitlines()[-1] == (
        f"{directory}: {segments} segments, {len(found)} records, last seq {found[-1]['seq']}, 0 problems"
    )


def _torn_tail(d: Path) -> str:
    last = list_segments(d)[-1][1]
    count = len(segment_lines(last))
    with last.open("ab") as fh:
        fh.write(b'{"seq": 999, "ts": "tor')
    return f"events/{last.name}:{count + 1}: torn last line: 23 bytes without a newline"


def _garbage_line(d: Path) -> str:
    first = list_segments(d)[0][1]
    lines = segment_lines(first)
    first.write_bytes(b"".join([*lines[:2], b"this is not json\n", *lines[2:]]))
    return rf"events/{first.name}:3: invalid record: .+"


def _seq_gap(d: Path) -> str:
    first = list_segments(d)[0][1]
    lines = segment_lines(first)
    first.write_bytes(b"".join([*lines[:2], *lines[3:]]))
    return f"events/{first.name}:3: seq 4 where 3 was expected (1 record missing)"


def _duplicate(d: Path) -> str:
    first = list_segments(d)[0][1]
    lines = segment_lines(first)
    first.write_bytes(b"".join([*lines[:3], lines[2], *lines[3:]]))
    return f"events/{first.name}:4: seq 3 where 4 was expected (a duplicate)"


def _renamed(d: Path) -> str:
    seq, path = list_segments(d)[1]
    wrong = path.with_name(segment_name(seq + 1))
    path.rename(wrong)
    return (f"events/{wrong.name}:1: segment is named for seq {seq + 1} but its first record has seq {seq} "
            f"(expected name {segment_name(seq)})")


def _durable_seq_beyond(d: Path) -> str:
    state = read_state(d)
    last = state["durable_seq"]
    write_state(d, {**state, "durable_seq": last + 100})
    return f"recovery/state.json: durable_seq {last + 100} is beyond the last seq in the log ({last})"


def _clean_without_stop(d: Path) -> str:
    """Drop the recorder.stop record but keep a clean state at the new end."""
    last = list_segments(d)[-1][1]
    lines = segment_lines(last)
    assert orjson.loads(lines[-1])["kind"] == "recorder.stop"
    last.write_bytes(b"".join(lines[:-1]))
    stop_seq = orjson.loads(lines[-1])["seq"]
    write_state(d, {**read_state(d), "durable_offset": last.stat().st_size, "durable_seq": stop_seq - 1,
                    "written_seq": stop_seq - 1})
    before = records(d)[-1]
    assert before["seq"] == stop_seq - 1 and before["source"] != "recorder"
    return (rf"recovery/state.json: clean is true but the last record \(seq {stop_seq - 1}\) is "
            rf"{re.escape(before['kind'])} from {before['source']}, not recorder.stop .*")


def _payload_edited(d: Path) -> str:
    """A same-length edit of a message's text, its meta.sha256 left as it was."""
    first = list_segments(d)[0][1]
    lines = segment_lines(first)
    number = next(i for i, line in enumerate(lines) if b'"kind":"message"' in line and b'"content":"' in line)
    line = lines[number]
    at = line.index(b'"content":"') + len(b'"content":"')
    edited = line[:at] + (b"X" if line[at:at + 1] != b"X" else b"Y") + line[at + 1:]
    first.write_bytes(b"".join([*lines[:number], edited, *lines[number + 1:]]))
    seq = orjson.loads(line)["seq"]
    return (f"events/{first.name}:{number + 1}: seq {seq}: its payload does not match meta.sha256 "
            "(edited after it was recorded?)")


CORRUPTIONS: dict[str, Callable[[Path], str]] = {
    "torn last line": _torn_tail,
    "garbage line in the middle": _garbage_line,
    "seq gap": _seq_gap,
    "duplicated line": _duplicate,
    "segment renamed wrongly": _renamed,
    "durable_seq beyond the log": _durable_seq_beyond,
    "clean without recorder.stop": _clean_without_stop,
    "a payload edited in place": _payload_edited,
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_verify_reports_each_corruption(recorded: Path, tmp_path: Path, corruption: str) -> None:
    """Each kind of damage to a recorded log is reported as exactly one
    ``where:line: reason`` line, the summary counts 1 problem, and verify exits 1."""
    directory = copy_of(recorded, tmp_path)
    expected = CORRUPTIONS[corruption](directory)
    code, out, _ = run("verify", str(directory))
    assert code == 1, out
    problems = problem_lines(out)
    assert len(problems) == 1, out
    assert problems[0] == expected or re.fullmatch(expected, problems[0]), (problems[0], expected)
    assert out.splitlines()[-1].endswith(", 1 problem")


def test_a_clean_end_before_an_empty_last_segment_verifies(recorded: Path, tmp_path: Path) -> None:
    """A writer that sealed or rotated its last segment and stopped before saying so in
    state.json leaves a clean position at the end of the last records and an empty last
    segment after it: both ends of the log are the same, so it verifies; a clean
    position elsewhere still does not."""
    directory = copy_of(recorded, tmp_path)
    last_seq = records(directory)[-1]["seq"]
    (directory / "events" / segment_name(last_seq + 1)).write_bytes(b"")
    code, out, _ = run("verify", str(directory))
    assert code == 0, out
    state = read_state(directory)
    write_state(directory, {**state, "durable_offset": 0, "durable_seq": last_seq, "written_offset": 0,
                            "segment": segment_name(last_seq + 1)})
    code, out, _ = run("verify", str(directory))
    assert code == 0, out
    write_state(directory, {**state, "durable_offset": state["durable_offset"] - len(segment_lines(
        list_segments(directory)[-2][1])[-1]), "durable_seq": last_seq - 1})
    code, out, _ = run("verify", str(directory))
    assert code == 1 and "clean is true but the durable position" in out, out


def test_verify_json_report_and_dir_defaults(recorded: Path, tmp_path: Path) -> None:
    """``--json`` gives the same findings as data; the directory can be given as DIR,
    ``--dir`` or ``$CONVLOG_DIR``; an untouched copy reports nothing."""
    directory = copy_of(recorded, tmp_path)
    code, out, _ = run("verify", "--dir", str(directory), "--json")
    assert code == 0 and orjson.loads(out)["ok"] is True
    _seq_gap(directory)
    code, out, _ = run("verify", "--json", env={"CONVLOG_DIR": str(directory)})
    report = orjson.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["problems"] == [
        {"where": f"events/{segment_name(1)}", "line": 3, "reason": "seq 4 where 3 was expected (1 record missing)"}
    ]
    assert report["records"] == len(records(directory))
    code, _, err = run("verify", str(directory), "--dir", str(tmp_path))
    assert code == 2 and "two log directories" in err
    code, _, err = run("verify", str(tmp_path / "nothing"))
    assert code == 1 and err.startswith("convlog: no event log in")


def test_verify_notes_quarantine_and_checks_checkpoints(recorded: Path, tmp_path: Path) -> None:
    """Quarantine entries are counted as a NOTE (not a problem), a broken quarantine
    entry is a problem with its line, and an unreadable checkpoint file is a problem."""
    directory = copy_of(recorded, tmp_path)
    quarantine = directory / RECOVERY / QUARANTINE_FILE
    entry = {"ts": "2026-01-01T00:00:00.000000Z", "segment": segment_name(1), "offset": 0,
             "reason": "torn line", "bytes": 3, "text": "abc"}
    quarantine.write_bytes(orjson.dumps(entry) + b"\n" + orjson.dumps(entry) + b"\n")
    code, out, _ = run("verify", str(directory))
    assert code == 0, out
    assert "NOTE recovery/quarantine.jsonl: 2 entries (bytes salvaged by recovery)" in out.splitlines()
    (directory / "checkpoints" / "00000000000000000010.json").write_bytes(b"{}")
    code, out, _ = run("verify", str(directory))
    assert code == 1 and problem_lines(out) == ["checkpoints/00000000000000000010.json: unknown format None"]
    (directory / "checkpoints" / "00000000000000000010.json").unlink()
    with quarantine.open("ab") as fh:
        fh.write(b'{"reason": "x", "text"\n')
    code, out, _ = run("verify", str(directory))
    assert code == 1
    assert problem_lines(out)[0].startswith("recovery/quarantine.jsonl:3: invalid entry:")


# --------------------------------------------------------------------------- recover


def test_recover_after_a_crash_quarantines_the_torn_tail(bus: Bus, tmp_path: Path) -> None:
    """After a recorder is killed (-9) mid-line, ``convlog recover`` moves the torn tail
    to quarantine, appends ``recorder.recovered`` saying so, marks the state clean, and
    ``verify`` then passes; a second ``recover`` finds nothing to repair."""
    directory = tmp_path / "log"
    record_some(bus, directory)
    bus.procs[0].kill9()
    assert read_state(directory)["clean"] is False
    before = records(directory)
    last = list_segments(directory)[-1][1]
    with last.open("ab") as fh:
        fh.write(b'{"seq": 1000, "kind": "mess')
    assert run("verify", str(directory))[0] == 1
    prior_state = read_state(directory)

    code, out, _ = run("recover", str(directory))
    assert code == 0, out
    assert f"moved 27 bytes (1 line) from events/{last.name}" in out
    assert "torn line: 27 bytes without a newline" in out
    after = records(directory)
    assert after[:-1] == before
    recovered = after[-1]
    assert (recovered["kind"], recovered["source"], recovered["seq"]) == ("recorder.recovered", "recorder",
                                                                         before[-1]["seq"] + 1)
    assert recovered["data"]["quarantined_bytes"] == 27 and recovered["data"]["previous_shutdown"] == "unclean"
    entry = orjson.loads((directory / RECOVERY / QUARANTINE_FILE).read_bytes())
    assert entry["text"] == '{"seq": 1000, "kind": "mess' and entry["segment"] == last.name
    state = read_state(directory)
    assert state["clean"] is True and state["durable_seq"] == recovered["seq"]
    assert set(prior_state) <= set(state)  # fields recover does not maintain are carried over

    code, out, _ = run("verify", str(directory))
    assert code == 0, out
    assert "NOTE recovery/quarantine.jsonl: 1 entry (bytes salvaged by recovery)" in out
    code, out, _ = run("recover", str(directory))
    assert code == 0 and "nothing to repair" in out and "previous shutdown clean" in out
    assert records(directory) == after


def test_offline_writers_refuse_a_directory_a_recorder_is_writing(bus: Bus, tmp_path: Path) -> None:
    """While a recorder holds the lock, ``recover`` and ``import`` exit 1 with one line
    naming the recorder's pid, and the log is left as it was."""
    directory = tmp_path / "log"
    record_some(bus, directory)
    pid = bus.procs[0].popen.pid
    before = records(directory)

    code, _, err = run("recover", str(directory))
    assert code == 1
    assert len(err.splitlines()) == 1
    assert err.startswith(f"convlog: {directory} is already being written by pid {pid} ")

    code, out, err = run("import", str(shearwater_file("crash_recovery.jsonl")), "--dir", str(directory))
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1
    assert f"is already being written by pid {pid} " in err
    assert "or publish the file onto its bus (convlog publish)" in err
    assert records(directory) == before
    assert bus.procs[0].terminate() == 0


# --------------------------------------------------------------------------- import


def test_import_legacy_file_is_exact_idempotent_and_folds(tmp_path: Path) -> None:
    """Importing crash_recovery.jsonl writes one ``message`` record with source
    ``import`` per line, whose data is the original record, session its ContextId and
    meta.sha256 the hash of the line; importing it again adds nothing; the log verifies
    and folds into the file's 8 contexts."""
    source = shearwater_file("crash_recovery.jsonl")
    lines = source.read_bytes().splitlines()
    originals = [orjson.loads(line) for line in lines]
    assert len(originals) == 414
    directory = tmp_path / "log"

    code, out, _ = run("import", str(source), "--dir", str(directory))
    assert code == 0, out
    assert out.strip() == "imported 414 records from 1 file (0 already present, 0 invalid)"
    found = records(directory)
    assert [r["seq"] for r in found] == list(range(1, 415))
    assert all((r["kind"], r["source"]) == ("message", "import") for r in found)
    assert [r["data"] for r in found] == originals
    assert [r["session"] for r in found] == [o["ContextId"] for o in originals]
    assert [r["topic"] for r in found] == [o["SpeakerName"] for o in originals]
    assert [r["meta"]["sha256"] for r in found] == [hashlib.sha256(line).hexdigest() for line in lines]
    assert all(r["meta"]["shape"] == "legacy" for r in found)

    code, out, _ = run("import", str(source), "--dir", str(directory))
    assert code == 0
    assert out.strip() == "imported 0 records from 1 file (414 already present, 0 invalid)"
    assert len(records(directory)) == 414

    code, out, _ = run("verify", str(directory))
    assert code == 0, out
    folded = replay.load(directory)
    contexts = {o["ContextId"] for o in originals}
    assert len(contexts) == 8 and set(folded.state.sessions) == contexts
    code, out, _ = run("replay", "--dir", str(directory), "--json")
    assert code == 0 and orjson.loads(out)["sessions"] == 8


def test_import_reports_invalid_lines_and_imports_the_rest(tmp_path: Path) -> None:
    """Invalid lines (not JSON, not a legacy record) are reported as ``file:line:
    reason`` and make the exit code 1, but every valid line is imported; blank lines are
    skipped, a duplicate within the run counts as already present, CRLF endings are
    not part of the data."""
    legacy = [{"Id": f"id{i}", "Timestamp": "2025-12-01T06:58:19", "SpeakerName": "ann", "Message": '{"message": "hi"}',
               "ContextId": "ctx"} for i in range(3)]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([
        orjson.dumps(legacy[0]),
        b"not json at all",
        b'{"no": "legacy"}',
        b"",
        orjson.dumps(legacy[1]) + b"\r",
        orjson.dumps(legacy[0]),
        orjson.dumps(legacy[2]),
    ]) + b"\n")
    directory = tmp_path / "log"
    code, out, err = run("import", str(path), "--dir", str(directory))
    assert code == 1
    assert out.strip() == "imported 3 records from 1 file (1 already present, 2 invalid)"
    assert err.splitlines()[0].startswith(f"{path}:2: not JSON: ")
    assert err.splitlines()[1] == f"{path}:3: not a legacy ConversationEvent record (needs Id, SpeakerName and Message)"
    found = records(directory)
    assert [r["data"] for r in found] == legacy
    assert found[1]["meta"]["sha256"] == hashlib.sha256(orjson.dumps(legacy[1])).hexdigest()
    assert run("verify", str(directory))[0] == 0


def test_import_recovers_the_tail_first(recorded: Path, tmp_path: Path) -> None:
    """Importing into a log left torn by a crash repairs it first as the recorder
    would (quarantine, ``recorder.recovered``), then appends after it; the result
    verifies."""
    directory = copy_of(recorded, tmp_path)
    write_state(directory, {**read_state(directory), "clean": False})
    last = list_segments(directory)[-1][1]
    with last.open("ab") as fh:
        fh.write(b'{"seq": 9')
    before = records(directory)
    code, out, _ = run("import", str(shearwater_file("crash_recovery.jsonl")), "--dir", str(directory))
    assert code == 0, out
    after = records(directory)
    assert after[:len(before)] == before
    assert after[len(before)]["kind"] == "recorder.recovered"
    assert after[len(before)]["data"]["reason"] == "torn line: 9 bytes without a newline"
    assert [r["source"] for r in after[len(before) + 1:]] == ["import"] * 414
    code, out, _ = run("verify", str(directory))
    assert code == 0, out


# --------------------------------------------------------------------------- progress


def test_verify_and_replay_report_progress_to_the_end(recorded: Path, tmp_path: Path, monkeypatch) -> None:
    """Progress callbacks count bytes and end at the total: verify per segment, the fold
    every PROGRESS_RECORDS records (made small here) and once at the end."""
    from convlog.store.verify import verify

    total = sum(path.stat().st_size for _, path in list_segments(recorded))
    calls: list[tuple[int, int]] = []
    verify(recorded, progress=lambda done, of: calls.append((done, of)))
    assert len(calls) == len(list_segments(recorded)) and calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)

    monkeypatch.setattr(replay, "PROGRESS_RECORDS", 5)
    calls.clear()
    folded = replay.load(recorded, use_checkpoints=False, progress=lambda done, of: calls.append((done, of)))
    assert calls[-1] == (total, total) and len(calls) > 3
    assert all(0 < done <= of == total for done, of in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert folded.state.last_seq == records(recorded)[-1]["seq"]
