"""Replay: fold a log directory back into conversation state and show its messages.

:func:`load` reads records in seq order and folds them with :func:`convlog.fold.fold`.
The state holds references (seqs); :meth:`Replay.messages` reads the bodies of one
session's visible messages from the log when they are shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convlog.fold import State, fold
from convlog.log import iter_records, list_segments, read_seqs
from convlog.view import ShownMessage, payload_text, stream_text


class NoLogError(Exception):
    """The directory holds no event log."""


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
        state: the folded :class:`~convlog.fold.State`.
        read_errors: invalid lines skipped while reading.
    """

    directory: Path
    state: State
    read_errors: list[ReadError] = field(default_factory=list)

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
        refs = self.state.visible(sid)
        wanted: set[int] = set()
        streams: dict[int, Any] = {}
        for ref in refs:
            wanted.add(ref.seq)
            if ref.stream:
                stream = self.state.streams.get((sid, ref.id))
                if stream is not None:
                    streams[ref.seq] = stream
                    wanted.update(stream.delta_seqs)
                    if stream.end_seq is not None:
                        wanted.add(stream.end_seq)
        records = read_seqs(self.directory, wanted)
        shown = []
        for index, ref in enumerate(refs, 1):
            record = records.get(ref.seq, {})
            stream = streams.get(ref.seq)
            if stream is not None:
                seqs = [*stream.delta_seqs] + ([stream.end_seq] if stream.end_seq else [])
                text = stream_text([records[s] for s in sorted(set(seqs)) if s in records])
                complete = bool(stream.complete)
            else:
                text = payload_text(record) if record else "<record missing from the log>"
                complete = True
            shown.append(
                ShownMessage(
                    index=index,
                    message_id=ref.id,
                    sender=ref.sender,
                    role=ref.role,
                    seq=ref.seq,
                    ts=record.get("ts"),
                    text=text,
                    copies=1 + info.copies.get(ref.id, 0),
                    streamed=stream is not None,
                    complete=complete,
                )
            )
        return shown


def load(directory: str | Path, upto_seq: int | None = None) -> Replay:
    """Fold the log in ``directory`` (records 1..``upto_seq``, default all).

    Args:
        directory: a log directory (with ``events/``).
        upto_seq: last seq to fold, inclusive; None for the whole log.

    Returns:
        a :class:`Replay`.

    Raises:
        NoLogError: when the directory has no segments.
    """
    directory = Path(directory)
    if not list_segments(directory):
        raise NoLogError(f"no event log in {directory} (expected {directory / 'events'}/*.jsonl)")
    errors: list[ReadError] = []
    state = State()
    for record in iter_records(
        directory, upto_seq=upto_seq, on_error=lambda s, n, r: errors.append(ReadError(s, n, r))
    ):
        state = fold(state, record)
    return Replay(directory=directory, state=state, read_errors=errors)
