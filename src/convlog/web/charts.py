"""The figures behind the Usage and Health pages of ``convlog serve``: tokens and cost
per model, per session and per day (:meth:`LogCharts.usage`), and what ``convlog
status``, ``info`` and the sync say about a log over time (:meth:`LogCharts.health`).

Where each figure comes from:

* the **fold** the other pages use (:class:`convlog.web.sources.ReplayCache`, no second
  fold): the usage totals (``convlog replay --json``'s ``usage``), each session's usage
  (the ``usage`` of ``/api/sessions`` rows) and the ``recorder.gap`` records
  (``State.gaps``, with their receive times);
* **one pass over the log's records** (:class:`RecordScan`), kept between requests and
  continued from where it stopped while the log only grows: each ``llm.request`` record
  is read by the core fold's rules (folded on its own with the ``observe`` hook, as
  ``convlog sync`` reads it into ``convlog.llm_requests``), giving its model, tokens and
  cost, with the record's ``ts`` (receive time, UTC) for its day; each
  ``recorder.dropped`` record gives the messages the recorder dropped and when. The fold
  cannot give these: it keeps totals (requests per model, not tokens or cost), and it
  starts from a checkpoint;
* ``convlog info``'s :func:`convlog.readers.info.gather` (disk use, checkpoints, the
  retention horizon, gaps and drops per publisher) and ``recovery/sync.json``.

When retention has let the oldest segments go, their requests are still in the fold's
totals but no longer in the log: ``outside_days`` says how much of the totals has no
day (and no model row) for that reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from convlog.core.fold import State, Step, fold
from convlog.store.segment import follow_lines, list_segments, segment_key, segment_size

#: Sessions listed at most by ``/api/usage`` (``?top=`` changes it, up to :data:`TOP_MAX`).
TOP_SESSIONS = 20
TOP_MAX = 500

#: Kinds :class:`RecordScan` reads (every other record is skipped without being folded).
SCANNED = (b'"llm.request"', b'"recorder.dropped"')


def _zero() -> dict[str, Any]:
    return {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}


def _add(into: dict[str, Any], detail: Any) -> None:
    into["requests"] += 1
    into["input_tokens"] += detail["input_tokens"]
    into["output_tokens"] += detail["output_tokens"]
    into["cost_usd"] += detail["cost_usd"]


def day_of(ts: Any) -> str | None:
    """The UTC day (``2026-12-06``) of a record's ``ts`` (RFC 3339, UTC), None when it has none."""
    return ts[:10] if isinstance(ts, str) and len(ts) >= 10 else None


def bucket_of(ts: Any, size: str) -> str | None:
    """The start of the ``hour`` (``2026-12-06T04:00Z``) or ``day`` (``2026-12-06``) a
    ``ts`` falls in; None when it has none."""
    if not isinstance(ts, str) or len(ts) < 13:
        return None
    return ts[:13] + ":00Z" if size == "hour" else ts[:10]


@dataclass
class Scanned:
    """What :class:`RecordScan` read so far.

    Attributes:
        position: where the next record starts (segment key, offset), None before any.
        sizes: each segment's size when read (to tell growth from a rewrite).
        models: per model (None: no model) the requests, tokens and cost.
        days: per UTC day the same; ``None`` holds requests whose record has no ``ts``.
        requests: every llm.request counted.
        drops: ``(ts, messages, by_source)`` per ``recorder.dropped`` record.
    """

    position: tuple[str, int] | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    models: dict[str | None, dict[str, Any]] = field(default_factory=dict)
    days: dict[str | None, dict[str, Any]] = field(default_factory=dict)
    requests: dict[str, Any] = field(default_factory=_zero)
    drops: list[tuple[str | None, int, dict[str, int]]] = field(default_factory=list)


def _steps(record: dict[str, Any]) -> list[Step]:
    """The fold's steps of one record folded on its own (as ``convlog sync`` does)."""
    steps: list[Step] = []
    fold(State(), record, observe=steps.append)
    return steps


