"""The CLI on real log files: read commands, clean failures, and the demo end to end."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from conftest import convlog_cmd
from convlog.cli.commands import main
from convlog.core.ingest import Ingest
from convlog.store.segment import ensure_layout
from convlog.store.state import read_state
from convlog.store.writer import SegmentWriter

EVENTS = [
    {"type": "message", "session_id": "alpha", "message_id": "a1", "sender": "ann", "role": "user", "content": "one"},
    {"type": "message", "session_id": "alpha", "message_id": "a2", "sender": "bot", "role": "assistant",
     "content": "two"},
    {"type": "session.checkpoint", "session_id": "alpha", "name": "cp"},
    {"type": "message", "session_id": "alpha", "message_id": "a3", "sender": "ann", "content": "three"},
    {"type": "session.rewind", "session_id": "alpha", "checkpoint": "cp"},
    {"type": "session.fork", "session_id": "alpha-b", "parent": "alpha", "at": 1, "name": "b"},
    {"type": "message", "session_id": "alpha-b", "message_id": "b1", "sender": "ann", "content": "branch"},
    {"type": "message.delta", "session_id": "beta", "message_id": "s1", "sender": "bot", "delta": "par"},
    {"type": "message.delta", "session_id": "beta", "message_id": "s1", "delta": "tial"},
    {"type": "session.rewind", "session_id": "alpha", "to": 99},
    {"type": "message", "session_id": "alpha", "message_id": "a1", "sender": "ann", "content": "one"},
]


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    """A real log directory written by the real writer from native events."""
    directory = tmp_path / "log"
    ensure_layout(directory)
    writer = SegmentWriter(directory, next_seq=1)
    ingest = Ingest()
    for seq, event in enumerate(EVENTS, 1):
        frames = [event["session_id"].encode(), orjson.dumps(event)]
        writer.write(ingest.line(frames, seq, "2026-11-21T12:00:00.000001Z", "sub"), seq)
    writer.close()
    return directory


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_sessions_table_and_json(logdir: Path) -> None:
    """``sessions`` lists every folded session with branch, parent and message counts."""
    code, out, _ = run("sessions", "--dir", str(logdir), "--json")
    assert code == 0
    rows = {row["id"]: row for row in orjson.loads(out)}
    assert set(rows) == {"alpha", "alpha-b", "beta"}
    assert rows["alpha"]["messages"] == 2 and rows["alpha"]["duplicates"] == 1
    assert (rows["alpha-b"]["parent"], rows["alpha-b"]["fork_at"], rows["alpha-b"]["branch"]) == ("alpha", 1, "b")
    code, out, _ = run("sessions", "--dir", str(logdir))
    assert code == 0 and "alpha-b" in out and "beta" in out


def test_show_formats(logdir: Path) -> None:
    """``show`` prints the visible branch as text, markdown or JSON; a unique prefix works."""
    code, out, _ = run("show", "alpha-", "--dir", str(logdir), "--format", "json")
    assert code == 0
    shown = orjson.loads(out)
    assert shown["session"] == "alpha-b" and [m["text"] for m in shown["messages"]] == ["one", "branch"]
    code, out, _ = run("show", "beta", "--dir", str(logdir), "--format", "json")
    message = orjson.loads(out)["messages"][0]
    assert message["text"] == "partial" and message["streamed"] and not message["complete"]
    code, out, _ = run("show", "alpha", "--dir", str(logdir), "--format", "markdown")
    assert code == 0 and "### 1. ann" in out and "2 copies" in out and "three" not in out
    code, out, _ = run("show", "alpha", "--dir", str(logdir))
    assert code == 0 and "[2] bot" in out


def test_replay_summary_reports_problems(logdir: Path) -> None:
    """``replay`` reports records by kind, the incomplete stream and the invalid rewind."""
    code, out, _ = run("replay", "--dir", str(logdir), "--json")
    assert code == 0
    data = orjson.loads(out)
    assert data["records"] == len(EVENTS) and data["records_by_kind"]["message"] == 5
    assert [s["message_id"] for s in data["incomplete_streams"]] == ["s1"]
    assert len(data["fold_errors"]) == 1 and data["fold_errors"][0]["kind"] == "session.rewind"
    code, out, _ = run("replay", "--dir", str(logdir), "--upto", "2", "--json")
    assert orjson.loads(out)["records"] == 2
    code, out, _ = run("replay", "--dir", str(logdir))
    assert code == 0 and "incomplete streams: 1" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["show", "nope"], 1, "convlog: no session 'nope'"),
        (["show", "alpha"], 1, "convlog: session 'alpha' is ambiguous"),
        (["sessions", "--dir", "/nonexistent/dir"], 1, "convlog: no event log in /nonexistent/dir"),
        # click's own wording varies between releases: only the parameter's name is checked
        (["show"], 2, "SESSION"),
        (["replay", "--upto", "zero"], 2, "--upto"),
    ],
)
def test_misuse_is_one_readable_line(logdir: Path, args: list[str], code: int, message: str) -> None:
    """Misuse and expected failures exit non-zero with a readable message and no traceback."""
    if args[0] in ("show", "replay") and "--dir" not in args and len(args) > 1:
        args = [*args, "--dir", str(logdir)]
    if args[:2] == ["show", "alpha"]:
        args = ["show", "alph", "--dir", str(logdir)]
        message = "convlog: session 'alph' is ambiguous"
    exit_code, _, err = run(*args)
    assert exit_code == code
    assert message in err
    assert "Traceback" not in err


def test_record_with_bad_config_exits_with_one_line(tmp_path: Path) -> None:
    """``record`` with an invalid config stops at start: one line with file, line, key, reason."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[recorder]\nfsync = "sometimes"\n')
    result = subprocess.run(convlog_cmd("record", "--config", str(bad), "--dir", str(tmp_path / "d")),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"convlog: {bad}:2: recorder.fsync: must be one of always, interval, never (got 'sometimes')"
    ]


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """``convlog demo`` starts a broker and a recorder, publishes real conversations and
    control events, stops cleanly and shows the folded sessions, fork and stream."""
    directory = tmp_path / "demo"
    result = subprocess.run(convlog_cmd("demo", "--dir", str(directory), "--conversations", "6"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "what-if" in result.stdout and "An old silent pond" in result.stdout
    assert "0 incomplete streams" in result.stdout
    assert read_state(directory)["clean"] is True
    code, out, _ = run("replay", "--dir", str(directory), "--json")
    data = orjson.loads(out)
    assert code == 0 and data["forks"] == 1 and not data["fold_errors"] and not data["read_errors"]
    assert run("demo", "--dir", str(directory))[0] == 1  # refuses a non-empty directory


def test_publish_bad_legacy_file_names_the_line(tmp_path: Path) -> None:
    """``publish --format legacy`` on a file with a broken line exits 1 naming file and line."""
    from conftest import free_port

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"Id": "1", "SpeakerName": "a", "Message": "{}"}\n{"no": "legacy"}\n')
    code, _, err = run("publish", str(bad), "--format", "legacy", "--wait", "0",
                       "--endpoint", f"tcp://127.0.0.1:{free_port()}")
    assert code == 1
    assert f"convlog: {bad}:2: not a legacy ConversationEvent" in err and "Traceback" not in err


def test_a_fork_shows_its_inherited_streamed_message_whole(logdir: Path) -> None:
    """A fork of ``beta`` after its streamed message shows the whole stream ("partial"),
    read under the session that recorded it, not only the first delta."""
    code, _out, err = run("fork", "beta", "--name", "beta-fork", "--dir", str(logdir))
    assert code == 0, err
    code, out, _ = run("show", "beta", "--format", "json", "--dir", str(logdir))
    parent = orjson.loads(out)["messages"]
    code, out, _ = run("sessions", "--json", "--dir", str(logdir))
    fork = next(s["id"] for s in orjson.loads(out) if s.get("parent") == "beta")
    code, out, _ = run("show", fork, "--format", "json", "--dir", str(logdir))
    child = orjson.loads(out)["messages"]
    assert [m["text"] for m in parent] == ["partial"]
    assert [m["text"] for m in child] == ["partial"]
