"""The projections (``convlog.sessions``, ``messages``, ``crystals``, ``checkpoints``),
made by the core fold from the records of every log in the database.

A *family* is a session with its forks and theirs (a fork needs its parent's messages).
To project a session, its family is read back from ``convlog.records`` (every log's
records of those sessions, in receive-time order: ``ts``, then ``log_id``, then
``seq``), numbered 1..N in that order (the fold's seqs; each keeps its ``(log_id,
seq)``), and folded with :func:`convlog.core.fold.fold` into a
:class:`~convlog.core.fold.State`; the visible messages, their text and copies come
from the same replay code as the local readers (:class:`UnionReplay`). So a session
whose messages reached the database through two hosts' recorders is one session there,
each message once (the fold counts the other copies), exactly as one recorder hearing
both would have folded it.

:func:`project` takes the sessions marked in ``convlog.dirty`` (by
:func:`convlog.db.writer.write_batch`, in the transaction that wrote their records),
folds their families and replaces their projection rows, in one transaction under an
advisory lock (followers of several logs take turns). It is idempotent: projecting a
family again gives the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from convlog.core.fold import State, fold
from convlog.db.rows import parse_ts, pg_text
from convlog.store.replay import Replay

#: The advisory lock key projections are made under (pg_advisory_xact_lock).
PROJECTION_LOCK = 0x636F6E766C6F70  # "convlop"
#: Dirty sessions taken per projection transaction.
DIRTY_BATCH = 200

#: The columns of ``convlog.records`` a record is rebuilt from (:func:`row_record`).
RECORD_COLUMNS = "log_id::text, seq, ts_text, kind, source, topic, session, data, data_json, meta, extra_frames"
_RECORD_QUERY = f"""SELECT {RECORD_COLUMNS} FROM convlog.records WHERE session = ANY(%s)
                   ORDER BY ts, log_id, seq"""


@dataclass(slots=True)
class Union:
    """A family's records from every log, numbered 1..N, and their fold.

    Attributes:
        state: the fold of the records.
        records: record ``n`` (its ``seq`` field is ``n``) at index ``n - 1``.
        origin: ``(log_id, seq)`` of record ``n`` at index ``n - 1``.
        sessions: the sessions whose records were read.
    """

    state: State = field(default_factory=State)
    records: list[dict[str, Any]] = field(default_factory=list)
    origin: list[tuple[str, int]] = field(default_factory=list)
    sessions: set[str] = field(default_factory=set)


class UnionReplay(Replay):
    """A :class:`~convlog.store.replay.Replay` over a :class:`Union` (the readers' code
    for messages, text and copies, on records read from the database).

    Args:
        union: the family's records and fold.
        where: what names it in messages (the database URL without its password).
    """

    def __init__(self, union: Union, where: str) -> None:
        super().__init__(directory=Path(where), state=union.state)
        self.union = union

    def read(self, seqs: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The union's records with these seqs (its own numbering)."""
        records = self.union.records
        return {seq: records[seq - 1] for seq in seqs if 0 < seq <= len(records)}


def row_record(row: tuple[Any, ...], seq: int) -> dict[str, Any]:
    """A record rebuilt from a ``convlog.records`` row (:data:`RECORD_COLUMNS`), with
    ``seq`` as its seq: the fields the fold and the readers use, the payload from
    ``data`` or, when that is null, ``data_json``."""
    _log_id, _seq, ts, kind, source, topic, session, data, data_json, meta, extra_frames = row
    record: dict[str, Any] = {"seq": seq, "ts": ts, "kind": kind, "source": source, "topic": topic,
                              "session": session, "data": data if data is not None else data_json,
                              "meta": meta if meta is not None else {}}
    if extra_frames is not None:
        record["extra_frames"] = extra_frames
    return record


def read_union(conn: Any, sessions: Iterable[str]) -> Union:
    """Read and fold the families of ``sessions`` (see the module doc): the sessions
    named, the other members of their projected families, and every parent a fork
    names, until the set is closed.

    Args:
        conn: a psycopg connection.
        sessions: session ids.

    Returns:
        the :class:`Union`.

    Raises:
        psycopg.Error: when the database cannot be read.
    """
    members = {session for session in sessions if isinstance(session, str)}
    union = Union()
    while members:
        families = [row[0] for row in conn.execute(
            "SELECT DISTINCT family FROM convlog.sessions WHERE session = ANY(%s)", (sorted(members),))]
        if families:
            members |= {row[0] for row in conn.execute(
                "SELECT session FROM convlog.sessions WHERE family = ANY(%s)", (families,))}
        union = Union(sessions=set(members))
        state = union.state
        for number, row in enumerate(conn.execute(_RECORD_QUERY, (sorted(members),)), 1):
            record = row_record(row, number)
            union.records.append(record)
            union.origin.append((row[0], int(row[1])))
            fold(state, record)
        parents = {info.parent for info in state.sessions.values()
                   if isinstance(info.parent, str) and info.parent not in members}
        if not parents:
            break
        members |= parents
    return union


def _root(state: State, session: str) -> str:
    """The family a session belongs to: its first ancestor with no parent (itself for
    a session that is no fork)."""
    seen = {session}
    current = session
    while True:
        info = state.sessions.get(current)
        parent = info.parent if info is not None else None
        if not isinstance(parent, str) or parent in seen or parent not in state.sessions:
            return current
        seen.add(parent)
        current = parent


