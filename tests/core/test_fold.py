"""Tests for convlog.core.fold: folding log records into conversation state."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from convlog.core.fold import (
    Crystal,
    FoldError,
    Gap,
    Refs,
    Rewind,
    SessionCheckpoint,
    State,
    Stream,
    fold,
    fold_all,
    message_key,
)
from convlog.core.view import stream_text

# --------------------------------------------------------------------------- factory

_MISSING = object()


def rec(
    seq: int,
    kind: str,
    session: Any = None,
    data: Any = None,
    meta: Any = _MISSING,
    source: Any = "sub",
) -> dict[str, Any]:
    """Build one record as parse_line would return it (``meta`` and ``source`` omitted
    when _MISSING; ``source`` is the socket it came through: ``sub`` or ``pull``)."""
    record: dict[str, Any] = {
        "seq": seq,
        "ts": f"2026-11-21T12:00:00.{seq:06d}Z",
        "kind": kind,
        "source": source,
        "topic": None,
        "session": session,
        "data": data,
    }
    if meta is not _MISSING:
        record["meta"] = meta
    if source is _MISSING:
        del record["source"]
    return record


class Log:
    """Builds a list of records with consecutive seqs (1, 2, 3, ...)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def add(self, kind: str, session: Any = None, data: Any = None, meta: Any = _MISSING, source: Any = "sub") -> int:
        seq = len(self.records) + 1
        self.records.append(rec(seq, kind, session, data, meta, source))
        return seq

    def msg(self, session: Any, mid: Any = None, sender: Any = None, role: Any = None) -> int:
        meta = {"message_id": mid, "sender": sender, "role": role}
        return self.add("message", session, {"text": "hello"}, meta)

    def delta(self, session: Any, mid: Any) -> int:
        return self.add("message.delta", session, {"delta": "x"}, {"message_id": mid})

    def end(self, session: Any, mid: Any) -> int:
        return self.add("message.end", session, {"text": "done"}, {"message_id": mid})

    def fold(self) -> State:
        return fold_all(self.records)


#: Every message id these tests use, by key: the state keeps keys, not ids.
_ID_OF_KEY = {
    message_key(name): name
    for name in [*(f"{p}{i}" for p in ("m", "b", "x") for i in range(100)), *(f"seq:{i}" for i in range(1, 200))]
}


def ids(state: State, session: str) -> list[str | int]:
    """The visible message ids of ``session`` (an unknown key stays an int and fails)."""
    return [_ID_OF_KEY.get(key, key) for key in state.sessions[session].visible.keys]


def refs(*pairs: tuple[int, str], speakers: tuple[str, ...] = ()) -> Refs:
    """Refs of ``(seq, message_id)`` pairs without senders, or with ``(seq, id, sender)``."""
    out = Refs()
    for seq, mid, *sender in pairs:
        out.append(seq, message_key(mid), speakers.index(sender[0]) if sender and sender[0] is not None else -1)
    return out


# --------------------------------------------------------------------------- messages


def test_message_creates_session_and_appends_ref() -> None:
    """A message creates its session on first sight and appends a ref with its meta."""
    log = Log()
    s1 = log.msg("a", "m1", sender="bob", role="user")
    s2 = log.msg("a", "m2", sender="alice", role="assistant")
    state = log.fold()
    session = state.sessions["a"]
    assert state.visible("a") == [s1, s2]
    assert session.visible == refs((s1, "m1", "bob"), (s2, "m2", "alice"), speakers=("bob", "alice"))
    assert session.speakers == ["bob", "alice"]
    assert (session.first_seq, session.last_seq) == (s1, s2)
    assert session.last_ts == log.records[-1]["ts"]
    assert session.participants == ["alice", "bob"]


def test_message_without_id_uses_seq() -> None:
    """A message with no meta.message_id (or no meta at all) gets the id "seq:<seq>"."""
    log = Log()
    log.msg("a")
    log.add("message", "a", "text")
    state = log.fold()
    assert ids(state, "a") == ["seq:1", "seq:2"]


def test_non_string_sender_and_role_are_ignored() -> None:
    """A sender or role that is not a string is kept as None."""
    log = Log()
    log.msg("a", "m1", sender=5, role=["x"])
    state = log.fold()
    assert state.sessions["a"].visible == refs((1, "m1"))
    assert state.sessions["a"].participants == []


def test_message_without_session_is_counted_unsessioned() -> None:
    """A message with session None is only counted in state.unsessioned."""
    log = Log()
    log.msg(None, "m1")
    state = log.fold()
    assert state.unsessioned == 1
    assert state.sessions == {}
    assert state.errors == []


def test_duplicate_message_is_shown_once_and_counted() -> None:
    """Copies of one message id in one session appear once; extra copies are counted."""
    log = Log()
    log.msg("a", "m1")
    log.msg("a", "m2")
    log.msg("a", "m1")
    log.msg("a", "m1")
    log.msg("b", "m1")
    state = log.fold()
    assert ids(state, "a") == ["m1", "m2"]
    assert state.visible("a")[0] == 1
    assert state.sessions["a"].copies == {"m1": 2}
    assert state.sessions["a"].duplicates == 2
    assert ids(state, "b") == ["m1"]
    assert state.sessions["b"].duplicates == 0


def test_message_rewound_away_is_appended_again() -> None:
    """Dedup is against the visible list: a rewound-away id arriving again is appended."""
    log = Log()
    log.msg("a", "m1")
    log.msg("a", "m2")
    log.add("session.rewind", "a", {"to": 1})
    log.msg("a", "m2")
    state = log.fold()
    assert ids(state, "a") == ["m1", "m2"]
    assert state.visible("a")[1] == 4
    assert state.sessions["a"].duplicates == 0


def test_message_to_deleted_session_is_folded_but_stays_deleted() -> None:
    """A message to a deleted session is appended; the session stays deleted."""
    log = Log()
    log.msg("a", "m1")
    deleted = log.add("session.delete", "a")
    log.msg("a", "m2")
    state = log.fold()
    assert ids(state, "a") == ["m1", "m2"]
    assert state.sessions["a"].deleted_seq == deleted


# --------------------------------------------------------------------------- streams


def test_stream_is_visible_while_open_and_completes_on_end() -> None:
    """The first delta opens a visible stream; deltas accumulate; the end completes it."""
    log = Log()
    first = log.add("message.delta", "a", "he", {"message_id": "m1", "sender": "bot"})
    log.msg("a", "m0")
    second = log.delta("a", "m1")
    state = log.fold()
    assert state.sessions["a"].visible == refs((first, "m1", "bot"), (2, "m0"), speakers=("bot",))
    stream = state.streams[("a", "m1")]
    assert stream == Stream("a", "m1", first, array("q", [first, second]), None, False, "sub")
    assert state.incomplete_streams() == [stream]
    end = log.end("a", "m1")
    state = log.fold()
    assert state.streams[("a", "m1")] == Stream("a", "m1", first, array("q", [first, second]), end, True, "sub")
    assert state.incomplete_streams() == []
    assert ids(state, "a") == ["m1", "m0"]


