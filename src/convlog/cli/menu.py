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
control records, highlighting snippets) are the small pure functions of
:mod:`convlog.cli.menu_core`; the :class:`Menu` class does the I/O and calls them. Session control goes through
:func:`convlog.cli.session_control.append` (the running recorder's control channel when one
runs, else the writer lock), exactly as the ``fork``/``rewind``/``crystal`` commands.
The folded state is kept current between screens by
:class:`convlog.cli.menu_fold.CurrentFold` (only new records are folded); "recent
messages" reads the log backwards from its end
(:func:`convlog.cli.menu_fold.recent_records`), never the whole log.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from rich.table import Table
from rich.text import Text

from convlog.cli import console, output, reports
from convlog.cli.menu_core import (
    CHECKPOINT_KEYS,
    DIAGNOSTICS_KEYS,
    LIST_KEYS,
    LIST_PAGE,
    MESSAGE_PAGE,
    RECENT_COUNT,
    RECENT_KEYS,
    SEARCH_KEYS,
    SEARCH_LIMIT,
    SESSION_KEYS,
    TOP_KEYS,
    Action,
    MenuInputError,
    Page,
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
from convlog.cli.session_control import session_notes
from convlog.core.fold import Session, State
from convlog.core.view import payload_text, plural, printable
from convlog.store.replay import Replay
from convlog.store.segment import list_segments


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
        from convlog.store.checkpoint import check_cut, load_checkpoint, read_horizon

        with self._busy("reading the checkpoint…"):
            cut, state = load_checkpoint(info.path)
            reason = check_cut(self.directory, cut, read_horizon(self.directory))
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
        from convlog.recorder.doctor import check_inputs, run_checks

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