def projection_rows(union: Union, where: str = "database") -> dict[str, list[tuple[Any, ...]]]:
    """The projection rows of every session of a union. Pure but for the replay's reads
    of the union's own records.

    Returns:
        ``{"sessions": [...], "messages": [...], "crystals": [...], "checkpoints": [...]}``,
        rows in the tables' column order (docs/database.md).
    """
    state = union.state
    replay = UnionReplay(union, where)
    logs_of: dict[str, set[str]] = {}
    for record, (log_id, _seq) in zip(union.records, union.origin, strict=True):
        session = record.get("session")
        if isinstance(session, str):
            logs_of.setdefault(session, set()).add(log_id)
    out: dict[str, list[tuple[Any, ...]]] = {"sessions": [], "messages": [], "crystals": [], "checkpoints": []}
    for sid, info in state.sessions.items():
        messages = replay.messages(sid)
        first = union.records[info.first_seq - 1] if 0 < info.first_seq <= len(union.records) else {}
        usage = info.usage
        out["sessions"].append((
            pg_text(sid), pg_text(_root(state, sid)), pg_text(info.title), pg_text(info.branch),
            pg_text(info.parent), info.fork_at, len(messages), info.duplicates,
            [pg_text(name) for name in info.participants], parse_ts(first.get("ts")), parse_ts(info.last_ts),
            pg_text(info.last_ts), info.deleted_seq is not None, usage.requests, usage.input_tokens,
            usage.output_tokens, usage.cost_usd, orjson.dumps(usage.models).decode(),
            sorted(logs_of.get(sid, ())),
        ))
        for message in messages:
            log_id, seq = union.origin[message.seq - 1]
            out["messages"].append((
                pg_text(sid), message.index, log_id, seq, pg_text(message.message_id), pg_text(message.sender),
                pg_text(message.role), pg_text(message.text), parse_ts(message.ts), parse_ts(message.sent),
                message.copies,
            ))
        for position, crystal in enumerate(info.crystals, 1):
            log_id, seq = union.origin[crystal.seq - 1]
            data = union.records[crystal.seq - 1].get("data")
            summary = data.get("summary") if isinstance(data, dict) else None
            out["crystals"].append((pg_text(sid), position, log_id, seq, crystal.upto, pg_text(summary)))
        for name, checkpoint in info.checkpoints.items():
            log_id, seq = union.origin[checkpoint.seq - 1]
            out["checkpoints"].append((pg_text(sid), pg_text(name), log_id, seq, len(checkpoint.refs)))
    return out


_INSERTS = {
    "sessions": """INSERT INTO convlog.sessions (session, family, title, branch, parent, fork_at, messages, duplicates,
                       participants, first_ts, last_ts, last_ts_text, deleted, requests, input_tokens, output_tokens,
                       cost_usd, models, logs)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::uuid[])""",
    "crystals": "INSERT INTO convlog.crystals (session, position, log_id, seq, upto, summary) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
    "checkpoints": "INSERT INTO convlog.checkpoints (session, name, log_id, seq, at) VALUES (%s, %s, %s, %s, %s)",
}
_MESSAGE_COLUMNS = "session, position, log_id, seq, message_id, sender, role, text, received, sent, copies"


def write_projection(conn: Any, union: Union) -> int:
    """Replace the projection rows of every session of ``union`` (call inside a
    transaction).

    Returns:
        the number of sessions written.

    Raises:
        psycopg.Error: when the database cannot be written.
    """
    rows = projection_rows(union)
    ids = sorted({row[0] for row in rows["sessions"]} | {pg_text(s) for s in union.sessions})
    with conn.cursor() as cur:
        for table in ("messages", "crystals", "checkpoints", "sessions"):
            cur.execute(f"DELETE FROM convlog.{table} WHERE session = ANY(%s)", (ids,))
        if rows["sessions"]:
            cur.executemany(_INSERTS["sessions"], rows["sessions"])
        if rows["messages"]:
            with cur.copy(f"COPY convlog.messages ({_MESSAGE_COLUMNS}) FROM STDIN") as copy:
                for values in rows["messages"]:
                    copy.write_row(values)
        for table in ("crystals", "checkpoints"):
            if rows[table]:
                cur.executemany(_INSERTS[table], rows[table])
    return len(rows["sessions"])


def project(conn: Any, limit: int = DIRTY_BATCH) -> int:
    """Project the sessions marked dirty (up to ``limit`` of them, with their families)
    in one transaction under the projection lock.

    Args:
        conn: a psycopg connection (not in a transaction).
        limit: most dirty sessions taken at once.

    Returns:
        how many dirty sessions were taken (0: none left).

    Raises:
        psycopg.Error: when it fails (the sessions stay marked).
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PROJECTION_LOCK,))
        dirty = [row[0] for row in conn.execute(
            """DELETE FROM convlog.dirty WHERE session IN
                   (SELECT session FROM convlog.dirty ORDER BY session LIMIT %s FOR UPDATE SKIP LOCKED)
               RETURNING session""", (limit,))]
        if not dirty:
            return 0
        write_projection(conn, read_union(conn, dirty))
    return len(dirty)


def project_all(conn: Any) -> int:
    """:func:`project` until no session is marked dirty.

    Returns:
        how many were taken in all.
    """
    total = 0
    while True:
        taken = project(conn)
        if not taken:
            return total
        total += taken
