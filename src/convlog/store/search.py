"""Full-text search over the log: queries against the SQLite FTS5 index of
:mod:`convlog.store.search_index` (which builds it and keeps it up to date), the hits
they return and their snippets.

Snippets: the text of each hit (at most ``limit`` records) is read back from the log
and run through the same FTS5 query in a temporary in-memory FTS5 table, whose
``snippet()`` marks the matches with :data:`MARK_START` / :data:`MARK_END`, so the
highlighting follows exactly the tokenizer and query syntax that found the hit.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from convlog.core.record import format_ts, parse_when
from convlog.core.view import own_time
from convlog.store.search_index import STEM_TOKENIZER, STREAM_KINDS, TOKENIZER, TextIndex, record_text
from convlog.store.segment import UNREADABLE, find_record, open_segment, scan_for_seq, segment_name, segment_path

#: Tokens in a snippet (FTS5 allows at most 64).
SNIPPET_TOKENS = 24
#: Markers around a matched term in :attr:`Hit.snippet` (STX / ETX control characters,
#: which do not occur in text; the output module turns them into highlights).
MARK_START, MARK_END = "\x02", "\x03"

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
        sent: the message's own time (:func:`convlog.core.view.own_time`), or None.
    """

    seq: int
    ts: str | None
    session: str | None
    speaker: str | None
    kind: str
    snippet: str
    source: str | None = None
    copies: int = 1
    sent: str | None = None

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


class SearchIndex(TextIndex):
    """The full-text index of one log directory, with its queries (:meth:`query`).
    Opening, building and keeping it up to date, the constructor's arguments and errors
    are those of :class:`convlog.store.search_index.TextIndex`."""

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
                texts, sent = self._texts(conn, rows)
            finally:
                conn.execute("COMMIT")
            break
        # (with prefixes, the snippets highlight every form of the words)
        snippets = self._snippets(prefixed, texts) if prefixed is not None else self._snippets(text, texts, stem)
        return [
            Hit(seq=row[0], ts=row[1], session=row[2], speaker=row[3], kind=row[4], snippet=snippets[row[0]],
                source=row[5], copies=row[8], sent=sent.get(row[0]))
            for row in rows
        ]

    def _texts(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> tuple[dict[int, str], dict[int, str]]:
        """The text of each hit (a stream's from ``streams``, any other record's read
        from its line in the log) and, by seq, the own time of those that carry one."""
        texts: dict[int, str] = {}
        sent: dict[int, str] = {}
        for seq, _ts, _session, _speaker, kind, _source, segment, offset, _copies in rows:
            if kind in STREAM_KINDS:
                found = conn.execute("SELECT text FROM streams WHERE first_seq = ?", (seq,)).fetchone()
                texts[seq] = found[0] if found else ""
            else:
                record = self._read(segment, offset, seq)
                texts[seq] = (record_text(record) if record else None) or ""
                own = own_time(record) if record else None
                if own is not None:
                    sent[seq] = own
        return texts, sent

    def _read(self, segment: int, offset: int, seq: int) -> dict[str, Any] | None:
        """The record ``seq`` whose line starts at (or, past skipped invalid lines, after)
        ``offset`` of the segment named by ``segment``; a search by seq as a fallback."""
        try:
            with open_segment(segment_path(self.directory, segment_name(segment))) as fh:
                fh.seek(offset)
                record = scan_for_seq(fh, seq, limit=64)
                if record is not None:
                    return record
        except (OSError, *UNREADABLE):
            pass  # gone, or a damaged sealed segment: find_record answers None for it
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
