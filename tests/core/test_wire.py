"""Decoding frames into records: kinds, sessions, and the law that no byte is lost."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from convlog.core.enrich import Enricher, Rule
from convlog.core.ingest import Ingest
from convlog.core.record import BUS_KINDS, MAX_DEPTH, decode_bytes, dump_json, make_line, parse_line
from convlog.core.wire import decode, legacy_to_bus


@pytest.fixture(autouse=True)
def deep_comparisons() -> Iterator[None]:
    """Python's ``==`` on lists nested 1000 deep (stored as JSON up to MAX_DEPTH) passes
    its default recursion limit: raised for these tests, restored after."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(max(before, 4 * ORJSON_DEPTH + 1000))
    yield
    sys.setrecursionlimit(before)

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
        frames.append(dump_json(record["data"]))  # semantic form; compared by value below
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
# --------------------------------------------------------------------------- JSON texts at the edges

#: A drawn payload: its bytes, its nesting depth (the outermost array/object is level 1),
#: and what it holds (hypothesis event names; those in BROKEN make it not JSON for orjson).
Text = tuple[bytes, int, frozenset[str]]

BROKEN = frozenset(
    {
        "NaN/Infinity token",
        "number overflowing a double",
        "lone surrogate escape",
        "raw invalid UTF-8 bytes",
        "raw NUL byte",
    }
)
#: orjson parses at most this many levels (the line then adds one around ``data``).
ORJSON_DEPTH = 1024


def _leaf(token: bytes, *flags: str) -> Text:
    return token, 0, frozenset(flags)


valid_leaves = st.one_of(
    st.sampled_from([b"null", b"true", b"false", b"0", b"-0", b"1.5e3", b"-0.0"]).map(_leaf),
    ints.map(lambda i: _leaf(str(i).encode())),
    (st.integers(2**64, 2**300) | st.integers(-(2**300), -(2**63) - 1)).map(
        lambda i: _leaf(str(i).encode(), "integer beyond 64 bits")
    ),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: _leaf(orjson.dumps(f))),
    st.text(max_size=8).map(lambda s: _leaf(orjson.dumps(s))),
    st.sampled_from([b'"[[[{{"', b'"\\"]]}}[["', b'"}]"', b'"\\\\[{"']).map(
        lambda t: _leaf(t, "brackets inside strings")
    ),
    st.sampled_from([b'"\\u0000"', b'"a\\u0000b"']).map(lambda t: _leaf(t, "\\u0000 escape")),
    st.just(_leaf(b'"\\ud83d\\ude00"', "surrogate pair escape")),
    st.sampled_from([b'"message"', b'"session.fork"', b'"handshake"']).map(_leaf),  # values of "type"
)
broken_leaves = st.one_of(
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"-NaN"]).map(lambda t: _leaf(t, "NaN/Infinity token")),
    st.sampled_from([b"1e400", b"-1e400", b"1" + b"0" * 400 + b".0"]).map(
        lambda t: _leaf(t, "number overflowing a double")
    ),
    st.sampled_from([b'"\\ud800"', b'"\\udc00"', b'"x\\udbffy"', b'"\\ud800\\ud800"']).map(
        lambda t: _leaf(t, "lone surrogate escape")
    ),
    st.sampled_from([b'"\xff"', b'"\xed\xa0\x80"', b'"\xc3"', b'"\xc0\x80"', b'"ok\xf8"']).map(
        lambda t: _leaf(t, "raw invalid UTF-8 bytes")
    ),
    st.sampled_from([b'"\x00"', b"\x00null", b'"a\x00"']).map(lambda t: _leaf(t, "raw NUL byte")),
)
#: JSON whitespace between tokens (a raw LF must become a space in the line).
whitespace = st.sampled_from([b"", b"", b" ", b"\n", b"\r\n", b"\t", b" \n\t"])
keys = st.sampled_from([b'"type"', b'"a"', b'"a"', b'"session_id"', b'"content"', b'"message_id"', b'"k\\u0000"'])


def _flags(ws: bytes, children: list[Text], *more: str) -> frozenset[str]:
    flags = frozenset(more).union(*(flags for _, _, flags in children))
    return flags | {"raw LF between tokens"} if b"\n" in ws else flags


def _array(args: tuple[list[Text], bytes]) -> Text:
    children, ws = args
    body = (b"," + ws).join(token for token, _, _ in children)
    return b"[" + ws + body + ws + b"]", 1 + max((d for _, d, _ in children), default=0), _flags(ws, children)


