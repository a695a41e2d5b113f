"""Hostile and odd input against the whole running recorder: it never stops the
recorder, breaks a reader or costs a record.

A hypothesis state machine (:class:`RecorderUnderAttack`) drives a real reference
broker on free loopback ports, a real ``convlog record`` subprocess (SUB to the broker
and a bound PULL socket) and real ZeroMQ sockets. Its rules send batches of hostile
messages over both paths (random bytes, 1 to 5 frames, JSON nested up to 100,000 deep,
NaN and Infinity tokens, duplicate keys, lone surrogates, invalid UTF-8, NUL bytes, big
integers, forged ``recorder.*`` and session kinds, forged loss-detection stamps at and
past 2**64-1), send garbage on the control channel, run ``convlog status``, and kill -9
(or stop) the recorder and start a new one on the same directory like a supervisor.

After every step it checks: the recorder answers ``status``; every message sent while
it was up is in the log (a sentinel sent last on each path is waited for; then the
records of each source are counted) and none got a ``recorder.*`` kind; seq runs 1..N
with no gap or repeat, nothing was quarantined and a restart only appended;
``convlog play`` sends every message back frame for frame, byte for byte, in order;
``convlog verify`` exits 0; and ``search``, ``tail``, ``show``, ``export --all``,
``resume latest`` and ``sessions`` exit 0.

The plain tests at the end reproduce, end to end, each failure the machine found.

Payloads hold raw LFs too (pretty-printed JSON, random bytes): the recorder stores an LF
between JSON tokens as a space with its offset in ``meta.lf``, and play puts it back.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import pyzstd
import zmq
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from conftest import Bus, Proc, answering, convlog_cmd, running_bus
from convlog.bus import control
from convlog.cli.demo import free_port
from convlog.core.wire import decode

pytestmark = pytest.mark.slow

U64_MAX = 2**64 - 1
#: Integers at and past the edges of the 64-bit types (orjson reads past them as floats).
BIG_INTEGERS = (U64_MAX, 2**64, 2**200, -1, -(2**63), -(2**63) - 1, -(2**200), 0)
#: Nesting depths around the limits of JSON libraries (orjson: 254 to write, 1024 to read);
#: the first is where shrinking goes.
EDGE_DEPTHS = (1024, 260, 254, 255, 256, 300, 1023, 1025, 100_000, 2)
#: The session of the sentinel messages that mark the end of each batch on each path.
SENTINEL_SESSION = "attack-sentinel"
#: Failure bounds (never timed assertions): waiting for the log, a reply, a subprocess.
WAIT_S = 30.0
COMMAND_S = 120.0
#: The head of every log line, as one orjson.dumps writes it (record.format_line).
HEAD = re.compile(rb'\{"seq":(\d+),"ts":"[^"]*","kind":"((?:[^"\\]|\\.)*)","source":"([a-z]+)"')


# --------------------------------------------------------------------------- generated input


@dataclass(frozen=True)
class Big:
    """A large frame built when it is sent, so that a failing example prints short.

    Attributes:
        shape: what to build (see :meth:`build`).
        size: the nesting depth, or the byte count for ``pad``.
    """

    shape: str
    size: int

    def build(self) -> bytes:
        """The frame's bytes.

        ``array``: ``[`` * n + ``]`` * n. ``object``: ``{"a":`` * n, ``1``, ``}`` * n.
        ``mixed``: arrays and objects alternating, n deep. ``unclosed``: ``[`` * n (not
        JSON). ``content``: a native ``message`` whose ``content`` is an array n deep.
        ``seq``: a stamp whose ``seq`` is an array n deep. ``append``: a control
        ``append`` request whose ``data`` holds an array n deep. ``pad``: a control
        ``status`` request padded to n bytes.
        """
        n = self.size
        if self.shape == "array":
            return b"[" * n + b"]" * n
        if self.shape == "object":
            return b'{"a":' * n + b"1" + b"}" * n
        if self.shape == "mixed":
            opens = b"".join(b'{"m":' if i % 2 else b"[" for i in range(n))
            closes = b"".join(b"}" if i % 2 else b"]" for i in reversed(range(n)))
            return opens + b"0" + closes
        if self.shape == "unclosed":
            return b"[" * n
        if self.shape == "content":
            return (b'{"type":"message","session_id":"deep","message_id":"deep-%d","content":' % n
                    + b"[" * n + b"]" * n + b"}")
        if self.shape == "seq":
            return b'{"convlog":{"publisher":"deep","seq":' + b"[" * n + b"]" * n + b'},"type":"message"}'
        if self.shape == "append":
            return (b'{"op":"append","kind":"session.crystal","session":"deep","data":{"summary":'
                    + b"[" * n + b"]" * n + b"}}")
        if self.shape == "pad":
            return b'{"op":"status","pad":"' + b"a" * n + b'"}'
        raise ValueError(self.shape)


Frame = bytes | Big


def build(frame: Frame) -> bytes:
    """The bytes of a generated frame."""
    return frame.build() if isinstance(frame, Big) else frame


def with_newlines(payload: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """``payload`` as drawn, or with LFs after its ``", "`` separators (pretty-printed
    JSON; an LF inside a string makes it text that is not JSON, recorded as such)."""
    return payload.flatmap(lambda p: st.sampled_from([p, p.replace(b", ", b",\n ")]))


def json_text(value: Any, ascii_only: bool = True) -> bytes:
    """``value`` as JSON text the way Python writes it: big integers exact, NaN and
    Infinity as bare tokens, lone surrogates as ``\\udXXX`` escapes (``ascii_only``) or
    as their raw 3-byte forms, which are not UTF-8."""
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON value, Python side: integers past 64 bits, NaN and infinities, strings
    with lone surrogates, NUL and control characters, small nested lists and objects."""
    leaves = (
        st.none() | st.booleans() | st.sampled_from(BIG_INTEGERS) | st.integers()
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(st.characters(categories=["Cs", "Cc", "Lu", "Nd"]), max_size=6)
        | st.text(max_size=6)
    )
    return st.recursive(
        leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=8,
    )


def random_bytes() -> st.SearchStrategy[bytes]:
    """Random bytes, often not UTF-8 and rarely JSON."""
    return st.binary(max_size=48)


def any_json() -> st.SearchStrategy[bytes]:
    """JSON text (by Python's rules) of any value, escaped or with raw surrogates."""
    return st.builds(json_text, json_values(), st.booleans())


def deep_json() -> st.SearchStrategy[Big]:
    """JSON nested deep, up to 100,000 levels (about 200 KB): arrays, objects, both
    mixed, unclosed arrays, and native messages and stamps with a deep member."""
    depths = st.one_of(st.sampled_from(EDGE_DEPTHS), st.sampled_from(EDGE_DEPTHS), st.integers(1, 100_000))
    return st.builds(Big, st.sampled_from(["array", "content", "object", "mixed", "unclosed", "seq"]), depths)


def odd_number_tokens() -> st.SearchStrategy[bytes]:
    """Numbers JSON does not have (NaN, Infinity, overflowing exponents, leading zeros),
    bare and inside native messages."""
    token = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1e-400", b"01", b"-0",
                             b"1.", b"0x10", b"-", b"1e", b"18446744073709551616", b"-9223372036854775809"])
    return token | token.map(lambda t: b'{"type":"message","session_id":"num","content":' + t + b"}") | token.map(
        lambda t: b'{"type":"session.rewind","session_id":"num","at":' + t + b"}")


