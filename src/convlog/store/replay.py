"""Replay: fold a log directory back into conversation state and show its messages.

:func:`load` reads records in seq order and folds them with :func:`convlog.core.fold.fold`.
The state holds references (seqs); :meth:`Replay.messages` reads the bodies of one
session's visible messages from the log when they are shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from convlog.core.fold import State, Stream, fold, message_id
from convlog.core.record import IMPORT_SOURCE, format_ts, parse_when
from convlog.core.view import ShownMessage, on_time, own_time, payload_text, stream_text
from convlog.store.checkpoint import best_start
from convlog.store.segment import follow, list_segments, read_seqs, segment_key, segment_size


class NoLogError(Exception):
    """The directory holds no event log."""

    @classmethod
    def in_directory(cls, directory: str | Path) -> NoLogError:
        """The error for ``directory``, naming the logs one level below it when there
        are some (``convlog demo`` writes ``./conversation_logs/demo-<time>/``, while
        read commands default to ``./conversation_logs``), newest first.

        Returns:
            the error, to raise.
        """
        directory = Path(directory)
        text = f"no event log in {directory} (expected {directory / 'events'}/*.jsonl)"
        try:
            below = [p for p in directory.iterdir() if p.is_dir() and list_segments(p)]
        except OSError:
            below = []
        if below:
            below.sort(key=lambda p: p.stat().st_mtime, reverse=True)
            names = ", ".join(str(p) for p in below[:3]) + (", …" if len(below) > 3 else "")
            text += f"; logs below it: {names}: use --dir {below[0]}"
        return cls(text)


class UnknownSessionError(KeyError):
    """No session with that id (or unique id prefix) in the folded state."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(slots=True)
class ReadError:
    """An invalid line met while reading: segment file name, 1-based line, reason."""

    segment: str
    line: int
    reason: str