def _object(args: tuple[list[tuple[bytes, Text]], bytes]) -> Text:
    pairs, ws = args
    body = (b"," + ws).join(key + ws + b":" + ws + value[0] for key, value in pairs)
    names = [key for key, _ in pairs]
    dup = ("duplicate keys",) if len(set(names)) < len(names) else ()
    depth = 1 + max((value[1] for _, value in pairs), default=0)
    return b"{" + ws + body + ws + b"}", depth, _flags(ws, [value for _, value in pairs], *dup)


def _containers(children: st.SearchStrategy[Text]) -> st.SearchStrategy[Text]:
    return st.tuples(st.lists(children, max_size=4), whitespace).map(_array) | st.tuples(
        st.lists(st.tuples(keys, children), max_size=4), whitespace
    ).map(_object)


json_trees = st.recursive(valid_leaves, _containers, max_leaves=10)
#: One level of the deep wrapper: (opening, closing) bytes.
LEVELS = [(b"[", b"]"), (b'{"k":', b"}"), (b"[0,\n", b"]"), (b'{"a":1,"a":', b"}"), (b'{"type":"message","c":', b"}")]
#: Total nesting depth to reach (None: the drawn tree as it is): often right at
#: convlog.core.record.MAX_DEPTH (1000) and orjson's limits (254 levels to serialise, 1024 to
#: parse), else anywhere up to a few hundred levels, around the limit, or past 1024.
_limits = st.sampled_from([MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH - 1, 254, 255, ORJSON_DEPTH, ORJSON_DEPTH + 1])
target_depths = st.sampled_from(
    [
        st.none(),
        _limits,
        st.integers(150, 400),
        st.integers(1, 12),
        _limits,
        st.integers(ORJSON_DEPTH + 1, ORJSON_DEPTH + 80),
        st.integers(MAX_DEPTH - 50, ORJSON_DEPTH),
    ]
).flatmap(lambda strategy: strategy)


@st.composite
def json_texts(draw: st.DrawFn) -> Text:
    """JSON text at the edges of what orjson and the recorder take: nesting from flat to
    past 1024 levels, big integers, duplicate keys, escapes, LF whitespace; two in three
    drawn broken by one to three tokens orjson refuses (NaN, Infinity, 1e400, a lone
    surrogate escape, raw invalid UTF-8, a raw NUL). Returns ``(bytes, depth, flags)``
    and tags what it holds with hypothesis events."""
    token, depth, flags = draw(json_trees)
    if draw(st.integers(0, 2)):
        bad = draw(st.lists(broken_leaves, min_size=1, max_size=3))
        token, depth, flags = _array(([(token, depth, flags), *bad][:: draw(st.sampled_from([1, -1]))], b""))
    shaped = draw(st.booleans())  # a native message around it (the recorder's fast path)
    target = draw(target_depths, label="depth")
    wrap = 0 if target is None else max(0, target - depth - shaped)
    if wrap:
        levels = draw(st.lists(st.sampled_from(LEVELS), min_size=1, max_size=3, unique=True))
        chosen = [levels[i % len(levels)] for i in range(wrap)]
        token = b"".join(o for o, _ in chosen) + token + b"".join(c for _, c in reversed(chosen))
        depth += wrap
        flags |= {"duplicate keys"} if LEVELS[3] in levels else set()
        flags |= {"raw LF between tokens"} if LEVELS[2] in levels else set()
    if shaped:
        token = b'{"type":"message","session_id":"s","message_id":"m","content":' + token + b"}"
        depth += 1
    broken = bool(flags & BROKEN)
    for flag in sorted(flags):
        event(f"payload: {flag}")
    event(f"payload: {'not JSON for orjson' if broken or depth > ORJSON_DEPTH else 'JSON'}")
    for low, high, name in (
        (0, 10, "0-10"),
        (11, 253, "11-253"),
        (254, MAX_DEPTH - 1, f"254-{MAX_DEPTH - 1} (past orjson's serialiser)"),
        (MAX_DEPTH, MAX_DEPTH + 1, f"{MAX_DEPTH}-{MAX_DEPTH + 1} (the limit)"),
        (MAX_DEPTH + 2, ORJSON_DEPTH, f"{MAX_DEPTH + 2}-1024"),
        (ORJSON_DEPTH + 1, 10**6, "over 1024"),
    ):
        if low <= depth <= high:
            event(f"payload: nested {name} levels")
    return token, depth, flags


