"""The session tree and Live in a real headless Chromium (launched as
:mod:`test_browser` does, with its fixtures): the demo's tree drawn with the nodes and
edges ``/api/sessions/{id}`` names, a click on a node opening the session as it was
there; and a message published through a real broker to a real recorder appearing on
``/live`` within a second of being in the log, its markup shown as text and never run.
Screenshots go to the test artifacts (``served.artifacts_dir``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("served", "recording", "test_browser")  # before the imports below
from recording import recording  # noqa: E402
from served import HOSTILE, Served  # noqa: E402
from test_browser import Tab, api  # noqa: E402

#: The logs and servers (session-wide fixtures, shared with the other web tests), and
#: test_browser's ``browser`` and ``tab``.
pytest_plugins = ["served", "test_browser"]

#: Live's promise: a record is on the page within this many seconds of being in the log.
LIVE_S = 1.0


def drawn(tab: Tab) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """The tree on the page: each node shape's data attributes, each edge's (from, to, kind)."""
    nodes = tab.page.eval_on_selector_all(
        "section#tree svg.convlog-tree [data-node]",
        "els => els.map(e => ({id: e.dataset.node, kind: e.dataset.kind, seq: Number(e.dataset.seq),"
        " session: e.dataset.session, as_of: Number(e.dataset.asOf), count: Number(e.dataset.count),"
        " selected: e.classList.contains('node-selected')}))")
    edges = tab.page.eval_on_selector_all("section#tree svg.convlog-tree path.edge",
                                          "els => els.map(e => [e.dataset.from, e.dataset.to, e.dataset.kind])")
    return nodes, [tuple(edge) for edge in edges]


def same_as_api(tab: Tab, tree: dict[str, Any]) -> list[dict[str, Any]]:
    """The drawn tree is the API's: the same nodes (id, kind, session, seq, as_of,
    count) in the same order, the same edges; returns the drawn nodes."""
    nodes, edges = drawn(tab)
    assert [{k: n[k] for k in ("id", "kind", "session", "seq", "as_of", "count")} for n in nodes] == [
        {k: n[k] for k in ("id", "kind", "session", "seq", "as_of", "count")} for n in tree["nodes"]]
    assert edges == [(e["source"], e["target"], e["kind"]) for e in tree["edges"]]
    return nodes


def test_the_tree_shows_the_demos_history_and_a_click_goes_back_in_time(tab: Tab, demo_server: Served) -> None:
    """The demo's session with a checkpoint, a rewind to it and a crystal, and the
    demo's fork: the SVG in ``section#tree`` (scrollable sideways) has the API's nodes
    and edges; clicking each event node opens ``?as_of=`` its seq, where the page shows
    exactly the node's ``count`` messages and marks that node as the one shown."""
    tab.sign_in(demo_server)
    sessions = api(demo_server, "/api/sessions")["sessions"]
    rewound = next(d for d in (api(demo_server, f"/api/sessions/{row['id']}") for row in sessions) if d["rewinds"])
    fork = next(row for row in sessions if row["parent"])
    for sid in (rewound["session"], fork["parent"]):
        tree = api(demo_server, f"/api/sessions/{sid}")["tree"]
        tab.page.goto(f"{demo_server.base}/sessions/{sid}")
        nodes = same_as_api(tab, tree)
        kinds = {n["kind"] for n in nodes if n["session"] == sid}
        edge_kinds = {e["kind"] for e in tree["edges"]}
        if sid == rewound["session"]:
            assert {"checkpoint", "rewind", "crystal"} <= kinds and "rewinds-to" in edge_kinds
            scroll = tab.page.eval_on_selector("section#tree .tree-scroll", "e => getComputedStyle(e).overflowX")
            assert scroll == "auto"
            tab.shot("session-tree-demo")
        else:
            assert "fork" in kinds and "forks" in edge_kinds and tree["lanes"] == [sid, fork["id"]]
            tab.shot("session-tree-demo-fork")
        assert [n["kind"] for n in nodes if n["selected"]] == ["end"]  # the page shows now
        for node in [n for n in nodes if n["session"] == sid and n["kind"] not in ("start", "end")]:
            tab.page.goto(f"{demo_server.base}/sessions/{sid}")
            tab.page.locator(f'section#tree [data-node="{node["id"]}"]').click()
            tab.page.wait_for_url(f"**/sessions/{sid}?as_of={node['as_of']}")
            tab.page.locator("#as-of-notice").wait_for()
            assert tab.page.locator("li.message").count() == node["count"], node
            then = api(demo_server, f"/api/sessions/{sid}", as_of=node["as_of"])["tree"]
            shown = same_as_api(tab, then)
            assert [(n["kind"], n["as_of"]) for n in shown if n["selected"]] == [(node["kind"], node["as_of"])]
            if node["kind"] == "checkpoint":
                tab.shot("session-tree-demo-as-of-checkpoint")
    tab.assert_quiet()


def test_a_published_message_appears_on_live_within_a_second_as_text(tab: Tab, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A real broker and recorder, ``convlog serve`` on their log, ``/live`` open: a
    message carrying ``<script>`` markup and a unique word, published through the
    broker, is on the page (top row) within a second of the record being complete in
    the log (measured: the log is polled for it, then the row waited for), shown as
    its text; no script ran (``window.pwned`` is undefined) and no element came of
    it. The session filter keeps other sessions' records off the page."""
    with recording(tmp_path) as live:
        tab.sign_in(live.server)
        tab.page.goto(f"{live.server.base}/live")
        tab.page.locator("#live-state.open").wait_for()
        tab.page.locator("tr.record td.text:text-is('the log exists')").wait_for()  # the stream is on
        delays = []
        for i, markup in enumerate(HOSTILE, 1):
            word = f"kittiwake{i}x{time.monotonic_ns()}"
            live.say("live-xss", i, f"{markup} {word}", sender="mallory")
            record, seen = live.written(word)
            row = tab.page.wait_for_selector(f"#live-seq-{record['seq']}", state="attached",
                                             timeout=max(1, (LIVE_S - (time.monotonic() - seen)) * 1000))
            delays.append(time.monotonic() - seen)
            assert row is not None
            assert row.eval_on_selector("td.text", "e => e.textContent") == f"{markup} {word}"
            assert row.eval_on_selector("td.session", "e => e.textContent") == "live-xss"
            assert row.eval_on_selector("td.speaker", "e => e.textContent") == "mallory"
            assert tab.page.eval_on_selector("table.live tbody tr", "e => e.id") == f"live-seq-{record['seq']}"
        with capsys.disabled():
            print(f"\nLive in Chromium: a record was on the page {min(delays) * 1000:.0f}–{max(delays) * 1000:.0f} ms "
                  f"after it was complete in the log ({len(delays)} messages)")
        assert max(delays) < LIVE_S
        assert tab.page.evaluate("typeof window.pwned") == "undefined"
        assert tab.page.locator("table.live script, table.live img, table.live svg").count() == 0
        tab.shot("live")
        tab.page.fill("input[name=session]", "live-b")
        tab.page.click("form.live-filters button[type=submit]")
        tab.page.wait_for_url("**/live?session=live-b**")
        tab.page.locator("#live-state.open").wait_for()
        live.say("live-a", 1, "not for this page")
        live.say("live-b", 1, "for this page")
        live.written("not for this page")
        tab.page.locator("td.text:text-is('for this page')").wait_for()
        assert tab.page.locator("table.live tbody tr").count() == 1
        assert tab.page.locator("td.text:text-is('not for this page')").count() == 0
        tab.shot("live-filtered")
        tab.assert_quiet()
