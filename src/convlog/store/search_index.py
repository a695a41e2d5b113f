"""The full-text index of a log: a SQLite FTS5 database derived from it, built and kept
up to date (the query side is :mod:`convlog.store.search`).

The index lives at ``DIR/index/search.sqlite`` (stdlib :mod:`sqlite3`, FTS5). It is
derived from the log and can be deleted at any time: the recorder never writes it, and
every reader (:meth:`TextIndex.update`, which
:meth:`convlog.store.search.SearchIndex.query` calls first) brings it up to date from the
last indexed position before answering.

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
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from convlog.core.fold import message_id
from convlog.core.record import is_purged
from convlog.core.view import EMPTY, payload_text
from convlog.store.replay import NoLogError
from convlog.store.segment import follow, list_segments, open_segment, segment_key, segment_path, segment_size

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
#: Seconds a reader waits for another reader's write transaction.
BUSY_TIMEOUT_S = 60.0
#: Kinds whose payload is searchable text (see :func:`record_text`).
TEXT_KINDS = frozenset({"message", "raw", "unknown"})
#: Kinds that make up a streamed message.
STREAM_KINDS = frozenset({"message.delta", "message.end"})


def record_text(record: dict[str, Any]) -> str | None:
    """The searchable text of one record, or None when it has none. Pure.

    Args:
        record: a parsed record.

    Returns:
        for ``message``/``raw``/``unknown`` and the stream kinds, the text
        :func:`convlog.core.view.payload_text` shows (None for a base64 payload); for
        ``session.crystal``, ``data.summary``; None for any other kind, for empty
        text and for a purged record (``convlog purge``).
    """
    if is_purged(record):
        return None
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
            self.bases[segment_key(path)] = base
            try:
                base += segment_size(path)
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


class TextIndex:
    """The full-text index of one log directory, opened and kept up to date (see the module
    doc); :class:`convlog.store.search.SearchIndex` adds the queries.

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

    def __enter__(self) -> Self:
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
        path = segment_path(self.directory, position.segment)
        try:
            with open_segment(path) as fh:
                if fh.seek(0, 2) < position.offset:
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
        if position is None or not segments or segment_key(segments[-1][1]) != segment_key(position.segment):
            return False
        try:
            size = segment_size(segments[-1][1])
        except FileNotFoundError:
            return False
        return size == position.offset and self._matches(position)

    @property
    def last_seq(self) -> int:
        """Seq of the last record the index has read (0 when empty)."""
        position = self._position()
        return 0 if position is None else position.last_seq

    def forget_before(self, seq: int) -> int:
        """Drop the rows of records (and streamed messages) before ``seq``: retention let
        them go, so search no longer finds them. Their words stay in the contentless
        full-text tables until the next :meth:`rebuild` (they match no row).

        Returns:
            the number of record rows dropped.

        Raises:
            sqlite3.Error: when the index cannot be written (after the busy timeout).
        """
        with self._write() as conn:
            dropped = conn.execute("DELETE FROM records WHERE seq < ?", (seq,)).rowcount
            conn.execute("DELETE FROM streams WHERE first_seq < ?", (seq,))
        return int(dropped)

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
                if is_purged(record):
                    pass  # convlog purge removed its text: nothing to index
                elif kind in STREAM_KINDS:
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
        with open_segment(segment_path(self.directory, segment)) as fh:
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


def delete_index(directory: str | Path) -> bool:
    """Delete the search index of a log directory (``index/search.sqlite`` and its
    ``-wal``, ``-shm`` and ``-journal`` files), with the bytes of every text it held; the
    next reader builds it again from the log. Used by ``convlog purge``: a SQLite file
    keeps deleted rows in free pages, so the index is deleted and built again rather than
    edited. Taken under the set-up lock (``index/search.lock``), so no reader is opening
    it meanwhile; a reader that had it open goes on with the deleted file.

    Args:
        directory: the log directory.

    Returns:
        True when there was an index file to delete.

    Raises:
        OSError: when a file cannot be deleted.
    """
    folder = Path(directory) / INDEX_DIR
    if not folder.is_dir():
        return False
    found = False
    with open(folder / LOCK_FILE, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(folder / f"{INDEX_FILE}{suffix}")
            except FileNotFoundError:
                continue
            found = True
    return found
