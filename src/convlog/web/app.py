"""The Starlette application of ``convlog serve``: its pages, the JSON API behind each
(the same dicts, from :mod:`.sources`), the OpenAPI schema and the static files.

Routes (all ``GET``/``HEAD``; :class:`convlog.web.access.Guard` is in front of all):

=========================  ===================================================
``/``                      sessions: filters, sortable columns, pages of 50
``/api/sessions``          the same as JSON
``/sessions/{id}``         one session (``?as_of=SEQ|TIME``: as it was then)
``/api/sessions/{id}``     the same as JSON
``/search?q=``             full-text search, matches highlighted
``/api/search?q=``         the same as JSON
``/live``                  new records as they are recorded (``?session=``, ``?kind=``)
``/api/events``            the same as server-sent events (:mod:`convlog.web.live`)
``/health``                ``convlog status --json``, HTTP 200 when ``status`` would exit 0, else 503
``/api/health``            the same
``/status``                the same for a person, with the log's health charts
``/api/health/log``        gaps and drops over time, disk use, horizon, sync (``info``)
``/api/doctor``            the set-up checks of ``convlog doctor``, each with its fix
``/usage``                 tokens and cost per model, session and day, as charts
``/api/usage``             the same as JSON
``/api/schema``            the OpenAPI document of the API
``/static/…``              styles, scripts (htmx is vendored: nothing from a CDN)
=========================  ===================================================

A request made by htmx (``HX-Request: true``) for ``/`` or ``/search`` gets only the
part of the page it swaps in. Errors answer with RFC 9110's codes: 400 for a filter or
query to fix, 404 for an unknown session or a directory with no log, 503 when the
database cannot be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.schemas import SchemaGenerator
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from convlog.core.record import dump_json
from convlog.readers.listing import SESSION_ORDERS
from convlog.readers.tail import RecordFilter
from convlog.web.access import ANONYMOUS, Access, Guard
from convlog.web.charts import TOP_MAX, TOP_SESSIONS
from convlog.web.live import BACKLOG_MAX, PING_S, LiveFeed
from convlog.web.sources import SEARCH_LIMIT, BadQueryError, SearchIndexError, SessionQuery

HERE = Path(__file__).resolve().parent

#: Rows the Live page keeps (the newest first; older ones are dropped).
LIVE_ROWS = 200

#: The OpenAPI document's fixed part; the paths come from the endpoints' docstrings.
SCHEMA = SchemaGenerator({"openapi": "3.0.3", "info": {"title": "convlog serve", "version": "1"}})


class ConvlogJSON(JSONResponse):
    """A JSON response encoded as the CLI encodes its ``--json`` (orjson,
    :func:`convlog.core.record.dump_json`), so the API's bytes read like the CLI's."""

    def render(self, content: Any) -> bytes:
        """``content`` as JSON bytes (UTF-8, compact)."""
        return dump_json(content)


# --------------------------------------------------------------------------- template filters


def ago(ts: str | None, now: datetime | None = None) -> str:
    """A receive or send time (RFC 3339) as people read it: ``just now``, ``42 s ago``,
    ``3 min ago``, ``5 h ago``, ``2 d ago``, then the date (``2025-11-02``); ``""`` for
    None, the text itself when it is not a time."""
    if not ts:
        return ""
    try:
        when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    if seconds < 0:
        return "in the future"
    steps = ((5, "", 0), (60, "s", 1), (3600, "min", 60), (86400, "h", 3600), (86400 * 30, "d", 86400))
    for limit, unit, size in steps:
        if seconds < limit:
            return "just now" if not unit else f"{int(seconds // size)} {unit} ago"
    return when.strftime("%Y-%m-%d")


def exact(ts: str | None) -> str:
    """A time for a ``title`` attribute: ``2025-11-02 14:03:07.123456 UTC``."""
    return "" if not ts else ts.replace("T", " ").replace("Z", " UTC")


def marked(hit: dict[str, Any]) -> Markup:
    """A search hit's snippet (``snippet`` and ``highlights`` of
    :meth:`convlog.store.search.Hit.as_dict`) as HTML: the text escaped piece by piece,
    each match wrapped in ``<mark>``."""
    text: str = hit.get("snippet") or ""
    parts: list[Markup] = []
    at = 0
    for start, end in hit.get("highlights") or ():
        parts.append(escape(text[at:start]))
        parts.append(Markup("<mark>") + escape(text[start:end]) + Markup("</mark>"))
        at = end
    parts.append(escape(text[at:]))
    return Markup("").join(parts)


def dollars(value: float | None) -> str:
    """A cost in US dollars: ``$0.0123``; ``""`` for none."""
    return "" if not value else f"${value:,.4f}"


def with_query(request: Request, **changes: Any) -> str:
    """The request's query string with ``changes`` (None or ``""`` removes a key), as
    ``?a=1&b=2`` (``""`` when empty), for links that keep the filters."""
    params = dict(request.query_params)
    params.pop("token", None)
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = str(value)
    return f"?{urlencode(params)}" if params else ""


def templates() -> Jinja2Templates:
    """The page templates (``templates/``) with autoescaping on for every template
    (a recorded message is untrusted input) and the filters above."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(ago=ago, exact=exact, marked=marked, dollars=dollars)
    env.globals.update(with_query=with_query, orders=SESSION_ORDERS)
    return Jinja2Templates(env=env)