payloads = st.sampled_from(
    [
        st.one_of(
            st.binary(max_size=200),
            st.text(max_size=100).map(str.encode),
            json_values.map(orjson.dumps),
            shaped.map(orjson.dumps),
            shaped.map(lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2)),
        ),
        json_texts().map(lambda text: text[0]),  # half the payloads: JSON text at the edges
    ]
).flatmap(lambda strategy: strategy)


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


def text_depth(payload: bytes) -> int:
    """Nesting depth of JSON text as written (outermost array/object = 1), brackets
    inside strings not counted; every level counts, also one a later duplicate key
    hides from the parsed value."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in payload:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def value_depth(value: object) -> int:
    """Nesting depth of a parsed JSON value (outermost list/dict = 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


@settings(max_examples=300, deadline=None)
@given(text=json_texts(), topic=st.sampled_from([b"t", b"\xfftopic"]), shape=st.sampled_from(["one", "two", "many"]))
def test_json_at_the_edges_is_stored_as_documented(text: Text, topic: bytes, shape: str) -> None:
    """JSON text with big integers, duplicate keys, escapes and nesting up to MAX_DEPTH
    (1,000) is spliced byte for byte; text orjson refuses (NaN, Infinity, 1e400, lone
    surrogate escapes, raw NUL, invalid UTF-8) is raw text, or base64 when not UTF-8;
    text nested deeper than MAX_DEPTH (valid JSON or not, past 1024 levels too, and levels
    a later duplicate key hides from the parsed value) is raw base64 with a
    ``meta.reason`` naming its depth. In every case the line is one line that
    parses back and gives back the payload, decode agrees, and the fast path writes the
    general path's bytes."""
    payload, drawn_depth, flags = text
    depth = text_depth(payload)
    assert depth == drawn_depth
    frames = {"one": [payload], "two": [topic, payload], "many": [topic, payload, b"\x00x"]}[shape]
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        value = refused = True
    else:
        refused = False
    # The strategy makes what it says: orjson refuses exactly the broken and the too deep.
    assert refused == bool(flags & BROKEN or depth > ORJSON_DEPTH)
    line = Ingest().line(frames, 5, "2026-11-21T00:00:00.000000Z", "pull")
    assert line == Ingest().general_line(frames, 5, "2026-11-21T00:00:00.000000Z", "pull")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    decoded = decode(frames)
    assert decoded.payload == payload
    if not refused and value_depth(value) != depth:
        event("payload: depth hidden behind a duplicate key")
    record = parse_line(line)
    meta = record["meta"]
    assert decoded.kind == record["kind"]
    rebuilt = frames_from_record(record)
    if not refused and depth <= MAX_DEPTH:
        assert record["kind"] != "raw" and "encoding" not in meta and "reason" not in meta
        assert payload.replace(b"\n", b" ") in line
        assert record["data"] == value == decoded.value
        assert orjson.loads(dump_json(record["data"])) == record["data"]  # readers can re-serialise
        assert len(rebuilt) == len(frames) and orjson.loads(rebuilt[0 if shape == "one" else 1]) == value
    else:
        assert record["kind"] == "raw" and decoded.value is None
        assert rebuilt == frames and decode_bytes(record["data"]) == payload
        if depth <= MAX_DEPTH:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                assert meta["encoding"] == "base64"
            else:
                assert meta["encoding"] == "text" and record["data"] == {"text": payload.decode("utf-8")}
            assert "reason" not in meta
        else:
            assert meta["encoding"] == "base64"
            assert record["data"] == {"base64": base64.b64encode(payload).decode("ascii")}
            assert isinstance(meta.get("reason"), str) and str(depth) in meta["reason"]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, ORJSON_DEPTH - 1, ORJSON_DEPTH])
def test_depth_hidden_behind_a_duplicate_key_counts(depth: int) -> None:
    """JSON text nested deeper than MAX_DEPTH is stored raw (base64, depth in
    ``meta.reason``) even when a later duplicate key drops the deep value from the parsed
    object: the bytes, which are what the line holds, are that deep, and at 1024 levels
    orjson could not read the line back."""
    deep = b"[" * (depth - 1) + b"]" * (depth - 1)
    payload = b'{"type":"message","session_id":"s","content":' + deep + b',"content":"hi"}'
    assert text_depth(payload) == depth and value_depth(orjson.loads(payload)) == 1
    for frames in ([b"t", payload], [payload]):
        line = Ingest().line(frames, 1, "ts", "sub")
        record = parse_line(line)
        assert record["kind"] == "raw" and record["meta"]["encoding"] == "base64"
        assert decode_bytes(record["data"]) == payload
        assert str(depth) in record["meta"]["reason"]


