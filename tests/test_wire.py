"""Decoding frames into records: kinds, sessions, and the law that no byte is lost."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convlog.enrich import Enricher, Rule
from convlog.ingest import Ingest
from convlog.record import BUS_KINDS, decode_bytes, parse_line
from convlog.wire import decode, legacy_to_bus

SW_BUS = {
    "message_id": "claude_code_1764590299526",
    "timestamp": "2025-12-01T06:58:19.526765",
    "from": "claude_code",
    "to": "gemini_cli",
    "type": "handshake",
    "priority": "NORMAL",
    "content": {"message": "Handshake initiated from Claude Code", "phase": "init"},
}
SW_BUS2 = {
    "message_id": "m-2",
    "sender_id": "gemini_cli",
    "timestamp": "2025-12-01T06:58:20",
    "context_id": "handshake_test",
    "content": {"message": "hello"},
    "metadata": {"sender_role": "Agent"},
}
LEGACY = {  # the legacy ConversationEvent shape (shared/data/shearwater/README.md), synthetic values
    "Id": "legacy-0001",
    "Timestamp": "2025-11-20T10:00:00.000001",
    "SpeakerName": "agent_a",
    "SpeakerRole": "System",
    "Message": '{"message": "1) Use 4-bit QLoRA"}',
    "ConversationType": 0,
    "ContextId": "context_test",
    "Metadata": {},
}


def frames_from_record(record: dict) -> list[bytes]:
    """Rebuild the frames of a message from its record (the inverse of recording)."""
    meta = record["meta"]
    frames: list[bytes] = []
    if record["topic"] is not None:
        topic = record["topic"]
        frames.append(base64.b64decode(topic) if meta.get("topic_encoding") == "base64" else topic.encode())
    if meta.get("frames") == 0:
        return frames
    if "encoding" in meta:
        frames.append(decode_bytes(record["data"]))
    else:
        frames.append(orjson.dumps(record["data"]))  # semantic form; compared by value below
    frames.extend(decode_bytes(f) for f in record.get("extra_frames", []))
    return frames


def line_for(frames: list[bytes], seq: int = 1) -> dict:
    return parse_line(Ingest().line(frames, seq, "2026-11-21T00:00:00.000000Z", "sub"))


def test_native_message_kind_session_and_identity() -> None:
    """A native payload's ``type`` is the kind; session, message id, sender and role come from it."""
    payload = {"type": "message", "session_id": "s1", "message_id": "m1", "sender": "alice", "role": "user",
               "content": "hi"}
    d = decode([b"topic", orjson.dumps(payload)])
    assert (d.kind, d.session, d.topic) == ("message", "s1", "topic")
    assert d.meta == {"shape": "native", "message_id": "m1", "sender": "alice", "role": "user"}
    assert d.text == "hi"


@pytest.mark.parametrize("kind", sorted(BUS_KINDS))
def test_every_bus_kind_is_recognised(kind: str) -> None:
    """Every kind of the vocabulary sent as ``type`` becomes that record kind."""
    assert decode([b"t", orjson.dumps({"type": kind, "session_id": "s"})]).kind == kind


def test_recorder_kinds_cannot_be_forged() -> None:
    """A publisher sending ``type: recorder.stop`` gets an ``unknown`` record, not a recorder one."""
    assert decode([b"t", b'{"type": "recorder.stop"}']).kind == "unknown"


def test_shearwater_bus_shapes() -> None:
    """Both Shearwater bus shapes decode to messages with sender, role and session."""
    a = decode([b"claude_code", orjson.dumps(SW_BUS)])
    assert a.kind == "message" and a.meta["shape"] == "shearwater"
    assert a.meta["sender"] == "claude_code" and a.meta["recipient"] == "gemini_cli"
    assert a.meta["bus_type"] == "handshake"
    assert a.session == "claude_code"  # no session field: the topic
    assert a.text == "Handshake initiated from Claude Code"
    b = decode([b"gemini_cli", orjson.dumps(SW_BUS2)])
    assert (b.kind, b.session, b.meta["sender"], b.meta["role"]) == ("message", "handshake_test", "gemini_cli", "Agent")


def test_shearwater_push_envelope() -> None:
    """The PUSH envelope decodes to the inner message, keeping event type and agent."""
    envelope = {"event_type": "received", "agent": "gemini_cli", "timestamp": "t", "message": SW_BUS2}
    d = decode([orjson.dumps(envelope)])
    assert d.kind == "message" and d.meta["shape"] == "shearwater.push"
    assert d.meta["event_type"] == "received" and d.meta["message_id"] == "m-2"
    assert d.session == "handshake_test" and d.topic is None and d.meta["frames"] == 1


