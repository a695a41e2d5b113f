"""``convlog serve``: the read-only local web UI (:mod:`convlog.web`, the ``web``
extra). Its modules are imported only when the command runs, so ``convlog --help``
and every other command start without Starlette."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from convlog.cli.commands.options import default_dir


def _refuse(message: str, code: int = 2) -> None:
    """One line on stderr (``convlog: …``), exit ``code`` (2: a misuse)."""
    click.echo(f"convlog: {message}", err=True)
    sys.exit(code)


def _port(text: str) -> int:
    """``--port``: a TCP port 0–65535 (0: any free one); a misuse otherwise."""
    if not text.isdigit() or int(text) > 65535:
        _refuse(f"--port {text!r} is not a TCP port (0-65535)")
    return int(text)


@click.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path), metavar="DIR",
              help="Log directory to read (default $CONVLOG_DIR or ./conversation_logs).")
@click.option("--db", "db", metavar="URL", help="Read the PostgreSQL store (what convlog sync wrote) instead.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback lets other machines ask for the token.")
@click.option("--port", "port_text", default="8765", show_default=True, metavar="PORT",
              help="TCP port (0: any free one; the printed address names it).")
@click.option("--token-file", type=click.Path(path_type=Path), metavar="FILE",
              help="Take the access token from the first line of FILE (mode 600) instead of a random one.")
@click.option("--no-token", is_flag=True, help="Require no token (only with a loopback --host).")
def serve(directory: Path | None, db: str | None, host: str, port_text: str, token_file: Path | None,
          no_token: bool) -> None:
    """Serve a read-only web UI of the log (sessions, a session as of any seq, search,
    health) and its JSON API on http://127.0.0.1:8765/. The first line of output is the
    address to open, with a random access token (kept in a cookie after the first visit;
    scripts send Authorization: Bearer TOKEN)."""
    port = _port(port_text)
    if db is not None and directory is not None:
        _refuse("give --dir or --db, not both")
    if no_token and token_file is not None:
        _refuse("--no-token and --token-file exclude each other")
    try:
        from convlog.web import access, server, sources
    except ImportError as exc:
        _refuse(f"convlog serve needs the web extra (pip install 'convlog[web]'): {exc}", 1)
    if no_token and not access.is_loopback(host):
        _refuse(f"--no-token only with a loopback --host (127.0.0.1, ::1, localhost), not {host}")
    if no_token:
        token = None
    elif token_file is not None:
        try:
            token = access.read_token_file(token_file)
        except access.TokenFileError as exc:
            _refuse(str(exc), 1)
    else:
        token = access.new_token()
    if db is not None:
        from convlog.db.queries import connect_reader

        connect_reader(db).close()  # fail now, in one line, on a database that cannot be read
        source: sources.LogSource | sources.DbSource = sources.DbSource(db)
    else:
        from convlog.store.replay import NoLogError
        from convlog.store.segment import list_segments

        where = directory or Path(default_dir())
        if not where.is_dir():
            _refuse(f"no log directory {where}", 1)
        if not list_segments(where):
            raise NoLogError.in_directory(where)
        source = sources.LogSource(where)
    listener = server.listen(host, port)
    server.run(source, listener, token)
