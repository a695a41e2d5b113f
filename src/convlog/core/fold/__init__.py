"""Fold log records into conversation state (docs/fold.md).

Pure code: no I/O, no clock, no randomness, no logging. The state after a
sequence of records depends only on those records (and the state folded into).

    state = fold_all(records)            # or: state = fold(state, record), one at a time
    state.visible("s1")                  # -> [seq, ...]
    crystal, refs = state.resume_refs("s1")
    fold_all(records, observe=steps.append)   # also tell each applied Step (history views)

The state refers to records by ``seq`` only; message bodies, ids, roles, deltas and
crystal summaries stay in the log and are read from it when shown. A session keeps
20 bytes a visible message (:class:`Refs`: seq, a 64-bit key of the message id for
recognising copies, a sender index), so the state stays small while the log grows.

Records are dicts as parsed from one log line (:func:`convlog.core.record.parse_line`).
Each ``kind`` has a handler in a dispatch table (:data:`_HANDLERS`). A handler
first validates, then mutates; a record it rejects (bad parameter, unknown
session, count out of range, unknown checkpoint, ...) leaves the state
unchanged except for the record counters and one :class:`FoldError` appended to
``State.errors``. :func:`fold` never raises for a dict with an ``int`` seq and a
``str`` kind, whatever its other fields hold.

Counts (``at``, ``to``, ``upto``) are message counts: ``N`` means "the first N
visible messages", ``0 <= N <= len(visible)``; booleans are not counts.

Rules by kind (parameters are read from ``data``; ids from ``meta``):

* ``message``: appended to its session (created on first sight); no session ->
  counted in ``State.unsessioned``. ``meta.message_id`` must be a string (missing:
  ``"seq:<seq>"``); a non-string ``sender``/``role`` is read as None.
* ``message.delta`` / ``message.end``: need a session and ``meta.message_id``.
  The first delta opens a :class:`Stream` and makes it visible; an end completes
  it; an end with no stream is a one-shot stream; a second end counts as a copy.
  Deltas that arrive through another ``source`` than the stream's first record (the
  bus copy and the PUSHed copy of one stream) belong to a copy and are not added.
* Copies of a message id already visible in the session are not appended again;
  ``Session.copies`` / ``Session.duplicates`` count them.
* ``session.start`` creates a session, revives a deleted one, and fills in
  ``title`` when the session has none; otherwise it only touches the session.
* ``session.fork`` / ``rewind`` / ``checkpoint`` / ``crystal`` / ``delete``: see
  their handlers. Rewind, checkpoint and crystal also apply to a deleted session;
  a fork cannot start from one. A repeated delete keeps the first tombstone.
* ``llm.request``: creates its session on first sight (so its usage is kept).
  Token counts are integers in ``0..2**53`` (integral floats accepted); ``cost_usd``
  a finite number >= 0. Top-level fields win over ``data.usage`` ones.
* ``recorder.gap``: ``publisher`` (str or None), ``0 <= first <= last < 2**63``.
* Any other kind is only counted, and so is a purged record of any kind
  (``meta.purged: true``, left by ``convlog purge``): it carries nothing, so folding a
  log with a session purged gives the state of the log without that session's records
  (a fork of a purged session is then refused: its parent is unknown).

Modules: :mod:`.values` (:class:`Refs` and the immutable records of what happened),
:mod:`.state` (:class:`State`, :class:`Session`, :class:`Stream`, :class:`Usage`, :class:`Tally`),
:mod:`.rules` (the handlers, one per kind, and :class:`Step`); this module folds.
Import the names from ``convlog.core.fold``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from convlog.core.fold.rules import _HANDLERS, Observer, Step, _Invalid, _Record, message_id
from convlog.core.fold.state import FORMAT_VERSION, Session, State, Stream, Tally, Usage
from convlog.core.fold.values import Crystal, FoldError, Gap, Refs, Rewind, SessionCheckpoint, message_key

__all__ = [
    "FORMAT_VERSION",
    "Crystal",
    "FoldError",
    "Gap",
    "Observer",
    "Refs",
    "Rewind",
    "Session",
    "SessionCheckpoint",
    "State",
    "Step",
    "Stream",
    "Tally",
    "Usage",
    "fold",
    "fold_all",
    "message_id",
    "message_key",
]


def fold(state: State, record: Mapping[str, Any], observe: Observer | None = None) -> State:
    """Apply one record to ``state``.

    The state is updated **in place** and returned: the caller owns it linearly. Keep
    a snapshot with ``state.copy()`` (or ``to_dict()``) before folding further.

    A record whose seq is ``<= state.last_seq`` is ignored entirely (replaying a log
    over a checkpoint, or the same record twice, is idempotent). Otherwise
    ``last_seq``, ``chain``, ``records``, ``kinds`` and the ``tally`` are updated for every kind,
    and the kind's handler, if any, applies it; a purged record (``meta.purged: true``)
    goes to no handler. A record the handler rejects changes nothing else but appends a
    :class:`FoldError` to ``state.errors``.

    Args:
        state: the state to fold into (mutated).
        record: a parsed log record: ``seq`` (int), ``kind`` (str), and optionally
            ``ts``, ``session``, ``data``, ``meta`` of any type.
        observe: called with each :class:`Step` the record makes (none or one),
            right after the state changed; None (the default) builds no steps.

    Returns:
        ``state``.

    Raises:
        ValueError: only when ``record`` is not a mapping with an ``int`` seq (not a
            bool) and a ``str`` kind; never for anything else in the record.
    """
    if not isinstance(record, Mapping):
        raise ValueError("record is not a mapping")
    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise ValueError("record has no integer seq")
    kind = record.get("kind")
    if not isinstance(kind, str):
        raise ValueError("record has no string kind")
    if seq <= state.last_seq:
        return state
    state.last_seq = seq
    chain = record.get("chain")
    state.chain = chain if chain.__class__ is str else None
    state.records += 1
    state.kinds[kind] = state.kinds.get(kind, 0) + 1
    if state.tally is not None:
        state.tally.add(record, kind)
    handler = _HANDLERS.get(kind)
    if handler is None:
        return state
    meta = record.get("meta")
    if isinstance(meta, Mapping) and meta.get("purged") is True:
        return state  # a purged record carries nothing (convlog purge): counted only
    ts = record.get("ts")
    rec = _Record(
        seq=seq,
        session=record.get("session"),
        data=record.get("data"),
        meta=meta if isinstance(meta, Mapping) else {},
        ts=ts if isinstance(ts, str) else None,
        source=source if isinstance(source := record.get("source"), str) else None,
        observe=observe,
    )
    try:
        handler(state, rec)
    except _Invalid as exc:
        session = rec.session if isinstance(rec.session, str) else None
        error = FoldError(seq, kind, session, str(exc))
        state.errors.append(error)
        if observe is not None:
            observe(Step("rejected", seq, session, {"error": error, "kind": kind}))
    return state


def fold_all(
    records: Iterable[Mapping[str, Any]], state: State | None = None, observe: Observer | None = None
) -> State:
    """Fold every record, in order, into ``state`` (a new :class:`State` when None).

    Args:
        records: parsed log records (see :func:`fold`).
        state: the state to continue from; it is mutated in place.
        observe: receives every :class:`Step` (see :func:`fold`); None builds none.

    Returns:
        the folded state (``state`` itself when one was given).

    Raises:
        ValueError: as :func:`fold`.
    """
    if state is None:
        state = State()
    for record in records:
        fold(state, record, observe)
    return state
