"""Messages whose source wrote nothing: the Shearwater recorder wrote ``{}``
for 352 of its messages. They are shown marked, not as a bare ``{}``; ``resume`` leaves
them out of an agent's context and says how many; search does not index the marker.
Real data: ``crash_recovery.jsonl`` imported with ``convlog import``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from conftest import convlog_cmd, shearwater_file
from convlog.core.view import EMPTY
from convlog.store.replay import load


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``convlog ARGS`` as a subprocess, text output."""
    return subprocess.run(convlog_cmd(*args), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Shearwater crash-recovery file imported into a fresh log."""
    directory = tmp_path_factory.mktemp("empty") / "log"
    result = run("import", str(shearwater_file("crash_recovery.jsonl")), "--dir", str(directory))
    assert result.returncode == 0, result.stderr
    return directory


def test_empty_messages_are_shown_marked(imported: Path) -> None:
    """Every message whose legacy ``Message`` is ``{}`` shows as the marker; none shows as
    a bare ``{}``."""
    source = [orjson.loads(line) for line in shearwater_file("crash_recovery.jsonl").read_bytes().splitlines()
              if line.strip()]
    empty_in_source = sum(1 for event in source if event.get("Message") in ("{}", ""))
    replay = load(imported)
    shown = [m for sid in replay.state.sessions for m in replay.messages(sid)]
    assert empty_in_source > 0
    assert sum(1 for m in shown if m.text == EMPTY) >= 1
    assert not any(m.text.strip() == "{}" for m in shown)
    unknown = next(sid for sid in replay.state.sessions if any(m.text == EMPTY for m in replay.messages(sid)))
    result = run("show", unknown, "--dir", str(imported))
    assert result.returncode == 0 and EMPTY in result.stdout


def test_resume_leaves_empty_messages_out_and_says_how_many(imported: Path) -> None:
    """``resume --format json`` holds no empty message and counts those left out; the
    Markdown form says how many were left out."""
    replay = load(imported)
    sid = next(sid for sid in replay.state.sessions if any(m.text == EMPTY for m in replay.messages(sid)))
    empty = sum(1 for m in replay.messages(sid) if m.text == EMPTY)
    result = run("resume", sid, "--format", "json", "--dir", str(imported))
    assert result.returncode == 0, result.stderr
    context = orjson.loads(result.stdout)
    assert all(m["text"] != EMPTY for m in context["messages"])
    assert context["empty_left_out"] == empty
    text = run("resume", sid, "--dir", str(imported)).stdout
    assert f"{empty} empty message{'' if empty == 1 else 's'} left out" in text


def test_search_does_not_find_the_marker(imported: Path) -> None:
    """The marker is not text the source wrote: searching its words finds nothing of it."""
    result = run("search", "source wrote nothing", "--json", "--dir", str(imported))
    assert result.returncode == 0
    assert orjson.loads(result.stdout) == []
