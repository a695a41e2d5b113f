"""The history export (``convlog export --with-history``) against the fold.

The history is built from the steps :func:`convlog.core.fold.fold` reports, on the
records of one fork tree. The law checked here derives a reference from the fold of the
*whole* log instead: replaying a session's history entries one by one (messages
appended, rewinds, checkpoints, forks starting from their parent's messages) gives,
after every entry, exactly the visible messages of ``fold(records up to that seq)``
for that session; a rewind lists exactly the messages visible before it and hidden
after it; and nothing the fold counted (copies, rewinds, crystals, refusals) is missing.

Run with ``--hypothesis-show-statistics`` to see how often the generated logs reach
forks, nested forks, rewinds to a count or to a checkpoint, and the rest.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from convlog.core.document import SESSION_KINDS, Entry, SessionExport
from convlog.core.fold import State, Step, fold_all, message_id
from convlog.readers.export import ExportRequest, build_exports, export_ids, plan_trees

MIDS = ["m1", "m2", "m3", "m4", "m5"]
STREAM_MIDS = ["d1", "d2"]
NAMES = ["c1", "c2"]
# An op names what a record does; repeated names weigh the draw.
OPS = (
    ["message"] * 6 + ["delta"] * 2 + ["end"] * 2 + ["fork"] * 3 + ["rewind"] * 3 + ["rewind.checkpoint"] * 2
    + ["checkpoint"] * 2 + ["crystal", "delete", "start", "llm.request"]
)
counts = st.none() | st.integers(min_value=0, max_value=6)


def _record(seq: int, kind: str, session: str | None, data: Any = None, mid: str | None = None,
            sender: str | None = None, source: str = "sub") -> dict[str, Any]:
    """A parsed log record as :func:`convlog.core.record.parse_line` gives it."""
    meta: dict[str, Any] = {}
    if mid is not None:
        meta["message_id"] = mid
    if sender is not None:
        meta["sender"] = sender
    return {"seq": seq, "ts": f"2026-01-01T00:00:{seq % 60:02d}.{seq:06d}Z", "kind": kind, "source": source,
            "topic": None, "session": session, "data": {} if data is None else data, "meta": meta}


@st.composite
def logs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A random log: messages (copies of one id, from the bus and a PUSH source),
    streams, forks of existing sessions and of forks, rewinds to a count or to a
    checkpoint, checkpoints, crystals, deletes, starts and requests, some of them
    invalid (unknown sessions, counts out of range, unknown checkpoints)."""
    sessions = ["s1"]
    out = []
    for seq in range(1, draw(st.integers(min_value=1, max_value=45)) + 1):
        op = draw(st.sampled_from(OPS))
        known = st.sampled_from(sessions)
        sid = draw(known | st.sampled_from(["s1", "s2", "nobody"])) if op != "fork" else None
        source = draw(st.sampled_from(["sub", "sub", "pull"]))
        if op == "message":
            mid = draw(st.none() | st.sampled_from(MIDS))
            sender = draw(st.sampled_from(["ann", "bot", None]))
            out.append(_record(seq, "message", sid, {"content": f"text {seq}"}, mid, sender, source))
            if sid not in sessions and sid != "nobody":
                sessions.append(sid)
        elif op in ("delta", "end"):
            mid = draw(st.sampled_from(STREAM_MIDS))
            kind = "message.delta" if op == "delta" else "message.end"
            out.append(_record(seq, kind, sid, {"delta": f"part {seq}"}, mid, "bot", source))
        elif op == "fork":
            parent = draw(known | st.just("nobody"))
            child = f"{parent}/f{seq}"
            data = {"parent": parent, "at": draw(counts), "name": draw(st.none() | st.just("alt"))}
            out.append(_record(seq, "session.fork", child, {k: v for k, v in data.items() if v is not None}))
            sessions.append(child)
        elif op == "rewind":
            out.append(_record(seq, "session.rewind", sid, {"to": draw(st.integers(min_value=0, max_value=6))}))
        elif op == "rewind.checkpoint":
            out.append(_record(seq, "session.rewind", sid, {"checkpoint": draw(st.sampled_from(NAMES))}))
        elif op == "checkpoint":
            data = {"name": draw(st.sampled_from(NAMES)), "at": draw(counts)}
            out.append(_record(seq, "session.checkpoint", sid, {k: v for k, v in data.items() if v is not None}))
        elif op == "crystal":
            data = {"summary": f"summary {seq}", "upto": draw(counts)}
            out.append(_record(seq, "session.crystal", sid, {k: v for k, v in data.items() if v is not None}))
        elif op == "delete":
            out.append(_record(seq, "session.delete", sid))
        elif op == "start":
            out.append(_record(seq, "session.start", sid, {"title": f"title {seq}"}))
        else:
            data = {"model": "m", "input_tokens": draw(st.integers(0, 9)), "usage": {"completion_tokens": 2}}
            out.append(_record(seq, "llm.request", sid, data))
    return out


