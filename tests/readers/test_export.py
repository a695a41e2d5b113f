"""``convlog export`` on real recordings: the Shearwater file and the demo's ShareGPT
traffic recorded through a real broker and recorder, exported in every format, and the
JSONL export re-recorded through a broker into a fresh log whose fold must match."""

from __future__ import annotations

import csv
import html
import io
import os
import re
import string
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Bus, convlog_cmd, records, running_bus, shearwater_file, wait_for_records
from convlog.cli.demo import free_port
from convlog.core.document import SESSION_KINDS, ExportDocumentError, SessionExport, document_events
from convlog.core.fold import State, fold_all, message_id
from convlog.core.ingest import Ingest
from convlog.core.record import make_line, parse_line
from convlog.core.view import EMPTY
from convlog.readers.export import (
    CSV_COLUMNS,
    MAX_STEM,
    ExportRequest,
    build_exports,
    export_ids,
    plan_trees,
    render,
    safe_file_name,
)
from convlog.store.clock import Clock
from convlog.store.replay import load


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run the convlog CLI in a subprocess; stdout and stderr captured."""
    proc = subprocess.run(convlog_cmd(*args), capture_output=True, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"convlog {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
    return proc


@pytest.fixture(scope="module")
def module_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    """One reference broker for the module's recordings."""
    with running_bus(tmp_path_factory.mktemp("bus")) as bus:
        yield bus


def record_file(bus: Bus, directory: Path, file: Path, expected: int, *publish_args: str) -> None:
    """Record ``file`` published with ``convlog publish`` through ``bus`` into ``directory``
    (a fresh recorder, stopped cleanly once ``expected`` bus records are in the log)."""
    rec = bus.recorder(directory)
    bus.publisher(rec).close(0)  # returns once the recorder's subscription reached the broker
    run("publish", str(file), "--endpoint", bus.xsub, *publish_args)
    wait_for_records(directory, expected)
    assert rec.terminate() == 0, rec.output()