def test_stream_never_ended_is_reported_not_dropped() -> None:
    """A stream without end stays visible and is listed by incomplete_streams()."""
    log = Log()
    log.delta("a", "m1")
    log.delta("b", "m1")
    log.end("b", "m1")
    log.msg("a", "m2")
    state = log.fold()
    assert [(s.session, s.message_id) for s in state.incomplete_streams()] == [("a", "m1")]
    assert ids(state, "a") == ["m1", "m2"]


def test_end_without_stream_is_one_shot_stream() -> None:
    """An end with no open stream is a complete stream with only an end, and visible."""
    log = Log()
    end = log.end("a", "m1")
    state = log.fold()
    assert state.streams[("a", "m1")] == Stream("a", "m1", end, array("q"), end, True, "sub")
    assert state.sessions["a"].visible == refs((end, "m1"))


def test_second_end_and_final_message_are_copies() -> None:
    """A repeated end, or a full message with a streamed message's id, counts as a copy."""
    log = Log()
    log.delta("a", "m1")
    end = log.end("a", "m1")
    log.end("a", "m1")
    log.msg("a", "m1")
    state = log.fold()
    assert ids(state, "a") == ["m1"]
    assert state.streams[("a", "m1")].end_seq == end
    assert state.sessions["a"].copies == {"m1": 2}


def test_late_delta_is_kept() -> None:
    """A delta after the end is added to delta_seqs; the stream stays complete."""
    log = Log()
    log.delta("a", "m1")
    log.end("a", "m1")
    late = log.delta("a", "m1")
    state = log.fold()
    stream = state.streams[("a", "m1")]
    assert stream.delta_seqs.tolist() == [1, late]
    assert stream.complete


# --------------------------------------------------------------------------- session.start


def test_start_creates_session_with_title() -> None:
    """session.start creates a session with data.title."""
    log = Log()
    log.add("session.start", "a", {"title": "Planning"})
    state = log.fold()
    assert state.sessions["a"].title == "Planning"
    assert state.sessions["a"].first_seq == 1


def test_start_on_live_session_only_touches_and_fills_title() -> None:
    """session.start on a live session changes nothing but last_seq/ts and a missing title."""
    log = Log()
    log.msg("a", "m1")
    log.add("session.start", "a", {"title": "T1"})
    log.add("session.start", "a", {"title": "T2"})
    log.add("session.start", "a", ["not", "an", "object"])
    state = log.fold()
    session = state.sessions["a"]
    assert session.title == "T1"
    assert session.last_seq == 4
    assert ids(state, "a") == ["m1"]
    assert state.errors == []


def test_start_revives_deleted_session() -> None:
    """session.start on a deleted session clears the tombstone; history is kept."""
    log = Log()
    log.msg("a", "m1")
    log.add("session.delete", "a")
    log.add("session.start", "a")
    state = log.fold()
    assert state.sessions["a"].deleted_seq is None
    assert ids(state, "a") == ["m1"]


# --------------------------------------------------------------------------- session.fork


def test_fork_defaults_to_all_parent_messages() -> None:
    """A fork without data.at shares all of the parent's visible messages."""
    log = Log()
    log.msg("a", "m1", sender="x")
    log.msg("a", "m2", sender="y")
    seq = log.add("session.fork", "b", {"parent": "a", "name": "alt"})
    state = log.fold()
    child = state.sessions["b"]
    assert child.visible == state.sessions["a"].visible
    assert (child.parent, child.fork_at, child.branch, child.first_seq) == ("a", 2, "alt", seq)
    assert child.participants == ["x", "y"]


def test_fork_at_n_then_branches_diverge() -> None:
    """A fork at N shares the parent's first N refs; later messages stay on their branch."""
    log = Log()
    log.msg("a", "m1")
    log.msg("a", "m2")
    log.msg("a", "m3")
    log.add("session.fork", "b", {"parent": "a", "at": 1})
    log.msg("b", "b1")
    log.msg("a", "m4")
    log.add("session.rewind", "a", {"to": 0})
    state = log.fold()
    assert ids(state, "b") == ["m1", "b1"]
    assert state.visible("b")[0] == 1
    assert state.sessions["b"].fork_at == 1
    assert ids(state, "a") == []


# --------------------------------------------------------------------------- session.rewind


def test_rewind_to_n_keeps_dropped_refs() -> None:
    """Rewind to N truncates and records a Rewind with the dropped refs."""
    log = Log()
    log.msg("a", "m1")
    log.msg("a", "m2")
    log.msg("a", "m3")
    seq = log.add("session.rewind", "a", {"to": 1})
    state = log.fold()
    assert ids(state, "a") == ["m1"]
    assert state.sessions["a"].rewinds == [Rewind(seq, 3, 1, (2, 3))]


def test_rewind_to_checkpoint_restores_exact_list() -> None:
    """Rewind to a checkpoint restores exactly the refs it stored, after later changes."""
    log = Log()
    log.msg("a", "m1")
    log.msg("a", "m2")
    cp = log.add("session.checkpoint", "a", {"name": "cp"})
    log.add("session.rewind", "a", {"to": 1})
    log.msg("a", "m2")
    log.msg("a", "m3")
    seq = log.add("session.rewind", "a", {"checkpoint": "cp"})
    state = log.fold()
    session = state.sessions["a"]
    assert session.checkpoints["cp"] == SessionCheckpoint(cp, refs((1, "m1"), (2, "m2")))
    assert state.visible("a") == [1, 2]
    assert session.rewinds[-1] == Rewind(seq, 3, 2, (5, 6))
    # dedup index follows the restored list
    log.msg("a", "m3")
    log.msg("a", "m2")
    state = log.fold()
    assert ids(state, "a") == ["m1", "m2", "m3"]
    assert state.sessions["a"].copies == {"m2": 1}


# --------------------------------------------------------------------------- session.checkpoint


def test_checkpoint_at_n_and_overwrite() -> None:
    """A checkpoint stores the first N refs (default all); reusing a name overwrites."""
    log = Log()
    log.msg("a", "m1")
    log.msg("a", "m2")
    log.add("session.checkpoint", "a", {"name": "one", "at": 1})
    log.add("session.checkpoint", "a", {"name": "two"})
    seq = log.add("session.checkpoint", "a", {"name": "two", "at": 0})
    state = log.fold()
    checkpoints = state.sessions["a"].checkpoints
    assert checkpoints["one"].refs == refs((1, "m1"))
    assert checkpoints["two"] == SessionCheckpoint(seq, Refs())


# --------------------------------------------------------------------------- session.crystal