def duplicate_keys() -> st.SearchStrategy[bytes]:
    """Objects naming a member twice: type, session, content, stamp."""
    key = st.sampled_from(["type", "session_id", "content", "convlog", "message_id", "at"])
    member = st.tuples(key, json_values()).map(lambda kv: json_text(kv[0]) + b":" + json_text(kv[1]))
    return st.lists(member, min_size=2, max_size=6).map(
        lambda members: b'{"type":"message",' + b",".join(members) + b',"type":"session.fork"}')


def lone_surrogates() -> st.SearchStrategy[bytes]:
    """Lone UTF-16 surrogates as JSON escapes (orjson refuses them) and raw (not UTF-8)."""
    return st.sampled_from([
        b'"\\ud800"', b'["\\udfff"]', b'{"\\ud800":1}',
        b'{"type":"message","session_id":"\\ud800","message_id":"\\udc00","content":"\\ud800x"}',
        b'{"type":"message","session_id":"sur","content":"\xed\xa0\x80"}',
        b'{"type":"session.start","session_id":"\\udbff\\udbff"}',
    ])


def invalid_utf8() -> st.SearchStrategy[bytes]:
    """Bytes that are not UTF-8 inside and around JSON: overlongs, lone continuation
    bytes, truncated sequences, UTF-16 with a BOM."""
    bad = st.sampled_from([b"\xff", b"\xc0\x80", b"\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\xfe\xff"])
    return bad | bad.map(lambda b: b'{"type":"message","session_id":"utf","content":"' + b + b'"}') | st.just(
        '{"type":"message"}'.encode("utf-16"))


def nul_bytes() -> st.SearchStrategy[bytes]:
    """NUL as a raw byte (not JSON inside a string) and as ``\\u0000`` (valid JSON), in
    session ids, contents and keys."""
    return st.sampled_from([
        b"\x00", b'"a\x00b"', b'{"type":"message","session_id":"nul\x00","content":"x"}',
        b'{"type":"message","session_id":"nul\\u0000","content":"\\u0000x\\u0000"}',
        b'{"\\u0000":"\\u0000"}', b'{"type":"session.start","session_id":"\\u0000"}',
    ])


def big_integers() -> st.SearchStrategy[bytes]:
    """Integers at and past 64 bits, bare and where the fold expects ids, indexes and
    counts (session id, message id, rewind/fork points, token usage)."""
    n = st.sampled_from(BIG_INTEGERS)
    templates = st.sampled_from([
        "{n}", '{{"type":"message","session_id":{n},"message_id":{n},"content":"big"}}',
        '{{"type":"session.rewind","session_id":"big","at":{n}}}',
        '{{"type":"session.fork","session_id":"big-fork","parent":"big","at":{n}}}',
        '{{"type":"llm.request","session_id":"big","usage":{{"input_tokens":{n},"output_tokens":{n}}}}}',
        '{{"type":"message.delta","session_id":"big","message_id":"d","index":{n},"delta":"x"}}',
    ])
    return st.builds(lambda t, v: t.format(n=v).encode(), templates, n)


def forged_kinds() -> st.SearchStrategy[bytes]:
    """Payloads claiming the recorder's own kinds or a session kind, with nonsense
    parameters (any JSON value where ids, points and summaries go)."""
    kind = st.sampled_from([
        "recorder.start", "recorder.stop", "recorder.gap", "recorder.recovered", "recorder.dropped",
        "recorder.degraded", "session.start", "session.fork", "session.rewind", "session.checkpoint",
        "session.crystal", "session.delete", "message", "message.delta", "message.end", "llm.request",
        "publisher.heartbeat",
    ])
    param = st.sampled_from(["session_id", "parent", "at", "name", "label", "summary", "message_id", "content",
                             "delta", "usage", "from", "role", "checkpoint", "upto", "seq", "data"])
    params = st.dictionaries(param, json_values(), max_size=6)
    return st.builds(lambda k, p, a: json_text({"type": k, **p}, a), kind, params, st.booleans())


def session_traffic() -> st.SearchStrategy[bytes]:
    """Native session events the fold acts on, among a few session and message ids, with
    nonsense points and parents: forks of missing or own sessions, rewinds to -1 or
    2**64-1, crystals and checkpoints of nothing, deletes, copies of message ids, deltas
    and ends of streams never started."""
    sessions = st.sampled_from(["s1", "s2", "s1-fork", ""])
    points = st.sampled_from([-1, 0, 1, 2, 2**63, U64_MAX, 2**64, 1.5, "x", None, []])
    kind = st.sampled_from(["message", "session.start", "session.fork", "session.rewind", "session.checkpoint",
                            "session.crystal", "session.delete", "message.delta", "message.end", "llm.request"])

    def event_of(k: str, sid: str, parent: str, at: Any, mid: str, text: str) -> bytes:
        return json_text({"type": k, "session_id": sid, "parent": parent, "at": at, "upto": at, "name": text,
                          "message_id": mid, "sender": "agent", "role": "assistant", "content": text,
                          "delta": text, "summary": text, "checkpoint": text, "usage": {"input_tokens": at}})

    return st.builds(event_of, kind, sessions, sessions, points, st.sampled_from(["m1", "m2", ""]),
                     st.sampled_from(["x", "", "cp", "\x1b[2J"]))


