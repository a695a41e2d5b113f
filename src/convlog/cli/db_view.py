"""``convlog sessions|show|search|export --db URL``: the readers on the database
(:mod:`convlog.db.queries`), printed as the log-directory readers print."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from convlog.cli import console, log_view, output
from convlog.cli.output import shown
from convlog.core.view import plural


@contextlib.contextmanager
def reader(url: str) -> Iterator[Any]:
    """A reader connection to ``url`` (schema checked), closed at the end."""
    from convlog.db.queries import connect_reader

    conn = connect_reader(url)
    try:
        yield conn
    finally:
        conn.close()


def where(url: str) -> str:
    """The URL without its password, for messages and export headers."""
    from convlog.db.schema import redact_url

    return redact_url(url)


def print_sessions(url: str, as_json: bool, include_deleted: bool, order: str, limit: int | None,
                   log: str | None) -> None:
    """``convlog sessions --db``: a page of the newest sessions, or JSON."""
    from convlog.db.queries import session_rows

    page = limit if limit is not None else (0 if as_json else output.SESSIONS_PAGE)
    with reader(url) as conn:
        rows, total = session_rows(conn, include_deleted, order, page or None, log)
    if as_json:
        console.print_json(rows)
        return
    table = Table(title=None, show_lines=False, pad_edge=False)
    for name, justify, width in (("session", "left", 12), ("branch / parent", "left", 8), ("msgs", "right", 4),
                                 ("dups", "right", 4), ("participants", "left", 10), ("logs", "right", 4),
                                 ("last activity", "left", 19)):
        table.add_column(name, justify=justify, min_width=width, overflow="ellipsis")  # type: ignore[arg-type]
    for row in rows:
        name = Text(shown(row["id"]))
        if row["deleted"]:
            name.stylize("strike")
        label = f"{row['branch'] or 'fork'} of {row['parent']} @ {row['fork_at']}" if row["parent"] else "main"
        people = row["participants"]
        table.add_row(name, Text(shown(label)), str(row["messages"]), str(row["duplicates"] or ""),
                      Text(shown(", ".join(people[:4]) + (" …" if len(people) > 4 else ""))), str(len(row["logs"])),
                      (row["last_activity"] or "")[:19].replace("T", " "))
    console.out.print(table, soft_wrap=False)
    summary = f"{plural(total, 'session')} in {where(url)}, {output.SESSION_ORDERS[order][1]}"
    if len(rows) < total:
        summary = f"{len(rows):,} of {summary} (--limit 0 for all)"
    console.out.print(summary, markup=False, highlight=False)


def print_show(url: str, session: str, fmt: str, log: str | None) -> None:
    """``convlog show --db``: the session's family folded from the database, printed as
    ``show`` prints a log's session."""
    from convlog.db.projection import UnionReplay
    from convlog.db.queries import resolve_session, union_of

    with reader(url) as conn:
        sid = resolve_session(conn, session, log)
        union = union_of(conn, [sid])
    output.print_transcript(UnionReplay(union, where(url)), sid, fmt)


def print_search(url: str, text: str, as_json: bool, log: str | None, **filters: Any) -> None:
    """``convlog search --db``: PostgreSQL full-text search, printed as ``search``."""
    from convlog.db.queries import search

    with reader(url) as conn:
        hits = search(conn, text, log=log, **filters)
    log_view.print_hits(hits, as_json)


@contextlib.contextmanager
def union_log(url: str, sessions: tuple[str, ...], all_sessions: bool, with_history: bool,
              log: str | None) -> Iterator[tuple[Path, list[str]]]:
    """The sessions' families from the database written as a temporary log directory
    (:func:`convlog.db.queries.write_union_log`), for ``export --db``: ``(directory,
    session ids)``; the directory is removed at the end."""
    from convlog.db.queries import all_sessions as every_session
    from convlog.db.queries import resolve_session, union_of, write_union_log

    with reader(url) as conn:
        ids = (every_session(conn, include_deleted=with_history, log=log) if all_sessions
               else list(dict.fromkeys(resolve_session(conn, name, log) for name in sessions)))
        union = union_of(conn, ids)
    with tempfile.TemporaryDirectory(prefix="convlog-db-export-") as tmp:
        directory = Path(tmp) / "log"
        write_union_log(union, directory)
        yield directory, ids


def fail(message: str) -> None:
    """One line on stderr, exit 1."""
    print(f"convlog: {message}", file=sys.stderr)
    sys.exit(1)