def test_crystal_and_resume_refs() -> None:
    """resume_refs gives the latest crystal and the visible messages after its upto."""
    log = Log()
    log.msg("a", "m1")
    assert log.fold().resume_refs("a") == (None, [1])
    log.msg("a", "m2")
    c1 = log.add("session.crystal", "a", {"summary": "first two"})
    log.msg("a", "m3")
    c2 = log.add("session.crystal", "a", {"summary": "first one", "upto": 1})
    state = log.fold()
    assert state.sessions["a"].crystals == [Crystal(c1, 2, 2), Crystal(c2, 1, 1)]
    crystal, after = state.resume_refs("a")
    assert crystal == Crystal(c2, 1, 1)
    assert after == [2, 4]


def test_crystal_covering_rewound_messages_is_set_aside() -> None:
    """A crystal whose covered messages were rewound away is skipped until they return."""
    log = Log()
    log.msg("a", "m1")
    log.msg("a", "m2")
    log.add("session.checkpoint", "a", {"name": "cp"})
    early = log.add("session.crystal", "a", {"summary": "m1", "upto": 1})
    late = log.add("session.crystal", "a", {"summary": "m1 m2"})
    log.add("session.rewind", "a", {"to": 1})
    log.msg("a", "x2")
    crystal, after = log.fold().resume_refs("a")
    assert crystal is not None and crystal.seq == early
    assert after == [log.records[-1]["seq"]]
    log.add("session.rewind", "a", {"checkpoint": "cp"})
    crystal, after = log.fold().resume_refs("a")
    assert crystal is not None and crystal.seq == late
    assert after == []


def test_state_does_not_store_summary_text() -> None:
    """The crystal summary (a body) is not in the state, only the record's seq."""
    log = Log()
    log.msg("a", "m1")
    log.add("session.crystal", "a", {"summary": "SECRET-SUMMARY-TEXT"})
    log.add("message", "a", "SECRET-BODY", {"message_id": "m2"})
    assert b"SECRET" not in orjson.dumps(log.fold().to_dict())


# --------------------------------------------------------------------------- session.delete


def test_delete_is_a_tombstone() -> None:
    """delete sets deleted_seq, keeps history, hides the session from session_list()."""
    log = Log()
    log.msg("a", "m1")
    log.msg("b", "m1")
    seq = log.add("session.delete", "a")
    log.add("session.delete", "a")
    state = log.fold()
    assert state.sessions["a"].deleted_seq == seq
    assert ids(state, "a") == ["m1"]
    assert [s.id for s in state.session_list()] == ["b"]
    assert [s.id for s in state.session_list(include_deleted=True)] == ["a", "b"]


def test_session_list_is_ordered_by_first_seq() -> None:
    """session_list() sorts sessions by first seq ascending, forks included."""
    log = Log()
    log.msg("z", "m1")
    log.add("session.start", "y")
    log.msg("z", "m2")
    log.add("session.fork", "x", {"parent": "z"})
    state = log.fold()
    assert [s.id for s in state.session_list()] == ["z", "y", "x"]


# --------------------------------------------------------------------------- llm.request


