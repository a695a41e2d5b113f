"""Following the log: the newest records, then the new ones as they are appended
(``convlog tail [-n N] [-f]``).

Three layers, each usable on its own:

* Pure: :class:`RecordFilter` (which records to show), :func:`line_parts` and
  :func:`plain_line` (a record as one readable line). No I/O.
* Reading: :func:`newest` reads the last N matching records backwards from the end of
  the last segment (segments are named by their first seq, so it never has to scan
  the log from its start unless the filter matches nothing recent);
  :class:`Follower` reads the complete records appended after a ``(segment, byte
  offset)`` position with :func:`convlog.store.segment.follow` and copes with what a recorder
  does to the end of the log: rotation (a new segment appears), recovery after a crash
  (a torn tail is moved to quarantine and the segment truncated; an empty new segment
  removed and written again) and restarts.
* Watching: :func:`watch_log` wakes the follower on file-system notifications from
  ``watchfiles.watch`` (inotify through the Rust ``notify`` crate) on ``events/``; it
  has no polling loop of its own and stops when its ``stop`` event is set.

Records are deduplicated by seq (``seq`` is gapless and increasing, docs/log-format.md),
so re-reading part of a segment after recovery never shows a record twice.
"""

from __future__ import annotations

import bisect
import fnmatch
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchfiles import watch

from convlog.core.gaps import HEARTBEAT, stamp_of
from convlog.core.record import BUS_KINDS, PURGED_KIND, RAW, RECORDER_KINDS, UNKNOWN, dump_json, parse_line
from convlog.core.view import payload_text, printable
from convlog.store.segment import (
    EVENTS,
    SEALED_SUFFIX,
    SEGMENT_SUFFIX,
    complete_end,
    follow,
    lines_backwards,
    list_segments,
    open_segment,
    segment_key,
    segment_path,
    segment_size,
)

#: Every kind a record can have, as far as the vocabulary is closed (docs/log-format.md): what a
#: publisher may send, ``unknown``/``raw``, ``session.purged`` (``convlog purge``) and the
#: recorder's own kinds (open-ended: any ``recorder.*`` pattern is accepted).
KNOWN_KINDS: frozenset[str] = BUS_KINDS | RECORDER_KINDS | {UNKNOWN, RAW, PURGED_KIND}
#: Kinds whose text is the payload's message text (:func:`convlog.core.view.payload_text`).
TEXT_KINDS = frozenset({"message", "message.delta", "message.end", UNKNOWN, RAW})

#: watchfiles timings, milliseconds. ``step``: how long the Rust side waits for more
#: changes before yielding (a record is seen 1-2 steps after it is written);
#: ``debounce``: the longest it groups changes while writes keep coming;
#: ``rust_timeout``: how often an idle watch returns to Python (the first return also
#: re-reads the end once, closing the window between the first read and the watcher
#: starting).
STEP_MS = 20
DEBOUNCE_MS = 100
RUST_TIMEOUT_MS = 250
_PROGRESS_STEP = 1 << 20


