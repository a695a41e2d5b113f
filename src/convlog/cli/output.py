"""Terminal output (rich) for sessions: the sessions table, transcripts, the summary of a
fold, and the resume context with its session picker.

The commands decide what to show; the consoles are in :mod:`convlog.cli.console`, the
reports of the offline tools and the recorder in :mod:`convlog.cli.reports`, tail, info
and search hits in :mod:`convlog.cli.log_view`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from convlog.cli.console import err, out, print_json, shown
from convlog.core.fold import State
from convlog.core.view import EMPTY, ShownMessage, plural, printable, times_text

# The session listing lives in convlog.readers.listing (convlog serve answers from it too);
# the commands keep taking it from here.
from convlog.readers.listing import SESSION_ORDERS as SESSION_ORDERS
from convlog.readers.listing import session_document
from convlog.readers.listing import session_rows as session_rows
from convlog.readers.listing import sorted_sessions as sorted_sessions
from convlog.store.replay import Replay


def branch_label(info: Any) -> str:
    """``main`` for a root session, else ``<branch> ← <parent>@<fork point>``."""
    if info.parent is None:
        return "main"
    name = info.branch or "fork"
    return f"{name} ← {info.parent}@{info.fork_at}"


#: Sessions in one page of the ``sessions`` table.
SESSIONS_PAGE = 50


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
        when = times_text(m.sent, m.ts)
        if fmt == "markdown":
            lines.append(f"### {m.index}. {who}{' · ' + m.role if m.role and m.role != who else ''}{suffix}")
            lines.append("")
            lines.append(f"_{when}_")
            lines.append("")
            lines.append(text)
            lines.append("")
        else:
            lines.append(f"[{m.index}] {who}{suffix} (seq {m.seq} · {when}):")
            lines.extend("    " + line for line in text.splitlines() or [""])
    return "\n".join(lines)


def print_transcript(replay: Replay, session: str, fmt: str) -> None:
    """Print one session's visible branch in ``text``, ``markdown`` or ``json``."""
    if fmt == "json":
        print_json(session_document(replay, session))
        return
    sid = replay.resolve(session)
    messages = replay.messages(sid)
    info = replay.state.sessions[sid]
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
