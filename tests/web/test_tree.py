"""The session tree of the web UI (:mod:`convlog.web.tree`) on real logs: the demo's
recording (a checkpoint and a rewind to it, a crystal, a fork) and the Shearwater
recording imported as the README does, compared with what the CLI says; escaping of
untrusted ids and labels; the size cap for a session of 10k messages; and laws over
random fork/rewind/checkpoint histories folded by the real fold."""

from __future__ import annotations

import subprocess
import time
import xml.etree.ElementTree as ET
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_checkpoint import LogBuilder

from conftest import convlog_cmd, shearwater_file
from convlog.core.fold import State, fold_all
from convlog.store.replay import load
from convlog.web.tree import (
    EDGE_KINDS,
    NODE_KINDS,
    Tree,
    default_link,
    family_records,
    render_svg,
    session_tree,
    tree_of,
)

SVG = "{http://www.w3.org/2000/svg}"


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the convlog CLI in a subprocess; fail the test on a non-zero exit."""
    proc = subprocess.run(convlog_cmd(*args), capture_output=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"convlog {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
    return proc


def history(directory: Path, session: str) -> dict[str, Any]:
    """``convlog export SESSION --with-history --format json``: the CLI's account of
    every fork, rewind, checkpoint and crystal of the session, with seqs."""
    doc = orjson.loads(run("export", session, "--with-history", "--format", "json", "--dir", str(directory)).stdout)
    (item,) = doc["sessions"]
    return item


def shown(directory: Path, session: str, as_of: int | None = None) -> dict[str, Any]:
    """``convlog show SESSION --format json [--as-of SEQ]``."""
    args = ["show", session, "--format", "json", "--dir", str(directory)]
    if as_of is not None:
        args += ["--as-of", str(as_of)]
    return orjson.loads(run(*args).stdout)


def parse_svg(svg: str) -> ET.Element:
    """The SVG parsed as XML (fails the test when it is not well-formed)."""
    return ET.fromstring(svg)


def check_svg(tree: Tree, svg: str) -> ET.Element:
    """The SVG is well-formed, has no style attribute or script, and draws every node
    (in a link, with its data attributes and a tooltip) and every edge of the tree."""
    root = parse_svg(svg)
    assert "style=" not in svg and "<script" not in svg
    for element in root.iter():
        assert "style" not in element.attrib
    shapes = {el.get("data-node"): el for el in root.iter() if el.get("data-node") is not None}
    assert set(shapes) == {node.id for node in tree.nodes}
    links = list(root.iter(f"{SVG}a"))
    assert len(links) == len(tree.nodes)
    for link in links:
        assert link.get("href")
        assert link.find(f"{SVG}title") is not None
    for node in tree.nodes:
        shape = shapes[node.id]
        assert shape.get("data-kind") == node.kind
        assert shape.get("data-seq") == str(node.seq)
        assert shape.get("data-session") == node.session
    paths = [el for el in root.iter(f"{SVG}path") if el.get("data-kind") is not None]
    assert sorted((p.get("data-from"), p.get("data-to"), p.get("data-kind")) for p in paths) == sorted(
        (e.source, e.target, e.kind) for e in tree.edges)
    return root


def check_laws(tree: Tree) -> None:
    """Structural laws of every tree: edges join existing nodes; along a lane seqs and
    x increase together (and times never go back); a fork's child lane starts at the
    parent's fork node (same x, a ``forks`` edge); kinds are known."""
    by_id = {node.id: node for node in tree.nodes}
    assert len(by_id) == len(tree.nodes)
    for edge in tree.edges:
        assert edge.source in by_id and edge.target in by_id and edge.kind in EDGE_KINDS
    for lane, sid in enumerate(tree.lanes):
        nodes = [node for node in tree.nodes if node.session == sid]
        assert nodes[0].kind == "start" and nodes[-1].kind == "end"
        assert all(node.lane == lane and node.kind in NODE_KINDS for node in nodes)
        for a, b in pairwise(nodes):
            assert a.seq <= b.seq and a.x < b.x
            if a.ts is not None and b.ts is not None:
                assert a.ts <= b.ts
        parent = tree.parents[sid]
        if parent is not None:
            start = nodes[0]
            forks = [e for e in tree.edges if e.kind == "forks" and e.target == start.id]
            assert len(forks) == 1
            fork = by_id[forks[0].source]
            assert fork.kind == "fork" and fork.session == parent
            assert fork.seq == start.seq and fork.x == start.x and fork.lane < start.lane
    assert tree.mismatches == []