# --------------------------------------------------------------------------- answers


def _int(request: Request, name: str, default: int, low: int = 1) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < low:
        raise BadQueryError(f"{name}={raw!r} is not a whole number ≥ {low}")
    return int(raw)


def session_query(request: Request) -> SessionQuery:
    """The :class:`~convlog.web.sources.SessionQuery` of a request's query string
    (``q``, ``agent``, ``model``, ``since``, ``sort``, ``page``, ``all``).

    Raises:
        BadQueryError: for an unknown ``sort`` or a ``page`` that is not a number ≥ 1.
    """
    params = request.query_params
    order = params.get("sort") or "recent"
    if order not in SESSION_ORDERS:
        raise BadQueryError(f"sort={order!r} is not one of {', '.join(SESSION_ORDERS)}")
    return SessionQuery(text=params.get("q", "").strip(), agent=params.get("agent", ""),
                        model=params.get("model", ""), since=params.get("since", ""), order=order,
                        page=_int(request, "page", 1), include_deleted=params.get("all") in ("1", "true", "on"))


#: Messages a session page shows at once (the API gives them all).
MESSAGES_PER_PAGE = 500


@dataclass(frozen=True, slots=True)
class MessageWindow:
    """Which of a session's messages its page shows: ``start``..``end`` (1-based,
    inclusive) of ``total``; ``earlier``/``later`` the ``?from=`` of the windows before
    and after (None at either end)."""

    start: int
    end: int
    total: int
    earlier: int | None
    later: int | None


def message_window(total: int, first: int = 0) -> MessageWindow:
    """The window of :data:`MESSAGES_PER_PAGE` messages from message ``first`` (1-based;
    0 or out of range: the newest ones, as a chat shows them), for a session of ``total``
    messages."""
    size = MESSAGES_PER_PAGE
    newest = max(1, total - size + 1)
    start = first if 1 <= first <= total else newest
    end = min(total, start + size - 1)
    return MessageWindow(start, end, total, max(1, start - size) if start > 1 else None,
                         end + 1 if end < total else None)


def search_args(request: Request) -> tuple[str, dict[str, Any]]:
    """The query text and filters of ``/search`` and ``/api/search`` (``q``,
    ``session``, ``speaker``, ``kind``, ``since``, ``until``, ``limit``, ``stem``), as
    :meth:`~convlog.web.sources.LogSource.search` takes them."""
    params = request.query_params
    filters: dict[str, Any] = {key: params[key] for key in ("session", "speaker", "kind", "since", "until")
                               if params.get(key)}
    if params.get("stem") in ("1", "true", "on"):
        filters["stem"] = True
    filters["limit"] = min(_int(request, "limit", SEARCH_LIMIT), 500)
    return params.get("q", "").strip(), filters


def _failure(exc: Exception) -> tuple[int, str] | None:
    """The status and message for an expected failure, None for a bug."""
    from convlog.db.schema import DatabaseError, SchemaError
    from convlog.store.replay import NoLogError, UnknownSessionError

    if isinstance(exc, BadQueryError):
        return 400, str(exc)
    if isinstance(exc, UnknownSessionError | NoLogError):
        return 404, str(exc)
    if isinstance(exc, DatabaseError | SchemaError | SearchIndexError):
        return 503, str(exc)
    return None


