"""Full-text search over the log: a SQLite FTS5 index derived from it.

The index lives at ``DIR/index/search.sqlite`` (stdlib :mod:`sqlite3`, FTS5). It is
derived from the log and can be deleted at any time: the recorder never writes it, and
every reader (:meth:`SearchIndex.update`, which :meth:`SearchIndex.query` calls first)
brings it up to date from the last indexed position before answering.

What is indexed (:func:`record_text`): the text of ``message``, ``raw`` and ``unknown``
records as :func:`convlog.core.view.payload_text` shows it (base64 payloads are not text and
are left out), the summary of ``session.crystal`` records, and streamed messages
assembled like :func:`convlog.core.view.stream_text` (``message.delta`` parts joined, the
``message.end`` content winning), indexed under the seq of their first record as the
fold shows them. Other records (session control, heartbeats, ``recorder.*``) have no
text to search.

Layout of the index (SQLite, WAL mode):

``fts``
    a *contentless* FTS5 table (``content=''``, https://sqlite.org/fts5.html section 4.4.3):
    only the inverted index of the text is kept, keyed by seq (the rowid), so the index
    adds a fraction of the log's size instead of a second copy of every message.
``records``
    one row per indexed record: seq, ts, session, speaker (the sender, else the role,
    as :class:`convlog.core.view.ShownMessage` names who spoke), role, kind, source, and
    where its line is (segment first seq, byte offset) to read it back for snippets.
``streams``
    streamed messages: their text so far and the text last given to ``fts`` (a
    contentless table needs the old text to delete a row, FTS5 "delete" command).
``position``
    the last indexed position: segment, byte offset after the last record read, its
    seq, and a BLAKE2b digest of the bytes of its line. An update resumes there with
    :func:`convlog.store.segment.follow`, without rescanning the log.

Snippets: the text of each hit (at most ``limit`` records) is read back from the log
and run through the same FTS5 query in a temporary in-memory FTS5 table, whose
``snippet()`` marks the matches with :data:`MARK_START` / :data:`MARK_END`, so the
highlighting follows exactly the tokenizer and query syntax that found the hit.

Replaced logs: when the stored segment is gone, shorter than the stored offset, or the
bytes of the last indexed line no longer hash to the stored digest (a log rebuilt or
replaced under the same directory), the index is cleared and rebuilt from the start.
A file that is not a SQLite database, or an index of another format, is replaced.

Concurrency: WAL mode, and every change is one ``BEGIN IMMEDIATE`` transaction that
first re-reads the stored position, so two readers updating at once take turns batch
by batch and never index a record twice (SQLite's locking; busy timeout 60 s).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from convlog.core.fold import message_id
from convlog.core.record import format_ts, parse_when
from convlog.core.view import EMPTY, payload_text
from convlog.store.replay import NoLogError
from convlog.store.segment import EVENTS, find_record, follow, list_segments, scan_for_seq, segment_name

#: Folder (inside the log directory) and file of the index.
INDEX_DIR = "index"
INDEX_FILE = "search.sqlite"
#: Held (flock) while a reader opens and sets up the index, next to it.
LOCK_FILE = "search.lock"
#: Format of the index; an index of another format is rebuilt (``PRAGMA user_version``).
FORMAT = 2
#: FTS5 tokenizer: Unicode 6.1 word rules, case folded, diacritics removed.
TOKENIZER = "unicode61 remove_diacritics 2"
#: The same words reduced to their English stems (FTS5's ``porter`` over
#: :data:`TOKENIZER`), for ``search --stem``: ``deploy`` finds "deployment", "deployed".
STEM_TOKENIZER = f"porter {TOKENIZER}"
#: Records read per write transaction (other readers can take turns in between).
BATCH_RECORDS = 5000
#: Records between two progress reports.
PROGRESS_RECORDS = 1000
#: Tokens in a snippet (FTS5 allows at most 64).
SNIPPET_TOKENS = 24
#: Markers around a matched term in :attr:`Hit.snippet` (STX / ETX control characters,
#: which do not occur in text; the output module turns them into highlights).
MARK_START, MARK_END = "\x02", "\x03"
#: Seconds a reader waits for another reader's write transaction.
BUSY_TIMEOUT_S = 60.0

#: Kinds whose payload is searchable text (see :func:`record_text`).
TEXT_KINDS = frozenset({"message", "raw", "unknown"})
#: Kinds that make up a streamed message.
STREAM_KINDS = frozenset({"message.delta", "message.end"})

_WHITESPACE = re.compile(r"\s+")
_QUERY_ERROR_PREFIXES = ("fts5:", "no such column", "unknown special query", "malformed match", "unterminated")


class SearchQueryError(ValueError):
    """A search query SQLite FTS5 cannot parse (syntax error, unknown column), an empty
    query, or a bad ``since``/``until`` time. The message is one readable line."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One record that matched a search.

    Attributes:
        seq: the record's seq (for a streamed message, its first record).
        ts: its receive time (RFC 3339 UTC, as in the log).
        session: its session id, or None.
        speaker: who spoke: ``meta.sender``, else ``meta.role``, else None.
        kind: the record's kind (``message``, ``message.delta`` for a stream, …).
        snippet: up to :data:`SNIPPET_TOKENS` tokens of its text around the matches,
            whitespace collapsed, each match wrapped in :data:`MARK_START` …
            :data:`MARK_END`, ``…`` where text was cut.
        source: where the record came from (``sub``, ``pull``, ``import``, …).
        copies: how many records of the same message (same session and message id,
            e.g. the bus copy and the PUSHed one) matched; the hit is the first of them.
    """

    seq: int
    ts: str | None
    session: str | None
    speaker: str | None
    kind: str
    snippet: str
    source: str | None = None
    copies: int = 1

    def spans(self) -> tuple[str, list[tuple[int, int]]]:
        """The snippet without markers, and the ``(start, end)`` character ranges of the
        matches in it (end exclusive)."""
        plain: list[str] = []
        spans: list[tuple[int, int]] = []
        length, start = 0, None
        for part in re.split(f"([{MARK_START}{MARK_END}])", self.snippet):
            if part == MARK_START:
                start = length
            elif part == MARK_END:
                if start is not None:
                    spans.append((start, length))
                start = None
            else:
                plain.append(part)
                length += len(part)
        return "".join(plain), spans

    def as_dict(self) -> dict[str, Any]:
        """The hit as a JSON-friendly dict: its fields, ``snippet`` without markers and
        ``highlights``, the ``[start, end)`` character ranges of the matches in it."""
        text, spans = self.spans()
        return {
            "seq": self.seq,
            "ts": self.ts,
            "session": self.session,
            "speaker": self.speaker,
            "kind": self.kind,
            "source": self.source,
            "copies": self.copies,
            "snippet": text,
            "highlights": [list(span) for span in spans],
        }


def record_text(record: dict[str, Any]) -> str | None:
    """The searchable text of one record, or None when it has none. Pure.

    Args:
        record: a parsed record.

    Returns:
        for ``message``/``raw``/``unknown`` and the stream kinds, the text
        :func:`convlog.core.view.payload_text` shows (None for a base64 payload); for
        ``session.crystal``, ``data.summary``; None for any other kind or empty text.
    """
    kind = record.get("kind")
    if kind == "session.crystal":
        data = record.get("data")
        summary = data.get("summary") if isinstance(data, dict) else None
        return summary if isinstance(summary, str) and summary else None
    if kind not in TEXT_KINDS and kind not in STREAM_KINDS:
        return None
    meta = record.get("meta")
    if isinstance(meta, dict) and meta.get("encoding") == "base64":
        return None
    text = payload_text(record)
    return None if not text or text == EMPTY else text


def _meta_str(record: dict[str, Any], key: str) -> str | None:
    meta = record.get("meta")
    value = meta.get(key) if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def record_speaker(record: dict[str, Any]) -> str | None:
    """Who spoke in a record: ``meta.sender``, else ``meta.role``, else None (the name
    :class:`convlog.core.view.ShownMessage` and the transcripts show). Pure."""
    return _meta_str(record, "sender") or _meta_str(record, "role")


_OPERATORS = frozenset({"AND", "OR", "NOT"})


def _prefixed(query: str) -> str | None:
    """A query of plain words (and ``AND``/``OR``/``NOT``) with each word made a prefix
    (``deploy`` -> ``deploy*``), or None for any other FTS5 syntax (phrases, NEAR,
    columns, prefixes already), which is left to the stems alone."""
    words = query.split()
    if not words or any(not word.isalnum() for word in words if word not in _OPERATORS):
        return None
    return " ".join(word if word in _OPERATORS else f"{word}*" for word in words)


def parse_time(text: str, option: str = "time") -> str:
    """Parse a ``--since``/``--until`` value: ISO 8601 / RFC 3339, UTC unless a zone is
    given (``2026-11-21``, ``2026-11-21T12:00``, ``2026-11-21T12:00:00+01:00``, ``…Z``),
    or ``now``, ``today``, ``yesterday``, ``2h``, ``3d`` (see
    :func:`convlog.core.record.parse_when`).

    Args:
        text: the value.
        option: its name, for the error message.

    Returns:
        the time in the records' ``ts`` format (``2026-11-21T12:00:00.000000Z``), which
        compares correctly as text.

    Raises:
        SearchQueryError: when it is not an ISO 8601 time.
    """
    try:
        return format_ts(parse_when(text, datetime.now(UTC)))
    except ValueError:
        raise SearchQueryError(f"{option} {text!r} is not a time (ISO 8601 like 2026-11-21T12:00:00Z, "
                               "now, yesterday, 2h, 3d)") from None


def _query_error(query: str, exc: sqlite3.Error) -> SearchQueryError | None:
    """A readable :class:`SearchQueryError` when ``exc`` is SQLite refusing the query's
    FTS5 syntax, else None."""
    reason = str(exc)
    if not reason.lower().startswith(_QUERY_ERROR_PREFIXES):
        return None
    reason = " ".join(reason.split())
    return SearchQueryError(
        f"search query {query!r} is not valid FTS5 syntax ({reason}); quote words with punctuation "
        '("rtx-2070"); syntax: https://sqlite.org/fts5.html#full_text_query_syntax'
    )


@dataclass(frozen=True, slots=True)
class _Position:
    """The last indexed position: segment file name, byte offset after the last record
    read, its seq, where the bytes hashed into ``digest`` start (the end of the record
    read before it, in the same segment, else 0)."""

    segment: str
    offset: int
    last_seq: int
    line_start: int
    digest: bytes


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _segment_seq(name: str) -> int:
    return int(name.split(".", 1)[0])


_SCHEMA = (
    "CREATE TABLE position (id INTEGER PRIMARY KEY CHECK (id = 1), segment TEXT NOT NULL, "
    "offset INTEGER NOT NULL, last_seq INTEGER NOT NULL, line_start INTEGER NOT NULL, digest BLOB NOT NULL)",
    "CREATE TABLE records (seq INTEGER PRIMARY KEY, ts TEXT, session TEXT, speaker TEXT, role TEXT, "
    "kind TEXT NOT NULL, source TEXT, segment INTEGER NOT NULL, offset INTEGER NOT NULL, message_id TEXT)",
    "CREATE INDEX records_session ON records (session)",
    "CREATE TABLE streams (session TEXT, message_id TEXT NOT NULL, first_seq INTEGER NOT NULL, "
    "text TEXT NOT NULL, indexed TEXT, complete INTEGER NOT NULL)",
    "CREATE UNIQUE INDEX streams_key ON streams (session, message_id)",
    "CREATE INDEX streams_first ON streams (first_seq)",
    f"CREATE VIRTUAL TABLE fts USING fts5(text, content='', columnsize=0, tokenize='{TOKENIZER}')",
    f"CREATE VIRTUAL TABLE fts_stem USING fts5(text, content='', columnsize=0, tokenize='{STEM_TOKENIZER}')",
)
_TABLES = ("position", "records", "streams", "fts", "fts_stem")
#: The full-text tables: every text goes into both.
_FTS_TABLES = ("fts", "fts_stem")


class _Progress:
    """Turns positions in the log into ``progress(done, total)`` calls, in bytes of the
    log read by one update."""

    def __init__(self, directory: Path, start: _Position | None, report: Callable[[int, int], None] | None) -> None:
        self.directory = directory
        self.report = report
        self.bases: dict[str, int] = {}
        self._list()
        self.start = self.absolute(start.segment, start.offset) if start is not None else 0
        self.total = max(0, self.size - self.start)
        self.done = 0

    def _list(self) -> None:
        base = 0
        self.bases.clear()
        for _, path in list_segments(self.directory):
            self.bases[path.name] = base
            try:
                base += path.stat().st_size
            except FileNotFoundError:
                continue
        self.size = base

    def absolute(self, segment: str, offset: int) -> int:
        if segment not in self.bases:
            self._list()
        return self.bases.get(segment, self.size) + offset

    def at(self, segment: str, offset: int) -> None:
        if self.report is None:
            return
        self.done = max(self.done, self.absolute(segment, offset) - self.start)
        self.total = max(self.total, self.done)
        self.report(self.done, self.total)


class SearchIndex:
    """The full-text index of one log directory (see the module doc).

    Use as a context manager, or call :meth:`close`.

    Args:
        directory: the log directory (with ``events/``).

    Attributes:
        directory: the log directory.
        path: the index file, ``directory/index/search.sqlite``.

    Raises:
        NoLogError: when the directory has no event log.
        OSError: when the index cannot be created (e.g. a read-only directory).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not list_segments(self.directory):
            raise NoLogError.in_directory(self.directory)
        self.path = self.directory / INDEX_DIR / INDEX_FILE
        self.path.parent.mkdir(exist_ok=True)
        self._conn = self._open()
        self._snippet_tables: set[str] = set()

    # -- opening -----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """Connect and set the index up. The set-up runs under an exclusive ``flock`` on
        ``index/search.lock``: switching a new database to WAL needs an exclusive SQLite
        lock that does not wait on the busy timeout, so two readers opening a fresh
        index at once would otherwise see "database is locked"."""
        with open(self.path.parent / LOCK_FILE, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA journal_size_limit=16777216")
                conn.execute("PRAGMA temp_store=MEMORY")
                if conn.execute("PRAGMA user_version").fetchone()[0] != FORMAT:
                    self._create(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def _open(self) -> sqlite3.Connection:
        """Connect, replacing a file that is not a SQLite database (it is derived data)."""
        try:
            return self._connect()
        except sqlite3.OperationalError as exc:  # locked, read-only, cannot create
            raise OSError(f"cannot use the search index {self.path}: {exc}") from None
        except sqlite3.DatabaseError:  # not a database, malformed
            self._unlink()
            return self._connect()

    def _unlink(self) -> None:
        """Delete the index file and its ``-wal``/``-shm`` (derived data: nothing is lost)."""
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")

    @staticmethod
    def _create(conn: sqlite3.Connection) -> None:
        """Create the tables (dropping those of another format) in one transaction."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] != FORMAT:  # re-read under the lock
                for table in _TABLES:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={FORMAT}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the database (idempotent). The last connection to close folds the WAL
        back into the file."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: waits for other writers)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- the position ------------------------------------------------------------------

    def _position(self) -> _Position | None:
        row = self._conn.execute(
            "SELECT segment, offset, last_seq, line_start, digest FROM position WHERE id = 1").fetchone()
        return None if row is None else _Position(*row)

    def _matches(self, position: _Position) -> bool:
        """Is the log still the one indexed up to ``position``? (its segment exists, is
        long enough, and the last indexed line still has the stored digest)"""
        path = self.directory / EVENTS / position.segment
        try:
            with path.open("rb") as fh:
                if os.fstat(fh.fileno()).st_size < position.offset:
                    return False
                fh.seek(position.line_start)
                data = fh.read(position.offset - position.line_start)
        except FileNotFoundError:
            return False
        return _digest(data) == position.digest

    def _is_current(self) -> bool:
        """True when the stored position is the end of the log and still matches it
        (checked without taking the write lock)."""
        position = self._position()
        segments = list_segments(self.directory)
        if position is None or not segments or segments[-1][1].name != position.segment:
            return False
        try:
            size = segments[-1][1].stat().st_size
        except FileNotFoundError:
            return False
        return size == position.offset and self._matches(position)

    @property
    def last_seq(self) -> int:
        """Seq of the last record the index has read (0 when empty)."""
        position = self._position()
        return 0 if position is None else position.last_seq

    def count(self) -> int:
        """Number of records (and streamed messages) in the index."""
        return int(self._conn.execute("SELECT count(*) FROM records").fetchone()[0])

    def size_bytes(self) -> int:
        """Bytes the index takes on disk: the database file and its ``-wal``/``-shm``."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    # -- building ----------------------------------------------------------------------

    def _clear(self, conn: sqlite3.Connection) -> None:
        for table in _FTS_TABLES:
            conn.execute(f"INSERT INTO {table}({table}) VALUES ('delete-all')")
        for table in ("records", "streams", "position"):
            conn.execute(f"DELETE FROM {table}")

    def update(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Bring the index up to date with the log: read the records after the last
        indexed position (:func:`convlog.store.segment.follow`) and index those with text. When
        the log no longer matches the stored position (replaced or rebuilt), clear the
        index and start from the beginning.

        Args:
            progress: called as ``progress(done, total)`` in bytes of the log read by
                this update (total: the bytes after the stored position when it started,
                growing if the log grows meanwhile); not called when nothing is new.

        Returns:
            the number of records read and indexed by this call (0 when current).

        Raises:
            NoLogError: when the log's segments are gone.
            sqlite3.Error: when the index cannot be written (after the busy timeout).
        """
        if not list_segments(self.directory):
            raise NoLogError.in_directory(self.directory)
        if self._is_current():
            return 0
        indexed = 0
        tracker: _Progress | None = None
        while True:
            with self._write() as conn:
                position = self._position()
                if position is not None and not self._matches(position):
                    self._clear(conn)
                    position = None
                if tracker is None:
                    tracker = _Progress(self.directory, position, progress)
                count, more = self._index_batch(conn, position, tracker)
            indexed += count
            if not more:
                return indexed

    def rebuild(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Clear the index and build it again from the whole log. An index file SQLite
        finds damaged (``database disk image is malformed``) is deleted and made anew.

        Args:
            progress: as for :meth:`update` (bytes of the log).

        Returns:
            the number of records this call indexed (another reader updating at the
            same time may have indexed some of them).

        Raises:
            see :meth:`update`.
        """
        try:
            with self._write() as conn:
                self._clear(conn)
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError:
            self._conn.close()
            self._unlink()
            self._conn = self._open()
            self._snippet_tables = set()
        return self.update(progress)

    def _index_batch(
        self, conn: sqlite3.Connection, position: _Position | None, tracker: _Progress
    ) -> tuple[int, bool]:
        """Index up to :data:`BATCH_RECORDS` records after ``position`` and store the new
        position, inside the caller's transaction. Returns ``(records read, more left)``."""
        rows: list[tuple[Any, ...]] = []
        texts: list[tuple[int, str]] = []
        dirty: set[tuple[str | None, str]] = set()
        prev_segment, prev_offset = (position.segment, position.offset) if position else ("", 0)
        last: tuple[str, int, int, int] | None = None  # segment, start, end, seq
        count = 0
        more = False
        records = follow(self.directory, None if position is None else (position.segment, position.offset))
        try:
            for record, segment, offset in records:
                start = prev_offset if segment == prev_segment else 0
                prev_segment, prev_offset = segment, offset
                seq = record["seq"]
                last = (segment, start, offset, seq)
                count += 1
                kind = record["kind"]
                if kind in STREAM_KINDS:
                    self._stream(conn, record, _segment_seq(segment), start, dirty)
                else:
                    text = record_text(record)
                    if text is not None:
                        rows.append(self._row(record, _segment_seq(segment), start))
                        texts.append((seq, text))
                if count % PROGRESS_RECORDS == 0:
                    tracker.at(segment, offset)
                if count >= BATCH_RECORDS:
                    more = True
                    break
        finally:
            records.close()
        if last is None:
            return 0, False
        conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        for table in _FTS_TABLES:
            conn.executemany(f"INSERT INTO {table}(rowid, text) VALUES (?, ?)", texts)
        self._flush_streams(conn, dirty)
        segment, start, end, seq = last
        with (self.directory / EVENTS / segment).open("rb") as fh:
            fh.seek(start)
            digest = _digest(fh.read(end - start))
        conn.execute(
            "INSERT OR REPLACE INTO position VALUES (1, ?, ?, ?, ?, ?)", (segment, end, seq, start, digest))
        tracker.at(segment, end)
        return count, more

    @staticmethod
    def _row(record: dict[str, Any], segment: int, offset: int) -> tuple[Any, ...]:
        ts = record.get("ts")
        session = record.get("session")
        source = record.get("source")
        return (
            record["seq"], ts if isinstance(ts, str) else None, session if isinstance(session, str) else None,
            record_speaker(record), _meta_str(record, "role"), record["kind"],
            source if isinstance(source, str) else None, segment, offset, _meta_str(record, "message_id"),
        )

    def _stream(self, conn: sqlite3.Connection, record: dict[str, Any], segment: int, offset: int,
                dirty: set[tuple[str | None, str]]) -> None:
        """Fold one ``message.delta``/``message.end`` into its stream's text, as
        :func:`convlog.core.view.stream_text` assembles it: deltas appended in order, an
        end's content replacing them; deltas and ends after the end are copies and
        change nothing. A new stream gets its ``records`` row at this record."""
        session = record.get("session") if isinstance(record.get("session"), str) else None
        mid = message_id(record)
        row = conn.execute(
            "SELECT text, complete FROM streams WHERE session IS ? AND message_id = ?", (session, mid)).fetchone()
        text = payload_text(record) if record_text(record) is not None else ""
        is_end = record["kind"] == "message.end"
        data = record.get("data")
        has_content = isinstance(data, dict) and data.get("content") is not None
        if row is None:
            conn.execute(
                "INSERT INTO streams VALUES (?, ?, ?, ?, NULL, ?)",
                (session, mid, record["seq"], text if (not is_end or has_content) else "", int(is_end)))
            conn.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         self._row(record, segment, offset))
        elif row[1]:
            return
        elif is_end:
            conn.execute(
                "UPDATE streams SET text = ?, complete = 1 WHERE session IS ? AND message_id = ?",
                (text if has_content else row[0], session, mid))
        else:
            conn.execute(
                "UPDATE streams SET text = text || ? WHERE session IS ? AND message_id = ?", (text, session, mid))
        dirty.add((session, mid))

    @staticmethod
    def _flush_streams(conn: sqlite3.Connection, dirty: set[tuple[str | None, str]]) -> None:
        """Give the changed streams' text to ``fts`` (delete the old text first)."""
        for session, mid in dirty:
            first_seq, text, indexed = conn.execute(
                "SELECT first_seq, text, indexed FROM streams WHERE session IS ? AND message_id = ?",
                (session, mid)).fetchone()
            if indexed == text:
                continue
            for table in _FTS_TABLES:
                if indexed:
                    conn.execute(f"INSERT INTO {table}({table}, rowid, text) VALUES ('delete', ?, ?)",
                                 (first_seq, indexed))
                if text:
                    conn.execute(f"INSERT INTO {table}(rowid, text) VALUES (?, ?)", (first_seq, text))
            conn.execute("UPDATE streams SET indexed = ? WHERE session IS ? AND message_id = ?",
                         (text or None, session, mid))

    # -- querying ----------------------------------------------------------------------

    def query(
        self,
        text: str,
        *,
        session: str | None = None,
        speaker: str | None = None,
        kind: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 20,
        stem: bool = False,
    ) -> list[Hit]:
        """Search the log (after bringing the index up to date, see :meth:`update`).

        Args:
            text: an FTS5 query (https://sqlite.org/fts5.html section 3): words (all must
                occur), ``"a phrase"``, ``OR``, ``NOT``, ``NEAR(a b, 5)``, ``prefix*``.
                Case and diacritics are ignored.
            session: only this session id (exact).
            speaker: only records whose sender or role is this (case-insensitive).
            kind: only records of this kind (``message``, ``message.delta`` for streamed
                messages, ``session.crystal``, ``raw``, ``unknown``, …).
            since, until: only records received at or after / at or before this time
                (ISO 8601, UTC unless a zone is given; see :func:`parse_time`).
            limit: at most this many hits (>= 1).
            stem: match words by their English stem (:data:`STEM_TOKENIZER`), and, for
                a query of plain words, each word as a prefix too (porter keeps
                "deployment" apart from "deploy"): ``deploy`` finds "deployed",
                "deploying", "deployment".

        Returns:
            the hits, newest first (highest seq first).

        Raises:
            SearchQueryError: for an empty query, FTS5 syntax errors, bad times.
            ValueError: when ``limit`` < 1.
            NoLogError, sqlite3.Error: see :meth:`update`.
        """
        if not text.strip():
            raise SearchQueryError("empty search query")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        prefixed = _prefixed(text) if stem else None
        if not stem:
            where = ["r.seq IN (SELECT rowid FROM fts WHERE fts MATCH ?)"]
            params: list[Any] = [text]
        elif prefixed is None:
            where = ["r.seq IN (SELECT rowid FROM fts_stem WHERE fts_stem MATCH ?)"]
            params = [text]
        else:  # porter stems, and the words as prefixes (porter leaves "deployment" apart from "deploy")
            where = ["(r.seq IN (SELECT rowid FROM fts_stem WHERE fts_stem MATCH ?) "
                     "OR r.seq IN (SELECT rowid FROM fts WHERE fts MATCH ?))"]
            params = [text, prefixed]
        if session is not None:
            where.append("r.session = ?")
            params.append(session)
        if speaker is not None:
            where.append("(r.speaker = ? COLLATE NOCASE OR r.role = ? COLLATE NOCASE)")
            params += [speaker, speaker]
        if kind is not None:
            where.append("r.kind = ?")
            params.append(kind)
        if since is not None:
            where.append("r.ts >= ?")
            params.append(parse_time(since, "--since"))
        if until is not None:
            where.append("r.ts <= ?")
            params.append(parse_time(until, "--until"))
        # The copies of one message (same session and message id) are one hit: the first
        # of them (SQLite takes the bare columns from the row of min()), with their count.
        sql = (
            "SELECT min(r.seq), r.ts, r.session, r.speaker, r.kind, r.source, r.segment, r.offset, count(*) "
            f"FROM records AS r WHERE {' AND '.join(where)} "
            "GROUP BY r.session, coalesce(r.message_id, 'seq:' || r.seq) "
            "ORDER BY min(r.seq) DESC LIMIT ?"
        )
        params.append(limit)
        conn = self._conn
        for attempt in range(3):
            self.update()
            reached = self.last_seq
            conn.execute("BEGIN")  # one snapshot: a rebuild elsewhere cannot show half an index
            try:
                if self.last_seq < reached and attempt < 2:
                    continue  # another reader cleared the index meanwhile (a rebuild): again
                try:
                    rows = conn.execute(sql, params).fetchall()
                except sqlite3.OperationalError as exc:
                    error = _query_error(text, exc)
                    if error is None:
                        raise
                    raise error from None
                texts = self._texts(conn, rows)
            finally:
                conn.execute("COMMIT")
            break
        # (with prefixes, the snippets highlight every form of the words)
        snippets = self._snippets(prefixed, texts) if prefixed is not None else self._snippets(text, texts, stem)
        return [
            Hit(seq=row[0], ts=row[1], session=row[2], speaker=row[3], kind=row[4], snippet=snippets[row[0]],
                source=row[5], copies=row[8])
            for row in rows
        ]

    def _texts(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> dict[int, str]:
        """The text of each hit: a stream's from ``streams``, any other record's read
        from its line in the log."""
        texts: dict[int, str] = {}
        for seq, _ts, _session, _speaker, kind, _source, segment, offset, _copies in rows:
            if kind in STREAM_KINDS:
                found = conn.execute("SELECT text FROM streams WHERE first_seq = ?", (seq,)).fetchone()
                texts[seq] = found[0] if found else ""
            else:
                record = self._read(segment, offset, seq)
                texts[seq] = (record_text(record) if record else None) or ""
        return texts

    def _read(self, segment: int, offset: int, seq: int) -> dict[str, Any] | None:
        """The record ``seq`` whose line starts at (or, past skipped invalid lines, after)
        ``offset`` of the segment named by ``segment``; a search by seq as a fallback."""
        try:
            with (self.directory / EVENTS / segment_name(segment)).open("rb") as fh:
                fh.seek(offset)
                record = scan_for_seq(fh, seq, limit=64)
                if record is not None:
                    return record
        except FileNotFoundError:
            pass
        return find_record(self.directory, seq)

    def _snippets(self, query: str, texts: dict[int, str], stem: bool = False) -> dict[int, str]:
        """FTS5 ``snippet()`` of each text for ``query``, computed in a temporary
        in-memory FTS5 table with the same tokenizer (the main table keeps no text)."""
        conn = self._conn
        name = "hit_stem" if stem else "hit_text"
        if name not in self._snippet_tables:
            tokenizer = STEM_TOKENIZER if stem else TOKENIZER
            conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{name} USING fts5(text, tokenize='{tokenizer}')")
            self._snippet_tables.add(name)
        out = {seq: _WHITESPACE.sub(" ", text[:400]).strip() for seq, text in texts.items()}
        if not texts:
            return out
        conn.execute("BEGIN")
        try:
            conn.executemany(f"INSERT INTO temp.{name}(rowid, text) VALUES (?, ?)", texts.items())
            rows = conn.execute(
                f"SELECT rowid, snippet({name}, 0, ?, ?, '…', ?) FROM temp.{name} WHERE {name} MATCH ?",
                (MARK_START, MARK_END, SNIPPET_TOKENS, query)).fetchall()
        finally:
            conn.execute("ROLLBACK")  # the temporary rows are not kept
        for seq, snippet in rows:
            out[seq] = _WHITESPACE.sub(" ", snippet).strip()
        return out
