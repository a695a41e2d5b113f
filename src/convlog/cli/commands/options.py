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


def curve_client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--curve-secret FILE`` and ``--curve-server FILE``: the client's own CURVE
    certificate and the broker's public one, for a broker serving CURVE (both or neither;
    see :func:`curve_keys`)."""
    func = click.option(
        "--curve-server", "curve_server", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
        help="The broker's public CURVE certificate (its NAME.key), with --curve-secret.",
    )(func)
    return click.option(
        "--curve-secret", "curve_secret", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
        help="Own CURVE certificate (NAME.key_secret from `convlog keys generate`) for a broker serving CURVE.",
    )(func)


def both_or_neither(first: tuple[str, object], second: tuple[str, object]) -> None:
    """Exit 2 with one line on stderr when only one of two options that go together was
    given.

    Args:
        first, second: ``(option name, value)``; None is "not given".
    """
    (name1, value1), (name2, value2) = first, second
    if (value1 is None) != (value2 is None):
        given, missing = (name1, name2) if value2 is None else (name2, name1)
        click.echo(f"convlog: {given} needs {missing} (give both or neither)", err=True)
        sys.exit(2)


def curve_keys(curve_secret: Path | None, curve_server: Path | None) -> Any:
    """The :class:`convlog.bus.curve.ClientKeys` of ``--curve-secret`` / ``--curve-server``,
    or None when neither is given (exit 2 when only one is).

    Raises:
        CurveError: for a certificate that cannot be used.
    """
    both_or_neither(("--curve-secret", curve_secret), ("--curve-server", curve_server))
    from convlog.bus.curve import client_keys

    return client_keys(curve_secret, curve_server)
