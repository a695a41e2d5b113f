"""``convlog`` offline tools on a log directory: verify, recover, compress, import, reindex."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from convlog.cli.commands.options import dir_option, log_dir, log_dir_argument
from convlog.cli.commands.reading import index_failed


@click.command()
@log_dir_argument
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(dir_argument: Path | None, dir_option: Path | None, as_json: bool) -> None:
    """Check a log directory: whole records, seq contiguous from 1, segment names,
    state.json and quarantine entries. Exits 1 when a problem is found."""
    from convlog.cli import console, reports
    from convlog.store.verify import verify as run

    with console.lazy_progress("verifying") as progress:
        report = run(log_dir(dir_argument, dir_option), progress=progress)
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


@click.command(name="import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@dir_option
def import_(files: tuple[Path, ...], directory: Path) -> None:
    """Import JSONL files into the log (source "import"): legacy ConversationEvent
    records, another convlog log's records, or OpenAI chat messages; each file's format
    is detected from its content.

    The recorder must not be running. Lines already imported are skipped; invalid lines
    are reported as FILE:LINE: reason (exit 1) and the valid ones are still imported."""
    from convlog.cli import console, reports
    from convlog.store.importer import import_files

    total = sum(path.stat().st_size for path in files)
    with console.byte_progress("importing", total) as advance:
        report = import_files(directory, files, progress=advance)
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
