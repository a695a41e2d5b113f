"""Session control from outside the bus: fork, rewind, checkpoint, crystal, delete, and
purge (:func:`purge_session`, which rewrites the log with the same one writer).

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

import contextlib
from collections.abc import Callable, Iterator
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


# -- convlog purge -------------------------------------------------------------------------------

#: How long a purge waits for a running recorder to seal the segments it rewrites and to
#: move ``recovery/state.json`` past them, seconds.
SEAL_WAIT_S = 120.0
#: Between two looks at the files while waiting, seconds.
_POLL_S = 0.05


class RecorderPurgeWriter:
    """The :class:`convlog.store.purge.PurgeWriter` of a log a recorder is writing: asks it
    to rotate away from the segments to rewrite, waits until its sealer has sealed them
    (``compress = "zstd"``; with ``"none"`` they stay plain and nobody touches them) and
    its ``recovery/state.json`` names a later segment, and appends the ``session.purged``
    record through its control channel.

    Args:
        directory: the log directory.
        compress: the recorder's ``compress`` setting (its ``status`` reply).
        wait_s: how long to wait for the recorder, seconds.
    """

    via = "recorder"
    offline = False

    def __init__(self, directory: Path, compress: str | None, wait_s: float = SEAL_WAIT_S) -> None:
        self.directory = Path(directory)
        self.compress = compress or "zstd"
        self.wait_s = wait_s

    def finish(self, keys: set[str]) -> None:
        """Rotate when the live segment is one of ``keys``, then wait (see the class doc).

        Raises:
            PurgeError: when the recorder did not get there within ``wait_s``.
            control.ControlError: when it refused or stopped answering.
        """
        import time

        from convlog.store.purge import PurgeError
        from convlog.store.segment import EVENTS, segment_key
        from convlog.store.state import read_state

        if not keys:
            return
        segments = list_segments(self.directory)
        if segments and segment_key(segments[-1][1]) in keys:
            control.request(self.directory, "rotate")
        deadline = time.monotonic() + self.wait_s
        while True:
            waiting = []
            state = read_state(self.directory) or {}
            if segment_key(str(state.get("segment", ""))) in keys:
                waiting.append(f"recovery/state.json to leave {state.get('segment')}")
            live = list_segments(self.directory)
            if live and segment_key(live[-1][1]) in keys:
                waiting.append(f"the recorder to rotate away from {segment_key(live[-1][1])}")
            if self.compress == "zstd":
                plain = sorted(key for key in keys if (self.directory / EVENTS / key).exists())
                waiting.extend(f"the recorder to seal {key}" for key in plain)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise PurgeError(f"waited {self.wait_s:g} s for {waiting[0]}: run convlog purge again, or stop the "
                                 "recorder and purge with none running")
            time.sleep(_POLL_S)

    def append(self, kind: str, session: str, data: dict[str, Any]) -> int:
        """Append the record through the recorder; returns its seq.

        Raises:
            control.ControlError: when the recorder refused or did not answer.
        """
        reply = control.request(self.directory, "append", timeout_s=30.0, kind=kind, session=session, data=data)
        return int(reply["seq"])


def purge_session(
    directory: Path,
    session: str,
    before: str | None = None,
    dry_run: bool = False,
    clock: Clock | None = None,
    on_step: Callable[[str], None] | None = None,
    wait_s: float = SEAL_WAIT_S,
) -> Any:
    """``convlog purge``: purge a session with the log's one writer, as the session
    commands append: directly under the writer lock when no recorder runs (an
    :class:`~convlog.store.offline.OfflineWriter`, so none can start mid-purge), else
    through the running recorder (:class:`RecorderPurgeWriter`), chosen once the session
    is found (a refused purge writes nothing). Exports are recognised by the names
    ``convlog export --out DIR`` gives them.

    Args:
        directory: the log directory.
        session: a session id or unique prefix.
        before: purge only records before this time (RFC 3339 in the records' form), or None.
        dry_run: only say what would be purged.
        clock: time source.
        on_step: called with each step's name once it is durable (see
            :func:`convlog.store.purge.purge`).
        wait_s: how long to wait for a running recorder's rotation and sealing, seconds.

    Returns:
        the :class:`convlog.store.purge.PurgeReport`.

    Raises:
        LogLockedError: another writer than a recorder holds the log.
        NoLogError, UnknownSessionError, PurgeError, control.ControlError, OSError: see
            :func:`convlog.store.purge.purge`.
    """
    from convlog.readers.export.files import safe_file_name
    from convlog.readers.export.render import FORMATS
    from convlog.store.purge import OfflinePurgeWriter, purge

    directory = Path(directory)
    if not list_segments(directory):
        raise NoLogError.in_directory(directory)

    def export_names(sid: str) -> set[str]:
        return {safe_file_name(sid, suffix) for suffix in set(FORMATS.values())}

    @contextlib.contextmanager
    def open_writer() -> Iterator[Any]:
        with contextlib.ExitStack() as stack:
            try:
                # Held to the end of the purge: no recorder starts mid-purge.
                offline = stack.enter_context(OfflineWriter(directory, command="convlog purge", clock=clock))
            except LogLockedError as locked:
                try:
                    status = control.request(directory, "status", timeout_s=10.0)
                except control.NotRunningError:
                    raise locked from None  # another writer (an import, a recover) holds the log
                offline = None
            if offline is None:
                yield RecorderPurgeWriter(directory, status.get("compress"), wait_s)
            else:
                yield OfflinePurgeWriter(offline, clock)

    return purge(directory, session, before=before, open_writer=open_writer, dry_run=dry_run,
                 export_names=export_names, clock=clock, on_step=on_step)