class RecordScan:
    """One pass over a log's ``llm.request`` and ``recorder.dropped`` records, kept and
    continued from where it stopped while every segment read keeps its size or grows
    (a log only grows; retention letting a segment go or ``convlog purge`` rewriting
    one starts it again). Thread-safe.

    Args:
        directory: the log directory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._scanned = Scanned()

    def _still_valid(self, scanned: Scanned, sizes: dict[str, int]) -> bool:
        return all(sizes.get(key, -1) >= size for key, size in scanned.sizes.items())

    def get(self) -> Scanned:
        """The records read up to the log's end now."""
        with self._lock:
            sizes = {segment_key(path): segment_size(path) for _, path in list_segments(self.directory)}
            scanned = self._scanned
            if not self._still_valid(scanned, sizes):
                scanned = Scanned()
            for line, record, key, offset in follow_lines(self.directory, scanned.position):
                scanned.position = (key, offset)
                if not any(kind in line for kind in SCANNED):
                    continue
                kind = record.get("kind")
                if kind == "llm.request":
                    for step in _steps(record):
                        if step.effect == "llm.request":
                            detail = step.detail
                            _add(scanned.requests, detail)
                            _add(scanned.models.setdefault(detail["model"], _zero()), detail)
                            _add(scanned.days.setdefault(day_of(record.get("ts")), _zero()), detail)
                elif kind == "recorder.dropped":
                    data = record.get("data")
                    data = data if isinstance(data, dict) else {}
                    messages = data.get("messages")
                    if isinstance(messages, int) and not isinstance(messages, bool) and messages > 0:
                        by_source = data.get("by_source")
                        by_source = {str(k): v for k, v in by_source.items() if isinstance(v, int)} \
                            if isinstance(by_source, dict) else {}
                        scanned.drops.append((record.get("ts"), messages, by_source))
            scanned.sizes = sizes
            self._scanned = scanned
            return scanned