@dataclass(slots=True)
class Replay:
    """The folded state of a log directory, with access to the bodies.

    Attributes:
        directory: the log directory.
        state: the folded :class:`~convlog.core.fold.State`.
        read_errors: invalid lines skipped while reading.
        checkpoint: the checkpoint the fold started from, or None.
        refused: newer checkpoints that did not match the log, with the reason.
        horizon: the last seq retention let go of (0: none); messages at or before it
            are known by the fold but their bodies are gone (see :data:`PRUNED_TEXT`).
    """

    directory: Path
    state: State
    read_errors: list[ReadError] = field(default_factory=list)
    checkpoint: Path | None = None
    refused: list[str] = field(default_factory=list)
    horizon: int = 0

    def resolve(self, session: str) -> str:
        """Return the session id that ``session`` names: the id itself, else the only
        id starting with it.

        Raises:
            UnknownSessionError: when none or several match.
        """
        sessions = self.state.sessions
        if session in sessions:
            return session
        matches = [sid for sid in sessions if sid.startswith(session)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UnknownSessionError(
                f"session {session!r} is ambiguous: {', '.join(sorted(matches)[:5])}…"
            )
        raise UnknownSessionError(f"no session {session!r} in {self.directory}")

    def read(self, seqs: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The records with these seqs, by seq (those the log no longer has left out):
        :func:`convlog.store.segment.read_seqs` on :attr:`directory`."""
        return read_seqs(self.directory, seqs)

    def messages(self, session: str) -> list[ShownMessage]:
        """The visible messages of a session with their bodies, read from the log.

        Args:
            session: a session id or unique prefix.

        Returns:
            the messages in order.

        Raises:
            UnknownSessionError: see :meth:`resolve`.
        """
        sid = self.resolve(session)
        info = self.state.sessions[sid]
        seqs = self.state.visible(sid)
        records = self.read(seqs)
        # A streamed message's first record is a delta or an end; its parts come next.
        streams: dict[int, Stream] = {}
        for seq in seqs:
            record = records.get(seq)
            if record is not None and record.get("kind") in STREAM_KINDS:
                # Keyed by the session that recorded it: a fork inherits its parent's.
                stream = self.state.streams.get((record.get("session"), message_id(record)))
                if stream is not None:
                    streams[seq] = stream
        parts = self.read(
            {s for stream in streams.values() for s in (*stream.delta_seqs, stream.end_seq) if s is not None})
        shown = []
        for index, seq in enumerate(seqs, 1):
            record = records.get(seq, {})
            meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
            mid = message_id(record)
            stream = streams.get(seq)
            if stream is not None:
                stream_seqs = sorted({*stream.delta_seqs, *([stream.end_seq] if stream.end_seq else [])})
                text = stream_text([parts[s] for s in stream_seqs if s in parts])
                complete = bool(stream.complete)
            else:
                text = payload_text(record) if record else (
                    PRUNED_TEXT if seq <= self.horizon else "<record missing from the log>")
                complete = True
            shown.append(
                ShownMessage(
                    index=index,
                    message_id=mid,
                    sender=_text_or_none(meta.get("sender")),
                    role=_text_or_none(meta.get("role")),
                    seq=seq,
                    ts=record.get("ts"),
                    text=text,
                    copies=1 + info.copies.get(mid, 0),
                    streamed=stream is not None,
                    complete=complete,
                    sent=own_time(record) if record else None,
                )
            )
        return shown


#: The text shown for a message whose record retention let go of (before the horizon).
PRUNED_TEXT = "<before the log's horizon: pruned by retention>"

#: Kinds whose records make up a streamed message.
STREAM_KINDS = frozenset({"message.delta", "message.end"})


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_as_of(text: str, upper: bool = True) -> tuple[int | None, str | None]:
    """Parse a ``--as-of`` value: a seq (digits) or a time (ISO 8601 / RFC 3339; a time
    without a zone is taken as UTC).

    Record ``ts`` is monotonic in seq order (the recorder holds it when the wall clock
    steps back, see :class:`convlog.store.clock.Clock`), so a time selects the records up to
    the first one received after it. As an upper bound (``upper``, as ``--as-of``), a
    time at or after now, or ``now``, selects the whole log: a record stamped in the
    future (a clock that was fast) is already in the past.

    Returns:
        ``(seq, None)``, ``(None, ts)`` with ``ts`` in the records' format
        (``2026-11-21T12:00:00.000000Z``), which compares correctly as text, or
        ``(None, None)`` (no limit) for a time at or after now.

    Raises:
        ValueError: when it is neither.
    """
    text = text.strip()
    if text.isdigit():
        return int(text), None
    now = datetime.now(UTC)
    try:
        when = parse_when(text, now)
    except ValueError:
        raise ValueError(f"--as-of {text!r} is neither a seq nor a time (ISO 8601, now, yesterday, 2h, 3d)") from None
    if upper and when >= now - timedelta(seconds=1):
        return None, None
    return None, format_ts(when)


#: How often :func:`load` reports progress, records.
PROGRESS_RECORDS = 20_000


def load(
    directory: str | Path,
    upto_seq: int | None = None,
    as_of_ts: str | None = None,
    use_checkpoints: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Replay:
    """Fold the log in ``directory`` up to a seq or a time (default: all of it).

    Starts from the newest checkpoint at or before the target whose cut still matches
    the log (see :func:`convlog.store.checkpoint.best_start`; refused ones are listed in
    ``Replay.refused``) and folds only the records after it, read from the cut's byte
    position. Law (property-tested): the result equals folding every record.

    Args:
        directory: a log directory (with ``events/``).
        upto_seq: last seq to fold, inclusive; None for the whole log.
        as_of_ts: fold only records received at or before this time (RFC 3339 as in
            records, see :func:`parse_as_of`); None for no limit. Records are read in
            seq order up to the first one received after it; among them, imported
            records count from their own time (see :func:`convlog.core.view.on_time`), so the state of
            an imported conversation at a day it happened is its messages up to then.
        use_checkpoints: False to fold from the first record.
        progress: called as ``progress(bytes read, bytes to read)`` every
            ``PROGRESS_RECORDS`` records folded and once at the end (bytes of the log
            after the starting point); None for none.

    Returns:
        a :class:`Replay`.

    Raises:
        NoLogError: when the directory has no segments.
    """
    directory = Path(directory)
    if not list_segments(directory):
        raise NoLogError.in_directory(directory)
    start = best_start(directory, upto_seq, as_of_ts, use_checkpoints)
    errors: list[ReadError] = []
    state = start.state
    sizes = {segment_key(path): segment_size(path) for _, path in list_segments(directory)}
    before: dict[str, int] = {}  # bytes of the segments before each one, from the start
    total = 0
    first = start.position[0] if start.position else None
    for name, size in sizes.items():
        if first is not None and name < first:
            continue
        before[name] = total
        total += size
    skipped = start.position[1] if start.position else 0
    count = 0
    for record, segment, offset in follow(directory, start.position, on_error=lambda s, n, r: errors.append(
            ReadError(s, n, r))):
        if upto_seq is not None and record["seq"] > upto_seq:
            break
        if as_of_ts is not None and not on_time(record, as_of_ts):
            if record.get("source") == IMPORT_SOURCE:
                continue
            break
        fold(state, record)
        count += 1
        if progress is not None and count % PROGRESS_RECORDS == 0:
            progress(before.get(segment, 0) + offset - skipped, total - skipped)
    if progress is not None and count:
        progress(total - skipped, total - skipped)
    return Replay(directory=directory, state=state, read_errors=errors,
                  checkpoint=start.checkpoint, refused=start.refused, horizon=start.horizon)