def stamps() -> st.SearchStrategy[bytes]:
    """Loss-detection stamps ``{"convlog": {"publisher": P, "seq": S}}`` with any JSON
    value for P and S (2**64-1, -1, 1.5, "x", ...), on messages and heartbeats."""
    seq = st.sampled_from([U64_MAX, U64_MAX - 1, 2**64, 2**200, -1, 0, 1, 2, 1.5, "x", None, [], {}]) | json_values()
    publisher = st.sampled_from(["evil", "evil-a", "evil-b", ""]) | json_values()
    kind = st.sampled_from(["message", "publisher.heartbeat", None])

    def stamped(p: Any, s: Any, k: str | None) -> bytes:
        body = {"convlog": {"publisher": p, "seq": s}}
        if k is not None:
            body.update(type=k, session_id="stamped", content="stamped")
        return json_text(body)

    return st.builds(stamped, publisher, seq, kind)


def foreign_shapes() -> st.SearchStrategy[bytes]:
    """The foreign shapes the decoder recognises (Shearwater bus message and PUSH
    envelope, legacy ConversationEvent) with nonsense values."""
    v = json_values()
    shearwater = st.builds(lambda a, b, c, d: {"message_id": a, "content": b, "from": c, "metadata": d}, v, v, v, v)
    push = st.builds(lambda e, a, m: {"event_type": e, "agent": a, "message": m}, v, v,
                     st.dictionaries(st.sampled_from(["type", "message_id", "content", "from"]), v))
    legacy = st.builds(lambda i, s, m, c: {"Id": i, "SpeakerName": s, "Message": m, "ContextId": c}, v, v, v, v)
    return st.builds(json_text, shearwater | push | legacy)


@dataclass(frozen=True)
class Labelled:
    """A generated frame and the name of the generator that made it (for ``event``)."""

    label: str
    frame: Frame


def labelled(label: str, strategy: st.SearchStrategy[Frame]) -> st.SearchStrategy[Labelled]:
    """``strategy`` with its frames labelled."""
    return strategy.map(lambda frame: Labelled(label, frame))


def payloads() -> st.SearchStrategy[Labelled]:
    """One hostile payload frame from any of the generators above (raw LFs included)."""
    def small(label: str, strategy: st.SearchStrategy[bytes]) -> st.SearchStrategy[Labelled]:
        return labelled(label, with_newlines(strategy))

    return st.one_of(
        small("random bytes", random_bytes()), small("any json", any_json()), labelled("deep", deep_json()),
        small("odd numbers", odd_number_tokens()), small("duplicate keys", duplicate_keys()),
        small("lone surrogates", lone_surrogates()), small("invalid utf-8", invalid_utf8()),
        small("nul", nul_bytes()), small("big integers", big_integers()), small("forged kind", forged_kinds()),
        small("session traffic", session_traffic()),
        small("stamp", stamps()), small("foreign shape", foreign_shapes()),
    )


def topics() -> st.SearchStrategy[bytes]:
    """Topic frames: empty, random bytes (often not UTF-8), text with control characters."""
    return st.just(b"") | random_bytes() | st.text(max_size=8).map(str.encode) | st.sampled_from(
        [b"recorder.stop", b"convlog.heartbeat", b"\x00", b"\xff\xfe", b"\x1b[2J"])


def extra_frames() -> st.SearchStrategy[bytes]:
    """Frames after the payload: random bytes or JSON text (stored encoded, LF allowed)."""
    return random_bytes() | any_json() | st.sampled_from([b"", b"\n", b"[" * 300 + b"]" * 300])


@dataclass(frozen=True)
class Message:
    """One generated message: the path it goes by (``sub``: PUB to the broker, ``pull``:
    PUSH straight to the recorder), its frames, and its payload generator's name."""

    path: str
    frames: tuple[Frame, ...]
    label: str

    def build(self) -> tuple[bytes, ...]:
        """The frames' bytes."""
        return tuple(build(f) for f in self.frames)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    """A message of 1 to 5 frames, or now and then of up to 5,000: with one frame it is
    the payload; with more, the first is the topic, the second the payload and the rest
    extra frames (past 5, copies of one drawn frame, each with its index)."""
    path = draw(st.sampled_from(["sub", "pull"]))
    payload = draw(payloads())
    count = draw(st.integers(1, 5) | st.sampled_from([64, 1000, 5000]))
    if count == 1:
        return Message(path, (payload.frame,), payload.label)
    if count > 5:
        event(f"message of {count} frames")
        seed = build(draw(extra_frames()))
        extra = [seed + str(i).encode() for i in range(count - 2)]
    else:
        extra = draw(st.lists(extra_frames(), min_size=count - 2, max_size=count - 2))
    return Message(path, (draw(topics()), payload.frame, *extra), payload.label)


def batches() -> st.SearchStrategy[list[Message]]:
    """0 to 6 messages; at most one deep payload (about 200 KB at most) per batch."""
    return st.lists(messages(), max_size=6).filter(lambda ms: sum(m.label == "deep" for m in ms) <= 1)


#: Named stamp sequences from one or two publishers, each (publisher, seq) in order.
STAMP_SEQUENCES: dict[str, tuple[tuple[str, int], ...]] = {
    "max then restart then max": (("evil", U64_MAX), ("evil", 1), ("evil", U64_MAX)),
    "two publishers at max": (("evil-a", U64_MAX), ("evil-b", U64_MAX)),
    "max then heartbeat past": (("evil", U64_MAX - 1), ("evil", U64_MAX)),
    "past 64 bits": (("evil", 2**64), ("evil", 2**200), ("evil", -1)),
}


