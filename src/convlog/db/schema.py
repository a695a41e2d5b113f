"""The database schema: PostgreSQL schema ``convlog``, created and migrated by convlog,
versioned in ``convlog.schema_version`` (one row per applied migration).

Tables (docs/database.md describes every column):

``logs``
    one row per log synced: ``log_id`` (the log's identity, ``DIR/log_id``), the host
    and directory it was last synced from.
``positions``
    per log, what the database acknowledged: the last ``seq`` written and where the
    follower reads next (segment, byte offset), written in the same transaction as the
    records; and the log's end as the follower last saw it, for the lag.
``records``
    every record of every log, once: ``(log_id, seq)`` is the key; the fields as
    columns, ``data`` as ``jsonb`` (the log's own ``{"text"}``/``{"base64"}`` form for a
    payload that is not JSON), ``meta`` and ``extra_frames`` as ``jsonb``.
``search``, ``search_positions``
    the search projection: each record's searchable text and its ``tsvector`` (GIN
    index), made from ``records`` after they are written (:mod:`convlog.db.search`),
    and per log the last seq it was made up to (written in the same transaction).
``dirty``
    sessions whose records arrived since their projection was last made.
``sessions``, ``messages``, ``crystals``, ``checkpoints``
    the projections: each family of sessions (a session, its forks and theirs) folded
    by the core fold (:mod:`convlog.core.fold`) from the records of every log, in
    receive-time order (:mod:`convlog.db.projection`).
``llm_requests``, ``gaps``
    one row per ``llm.request`` and ``recorder.gap`` record, as the fold reads them.

Migrations run in one transaction under an advisory lock, so several followers starting
at once migrate once.
"""

from __future__ import annotations

from typing import Any

#: The schema version this code writes and reads.
SCHEMA_VERSION = 2
#: The PostgreSQL schema (namespace) holding convlog's tables.
SCHEMA = "convlog"
#: The advisory lock key for migrations (pg_advisory_xact_lock).
_MIGRATE_LOCK = 0x636F6E766C6F67  # "convlog"

#: Each migration: (version it brings the schema to, its SQL statements).
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
        "CREATE SCHEMA IF NOT EXISTS convlog",
        """CREATE TABLE convlog.logs (
            log_id uuid PRIMARY KEY,
            host text,
            directory text,
            first_synced timestamptz NOT NULL DEFAULT now(),
            last_synced timestamptz NOT NULL DEFAULT now()
        )""",
        """CREATE TABLE convlog.positions (
            log_id uuid PRIMARY KEY REFERENCES convlog.logs,
            seq bigint NOT NULL,
            segment text NOT NULL,
            "offset" bigint NOT NULL,
            last_ts timestamptz,
            log_seq bigint,
            records bigint NOT NULL DEFAULT 0,
            updated timestamptz NOT NULL DEFAULT now()
        )""",
        """CREATE TABLE convlog.records (
            log_id uuid NOT NULL,
            seq bigint NOT NULL,
            ts timestamptz,
            ts_text text,
            kind text NOT NULL,
            source text,
            topic text,
            session text,
            data jsonb,
            data_json json,
            meta jsonb,
            extra_frames jsonb,
            chain text,
            search_text text,
            search tsvector GENERATED ALWAYS AS (to_tsvector('simple', coalesce(search_text, ''))) STORED,
            PRIMARY KEY (log_id, seq)
        )""",
        "CREATE INDEX records_session ON convlog.records (session, ts, log_id, seq)",
        # A 64 MB pending list (GIN fast update): index entries are merged in bulk, less often.
        "CREATE INDEX records_search ON convlog.records USING gin (search) WITH (gin_pending_list_limit = 65536)",
        "CREATE TABLE convlog.dirty (session text PRIMARY KEY)",
        """CREATE TABLE convlog.sessions (
            session text PRIMARY KEY,
            family text NOT NULL,
            title text,
            branch text,
            parent text,
            fork_at integer,
            messages integer NOT NULL,
            duplicates integer NOT NULL,
            participants text[] NOT NULL,
            first_ts timestamptz,
            last_ts timestamptz,
            last_ts_text text,
            deleted boolean NOT NULL,
            requests integer NOT NULL,
            input_tokens bigint NOT NULL,
            output_tokens bigint NOT NULL,
            cost_usd double precision NOT NULL,
            models jsonb NOT NULL,
            logs uuid[] NOT NULL,
            projected timestamptz NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX sessions_family ON convlog.sessions (family)",
        "CREATE INDEX sessions_last_ts ON convlog.sessions (last_ts)",
        """CREATE TABLE convlog.messages (
            session text NOT NULL,
            position integer NOT NULL,
            log_id uuid NOT NULL,
            seq bigint NOT NULL,
            message_id text,
            sender text,
            role text,
            text text,
            received timestamptz,
            sent timestamptz,
            copies integer NOT NULL,
            PRIMARY KEY (session, position)
        )""",
        """CREATE TABLE convlog.crystals (
            session text NOT NULL,
            position integer NOT NULL,
            log_id uuid NOT NULL,
            seq bigint NOT NULL,
            upto integer NOT NULL,
            summary text,
            PRIMARY KEY (session, position)
        )""",
        """CREATE TABLE convlog.checkpoints (
            session text NOT NULL,
            name text NOT NULL,
            log_id uuid NOT NULL,
            seq bigint NOT NULL,
            at integer NOT NULL,
            PRIMARY KEY (session, name)
        )""",
        """CREATE TABLE convlog.llm_requests (
            log_id uuid NOT NULL,
            seq bigint NOT NULL,
            ts timestamptz,
            session text,
            model text,
            input_tokens bigint NOT NULL,
            output_tokens bigint NOT NULL,
            cost_usd double precision NOT NULL,
            PRIMARY KEY (log_id, seq)
        )""",
        """CREATE TABLE convlog.gaps (
            log_id uuid NOT NULL,
            seq bigint NOT NULL,
            ts timestamptz,
            publisher text,
            first_missing bigint NOT NULL,
            last_missing bigint NOT NULL,
            PRIMARY KEY (log_id, seq)
        )""",
    )),
    # 2: the search vector leaves the records' write path. Computing it (to_tsvector)
    # and storing the text twice took over half of each batch's time; the search
    # projection is now made after the records are written (convlog.db.search). The
    # texts version 1 stored are carried over, so nothing is indexed twice.
    (2, (
        """CREATE TABLE convlog.search (
            log_id uuid NOT NULL,
            seq bigint NOT NULL,
            text text NOT NULL,
            search tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED,
            PRIMARY KEY (log_id, seq)
        )""",
        """CREATE TABLE convlog.search_positions (
            log_id uuid PRIMARY KEY REFERENCES convlog.logs,
            seq bigint NOT NULL
        )""",
        """INSERT INTO convlog.search (log_id, seq, text)
           SELECT log_id, seq, search_text FROM convlog.records WHERE search_text IS NOT NULL""",
        """INSERT INTO convlog.search_positions (log_id, seq)
           SELECT log_id, seq FROM convlog.positions""",
        "ALTER TABLE convlog.records DROP COLUMN search, DROP COLUMN search_text",
        "CREATE INDEX search_vector ON convlog.search USING gin (search) WITH (gin_pending_list_limit = 65536)",
    )),
)


class SchemaError(Exception):
    """The database's schema cannot be used: newer than this code, or not convlog's."""


class DatabaseError(Exception):
    """The database cannot be reached or answered with an error (the message says which
    database, without its password, and the reason on one line)."""


def redact_url(url: str) -> str:
    """A database URL without its password (for logs, status and files)."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(url)
    except Exception:
        return "<database>"
    if "password" in params:
        params["password"] = "***"
    if url.startswith(("postgresql://", "postgres://")):
        host = params.get("host", "")
        port = f":{params['port']}" if params.get("port") else ""
        user = f"{params['user']}@" if params.get("user") else ""
        return f"postgresql://{user}{host}{port}/{params.get('dbname', '')}"
    return make_conninfo(**params)


