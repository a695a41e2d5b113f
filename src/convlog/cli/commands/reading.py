"""``convlog`` commands that read the log: sessions, show, replay, resume, search,
tail, info, export, play."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from convlog.cli.commands.options import (
    as_of_option,
    curve_client_options,
    curve_keys,
    dir_option,
    load_log,
    silence_stdout,
)
from convlog.store.replay import NoLogError


def db_options(func: Any) -> Any:
    """``--db URL`` (read from PostgreSQL instead of the log directory; a reader reads
    the log unless given it, ``$CONVLOG_DB`` is only ``convlog sync``'s default) and
    ``--log ID`` (with ``--db``: only the logs whose id starts with ID)."""
    func = click.option("--log", "log", metavar="ID",
                        help="With --db: only sessions and records of the log whose id (DIR/log_id) "
                             "starts with ID.")(func)
    return click.option("--db", "db", metavar="URL",
                        help="Read from PostgreSQL (what convlog sync wrote, every log) instead of --dir.")(func)


def db_reader(db: str | None, log: str | None, as_of: str | None) -> bool:
    """True when a reader reads the database (``--db``); usage errors for ``--log``
    without it and for ``--as-of`` with it."""
    if db is None:
        if log is not None:
            raise click.UsageError("--log needs --db")
        return False
    if as_of is not None:
        raise click.UsageError("--as-of reads a log directory; it cannot be used with --db")
    return True


@click.command()
@dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "include_deleted", is_flag=True, help="Include deleted sessions.")
@click.option("--sort", "order", type=click.Choice(["recent", "oldest", "messages", "id"]), default="recent",
              show_default=True, help="Newest activity first, oldest first, most messages first, or by id.")
@click.option("--limit", type=click.IntRange(min=0),
              help="At most N sessions (0: all). Default: a page of 50 in the table, all with --json.")
@as_of_option
@db_options
def sessions(directory: Path, as_json: bool, include_deleted: bool, order: str, limit: int | None,
             as_of: str | None, db: str | None, log: str | None) -> None:
    """List the sessions folded from the log (or, with --db, from every log synced into
    PostgreSQL): newest activity first, a page at a time, with the total."""
    from convlog.cli import console, output
    from convlog.core.view import plural

    if db_reader(db, log, as_of):
        from convlog.cli import db_view

        db_view.print_sessions(db, as_json, include_deleted, order, limit, log)  # type: ignore[arg-type]
        return
    replay = load_log(directory, as_of)
    rows = output.sorted_sessions(replay.state, include_deleted, order)
    page = limit if limit is not None else (0 if as_json else output.SESSIONS_PAGE)
    shown = rows[:page] if page else rows
    if as_json:
        console.print_json(output.session_rows(replay.state, include_deleted, shown))
        return
    console.out.print(output.sessions_table(replay.state, include_deleted, sessions=shown), soft_wrap=False)
    total = f"{plural(len(rows), 'session')}, {output.SESSION_ORDERS[order][1]}"
    if len(shown) < len(rows):
        total = f"{len(shown):,} of {total} (--limit 0 for all)"
    console.out.print(total, markup=False, highlight=False)


@click.command()
@click.argument("session")
@dir_option
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
@as_of_option
@db_options
def show(session: str, directory: Path, fmt: str, as_of: str | None, db: str | None, log: str | None) -> None:
    """Show the visible branch of SESSION (an id or a unique prefix), from the log or,
    with --db, from PostgreSQL (every log's records of it)."""
    from convlog.cli import output

    if db_reader(db, log, as_of):
        from convlog.cli import db_view

        db_view.print_show(db, session, fmt, log)  # type: ignore[arg-type]
        return

    output.print_transcript(load_log(directory, as_of), session, fmt)


@click.command()
@dir_option
@click.option("--upto", type=click.IntRange(min=1), help="Fold only records up to this seq.")
@as_of_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def replay(directory: Path, upto: int | None, as_of: str | None, as_json: bool) -> None:
    """Fold the log and summarise it: sessions, records by kind, gaps, incomplete streams.
    Starts from the newest checkpoint that still matches the log."""
    from convlog.cli import console, output

    data = output.summary(load_log(directory, as_of, upto))
    if as_json:
        console.print_json(data)
    else:
        output.print_summary(data)


@click.command()
@dir_option
@click.argument("session")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
def resume(directory: Path, session: str, fmt: str) -> None:
    """Print the resume context of SESSION (or 'latest'): its latest crystal, then the
    messages after it, for an agent to read."""
    from convlog.cli import output

    output.print_resume(load_log(directory, None), session, fmt)


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


@click.command()
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
@db_options
def search(query: tuple[str, ...], directory: Path, session: str | None, speaker: str | None, kind: str | None,
           since: str | None, until: str | None, limit: int, stem: bool, as_json: bool, db: str | None,
           log: str | None) -> None:
    """Full-text search of what was said, newest first (SQLite FTS5 syntax: words,
    "a phrase", OR, NOT, NEAR(a b), prefix*). The index (DIR/index/search.sqlite) is
    brought up to date from the log first. With --db, PostgreSQL's full-text search over
    every synced log (words, "a phrase", OR, -word)."""
    import sqlite3

    from convlog.cli import console, log_view
    from convlog.store.search import SearchIndex, SearchQueryError

    since_ts = _search_time(since, "--since")
    until_ts = _search_time(until, "--until")
    text = " ".join(query)
    if db_reader(db, log, None):
        from convlog.cli import db_view

        if stem:
            raise click.UsageError("--stem is for a log's index; with --db, search matches words as written")
        db_view.print_search(db, text, as_json, log, session=session, speaker=speaker,  # type: ignore[arg-type]
                             kind=kind, since=since_ts, until=until_ts, limit=limit)
        return
    try:
        with SearchIndex(directory) as index:
            with console.lazy_progress("indexing") as progress:
                index.update(progress)
            hits = index.query(text, session=session, speaker=speaker, kind=kind, since=since, until=until,
                               limit=limit, stem=stem)
    except SearchQueryError as exc:
        click.echo(f"convlog: {exc}", err=True)
        sys.exit(1)
    except sqlite3.DatabaseError as exc:
        index_failed(directory, exc)
        return
    log_view.print_hits(hits, as_json)


def index_failed(directory: Path, exc: Exception) -> None:
    """One line for a search index SQLite could not use (damaged, disk full, locked past
    the busy timeout), then exit 1."""
    click.echo(f"convlog: the search index {directory / 'index' / 'search.sqlite'} failed: {exc} (it is derived "
               f"from the log: convlog reindex --dir {directory} rebuilds it)", err=True)
    sys.exit(1)


# -- tail and info (issue 5) ---------------------------------------------------------------


@click.command()
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

    from convlog.cli import console, log_view
    from convlog.readers.tail import Follower, RecordFilter, newest, watch_log
    from convlog.store.segment import bytes_from

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
            total = bytes_from(directory)
            with console.byte_progress("reading backwards", total) as advance:
                start = newest(directory, count, keep, raw=as_json, progress=advance)
        else:
            start = newest(directory, count, keep, raw=as_json)
        if start.position is None and not follow_:
            raise NoLogError.in_directory(directory)
        log_view.print_skipped(start.skipped)
        log_view.print_tail(start.records, as_json)
        if follow_:
            follower = Follower(directory, start.position, start.last_seq, keep, raw=as_json)

            def on_change() -> None:
                batch = follower.poll()
                log_view.print_skipped(batch.skipped)
                log_view.print_tail(batch.records, as_json)

            watch_log(directory, on_change, stop)
    except KeyboardInterrupt:
        pass  # Ctrl-C while reading without -f: stop quietly
    except BrokenPipeError:  # the reader went away (| head): stop quietly, like tail(1)
        silence_stdout()


@click.command()
@dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(directory: Path, as_json: bool) -> None:
    """Describe the log, like `ros2 bag info`: time span, records by kind and source,
    sessions, publishers, gaps, drops, segments, checkpoints, disk use and quarantine.
    Answers from the newest checkpoint and the records after it (a progress bar on a
    terminal while those are read)."""
    from convlog.cli import console, log_view
    from convlog.readers.info import gather

    with console.lazy_progress("reading the log") as progress:
        data = gather(directory, progress=progress)
    if as_json:
        console.print_json(data)
    else:
        log_view.print_info(data)


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


@click.command(name="export")
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
@db_options
def export_command(sessions: tuple[str, ...], all_sessions: bool, fmt: str, out: str | None, with_history: bool,
                   directory: Path, as_of: str | None, db: str | None, log: str | None) -> None:
    """Export SESSIONs (ids or unique prefixes) as Markdown, JSON, JSONL or CSV: the
    visible branch with its crystals and usage, or with --with-history the whole tree.
    With --db, from PostgreSQL (each session folded from every log's records of it)."""
    if all_sessions == bool(sessions):
        raise click.UsageError("give one or more SESSIONs, or --all (not both)")
    if db_reader(db, log, as_of):
        from convlog.cli import db_view

        with db_view.union_log(db, sessions, all_sessions, with_history, log) as (union_dir, ids):  # type: ignore[arg-type]
            _export(union_dir, ids if not all_sessions else (), all_sessions, fmt, out, with_history, None,
                    db_view.where(db))  # type: ignore[arg-type]
        return
    _export(directory, sessions, all_sessions, fmt, out, with_history, as_of, None)


def _export(directory: Path, sessions: tuple[str, ...] | list[str], all_sessions: bool, fmt: str, out: str | None,
            with_history: bool, as_of: str | None, source: str | None) -> None:
    """The export of a log directory (``source``: what the header names instead of it)."""
    from convlog.cli import console
    from convlog.readers import export as exporting

    replay = load_log(directory, as_of)
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
    if source is not None:
        header["log"] = source
    with console.byte_progress("exporting", exporting.export_bytes(directory, state, ids)) as advance:
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


@click.command()
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
@curve_client_options
def play(directory: Path, endpoint: str | None, endpoint_alias: str | None, sessions: tuple[str, ...],
         since: str | None, until: str | None, rate: float | None, rate_alias: float | None, as_fast: bool,
         topic_prefix: str, sources: tuple[str, ...], wait_s: float, curve_secret: Path | None,
         curve_server: Path | None) -> None:
    """Re-publish recorded messages to a broker with their original topics and payload
    bytes, paced by their original receive times (like ros2 bag play)."""
    from convlog.cli import console
    from convlog.readers import play as playing
    from convlog.store.replay import parse_as_of
    from convlog.store.segment import bytes_from, list_segments

    endpoint = endpoint or endpoint_alias
    if endpoint is None:
        raise click.UsageError("Missing option '--to' (the broker's XSUB endpoint)")
    keys = curve_keys(curve_secret, curve_server)
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
        selected = playing.resolve_sessions(sessions, load_log(directory, None).state.sessions)
    selection = playing.Selection(sessions=selected, sources=frozenset(sources) or playing.DEFAULT_SOURCES, **bounds)
    total = bytes_from(directory, selection.since_seq or 1)
    try:
        with console.byte_progress("playing", total) as advance:
            report = playing.play(directory, endpoint, selection, None if as_fast else (rate or 1.0), topic_prefix,
                                  wait_s or None, advance, curve=keys)
    except playing.NothingToPlayError as exc:
        click.echo(f"convlog: {exc}", err=True)
        sys.exit(1)
    click.echo(report.summary(endpoint), err=True)
