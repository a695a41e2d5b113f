"""``convlog serve --db URL``: the pages and API on the PostgreSQL store (a real server,
tests/pg_server.py) answer what ``sessions``, ``show`` and ``search --db --json`` say."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from convlog.store.replay import load
from convlog.web.tree import tree_of

pytest.register_assert_rewrite("served")  # before the import: it is also a plugin (below)
from served import Served, run, serve  # noqa: E402

#: The logs and servers (session-wide fixtures, shared with the other web tests).
pytest_plugins = ["served"]

pytestmark = pytest.mark.slow


def ok(*args: str) -> object:
    """``convlog ARGS`` that must succeed; its stdout parsed as JSON (None when empty)."""
    result = run(*args)
    assert result.returncode == 0, f"convlog {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return orjson.loads(result.stdout) if result.stdout.strip() else None


def test_the_database_pages_answer_like_the_db_readers(demo_log: Path, pg_url: str, tmp_path: Path) -> None:
    """The demo's log synced into PostgreSQL: ``/api/sessions`` is ``sessions --db --json``,
    ``/api/sessions/ID`` holds ``show ID --db --format json``, ``/api/search`` is
    ``search --db --json``; the pages render; ``as_of`` and ``stem`` (log-only) are a
    400; ``/health`` is 200 with each synced log's lag."""
    log = Path(shutil.copytree(demo_log, tmp_path / "log"))
    ok("sync", "--db", pg_url, "--dir", str(log), "--once")
    server: Served = serve(None, tmp_path / "serve.err", "--db", pg_url)
    try:
        with server.client() as client:
            rows = ok("sessions", "--db", pg_url, "--json")
            api = client.get("/api/sessions").json()
            assert api["sessions"] == rows and api["total"] == len(rows)
            assert client.get("/api/sessions", params={"model": "demo-model"}).json()["total"] >= 1
            assert "$0.0042" in client.get("/", params={"model": "demo-model"}).text
            for row in rows:
                shown = ok("show", row["id"], "--db", pg_url, "--format", "json")
                data = client.get(f"/api/sessions/{row['id']}").json()
                assert {key: data[key] for key in shown} == shown
                page = client.get(f"/sessions/{row['id']}")
                assert page.status_code == 200 and page.text.count('class="message ') == len(shown["messages"])
                assert 'id="as-of"' not in page.text  # no slider: the database has no as_of
                drawn = tree_of(load(demo_log), row["id"])  # the same tree as the log's, numbered otherwise
                assert [(n["kind"], n["session"], n["count"], n["label"]) for n in data["tree"]["nodes"]] == [
                    (n.kind, n.session, n.count, n.label) for n in drawn.nodes]
                assert [(e["kind"], e["source"], e["target"]) for e in data["tree"]["edges"]] == [
                    (e.kind, e.source, e.target) for e in drawn.edges]
                assert page.text.count("data-node=") == len(drawn.nodes) and "?as_of=" not in page.text
            assert client.get(f"/api/sessions/{rows[0]['id']}", params={"as_of": "3"}).status_code == 400
            hits = ok("search", "haiku", "--db", pg_url, "--json")
            assert hits and client.get("/api/search", params={"q": "haiku"}).json() == hits
            assert "<mark>" in client.get("/search", params={"q": "haiku"}).text
            assert client.get("/api/search", params={"q": "haiku", "stem": "1"}).status_code == 400
            events = client.get("/api/events")  # Live follows a log directory
            assert events.status_code == 404 and "--dir" in events.json()["error"]
            assert 'id="live-note"' in client.get("/live").text
            health = client.get("/health")
            assert health.status_code == 200 and health.json()["logs"], health.text
            assert "healthy" in client.get("/status").text
        # The database filters, sorts and pages (only a page is fetched): the same
        # sessions as the log directory's listing, for each filter.
        local = serve(log, tmp_path / "serve-dir.err")
        try:
            with server.client() as remote_client, local.client() as local_client:
                participants = sorted({p for row in rows for p in row["participants"]})
                queries = [{}, {"q": "WHAT-IF"}, {"q": "%"}, {"q": "_"}, {"q": "sharegpt"}, {"model": "demo-model"},
                           {"agent": participants[0].upper()}, {"since": "2000-01-01"}, {"since": "1h"},
                           {"order": "messages"}, {"order": "oldest"}, {"all": "1"}]
                for params in queries:
                    remote = remote_client.get("/api/sessions", params=params).json()
                    here = local_client.get("/api/sessions", params=params).json()
                    assert [r["id"] for r in remote["sessions"]] == [r["id"] for r in here["sessions"]], params
                    assert (remote["total"], remote["agents"], remote["models"]) == (
                        here["total"], here["agents"], here["models"]), params
                assert any(remote_client.get("/api/sessions", params=q).json()["total"] < len(rows)
                           for q in queries[1:])
        finally:
            assert local.stop() == 0
    finally:
        assert server.stop() == 0


def test_a_database_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    """``--db`` naming no server: exit 1 and one ``convlog:`` line, before listening."""
    result = run("serve", "--db", "postgresql://127.0.0.1:1/nothing?connect_timeout=2", "--port", "0")
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("convlog: "), result.stderr
