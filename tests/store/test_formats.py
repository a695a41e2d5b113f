"""Input formats of ``convlog publish`` and ``convlog import``, with real parts: the
Shearwater recordings from ../shared, real files in tmp dirs, a real broker and recorder
as subprocesses on free loopback ports, the CLI as a subprocess or through click.

* A legacy file published into a running recorder gives the records ``convlog import``
  of the same file gives: every field of every record, and the readers (shown
  messages, speaker/role search) agree.
* Bad legacy lines are reported (file:line: reason), skipped, and the rest is sent; the
  same lines are reported by import, with the same reasons (one decoding path).
* Import takes records of another convlog log (a demo segment folds to the same
  sessions) and OpenAI chat JSONL (message lines and ``{"messages"}`` lines).
* Garbage is a clear error naming file, line and reason, exit 1, nothing written.
"""

from __future__ import annotations

import collections
import hashlib
import subprocess
from pathlib import Path

import orjson
from click.testing import CliRunner

from conftest import Bus, convlog_cmd, records, shearwater_file, wait_for_records
from convlog.bus.publisher import SkippedLine, file_messages
from convlog.cli.commands import main
from convlog.core.view import EMPTY
from convlog.store import replay
from convlog.store.importer import import_files
from convlog.store.search import SearchIndex
from convlog.store.segment import list_segments

#: meta fields that describe the payload's bytes, which a publisher's stamp changes.
PAYLOAD_META = ("bytes", "chars", "sha256")


