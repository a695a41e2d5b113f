"""``convlog`` commands that change sessions by appending control records (fork,
rewind, crystal, delete, checkpoint SESSION NAME) and that manage log checkpoints
(checkpoint create|delete, checkpoints)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from convlog.cli.commands.options import dir_option
from convlog.store.lock import LogLockedError
from convlog.store.replay import NoLogError


@click.command()
@dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def checkpoints(directory: Path, as_json: bool) -> None:
    """List the checkpoints: seq, time, label, sessions, size."""
    from convlog.cli import console, reports
    from convlog.store.checkpoint import list_checkpoints

    infos = list_checkpoints(directory)
    if as_json:
        console.print_json([reports.checkpoint_row(info) for info in infos])
    else:
        console.out.print(reports.checkpoints_table(infos))


class CheckpointGroup(click.Group):
    """``convlog checkpoint create|delete ...`` for log checkpoints; anything else is a
    session checkpoint: ``convlog checkpoint SESSION NAME`` (= ``checkpoint session ...``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["session", *args]
        return super().parse_args(ctx, args)


@click.group(cls=CheckpointGroup)
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
    from convlog.store.lock import LogLock
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


@click.command()
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


@click.command()
@dir_option
@click.argument("session")
@click.option("--to", "to", type=click.IntRange(min=0), help="Keep the first N visible messages.")
@click.option("--checkpoint", "checkpoint_name", metavar="NAME", help="Restore the session checkpoint NAME.")
def rewind(directory: Path, session: str, to: int | None, checkpoint_name: str | None) -> None:
    """Rewind SESSION to N messages or to a named session checkpoint (history is kept)."""
    if (to is None) == (checkpoint_name is None):
        raise click.UsageError("give exactly one of --to N and --checkpoint NAME")
    _control_record(directory, "session.rewind", session, to=to, checkpoint=checkpoint_name)


@click.command()
@dir_option
@click.argument("session")
@click.option("--summary", required=True, help="The summary text.")
@click.option("--upto", type=click.IntRange(min=0), help="It covers the first N visible messages (default all).")
def crystal(directory: Path, session: str, summary: str, upto: int | None) -> None:
    """Store a summary (crystal) of SESSION's first N messages: the resume context starts there."""
    _control_record(directory, "session.crystal", session, summary=summary, upto=upto)


@click.command()
@dir_option
@click.argument("session")
def delete(directory: Path, session: str) -> None:
    """Mark SESSION deleted (a tombstone: its history stays in the log)."""
    _control_record(directory, "session.delete", session)


#: Environment variable of the purge crash tests: stop the process (SIGSTOP) at the Nth
#: durable step of a purge, for the test to kill it there with kill -9.
PURGE_STOP_AT = "CONVLOG_PURGE_STOP_AT"


@click.command()
@dir_option
@click.argument("session")
@click.option("--before", metavar="TIME",
              help="Purge only the records received before TIME (ISO 8601, today, yesterday, 2d, ...; imported "
                   "records by their own time).")
@click.option("--dry-run", is_flag=True, help="Say what would be purged and change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Purge without asking (needed when stdin is not a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def purge(directory: Path, session: str, before: str | None, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Erase SESSION's payloads from every file of the log, for good (right to erasure).

    Its records keep their seq, time, kind, source, session and payload digest, so the
    log stays gapless and verifiable; their text goes from the segments (rewritten, the
    live one sealed first), the checkpoints (rebuilt), the search index (rebuilt), the
    quarantine and exports written under the log directory. A session.purged record says
    what was removed, when and by whom. Works with the recorder running or not; an
    interrupted purge is finished by running it again."""
    import os
    import signal
    import sys
    from datetime import UTC, datetime

    from convlog.cli import console, reports
    from convlog.cli.session_control import purge_session
    from convlog.core.record import format_ts, parse_when
    from convlog.store.purge import PurgeError

    cutoff = None
    if before is not None:
        try:
            cutoff = format_ts(parse_when(before, datetime.now(UTC)))
        except ValueError:
            raise click.BadParameter(f"{before!r} is not a time (ISO 8601, now, today, yesterday, 2h, 3d)",
                                     param_hint="'--before'") from None
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise PurgeError("a purge cannot be undone: give --yes to go on (or --dry-run to see what it removes)")
        plan = purge_session(directory, session, cutoff, dry_run=True)
        reports.print_purge(plan)
        if plan.records == 0 or not click.confirm(f"Purge {plan.records:,} records of {plan.session} for good?"):
            return
        session = plan.session
    stop_at = int(os.environ.get(PURGE_STOP_AT) or 0)
    steps = 0

    def on_step(_name: str) -> None:
        nonlocal steps
        steps += 1
        if steps == stop_at:
            os.kill(os.getpid(), signal.SIGSTOP)

    report = purge_session(directory, session, cutoff, dry_run=dry_run, on_step=on_step if stop_at else None)
    if as_json:
        console.print_json(report.as_dict())
    else:
        reports.print_purge(report)
