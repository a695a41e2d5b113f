"""What ``convlog serve`` reads: a log directory (:class:`LogSource`) or the PostgreSQL
store (:class:`DbSource`), answering in the shapes of the command line's ``--json``.

Both answer the same four questions, each a JSON-friendly dict that the API returns as
is and the pages render:

* :meth:`~LogSource.sessions`: a page of sessions (:class:`SessionQuery`), each row
  :func:`convlog.readers.listing.session_row` (``convlog sessions --json``) plus the
  ``title`` and ``usage`` that ``sessions --db --json`` rows carry;
* :meth:`~LogSource.session`: :func:`convlog.readers.listing.session_document`
  (``convlog show --format json``) plus the title, usage, crystals (with their
  summaries), checkpoints and rewinds, and where the page stands in the log;
* :meth:`~LogSource.search`: :meth:`convlog.store.search.Hit.as_dict` per hit
  (``convlog search --json``), from the same index and query;
* :meth:`~LogSource.health`: ``(exit code, convlog status --json)``.

A log's fold is kept between requests (:class:`ReplayCache`) while its segments stay
the same size, so a page does not fold the log again unless it grew.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from convlog.core.record import format_ts, parse_when
from convlog.readers.listing import SESSION_ORDERS, session_document, session_row, sorted_sessions
from convlog.store.replay import Replay, load, parse_as_of
from convlog.store.segment import list_segments, segment_size
from convlog.web.charts import TOP_SESSIONS, LogCharts

log = logging.getLogger("convlog.web")

#: Sessions in one page (``?page=``), as ``convlog sessions`` prints them.
PAGE_SIZE = 50

#: Search hits at most per query (``convlog search --limit``'s default is 20).
SEARCH_LIMIT = 50


class BadQueryError(ValueError):
    """A filter or query the user has to fix (a time that is not one, a search the index
    cannot parse); the message is one readable line (the API answers 400)."""


class SearchIndexError(RuntimeError):
    """The log's search index could not be brought up to date or read (a read-only
    directory, a damaged index, a full disk); the message says how to rebuild it (the
    API answers 503)."""


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """A page of the sessions list and its filters (the query string of ``/`` and
    ``/api/sessions``).

    Attributes:
        text: keep sessions whose id, title, branch or a participant contains it (any case).
        agent: keep sessions this sender took part in (any case).
        model: keep sessions with a request to this model.
        since: keep sessions active at or after this time: ISO 8601, ``today``,
            ``yesterday`` or a span back from now (``15m``, ``2h``, ``3d``; see
            :func:`convlog.core.record.parse_when`).
        order: a key of :data:`convlog.readers.listing.SESSION_ORDERS`.
        page: 1-based page of :data:`PAGE_SIZE` sessions.
        include_deleted: also deleted sessions.
    """

    text: str = ""
    agent: str = ""
    model: str = ""
    since: str = ""
    order: str = "recent"
    page: int = 1
    include_deleted: bool = False

    def since_ts(self, now: datetime | None = None) -> str | None:
        """``since`` in the records' time format, or None when empty.

        Raises:
            BadQueryError: when it is not a time.
        """
        if not self.since.strip():
            return None
        try:
            return format_ts(parse_when(self.since, now or datetime.now(UTC)))
        except ValueError:
            raise BadQueryError(f"since={self.since!r} is not a time (ISO 8601, today, yesterday, 15m, 2h, 3d)"
                                ) from None


def _paged(rows_total: int, query: SessionQuery) -> dict[str, Any]:
    pages = max(1, -(-rows_total // PAGE_SIZE))
    return {"total": rows_total, "page": query.page, "pages": pages, "page_size": PAGE_SIZE,
            "order": query.order, "order_text": SESSION_ORDERS[query.order][1]}


class ReplayCache:
    """Folds of one log directory kept between requests: a fold is used again while
    every segment keeps its size (a log only grows, so a changed size means new
    records), for at most ``size`` different ``as_of`` points. Thread-safe (Starlette
    runs the endpoints in a thread pool).

    A big log beside a running recorder grows between most requests, and folding it
    again (from its newest checkpoint) takes about a second at 100,000 sessions. So
    when the whole log's last fold took longer than :attr:`SLOW_FOLD_S`, a request that
    finds the log grown is answered from that fold, while one background thread folds
    it again (stale while revalidating, as HTTP caches do: RFC 5861); the new fold
    answers once made. A small log is folded again at once, as before.

    Args:
        directory: the log directory.
        size: folds kept at most (the whole log and recent ``as_of`` views).
    """

    #: A whole-log fold slower than this, seconds, is refreshed in the background.
    SLOW_FOLD_S = 0.25

    def __init__(self, directory: Path, size: int = 8) -> None:
        self.directory = directory
        self.size = size
        self._folds: OrderedDict[tuple[Any, ...], Replay] = OrderedDict()
        self._lock = threading.Lock()
        self._latest: tuple[tuple[Any, ...], Replay, float] | None = None  # whole log: key, fold, seconds
        self._refreshing = False

    def _refresh(self, key: tuple[Any, ...]) -> None:
        """Fold the whole log again in the background (see the class doc)."""
        try:
            started = time.monotonic()
            replay = load(self.directory)
            with self._lock:
                self._store(key, replay, time.monotonic() - started)
        except Exception:  # the next request folds it in the foreground and reports
            log.exception("folding %s again in the background failed", self.directory)
        finally:
            with self._lock:
                self._refreshing = False

    def _store(self, key: tuple[Any, ...], replay: Replay, seconds: float | None = None) -> None:
        self._folds[key] = replay
        self._folds.move_to_end(key)
        while len(self._folds) > self.size:
            self._folds.popitem(last=False)
        if seconds is not None:
            self._latest = (key, replay, seconds)
            # A big fold is hundreds of MB of long-lived objects: left to the cyclic
            # garbage collector, each full collection walks them all (a request then
            # takes 100-200 ms more). The fold holds no reference cycles (a dropped fold
            # is freed by reference counting: tested), so it is moved out of the
            # collector's generations (gc.freeze, Python 3.7+).
            gc.freeze()

    def _fingerprint(self) -> tuple[tuple[int, int], ...]:
        return tuple((first, segment_size(path)) for first, path in list_segments(self.directory))

    def get(self, upto_seq: int | None = None, as_of_ts: str | None = None) -> Replay:
        """The log folded up to ``upto_seq`` / ``as_of_ts`` (both None: all of it), as
        :func:`convlog.store.replay.load` gives it.

        Raises:
            NoLogError: when the directory holds no log.
        """
        key = (self._fingerprint(), upto_seq, as_of_ts)
        whole = upto_seq is None and as_of_ts is None
        with self._lock:
            replay = self._folds.get(key)
            if replay is not None:
                self._folds.move_to_end(key)
                return replay
            if whole and self._latest is not None and self._latest[2] > self.SLOW_FOLD_S:
                if not self._refreshing:
                    self._refreshing = True
                    threading.Thread(target=self._refresh, args=(key,), name="convlog-serve-fold",
                                     daemon=True).start()
                return self._latest[1]
            started = time.monotonic()
            replay = load(self.directory, upto_seq=upto_seq, as_of_ts=as_of_ts)
            self._store(key, replay, time.monotonic() - started if whole else None)
            return replay


@dataclass(frozen=True, slots=True)
class _Listing:
    """One fold's sessions in one order (:class:`convlog.core.fold.Session`), with every
    participant and model among them (for the filters)."""

    sessions: list[Any]
    agents: list[str]
    models: list[str]


def _session_extras(replay: Replay, sid: str) -> dict[str, Any]:
    """What the session page shows beside ``show --format json``: title, usage,
    crystals (``seq``, ``upto`` messages summarised, ``summary`` read from the log,
    ``current``: the one ``convlog resume`` starts from), checkpoints (``name``, ``seq``,
    ``at`` messages), rewinds (``seq``, ``from`` and ``to`` message counts, ``dropped``)."""
    info = replay.state.sessions[sid]
    resume = replay.state.resume_refs(sid)[0]
    bodies = replay.read([c.seq for c in info.crystals])
    crystals = []
    for crystal in info.crystals:
        data = bodies.get(crystal.seq, {}).get("data")
        crystals.append({"seq": crystal.seq, "upto": crystal.upto,
                         "summary": data.get("summary") if isinstance(data, dict) else None,
                         "current": resume is not None and crystal.seq == resume.seq})
    return {
        "title": info.title,
        "usage": info.usage.to_dict(),
        "participants": list(info.participants),
        "duplicates": info.duplicates,
        "first_seq": info.first_seq,
        "last_seq": info.last_seq,
        "last_activity": info.last_ts,
        "crystals": crystals,
        "checkpoints": [{"name": name, "seq": cp.seq, "at": len(cp.refs)} for name, cp in info.checkpoints.items()],
        "rewinds": [{"seq": r.seq, "from": r.from_count, "to": r.to_count, "dropped": len(r.dropped)}
                    for r in info.rewinds],
    }


def tree_document(tree: Any) -> dict[str, Any]:
    """A :class:`convlog.web.tree.Tree` as the API's ``tree`` member: ``nodes`` (``id``,
    ``kind``, ``session``, ``seq``, ``ts``, ``label``, ``as_of``, ``count``), ``edges``
    (``source``, ``target``, ``kind``), ``lanes``, ``axis`` and ``hidden``."""
    return {
        "nodes": [{"id": n.id, "kind": n.kind, "session": n.session, "seq": n.seq, "ts": n.ts, "label": n.label,
                   "as_of": n.as_of, "count": n.count} for n in tree.nodes],
        "edges": [{"source": e.source, "target": e.target, "kind": e.kind} for e in tree.edges],
        "lanes": list(tree.lanes),
        "axis": tree.axis,
        "hidden": tree.hidden,
    }


def selected_nodes(tree: Any, sid: str) -> list[str]:
    """The node(s) of ``sid``'s lane the page stands at. The tree is drawn at the
    page's cut, so its ``end`` is always there: a node of another kind at the same
    point (the checkpoint, rewind, crystal or messages clicked) is preferred."""
    lane = [n for n in tree.nodes if n.session == sid]
    ends = [n for n in lane if n.kind == "end"]
    if not ends:
        return []
    at = [n.id for n in lane if n.kind != "end" and n.as_of == ends[-1].as_of]
    return at or [ends[-1].id]


def _matches(info: Any, query: SessionQuery, since_ts: str | None) -> bool:
    if query.text:
        needle = query.text.casefold()
        fields = (info.id, info.title or "", info.branch or "", *info.participants)
        if not any(needle in field.casefold() for field in fields):
            return False
    if query.agent and query.agent.casefold() not in {p.casefold() for p in info.participants}:
        return False
    if query.model and query.model not in info.usage.models:
        return False
    return not (since_ts is not None and (info.last_ts or "") < since_ts)


class LogSource:
    """The pages' answers from a log directory (see the module doc).

    Args:
        directory: the log directory (it need not hold a log yet: each answer raises
            :class:`convlog.store.replay.NoLogError` until it does).
    """

    #: A log can be shown as of any seq (``as_of``).
    time_travel = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.folds = ReplayCache(directory)
        self.charts = LogCharts(directory, self.folds.get)
        self._lock = threading.Lock()
        self._listed: Replay | None = None
        self._listings: dict[tuple[bool, str], _Listing] = {}
        self._trees: OrderedDict[tuple[int, str], tuple[Replay, Any]] = OrderedDict()

    def _listing(self, replay: Replay, include_deleted: bool, order: str) -> _Listing:
        """The sessions of ``replay`` in ``order`` with every agent and model, made once
        per fold (a page of an unfiltered list then costs a slice, however many
        sessions the log holds); forgotten when the fold is replaced."""
        key = (include_deleted, order)
        with self._lock:
            if self._listed is not replay:
                self._listed, self._listings = replay, {}
            found = self._listings.get(key)
        if found is None:
            every = sorted_sessions(replay.state, include_deleted, order)
            found = _Listing(every, sorted({p for info in every for p in info.participants}, key=str.casefold),
                             sorted({m for info in every for m in info.usage.models}))
            with self._lock:
                if self._listed is replay:
                    self._listings[key] = found
        return found

    @property
    def where(self) -> str:
        """What the pages name as the source: the directory."""
        return str(self.directory)

    def sessions(self, query: SessionQuery) -> dict[str, Any]:
        """A page of sessions matching ``query``.

        Returns:
            ``{"sessions": [row, …], "total", "page", "pages", "page_size", "order",
            "order_text", "agents", "models"}``: each row as ``convlog sessions --json``
            plus ``title`` and ``usage`` (requests, input_tokens, output_tokens,
            cost_usd in US dollars, models); ``total`` the sessions matching in all;
            ``agents`` and ``models`` every participant and model of the log (for the
            filters).

        Raises:
            BadQueryError: for a ``since`` that is not a time.
            NoLogError: when the directory holds no log.
        """
        since_ts = query.since_ts()
        listing = self._listing(self.folds.get(), query.include_deleted, query.order)
        filtered = query.text or query.agent or query.model or since_ts is not None
        kept = [info for info in listing.sessions if _matches(info, query, since_ts)] if filtered \
            else listing.sessions
        start = (query.page - 1) * PAGE_SIZE
        rows = [{**session_row(info), "title": info.title, "usage": info.usage.to_dict()}
                for info in kept[start:start + PAGE_SIZE]]
        return {"sessions": rows, **_paged(len(kept), query), "agents": listing.agents, "models": listing.models}

    def session(self, name: str, as_of: str | None = None) -> dict[str, Any]:
        """One session (an id or unique prefix), as of a seq or time (``convlog show
        --as-of``).

        Returns:
            ``convlog show --format json`` (``session``, ``parent``, ``fork_at``,
            ``branch``, ``deleted``, ``messages``) plus :func:`_session_extras`
            (``title``, ``usage``, ``participants``, ``duplicates``, ``first_seq``,
            ``last_seq``, ``last_activity``, ``crystals``, ``checkpoints``, ``rewinds``),
            ``as_of`` (the seq or time asked, or None), ``log_last_seq`` and
            ``seq_range`` (``[first, last]`` seqs of the session in the whole log, for
            the time slider).

        Raises:
            BadQueryError: for an ``as_of`` that is neither a seq nor a time.
            UnknownSessionError: when no session (as of then) or several match.
            NoLogError: when the directory holds no log.
        """
        whole = self.folds.get()
        sid = whole.resolve(name)
        replay = whole
        if as_of:
            try:
                seq, ts = parse_as_of(as_of)
            except ValueError as exc:
                raise BadQueryError(str(exc).replace("--as-of", "as_of")) from None
            replay = self.folds.get(seq, ts)
            if sid not in replay.state.sessions:
                from convlog.store.replay import UnknownSessionError

                raise UnknownSessionError(f"session {sid!r} did not exist yet as of {as_of}")
        full = whole.state.sessions[sid]
        return {**session_document(replay, sid), **_session_extras(replay, sid), "as_of": as_of or None,
                "log_last_seq": whole.state.last_seq, "seq_range": [full.first_seq, full.last_seq],
                "tree": tree_document(self._tree(replay, sid))}

    def session_view(self, name: str, as_of: str | None = None) -> tuple[dict[str, Any], str | None]:
        """What the session page shows: :meth:`session` and its tree drawn as SVG
        (:func:`convlog.web.tree.render_svg`), the node the page stands at selected
        (:func:`selected_nodes`).

        Raises:
            as :meth:`session`.
        """
        from convlog.web.tree import render_svg

        data = self.session(name, as_of)
        replay = self.folds.get(*parse_as_of(as_of)) if as_of else self.folds.get()
        tree = self._tree(replay, data["session"])
        return data, render_svg(tree, selected=selected_nodes(tree, data["session"]))

    def _tree(self, replay: Replay, sid: str) -> Any:
        """The session's tree (:func:`convlog.web.tree.tree_of`) at the fold's cut, kept
        for the last few folds (a page and its API share it)."""
        from convlog.web.tree import tree_of

        key = (id(replay), sid)
        with self._lock:
            found = self._trees.get(key)
            if found is not None and found[0] is replay:
                return found[1]
        tree = tree_of(replay, sid)
        with self._lock:
            self._trees[key] = (replay, tree)
            while len(self._trees) > 16:
                self._trees.popitem(last=False)
        return tree

    def search(self, text: str, limit: int = SEARCH_LIMIT, **filters: Any) -> list[dict[str, Any]]:
        """``convlog search TEXT --json``: the index brought up to date, then queried.

        Args:
            text: the query (SQLite FTS5 syntax).
            limit: at most this many hits.
            **filters: ``session``, ``speaker``, ``kind``, ``since``, ``until``,
                ``stem`` as :meth:`convlog.store.search.SearchIndex.query` takes them.

        Returns:
            :meth:`convlog.store.search.Hit.as_dict` per hit, newest first.

        Raises:
            BadQueryError: for a query or time the index cannot use.
            SearchIndexError: when the index cannot be updated or read.
        """
        import sqlite3

        from convlog.store.search import SearchIndex, SearchQueryError

        try:
            with SearchIndex(self.directory) as index:
                index.update()
                hits = index.query(text, limit=limit, **filters)
        except SearchQueryError as exc:
            raise BadQueryError(str(exc)) from None
        except (sqlite3.Error, OSError) as exc:
            raise SearchIndexError(f"the search index {self.directory / 'index' / 'search.sqlite'} failed: {exc} "
                                   f"(it is derived from the log: convlog reindex --dir {self.directory} rebuilds it)"
                                   ) from None
        return [hit.as_dict() for hit in hits]

    def health(self) -> tuple[int, dict[str, Any]]:
        """``convlog status --json`` for this directory's recorder and its exit code
        (:func:`convlog.bus.control.status_report`)."""
        from convlog.bus.control import status_report

        return status_report(self.directory, timeout_s=3.0)

    def doctor(self, report: dict[str, Any]) -> list[dict[str, Any]]:
        """What ``convlog doctor`` says about this directory's set-up
        (:func:`convlog.recorder.doctor.run_checks`, with the configuration of
        ``$CONVLOG_CONFIG`` or the defaults).

        Args:
            report: what :meth:`health` answered (the recorder's ``status`` reply when
                one runs, which the checks read).

        Returns:
            ``[{"name", "ok", "message", "fix"}]``, in doctor's order.
        """
        from dataclasses import asdict

        from convlog.recorder.doctor import check_inputs, run_checks

        status = report if report.get("running") else None
        config, endpoints = check_inputs(None, (), status)
        checks = run_checks(None, self.directory, endpoints, status, silence_s=float(config.silence_threshold_s))
        return [asdict(check) for check in checks]

    def usage(self, top: int = TOP_SESSIONS) -> dict[str, Any]:
        """Tokens and cost per model, per session (the ``top`` by cost) and per day:
        :meth:`convlog.web.charts.LogCharts.usage`, from the cached fold and one kept
        pass over the log's ``llm.request`` records.

        Raises:
            NoLogError: when the directory holds no log.
        """
        return self.charts.usage(top)

    def health_log(self) -> dict[str, Any]:
        """What ``convlog info`` and the sync say about the log's health, with gaps per
        publisher and drops over time: :meth:`convlog.web.charts.LogCharts.health`.

        Raises:
            NoLogError: when the directory holds no log.
        """
        return self.charts.health()


class DbSource:
    """The pages' answers from the PostgreSQL store (``--db URL``), through
    :mod:`convlog.db.queries`, in the shapes of ``convlog sessions|show|search --db
    --json``. Each answer opens its own reader connection (``connect_reader`` checks
    the schema).

    Args:
        url: the database URL.
    """

    #: The database has no ``as_of`` (its seqs are per log): the session page has no slider.
    time_travel = False

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def where(self) -> str:
        """What the pages name as the source: the URL without its password."""
        from convlog.db.schema import redact_url

        return redact_url(self.url)

    def _connect(self) -> Any:
        from convlog.db.queries import connect_reader

        return connect_reader(self.url)

    def sessions(self, query: SessionQuery) -> dict[str, Any]:
        """As :meth:`LogSource.sessions`, from ``convlog.sessions`` (rows of
        :func:`convlog.db.queries.session_rows`): the database filters, sorts and
        pages, so only the page's rows are fetched.

        Raises:
            BadQueryError: for a ``since`` that is not a time.
            DatabaseError: when the database cannot be read.
            SchemaError: when it holds no convlog schema of this version.
        """
        from convlog.db.queries import session_facets, session_rows

        since_ts = query.since_ts()
        conn = self._connect()
        try:
            rows, total = session_rows(conn, query.include_deleted, query.order, PAGE_SIZE, text=query.text,
                                       agent=query.agent, model=query.model, since=since_ts,
                                       offset=(query.page - 1) * PAGE_SIZE)
            agents, models = session_facets(conn, query.include_deleted)
        finally:
            conn.close()
        return {"sessions": rows, **_paged(total, query), "agents": agents, "models": models}

    def _session(self, name: str, as_of: str | None) -> tuple[dict[str, Any], Any]:
        from convlog.db.projection import UnionReplay
        from convlog.db.queries import resolve_session, union_of
        from convlog.web.tree import session_tree

        if as_of:
            raise BadQueryError("as_of reads a log directory; it is not available with --db")
        conn = self._connect()
        try:
            sid = resolve_session(conn, name)
            union = union_of(conn, [sid])
        finally:
            conn.close()
        replay = UnionReplay(union, self.where)
        info = replay.state.sessions[sid]
        tree = session_tree(replay.state, union.records, sid)
        return {**session_document(replay, sid), **_session_extras(replay, sid), "as_of": None,
                "log_last_seq": replay.state.last_seq, "seq_range": [info.first_seq, info.last_seq],
                "tree": tree_document(tree)}, tree

    def session(self, name: str, as_of: str | None = None) -> dict[str, Any]:
        """As :meth:`LogSource.session`, folded from the database's records of the
        session's family (``convlog show --db``); ``as_of`` is not available. The
        ``tree`` is drawn from the same records, numbered in receive-time order (the
        seqs of the family's union, as ``show --db`` numbers them, not any one log's).

        Raises:
            BadQueryError: when ``as_of`` is given.
            UnknownSessionError: when no session or several match ``name``.
            DatabaseError: when the database cannot be read.
            SchemaError: when it holds no convlog schema of this version.
        """
        return self._session(name, as_of)[0]

    def session_view(self, name: str, as_of: str | None = None) -> tuple[dict[str, Any], str | None]:
        """:meth:`session` and its tree as SVG; a node links to its lane's session (the
        database has no ``as_of``), the session's ``end`` is marked."""
        from urllib.parse import quote

        from convlog.web.tree import render_svg

        data, tree = self._session(name, as_of)
        return data, render_svg(tree, link=lambda node: f"/sessions/{quote(node.session, safe='')}",
                                selected=selected_nodes(tree, data["session"]))

    def search(self, text: str, limit: int = SEARCH_LIMIT, **filters: Any) -> list[dict[str, Any]]:
        """``convlog search --db --json`` (:func:`convlog.db.queries.search`; ``stem``
        is not available).

        Raises:
            BadQueryError: when ``stem`` is asked for.
            DatabaseError: when the database cannot be read (or refuses the query).
            SchemaError: when it holds no convlog schema of this version.
        """
        from convlog.db.queries import search

        if filters.pop("stem", False):
            raise BadQueryError("stem is for a log's index; with --db, search matches words as written")
        conn = self._connect()
        try:
            hits = search(conn, text, limit=limit, **filters)
        finally:
            conn.close()
        return [hit.as_dict() for hit in hits]

    def doctor(self, report: dict[str, Any]) -> None:
        """None: ``convlog doctor`` checks a host's recorder set-up, which the database
        does not hold (serve that host's log directory for it)."""
        return None

    def health(self) -> tuple[int, dict[str, Any]]:
        """``convlog status --db --json``: each synced log's position and lag
        (:func:`convlog.db.writer.lag_rows`), 0 when the database answers; 1 with the
        reason when it does not.
        """
        from convlog.db.schema import DatabaseError, SchemaError
        from convlog.db.writer import lag_rows

        try:
            conn = self._connect()
        except (DatabaseError, SchemaError) as exc:
            return 1, {"running": False, "healthy": False, "problems": [str(exc)]}
        try:
            return 0, {"healthy": True, "logs": lag_rows(conn)}
        finally:
            conn.close()

    def usage(self, top: int = TOP_SESSIONS) -> dict[str, Any]:
        """As :meth:`LogSource.usage`, from ``convlog.llm_requests`` by SQL ``GROUP BY``
        (:func:`convlog.web.charts.db_usage`).

        Raises:
            DatabaseError: when the database cannot be read.
            SchemaError: when it holds no convlog schema of this version.
        """
        from convlog.web.charts import db_usage

        conn = self._connect()
        try:
            return db_usage(conn, top)
        finally:
            conn.close()

    def health_log(self) -> dict[str, Any] | None:
        """None: the database's health is its logs' lag (:meth:`health`); the log's own
        figures are read where the log is (``convlog serve --dir``)."""
        return None
