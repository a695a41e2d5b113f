"""Live (``/live``, ``/api/events``) and the session tree (``/sessions/{id}``'s
``section#tree``, ``/api/sessions/{id}``'s ``tree``) over HTTP, against real
``convlog serve`` subprocesses: on the demo's log, and on a log a real recorder writes
from a real broker while the server streams it. The events are compared with what
``convlog tail --json`` prints, the tree with :func:`convlog.web.tree.tree_of`."""

from __future__ import annotations

import queue
import re
import signal
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from convlog.store.replay import load
from convlog.web.tree import TREE_CSS, tree_of

pytest.register_assert_rewrite("served", "recording")  # before the imports: served is also a plugin (below)
from recording import recording  # noqa: E402
from served import HOSTILE, Served, run  # noqa: E402

#: The logs and servers (session-wide fixtures, shared with the browser tests).
pytest_plugins = ["served"]

STATIC = Path(__file__).resolve().parents[2] / "src" / "convlog" / "web" / "static"


# --------------------------------------------------------------------------- a server-sent events reader


class Events:
    """Reads ``/api/events`` in a thread with httpx's streaming API, parsing the
    text/event-stream (WHATWG HTML §9.2) into dicts of its fields (``id``, ``data``,
    ``event``); comments are kept apart.

    Args:
        server: the server.
        params: query parameters.
        last_id: sent as ``Last-Event-ID``.
    """

    def __init__(self, server: Served, params: dict[str, Any] | None = None, last_id: str | None = None) -> None:
        self.queue: queue.Queue[dict[str, str] | None] = queue.Queue()
        self.comments: list[str] = []
        self.response: httpx.Response | None = None
        self.opened = threading.Event()
        self.ended = threading.Event()
        self.error: BaseException | None = None
        headers = {"Last-Event-ID": last_id} if last_id is not None else {}
        self._client = httpx.Client(base_url=server.base, headers={"Authorization": f"Bearer {server.token}"},
                                    timeout=httpx.Timeout(30, read=None))
        self._thread = threading.Thread(target=self._read, args=(params or {}, headers), daemon=True)
        self._thread.start()
        assert self.opened.wait(15), f"no answer from /api/events: {self.error!r}"
        deadline = time.monotonic() + 15
        while self.response is not None and self.response.status_code == 200 and not any(
                c.startswith(": following after seq ") for c in self.comments):
            assert time.monotonic() < deadline and not self.ended.is_set(), f"not following: {self.comments}"
            time.sleep(0.01)

    def _read(self, params: dict[str, Any], headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", "/api/events", params=params, headers=headers) as response:
                self.response = response
                self.opened.set()
                event: dict[str, str] = {}
                for line in response.iter_lines():
                    if line == "":
                        if event:
                            self.queue.put(event)
                        event = {}
                    elif line.startswith(":"):
                        self.comments.append(line)
                    else:
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        event[name] = f"{event[name]}\n{value}" if name in event else value
        except (httpx.HTTPError, OSError, RuntimeError) as exc:
            self.error = exc
        finally:
            self.opened.set()
            self.ended.set()
            self.queue.put(None)

    def next(self, timeout_s: float = 15.0) -> dict[str, str] | None:
        """The next event (None when the stream ended or nothing came in time)."""
        try:
            return self.queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def take(self, count: int, timeout_s: float = 15.0) -> list[dict[str, str]]:
        """The next ``count`` events (fails when they do not come in time)."""
        got: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count:
            event = self.next(max(0.0, deadline - time.monotonic()))
            assert event is not None, f"{len(got)} of {count} events came: {got}"
            got.append(event)
        return got

    def until(self, word: str, timeout_s: float = 15.0) -> dict[str, str]:
        """The first event whose data contains ``word`` (others are passed over)."""
        deadline = time.monotonic() + timeout_s
        while True:
            event = self.next(max(0.0, deadline - time.monotonic()))
            assert event is not None, f"no event with {word!r} within {timeout_s} s"
            if word in event.get("data", ""):
                return event

    def close(self) -> None:
        """Drop the connection."""
        if self.response is not None:
            self.response.close()
        self._client.close()
        self._thread.join(5)


def tail_json(directory: Path, *args: str) -> list[bytes]:
    """``convlog tail --json ARGS``: the log lines it prints (without newlines)."""
    result = run("tail", "--json", "--dir", str(directory), *args)
    assert result.returncode == 0, result.stderr
    return [line.encode() for line in result.stdout.splitlines()]


def lines_of(events: list[dict[str, str]]) -> list[bytes]:
    """Each event's data, checked to carry its record's seq as the event id."""
    for event in events:
        assert event["id"] == str(orjson.loads(event["data"])["seq"])
    return [event["data"].encode() for event in events]


# --------------------------------------------------------------------------- events from a log at rest


def test_the_newest_records_come_first_as_tail_prints_them(demo_server: Served, demo_log: Path) -> None:
    """``?n=5``: the newest five records, each event's data the line ``convlog tail
    -n 5 --json`` prints and its id the record's seq; then the stream stays open
    (nothing more comes: the log does not grow)."""
    stream = Events(demo_server, {"n": 5})
    try:
        assert stream.response is not None and stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers["cache-control"] == "no-store"
        assert lines_of(stream.take(5)) == tail_json(demo_log, "-n", "5")
        assert stream.next(1.0) is None and not stream.ended.is_set()
    finally:
        stream.close()


def test_last_event_id_resumes_after_that_seq(demo_server: Served, demo_log: Path) -> None:
    """``Last-Event-ID: SEQ`` (what an EventSource sends when it reconnects): every
    record after SEQ, none before, none twice, whatever ``n`` says."""
    every = tail_json(demo_log, "-n", "1000")
    last = orjson.loads(every[-1])["seq"]
    after = last - 12
    stream = Events(demo_server, {"n": 3}, last_id=str(after))
    try:
        got = lines_of(stream.take(12))
        assert got == [line for line in every if orjson.loads(line)["seq"] > after]
        assert stream.next(1.0) is None
    finally:
        stream.close()


def test_filters_by_session_and_kind_as_tail_does(demo_server: Served, demo_log: Path) -> None:
    """``?session=`` and ``?kind=`` (a pattern, repeatable) keep what ``convlog tail
    --session --kind`` keeps."""
    session = "demo-stream"
    expected = tail_json(demo_log, "-n", "100", "--session", session, "--kind", "message*")
    assert expected
    stream = Events(demo_server, {"n": 100, "session": session, "kind": "message*"})
    try:
        assert lines_of(stream.take(len(expected))) == expected
        assert stream.next(1.0) is None
    finally:
        stream.close()
    expected = tail_json(demo_log, "-n", "100", "--kind", "session.fork", "--kind", "session.rewind")
    stream = Events(demo_server, {"n": 100, "kind": ["session.fork", "session.rewind"]})
    try:
        assert lines_of(stream.take(len(expected))) == expected and len(expected) == 2
    finally:
        stream.close()


def test_bad_filters_are_refused(demo_server: Served) -> None:
    """A kind no record can have, a Last-Event-ID or n that is not a number: 400 with
    the reason (the page says it too, escaped)."""
    with demo_server.client() as client:
        for params, headers in (({"kind": "mesage"}, {}), ({"n": "x"}, {}), ({}, {"Last-Event-ID": "abc"})):
            response = client.get("/api/events", params=params, headers=headers)
            assert response.status_code == 400, (params, headers)
            assert response.json()["error"]
        page = client.get("/live", params={"kind": "<script>x</script>"})
        assert page.status_code == 400
        assert "<script>x" not in page.text and "&lt;script&gt;x&lt;/script&gt;" in page.text


def test_the_live_page_carries_its_filters_and_no_record(demo_server: Served) -> None:
    """``/live`` is a GET form with the filters and an empty table whose
    ``data-events`` is the stream's URL with the same filters (escaped); records are
    put in by ``live.js`` only."""
    with demo_server.client() as client:
        page = client.get("/live", params={"session": 'a"b<c', "kind": "message"})
    assert page.status_code == 200
    forms = re.findall(r'<form class="live-filters" method="get" action="/live">', page.text)
    assert len(forms) == 1
    assert 'value="a&#34;b&lt;c"' in page.text
    assert 'data-events="/api/events?session=a%22b%3Cc&amp;kind=message&amp;n=200"' in page.text
    assert '<script src="/static/live.js" defer></script>' in page.text
    assert "<tbody></tbody>" in page.text


def test_live_js_builds_rows_from_text_only() -> None:
    """The page's script never parses a record as HTML: no innerHTML, outerHTML,
    insertAdjacentHTML or document.write; it keeps at most the page's number of rows."""
    script = (STATIC / "live.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "textContent" in script and "deleteRow" in script


# --------------------------------------------------------------------------- events from a log being written


def test_records_stream_as_they_are_recorded_and_a_reconnection_resumes(tmp_path: Path) -> None:
    """A real recorder writes while a client listens: each message arrives (well within
    a second of being in the log) as the line of the log, markup untouched (the data is
    JSON text, not HTML); after a disconnection, ``Last-Event-ID`` gets exactly the
    records missed meanwhile."""
    with recording(tmp_path) as live:
        stream = Events(live.server, {"kind": "message"})
        try:
            delays = []
            for i, text in enumerate(HOSTILE, 1):
                live.say("live-1", i, f"{text} word{i}")
                record, seen = live.written(f"word{i}")
                event = stream.until(f"word{i}", timeout_s=5)
                delays.append(time.monotonic() - seen)
                assert event["id"] == str(record["seq"])
                assert orjson.loads(event["data"]) == record
                assert orjson.loads(event["data"])["data"]["content"] == f"{text} word{i}"
            print(f"Live over HTTP: event {max(delays) * 1000:.0f} ms at most after the record was in the log")
            assert max(delays) < 1.0
            last = event["id"]
        finally:
            stream.close()
        for i in range(4, 7):  # missed while disconnected
            live.say("live-1", i, f"missed word{i}")
        live.written("word6")
        again = Events(live.server, {"kind": "message", "session": "live-1"}, last_id=last)
        try:
            got = again.take(3)
            assert [orjson.loads(e["data"])["data"]["content"] for e in got] == [f"missed word{i}" for i in (4, 5, 6)]
            assert int(got[0]["id"]) > int(last)
            live.say("other", 1, "another session's word7")
            live.say("live-1", 7, "then word8")
            assert "word8" in again.take(1)[0]["data"]  # word7 is another session's: not sent
        finally:
            again.close()


@pytest.mark.slow
def test_an_idle_stream_gets_a_ping_comment_every_15_s(demo_server: Served) -> None:
    """Nothing recorded: after 15 s the stream carries a ``: ping`` comment (proxies and
    browsers keep the connection open), no event."""
    stream = Events(demo_server, {"kind": "message"})
    try:
        started = time.monotonic()
        while not any(c.startswith(": ping") for c in stream.comments):
            assert time.monotonic() - started < 20, stream.comments
            time.sleep(0.1)
        assert 14 < time.monotonic() - started < 20
        assert stream.next(0.1) is None
    finally:
        stream.close()


def test_sigterm_stops_the_server_at_once_while_a_stream_is_open(tmp_path: Path) -> None:
    """uvicorn waits for open connections before it exits; an event stream never ends
    by itself, so the server must end it: SIGTERM with a client connected exits 0
    within a few seconds and the client sees its stream end."""
    with recording(tmp_path) as live:
        stream = Events(live.server, {"n": 1})
        try:
            assert stream.next(10) is not None
            started = time.monotonic()
            live.server.popen.send_signal(signal.SIGTERM)
            code = live.server.popen.wait(10)
            took = time.monotonic() - started
            print(f"SIGTERM with an open event stream: exit {code} after {took:.2f} s")
            assert code == 0 and took < 5
            assert stream.ended.wait(5)
        finally:
            stream.close()


# --------------------------------------------------------------------------- the session tree


class _TreeParser(HTMLParser):
    """The shapes (``data-node`` attributes) and edges (``path[data-kind]``) of an SVG."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[dict[str, str | None]] = []
        self.edges: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("data-node") is not None:
            self.nodes.append(found)
        if tag == "path" and found.get("data-kind"):
            self.edges.append(found)


def test_the_tree_stylesheet_is_the_modules() -> None:
    """``static/tree.css`` is :data:`convlog.web.tree.TREE_CSS` (the module reads it)."""
    assert (STATIC / "tree.css").read_text() == TREE_CSS


@pytest.mark.parametrize("as_of", [None, "first-checkpoint"])
def test_the_session_page_draws_the_tree_of_the_api(demo_server: Served, demo_log: Path, as_of: str | None) -> None:
    """The demo's rewound and crystallised session: ``/api/sessions/ID``'s ``tree`` is
    :func:`~convlog.web.tree.tree_of` at the same cut (nodes and edges); the page draws
    every one of those nodes and edges in ``section#tree`` (inside its scrolling frame),
    with the node the page stands at selected."""
    with demo_server.client() as client:
        sid = next(row["id"] for row in client.get("/api/sessions").json()["sessions"]
                   if client.get(f"/api/sessions/{row['id']}").json()["rewinds"])
        cut = None
        if as_of:
            whole = client.get(f"/api/sessions/{sid}").json()["tree"]
            cut = next(n["as_of"] for n in whole["nodes"] if n["kind"] == "checkpoint")
        params = {"as_of": cut} if cut else {}
        tree = client.get(f"/api/sessions/{sid}", params=params).json()["tree"]
        page = client.get(f"/sessions/{sid}", params=params)
    model = tree_of(load(demo_log, upto_seq=cut), sid)
    assert tree["nodes"] == [{"id": n.id, "kind": n.kind, "session": n.session, "seq": n.seq, "ts": n.ts,
                              "label": n.label, "as_of": n.as_of, "count": n.count} for n in model.nodes]
    assert tree["edges"] == [{"source": e.source, "target": e.target, "kind": e.kind} for e in model.edges]
    kinds = {n["kind"] for n in tree["nodes"]}
    assert {"start", "messages", "checkpoint", "end"} <= kinds
    if cut is None:
        assert {"rewind", "crystal"} <= kinds and "rewinds-to" in {e["kind"] for e in tree["edges"]}
    section = re.search(r'<section id="tree".*?</section>', page.text, re.S)
    assert section is not None and '<div class="tree-scroll"><svg' in section.group()
    parsed = _TreeParser()
    parsed.feed(section.group())
    assert [n["data-node"] for n in parsed.nodes] == [n["id"] for n in tree["nodes"]]
    assert [(e["data-from"], e["data-to"], e["data-kind"]) for e in parsed.edges] == [
        (e["source"], e["target"], e["kind"]) for e in tree["edges"]]
    selected = [n for n in parsed.nodes if "node-selected" in (n.get("class") or "")]
    if cut is None:
        assert [n["data-kind"] for n in selected] == ["end"]  # now
    else:
        assert [(n["data-kind"], n["data-as-of"]) for n in selected] == [("checkpoint", str(cut))]
    assert '<link rel="stylesheet" href="/static/tree.css">' in page.text


def test_the_fork_is_a_lane_of_the_parents_tree(demo_server: Served) -> None:
    """The demo's fork: its parent's tree has two lanes, a ``fork`` node on the parent's
    and a ``forks`` edge to the child's ``start``; the child's page draws the same family."""
    with demo_server.client() as client:
        fork = next(row for row in client.get("/api/sessions").json()["sessions"] if row["parent"])
        parent = client.get(f"/api/sessions/{fork['parent']}").json()["tree"]
        child = client.get(f"/api/sessions/{fork['id']}").json()["tree"]
    assert parent["lanes"] == [fork["parent"], fork["id"]] == child["lanes"]
    nodes = {n["id"]: n for n in parent["nodes"]}
    (edge,) = [e for e in parent["edges"] if e["kind"] == "forks"]
    assert (nodes[edge["source"]]["kind"], nodes[edge["source"]]["session"]) == ("fork", fork["parent"])
    assert (nodes[edge["target"]]["kind"], nodes[edge["target"]]["session"]) == ("start", fork["id"])
    assert [(n["kind"], n["seq"]) for n in parent["nodes"]] == [(n["kind"], n["seq"]) for n in child["nodes"]]


def test_the_schema_documents_the_tree_and_the_events(demo_server: Served) -> None:
    """The OpenAPI document names ``/api/events`` (with ``Last-Event-ID``) and the tree
    member of ``/api/sessions/{id}``."""
    with demo_server.client() as client:
        schema = client.get("/api/schema").json()
    events = schema["paths"]["/api/events"]["get"]
    assert {p["name"] for p in events["parameters"]} == {"session", "kind", "n", "Last-Event-ID"}
    assert '"tree"' in schema["paths"]["/api/sessions/{session}"]["get"]["responses"]["200"]["description"]
