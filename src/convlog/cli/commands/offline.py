"""``convlog`` offline tools on a log directory: verify, recover, compress, prune, import, reindex."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from convlog.cli.commands.options import dir_option, log_dir, log_dir_argument
from convlog.cli.commands.reading import index_failed


@click.command()
@log_dir_argument
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Ed25519 public key (NAME-sign.pub from convlog keys generate): check the signed chain heads.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(dir_argument: Path | None, dir_option: Path | None, key_path: Path | None, as_json: bool) -> None:
    """Check a log directory: whole records, payload digests, the hash chain, seq
    contiguous from 1, segment names, checkpoints, state.json and quarantine entries;
    with --key, the signed chain heads too. Exits 1 when a problem is found."""
    from convlog.cli import console, reports
    from convlog.store.signing import load_public_key
    from convlog.store.verify import verify as run

    key = load_public_key(key_path) if key_path is not None else None
    with console.lazy_progress("verifying") as progress:
        report = run(log_dir(dir_argument, dir_option), progress=progress, key=key)
    if as_json:
        console.print_json(report.as_dict())
    else:
        reports.print_verify(report)
    sys.exit(0 if report.ok else 1)


@click.command()
@log_dir_argument
def recover(dir_argument: Path | None, dir_option: Path | None) -> None:
    """Repair the tail of a log whose recorder is not running, as the recorder does at
    start: a torn or invalid tail goes to recovery/quarantine.jsonl, a recorder.recovered
    record says so, and the state is marked clean."""
    from convlog.cli import reports
    from convlog.store.offline import repair

    directory = log_dir(dir_argument, dir_option)
    reports.print_repair(directory, repair(directory))


@click.command()
@log_dir_argument
@click.option("--level", type=click.IntRange(1, 22), default=3, show_default=True, help="zstd compression level.")
def compress(dir_argument: Path | None, dir_option: Path | None, level: int) -> None:
    """Seal the finished segments of a log whose recorder is not running: each one but
    the live (last) one becomes events/<first seq>.jsonl.zst (zstd, seekable format),
    which every reader reads as before and zstd -dc decompresses. A recorder with
    compress = "zstd" does this by itself while recording."""
    from convlog.cli import reports
    from convlog.store.offline import compress as run

    directory = log_dir(dir_argument, dir_option)
    reports.print_compress(directory, run(directory, level))


def _limit(text: str | None, what: str) -> float | int | None:
    """Parse ``--max-age`` (seconds) or ``--max-bytes`` (bytes) as ``[retention]`` does
    (click reports a ValueError as a bad value of the option)."""
    if text is None:
        return None
    from convlog.recorder.config import parse_age, parse_size

    try:
        return parse_age(text) if what == "age" else parse_size(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@log_dir_argument
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML config file whose [retention] applies (default $CONVLOG_CONFIG).")
@click.option("--max-age", "max_age", metavar="AGE", callback=lambda _c, _p, v: _limit(v, "age"),
              help='Let go of finished segments older than AGE ("90d", "12h").')
@click.option("--max-bytes", "max_bytes", metavar="SIZE", callback=lambda _c, _p, v: _limit(v, "size"),
              help='Let go of the oldest finished segments while the log is bigger than SIZE ("50GiB").')
@click.option("--archive", "archive", type=click.Path(file_okay=False, path_type=Path),
              help="Move them into this archive directory instead of deleting them.")
@click.option("--dry-run", is_flag=True, help="Only say what would go.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def prune(dir_argument: Path | None, dir_option: Path | None, config_path: Path | None, max_age: float | None,
          max_bytes: int | None, archive: Path | None, dry_run: bool, as_json: bool) -> None:
    """Apply retention: let go of the oldest whole finished segments (never the live
    one) by age and/or size, after writing the state at the cut as the log's base
    (base.json), so sessions that began earlier still fold. A recorder.pruned record
    says what went. Flags override the config's [retention]; with a recorder running,
    it does the pruning (asked on its control channel)."""
    from convlog.bus import control
    from convlog.cli import console, reports
    from convlog.core.retention import Limits
    from convlog.recorder.config import load_config
    from convlog.store.lock import LogLockedError
    from convlog.store.offline import prune_offline
    from convlog.store.sync_state import synced_seq

    directory = log_dir(dir_argument, dir_option)
    config = load_config(config_path)
    age = max_age if max_age is not None else config.retention_max_age_s
    size = max_bytes if max_bytes is not None else config.retention_max_bytes
    limits = Limits(age, size)
    if not limits.active:
        raise click.UsageError("no retention limit: give --max-age and/or --max-bytes, or set [retention] "
                               "max_age / max_bytes in the config")
    if archive is not None:
        action, archive_dir = "archive", archive
    elif max_age is not None or max_bytes is not None:
        action, archive_dir = "delete", None
    else:
        action, archive_dir = config.retention_action, config.retention_archive_dir
    try:
        report = prune_offline(directory, limits, action, archive_dir, dry_run,
                               synced_seq=synced_seq(directory) if config.sync_db else None)
        data = report.as_data()
    except LogLockedError as locked:
        try:
            data = control.request(
                directory, "prune", timeout_s=600.0, max_age_s=age, max_bytes=size, action=action,
                archive_dir=str(archive_dir.resolve()) if archive_dir else None, dry_run=dry_run)
        except control.NotRunningError:
            raise locked from None
        data.pop("ok", None)
    if as_json:
        console.print_json(data)
    else:
        reports.print_prune(directory, data)


@click.command(name="import")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--archive", "archive", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Import the records of a retention archive (checked against its manifest first).")
@click.option("--no-redact", "no_redact", is_flag=True,
              help="Store secrets as they are in the files (default: the built-in redaction rules).")
@dir_option
def import_(files: tuple[Path, ...], archive: Path | None, no_redact: bool, directory: Path) -> None:
    """Import JSONL files into the log (source "import"): legacy ConversationEvent
    records, another convlog log's records, or OpenAI chat messages; each file's format
    is detected from its content (files ending in .zst are decompressed). With --archive,
    the segments of a retention archive, after checking each against the sha256 of its
    manifest. Secrets are replaced as the recorder replaces them (the built-in rules of
    [redact]) unless --no-redact.

    The recorder must not be running. Lines already imported are skipped; invalid lines
    are reported as FILE:LINE: reason (exit 1) and the valid ones are still imported."""
    from convlog.cli import console, reports
    from convlog.store.archive import ArchiveError, check_archive
    from convlog.store.importer import import_files

    paths = list(files)
    if archive is not None:
        check = check_archive(archive)
        if not check.ok:
            raise ArchiveError(f"{archive} does not match its manifest: {'; '.join(check.problems)}")
        paths += check.segments
    if not paths:
        raise click.UsageError("nothing to import: give FILES or --archive DIR")
    total = sum(path.stat().st_size for path in paths)
    with console.byte_progress("importing", total) as advance:
        report = import_files(directory, paths, progress=advance, redact=not no_redact)
    reports.print_import(report)
    sys.exit(1 if report.invalid else 0)


@click.command()
@dir_option
def reindex(directory: Path) -> None:
    """Rebuild the search index (DIR/index/search.sqlite) from the whole log."""
    import sqlite3

    from convlog.cli import console
    from convlog.store.search import SearchIndex

    try:
        with SearchIndex(directory) as index:
            with console.lazy_progress("reindexing") as progress:
                index.rebuild(progress)
            count, last_seq = index.count(), index.last_seq
    except sqlite3.DatabaseError as exc:
        index_failed(directory, exc)
        return
    size = index.size_bytes()  # once closed: the WAL is folded back into the file
    click.echo(f"indexed {count:,} records with text up to seq {last_seq:,} in {index.path} "
               f"({size / 1e6:,.1f} MB)")
