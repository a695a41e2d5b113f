"""The search projection: each record's searchable text in ``convlog.search``, with its
``tsvector`` (``to_tsvector('simple', text)``, GIN index), made from ``convlog.records``
after the records are written.

Computing the vector is the dearest part of storing a record (PostgreSQL's parser runs
over every word), so it is kept off the records' write path: the records of a batch are
durable and readable at once, and :func:`index` makes their search rows afterwards, in
its own transaction, which also moves the log's ``convlog.search_positions`` row past
them. A crash anywhere leaves either both or neither, so every record is indexed once.

The text is what the local search index takes (:func:`convlog.store.search_index.record_text`),
from the record as the database holds it (:func:`convlog.db.projection.row_record`, the
projections' own reading), cut to :data:`SEARCH_CHARS` characters (a ``tsvector`` holds
at most 1 MB). Records with no text (control records, base64 payloads, purged records)
get no row.
"""

from __future__ import annotations

from typing import Any

from convlog.db.projection import RECORD_COLUMNS, row_record
from convlog.db.rows import pg_text
from convlog.store.search_index import STREAM_KINDS, TEXT_KINDS, record_text

#: Most characters of a record's text indexed for search.
SEARCH_CHARS = 200_000
#: Most records read per search transaction.
SEARCH_BATCH = 5000
#: The kinds :func:`record_text` can find text in (the others are not read).
SEARCHED_KINDS = sorted(TEXT_KINDS | STREAM_KINDS | {"session.crystal"})


def search_text(record: dict[str, Any]) -> str | None:
    """The text a record is found by in the database (see the module doc), or None."""
    text = record_text(record)
    if text is None:
        return None
    return pg_text(text[:SEARCH_CHARS])


def index(conn: Any, log_id: str, limit: int = SEARCH_BATCH) -> int:
    """Index the next records of one log (at most ``limit``), in one transaction.

    Args:
        conn: a psycopg connection (not in a transaction).
        log_id: the log's id (registered: ``convlog.logs`` has it).
        limit: most records read, records.

    Returns:
        how many records the position moved past (0: the search projection is up to
        date with the log's records in the database).

    Raises:
        psycopg.Error: when it fails (nothing of it stays).
    """
    with conn.transaction():
        conn.execute("INSERT INTO convlog.search_positions (log_id, seq) VALUES (%s, 0) ON CONFLICT DO NOTHING",
                     (log_id,))
        after = int(conn.execute("SELECT seq FROM convlog.search_positions WHERE log_id = %s FOR UPDATE",
                                 (log_id,)).fetchone()[0])
        upto = conn.execute("SELECT seq FROM convlog.positions WHERE log_id = %s", (log_id,)).fetchone()
        if upto is None or int(upto[0]) <= after:
            return 0
        last = min(int(upto[0]), after + limit)
        rows = conn.execute(f"""SELECT {RECORD_COLUMNS} FROM convlog.records
                                WHERE log_id = %s AND seq > %s AND seq <= %s AND kind = ANY(%s)""",
                            (log_id, after, last, SEARCHED_KINDS)).fetchall()
        with conn.cursor() as cur:
            with cur.copy("COPY convlog.search (log_id, seq, text) FROM STDIN") as copy:
                for row in rows:
                    text = search_text(row_record(row, row[1]))
                    if text:
                        copy.write_row((log_id, row[1], text))
            cur.execute("UPDATE convlog.search_positions SET seq = %s WHERE log_id = %s", (last, log_id))
    return last - after


def index_all(conn: Any, log_id: str) -> int:
    """:func:`index` until the log's search rows are up to date.

    Returns:
        records passed in all.
    """
    total = 0
    while True:
        moved = index(conn, log_id)
        if not moved:
            return total
        total += moved


def search_lag(conn: Any, log_id: str) -> int:
    """Records of the log in the database not yet in the search projection (0 when none)."""
    row = conn.execute("""SELECT p.seq - coalesce(s.seq, 0) FROM convlog.positions p
                          LEFT JOIN convlog.search_positions s USING (log_id) WHERE p.log_id = %s""",
                       (log_id,)).fetchone()
    return max(0, int(row[0])) if row is not None and row[0] is not None else 0