def test_legacy_record_and_round_trip_to_bus() -> None:
    """A legacy ConversationEvent decodes as a message; legacy_to_bus follows the data README."""
    d = decode([b"agent_a", orjson.dumps(LEGACY)])
    assert (d.kind, d.session, d.meta["message_id"]) == ("message", "context_test", "legacy-0001")
    assert d.text == "1) Use 4-bit QLoRA"
    topic, payload = legacy_to_bus(LEGACY)
    bus = orjson.loads(payload)
    assert topic == b"agent_a"
    assert bus == {"message_id": "legacy-0001", "timestamp": LEGACY["Timestamp"], "sender_id": "agent_a",
                   "context_id": "context_test", "content": {"message": "1) Use 4-bit QLoRA"}, "metadata": {}}
    again = decode([topic, payload])
    assert (again.kind, again.session, again.meta["shape"]) == ("message", "context_test", "shearwater")


def test_session_fields_order_is_configurable() -> None:
    """The first present field of the configured list names the session; else the topic."""
    payload = orjson.dumps({"thread_id": "t-1", "conversation_id": "c-1"})
    assert decode([b"top", payload]).session == "c-1"
    assert decode([b"top", payload], fields=("thread_id",)).session == "t-1"
    assert decode([b"top", payload], fields=("nope",)).session == "top"


def test_json_payload_bytes_are_spliced_exactly() -> None:
    """JSON payloads keep their exact bytes: big integers and key order survive."""
    payload = b'{"z": 1, "a": 123456789012345678901234567890, "n": 1.50}'
    line = Ingest().line([b"t", payload], 7, "2026-11-21T00:00:00.000000Z", "sub")
    assert b'"data":' + payload + b',"meta"' in line
    assert line.endswith(b"}\n") and line.count(b"\n") == 1


def test_raw_lf_whitespace_is_made_a_space() -> None:
    """Pretty-printed JSON stays one line and equal in value."""
    payload = b'{\n  "a": [1,\n 2],\r\n  "b": "x"\n}'
    record = line_for([b"t", payload])
    assert record["data"] == orjson.loads(payload)


@pytest.mark.parametrize(
    ("frames", "kind", "encoding"),
    [
        ([b"t", b"not json"], "raw", "text"),
        ([b"t", b"\xff\xfe\x00binary"], "raw", "base64"),
        ([b"t", b""], "raw", "text"),
        ([b"t", b"NaN"], "raw", "text"),
        ([b"t", b"[1, 2, 3]"], "unknown", None),
        ([b"t", b"42"], "unknown", None),
        ([b"t", b'{"type": 5}'], "unknown", None),
        ([b"t", b'{"type": ["message"], "session_id": "s"}'], "unknown", None),
        ([b"t", b'{"type": {"a": 1}}'], "unknown", None),
    ],
)
def test_bad_input_is_recorded_with_documented_encoding(frames: list[bytes], kind: str, encoding: str | None) -> None:
    """Non-JSON, binary, empty and oddly shaped payloads become raw/unknown records, losslessly."""
    record = line_for(frames)
    assert record["kind"] == kind
    assert record["meta"].get("encoding") == encoding
    rebuilt = frames_from_record(record)
    if encoding:
        assert rebuilt == frames
    else:
        assert orjson.loads(rebuilt[1]) == orjson.loads(frames[1])


def test_frame_counts() -> None:
    """Zero, one and three-or-more frames are all recorded; extra frames kept in order."""
    zero = line_for([])
    assert zero["meta"]["frames"] == 0 and zero["topic"] is None and zero["data"] == {"text": ""}
    one = line_for([b'{"session_id": "s"}'])
    assert one["topic"] is None and one["meta"]["frames"] == 1 and one["session"] == "s"
    many = line_for([b"\xfftopic", b"{}", b"x", b"\x00\xff"])
    assert many["meta"]["topic_encoding"] == "base64" and many["meta"]["frames"] == 4
    assert frames_from_record(many) == [b"\xfftopic", b"{}", b"x", b"\x00\xff"]


def test_enrichment_builtins() -> None:
    """meta carries byte and character sizes and the SHA-256 of the payload; data is untouched."""
    import hashlib

    payload = '{"content": "héllo"}'.encode()
    record = line_for([b"t", payload])
    assert record["meta"]["bytes"] == len(payload)
    assert record["meta"]["chars"] == len(payload.decode())
    assert record["meta"]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert record["data"] == {"content": "héllo"}


