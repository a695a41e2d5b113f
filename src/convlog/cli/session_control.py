"""Session control from outside the bus: fork, rewind, checkpoint, crystal, delete.

Each command appends one session control record (docs/fold.md) with
source ``control``. The log keeps one writer: when a recorder runs, the record goes
through its control channel (:mod:`convlog.bus.control`); when none runs, it is written
directly under the writer lock (:class:`convlog.store.offline.OfflineWriter`), with the same
tail recovery the recorder would do.

Before anything is written the record is checked by the fold itself: it is folded into
the current state (:func:`convlog.store.replay.load`) and refused with the fold's reason
(no such session, N beyond the history, unknown checkpoint, ...) when the fold would
reject it. So a command either writes a record the fold applies, or writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convlog.bus import control
from convlog.core.fold import Session, State, fold
from convlog.core.record import make_line
from convlog.core.view import plural
from convlog.store.clock import Clock
from convlog.store.lock import LogLockedError
from convlog.store.offline import OfflineWriter
from convlog.store.replay import NoLogError, Replay, load
from convlog.store.segment import list_segments

#: What a command builds from the current state: ``(kind, session id, data)``.
Build = Callable[[Replay], tuple[str, str, dict[str, Any]]]


class SessionControlError(Exception):
    """The command's target is invalid (the message is the fold's reason); nothing was written."""


@dataclass(frozen=True, slots=True)
class Appended:
    """A control record that was written.

    Attributes:
        seq: its seq in the log.
        kind: its kind (``session.fork``, ...).
        session: the session it names (for a fork: the new one).
        via: ``"recorder"`` (through the control channel) or ``"direct"`` (no recorder ran).
        after: the session as folded with the record applied.
    """

    seq: int
    kind: str
    session: str
    via: str
    after: Session


def check(state: State, kind: str, session: str, data: dict[str, Any]) -> Session:
    """Fold the would-be record into ``state`` (mutated; pass a throwaway) and return the
    session it leaves.

    Raises:
        SessionControlError: with the fold's reason when the fold rejects the record.
    """
    errors = len(state.errors)
    fold(state, {"seq": state.last_seq + 1, "kind": kind, "session": session, "data": data,
                 "meta": {}, "ts": None})
    if len(state.errors) > errors:
        raise SessionControlError(f"{kind} {session!r} refused: {state.errors[-1].reason}")
    return state.sessions[session]


def append(directory: Path, build: Build, timeout_s: float = 30.0, clock: Clock | None = None) -> Appended:
    """Build one session control record from the current state, check it, write it.

    Args:
        directory: the log directory.
        build: makes ``(kind, session, data)`` from the loaded :class:`Replay` (it may
            raise :class:`SessionControlError` or :class:`convlog.store.replay.UnknownSessionError`).
        timeout_s: how long to wait for a running recorder's reply, seconds.
        clock: time source for a record written directly.

    Returns:
        the :class:`Appended` record.

    Raises:
        NoLogError: the directory has no log.
        SessionControlError, UnknownSessionError: the target is invalid; nothing was written.
        control.ControlError: the running recorder refused or did not answer.
        OSError: the record could not be written.
    """
    directory = Path(directory)
    if not list_segments(directory):
        raise NoLogError.in_directory(directory)
    clock = clock or Clock()
    # Checked before the writer lock too: entering the writer recovers a crashed tail
    # and records that, which a refused command must not do.
    replay = load(directory)
    check(replay.state, *build(replay))
    try:
        with OfflineWriter(directory, command="convlog session control", clock=clock) as writer:
            replay = load(directory)
            kind, session, data = build(replay)
            after = check(replay.state, kind, session, data)
            seq = writer.seq + 1
            try:
                line = make_line(seq, clock.now(), kind, "control", None, session, data)
            except TypeError as exc:
                raise SessionControlError(f"{kind}: {exc}") from None
            writer.append(line, seq)
            return Appended(seq, kind, session, "direct", after)
    except LogLockedError:
        pass  # a recorder holds the log: go through it
    replay = load(directory)
    kind, session, data = build(replay)
    after = check(replay.state, kind, session, data)
    reply = control.request(directory, "append", timeout_s=timeout_s, kind=kind, session=session, data=data)
    return Appended(int(reply["seq"]), kind, session, "recorder", after)


def fork_id(state: State, parent: str, name: str | None) -> str:
    """A new session id for a fork of ``parent``: ``<parent>/<name>``, else
    ``<parent>/fork-<k>`` with the smallest unused ``k`` >= 1."""
    if name is not None:
        return f"{parent}/{name}"
    k = 1
    while f"{parent}/fork-{k}" in state.sessions:
        k += 1
    return f"{parent}/fork-{k}"


def describe(appended: Appended) -> str:
    """The one line a command prints: what was written and the session's new state."""
    info = appended.after
    where = "main" if info.parent is None else f"branch {info.branch or 'fork'} of {info.parent} at {info.fork_at}"
    parts = [f"{plural(len(info.visible), 'message')} visible", where, *session_notes(info)]
    return f"{appended.kind} seq {appended.seq} ({appended.via}): {info.id}: " + "; ".join(parts)


def session_notes(info: Session) -> list[str]:
    """Short notes on a session for one-line displays: its checkpoints, latest crystal,
    and whether it is deleted (empty when none apply)."""
    notes = []
    if info.checkpoints:
        notes.append(f"checkpoints: {', '.join(sorted(info.checkpoints))}")
    if info.crystals:
        notes.append(f"crystal over {info.crystals[-1].upto}")
    if info.deleted:
        notes.append("deleted")
    return notes