def history_exports(records: list[dict[str, Any]]) -> list[SessionExport]:
    """The history export of every fork tree of the log, built as ``convlog export
    --all --with-history`` builds it (from the tree's records only)."""
    state = fold_all(records)
    out = []
    for tree in plan_trees(state, export_ids(state, True)):
        tree.records = [r for r in records if r.get("session") in tree.members and r["kind"] in SESSION_KINDS]
        out += build_exports(tree, ExportRequest(with_history=True))
    return out


class Reference:
    """Folds of the whole log up to each seq, and message ids of record seqs."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.ids = {r["seq"]: message_id(r) for r in records}
        self._folds: dict[int, State] = {}

    def state(self, seq: int) -> State:
        if seq not in self._folds:
            self._folds[seq] = fold_all(r for r in self.records if r["seq"] <= seq)
        return self._folds[seq]

    def visible(self, sid: str, seq: int) -> list[tuple[int, str]]:
        """The messages visible in ``sid`` once the log up to ``seq`` is folded, as
        ``(record seq, message id)`` (none before the session exists)."""
        state = self.state(seq)
        return [(s, self.ids[s]) for s in state.visible(sid)] if sid in state.sessions else []


def check_history(ref: Reference, export: SessionExport, visible: list[tuple[int, str]]) -> int:
    """Replay ``export``'s history from ``visible`` (the messages it starts with, as
    ``(record seq, message id)``), checking each entry against the reference; recurse
    into nested forks.

    A message is its record, not only its id: once a rewind has hidden message id m, a
    later record with id m is a new visible message (docs/fold.md: only a copy arriving
    while m is visible is merged), so a rewind to a checkpoint can hide that record and
    bring back the earlier one with the same id.

    Returns:
        the number of nested forks checked (for statistics).
    """
    sid = export.id
    final = ref.state(ref.records[-1]["seq"])
    session = final.sessions[sid]
    checkpoints: dict[str, list[tuple[int, str]]] = {}
    nested = 0
    entry: Entry
    for entry in export.history or ():
        before = list(visible)
        d = entry.detail
        if entry.event == "message":
            assert entry.message is not None
            visible.append((entry.seq, entry.message.message_id))
            shown = entry.message.index is not None
            assert entry.message.visible == shown == (entry.seq in session.visible.seqs.tolist())
        elif entry.event == "rewind":
            visible = list(checkpoints[d["checkpoint"]]) if d["checkpoint"] is not None else visible[: d["to_count"]]
            assert (d["from_count"], d["to_count"]) == (len(before), len(visible))
            # Rewound entries are exactly the messages visible before and hidden after.
            assert d["dropped"] == [mid for seq, mid in before if (seq, mid) not in visible]
            event("rewind to a checkpoint" if d["checkpoint"] is not None else "rewind to a count")
        elif entry.event == "checkpoint":
            checkpoints[d["name"]] = visible[: d["at"]]
        elif entry.event == "fork":
            assert entry.fork is not None and entry.fork.id == d["child"]
            assert entry.fork.parent == sid and entry.fork.fork_at == d["at"]
            nested += (export.parent is not None) + check_history(ref, entry.fork, visible[: d["at"]])
        elif entry.event == "rejected":
            assert any(e.seq == entry.seq and e.session == sid for e in ref.state(entry.seq).errors)
        # After every entry the replayed history shows what the fold shows.
        assert visible == ref.visible(sid, entry.seq), (sid, entry.event, entry.seq)
    events = [e.event for e in export.history or ()]
    assert visible == ref.visible(sid, final.last_seq)
    assert [(m.seq, m.message_id) for m in export.messages] == visible
    assert events.count("copy") == session.duplicates
    assert events.count("rewind") == len(session.rewinds)
    assert events.count("crystal") == len(session.crystals)
    assert events.count("fork") == sum(s.parent == sid for s in final.sessions.values())
    assert events.count("rejected") == sum(e.session == sid for e in final.errors)
    assert events.count("llm.request") == session.usage.requests
    return nested


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs())
def test_history_export_replays_to_the_fold(records: list[dict[str, Any]]) -> None:
    """Law: each session's history, replayed entry by entry, has the visible messages
    of the fold of the whole log up to that entry; its rewinds hide exactly the
    messages they list; its forks start from their parent's messages at the fork."""
    ref = Reference(records)
    exports = history_exports(records)
    final = ref.state(records[-1]["seq"])
    exported = [m.id for e in exports for m in e.tree()]
    assert len(exported) == len(set(exported))
    assert {s.id for s in final.session_list()} <= set(exported)
    nested = sum(check_history(ref, export, []) for export in exports)
    forks = sum(s.parent is not None for s in final.sessions.values())
    if forks:
        event("fork applied")
    if nested:
        event("nested fork (a fork of a fork) applied")
    if any(s.rewinds for s in final.sessions.values()):
        event("rewind applied")
    if final.errors:
        event("some record refused")
    if any(s.duplicates for s in final.sessions.values()):
        event("copies counted")
    if final.streams:
        event("stream opened")
    if any(s.crystals for s in final.sessions.values()):
        event("crystal applied")
    if any(s.deleted for s in final.sessions.values()):
        event("session deleted")
    target(float(forks + nested), label="forks and nested forks")


