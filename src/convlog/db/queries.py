"""What the readers ask the database (``convlog sessions|show|search|export --db``).

Every query works on a read replica: nothing here writes. Sessions come from the
``convlog.sessions`` projection; a session's messages (``show``, ``export``) are folded
again from ``convlog.records`` with its family (:func:`convlog.db.projection.read_union`),
so they show exactly what the projection was made from; search uses PostgreSQL's full
text search on the search projection ``convlog.search`` (:mod:`convlog.db.search`;
``websearch_to_tsquery('simple', …)``: words,
``"a phrase"``, ``OR``, ``-word``), newest first, copies of one message (the same
session and message id, e.g. heard by two hosts' recorders) shown once with their count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from convlog.core.record import format_line
from convlog.db.projection import Union, read_union
from convlog.db.schema import DatabaseError, check_schema, first_line
from convlog.store.replay import UnknownSessionError
from convlog.store.search import MARK_END, MARK_START, SNIPPET_TOKENS, Hit
from convlog.store.segment import ensure_layout

#: ``sessions --sort`` orders as SQL (``recent``: newest activity first).
ORDERS = {
    "recent": "last_ts DESC NULLS LAST, session",
    "oldest": "last_ts ASC NULLS FIRST, session",
    "messages": "messages DESC, last_ts DESC NULLS LAST, session",
    "id": "session",
}


def connect_reader(url: str) -> Any:
    """A connection for reading (autocommit; JSON parsed with orjson), after checking
    the schema version.

    Raises:
        DatabaseError: when the database cannot be reached.
        SchemaError: when it has no convlog schema or another version of it.
    """
    import psycopg
    from psycopg.types.json import set_json_loads

    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot read the database: {first_line(exc)}") from None
    set_json_loads(orjson.loads, conn)
    try:
        check_schema(conn)
    except Exception:
        conn.close()
        raise
    return conn


def _log_filter(log: str | None, column: str = "logs") -> tuple[str, tuple[Any, ...]]:
    if log is None:
        return "", ()
    if column == "logs":
        return " AND EXISTS (SELECT 1 FROM unnest(logs) l WHERE l::text LIKE %s)", (f"{log}%",)
    return f" AND {column}::text LIKE %s", (f"{log}%",)


def resolve_session(conn: Any, name: str, log: str | None = None) -> str:
    """The session id ``name`` names: the id itself, else the only id starting with it.

    Raises:
        UnknownSessionError: when none or several match.
    """
    where, params = _log_filter(log)
    if conn.execute(f"SELECT 1 FROM convlog.sessions WHERE session = %s{where}", (name, *params)).fetchone():
        return name
    like = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    matches = [row[0] for row in conn.execute(
        f"SELECT session FROM convlog.sessions WHERE session LIKE %s{where} ORDER BY session LIMIT 6",
        (like, *params))]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UnknownSessionError(f"session {name!r} is ambiguous: {', '.join(matches[:5])}…")
    raise UnknownSessionError(f"no session {name!r} in the database")


def _like(text: str) -> str:
    """``%text%`` for ``ILIKE``, with its own ``%``, ``_`` and ``\\`` taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def session_rows(conn: Any, include_deleted: bool = False, order: str = "recent", limit: int | None = None,
                 log: str | None = None, *, text: str | None = None, agent: str | None = None,
                 model: str | None = None, since: str | None = None, offset: int = 0
                 ) -> tuple[list[dict[str, Any]], int]:
    """The sessions, as ``convlog sessions --json`` gives them for a log directory (id,
    branch, parent, fork_at, messages, duplicates, participants, last_activity, deleted)
    plus ``title``, ``logs`` (the log ids its records came from), ``first_activity`` and
    ``usage``; ``first_seq``/``last_seq`` are null (seqs are per log). The filters and
    the page are applied by the database (``convlog serve --db`` pages through 100k
    sessions without fetching them).

    Args:
        conn: a reader connection.
        include_deleted: also sessions with a tombstone.
        order: a key of :data:`ORDERS`.
        limit: at most this many (None or 0: all).
        log: only sessions with records from a log whose id starts with this.
        text: only sessions whose id, title, branch or a participant contains it (any case).
        agent: only sessions this participant took part in (any case).
        model: only sessions with a request to this model.
        since: only sessions active at or after this time (the records' RFC 3339 form,
            compared as written, as the log directory's listing does).
        offset: rows skipped before the first returned.

    Returns:
        ``(rows, total)``: the rows in order and how many sessions match in all.
    """
    where = "" if include_deleted else " AND NOT deleted"
    log_where, params = _log_filter(log)
    where += log_where
    if text:
        where += (" AND (session ILIKE %s OR title ILIKE %s OR branch ILIKE %s"
                  " OR EXISTS (SELECT 1 FROM unnest(participants) p WHERE p ILIKE %s))")
        params = (*params, *[_like(text)] * 4)
    if agent:
        where += " AND EXISTS (SELECT 1 FROM unnest(participants) p WHERE lower(p) = lower(%s))"
        params = (*params, agent)
    if model:
        where += " AND models ? %s"
        params = (*params, model)
    if since:
        where += " AND last_ts_text >= %s"
        params = (*params, since)
    total = conn.execute(f"SELECT count(*) FROM convlog.sessions WHERE true{where}", params).fetchone()[0]
    query = f"""SELECT session, branch, parent, fork_at, messages, duplicates, participants, last_ts_text,
                       deleted, title, logs::text[], first_ts, requests, input_tokens, output_tokens, cost_usd, models
                FROM convlog.sessions WHERE true{where} ORDER BY {ORDERS[order]}"""
    if limit:
        query += f" LIMIT {int(limit)}"
    if offset:
        query += f" OFFSET {int(offset)}"
    rows = []
    for (sid, branch, parent, fork_at, messages, duplicates, participants, last_ts, deleted, title, logs, first_ts,
         requests, input_tokens, output_tokens, cost_usd, models) in conn.execute(query, params):
        rows.append({
            "id": sid, "branch": branch, "parent": parent, "fork_at": fork_at, "messages": messages,
            "duplicates": duplicates, "participants": list(participants), "first_seq": None, "last_seq": None,
            "last_activity": last_ts, "deleted": deleted, "title": title, "logs": list(logs),
            "first_activity": first_ts.isoformat().replace("+00:00", "Z") if first_ts is not None else None,
            "usage": {"requests": requests, "input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cost_usd": cost_usd, "models": models},
        })
    return rows, int(total)


