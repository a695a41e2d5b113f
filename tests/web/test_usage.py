"""The Usage and Health figures of ``convlog serve`` over HTTP (a real server on real
logs): ``/api/usage`` says what ``convlog replay --json`` and ``/api/sessions`` say for
the demo's log, and, for a log with several models over several days (two days written
with crafted receive times through the store's writer, then today's by the real
recorder from a real broker), the tokens and cost per model and per day the test sent;
``/api/health/log`` counts the gaps per publisher that ``convlog info --json`` counts;
a model named with markup comes out escaped, in the page and in the chart's JSON."""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.register_assert_rewrite("served")  # before the import: it is also a plugin (below)
from served import Served, api, run, serve  # noqa: E402

from conftest import records, running_bus, wait_for_records  # noqa: E402
from convlog.bus.publisher import Publisher  # noqa: E402
from convlog.core.ingest import Ingest  # noqa: E402
from convlog.core.record import make_line  # noqa: E402
from convlog.store.segment import ensure_layout  # noqa: E402
from convlog.store.writer import SegmentWriter  # noqa: E402

#: The logs and servers (session-wide fixtures, shared with the other web tests).
pytest_plugins = ["served"]

#: A model name that would run script if the page or the chart's JSON did not escape it.
HOSTILE_MODEL = "</script><script>window.pwned=4</script>"

#: ``(day, session, model, input tokens, output tokens, cost)`` written with crafted
#: receive times on two earlier days.
EARLIER = [
    ("2026-11-20", "u1", "alpha", 100, 20, 0.25),
    ("2026-11-20", "u2", "beta", 300, 40, 1.5),
    ("2026-11-21", "u1", "alpha", 50, 5, 0.125),
    ("2026-11-21", "u3", HOSTILE_MODEL, 7, 3, 0.0),
]

#: Messages a ``recorder.dropped`` record (written after :data:`EARLIER`) says were dropped.
DROPPED = 5

#: ``(publisher, session, model, input tokens, output tokens, cost)`` sent today through
#: the broker to the real recorder.
TODAY = [
    ("pub-a", "u1", "alpha", 1000, 200, 2.0),
    ("pub-a", "u4", "gamma", 10, 1, 0.5),
    ("pub-b", "u2", "beta", 5, 5, 0.75),
    ("pub-b", "u4", None, 2, 2, 0.0),
]


def ok(*args: str) -> Any:
    """``convlog ARGS`` that must succeed; its stdout parsed as JSON."""
    result = run(*args)
    assert result.returncode == 0, f"convlog {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return orjson.loads(result.stdout) if result.stdout.strip() else None


def request_event(session: str, model: str | None, tokens_in: int, tokens_out: int, cost: float) -> dict[str, Any]:
    """An ``llm.request`` event as an agent publishes it."""
    event: dict[str, Any] = {"type": "llm.request", "session_id": session, "input_tokens": tokens_in,
                             "output_tokens": tokens_out, "cost_usd": cost}
    if model is not None:
        event["model"] = model
    return event


@pytest.fixture(scope="module")
def usage_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:data:`EARLIER` written through :class:`SegmentWriter` (receive times on two
    past days) and a ``recorder.dropped`` record of :data:`DROPPED` messages, then
    :data:`TODAY` recorded by the real recorder from two publishers, each skipping
    stamps once (the recorder writes a ``recorder.gap`` for each)."""
    tmp = tmp_path_factory.mktemp("web-usage")
    directory = tmp / "log"
    ensure_layout(directory)
    ingest = Ingest()
    writer = SegmentWriter(directory, next_seq=1)
    for seq, (day, session, model, tokens_in, tokens_out, cost) in enumerate(EARLIER, 1):
        event = request_event(session, model, tokens_in, tokens_out, cost)
        writer.write(ingest.line([session.encode(), orjson.dumps(event)], seq, f"{day}T12:00:0{seq}.000000Z", "sub"),
                     seq)
    dropped = {"messages": DROPPED, "bytes_bound": 1024, "since": "2026-11-21T12:00:05.000000Z", "after_seq": 4,
               "by_source": {"sub": DROPPED}, "until": "2026-11-21T12:00:06.000000Z"}
    seq = len(EARLIER) + 1
    writer.write(make_line(seq, "2026-11-21T12:00:06.000000Z", "recorder.dropped", "recorder", None, None, dropped),
                 seq)
    writer.close()
    with running_bus(tmp) as bus:
        recorder = bus.recorder(directory)
        bus.publisher(recorder).close()  # the recorder is subscribed
        publishers = {name: Publisher(bus.xsub, publisher_id=name) for name in ("pub-a", "pub-b")}
        for publisher in publishers.values():
            publisher.wait_for_subscriber(20)
        for i, (name, session, model, tokens_in, tokens_out, cost) in enumerate(TODAY):
            publisher = publishers[name]
            if i % 2 == 1:
                publisher.seq += 3  # three messages this publisher never sent: a gap
            publisher.send(session.encode(), orjson.dumps(request_event(session, model, tokens_in, tokens_out, cost)))
        for publisher in publishers.values():
            publisher.close()
        wait_for_records(directory, len(EARLIER) + len(TODAY))
        assert recorder.terminate() == 0, recorder.output()
    return directory


@pytest.fixture(scope="module")
def usage_server(usage_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``convlog serve`` on :func:`usage_log`."""
    server = serve(usage_log, tmp_path_factory.mktemp("serve-usage") / "serve.err")
    try:
        yield server
    finally:
        server.stop()


