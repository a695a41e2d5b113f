"""The pure decisions of ``convlog purge`` (convlog.core.purge): what a purged record
keeps, which records a purge takes, the fold's law for purged records, what is left of
a quarantine entry and of a state that cannot be folded again, and that a publisher
can forge neither the ``session.purged`` kind nor a purged record."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fold import Item, fold_logs, number, rec

from convlog.core.enrich import Enricher, Rule
from convlog.core.fold import fold_all
from convlog.core.ingest import Ingest
from convlog.core.purge import purged_line, record_time, redact_quarantine_entry, selects, without_session
from convlog.core.record import PURGED_KIND, is_purged, parse_line
from convlog.core.view import PURGED, payload_text
from convlog.store.search_index import record_text

TS = "2026-11-21T12:00:00.000001Z"


def lines_of_every_shape() -> list[bytes]:
    """Lines the recorder writes for session ``s`` from payloads of each shape: native
    JSON, JSON with raw newlines (``meta.lf``), text, binary, three frames, a topic
    that is not UTF-8, a Shearwater message."""
    ingest = Ingest()
    native = {"type": "message", "session_id": "s", "message_id": "m1", "sender": "ann", "content": "secret one"}
    frames = [
        [b"s", orjson.dumps(native)],
        [b"s", b'{"type": "message",\n "session_id": "s", "content": "secret two"}'],
        [b"s", b"secret three as text"],
        [b"s", b"\xff\xfe secret four"],
        [b"s", orjson.dumps(native), b"secret five frame"],
        [b"\xff", orjson.dumps(native)],
        [b"s", orjson.dumps({"message_id": "m9", "content": "secret six", "sender_id": "bob", "session_id": "s"})],
    ]
    return [ingest.line(parts, seq, TS, "sub") for seq, parts in enumerate(frames, 1)]


def test_a_purged_record_keeps_seq_time_kind_source_session_and_the_digest() -> None:
    """Whatever the payload's shape, the purged line keeps exactly seq, ts, kind, source,
    session and ``meta.sha256``/``meta.bytes`` with ``meta.purged``; it parses, readers
    show it as purged and the search index finds no text in it."""
    for line in lines_of_every_shape():
        original = parse_line(line)
        purged = parse_line(purged_line(original))
        assert list(purged) == ["seq", "ts", "kind", "source", "topic", "session", "data", "meta"]
        for key in ("seq", "ts", "kind", "source", "session"):
            assert purged[key] == original[key]
        assert purged["data"] is None and purged["topic"] is None
        assert purged["meta"] == {"purged": True, "bytes": original["meta"]["bytes"],
                                  "sha256": original["meta"]["sha256"]}
        assert b"secret" not in purged_line(original)
        assert is_purged(purged) and not is_purged(original)
        assert payload_text(purged) == PURGED and record_text(purged) is None
        assert purged_line(purged) == purged_line(original)  # purging again changes nothing


def test_a_record_without_digest_keeps_none() -> None:
    """A record convlog wrote itself (a control record) has no digest: none is made up."""
    control = rec(3, "session.crystal", "s", {"summary": "private"}, {})
    assert parse_line(purged_line(control))["meta"] == {"purged": True}


def test_which_records_a_purge_takes() -> None:
    """The session's own records (exactly that id), not purged ones, not session.purged
    records, none past ``upto_seq``; with ``before``, those earlier than it, an imported
    record by its own time."""
    mine = rec(5, "message", "s", {"content": "x"}, {})
    assert selects(mine, "s", None)
    assert not selects(rec(5, "message", "s2", {}, {}), "s", None)
    assert not selects(parse_line(purged_line(mine)), "s", None)
    assert not selects(rec(5, PURGED_KIND, "s", {}, {}), "s", None)
    assert selects(mine, "s", None, upto_seq=5) and not selects(mine, "s", None, upto_seq=4)
    assert selects(mine, "s", "2026-11-21T12:00:01.000000Z") and not selects(mine, "s", mine["ts"])
    imported = {**rec(6, "message", "s", {"content": "x", "Timestamp": "2020-01-01T00:00:00"}, {}),
                "source": "import"}
    assert record_time(imported) == "2020-01-01T00:00:00.000000Z"
    assert selects(imported, "s", "2021-01-01T00:00:00.000000Z")
    assert not selects(imported, "s", "2019-01-01T00:00:00.000000Z")
    no_time = {**mine, "ts": None}
    assert selects(no_time, "s", "2021-01-01T00:00:00.000000Z")  # erasure wins over doubt


def _purge(records: list[dict[str, Any]], session: Any, before: str | None) -> list[dict[str, Any]]:
    return [parse_line(purged_line(r)) if isinstance(session, str) and selects(r, session, before) else r
            for r in records]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=fold_logs(min_ops=1, max_ops=60), data=st.data())
def test_law_a_purged_log_folds_as_the_log_without_those_records(items: list[Item], data: st.DataObject) -> None:
    """Law: for any log, any session and any ``before`` cut, folding the log with the
    session's (earlier) records purged gives what folding the log without them gives:
    the same sessions (the purged one gone, or holding only its later records), streams,
    usage, gaps, refused records and unsessioned count; only the record counters differ."""
    records = number(items)
    sessions = sorted({r["session"] for r in records if isinstance(r["session"], str)}) or ["nobody"]
    session = data.draw(st.sampled_from(sessions), label="session")
    cut = data.draw(st.none() | st.integers(1, len(records)), label="before seq")
    before = records[cut - 1]["ts"] if cut is not None else None
    purged = _purge(records, session, before)
    removed = [r for r in records if not selects(r, session, before)]
    got, expected = fold_all(purged), fold_all(removed)
    assert got.sessions == expected.sessions
    assert got.streams == expected.streams
    assert (got.usage, got.gaps, got.errors, got.unsessioned) == (
        expected.usage, expected.gaps, expected.errors, expected.unsessioned)
    assert got.last_seq == records[-1]["seq"] and got.records == len(records)
    if before is None:
        assert session not in got.sessions


def test_without_session_takes_a_session_and_what_its_forks_inherited_out_of_a_state() -> None:
    """For a state that cannot be folded again: the session, its streams, its usage and
    its messages in a fork (with their senders) go; the fork keeps its own messages and
    no longer names its parent, as the fold of the purged log would give."""
    records = number([
        ("session.start", "p", {"title": "secret title"}, {}),
        ("message", "p", {"content": "a"}, {"message_id": "p1", "sender": "secret-sender"}),
        ("message", "p", {"content": "b"}, {"message_id": "p2", "sender": "secret-sender"}),
        ("message.delta", "p", {"delta": "c"}, {"message_id": "p3", "sender": "secret-sender"}),
        ("llm.request", "p", {"model": "m", "input_tokens": 5, "output_tokens": 1}, {}),
        ("llm.request", "q", {"model": "m", "input_tokens": 2, "output_tokens": 1}, {}),
        ("session.fork", "p/f", {"parent": "p", "at": 2, "name": "f"}, {}),
        ("session.checkpoint", "p/f", {"name": "both"}, {}),
        ("message", "p/f", {"content": "own"}, {"message_id": "f1", "sender": "fork-sender"}),
        ("message", "q", {"content": "other"}, {"message_id": "q1", "sender": "ann"}),
    ])
    state = fold_all(records)
    assert without_session(state, "p")
    assert "p" not in state.sessions and not any(key[0] == "p" for key in state.streams)
    fork = state.sessions["p/f"]
    assert fork.parent is None and fork.fork_at is None and fork.branch is None
    assert fork.visible.seqs.tolist() == [9] and fork.checkpoints["both"].refs.seqs.tolist() == []
    assert fork.speakers == ["fork-sender"] and fork.participants == ["fork-sender"]
    assert (state.usage.requests, state.usage.input_tokens, state.usage.models) == (1, 2, {"m": 1})
    assert "secret" not in orjson.dumps(state.to_dict()).decode()
    assert state.sessions["q"] == fold_all(records).sessions["q"]
    assert not without_session(state, "p")


def test_quarantine_entries_of_the_session_lose_their_bytes() -> None:
    """A salvaged line of the session (torn inside its payload) keeps where and why it was
    salvaged, not its bytes; another session's entry, or a later one with ``before``,
    stays."""
    torn = b'{"seq":9,"ts":"2026-11-21T12:00:09.000000Z","kind":"message","source":"sub","topic":"s","session":"s",' \
           b'"data":{"content":"secret'
    entry = {"ts": TS, "segment": "x.jsonl", "offset": 40, "reason": "torn line", "bytes": len(torn),
             "text": torn.decode()}
    redacted = redact_quarantine_entry(entry, torn, "s", None)
    assert redacted == {"ts": TS, "segment": "x.jsonl", "offset": 40, "reason": "torn line", "bytes": 0, "text": "",
                        "purged": {"session": "s", "bytes": len(torn)}}
    assert redact_quarantine_entry(entry, torn, "t", None) is None
    assert redact_quarantine_entry(entry, torn, "s", "2026-11-21T12:00:09.000000Z") is None
    assert redact_quarantine_entry(entry, torn, "s", "2026-11-21T12:00:10.000000Z") is not None


def test_a_publisher_can_forge_neither_the_kind_nor_a_purged_record() -> None:
    """A payload typed ``session.purged`` is recorded as ``unknown``; payload fields named
    ``purged`` never reach ``meta``; an enrichment rule may not set ``meta.purged``."""
    ingest = Ingest()
    forged = ingest.line([b"s", orjson.dumps({"type": PURGED_KIND, "session_id": "s", "purged": True,
                                              "meta": {"purged": True}})], 1, TS, "sub")
    record = parse_line(forged)
    assert record["kind"] == "unknown" and not is_purged(record)
    with pytest.raises(ValueError, match="reserved"):
        Enricher(rules=[Rule(keywords=("x",), set_field="purged", value=True)])
    with pytest.raises(ValueError, match="reserved"):
        Enricher(defaults={"purged": True})