@pytest.fixture(scope="module")
def shearwater_log(module_bus: Bus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """crash_recovery.jsonl published as the bus payloads it came from, recorded, then
    session commands on it (a fork, a crystal, a rewind) written as control records."""
    path = shearwater_file("crash_recovery.jsonl")
    lines = sum(1 for line in path.read_bytes().splitlines() if line.strip())
    directory = tmp_path_factory.mktemp("shearwater") / "log"
    record_file(module_bus, directory, path, lines)
    d = str(directory)
    run("fork", "handshake_test", "--at", "3", "--name", "alt", "--dir", d)
    run("crystal", "handshake_test", "--summary", "Claude and Gemini shook hands.", "--upto", "4", "--dir", d)
    run("checkpoint", "handshake_test", "five", "--at", "5", "--dir", d)
    run("rewind", "handshake_test", "--to", "6", "--dir", d)
    return directory


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``convlog demo``: ShareGPT conversations, a checkpoint and a rewind to it, a
    crystal, a fork, a streamed reply and usage, recorded through a real broker."""
    directory = tmp_path_factory.mktemp("demo") / "log"
    run("demo", "--dir", str(directory), "--conversations", "5")
    return directory


# --------------------------------------------------------------------------- the visible branch


def test_visible_export_matches_show(demo_log: Path) -> None:
    """The JSON export of every session holds exactly what ``Replay.messages`` shows,
    with the crystals, checkpoints and usage of the fold."""
    out = run("export", "--all", "--format", "json", "--dir", str(demo_log)).stdout
    doc = orjson.loads(out)
    assert doc["format"] == "convlog.export" and doc["with_history"] is False
    replay = load(demo_log)
    assert [s["id"] for s in doc["sessions"]] != []
    assert {s["id"] for s in doc["sessions"]} == {s.id for s in replay.state.session_list()}
    for session in doc["sessions"]:
        shown = replay.messages(session["id"])
        assert [(m["message_id"], m["sender"], m["role"], m["text"], m["seq"], m["streamed"]) for m in
                session["messages"]] == [(m.message_id, m.sender, m.role, m.text, m.seq, m.streamed) for m in shown]
        info = replay.state.sessions[session["id"]]
        assert session["usage"] == info.usage.to_dict()
        assert [c["upto"] for c in session["crystals"]] == [c.upto for c in info.crystals]
        assert (session["parent"], session["fork_at"], session["branch"]) == (info.parent, info.fork_at, info.branch)
    rewound = next(s for s in doc["sessions"] if s["checkpoints"])
    assert rewound["checkpoints"][0]["name"] == "before-tangent"
    assert not any("Tangent" in m["text"] for m in rewound["messages"])
    assert rewound["crystals"][0]["summary"].startswith("Summary so far") and rewound["crystals"][0]["current"]


def test_markdown_reads_as_a_transcript(shearwater_log: Path) -> None:
    """The Markdown export of a Shearwater session: a title, the session's metadata, one
    heading per message naming the speaker, role and time, the message text as the agents
    wrote it (not the JSON envelope), the crystal quoted after the message it covers."""
    text = run("export", "handshake_test", "--dir", str(shearwater_log)).stdout.decode()
    replay = load(shearwater_log)
    shown = replay.messages("handshake_test")
    assert text.startswith("# handshake_test\n")
    assert "- **Session:** `handshake_test`" in text and "- **Branch:** main" in text
    assert "- **Participants:** claude_code, gemini_cli" in text
    # Both times: when the agent wrote it (the legacy Timestamp) and when it was recorded.
    time = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    headings = re.findall(rf"^### (\d+)\. (\S+) \((\w+)\) · sent ({time}) · received ({time}) UTC", text, re.M)
    assert [(int(n), who, role, sent) for n, who, role, sent, _ in headings] == [
        (m.index, m.sender, m.role, m.sent[:19].replace("T", " ")) for m in shown
    ]
    assert {role for _, _, role, _, _ in headings} == {"Agent"}
    position = 0
    for m in shown:  # every body, in order, as plain text (HTML escaped: < > & as entities)
        body = html.escape(m.text, quote=False)
        found = text.find(body, position)
        assert found > position, m.text[:60]
        position = found + len(body)
        assert not m.text.startswith("{")
    crystal = text.index("> **Crystal** (summary of messages 1–4")
    assert text.index("### 4. ") < crystal < text.index("### 5. ")
    assert "> Claude and Gemini shook hands." in text
    assert "`five` at 5" in text


def test_markdown_history_shows_rewound_messages_and_nested_fork(shearwater_log: Path) -> None:
    """With history the Markdown lists the rewound messages (flagged), the rewind, and the
    fork nested one level down where it was made."""
    text = run("export", "handshake_test", "--with-history", "--dir", str(shearwater_log)).stdout.decode()
    replay = load(shearwater_log)
    info = replay.state.sessions["handshake_test"]
    hidden = info.rewinds[-1].dropped
    assert len(hidden) == len(text.split("rewound: not in the visible branch")) - 1 > 0
    assert "rewound to 6 messages" in text
    fork_line = text.index("forked `handshake_test/alt` after message 3")
    child = text.index("\n### handshake_test/alt\n", fork_line)
    assert text.index("### 3. ") < fork_line < child < text.index("\n#### History\n", child)
    assert child < text.index("rewound to 6 messages")
    assert "- **Branch:** alt, forked from `handshake_test` after message 3" in text


def test_json_history_nests_the_fork(shearwater_log: Path) -> None:
    """With history the JSON document holds the session's entries in log order: every
    message ever appended (rewound ones ``visible: false``), the fork with the child's
    own document nested at the fork record, the crystal, checkpoint and rewind."""
    doc = orjson.loads(run("export", "handshake_test", "--with-history", "--format", "json", "--dir",
                           str(shearwater_log)).stdout)
    (session,) = doc["sessions"]
    replay = load(shearwater_log)
    info = replay.state.sessions["handshake_test"]
    history = session["history"]
    assert [e["seq"] for e in history] == sorted(e["seq"] for e in history)
    appended = [e["message"] for e in history if e["event"] == "message"]
    assert [m["seq"] for m in appended if m["visible"]] == info.visible.seqs.tolist()
    assert sorted(m["seq"] for m in appended if not m["visible"]) == sorted(info.rewinds[-1].dropped)
    (fork,) = [e for e in history if e["event"] == "fork"]
    child = replay.state.sessions["handshake_test/alt"]
    assert fork["seq"] == child.first_seq and fork["at"] == 3 and fork["branch"] == "alt"
    assert fork["session"]["id"] == "handshake_test/alt" and fork["session"]["parent"] == "handshake_test"
    assert [m["message_id"] for m in fork["session"]["messages"]] == [m["message_id"] for m in appended[:3]]
    (rewind,) = [e for e in history if e["event"] == "rewind"]
    assert (rewind["from_count"], rewind["to_count"]) == (10, 6)
    assert rewind["dropped"] == [m["message_id"] for m in appended if not m["visible"]]
    assert [e["event"] for e in history if e["event"] in ("crystal", "checkpoint", "rewind")] == [
        "crystal", "checkpoint", "rewind"]


def test_csv_parses_back(shearwater_log: Path, tmp_path: Path) -> None:
    """CSV: a header row, one row per message, newlines inside cells quoted; parsed back
    with the csv module it gives the texts, speakers and visibility of the fold."""
    out = tmp_path / "all.csv"
    run("export", "handshake_test", "--format", "csv", "--with-history", "--out", str(out), "--dir",
        str(shearwater_log))
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    body = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]
    replay = load(shearwater_log)
    shown = replay.messages("handshake_test")
    mine = [r for r in body if r["session"] == "handshake_test"]
    visible = [r for r in mine if r["visible"] == "true"]
    assert [(r["message_id"], r["speaker"], r["role"], r["text"]) for r in visible] == [
        (m.message_id, m.sender, m.role, m.text) for m in shown
    ]
    hidden = [int(r["seq"]) for r in mine if r["visible"] == "false"]
    assert sorted(hidden) == sorted(replay.state.sessions["handshake_test"].rewinds[-1].dropped)
    assert any("\n" in r["text"] for r in mine), "multi-line messages survive as one cell"
    fork = [r for r in body if r["session"] == "handshake_test/alt"]
    assert len(fork) == 3 and all(r["visible"] == "true" for r in fork)
    assert b"\r\n" in out.read_bytes()[:2000]


def test_csv_to_stdout_for_several_sessions(demo_log: Path) -> None:
    """Several sessions to stdout in CSV: one header, then every session's rows."""
    out = run("export", "--all", "--format", "csv", "--dir", str(demo_log)).stdout.decode("utf-8")
    rows = list(csv.reader(io.StringIO(out, newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS and rows.count(list(CSV_COLUMNS)) == 1
    replay = load(demo_log)
    assert len(rows) - 1 == sum(len(s.visible) for s in replay.state.session_list())


# --------------------------------------------------------------------------- round trip


def folded_view(state: State, by_seq: dict[int, dict[str, Any]], exports: dict[str, SessionExport],
                sid: str, history: bool) -> dict[str, Any]:
    """What must survive an export and re-recording of one session, without seqs."""
    session = state.sessions[sid]
    export = exports[sid]

    def ids(seqs: Any) -> list[str]:
        return [message_id(by_seq[seq]) for seq in seqs]

    view: dict[str, Any] = {
        "messages": [(m.message_id, m.sender, m.role, m.text, m.streamed, m.complete) for m in export.messages],
        "visible": ids(session.visible.seqs),
        "title": session.title,
        "deleted": session.deleted,
        "usage": session.usage.to_dict(),
    }
    if history:
        view.update(
            parent=session.parent, fork_at=session.fork_at, branch=session.branch,
            rewinds=[(r.from_count, r.to_count, ids(r.dropped)) for r in session.rewinds],
            checkpoints={name: ids(cp.refs.seqs) for name, cp in session.checkpoints.items()},
            crystals=[(c.upto, c.summary, c.current) for c in export.crystals],
            copies=dict(session.copies), duplicates=session.duplicates, participants=session.participants,
            copies_shown=[m.copies for m in export.messages],
        )
    else:
        view.update(
            crystals=[(c.upto, c.summary) for c in export.crystals if c.current],
            checkpoints={c.name: c.at for c in export.checkpoints if c.current},
        )
    return view


def exports_of(records: list[dict[str, Any]], ids: list[str], with_history: bool) -> dict[str, SessionExport]:
    """Build exports straight from records (the pure path that ``export`` takes after
    reading a tree from the log)."""
    state = fold_all(records)
    trees = plan_trees(state, ids)
    for tree in trees:
        tree.records = [r for r in records if r.get("session") in tree.members and r["kind"] in SESSION_KINDS]
    out: dict[str, SessionExport] = {}
    for tree in trees:
        for export in build_exports(tree, ExportRequest(with_history=with_history, events=True)):
            for member in export.tree():
                out.setdefault(member.id, member)
    return out


def views(directory: Path, sids: list[str], history: bool) -> dict[str, dict[str, Any]]:
    """The folded view of each session of a log directory."""
    found = records(directory)
    by_seq = {r["seq"]: r for r in found}
    state = load(directory).state
    exports = exports_of(found, sids, history)
    return {sid: folded_view(state, by_seq, exports, sid, history) for sid in sids}


@pytest.mark.parametrize("history", [False, True], ids=["visible", "history"])
def test_jsonl_round_trip_through_a_recorder(
    module_bus: Bus, demo_log: Path, shearwater_log: Path, tmp_path: Path, history: bool
) -> None:
    """Every session exported as JSONL, published with ``convlog publish --format
    native`` through a broker into a fresh recorder: the new log folds to the same
    sessions (message ids, senders, roles, text, streams, crystals, checkpoints, usage;
    with history also rewinds, copies and forks)."""
    for name, source in (("demo", demo_log), ("shearwater", shearwater_log)):
        flags = ["--with-history"] if history else []
        jsonl = tmp_path / f"{name}.jsonl"
        run("export", "--all", "--format", "jsonl", "--out", str(tmp_path / name), "--dir", str(source), *flags)
        files = sorted((tmp_path / name).iterdir())
        jsonl.write_bytes(b"".join(path.read_bytes() for path in files))
        events = [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]
        assert events and all(e["type"] in SESSION_KINDS and isinstance(e["session_id"], str) for e in events)
        again = tmp_path / f"{name}-again"
        record_file(module_bus, again, jsonl, len(events), "--format", "native")
        state = load(source).state
        sids = [s.id for s in state.session_list()]
        if history:
            assert any(state.sessions[s].parent for s in sids) and any(state.sessions[s].rewinds for s in sids)
        assert views(again, sids, history) == views(source, sids, history), name


# --------------------------------------------------------------------------- the law, on generated logs

SIDS = ["s1", "s2", "s1/f", "s1/f/g", "s2/f"]
MIDS = ["m1", "m2", "m3", "m4", "m5", "m6"]
texts = st.text(alphabet=string.ascii_letters + " \n{}\"é", max_size=12)
counts = st.none() | st.integers(min_value=0, max_value=6)


def _event(kind: str, sid: str, **params: Any) -> dict[str, Any]:
    return {"type": kind, "session_id": sid, **{k: v for k, v in params.items() if v is not None}}


events = st.one_of(
    st.builds(lambda sid, mid, sender, role, text: _event("message", sid, message_id=mid, sender=sender, role=role,
                                                          content=text),
              st.sampled_from(SIDS), st.none() | st.sampled_from(MIDS), st.none() | st.sampled_from(["ann", "bot"]),
              st.none() | st.sampled_from(["user", "assistant", ""]), texts),
    st.builds(lambda sid, mid, text: _event("message", sid, message_id=mid, content={"message": text, "n": 1}),
              st.sampled_from(SIDS), st.sampled_from(MIDS), texts),
    st.builds(lambda sid, mid, text: _event("message.delta", sid, message_id=mid, sender="bot", delta=text),
              st.sampled_from(SIDS), st.none() | st.sampled_from(MIDS), texts),
    st.builds(lambda sid, mid, text: _event("message.end", sid, message_id=mid, content=text),
              st.sampled_from(SIDS), st.sampled_from(MIDS), st.none() | texts),
    st.builds(lambda sid, at, name: _event("session.fork", sid, parent=sid.rsplit("/", 1)[0], at=at, name=name),
              st.sampled_from([s for s in SIDS if "/" in s]), counts, st.none() | st.sampled_from(["x", "y"])),
    st.builds(lambda sid, to: _event("session.rewind", sid, to=to), st.sampled_from(SIDS), counts),
    st.builds(lambda sid, name: _event("session.rewind", sid, checkpoint=name), st.sampled_from(SIDS),
              st.sampled_from(["c1", "c2"])),
    st.builds(lambda sid, name, at: _event("session.checkpoint", sid, name=name, at=at), st.sampled_from(SIDS),
              st.sampled_from(["c1", "c2"]), counts),
    st.builds(lambda sid, text, upto: _event("session.crystal", sid, summary=text, upto=upto),
              st.sampled_from(SIDS), texts, counts),
    st.builds(lambda sid: _event("session.delete", sid), st.sampled_from(SIDS)),
    st.builds(lambda sid, title: _event("session.start", sid, title=title), st.sampled_from(SIDS),
              st.none() | texts),
    st.builds(lambda sid, i, o, cost, model: _event("llm.request", sid, input_tokens=i, output_tokens=o,
                                                    cost_usd=cost, model=model),
              st.sampled_from(SIDS), st.integers(0, 5000), st.integers(-1, 5000),
              st.floats(min_value=0, max_value=1, allow_nan=False), st.none() | st.sampled_from(["m-a", "m-b"])),
)


def ingest(payloads: list[dict[str, Any]], control: set[int] | None = None) -> list[dict[str, Any]]:
    """Records as the recorder writes them for these bus payloads (``Ingest.line``, the
    recorder's own path); payload numbers in ``control`` are written as session commands
    (source ``control``, the parameters as data) when their kind allows."""
    ingest_ = Ingest(verify=False)
    clock = Clock()
    out = []
    for seq, payload in enumerate(payloads, 1):
        ts = clock.format_ns(1_700_000_000_000_000_000 + seq * 1_000_000)
        if control and seq in control and payload["type"].startswith("session."):
            params = {k: v for k, v in payload.items() if k not in ("type", "session_id")}
            line = make_line(seq, ts, payload["type"], "control", None, payload["session_id"], params)
        else:
            line = ingest_.line([payload["session_id"].encode(), orjson.dumps(payload)], seq, ts, "sub")
        out.append(parse_line(line))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, max_size=40), st.sets(st.integers(1, 40), max_size=10), st.booleans())
def test_export_then_record_gives_the_same_fold(payloads: list[dict[str, Any]], control: set[int],
                                                history: bool) -> None:
    """Law: re-recording the JSONL export (every event through the recorder's own
    ingest path) folds to the same sessions as the log it came from, whatever mix of
    messages, streams, copies, forks, rewinds, checkpoints, crystals, deletes and
    requests (valid or refused) the log holds."""
    original = ingest(payloads, control)
    state = fold_all(original)
    ids = export_ids(state, history)
    exports = exports_of(original, ids, history)
    events_out = [e for sid in ids for e in exports[sid].events or ()]
    again = ingest([orjson.loads(orjson.dumps(e)) for e in events_out])
    state2 = fold_all(again)
    sids = [s.id for s in state.session_list()]
    by_seq, by_seq2 = {r["seq"]: r for r in original}, {r["seq"]: r for r in again}
    exports2 = exports_of(again, [s for s in sids if s in state2.sessions], history)
    if not history:  # flat exports: every live session stands alone
        exports = exports_of(original, sids, False)
    for sid in sids:
        assert sid in state2.sessions
        assert folded_view(state2, by_seq2, exports2, sid, history) == folded_view(state, by_seq, exports, sid,
                                                                                    history), sid


# --------------------------------------------------------------------------- file names and writing

SAFE_NAME = re.compile(r"[A-Za-z0-9._%~-]+")


@given(st.lists(st.text(max_size=300), unique=True, min_size=1, max_size=20))
def test_file_names_are_safe_and_unique(ids: list[str]) -> None:
    """Any session ids map to distinct names of safe characters that are never hidden,
    ``.``, ``..`` or empty, and fit a 255-byte file name with a suffix."""
    names = [safe_file_name(sid, ".jsonl") for sid in ids]
    assert len(set(names)) == len(names)
    for name in names:
        stem = name.removesuffix(".jsonl")
        assert SAFE_NAME.fullmatch(stem) and not stem.startswith((".", "-")) and stem not in (".", "..")
        assert len(name.encode()) <= MAX_STEM + len(".jsonl") <= 255


@given(st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=MAX_STEM))
def test_plain_ids_keep_their_name(sid: str) -> None:
    """An id made of safe characters (not starting with ``.`` or ``-``) is its own name;
    others are percent-encoded and decode back to the id."""
    name = safe_file_name(sid)
    if not sid.startswith((".", "-")):
        assert name == sid
    else:
        assert name[3:] == sid[1:] and bytes.fromhex(name[1:3]).decode() == sid[0]


def test_unsafe_ids_become_files_in_a_directory(tmp_path: Path) -> None:
    """Session ids with slashes, dots, spaces, non-ASCII and very long ones are written
    as one file each in the --out directory, atomically (no temporary files left)."""
    weird = ["../etc/passwd", ".", "..", "", "a/b", "naïve chat", "x" * 400, "x" * 399 + "y", "-rf", "%41"]
    payloads = []
    for n, sid in enumerate(weird):
        payloads.append({"type": "message", "session_id": sid, "message_id": f"m{n}", "sender": "ann",
                         "content": f"hello {n}"})
    directory = tmp_path / "log"
    from convlog.store.segment import ensure_layout
    from convlog.store.writer import SegmentWriter

    ensure_layout(directory)
    writer = SegmentWriter(directory, next_seq=1)
    for record in ingest(payloads):
        raw = orjson.dumps(record) + b"\n"
        writer.write(raw, record["seq"])
    writer.close()
    out = tmp_path / "out"
    result = run("export", "--all", "--format", "json", "--out", str(out), "--dir", str(directory))
    assert b"exported 10 sessions" in result.stderr
    files = sorted(os.listdir(out))
    assert len(files) == len(weird) and not [f for f in files if f.startswith(".")]
    assert (tmp_path / "etc").exists() is False
    back = {}
    for name in files:
        doc = orjson.loads((out / name).read_bytes())
        (session,) = doc["sessions"]
        back[session["id"]] = session["messages"][0]["text"]
        assert name == safe_file_name(session["id"], ".json")
    assert back == {sid: f"hello {n}" for n, sid in enumerate(weird)}


def test_out_file_and_errors(demo_log: Path, tmp_path: Path) -> None:
    """One session with --out FILE writes that file; an unknown session, SESSION with
    --all, neither, and several sessions into a file all fail with one line, no traceback."""
    target = tmp_path / "deep" / "one.md"
    replay = load(demo_log)
    first = replay.state.session_list()[0].id
    run("export", first[:14], "--out", str(target), "--dir", str(demo_log))
    assert target.read_text().startswith(f"# {first}\n")
    for args, words in (
        (["nope"], "no session 'nope'"),
        (["--all", first], "or --all"),
        ([], "or --all"),
        (["--all", "--out", str(target)], "is a file"),
    ):
        proc = run("export", *args, "--dir", str(demo_log), check=False)
        err = proc.stderr.decode()
        assert proc.returncode != 0 and words in err and "Traceback" not in err, err
    assert run("export", "--all", "--dir", str(tmp_path / "none"), check=False).returncode == 1
    second = replay.state.session_list()[1].id
    both = orjson.loads(run("export", second, first, "--format", "json", "--out", "-", "--dir",
                            str(demo_log)).stdout)
    assert [s["id"] for s in both["sessions"]] == [second, first]  # the order asked
    into = tmp_path / "dir"
    run("export", first, "--format", "csv", "--out", f"{into}/", "--dir", str(demo_log))
    assert os.listdir(into) == [safe_file_name(first, ".csv")]


def test_as_of_exports_the_past(demo_log: Path) -> None:
    """--as-of SEQ exports the session as it was then: before the rewind, the tangent
    messages were visible."""
    replay = load(demo_log)
    sid = next(s.id for s in replay.state.session_list() if s.rewinds)
    rewind_seq = replay.state.sessions[sid].rewinds[0].seq
    now = orjson.loads(run("export", sid, "--format", "json", "--dir", str(demo_log)).stdout)
    then = orjson.loads(run("export", sid, "--format", "json", "--as-of", str(rewind_seq - 1), "--dir",
                            str(demo_log)).stdout)
    assert then["as_of_seq"] == rewind_seq - 1
    assert len(then["sessions"][0]["messages"]) == len(now["sessions"][0]["messages"]) + 2
    assert "Tangent" in then["sessions"][0]["messages"][-2]["text"]


def test_markdown_sections_for_several_sessions(demo_log: Path) -> None:
    """Several sessions to stdout in Markdown: one section each, separated by a rule."""
    out = run("export", "--all", "--dir", str(demo_log)).stdout.decode()
    sessions = load(demo_log).state.session_list()
    assert out.count("\n---\n") == len(sessions) - 1
    assert len(re.findall(r"^- \*\*Session:\*\* ", out, re.M)) == len(sessions)


# --------------------------------------------------------------------------- the JSON document, re-recorded


def json_doc(records_: list[dict[str, Any]], ids: list[str], with_history: bool) -> dict[str, Any]:
    """The JSON export document of ``ids`` built from records the way ``convlog export
    --format json`` builds it (trees planned, built, rendered in the order asked), parsed."""
    state = fold_all(records_)
    built: dict[str, SessionExport] = {}
    for tree in plan_trees(state, ids):
        tree.records = [r for r in records_ if r.get("session") in tree.members and r["kind"] in SESSION_KINDS]
        for item in build_exports(tree, ExportRequest(with_history=with_history)):
            built[item.id] = item
    header = {"log": "mem", "as_of_seq": state.last_seq, "with_history": with_history, "exported_at": None}
    return orjson.loads(b"".join(render([built[sid] for sid in ids], "json", header)))


def lineage(state: State, sid: str) -> list[str]:
    """``sid`` and its ancestors, nearest first."""
    chain = [sid]
    while (parent := state.sessions[chain[-1]].parent) is not None and parent not in chain:
        chain.append(parent)
    return chain


def request_counts(directory_or_records: Path | list[dict[str, Any]], sid: str) -> list[tuple[Any, ...]]:
    """The ``llm.request`` records of a session as the fold counts them, in order:
    (model, input tokens, output tokens, cost)."""
    found = records(directory_or_records) if isinstance(directory_or_records, Path) else directory_or_records
    state = fold_all(found)
    counted = []
    for record in found:
        if record["kind"] == "llm.request" and record.get("session") == sid and \
                not any(e.seq == record["seq"] for e in state.errors):
            usage = fold_all([record]).usage
            counted.append((next(iter(usage.models), None), usage.input_tokens, usage.output_tokens, usage.cost_usd))
    return counted


@pytest.mark.parametrize("history", [False, True], ids=["visible", "history"])
def test_json_round_trip_through_a_recorder(
    module_bus: Bus, demo_log: Path, shearwater_log: Path, tmp_path: Path, history: bool
) -> None:
    """Every session exported as one JSON document, published with ``convlog publish``
    (format detected) through a broker into a fresh recorder: the new log folds to the
    same sessions as the JSONL round trip checks (message ids, senders, roles, text,
    streams, crystals, checkpoints, usage; with history also forks, rewinds, copies and
    participants), and each session's requests are counted the same, in order."""
    for name, source in (("demo", demo_log), ("shearwater", shearwater_log)):
        flags = ["--with-history"] if history else []
        doc_file = tmp_path / f"{name}.json"  # one document for all sessions: from stdout
        doc_file.write_bytes(run("export", "--all", "--format", "json", "--dir", str(source), *flags).stdout)
        doc = orjson.loads(doc_file.read_bytes())
        assert doc["with_history"] is history
        events_out = document_events(doc)
        assert events_out and all(e["type"] in SESSION_KINDS and isinstance(e["session_id"], str)
                                  for e in events_out)
        again = tmp_path / f"{name}-again"
        record_file(module_bus, again, doc_file, len(events_out))
        state = load(source).state
        sids = [s.id for s in state.session_list()]
        kinds = {e["type"] for e in events_out}
        if history:
            assert any(state.sessions[s].parent for s in sids) and any(state.sessions[s].rewinds for s in sids)
            assert {"session.fork", "session.rewind", "session.checkpoint", "session.crystal"} <= kinds
        else:
            assert "session.fork" not in kinds and any("origin" in e for e in events_out)
        assert views(again, sids, history) == views(source, sids, history), name
        for sid in sids:
            assert request_counts(again, sid) == request_counts(source, sid), (name, sid)
        if name == "demo":
            assert any(request_counts(source, sid) for sid in sids)
            assert any(m["streamed"] for s in doc["sessions"] for m in s["messages"])


def test_a_fork_exported_alone_with_history_brings_its_ancestors(
    module_bus: Bus, shearwater_log: Path, tmp_path: Path
) -> None:
    """A fork exported on its own with --with-history carries its parent's history up to
    the fork (``ancestors``); re-recorded with ``--format export-json`` it is the same
    fork: parent, fork point, branch and inherited messages."""
    doc_file = tmp_path / "alt.json"
    run("export", "handshake_test/alt", "--with-history", "--format", "json", "--out", str(doc_file), "--dir",
        str(shearwater_log))
    doc = orjson.loads(doc_file.read_bytes())
    (session,) = doc["sessions"]
    (ancestor,) = session["ancestors"]
    assert ancestor["id"] == "handshake_test"
    assert [e["event"] for e in ancestor["history"]].count("fork") == 1
    assert ancestor["history"][-1]["event"] == "fork" and ancestor["history"][-1]["child"] == "handshake_test/alt"
    again = tmp_path / "again"
    record_file(module_bus, again, doc_file, len(document_events(doc)), "--format", "export-json")
    assert views(again, ["handshake_test/alt"], True) == views(shearwater_log, ["handshake_test/alt"], True)
    state = load(again).state
    assert state.sessions["handshake_test/alt"].fork_at == 3


def test_malformed_json_document_is_one_line_error(tmp_path: Path, demo_log: Path) -> None:
    """A truncated export, a field of the wrong type, an unknown format and an export
    that predates per-request usage: ``publish`` exits 1 with one line naming the file
    and the problem, before connecting to anything."""
    good = run("export", "--all", "--format", "json", "--dir", str(demo_log)).stdout
    doc = orjson.loads(good)
    wrong_type = {**doc, "sessions": [{**doc["sessions"][0], "messages": [{"message_id": 5}]}]}
    no_requests = {**doc, "sessions": [{k: v for k, v in s.items() if k != "requests"} for s in doc["sessions"]]}
    cases = [
        (good[: len(good) // 2], ["auto", "export-json"], "not a JSON document"),
        (orjson.dumps(wrong_type), ["auto", "export-json"], "document.sessions[0].messages[0].message_id: expected "
                                                            "a string, found an integer"),
        (orjson.dumps({"format": "other", "sessions": []}), ["export-json"], "not a convlog export document"),
        (orjson.dumps(no_requests), ["auto"], "'requests' is missing"),
        (b"[1, 2]", ["export-json"], "the top level is a list"),
    ]
    for n, (data, formats, words) in enumerate(cases):
        bad = tmp_path / f"bad{n}.json"
        bad.write_bytes(data)
        for fmt in formats:
            # No broker there: checked after waiting for a subscriber, it would fail on that instead.
            proc = run("publish", str(bad), "--format", fmt, "--endpoint", f"tcp://127.0.0.1:{free_port()}",
                       check=False)
            err = proc.stderr.decode()
            assert proc.returncode == 1, err
            assert err.startswith(f"convlog: {bad}: ") and words in err and err.count("\n") == 1, err


requests_aliased = st.builds(
    lambda sid, i, o, cost: _event("llm.request", sid, usage={"prompt_tokens": i, "completion_tokens": o,
                                                               "cost_usd": cost, "model": "m-c"}),
    st.sampled_from(SIDS), st.integers(0, 5000), st.integers(0, 5000),
    st.floats(min_value=0, max_value=1, allow_nan=False) | st.integers(0, 3),
)


#: A valid start for generated logs (a random-length prefix of it is used), so that the
#: random events after it often meet existing sessions, streams, checkpoints and forks.
PREAMBLE = [
    _event("llm.request", "s3", input_tokens=1, model="m-a"),  # a session created by a request alone
    _event("session.fork", "s3/f", parent="s3"),
    _event("message", "s1", message_id="m1", sender="ann", role="user", content="hello"),
    _event("message.delta", "s1", message_id="m2", sender="bot", delta="stre"),
    _event("message.end", "s1", message_id="m2"),
    _event("message", "s2", message_id="m1", sender="ann", content="other"),
    _event("session.checkpoint", "s1", name="c1", at=1),
    _event("session.fork", "s1/h", parent="s1", at=1),  # a sibling of s1/f
    _event("session.fork", "s1/f", parent="s1", at=2, name="x"),
    _event("message", "s1", message_id="m3", sender="bot", content="more"),
    _event("session.rewind", "s1", checkpoint="c1"),
    _event("message.end", "s1", message_id="m2"),  # a copy of a rewound, complete stream
    _event("message", "s1/f", message_id="m4", sender="ann", content="branch"),
    _event("session.fork", "s1/f/g", parent="s1/f", at=1),
    _event("llm.request", "s1/f", usage={"prompt_tokens": 7, "completion_tokens": 2}, cost_usd=0.25),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(PREAMBLE)), st.lists(events | requests_aliased, max_size=30),
       st.sets(st.integers(1, 40), max_size=10), st.booleans(),
       st.none() | st.lists(st.integers(0, 20), min_size=1, max_size=3))
def test_json_export_then_record_gives_the_same_fold(preamble: int, payloads: list[dict[str, Any]],
                                                     control: set[int], history: bool, picks: list[int] | None) -> None:
    """Law: re-recording the events of a JSON export document folds to the same sessions
    as the log it came from: every live session (``--all``), or a few sessions exported
    on their own (forks with their ancestors, with history), whatever mix of messages,
    streams, copies, forks, rewinds, checkpoints, crystals, deletes and requests (fields
    aliased or nested, valid or refused) the log holds. Requests are counted the same,
    one by one, in order."""
    original = ingest(PREAMBLE[:preamble] + payloads, control)
    state = fold_all(original)
    live = [s.id for s in state.session_list()]
    pool = live + [sid for sid in live if state.sessions[sid].parent is not None] * 2  # forks picked more often
    ids = list(dict.fromkeys(pool[p % len(pool)] for p in picks)) if picks and live else export_ids(state, history)
    doc = json_doc(original, ids, history)
    again = ingest([orjson.loads(orjson.dumps(e)) for e in document_events(doc)])
    state2 = fold_all(again)
    checked = ids if picks and live else live
    expected = set(ids)  # the sessions the new log must hold, no more
    if history:  # with their forks, and a fork with its ancestors
        for sid in ids:
            expected |= {other for other in state.sessions
                         if sid in lineage(state, other) or other in lineage(state, sid)}
    assert set(state2.sessions) == expected
    by_seq, by_seq2 = {r["seq"]: r for r in original}, {r["seq"]: r for r in again}
    exports = exports_of(original, checked, history)
    exports2 = exports_of(again, [s for s in checked if s in state2.sessions], history)
    for sid in checked:
        assert sid in state2.sessions, sid
        assert folded_view(state2, by_seq2, exports2, sid, history) == folded_view(state, by_seq, exports, sid,
                                                                                    history), sid
        assert request_counts(again, sid) == request_counts(original, sid), sid


#: JSON values as orjson parses them (integers in -2**63..2**64-1; larger ones are floats).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*path, i))


def _sample_doc() -> dict[str, Any]:
    payloads = [
        _event("session.start", "s1", title="t"),
        _event("message", "s1", message_id="m1", sender="ann", role="user", content="hi"),
        _event("message.delta", "s1", message_id="m2", sender="bot", delta="he"),
        _event("message.end", "s1", message_id="m2"),
        _event("message", "s1", message_id="m1", content="hi"),
        _event("session.checkpoint", "s1", name="c1", at=1),
        _event("session.fork", "s1/f", parent="s1", at=1, name="x"),
        _event("session.rewind", "s1", checkpoint="c1"),
        _event("session.crystal", "s1", summary="sum", upto=1),
        _event("llm.request", "s1", input_tokens=3, output_tokens=4, cost_usd=0.5, model="m-a"),
        _event("session.delete", "s1/f"),
    ]
    records_ = ingest(payloads)
    return json_doc(records_, ["s1", "s1/f"], True)


SAMPLE_DOC = _sample_doc()
SAMPLE_PATHS = list(_paths(SAMPLE_DOC))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(SAMPLE_PATHS), json_values | st.just(KeyError)), min_size=1, max_size=3))
def test_any_damaged_document_reads_or_fails_cleanly(changes: list[tuple[tuple[Any, ...], Any]]) -> None:
    """Decoder: a valid document with any fields replaced by any JSON values (or removed)
    either gives bus events (objects with a known type and a string session id) or
    raises ExportDocumentError, never another exception."""
    doc = orjson.loads(orjson.dumps(SAMPLE_DOC))
    for path, value in changes:
        if not path:
            doc = None if value is KeyError else value
            continue
        parent: Any = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            if value is KeyError:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # the path is gone after an earlier change
    try:
        out = document_events(doc)
    except ExportDocumentError as exc:
        assert "\n" not in str(exc)
        return
    for event in out:
        assert event["type"] in SESSION_KINDS and isinstance(event["session_id"], str)
        orjson.dumps(event)