def stamp_sequences() -> st.SearchStrategy[str]:
    """The name of one of :data:`STAMP_SEQUENCES`."""
    return st.sampled_from(list(STAMP_SEQUENCES))


@dataclass(frozen=True)
class ControlBody:
    """A control-channel request: its frames, how it is sent (``req``: a REQ socket,
    which waits for the reply; ``dealer``: raw frames, no reply awaited) and whether a
    reply must say ``ok: true`` (True), ``ok: false`` (False) or either (None)."""

    frames: tuple[Frame, ...]
    via: str
    expect_ok: bool | None


#: Ops that change nothing but the log's durability or segmenting; ``stop`` is never sent
#: here (stopping is the restart rule's job).
HARMLESS_OPS = ("status", "flush", "rotate")


def control_bodies() -> st.SearchStrategy[ControlBody]:
    """Garbage and odd requests: not JSON, not an object, unknown ops, wrong field types,
    huge numbers, duplicate keys, oversize, ``append`` of nonsense or of data nested
    300+ deep, bad checkpoint labels, and frames that are not a REQ envelope."""
    not_an_op = json_values().filter(lambda v: not (isinstance(v, str) and v in control.OPS))
    garbage = (
        random_bytes() | st.sampled_from([b"", b"{", b'{"op":', b"[]", b"null", b'"status"', b"NaN", b"{}"])
        | st.builds(lambda v: json_text({"op": v}), not_an_op)
        | st.builds(lambda op, k, v: json_text({"op": op, k: v}), st.sampled_from(HARMLESS_OPS),
                    st.text(max_size=4).filter(lambda k: k != "op"), json_values())
        | st.sampled_from([b'{"op":18446744073709551615}', b'{"op":"status","x":%d}' % 2**200,
                           b'{"op":"checkpoint","label":%d}' % 2**64,
                           b'{"op":"append","kind":"session.fork","session":"s","data":[1]}'])
    )
    bad = st.builds(lambda b: ControlBody((b,), "req", False), garbage) | st.builds(
        lambda b: ControlBody((Big("pad", b),), "req", False), st.just((1 << 20) + 1))
    either = (
        st.builds(lambda b: ControlBody((b,), "req", None), st.builds(
            lambda lbl: json_text({"op": "checkpoint", "label": lbl}), st.text(max_size=8) | st.sampled_from(
                ["../x", "", "a/b", ".", "x" * 300, "\x00", "before-upgrade"])))
        | st.builds(lambda k, s, d: ControlBody((json_text({"op": "append", "kind": k, "session": s, "data": d}),),
                                                "req", None),
                    st.sampled_from(sorted(control.CONTROL_KINDS)), json_values(),
                    st.dictionaries(st.sampled_from(["parent", "at", "name", "label", "summary", "upto"]),
                                    json_values()))
        | st.builds(lambda n: ControlBody((Big("append", n),), "req", None), st.integers(300, 1500))
        | st.just(ControlBody((b'{"op":"status","op":"flush"}',), "req", None))
    )
    harmless = st.builds(lambda op: ControlBody((json_text({"op": op}),), "req", True), st.sampled_from(HARMLESS_OPS))
    raw = st.builds(lambda fs: ControlBody(tuple(fs), "dealer", None), st.lists(random_bytes(), max_size=4))
    return bad | either | harmless | raw


# --------------------------------------------------------------------------- the log, read independently


@dataclass
class LogScan:
    """The log read without convlog's reader: each line's seq, kind and source from its
    head (written by one orjson.dumps), whatever its data holds.

    Attributes:
        seqs: every line's seq, in file order across segments.
        sources: record count by source.
        bus_kinds: count by kind of the records that came from the bus (sources ``sub``
            and ``pull``).
        problems: lines whose head could not be read, or a segment not ending in LF.
        raw: all segments' bytes, joined.
    """

    seqs: list[int] = field(default_factory=list)
    sources: Counter[str] = field(default_factory=Counter)
    bus_kinds: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    raw: bytes = b""


def segments(directory: Path) -> list[Path]:
    """The log's segment files in seq order (names are zero-padded first seqs): plain, or
    sealed (``.jsonl.zst``, which a ``rotate`` request leads to) when the plain one is gone."""
    events = directory / "events"
    if not events.is_dir():
        return []
    plain = {path.name: path for path in events.glob("*.jsonl")}
    sealed = {path.name.removesuffix(".zst"): path for path in events.glob("*.jsonl.zst")}
    return [sealed.get(name) or plain[name] for name in sorted({*plain, *sealed})]


def segment_bytes(path: Path) -> bytes:
    """A segment's lines: a sealed one decompressed by pyzstd (not by the code under test)."""
    data = path.read_bytes()
    return pyzstd.decompress(data) if path.name.endswith(".zst") else data


def scan_log(directory: Path) -> LogScan:
    """Read every line's head (see :class:`LogScan`)."""
    scan = LogScan()
    chunks = []
    for path in segments(directory):
        try:
            data = segment_bytes(path)
        except FileNotFoundError:  # sealed meanwhile: read again
            return scan_log(directory)
        chunks.append(data)
        if data and not data.endswith(b"\n"):
            scan.problems.append(f"{path.name}: does not end with a whole line")
        for number, line in enumerate(data.split(b"\n")[:-1] if data else [], 1):
            head = HEAD.match(line)
            if head is None:
                scan.problems.append(f"{path.name}:{number}: no record head: {line[:80]!r}")
                continue
            scan.seqs.append(int(head.group(1)))
            source = head.group(3).decode()
            scan.sources[source] += 1
            if source in ("sub", "pull"):
                scan.bus_kinds[head.group(2).decode()] += 1
    scan.raw = b"".join(chunks)
    return scan