def test_llm_request_usage_aliases_and_nesting() -> None:
    """Token fields are read under both names, also under data.usage; totals and per model."""
    log = Log()
    log.add("llm.request", "a", {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.5, "model": "m-large"})
    log.add("llm.request", "a", {"model": "m-small", "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
    log.add("llm.request", None, {"prompt_tokens": 1.0, "completion_tokens": 2, "cost_usd": 1})
    state = log.fold()
    usage = state.sessions["a"].usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (2, 17, 8)
    assert usage.cost_usd == 0.5
    assert usage.models == {"m-large": 1, "m-small": 1}
    total = state.usage
    assert (total.requests, total.input_tokens, total.output_tokens) == (3, 18, 10)
    assert total.cost_usd == 1.5
    assert list(state.sessions) == ["a"]
    assert state.errors == []


# --------------------------------------------------------------------------- recorder.gap, counters


def test_gap_is_recorded() -> None:
    """recorder.gap appends a Gap with publisher, first, last and ts."""
    log = Log()
    log.add("recorder.gap", None, {"publisher": "agent-1", "first": 4, "last": 9})
    state = log.fold()
    assert state.gaps == [Gap(1, "agent-1", 4, 9, log.records[0]["ts"])]


def test_every_kind_is_counted() -> None:
    """Every record, of any kind, updates kinds, records and last_seq."""
    log = Log()
    log.add("recorder.start")
    log.add("unknown", None, {"x": 1})
    log.add("raw", None, {"base64": "AA=="})
    log.add("weird.kind", 5, [1, 2], "meta?")
    log.msg("a", "m1")
    state = log.fold()
    assert state.kinds == {"recorder.start": 1, "unknown": 1, "raw": 1, "weird.kind": 1, "message": 1}
    assert (state.records, state.last_seq) == (5, 5)


def test_replayed_seqs_are_ignored() -> None:
    """Records with seq <= last_seq are ignored, so replaying a log is idempotent."""
    log = Log()
    log.msg("a", "m1")
    log.msg("a", "m2")
    once = log.fold()
    twice = fold_all(log.records + log.records)
    assert twice == once
    fold(twice, rec(1, "message", "a", None, {"message_id": "other"}))
    assert twice == once


def test_fold_rejects_records_without_seq_or_kind() -> None:
    """fold raises ValueError only for records lacking an int seq or a str kind."""
    for bad in (
        {"kind": "message"},
        {"seq": "1", "kind": "x"},
        {"seq": True, "kind": "x"},
        {"seq": 1},
        {"seq": 1, "kind": None},
        ["seq", 1],
    ):
        with pytest.raises(ValueError):
            fold(State(), bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- invalid records


def _base_log() -> Log:
    log = Log()
    log.msg("a", "m1", sender="x")
    log.msg("a", "m2", sender="y")
    log.add("session.checkpoint", "a", {"name": "cp"})
    log.add("session.fork", "b", {"parent": "a", "at": 1})
    log.delta("a", "s1")
    log.add("session.start", "gone")
    log.add("session.delete", "gone")
    log.add("llm.request", "a", {"input_tokens": 1})
    return log


INVALID: list[tuple[str, Any, Any, Any]] = [
    # (kind, session, data, meta)
    ("message", ["a"], None, {"message_id": "m9"}),
    ("message", "a", None, {"message_id": {"id": 1}}),
    ("message", "new", None, {"message_id": 7}),
    ("message.delta", None, None, {"message_id": "s1"}),
    ("message.delta", "a", None, {}),
    ("message.delta", "new", None, None),
    ("message.delta", 3, None, {"message_id": "s1"}),
    ("message.end", "a", None, {"message_id": None}),
    ("message.end", None, None, {"message_id": "s1"}),
    ("session.start", None, None, {}),
    ("session.start", "new", {"title": 5}, {}),
    ("session.start", 1.5, {}, {}),
    ("session.fork", "a", {"parent": "b"}, {}),
    ("session.fork", "new", {}, {}),
    ("session.fork", "new", None, {}),
    ("session.fork", "new", "parent=a", {}),
    ("session.fork", "new", {"parent": "nope"}, {}),
    ("session.fork", "new", {"parent": "gone"}, {}),
    ("session.fork", "new", {"parent": 1}, {}),
    ("session.fork", "new", {"parent": "a", "at": -1}, {}),
    ("session.fork", "new", {"parent": "a", "at": 4}, {}),
    ("session.fork", "new", {"parent": "a", "at": "1"}, {}),
    ("session.fork", "new", {"parent": "a", "at": True}, {}),
    ("session.fork", "new", {"parent": "a", "at": 10**5000}, {}),
    ("session.fork", "new", {"parent": "a", "name": 5}, {}),
    ("session.fork", None, {"parent": "a"}, {}),
    ("session.rewind", "nope", {"to": 0}, {}),
    ("session.rewind", None, {"to": 0}, {}),
    ("session.rewind", "a", {"to": 0, "checkpoint": "cp"}, {}),
    ("session.rewind", "a", {}, {}),
    ("session.rewind", "a", None, {}),
    ("session.rewind", "a", [0], {}),
    ("session.rewind", "a", {"to": -1}, {}),
    ("session.rewind", "a", {"to": 4}, {}),
    ("session.rewind", "a", {"to": 1.0}, {}),
    ("session.rewind", "a", {"checkpoint": "nope"}, {}),
    ("session.rewind", "a", {"checkpoint": 5}, {}),
    ("session.rewind", "b", {"checkpoint": "cp"}, {}),
    ("session.checkpoint", "nope", {"name": "n"}, {}),
    ("session.checkpoint", "a", {}, {}),
    ("session.checkpoint", "a", {"name": 5}, {}),
    ("session.checkpoint", "a", {"name": "n", "at": 5}, {}),
    ("session.checkpoint", "a", {"name": "n", "at": -1}, {}),
    ("session.checkpoint", "a", "n", {}),
    ("session.crystal", "nope", {"summary": "s"}, {}),
    ("session.crystal", "a", {}, {}),
    ("session.crystal", "a", {"summary": 5}, {}),
    ("session.crystal", "a", {"summary": "s", "upto": 4}, {}),
    ("session.crystal", "a", {"summary": "s", "upto": "x"}, {}),
    ("session.delete", "nope", None, {}),
    ("session.delete", None, None, {}),
    ("llm.request", "a", "tokens", {}),
    ("llm.request", "a", None, {}),
    ("llm.request", "a", {"input_tokens": "12"}, {}),
    ("llm.request", "a", {"output_tokens": True}, {}),
    ("llm.request", "a", {"input_tokens": -1}, {}),
    ("llm.request", "a", {"input_tokens": 2**60}, {}),
    ("llm.request", "a", {"input_tokens": 1.5}, {}),
    ("llm.request", "a", {"cost_usd": "1"}, {}),
    ("llm.request", "a", {"cost_usd": -0.5}, {}),
    ("llm.request", "a", {"cost_usd": float("nan")}, {}),
    ("llm.request", "a", {"cost_usd": 10**400}, {}),
    ("llm.request", "a", {"usage": "lots"}, {}),
    ("llm.request", "a", {"usage": {"completion_tokens": [1]}}, {}),
    ("llm.request", "a", {"model": 5}, {}),
    ("llm.request", 5, {"input_tokens": 1}, {}),
    ("llm.request", "new", {"input_tokens": 1, "cost_usd": None, "model": {}}, {}),
    ("recorder.gap", None, None, {}),
    ("recorder.gap", None, {"publisher": "p", "first": 5, "last": 4}, {}),
    ("recorder.gap", None, {"publisher": "p", "first": "1", "last": 4}, {}),
    ("recorder.gap", None, {"publisher": 5, "first": 1, "last": 4}, {}),
    ("recorder.gap", None, {"publisher": "p", "first": -1, "last": 4}, {}),
    ("recorder.gap", None, {"publisher": "p", "first": 1, "last": 2**64}, {}),
]


@pytest.mark.parametrize(("kind", "session", "data", "meta"), INVALID)
def test_invalid_record_only_adds_fold_error(kind: str, session: Any, data: Any, meta: Any) -> None:
    """An invalid record changes nothing but the counters, and appends one FoldError."""
    log = _base_log()
    before = log.fold()
    assert before.errors == []
    seq = log.add(kind, session, data, meta)
    after = fold_all(log.records[-1:], before.copy())
    assert after.errors == [FoldError(seq, kind, session if isinstance(session, str) else None, after.errors[0].reason)]
    assert after.errors[0].reason
    assert after.sessions == before.sessions
    assert after.streams == before.streams
    assert (after.gaps, after.usage, after.unsessioned) == (before.gaps, before.usage, 0)
    assert (after.last_seq, after.records) == (seq, before.records + 1)
    assert after.kinds[kind] == before.kinds.get(kind, 0) + 1
    orjson.dumps(after.to_dict())


def test_huge_seq_without_message_id_does_not_raise() -> None:
    """A message whose fallback id cannot be formatted is rejected, not raised."""
    state = fold(State(), {"seq": 10**5000, "kind": "message", "session": "a", "meta": {}})
    assert len(state.errors) == 1
    assert state.sessions == {}


# --------------------------------------------------------------------------- snapshots


def test_to_dict_round_trip_and_copy_independence() -> None:
    """to_dict/from_dict round-trips through JSON; folding into a copy leaves the original."""
    log = _base_log()
    log.end("a", "s1")
    log.add("recorder.gap", None, {"publisher": None, "first": 1, "last": 2})
    log.add("session.rewind", "a", {"to": 0})
    log.add("session.crystal", "b", {"summary": "s"})
    log.add("session.fork", "c", {"parent": "a", "at": 7})
    state = log.fold()
    d = state.to_dict()
    assert State.from_dict(orjson.loads(orjson.dumps(d))) == state
    blob = bytearray()
    assert State.from_dict(orjson.loads(orjson.dumps(state.to_dict(blob))), memoryview(bytes(blob))) == state
    snapshot = state.copy()
    assert snapshot == state
    fold_all(
        [
            rec(100, "message", "a", None, {"message_id": "new", "sender": "zed"}),
            rec(101, "message.delta", "a", None, {"message_id": "s1"}),
            rec(102, "llm.request", "b", {"input_tokens": 3, "model": "m"}),
            rec(103, "session.checkpoint", "b", {"name": "n"}),
            rec(104, "session.rewind", "b", {"to": 0}),
            rec(105, "message", "b", None, {"message_id": "m1"}),
        ],
        snapshot,
    )
    assert snapshot != state
    assert state.to_dict() == d
    assert State.from_dict(d) == state


def test_refs_pointing_outside_the_binary_part_are_refused() -> None:
    """A checkpoint whose refs point past its binary part (truncated file) is refused."""
    blob = bytearray()
    d = _base_log().fold().to_dict(blob)
    with pytest.raises(ValueError):
        State.from_dict(d, bytes(blob[:-1]))
    with pytest.raises(ValueError):
        State.from_dict(d)


def test_from_dict_rejects_other_versions() -> None:
    """from_dict refuses a layout version it does not know."""
    d = State().to_dict()
    d["version"] = 99
    with pytest.raises(ValueError):
        State.from_dict(d)


def test_the_tally_counts_sources_own_times_and_drops() -> None:
    """Every folded record counts for its source (``-`` for none); messages with a time of
    their own widen the own span; ``recorder.dropped`` adds its positive ``messages``;
    replays count nothing; the tally survives a checkpoint round trip and a copy."""
    records = [
        rec(1, "message", "a", {"timestamp": "2025-03-01T10:00:00Z"}, {"message_id": "m1"}),
        rec(2, "message", "a", {"created_at": 1_700_000_000}, {"message_id": "m2"}),
        rec(3, "message", "a", {"content": "no time"}, {"message_id": "m3"}),
        rec(4, "recorder.dropped", None, {"messages": 7}, source="recorder"),
        rec(5, "recorder.dropped", None, {"messages": True}, source="recorder"),
        rec(6, "session.delete", "a", {}, source="control"),
        rec(7, "unknown", None, {}, source=None),
        rec(3, "message", "a", {"timestamp": "1999-01-01T00:00:00Z"}, {"message_id": "old"}),  # a replay
    ]
    state = fold_all(records)
    tally = state.tally
    assert tally is not None
    assert tally.sources == {"sub": 3, "recorder": 2, "control": 1, "-": 1}
    assert (tally.own_messages, tally.first_own, tally.last_own) == (
        2, "2023-11-14T22:13:20.000000Z", "2025-03-01T10:00:00.000000Z")
    assert tally.dropped == 7
    assert State.from_dict(orjson.loads(orjson.dumps(state.to_dict()))) == state
    copy = state.copy()
    fold(copy, rec(8, "message", "b", {}, {"message_id": "x"}, source="pull"))
    assert copy.tally is not None and copy.tally.sources["pull"] == 1 and "pull" not in tally.sources


def test_a_version_2_state_is_read_with_an_unknown_tally() -> None:
    """A state written before the tally was kept (version 2) reads as one whose tally is
    None, and folding on keeps it None (its counts would miss the records before)."""
    d = _base_log().fold().to_dict()
    d["version"] = 2
    del d["tally"]
    state = State.from_dict(d)
    assert state.tally is None
    fold(state, rec(10_000, "message", "a", {}, {"message_id": "later"}))
    assert state.tally is None and state.to_dict()["tally"] is None


# --------------------------------------------------------------------------- properties

SIDS = ["a", "b", "c"]
MIDS = ["m1", "m2", "m3", "m4"]
CHECKPOINT_NAMES = ["cp1", "cp2", "cp3"]

json_scalar = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4)
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5,
)


def mostly(good: st.SearchStrategy, junk: st.SearchStrategy = json_scalar) -> st.SearchStrategy:
    """``good`` nine times in ten, else ``junk`` (so most records are valid, some not)."""
    return st.integers(0, 9).flatmap(lambda i: junk if i == 0 else good)


session_id = mostly(st.sampled_from(SIDS))
message_id = mostly(st.sampled_from(MIDS), st.none() | json_scalar)
count = mostly(st.integers(0, 4) | st.none(), st.integers(-1, 8) | json_scalar)
meta_strategy = mostly(
    st.fixed_dictionaries(
        {"message_id": message_id},
        optional={
            "sender": st.sampled_from(["alice", "bob", None, 3]),
            "role": st.sampled_from(["user", "assistant", None]),
        },
    ),
    st.just(_MISSING) | json_value,
)


def params(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy:
    """A ``data`` object for a control record, or (one time in ten) any JSON value."""
    return mostly(st.fixed_dictionaries(required, optional=optional), json_value)


def _body(kind: Any, session: Any, data: Any, meta: Any = _MISSING) -> st.SearchStrategy:
    kinds = st.just(kind) if isinstance(kind, str) else kind
    metas = st.just(_MISSING) if meta is _MISSING else meta
    return st.tuples(kinds, session, data, metas)


record_body = st.one_of(
    _body("message", session_id, json_value, meta_strategy),
    _body("message", session_id, st.none(), meta_strategy),
    _body("message.delta", session_id, json_value, meta_strategy),
    _body("message.end", session_id, json_value, meta_strategy),
    _body("session.start", session_id, params({}, {"title": mostly(st.text(max_size=3))})),
    _body(
        "session.fork",
        mostly(st.sampled_from(["a", "f1", "f2", "f3"])),
        params({"parent": session_id}, {"at": count, "name": st.sampled_from(["x", None, 1])}),
    ),
    _body(
        "session.rewind",
        session_id,
        mostly(
            st.fixed_dictionaries({"to": mostly(st.integers(0, 4))})
            | st.fixed_dictionaries({"checkpoint": st.sampled_from(CHECKPOINT_NAMES)}),
            params({}, {"to": count, "checkpoint": st.sampled_from([*CHECKPOINT_NAMES, "no", 3])}),
        ),
    ),
    _body(
        "session.checkpoint",
        session_id,
        params({"name": mostly(st.sampled_from(CHECKPOINT_NAMES))}, {"at": count}),
    ),
    _body(
        "session.crystal",
        session_id,
        params({"summary": mostly(st.just("summary"))}, {"upto": count}),
    ),
    _body("session.delete", session_id, json_value),
    _body(
        "llm.request",
        mostly(st.sampled_from(SIDS) | st.none()),
        params(
            {},
            {
                "input_tokens": mostly(st.integers(0, 1000)),
                "completion_tokens": st.integers(0, 1000),
                "cost_usd": mostly(st.floats(0, 10)),
                "model": mostly(st.sampled_from(["m-a", "m-b"])),
                "usage": mostly(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "prompt_tokens": st.integers(0, 1000),
                            "output_tokens": mostly(st.integers(0, 1000)),
                        },
                    )
                ),
            },
        ),
    ),
    _body(
        "recorder.gap",
        st.none(),
        params(
            {
                "publisher": st.sampled_from(["p1", None]),
                "first": mostly(st.integers(0, 5)),
                "last": st.integers(0, 9),
            },
            {},
        ),
    ),
    _body(
        st.sampled_from(["unknown", "raw", "recorder.start"]) | st.text(max_size=6),
        session_id | json_scalar,
        json_value,
        meta_strategy,
    ),
)
#: One drawn record: ``(kind, session, data, meta[, source])`` (see :func:`rec`).
Item = tuple[Any, ...]