# --------------------------------------------------------------------------- pure part


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which records to show: all of them, or those of some sessions and kinds.

    Attributes:
        sessions: session ids (exact); empty for any session.
        kinds: kind patterns (exact kinds or shell-style patterns such as ``recorder.*``,
            matched with :func:`fnmatch.fnmatchcase`); empty for any kind.
    """

    sessions: frozenset[str] = frozenset()
    kinds: tuple[str, ...] = ()

    @classmethod
    def of(cls, sessions: Iterable[str] = (), kinds: Iterable[str] = ()) -> RecordFilter:
        """Build a filter, checking the kind patterns.

        Args:
            sessions: session ids to keep (any when empty).
            kinds: kind patterns to keep (any when empty).

        Returns:
            the filter.

        Raises:
            ValueError: when a kind pattern matches no kind of the vocabulary (a typo
                such as ``mesage`` would otherwise silently show nothing); patterns
                starting with ``recorder.`` are always accepted, since the recorder's
                own kinds grow.
        """
        patterns = tuple(kinds)
        for pattern in patterns:
            if pattern.startswith("recorder.") or any(fnmatch.fnmatchcase(k, pattern) for k in KNOWN_KINDS):
                continue
            raise ValueError(f"no record kind matches {pattern!r} (kinds: {', '.join(sorted(KNOWN_KINDS))})")
        return cls(frozenset(sessions), patterns)

    def __call__(self, record: dict[str, Any]) -> bool:
        """True when ``record`` (a parsed record) passes the filter."""
        if self.sessions and record.get("session") not in self.sessions:
            return False
        if self.kinds:
            kind = record.get("kind")
            return isinstance(kind, str) and any(fnmatch.fnmatchcase(kind, p) for p in self.kinds)
        return True


@dataclass(frozen=True, slots=True)
class LineParts:
    """One record as the fields of a readable line.

    Attributes:
        time: receive time ``YYYY-MM-DD HH:MM:SS.mmm`` (UTC), or ``?``.
        seq: the record's seq.
        kind: its kind.
        session: its session id, or ``-``.
        speaker: sender, else role, else topic, else source, else ``-``.
        text: the text on one line (whitespace runs collapsed to one space).

    Every text field has its control characters made visible
    (:func:`convlog.core.view.printable`), so a recorded escape sequence cannot act on the
    terminal.
    """

    time: str
    seq: int
    kind: str
    session: str
    speaker: str
    text: str


def record_text(record: dict[str, Any]) -> str:
    """The text of any record: the message text for messages (and ``unknown``/``raw``
    payloads) via :func:`convlog.core.view.payload_text`; for a publisher heartbeat its
    stamp (:mod:`convlog.core.gaps`); for control and recorder records
    the compact JSON of ``data`` without the fields the line already shows (``type``,
    the loss-detection stamp ``convlog``, the session id fields). Never raises."""
    if record.get("kind") in TEXT_KINDS:
        return payload_text(record)
    data = record.get("data")
    stamp = stamp_of(data)
    if record.get("kind") == HEARTBEAT and stamp is not None:
        return f"publisher {stamp[0]} sent up to seq {stamp[1]}"
    if isinstance(data, dict):
        hidden = {"type", "convlog", "session_id", "session", "conversation_id", "context_id", "ContextId",
                  "thread_id"}
        data = {k: v for k, v in data.items() if k not in hidden}
        if not data:
            return ""
    return dump_json(data).decode("utf-8", "replace")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def line_parts(record: dict[str, Any]) -> LineParts:
    """Split a parsed record into the fields of one readable line. Pure; never raises.

    Args:
        record: a record as :func:`convlog.core.record.parse_line` returns it.

    Returns:
        a :class:`LineParts`.
    """
    ts = record.get("ts")
    time = ts[:23].replace("T", " ") if isinstance(ts, str) and len(ts) >= 19 else "?"
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    speaker = (_str(meta.get("sender")) or _str(meta.get("role")) or _str(record.get("topic"))
               or _str(record.get("source")) or "-")
    session = record.get("session")
    return LineParts(
        time=printable(time),
        seq=int(record.get("seq", 0)),
        kind=printable(" ".join(str(record.get("kind", "?")).split())),
        session=printable(" ".join(session.split())) if isinstance(session, str) and session.strip() else "-",
        speaker=printable(" ".join(speaker.split())),
        text=printable(" ".join(record_text(record).split())),
    )


def plain_line(parts: LineParts) -> str:
    """The line printed when output is not a terminal:
    ``TIME  SEQ  KIND  SESSION  SPEAKER: TEXT`` (two spaces between fields, one line)."""
    return f"{parts.time}  {parts.seq}  {parts.kind}  {parts.session}  {parts.speaker}: {parts.text}"


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class TailRecord:
    """A record to show, with its line exactly as in the log.

    Attributes:
        record: the parsed record.
        line: its bytes in the segment, newline included (for ``--json``), or None when
            the caller did not ask for them.
    """

    record: dict[str, Any]
    line: bytes | None


@dataclass(frozen=True, slots=True)
class SkippedLine:
    """An invalid line passed over while reading: segment file name, byte offset at or
    before the line's start (the end of the last valid line before it), reason."""

    segment: str
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"{EVENTS}/{self.segment} after byte {self.offset}: {self.reason}"


@dataclass(slots=True)
class Newest:
    """What :func:`newest` found.

    Attributes:
        records: the newest matching records, oldest first.
        position: ``(segment name, byte offset)`` just after the last complete line of
            the last segment (where following starts), or None when there is no segment.
        last_seq: the highest seq at or before ``position`` (0 when none): records up
            to it are not shown again by a :class:`Follower`.
        skipped: invalid lines passed over.
    """

    records: list[TailRecord]
    position: tuple[str, int] | None
    last_seq: int
    skipped: list[SkippedLine] = field(default_factory=list)