def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of every file the readers read (events,
    checkpoints, recovery state and quarantine)."""
    files = []
    for sub in ("events", "checkpoints", "recovery"):
        for path in sorted((directory / sub).glob("*")) if (directory / sub).is_dir() else []:
            with contextlib.suppress(OSError):
                st_ = path.stat()
                files.append((f"{sub}/{path.name}", st_.st_size, st_.st_mtime_ns))
    return tuple(files)


def quarantined(directory: Path) -> bytes:
    """What recovery moved to ``recovery/quarantine.jsonl`` (empty when nothing)."""
    path = directory / "recovery" / "quarantine.jsonl"
    return path.read_bytes() if path.exists() else b""


def wait_in_log(directory: Path, proc: Proc, tokens: Sequence[bytes], timeout_s: float = WAIT_S) -> None:
    """Wait until every token is in the log's bytes; fail with the recorder's output when
    it exits first or on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        raw = scan_log(directory).raw
        missing = [t for t in tokens if t not in raw]
        if not missing:
            return
        if proc.popen.poll() is not None:
            pytest.fail(f"recorder exited with {proc.popen.returncode} before {missing[0]!r} was recorded:\n"
                        f"{proc.output()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{missing[0]!r} not in the log within {timeout_s:g} s:\n{proc.output()[-4000:]}")
        time.sleep(0.05)


