"""Sessions as the readers hand them to other tools: the rows of ``convlog sessions
--json`` (:func:`session_rows`, in a :data:`SESSION_ORDERS` order) and one session's
document of ``convlog show --format json`` (:func:`session_document`).

The command line prints them and ``convlog serve`` answers its JSON API and draws its
pages from them, so both say the same thing in the same shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from convlog.core.fold import State
from convlog.store.replay import Replay

#: The orders of ``convlog sessions --sort``: name -> (sort key, how it reads).
SESSION_ORDERS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "recent": (lambda s: -s.last_seq, "newest activity first"),
    "oldest": (lambda s: s.last_seq, "oldest activity first"),
    "messages": (lambda s: (-len(s.visible), -s.last_seq), "most messages first"),
    "id": (lambda s: s.id, "by id"),
}


def sorted_sessions(state: State, include_deleted: bool = False, order: str = "recent") -> list[Any]:
    """The sessions of ``state`` (:class:`convlog.core.fold.Session`) in a
    :data:`SESSION_ORDERS` order (``recent``: newest activity first).

    Raises:
        KeyError: for an order that is not one of :data:`SESSION_ORDERS`.
    """
    return sorted(state.session_list(include_deleted=include_deleted), key=SESSION_ORDERS[order][0])


def session_row(info: Any) -> dict[str, Any]:
    """One session (:class:`convlog.core.fold.Session`) as a row of ``convlog sessions
    --json``: ``id``, ``branch``, ``parent``, ``fork_at`` (parent messages shared),
    ``messages`` (visible), ``duplicates`` (extra copies), ``participants`` (senders),
    ``first_seq``/``last_seq``, ``last_activity`` (RFC 3339 receive time or None) and
    ``deleted``."""
    return {
        "id": info.id,
        "branch": info.branch,
        "parent": info.parent,
        "fork_at": info.fork_at,
        "messages": len(info.visible),
        "duplicates": info.duplicates,
        "participants": list(info.participants),
        "first_seq": info.first_seq,
        "last_seq": info.last_seq,
        "last_activity": info.last_ts,
        "deleted": info.deleted_seq is not None,
    }


def session_rows(state: State, include_deleted: bool = False, sessions: Sequence[Any] | None = None
                 ) -> list[dict[str, Any]]:
    """:func:`session_row` of every session of ``state`` (deleted ones only with
    ``include_deleted``), or of ``sessions`` in their order."""
    chosen = sessions if sessions is not None else state.session_list(include_deleted=include_deleted)
    return [session_row(info) for info in chosen]


def session_document(replay: Replay, session: str) -> dict[str, Any]:
    """One session's visible branch as ``convlog show --format json`` prints it:
    ``{"session", "parent", "fork_at", "branch", "deleted", "messages"}``, each message
    :meth:`convlog.core.view.ShownMessage.as_dict` (index, message_id, sender, role,
    seq, ts received, sent, text, copies, streamed, complete), in order.

    Args:
        replay: a loaded log (or a database union's :class:`convlog.db.projection.UnionReplay`).
        session: a session id or unique prefix.

    Raises:
        UnknownSessionError: when no session or several match ``session``.
    """
    sid = replay.resolve(session)
    info = replay.state.sessions[sid]
    return {
        "session": sid,
        "parent": info.parent,
        "fork_at": info.fork_at,
        "branch": info.branch,
        "deleted": info.deleted_seq is not None,
        "messages": [m.as_dict() for m in replay.messages(sid)],
    }
