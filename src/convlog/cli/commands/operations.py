"""``convlog`` commands for a running recorder: status, doctor, stop."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from convlog.cli.commands.options import dir_option, silence_stdout

# --------------------------------------------------------------------------- running recorder


@click.command()
@dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds to wait for the recorder's answer.")
@click.option("--db", "db", metavar="URL",
              help="Instead: each log synced into this PostgreSQL database, its position and lag.")
def status(directory: Path, as_json: bool, timeout: float, db: str | None) -> None:
    """Is the recorder of DIR really recording? Exit 0 when healthy, 1 when unhealthy,
    3 when no recorder runs (usable as a health check). With --db, the sync's lag of
    every log in the database (records and seconds)."""
    from convlog.bus import control
    from convlog.cli import console, reports

    if db is not None:
        from convlog.cli.db_view import reader, where
        from convlog.db.writer import lag_rows

        with reader(db) as conn:
            rows = lag_rows(conn)
        if as_json:
            console.print_json(rows)
        else:
            reports.print_sync_lag(rows, where(db))
        return

    code, reply = control.status_report(directory, timeout_s=timeout)
    if code == control.STATUS_NOT_RUNNING:
        if as_json:
            console.print_json(reply)
        else:
            click.echo(f"not running: {reply['problems'][0]}")
        sys.exit(code)
    try:
        if as_json:
            console.print_json(reply)
        else:
            reports.print_status(reply)
        sys.stdout.flush()
    except BrokenPipeError:  # `status | head -1`: the exit code still tells the health
        silence_stdout()
    sys.exit(code)


@click.command()
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
    from convlog.cli import reports
    from convlog.recorder.doctor import check_inputs, run_checks

    try:
        status: dict[str, Any] | None = control.request(directory, "status", timeout_s=3.0)
    except control.NotRunningError:
        status = None
    config, endpoints = check_inputs(config_path, sub, status)
    checks = run_checks(config_path, directory, endpoints, status,
                        silence_s=silence_s or float(config.silence_threshold_s))
    reports.print_checks(checks)
    sys.exit(0 if all(check.ok for check in checks) else 1)


@click.command()
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
