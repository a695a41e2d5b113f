"""The README's five-step walk-through, run verbatim against the shipped Shearwater
recording: each command exactly as the README prints it, from a folder laid out like
the repository's (``../shared/data`` beside it)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

from conftest import REPO, SHARED_DATA, convlog_cmd


def walk_through() -> list[str]:
    """The commands of the README's first code block after "## A walk-through",
    without their comments."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## A walk-through"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the walk-through has no sh block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_walk_through_works_verbatim_on_the_shipped_data(tmp_path: Path) -> None:
    steps = walk_through()
    assert len(steps) == 5 and all(step.startswith("convlog ") for step in steps), steps
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(SHARED_DATA.resolve(), target_is_directory=True)
    source = SHARED_DATA / "shearwater" / "current_session.jsonl"
    said = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    outputs = []
    for step in steps:
        result = subprocess.run(convlog_cmd(*shlex.split(step)[1:]), cwd=repo, capture_output=True, text=True,
                                timeout=180, env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, (step, result.stderr)
        assert result.stdout.strip(), step
        outputs.append(result.stdout)
    imported, sessions, shown, found, then = outputs
    assert f"imported {len(said):,} records" in imported or f"imported {len(said)} records" in imported
    # 2: the total is the number of sessions in the file.
    contexts = {r.get("ContextId") or "unknown" for r in said}
    assert re.search(rf"\b{len(contexts):,} sessions\b", sessions), sessions[-400:]
    # 3: the session named in the README, its messages with both times.
    session = shlex.split(steps[2])[2]
    texts = [r for r in said if r.get("ContextId") == session]
    assert texts and f"{len(texts)} messages" in shown
    assert "sent 2025-12-01" in shown, shown[:600]
    # 4: the word is in the data, and found.
    word = shlex.split(steps[3])[2]
    assert any(word in json.dumps(r).lower() for r in said)
    assert word in found.lower()
    # 5: a day inside the data's span: some of its sessions, not all.
    day = shlex.split(steps[4])[3]
    stamps = sorted(r["Timestamp"] for r in said)
    assert stamps[0] < day < stamps[-1]
    match = re.search(r"\b([\d,]+) sessions?\b", then)
    assert match and 0 < int(match.group(1).replace(",", "")) < len(contexts), then[-400:]