def run(*args: str, timeout_s: float = COMMAND_S) -> subprocess.CompletedProcess[bytes]:
    """Run ``convlog ARGS`` and return its result (stdout and stderr captured)."""
    return subprocess.run(convlog_cmd(*args), capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


def described(args: Sequence[str], rc: int, out: bytes, err: bytes) -> str:
    """One failure line per command: the command, its exit code and its output's end."""
    text = (err or out).decode("utf-8", "replace")[-3000:]
    return f"convlog {' '.join(args)} exited {rc}:\n{text}"


@dataclass
class Batch:
    """Commands run together by :func:`started`.

    Attributes:
        outputs: each command's stdout file, in order.
        failures: one line per command that did not exit 0 (filled when they ended).
    """

    outputs: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@contextlib.contextmanager
def started(commands: Sequence[Sequence[str]], tmp: Path) -> Iterator[Batch]:
    """Run convlog commands concurrently (output in files under ``tmp``); on leaving,
    wait for each (bounded) and note each that did not exit 0."""
    batch = Batch()
    procs = []
    for args in commands:
        out, err = tmp / f"cmd{len(batch.outputs)}.out", tmp / f"cmd{len(batch.outputs)}.err"
        batch.outputs.append(out)
        with out.open("wb") as fo, err.open("wb") as fe:
            procs.append((args, out, err, subprocess.Popen(convlog_cmd(*args), stdout=fo, stderr=fe,
                                                           stdin=subprocess.DEVNULL)))
    try:
        yield batch
    finally:
        deadline = time.monotonic() + COMMAND_S
        for args, out, err, popen in procs:
            try:
                rc = popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
                rc = -9
            if rc != 0:
                batch.failures.append(described(args, rc, out.read_bytes(), err.read_bytes()))


def play_into_socket(ctx: zmq.Context, directory: Path, tmp: Path) -> tuple[list[tuple[bytes, ...]], str]:
    """Run ``convlog play --max`` (sources sub and pull) into a SUB socket bound here
    and return the messages it received, in order, and play's summary line.

    The socket is read while play runs: libzmq attaches a connection to a bound socket
    only when its own thread uses it, so play would otherwise never see the
    subscription."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    received: list[tuple[bytes, ...]] = []

    def drain(timeout_ms: int) -> None:
        if sub.poll(timeout_ms):
            with contextlib.suppress(zmq.Again):
                while True:
                    received.append(tuple(sub.recv_multipart(zmq.NOBLOCK)))

    try:
        port = sub.bind_to_random_port("tcp://127.0.0.1")
        args = ("play", "--dir", str(directory), "--to", f"tcp://127.0.0.1:{port}", "--max",
                "--source", "sub", "--source", "pull", "--wait", str(WAIT_S))
        out, err = tmp / "play.out", tmp / "play.err"
        with out.open("wb") as fo, err.open("wb") as fe:
            popen = subprocess.Popen(convlog_cmd(*args), stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + COMMAND_S
        while popen.poll() is None:
            if time.monotonic() > deadline:
                popen.kill()
                popen.wait()
                pytest.fail(f"convlog play did not finish in {COMMAND_S:g} s")
            drain(20)
        if popen.returncode != 0:
            pytest.fail(described(args, popen.returncode, out.read_bytes(), err.read_bytes()))
        summary = (out.read_bytes() + err.read_bytes()).decode("utf-8", "replace").strip()  # summary: stderr
        played = re.search(r"played ([\d,]+) messages?", summary)
        assert played is not None, summary
        deadline = time.monotonic() + WAIT_S
        while len(received) < int(played.group(1).replace(",", "")):
            if time.monotonic() > deadline:
                pytest.fail(f"play said {summary!r} but {len(received)} messages arrived in {WAIT_S:g} s")
            drain(50)
        return received, summary
    finally:
        sub.close(linger=0)


def is_subsequence(needle: Sequence[Any], haystack: Sequence[Any]) -> bool:
    """True when ``needle``'s items appear in ``haystack`` in the same order."""
    it = iter(haystack)
    return all(any(item == other for other in it) for item in needle)


def never_played(frames: Sequence[bytes]) -> bool:
    """Whether ``convlog play`` leaves a message out by design: publishers' heartbeats
    (docs/reading.md, "Replay onto a bus"); the kind is the one the recorder gives it."""
    return decode(list(frames)).kind == "publisher.heartbeat"


# --------------------------------------------------------------------------- the state machine


class RecorderUnderAttack(RuleBasedStateMachine):
    """A broker, a recorder (SUB + PULL) and the messages sent to it, by path."""

    def __init__(self) -> None:
        super().__init__()
        self.stack = contextlib.ExitStack()
        self.tmp = Path(tempfile.mkdtemp(prefix="convlog-attack-"))
        self.stack.callback(shutil.rmtree, self.tmp, True)
        self.ctx = zmq.Context()
        self.stack.callback(self.ctx.destroy, 0)
        self.bus: Bus = self.stack.enter_context(running_bus(self.tmp))
        self.directory = self.tmp / "log"
        self.pull_endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.setsockopt(zmq.SNDTIMEO, int(WAIT_S * 1000))
        self.push.connect(self.pull_endpoint)
        self.sent: dict[str, list[tuple[bytes, ...]]] = {"sub": [], "pull": []}
        self.steps = 0
        self.checked: tuple[tuple[str, int, int], ...] | None = None
        self.pub = None
        try:
            self.proc = self.bus.recorder(self.directory, "--pull", self.pull_endpoint)
            self.connect()
        except BaseException:
            self.stack.close()  # hypothesis calls teardown only on a machine it got
            raise

    def teardown(self) -> None:
        """Kill what runs and remove the directory."""
        if self.pub is not None:
            self.pub.close(0, heartbeat=False)
        self.stack.close()

    # -- sending

    def connect(self) -> None:
        """Wait until the recorder answers and its subscription reached a fresh
        publisher (the slow joiner), then prove both paths with sentinels."""
        answering(self.directory, self.proc)
        self.pub = self.bus.publisher(self.proc, context=self.ctx, heartbeat_s=None)
        self.sync()

    def send(self, path: str, frames: tuple[bytes, ...]) -> None:
        """Send one message by ``path`` exactly as given and remember it."""
        if path == "sub":
            assert self.pub is not None
            self.pub.send_frames(frames)
        else:
            self.push.send_multipart(frames)
        self.sent[path].append(frames)

    def sync(self) -> None:
        """Send a sentinel last on each path and wait until both are in the log: every
        message sent before it on that path has then been received (each path keeps
        order)."""
        tokens = []
        for path in ("sub", "pull"):
            token = f"sentinel-{uuid.uuid4().hex}".encode()
            payload = (b'{"type":"message","session_id":"' + SENTINEL_SESSION.encode() + b'","message_id":"' + token
                       + b'","sender":"attack","content":"' + token + b' x"}')
            self.send(path, (b"attack.sentinel", payload))
            tokens.append(token)
        wait_in_log(self.directory, self.proc, tokens)

    # -- rules

    @rule(batch=batches())
    def send_batch(self, batch: list[Message]) -> None:
        """Send hostile messages by PUB through the broker and by PUSH to the recorder."""
        for message in batch:
            event(f"payload: {message.label}")
            event(f"frames: {len(message.frames)}")
            self.send(message.path, message.build())
        self.sync()

    @rule(frame=deep_json(), topic=st.none() | topics(), path=st.sampled_from(["sub", "pull"]))
    def deep_payload(self, frame: Big, topic: bytes | None, path: str) -> None:
        """Send one deeply nested payload (alone, or after a topic frame)."""
        event(f"deep: {frame.shape} {frame.size if frame.size in EDGE_DEPTHS else 'other'}")
        payload = frame.build()
        self.send(path, (payload,) if topic is None else (topic, payload))
        self.sync()

    @rule(name=stamp_sequences(), path=st.sampled_from(["sub", "pull"]))
    def send_stamp_sequence(self, name: str, path: str) -> None:
        """Send one of the stamp sequences at and past the top of 64 bits."""
        event(f"stamps: {name}")
        for publisher, seq in STAMP_SEQUENCES[name]:
            body = {"convlog": {"publisher": publisher, "seq": seq}, "type": "message", "session_id": "stamped",
                    "content": f"{publisher} {seq}"}
            self.send(path, (b"stamped", json_text(body)))
        self.sync()

    @rule(body=control_bodies())
    def request_on_control_channel(self, body: ControlBody) -> None:
        """Send a request on the control channel; a REQ request must get one JSON object
        back with a boolean ``ok`` (true for a harmless op)."""
        frames = [build(f) for f in body.frames]
        event(f"control: via {body.via}, expect ok {body.expect_ok}")
        sock = self.ctx.socket(zmq.REQ if body.via == "req" else zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(control.endpoint(self.directory))
            if not frames:
                return
            sock.send_multipart(frames)
            if body.via != "req":
                return
            deadline = time.monotonic() + WAIT_S
            while not sock.poll(100):
                if self.proc.popen.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"no control reply to {frames[0][:200]!r} (recorder exit code "
                                f"{self.proc.popen.poll()}):\n{self.proc.output()[-4000:]}")
            reply = sock.recv_multipart()
        finally:
            sock.close(linger=0)
        assert len(reply) == 1, reply
        value = orjson.loads(reply[0])
        assert isinstance(value, dict) and isinstance(value.get("ok"), bool), value
        if body.expect_ok is not None:
            assert value["ok"] is body.expect_ok, value
        event(f"control: ok {value['ok']}")

    @rule()
    def status_cli(self) -> None:
        """``convlog status --json`` says the recorder is healthy (exit 0)."""
        args = ("status", "--dir", str(self.directory), "--json")
        result = run(*args)
        assert result.returncode == 0, described(args, result.returncode, result.stdout, result.stderr)
        assert orjson.loads(result.stdout)["healthy"] is True

    @rule(how=st.sampled_from(["kill -9", "kill -9", "SIGTERM", "control stop"]))
    def kill_and_restart(self, how: str) -> None:
        """Stop the recorder (kill -9, or cleanly) and start a new one on the same
        directory, like a supervisor would."""
        event(f"restart: {how}")
        assert self.pub is not None
        self.pub.close(0, heartbeat=False)
        self.pub = None
        if how == "kill -9":
            self.proc.kill9()
        elif how == "SIGTERM":
            rc = self.proc.terminate()
            assert rc == 0, f"SIGTERM: exit {rc}\n{self.proc.output()[-4000:]}"
        else:
            control.request(self.directory, "stop", timeout_s=WAIT_S)
            rc = self.proc.popen.wait(WAIT_S)
            assert rc == 0, f"control stop: exit {rc}\n{self.proc.output()[-4000:]}"
        before = scan_log(self.directory).raw
        self.proc = self.bus.recorder(self.directory, "--pull", self.pull_endpoint)
        self.connect()
        after = scan_log(self.directory).raw
        assert after.startswith(before), f"the restart rewrote the log: {rewritten(before, after)}"

    # -- the invariant

    @invariant()
    def nothing_lost_and_every_reader_works(self) -> None:
        """The recorder answers; the log holds every message sent (none under a
        ``recorder.*`` kind), gapless, nothing quarantined; play returns them byte for
        byte; verify and the readers exit 0."""
        answering(self.directory, self.proc)
        scan = scan_log(self.directory)
        assert scan.problems == [], scan.problems[:5]
        assert scan.seqs == list(range(1, len(scan.seqs) + 1)), f"seq not 1..N: {first_break(scan.seqs)}"
        assert quarantined(self.directory) == b"", quarantined(self.directory)[:2000]
        for path in ("sub", "pull"):
            assert scan.sources[path] == len(self.sent[path]), (
                f"{len(self.sent[path])} messages sent by {path}, {scan.sources[path]} records of source {path}")
        forged = sorted(kind for kind in scan.bus_kinds if kind.startswith("recorder."))
        assert forged == [], f"messages from the bus recorded as the recorder's own kinds: {forged}"

        # The readers and play are functions of the directory: when nothing in it changed
        # since they last passed (a status request, a refused control request), skip them.
        state = fingerprint(self.directory)
        if state == self.checked:
            event("readers: skipped, directory unchanged")
            return
        self.check_readers()
        self.checked = state

    def check_readers(self) -> None:
        """Play returns every message byte for byte, in order; verify, search, tail,
        show, resume, sessions and export exit 0."""
        self.steps += 1
        export_dir = self.tmp / f"export-{self.steps}"
        formats = ("markdown", "json", "jsonl", "csv")
        d = str(self.directory)
        readers = [
            ("sessions", "--json", "--dir", d), ("verify", d), ("search", "x", "--dir", d),
            ("tail", "-n", "20", "--dir", d), ("show", "--dir", d, "--", SENTINEL_SESSION),
            ("resume", "latest", "--dir", d), ("sessions", "--dir", d),
            ("export", "--all", "--format", formats[self.steps % 4], "--out", str(export_dir), "--dir", d),
        ]
        with started(readers, self.tmp) as batch:
            received, summary = play_into_socket(self.ctx, self.directory, self.tmp)
        assert batch.failures == [], "\n\n".join(batch.failures)

        expected = [frames for path in ("sub", "pull") for frames in self.sent[path] if not never_played(frames)]
        assert Counter(received) == Counter(expected), mismatch(expected, received, summary)
        for path in ("sub", "pull"):
            mine = [frames for frames in self.sent[path] if not never_played(frames)]
            assert is_subsequence(mine, received), f"play changed the order of the {path} messages"

        # show: the first and the last session the fold lists, besides the sentinels' (an
        # id holding NUL cannot be a command-line argument).
        ids = [s["id"] for s in orjson.loads(batch.outputs[0].read_bytes())]
        event(f"sessions: {min(len(ids), 10)}{'+' if len(ids) >= 10 else ''}")
        passable = [sid for sid in ids if "\x00" not in sid and sid != SENTINEL_SESSION]
        picks = sorted({passable[0], passable[-1]}) if passable else []
        with started([("show", "--dir", d, "--", sid) for sid in picks], self.tmp) as batch:
            pass
        assert batch.failures == [], "\n\n".join(batch.failures)


def first_break(seqs: Sequence[int]) -> str:
    """Where a seq list stops being 1..N."""
    for i, seq in enumerate(seqs):
        if seq != i + 1:
            return f"line {i + 1} has seq {seq}, expected {i + 1} (then {list(seqs[i:i + 5])})"
    return "ok"


def rewritten(before: bytes, after: bytes) -> str:
    """Where the log ``after`` a restart stops starting with the log ``before`` it (the
    restart must only append)."""
    old, new = before.split(b"\n"), after.split(b"\n")
    for i, line in enumerate(old[:-1]):
        if i >= len(new) or new[i] != line:
            was = HEAD.match(line)
            now = HEAD.match(new[i]) if i < len(new) else None
            return (f"line {i + 1} was seq {was and was.group(1).decode()} ({len(old) - 1 - i} lines from there on), "
                    f"is now {now.group(1).decode() + ' ' + now.group(2).decode() if now else 'gone'}")
    return "the last line changed"


def mismatch(expected: list[tuple[bytes, ...]], received: list[tuple[bytes, ...]], summary: str) -> str:
    """What play lost, added or changed."""
    lost = Counter(expected) - Counter(received)
    extra = Counter(received) - Counter(expected)
    show = lambda c: [tuple(f[:120] for f in m) for m in list(c)[:3]]  # noqa: E731
    return f"play: {summary!r}\nnot played back ({sum(lost.values())}): {show(lost)}\n" \
           f"played but never sent ({sum(extra.values())}): {show(extra)}"


@pytest.mark.slow
class TestRecorderUnderAttack(RecorderUnderAttack.TestCase):
    """Runs :class:`RecorderUnderAttack` (the checks are its invariant's docstring),
    bounded for CI: 4 runs of 8 steps, shrinking capped at 90 s (an example costs about
    20 s, so a failure comes out partly shrunk). ``CONVLOG_ATTACK_EXAMPLES`` and
    ``CONVLOG_ATTACK_SHRINK_S`` raise both for a longer hunt."""

    settings = settings(max_examples=int(os.environ.get("CONVLOG_ATTACK_EXAMPLES", "4")),
                        stateful_step_count=8, deadline=None,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                               HealthCheck.filter_too_much])

    def setUp(self) -> None:
        """Cap hypothesis' shrinking time (default 5 minutes; an example here costs
        seconds), the one part of the run not bounded by the settings."""
        from hypothesis.internal.conjecture import engine

        saved = getattr(engine, "MAX_SHRINKING_SECONDS", None)
        if saved is not None:
            engine.MAX_SHRINKING_SECONDS = int(os.environ.get("CONVLOG_ATTACK_SHRINK_S", "90"))
            self.addCleanup(setattr, engine, "MAX_SHRINKING_SECONDS", saved)