def newest(
    directory: Path,
    count: int,
    keep: RecordFilter | None = None,
    raw: bool = False,
    chunk: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Newest:
    """The newest ``count`` records that pass ``keep``, read backwards from the end.

    Reads the last segment from its end, then earlier segments as needed, and stops
    once ``count`` matching records are found: the cost is the bytes between them and
    the end of the log, not the log's size. (A filter that matches nothing recent reads
    further back, up to the whole log.)

    Args:
        directory: the log directory.
        count: how many records (0: none, only the position).
        keep: the filter (default: every record).
        raw: also return each record's line bytes (``TailRecord.line``).
        chunk: first read size backwards, bytes (default 64 KiB; see :func:`convlog.store.segment.lines_backwards`).
        progress: called with the bytes read backwards since its last call, about every
            MiB (for a progress bar over the log's size when a filter matches rarely).

    Returns:
        a :class:`Newest`; empty with ``position`` None when the log has no segment.

    Raises:
        OSError: when a segment cannot be read.
    """
    keep = keep or RecordFilter()
    segments = list_segments(directory)
    if not segments:
        return Newest([], None, 0)
    last_first, last_path = segments[-1]
    end = complete_end(last_path, chunk)
    found: list[TailRecord] = []
    skipped: list[SkippedLine] = []
    newest_seq: int | None = None
    finished = reported = 0  # bytes of the segments already read backwards; bytes reported
    for _first, path in reversed(segments):
        stop = False
        segment_end = end if path == last_path else complete_end(path, chunk)
        for offset, line in lines_backwards(path, segment_end, chunk):
            if progress is not None and finished + segment_end - offset - reported >= _PROGRESS_STEP:
                progress(finished + segment_end - offset - reported)
                reported = finished + segment_end - offset
            try:
                record = parse_line(line)
            except ValueError as exc:
                skipped.append(SkippedLine(segment_key(path), offset, str(exc)))
                continue
            if newest_seq is None:
                newest_seq = record["seq"]
            if len(found) < count and keep(record):
                found.append(TailRecord(record, line if raw else None))
            if len(found) >= count:
                stop = True
                break
        if stop:
            break
        finished += segment_end
    found.reverse()
    skipped.reverse()
    last_seq = max(last_first - 1, newest_seq or 0)
    return Newest(found, (segment_key(last_path), end), last_seq, skipped)


@dataclass(slots=True)
class Batch:
    """What one :meth:`Follower.poll` found: records to show (in seq order) and invalid
    lines met for the first time."""

    records: list[TailRecord]
    skipped: list[SkippedLine]


class Follower:
    """Reads the records appended to a log after a position, one batch per call.

    Args:
        directory: the log directory.
        position: ``(segment name, byte offset)`` after the last line already shown
            (:attr:`Newest.position`), or None to start at the beginning of the log
            (when it has no segment yet).
        last_seq: records with a seq at or below it are never returned.
        keep: the filter (default: every record).
        raw: also return each record's line bytes.

    The position only ever points just after a complete line; a line still being
    written (or torn by a crash, which recovery moves to quarantine) is never consumed.
    When the segment it names has vanished or shrunk below it (recovery removed an
    empty trailing segment and the recorder went on in the previous one; a log
    restored from a copy), reading restarts at the segment that holds ``last_seq + 1``
    and the records already returned are skipped by seq.

    Limits: a record once returned is never withdrawn. Should recovery quarantine
    whole records already returned (only possible when a line in the middle of the
    live segment was corrupted, with valid records after it) or the log be replaced
    by one whose seqs go back, records reusing seqs up to the highest one returned are
    not returned; start a new follower to see them.
    """

    def __init__(
        self,
        directory: Path,
        position: tuple[str, int] | None,
        last_seq: int,
        keep: RecordFilter | None = None,
        raw: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.position = position
        self.last_seq = last_seq
        self.keep = keep or RecordFilter()
        self.raw = raw
        self.restarts = 0
        self._reported: set[tuple[str, int, str]] = set()

    def _restart_position(self, segments: list[tuple[int, Path]]) -> tuple[str, int]:
        """The start of the segment that holds ``last_seq + 1`` (by name: first seq)."""
        index = bisect.bisect_right([first for first, _ in segments], self.last_seq + 1) - 1
        self.restarts += 1
        return segment_key(segments[max(0, index)][1]), 0

    def poll(self) -> Batch:
        """Read what was appended since the last call.

        Returns:
            a :class:`Batch`; empty when nothing new is complete yet (a line still
            being written is left for the next call).

        Raises:
            OSError: when a segment cannot be read (other than vanishing while read).
        """
        segments = list_segments(self.directory)
        if not segments:
            return Batch([], [])
        if self.position is not None:
            name, offset = self.position
            try:
                size = segment_size(segment_path(self.directory, name))
            except FileNotFoundError:
                size = -1
            if size < offset:
                self.position = self._restart_position(segments)
        cur = self.position
        skipped: list[SkippedLine] = []
        kept: list[tuple[dict[str, Any], str, int, int]] = []  # record, segment, line start bound, end

        def on_error(segment: str, _line: int, reason: str) -> None:
            offset = cur[1] if cur is not None and cur[0] == segment else 0
            key = (segment, offset, reason)
            if key not in self._reported:  # a torn line in a closed segment is met again after a restart
                self._reported.add(key)
                skipped.append(SkippedLine(segment, offset, reason))

        try:
            for record, segment, end in follow(self.directory, self.position, on_error):
                begin = cur[1] if cur is not None and cur[0] == segment else 0
                cur = (segment, end)
                seq = record["seq"]
                if seq <= self.last_seq:
                    continue
                self.last_seq = seq
                if self.keep(record):
                    kept.append((record, segment, begin, end))
        except FileNotFoundError:
            pass  # a segment removed by recovery while read: the next call restarts
        self.position = cur
        return Batch(self._with_lines(kept), skipped)

    def _with_lines(self, kept: list[tuple[dict[str, Any], str, int, int]]) -> list[TailRecord]:
        """Attach each record's line bytes (when ``raw``), read back per segment from
        the bytes :func:`convlog.store.segment.follow` just read (in the page cache)."""
        if not self.raw:
            return [TailRecord(record, None) for record, *_ in kept]
        out: list[TailRecord] = []
        spans: dict[str, tuple[int, int]] = {}
        for _record, segment, begin, end in kept:
            low, high = spans.get(segment, (begin, end))
            spans[segment] = (min(low, begin), max(high, end))
        data: dict[str, bytes] = {}
        for segment, (low, high) in spans.items():
            with open_segment(segment_path(self.directory, segment)) as fh:
                fh.seek(low)
                data[segment] = fh.read(high - low)
        for record, segment, begin, end in kept:
            low = spans[segment][0]
            chunk = data[segment][begin - low:end - low]
            # The span may start with invalid lines that follow() skipped: keep the last line.
            line = chunk[chunk.rfind(b"\n", 0, len(chunk) - 1) + 1:]
            out.append(TailRecord(record, line))
        return out


# --------------------------------------------------------------------------- watching


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _segment_change(_change: Any, path: str) -> bool:
    """watchfiles filter: only segment files matter in ``events/``."""
    return path.endswith((SEGMENT_SUFFIX, SEALED_SUFFIX))


def watch_log(directory: Path, on_change: Callable[[], None], stop: threading.Event) -> None:
    """Call ``on_change()`` whenever the segments of ``directory`` may have changed,
    until ``stop`` is set.

    Watches ``events/`` (not recursively) with ``watchfiles.watch`` and calls
    ``on_change`` for each batch of changes to segment files, and once after the
    watcher has started (for what was written before it did). While ``events/`` does
    not exist yet it watches its nearest existing ancestor instead (not recursively),
    moving down as the directories are created. Follows watchfiles' documented API: ``stop_event`` ends the
    watch within one ``step``; signals are left to the caller (install a SIGINT handler
    that sets ``stop`` for a quiet Ctrl-C, or let watchfiles raise KeyboardInterrupt).

    Args:
        directory: the log directory (it may not exist yet).
        on_change: called in this thread; exceptions propagate (the watch is closed).
        stop: set it (from a signal handler or another thread) to return.
    """
    events = Path(directory) / EVENTS
    while not stop.is_set():
        waiting = not events.is_dir()
        target = _nearest_existing(events) if waiting else events
        first = True
        for changes in watch(
            target,
            watch_filter=None if waiting else _segment_change,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=stop,
            rust_timeout=RUST_TIMEOUT_MS,
            yield_on_timeout=True,
            recursive=False,
        ):
            if waiting:
                if _nearest_existing(events) != target:
                    break  # a deeper part of the path exists now: watch it (events/ itself at last)
                continue
            if not events.is_dir():
                break  # the log directory was removed: wait for it again
            if changes or first:
                on_change()
            first = False