def first_line(exc: BaseException) -> str:
    """An error's message on one line (libpq's run over several), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def schema_version(conn: Any) -> int:
    """The schema version the database is at (0 when convlog's schema is not there).

    Args:
        conn: a psycopg connection.

    Raises:
        psycopg.Error: when the database cannot be asked.
    """
    exists = conn.execute("SELECT to_regclass('convlog.schema_version') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    found = conn.execute("SELECT max(version) FROM convlog.schema_version").fetchone()[0]
    return int(found or 0)


def migrate(conn: Any) -> int:
    """Bring the database's schema to :data:`SCHEMA_VERSION`, in one transaction under an
    advisory lock (several followers starting at once migrate once).

    Args:
        conn: a psycopg connection (not in a transaction).

    Returns:
        the version before (0: the schema was created).

    Raises:
        SchemaError: when the database's schema is newer than this code.
        psycopg.Error: when a statement fails (nothing of the migration stays).
    """
    current = schema_version(conn)
    if current == SCHEMA_VERSION:
        return current  # nothing to do: no DDL, so a read-only database is fine here
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS convlog")
        conn.execute("""CREATE TABLE IF NOT EXISTS convlog.schema_version (
                            version integer PRIMARY KEY,
                            migrated timestamptz NOT NULL DEFAULT now())""")
        before = schema_version(conn)
        if before > SCHEMA_VERSION:
            raise SchemaError(f"the database's convlog schema is version {before}, newer than this convlog's "
                              f"({SCHEMA_VERSION}): upgrade convlog")
        for version, statements in MIGRATIONS:
            if version <= before:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO convlog.schema_version (version) VALUES (%s)", (version,))
    return before


def check_schema(conn: Any) -> None:
    """Refuse a database whose schema is not at :data:`SCHEMA_VERSION` (the readers do
    not migrate: a read replica cannot).

    Raises:
        SchemaError: with what to do, when it is missing, older or newer.
    """
    found = schema_version(conn)
    if found == SCHEMA_VERSION:
        return
    if found == 0:
        raise SchemaError("the database has no convlog schema: run convlog sync --db URL first")
    if found < SCHEMA_VERSION:
        raise SchemaError(f"the database's convlog schema is version {found}, older than this convlog's "
                          f"({SCHEMA_VERSION}): run convlog sync --db URL to migrate it")
    raise SchemaError(f"the database's convlog schema is version {found}, newer than this convlog's "
                      f"({SCHEMA_VERSION}): upgrade convlog")