def test_empty_messages_keep_their_text_in_the_document_and_their_marker_on_display() -> None:
    """A message whose source wrote nothing (``""``, blanks, ``{}``, a ``message`` field of
    blanks) is exported with the text it has, never the display marker: the JSON document
    and the re-recorded events carry that text, re-recording shows the same messages, and
    Markdown still marks each one as empty."""
    contents: list[Any] = ["", " ", {}, {"message": " ", "n": 1}, "said something"]
    original = ingest([_event("message", "s1", message_id=f"m{i}", content=c) for i, c in enumerate(contents)])
    doc = json_doc(original, ["s1"], False)
    texts = [m["text"] for m in doc["sessions"][0]["messages"]]
    assert texts == ["", " ", "{}", " ", "said something"]
    events_out = document_events(doc)
    assert not any(EMPTY in orjson.dumps(event).decode() for event in events_out)
    again = ingest([orjson.loads(orjson.dumps(e)) for e in events_out])
    assert [m.text for m in exports_of(again, ["s1"], False)["s1"].messages] == texts
    header = {"log": "mem", "as_of_seq": 5, "with_history": False, "exported_at": None}
    for records_ in (original, again):
        markdown = b"".join(render(list(exports_of(records_, ["s1"], False).values()), "markdown", header)).decode()
        assert markdown.count(EMPTY) == 4 and "said something" in markdown
