"""``convlog sync``: project a log into PostgreSQL (:mod:`convlog.sync`)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from convlog.cli.commands.options import dir_option

#: Where ``--db`` comes from when not given.
DB_ENV = "CONVLOG_DB"


def db_option(required: bool = False) -> Any:
    """``--db URL``: a PostgreSQL connection URL (default ``$CONVLOG_DB``)."""
    return click.option("--db", "db", metavar="URL", default=lambda: os.environ.get(DB_ENV) or None,
                        required=required, show_default=f"${DB_ENV}",
                        help="PostgreSQL URL, e.g. postgresql://user@host/dbname (default $CONVLOG_DB).")


@click.command()
@db_option()
@dir_option
@click.option("--follow/--once", default=True, show_default=True,
              help="Keep following the log (the default), or stop once its end is in the database.")
@click.option("--batch", "batch_records", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Most records per transaction.")
@click.option("--metrics", metavar="HOST:PORT", help="Serve Prometheus metrics at http://HOST:PORT/metrics.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def sync(db: str | None, directory: Path, follow: bool, batch_records: int, metrics: str | None,
         log_level: str) -> None:
    """Write the log's records into PostgreSQL, exactly once, from where the database
    stopped, and keep its session projections current (foreground; stop with SIGTERM)."""
    from convlog.recorder.daemon import configure_logging
    from convlog.sync.follower import Follower
    from convlog.sync.metrics import serve_sync_metrics

    if not db:
        raise click.UsageError(f"give --db URL (or set ${DB_ENV})")
    if not (Path(directory) / "events").is_dir():
        raise click.UsageError(f"no event log in {directory} (expected {directory}/events/)")
    configure_logging(log_level.upper())
    follower = Follower(Path(directory), db, batch_records=batch_records)
    if metrics:
        follower.on_batch = serve_sync_metrics(metrics, follower)

    def stop(*_: object) -> None:
        follower.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.exit(follower.run(follow=follow))
