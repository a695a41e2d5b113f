"""The pure decisions of ``convlog purge`` (the right to erasure): which records a purge
takes, what a purged record keeps, what a purge leaves of a salvaged line in
quarantine and of a folded state, and the ``session.purged`` record's data. No I/O;
the shell that rewrites the files is :mod:`convlog.store.purge`.

A purged record is the original line cut down to what keeps the log gapless and
verifiable (docs/log-format.md, "Purge")::

    {"seq": 42, "ts": "2026-11-21T12:00:00.000001Z", "kind": "message", "source": "sub",
     "topic": null, "session": "s1", "data": null,
     "meta": {"purged": true, "bytes": 1234, "sha256": "<the original payload's>"}}

``seq``, ``ts``, ``kind``, ``source`` and ``session`` stay as they were, and so do
``meta.sha256``, ``meta.stored_sha256`` and ``meta.bytes`` when the record had them (the
digests of the payload as received and as stored, and its size; a record written by
convlog itself, a control record, has none), and its ``chain`` link, with
``meta.body_sha256``, the digest of what it lost (:mod:`convlog.core.chain`), so the
hash chain through the log still verifies.
``data``, ``topic``, ``extra_frames`` and every other ``meta`` field (sender, role,
message id, encoding, enrichment fields and tags, ``lf``, ...) are gone. The fold
treats a purged record as carrying nothing (:func:`convlog.core.fold.fold`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from convlog.core.chain import BODY_DIGEST, CHAIN, body_digest, kept_meta
from convlog.core.fold import Refs, Session, SessionCheckpoint, State
from convlog.core.record import IMPORT_SOURCE, PURGED_KIND, dump_json, is_purged
from convlog.core.view import own_time

__all__ = [
    "purged_data",
    "purged_line",
    "record_time",
    "redact_quarantine_entry",
    "selects",
    "without_session",
]

_TS_IN_LINE = re.compile(rb'"ts":"([^"\\]*)"')


def record_time(record: Mapping[str, Any]) -> str | None:
    """The time ``--before`` compares a record by: its own time when it was imported and
    carries one (:func:`convlog.core.view.own_time`, the rule of ``--as-of``), else its
    receive time ``ts``.

    Args:
        record: a parsed record.

    Returns:
        RFC 3339 text in the records' form, or None when the record has no string ``ts``.
    """
    if record.get("source") == IMPORT_SOURCE:
        own = own_time(dict(record))
        if own is not None:
            return own
    ts = record.get("ts")
    return ts if isinstance(ts, str) else None


def selects(record: Mapping[str, Any], session: str, before: str | None, upto_seq: int | None = None) -> bool:
    """Whether a purge of ``session`` takes ``record``.

    Taken: a record whose ``session`` is exactly ``session``, not purged already, not a
    ``session.purged`` record (what earlier purges removed stays said), at or below
    ``upto_seq``, and, with ``before``, whose :func:`record_time` is earlier than it (a
    record with no time is taken: erasure wins over doubt).

    Args:
        record: a parsed record.
        session: the session id.
        before: RFC 3339 text in the records' form (``2026-11-21T12:00:00.000000Z``), or
            None for every record of the session.
        upto_seq: the last seq the purge covers (records written after it started are
            not its business), or None for no limit.

    Returns:
        True when the record is to be purged.
    """
    if record.get("session") != session or record.get("kind") == PURGED_KIND or is_purged(record):
        return False
    seq = record.get("seq")
    if upto_seq is not None and (not isinstance(seq, int) or seq > upto_seq):
        return False
    if before is None:
        return True
    when = record_time(record)
    return when is None or when < before


def purged_line(record: Mapping[str, Any], line: bytes | None = None) -> bytes:
    """The line a purged record is written as (see the module doc).

    Args:
        record: the parsed original record (``seq`` an int, ``kind`` a str, as
            :func:`convlog.core.record.parse_line` guarantees).
        line: the original's line as in the log; needed when it carries a ``chain``
            (the digest of its body is taken from it, :func:`convlog.core.chain.body_digest`).

    Returns:
        one JSONL line, newline-terminated.

    Raises:
        ValueError: for a record with a chain and no line.
    """
    meta: dict[str, Any] = {"purged": True, **kept_meta(record.get("meta"))}
    chain = record.get(CHAIN)
    if isinstance(chain, str):
        if line is None:
            raise ValueError("a record with a chain is purged from its line")
        meta[BODY_DIGEST] = body_digest(line, record)
    line: dict[str, Any] = {
        "seq": record["seq"],
        "ts": record.get("ts"),
        "kind": record["kind"],
        "source": record.get("source"),
        "topic": None,
        "session": record.get("session"),
        "data": None,
        "meta": meta,
    }
    if isinstance(chain, str):
        line[CHAIN] = chain
    return dump_json(line, option=orjson.OPT_APPEND_NEWLINE)


def redact_quarantine_entry(entry: Mapping[str, Any], salvaged: bytes, session: str,
                            before: str | None) -> dict[str, Any] | None:
    """What a purge of ``session`` leaves of one ``recovery/quarantine.jsonl`` entry.

    A salvaged line belongs to the session when its bytes hold the session's field as
    a record line writes it (``"session":"<id>"``, which comes before ``data`` in every
    line, so a torn line that holds any of the payload holds it too). With ``before``,
    an entry whose line carries a ``"ts"`` at or after it is kept.

    Args:
        entry: the parsed entry (``ts``, ``segment``, ``offset``, ``reason``, ``bytes``,
            ``text`` or ``base64``).
        salvaged: its decoded bytes.
        session: the session id.
        before: as for :func:`selects`.

    Returns:
        the redacted entry, its bytes gone (``"text": ""``, ``"bytes": 0``) and
        ``"purged": {"session", "bytes"}`` saying what was removed; or None when the
        entry is not the session's (it stays as it is).
    """
    field = b'"session":' + orjson.dumps(session)
    if field not in salvaged:
        return None
    if before is not None:
        found = _TS_IN_LINE.search(salvaged)
        if found is not None and found.group(1).decode("utf-8", "replace") >= before:
            return None
    kept = {key: entry[key] for key in ("ts", "segment", "offset", "reason") if key in entry}
    return {**kept, "bytes": 0, "text": "", "purged": {"session": session, "bytes": len(salvaged)}}


def without_session(state: State, session: str) -> bool:
    """Remove a session from a folded state, for a checkpoint that cannot be folded again
    (``base.json``): the session, its streams and the fold errors naming it go, its usage
    is taken out of the totals, and its messages leave every other session's lists (a
    fork's inherited history, its session checkpoints, its speakers); a direct fork of it
    loses its parent, as folding the purged log makes it a session of its own.

    Args:
        state: the state (mutated).
        session: the session id.

    Returns:
        True when the state held anything of the session.
    """
    removed = state.sessions.pop(session, None)
    streams = [key for key in state.streams if key[0] == session]
    for key in streams:
        del state.streams[key]
    errors = [error for error in state.errors if error.session != session]
    changed = removed is not None or bool(streams) or len(errors) != len(state.errors)
    state.errors = errors
    if removed is None:
        return changed
    usage, total = removed.usage, state.usage
    total.requests -= usage.requests
    total.input_tokens -= usage.input_tokens
    total.output_tokens -= usage.output_tokens
    total.cost_usd = max(0.0, total.cost_usd - usage.cost_usd)
    for model, count in usage.models.items():
        left = total.models.get(model, 0) - count
        if left > 0:
            total.models[model] = left
        else:
            total.models.pop(model, None)
    seqs = {*removed.visible.seqs, *(seq for cp in removed.checkpoints.values() for seq in cp.refs.seqs),
            *(seq for rewind in removed.rewinds for seq in rewind.dropped)}
    for other in state.sessions.values():
        if other.parent == session:
            other.parent = other.fork_at = other.branch = None
        _drop_messages(other, seqs)
    return True


def _drop_messages(session: Session, seqs: set[int]) -> None:
    """Take the messages brought by records ``seqs`` out of a session's lists, and the
    speakers only those messages had out of its speakers and participants."""
    lists = [session.visible, *(cp.refs for cp in session.checkpoints.values())]
    dropped: set[int] = set()
    kept: set[int] = set()
    for refs in lists:
        for seq, sender in zip(refs.seqs, refs.senders, strict=True):
            (dropped if seq in seqs else kept).add(sender)
    if not dropped:
        return
    gone = {session.speakers[i] for i in dropped - kept if i >= 0}
    index = {i: n for n, i in enumerate(i for i, name in enumerate(session.speakers) if name not in gone)}

    def keep(refs: Refs) -> Refs:
        out = Refs()
        for seq, key, sender in zip(refs.seqs, refs.keys, refs.senders, strict=True):
            if seq not in seqs:
                out.append(seq, key, index.get(sender, -1))
        return out

    session._set_visible(keep(session.visible))
    session.checkpoints = {name: SessionCheckpoint(cp.seq, keep(cp.refs)) for name, cp in session.checkpoints.items()}
    session.speakers = [name for name in session.speakers if name not in gone]
    session._speaker_index = None
    session.participants = [name for name in session.participants if name not in gone]


def purged_data(
    session: str,
    before: str | None,
    records: int,
    first_seq: int | None,
    last_seq: int | None,
    upto_seq: int,
    started: str,
    uid: int,
    user: str | None,
    purge_id: str,
) -> dict[str, Any]:
    """The ``data`` of the ``session.purged`` record a purge ends with.

    Args:
        session: the session purged.
        before: the ``--before`` time (RFC 3339), or None for all its records.
        records: how many records were purged.
        first_seq, last_seq: the seqs of the first and last of them (None when none).
        upto_seq: the last seq the purge covered.
        started: when the purge started (RFC 3339).
        uid: the user id that ran it (``os.getuid()``).
        user: that user's name, or None when unknown.
        purge_id: the purge's id (``recovery/purge.json``), so a purge run again after
            an interruption writes its record once.

    Returns:
        ``{"session", "before", "records", "first_seq", "last_seq", "upto_seq",
        "started", "uid", "user", "purge_id"}``.
    """
    return {
        "session": session,
        "before": before,
        "records": records,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "upto_seq": upto_seq,
        "started": started,
        "uid": uid,
        "user": user,
        "purge_id": purge_id,
    }