def test_enrichment_rules_keyword_regex_tag_field() -> None:
    """Rules add tags and fields by keyword or regex; first field rule wins; templates fill in."""
    enricher = Enricher(
        rules=[
            Rule(keywords=("qlora", "lora"), set_field="chain_type", value="training"),
            Rule(keywords=("handshake",), set_field="chain_type", value="agent_collaboration"),
            Rule(regex=r"(?i)\bblocked\b", tag="@Status-Blocked", tags_field="shl_tags"),
            Rule(tag="@Chain-{chain_type}", tags_field="shl_tags"),
        ],
        defaults={"chain_type": "general", "ace_tier": "E"},
    )
    ingest = Ingest(enricher)
    meta = parse_line(ingest.line([b"t", orjson.dumps(LEGACY)], 1, "ts", "sub"))["meta"]
    assert meta["chain_type"] == "training" and meta["ace_tier"] == "E"
    assert meta["shl_tags"] == ["@Chain-training"]
    msg = {**SW_BUS, "content": {"message": "Handshake blocked by firewall"}}
    meta = parse_line(ingest.line([b"t", orjson.dumps(msg)], 2, "ts", "sub"))["meta"]
    assert meta["chain_type"] == "agent_collaboration"
    assert meta["shl_tags"] == ["@Status-Blocked", "@Chain-agent_collaboration"]


def test_invalid_rules_are_refused() -> None:
    """A bad regex or a rule writing a reserved field is refused when the enricher is built."""
    with pytest.raises(ValueError, match="invalid regex"):
        Enricher(rules=[Rule(regex="(", tag="x")])
    with pytest.raises(ValueError, match="reserved"):
        Enricher(rules=[Rule(keywords=("a",), set_field="sha256", value="x")])


def test_oversize_payload_is_flagged_and_kept_whole() -> None:
    """A payload over the size limit is recorded whole with ``oversize: true``."""
    payload = orjson.dumps({"content": "x" * 5000})
    record = parse_line(Ingest(Enricher(large_message_bytes=1000)).line([b"t", payload], 1, "ts", "sub"))
    assert record["meta"]["oversize"] is True and record["data"] == orjson.loads(payload)


ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
json_values = st.recursive(
    st.none() | st.booleans() | ints | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from([*sorted(BUS_KINDS), "handshake", "recorder.start", "raw"]) | ints | json_values,
        "session_id": st.text(max_size=6) | ints | st.none(),
        "context_id": st.text(max_size=6),
        "message_id": st.text(max_size=6) | ints | st.lists(ints, max_size=2),
        "content": json_values,
        "from": st.text(max_size=4) | ints,
        "sender_id": st.text(max_size=4),
        "event_type": st.sampled_from(["sent", "received"]),
        "message": json_values,
        "Id": st.text(max_size=4),
        "SpeakerName": st.text(max_size=4),
        "Message": st.text(max_size=20) | json_values,
        "metadata": json_values,
    },
)
payloads = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(str.encode),
    json_values.map(orjson.dumps),
    shaped.map(orjson.dumps),
    shaped.map(lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2)),
)


@settings(max_examples=400, deadline=None)
@given(topic=st.binary(max_size=20), payload=payloads, extra=st.lists(st.binary(max_size=30), max_size=3),
       shape=st.sampled_from(["one", "two", "many"]))
def test_decoding_never_raises_and_never_loses_bytes(topic: bytes, payload: bytes, extra: list[bytes],
                                                    shape: str) -> None:
    """For any frames: decoding never raises, the line is one valid JSON record, and the
    original frames can be rebuilt from it (bytes exactly, or equal JSON values)."""
    frames = {"one": [payload], "two": [topic, payload], "many": [topic, payload, *extra]}[shape]
    line = Ingest().line(frames, 1, "2026-11-21T00:00:00.000000Z", "sub")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record = parse_line(line)
    rebuilt = frames_from_record(record)
    assert len(rebuilt) == len(frames)
    payload_index = 0 if shape == "one" else 1
    for index, (original, copy) in enumerate(zip(frames, rebuilt, strict=True)):
        if index == payload_index and "encoding" not in record["meta"]:
            assert orjson.loads(copy) == orjson.loads(original)
        else:
            assert copy == original
    if "encoding" not in record["meta"]:
        # JSON payloads are spliced: the bytes appear in the line (LF made a space).
        assert payload.replace(b"\n", b" ") in line


@settings(max_examples=300, deadline=None)
@given(topic=st.binary(max_size=12) | st.text(max_size=12).map(str.encode), payload=payloads)
def test_fast_path_writes_the_same_line_as_the_general_path(topic: bytes, payload: bytes) -> None:
    """The recorder's short path for common messages yields exactly the bytes of the
    general decode → enrich → format path, with and without enrichment rules."""
    for enricher in (Enricher(), Enricher(rules=[Rule(keywords=("a",), tag="has-a")], defaults={"d": 1},
                                          word_count=True)):
        ingest = Ingest(enricher)
        frames = [topic, payload]
        assert ingest.line(frames, 3, "ts", "sub") == ingest.general_line(frames, 3, "ts", "sub")