def _less(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    return {key: max(0, total[key] - part[key]) if key != "cost_usd" else max(0.0, total[key] - part[key])
            for key in ("requests", "input_tokens", "output_tokens", "cost_usd")}


def session_usage_rows(state: State, top: int) -> tuple[list[dict[str, Any]], int]:
    """The ``top`` sessions by cost (then tokens, then id) with their usage, and how many
    sessions made requests at all (deleted ones included: their requests count)."""
    used = [s for s in state.session_list(include_deleted=True) if s.usage.requests]
    used.sort(key=lambda s: (-s.usage.cost_usd, -(s.usage.input_tokens + s.usage.output_tokens), s.id))
    rows = [{"id": s.id, "title": s.title, "deleted": s.deleted_seq is not None, **s.usage.to_dict()}
            for s in used[:top]]
    return rows, len(used)


def _model_rows(models: dict[str | None, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [{"model": model, **figures} for model, figures in models.items()]
    rows.sort(key=lambda r: (-r["cost_usd"], -r["requests"], r["model"] is None, r["model"] or ""))
    return rows


def usage_document(state: State, scanned: Scanned, top: int) -> dict[str, Any]:
    """``/api/usage`` from a fold's state and a :class:`Scanned` (see :class:`LogCharts`)."""
    sessions, used = session_usage_rows(state, top)
    days = [{"day": day, **figures} for day, figures in sorted(
        (d, f) for d, f in scanned.days.items() if d is not None)]
    outside = _less(state.usage.to_dict(), scanned.requests)
    undated = scanned.days.get(None)
    return {"totals": state.usage.to_dict(), "models": _model_rows(scanned.models), "sessions": sessions,
            "sessions_with_usage": used, "top": top, "days": days,
            "undated": undated or _zero(), "outside_days": outside}


def _bucket_size(first_ts: Any, last_ts: Any) -> str:
    """``hour`` when the log spans two days or less, else ``day``."""
    try:
        first = datetime.fromisoformat(first_ts.replace("Z", "+00:00"))
        last = datetime.fromisoformat(last_ts.replace("Z", "+00:00"))
    except (TypeError, ValueError, AttributeError):
        return "day"
    return "hour" if (last - first).total_seconds() <= 2 * 86400 else "day"


def gap_series(gaps: list[Any], size: str) -> list[dict[str, Any]]:
    """Messages missing per publisher per bucket: ``[{"bucket", "publisher", "gaps"
    (records), "missing" (messages)}]`` in bucket then publisher order (``publisher``
    None: the gap record named none)."""
    counts: dict[tuple[str, str | None], list[int]] = {}
    for gap in gaps:
        key = (bucket_of(gap.ts, size) or "?", gap.publisher)
        row = counts.setdefault(key, [0, 0])
        row[0] += 1
        row[1] += gap.last - gap.first + 1
    return [{"bucket": bucket, "publisher": publisher, "gaps": n, "missing": missing}
            for (bucket, publisher), (n, missing) in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))]


def drop_series(drops: list[tuple[str | None, int, dict[str, int]]], size: str) -> list[dict[str, Any]]:
    """Messages the recorder dropped per bucket: ``[{"bucket", "records", "messages"}]``."""
    counts: dict[str, list[int]] = {}
    for ts, messages, _by_source in drops:
        row = counts.setdefault(bucket_of(ts, size) or "?", [0, 0])
        row[0] += 1
        row[1] += messages
    return [{"bucket": bucket, "records": n, "messages": m} for bucket, (n, m) in sorted(counts.items())]


class LogCharts:
    """The Usage and Health figures of a log directory.

    Args:
        directory: the log directory.
        fold: returns the whole log's :class:`convlog.store.replay.Replay` (the source's
            :meth:`convlog.web.sources.ReplayCache.get`).
    """

    def __init__(self, directory: Path, fold: Callable[[], Any]) -> None:
        self.directory = directory
        self.fold = fold
        self.scan = RecordScan(directory)

    def usage(self, top: int = TOP_SESSIONS) -> dict[str, Any]:
        """Tokens and cost per model, per session and per day.

        Returns:
            ``{"totals": {"requests", "input_tokens", "output_tokens", "cost_usd",
            "models": {model: requests}}`` (the fold's, as ``convlog replay --json``'s
            ``usage``), ``"models": [{"model", "requests", "input_tokens",
            "output_tokens", "cost_usd"}]`` (most cost first; ``model`` null for
            requests naming none), ``"sessions": [{"id", "title", "deleted",
            "requests", "input_tokens", "output_tokens", "cost_usd", "models"}]`` (the
            ``top`` by cost), ``"sessions_with_usage"``, ``"top"``, ``"days": [{"day",
            "requests", "input_tokens", "output_tokens", "cost_usd"}]`` (UTC days of
            the records' receive times, oldest first), ``"undated"`` (requests whose
            record has no time) and ``"outside_days"`` (what the totals hold beyond
            the records the log still has: retention let them go)}``.

        Raises:
            NoLogError: when the directory holds no log.
        """
        return usage_document(self.fold().state, self.scan.get(), top)

    def health(self) -> dict[str, Any]:
        """What ``convlog info`` and the sync say about the log's health over time.

        Returns:
            ``{"bucket": "hour" | "day"`` (the series' bucket: hours when the log spans
            two days or less), ``"first_ts"``, ``"last_ts"``, ``"records"``,
            ``"last_seq"``, ``"gaps": {"records", "missing"}``, ``"drops": {"records",
            "messages"}`` (``convlog info --json``'s), ``"publishers"`` (``info``'s
            rows: ``id``, ``messages``, ``missing``, ``gap_missing``, ``restarts``,
            ``duplicates``, …), ``"gap_series": [{"bucket", "publisher", "gaps",
            "missing"}]``, ``"drop_series": [{"bucket", "records", "messages"}]``,
            ``"disk": {"events", "checkpoints", "index", "recovery", "other", "total"
            (each ``{"bytes", "allocated", "files"}``), "archive" (the archive
            directory retention moves segments to, or None)}``, ``"checkpoints"``
            (``info``'s), ``"horizon"`` (``info``'s: the last seq retention let go
            of, or None), ``"sync"`` (``recovery/sync.json``, or None)}``.

        Raises:
            NoLogError: when the directory holds no log.
        """
        from convlog.readers.info import disk_use, gather
        from convlog.store.sync_state import read_sync_state

        info = gather(self.directory)
        replay = self.fold()
        size = _bucket_size(info["first_ts"], info["last_ts"])
        base = (info["horizon"] or {}).get("seq") or 0
        gaps = [gap for gap in replay.state.gaps if gap.seq > base]
        archive = None
        pruned = (info["horizon"] or {}).get("pruned") or {}
        if isinstance(pruned.get("archive_dir"), str):
            path = Path(pruned["archive_dir"])
            path = path if path.is_absolute() else self.directory / path
            archive = {"path": str(path), **disk_use(path).as_dict()}
        drops = self.scan.get().drops
        return {
            "bucket": size, "first_ts": info["first_ts"], "last_ts": info["last_ts"], "records": info["records"],
            "last_seq": info["last_seq"], "gaps": info["gaps"], "drops": info["drops"],
            "publishers": info["publishers"], "gap_series": gap_series(gaps, size),
            "drop_series": drop_series(drops, size), "disk": {**info["disk"], "archive": archive},
            "checkpoints": info["checkpoints"], "horizon": info["horizon"], "sync": read_sync_state(self.directory),
        }


# --------------------------------------------------------------------------- the database


def db_usage(conn: Any, top: int = TOP_SESSIONS) -> dict[str, Any]:
    """``/api/usage`` from ``convlog.llm_requests`` (one row per ``llm.request`` record,
    as the sync follower read it), by SQL ``GROUP BY``: the same shape as
    :meth:`LogCharts.usage` (``outside_days`` is zero: the table keeps every request;
    a session's ``title`` and ``deleted`` come from ``convlog.sessions``)."""
    figures = "count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), coalesce(sum(cost_usd), 0)"

    def row(values: Any) -> dict[str, Any]:
        n, i, o, c = values
        return {"requests": int(n), "input_tokens": int(i), "output_tokens": int(o), "cost_usd": float(c)}

    totals = row(conn.execute(f"SELECT {figures} FROM convlog.llm_requests").fetchone())
    models = [{"model": m, **row(v)} for m, *v in conn.execute(
        f"SELECT model, {figures} FROM convlog.llm_requests GROUP BY model")]
    totals["models"] = {r["model"]: r["requests"] for r in models if r["model"] is not None}
    days: dict[str | None, dict[str, Any]] = {}
    for d, *v in conn.execute(f"""SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD'), {figures}
                                  FROM convlog.llm_requests GROUP BY 1 ORDER BY 1"""):
        days[d] = row(v)
    used = conn.execute("SELECT count(DISTINCT session) FROM convlog.llm_requests WHERE session IS NOT NULL"
                        ).fetchone()[0]
    sessions = []
    for sid, *v in conn.execute(f"""SELECT session, {figures} FROM convlog.llm_requests WHERE session IS NOT NULL
                                    GROUP BY session
                                    ORDER BY sum(cost_usd) DESC, sum(input_tokens + output_tokens) DESC, session
                                    LIMIT %s""", (top,)):
        per_model = dict(conn.execute("""SELECT model, count(*) FROM convlog.llm_requests
                                         WHERE session = %s AND model IS NOT NULL GROUP BY model""", (sid,)).fetchall())
        found = conn.execute("SELECT title, deleted FROM convlog.sessions WHERE session = %s", (sid,)).fetchone()
        sessions.append({"id": sid, "title": found[0] if found else None, "deleted": bool(found[1]) if found else False,
                         **row(v), "models": per_model})
    return {"totals": totals, "models": _model_rows({r.pop("model"): r for r in models}), "sessions": sessions,
            "sessions_with_usage": int(used), "top": top,
            "days": [{"day": d, **f} for d, f in days.items() if d is not None],
            "undated": days.get(None) or _zero(), "outside_days": _zero()}


# --------------------------------------------------------------------------- the pages' charts

#: How a request without a model is named on the pages.
NO_MODEL = "(no model)"


def chart(chart_id: str, title: str, kind: str, labels: list[Any], datasets: list[dict[str, Any]],
          head: list[str], rows: list[list[Any]], **options: Any) -> dict[str, Any]:
    """One chart of a page: what ``static/charts.js`` draws (``config``: Chart.js's
    ``type``, ``data`` and ``options``, written into the page as JSON) and the data
    table beside it (``head``, ``rows``: the same figures, for readers and tests).

    Args:
        chart_id: the canvas's id (the JSON's is ``ID-data``).
        title: the chart's heading.
        kind: Chart.js's type (``bar``, ``line``).
        labels: the x (or y, with ``horizontal``) axis labels.
        datasets: ``[{"label", "data", …}]`` (Chart.js datasets).
        head, rows: the table.
        **options: ``stacked`` (bool), ``horizontal`` (bool).
    """
    scales: dict[str, Any] = {}
    if options.get("stacked"):
        scales = {"x": {"stacked": True}, "y": {"stacked": True}}
    config = {"type": kind, "data": {"labels": labels, "datasets": datasets},
              "options": {"indexAxis": "y" if options.get("horizontal") else "x", "scales": scales}}
    return {"id": chart_id, "title": title, "config": config, "head": head, "rows": rows}


def usage_charts(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The Usage page's charts from ``/api/usage``: tokens and cost per model, per day,
    and the top sessions by cost (a chart only where there is a figure)."""
    charts = []
    models = doc["models"]
    if models:
        names = [m["model"] if m["model"] is not None else NO_MODEL for m in models]
        charts.append(chart(
            "usage-models-tokens", "Tokens per model", "bar", names,
            [{"label": "input tokens", "data": [m["input_tokens"] for m in models], "stack": "tokens"},
             {"label": "output tokens", "data": [m["output_tokens"] for m in models], "stack": "tokens"}],
            ["model", "requests", "input tokens", "output tokens", "cost (USD)"],
            [[n, m["requests"], m["input_tokens"], m["output_tokens"], m["cost_usd"]] for n, m in zip(names, models,
                                                                                                   strict=True)],
            stacked=True))
        charts.append(chart(
            "usage-models-cost", "Cost per model (USD)", "bar", names,
            [{"label": "cost (USD)", "data": [m["cost_usd"] for m in models]}],
            ["model", "cost (USD)"], [[n, m["cost_usd"]] for n, m in zip(names, models, strict=True)]))
    days = doc["days"]
    if days:
        labels = [d["day"] for d in days]
        charts.append(chart(
            "usage-days-tokens", "Tokens per day (UTC, receive time)", "bar", labels,
            [{"label": "input tokens", "data": [d["input_tokens"] for d in days], "stack": "tokens"},
             {"label": "output tokens", "data": [d["output_tokens"] for d in days], "stack": "tokens"}],
            ["day", "requests", "input tokens", "output tokens", "cost (USD)"],
            [[d["day"], d["requests"], d["input_tokens"], d["output_tokens"], d["cost_usd"]] for d in days],
            stacked=True))
        charts.append(chart(
            "usage-days-cost", "Cost per day (USD)", "line", labels,
            [{"label": "cost (USD)", "data": [d["cost_usd"] for d in days]}],
            ["day", "cost (USD)"], [[d["day"], d["cost_usd"]] for d in days]))
    sessions = doc["sessions"]
    if sessions:
        ids = [s["id"] for s in sessions]
        charts.append(chart(
            "usage-sessions-cost", f"Sessions by cost (the top {len(sessions)} of {doc['sessions_with_usage']})",
            "bar", ids, [{"label": "cost (USD)", "data": [s["cost_usd"] for s in sessions]}],
            ["session", "requests", "input tokens", "output tokens", "cost (USD)"],
            [[s["id"], s["requests"], s["input_tokens"], s["output_tokens"], s["cost_usd"]] for s in sessions],
            horizontal=True))
    return charts


def health_charts(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The Health page's charts from ``/api/health/log``: messages missing per publisher
    and dropped, per hour or day, and the disk use of each part of the log directory."""
    charts = []
    series = doc["gap_series"]
    if series:
        buckets = sorted({row["bucket"] for row in series})
        publishers = sorted({row["publisher"] or "" for row in series})
        missing = {(row["bucket"], row["publisher"] or ""): row["missing"] for row in series}
        charts.append(chart(
            "health-gaps", f"Messages missing per publisher, per {doc['bucket']} (recorder.gap)", "bar", buckets,
            [{"label": p or "(unnamed)", "data": [missing.get((b, p), 0) for b in buckets], "stack": "gaps"}
             for p in publishers],
            [doc["bucket"], "publisher", "gap records", "missing"],
            [[row["bucket"], row["publisher"] or "(unnamed)", row["gaps"], row["missing"]] for row in series],
            stacked=True))
    drops = doc["drop_series"]
    if drops:
        charts.append(chart(
            "health-drops", f"Messages dropped by the recorder, per {doc['bucket']} (recorder.dropped)", "bar",
            [row["bucket"] for row in drops], [{"label": "dropped", "data": [row["messages"] for row in drops]}],
            [doc["bucket"], "records", "messages"],
            [[row["bucket"], row["records"], row["messages"]] for row in drops]))
    disk = doc["disk"]
    parts = [(name, disk[name]) for name in ("events", "checkpoints", "index", "recovery", "other")]
    if disk.get("archive"):
        parts.append(("archive", disk["archive"]))
    charts.append(chart(
        "health-disk", "Disk use (bytes)", "bar", [name for name, _ in parts],
        [{"label": "bytes", "data": [use["bytes"] for _, use in parts]}],
        ["part", "bytes", "files"], [[name, use["bytes"], use["files"]] for name, use in parts], horizontal=True))
    return charts