class Pages:
    """The endpoints, bound to one source (:class:`~convlog.web.sources.LogSource` or
    :class:`~convlog.web.sources.DbSource`). Each page renders the dict its API
    endpoint returns."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.templates = templates()
        directory = getattr(source, "directory", None)
        #: Live's watch of the log (None with ``--db``).
        self.live = LiveFeed(directory) if directory is not None else None

    def _page(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        context = {"where": self.source.where, "nav": request.url.path, "time_travel": self.source.time_travel,
                   **context}
        response = self.templates.TemplateResponse(request, name, context, status_code=status)
        response.headers["vary"] = "HX-Request"
        return response

    def _error_page(self, request: Request, exc: Exception) -> Response:
        failure = _failure(exc)
        if failure is None:
            raise exc
        status, message = failure
        return self._page(request, "error.html", {"status": status, "message": message}, status)

    @staticmethod
    def _error_json(exc: Exception) -> Response:
        failure = _failure(exc)
        if failure is None:
            raise exc
        status, message = failure
        return ConvlogJSON({"error": message}, status_code=status)

    @staticmethod
    def _partial(request: Request) -> bool:
        return request.headers.get("hx-request") == "true" and "hx-history-restore-request" not in request.headers

    # -- sessions

    def sessions_page(self, request: Request) -> Response:
        """The sessions, newest activity first, filtered, a page at a time."""
        try:
            query = session_query(request)
            data = self.source.sessions(query)
        except Exception as exc:
            return self._error_page(request, exc)
        partial = self._partial(request)
        return self._page(request, "_sessions.html" if partial else "sessions.html",
                          {"data": data, "query": query, "partial": partial, "oob": False})

    def sessions_api(self, request: Request) -> Response:
        """A page of sessions as JSON (what ``/`` shows).

        ---
        summary: A page of sessions (convlog sessions --json rows, with title and usage)
        parameters:
          - {name: q, in: query, schema: {type: string}, description: 'text in the id, title, branch or a participant'}
          - {name: agent, in: query, schema: {type: string}, description: 'a participant (sender), any case'}
          - {name: model, in: query, schema: {type: string}, description: 'a model the session made requests to'}
          - {name: since, in: query, schema: {type: string}, description: "active since: ISO 8601, today, 2h, 3d"}
          - {name: sort, in: query, schema: {type: string, enum: [recent, oldest, messages, id]}}
          - {name: page, in: query, schema: {type: integer, minimum: 1}, description: 'pages of 50'}
          - {name: all, in: query, schema: {type: boolean}, description: 'include deleted sessions'}
        responses:
          200:
            description: >
              {"sessions": [{"id", "branch", "parent", "fork_at", "messages", "duplicates",
              "participants", "first_seq", "last_seq", "last_activity", "deleted", "title",
              "usage": {"requests", "input_tokens", "output_tokens", "cost_usd", "models"}}],
              "total", "page", "pages", "page_size", "order", "order_text", "agents", "models"}
          400: {description: '{"error": reason}: a filter to fix'}
          404: {description: '{"error": reason}: no log in the directory'}
        """
        try:
            return ConvlogJSON(self.source.sessions(session_query(request)))
        except Exception as exc:
            return self._error_json(exc)

    # -- one session

    def session_page(self, request: Request) -> Response:
        """One session's messages (:data:`MESSAGES_PER_PAGE` at a time, the newest
        first shown; ``?from=N`` from message N), crystals, usage, tree; ``?as_of=`` for
        the past."""
        try:
            data, svg = self.source.session_view(request.path_params["session"],
                                                 request.query_params.get("as_of") or None)
            window = message_window(len(data["messages"]), _int(request, "from", 0))
        except Exception as exc:
            return self._error_page(request, exc)
        return self._page(request, "session.html", {"data": data, "tree_svg": Markup(svg) if svg else None,
                                                    "window": window,
                                                    "shown": data["messages"][window.start - 1:window.end]})

    def session_api(self, request: Request) -> Response:
        """One session as JSON (what ``/sessions/{id}`` shows).

        ---
        summary: One session (convlog show --format json, with crystals, checkpoints, rewinds, usage)
        parameters:
          - {name: session, in: path, required: true, schema: {type: string}, description: 'an id or unique prefix'}
          - {name: as_of, in: query, schema: {type: string}, description: "a seq or time: the session as it was then"}
        responses:
          200:
            description: >
              {"session", "parent", "fork_at", "branch", "deleted", "messages": [{"index",
              "message_id", "sender", "role", "seq", "ts", "text", "copies", "streamed",
              "complete", "sent"}], "title", "usage", "participants", "duplicates", "first_seq",
              "last_seq", "last_activity", "crystals": [{"seq", "upto", "summary", "current"}],
              "checkpoints": [{"name", "seq", "at"}], "rewinds": [{"seq", "from", "to", "dropped"}],
              "as_of", "log_last_seq", "seq_range": [first, last], "tree": {"nodes": [{"id",
              "kind" (start, messages, fork, rewind, checkpoint, crystal, end), "session", "seq",
              "ts", "label", "as_of" (the seq to open the session as it was at the node),
              "count" (messages visible right after it)}], "edges": [{"source", "target",
              "kind" (continues, forks, rewinds-to)}], "lanes": [session ids], "axis" (time or
              seq), "hidden" (nodes left out to stay under the cap)}: the session's fork tree
              at the as_of cut (with --db: from the family's records in receive-time order,
              numbered 1..N as show --db numbers them)}
          400: {description: '{"error": reason}: an as_of that is neither a seq nor a time'}
          404: {description: '{"error": reason}: no such session (or several match the prefix)'}
        """
        try:
            return ConvlogJSON(self.source.session(request.path_params["session"],
                                                   request.query_params.get("as_of") or None))
        except Exception as exc:
            return self._error_json(exc)

    # -- search

    def search_page(self, request: Request) -> Response:
        """Full-text search with the matches highlighted."""
        hits: list[dict[str, Any]] = []
        error = None
        try:
            text, filters = search_args(request)
            if text:
                hits = self.source.search(text, **filters)
        except Exception as exc:
            failure = _failure(exc)
            if failure is None:
                raise
            error, text = failure[1], request.query_params.get("q", "")
        name = "_hits.html" if self._partial(request) else "search.html"
        return self._page(request, name, {"hits": hits, "q": text, "error": error}, 400 if error else 200)

    def search_api(self, request: Request) -> Response:
        """Search hits as JSON (what ``/search`` shows).

        ---
        summary: Full-text search (convlog search --json), newest first
        parameters:
          - {name: q, in: query, required: true, schema: {type: string}, description: "SQLite FTS5 syntax"}
          - {name: session, in: query, schema: {type: string}}
          - {name: speaker, in: query, schema: {type: string}}
          - {name: kind, in: query, schema: {type: string}}
          - {name: since, in: query, schema: {type: string}}
          - {name: until, in: query, schema: {type: string}}
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 500}}
          - {name: stem, in: query, schema: {type: boolean}}
        responses:
          200:
            description: >
              [{"seq", "ts", "session", "speaker", "kind", "source", "copies", "snippet",
              "highlights": [[start, end]]}]
          400: {description: '{"error": reason}: an empty query or one the index cannot parse'}
        """
        try:
            text, filters = search_args(request)
            if not text:
                raise BadQueryError("q is empty: give the words to search for")
            return ConvlogJSON(self.source.search(text, **filters))
        except Exception as exc:
            return self._error_json(exc)

    # -- health

    def health(self, request: Request) -> Response:
        """``convlog status --json`` with the HTTP status of its exit code (``/health``,
        ``/api/health``); the text after ``---`` is its OpenAPI description.

        ---
        summary: Is the recorder recording? (convlog status --json)
        responses:
          200: {description: 'the recorder''s status reply: {"running": true, "healthy": true, …}'}
          503: {description: '{"running": false, "healthy": false, "problems": [reason]} or an unhealthy status'}
        description: >
          HTTP 200 when convlog status would exit 0, 503 otherwise (RFC 9110 §15.6.4).
          /health without the token (a load balancer, an uptime check) gets the same
          status code and {"healthy": true|false} only.
        """
        code, report = self.source.health()
        if getattr(request.state, ANONYMOUS, False):
            return ConvlogJSON({"healthy": code == 0}, status_code=200 if code == 0 else 503)
        return ConvlogJSON(report, status_code=200 if code == 0 else 503)

    def status_page(self, request: Request) -> Response:
        """What ``convlog status`` says, for a person."""
        from convlog.web.charts import health_charts

        code, report = self.source.health()
        log = self._health_log()
        charts = health_charts(log) if log else []
        checks = self.source.doctor(report)
        return self._page(request, "status.html", {"code": code, "report": report, "log": log, "charts": charts,
                                                   "checks": checks}, 200 if code == 0 else 503)

    def doctor_api(self, request: Request) -> Response:
        """What ``convlog doctor`` says (its checks, each with its fix).

        ---
        summary: The set-up checks of convlog doctor
        responses:
          200:
            description: >
              [{"name" (config, directory, recorder, sub ENDPOINT, silence, clock, retention,
              database), "ok", "message", "fix" (what to do, when not ok)}], in doctor's
              order; the HTTP status is 200 whatever the checks say
          404: {description: '{"error": reason}: with --db (doctor checks a host''s log directory)'}
        """
        _code, report = self.source.health()
        checks = self.source.doctor(report)
        if checks is None:
            return ConvlogJSON({"error": "convlog doctor checks a log directory: serve it with --dir"},
                               status_code=404)
        return ConvlogJSON(checks)

    def _health_log(self) -> dict[str, Any] | None:
        """The log's health figures, None when the source has none (``--db``) or the
        directory holds no log yet."""
        from convlog.store.replay import NoLogError

        try:
            return self.source.health_log()
        except NoLogError:
            return None

    def health_log(self, request: Request) -> Response:
        """What ``convlog info`` and the sync say about the log's health, over time.

        ---
        summary: The log's health over time (convlog info --json figures, gaps and drops per hour or day)
        responses:
          200:
            description: >
              {"bucket": "hour" or "day", "first_ts", "last_ts", "records", "last_seq",
              "gaps": {"records", "missing"}, "drops": {"records", "messages"},
              "publishers": [{"id", "messages", "last_stamp_seq", "missing", "restarts",
              "duplicates", "last_record", "gap_missing"}],
              "gap_series": [{"bucket", "publisher", "gaps", "missing"}],
              "drop_series": [{"bucket", "records", "messages"}],
              "disk": {"events", "checkpoints", "index", "recovery", "other", "total": {"bytes",
              "allocated", "files"}, "archive": {"path", "bytes", "allocated", "files"} or null},
              "checkpoints": {"count", "bytes", "labelled", "newest"}, "horizon": {"seq", "ts",
              "pruned"} or null, "sync": recovery/sync.json or null}; with --db, null
          404: {description: '{"error": reason}: no log in the directory'}
        """
        try:
            return ConvlogJSON(self.source.health_log())
        except Exception as exc:
            return self._error_json(exc)

    # -- usage

    def usage_page(self, request: Request) -> Response:
        """Tokens and cost per model, per session and per day, as charts."""
        from convlog.web.charts import usage_charts

        try:
            data = self.source.usage(min(_int(request, "top", TOP_SESSIONS), TOP_MAX))
        except Exception as exc:
            return self._error_page(request, exc)
        return self._page(request, "usage.html", {"data": data, "charts": usage_charts(data)})

    def usage_api(self, request: Request) -> Response:
        """Tokens and cost per model, per session and per day (what ``/usage`` shows).

        ---
        summary: Tokens and cost per model, per session and per day (from the llm.request records)
        parameters:
          - {name: top, in: query, schema: {type: integer, minimum: 1, maximum: 500},
             description: 'sessions listed (default 20), most cost first'}
        responses:
          200:
            description: >
              {"totals": {"requests", "input_tokens", "output_tokens", "cost_usd", "models":
              {model: requests}} (convlog replay --json's usage),
              "models": [{"model" (null: none named), "requests", "input_tokens", "output_tokens", "cost_usd"}],
              "sessions": [{"id", "title", "deleted", "requests", "input_tokens", "output_tokens",
              "cost_usd", "models"}] (the top by cost), "sessions_with_usage", "top",
              "days": [{"day" (UTC, receive time), "requests", "input_tokens", "output_tokens", "cost_usd"}],
              "undated": requests whose record has no time, "outside_days": what the totals
              hold beyond the records the log still has (retention); cost in US dollars
          400: {description: '{"error": reason}: a top that is not a whole number'}
          404: {description: '{"error": reason}: no log in the directory'}
          503: {description: '{"error": reason}: the database cannot be read'}
        """
        try:
            return ConvlogJSON(self.source.usage(min(_int(request, "top", TOP_SESSIONS), TOP_MAX)))
        except Exception as exc:
            return self._error_json(exc)

    # -- live

    def _live_args(self, request: Request) -> tuple[RecordFilter, list[str], list[str]]:
        """The filter of ``/live`` and ``/api/events``: ``session`` and ``kind`` (each
        repeatable; empty values ignored), as ``convlog tail --session --kind``."""
        sessions = [v.strip() for v in request.query_params.getlist("session") if v.strip()]
        kinds = [v.strip() for v in request.query_params.getlist("kind") if v.strip()]
        try:
            return RecordFilter.of(sessions, kinds), sessions, kinds
        except ValueError as exc:
            raise BadQueryError(str(exc)) from None

    def live_page(self, request: Request) -> Response:
        """New records as they are recorded (``live.js`` reads ``/api/events``)."""
        error = None
        sessions: list[str] = []
        kinds: list[str] = []
        try:
            _, sessions, kinds = self._live_args(request)
        except BadQueryError as exc:
            error = str(exc)
        events = "/api/events" + with_query(request, n=LIVE_ROWS)
        return self._page(request, "live.html", {"sessions": sessions, "kinds": kinds, "error": error,
                                                 "events": events, "live": self.live is not None,
                                                 "rows": LIVE_ROWS}, 400 if error else 200)

    async def events_api(self, request: Request) -> Response:
        """Server-sent events: each record as it is recorded (``convlog tail -f --json``).

        ---
        summary: New records as server-sent events (convlog tail -f --json)
        description: >
          text/event-stream. Each event is one record: id is its seq, data its line exactly
          as in the log (what convlog tail --json prints). Send Last-Event-ID (an
          EventSource does on reconnecting) to resume after that seq; otherwise the newest
          n records come first, then each new one. A comment (": ping") every 15 s keeps
          the connection open. Needs a log directory (convlog serve --dir).
        parameters:
          - {name: session, in: query, schema: {type: string}, description: 'only this session (repeatable)'}
          - {name: kind, in: query, schema: {type: string},
             description: "only this kind; shell patterns such as 'recorder.*' (repeatable)"}
          - {name: n, in: query, schema: {type: integer, minimum: 0, maximum: 500},
             description: 'newest records sent first (default 0)'}
          - {name: Last-Event-ID, in: header, schema: {type: integer}, description: 'resume after this seq'}
        responses:
          200: {description: 'text/event-stream of records (id = seq, data = the log line)'}
          400: {description: '{"error": reason}: a kind no record has, or a Last-Event-ID or n that is not a number'}
          404: {description: '{"error": reason}: served from --db (Live follows a log directory)'}
        """
        from sse_starlette import EventSourceResponse

        try:
            keep, _, _ = self._live_args(request)
            backlog = min(_int(request, "n", 0, low=0), BACKLOG_MAX)
            raw = (request.headers.get("last-event-id") or "").strip()
            if raw and not raw.isdigit():
                raise BadQueryError(f"Last-Event-ID {raw!r} is not a seq")
            after = int(raw) if raw else None
        except BadQueryError as exc:
            return self._error_json(exc)
        if self.live is None:
            return ConvlogJSON({"error": "Live follows a log directory: run convlog serve --dir DIR"}, status_code=404)
        return EventSourceResponse(self.live.events(keep, after, backlog), ping=PING_S)

    def schema(self, request: Request) -> Response:
        """The OpenAPI document of the JSON API (from the endpoints' docstrings)."""
        return ConvlogJSON(SCHEMA.get_schema(routes=request.app.routes))


def create_app(source: Any, access: Access) -> Any:
    """The ``convlog serve`` ASGI application: the routes above behind
    :class:`~convlog.web.access.Guard`.

    Args:
        source: a :class:`~convlog.web.sources.LogSource` or
            :class:`~convlog.web.sources.DbSource`.
        access: the token and host names :class:`~convlog.web.access.Guard` checks.

    Returns:
        the ASGI application (the guard wrapping the Starlette app).
    """
    pages = Pages(source)
    routes = [
        Route("/", pages.sessions_page, methods=["GET"]),
        Route("/api/sessions", pages.sessions_api, methods=["GET"]),
        Route("/sessions/{session:path}", pages.session_page, methods=["GET"]),
        Route("/api/sessions/{session:path}", pages.session_api, methods=["GET"]),
        Route("/search", pages.search_page, methods=["GET"]),
        Route("/api/search", pages.search_api, methods=["GET"]),
        Route("/live", pages.live_page, methods=["GET"]),
        Route("/api/events", pages.events_api, methods=["GET"]),
        Route("/health", pages.health, methods=["GET"]),
        Route("/api/health", pages.health, methods=["GET"]),
        Route("/status", pages.status_page, methods=["GET"]),
        Route("/api/health/log", pages.health_log, methods=["GET"]),
        Route("/api/doctor", pages.doctor_api, methods=["GET"]),
        Route("/usage", pages.usage_page, methods=["GET"]),
        Route("/api/usage", pages.usage_api, methods=["GET"]),
        Route("/api/schema", pages.schema, methods=["GET"], include_in_schema=False),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Guard(Starlette(routes=routes), access)