FORK_IDS = ["f1", "f2", "f3", "f4", "f5", "f6"]
SENDERS = ["alice", "bob", None]
#: The recorder's sockets: the bus copy of a message comes through ``sub``, the copy an
#: agent PUSHes to the recorder through ``pull``.
SOURCES = ["sub", "pull"]
STREAM_KINDS = ("message.delta", "message.end")


def number(items: list[Item], start: int = 1) -> list[dict[str, Any]]:
    """Turn (kind, session, data, meta[, source]) items into records with seqs start, start+1, ..."""
    return [rec(start + i, *item) for i, item in enumerate(items)]


def _item_source(item: Item) -> Any:
    return item[4] if len(item) > 4 else "sub"


class _Planner:
    """Draws a log one record at a time, folding as it goes, so that most records are
    valid for the state they meet: forks of live sessions at counts they have, rewinds
    to counts and to checkpoints that exist, streams continued and ended through the
    source that opened them, copies of visible message ids (also through ``pull``).
    About one record in ten, and every ``junk`` one (:data:`record_body`), is drawn
    without looking at the state, so rejected and odd records stay in the mix."""

    #: Operations and their weights (by repetition).
    OPS = (
        ["message"] * 4
        + ["stream"] * 5
        + ["fork"] * 2
        + ["rewind_to"] * 2
        + ["rewind_checkpoint"] * 2
        + ["checkpoint"] * 2
        + ["crystal"] * 2
        + ["delete"] * 2
        + ["start"]
        + ["junk"] * 3
    )

    def __init__(self, draw: Callable[..., Any], prefix: Iterable[Item], avoid: frozenset[str]) -> None:
        self.draw = draw
        self.avoid = avoid
        self.items: list[Item] = []
        self.state = State()
        self.mid_of_key: dict[int, str] = {}
        #: (session, message id) -> source of the stream's first record.
        self.stream_source: dict[tuple[str, str], Any] = {}
        self.next_id = 0
        for item in prefix:
            self.add(item)

    def add(self, item: Item) -> None:
        self.items.append(item)
        fold(self.state, rec(len(self.items), *item))
        kind, session, _data, meta = item[:4]
        mid = meta.get("message_id") if isinstance(meta, dict) else None
        if isinstance(mid, str):
            self.mid_of_key[message_key(mid)] = mid
            if kind in STREAM_KINDS and isinstance(session, str):
                self.stream_source.setdefault((session, mid), _item_source(item))

    # ------------------------------------------------------------------ choices

    def pick(self, options: list[Any]) -> Any:
        return self.draw(st.sampled_from(options))

    def valid(self) -> bool:
        return self.draw(st.integers(0, 9)) > 0

    def sessions(self, live: bool = False) -> list[str]:
        return [
            sid
            for sid, session in self.state.sessions.items()
            if sid not in self.avoid and not (live and session.deleted)
        ]

    def any_session(self) -> str:
        """An existing session or one of SIDS (created by the record on first sight)."""
        return self.pick([*self.sessions(), *SIDS])

    def fresh_id(self) -> str:
        while True:
            mid = f"m{self.next_id}"
            self.next_id += 1
            if message_key(mid) not in self.mid_of_key:
                return mid

    def count(self, high: int) -> int | None:
        """A valid message count (None: the default, all) for a list of ``high``."""
        return None if self.draw(st.integers(0, 3)) == 0 else self.draw(st.integers(0, high))

    def visible_ids(self, sid: str) -> list[str]:
        session = self.state.sessions.get(sid)
        if session is None:
            return []
        return [self.mid_of_key[key] for key in session.visible.keys if key in self.mid_of_key]

    # ------------------------------------------------------------------ operations

    def message(self) -> Item:
        sid = self.any_session()
        visible = self.visible_ids(sid)
        if visible and self.draw(st.booleans()):
            mid, source = self.pick(visible), self.pick(SOURCES)  # a copy, maybe the PUSHed one
        else:
            mid, source = self.fresh_id(), "sub"
        meta: Any = {"message_id": mid, "sender": self.pick(SENDERS), "role": self.pick(["user", "assistant"])}
        if not self.valid():
            sid, meta = self.draw(session_id | st.none()), self.draw(meta_strategy)
        return ("message", sid, {"content": f"text of {mid}"}, meta, source)

    def stream(self) -> Item:
        streams = [key for key in self.state.streams if key[0] not in self.avoid]
        open_ = [key for key in streams if not self.state.streams[key].complete]
        done = [key for key in streams if self.state.streams[key].complete]
        how = self.pick(["open"] * 2 + ["more"] * 2 + ["end"] * 3 + ["copy"] * 2 + ["late"] + ["one-shot"] * 2)
        if (how in ("more", "end") and not open_) or (how == "late" and not done) or (how == "copy" and not streams):
            how = "open"
        if how in ("open", "one-shot"):
            sid, mid = self.any_session(), self.fresh_id()
            source = self.pick(["sub", "sub", "pull"])
        else:
            sid, mid = self.pick(open_ if how in ("more", "end") else done if how == "late" else streams)
            source = self.stream_source.get((sid, mid), "sub")
            if how == "copy":
                source = "sub" if source == "pull" else "pull"
        if how in ("end", "one-shot") or (how == "copy" and self.draw(st.booleans())):
            kind, data = "message.end", {}
        else:
            kind, data = "message.delta", {"delta": f"<{mid}>"}
        meta: Any = {"message_id": mid, "sender": self.pick(SENDERS)}
        if not self.valid():
            sid, meta = self.draw(st.sampled_from([sid, None, 3])), self.draw(meta_strategy)
        return (kind, sid, data, meta, source)

    def fork(self) -> Item:
        parents = self.sessions(live=True)
        children = [sid for sid in FORK_IDS if sid not in self.state.sessions and sid not in self.avoid]
        if not parents:
            return self.start()
        parent = self.pick(parents)
        child = self.pick(children) if children else self.pick(parents)  # no name left: "already exists"
        data: Any = {"parent": parent, "name": self.pick(["alt", None])}
        at = self.count(len(self.state.sessions[parent].visible))
        if at is not None:
            data["at"] = at
        if not self.valid():
            data = self.draw(
                st.fixed_dictionaries(
                    {"parent": st.sampled_from([parent, "nope", 1, *self.sessions()])},
                    optional={"at": count | st.sampled_from([-1, len(self.state.sessions[parent].visible) + 1])},
                )
                | json_value
            )
        return ("session.fork", child, data, {}, "sub")

    def rewind_to(self) -> Item:
        targets = self.sessions()
        if not targets:
            return self.message()
        sid = self.pick(targets)
        data: Any = {"to": self.draw(st.integers(0, len(self.state.sessions[sid].visible)))}
        if not self.valid():
            data = self.draw(params({}, {"to": count, "checkpoint": st.sampled_from([*CHECKPOINT_NAMES, "no", 3])}))
        return ("session.rewind", sid, data, {}, "sub")

    def rewind_checkpoint(self) -> Item:
        targets = [sid for sid in self.sessions() if self.state.sessions[sid].checkpoints]
        if not targets:
            return self.checkpoint()
        sid = self.pick(targets)
        data: Any = {"checkpoint": self.pick(sorted(self.state.sessions[sid].checkpoints))}
        if not self.valid():
            data = self.draw(st.fixed_dictionaries({"checkpoint": st.sampled_from(["no", 3, *CHECKPOINT_NAMES])}))
            sid = self.draw(st.sampled_from([sid, "nope", *SIDS]))
        return ("session.rewind", sid, data, {}, "sub")

    def checkpoint(self) -> Item:
        targets = self.sessions()
        if not targets:
            return self.message()
        sid = self.pick(targets)
        data: Any = {"name": self.pick(CHECKPOINT_NAMES)}
        at = self.count(len(self.state.sessions[sid].visible))
        if at is not None:
            data["at"] = at
        if not self.valid():
            data = self.draw(params({"name": mostly(st.sampled_from(CHECKPOINT_NAMES))}, {"at": count}))
        return ("session.checkpoint", sid, data, {}, "sub")

    def crystal(self) -> Item:
        targets = self.sessions()
        if not targets:
            return self.message()
        sid = self.pick(targets)
        data: Any = {"summary": "so far"}
        upto = self.count(len(self.state.sessions[sid].visible))
        if upto is not None:
            data["upto"] = upto
        if not self.valid():
            data = self.draw(params({"summary": mostly(st.just("summary"))}, {"upto": count}))
        return ("session.crystal", sid, data, {}, "sub")

    def delete(self) -> Item:
        targets = self.sessions(live=True) or self.sessions()
        if not targets:
            return self.message()
        sid = self.pick(targets) if self.valid() else self.draw(session_id)
        return ("session.delete", sid, None, {}, "sub")

    def start(self) -> Item:
        sid = self.any_session() if self.valid() else self.draw(session_id)
        return ("session.start", sid, self.draw(params({}, {"title": mostly(st.text(max_size=3))})), _MISSING, "sub")

    def junk(self) -> Item:
        source = self.draw(mostly(st.sampled_from(SOURCES), st.just(_MISSING) | json_scalar))
        return (*self.draw(record_body), source)