# --------------------------------------------------------------------------- the demo


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``convlog demo``: ShareGPT conversations, a checkpoint and a rewind to it, a
    crystal, a fork, a streamed reply and usage, recorded through a real broker."""
    directory = tmp_path_factory.mktemp("demo") / "log"
    run("demo", "--dir", str(directory), "--conversations", "5")
    return directory


def test_demo_tree_matches_the_cli(demo_log: Path) -> None:
    """On the demo's log, the trees of the rewound session and of the fork hold the
    checkpoint, rewind, crystal and fork that ``convlog export --with-history`` lists,
    at the same seqs and times; the rewind goes back to the checkpoint it named; the
    fork's lane hangs off its parent's fork node; and clicking any node (its as_of)
    shows with ``convlog show --as-of`` as many messages as the node says."""
    replay = load(demo_log)
    rewound = next(sid for sid, s in replay.state.sessions.items() if s.rewinds)
    forked = next(sid for sid, s in replay.state.sessions.items() if s.parent is not None)
    parent = replay.state.sessions[forked].parent
    assert parent is not None

    tree = tree_of(replay, rewound)
    check_laws(tree)
    check_svg(tree, render_svg(tree))
    assert tree.lanes == [rewound] and tree.axis == "time"
    entries = history(demo_log, rewound)["history"]
    events = {(e["event"], e["seq"], e["ts"]) for e in entries if e["event"] in ("rewind", "checkpoint", "crystal")}
    drawn = {(n.kind, n.seq, n.ts) for n in tree.nodes if n.kind in ("rewind", "checkpoint", "crystal")}
    assert drawn == events and {kind for kind, _, _ in drawn} == {"rewind", "checkpoint", "crystal"}
    (rewind,) = [n for n in tree.nodes if n.kind == "rewind"]
    (back,) = [e for e in tree.edges if e.kind == "rewinds-to"]
    target = tree.node(back.target)
    assert back.source == rewind.id and target.kind == "checkpoint" and "before-tangent" in target.label
    assert target.seq < rewind.seq and target.x < rewind.x
    for node in tree.nodes:
        assert len(shown(demo_log, rewound, node.as_of)["messages"]) == node.count, node
    end = tree.nodes[-1]
    assert end.count == len(shown(demo_log, rewound)["messages"])

    # The fork's family: the same tree from either member, two lanes.
    tree = tree_of(replay, forked)
    assert tree_of(replay, parent).nodes == tree.nodes
    check_laws(tree)
    check_svg(tree, render_svg(tree))
    child = shown(demo_log, forked)
    assert tree.lanes == [parent, forked] and tree.parents[forked] == child["parent"] == parent
    (fork,) = [n for n in tree.nodes if n.kind == "fork"]
    (fork_entry,) = [e for e in history(demo_log, parent)["history"] if e["event"] == "fork"]
    assert (fork.session, fork.seq, fork.ts) == (parent, fork_entry["seq"], fork_entry["ts"])
    assert fork_entry["child"] == forked and fork_entry["at"] == child["fork_at"]
    start = next(n for n in tree.nodes if n.session == forked)
    assert start.kind == "start" and start.count == child["fork_at"] and start.seq == fork.seq
    for node in tree.nodes:
        assert len(shown(demo_log, node.session, node.as_of)["messages"]) == node.count, node


def test_node_links(demo_log: Path) -> None:
    """Each node links to its session page as of its seq (the id percent-encoded)."""
    replay = load(demo_log)
    sid = next(iter(replay.state.sessions))
    tree = tree_of(replay, sid)
    root = parse_svg(render_svg(tree, link=default_link))
    hrefs = [a.get("href") for a in root.iter(f"{SVG}a")]
    assert hrefs == [f"/sessions/{n.session}?as_of={n.as_of}" for n in tree.nodes]
    custom = parse_svg(render_svg(tree, link=lambda n: f"/x?seq={n.as_of}&s={n.session}"))
    assert [a.get("href") for a in custom.iter(f"{SVG}a")] == [f"/x?seq={n.as_of}&s={n.session}" for n in tree.nodes]


# --------------------------------------------------------------------------- Shearwater


@pytest.fixture(scope="module")
def shearwater_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """current_session.jsonl imported as the README does, then session commands on
    handshake_test: a fork, a fork of the fork, a crystal, a checkpoint, rewinds."""
    directory = tmp_path_factory.mktemp("shearwater") / "log"
    d = str(directory)
    run("import", str(shearwater_file("current_session.jsonl")), "--dir", d)
    run("fork", "handshake_test", "--at", "3", "--name", "alt", "--id", "alt", "--dir", d)
    run("fork", "alt", "--at", "2", "--name", "alt2", "--id", "alt2", "--dir", d)
    run("crystal", "handshake_test", "--summary", "Claude and Gemini shook hands.", "--upto", "4", "--dir", d)
    run("checkpoint", "handshake_test", "five", "--at", "5", "--dir", d)
    run("rewind", "handshake_test", "--to", "6", "--dir", d)
    run("rewind", "alt", "--to", "1", "--dir", d)
    run("rewind", "handshake_test", "--checkpoint", "five", "--dir", d)
    return directory


def test_shearwater_tree(shearwater_log: Path) -> None:
    """On the imported Shearwater recording, handshake_test's family has three lanes
    (a fork of a fork), its control records are drawn at the seqs the CLI's history
    gives, each rewind goes back where the fold says, and every node's count is what
    the log folded to its as_of shows."""
    replay = load(shearwater_log)
    tree = tree_of(replay, "alt2")
    check_laws(tree)
    check_svg(tree, render_svg(tree))
    assert tree.root == "handshake_test" and tree.lanes == ["handshake_test", "alt", "alt2"]
    assert tree.parents == {"handshake_test": None, "alt": "handshake_test", "alt2": "alt"}
    entries = history(shearwater_log, "handshake_test")["history"]
    kinds = ("rewind", "checkpoint", "crystal", "fork")
    expected = [(e["event"], e["seq"]) for e in entries if e["event"] in kinds]
    assert [(n.kind, n.seq) for n in tree.nodes if n.session == "handshake_test" and n.kind in kinds] == expected
    assert [n.kind for n in tree.nodes if n.session == "alt"] == ["start", "fork", "rewind", "end"]
    backs = {tree.node(e.source).session: tree.node(e.target) for e in tree.edges if e.kind == "rewinds-to"}
    assert len([e for e in tree.edges if e.kind == "rewinds-to"]) == 3
    assert backs["alt"].kind == "start"  # rewound to 1 of its 3 inherited messages
    cached: dict[int, State] = {}
    for node in tree.nodes:
        state = cached.setdefault(node.as_of, load(shearwater_log, upto_seq=node.as_of).state)
        assert len(state.sessions[node.session].visible) == node.count, node
    for edge in (e for e in tree.edges if e.kind == "rewinds-to"):
        after = cached[tree.node(edge.source).as_of].sessions[tree.node(edge.source).session].visible.seqs.tolist()
        target = tree.node(edge.target)
        at_target = load(shearwater_log, upto_seq=target.as_of).state.sessions[target.session].visible.seqs.tolist()
        assert at_target[: len(after)] == after
    assert tree.axis in ("time", "seq")


# --------------------------------------------------------------------------- escaping


def test_untrusted_ids_and_labels_are_escaped() -> None:
    """A session id and a checkpoint name holding markup, quotes and characters XML
    cannot hold come out as text: the SVG parses, holds no element from them, and the
    attribute values read back exactly."""
    evil = "<script>alert(1)</script>\"'&x"
    fork_id = 'f"><a href="javascript:alert(1)">'
    name = "</title><script>alert('cp')</script>\x01"
    records = [
        {"seq": 1, "ts": "2026-11-21T12:00:00.000001Z", "kind": "message", "session": evil,
         "data": {"text": "hi"}, "meta": {"message_id": "m1"}},
        {"seq": 2, "ts": "2026-11-21T12:00:01.000002Z", "kind": "session.checkpoint", "session": evil,
         "data": {"name": name}},
        {"seq": 3, "ts": "2026-11-21T12:00:02.000003Z", "kind": "message", "session": evil,
         "data": {"text": "more"}, "meta": {"message_id": "m2"}},
        {"seq": 4, "ts": "2026-11-21T12:00:03.000004Z", "kind": "session.rewind", "session": evil,
         "data": {"checkpoint": name}},
        {"seq": 5, "ts": "2026-11-21T12:00:04.000005Z", "kind": "session.fork", "session": fork_id,
         "data": {"parent": evil, "name": "<b>"}},
    ]
    state = fold_all(records)
    assert not state.errors
    tree = session_tree(state, records, evil)
    svg = render_svg(tree)
    root = check_svg(tree, svg)
    assert "<script" not in svg and "javascript:alert(1)\">" not in svg
    assert {el.tag for el in root.iter()} <= {f"{SVG}{t}" for t in
                                                ("svg", "title", "g", "line", "text", "path", "a", "circle", "rect")}
    assert {el.get("data-session") for el in root.iter() if el.get("data-kind") in NODE_KINDS} == {evil, fork_id}
    titles = " ".join(el.text or "" for el in root.iter(f"{SVG}title"))
    assert "</title><script>alert('cp')</script>\ufffd" in titles
    hrefs = [a.get("href") for a in root.iter(f"{SVG}a")]
    assert all(h.startswith("/sessions/%3Cscript%3E") or h.startswith("/sessions/f%22%3E") for h in hrefs)


def test_equal_times_fall_back_to_a_seq_axis() -> None:
    """When every record of the family has the same receive time (an import written in
    one go), columns are evenly spaced in seq order and the ticks name seqs; a deleted
    session ends in a ``deleted`` node."""
    records = [
        {"seq": seq, "ts": "2026-11-21T12:00:00.000000Z", "kind": kind, "session": "s", "data": data,
         "meta": {"message_id": f"m{seq}"}}
        for seq, kind, data in [(1, "message", {}), (2, "message", {}), (3, "session.checkpoint", {"name": "a"}),
                                (4, "message", {}), (5, "session.rewind", {"to": 1}), (6, "session.delete", {})]
    ]
    state = fold_all(records)
    tree = session_tree(state, records, "s")
    check_laws(tree)
    check_svg(tree, render_svg(tree))
    assert tree.axis == "seq" and tree.ticks and all(t.label.startswith("seq ") for t in tree.ticks)
    xs = [n.x for n in tree.nodes]
    assert len({round(b - a, 1) for a, b in pairwise(xs)}) == 1  # evenly spaced
    assert [n.kind for n in tree.nodes] == ["start", "messages", "checkpoint", "messages", "rewind", "end"]
    assert tree.nodes[-1].short == "deleted" and tree.nodes[-1].seq == 6
    (back,) = [e for e in tree.edges if e.kind == "rewinds-to"]
    assert tree.node(back.target).kind == "start"  # rewound to the first message, which the start brought


# --------------------------------------------------------------------------- size cap


def test_ten_thousand_messages_render_small(tmp_path: Path) -> None:
    """A session of 10,000 messages with a checkpoint every 20 messages, a crystal every
    500 and a rewind every 2,000, written to a real log by the real writer and read back
    as a page would (load, then tree_of), draws at most ``max_nodes`` nodes and a small
    SVG; ``hidden`` says how many were left out; without the cap every event is a node."""
    log = LogBuilder(tmp_path / "log", segment_bytes=1 << 20)
    for i in range(1, 10_001):
        seconds = log.seq + 1
        ts = f"2026-11-21T{12 + seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.000000Z"
        log.add({"type": "message", "session_id": "big", "message_id": f"m{i}", "sender": "a", "content": "x" * 40},
                ts=ts)
        if i % 20 == 0:
            log.add({"type": "session.checkpoint", "session_id": "big", "name": f"c{i}"}, ts=ts)
        if i % 500 == 0:
            log.add({"type": "session.crystal", "session_id": "big", "summary": f"up to {i}"}, ts=ts)
        if i % 2_000 == 0:
            log.add({"type": "session.rewind", "session_id": "big", "to": i - 1_000}, ts=ts)
    log.close()
    began = time.perf_counter()
    replay = load(tmp_path / "log")
    assert not replay.state.errors
    tree = tree_of(replay, "big", max_nodes=200)
    svg = render_svg(tree)
    took = time.perf_counter() - began
    check_laws(tree)
    check_svg(tree, svg)
    size = len(svg.encode("utf-8"))
    print(f"10k messages: {len(tree.nodes)} nodes drawn, {tree.hidden} hidden, {size:,} bytes of SVG, "
          f"load + tree + SVG in {took:.2f} s")
    assert len(tree.nodes) <= 200 and tree.hidden > 0 and tree.axis == "time"
    assert size < 150_000
    assert tree.nodes[-1].count == len(replay.state.sessions["big"].visible) == 9_000
    uncapped = session_tree(replay.state, family_records(replay.directory, replay.state, "big"), "big",
                            max_nodes=10**9)
    assert uncapped.hidden == 0
    assert sum(n.kind == "checkpoint" for n in uncapped.nodes) == 500
    assert sum(n.kind == "rewind" for n in uncapped.nodes) == 5
    assert sum(n.messages for n in uncapped.nodes) + 1 == 10_000  # the start node brings the first


# --------------------------------------------------------------------------- laws


_OP = st.tuples(
    st.sampled_from(["msg", "msg", "msg", "msg", "copy", "fork", "fork", "rewind", "rewind", "checkpoint",
                     "checkpoint", "rewind_cp", "rewind_cp", "crystal", "stream", "delete"]),
    st.one_of(st.integers(-2, -1), st.integers(0, 7)),  # which session: negative from the newest
    st.floats(0, 1),  # a count as a fraction of the session's visible messages
    st.integers(0, 1),  # a checkpoint name
)
_OPS = st.lists(_OP, min_size=1, max_size=60)


def build(ops: list[tuple[str, int, float, int]]) -> list[dict[str, Any]]:
    """Records for a random history: messages, copies, streams, forks (of any session
    so far, so forks of forks), rewinds to N or to a named checkpoint, checkpoints,
    crystals and deletes. Counts are chosen from a rough tally; the fold decides."""
    records: list[dict[str, Any]] = []
    sessions = ["s0"]
    size = {"s0": 0}

    def add(kind: str, sid: str, data: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
        seq = len(records) + 1
        records.append({"seq": seq, "ts": f"2026-11-21T12:00:{seq // 3:02d}.000000Z", "kind": kind,
                        "session": sid, "data": data, "meta": meta or {}, "source": "sub"})

    add("message", "s0", {"text": "first"}, {"message_id": "s0-0"})
    size["s0"] = 1
    for op, who, frac, name in ops:
        sid = sessions[who % len(sessions)] if who >= 0 else sessions[max(len(sessions) + who, 0)]
        n = round(frac * size[sid])
        if op == "msg":
            add("message", sid, {"text": "hi"}, {"message_id": f"{sid}-{len(records)}"})
            size[sid] += 1
        elif op == "copy":
            add("message", sid, {"text": "again"}, {"message_id": "s0-0"})
        elif op == "stream":
            mid = f"st-{len(records)}"
            add("message.delta", sid, {"delta": "a"}, {"message_id": mid})
            add("message.end", sid, {}, {"message_id": mid})
            size[sid] += 1
        elif op == "fork":
            child = f"s{len(sessions)}"
            sessions.append(child)
            size[child] = n
            add("session.fork", child, {"parent": sid, "at": n, "name": f"b{len(sessions)}"})
        elif op == "rewind":
            add("session.rewind", sid, {"to": n})
            size[sid] = n
        elif op == "rewind_cp":
            add("session.rewind", sid, {"checkpoint": f"cp{name}"})
        elif op == "checkpoint":
            add("session.checkpoint", sid, {"name": f"cp{name}", "at": n})
        elif op == "crystal":
            add("session.crystal", sid, {"summary": "so far", "upto": n})
        else:
            add("session.delete", sid, {})
    return records


def _depth(tree: Tree, sid: str) -> int:
    depth = 0
    while tree.parents[sid] is not None:
        sid = tree.parents[sid]  # type: ignore[assignment]
        depth += 1
    return depth


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS, cap=st.sampled_from([6, 12, 1000]))
def test_tree_laws_over_random_histories(ops: list[tuple[str, int, float, int]], cap: int) -> None:
    """For random histories folded by the real fold, every tree: edges join existing
    nodes; x is monotone with seq and time along a lane; every fork's lane starts at its
    parent's fork node; every node's count is the session's visible count in the log
    folded to the node's as_of; a rewind's target shows a visible list the rewound one
    is a prefix of (equal when it is a message span); the SVG is well-formed."""
    records = build(ops)
    state = fold_all(records)
    prefix_states: dict[int, State] = {}

    def at(seq: int) -> State:
        if seq not in prefix_states:
            prefix_states[seq] = fold_all(records[:seq])
        return prefix_states[seq]

    seen: set[str] = set()
    lanes = depth = 0
    for sid in state.sessions:
        if sid in seen:
            continue
        tree = session_tree(state, records, sid, max_nodes=cap)
        seen.update(tree.lanes)
        check_laws(tree)
        check_svg(tree, render_svg(tree))
        lanes = max(lanes, len(tree.lanes))
        depth = max([depth, *(_depth(tree, lane) for lane in tree.lanes)])
        if tree.hidden:
            event("nodes hidden by the cap")
        for node in tree.nodes:
            assert len(at(node.as_of).sessions[node.session].visible) == node.count, node
        for edge in tree.edges:
            if edge.kind != "rewinds-to":
                continue
            rewind, target = tree.node(edge.source), tree.node(edge.target)
            event(f"rewinds-to {target.kind}")
            after = at(rewind.as_of).sessions[rewind.session].visible.seqs.tolist()
            there = at(target.as_of).sessions[target.session].visible.seqs.tolist()
            assert there[: len(after)] == after
            if target.kind == "messages":
                assert there == after
        ends = {n.session: n for n in tree.nodes if n.kind == "end"}
        assert {lane: n.count for lane, n in ends.items()} == {
            lane: len(state.sessions[lane].visible) for lane in tree.lanes}
        assert {lane for lane, n in ends.items() if n.short == "deleted"} == {
            lane for lane in tree.lanes if state.sessions[lane].deleted}
    event(f"largest family: {min(lanes, 4)}{'+' if lanes >= 4 else ''} lanes")
    if depth >= 2:
        event("fork of a fork")
    if any(r["kind"] == "session.rewind" for r in records) and not state.errors:
        event("rewinds, none refused")
