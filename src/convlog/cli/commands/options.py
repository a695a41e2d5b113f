"""Options, arguments and steps shared by the ``convlog`` commands: the log directory
(``--dir``, ``[DIR]``, ``$CONVLOG_DIR``), ``--as-of`` with the fold it selects, and
silencing stdout once its reader went away."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def default_dir() -> str:
    """The log directory when none is given: ``$CONVLOG_DIR``, else ``conversation_logs``."""
    return os.environ.get("CONVLOG_DIR", "conversation_logs")


def dir_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--dir``: the log directory (default ``$CONVLOG_DIR`` or ``./conversation_logs``)."""
    return click.option(
        "--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
        default=default_dir, show_default="$CONVLOG_DIR or ./conversation_logs",
        help="Log directory.",
    )(func)


def as_of_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--as-of SEQ|TIME``: fold the log only up to a seq or a receive time (time travel)."""
    return click.option(
        "--as-of", "as_of", metavar="SEQ|TIME",
        help="Show the state as of a seq or an ISO 8601 time (UTC unless a zone is given).",
    )(func)


def load_log(directory: Path, as_of: str | None, upto: int | None = None) -> Any:
    """Fold the log up to ``--as-of`` and/or ``upto`` (a progress bar on a terminal)."""
    from convlog.cli import console
    from convlog.store.replay import load, parse_as_of

    seq, ts = (None, None)
    if as_of is not None:
        try:
            seq, ts = parse_as_of(as_of)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--as-of'") from None
    if upto is not None:
        seq = upto if seq is None else min(seq, upto)
    with console.lazy_progress("folding the log") as progress:
        return load(directory, upto_seq=seq, as_of_ts=ts, progress=progress)


def log_dir_argument(func: Callable[..., Any]) -> Callable[..., Any]:
    """An optional ``DIR`` argument and the equivalent ``--dir``; the command receives
    ``dir_argument`` and ``dir_option`` and resolves them with :func:`log_dir`."""
    func = click.option(
        "--dir", "dir_option", type=click.Path(file_okay=False, path_type=Path),
        help="Log directory (the same as DIR; default $CONVLOG_DIR or ./conversation_logs).",
    )(func)
    return click.argument("dir_argument", metavar="[DIR]", required=False,
                          type=click.Path(file_okay=False, path_type=Path))(func)


def log_dir(dir_argument: Path | None, dir_option: Path | None) -> Path:
    """DIR or ``--dir`` (a usage error when they differ), else ``$CONVLOG_DIR`` or
    ``./conversation_logs``."""
    if dir_argument is not None and dir_option is not None and dir_argument != dir_option:
        raise click.UsageError(f"two log directories given: {dir_argument} and --dir {dir_option}")
    return dir_argument or dir_option or Path(default_dir())


def silence_stdout() -> None:
    """Point stdout at /dev/null after its reader went away, so nothing more (not even
    the interpreter's final flush) fails on the closed pipe."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