def tag(items: list[Item]) -> None:
    """Tell hypothesis's statistics (``--hypothesis-show-statistics``) what a drawn log
    reaches: records that were applied (not rejected) by kind, copies, streams."""
    state = State()
    sources: dict[tuple[str, str], set[Any]] = {}
    for record in number(items):
        errors, duplicates = len(state.errors), sum(s.duplicates for s in state.sessions.values())
        fold(state, record)
        kind, session, data, meta = record["kind"], record["session"], record["data"], record.get("meta")
        if len(state.errors) > errors:
            event("fold log: a record is rejected")
            continue
        if sum(s.duplicates for s in state.sessions.values()) > duplicates:
            event("fold log: copy of a message counted")
        if kind == "session.fork":
            event("fold log: valid fork")
            if data.get("at") is not None and data["at"] < len(state.sessions[data["parent"]].visible):
                event("fold log: valid fork before the parent's last message")
        elif kind == "session.rewind":
            event(f"fold log: valid rewind to a {'checkpoint' if 'checkpoint' in data else 'count'}")
            last = state.sessions[session].rewinds[-1]
            if last.dropped:
                event("fold log: valid rewind that drops messages")
        elif kind == "session.checkpoint":
            event("fold log: session checkpoint")
        elif kind == "session.crystal":
            event("fold log: crystal")
        elif kind == "session.delete":
            event("fold log: delete")
        elif kind in ("message", *STREAM_KINDS) and isinstance(session, str):
            mid = meta.get("message_id") if isinstance(meta, dict) else None
            if isinstance(mid, str):
                seen = sources.setdefault((session, mid), set())
                if seen:
                    event(f"fold log: same message id again ({kind})")
                    if record.get("source") not in seen:
                        event("fold log: same message id through a second source")
                seen.add(record.get("source"))
    streams = state.streams.values()
    if any(s.complete and s.delta_seqs and s.end_seq is not None and s.delta_seqs[0] < s.end_seq for s in streams):
        event("fold log: completed stream (delta ... end)")
    if any(not s.complete for s in streams):
        event("fold log: stream left open")
    if any(not s.delta_seqs for s in streams):
        event("fold log: one-shot stream (end only)")


