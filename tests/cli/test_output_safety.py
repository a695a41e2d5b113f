"""Output safety: what a conversation holds cannot act on the
reader's terminal, a spreadsheet or a Markdown renderer. Real commands on a real log: in
a pseudo-terminal (pexpect) for the terminal, as files for the exports."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import pexpect
import pytest

from conftest import convlog_cmd
from convlog.readers.export import csv_safe
from convlog.store.segment import ensure_layout
from convlog.store.writer import SegmentWriter

TS = "2026-11-21T12:00:00.000000Z"
#: Sequences a hostile message could use on a terminal: clear the screen, set the
#: clipboard (OSC 52), retitle the window, blink.
HOSTILE = ("\x1b[2J", "\x1b]52;c;aGk=\x07", "\x1b]0;pwned\x07", "\x1b[5m")
TEXT = '=HYPERLINK("http://evil") <script>alert(1)</script> & bold ' + "".join(HOSTILE) + " danger"


@pytest.fixture
def hostile_log(tmp_path: Path) -> Path:
    """A log of one session whose id, speaker and message carry escape sequences, HTML
    and a spreadsheet formula."""
    ensure_layout(tmp_path)
    session = "evil\x1b[2J"
    records = [
        {"kind": "session.start", "data": {"type": "session.start", "title": "t\x1b]0;pwned\x07"}, "meta": {}},
        {"kind": "message", "data": {"type": "message", "content": TEXT, "message_id": "m1", "sender": "bob\x1b[5m"},
         "meta": {"message_id": "m1", "sender": "bob\x1b[5m"}},
        {"kind": "message", "data": {"type": "message", "content": "-1 and +2 @home", "message_id": "m2"},
         "meta": {"message_id": "m2", "sender": "=cmd|' /C calc'!A0"}},
    ]
    lines = b"".join(
        (json.dumps({"seq": seq, "ts": TS, "kind": r["kind"], "source": "sub", "topic": "t", "session": session,
                     "data": r["data"], "meta": r["meta"]}) + "\n").encode()
        for seq, r in enumerate(records, 1))
    writer = SegmentWriter(tmp_path, next_seq=1)
    writer.write(lines, len(records))
    writer.close()
    return tmp_path


def on_terminal(*args: str) -> str:
    """Run ``convlog ARGS`` in a pseudo-terminal; return everything it wrote."""
    command = convlog_cmd(*args)
    child = pexpect.spawn(command[0], command[1:], encoding="utf-8", dimensions=(50, 220), timeout=60)
    output = child.read()
    child.close()
    assert child.exitstatus == 0, output
    return output


@pytest.mark.parametrize("command", [["sessions"], ["search", "script"], ["resume", "latest"], ["show", "evil"]])
def test_escape_sequences_are_shown_not_obeyed_on_a_terminal(hostile_log: Path, command: list[str]) -> None:
    """On a terminal, sessions, search, resume and show print recorded escape sequences
    as visible text (``\\x1b[2J``), never the raw bytes that would clear the screen, set
    the clipboard or retitle the window."""
    output = on_terminal(*command, "--dir", str(hostile_log))
    for sequence in HOSTILE:
        assert sequence not in output, (command, sequence)
    assert "\\x1b[2J" in output or "\\x1b]52" in output


def test_piped_output_keeps_the_text_as_recorded(hostile_log: Path) -> None:
    """To a pipe, the text is the text: a reader that wants the bytes gets them."""
    result = subprocess.run(convlog_cmd("resume", "latest", "--dir", str(hostile_log)), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "\x1b[2J" in result.stdout


def test_csv_cells_that_start_like_formulas_are_defused(hostile_log: Path) -> None:
    """CSV export prefixes a cell that begins with ``=``, ``+``, ``-`` or ``@`` with ``'``
    (OWASP, CSV injection), so a spreadsheet shows it as text; plain numbers stay."""
    result = subprocess.run(convlog_cmd("export", "evil", "--format", "csv", "--dir", str(hostile_log)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    cells = [cell for row in rows[1:] for cell in row]
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells), cells
    texts = [row[rows[0].index("text")] for row in rows[1:]]
    assert texts[0] == "'" + TEXT and texts[1] == "'-1 and +2 @home"
    assert [row[rows[0].index("speaker")] for row in rows[1:]][1] == "'=cmd|' /C calc'!A0"
    assert [csv_safe(v) for v in ("-5", "+1.5e3", "12", "a=b")] == ["-5", "+1.5e3", "12", "a=b"]


def test_markdown_export_escapes_html(hostile_log: Path) -> None:
    """Markdown export writes a message's ``<script>`` as ``&lt;script&gt;`` (and ``&`` as
    ``&amp;``), so a renderer shows it as text."""
    result = subprocess.run(convlog_cmd("export", "evil", "--format", "markdown", "--dir", str(hostile_log)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "<script>" not in result.stdout
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; bold" in result.stdout