def union_of(conn: Any, sessions: Iterable[str]) -> Union:
    """The families of ``sessions`` folded from the database (for show and export)."""
    return read_union(conn, sessions)


def all_sessions(conn: Any, include_deleted: bool = False, log: str | None = None) -> list[str]:
    """Every session id (live ones unless ``include_deleted``), by id."""
    where = "" if include_deleted else " AND NOT deleted"
    log_where, params = _log_filter(log)
    return [row[0] for row in conn.execute(
        f"SELECT session FROM convlog.sessions WHERE true{where}{log_where} ORDER BY session", params)]


def write_union_log(union: Union, directory: Path) -> None:
    """Write a union's records as a log directory (seqs 1..N in the union's order, each
    with ``meta.origin``: ``{"log_id", "seq"}`` of the record it copies), so the local
    readers (export) run on it unchanged.

    Raises:
        OSError: when it cannot be written.
    """
    from convlog.store.writer import SegmentWriter

    ensure_layout(directory)
    writer = SegmentWriter(directory, next_seq=1, fsync="never", chain=False)
    try:
        for record, (log_id, seq) in zip(union.records, union.origin, strict=True):
            head = {key: record.get(key) for key in ("seq", "ts", "kind", "source", "topic", "session")}
            meta = dict(record.get("meta") or {})
            meta["origin"] = {"log_id": log_id, "seq": seq}
            line = format_line(head, orjson.dumps(record.get("data")), meta, record.get("extra_frames"))
            writer.write(line, record["seq"])
    finally:
        writer.close()


