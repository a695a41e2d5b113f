"""``convlog purge`` on the command line: it asks before purging on a terminal and
refuses without ``--yes`` elsewhere, prints what it did (or as JSON), and every misuse
is one readable line with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pexpect
import pytest
from click.testing import CliRunner

from conftest import convlog_cmd, records
from convlog.cli.commands import main
from convlog.core.ingest import Ingest
from convlog.core.record import PURGED_KIND
from convlog.store.lock import LogLock
from convlog.store.segment import ensure_layout
from convlog.store.writer import SegmentWriter


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    """A log of two sessions, alpha and alpha2 (a common prefix), written by the real writer."""
    directory = tmp_path / "log"
    ensure_layout(directory)
    writer = SegmentWriter(directory, next_seq=1, segment_bytes=600)
    ingest = Ingest()
    for seq in range(1, 13):
        session = "alpha" if seq % 2 else "alpha2"
        event = {"type": "message", "session_id": session, "message_id": f"m{seq}", "content": f"word{seq} secret"}
        writer.write(ingest.line([session.encode(), orjson.dumps(event)], seq,
                                 f"2026-11-21T12:00:{seq:02d}.000000Z", "sub"), seq)
    writer.close()
    return directory


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def files(directory: Path) -> dict[str, bytes]:
    """The files of a log directory and their bytes (the empty lock files aside)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["purge", "alpha"], 1, "convlog: a purge cannot be undone: give --yes"),
        (["purge", "nope", "--yes"], 1, "convlog: no session 'nope'"),
        (["purge", "alp", "--yes"], 1, "convlog: session 'alp' is ambiguous"),
        (["purge", "alpha", "--before", "someday", "--yes"], 2, "--before"),
        (["purge", "--yes"], 2, "SESSION"),
    ],
)
def test_misuse_is_one_readable_line(logdir: Path, args: list[str], code: int, message: str) -> None:
    """Misuse exits non-zero with one readable line (click's usage form for exit 2) and
    no traceback, and changes nothing."""
    before = files(logdir)
    result = subprocess.run(convlog_cmd(*args, "--dir", str(logdir)), capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    if code == 1:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert files(logdir) == before


def test_missing_log_and_a_foreign_writer_are_one_line(logdir: Path, tmp_path: Path) -> None:
    """No log in the directory, or a writer that is not a recorder (no control socket)
    holding the lock: one line each, nothing written."""
    code, _, err = run("purge", "alpha", "--yes", "--dir", str(tmp_path / "none"))
    assert code == 1 and err.startswith("convlog: no event log in") and err.count("\n") == 1
    with LogLock(logdir, command="convlog import"):
        code, _, err = run("purge", "alpha", "--yes", "--dir", str(logdir))
    assert code == 1 and "is already being written by pid" in err and err.count("\n") == 1
    assert not any(r["kind"] == PURGED_KIND for r in records(logdir))


def test_json_report_and_the_exact_id_wins_over_a_prefix(logdir: Path) -> None:
    """``--json`` prints the report; ``alpha`` names the session ``alpha`` though
    ``alpha2`` starts with it too, and once purged, ``alpha`` still names it (nothing
    left to purge), never ``alpha2``."""
    code, out, err = run("purge", "alpha", "--yes", "--json", "--dir", str(logdir))
    assert code == 0, err
    report = orjson.loads(out)
    assert (report["session"], report["records"], report["first_seq"], report["last_seq"]) == ("alpha", 6, 1, 11)
    assert report["via"] == "direct" and report["segments"]
    assert report["record_seq"] == records(logdir)[-1]["seq"]  # after recovery's note of the unclean end
    code, out, _ = run("purge", "alpha", "--yes", "--dir", str(logdir))
    assert code == 0 and "nothing to purge for session alpha" in out and "6 purged already" in out
    code, out, _ = run("show", "alpha2", "--dir", str(logdir))
    assert code == 0 and out.count("secret") == 6


def test_on_a_terminal_it_shows_the_plan_and_asks(logdir: Path) -> None:
    """On a terminal without ``--yes`` it prints what it would purge and asks; "n" leaves
    the log as it was, "y" purges."""
    before = files(logdir)
    child = pexpect.spawn(sys.executable, ["-m", "convlog", "purge", "alpha", "--dir", str(logdir)],
                          encoding="utf-8", timeout=60)
    child.expect("would purge 6 records of session alpha")
    child.expect(r"Purge 6 records of alpha for good\? \[y/N\]")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and files(logdir) == before
    child = pexpect.spawn(sys.executable, ["-m", "convlog", "purge", "alpha", "--dir", str(logdir)],
                          encoding="utf-8", timeout=60)
    child.expect(r"for good\? \[y/N\]")
    child.sendline("y")
    child.expect(r"session.purged written at seq \d+ directly")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert [r["kind"] for r in records(logdir)][-1] == PURGED_KIND
