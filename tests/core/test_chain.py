"""The hash chain's laws (convlog.core.chain), on lines made by the recorder's own
line builder (payloads and meta with nested members named like the line's own, which
the writer's fast split must not be fooled by): linking then checking finds nothing;
purging a record keeps every link;
redaction's digests are bound; any change to a linked record, and any deletion,
duplication or swap of records, breaks a link at or right after it."""

from __future__ import annotations

import hashlib

import orjson
from hypothesis import event, given, settings
from hypothesis import strategies as st

from convlog.core.chain import BODY_DIGEST, CHAIN, GENESIS, Chain, chain_problem
from convlog.core.purge import purged_line
from convlog.core.record import format_line, make_line, parse_line

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), TEXT)


@st.composite
def a_line(draw: st.DrawFn, seq: int) -> bytes:
    """One record line, as the recorder makes them: a bus message (payload spliced, with
    its digest), a redacted one (two digests), or one of the recorder's own records."""
    shape = draw(st.sampled_from(["message", "redacted", "own", "frames"]))
    event(f"shape {shape}")
    head = {"seq": seq, "ts": f"2026-11-21T12:00:{seq % 60:02d}.000000Z", "kind": "message", "source": "sub",
            "topic": draw(st.sampled_from(["agent.a", "agent.b", ""])), "session": draw(st.sampled_from(["s1", "s2"]))}
    if shape == "own":
        return make_line(seq, head["ts"], "recorder.gap", "recorder", None, None,
                         draw(st.dictionaries(TEXT, SCALAR, max_size=3)))
    payload = {"type": "message", "content": draw(TEXT), "n": draw(SCALAR)}
    if draw(st.booleans()):  # members named like the line's own, nested in the payload
        event("payload with nested meta and data members")
        payload["meta"] = {"x": 1, "data": {"meta": {}}}
    payload = orjson.dumps(payload)
    meta = {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload), "sender": draw(TEXT)}
    if draw(st.booleans()):  # ... and in meta (an enrichment copying a nested object)
        event("meta with a nested meta member")
        meta["usage"] = {"tokens": 3, "meta": {"data": 1}}
    if shape == "redacted":
        meta["stored_sha256"] = hashlib.sha256(payload).hexdigest()
        meta["sha256"] = hashlib.sha256(b"received " + payload).hexdigest()
        meta["redactions"] = {"openai-api-key": 1}
    frames = [{"text": draw(TEXT)}] if shape == "frames" else None
    return format_line(head, payload, meta, frames)


@st.composite
def a_log(draw: st.DrawFn) -> list[bytes]:
    """2 to 12 linked lines, seqs 1.."""
    count = draw(st.integers(2, 12))
    chain = Chain()
    return [chain.link_lines(draw(a_line(seq))) for seq in range(1, count + 1)]


def problems(lines: list[bytes]) -> list[int]:
    """Indexes of the lines whose link does not follow the line before (verify's walk)."""
    prev = GENESIS
    bad = []
    for index, line in enumerate(lines):
        record = parse_line(line)
        if chain_problem(prev, line, record) is not None:
            bad.append(index)
        prev = record[CHAIN]
    return bad


@settings(max_examples=200)
@given(a_log())
def test_a_linked_log_checks_clean_and_each_line_ends_with_its_link(lines: list[bytes]) -> None:
    assert problems(lines) == []
    for line in lines:
        record = parse_line(line)
        assert line.endswith(b',"chain":"' + record[CHAIN].encode() + b'"}\n')


@settings(max_examples=200)
@given(a_log(), st.data())
def test_purging_any_record_keeps_every_link(lines: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(lines) - 1))
    purged = purged_line(parse_line(lines[index]), lines[index])
    record = parse_line(purged)
    event(f"purged a record {'with' if 'sha256' in record['meta'] else 'without'} a payload digest")
    assert record["data"] is None and record["meta"][BODY_DIGEST]
    assert problems([*lines[:index], purged, *lines[index + 1:]]) == []


@settings(max_examples=300)
@given(a_log(), st.data())
def test_any_change_to_a_linked_record_breaks_its_link(lines: list[bytes], data: st.DataObject) -> None:
    """A field of a record changed (the line written again as a tool would, its chain kept
    last): its own link no longer follows. Its data too when it has no payload digest."""
    index = data.draw(st.integers(0, len(lines) - 1))
    record = parse_line(lines[index])
    digest = "sha256" in record["meta"]
    fields = sorted(set(record) - {CHAIN} - ({"data"} if digest else set()))
    field = data.draw(st.sampled_from([*fields, "meta.field"]))
    event(f"changed {field}")
    if field == "meta.field":
        key = data.draw(st.sampled_from(sorted(record["meta"]) or ["added"]))
        record["meta"][key] = "changed" if record["meta"].get(key) != "changed" else "changed again"
    elif field == "extra_frames":
        record[field] = [{"text": "changed"}] if record[field] != [{"text": "changed"}] else []
    else:
        record[field] = "changed" if record[field] != "changed" else "changed again"
    chain = record.pop(CHAIN)
    line = orjson.dumps({**record, CHAIN: chain}) + b"\n"
    prev = GENESIS if index == 0 else parse_line(lines[index - 1])[CHAIN]
    assert chain_problem(prev, line, orjson.loads(line)) is not None


@settings(max_examples=300)
@given(a_log(), st.data())
def test_deleting_duplicating_or_swapping_records_breaks_a_link(lines: list[bytes], data: st.DataObject) -> None:
    how = data.draw(st.sampled_from(["delete", "duplicate", "swap"]))
    index = data.draw(st.integers(0, len(lines) - 2))
    event(how)
    if how == "delete":
        changed = lines[:index] + lines[index + 1:]
    elif how == "duplicate":
        changed = [*lines[:index + 1], lines[index], *lines[index + 1:]]
    else:
        changed = [*lines[:index], lines[index + 1], lines[index], *lines[index + 2:]]
    assert problems(changed) != []


def test_the_data_of_a_record_without_a_payload_digest_is_bound() -> None:
    line = Chain().link_lines(make_line(1, "2026-11-21T12:00:00.000000Z", "recorder.start", "recorder", None, None,
                                        {"pid": 1}))
    edited = line.replace(b'"pid":1', b'"pid":2')
    assert edited != line and chain_problem(GENESIS, edited, parse_line(edited)) is not None
    assert chain_problem(GENESIS, line, parse_line(line)) is None


def test_a_line_that_is_not_a_record_is_written_as_is_and_the_next_links_from_genesis() -> None:
    chain = Chain("ab" * 32)
    good = make_line(2, "2026-11-21T12:00:00.000000Z", "recorder.start", "recorder", None, None, {})
    out = chain.link_lines(b"not json\n" + good)
    first, second = out.splitlines(keepends=True)
    assert first == b"not json\n"
    assert chain_problem(GENESIS, second, parse_line(second)) is None
