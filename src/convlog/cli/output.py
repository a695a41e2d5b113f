"""Terminal output (rich): tables and transcripts for the read side of the CLI.

Everything that prints lives here; the commands decide what to show. ``out`` writes
to stdout, ``err`` to stderr.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from convlog.core.fold import State
from convlog.core.record import dump_json
from convlog.core.view import EMPTY, ShownMessage, plural, printable
from convlog.store.replay import Replay

if TYPE_CHECKING:
    from convlog.store.importer import ImportReport, RepairReport
    from convlog.store.verify import VerifyReport


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


def branch_label(info: Any) -> str:
    """``main`` for a root session, else ``<branch> ← <parent>@<fork point>``."""
    if info.parent is None:
        return "main"
    name = info.branch or "fork"
    return f"{name} ← {info.parent}@{info.fork_at}"


#: Sessions in one page of the ``sessions`` table.
SESSIONS_PAGE = 50


#: The orders of ``convlog sessions --sort``: name -> (sort key, how it reads).
SESSION_ORDERS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "recent": (lambda s: -s.last_seq, "newest activity first"),
    "oldest": (lambda s: s.last_seq, "oldest activity first"),
    "messages": (lambda s: (-len(s.visible), -s.last_seq), "most messages first"),
    "id": (lambda s: s.id, "by id"),
}


def sorted_sessions(state: State, include_deleted: bool = False, order: str = "recent") -> list[Any]:
    """The sessions in a :data:`SESSION_ORDERS` order (``recent``: newest activity first)."""
    return sorted(state.session_list(include_deleted=include_deleted), key=SESSION_ORDERS[order][0])


def session_rows(state: State, include_deleted: bool = False, sessions: Sequence[Any] | None = None
                 ) -> list[dict[str, Any]]:
    """One JSON-friendly dict per session (all of ``state``'s, or ``sessions``): id,
    branch, parent, fork point, messages, duplicates, participants, first/last seq, last
    activity, deleted."""
    rows = []
    for info in sessions if sessions is not None else state.session_list(include_deleted=include_deleted):
        rows.append(
            {
                "id": info.id,
                "branch": info.branch,
                "parent": info.parent,
                "fork_at": info.fork_at,
                "messages": len(info.visible),
                "duplicates": info.duplicates,
                "participants": list(info.participants),
                "first_seq": info.first_seq,
                "last_seq": info.last_seq,
                "last_activity": info.last_ts,
                "deleted": info.deleted_seq is not None,
            }
        )
    return rows


def sessions_table(state: State, include_deleted: bool = False, limit: int | None = None,
                   sessions: Sequence[Any] | None = None) -> Table:
    """The sessions as a rich table: ``sessions`` in their order, else ``state``'s most
    recently active last (the ``limit`` newest). Every column keeps a minimum width, so
    none collapses on a narrow terminal (long ids are cut with an ellipsis)."""
    table = Table(title=None, show_lines=False, pad_edge=False)
    table.add_column("session", overflow="ellipsis", min_width=12)
    table.add_column("branch / parent", overflow="ellipsis", min_width=8)
    table.add_column("msgs", justify="right", no_wrap=True, min_width=4)
    table.add_column("dups", justify="right", no_wrap=True, min_width=4)
    table.add_column("participants", overflow="ellipsis", min_width=10, max_width=40)
    table.add_column("last activity", no_wrap=True, min_width=19)
    if sessions is not None:
        infos = list(sessions)
    else:
        infos = sorted(state.session_list(include_deleted=include_deleted), key=lambda s: s.last_seq)
        if limit is not None:
            infos = infos[-limit:]
    for info in infos:
        name = Text(shown(info.id))
        if info.deleted_seq is not None:
            name.stylize("strike")
        table.add_row(
            name,
            Text(shown(branch_label(info))),
            str(len(info.visible)),
            str(info.duplicates or ""),
            Text(shown(", ".join(info.participants[:4]) + (" …" if len(info.participants) > 4 else ""))),
            (info.last_ts or "")[:19].replace("T", " "),
        )
    return table


def transcript(messages: Sequence[ShownMessage], fmt: str, width: int | None = None) -> str:
    """Render messages as ``text`` or ``markdown``.

    Returns:
        the rendered text.
    """
    lines: list[str] = []
    for m in messages:
        who = m.sender or m.role or "?"
        flags = []
        if m.copies > 1:
            flags.append(f"{m.copies} copies")
        if m.streamed and not m.complete:
            flags.append("INCOMPLETE stream")
        suffix = f" ({', '.join(flags)})" if flags else ""
        text = m.text if width is None or len(m.text) <= width else m.text[: width - 1] + "…"
        if fmt == "markdown":
            lines.append(f"### {m.index}. {who}{' · ' + m.role if m.role and m.role != who else ''}{suffix}")
            lines.append("")
            lines.append(text)
            lines.append("")
        else:
            lines.append(f"[{m.index}] {who}{suffix} (seq {m.seq}):")
            lines.extend("    " + line for line in text.splitlines() or [""])
    return "\n".join(lines)


def print_transcript(replay: Replay, session: str, fmt: str) -> None:
    """Print one session's visible branch in ``text``, ``markdown`` or ``json``."""
    sid = replay.resolve(session)
    messages = replay.messages(sid)
    info = replay.state.sessions[sid]
    if fmt == "json":
        print_json(
            {
                "session": sid,
                "parent": info.parent,
                "fork_at": info.fork_at,
                "branch": info.branch,
                "deleted": info.deleted_seq is not None,
                "messages": [m.as_dict() for m in messages],
            }
        )
        return
    header = f"session {sid} · {branch_label(info)} · {plural(len(messages), 'message')}"
    body = transcript(messages, fmt)
    if out.is_terminal:  # recorded escape sequences are shown, not obeyed; a pipe gets the text as is
        header, body = printable(header), printable(body)
    if fmt == "markdown":
        text = f"# {header}\n\n{body}"
        if out.is_terminal:
            out.print(Markdown(text))
        else:
            out.print(text, markup=False)
    else:
        out.print(header, style="bold", markup=False)
        out.print(body, markup=False)


def summary(replay: Replay) -> dict[str, Any]:
    """The folded state summarised: sessions, records by kind, gaps, incomplete
    streams, duplicates, usage, invalid records."""
    state = replay.state
    infos = state.session_list(include_deleted=True)
    return {
        "directory": str(replay.directory),
        "last_seq": state.last_seq,
        "records": state.records,
        "records_by_kind": dict(sorted(state.kinds.items())),
        "sessions": sum(1 for s in infos if s.deleted_seq is None),
        "deleted_sessions": sum(1 for s in infos if s.deleted_seq is not None),
        "forks": sum(1 for s in infos if s.parent is not None),
        "messages_visible": sum(len(s.visible) for s in infos),
        "duplicates": sum(s.duplicates for s in infos),
        "unsessioned_messages": state.unsessioned,
        "gaps": [
            {"seq": g.seq, "publisher": g.publisher, "first": g.first, "last": g.last, "ts": g.ts}
            for g in state.gaps
        ],
        "incomplete_streams": [
            {"session": s.session, "message_id": s.message_id, "first_seq": s.first_seq,
             "deltas": len(s.delta_seqs)}
            for s in state.incomplete_streams()
        ],
        "usage": state.usage.to_dict(),
        "fold_errors": [
            {"seq": e.seq, "kind": e.kind, "session": e.session, "reason": e.reason}
            for e in state.errors
        ],
        "read_errors": [
            {"segment": e.segment, "line": e.line, "reason": e.reason} for e in replay.read_errors
        ],
        "from_checkpoint": replay.checkpoint.name if replay.checkpoint else None,
        "refused_checkpoints": list(replay.refused),
    }


def print_summary(data: dict[str, Any]) -> None:
    """Print :func:`summary` for a person."""
    out.print(
        f"[bold]{data['directory']}[/]: {data['records']} records (last seq {data['last_seq']}), "
        f"{data['sessions']} sessions ({data['forks']} forks, {data['deleted_sessions']} deleted), "
        f"{data['messages_visible']} visible messages, {data['duplicates']} duplicate copies"
    )
    if data["from_checkpoint"]:
        out.print(f"folded from checkpoint {data['from_checkpoint']}", markup=False)
    for reason in data["refused_checkpoints"]:
        out.print(f"[yellow]checkpoint refused:[/] {reason}")
    kinds = Table("kind", "records", pad_edge=False)
    for kind, count in data["records_by_kind"].items():
        kinds.add_row(kind, str(count))
    out.print(kinds)
    for title, key in (("gaps", "gaps"), ("incomplete streams", "incomplete_streams"),
                       ("invalid control records", "fold_errors"), ("unreadable lines", "read_errors")):
        items = data[key]
        style = "yellow" if items else "green"
        out.print(f"[{style}]{title}: {len(items)}[/]")
        for item in items[:20]:
            out.print("  " + ", ".join(f"{k}={v}" for k, v in item.items()), markup=False)
        if len(items) > 20:
            out.print(f"  … and {len(items) - 20} more", markup=False)


# -- offline tools (verify, recover, import) ----------------------------------------------


def print_verify(report: VerifyReport) -> None:
    """Print a :class:`~convlog.store.verify.VerifyReport`: one ``where:line: reason`` line per
    problem, one ``NOTE`` line per note, then a one-line summary."""
    for problem in report.problems:
        out.print(str(problem), markup=False)
    for note in report.notes:
        out.print(f"NOTE {note}", markup=False)
    count = len(report.problems)
    out.print(
        f"{report.directory}: {report.segments} segments, {report.records} records, last seq {report.last_seq}, "
        f"{count} problem{'' if count == 1 else 's'}",
        markup=False,
    )


def print_repair(directory: Path, report: RepairReport) -> None:
    """Print what ``convlog recover`` found and did."""
    rec = report.recovery
    if rec.reason:
        lines = f"{rec.quarantined_lines} line{'' if rec.quarantined_lines == 1 else 's'}"
        out.print(
            f"{directory}: moved {rec.quarantined_bytes} bytes ({lines}) from events/{rec.segment} at offset "
            f"{rec.offset} to recovery/quarantine.jsonl: {rec.reason}",
            markup=False,
        )
    else:
        shutdown = "clean" if rec.was_clean else "unclean"
        out.print(f"{directory}: nothing to repair (last seq {rec.last_seq}, previous shutdown {shutdown})",
                  markup=False)
    if report.recovered_seq is not None:
        out.print(f"wrote recorder.recovered at seq {report.recovered_seq}; state marked clean", markup=False)


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


def print_import(report: ImportReport) -> None:
    """Print the invalid lines of an import (``file:line: reason``, stderr) and its
    summary line (stdout)."""
    for invalid in report.invalid:
        err.print(str(invalid), markup=False)
    out.print(report.summary(), markup=False)


def checkpoint_row(info: Any) -> dict[str, Any]:
    """One checkpoint as a JSON-friendly dict."""
    return {
        "file": info.path.name,
        "seq": info.seq,
        "label": info.label,
        "created": info.created,
        "ts": info.ts,
        "sessions": info.sessions,
        "bytes": info.size,
    }


def checkpoints_table(infos: Sequence[Any]) -> Table:
    """The checkpoints as a rich table, oldest first."""
    table = Table(pad_edge=False)
    for name, justify in (("seq", "right"), ("time (last record)", "left"), ("label", "left"),
                          ("sessions", "right"), ("size", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for info in infos:
        table.add_row(
            str(info.seq), (info.ts or "?")[:19].replace("T", " "), info.label or "(automatic)",
            "?" if info.sessions is None else str(info.sessions), f"{info.size / 1024:,.1f} KiB",
        )
    return table


def print_status(status: dict[str, Any]) -> None:
    """Print a running recorder's ``status`` reply (see ``convlog.recorder.daemon.Recorder.status``)
    as a short report: health first, then one line per aspect."""
    healthy = bool(status.get("healthy"))
    where = f" recorder pid {status.get('pid')} · up {status.get('uptime_s', 0):.0f} s · {status.get('directory')}"
    out.print(Text("healthy" if healthy else "UNHEALTHY", style="bold green" if healthy else "bold red"), Text(where))
    for problem in status.get("problems") or []:
        out.print(Text(f"  problem: {problem}", style="red"))
    for warning in status.get("warnings") or []:
        out.print(Text(f"  warning: {warning}", style="yellow"))
    for ep in status.get("endpoints") or []:
        state = "connected" if ep.get("connected") else "NOT connected"
        out.print(f"  {ep.get('kind')} {ep.get('endpoint')}: {state}", markup=False)
    age = status.get("newest_age_s")
    out.print(
        f"  records: {status.get('records', 0):,} since start (seq {status.get('last_seq')}), "
        f"{status.get('rate_1m', 0):.1f}/s over the last minute, newest "
        + (f"{age:.1f} s ago" if age is not None else "none yet"),
        markup=False,
    )
    fsync = status.get("fsync") or {}
    disk = status.get("disk") or {}
    out.print(
        f"  fsync {fsync.get('policy')} (lag {fsync.get('lag_s', 0):.3f} s, durable seq {fsync.get('durable_seq')}); "
        f"log {(disk.get('used_bytes') or 0) / 1e6:.1f} MB, {(disk.get('free_bytes') or 0) / 1e9:.1f} GB free",
        markup=False,
    )
    cp = status.get("last_checkpoint")
    out.print(f"  last checkpoint: {cp.get('file')} (seq {cp.get('seq')})" if cp else "  last checkpoint: none",
              markup=False)
    if status.get("metrics"):
        out.print(f"  metrics: {status['metrics']}", markup=False)
    gaps, pubs = status.get("gaps") or {}, status.get("publishers") or {}
    silent = pubs.get("silent_s")
    out.print(
        f"  publishers: {pubs.get('known', 0)} known ({pubs.get('open', 0)} open), last heard {silent:.0f} s ago; "
        if silent is not None and pubs.get("known") else f"  publishers: {pubs.get('known', 0)} known; ",
        f"missing {gaps.get('missing', 0)}, restarts {gaps.get('restarts', 0)}, "
        f"unverified {gaps.get('unverified', 0)}, invalid stamps {gaps.get('invalid', 0)}, "
        f"dropped {status.get('drops', 0)}",
        sep="", markup=False,
    )


def resume_context(replay: Replay, session: str) -> dict[str, Any]:
    """The resume context of a session: its latest valid crystal (with the summary read
    from the log) and the visible messages after it.

    Args:
        replay: a loaded replay.
        session: a session id, unique prefix, or ``latest`` (the session with the most
            recent activity).

    Returns:
        ``{"session", "crystal": {"seq", "upto", "summary"} | None, "messages": [...],
        "empty_left_out": N}``: messages whose source wrote nothing
        (:data:`convlog.core.view.EMPTY`) are left out of an agent's context and counted.

    Raises:
        UnknownSessionError: no such session (or no session at all for ``latest``).
    """
    from convlog.store.replay import UnknownSessionError
    from convlog.store.segment import find_record

    if session == "latest":
        live = replay.state.session_list()
        if not live:
            raise UnknownSessionError(f"no session in {replay.directory}")
        sid = max(live, key=lambda s: s.last_seq).id
    else:
        sid = replay.resolve(session)
    crystal, after = replay.state.resume_refs(sid)
    wanted = set(after)
    shown_after = [m for m in replay.messages(sid) if m.seq in wanted]
    messages = [m for m in shown_after if m.text != EMPTY]
    summary_text = None
    if crystal is not None:
        record = find_record(replay.directory, crystal.seq) or {}
        data = record.get("data")
        summary_text = data.get("summary") if isinstance(data, dict) else None
    return {
        "session": sid,
        "crystal": None if crystal is None else {"seq": crystal.seq, "upto": crystal.upto, "summary": summary_text},
        "messages": [m.as_dict() for m in messages],
        "empty_left_out": len(shown_after) - len(messages),
    }


def print_resume(replay: Replay, session: str, fmt: str) -> None:
    """Print :func:`resume_context` as ``markdown`` (for an agent to read) or ``json``."""
    context = resume_context(replay, session)
    if fmt == "json":
        print_json(context)
        return
    lines = [f"# Resume context: session {context['session']}", ""]
    crystal = context["crystal"]
    if crystal is not None:
        lines += [f"## Summary of the first {plural(crystal['upto'], 'message')}", "", str(crystal["summary"] or ""),
                  ""]
    lines += [f"## {'Messages after the summary' if crystal else 'Messages'} ({len(context['messages'])})", ""]
    if context["empty_left_out"]:
        left = context["empty_left_out"]
        lines += [f"_({left} empty message{'' if left == 1 else 's'} left out: the source wrote nothing)_", ""]
    for m in context["messages"]:
        who = m.get("sender") or m.get("role") or "?"
        lines += [f"**{who}** ({m.get('ts')}):", "", str(m.get("text", "")), ""]
    out.print(shown("\n".join(lines).rstrip()), markup=False, highlight=False)


def parse_pick(answer: str, sessions: int, checkpoints: int) -> tuple[str, int] | None:
    """Read a picker answer: ``N`` a session, ``cN`` a checkpoint (both 1-based), ``q`` quit.

    Args:
        answer: what was typed (surrounding blanks and case ignored).
        sessions, checkpoints: how many of each were listed.

    Returns:
        ``("session", index)``, ``("checkpoint", index)`` (0-based) or ``("quit", -1)``;
        None when the answer names nothing listed.
    """
    text = answer.strip().lower()
    if text in ("q", "quit"):
        return ("quit", -1)
    kind, digits, count = ("checkpoint", text[1:], checkpoints) if text.startswith("c") else ("session", text, sessions)
    if digits.isdigit() and 1 <= int(digits) <= count:
        return (kind, int(digits) - 1)
    return None


def _recent_sessions(replay: Replay, limit: int) -> list[Any]:
    return sorted(replay.state.session_list(), key=lambda s: s.last_seq, reverse=True)[:limit]


def _sessions_table(sessions: Sequence[Any], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("#", "session", "branch", "messages", "last activity", "session checkpoints"):
        table.add_column(column)
    for i, s in enumerate(sessions, 1):
        table.add_row(str(i), Text(shown(s.id)), Text(shown(branch_label(s))), str(len(s.visible)), s.last_ts or "",
                      Text(shown(", ".join(sorted(s.checkpoints)))))
    return table


def pick_resume(directory: Path, replay: Replay, limit: int = 20) -> tuple[str, int | None] | None:
    """The ``convlog launch --menu`` picker, on a terminal (rich prompts, no raw mode).

    Lists the most recently active sessions (``N``) and the log's checkpoints (``cN``,
    newest first). Picking a checkpoint lists the sessions as they were at its seq and
    asks for one of those: the agent then resumes from that point in the past.

    Args:
        directory: the log directory (for its checkpoints).
        replay: the log loaded to its end.
        limit: sessions and checkpoints listed at most.

    Returns:
        ``(session id, seq to fold up to or None for the end)``, or None on ``q``
        (or when nothing is recorded yet).

    Raises:
        click.UsageError: when stdin is not a terminal.
    """
    import click
    from rich.prompt import Prompt

    from convlog.store.checkpoint import list_checkpoints
    from convlog.store.replay import load

    if not sys.stdin.isatty():
        raise click.UsageError("--menu needs a terminal; use --resume SESSION|latest in hooks")
    sessions = _recent_sessions(replay, limit)
    if not sessions:
        err.print("no sessions recorded yet")
        return None
    checkpoints = list(reversed(list_checkpoints(directory)))[:limit]
    err.print(_sessions_table(sessions, "sessions (most recent first)"))
    if checkpoints:
        table = Table(title="checkpoints (newest first): resume as of one", title_justify="left")
        for column in ("#", "label", "seq", "log time", "sessions"):
            table.add_column(column)
        for i, cp in enumerate(checkpoints, 1):
            sessions_then = "" if cp.sessions is None else str(cp.sessions)
            table.add_row(f"c{i}", cp.label or "", str(cp.seq), cp.ts or "", sessions_then)
        err.print(table)
    hint = "number" + (", c<number> for a checkpoint" if checkpoints else "") + ", q to quit"
    while True:
        pick = parse_pick(Prompt.ask(f"resume which session ({hint})", console=err, default="1"),
                          len(sessions), len(checkpoints))
        if pick is not None:
            break
        err.print("[red]not in the lists above[/red]")
    kind, index = pick
    if kind == "quit":
        return None
    if kind == "session":
        return sessions[index].id, None
    seq = checkpoints[index].seq
    then = _recent_sessions(load(directory, upto_seq=seq), limit)
    if not then:
        err.print(f"no sessions as of seq {seq}")
        return None
    name = checkpoints[index].label or checkpoints[index].path.name
    err.print(_sessions_table(then, f"sessions as of seq {seq} ({name})"))
    choices = [str(i) for i in range(1, len(then) + 1)] + ["q"]
    choice = Prompt.ask("resume which session (number, q to quit)", console=err, choices=choices, default="1")
    return None if choice == "q" else (then[int(choice) - 1].id, seq)


def print_checks(checks: Sequence[Any]) -> None:
    """Print ``convlog doctor`` results: one line per check, its fix indented below."""
    for check in checks:
        mark = Text("ok  ", style="green") if check.ok else Text("FAIL", style="bold red")
        out.print(mark, Text(f" {check.name}: {check.message}"))
        if not check.ok and check.fix:
            out.print(Text(f"      fix: {check.fix}", style="yellow"))


# -- tail and info (issue 5) ---------------------------------------------------------------

#: Styles of record kinds in ``convlog tail`` on a terminal (first match wins).
_TAIL_KIND_STYLES = (
    ("recorder.gap", "bold red"), ("recorder.dropped", "bold red"), ("recorder.", "yellow"),
    ("message.", "green"), ("message", "bold green"), ("session.", "cyan"), ("llm.", "blue"),
    ("publisher.", "dim"), ("", "magenta"),
)


def tail_text(parts: Any) -> Text:
    """One :class:`convlog.readers.tail.LineParts` as a styled single line for a terminal (the
    text is never read as markup)."""
    style = next(s for prefix, s in _TAIL_KIND_STYLES if parts.kind.startswith(prefix))
    line = Text(no_wrap=True, overflow="ellipsis")
    for value, part_style in ((parts.time, "dim"), (str(parts.seq), "cyan"), (parts.kind, style),
                              (parts.session, "blue"), (parts.speaker + ":", "bold")):
        line.append(value, part_style)
        line.append(" ")
    line.append(parts.text)
    return line


def print_tail(records: Sequence[Any], as_json: bool) -> None:
    """Print ``convlog tail`` records (:class:`convlog.readers.tail.TailRecord`) and flush: with
    ``as_json`` each record's line exactly as in the log; on a terminal one styled line
    each, cut to the terminal width; otherwise one plain line each, uncut
    (:func:`convlog.readers.tail.plain_line`).

    Raises:
        BrokenPipeError: when stdout was closed by the reader (``| head``).
    """
    from convlog.readers.tail import line_parts, plain_line

    if not records:
        return
    if as_json:
        sys.stdout.buffer.write(b"".join(r.line for r in records))
        sys.stdout.buffer.flush()
    elif out.is_terminal:
        for r in records:
            line = tail_text(line_parts(r.record))
            line.truncate(out.width, overflow="ellipsis")
            out.print(line)
    else:
        sys.stdout.write("".join(plain_line(line_parts(r.record)) + "\n" for r in records))
        sys.stdout.flush()


@contextlib.contextmanager
def info_progress(total: int) -> Iterator[tuple[Callable[[int], None], Callable[[int, int], None]]]:
    """Two progress bars on stderr for ``convlog info`` (cleared at the end; not drawn
    when stderr is not a terminal): reading the log (``total`` bytes), then folding the
    sessions. Yields ``(advance, fold)``: ``advance(bytes done since the last call)``
    for the first, ``fold(bytes done, bytes to do)`` for the second."""
    if not err.is_terminal:  # rich would still write an empty line there
        yield (lambda done: None), (lambda done, todo: None)
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        read = progress.add_task("reading the log", total=total)
        fold = progress.add_task("folding sessions", total=None, visible=False)
        yield ((lambda done: progress.advance(read, done)),
               (lambda done, todo: progress.update(fold, completed=done, total=todo, visible=True)))


def print_skipped(skipped: Sequence[Any]) -> None:
    """Warn on stderr about invalid lines passed over (:class:`convlog.readers.tail.SkippedLine`)."""
    for item in skipped:
        err.print(f"convlog: skipped an invalid line: {item}", markup=False)


def _size_text(n: int) -> str:
    """Bytes for a person: ``512 B``, ``12.3 KiB``, ``4.0 MiB``, ``1.2 GiB``, ``3.4 TiB``."""
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, 0
    while value >= 1024 and unit < 3:
        value, unit = value / 1024, unit + 1
    return f"{value:,.1f} {('KiB', 'MiB', 'GiB', 'TiB')[unit]}"


def _duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d} ({seconds:,.3f} s)"


def print_info(data: dict[str, Any]) -> None:
    """Print :func:`convlog.readers.info.gather` for a person, like ``ros2 bag info``: a summary
    block, then segments, kinds and sources, publishers, checkpoints and disk use."""
    from rich import box
    from rich.columns import Columns

    def row(name: str, value: str) -> None:
        out.print(Text(f"{name + ':':<14}", style="bold"), Text(value), sep="")

    row("directory", data["directory"])
    row("records", f"{data['records']:,} (seq {data['first_seq']}..{data['last_seq']})")
    row("start", str(data["first_ts"]))
    row("end", str(data["last_ts"]))
    row("duration", _duration_text(data["duration_s"]))
    s = data["sessions"]
    folded = f", folded from checkpoint {s['from_checkpoint']}" if s["from_checkpoint"] else ""
    row("sessions", f"{s['live']:,} live, {s['deleted']:,} deleted, {s['forks']:,} forks{folded}")
    row("publishers", f"{len(data['publishers']):,} stamped, {data['unverified']:,} unstamped bus messages")
    gaps, drops = data["gaps"], data["drops"]
    row("gaps", f"{gaps['records']:,} recorder.gap records, {gaps['missing']:,} messages missing")
    row("drops", f"{drops['records']:,} recorder.dropped records, {drops['messages']:,} messages dropped")
    cps = data["checkpoints"]
    newest = cps["newest"]
    row("checkpoints", f"{cps['count']:,} ({_size_text(cps['bytes'])})"
        + (f", newest {newest['file']} (seq {newest['seq']}, {newest['ts']})" if newest else "")
        + (f", labelled: {', '.join(cps['labelled'])}" if cps["labelled"] else ""))
    q = data["quarantine"]
    row("quarantine", f"{_size_text(q['file_bytes'])} ({q['entries']} entries, "
        f"{_size_text(q['salvaged_bytes'])} salvaged)")
    if data["read_errors"]:
        row("read errors", f"{len(data['read_errors'])} invalid lines (run convlog verify)")

    def table(title: str, *columns: str) -> Table:
        out_table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for i, column in enumerate(columns):
            out_table.add_column(column, justify="left" if i == 0 else "right")
        return out_table

    segments = table("segments", "segment", "first seq", "records", "size")
    rows = data["segments"]
    shown = rows if len(rows) <= 30 else [*rows[:10], None, *rows[-10:]]
    for seg in shown:
        if seg is None:
            segments.add_row(f"… {len(rows) - 20} more", "", "", "")
        else:
            segments.add_row(seg["name"], f"{seg['first_seq']:,}", f"{seg['records']:,}", _size_text(seg["bytes"]))
    kinds = table("records by kind", "kind", "records")
    for kind, n in data["by_kind"].items():
        kinds.add_row(kind, f"{n:,}")
    sources = table("by source", "source", "records")
    for source, n in data["by_source"].items():
        sources.add_row(source, f"{n:,}")
    out.print(segments)
    out.print(Columns([kinds, sources], padding=(0, 4)))
    if data["publishers"]:
        pubs = table("publishers", "publisher", "messages", "last seq", "missing", "restarts", "duplicates")
        for p in data["publishers"]:
            last = p["last_stamp_seq"]
            pubs.add_row(p["id"], f"{p['messages']:,}", "-" if last is None else f"{last:,}", f"{p['missing']:,}",
                         f"{p['restarts']:,}", f"{p['duplicates']:,}")
        out.print(pubs)
    disk = table("disk use", "part", "size", "on disk", "files")
    for part, use in data["disk"].items():
        disk.add_row(part, _size_text(use["bytes"]), _size_text(use["allocated"]), f"{use['files']:,}")
    out.print(disk)


def print_hits(hits: Sequence[Any], as_json: bool = False, console: Console | None = None) -> None:
    """Print search hits (:class:`convlog.store.search.Hit`, newest first as given): per hit a
    header line (session · speaker · time · seq, and the kind unless ``message``) and its
    snippet indented below, the matches highlighted (bold reverse on a terminal; plain
    text when piped). With ``as_json``, one JSON list of :meth:`~convlog.store.search.Hit.as_dict`.
    No hits prints ``no matches`` on stderr (and ``[]`` for JSON).

    Args:
        hits: the hits.
        as_json: print JSON instead.
        console: where to print (default :data:`out`, stdout).
    """
    console = console or out
    if as_json:
        console.print(dump_json([hit.as_dict() for hit in hits], option=orjson.OPT_INDENT_2).decode("utf-8", "replace"),
                      markup=False, highlight=False)
        return
    if not hits:
        err.print("no matches", markup=False)
        return
    for hit in hits:
        when = (hit.ts or "?")[:19].replace("T", " ")
        header = Text.assemble(
            (shown(hit.session or "(no session)", console), "bold cyan"), " · ",
            (shown(hit.speaker or "?", console), "green"), " · ", (when, "dim"), " · ", (f"seq {hit.seq}", "dim"),
        )
        if hit.kind != "message":
            header.append(f" · {shown(hit.kind, console)}", style="magenta")
        if hit.copies > 1:
            header.append(f" · received {hit.copies} times", style="dim")
        text, spans = hit.spans()
        # Made visible piece by piece, so the highlighted spans still fall on the matches.
        snippet = Text("  ")
        at = 0
        for start, end in spans:
            snippet.append(shown(text[at:start], console))
            snippet.append(shown(text[start:end], console), style="bold reverse")
            at = end
        snippet.append(shown(text[at:], console))
        console.print(header)
        console.print(snippet)
