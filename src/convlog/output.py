"""Terminal output (rich): tables and transcripts for the read side of the CLI.

Everything that prints lives here; the commands decide what to show. ``out`` writes
to stdout, ``err`` to stderr.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from convlog.fold import State
from convlog.replay import Replay
from convlog.view import ShownMessage

if TYPE_CHECKING:
    from convlog.importer import ImportReport, RepairReport
    from convlog.verify import VerifyReport


def _width(stream: object) -> int | None:
    """Terminal width on a terminal; 160 columns (or $COLUMNS) when piped, instead of
    rich's 80, so tables of long session ids stay readable in files and CI logs."""
    if getattr(stream, "isatty", lambda: False)() or os.environ.get("COLUMNS"):
        return None
    return 160


out = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))


def print_json(value: Any) -> None:
    """Print a JSON value (indented) to stdout, unstyled."""
    out.print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode("utf-8"), markup=False)


def branch_label(info: Any) -> str:
    """``main`` for a root session, else ``<branch> ← <parent>@<fork point>``."""
    if info.parent is None:
        return "main"
    name = info.branch or "fork"
    return f"{name} ← {info.parent}@{info.fork_at}"


def session_rows(state: State, include_deleted: bool = False) -> list[dict[str, Any]]:
    """One JSON-friendly dict per session: id, branch, parent, fork point, messages,
    duplicates, participants, first/last seq, last activity, deleted."""
    rows = []
    for info in state.session_list(include_deleted=include_deleted):
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


def sessions_table(state: State, include_deleted: bool = False, limit: int | None = None) -> Table:
    """The sessions as a rich table (most recently active last)."""
    table = Table(title=None, show_lines=False, pad_edge=False)
    table.add_column("session", no_wrap=True)
    table.add_column("branch / parent", no_wrap=True)
    table.add_column("msgs", justify="right")
    table.add_column("dups", justify="right")
    table.add_column("participants", overflow="ellipsis", max_width=40)
    table.add_column("last activity", no_wrap=True)
    infos = sorted(state.session_list(include_deleted=include_deleted), key=lambda s: s.last_seq)
    if limit is not None:
        infos = infos[-limit:]
    for info in infos:
        name = Text(info.id)
        if info.deleted_seq is not None:
            name.stylize("strike")
        table.add_row(
            name,
            branch_label(info),
            str(len(info.visible)),
            str(info.duplicates or ""),
            ", ".join(info.participants[:4]) + (" …" if len(info.participants) > 4 else ""),
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
    header = f"session {sid} · {branch_label(info)} · {len(messages)} messages"
    body = transcript(messages, fmt)
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
    """Print a :class:`~convlog.verify.VerifyReport`: one ``where:line: reason`` line per
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
