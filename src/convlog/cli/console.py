"""The consoles of the CLI (rich): ``out`` writes to stdout, ``err`` to stderr; text made
safe to show on a terminal, JSON printing, and the progress bars drawn on stderr."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from convlog.core.record import dump_json
from convlog.core.view import printable


def _width(stream: object) -> int | None:
    """Terminal width on a terminal; 160 columns (or $COLUMNS) when piped, instead of
    rich's 80, so tables of long session ids stay readable in files and CI logs."""
    if getattr(stream, "isatty", lambda: False)() or os.environ.get("COLUMNS"):
        return None
    return 160


class _PipeConsole(Console):
    """A rich console that lets a closed stdout (``| head``) reach the command as
    :class:`BrokenPipeError`, instead of rich's default of exiting with status 1, so a
    command keeps its own exit code (``convlog status | head -1`` still tells the health)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise BrokenPipeError(errno.EPIPE, "the reader of stdout went away")


out = _PipeConsole(highlight=False, soft_wrap=True, width=_width(sys.stdout))


err = Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))


def shown(text: str, console: Console | None = None) -> str:
    """``text`` as it may be printed on ``console`` (default :data:`out`): on a terminal,
    control and escape characters made visible (:func:`convlog.core.view.printable`), so a
    recorded ``ESC[2J`` or OSC 52 is shown, not obeyed; to a pipe or file, as it is."""
    return printable(text) if (console or out).is_terminal else text


def print_json(value: Any) -> None:
    """Print a JSON value (indented) to stdout, unstyled."""
    out.print(dump_json(value, option=orjson.OPT_INDENT_2).decode("utf-8", "replace"), markup=False)


@contextlib.contextmanager
def byte_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar over ``total`` bytes on stderr (cleared at the end; not drawn when
    stderr is not a terminal). Yields a callback taking the bytes done since its last call."""
    if not err.is_terminal:  # rich would still write an empty line there
        yield lambda done: None
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda done: progress.advance(task, done)


@contextlib.contextmanager
def lazy_progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr fed with ``(bytes done, bytes in all)``, drawn from the
    first report of unfinished work on (so nothing flashes when the work is quick or
    there is none), cleared at the end, and never drawn when stderr is not a terminal.
    Yields the callback (as :func:`convlog.store.replay.load`, :func:`convlog.store.verify.verify`
    and :meth:`convlog.store.search.SearchIndex.update` take it)."""
    if not err.is_terminal:
        yield lambda done, total: None
        return
    with contextlib.ExitStack() as stack:
        shown: list[tuple[Progress, TaskID]] = []

        def report(done: int, total: int) -> None:
            if not shown:
                if done >= total:
                    return  # finished at its first report: nothing to show
                bar = stack.enter_context(Progress(
                    TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    console=err, transient=True))
                shown.append((bar, bar.add_task(description, total=total)))
            bar, task = shown[0]
            bar.update(task, completed=done, total=total)

        yield report
