"""The fold's rules: one handler per record kind (:data:`_HANDLERS`), each validating
its record then changing the state, and the :class:`Step` each tells an observer.
Pure. :func:`convlog.core.fold.fold` dispatches records to them; the rules by kind are
listed in the :mod:`convlog.core.fold` docstring.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from convlog.core.fold.state import Session, State, Stream
from convlog.core.fold.values import Crystal, Gap, Rewind, SessionCheckpoint, _is_int

__all__ = ["Observer", "Step", "message_id"]

#: Largest token count accepted in one ``llm.request`` field (exact in a float too).
_MAX_TOKENS = 2**53
#: Largest running token total, and largest gap bound: fits a signed 64-bit integer,
#: so checkpoints (orjson) and database projections can hold it.
_MAX_INT64 = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Step:
    """What one record did to the state, as told to an observer of :func:`fold`.

    An ordinary fold builds no steps: they exist only when :func:`fold` (or
    :func:`fold_all`) is given an ``observe`` callback, which then receives each step
    right after the state changed (the state is current: ``state.sessions[session]``
    shows the step applied). History views (``convlog export --history``) are built
    from them, so the fold's rules live in the fold alone.

    Fields:
        effect: what happened (the keys of ``detail`` for each):

            * ``message``: a message appended to the visible list of ``session``
              (``message_id``, ``sender``; ``index``: its 1-based position);
            * ``copy``: a copy of a message already visible (or of a stream already
              complete) counted, nothing appended (``message_id``);
            * ``stream.delta`` / ``stream.end``: a part added to an open stream, or
              the end that completed it (``message_id``);
            * ``start``: a ``session.start`` (``title`` as recorded or None,
              ``created``, ``revived``: booleans);
            * ``fork``: ``session`` is the new fork (``parent``, ``at``: parent
              messages shared, ``branch``: name or None);
            * ``rewind``: ``rewind`` (the :class:`Rewind` appended, with the seqs it
              hid), ``checkpoint`` (the checkpoint name, None for a rewind ``to`` N);
            * ``checkpoint``: ``name``, ``at`` (messages it names);
            * ``crystal``: ``crystal`` (the :class:`Crystal` appended), ``summary``;
            * ``delete``: ``repeated`` (True when the session already had a tombstone);
            * ``llm.request``: the counts added: ``model`` (str or None),
              ``input_tokens``, ``output_tokens`` (ints), ``cost_usd`` (float, USD);
            * ``gap``: ``gap`` (the :class:`Gap` appended);
            * ``rejected``: the record was refused: ``error`` (the :class:`FoldError`
              appended), ``kind``.

            Records that change only counters (unknown kinds, a stream part from a
            copy's source, a ``message`` without a session) give no step.
        seq: the record's seq.
        session: the session it applied to (the record's session when a string, else
            None).
        detail: the effect's facts, as listed above.
    """

    effect: str
    seq: int
    session: str | None
    detail: Mapping[str, Any]


#: Receives each :class:`Step` of an observed fold.
Observer = Callable[[Step], None]


class _Invalid(Exception):
    """Raised by a handler, before it changes anything, to reject its record."""


@dataclass(slots=True)
class _Record:
    """The fields of a record the handlers read, with ``meta`` and ``ts`` normalized."""

    seq: int
    session: Any
    data: Any
    meta: Mapping[str, Any]
    ts: str | None
    source: str | None = None
    observe: Observer | None = None


_Handler = Callable[[State, _Record], None]


# --------------------------------------------------------------------------- validation


def _session_id(rec: _Record) -> str:
    """The record's session id; rejects a missing or non-string one."""
    sid = rec.session
    if isinstance(sid, str):
        return sid
    if sid is None:
        raise _Invalid("record has no session")
    raise _Invalid(f"session is not a string ({type(sid).__name__})")


def _existing_session(state: State, rec: _Record) -> Session:
    sid = _session_id(rec)
    session = state.sessions.get(sid)
    if session is None:
        raise _Invalid(f"unknown session {sid!r}")
    return session


def _open_session(state: State, sid: str, rec: _Record) -> Session:
    """The session ``sid``, created on first sight; marks it touched by ``rec``."""
    session = state.sessions.get(sid)
    if session is None:
        session = Session(id=sid, first_seq=rec.seq, last_seq=rec.seq, last_ts=rec.ts)
        state.sessions[sid] = session
    else:
        session._touch(rec.seq, rec.ts)
    return session


def _params(rec: _Record) -> Mapping[str, Any]:
    """The record's ``data`` as a parameter object (None counts as no parameters)."""
    if isinstance(rec.data, Mapping):
        return rec.data
    if rec.data is None:
        return {}
    raise _Invalid(f"data is not an object ({type(rec.data).__name__})")


def _count(params: Mapping[str, Any], name: str, high: int) -> int:
    """Parameter ``name``: a message count in ``0..high``, default ``high``."""
    value = params.get(name)
    if value is None:
        return high
    if not _is_int(value):
        raise _Invalid(f"{name} is not an integer ({type(value).__name__})")
    if not 0 <= value <= high:
        # The value is not formatted: a huge int cannot always be turned into a str.
        raise _Invalid(f"{name} is out of range 0..{high}")
    return value


def _optional_str(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _Invalid(f"{name} is not a string ({type(value).__name__})")


def _required_str(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise _Invalid(f"{name} is missing")
    if not isinstance(value, str):
        raise _Invalid(f"{name} is not a string ({type(value).__name__})")
    return value


def message_id(record: Mapping[str, Any]) -> str:
    """The message id the fold gives a parsed record: ``meta.message_id`` when it is a
    string, else ``"seq:<seq>"`` (the rule of ``message`` records without an id).

    Args:
        record: a parsed log record.

    Returns:
        the id (never raises for a record with an int seq).
    """
    meta = record.get("meta")
    mid = meta.get("message_id") if isinstance(meta, Mapping) else None
    return mid if isinstance(mid, str) else f"seq:{record.get('seq')}"


def _message_id(rec: _Record, required: bool = True) -> str:
    """``meta.message_id``; when missing, rejected, or ``"seq:<seq>"`` if not required."""
    mid = rec.meta.get("message_id")
    if isinstance(mid, str):
        return mid
    if mid is None:
        if required:
            raise _Invalid("meta.message_id is missing")
        try:
            return f"seq:{rec.seq}"
        except ValueError:  # more digits than int -> str allows (sys.set_int_max_str_digits)
            raise _Invalid("seq is too large to name the message") from None
    raise _Invalid(f"meta.message_id is not a string ({type(mid).__name__})")


def _sender(rec: _Record) -> str | None:
    sender = rec.meta.get("sender")
    return sender if isinstance(sender, str) else None


# --------------------------------------------------------------------------- handlers


def _on_message(state: State, rec: _Record) -> None:
    """``message``: append to the session's visible list (once per message id)."""
    if rec.session is None:
        state.unsessioned += 1
        return
    sid = _session_id(rec)
    mid = _message_id(rec, required=False)
    session = _open_session(state, sid, rec)
    added = session._add(rec.seq, mid, _sender(rec))
    if rec.observe is not None:
        _observe_add(rec, sid, session, mid, added)


def _observe_add(rec: _Record, sid: str, session: Session, mid: str, added: bool) -> None:
    """Tell the observer that a message was appended (``added``) or counted as a copy."""
    assert rec.observe is not None
    if added:
        detail = {"message_id": mid, "sender": _sender(rec), "index": len(session.visible)}
        rec.observe(Step("message", rec.seq, sid, detail))
    else:
        rec.observe(Step("copy", rec.seq, sid, {"message_id": mid}))


def _on_delta(state: State, rec: _Record) -> None:
    """``message.delta``: open a stream (visible at once) or add a part to it."""
    sid = _session_id(rec)
    mid = _message_id(rec)
    session = _open_session(state, sid, rec)
    stream = state.streams.get((sid, mid))
    if stream is None:
        state.streams[(sid, mid)] = Stream(sid, mid, rec.seq, array("q", (rec.seq,)), source=rec.source)
        added = session._add(rec.seq, mid, _sender(rec))
        if rec.observe is not None:
            _observe_add(rec, sid, session, mid, added)
    elif stream.source is None or rec.source == stream.source:
        stream.delta_seqs.append(rec.seq)
        if rec.observe is not None:
            rec.observe(Step("stream.delta", rec.seq, sid, {"message_id": mid}))


def _on_end(state: State, rec: _Record) -> None:
    """``message.end``: complete the stream; with none open, a one-shot stream."""
    sid = _session_id(rec)
    mid = _message_id(rec)
    session = _open_session(state, sid, rec)
    stream = state.streams.get((sid, mid))
    if stream is None:
        state.streams[(sid, mid)] = Stream(sid, mid, rec.seq, array("q"), rec.seq, True, rec.source)
        added = session._add(rec.seq, mid, _sender(rec))
        if rec.observe is not None:
            _observe_add(rec, sid, session, mid, added)
    elif stream.complete:
        session._count_copy(mid)
        if rec.observe is not None:
            rec.observe(Step("copy", rec.seq, sid, {"message_id": mid}))
    else:
        stream.end_seq = rec.seq
        stream.complete = True
        if rec.observe is not None:
            rec.observe(Step("stream.end", rec.seq, sid, {"message_id": mid}))


def _on_start(state: State, rec: _Record) -> None:
    """``session.start``: create, or revive a deleted session; else only fill a title."""
    sid = _session_id(rec)
    title = _optional_str(rec.data, "title") if isinstance(rec.data, Mapping) else None
    created = sid not in state.sessions
    session = _open_session(state, sid, rec)
    revived = False
    if created:
        session.title = title
    else:
        revived = session.deleted_seq is not None
        session.deleted_seq = None
        if title is not None and session.title is None:
            session.title = title
    if rec.observe is not None:
        rec.observe(Step("start", rec.seq, sid, {"title": title, "created": created, "revived": revived}))


def _on_fork(state: State, rec: _Record) -> None:
    """``session.fork``: a new session sharing the parent's first N visible refs."""
    sid = _session_id(rec)
    if sid in state.sessions:
        raise _Invalid(f"session {sid!r} already exists")
    params = _params(rec)
    parent_id = _required_str(params, "parent")
    parent = state.sessions.get(parent_id)
    if parent is None:
        raise _Invalid(f"unknown parent session {parent_id!r}")
    if parent.deleted_seq is not None:
        raise _Invalid(f"parent session {parent_id!r} is deleted")
    n = _count(params, "at", len(parent.visible))
    branch = _optional_str(params, "name")
    visible = parent.visible[:n]
    speakers = list(parent.speakers)
    child = Session(
        id=sid,
        first_seq=rec.seq,
        last_seq=rec.seq,
        last_ts=rec.ts,
        parent=parent_id,
        fork_at=n,
        branch=branch,
        visible=visible,
        speakers=speakers,
        participants=sorted({speakers[i] for i in set(visible.senders) if i >= 0}),
    )
    state.sessions[sid] = child
    if rec.observe is not None:
        rec.observe(Step("fork", rec.seq, sid, {"parent": parent_id, "at": n, "branch": branch}))


def _on_rewind(state: State, rec: _Record) -> None:
    """``session.rewind``: truncate to N, or restore a checkpoint's exact list."""
    session = _existing_session(state, rec)
    params = _params(rec)
    to = params.get("to")
    name = params.get("checkpoint")
    if (to is None) == (name is None):
        raise _Invalid("rewind needs exactly one of 'to' and 'checkpoint'")
    old = session.visible
    from_count = len(old)
    if to is not None:
        n = _count(params, "to", from_count)
        dropped = tuple(old.seqs[n:])
        if session._keys is not None:
            session._keys.difference_update(old.keys[n:])
        old.truncate(n)
    else:
        name = _required_str(params, "checkpoint")
        checkpoint = session.checkpoints.get(name)
        if checkpoint is None:
            raise _Invalid(f"unknown checkpoint {name!r}")
        kept = set(checkpoint.refs.seqs)
        dropped = tuple(seq for seq in old.seqs if seq not in kept)
        session._set_visible(checkpoint.refs.copy())
    rewind = Rewind(rec.seq, from_count, len(session.visible), dropped)
    session.rewinds.append(rewind)
    session._touch(rec.seq, rec.ts)
    if rec.observe is not None:
        rec.observe(Step("rewind", rec.seq, session.id, {"rewind": rewind, "checkpoint": name}))


def _on_checkpoint(state: State, rec: _Record) -> None:
    """``session.checkpoint``: name the first N visible refs (a reused name overwrites)."""
    session = _existing_session(state, rec)
    params = _params(rec)
    name = _required_str(params, "name")
    n = _count(params, "at", len(session.visible))
    session.checkpoints[name] = SessionCheckpoint(rec.seq, session.visible[:n])
    session._touch(rec.seq, rec.ts)
    if rec.observe is not None:
        rec.observe(Step("checkpoint", rec.seq, session.id, {"name": name, "at": n}))


def _on_crystal(state: State, rec: _Record) -> None:
    """``session.crystal``: a summary (kept in the log) of the first N visible messages."""
    session = _existing_session(state, rec)
    params = _params(rec)
    summary = _required_str(params, "summary")
    n = _count(params, "upto", len(session.visible))
    last_ref_seq = session.visible.seqs[n - 1] if n else None
    crystal = Crystal(rec.seq, n, last_ref_seq)
    session.crystals.append(crystal)
    session._touch(rec.seq, rec.ts)
    if rec.observe is not None:
        rec.observe(Step("crystal", rec.seq, session.id, {"crystal": crystal, "summary": summary}))


def _on_delete(state: State, rec: _Record) -> None:
    """``session.delete``: tombstone (history kept); a repeated delete keeps the first."""
    session = _existing_session(state, rec)
    repeated = session.deleted_seq is not None
    if not repeated:
        session.deleted_seq = rec.seq
    session._touch(rec.seq, rec.ts)
    if rec.observe is not None:
        rec.observe(Step("delete", rec.seq, session.id, {"repeated": repeated}))


def _token_field(data: Mapping[str, Any], usage: Mapping[str, Any], names: tuple[str, ...]) -> int:
    """The first present token count among ``names`` in ``data`` then ``data.usage``."""
    for where in (data, usage):
        for name in names:
            value = where.get(name)
            if value is None:
                continue
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = int(value)
            if not _is_int(value):
                raise _Invalid(f"{name} is not a token count ({type(value).__name__})")
            if not 0 <= value <= _MAX_TOKENS:
                raise _Invalid(f"{name} is out of range 0..2**53")
            return value
    return 0


def _cost_field(data: Mapping[str, Any], usage: Mapping[str, Any]) -> float:
    for where in (data, usage):
        value = where.get("cost_usd")
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _Invalid(f"cost_usd is not a number ({type(value).__name__})")
        try:
            cost = float(value)
        except OverflowError:
            raise _Invalid("cost_usd is out of range") from None
        if not (math.isfinite(cost) and cost >= 0):
            raise _Invalid("cost_usd is not a finite non-negative number")
        return cost
    return 0.0


def _on_llm_request(state: State, rec: _Record) -> None:
    """``llm.request``: add tokens and cost to the session's and the state's usage."""
    sid = None if rec.session is None else _session_id(rec)
    data = rec.data
    if not isinstance(data, Mapping):
        raise _Invalid(f"data is not an object ({type(data).__name__})")
    usage = data.get("usage")
    if usage is None:
        usage = {}
    elif not isinstance(usage, Mapping):
        raise _Invalid(f"data.usage is not an object ({type(usage).__name__})")
    input_tokens = _token_field(data, usage, ("input_tokens", "prompt_tokens"))
    output_tokens = _token_field(data, usage, ("output_tokens", "completion_tokens"))
    cost = _cost_field(data, usage)
    model = _optional_str(data, "model")
    if model is None:
        model = _optional_str(usage, "model")
    total = state.usage
    if (
        total.input_tokens + input_tokens > _MAX_INT64
        or total.output_tokens + output_tokens > _MAX_INT64
        or not math.isfinite(total.cost_usd + cost)
    ):
        raise _Invalid("usage totals would overflow")
    # A session's usage is a part of the state's (costs are non-negative), so the
    # check above covers it too.
    total._add(input_tokens, output_tokens, cost, model)
    if sid is not None:
        _open_session(state, sid, rec).usage._add(input_tokens, output_tokens, cost, model)
    if rec.observe is not None:
        detail = {"model": model, "input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": cost}
        rec.observe(Step("llm.request", rec.seq, sid, detail))


def _on_gap(state: State, rec: _Record) -> None:
    """``recorder.gap``: publisher sequence numbers ``first..last`` are missing."""
    params = _params(rec)
    publisher = _optional_str(params, "publisher")
    first = params.get("first")
    last = params.get("last")
    if not (_is_int(first) and _is_int(last)):
        raise _Invalid("first and last must be integers")
    if not 0 <= first <= last <= _MAX_INT64:
        raise _Invalid("need 0 <= first <= last < 2**63")
    gap = Gap(rec.seq, publisher, first, last, rec.ts)
    state.gaps.append(gap)
    if rec.observe is not None:
        rec.observe(Step("gap", rec.seq, None, {"gap": gap}))


#: kind -> handler. Kinds not listed (``unknown``, ``raw``, other ``recorder.*``, ...)
#: are only counted.
_HANDLERS: dict[str, _Handler] = {
    "message": _on_message,
    "message.delta": _on_delta,
    "message.end": _on_end,
    "session.start": _on_start,
    "session.fork": _on_fork,
    "session.rewind": _on_rewind,
    "session.checkpoint": _on_checkpoint,
    "session.crystal": _on_crystal,
    "session.delete": _on_delete,
    "llm.request": _on_llm_request,
    "recorder.gap": _on_gap,
}