def figures(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Requests, tokens and cost added up."""
    return {"requests": len(rows), "input_tokens": sum(r[3] for r in rows), "output_tokens": sum(r[4] for r in rows),
            "cost_usd": pytest.approx(sum(r[5] for r in rows))}


def test_the_demo_usage_is_what_replay_and_sessions_say(demo_server: Served, demo_log: Path) -> None:
    """The demo's one ``llm.request``: ``/api/usage``'s totals are ``replay --json``'s
    usage, its session rows are the usage of ``/api/sessions``'s rows, its one day and
    one model hold it all; the page shows the totals."""
    usage = api(demo_server, "/api/usage")
    replayed = ok("replay", "--dir", str(demo_log), "--json")
    assert usage["totals"] == replayed["usage"] and usage["totals"]["requests"] == 1
    listed = {row["id"]: row["usage"] for row in api(demo_server, "/api/sessions", all=1)["sessions"]}
    assert usage["sessions"] and all(
        {k: row[k] for k in ("requests", "input_tokens", "output_tokens", "cost_usd", "models")} == listed[row["id"]]
        for row in usage["sessions"])
    assert usage["sessions_with_usage"] == sum(1 for u in listed.values() if u["requests"])
    for series in (usage["days"], usage["models"]):
        assert sum(row["requests"] for row in series) == usage["totals"]["requests"]
        assert sum(row["cost_usd"] for row in series) == pytest.approx(usage["totals"]["cost_usd"])
    first = next(iter(records(demo_log)))
    assert [row["day"] for row in usage["days"]] == [first["ts"][:10]]
    assert usage["outside_days"]["requests"] == 0
    with demo_server.client() as client:
        page = client.get("/usage")
    assert page.status_code == 200
    assert f'<dd id="total-requests">{usage["totals"]["requests"]}</dd>' in page.text
    assert 'id="usage-models-tokens"' in page.text and 'id="usage-days-cost"' in page.text


def test_usage_per_model_and_per_day_over_several_days(usage_server: Served, usage_log: Path) -> None:
    """Tokens and cost per model and per day are what was sent (the days of the records'
    receive times), the totals ``replay --json``'s, the top sessions by cost in order;
    ``top`` limits them and a ``top`` that is no number is a 400."""
    usage = api(usage_server, "/api/usage")
    assert usage["totals"] == ok("replay", "--dir", str(usage_log), "--json")["usage"]
    assert usage["totals"]["requests"] == len(EARLIER) + len(TODAY)
    today = next(r["ts"][:10] for r in records(usage_log) if r["kind"] == "llm.request" and r["seq"] > len(EARLIER))
    by_day: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    by_model: dict[str | None, list[tuple[Any, ...]]] = defaultdict(list)
    by_session: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in [*EARLIER, *((today, *rest) for _pub, *rest in TODAY)]:
        by_day[row[0]].append(row)
        by_model[row[2]].append(row)
        by_session[row[1]].append(row)
    assert [d["day"] for d in usage["days"]] == sorted(by_day) == ["2026-11-20", "2026-11-21", today]
    for day in usage["days"]:
        assert {k: v for k, v in day.items() if k != "day"} == figures(by_day[day["day"]]), day["day"]
    assert {m["model"] for m in usage["models"]} == set(by_model)
    for model in usage["models"]:
        assert {k: v for k, v in model.items() if k != "model"} == figures(by_model[model["model"]]), model["model"]
    costs = [m["cost_usd"] for m in usage["models"]]
    assert costs == sorted(costs, reverse=True)
    assert [s["id"] for s in usage["sessions"]] == sorted(by_session, key=lambda s: -sum(r[5] for r in by_session[s]))
    assert usage["sessions_with_usage"] == len(by_session)
    assert [s["id"] for s in api(usage_server, "/api/usage", top=2)["sessions"]] == [s["id"] for s in
                                                                                      usage["sessions"][:2]]
    with usage_server.client() as client:
        assert client.get("/api/usage", params={"top": "x"}).status_code == 400


def test_a_model_named_with_markup_is_escaped(usage_server: Served) -> None:
    """The model ``</script><script>…`` is text in the tables and ``\\u003c`` in the
    charts' JSON: nothing in the page ends a script element or starts one."""
    with usage_server.client() as client:
        page = client.get("/usage").text
    assert HOSTILE_MODEL not in page and "window.pwned" in page
    assert "&lt;/script&gt;&lt;script&gt;window.pwned=4&lt;/script&gt;" in page
    blocks = re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', page, re.S)
    assert blocks and all("<" not in body for _id, body in blocks)
    models = next(orjson.loads(body) for name, body in blocks if name == "usage-models-cost-data")
    assert HOSTILE_MODEL in models["data"]["labels"]
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert all('src="/static/' in tag or 'type="application/json"' in tag for tag in scripts), scripts


def test_gaps_per_publisher_are_what_info_says(usage_server: Served, usage_log: Path) -> None:
    """Each publisher's missing messages in ``/api/health/log``'s series add up to
    ``convlog info --json``'s ``gap_missing`` (3 each, one gap record each); the drops
    per day are the ``recorder.dropped`` record's; its disk use, gap and drop counts
    are ``info``'s; the health page shows the gap chart with
    the same rows, and ``/health`` still answers 503 (no recorder)."""
    log = api(usage_server, "/api/health/log")
    info = ok("info", "--dir", str(usage_log), "--json")
    series: dict[str, int] = defaultdict(int)
    for row in log["gap_series"]:
        series[row["publisher"]] += row["missing"]
    assert dict(series) == {p["id"]: p["gap_missing"] for p in info["publishers"] if p["gap_missing"]}
    assert dict(series) == {"pub-a": 3, "pub-b": 3}
    assert log["gaps"] == info["gaps"] and log["drops"] == info["drops"]
    assert log["drop_series"] == [{"bucket": "2026-11-21", "records": 1, "messages": DROPPED}]
    assert info["drops"] == {"records": 1, "messages": DROPPED}
    assert log["publishers"] == info["publishers"]
    assert log["disk"]["events"] == info["disk"]["events"] and log["horizon"] is None and log["sync"] is None
    assert log["bucket"] == "day"  # the log spans more than two days
    with usage_server.client() as client:
        assert client.get("/health").status_code == 503
        page = client.get("/status")
    assert page.status_code == 503
    assert all(f'id="health-{name}"' in page.text for name in ("gaps", "drops", "disk"))
    for row in log["gap_series"]:
        assert f'<th scope="row">{row["bucket"]}</th><td class="num">{row["publisher"]}</td>' in page.text


@pytest.mark.slow
def test_the_database_usage_is_the_logs(usage_server: Served, usage_log: Path, pg_url: str, tmp_path: Path) -> None:
    """The multi-day log synced into PostgreSQL: ``convlog serve --db``'s ``/api/usage``
    (SQL ``GROUP BY`` on ``convlog.llm_requests``) says what the log's says; its usage
    page renders; its health has no log figures (``/api/health/log`` is null). Served
    from the directory, the health page shows the sync's lag from ``recovery/sync.json``."""
    log = Path(shutil.copytree(usage_log, tmp_path / "log"))
    ok("sync", "--db", pg_url, "--dir", str(log), "--once")
    server = serve(None, tmp_path / "serve.err", "--db", pg_url)
    try:
        from_db = api(server, "/api/usage")
        with server.client() as client:
            assert client.get("/usage").status_code == 200
            assert client.get("/api/health/log").json() is None
            assert client.get("/status").status_code == 200
    finally:
        server.stop()
    synced = serve(log, tmp_path / "serve-dir.err")  # the log its sync wrote recovery/sync.json into
    try:
        health = api(synced, "/api/health/log")
        with synced.client() as client:
            page = client.get("/status").text
    finally:
        synced.stop()
    state = orjson.loads((log / "recovery" / "sync.json").read_bytes())
    assert health["sync"] == state and state["lag_records"] == 0
    assert f"{state['lag_records']} records, {state['lag_s']} s (seq {state['seq']}," in page
    from_log = api(usage_server, "/api/usage")
    assert {k: v for k, v in from_db["totals"].items() if k != "cost_usd"} == {
        k: v for k, v in from_log["totals"].items() if k != "cost_usd"}
    assert from_db["totals"]["cost_usd"] == pytest.approx(from_log["totals"]["cost_usd"])

    def rounded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**row, "cost_usd": round(row["cost_usd"], 9)} for row in rows]

    for key in ("models", "days", "sessions"):
        assert rounded(from_db[key]) == rounded(from_log[key]), key
    assert from_db["sessions_with_usage"] == from_log["sessions_with_usage"]