@pytest.mark.parametrize(
    ("depth", "form"),
    [
        *((depth, "json") for depth in (1, 254, 255, MAX_DEPTH - 1, MAX_DEPTH)),
        *((depth, "raw") for depth in (MAX_DEPTH + 1, ORJSON_DEPTH - 1, ORJSON_DEPTH, ORJSON_DEPTH + 1)),
    ],
)
def test_nesting_limit_is_max_depth(depth: int, form: str) -> None:
    """A payload of exactly MAX_DEPTH levels (the outermost object is level 1) is stored
    as JSON; one level more is raw base64 with the depth in ``meta.reason``; past
    orjson's 1024 levels it is raw too. Every line parses back."""
    content = b"[" * (depth - 1) + b"]" * (depth - 1) if depth > 1 else b"0"
    payload = b'{"type":"message","session_id":"s","content":' + content + b"}"
    for frames in ([b"t", payload], [payload]):
        line = Ingest().line(frames, 1, "ts", "sub")
        record = parse_line(line)
        assert (record["kind"] == "raw") == (form == "raw")
        if form == "json":
            assert record["kind"] == "message" and record["session"] == "s"
        else:
            assert decode_bytes(record["data"]) == payload
        if form == "raw" and depth <= ORJSON_DEPTH:
            assert record["meta"]["encoding"] == "base64" and str(depth) in record["meta"]["reason"]


#: Python values for records the recorder builds itself (make_line): strings with lone
#: surrogates (an argv byte that is not UTF-8 arrives as one), integers past 64 bits,
#: nesting up to MAX_DEPTH.
#: (st.text never yields a lone surrogate, so strings are joined from characters here.)
python_text = st.lists(st.characters() | st.sampled_from(["\ud800", "\udcff", "\udfff"]), max_size=6).map("".join)
python_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(2**64, 2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | python_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=8,
)


@st.composite
def nested_values(draw: st.DrawFn) -> object:
    value = draw(python_values)
    for _ in range(draw(st.sampled_from([0, 0, 5, MAX_DEPTH - 4]))):
        value = [value]
    if value_depth(value) > 10:
        event("make_line: nested deeper than 10")
    return value


def _has_surrogate(value: object) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and any("\ud800" <= ch <= "\udfff" for ch in item):
            return True
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


@settings(max_examples=200, deadline=None)
@given(data=nested_values(), meta=st.none() | st.dictionaries(st.text(max_size=3), st.text(max_size=3) | python_text))
def test_make_line_lines_parse_back(data: object, meta: dict | None) -> None:
    """Every line make_line returns is one line that parse_line reads back, with ``data``
    equal (integers past 64 bits exact when read by a reader that keeps them); a value it
    cannot write is refused with TypeError, never written unreadable."""
    if _has_surrogate(data) or _has_surrogate(meta):
        event("make_line: lone surrogate in a string")
    if any(isinstance(v, int) and not -(2**63) <= v < 2**64 for v in _leaves(data)):
        event("make_line: integer beyond 64 bits")
    try:
        line = make_line(7, "2026-11-21T00:00:00.000000Z", "session.crystal", "control", None, "s", data, meta)
    except TypeError:
        event("make_line: refused with TypeError")
        return
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record = parse_line(line)
    assert json.loads(line)["data"] == data
    assert record["meta"] == (meta or {})


def _leaves(value: object) -> list[object]:
    out, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            out.append(item)
    return out


def test_control_record_with_an_argv_byte_that_is_not_utf8_is_readable_or_refused() -> None:
    """``convlog crystal s --summary $'sum\\xff'`` gives make_line the summary "sum\\udcff"
    (Python's surrogateescape of argv): the line must parse back, or make_line must
    refuse it with TypeError; it must not write a line that every reader skips."""
    try:
        line = make_line(
            4, "2026-11-21T00:00:00.000000Z", "session.crystal", "control", None, "s", {"summary": "sum\udcff"}
        )
    except TypeError:
        return
    assert parse_line(line)["kind"] == "session.crystal"
