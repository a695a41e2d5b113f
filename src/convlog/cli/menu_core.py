"""The functional core of the interactive menu (:mod:`convlog.cli.menu`): its keys and
page sizes, paging arithmetic, turning an answer into an :class:`Action`, checking counts
and rewind targets, building the session control records and highlighting snippets.
Pure functions: no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from convlog.cli.session_control import Build, fork_id
from convlog.core.fold import Session, State, Stream
from convlog.core.view import printable
from convlog.store.replay import Replay

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