@st.composite
def fold_logs(
    draw: Callable[..., Any],
    prefix: Iterable[Item] = (),
    max_ops: int = 40,
    avoid: frozenset[str] = frozenset(),
    min_ops: int = 0,
) -> list[Item]:
    """A log of ``min_ops`` to ``max_ops`` records after ``prefix`` (which it starts
    with), most of them valid where they stand (see :class:`_Planner`); never names
    ``avoid``. Also used by test_checkpoint (as bus messages)."""
    plan = _Planner(draw, prefix, avoid)
    for _ in range(draw(st.integers(min_ops, max_ops), label="records")):
        plan.add(getattr(plan, draw(st.sampled_from(_Planner.OPS)))())
    tag(plan.items)
    return plan.items


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(fold_logs())
def test_law_fold_is_total_and_deterministic(items: list[Item]) -> None:
    """Law 1: fold never raises; same records give equal states, equal serializable
    to_dict output that round-trips through JSON and from_dict; replays change nothing."""
    records = number(items)
    first = fold_all(records)
    second = fold_all(records)
    assert first == second
    d = first.to_dict()
    assert d == second.to_dict()
    encoded = orjson.dumps(d)
    assert State.from_dict(orjson.loads(encoded)) == first
    assert State.from_dict(d) == first
    assert fold_all(records + records) == first


@PROPERTY
@given(fold_logs(), st.data())
def test_law_checkpoint_then_tail_equals_full_fold(items: list[Item], data: st.DataObject) -> None:
    """Law 2: for any cut k, folding records[k:] into a restored (or copied) prefix state
    equals folding all records, and the prefix state is left unmodified."""
    records = number(items)
    k = data.draw(st.integers(0, len(records)), label="k")
    if 0 < k < len(records):
        event("cut: records on both sides")
    full = fold_all(records)
    prefix = fold_all(records[:k])
    prefix_dict = prefix.to_dict()
    restored = State.from_dict(orjson.loads(orjson.dumps(prefix_dict)))
    assert fold_all(records[k:], restored) == full
    # The checkpoint form: message columns in a binary part, left as views until used,
    # and a state written again from views (untouched sessions copied as bytes).
    blob = bytearray()
    from_blob = State.from_dict(orjson.loads(orjson.dumps(prefix.to_dict(blob))), bytes(blob))
    again = bytearray()
    from_views = State.from_dict(orjson.loads(orjson.dumps(from_blob.to_dict(again))), bytes(again))
    assert fold_all(records[k:], from_views) == full
    assert fold_all(records[k:], from_blob) == full
    copied = prefix.copy()
    assert fold_all(records[k:], copied) == full
    assert prefix.to_dict() == prefix_dict
    assert prefix == fold_all(records[:k])


