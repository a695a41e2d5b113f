"""Rendering exports: Markdown transcripts, CSV rows, the JSON document and JSONL
native events, as one byte stream (:func:`render`). Pure.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from convlog.core.document import JSON_FORMAT, JSON_VERSION, Crystal, Entry, Message, SessionExport, session_doc
from convlog.core.fold import Usage
from convlog.core.record import dump_json
from convlog.core.view import times_text

__all__ = ["CSV_COLUMNS", "FORMATS", "FORMULA_STARTS", "csv_rows", "csv_safe", "markdown", "render"]

#: Format name -> file suffix.
FORMATS: dict[str, str] = {"markdown": ".md", "json": ".json", "jsonl": ".jsonl", "csv": ".csv"}

#: The CSV header.
CSV_COLUMNS = ("session", "seq", "message_id", "ts", "speaker", "role", "kind", "text", "visible", "sent")


def _when(ts: str | None) -> str:
    return f"{ts[:19].replace('T', ' ')} UTC" if ts else "time unknown"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in (text.splitlines() or [""]))


def _html_safe(text: str) -> str:
    """Recorded text for a Markdown document: ``<``, ``>`` and ``&`` escaped, so a
    conversation's ``<script>`` or ``<img onerror=…>`` shows as text wherever the
    Markdown is rendered to HTML, never as markup."""
    return html.escape(text, quote=False)


def _speaker_line(message: Message, level: int) -> str:
    who = _html_safe(message.sender or message.role or "unknown")
    role = f" ({_html_safe(message.role)})" if message.role and message.role != who else ""
    flags = []
    if message.copies > 1:
        flags.append(f"received {message.copies} times")
    if message.streamed and not message.complete:
        flags.append("incomplete stream")
    if not message.visible:
        flags.append("rewound: not in the visible branch")
    number = f"{message.index}. " if message.index is not None else ""
    flag_text = f" · _{'; '.join(flags)}_" if flags else ""
    when = _when(message.ts) if message.sent is None else f"{times_text(message.sent, message.ts)} UTC"
    return f"{'#' * level} {number}{who}{role} · {when}{flag_text}"


def _usage_table(usage: Usage) -> list[str]:
    lines = [
        "| requests | input tokens | output tokens | cost (USD) |",
        "|---:|---:|---:|---:|",
        f"| {usage.requests} | {usage.input_tokens:,} | {usage.output_tokens:,} | {usage.cost_usd:.6f} |",
    ]
    if usage.models:
        lines += ["", "| model | requests |", "|---|---:|"]
        lines += [f"| {model} | {count} |" for model, count in sorted(usage.models.items())]
    return lines


def markdown(export: SessionExport, level: int = 1) -> str:
    """A session as a Markdown transcript: title, a metadata list, then one heading per
    message (number, speaker, role, time, flags) followed by its text, crystals as
    quoted summaries after the message they cover up to, and a usage table. With
    history, the transcript is the history: rewound messages flagged, copies, rewinds,
    checkpoints and crystals in log order, each fork nested one heading level deeper
    where it was made.

    Args:
        export: the session.
        level: heading level of the title (forks use deeper levels, at most 6).

    Returns:
        the Markdown text, ending with a newline.
    """
    h = "#" * min(level, 6)
    sub = min(level + 1, 6)
    title = _html_safe(export.title or export.id)
    lines = [f"{h} {title}", ""]
    meta = [f"- **Session:** `{export.id}`"]
    if export.parent is not None:
        meta.append(f"- **Branch:** {export.branch or 'fork'}, forked from `{export.parent}` "
                    f"after message {export.fork_at}")
    else:
        meta.append("- **Branch:** main")
    if export.participants:
        meta.append(f"- **Participants:** {_html_safe(', '.join(export.participants))}")
    span = [m.ts for m in export.messages if m.ts]
    meta.append(f"- **Messages:** {len(export.messages)} visible"
                + (f", {export.duplicates} duplicate copies" if export.duplicates else ""))
    if span:
        meta.append(f"- **Time:** {_when(min(span))} to {_when(max(span))}")
    meta.append(f"- **Records:** seq {export.first_seq} to {export.last_seq}")
    if export.deleted:
        meta.append("- **Deleted:** yes (a tombstone; the history is kept)")
    if export.checkpoints:
        meta.append("- **Checkpoints:** " + ", ".join(
            f"`{c.name}` at {c.at}" + ("" if c.current else " (no longer the visible branch)")
            for c in export.checkpoints))
    lines += [*meta, ""]
    if export.history is None:
        lines += [f"{'#' * sub} Transcript", ""]
        by_upto: dict[int, list[Crystal]] = {}
        for crystal in export.crystals:
            if crystal.current:
                by_upto.setdefault(crystal.upto, []).append(crystal)
        for crystal in by_upto.get(0, []):
            lines += [_crystal_block(crystal), ""]
        for message in export.messages:
            lines += [_speaker_line(message, min(sub + 1, 6)), "", _html_safe(message.shown), ""]
            for crystal in by_upto.get(message.index or 0, []):
                lines += [_crystal_block(crystal), ""]
        aside = [c for c in export.crystals if not c.current]
        if aside:
            lines += [f"{'#' * sub} Crystals set aside by a rewind", ""]
            for crystal in aside:
                lines += [_crystal_block(crystal), ""]
    else:
        lines += [f"{'#' * sub} History", ""]
        lines += _history_lines(export.history, sub)
    if export.usage.requests:
        lines += [f"{'#' * sub} Usage", "", *_usage_table(export.usage), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _crystal_block(crystal: Crystal) -> str:
    head = f"**Crystal** (summary of messages 1–{crystal.upto}, {_when(crystal.ts)}):"
    return _quote(head + "\n" + _html_safe(crystal.summary or ""))


def _history_lines(history: list[Entry], level: int) -> list[str]:
    lines: list[str] = []
    message_level = min(level + 1, 6)
    for entry in history:
        d = entry.detail
        when = _when(entry.ts)
        if entry.event == "message" and entry.message is not None:
            lines += [_speaker_line(entry.message, message_level), "", _html_safe(entry.message.shown), ""]
        elif entry.event == "copy" and entry.message is not None:
            lines += [f"_{when}: another copy of message `{entry.message.message_id}` "
                      f"from {entry.message.sender or 'unknown'} (seq {entry.seq})_", ""]
        elif entry.event == "fork" and entry.fork is not None:
            lines += [f"_{when}: forked `{entry.fork.id}` after message {d.get('at')} (seq {entry.seq})_", ""]
            lines += [markdown(entry.fork, message_level).rstrip("\n"), ""]
        elif entry.event == "rewind":
            target = f"checkpoint `{d['checkpoint']}`" if d.get("checkpoint") else f"{d.get('to_count')} messages"
            lines += [f"_{when}: rewound to {target}: {d.get('from_count')} → {d.get('to_count')} visible "
                      f"messages (seq {entry.seq})_", ""]
        elif entry.event == "checkpoint":
            lines += [f"_{when}: checkpoint `{d.get('name')}` at {d.get('at')} messages (seq {entry.seq})_", ""]
        elif entry.event == "crystal":
            lines += [_quote(f"**Crystal** (summary of messages 1–{d.get('upto')}, {when}):\n"
                             f"{_html_safe(str(d.get('summary') or ''))}"), ""]
        elif entry.event == "start":
            lines += [f"_{when}: session started" + (f": {_html_safe(str(d['title']))}" if d.get("title") else "")
                      + "_", ""]
        elif entry.event == "delete":
            lines += [f"_{when}: session deleted (seq {entry.seq})_", ""]
        elif entry.event == "llm.request":
            parts = ", ".join(f"{k} {v}" for k, v in d.items())
            lines += [f"_{when}: LLM request: {parts or 'no usage fields'}_", ""]
        elif entry.event == "rejected":
            lines += [f"_{when}: {d.get('kind')} record refused: {d.get('reason')} (seq {entry.seq})_", ""]
    return lines


def csv_rows(export: SessionExport) -> Iterator[list[str]]:
    """The CSV rows (without the header, see :data:`CSV_COLUMNS`) of a session: its
    visible messages and, with history, its rewound messages too, ordered by seq;
    with history the rows of its forks follow (depth first)."""
    for session in export.tree():
        messages = list(session.messages)
        if session.history is not None:
            messages += [e.message for e in session.history
                         if e.event == "message" and e.message is not None and not e.message.visible]
            messages.sort(key=lambda m: m.seq)
        for m in messages:
            yield [session.id, str(m.seq), m.message_id, m.ts or "", m.sender or "", m.role or "", m.kind, m.text,
                   "true" if m.visible else "false", m.sent or ""]


#: First characters that make a spreadsheet read a cell as a formula (OWASP, "CSV
#: Injection"): such a cell is written with a leading ``'``, which spreadsheets hide.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?([eE][-+]?\d+)?")


def csv_safe(cell: str) -> str:
    """A cell that no spreadsheet will evaluate: a leading ``'`` when it starts like a
    formula (:data:`FORMULA_STARTS`) and is not a plain number."""
    if cell.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def _csv_text(rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # excel dialect: RFC 4180 quoting, CRLF line ends
    writer.writerows([csv_safe(cell) for cell in row] for row in rows)
    return buffer.getvalue()


@dataclass(slots=True)
class _Renderer:
    """Writes exports of one format as one stream: ``head``, items, ``tail``."""

    fmt: str
    header: dict[str, Any]

    def head(self) -> bytes:
        if self.fmt == "csv":
            return _csv_text([CSV_COLUMNS]).encode("utf-8")
        if self.fmt == "json":
            return orjson.dumps(self.header)[:-1] + b',"sessions":[\n'
        return b""

    def item(self, export: SessionExport, first: bool) -> bytes:
        if self.fmt == "markdown":
            return (b"" if first else b"\n---\n\n") + markdown(export).encode("utf-8")
        if self.fmt == "json":
            return (b"" if first else b",\n") + dump_json(session_doc(export))
        if self.fmt == "jsonl":
            return b"".join(dump_json(event, option=orjson.OPT_APPEND_NEWLINE) for event in export.events or ())
        return _csv_text(csv_rows(export)).encode("utf-8")

    def tail(self) -> bytes:
        return b"\n]}\n" if self.fmt == "json" else b""


def render(exports: Iterable[SessionExport], fmt: str, header: dict[str, Any] | None = None) -> Iterator[bytes]:
    """Render exports as one stream in ``fmt``. Pure.

    * ``markdown``: the transcripts, separated by a ``---`` rule;
    * ``json``: one document ``{"format": "convlog.export", "version": 1, ...header,
      "sessions": [session doc, ...]}`` (see :func:`session_doc`), one session a line;
    * ``jsonl``: the native events (build the exports with ``events``);
    * ``csv``: the header row, then :func:`csv_rows` of each.

    Args:
        exports: the sessions.
        fmt: a key of :data:`FORMATS`.
        header: extra top-level fields of the JSON document.

    Yields:
        UTF-8 bytes to concatenate.

    Raises:
        ValueError: for an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")
    renderer = _Renderer(fmt, {"format": JSON_FORMAT, "version": JSON_VERSION, **(header or {})})
    yield renderer.head()
    for i, export in enumerate(exports):
        yield renderer.item(export, i == 0)
    yield renderer.tail()
