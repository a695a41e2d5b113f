"""The ``convlog`` command line (click). Commands validate their options, call the
work in its own module, and turn expected failures into one readable line on stderr
and a non-zero exit, never a traceback.

This module holds the group (:func:`main`, the console entry point) and lists the
commands by section (:data:`COMMAND_SECTIONS`); the commands live in
:mod:`.recording`, :mod:`.keys`, :mod:`.operations`, :mod:`.reading`, :mod:`.serving`,
:mod:`.sessions` and :mod:`.offline`, their shared options in :mod:`.options`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from convlog import __version__
from convlog.cli.commands import database, keys, offline, operations, reading, recording, serving, sessions
from convlog.cli.commands.options import default_dir, silence_stdout
from convlog.cli.errors import EXPECTED
from convlog.store import modes

#: The commands of ``convlog --help`` by what a person wants to do, in that order.
COMMAND_SECTIONS: dict[str, tuple[str, ...]] = {
    "Recording": ("record", "launch", "status", "stop", "doctor", "broker", "publish", "keys", "sync", "demo"),
    "Reading": ("sessions", "show", "search", "tail", "info", "replay", "export", "play", "resume", "serve"),
    "Sessions": ("fork", "rewind", "checkpoint", "crystal", "delete", "purge", "checkpoints"),
    "Offline tools": ("verify", "recover", "compress", "prune", "import", "reindex"),
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
            silence_stdout()
            ctx.exit(0)
        except EXPECTED as exc:
            click.echo(f"convlog: {exc}", err=True)
            ctx.exit(1)
        except OSError as exc:
            click.echo(f"convlog: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            ctx.exit(1)


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
    # Whatever a command creates (search index, checkpoints, purge's and import's files,
    # exports) gets CONVLOG_FILE_MODE / CONVLOG_DIR_MODE, default 0600 / 0700.
    try:
        modes.apply(*modes.from_env())
    except ValueError as exc:
        click.echo(f"convlog: CONVLOG_FILE_MODE / CONVLOG_DIR_MODE: {exc}", err=True)
        ctx.exit(2)
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

    ctx.exit(run_menu(menu_dir or Path(default_dir())))


# The commands, by module (click lists them by name; --help by COMMAND_SECTIONS).
main.add_command(recording.record)
main.add_command(recording.broker)
main.add_command(recording.publish)
main.add_command(recording.demo)
main.add_command(recording.launch)
main.add_command(keys.keys)
main.add_command(database.sync)
main.add_command(operations.status)
main.add_command(operations.doctor)
main.add_command(operations.stop)
main.add_command(reading.sessions)
main.add_command(reading.show)
main.add_command(reading.replay)
main.add_command(reading.resume)
main.add_command(reading.search)
main.add_command(reading.tail)
main.add_command(reading.info)
main.add_command(reading.export_command)
main.add_command(reading.play)
main.add_command(serving.serve)
main.add_command(sessions.checkpoints)
main.add_command(sessions.checkpoint)
main.add_command(sessions.fork)
main.add_command(sessions.rewind)
main.add_command(sessions.crystal)
main.add_command(sessions.delete)
main.add_command(sessions.purge)
main.add_command(offline.verify)
main.add_command(offline.recover)
main.add_command(offline.compress)
main.add_command(offline.prune)
main.add_command(offline.import_)
main.add_command(offline.reindex)