def run(*args: str) -> tuple[int, str, str]:
    """Run the CLI in this process; returns exit code, stdout, stderr."""
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def publish(bus: Bus, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``convlog publish PATH --to <broker> ARGS`` as a subprocess."""
    return subprocess.run(convlog_cmd("publish", str(path), "--to", bus.xsub, *args),
                          capture_output=True, text=True, timeout=300)


def stop(proc) -> None:
    """SIGTERM a recorder and require a clean exit."""
    code = proc.terminate()
    assert code == 0, f"recorder exited with {code}:\n{proc.output()}"


def received(found: list[dict]) -> list[dict]:
    """Records of messages received on the SUB socket, without heartbeats."""
    return [r for r in found if r["source"] == "sub" and r["kind"] != "publisher.heartbeat"]


def imported(found: list[dict]) -> list[dict]:
    """Records written by ``convlog import``."""
    return [r for r in found if r["source"] == "import"]


def raw_lines(directory: Path) -> dict[int, bytes]:
    """seq -> the record's line as written (newline excluded)."""
    out = {}
    for _, path in list_segments(directory):
        for line in path.read_bytes().splitlines():
            out[orjson.loads(line)["seq"]] = line
    return out


def data_bytes(line: bytes) -> bytes:
    """The ``data`` bytes of a line in the recorder's own layout (data before meta)."""
    start = line.index(b',"data":') + len(b',"data":')
    return line[start:line.rindex(b',"meta":')]


def shown(directory: Path) -> dict[str, list[tuple]]:
    """Every session's visible messages as the readers show them."""
    folded = replay.load(directory)
    return {sid: [(m.message_id, m.sender, m.role, m.text, m.copies, m.streamed, m.complete)
                  for m in folded.messages(sid)]
            for sid in folded.state.sessions}


def speaker_hits(directory: Path, speaker: str, word: str) -> list[tuple]:
    """Search hits for ``word`` by ``speaker`` (sender or role), without seqs and times."""
    with SearchIndex(directory) as index:
        index.update()
        hits = index.query(word, speaker=speaker, limit=100_000)
    return sorted((h.session or "", h.speaker or "", h.kind, h.snippet) for h in hits)


# --------------------------------------------------------------------------- publish --format legacy


def test_published_legacy_file_records_every_field_as_import_does(bus: Bus, tmp_path: Path) -> None:
    """current_session.jsonl (2,783 records, every legacy field: SpeakerRole,
    TimestampEnd, ConversationType, Metadata, the top-level chain_type, ace_tier,
    shl_tags, keywords, zmq_ready) published into a running recorder gives, record by
    record, what importing it gives: kind, topic, session, data (all fields, in their
    order, with only the publisher's stamp added) and meta (but for the payload's size
    and hash, which the stamp changes); the shown messages of every session and the
    searches by speaker name and by role (SpeakerRole) are the same."""
    source = shearwater_file("current_session.jsonl")
    lines = [line for line in source.read_bytes().splitlines() if line.strip()]
    originals = [orjson.loads(line) for line in lines]
    assert len(originals) == 2783
    fields = collections.Counter(key for original in originals for key in original)
    assert {"SpeakerRole", "TimestampEnd", "ConversationType", "Metadata", "zmq_ready"} <= set(fields)

    published = tmp_path / "published"
    rec = bus.recorder(published)
    bus.publisher(rec, heartbeat_s=None).close(0)  # the recorder is subscribed
    done = publish(bus, source, "--format", "legacy", "--publisher-id", "legacy-replay", "--rate", "2000")
    assert done.returncode == 0, done.stderr
    assert "published 2,783 messages" in done.stderr
    wait_for_records(published, 2783)
    stop(rec)

    via_import = tmp_path / "imported"
    code, out, err = run("import", str(source), "--dir", str(via_import))
    assert code == 0, err
    assert out.strip() == "imported 2,783 records from 1 file (0 already present, 0 invalid)"

    got, want = received(records(published)), imported(records(via_import))
    assert len(got) == len(want) == 2783
    for number, (pub, imp, original) in enumerate(zip(got, want, originals, strict=True), 1):
        data = dict(pub["data"])
        assert data.pop("convlog") == {"publisher": "legacy-replay", "seq": number}
        assert data == imp["data"] == original, f"record {number}: data"
        assert list(data) == list(original), f"record {number}: field order"
        assert (pub["kind"], pub["topic"], pub["session"]) == (imp["kind"], imp["topic"], imp["session"])
        assert pub["meta"]["role"] == original["SpeakerRole"] and pub["meta"]["sender"] == original["SpeakerName"]
        strip = lambda meta: {k: v for k, v in meta.items() if k not in PAYLOAD_META}  # noqa: E731
        assert strip(pub["meta"]) == strip(imp["meta"]), f"record {number}: meta"

    assert shown(published) == shown(via_import)
    roles = collections.Counter(original["SpeakerRole"] for original in originals)
    for speaker in (*roles, "claude_code", "consolidated"):
        hits = speaker_hits(published, speaker, "the")
        assert hits and hits == speaker_hits(via_import, speaker, "the"), speaker
    assert len(speaker_hits(published, "Agent", "the")) <= roles["Agent"]


def bad_legacy_file(tmp_path: Path) -> tuple[Path, list[bytes], dict[int, str]]:
    """The first 40 records of crash_recovery.jsonl with bad lines in the middle.

    Returns:
        the file, the good lines in order, and line number -> words of its reason.
    """
    good = shearwater_file("crash_recovery.jsonl").read_bytes().splitlines()[:40]
    sample = orjson.loads(good[0])
    bad = {
        b"this is not json {": "not JSON: ",
        b"[1, 2, 3]": "not a legacy ConversationEvent record (an array, not an object)",
        orjson.dumps({k: v for k, v in sample.items() if k != "Message"}):
            "not a legacy ConversationEvent record (needs Id, SpeakerName and Message)",
        orjson.dumps({**sample, "SpeakerRole": 5}): "SpeakerRole is 5, not a string or null",
        orjson.dumps({**sample, "Metadata": "x"}): 'Metadata is "x", not an object or null',
        orjson.dumps({**sample, "Id": True}): "Id is true, not a string or an integer",
        orjson.dumps({**sample, "SpeakerName": None}): "SpeakerName is null, not a string",
    }
    out: list[bytes] = []
    reasons: dict[int, str] = {}
    bad_items = list(bad.items())
    for index, line in enumerate(good):
        out.append(line)
        if 10 <= index < 10 + len(bad_items):  # one bad line after each of records 11..17
            line_bad, words = bad_items[index - 10]
            out.append(line_bad)
            reasons[len(out)] = words
    out.insert(25, b"")  # a blank line is not an error
    reasons = {(n + 1 if n > 25 else n): words for n, words in reasons.items()}
    path = tmp_path / "with-bad-lines.jsonl"
    path.write_bytes(b"\n".join(out) + b"\n")
    return path, good, reasons


def test_bad_legacy_lines_are_reported_and_skipped_and_the_rest_is_published(bus: Bus, tmp_path: Path) -> None:
    """A legacy file with 7 bad lines in the middle (not JSON, not an object, a missing
    field, mistyped fields): ``publish --format legacy`` sends the 40 good records (byte
    for byte with --no-stamp), reports each bad line as ``file:line: reason`` and exits
    1; the library reports them through ``on_skip`` as they come; import reports the
    same lines with the same reasons and imports the same 40 records."""
    path, good, reasons = bad_legacy_file(tmp_path)
    skipped: list[SkippedLine] = []
    messages = list(file_messages(path, fmt="legacy", on_skip=skipped.append))
    assert [payload for _, payload in messages] == good
    assert [topic.decode() for topic, _ in messages] == [orjson.loads(line)["SpeakerName"] for line in good]
    assert [bad.line for bad in skipped] == sorted(reasons)
    for bad in skipped:
        assert bad.path == str(path) and reasons[bad.line] in bad.reason, bad

    directory = tmp_path / "published"
    rec = bus.recorder(directory)
    bus.publisher(rec, heartbeat_s=None).close(0)
    done = publish(bus, path, "--format", "legacy", "--no-stamp")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    for bad in skipped:
        assert str(bad) in done.stderr
    assert "7 invalid lines skipped, 40 messages sent" in done.stderr
    found = wait_for_records(directory, 40)
    stop(rec)
    got = received(found)
    assert len(got) == 40
    lines = raw_lines(directory)
    assert [data_bytes(lines[r["seq"]]) for r in got] == good  # every byte of every good line
    assert [r["meta"]["sha256"] for r in got] == [hashlib.sha256(line).hexdigest() for line in good]

    via_import = tmp_path / "imported"
    report = import_files(via_import, [path])
    assert [(bad.line, bad.reason) for bad in report.invalid] == [(bad.line, bad.reason) for bad in skipped]
    want = imported(records(via_import))
    assert [(r["topic"], r["session"], r["data"], r["meta"]) for r in want] == \
           [(r["topic"], r["session"], r["data"], r["meta"]) for r in got]


# --------------------------------------------------------------------------- import: convlog records


def test_a_segment_of_another_log_imports_and_folds_to_the_same_sessions(tmp_path: Path) -> None:
    """The segment of a demo log (recorded by a real broker and recorder) imported into
    a fresh log: every record but the recorder's own and the heartbeats is written, in
    order, with new seqs 1..N, source ``import``, the same kind, topic, session, data
    bytes and meta, and ``meta.origin`` naming the file, seq, time, source and line
    hash it came from; the log verifies and folds to the same sessions (branches,
    checkpoints, crystals, messages as shown); importing it again adds nothing."""
    demo = tmp_path / "demo"
    done = subprocess.run(convlog_cmd("demo", "--dir", str(demo), "--conversations", "4"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    segments = list_segments(demo)
    assert len(segments) == 1
    segment = segments[0][1]
    source_lines = segment.read_bytes().splitlines()
    originals = [orjson.loads(line) for line in source_lines]
    local = [r for r in originals if r["kind"].startswith("recorder.") or r["kind"] == "publisher.heartbeat"]
    kept = [(r, line) for r, line in zip(originals, source_lines, strict=True) if r not in local]
    assert local and {r["kind"] for r, _ in kept} >= {"message", "message.delta", "session.fork", "llm.request"}

    directory = tmp_path / "copy"
    code, out, err = run("import", str(segment), "--dir", str(directory))
    assert code == 0, err
    assert out.strip() == (f"imported {len(kept)} records from 1 file "
                           f"(0 already present, 0 invalid, {len(local)} skipped)")
    found = records(directory)
    assert [r["seq"] for r in found] == list(range(1, len(kept) + 1))
    lines = raw_lines(directory)
    for record, (original, line) in zip(found, kept, strict=True):
        assert record["source"] == "import"
        for key in ("kind", "topic", "session", "data"):
            assert record[key] == original[key], key
        assert data_bytes(lines[record["seq"]]) == data_bytes(line)
        meta = dict(record["meta"])
        assert meta.pop("origin") == {"file": segment.name, "seq": original["seq"], "ts": original["ts"],
                                      "source": original["source"], "sha256": hashlib.sha256(line).hexdigest()}
        assert meta == original["meta"]
    assert run("verify", str(directory))[0] == 0

    before, after = replay.load(demo).state, replay.load(directory).state
    assert set(after.sessions) == set(before.sessions) and len(before.sessions) >= 4
    for sid, session in before.sessions.items():
        def shape(s):  # everything but seqs, which differ
            return (s.parent, s.fork_at, s.branch, s.title, s.deleted_seq is None, len(s.visible), len(s.rewinds),
                    sorted(s.checkpoints), len(s.crystals), s.participants, s.copies, s.duplicates, s.usage)
        assert shape(after.sessions[sid]) == shape(session), sid
    assert shown(directory) == shown(demo)

    code, out, _ = run("import", str(segment), "--dir", str(directory))
    assert code == 0
    assert out.strip() == (f"imported 0 records from 1 file "
                           f"({len(kept)} already present, 0 invalid, {len(local)} skipped)")
    assert len(records(directory)) == len(kept)


# --------------------------------------------------------------------------- import: OpenAI chat


def test_openai_chat_files_import_as_conversations(tmp_path: Path) -> None:
    """OpenAI chat JSONL in both shapes: a file of ``{"role", "content"}`` lines is one
    conversation (content a string, a list of text parts, or null with tool calls), a
    file of ``{"messages": [...]}`` lines one conversation per line. Each message is a
    ``message`` record (role, sender from ``name``, the text; the original message kept
    when it holds more), sessions named as documented; a bad line is reported and the
    rest imported; importing again adds nothing."""
    chat = tmp_path / "chat.jsonl"
    chat_lines = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "name": "ann", "content": [{"type": "text", "text": "Summarise:"},
                                                    {"type": "image_url", "image_url": {"url": "x.png"}},
                                                    {"type": "text", "text": "the plan"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "assistant", "content": "Ship it Friday."},
    ]
    chat.write_bytes(b"\n".join(orjson.dumps(m) for m in chat_lines) + b"\n" + b'{"role": 7, "content": "x"}\n')
    convs = tmp_path / "finetune.jsonl"
    conversations = [
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
        {"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}],
         "id": "ignored"},
    ]
    conv_lines = [orjson.dumps(c) for c in conversations]
    convs.write_bytes(b"\n".join(conv_lines) + b"\n")

    directory = tmp_path / "log"
    code, out, err = run("import", str(chat), str(convs), "--dir", str(directory))
    assert code == 1
    assert out.strip() == "imported 8 records from 2 files (0 already present, 1 invalid)"
    assert err.strip() == f"{chat}:5: role is an integer, not a non-empty string"

    chat_sid = f"chat-{hashlib.sha256(str(chat.resolve()).encode()).hexdigest()[:8]}"
    conv_sids = [f"finetune-{hashlib.sha256(line).hexdigest()[:12]}" for line in conv_lines]
    found = records(directory)
    assert all((r["kind"], r["source"], r["meta"]["shape"]) == ("message", "import", "native") for r in found)
    assert [r["session"] for r in found] == [chat_sid] * 4 + [conv_sids[0]] * 2 + [conv_sids[1]] * 2
    first = found[1]["data"]
    assert first["content"] == "Summarise:\nthe plan" and first["sender"] == "ann"
    assert first["openai"] == chat_lines[1]
    assert found[2]["data"]["openai"] == chat_lines[2] and found[2]["data"]["content"] == ""
    assert "openai" not in found[0]["data"]
    assert [r["meta"]["message_id"] for r in found[:4]] == [f"{chat_sid}:{n}" for n in range(1, 5)]

    messages = shown(directory)
    assert set(messages) == {chat_sid, *conv_sids}
    assert [(m[2], m[1], m[3]) for m in messages[chat_sid]] == [
        ("system", None, "You are terse."), ("user", "ann", "Summarise:\nthe plan"),
        ("assistant", None, EMPTY), ("assistant", None, "Ship it Friday."),
    ]
    assert [(m[2], m[3]) for m in messages[conv_sids[1]]] == [("user", "Capital of France?"), ("assistant", "Paris")]
    assert run("verify", str(directory))[0] == 0

    code, out, _ = run("import", str(chat), str(convs), "--dir", str(directory))
    assert out.strip() == "imported 0 records from 2 files (8 already present, 1 invalid)"
    assert len(records(directory)) == 8


# --------------------------------------------------------------------------- garbage


def test_garbage_is_a_clear_error_and_nothing_is_written(tmp_path: Path) -> None:
    """Files in none of the formats (text, binary, JSON of another shape) make ``convlog
    import`` exit 1 with one ``file:line: reason`` line each, naming the first non-blank
    line and the formats it is not; the log directory is not even created. Next to a
    good file, the good one is imported and the exit code is still 1."""
    text = tmp_path / "notes.txt"
    text.write_text("\n\nsome notes\nmore notes\n")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    other = tmp_path / "other.jsonl"
    other.write_bytes(b'{"user": "x", "text": "hello"}\n[1, 2]\n')
    directory = tmp_path / "log"
    for path, line, words in ((text, 3, "not JSON: "), (binary, 1, "not JSON: "),
                              (other, 1, "an object with keys user, text; and none of the first 2 non-blank lines is")):
        code, out, err = run("import", str(path), "--dir", str(directory))
        assert code == 1, (path, err)
        assert out.strip() == "imported 0 records from 1 file (0 already present, 1 invalid)"
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"{path}:{line}: ") and words in err, err
        assert "a legacy ConversationEvent record, a convlog record or an OpenAI chat message" in err
        assert "nothing imported from this file" in err
        assert not directory.exists()

    done = subprocess.run(convlog_cmd("import", str(text), str(shearwater_file("crash_recovery.jsonl")),
                                      "--dir", str(directory)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"{text}:3: not JSON: ")
    assert "imported 414 records from 2 files (0 already present, 1 invalid)" in done.stdout
