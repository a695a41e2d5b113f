"""The CLI as a newcomer meets it: the first read command after the demo,
counts that read as English."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import convlog_cmd
from convlog.core.record import make_line
from convlog.core.view import plural
from convlog.store.segment import ensure_layout
from convlog.store.writer import SegmentWriter

TS = "2026-11-21T12:00:00.000000Z"


def small_log(directory: Path) -> None:
    """A log of one session with one message."""
    ensure_layout(directory)
    writer = SegmentWriter(directory, next_seq=1)
    writer.write(make_line(1, TS, "message", "sub", "t", "s1", {"type": "message", "content": "hi"}), 1)
    writer.close()


def test_a_read_command_after_the_demo_names_the_demos_log(tmp_path: Path) -> None:
    """``convlog demo`` writes ./conversation_logs/demo-<time>/ while read commands read
    ./conversation_logs: the error names the log below it and the --dir to use."""
    small_log(tmp_path / "conversation_logs" / "demo-20261205-120000")
    for command in (["sessions"], ["search", "hi"], ["info"], ["tail", "-n", "5"]):
        result = subprocess.run(convlog_cmd(*command), cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, (command, result.stdout)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, (command, result.stderr)
        assert lines[0].endswith("use --dir conversation_logs/demo-20261205-120000"), (command, lines[0])


def test_counts_agree_with_their_nouns(tmp_path: Path) -> None:
    """One message is "1 message", not "1 messages"; thousands are grouped."""
    assert [plural(1, "message"), plural(2, "message"), plural(0, "record"), plural(1234, "record")] == [
        "1 message", "2 messages", "0 records", "1,234 records"]
    small_log(tmp_path)
    result = subprocess.run(convlog_cmd("show", "s1", "--dir", str(tmp_path)), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "· 1 message\n" in result.stdout, result.stdout


def test_help_lists_every_command_once_in_sections() -> None:
    """``convlog --help`` groups the commands (recording, reading, sessions, offline tools),
    each command exactly once."""
    import click

    from convlog.cli.commands import COMMAND_SECTIONS, main

    result = subprocess.run(convlog_cmd("--help"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for title in COMMAND_SECTIONS:
        assert f"{title}:" in lines
    names = main.list_commands(click.Context(main))
    listed = [line.split()[0] for line in lines if line.startswith("  ") and line.split()[0] in names]
    assert sorted(listed) == sorted(names)


def test_copies_of_one_message_are_one_search_hit(tmp_path: Path) -> None:
    """A message received twice (the bus copy and the PUSHed one) is one hit, the first
    copy, with its copy count; a different message with the same words is its own hit."""
    import json

    from convlog.core.ingest import Ingest

    ingest = Ingest(verify=False)
    payload = json.dumps({"type": "message", "session_id": "s1", "message_id": "m1", "content": "deploy the fleet"})
    other = json.dumps({"type": "message", "session_id": "s1", "message_id": "m2", "content": "deploy again"})
    lines = [ingest.line([b"t", payload.encode()], 1, TS, "sub"), ingest.line([payload.encode()], 2, TS, "pull"),
             ingest.line([b"t", other.encode()], 3, TS, "sub")]
    ensure_layout(tmp_path)
    writer = SegmentWriter(tmp_path, next_seq=1)
    writer.write(b"".join(lines), 3)
    writer.close()
    result = subprocess.run(convlog_cmd("search", "deploy", "--json", "--dir", str(tmp_path)), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert [(h["seq"], h["copies"]) for h in hits] == [(3, 1), (1, 2)]
    shown = subprocess.run(convlog_cmd("search", "fleet", "--dir", str(tmp_path)), capture_output=True, text=True,
                           timeout=60)
    assert "received 2 times" in shown.stdout


def test_search_with_stems_finds_other_forms_of_a_word(tmp_path: Path) -> None:
    """``search --stem deploy`` finds "deployment" and "deployed" (FTS5 porter), with the
    match highlighted; plain ``search deploy`` does not."""
    import json

    from convlog.core.ingest import Ingest

    ingest = Ingest(verify=False)
    texts = ["the deployment failed", "we deployed at noon", "nothing here"]
    lines = [ingest.line([b"t", json.dumps({"type": "message", "session_id": "s", "message_id": f"m{i}",
                                            "content": text}).encode()], i, TS, "sub")
             for i, text in enumerate(texts, 1)]
    ensure_layout(tmp_path)
    writer = SegmentWriter(tmp_path, next_seq=1)
    writer.write(b"".join(lines), len(lines))
    writer.close()

    def hits(*flags: str) -> list[dict]:
        result = subprocess.run(convlog_cmd("search", "deploy", "--json", *flags, "--dir", str(tmp_path)),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert hits() == []
    stemmed = hits("--stem")
    assert [h["seq"] for h in stemmed] == [2, 1]
    assert [h["snippet"][a:b] for h in stemmed for a, b in h["highlights"]] == ["deployed", "deployment"]


def many_sessions(directory: Path, count: int) -> None:
    """A log of ``count`` sessions with long ids; session i has i % 7 + 1 messages and
    the higher i, the more recent its activity."""
    import json

    from convlog.core.ingest import Ingest

    ingest = Ingest(verify=False)
    lines = []
    seq = 0
    for i in range(count):
        for n in range(i % 7 + 1):
            seq += 1
            payload = {"type": "message", "session_id": f"conversation-{i:04d}-with-a-rather-long-id",
                       "message_id": f"m{i}-{n}", "sender": "alice" if n % 2 else "bob", "content": "hi"}
            lines.append(ingest.line([b"t", json.dumps(payload).encode()], seq, TS, "sub"))
    ensure_layout(directory)
    writer = SegmentWriter(directory, next_seq=1)
    writer.write(b"".join(lines), seq)
    writer.close()


def test_sessions_lists_a_page_newest_first_with_the_total(tmp_path: Path) -> None:
    """``sessions`` on a large log: newest activity first, a page of 50 and the total;
    ``--sort messages`` and ``--limit 0``; at 100 and 120 columns no column collapses
    (every row shows the start of its id, its count and its time)."""
    import os

    many_sessions(tmp_path, 120)

    def listed(*args: str, columns: int = 160) -> list[str]:
        result = subprocess.run(convlog_cmd("sessions", *args, "--dir", str(tmp_path)), capture_output=True,
                                text=True, timeout=60, env={**os.environ, "COLUMNS": str(columns)})
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    lines = listed()
    rows = [line for line in lines if "conversation-" in line]
    assert len(rows) == 50 and "conversation-0119" in rows[0] and "conversation-0070" in rows[-1]
    assert lines[-1] == "50 of 120 sessions, newest activity first (--limit 0 for all)"
    assert len([line for line in listed("--limit", "0") if "conversation-" in line]) == 120
    by_messages = [line for line in listed("--sort", "messages", "--limit", "3") if "conversation-" in line]
    assert all("│    7 │" in row for row in by_messages)
    for columns in (100, 120):
        for row in [line for line in listed(columns=columns) if "conversation-" in line]:
            assert len(row) <= columns and "2026-11-21 12:00:00" in row and "conversa" in row, (columns, row)


def test_publish_and_play_take_the_same_flags_old_spellings_still_work(tmp_path: Path) -> None:
    """``publish --to`` and ``play --to`` name the endpoint alike; ``play --speed`` is the
    speed factor (``--rate`` stays messages/s, for publish). The old spellings
    (``publish --endpoint``, ``play --rate``) still work and are not in the help."""
    import json

    from convlog.cli.demo import free_port

    nobody = f"tcp://127.0.0.1:{free_port()}"
    source = tmp_path / "events.jsonl"
    source.write_text(json.dumps({"type": "message", "session_id": "s1", "content": "hi"}) + "\n")
    for flag in ("--to", "--endpoint"):
        result = subprocess.run(convlog_cmd("publish", str(source), flag, nobody, "--wait", "0"),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "published 1 message" in result.stderr, (flag, result.stderr)
    small_log(tmp_path / "log")
    for flag in ("--speed", "--rate"):
        result = subprocess.run(convlog_cmd("play", "--dir", str(tmp_path / "log"), "--to", nobody, flag, "2", "--max"),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "exclude each other" in result.stderr, (flag, result.stderr)
    helps = {command: subprocess.run(convlog_cmd(command, "--help"), capture_output=True, text=True,
                                     timeout=60).stdout for command in ("publish", "play")}
    assert "--to" in helps["publish"] and "--endpoint" not in helps["publish"]
    assert "--speed" in helps["play"] and "--rate" not in helps["play"]


def test_times_can_be_written_as_people_say_them() -> None:
    """``now``, ``today``, ``yesterday`` and spans before now (``90s``, ``15m``, ``2h``,
    ``3d``, ``1w``, ``2 days ago``) wherever a time is taken, beside ISO 8601."""
    from datetime import UTC, datetime

    import pytest

    from convlog.core.record import format_ts, parse_when
    from convlog.store.replay import parse_as_of
    from convlog.store.search import SearchQueryError, parse_time

    now = datetime(2026, 12, 5, 15, 30, tzinfo=UTC)
    assert [format_ts(parse_when(text, now)) for text in ("now", "today", "yesterday", "90s", "15m", "2h", "3d",
                                                           "1w", "2 days ago", "2026-12-01T10:00")] == [
        "2026-12-05T15:30:00.000000Z", "2026-12-05T00:00:00.000000Z", "2026-12-04T00:00:00.000000Z",
        "2026-12-05T15:28:30.000000Z", "2026-12-05T15:15:00.000000Z", "2026-12-05T13:30:00.000000Z",
        "2026-12-02T15:30:00.000000Z", "2026-11-28T15:30:00.000000Z", "2026-12-03T15:30:00.000000Z",
        "2026-12-01T10:00:00.000000Z"]
    assert parse_as_of("yesterday")[1] is not None and parse_as_of("now") == (None, None)
    assert parse_time("2h") < parse_time("now")
    with pytest.raises(SearchQueryError):
        parse_time("the day before")