def test_an_ordinary_fold_builds_no_steps_and_an_observed_one_tells_each() -> None:
    """The observer is opt-in: without one the fold is as before; with one it hears one
    step per applied record, in log order, with the facts a history shows."""
    records = [
        _record(1, "message", "s1", {"content": "a"}, "m1", "ann"),
        _record(2, "message", "s1", {"content": "b"}, "m2", "bot"),
        _record(3, "message", "s1", {"content": "b"}, "m2", "bot", "pull"),
        _record(4, "session.checkpoint", "s1", {"name": "c", "at": 1}),
        _record(5, "session.fork", "s1/f", {"parent": "s1", "at": 2, "name": "alt"}),
        _record(6, "session.rewind", "s1", {"checkpoint": "c"}),
        _record(7, "session.crystal", "s1", {"summary": "sum", "upto": 1}),
        _record(8, "session.rewind", "s1", {"to": 9}),
        _record(9, "message.delta", "s1", {"delta": "x"}, "d1", "bot"),
        _record(10, "message.delta", "s1", {"delta": "y"}, "d1", "bot"),
        _record(11, "message.end", "s1", {}, "d1", "bot"),
        _record(12, "llm.request", "s1", {"usage": {"prompt_tokens": 3}, "cost_usd": 0.5}),
        _record(13, "session.delete", "s1"),
    ]
    steps: list[Step] = []
    observed = fold_all(records, observe=steps.append)
    assert observed == fold_all(records)
    assert [(s.seq, s.effect, s.session) for s in steps] == [
        (1, "message", "s1"), (2, "message", "s1"), (3, "copy", "s1"), (4, "checkpoint", "s1"),
        (5, "fork", "s1/f"), (6, "rewind", "s1"), (7, "crystal", "s1"), (8, "rejected", "s1"),
        (9, "message", "s1"), (10, "stream.delta", "s1"), (11, "stream.end", "s1"), (12, "llm.request", "s1"),
        (13, "delete", "s1"),
    ]
    by_seq = {s.seq: s.detail for s in steps}
    assert by_seq[2] == {"message_id": "m2", "sender": "bot", "index": 2}
    assert by_seq[5] == {"parent": "s1", "at": 2, "branch": "alt"}
    assert by_seq[6]["rewind"].dropped == (2,) and by_seq[6]["checkpoint"] == "c"
    assert by_seq[7]["crystal"].upto == 1 and by_seq[7]["summary"] == "sum"
    assert by_seq[8]["kind"] == "session.rewind" and "out of range" in by_seq[8]["error"].reason
    assert by_seq[12] == {"model": None, "input_tokens": 3, "output_tokens": 0, "cost_usd": 0.5}
    assert by_seq[13] == {"repeated": False}
