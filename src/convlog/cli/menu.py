"""The interactive menu: ``convlog`` with no command on a terminal.

A keyboard-only browser of one log directory: sessions (open one, page through its
messages, fork / rewind / crystal it), checkpoints (inspect one, resume a session as of
it), the most recent messages, search, and diagnostics (the ``convlog status`` and
``convlog doctor`` reports).

It is line based on purpose: every answer is a line read with :func:`input` (rich's
``Console.input``) in the terminal's normal cooked mode, so there is no raw mode,
alternate screen or curses state to restore. Single keys or numbers choose; ``q``
goes back (and quits at the top); Ctrl-C or Ctrl-D quits from anywhere with exit
status 0 (a Ctrl-C while a session control record is being written waits until it
is written whole). The only terminal state rich changes is the cursor's visibility
while a spinner or progress bar runs, which rich restores, and :meth:`Menu.run` shows
the cursor once more on the way out. Text from the log (message bodies, session ids,
senders) is printed through :func:`printable`, so escape sequences recorded in a
message are shown spelled out instead of being obeyed by the terminal.

Functional core, imperative shell: the decisions (paging arithmetic, turning an answer
into an :class:`Action`, checking counts and rewind targets, building the session
control records, highlighting snippets) are the small pure functions at the top; the
:class:`Menu` class does the I/O and calls them. Session control goes through
:func:`convlog.cli.session_control.append` (the running recorder's control channel when one
runs, else the writer lock), exactly as the ``fork``/``rewind``/``crystal`` commands.
The folded state is kept current between screens by :class:`CurrentFold` (only new
records are folded); "recent messages" reads the log backwards from its end
(:func:`recent_records`), never the whole log.
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from rich.table import Table
from rich.text import Text

from convlog.cli import console, output, reports
from convlog.cli.session_control import Build, fork_id, session_notes
from convlog.core.fold import Session, State, Stream
from convlog.core.view import payload_text, plural, printable
from convlog.readers.tail import RecordFilter, newest
from convlog.store.replay import Replay
from convlog.store.segment import list_segments

#: Sessions (or checkpoint sessions, checkpoints) per page of a list.
LIST_PAGE = 15
#: Messages per page of a session.
MESSAGE_PAGE = 5
#: How many records "recent messages" shows.
RECENT_COUNT = 20
#: Kinds "recent messages" shows: whole messages and the ends of streamed ones.
RECENT_KINDS = frozenset({"message", "message.end"})
#: Hits per search.
SEARCH_LIMIT = 20
#: Markers around the matched words in a search snippet (see convlog.store.search).
SNIPPET_START, SNIPPET_END = "\x02", "\x03"

#: Answers at the top menu.
TOP_KEYS = {
    "1": "sessions", "s": "sessions",
    "2": "checkpoints", "c": "checkpoints",
    "3": "recent", "r": "recent",
    "4": "search", "/": "search",
    "5": "diagnostics", "d": "diagnostics",
    "q": "quit",
}
#: Answers in a list of sessions or checkpoints (a number opens an item).
LIST_KEYS = {"n": "next", "p": "previous", "q": "quit"}
#: Answers while reading a session (a number jumps to that message's page).
SESSION_KEYS = {"": "next", "n": "next", "p": "previous", "f": "fork", "r": "rewind", "c": "crystal", "q": "quit"}
#: Answers in an inspected checkpoint (a number resumes that session as of it).
CHECKPOINT_KEYS = {"n": "next", "p": "previous", "l": "latest", "q": "quit"}
#: Answers under the recent messages (a number opens the session at that message).
RECENT_KEYS = {"r": "refresh", "q": "quit"}
#: Answers under search hits (a number opens the session at that message).
SEARCH_KEYS = {"": "search", "s": "search", "q": "quit"}
#: Answers under the diagnostics report.
DIAGNOSTICS_KEYS = {"r": "refresh", "q": "quit"}


# --------------------------------------------------------------------------- pure core


class MenuInputError(ValueError):
    """An answer the menu cannot use; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list of ``total`` items.

    Attributes:
        number: the page, 0-based, within ``[0, pages)``.
        pages: how many pages the list has (at least 1, also for an empty list).
        start, stop: the items on it, as the slice ``[start:stop]`` (empty for an empty list).
    """

    number: int
    pages: int
    start: int
    stop: int

    def label(self) -> str:
        """``page 2/7`` (1-based, for people)."""
        return f"page {self.number + 1}/{self.pages}"


def page_of(total: int, page: int, size: int) -> Page:
    """The page ``page`` of a list of ``total`` items shown ``size`` at a time, clamped to
    the pages that exist (so "next" on the last page stays there).

    Args:
        total: items in the list (>= 0).
        page: the wanted page, 0-based (any int: clamped).
        size: items per page (>= 1).

    Returns:
        the :class:`Page`.

    Raises:
        ValueError: for a negative ``total`` or a ``size`` below 1.
    """
    if total < 0:
        raise ValueError(f"a list cannot have {total} items")
    if size < 1:
        raise ValueError(f"a page must hold at least 1 item, not {size}")
    pages = max(1, -(-total // size))
    number = min(max(page, 0), pages - 1)
    start = number * size
    return Page(number, pages, start, min(total, start + size))


def page_containing(index: int, size: int) -> int:
    """The 0-based page that shows item ``index`` (0-based) when ``size`` fit on a page.

    Raises:
        ValueError: for a negative ``index`` or a ``size`` below 1.
    """
    if index < 0 or size < 1:
        raise ValueError(f"no page holds item {index} at {size} per page")
    return index // size


@dataclass(frozen=True, slots=True)
class Action:
    """What an answer asks for.

    Attributes:
        name: a value of the screen's key map (``next``, ``fork``, ``quit``, ...),
            ``open`` for a number, or ``none`` for an empty answer the screen has no
            meaning for.
        index: for ``open``, the 0-based item the number names; else None.
    """

    name: str
    index: int | None = None


def parse_answer(answer: str, keys: Mapping[str, str], items: int = 0) -> Action:
    """Turn a menu answer into an :class:`Action`.

    Case and surrounding blanks are ignored. A key of ``keys`` (or the full name it maps
    to, e.g. ``sessions``) gives that action; a number ``1..items`` gives ``open`` with the
    0-based index; an empty answer gives ``keys[""]`` when the screen has one, else ``none``.

    Args:
        answer: the line typed (without its newline).
        keys: answer -> action name for this screen.
        items: how many numbered items the screen shows (0: numbers mean nothing).

    Returns:
        the action.

    Raises:
        MenuInputError: for anything else, naming the valid answers.
    """
    text = answer.strip().lower()
    if text in keys:
        return Action(keys[text])
    if text == "":
        return Action("none")
    names = {name for name in keys.values()}
    if text in names:
        return Action(text)
    if _is_number(text) and items:
        number = int(text)
        if not 1 <= number <= items:
            raise MenuInputError(f"no item {number}: choose 1-{items}")
        return Action("open", number - 1)
    raise MenuInputError(f"{answer.strip()!r} is not a choice here: {_hint(keys, items)}")


def _is_number(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts ``²``, which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def _hint(keys: Mapping[str, str], items: int) -> str:
    """``1-12, n/Enter (next), p (previous), q (quit)``: the valid answers, grouped by action."""
    grouped: dict[str, list[str]] = {}
    for key, name in keys.items():
        grouped.setdefault(name, []).append(key or "Enter")
    choices = [f"{'/'.join(group)} ({name})" for name, group in grouped.items()]
    if items:
        choices.insert(0, f"1-{items}")
    return ", ".join(choices)


def parse_count(text: str, high: int, what: str) -> int | None:
    """A message count typed by the user: blank for the default, else ``0..high``.

    Args:
        text: the answer.
        high: the largest count that makes sense (the visible messages).
        what: the name of the value, for the error (``fork at``).

    Returns:
        the count, or None when the answer is blank (the command's default: all).

    Raises:
        MenuInputError: when it is not a whole number in ``0..high``.
    """
    text = text.strip()
    if not text:
        return None
    if not _is_number(text):
        raise MenuInputError(f"{what}: {text!r} is not a whole number of messages")
    value = int(text)
    if value > high:
        raise MenuInputError(f"{what}: {value} is more than the {high} visible messages")
    return value


def parse_rewind(text: str, high: int, checkpoints: Sequence[str]) -> dict[str, Any] | None:
    """Where a rewind goes: ``N`` (keep the first N visible messages) or the name of one
    of the session's checkpoints (``@NAME`` forces a name, for a name made of digits).

    Args:
        text: the answer.
        high: visible messages of the session.
        checkpoints: the session's checkpoint names.

    Returns:
        ``{"to": N}`` or ``{"checkpoint": NAME}`` (the ``session.rewind`` data), or None
        for a blank answer (cancel).

    Raises:
        MenuInputError: for a count out of range or an unknown checkpoint.
    """
    text = text.strip()
    if not text:
        return None
    if _is_number(text):
        return {"to": parse_count(text, high, "rewind to")}
    name = text[1:] if text.startswith("@") else text
    if name not in checkpoints:
        have = ", ".join(sorted(checkpoints)) or "none"
        raise MenuInputError(f"no checkpoint {name!r} in this session (it has: {have})")
    return {"checkpoint": name}


def sessions_by_activity(state: State, include_deleted: bool = False) -> list[Session]:
    """The sessions, most recently active first (by the seq of their last record).

    Returns:
        the :class:`~convlog.core.fold.Session` objects of ``state`` (do not mutate them).
    """
    return sorted(state.session_list(include_deleted), key=lambda s: s.last_seq, reverse=True)


def message_position(seqs: Sequence[int], streams: Iterable[Stream], seq: int) -> int | None:
    """Where the message that record ``seq`` belongs to sits in a session.

    Args:
        seqs: the session's visible message seqs, in order (``State.visible``).
        streams: streamed messages (``State.streams.values()``): a delta or end record
            of one stands for the stream, whose visible seq is its ``first_seq``.
        seq: a record's seq (a message, or a part of a streamed one).

    Returns:
        the 0-based position in ``seqs``, or None when that message is not visible
        there (rewound away, another session, not a message).
    """
    positions = {value: index for index, value in enumerate(seqs)}
    if seq in positions:
        return positions[seq]
    for stream in streams:
        if seq == stream.end_seq or seq in stream.delta_seqs:
            return positions.get(stream.first_seq)
    return None


def fork_build(parent: str, at: int | None, name: str | None) -> Build:
    """The ``session.fork`` a menu fork appends, as ``convlog fork PARENT [--at N] [--name NAME]``
    builds it: the new id is ``<parent>/<name>`` (or ``<parent>/fork-K``).

    Returns:
        a :data:`convlog.cli.session_control.Build` for :func:`convlog.cli.session_control.append`.
    """

    def build(replay: Replay) -> tuple[str, str, dict[str, Any]]:
        data: dict[str, Any] = {"parent": parent}
        if at is not None:
            data["at"] = at
        if name is not None:
            data["name"] = name
        return "session.fork", fork_id(replay.state, parent, name), data

    return build


def control_build(kind: str, session: str, **params: Any) -> Build:
    """A session control record for ``session`` with the parameters that are not None
    (the fold's defaults apply to the others), as the CLI's rewind/crystal build them.

    Returns:
        a :data:`convlog.cli.session_control.Build`.
    """
    data = {key: value for key, value in params.items() if value is not None}
    return lambda replay: (kind, session, dict(data))


def highlight(snippet: str, style: str = "bold reverse", start: str = SNIPPET_START, end: str = SNIPPET_END) -> Text:
    """A search snippet as rich text: the parts between ``start`` and ``end`` markers in
    ``style``, the markers removed. An unclosed marker highlights to the end; a stray
    end marker is dropped. Markup-like text (``[bold]``) stays literal; control
    characters are made visible (:func:`printable`).

    Returns:
        the :class:`rich.text.Text`.
    """
    text = Text()
    marked = False
    for part in re.split(f"({re.escape(start)}|{re.escape(end)})", snippet):
        if part == start:
            marked = True
        elif part == end:
            marked = False
        elif part:
            text.append(printable(part), style if marked else None)
    return text


def one_line(text: str, width: int = 160) -> str:
    """``text`` on one line (newlines and tabs as spaces), cut to ``width`` characters with ``…``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


# --------------------------------------------------------------------------- reading the end of the log


def recent_records(directory: Path, count: int = RECENT_COUNT, kinds: frozenset[str] = RECENT_KINDS) -> list[dict]:
    """The last ``count`` records of the given kinds, read backwards from the end of the
    last segment (and earlier segments only when it holds too few), so the cost follows
    what is shown, not the size of the log (:func:`convlog.readers.tail.newest`). Unreadable
    lines are skipped.

    Args:
        directory: the log directory.
        count: how many records (>= 0).
        kinds: the record kinds wanted.

    Returns:
        up to ``count`` records, oldest first (``[]`` when the directory has no log).

    Raises:
        OSError: when a segment cannot be read.
    """
    if count <= 0:
        return []
    return [found.record for found in newest(directory, count, RecordFilter.of(kinds=kinds)).records]


# --------------------------------------------------------------------------- shell


#: Records folded between two progress reports of :meth:`CurrentFold.replay`.
_PROGRESS_RECORDS = 4096


class CurrentFold:
    """The fold of a log kept current while the menu runs: the first :meth:`replay`
    starts like :func:`convlog.store.replay.load` (the newest checkpoint whose cut matches the
    log, then the records after it); later calls fold only the records appended since
    (:func:`convlog.store.segment.follow` from the last position, across segment rotation), so
    going back and forth between screens does not fold the log again.

    When the log no longer holds the position (its segment is gone or shorter: the log
    was recovered, replaced or rebuilt) the fold starts over.

    Args:
        directory: the log directory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._state: State | None = None
        self._position: tuple[str, int] | None = None
        self._checkpoint: Path | None = None
        self._refused: list[str] = []

    def _holds_position(self) -> bool:
        if self._position is None:
            return True
        name, offset = self._position
        path = self.directory / "events" / name
        return path.exists() and path.stat().st_size >= offset

    def replay(self, progress: Callable[[int, int], None] | None = None) -> Replay:
        """Bring the fold up to date and return it (the state is shared between calls
        and changes with them: do not keep one across a later call).

        Args:
            progress: called as ``progress(done, total)`` in bytes of log folded by this
                call, every few thousand records and at the end (not when nothing is new).

        Returns:
            a :class:`~convlog.store.replay.Replay` of the whole log as written so far.

        Raises:
            NoLogError: when the directory has no segments.
            CheckpointError, OSError: when the log or a checkpoint cannot be read.
        """
        from convlog.core.fold import fold
        from convlog.store.checkpoint import best_start
        from convlog.store.replay import NoLogError
        from convlog.store.segment import follow

        if not list_segments(self.directory):
            raise NoLogError.in_directory(self.directory)
        if self._state is None or not self._holds_position():
            start = best_start(self.directory)
            self._state, self._position = start.state, start.position
            self._checkpoint, self._refused = start.checkpoint, start.refused
        state = self._state
        starts, total = {}, 0  # segment name -> bytes of the log before it
        for _, path in list_segments(self.directory):
            starts[path.name] = total
            total += path.stat().st_size
        base = 0 if self._position is None else starts.get(self._position[0], 0) + self._position[1]
        count = 0
        for record, segment, offset in follow(self.directory, self._position):
            fold(state, record)
            self._position = (segment, offset)
            count += 1
            if progress is not None and count % _PROGRESS_RECORDS == 0:
                done = starts.get(segment, total) + offset - base
                progress(done, max(total - base, done))
        if progress is not None and count:
            done = starts.get(self._position[0], total) + self._position[1] - base if self._position else 0
            progress(done, max(total - base, done))
        return Replay(directory=self.directory, state=state, checkpoint=self._checkpoint, refused=self._refused)


class _Back(Exception):
    """Leave the current screen (the user chose ``q``)."""


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C until the block ends, then raise it: a session control record is
    written whole (with the writer's state) before the menu quits."""
    received: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    try:
        previous = signal.signal(signal.SIGINT, note)
    except ValueError:  # not the main thread: nothing to defer
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


class Menu:
    """The interactive menu over one log directory (see the module doc).

    Prints to :data:`convlog.cli.console.out` (stdout), draws spinners on
    :data:`convlog.cli.console.err` (stderr) when that is a terminal, and reads answers with
    ``console.out.input``.

    Args:
        directory: the log directory (it need not exist: each screen says what is missing).
        list_page: items per page of the session and checkpoint lists.
        message_page: messages per page of a session.
    """

    def __init__(self, directory: Path, list_page: int = LIST_PAGE, message_page: int = MESSAGE_PAGE) -> None:
        self.directory = Path(directory)
        self.list_page = list_page
        self.message_page = message_page
        self.console = console.out
        self.fold = CurrentFold(self.directory)
        self._notices: list[Text] = []

    # ----------------------------------------------------------------- entry

    def run(self) -> int:
        """Show the top menu until the user quits (``q``, Ctrl-C or Ctrl-D).

        Returns:
            0, the exit status: quitting is never an error. Unexpected exceptions
            (bugs) propagate.
        """
        try:
            self._top()
        except (KeyboardInterrupt, EOFError):
            self.console.print()  # the prompt's line was not ended by a newline
        finally:
            self._flush()
            self.console.show_cursor(True)
        return 0

    # ----------------------------------------------------------------- helpers

    def _say(self, message: str, style: str | None = None) -> None:
        """Queue a line to print just above the next prompt (after the screen is redrawn)."""
        self._notices.append(Text(printable(message), style=style or ""))

    def _error(self, exc: BaseException) -> None:
        self._say(f"convlog: {exc}", "bold red")

    def _flush(self) -> None:
        for notice in self._notices:
            self.console.print(notice)
        self._notices.clear()

    def _ask(self, prompt: str) -> str:
        self._flush()
        return self.console.input(Text(f"{prompt} › ", style="bold cyan"))

    def _choose(self, prompt: str, keys: Mapping[str, str], items: int = 0) -> Action:
        """Ask until the answer is valid for this screen; ``quit`` raises :class:`_Back`."""
        while True:
            try:
                action = parse_answer(self._ask(prompt), keys, items)
            except MenuInputError as exc:
                self._say(str(exc), "yellow")
                continue
            if action.name == "quit":
                raise _Back
            return action

    @contextlib.contextmanager
    def _reported(self) -> Iterator[None]:
        """Show an expected failure (no log, refused command, recorder error, ...) as one
        ``convlog: reason`` line and carry on in the menu."""
        from convlog.cli.errors import EXPECTED

        try:
            yield
        except MenuInputError as exc:
            self._say(str(exc), "yellow")
        except (*EXPECTED, OSError) as exc:
            self._error(exc)

    def _busy(self, what: str) -> contextlib.AbstractContextManager[Any]:
        """A spinner on stderr while something slow runs (nothing when stderr is piped)."""
        if console.err.is_terminal:
            return console.err.status(what)
        return contextlib.nullcontext()

    def _load(self, upto_seq: int | None = None) -> Replay:
        """The fold of the whole log (kept current, see :class:`CurrentFold`), or of the
        records up to ``upto_seq`` (folded for the occasion)."""
        from convlog.store.replay import load

        if upto_seq is None:
            with console.lazy_progress("folding the log") as progress:
                return self.fold.replay(progress)
        with self._busy("folding the log…"):
            return load(self.directory, upto_seq=upto_seq)

    def _title(self, text: str) -> None:
        self.console.print()
        self.console.rule(Text(printable(text), style="bold"), align="left")

    # ----------------------------------------------------------------- screens

    def _top(self) -> None:
        entries = (("1", "s", "sessions"), ("2", "c", "checkpoints"), ("3", "r", "recent messages"),
                   ("4", "/", "search"), ("5", "d", "diagnostics (status and doctor)"), ("q", "", "quit"))
        screens: dict[str, Callable[[], None]] = {
            "sessions": self._sessions, "checkpoints": self._checkpoints, "recent": self._recent,
            "search": self._search, "diagnostics": self._diagnostics,
        }
        while True:
            segments = list_segments(self.directory)
            size = sum(path.stat().st_size for _, path in segments if path.exists())
            where = (f"{len(segments)} segment{'' if len(segments) == 1 else 's'}, {size / 1e6:,.1f} MB"
                     if segments else "no event log yet")
            self._title(f"convlog · {self.directory} · {where}")
            for number, key, label in entries:
                self.console.print(f"  {number:>2} {key:>2}  {label}", markup=False)
            try:
                action = self._choose("menu", TOP_KEYS)
            except _Back:
                return
            if action.name in screens:
                with contextlib.suppress(_Back), self._reported():
                    screens[action.name]()

    def _session_table(self, infos: Sequence[Session], page: Page) -> Table:
        table = Table(pad_edge=False)
        for column, justify in (("#", "right"), ("session", "left"), ("branch / parent", "left"),
                                ("msgs", "right"), ("participants", "left"), ("last activity", "left")):
            table.add_column(column, justify=justify, overflow="ellipsis")  # type: ignore[arg-type]
        for number in range(page.start, page.stop):
            info = infos[number]
            table.add_row(
                str(number + 1), Text(printable(info.id)), Text(printable(output.branch_label(info))),
                str(len(info.visible)),
                Text(printable(", ".join(info.participants[:3]) + (" …" if len(info.participants) > 3 else ""))),
                (info.last_ts or "")[:19].replace("T", " "),
            )
        return table

    def _sessions(self) -> None:
        replay = self._load()
        page = 0
        while True:
            infos = sessions_by_activity(replay.state)
            if not infos:
                self._say(f"no sessions in {self.directory} yet")
                return
            current = page_of(len(infos), page, self.list_page)
            self._title(f"sessions, most recent first · {len(infos)} · {current.label()}")
            self.console.print(self._session_table(infos, current))
            self.console.print("  number: open · n/p: next/previous page · q: back", markup=False, style="dim")
            action = self._choose("sessions", LIST_KEYS, len(infos))
            if action.name in ("next", "previous"):
                page = self._turn(current, action.name)
            elif action.name == "open" and action.index is not None:
                with contextlib.suppress(_Back):
                    self._session(infos[action.index].id)
                replay = self._load()  # it may have forked, rewound, ...

    def _turn(self, current: Page, direction: str) -> int:
        """The page after "next"/"previous", with a notice at either end."""
        wanted = current.number + (1 if direction == "next" else -1)
        if wanted >= current.pages:
            self._say("that was the last page")
        elif wanted < 0:
            self._say("this is the first page")
        return min(max(wanted, 0), current.pages - 1)

    def _session(self, sid: str, at_seq: int | None = None) -> None:
        """Read a session page by page, from the page holding ``at_seq`` when given."""
        replay = self._load()
        messages = replay.messages(sid)
        page = 0
        if at_seq is not None:
            index = message_position([m.seq for m in messages], replay.state.streams.values(), at_seq)
            if index is None:
                self._say(f"seq {at_seq} is not among the visible messages of {sid} (rewound, or another copy)")
            else:
                page = page_containing(index, self.message_page)
        while True:
            info = replay.state.sessions[sid]
            current = page_of(len(messages), page, self.message_page)
            self._title(f"session {sid} · {output.branch_label(info)} · {plural(len(messages), 'message')} · "
                        f"{current.label()}")
            extras = session_notes(info)
            if extras:
                self.console.print(printable(" · ".join(extras)), markup=False, style="dim")
            if messages:
                page_text = output.transcript(messages[current.start:current.stop], "text")
                self.console.print(printable(page_text), markup=False)
            else:
                self.console.print("(no visible messages)", markup=False)
            self.console.print("  Enter/n: next page · p: previous · number: message N · f: fork · r: rewind · "
                               "c: crystal · q: back", markup=False, style="dim")
            action = self._choose("session", SESSION_KEYS, len(messages))
            if action.name in ("next", "previous"):
                page = self._turn(current, action.name)
            elif action.name == "open" and action.index is not None:
                page = page_containing(action.index, self.message_page)
            elif action.name in ("fork", "rewind", "crystal"):
                with self._reported():
                    self._control(action.name, replay, sid)
                replay = self._load()
                if sid not in replay.state.sessions:  # pragma: no cover - sessions are never removed
                    return
                messages = replay.messages(sid)

    def _control(self, what: str, replay: Replay, sid: str) -> None:
        """Ask for the parameters of a fork, rewind or crystal of ``sid`` and append it."""
        from convlog.cli.session_control import append, describe

        info = replay.state.sessions[sid]
        count = len(info.visible)
        if what == "fork":
            at = parse_count(self._ask(f"fork at how many messages (0-{count}, Enter: all {count})"), count, "fork at")
            name = self._ask("branch name (Enter: fork-K)").strip() or None
            build = fork_build(sid, at, name)
        elif what == "rewind":
            names = sorted(info.checkpoints)
            listed = f" or a checkpoint ({', '.join(names)})" if names else ""
            target = parse_rewind(self._ask(f"rewind to how many messages (0-{count}){listed}; Enter: cancel"),
                                  count, names)
            if target is None:
                self._say("rewind cancelled")
                return
            build = control_build("session.rewind", sid, **target)
        else:
            summary = self._ask("summary text (Enter: cancel)").strip()
            if not summary:
                self._say("crystal cancelled")
                return
            upto = parse_count(self._ask(f"it covers how many messages (0-{count}, Enter: all {count})"), count,
                               "crystal upto")
            build = control_build("session.crystal", sid, summary=summary, upto=upto)
        with self._busy("writing…"), _sigint_deferred():
            appended = append(self.directory, build)
        self._say(describe(appended), "green")

    def _checkpoints(self) -> None:
        from convlog.store.checkpoint import list_checkpoints

        page = 0
        while True:
            infos = list_checkpoints(self.directory)[::-1]
            if not infos:
                self._say(f"no checkpoints in {self.directory / 'checkpoints'}")
                return
            current = page_of(len(infos), page, self.list_page)
            self._title(f"checkpoints, newest first · {len(infos)} · {current.label()}")
            table = Table(pad_edge=False)
            for column, justify in (("#", "right"), ("seq", "right"), ("time (last record)", "left"),
                                    ("label", "left"), ("sessions", "right"), ("size", "right")):
                table.add_column(column, justify=justify)  # type: ignore[arg-type]
            for number in range(current.start, current.stop):
                info = infos[number]
                table.add_row(str(number + 1), str(info.seq), (info.ts or "?")[:19].replace("T", " "),
                              Text(info.label or "(automatic)"), "?" if info.sessions is None else str(info.sessions),
                              f"{info.size / 1024:,.1f} KiB")
            self.console.print(table)
            self.console.print("  number: inspect · n/p: next/previous page · q: back", markup=False, style="dim")
            action = self._choose("checkpoints", LIST_KEYS, len(infos))
            if action.name in ("next", "previous"):
                page = self._turn(current, action.name)
            elif action.name == "open" and action.index is not None:
                with contextlib.suppress(_Back), self._reported():
                    self._checkpoint(infos[action.index])

    def _checkpoint(self, info: Any) -> None:
        """Inspect one checkpoint: its cut, whether the log still holds it, its sessions;
        resume one of them as of its seq."""
        from convlog.store.checkpoint import check_cut, load_checkpoint

        with self._busy("reading the checkpoint…"):
            cut, state = load_checkpoint(info.path)
            reason = check_cut(self.directory, cut)
        sessions = sessions_by_activity(state)
        page, redraw = 0, True
        while True:
            current = page_of(len(sessions), page, self.list_page)
            if redraw:
                self._checkpoint_screen(info, cut, state, reason, sessions, current)
            action = self._choose("checkpoint", CHECKPOINT_KEYS, len(sessions))
            redraw = True
            if action.name in ("next", "previous"):
                page = self._turn(current, action.name)
            elif action.name in ("open", "latest"):
                sid = "latest" if action.index is None else sessions[action.index].id
                with self._reported():
                    self._resume(sid, cut.seq, info.path)
                    redraw = False  # keep the resume context right above the prompt

    def _checkpoint_screen(self, info: Any, cut: Any, state: State, reason: str | None,
                           sessions: Sequence[Session], current: Page) -> None:
        self._title(f"checkpoint {info.path.name} · {current.label()} of its sessions")
        self.console.print(
            f"  label {info.label or '(automatic)'} · created {info.created or '?'} · {info.size:,} bytes\n"
            f"  cut: seq {cut.seq} (received {cut.ts or '?'}), events/{cut.segment} up to byte {cut.offset:,}, "
            f"{len(cut.segments)} earlier segment{'' if len(cut.segments) == 1 else 's'}, "
            f"sha256 {cut.digest[:16]}…\n"
            f"  {len(state.sessions)} sessions, {state.records:,} records folded",
            markup=False,
        )
        self.console.print(Text("  the log still holds this cut", style="green") if reason is None
                           else Text(f"  REFUSED by replay: {reason}", style="bold red"))
        if sessions:
            self.console.print(self._session_table(sessions, current))
        self.console.print("  number: resume that session as of this checkpoint · l: the latest session · "
                           "n/p: next/previous page · q: back", markup=False, style="dim")

    def _resume(self, sid: str, seq: int, path: Path) -> None:
        replay = self._load(upto_seq=seq)
        self._title(f"resume context as of seq {seq}")
        if replay.checkpoint != path:
            used = replay.checkpoint.name if replay.checkpoint else "the start of the log"
            self.console.print(f"(folded from {used}: {path.name} could not be used)", markup=False, style="yellow")
        with self.console.capture() as captured:  # the messages' text may hold escape sequences
            output.print_resume(replay, sid, "markdown")
        self.console.print(printable(captured.get()), markup=False, end="")

    def _records_table(self, rows: Sequence[tuple[str | None, str | None, str | None, int, Text]]) -> Table:
        """A numbered table of (time, session, speaker, seq, text) rows."""
        table = Table(pad_edge=False, expand=False)
        for column, justify in (("#", "right"), ("time", "left"), ("session", "left"), ("speaker", "left"),
                                ("seq", "right"), ("text", "left")):
            table.add_column(column, justify=justify, overflow="ellipsis",  # type: ignore[arg-type]
                             no_wrap=column != "text")
        for number, (ts, session, speaker, seq, text) in enumerate(rows, 1):
            table.add_row(str(number), printable((ts or "")[:19].replace("T", " ")), Text(printable(session or "-")),
                          Text(printable(speaker or "-")), str(seq), text)
        return table

    def _open_at(self, session: str | None, seq: int) -> None:
        if session is None:
            self._say(f"seq {seq} belongs to no session")
            return
        with contextlib.suppress(_Back):
            self._session(session, at_seq=seq)

    def _recent(self) -> None:
        while True:
            with self._busy("reading the end of the log…"):
                records = recent_records(self.directory, RECENT_COUNT)
            self._title(f"the last {plural(len(records), 'message')}")
            if not records:
                self._say(f"no messages in {self.directory} yet")
                return
            rows = []
            for record in records:
                meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
                text = payload_text(record)
                if record["kind"] == "message.end" and not text:
                    text = f"(end of streamed message {meta.get('message_id', '?')})"
                sender = meta.get("sender") if isinstance(meta.get("sender"), str) else None
                rows.append((record.get("ts"), record.get("session"), sender, record["seq"],
                             Text(one_line(printable(text)))))
            self.console.print(self._records_table(rows))
            self.console.print("  number: open its session there · r: refresh · q: back", markup=False, style="dim")
            action = self._choose("recent", RECENT_KEYS, len(records))
            if action.name == "open" and action.index is not None:
                record = records[action.index]
                with self._reported():
                    self._open_at(record.get("session"), record["seq"])

    def _search(self) -> None:
        import sqlite3

        try:
            from convlog.store.search import MARK_END, MARK_START, SearchIndex, SearchQueryError
        except ImportError as exc:
            self._say(f"search is not available: {exc}", "yellow")
            return
        if not list_segments(self.directory):
            self._say(f"no event log in {self.directory} to search")
            return
        with SearchIndex(self.directory) as index:
            while True:
                query = self._ask("search (words or an FTS5 query; Enter: back)").strip()
                if not query:
                    return
                try:
                    with console.lazy_progress("indexing the log for search") as progress:
                        index.update(progress=progress)
                    hits = index.query(query, limit=SEARCH_LIMIT)
                except (SearchQueryError, sqlite3.Error) as exc:
                    self._say(f"convlog: {exc}", "bold red")
                    continue
                if not hits:
                    self._say(f"no match for {query!r}")
                    continue
                while True:
                    self._title(f"{len(hits)} hit{'' if len(hits) == 1 else 's'} for {query!r}, newest first")
                    rows = [(hit.ts, hit.session, hit.speaker, hit.seq,
                             highlight(one_line(hit.snippet, 400), start=MARK_START, end=MARK_END)) for hit in hits]
                    self.console.print(self._records_table(rows))
                    self.console.print("  number: open its session there · Enter/s: new search · q: back",
                                       markup=False, style="dim")
                    action = self._choose("hits", SEARCH_KEYS, len(hits))
                    if action.name == "search":
                        break
                    if action.name == "open" and action.index is not None:
                        hit = hits[action.index]
                        with self._reported():
                            self._open_at(hit.session, hit.seq)

    def _diagnostics(self) -> None:
        while True:
            self._title(f"status of the recorder of {self.directory}")
            with self._reported():
                status = self._status()
            self._title("doctor")
            with self._reported():
                self._doctor(status)
            self.console.print("  r: run again · q: back", markup=False, style="dim")
            self._choose("diagnostics", DIAGNOSTICS_KEYS)

    def _status(self) -> dict[str, Any] | None:
        """Print ``convlog status`` and return the reply (None when no recorder runs)."""
        from convlog.bus import control

        try:
            with self._busy("asking the recorder…"):
                reply = control.request(self.directory, "status", timeout_s=3.0)
        except control.NotRunningError as exc:
            self.console.print(Text(f"not running: {exc}", style="yellow"))
            return None
        reply.pop("ok", None)
        reply["running"] = True
        reports.print_status(reply)
        return reply

    def _doctor(self, status: dict[str, Any] | None) -> None:
        """Print ``convlog doctor``'s checks (config from $CONVLOG_CONFIG, SUB endpoints
        from the running recorder, else the config), as the command does."""
        from convlog.cli.doctor import check_inputs, run_checks

        config, endpoints = check_inputs(None, (), status)
        with self._busy("checking…"):
            checks = run_checks(None, self.directory, endpoints, status,
                                silence_s=float(config.silence_threshold_s))
        reports.print_checks(checks)


def run_menu(directory: Path) -> int:
    """Open the menu on ``directory`` (stdin and stdout should be a terminal; the CLI
    checks) and return the exit status (0) when the user quits.

    Args:
        directory: the log directory.
    """
    return Menu(directory).run()
