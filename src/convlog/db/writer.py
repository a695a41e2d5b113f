"""Writing synced records into the database exactly once.

Each batch is one transaction (:func:`write_batch`): the log's position row is locked
(``SELECT … FOR UPDATE``, so two followers of one log take turns), the records are
copied into a temporary staging table (``COPY … FROM STDIN``, psycopg 3's
``Cursor.copy``) and moved with ``INSERT … ON CONFLICT (log_id, seq) DO NOTHING``; the
sessions they name are marked for projection, their ``llm.request`` and ``recorder.gap``
rows written, what a ``session.purged`` record says applied to rows already written
(:func:`apply_purge`), and the position moved past the batch, all in the same
transaction. A
crash anywhere (of the follower, the recorder or the database) leaves either all of it
or none, and the follower resumes from the position the database holds: every record
ends up in the database once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from convlog.db.rows import COLUMNS, pg_text

_STAGING = "convlog_staging"
_COLUMN_TYPES = {
    "log_id": "uuid", "seq": "bigint", "ts": "timestamptz", "ts_text": "text", "kind": "text", "source": "text",
    "topic": "text", "session": "text", "data": "jsonb", "data_json": "json", "meta": "jsonb",
    "extra_frames": "jsonb", "chain": "text",
}
_COLUMN_LIST = ", ".join(COLUMNS)


@dataclass(frozen=True, slots=True)
class Position:
    """What the database acknowledged for one log.

    Attributes:
        seq: the last record written (0: none).
        segment: the segment to read next from (its key, the plain name).
        offset: the byte offset in it, just after the last record written.
        records: records written so far.
    """

    seq: int
    segment: str
    offset: int
    records: int = 0


@dataclass(slots=True)
class Batch:
    """One batch of records of one log to write.

    Attributes:
        rows: ``convlog.records`` rows (:func:`convlog.db.rows.record_row`), in seq order.
        sessions: the sessions they name (to project).
        llm_requests: ``(seq, ts, session, model, input_tokens, output_tokens, cost_usd)``.
        gaps: ``(seq, ts, publisher, first_missing, last_missing)``.
        position: where the log is read next after the batch (its last record's seq,
            segment and offset).
        log_seq: the log's last seq as the follower last saw it (for the lag).
        purges: ``(session, before, upto_seq)`` of each ``session.purged`` record in
            the batch (:func:`apply_purge`).
    """

    rows: list[tuple[Any, ...]]
    sessions: set[str]
    llm_requests: list[tuple[Any, ...]]
    gaps: list[tuple[Any, ...]]
    position: Position
    log_seq: int | None = None
    purges: list[tuple[str, str | None, int | None]] = field(default_factory=list)


def register_log(conn: Any, log_id: str, host: str, directory: str) -> Position | None:
    """Record that this log is synced from ``host:directory`` and return what the
    database acknowledged for it.

    Args:
        conn: a psycopg connection (not in a transaction).
        log_id: the log's id (``DIR/log_id``).
        host, directory: where it is being synced from now.

    Returns:
        its :class:`Position`, or None when nothing of it was written yet.

    Raises:
        psycopg.Error: when the database cannot be written.
    """
    with conn.transaction():
        conn.execute("""INSERT INTO convlog.logs (log_id, host, directory) VALUES (%s, %s, %s)
                        ON CONFLICT (log_id) DO UPDATE SET host = excluded.host, directory = excluded.directory,
                                                           last_synced = now()""",
                     (log_id, pg_text(host), pg_text(directory)))
        row = conn.execute('SELECT seq, segment, "offset", records FROM convlog.positions WHERE log_id = %s',
                           (log_id,)).fetchone()
    return Position(int(row[0]), row[1], int(row[2]), int(row[3])) if row is not None else None


def mark_dirty(cur: Any, sessions: set[str]) -> None:
    """Mark ``sessions`` for projection (``convlog.dirty``), inside the transaction that
    changed their records.

    ``ON CONFLICT … DO UPDATE``, not ``DO NOTHING``: it locks a session already marked,
    so a projection taking the dirty sessions meanwhile (``FOR UPDATE SKIP LOCKED``,
    :func:`convlog.db.projection.project`) leaves it marked for after this commit,
    instead of projecting it without these records and unmarking it.

    Args:
        cur: a psycopg cursor in the transaction.
        sessions: session ids (none: nothing is done).
    """
    if sessions:
        cur.executemany("INSERT INTO convlog.dirty (session) VALUES (%s) "
                        "ON CONFLICT (session) DO UPDATE SET session = excluded.session",
                        [(pg_text(session),) for session in sorted(sessions)])


def write_batch(conn: Any, log_id: str, batch: Batch) -> int:
    """Write one batch exactly once (see the module doc).

    Args:
        conn: a psycopg connection (not in a transaction).
        log_id: the log's id (registered with :func:`register_log`).
        batch: the records and the position after them.

    Returns:
        how many records were new to the database (0 when another follower wrote them
        first: the position is then left as that one set it).

    Raises:
        psycopg.Error: when the transaction fails (nothing of the batch stays).
    """
    last_seq = batch.position.seq
    with conn.transaction():
        row = conn.execute("SELECT seq FROM convlog.positions WHERE log_id = %s FOR UPDATE", (log_id,)).fetchone()
        if row is not None and int(row[0]) >= last_seq:
            return 0
        conn.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} ("
                     + ", ".join(f"{name} {_COLUMN_TYPES[name]}" for name in COLUMNS)
                     + ") ON COMMIT DELETE ROWS")
        with conn.cursor() as cur:
            with cur.copy(f"COPY {_STAGING} ({_COLUMN_LIST}) FROM STDIN") as copy:
                for values in batch.rows:
                    copy.write_row(values)
            cur.execute(f"INSERT INTO convlog.records ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {_STAGING} "
                        "ORDER BY seq ON CONFLICT (log_id, seq) DO NOTHING")
            inserted = cur.rowcount
            mark_dirty(cur, batch.sessions)
            if batch.llm_requests:
                cur.executemany("""INSERT INTO convlog.llm_requests
                                     (log_id, seq, ts, session, model, input_tokens, output_tokens, cost_usd)
                                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                                [(log_id, *values) for values in batch.llm_requests])
            if batch.gaps:
                cur.executemany("""INSERT INTO convlog.gaps
                                     (log_id, seq, ts, publisher, first_missing, last_missing)
                                   VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                                [(log_id, *values) for values in batch.gaps])
            for session, before, upto_seq in batch.purges:
                apply_purge(conn, log_id, session, before, upto_seq)
            position = batch.position
            last_ts = batch.rows[-1][2] if batch.rows else None
            cur.execute("""INSERT INTO convlog.positions
                             (log_id, seq, segment, "offset", last_ts, log_seq, records, updated)
                           VALUES (%s, %s, %s, %s, %s, %s, %s, now())
                           ON CONFLICT (log_id) DO UPDATE SET
                             seq = excluded.seq, segment = excluded.segment, "offset" = excluded."offset",
                             last_ts = coalesce(excluded.last_ts, convlog.positions.last_ts),
                             log_seq = excluded.log_seq,
                             records = convlog.positions.records + excluded.records, updated = now()""",
                        (log_id, last_seq, position.segment, position.offset, last_ts, batch.log_seq,
                         inserted))
    return inserted


def apply_purge(conn: Any, log_id: str, session: str, before: str | None, upto_seq: int | None) -> int:
    """Do in the database what ``convlog purge`` did to the log (call inside the batch's
    transaction, when its ``session.purged`` record is written).

    A purge rewrites records the sync may have written already (their seqs stay, so
    they are not read again). So this log's rows of ``session`` that the purge takes
    (:func:`convlog.core.purge.selects`, on the record as the database holds it) lose
    what the purged line loses: ``data``, ``data_json``, ``topic`` and
    ``extra_frames`` become null, ``meta`` keeps only ``purged: true`` and the digests
    and size (:func:`convlog.core.chain.kept_meta`; the chain column stays). Their search
    rows go, and the session is marked for projection (the fold treats a purged record
    as carrying nothing). Other logs' copies of the session (another host's recorder
    heard it too) are theirs: purge each host's log. A purge applied twice changes
    nothing the second time.

    Args:
        conn: a psycopg connection in a transaction.
        log_id: the log the purge ran on.
        session, before, upto_seq: the ``session.purged`` record's (``before``: RFC 3339
            or None for all; ``upto_seq``: the last seq it covered, or None).

    Returns:
        how many rows were purged.

    Raises:
        psycopg.Error: when the database fails (the transaction fails with it).
    """
    from convlog.core.chain import kept_meta
    from convlog.core.purge import selects
    from convlog.db.projection import RECORD_COLUMNS, row_record
    from convlog.db.rows import jsonb_text

    query = f"SELECT {RECORD_COLUMNS} FROM convlog.records WHERE log_id = %s AND session = %s"
    params: list[Any] = [log_id, pg_text(session)]
    if upto_seq is not None:
        query += " AND seq <= %s"
        params.append(upto_seq)
    taken = []
    for row in conn.execute(query, params).fetchall():
        record = row_record(row, int(row[1]))
        if selects(record, session, before, upto_seq):
            taken.append((jsonb_text({"purged": True, **kept_meta(record.get("meta"))}), log_id, int(row[1])))
    if not taken:
        return 0
    with conn.cursor() as cur:
        cur.executemany("""UPDATE convlog.records SET data = NULL, data_json = NULL, topic = NULL,
                                  extra_frames = NULL, meta = %s::jsonb
                           WHERE log_id = %s AND seq = %s""", taken)
        cur.execute("DELETE FROM convlog.search WHERE log_id = %s AND seq = ANY(%s)",
                    (log_id, [seq for _, _, seq in taken]))
        mark_dirty(cur, {session})
    return len(taken)


def note_log_end(conn: Any, log_id: str, log_seq: int) -> None:
    """Store the log's end as the follower sees it when nothing is left to write (the
    lag is then 0 records).

    Raises:
        psycopg.Error: when it cannot be written.
    """
    conn.execute("UPDATE convlog.positions SET log_seq = %s, updated = now() WHERE log_id = %s", (log_seq, log_id))


def lag_rows(conn: Any, log_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Each synced log's position and lag, for ``convlog status --db``.

    Returns:
        dicts ``{"log_id", "host", "directory", "seq", "records", "log_seq", "lag_records",
        "lag_s", "search_behind", "updated"}``: ``lag_records`` is how many records of
        the log (as its sync last saw it) the database does not have; ``lag_s`` 0 when
        none, else how long ago the newest record the database has was received, seconds
        (None when unknown); ``search_behind`` how many of the records the database has
        are not yet in the search projection (:mod:`convlog.db.search`).
    """
    query = """SELECT l.log_id::text, l.host, l.directory, p.seq, p.records, p.log_seq,
                      extract(epoch FROM now() - p.last_ts), p.updated, s.seq
               FROM convlog.logs l LEFT JOIN convlog.positions p USING (log_id)
                    LEFT JOIN convlog.search_positions s USING (log_id)"""
    params: tuple[Any, ...] = ()
    if log_ids:
        query += " WHERE l.log_id::text = ANY(%s)"
        params = (list(log_ids),)
    out = []
    for log_id, host, directory, seq, records, log_seq, age_s, updated, searched in conn.execute(
            query + " ORDER BY l.host, l.directory", params):
        behind = max(0, (log_seq or 0) - (seq or 0)) if log_seq is not None else None
        lag_s = None if behind is None else 0.0 if behind == 0 else (
            max(0.0, float(age_s)) if age_s is not None else None)
        out.append({"log_id": log_id, "host": host, "directory": directory, "seq": seq, "records": records,
                    "log_seq": log_seq, "lag_records": behind, "lag_s": lag_s,
                    "search_behind": max(0, (seq or 0) - (searched or 0)),
                    "updated": updated.isoformat() if isinstance(updated, datetime) else None})
    return out
