"""The ``convlog`` command line (click). Commands validate their options, call the
work in its own module, and turn expected failures into one readable line on stderr
and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import zmq

from convlog import __version__
from convlog.bus.control import ControlError
from convlog.bus.publisher import NoSubscriberError, PublishFileError
from convlog.cli.demo import DemoError
from convlog.cli.session_control import SessionControlError
from convlog.cli.sharegpt import DatasetMissingError
from convlog.recorder.config import FSYNC_POLICIES, ConfigError, load_config
from convlog.store.checkpoint import CheckpointError
from convlog.store.lock import LogLockedError
from convlog.store.replay import NoLogError, UnknownSessionError

#: Failures that are the user's to fix: one line, exit 1.
EXPECTED = (
    ConfigError,
    CheckpointError,
    LogLockedError,
    NoLogError,
    UnknownSessionError,
    NoSubscriberError,
    DemoError,
    DatasetMissingError,
    FileNotFoundError,
    PermissionError,
    PublishFileError,
    ControlError,
    SessionControlError,
    TimeoutError,
    zmq.ZMQError,
)


#: The commands of ``convlog --help`` by what a person wants to do, in that order.
COMMAND_SECTIONS: dict[str, tuple[str, ...]] = {
    "Recording": ("record", "launch", "status", "stop", "doctor", "broker", "publish", "demo"),
    "Reading": ("sessions", "show", "search", "tail", "info", "replay", "export", "play", "resume"),
    "Sessions": ("fork", "rewind", "checkpoint", "crystal", "delete", "checkpoints"),
    "Offline tools": ("verify", "recover", "import", "reindex"),
}


class ConvlogGroup(click.Group):
    """A click group that turns expected errors into ``convlog: <reason>`` and exit 1,
    and lists its commands in sections (:data:`COMMAND_SECTIONS`) instead of one
    alphabetical list."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = {name: self.get_command(ctx, name) for name in self.list_commands(ctx)}
        visible = {name: cmd for name, cmd in commands.items() if cmd is not None and not cmd.hidden}
        placed: set[str] = set()
        sections = [(title, [n for n in names if n in visible]) for title, names in COMMAND_SECTIONS.items()]
        for _, names in sections:
            placed.update(names)
        sections.append(("Other", sorted(set(visible) - placed)))
        limit = formatter.width - 6 - max((len(name) for name in visible), default=0)
        for title, names in sections:
            if names:
                with formatter.section(title):
                    formatter.write_dl([(name, visible[name].get_short_help_str(limit)) for name in names])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # the reader went away (| head): stop quietly
            _silence_stdout()
            ctx.exit(0)
        except EXPECTED as exc:
            click.echo(f"convlog: {exc}", err=True)
            ctx.exit(1)
        except OSError as exc:
            click.echo(f"convlog: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            ctx.exit(1)


def _silence_stdout() -> None:
    """Point stdout at /dev/null after its reader went away, so nothing more (not even
    the interpreter's final flush) fails on the closed pipe."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _default_dir() -> str:
    return os.environ.get("CONVLOG_DIR", "conversation_logs")


def dir_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--dir``: the log directory (default ``$CONVLOG_DIR`` or ``./conversation_logs``)."""
    return click.option(
        "--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
        default=_default_dir, show_default="$CONVLOG_DIR or ./conversation_logs",
        help="Log directory.",
    )(func)


def as_of_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--as-of SEQ|TIME``: fold the log only up to a seq or a receive time (time travel)."""
    return click.option(
        "--as-of", "as_of", metavar="SEQ|TIME",
        help="Show the state as of a seq or an ISO 8601 time (UTC unless a zone is given).",
    )(func)


def _load(directory: Path, as_of: str | None, upto: int | None = None) -> Any:
    """Fold the log up to ``--as-of`` and/or ``upto`` (a progress bar on a terminal)."""
    from convlog.cli import output
    from convlog.store.replay import load, parse_as_of

    seq, ts = (None, None)
    if as_of is not None:
        try:
            seq, ts = parse_as_of(as_of)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--as-of'") from None
    if upto is not None:
        seq = upto if seq is None else min(seq, upto)
    with output.lazy_progress("folding the log") as progress:
        return load(directory, upto_seq=seq, as_of_ts=ts, progress=progress)


@click.group(cls=ConvlogGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="convlog")
@click.option("--dir", "menu_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Log directory of the menu and of the command that follows (default $CONVLOG_DIR or "
                   "./conversation_logs).")
@click.pass_context
def main(ctx: click.Context, menu_dir: Path | None) -> None:
    """convlog: record a ZeroMQ agent bus into a durable JSONL event log and fold it
    back into conversations.

    With no command on a terminal, opens an interactive menu (sessions, checkpoints,
    recent messages, search, diagnostics; q goes back, Ctrl-C quits)."""
    if ctx.invoked_subcommand is not None:
        if menu_dir is not None:  # `convlog --dir D CMD` as `convlog CMD --dir D` (a --dir after CMD wins)
            ctx.default_map = {name: {"directory": str(menu_dir), "dir_option": str(menu_dir)}
                               for name in main.list_commands(ctx)}
        return
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        click.echo(ctx.get_help(), err=True)
        if menu_dir is not None:
            click.echo("convlog: the menu needs a terminal (stdin and stdout); give a command", err=True)
        ctx.exit(2)
    from convlog.cli.menu import run_menu

    ctx.exit(run_menu(menu_dir or Path(_default_dir())))


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML config file (default $CONVLOG_CONFIG).")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Log directory.")
@click.option("--sub", multiple=True, metavar="ENDPOINT",
              help="XPUB endpoint to subscribe to (repeatable; default tcp://127.0.0.1:5556).")
@click.option("--topic", "topics", multiple=True, metavar="PREFIX",
              help="Subscribe only to this topic prefix (repeatable; default everything).")
@click.option("--pull", metavar="ENDPOINT", help="Also bind a PULL socket here (e.g. tcp://127.0.0.1:5557).")
@click.option("--rcvhwm", type=int, help="Receive high-water mark, messages (default 1000000).")
@click.option("--fsync", type=click.Choice(FSYNC_POLICIES), help="fsync policy (default interval).")
@click.option("--fsync-interval-ms", type=int, help="Group-commit bound for --fsync interval (default 50).")
@click.option("--segment-bytes", type=int, help="Rotate segments at this size (default 64 MiB).")
@click.option("--metrics", metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (default off).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def record(config_path: Path | None, log_level: str, **flags: Any) -> None:
    """Record the bus into the log directory (foreground; stop with SIGTERM or Ctrl-C)."""
    from convlog.recorder.daemon import Recorder, configure_logging

    flags["dir"] = flags.pop("directory")
    config = load_config(config_path, overrides=flags)
    configure_logging(log_level.upper())
    sys.exit(Recorder(config, reload_config=lambda: load_config(config_path, overrides=flags)).run())


@main.command()
@click.option("--xsub", default="tcp://127.0.0.1:5555", show_default=True,
              help="Endpoint publishers connect to.")
@click.option("--xpub", default="tcp://127.0.0.1:5556", show_default=True,
              help="Endpoint subscribers connect to.")
@click.option("--hwm", type=click.IntRange(min=0), help="High-water mark for both sockets (default libzmq's 1000).")
def broker(xsub: str, xpub: str, hwm: int | None) -> None:
    """Run the reference XSUB/XPUB broker (foreground; stop with SIGTERM or Ctrl-C)."""
    from convlog.bus.broker import run_broker
    from convlog.recorder.daemon import configure_logging

    configure_logging()
    sys.exit(run_broker(xsub, xpub, hwm))


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "endpoint", default="tcp://127.0.0.1:5555", show_default=True, metavar="ENDPOINT",
              help="The broker's XSUB endpoint (as `play --to`).")
@click.option("--endpoint", "endpoint_alias", hidden=True, help="Old spelling of --to.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True),
              help="Messages per second (default: as fast as possible).")
@click.option("--format", "fmt", type=click.Choice(["auto", "native", "legacy", "export-json"]), default="auto",
              show_default=True,
              help="native: send each line as is; legacy: ConversationEvent records to bus payloads; "
                   "export-json: a 'convlog export --format json' document as native events; auto: by the file.")
@click.option("--topic", help="Topic for every message (default: sender or session id).")
@click.option("--wait", "wait_s", type=float, default=10.0, show_default=True,
              help="Seconds to wait for a subscriber before sending (0: don't wait).")
@click.option("--publisher-id", help="Id in the loss-detection stamps (default host:pid:random).")
@click.option("--no-stamp", is_flag=True, help="Send payloads exactly as in the file, without stamps.")
def publish(file: Path, endpoint: str, endpoint_alias: str | None, rate: float | None, fmt: str, topic: str | None,
            wait_s: float, publisher_id: str | None, no_stamp: bool) -> None:
    """Publish a JSONL file (or an export JSON document, as the native events that
    re-create its sessions) to a broker, stamping JSON objects for loss detection."""
    endpoint = endpoint_alias or endpoint
    from convlog.bus.publisher import Publisher, file_messages
    from convlog.bus.publisher import publish as run

    messages = file_messages(file, topic=topic, fmt=fmt)  # an export document is checked here, before connecting
    with Publisher(endpoint, publisher_id=publisher_id, stamp=not no_stamp) as pub:
        report = run(messages, rate=rate, wait_s=wait_s or None, publisher=pub)
    from convlog.core.view import plural

    click.echo(f"published {plural(report.sent, 'message')} in {report.seconds:.2f} s ({report.rate:,.0f}/s)", err=True)


@main.command()
@dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "include_deleted", is_flag=True, help="Include deleted sessions.")
@click.option("--sort", "order", type=click.Choice(["recent", "oldest", "messages", "id"]), default="recent",
              show_default=True, help="Newest activity first, oldest first, most messages first, or by id.")
@click.option("--limit", type=click.IntRange(min=0),
              help="At most N sessions (0: all). Default: a page of 50 in the table, all with --json.")
@as_of_option
def sessions(directory: Path, as_json: bool, include_deleted: bool, order: str, limit: int | None,
             as_of: str | None) -> None:
    """List the sessions folded from the log: newest activity first, a page at a time,
    with the total."""
    from convlog.cli import output
    from convlog.core.view import plural

    replay = _load(directory, as_of)
    rows = output.sorted_sessions(replay.state, include_deleted, order)
    page = limit if limit is not None else (0 if as_json else output.SESSIONS_PAGE)
    shown = rows[:page] if page else rows
    if as_json:
        output.print_json(output.session_rows(replay.state, include_deleted, shown))
        return
    output.out.print(output.sessions_table(replay.state, include_deleted, sessions=shown), soft_wrap=False)
    total = f"{plural(len(rows), 'session')}, {output.SESSION_ORDERS[order][1]}"
    if len(shown) < len(rows):
        total = f"{len(shown):,} of {total} (--limit 0 for all)"
    output.out.print(total, markup=False, highlight=False)



@main.command()
@click.argument("session")
@dir_option
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
@as_of_option
def show(session: str, directory: Path, fmt: str, as_of: str | None) -> None:
    """Show the visible branch of SESSION (an id or a unique prefix)."""
    from convlog.cli import output

    output.print_transcript(_load(directory, as_of), session, fmt)


@main.command()
@dir_option
@click.option("--upto", type=click.IntRange(min=1), help="Fold only records up to this seq.")
@as_of_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def replay(directory: Path, upto: int | None, as_of: str | None, as_json: bool) -> None:
    """Fold the log and summarise it: sessions, records by kind, gaps, incomplete streams.
    Starts from the newest checkpoint that still matches the log."""
    from convlog.cli import output

    data = output.summary(_load(directory, as_of, upto))
    if as_json:
        output.print_json(data)
    else:
        output.print_summary(data)


@main.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Fresh directory for the demo log (default ./conversation_logs/demo-<time>).")
@click.option("--conversations", type=click.IntRange(min=2, max=2000), default=40, show_default=True,
              help="ShareGPT conversations to publish.")
def demo(directory: Path | None, conversations: int) -> None:
    """Start a broker and a recorder, publish real conversations and session control
    events, stop cleanly, and show the folded sessions."""
    from convlog.cli.demo import run_demo

    run_demo(directory, conversations)


def log_dir_argument(func: Callable[..., Any]) -> Callable[..., Any]:
    """An optional ``DIR`` argument and the equivalent ``--dir``; the command receives
    ``dir_argument`` and ``dir_option`` and resolves them with :func:`_log_dir`."""
    func = click.option(
        "--dir", "dir_option", type=click.Path(file_okay=False, path_type=Path),
        help="Log directory (the same as DIR; default $CONVLOG_DIR or ./conversation_logs).",
    )(func)
    return click.argument("dir_argument", metavar="[DIR]", required=False,
                          type=click.Path(file_okay=False, path_type=Path))(func)


def _log_dir(dir_argument: Path | None, dir_option: Path | None) -> Path:
    """DIR or ``--dir`` (a usage error when they differ), else ``$CONVLOG_DIR`` or
    ``./conversation_logs``."""
    if dir_argument is not None and dir_option is not None and dir_argument != dir_option:
        raise click.UsageError(f"two log directories given: {dir_argument} and --dir {dir_option}")
    return dir_argument or dir_option or Path(_default_dir())


@main.command()
@log_dir_argument
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(dir_argument: Path | None, dir_option: Path | None, as_json: bool) -> None:
    """Check a log directory: whole records, seq contiguous from 1, segment names,
    state.json and quarantine entries. Exits 1 when a problem is found."""
    from convlog.cli import output
    from convlog.store.verify import verify as run

    with output.lazy_progress("verifying") as progress:
        report = run(_log_dir(dir_argument, dir_option), progress=progress)
    if as_json:
        output.print_json(report.as_dict())
    else:
        output.print_verify(report)
    sys.exit(0 if report.ok else 1)


@main.command()
@log_dir_argument
def recover(dir_argument: Path | None, dir_option: Path | None) -> None:
    """Repair the tail of a log whose recorder is not running, as the recorder does at
    start: a torn or invalid tail goes to recovery/quarantine.jsonl, a recorder.recovered
    record says so, and the state is marked clean."""
    from convlog.cli import output
    from convlog.store.importer import repair

    directory = _log_dir(dir_argument, dir_option)
    output.print_repair(directory, repair(directory))


@main.command(name="import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@dir_option
def import_(files: tuple[Path, ...], directory: Path) -> None:
    """Import legacy ConversationEvent JSONL files into the log (source "import").

    The recorder must not be running. Lines already imported are skipped; invalid lines
    are reported as FILE:LINE: reason (exit 1) and the valid ones are still imported."""
    from convlog.cli import output
    from convlog.store.importer import import_legacy

    total = sum(path.stat().st_size for path in files)
    with output.byte_progress("importing", total) as advance:
        report = import_legacy(directory, files, progress=advance)
    output.print_import(report)
    sys.exit(1 if report.invalid else 0)


@main.command()
@dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def checkpoints(directory: Path, as_json: bool) -> None:
    """List the checkpoints: seq, time, label, sessions, size."""
    from convlog.cli import output
    from convlog.store.checkpoint import list_checkpoints

    infos = list_checkpoints(directory)
    if as_json:
        output.print_json([output.checkpoint_row(info) for info in infos])
    else:
        output.out.print(output.checkpoints_table(infos))


class CheckpointGroup(click.Group):
    """``convlog checkpoint create|delete ...`` for log checkpoints; anything else is a
    session checkpoint: ``convlog checkpoint SESSION NAME`` (= ``checkpoint session ...``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["session", *args]
        return super().parse_args(ctx, args)


@main.group(cls=CheckpointGroup)
def checkpoint() -> None:
    """Log checkpoints (create, delete) and session checkpoints (SESSION NAME).

    \b
    convlog checkpoint create --label NAME   fold the log and keep a labelled checkpoint
    convlog checkpoint delete LABEL          delete a labelled checkpoint
    convlog checkpoint SESSION NAME [--at N] name a point of a session, for rewind --checkpoint
    """


@checkpoint.command("session")
@dir_option
@click.argument("session")
@click.argument("name")
@click.option("--at", type=click.IntRange(min=0), help="Name the first N visible messages (default all).")
def checkpoint_session(directory: Path, session: str, name: str, at: int | None) -> None:
    """Name the current point (or the first N messages) of SESSION as NAME."""
    _control_record(directory, "session.checkpoint", session, name=name, at=at)


@checkpoint.command("create")
@dir_option
@click.option("--label", required=True, help="Name to keep it by (letters, digits, '.', '_', '-').")
def checkpoint_create(directory: Path, label: str) -> None:
    """Fold the log to its end and write a checkpoint kept under LABEL (until deleted):
    through the running recorder when one runs, else directly under the writer lock."""
    from convlog.bus import control
    from convlog.store.checkpoint import Checkpointer, checkpoint_name
    from convlog.store.lock import LogLock, LogLockedError
    from convlog.store.replay import NoLogError
    from convlog.store.segment import list_segments

    checkpoint_name(0, label)  # a bad label fails here, before anything else
    if not list_segments(directory):
        raise NoLogError.in_directory(directory)
    try:
        with LogLock(directory, command="convlog checkpoint create"):
            path = Checkpointer(directory).checkpoint(label=label)
        click.echo(f"checkpoint {path.name}" if path else "nothing to checkpoint")
    except LogLockedError:
        reply = control.request(directory, "checkpoint", timeout_s=600, label=label)
        click.echo(f"checkpoint {reply.get('checkpoint')} (written by the running recorder)")


@checkpoint.command("delete")
@dir_option
@click.argument("label")
def checkpoint_delete(directory: Path, label: str) -> None:
    """Delete the checkpoint labelled LABEL."""
    from convlog.store.checkpoint import delete_checkpoint

    click.echo(f"deleted {delete_checkpoint(directory, label).name}")


# --------------------------------------------------------------------------- running recorder


@main.command()
@dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds to wait for the recorder's answer.")
def status(directory: Path, as_json: bool, timeout: float) -> None:
    """Is the recorder of DIR really recording? Exit 0 when healthy, 1 when unhealthy,
    3 when no recorder runs (usable as a health check)."""
    from convlog.bus import control
    from convlog.cli import output

    try:
        reply = control.request(directory, "status", timeout_s=timeout)
    except control.NotRunningError as exc:
        if as_json:
            output.print_json({"running": False, "healthy": False, "problems": [str(exc)]})
        else:
            click.echo(f"not running: {exc}")
        sys.exit(3)
    reply.pop("ok", None)
    reply["running"] = True
    try:
        if as_json:
            output.print_json(reply)
        else:
            output.print_status(reply)
        sys.stdout.flush()
    except BrokenPipeError:  # `status | head -1`: the exit code still tells the health
        _silence_stdout()
    sys.exit(0 if reply.get("healthy") else 1)


@main.command()
@dir_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML config file (default $CONVLOG_CONFIG).")
@click.option("--sub", multiple=True, metavar="ENDPOINT",
              help="SUB endpoint to check (repeatable; default: the running recorder's, else the config's).")
@click.option("--silence", "silence_s", type=click.FloatRange(min=1),
              help="Seconds of silence from known publishers that count as a problem (default: the config's).")
def doctor(directory: Path, config_path: Path | None, sub: tuple[str, ...], silence_s: float | None) -> None:
    """Check the set-up and explain each problem with its fix, one line each: config,
    directory, recorder, each SUB endpoint (really an XPUB?), silence, clock."""
    from convlog.bus import control
    from convlog.cli import output
    from convlog.cli.doctor import check_inputs, run_checks

    try:
        status: dict[str, Any] | None = control.request(directory, "status", timeout_s=3.0)
    except control.NotRunningError:
        status = None
    config, endpoints = check_inputs(config_path, sub, status)
    checks = run_checks(config_path, directory, endpoints, status,
                        silence_s=silence_s or float(config.silence_threshold_s))
    output.print_checks(checks)
    sys.exit(0 if all(check.ok for check in checks) else 1)


@main.command()
@dir_option
@click.option("--timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
              help="Seconds to wait for the recorder to exit (it drains and writes a checkpoint).")
def stop(directory: Path, timeout: float) -> None:
    """Stop the recorder of DIR cleanly and wait until it has exited."""
    from convlog.bus import control
    from convlog.cli.launcher import stop_recorder

    try:
        pid = stop_recorder(directory, timeout_s=timeout)
    except control.NotRunningError as exc:
        click.echo(f"convlog: {exc}", err=True)
        sys.exit(3)
    click.echo(f"stopped the recorder (pid {pid}) of {directory}")


def _session_command(directory: Path, build: Any) -> None:
    from convlog.cli.session_control import append, describe

    click.echo(describe(append(directory, build)))


def _control_record(directory: Path, kind: str, session: str, **params: Any) -> None:
    """Append a ``kind`` record for SESSION (an id or unique prefix) with the parameters
    that were given (None ones left out: the fold's defaults apply)."""
    data = {key: value for key, value in params.items() if value is not None}
    for key, value in data.items():
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # bytes of the command line that are not UTF-8
                raise click.BadParameter("is not valid UTF-8 text", param_hint=f"'--{key}'") from None
    _session_command(directory, lambda replay: (kind, replay.resolve(session), data))


@main.command()
@dir_option
@click.argument("session")
@click.option("--at", type=click.IntRange(min=0), help="Share the first N visible messages (default all).")
@click.option("--name", help="Branch name (default fork-K).")
@click.option("--id", "new_id", help="Id of the new session (default SESSION/NAME).")
def fork(directory: Path, session: str, at: int | None, name: str | None, new_id: str | None) -> None:
    """Fork SESSION into a new session sharing its first N messages."""
    from convlog.cli.session_control import fork_id

    def build(replay: Any) -> tuple[str, str, dict[str, Any]]:
        parent = replay.resolve(session)
        data: dict[str, Any] = {"parent": parent}
        if at is not None:
            data["at"] = at
        if name is not None:
            data["name"] = name
        return "session.fork", new_id or fork_id(replay.state, parent, name), data

    _session_command(directory, build)


@main.command()
@dir_option
@click.argument("session")
@click.option("--to", "to", type=click.IntRange(min=0), help="Keep the first N visible messages.")
@click.option("--checkpoint", "checkpoint_name", metavar="NAME", help="Restore the session checkpoint NAME.")
def rewind(directory: Path, session: str, to: int | None, checkpoint_name: str | None) -> None:
    """Rewind SESSION to N messages or to a named session checkpoint (history is kept)."""
    if (to is None) == (checkpoint_name is None):
        raise click.UsageError("give exactly one of --to N and --checkpoint NAME")
    _control_record(directory, "session.rewind", session, to=to, checkpoint=checkpoint_name)


@main.command()
@dir_option
@click.argument("session")
@click.option("--summary", required=True, help="The summary text.")
@click.option("--upto", type=click.IntRange(min=0), help="It covers the first N visible messages (default all).")
def crystal(directory: Path, session: str, summary: str, upto: int | None) -> None:
    """Store a summary (crystal) of SESSION's first N messages: the resume context starts there."""
    _control_record(directory, "session.crystal", session, summary=summary, upto=upto)


@main.command()
@dir_option
@click.argument("session")
def delete(directory: Path, session: str) -> None:
    """Mark SESSION deleted (a tombstone: its history stays in the log)."""
    _control_record(directory, "session.delete", session)


@main.command()
@dir_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML config file for the recorder it starts.")
@click.option("--sub", multiple=True, metavar="ENDPOINT", help="XPUB endpoint for the recorder it starts (repeatable).")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds to wait for a new recorder to answer.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing on success (for hooks).")
@click.option("--resume", metavar="SESSION|latest", help="Then print the resume context of a session.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True,
              help="Format of --resume.")
@click.option("--menu", is_flag=True,
              help="Then pick a session, or a checkpoint and a session as of it, to resume (on a terminal).")
def launch(directory: Path, config_path: Path | None, sub: tuple[str, ...], timeout: float, quiet: bool,
           resume: str | None, fmt: str, menu: bool) -> None:
    """Make sure exactly one recorder runs for DIR (start it detached if none answers);
    for agents' startup hooks. Exit 0 when it runs, 1 (with its log's last lines) when not."""
    from convlog.cli import launcher, output

    args: list[str] = []
    if config_path is not None:
        args += ["--config", str(config_path)]
    for endpoint in sub:
        args += ["--sub", endpoint]
    try:
        result = launcher.ensure_running(directory, args, timeout_s=timeout)
    except launcher.LaunchError as exc:
        click.echo(f"convlog: {exc}", err=True)
        sys.exit(1)
    if not quiet:
        verb = "started" if result.started else "already running"
        click.echo(f"recorder {verb}: pid {result.pid}, {directory} (log {result.log})", err=bool(resume or menu))
    upto = None
    if menu:
        picked = output.pick_resume(directory, _load(directory, None))
        if picked is None:
            return
        resume, upto = picked
    if resume is not None:
        output.print_resume(_load(directory, None, upto), resume, fmt)


@main.command()
@dir_option
@click.argument("session")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
def resume(directory: Path, session: str, fmt: str) -> None:
    """Print the resume context of SESSION (or 'latest'): its latest crystal, then the
    messages after it, for an agent to read."""
    from convlog.cli import output

    output.print_resume(_load(directory, None), session, fmt)


# -- search and reindex (issue 5) ----------------------------------------------------------


def _search_time(value: str | None, option: str) -> str | None:
    """Check a ``--since``/``--until`` value (ISO 8601); a usage error when it is not one."""
    from convlog.store.search import SearchQueryError, parse_time

    if value is None:
        return None
    try:
        return parse_time(value, option)
    except SearchQueryError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{option}'") from None


@main.command()
@click.argument("query", nargs=-1, required=True)
@dir_option
@click.option("--session", help="Only this session id.")
@click.option("--speaker", metavar="NAME", help="Only messages whose sender or role is NAME (any case).")
@click.option("--kind", metavar="K", help="Only records of this kind (message, message.delta, session.crystal, …).")
@click.option("--since", metavar="TIME", help="Only records received at or after TIME (ISO 8601, UTC unless zoned).")
@click.option("--until", metavar="TIME", help="Only records received at or before TIME (ISO 8601, UTC unless zoned).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="At most N matches.")
@click.option("--stem", is_flag=True, help="Match English word stems: deploy finds deployment, deployed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list of the matches.")
def search(query: tuple[str, ...], directory: Path, session: str | None, speaker: str | None, kind: str | None,
           since: str | None, until: str | None, limit: int, stem: bool, as_json: bool) -> None:
    """Full-text search of what was said, newest first (SQLite FTS5 syntax: words,
    "a phrase", OR, NOT, NEAR(a b), prefix*). The index (DIR/index/search.sqlite) is
    brought up to date from the log first."""
    import sqlite3

    from convlog.cli import output
    from convlog.store.search import SearchIndex, SearchQueryError

    _search_time(since, "--since")
    _search_time(until, "--until")
    text = " ".join(query)
    try:
        with SearchIndex(directory) as index:
            with output.lazy_progress("indexing") as progress:
                index.update(progress)
            hits = index.query(text, session=session, speaker=speaker, kind=kind, since=since, until=until,
                               limit=limit, stem=stem)
    except SearchQueryError as exc:
        click.echo(f"convlog: {exc}", err=True)
        sys.exit(1)
    except sqlite3.DatabaseError as exc:
        _index_failed(directory, exc)
        return
    output.print_hits(hits, as_json)


def _index_failed(directory: Path, exc: Exception) -> None:
    """One line for a search index SQLite could not use (damaged, disk full, locked past
    the busy timeout), then exit 1."""
    click.echo(f"convlog: the search index {directory / 'index' / 'search.sqlite'} failed: {exc} (it is derived "
               f"from the log: convlog reindex --dir {directory} rebuilds it)", err=True)
    sys.exit(1)


@main.command()
@dir_option
def reindex(directory: Path) -> None:
    """Rebuild the search index (DIR/index/search.sqlite) from the whole log."""
    import sqlite3

    from convlog.cli import output
    from convlog.store.search import SearchIndex

    try:
        with SearchIndex(directory) as index:
            with output.lazy_progress("reindexing") as progress:
                index.rebuild(progress)
            count, last_seq = index.count(), index.last_seq
    except sqlite3.DatabaseError as exc:
        _index_failed(directory, exc)
        return
    size = index.size_bytes()  # once closed: the WAL is folded back into the file
    click.echo(f"indexed {count:,} records with text up to seq {last_seq:,} in {index.path} "
               f"({size / 1e6:,.1f} MB)")


# -- tail and info (issue 5) ---------------------------------------------------------------


@main.command()
@dir_option
@click.option("-n", "--lines", "count", type=click.IntRange(min=0), default=10, show_default=True,
              help="Print the newest N records (after the filters).")
@click.option("-f", "--follow", "follow_", is_flag=True,
              help="Then print records as they are appended, across rotations and recorder restarts "
                   "(waits for a log that does not exist yet; Ctrl-C stops).")
@click.option("--session", "sessions", multiple=True, metavar="ID", help="Only records of this session (repeatable).")
@click.option("--kind", "kinds", multiple=True, metavar="K",
              help="Only records of this kind; shell patterns such as 'recorder.*' work (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print each record's line exactly as it is in the log.")
def tail(directory: Path, count: int, follow_: bool, sessions: tuple[str, ...], kinds: tuple[str, ...],
         as_json: bool) -> None:
    """Print the newest records of the log (time, seq, kind, session, speaker, text) and,
    with -f, follow new ones as the recorder appends them."""
    import signal
    import threading

    from convlog.cli import output
    from convlog.readers.tail import Follower, RecordFilter, newest, watch_log
    from convlog.store.segment import list_segments

    try:
        keep = RecordFilter.of(sessions, kinds)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--kind'") from None
    stop = threading.Event()
    if follow_:  # Ctrl-C and SIGTERM end the watch through its stop event: exit 0, no traceback
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    try:
        if keep.kinds or keep.sessions:  # a filter that matches rarely may read far back: show progress
            total = sum(path.stat().st_size for _, path in list_segments(directory) if path.exists())
            with output.byte_progress("reading backwards", total) as advance:
                start = newest(directory, count, keep, raw=as_json, progress=advance)
        else:
            start = newest(directory, count, keep, raw=as_json)
        if start.position is None and not follow_:
            raise NoLogError.in_directory(directory)
        output.print_skipped(start.skipped)
        output.print_tail(start.records, as_json)
        if follow_:
            follower = Follower(directory, start.position, start.last_seq, keep, raw=as_json)

            def on_change() -> None:
                batch = follower.poll()
                output.print_skipped(batch.skipped)
                output.print_tail(batch.records, as_json)

            watch_log(directory, on_change, stop)
    except KeyboardInterrupt:
        pass  # Ctrl-C while reading without -f: stop quietly
    except BrokenPipeError:  # the reader went away (| head): stop quietly, like tail(1)
        _silence_stdout()


@main.command()
@dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(directory: Path, as_json: bool) -> None:
    """Describe the log, like `ros2 bag info`: time span, records by kind and source,
    sessions, publishers, gaps, drops, segments, checkpoints, disk use and quarantine.
    Reads the whole log once (a progress bar on a terminal)."""
    from convlog.cli import output
    from convlog.readers.info import gather
    from convlog.store.segment import list_segments

    total = sum(path.stat().st_size for _, path in list_segments(directory) if path.exists())
    with output.info_progress(total) as (advance, fold):
        data = gather(directory, progress=advance, fold_progress=fold)
    if as_json:
        output.print_json(data)
    else:
        output.print_info(data)


# -- export and play (issue 5) -------------------------------------------------------------


class _TerminalStream:
    """Wraps stdout when it is a terminal: recorded text goes through
    :func:`convlog.core.view.printable`, so escape sequences in messages cannot act on it
    (JSON and JSONL escape control characters themselves)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        from convlog.core.view import printable

        return self.stream.write(printable(data.decode("utf-8", "replace")).encode("utf-8"))

    def flush(self) -> None:
        self.stream.flush()


@main.command(name="export")
@click.argument("sessions", nargs=-1, metavar="[SESSION]...")
@click.option("--all", "all_sessions", is_flag=True,
              help="Every live session (with --with-history: every fork tree, forks nested).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json", "jsonl", "csv"]), default="markdown",
              show_default=True,
              help="markdown: a transcript; json: one document; jsonl: native bus events "
                   "(re-record with 'convlog publish FILE --format native'); csv: one row per message.")
@click.option("--out", "out", metavar="PATH",
              help="A file (one session), or a directory: one file per session named from its id "
                   "(always with several sessions or --all). Default (or -): stdout.")
@click.option("--with-history", is_flag=True,
              help="Also rewound messages, copies, rewinds, checkpoints and requests; forks nested where made.")
@dir_option
@as_of_option
def export_command(sessions: tuple[str, ...], all_sessions: bool, fmt: str, out: str | None, with_history: bool,
                   directory: Path, as_of: str | None) -> None:
    """Export SESSIONs (ids or unique prefixes) as Markdown, JSON, JSONL or CSV: the
    visible branch with its crystals and usage, or with --with-history the whole tree."""
    from convlog.cli import output
    from convlog.readers import export as exporting

    if all_sessions == bool(sessions):
        raise click.UsageError("give one or more SESSIONs, or --all (not both)")
    replay = _load(directory, as_of)
    state = replay.state
    if all_sessions:
        ids = exporting.export_ids(state, with_history)
    else:
        ids = list(dict.fromkeys(replay.resolve(name) for name in sessions))
    try:
        target, as_dir = exporting.out_target(out, several=all_sessions or len(ids) > 1)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--out'") from None
    request = exporting.ExportRequest(with_history=with_history, events=fmt == "jsonl")
    header = exporting.export_header(directory, state, with_history)
    with output.byte_progress("exporting", exporting.export_bytes(directory, state, ids)) as advance:
        built = exporting.export(directory, state, ids, request, progress=advance)
        if not all_sessions:  # in the order asked
            by_id = {item.id: item for item in built}
            built = iter([by_id[sid] for sid in ids if sid in by_id])
        if target is None:
            stream: Any = sys.stdout.buffer
            if fmt in ("markdown", "csv") and sys.stdout.isatty():
                stream = _TerminalStream(stream)
            try:
                exporting.write_stream(built, fmt, header, stream)
            except BrokenPipeError:  # the reader went away (| head): stop quietly
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                sys.exit(1)
            return
        written = exporting.write_files(built, fmt, header, target, as_dir)
    count = len(written) if as_dir else len(ids)
    where = f"{len(written)} files in {target}" if as_dir else str(target)
    click.echo(f"exported {count} session{'' if count == 1 else 's'} ({fmt}) to {where}", err=True)


@main.command()
@dir_option
@click.option("--to", "endpoint", metavar="ENDPOINT",
              help="The broker's XSUB endpoint, e.g. tcp://127.0.0.1:5555 (required).")
@click.option("--endpoint", "endpoint_alias", hidden=True, help="Same as --to (publish's old spelling).")
@click.option("--session", "sessions", multiple=True, metavar="ID",
              help="Only this session (an id or unique prefix; repeatable).")
@click.option("--since", metavar="SEQ|TIME", help="From this seq or receive time (ISO 8601, UTC unless a zone).")
@click.option("--until", metavar="SEQ|TIME", help="Up to this seq or receive time, inclusive.")
@click.option("--speed", "rate", type=click.FloatRange(min=0, min_open=True),
              help="Speed factor on the original pacing: 2 plays twice as fast (default 1).")
@click.option("--rate", "rate_alias", type=click.FloatRange(min=0, min_open=True), hidden=True,
              help="Old spelling of --speed (a factor here, unlike publish --rate, messages/s).")
@click.option("--max", "as_fast", is_flag=True, help="As fast as possible, ignoring the original pacing.")
@click.option("--topic-prefix", default="", metavar="P", help="Prepend P to every topic.")
@click.option("--source", "sources", multiple=True, type=click.Choice(["sub", "pull", "control", "import"]),
              help="Play records of this source (repeatable; default: sub, what came from the bus).")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds to wait for a subscriber before sending (0: don't wait).")
def play(directory: Path, endpoint: str | None, endpoint_alias: str | None, sessions: tuple[str, ...],
         since: str | None, until: str | None, rate: float | None, rate_alias: float | None, as_fast: bool,
         topic_prefix: str, sources: tuple[str, ...], wait_s: float) -> None:
    """Re-publish recorded messages to a broker with their original topics and payload
    bytes, paced by their original receive times (like ros2 bag play)."""
    from convlog.cli import output
    from convlog.readers import play as playing
    from convlog.store.replay import parse_as_of
    from convlog.store.segment import bytes_from, list_segments

    endpoint = endpoint or endpoint_alias
    if endpoint is None:
        raise click.UsageError("Missing option '--to' (the broker's XSUB endpoint)")
    rate = rate if rate is not None else rate_alias
    if rate is not None and as_fast:
        raise click.UsageError("--speed and --max exclude each other")
    bounds: dict[str, Any] = {}
    for name, value in (("since", since), ("until", until)):
        if value is not None:
            try:
                seq, ts = parse_as_of(value, upper=name == "until")
            except ValueError as exc:
                raise click.BadParameter(str(exc).replace("--as-of", f"--{name}"), param_hint=f"'--{name}'") from None
            bounds[f"{name}_seq"], bounds[f"{name}_ts"] = seq, ts
    if not list_segments(directory):
        raise NoLogError.in_directory(directory)
    selected = None
    if sessions:
        selected = playing.resolve_sessions(sessions, _load(directory, None).state.sessions)
    selection = playing.Selection(sessions=selected, sources=frozenset(sources) or playing.DEFAULT_SOURCES, **bounds)
    total = bytes_from(directory, selection.since_seq or 1)
    try:
        with output.byte_progress("playing", total) as advance:
            report = playing.play(directory, endpoint, selection, None if as_fast else (rate or 1.0), topic_prefix,
                                  wait_s or None, advance)
    except playing.NothingToPlayError as exc:
        click.echo(f"convlog: {exc}", err=True)
        sys.exit(1)
    click.echo(report.summary(endpoint), err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