@PROPERTY
@given(fold_logs(), st.integers(0, 3), st.data())
def test_law_rewind_to_checkpoint_restores_checkpointed_list(
    before: list[Item], extra: int, data: st.DataObject
) -> None:
    """Law 3: rewinding to a checkpoint restores exactly the list visible when it was taken,
    whatever happened in between."""
    items = list(before)
    items += [("message", "a", None, {"message_id": f"k{i}"}) for i in range(extra)]
    items.append(("message", "a", None, {"message_id": "k"}))
    items.append(("session.checkpoint", "a", {"name": "keep"}, {}))
    cut = len(items)
    items = data.draw(fold_logs(prefix=items), label="after")
    items.append(("session.rewind", "a", {"checkpoint": "keep"}, {}))
    records = number(items)
    captured = fold_all(records[:cut]).visible("a")
    state = fold_all(records)
    assert not [e for e in state.errors if e.seq == len(records)]
    assert state.visible("a") == captured
    assert state.sessions["a"].rewinds[-1].to_count == len(captured)


@PROPERTY
@given(fold_logs(avoid=frozenset({"forked"})), st.sampled_from(SIDS), st.data())
def test_law_fork_shares_parents_first_n(before: list[Item], parent: str, data: st.DataObject) -> None:
    """Law 4: a fork at N has exactly the parent's first N refs at fork time, and later
    records (which never name the fork) leave it unchanged."""
    items = [*before, ("session.start", parent, None, {})]
    state = fold_all(number(items))
    parent_visible = state.sessions[parent].visible.copy()
    at = data.draw(st.none() | st.integers(0, len(parent_visible)), label="at")
    fork_data = {"parent": parent, "name": "branch"} | ({} if at is None else {"at": at})
    items.append(("session.fork", "forked", fork_data, {}))
    fold(state, number(items)[-1])
    n = len(parent_visible) if at is None else at
    child = state.sessions["forked"]
    assert child.visible == parent_visible[:n]
    assert (child.parent, child.fork_at, child.branch) == (parent, n, "branch")
    after = data.draw(fold_logs(prefix=items, avoid=frozenset({"forked"})), label="after")[len(items) :]
    fold_all(number(after, start=len(items) + 1), state)
    assert state.sessions["forked"].visible == parent_visible[:n]


@PROPERTY
@given(fold_logs(), st.sampled_from(["same", "pull"]))
def test_law_duplicates_are_shown_once_and_counted(items: list[Item], copy_source: str) -> None:
    """Law 5: doubling every message record (same message id, new seq; through the same
    source or as the PUSHed ``pull`` copy) gives the same visible ids, and each
    session's duplicates grow by exactly its number of copies."""
    fixed = []
    for i, (kind, session, data, meta, *source) in enumerate(items):
        if kind == "message" and not (isinstance(meta, dict) and isinstance(meta.get("message_id"), str)):
            meta = {**(meta if isinstance(meta, dict) else {}), "message_id": f"x{i}"}
        fixed.append((kind, session, data, meta, *source))
    doubled = []
    extra: dict[str, int] = {}
    for item in fixed:
        doubled.append(item)
        if item[0] == "message":
            doubled.append((*item[:4], _item_source(item) if copy_source == "same" else "pull"))
            if isinstance(item[1], str):
                extra[item[1]] = extra.get(item[1], 0) + 1
    base = fold_all(number(fixed))
    twice = fold_all(number(doubled))
    assert list(twice.sessions) == list(base.sessions)
    for sid, session in base.sessions.items():
        assert ids(twice, sid) == ids(base, sid)
        assert twice.sessions[sid].duplicates - session.duplicates == extra.get(sid, 0)


def _merge(queues: list[list[Item]], data: st.DataObject, label: str) -> list[Item]:
    """Any interleaving of ``queues`` that keeps each queue's own order."""
    order = data.draw(st.permutations([q for q, queue in enumerate(queues) for _ in queue]), label=label)
    position = [0] * len(queues)
    merged = []
    for q in order:
        merged.append(queues[q][position[q]])
        position[q] += 1
    return merged


def _stream_text(state: State, records: list[dict[str, Any]], key: tuple[str, str]) -> str:
    stream = state.streams[key]
    parts = sorted({*stream.delta_seqs, *([stream.end_seq] if stream.end_seq is not None else [])})
    return stream_text([records[seq - 1] for seq in parts])


stream_plans = st.lists(
    st.tuples(
        st.sampled_from(SIDS),
        st.lists(st.text(alphabet="ab ", min_size=1, max_size=3), min_size=1, max_size=4),
        st.booleans(),
    ),
    min_size=1,
    max_size=4,
)


@PROPERTY
@given(stream_plans, st.data())
def test_law_stream_copies_through_a_second_source_change_nothing(
    plan: list[tuple[str, list[str], bool]], data: st.DataObject
) -> None:
    """Law 6: the same streamed messages received twice, through ``sub`` and as the
    PUSHed ``pull`` copy, interleaved in any order, show the same text, the same visible
    ids and the same completeness as received once; each stream holds only deltas of
    the source of its first record (``Stream.source``)."""
    queues = [
        [("message.delta", sid, {"delta": text}, {"message_id": f"m{i}"}, "sub") for text in texts]
        + ([("message.end", sid, {}, {"message_id": f"m{i}"}, "sub")] if ended else [])
        for i, (sid, texts, ended) in enumerate(plan)
    ]
    once = _merge(queues, data, "sub order")
    twice = _merge([once, [(*item[:4], "pull") for item in once]], data, "sub and pull order")
    if _item_source(twice[0]) == "pull":
        event("stream copies: the pull copy arrives first")
    once_records, twice_records = number(once), number(twice)
    base, both = fold_all(once_records), fold_all(twice_records)
    assert both.errors == base.errors == []
    for sid in base.sessions:
        assert ids(both, sid) == ids(base, sid)
    for i, (sid, texts, ended) in enumerate(plan):
        key = (sid, f"m{i}")
        assert _stream_text(base, once_records, key) == "".join(texts)
        assert _stream_text(both, twice_records, key) == "".join(texts)
        stream = both.streams[key]
        assert stream.complete == ended
        first = twice_records[stream.first_seq - 1]["source"]
        assert stream.source == first
        assert {twice_records[seq - 1]["source"] for seq in stream.delta_seqs} == {first}


def test_stream_deltas_through_a_second_source_are_copies() -> None:
    """The bus copy and the PUSHed copy of one stream show "Hello world" once, not
    "Hello Hello worldworld"; the second end is a copy as before."""
    log = Log()
    for text in ("Hello ", "world"):
        for source in SOURCES:
            log.add("message.delta", "a", {"delta": text}, {"message_id": "m1"}, source)
    for source in SOURCES:
        log.add("message.end", "a", {}, {"message_id": "m1"}, source)
    state = log.fold()
    stream = state.streams[("a", "m1")]
    assert stream.delta_seqs.tolist() == [1, 3]
    assert (stream.first_seq, stream.end_seq, stream.complete) == (1, 5, True)
    assert stream.source == "sub"
    assert _stream_text(state, log.records, ("a", "m1")) == "Hello world"
    assert ids(state, "a") == ["m1"]
    assert state.sessions["a"].copies["m1"] >= 1
    assert State.from_dict(orjson.loads(orjson.dumps(state.to_dict()))) == state