def test_usage_and_health_follow_a_recording_log(tmp_path: Path) -> None:
    """A recorder recording while the server runs: the health page says so (200, as
    ``/health``), with the fsync policy and lag of ``status``'s report; each request
    recorded shows in ``/api/usage`` at once (the pass over the records goes on from
    where it stopped), its per-model and per-day figures adding up to the fold's totals."""
    directory = tmp_path / "live"
    with running_bus(tmp_path) as bus:
        recorder = bus.recorder(directory)
        publisher = bus.publisher(recorder)
        server = serve(directory, tmp_path / "serve.err")
        try:
            with server.client() as client:
                sent = 0
                for model, cost in (("alpha", 0.5), ("beta", 0.25), ("alpha", 1.0)):
                    publisher.send(b"live", orjson.dumps(request_event("live-1", model, 10, 2, cost)))
                    sent += 1
                    wait_for_records(directory, sent)
                    usage = client.get("/api/usage").json()
                    assert usage["totals"]["requests"] == sum(m["requests"] for m in usage["models"]) == sent
                    assert sum(d["cost_usd"] for d in usage["days"]) == pytest.approx(usage["totals"]["cost_usd"])
                assert {m["model"]: m["requests"] for m in usage["models"]} == {"alpha": 2, "beta": 1}
                health = client.get("/health")
                page = client.get("/status")
                assert health.status_code == page.status_code == 200, health.text
                report = health.json()
                assert '<dd id="fig-recording">yes</dd>' in page.text
                assert f'({report["fsync"]["policy"]})</dd>' in page.text
                assert client.get("/api/health/log").json()["records"] >= sent
        finally:
            server.stop()
            publisher.close()
            recorder.terminate()


