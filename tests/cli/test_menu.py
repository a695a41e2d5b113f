"""The interactive menu: its pure decisions (paging, answers, counts, rewind targets,
snippets, reading the end of the log) and the real ``convlog`` driven in a
pseudo-terminal with pexpect on a real demo log (and one with a running recorder)."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import orjson
import pexpect
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Bus, answering, convlog_cmd, records
from convlog.cli.menu_core import (
    MESSAGE_PAGE,
    RECENT_KINDS,
    SESSION_KEYS,
    TOP_KEYS,
    Action,
    MenuInputError,
    control_build,
    fork_build,
    highlight,
    message_position,
    one_line,
    page_containing,
    page_of,
    parse_answer,
    parse_count,
    parse_rewind,
    sessions_by_activity,
)
from convlog.cli.menu_fold import CurrentFold, recent_records
from convlog.cli.output import resume_context, transcript
from convlog.cli.session_control import SessionControlError, check
from convlog.core.ingest import Ingest
from convlog.core.view import printable
from convlog.store.checkpoint import list_checkpoints
from convlog.store.replay import load
from convlog.store.segment import complete_end, ensure_layout, iter_records, lines_backwards, list_segments
from convlog.store.writer import SegmentWriter

# --------------------------------------------------------------------------- pure core


@given(st.integers(0, 400), st.integers(1, 40))
def test_pages_cover_the_list_once_in_order(total: int, size: int) -> None:
    """Walking the pages from the first visits every item exactly once, in order, and
    only the last page may be short."""
    first = page_of(total, 0, size)
    seen: list[int] = []
    for number in range(first.pages):
        page = page_of(total, number, size)
        assert page.number == number and page.pages == first.pages
        if total:
            assert 0 < page.stop - page.start <= size
            assert number == page.pages - 1 or page.stop - page.start == size
        seen.extend(range(page.start, page.stop))
    assert seen == list(range(total))
    assert page_of(total, first.pages + 5, size) == page_of(total, first.pages - 1, size)  # clamped at the end
    assert page_of(total, -3, size) == first
    assert first.label() == f"page 1/{first.pages}"


@given(st.integers(0, 1000), st.integers(1, 40))
def test_page_containing_shows_the_item(index: int, size: int) -> None:
    page = page_of(index + 1 + index % 7, page_containing(index, size), size)
    assert page.start <= index < page.stop


def test_paging_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        page_of(10, 0, 0)
    with pytest.raises(ValueError):
        page_of(-1, 0, 5)
    with pytest.raises(ValueError):
        page_containing(-1, 5)
    assert page_of(0, 3, 5) == page_of(0, 0, 5) and page_of(0, 0, 5).pages == 1


def test_answers_become_actions() -> None:
    assert parse_answer("1", TOP_KEYS) == Action("sessions")
    assert parse_answer("  S ", TOP_KEYS) == Action("sessions")
    assert parse_answer("diagnostics", TOP_KEYS) == Action("diagnostics")  # the full name works too
    assert parse_answer("/", TOP_KEYS) == Action("search")
    assert parse_answer("q", TOP_KEYS) == Action("quit")
    assert parse_answer("", TOP_KEYS) == Action("none")
    assert parse_answer("", SESSION_KEYS, 12) == Action("next")  # Enter turns the page
    assert parse_answer("12", SESSION_KEYS, 12) == Action("open", 11)
    with pytest.raises(MenuInputError, match="no item 13: choose 1-12"):
        parse_answer("13", SESSION_KEYS, 12)
    with pytest.raises(MenuInputError, match="no item 0"):
        parse_answer("0", SESSION_KEYS, 12)
    with pytest.raises(MenuInputError, match=r"'7' is not a choice here: q \(quit\)$"):
        parse_answer("7", {"q": "quit"})  # nothing is numbered on that screen
    with pytest.raises(MenuInputError, match=r"1-2, Enter/n \(next\), p \(previous\)"):
        parse_answer("?", {"": "next", "n": "next", "p": "previous"}, 2)
    with pytest.raises(MenuInputError, match=r"'x' is not a choice here: 1-3, n \(next\)"):
        parse_answer("x", {"n": "next", "q": "quit"}, 3)


@given(st.integers(1, 500), st.data())
def test_every_number_on_the_list_opens_its_item(items: int, data: st.DataObject) -> None:
    number = data.draw(st.integers(1, items))
    assert parse_answer(f" {number}\t", {"q": "quit"}, items) == Action("open", number - 1)


@given(st.text(min_size=1))
def test_anything_else_is_refused_with_a_reason(text: str) -> None:
    stripped = text.strip().lower()
    if stripped in SESSION_KEYS or stripped in SESSION_KEYS.values() or (stripped.isascii() and stripped.isdigit()):
        return
    with pytest.raises(MenuInputError, match="is not a choice here"):
        parse_answer(text, SESSION_KEYS, 5)


def test_counts_and_rewind_targets() -> None:
    assert parse_count("", 12, "fork at") is None
    assert parse_count(" 0 ", 12, "fork at") == 0
    assert parse_count("12", 12, "fork at") == 12
    for bad in ("13", "-1", "2.5", "all", "٣"):
        with pytest.raises(MenuInputError, match="fork at"):
            parse_count(bad, 12, "fork at")
    assert parse_rewind("", 12, ["cp"]) is None
    assert parse_rewind("4", 12, ["cp"]) == {"to": 4}
    assert parse_rewind("cp", 12, ["cp"]) == {"checkpoint": "cp"}
    assert parse_rewind("@7", 12, ["7"]) == {"checkpoint": "7"}  # a name made of digits
    with pytest.raises(MenuInputError, match=r"no checkpoint 'nope' in this session \(it has: a, cp\)"):
        parse_rewind("nope", 12, ["cp", "a"])
    with pytest.raises(MenuInputError, match="more than the 12 visible"):
        parse_rewind("40", 12, [])


@given(st.lists(st.tuples(st.text(alphabet=st.characters(blacklist_characters="\x02\x03")), st.booleans()),
                max_size=8))
def test_highlight_marks_exactly_the_matches(parts: list[tuple[str, bool]]) -> None:
    """The snippet's text survives without markers, and exactly the marked characters
    (FTS5 snippet() style) are highlighted."""
    snippet = "".join(f"\x02{text}\x03" if marked else text for text, marked in parts)
    text = highlight(snippet, style="bold")
    assert text.plain == "".join(printable(part) for part, _ in parts)
    styled = {i for span in text.spans if span.style == "bold" for i in range(span.start, span.end)}
    expected, position = set(), 0
    for part, marked in parts:
        shown = len(printable(part))
        if marked:
            expected.update(range(position, position + shown))
        position += shown
    assert styled == expected


def test_highlight_keeps_markup_literal_and_survives_broken_markers() -> None:
    assert highlight("[bold]x[/] \x02hit\x03").plain == "[bold]x[/] hit"
    cut = highlight("before \x02cut off")  # the end marker was cut with the snippet
    assert cut.plain == "before cut off" and [cut.plain[s.start:s.end] for s in cut.spans] == ["cut off"]
    assert highlight("stray\x03 end").plain == "stray end"


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@given(st.text())
def test_printable_leaves_no_control_character_but_newlines_and_tabs(text: str) -> None:
    shown = printable(text)
    assert not CONTROL.search(shown)
    if not CONTROL.search(text):
        assert shown == text  # ordinary text, newlines and tabs included, is untouched
    assert shown.count("\n") == text.count("\n")


def test_printable_spells_escape_sequences_out() -> None:
    assert printable("a\x1b[?1049hb\r\nc\rd\x07\x9b") == "a\\x1b[?1049hb\nc\\x0dd\\x07\\x9b"


@given(st.text(), st.integers(2, 200))
def test_one_line_is_one_bounded_line(text: str, width: int) -> None:
    line = one_line(text, width)
    assert "\n" not in line and "\t" not in line and len(line) <= width
    if len(" ".join(text.split())) <= width:
        assert line == " ".join(text.split())
    else:
        assert line.endswith("…")


def test_message_position_maps_stream_parts_to_their_message() -> None:
    from array import array

    from convlog.core.fold import Stream

    stream = Stream("s", "m", first_seq=20, delta_seqs=array("q", [20, 21, 22]), end_seq=23, complete=True)
    seqs = [3, 7, 20, 30]
    assert message_position(seqs, [stream], 7) == 1
    assert [message_position(seqs, [stream], seq) for seq in (21, 22, 23)] == [2, 2, 2]
    assert message_position(seqs, [stream], 5) is None
    assert message_position([3, 7], [stream], 23) is None  # the stream is not visible there


def test_ctrl_c_is_held_until_a_control_record_is_written() -> None:
    """A Ctrl-C arriving while a session control record is written is raised only once
    the block is done, and the previous handler is back."""
    from convlog.cli.menu import _sigint_deferred

    before = signal.getsignal(signal.SIGINT)
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt), _sigint_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("written")
    assert done == ["written"]
    assert signal.getsignal(signal.SIGINT) is before
    with _sigint_deferred():  # no Ctrl-C: nothing raised
        done.append("again")
    assert done == ["written", "again"]


# --------------------------------------------------------------------------- reading the end of the log


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150)
@given(lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
       torn=st.binary(max_size=50).map(lambda b: b.replace(b"\n", b"")), chunk=st.integers(1, 64))
def test_lines_backwards_reverses_the_whole_lines(tmp_path: Path, lines: list[bytes], torn: bytes,
                                                  chunk: int) -> None:
    """Read back to front in chunks of any size, a file gives its newline-terminated
    lines last first; the unterminated tail (a write in progress) is not a line."""
    path = tmp_path / "segment.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines) + torn)
    end = complete_end(path, chunk)
    assert list(lines_backwards(path, end, chunk)) == [
        (offset, line + b"\n") for offset, line in reversed(list(zip(offsets(lines), lines, strict=True)))
        if line.strip()
    ]


def offsets(lines: list[bytes]) -> list[int]:
    """Byte offset of each line when written one per line."""
    out, at = [], 0
    for line in lines:
        out.append(at)
        at += len(line) + 1
    return out


def _native_log(directory: Path, count: int, segment_bytes: int, first: int = 1) -> None:
    """A real log of native records ``first..first+count-1`` written by the real writer
    (appending to what is there), rotating at ``segment_bytes``: messages in two
    sessions, with session starts between."""
    ensure_layout(directory)
    writer = SegmentWriter(directory, next_seq=first, segment_bytes=segment_bytes)
    ingest = Ingest()
    for seq in range(first, first + count):
        session = "alpha" if seq % 2 else "beta"
        if seq % 5 == 0:
            event = {"type": "session.start", "session_id": f"s{seq}"}
        else:
            event = {"type": "message", "session_id": session, "message_id": f"m{seq}", "sender": "ann",
                     "content": f"message number {seq}"}
        writer.write(ingest.line([session.encode(), orjson.dumps(event)], seq, "2026-11-21T12:00:00.000001Z", "sub"),
                     seq)
    writer.close()


@pytest.mark.parametrize("count", [0, 1, 7, 20, 150])
def test_recent_records_are_the_tail_of_a_full_scan(tmp_path: Path, count: int) -> None:
    """Across rotated segments, the recent messages are exactly the last ones a full scan
    finds, oldest first."""
    _native_log(tmp_path, 120, segment_bytes=2048)
    assert len(list_segments(tmp_path)) > 5
    wanted = [r for r in iter_records(tmp_path) if r["kind"] in RECENT_KINDS]
    expected = wanted[-count:] if count else []
    assert recent_records(tmp_path, count) == expected


def test_the_current_fold_equals_a_fresh_load_as_the_log_grows(tmp_path: Path) -> None:
    """Folding only the records appended since the last call (across rotations) gives
    the state a fresh load gives; a log that no longer holds the position is folded again."""
    current = CurrentFold(tmp_path)
    _native_log(tmp_path, 40, segment_bytes=2048)
    calls: list[tuple[int, int]] = []
    assert current.replay(lambda done, total: calls.append((done, total))).state == load(tmp_path).state
    log_bytes = sum(path.stat().st_size for _, path in list_segments(tmp_path))
    assert calls == [(log_bytes, log_bytes)]
    for first, count in ((41, 1), (42, 48), (90, 30)):
        _native_log(tmp_path, count, segment_bytes=2048, first=first)
        calls.clear()
        assert current.replay(lambda done, total: calls.append((done, total))).state == load(tmp_path).state
        grown = sum(path.stat().st_size for _, path in list_segments(tmp_path)) - log_bytes
        assert calls == [(grown, grown)]  # only the new bytes were folded
        log_bytes += grown
    calls.clear()
    current.replay(lambda done, total: calls.append((done, total)))
    assert calls == []  # nothing new, nothing folded
    assert len(list_segments(tmp_path)) > 3
    shutil.rmtree(tmp_path / "events")  # the log replaced by a shorter one
    _native_log(tmp_path, 7, segment_bytes=1 << 20)
    state = current.replay().state
    assert state == load(tmp_path).state and state.last_seq == 7


def test_recent_records_without_a_log(tmp_path: Path) -> None:
    assert recent_records(tmp_path / "nothing") == []


# --------------------------------------------------------------------------- a real demo log


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log made by the real ``convlog demo`` (broker, recorder, ShareGPT traffic with a
    fork, a rewind to a checkpoint, a crystal and a streamed reply), made once."""
    directory = tmp_path_factory.mktemp("demo") / "log"
    result = subprocess.run(convlog_cmd("demo", "--dir", str(directory), "--conversations", "5"),
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


@pytest.fixture
def logdir(demo_log: Path, tmp_path: Path) -> Path:
    """A private copy of the demo log for one test."""
    return Path(shutil.copytree(demo_log, tmp_path / "log"))


def test_sessions_by_activity_and_builds_on_the_demo_log(logdir: Path) -> None:
    replay = load(logdir)
    infos = sessions_by_activity(replay.state)
    assert {s.id for s in infos} == {s.id for s in replay.state.session_list()}
    assert [s.last_seq for s in infos] == sorted((s.last_seq for s in infos), reverse=True)
    parent = max(infos, key=lambda s: len(s.visible))
    kind, sid, data = fork_build(parent.id, 3, "alt")(replay)
    assert (kind, sid, data) == ("session.fork", f"{parent.id}/alt", {"parent": parent.id, "at": 3, "name": "alt"})
    assert fork_build(parent.id, None, None)(replay)[1:] == (f"{parent.id}/fork-1", {"parent": parent.id})
    assert check(replay.state.copy(), kind, sid, data).fork_at == 3
    too_far = control_build("session.rewind", parent.id, to=len(parent.visible) + 1, checkpoint=None)(replay)
    assert too_far == ("session.rewind", parent.id, {"to": len(parent.visible) + 1})
    with pytest.raises(SessionControlError):
        check(replay.state.copy(), *too_far)


ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def plain(text: str) -> str:
    """Terminal output as text: escape sequences removed, CRLF as LF."""
    return ANSI.sub("", text).replace("\r", "")


class MenuTerm:
    """``convlog --dir DIR`` in a pseudo-terminal (pexpect), inside ``bash -c`` which
    then prints the menu's exit status and ``stty -a`` of the same terminal."""

    def __init__(self, directory: Path, columns: int = 200, command: str | None = None) -> None:
        menu = command or f"{shlex.join(convlog_cmd('--dir', str(directory)))}"
        script = f'{menu}; echo "menu-exit=$?"; stty -a'
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": "50"}
        env.pop("CONVLOG_CONFIG", None)
        self.raw = io.StringIO()
        self.child = pexpect.spawn("bash", ["--norc", "--noprofile", "-c", script], env=env, encoding="utf-8",
                                   codec_errors="replace", dimensions=(50, columns), timeout=60)
        self.child.logfile_read = self.raw
        self._mark = 0

    def upto(self, prompt: str) -> str:
        """Wait for ``prompt``; return the plain text printed since the last call."""
        self.child.expect_exact(prompt)
        text = self.raw.getvalue()
        screen, self._mark = text[self._mark:], len(text)
        return plain(screen)

    def answer(self, prompt: str, line: str) -> str:
        """Wait for ``prompt``, type ``line`` and Enter; return what was shown before it."""
        screen = self.upto(prompt)
        self.child.sendline(line)
        return screen

    def finish(self) -> tuple[int, str]:
        """Wait for the menu to exit; return its exit status and the ``stty -a`` output,
        after checking the terminal was left sane."""
        self.child.expect(r"menu-exit=(\d+)")
        code = int(self.child.match.group(1))
        self.child.expect(pexpect.EOF)
        self.child.close()
        stty = plain(self.child.before)
        assert_terminal_sane(self.raw.getvalue(), stty)
        return code, stty

    def close(self) -> None:
        if self.child.isalive():
            self.child.close(force=True)


def assert_terminal_sane(raw: str, stty: str) -> None:
    """No traceback; no alternate screen; a hidden cursor was shown again; the line
    discipline after the menu is the normal cooked mode with echo."""
    assert "Traceback" not in raw, plain(raw)[-3000:]
    assert "\x1b[?1049h" not in raw and "\x1b[?47h" not in raw
    if "\x1b[?25l" in raw:
        assert raw.rfind("\x1b[?25h") > raw.rfind("\x1b[?25l"), "the cursor was left hidden"
    flags = stty.split()
    assert "icanon" in flags and "echo" in flags and "isig" in flags, stty
    assert "-icanon" not in flags and "-echo" not in flags, stty


@pytest.fixture
def term_factory():
    terms: list[MenuTerm] = []

    def make(directory: Path, **kwargs) -> MenuTerm:
        term = MenuTerm(directory, **kwargs)
        terms.append(term)
        return term

    yield make
    for term in terms:
        term.close()


def _longest(directory: Path) -> tuple[int, str]:
    """The list number (1-based, most recent first) and id of the session with the most messages."""
    infos = sessions_by_activity(load(directory).state)
    number, info = max(enumerate(infos, 1), key=lambda pair: len(pair[1].visible))
    return number, info.id


def test_open_a_session_and_page_through_it(logdir: Path, term_factory) -> None:
    """The session's pages show the same text ``convlog show`` prints; Enter/n/p and a
    message number move between them; q goes back and quits with 0."""
    number, sid = _longest(logdir)
    messages = load(logdir).messages(sid)
    pages = -(-len(messages) // MESSAGE_PAGE)
    assert pages >= 3
    term = term_factory(logdir)
    term.answer("menu › ", "s")
    screen = term.answer("sessions › ", str(number))
    assert sid in screen and "most recent first" in screen
    screen = term.answer("session › ", "")
    assert f"session {sid} · main · {len(messages)} messages · page 1/{pages}" in screen
    assert transcript(messages[:MESSAGE_PAGE], "text") in screen
    screen = term.answer("session › ", "p")
    assert f"page 2/{pages}" in screen
    assert transcript(messages[MESSAGE_PAGE:2 * MESSAGE_PAGE], "text") in screen
    screen = term.answer("session › ", str(len(messages)))  # jump to the last message
    assert f"page 1/{pages}" in screen
    screen = term.answer("session › ", "n")
    assert f"page {pages}/{pages}" in screen
    assert transcript(messages[(pages - 1) * MESSAGE_PAGE:], "text") in screen
    screen = term.answer("session › ", "q")
    assert "that was the last page" in screen and f"page {pages}/{pages}" in screen
    term.answer("sessions › ", "q")
    term.answer("menu › ", "q")
    code, _ = term.finish()
    assert code == 0


def test_fork_rewind_and_crystal_from_the_menu(logdir: Path, term_factory) -> None:
    """Each action appends one control record under the writer lock (no recorder runs)
    and shows the session's new state; a refused one shows the fold's reason and writes
    nothing."""
    number, sid = _longest(logdir)
    before = load(logdir)
    seqs = before.state.visible(sid)
    term = term_factory(logdir)
    term.answer("menu › ", "1")
    term.answer("sessions › ", str(number))
    term.answer("session › ", "f")
    term.answer("fork at how many messages", "3")
    term.answer("branch name", "alt")
    screen = term.answer("session › ", "f")
    assert re.search(rf"session\.fork seq \d+ \(direct\): {re.escape(sid)}/alt: 3 messages visible; "
                     rf"branch alt of {re.escape(sid)} at 3", screen), screen
    term.answer("fork at how many messages", "")
    term.answer("branch name", "alt")
    screen = term.answer("session › ", "r")
    assert f"session '{sid}/alt' already exists" in screen
    term.answer("rewind to how many messages", "99")  # out of range: refused before anything is asked of the fold
    screen = term.answer("session › ", "r")
    assert f"rewind to: 99 is more than the {len(seqs)} visible messages" in screen
    term.answer("rewind to how many messages", "5")
    screen = term.answer("session › ", "c")
    assert re.search(rf"session\.rewind seq \d+ \(direct\): {re.escape(sid)}: 5 messages visible", screen), screen
    assert f"session {sid} · main · 5 messages · page 1/1" in screen
    term.answer("summary text", "the gist of the first two")
    screen = term.answer("it covers how many messages", "2")
    screen = term.answer("session › ", "q")
    assert "session.crystal seq" in screen and "crystal over 2" in screen
    term.answer("sessions › ", "q")
    term.answer("menu › ", "q")
    code, _ = term.finish()
    assert code == 0

    after = load(logdir)
    fork = after.state.sessions[f"{sid}/alt"]
    assert (fork.parent, fork.fork_at, fork.branch) == (sid, 3, "alt")
    assert after.state.visible(fork.id) == seqs[:3]
    assert after.state.visible(sid) == seqs[:5]
    assert after.state.sessions[sid].crystals[-1].upto == 2
    assert resume_context(after, sid)["crystal"]["summary"] == "the gist of the first two"
    written = [r for r in records(logdir) if r["seq"] > before.state.last_seq]
    assert [(r["kind"], r["source"], r["session"]) for r in written] == [
        ("session.fork", "control", f"{sid}/alt"), ("session.rewind", "control", sid),
        ("session.crystal", "control", sid)]


def test_search_finds_a_word_and_opens_its_session(logdir: Path, term_factory) -> None:
    """A word the demo said ("haiku") is found, highlighted, and opens its session at the
    message; an invalid FTS5 query is one readable line and the menu carries on."""
    term = term_factory(logdir)
    term.answer("menu › ", "/")
    term.answer("search (", "haiku")
    raw_before = len(term.raw.getvalue())
    screen = term.answer("hits › ", "1")
    assert "1 hit for 'haiku'" in screen and "demo-stream" in screen and "Stream me a haiku." in screen
    raw = term.raw.getvalue()[raw_before:]
    assert re.search(r"\x1b\[[0-9;]*m+haiku\x1b\[0m", raw), "the match is highlighted"
    screen = term.answer("session › ", "q")
    assert "session demo-stream · main · 2 messages · page 1/1" in screen
    assert "An old silent pond / a frog jumps into the pond — / splash! Silence again." in screen
    term.answer("hits › ", "s")
    term.answer("search (", '"unbalanced')
    screen = term.answer("search (", "")
    assert re.search(r"convlog: search query .*unbalanced.* is not valid FTS5 syntax", screen), screen
    term.answer("menu › ", "q")
    code, _ = term.finish()
    assert code == 0


def test_recent_messages_come_from_the_end_of_the_log(logdir: Path, term_factory) -> None:
    """The last messages are listed with their seq; the last one (the end of a streamed
    reply) opens its session on the page holding the stream."""
    recent = recent_records(logdir)
    last = recent[-1]
    term = term_factory(logdir)
    term.answer("menu › ", "r")
    screen = term.answer("recent › ", str(len(recent)))
    assert f"the last {len(recent)} messages" in screen
    for record in recent:
        assert re.search(rf"│\s*{record['seq']} │", screen), record["seq"]
    screen = term.answer("session › ", "q")
    assert f"session {last['session']} ·" in screen and "page 1/1" in screen
    assert "not among the visible messages" not in screen
    term.answer("recent › ", "q")
    term.answer("menu › ", "q")
    assert term.finish()[0] == 0


def test_checkpoint_inspect_and_resume(logdir: Path, term_factory) -> None:
    """A checkpoint shows its cut and sessions; "l" prints the resume context of the
    latest session as of its seq."""
    info = list_checkpoints(logdir)[-1]
    context = resume_context(load(logdir, upto_seq=info.seq), "latest")
    term = term_factory(logdir)
    term.answer("menu › ", "c")
    screen = term.answer("checkpoints › ", "1")
    assert re.search(rf"│\s*1 │\s*{info.seq} │.*│ \(automatic\)", screen), screen
    screen = term.answer("checkpoint › ", "l")
    assert f"checkpoint {info.path.name}" in screen and f"cut: seq {info.seq} " in screen
    assert "the log still holds this cut" in screen
    screen = term.answer("checkpoint › ", "q")
    assert f"resume context as of seq {info.seq}" in screen
    assert f"# Resume context: session {context['session']}" in screen
    for message in context["messages"]:
        assert message["text"] in screen
    term.answer("checkpoints › ", "q")
    term.answer("menu › ", "q")
    assert term.finish()[0] == 0


def test_diagnostics_without_a_recorder(logdir: Path, term_factory) -> None:
    term = term_factory(logdir)
    term.answer("menu › ", "d")
    screen = term.answer("diagnostics › ", "q")
    assert f"not running: no recorder is running for {logdir}" in screen
    for name in ("config:", "directory:", "recorder:", "clock:"):
        assert name in screen
    term.answer("menu › ", "q")
    assert term.finish()[0] == 0


def test_escape_sequences_in_messages_cannot_break_the_terminal(tmp_path: Path, term_factory) -> None:
    """A message holding terminal escape sequences (alternate screen, title, cursor
    hide, clear) is shown with them spelled out, never sent to the terminal."""
    directory = tmp_path / "log"
    ensure_layout(directory)
    writer = SegmentWriter(directory, next_seq=1)
    nasty = "look\x1b[?1049h\x1b]0;pwned\x07\x1b[?25l\x1b[2J here"
    for seq, (mid, content) in enumerate([("m1", "hello"), ("m2", nasty)], 1):
        event = {"type": "message", "session_id": "evil\x1b[31m", "message_id": mid, "sender": "bot\x1b[5m",
                 "content": content}
        writer.write(Ingest().line([b"t", orjson.dumps(event)], seq, "2026-11-21T12:00:00.000001Z", "sub"), seq)
    writer.close()
    term = term_factory(directory)
    term.answer("menu › ", "s")
    screen = term.answer("sessions › ", "1")
    assert "evil\\x1b[31m" in screen
    screen = term.answer("session › ", "q")
    assert "look\\x1b[?1049h\\x1b]0;pwned\\x07\\x1b[?25l\\x1b[2J here" in screen and "bot\\x1b[5m" in screen
    term.answer("sessions › ", "q")
    term.answer("menu › ", "r")
    screen = term.answer("recent › ", "q")
    assert "look\\x1b[?1049h" in screen
    term.answer("menu › ", "q")
    assert term.finish()[0] == 0
    raw = term.raw.getvalue()
    for sequence in ("\x1b[?1049h", "\x1b]0;pwned", "\x1b[2J", "\x1b[31m", "\x1b[5m"):
        assert sequence not in raw


def test_ctrl_c_and_ctrl_d_quit_cleanly(logdir: Path, term_factory) -> None:
    """Ctrl-C in the middle of a fork's questions quits with 0, no traceback, nothing
    written, the terminal sane; so does Ctrl-D at the top."""
    size = sum(path.stat().st_size for _, path in list_segments(logdir))
    number, _ = _longest(logdir)
    term = term_factory(logdir)
    term.answer("menu › ", "s")
    term.answer("sessions › ", str(number))
    term.answer("session › ", "f")
    term.answer("fork at how many messages", "2")
    term.upto("branch name")
    term.child.sendintr()
    code, _ = term.finish()
    assert code == 0
    assert sum(path.stat().st_size for _, path in list_segments(logdir)) == size

    term = term_factory(logdir)
    term.upto("menu › ")
    term.child.sendeof()
    assert term.finish()[0] == 0


def test_without_a_terminal_it_prints_the_help(logdir: Path, term_factory) -> None:
    result = subprocess.run(convlog_cmd(), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 2
    # click's own usage line for the group (its wording and brackets change between releases)
    assert result.stderr.splitlines()[0].endswith(_group_usage())
    assert "Recording:" in result.stderr and "Reading:" in result.stderr and "interactive menu" in result.stderr
    # --dir before the command is the command's too (issue 11): the same as after it
    before = subprocess.run(convlog_cmd("--dir", str(logdir), "sessions", "--json"), capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=60)
    after = subprocess.run(convlog_cmd("sessions", "--json", "--dir", str(logdir)), capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=60)
    assert before.returncode == after.returncode == 0 and before.stdout == after.stdout, before.stderr
    # stdin a terminal, stdout a pipe: still the help, never a menu nobody sees
    term = term_factory(logdir, command=f"set -o pipefail; {shlex.join(convlog_cmd('--dir', str(logdir)))} | cat")
    code, _ = term.finish()
    screen = plain(term.raw.getvalue())
    assert code == 2  # as with no terminal at all; the menu did not wait for input
    assert _group_usage() in screen and "the menu needs a terminal" in screen and "menu ›" not in screen


def _group_usage() -> str:
    """The usage line click writes for ``convlog`` (without its ``Usage:`` label)."""
    import click

    from convlog.cli.commands import main

    return main.get_usage(click.Context(main, info_name="convlog")).split(" ", 1)[1].strip()


def test_with_a_running_recorder(logdir: Path, bus: Bus, term_factory) -> None:
    """Diagnostics show the running recorder's status; a fork goes through its control
    channel and lands in the log it writes."""
    proc = bus.recorder(logdir)
    status = answering(logdir, proc)
    number, sid = _longest(logdir)
    term = term_factory(logdir)
    term.answer("menu › ", "d")
    screen = term.answer("diagnostics › ", "q")
    assert f"recorder pid {status['pid']}" in screen and "not running" not in screen
    assert f"recorder: running: pid {status['pid']}" in screen
    term.answer("menu › ", "s")
    term.answer("sessions › ", str(number))
    term.answer("session › ", "f")
    term.answer("fork at how many messages", "1")
    term.answer("branch name", "live")
    screen = term.answer("session › ", "q")
    assert re.search(rf"session\.fork seq \d+ \(recorder\): {re.escape(sid)}/live: 1 message visible", screen)
    term.answer("sessions › ", "q")
    term.answer("menu › ", "q")
    assert term.finish()[0] == 0
    assert proc.terminate() == 0
    forks = [r for r in records(logdir) if r["kind"] == "session.fork" and r["session"] == f"{sid}/live"]
    assert len(forks) == 1 and forks[0]["source"] == "control"
    assert load(logdir).state.sessions[f"{sid}/live"].fork_at == 1