@dataclass(frozen=True, slots=True)
class DbHit(Hit):
    """A search hit from the database: a :class:`~convlog.store.search.Hit` whose ``seq``
    is the record's in its log, with that log's id."""

    log_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        """:meth:`Hit.as_dict` with ``log_id``."""
        return {**Hit.as_dict(self), "log_id": self.log_id}


def search(conn: Any, text: str, session: str | None = None, speaker: str | None = None, kind: str | None = None,
           since: str | None = None, until: str | None = None, limit: int = 20, log: str | None = None
           ) -> list[DbHit]:
    """Full-text search of the records (see the module doc).

    Args:
        conn: a reader connection.
        text: the query (``websearch_to_tsquery`` syntax).
        session, speaker, kind: only records of this session, sender or role (any
            case), kind.
        since, until: only records received at or after / at or before (RFC 3339).
        limit: at most this many hits (copies of one message count once).
        log: only records of a log whose id starts with this.

    Returns:
        the hits, newest first.
    """
    where = ["s.search @@ q"]
    params: list[Any] = []
    for clause, value in (("r.session = %s", session),
                          ("lower(coalesce(r.meta->>'sender', r.meta->>'role', '')) = lower(%s)", speaker),
                          ("r.kind = %s", kind), ("r.ts >= %s::timestamptz", since),
                          ("r.ts <= %s::timestamptz", until),
                          ("r.log_id::text LIKE %s", None if log is None else f"{log}%")):
        if value is not None:
            where.append(clause)
            params.append(value)
    options = f"StartSel={MARK_START}, StopSel={MARK_END}, MaxWords={SNIPPET_TOKENS}, MinWords=8, MaxFragments=2"
    query = f"""SELECT r.log_id::text, r.seq, r.ts_text, r.session, coalesce(r.meta->>'sender', r.meta->>'role'),
                       r.kind, ts_headline('simple', s.text, q, %s), r.source, r.meta->>'message_id'
                FROM convlog.search s JOIN convlog.records r USING (log_id, seq),
                     websearch_to_tsquery('simple', %s) q
                WHERE {' AND '.join(where)}
                ORDER BY r.ts DESC, r.log_id, r.seq DESC
                LIMIT %s"""
    found: dict[Any, list[Any]] = {}
    for row in conn.execute(query, (options, text, *params, limit * 4)):
        log_id, seq, ts, sid, who, kind_, snippet, source, message_id = row
        key = (sid, message_id) if message_id else (log_id, seq)
        if key in found:
            found[key][1] += 1
            continue
        if len(found) >= limit:
            continue
        found[key] = [DbHit(seq=seq, ts=ts, session=sid, speaker=who, kind=kind_, snippet=" ".join(snippet.split()),
                            source=source, log_id=log_id), 1]
    return [hit if count == 1 else _with_copies(hit, count) for hit, count in found.values()]


def _with_copies(hit: DbHit, copies: int) -> DbHit:
    from dataclasses import replace

    return replace(hit, copies=copies)


def session_facets(conn: Any, include_deleted: bool = False) -> tuple[list[str], list[str]]:
    """Every participant and every model of the sessions (the filters' choices), each
    sorted (participants case-insensitively)."""
    where = "" if include_deleted else " WHERE NOT deleted"
    agents = [row[0] for row in conn.execute(
        f"SELECT DISTINCT p FROM convlog.sessions, unnest(participants) p{where}")]
    models = [row[0] for row in conn.execute(
        f"SELECT DISTINCT m FROM convlog.sessions, jsonb_object_keys(models) m{where}")]
    return sorted(agents, key=str.casefold), sorted(models)