# --------------------------------------------------------------------------- the findings, one test each


def start(bus: Bus, directory: Path, *extra: str) -> Proc:
    """A recorder on ``directory``, answering."""
    proc = bus.recorder(directory, *extra)
    answering(directory, proc)
    return proc


def sentinel(bus: Bus, directory: Path, proc: Proc) -> None:
    """Publish one sentinel message through a fresh publisher and wait until it is
    recorded (the recorder is up and receiving)."""
    token = f"sentinel-{uuid.uuid4().hex}".encode()
    pub = bus.publisher(proc, heartbeat_s=None)
    try:
        pub.send_frames([b"t", b'{"type":"message","session_id":"s","content":"' + token + b'"}'])
        wait_in_log(directory, proc, [token])
    finally:
        pub.close(heartbeat=False)


def assert_exit_0(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``convlog ARGS``; fail with its output unless it exits 0."""
    result = run(*args)
    assert result.returncode == 0, described(args, result.returncode, result.stdout, result.stderr)
    return result


@pytest.mark.parametrize("stamps_sent", [
    pytest.param(((b"evil", U64_MAX), (b"evil", 1), (b"evil", U64_MAX)), id="max-restart-max"),
    pytest.param(((b"evil-a", U64_MAX), (b"evil-b", U64_MAX)), id="two-publishers-at-max"),
])
def test_stamps_at_the_top_of_64_bits_do_not_stop_the_recorder(
    bus: Bus, tmp_path: Path, stamps_sent: tuple[tuple[bytes, int], ...]
) -> None:
    """Forged stamps at 2**64-1 (a publisher back at 1 in between, or two publishers):
    the recorder keeps recording, ``status`` answers (exit 0), a kill -9 and restart on
    the same directory works and ``verify`` passes."""
    directory = tmp_path / "log"
    proc = start(bus, directory)
    pub = bus.publisher(proc, heartbeat_s=None)
    for publisher, seq in stamps_sent:
        pub.send_frames([b"t", b'{"convlog":{"publisher":"%s","seq":%d},"type":"message","session_id":"s",'
                               b'"content":"forged"}' % (publisher, seq)])
    pub.close(heartbeat=False)
    sentinel(bus, directory, proc)
    answering(directory, proc)
    assert_exit_0("status", "--dir", str(directory))
    proc.kill9()
    proc = start(bus, directory)
    sentinel(bus, directory, proc)
    assert_exit_0("status", "--dir", str(directory))
    assert_exit_0("verify", str(directory))


def test_content_nested_260_deep_breaks_no_reader(bus: Bus, tmp_path: Path) -> None:
    """One message whose content is nested 260 deep (past what orjson writes, 254, but
    readable): search, tail, show, export, resume, sessions and verify exit 0. (A plain
    message first makes the session exist however the deep one is stored.)"""
    directory = tmp_path / "log"
    proc = start(bus, directory)
    pub = bus.publisher(proc, heartbeat_s=None)
    pub.send_frames([b"t", b'{"type":"message","session_id":"deep","message_id":"plain","content":"plain x"}'])
    pub.send_frames([b"t", Big("content", 260).build()])
    pub.close(heartbeat=False)
    sentinel(bus, directory, proc)
    d = str(directory)
    readers = [("search", "x", "--dir", d), ("tail", "-n", "20", "--dir", d), ("show", "deep", "--dir", d),
               ("export", "--all", "--out", str(tmp_path / "export"), "--dir", d),
               ("resume", "latest", "--dir", d), ("sessions", "--dir", d), ("verify", d)]
    with started(readers, tmp_path) as batch:
        pass
    assert batch.failures == [], "\n\n".join(batch.failures)


def test_payload_nested_1024_deep_costs_no_record_across_kill9(bus: Bus, tmp_path: Path) -> None:
    """A payload nested exactly 1024 deep (what orjson still reads; inside a record it is
    1025), then 500 valid messages, then kill -9 and a restart: all 500 are still in the
    log, nothing was quarantined, seq never repeats and ``verify`` passes."""
    directory = tmp_path / "log"
    proc = start(bus, directory)
    pub = bus.publisher(proc, heartbeat_s=None)
    pub.send_frames([b"t", Big("array", 1024).build()])
    for i in range(500):
        pub.send_frames([b"t", b'{"type":"message","session_id":"s","message_id":"m%d","content":"valid %d"}'
                         % (i, i)])
    pub.close(heartbeat=False)
    sentinel(bus, directory, proc)
    proc.kill9()
    before = scan_log(directory).raw
    proc = start(bus, directory)
    sentinel(bus, directory, proc)
    scan = scan_log(directory)
    problems = []
    if not scan.raw.startswith(before):
        problems.append(f"the restart rewrote the log: {rewritten(before, scan.raw)}")
    missing = [i for i in range(500) if b'"message_id":"m%d"' % i not in scan.raw]
    if missing:
        problems.append(f"{len(missing)} of the 500 valid messages are no longer in the log")
    moved = quarantined(directory)
    if moved:
        problems.append(f"{len(moved.splitlines())} quarantine entries: {moved[:300]!r}...")
    if scan.seqs != list(range(1, len(scan.seqs) + 1)):
        problems.append(f"seq not 1..N: {first_break(scan.seqs)}")
    verify = run("verify", str(directory))
    if verify.returncode != 0:
        problems.append(described(("verify",), verify.returncode, verify.stdout, verify.stderr))
    assert problems == [], "\n".join(problems)


def test_control_append_of_data_nested_300_deep_gets_a_reply(bus: Bus, tmp_path: Path) -> None:
    """A control ``append`` whose data is nested 300 deep (more than orjson writes) is
    answered (accepted or refused), the recorder keeps running and recording, seq stays
    gapless and ``verify`` passes."""
    directory = tmp_path / "log"
    proc = start(bus, directory)
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(control.endpoint(directory))
        sock.send(Big("append", 300).build())
        deadline = time.monotonic() + WAIT_S
        while not sock.poll(100):
            assert proc.popen.poll() is None and time.monotonic() < deadline, (
                f"no reply; recorder exit code {proc.popen.poll()}:\n{proc.output()[-4000:]}")
        reply = orjson.loads(sock.recv())
    finally:
        sock.close(linger=0)
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
    sentinel(bus, directory, proc)
    answering(directory, proc)
    scan = scan_log(directory)
    assert scan.problems == [] and scan.seqs == list(range(1, len(scan.seqs) + 1)), (
        scan.problems[:3], first_break(scan.seqs))
    assert_exit_0("verify", str(directory))
