"""Terminal output (rich) of records of the log: ``convlog tail`` lines, ``convlog info``
and search hits."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from convlog.cli.console import err, out, shown
from convlog.core.record import dump_json
from convlog.core.view import plural, times_text

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
    if whole < 60:
        return f"{seconds:.3f} s"
    days, rest = divmod(whole, 86400)
    clock = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days} d {clock}" if days else clock


def print_info(data: dict[str, Any]) -> None:
    """Print :func:`convlog.readers.info.gather` for a person, like ``ros2 bag info``: a summary
    block, then segments, kinds and sources, publishers, checkpoints and disk use."""
    from rich import box
    from rich.columns import Columns

    def row(name: str, value: str) -> None:
        out.print(Text(f"{name + ':':<14}", style="bold"), Text(value), sep="")

    row("directory", data["directory"])
    row("records", f"{data['records']:,} (seq {data['first_seq']}..{data['last_seq']})")
    row("received", f"{data['first_ts']} .. {data['last_ts']}, {_duration_text(data['duration_s'])}")
    own = data["own"]
    if own["records"]:
        row("sent", f"{own['first_ts']} .. {own['last_ts']}, {_duration_text(own['duration_s'])} "
                    f"(the own times of {plural(own['records'], 'message')})")
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
    horizon = data.get("horizon")
    if horizon is not None:
        pruned = horizon["pruned"]
        where = f" into {pruned['archive_dir']}" if pruned.get("archive_dir") else ""
        row("horizon", f"seq {horizon['seq']:,} ({horizon['ts']}): {pruned.get('records', 0):,} records in "
            f"{pruned.get('segments', 0):,} segments ({_size_text(pruned.get('bytes', 0))}) "
            f"{'archived' if pruned.get('action') == 'archive' else 'deleted'}{where} by retention, "
            f"last at {pruned.get('at')}; the log folds from its base")
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
        when = times_text(hit.sent, hit.ts)
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