def test_the_openapi_document_describes_usage_and_the_logs_health(demo_server: Served) -> None:
    """``/api/schema`` describes ``/api/usage`` (with ``top``) and ``/api/health/log``."""
    schema = api(demo_server, "/api/schema")
    usage = schema["paths"]["/api/usage"]["get"]
    assert '"days"' in usage["responses"]["200"]["description"] and usage["parameters"][0]["name"] == "top"
    assert '"gap_series"' in schema["paths"]["/api/health/log"]["get"]["responses"]["200"]["description"]


def test_after_retention_the_totals_keep_what_went(tmp_path: Path) -> None:
    """A log whose oldest segments ``convlog prune --archive`` moved away: the totals are
    still the fold's (``replay --json``: its base keeps them), the days and models count
    the requests still in the log, and ``outside_days`` the rest; the health figures
    name the horizon ``info --json`` names and the archive's bytes, charted with the
    other parts of the disk."""
    directory = tmp_path / "log"
    ensure_layout(directory)
    ingest = Ingest()
    writer = SegmentWriter(directory, next_seq=1, segment_bytes=2000)
    sent = 60
    for seq in range(1, sent + 1):
        event = request_event(f"r{seq % 4}", ("alpha", "beta")[seq % 2], seq, 1, 0.01 * seq)
        day = "2026-11-20" if seq <= sent // 2 else "2026-11-21"
        writer.write(ingest.line([b"r", orjson.dumps(event)], seq, f"{day}T10:{seq // 60:02d}:{seq % 60:02d}.000000Z",
                                 "sub"), seq)
    writer.close()
    archive = tmp_path / "archive"
    pruned = ok("prune", str(directory), "--max-bytes", "4000", "--archive", str(archive), "--json")
    assert pruned["segments"], pruned
    kept = [r for r in records(directory) if r["kind"] == "llm.request"]
    assert 0 < len(kept) < sent
    server = serve(directory, tmp_path / "serve.err")
    try:
        usage = api(server, "/api/usage")
        log = api(server, "/api/health/log")
        with server.client() as client:
            page = client.get("/status").text
            usage_page = client.get("/usage").text
    finally:
        server.stop()
    assert f'<span class="notice" id="outside-days">{sent - len(kept)} requests' in usage_page
    assert usage["totals"] == ok("replay", "--dir", str(directory), "--json")["usage"]
    assert usage["totals"]["requests"] == sent
    assert sum(d["requests"] for d in usage["days"]) == sum(m["requests"] for m in usage["models"]) == len(kept)
    assert usage["outside_days"]["requests"] == sent - len(kept)
    assert usage["outside_days"]["cost_usd"] == pytest.approx(sum(0.01 * s for s in range(1, sent + 1))
                                                              - sum(r["data"]["cost_usd"] for r in kept))
    info = ok("info", "--dir", str(directory), "--json")
    assert log["horizon"] == info["horizon"] and log["horizon"]["seq"] == kept[0]["seq"] - 1
    assert log["disk"]["archive"]["bytes"] == sum(p.stat().st_size for p in archive.rglob("*") if p.is_file()) > 0
    assert f"seq {log['horizon']['seq']}" in page and '<th scope="row">archive</th>' in page
