"""The control channel of a running recorder and the session commands of the CLI: real
``convlog record`` processes on a real broker, requests sent raw over a ZeroMQ REQ socket
and through :func:`convlog.bus.control.request`, CLI commands as subprocesses (with a
recorder running) and in-process with click's runner (with none), the log read back
from disk and folded with :func:`convlog.store.replay.load`.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq
from click.testing import CliRunner

from conftest import Bus, Proc, answering, convlog_cmd, records, wait_for_records
from convlog.bus import control
from convlog.bus.publisher import Publisher
from convlog.cli.commands import main
from convlog.store.checkpoint import list_checkpoints
from convlog.store.replay import load
from convlog.store.segment import list_segments

pytestmark = pytest.mark.slow

SESSION_KINDS = ("session.fork", "session.rewind", "session.checkpoint", "session.crystal", "session.delete")


# --------------------------------------------------------------------------- helpers


def healthy(directory: Path, proc: Proc, timeout_s: float = 30.0) -> dict[str, Any]:
    """Wait until the recorder reports itself healthy (its SUB socket connected)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = answering(directory, proc)
        if status["healthy"]:
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"the recorder never became healthy: {status['problems']}")
        time.sleep(0.05)


def raw(directory: Path, body: bytes | dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    """Send one request over a plain REQ socket (as any ZeroMQ binding would) and return
    the parsed reply, whatever its ``ok``."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(control.endpoint(directory))
        sock.send(body if isinstance(body, bytes) else orjson.dumps(body))
        if not sock.poll(int(timeout_s * 1000)):
            pytest.fail(f"no reply to {body!r:.200} within {timeout_s} s")
        reply = orjson.loads(sock.recv())
    finally:
        sock.close(linger=0)
    assert isinstance(reply, dict)
    return reply


def quiet_publisher(bus: Bus, proc: Proc, timeout_s: float = 20.0) -> Publisher:
    """A stamping publisher without heartbeats (so the log only grows when the test
    sends), returned once the recorder's subscription reached it."""
    return bus.publisher(proc, timeout_s, heartbeat_s=None)


def message(session: str, i: int) -> tuple[bytes, bytes]:
    """Topic and payload of the native message number ``i`` of ``session``."""
    event = {"type": "message", "session_id": session, "message_id": f"{session}-m{i}", "sender": "ann",
             "role": "user", "content": f"message {i} of {session}"}
    return session.encode(), orjson.dumps(event)


def seed(bus: Bus, directory: Path, proc: Proc, session: str = "s1", count: int = 4) -> list[int]:
    """Publish ``count`` messages of ``session`` and wait until they are in the log;
    return their seqs."""
    pub = quiet_publisher(bus, proc)
    for i in range(1, count + 1):
        pub.send(*message(session, i))
    found = wait_for_records(directory, count)
    pub.close(0, heartbeat=False)
    return [r["seq"] for r in found if r["kind"] == "message" and r["session"] == session]


def count(directory: Path) -> int:
    """Number of complete records in the log."""
    return len(records(directory))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m convlog ARGS`` and capture its output."""
    return subprocess.run(convlog_cmd(*args), capture_output=True, text=True, timeout=120)


def cli_many(commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Run several ``convlog`` commands at once (they only read, or are refused)."""
    procs = [subprocess.Popen(convlog_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in commands]
    done = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(convlog_cmd(*args), proc.returncode, out, err))
    return done


def in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in this process with click's runner (no recorder involved)."""
    result = CliRunner().invoke(main, list(args))
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def assert_one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command succeeded and printed exactly one line; return it."""
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stdout}{result.stderr}"
    lines = result.stdout.splitlines()
    assert len(lines) == 1, f"{result.args} printed {result.stdout!r}"
    return lines[0]


def assert_refused(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with a readable message and no traceback; return the message.

    Usage errors (exit 2) come in click's form: usage, hint, then one ``Error:`` line;
    other refusals are exactly one ``convlog: ...`` line."""
    assert result.returncode != 0, f"{result.args} succeeded: {result.stdout}"
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "", f"{result.args} printed {result.stdout!r}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode == 2:
        errors = [line for line in lines if line.startswith("Error:")]
        assert len(errors) == 1, result.stderr
        return errors[0]
    assert result.returncode == 1, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    assert len(lines) == 1 and lines[0].startswith("convlog: "), result.stderr
    return lines[0]


def session_commands(directory: Path) -> list[tuple[list[str], str, str]]:
    """The five session commands applied to session s1 (four messages), in order:
    ``(args, kind, session named by the record)``."""
    d = ["--dir", str(directory)]
    return [
        (["checkpoint", "s1", "two", "--at", "2", *d], "session.checkpoint", "s1"),
        (["fork", "s1", "--at", "3", "--name", "alt", *d], "session.fork", "s1/alt"),
        (["rewind", "s1", "--to", "1", *d], "session.rewind", "s1"),
        (["rewind", "s1", "--checkpoint", "two", *d], "session.rewind", "s1"),
        (["crystal", "s1", "--summary", "the first two", "--upto", "2", *d], "session.crystal", "s1"),
        (["delete", "s1/alt", *d], "session.delete", "s1/alt"),
    ]


def invalid_commands(directory: Path) -> list[list[str]]:
    """Session commands with invalid targets for the state :func:`session_commands` leaves."""
    d = ["--dir", str(directory)]
    return [
        ["fork", "nosuch", *d],                                  # no such session
        ["fork", "s1", "--at", "3", *d],                          # beyond the 2 visible messages
        ["fork", "s1", "--name", "alt", *d],                      # s1/alt exists already
        ["fork", "s1/alt", *d],                                   # the parent is deleted
        ["rewind", "s1", "--to", "3", *d],                        # beyond the history
        ["rewind", "s1", "--checkpoint", "nope", *d],             # unknown checkpoint
        ["rewind", "s1", *d],                                     # neither --to nor --checkpoint
        ["rewind", "s1", "--to", "1", "--checkpoint", "two", *d],  # both
        ["checkpoint", "s1", "later", "--at", "9", *d],           # beyond the history
        ["crystal", "s1", "--summary", "x", "--upto", "5", *d],   # beyond the history
        ["crystal", "nosuch", "--summary", "x", *d],
        ["delete", "nosuch", *d],
    ]


def assert_folded(directory: Path, s1: list[int]) -> None:
    """The fold shows what :func:`session_commands` did to s1 (messages ``s1``)."""
    state = load(directory).state
    assert state.errors == []
    main_session = state.sessions["s1"]
    assert state.visible("s1") == s1[:2]  # rewound to 1, then back to checkpoint "two"
    assert [(r.from_count, r.to_count) for r in main_session.rewinds] == [(4, 1), (1, 2)]
    assert set(main_session.checkpoints) == {"two"}
    assert main_session.crystals[-1].upto == 2
    crystal, after = state.resume_refs("s1")
    assert crystal is not None and crystal.upto == 2 and after == []
    assert not main_session.deleted
    fork = state.sessions["s1/alt"]
    assert (fork.parent, fork.fork_at, fork.branch) == ("s1", 3, "alt")
    assert state.visible("s1/alt") == s1[:3]
    assert fork.deleted


def control_records(directory: Path) -> list[dict]:
    """The records written with source ``control``."""
    return [r for r in records(directory) if r["source"] == "control"]


# --------------------------------------------------------------------------- requests


def test_status_flush_rotate_stop_raw_and_through_the_client(bus: Bus, tmp_path: Path) -> None:
    """``status`` names the recorder's pid, its endpoint (connected once the broker
    accepted it) and counts exactly the records in the log; ``flush`` makes them all
    durable; ``rotate`` starts a segment that the next records go to; ``convlog status``
    exits 0 with a JSON form; ``stop`` ends the process with 0 and removes the socket
    (then ``convlog status`` exits 3) and the log verifies. Each request both raw and
    through ``control.request``."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    first = answering(directory, rec)
    assert first["ok"] is True and first["pid"] == rec.popen.pid
    assert first["directory"] == str(directory)
    assert [(e["endpoint"], e["kind"]) for e in first["endpoints"]] == [(bus.xpub, "sub")]
    path = control.socket_path(directory)
    assert path == directory / "recovery" / "control.sock"
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600

    status = healthy(directory, rec)
    assert status["endpoints"][0]["connected"] is True and status["problems"] == []
    s1 = seed(bus, directory, rec, count=3)

    flushed = raw(directory, {"op": "flush"})
    on_disk = records(directory)
    assert flushed == {"ok": True, "durable_seq": on_disk[-1]["seq"]}
    assert control.request(directory, "flush") == flushed
    for reply in (raw(directory, {"op": "status"}), control.request(directory, "status")):
        assert reply["ok"] is True and reply["pid"] == rec.popen.pid
        assert reply["last_seq"] == reply["records"] == len(on_disk) == on_disk[-1]["seq"]
        assert reply["received"] == {"sub": 3}
        assert reply["publishers"]["known"] == 1
        assert reply["fsync"]["policy"] == "interval" and reply["fsync"]["durable_seq"] == len(on_disk)
        assert reply["bytes"] == sum(p.stat().st_size for _, p in list_segments(directory))
        assert reply["newest_ts"] == on_disk[s1[-1] - 1]["ts"]
        assert reply["healthy"] is True

    rotated = raw(directory, {"op": "rotate"})
    next_seq = len(on_disk) + 1
    assert rotated == {"ok": True, "segment": f"{next_seq:020d}.jsonl"}
    assert (directory / "events" / rotated["segment"]).exists()
    pub = quiet_publisher(bus, rec)
    pub.send(*message("s1", 4))
    wait_for_records(directory, 4)
    tail = (directory / "events" / rotated["segment"]).read_bytes().splitlines()
    assert [orjson.loads(line)["seq"] for line in tail] == [next_seq]
    again = control.request(directory, "rotate")
    assert again["segment"] == f"{next_seq + 1:020d}.jsonl"
    pub.send(*message("s1", 5))
    wait_for_records(directory, 5)
    pub.close(0, heartbeat=False)
    assert [orjson.loads(line)["seq"] for line in (directory / "events" / again["segment"]).read_bytes().splitlines()
            ] == [next_seq + 1]
    assert cli("verify", str(directory)).returncode == 0

    assert cli("status", "--dir", str(directory)).returncode == 0
    as_json = cli("status", "--dir", str(directory), "--json")
    assert as_json.returncode == 0
    reported = orjson.loads(as_json.stdout)
    assert reported["running"] is True and reported["healthy"] is True and reported["pid"] == rec.popen.pid

    stopped = control.request(directory, "stop")
    assert stopped == {"ok": True, "stopping": True, "pid": rec.popen.pid}
    assert rec.popen.wait(60) == 0, rec.output()
    assert not path.exists()
    found = records(directory)
    assert found[-1]["kind"] == "recorder.stop"
    assert [r["seq"] for r in found] == list(range(1, len(found) + 1))
    assert cli("verify", str(directory)).returncode == 0
    assert cli("status", "--dir", str(directory)).returncode == 3
    not_running = cli("status", "--dir", str(directory), "--json")
    assert not_running.returncode == 3
    assert orjson.loads(not_running.stdout)["running"] is False
    with pytest.raises(control.NotRunningError):
        control.request(directory, "status")


def test_stop_raw_ends_the_process_cleanly_for_a_long_directory_path(bus: Bus, tmp_path: Path) -> None:
    """A directory whose control socket path would not fit a Unix socket address gets
    its socket (0600) in the temporary directory instead; a raw ``stop`` request there:
    the reply names the pid, the process exits 0 after writing ``recorder.stop``, and
    the socket file is gone."""
    directory = tmp_path / ("d" * 100) / "log"
    path = control.socket_path(directory)
    assert not path.is_relative_to(directory) and len(str(path).encode()) <= 107
    directory.parent.mkdir()
    rec = bus.recorder(directory)
    answering(directory, rec)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert raw(directory, {"op": "stop"}) == {"ok": True, "stopping": True, "pid": rec.popen.pid}
    assert rec.popen.wait(60) == 0, rec.output()
    assert not path.exists()
    assert records(directory)[-1]["kind"] == "recorder.stop"


def test_checkpoint_requests_write_files_and_the_labelled_one_survives(bus: Bus, tmp_path: Path) -> None:
    """``checkpoint`` with and without a label writes the file it names into
    checkpoints/; with ``checkpoint_keep = 1`` later automatic checkpoints prune the
    unlabelled one, never the labelled one."""
    config = tmp_path / "convlog.toml"
    config.write_text("[recorder]\ncheckpoint_keep = 1\n")
    directory = tmp_path / "log"
    rec = bus.recorder(directory, "--config", str(config))
    answering(directory, rec)
    checkpoints = directory / "checkpoints"

    plain = raw(directory, {"op": "checkpoint"})
    assert plain["ok"] is True and plain["seq"] == 1
    assert plain["checkpoint"] == f"{1:020d}.json" and (checkpoints / plain["checkpoint"]).exists()

    control.request(directory, "append", kind="session.start", session="a", data={})
    labelled = control.request(directory, "checkpoint", label="before-upgrade")
    assert labelled["checkpoint"] == f"{2:020d}-before-upgrade.json" and labelled["seq"] == 2
    assert (checkpoints / labelled["checkpoint"]).exists()

    names = []
    for session in ("b", "c"):
        raw(directory, {"op": "append", "kind": "session.start", "session": session})
        reply = raw(directory, {"op": "checkpoint", "label": None})
        assert reply["ok"] is True and (checkpoints / reply["checkpoint"]).exists()
        names.append(reply["checkpoint"])
    kept = {info.path.name: info.label for info in list_checkpoints(directory)}
    assert kept == {labelled["checkpoint"]: "before-upgrade", names[-1]: None}
    assert control.request(directory, "status")["last_checkpoint"]["file"] == names[-1]
    assert rec.terminate() == 0
    assert labelled["checkpoint"] in {info.path.name for info in list_checkpoints(directory)}


def test_append_of_every_session_control_kind_is_folded(bus: Bus, tmp_path: Path) -> None:
    """``append`` of fork, rewind (to N and to a checkpoint), checkpoint, crystal,
    delete and start — alternately raw and through the client — writes one record each
    with source ``control`` at the seq of the reply, made durable; the fold shows the
    fork, the rewinds, the checkpoint, the crystal and the tombstone."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    answering(directory, rec)
    s1 = seed(bus, directory, rec)
    appends = [
        ("session.checkpoint", "s1", {"name": "two", "at": 2}),
        ("session.fork", "s1/alt", {"parent": "s1", "at": 3, "name": "alt"}),
        ("session.rewind", "s1", {"to": 1}),
        ("session.rewind", "s1", {"checkpoint": "two"}),
        ("session.crystal", "s1", {"summary": "the first two", "upto": 2}),
        ("session.delete", "s1/alt", {}),
        ("session.start", "s2", {"title": "second"}),
    ]
    seqs = []
    for i, (kind, session, data) in enumerate(appends):
        if i % 2:
            reply = control.request(directory, "append", kind=kind, session=session, data=data)
        else:
            reply = raw(directory, {"op": "append", "kind": kind, "session": session, "data": data})
        assert reply["ok"] is True and isinstance(reply["seq"], int)
        seqs.append(reply["seq"])
        assert control.request(directory, "status")["fsync"]["durable_seq"] >= reply["seq"]
    assert seqs == list(range(seqs[0], seqs[0] + len(appends)))
    by_seq = {r["seq"]: r for r in records(directory)}
    for seq, (kind, session, data) in zip(seqs, appends, strict=True):
        written = by_seq[seq]
        assert (written["kind"], written["source"], written["session"], written["data"]) == (
            kind, "control", session, data)
    assert {kind for kind, _, _ in appends} >= set(SESSION_KINDS)
    assert_folded(directory, s1)
    assert load(directory).state.sessions["s2"].title == "second"
    assert rec.terminate() == 0


MALFORMED: list[tuple[bytes | dict[str, Any], str]] = [
    (b"not json at all", "not JSON"),
    (b"\xff\xfe{", "not JSON"),
    (b"", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'"status"', "not a JSON object"),
    ({}, "'op'"),
    ({"op": 5}, "'op'"),
    ({"op": "explode"}, "unknown op 'explode'"),
    ({"op": "STATUS"}, "unknown op"),
    ({"op": "status", "verbose": True}, "unexpected field"),
    ({"op": "stop", "now": 1}, "unexpected field"),
    ({"op": "flush", "label": "x"}, "unexpected field"),
    ({"op": "rotate", "kind": "session.fork"}, "unexpected field"),
    ({"op": "checkpoint", "label": 5}, "label must be a string"),
    ({"op": "checkpoint", "label": "x", "seq": 1}, "unexpected field"),
    ({"op": "append", "kind": "message", "session": "s1", "data": {}}, "kind must be one of"),
    ({"op": "append", "kind": "recorder.stop", "session": "s1", "data": {}}, "kind must be one of"),
    ({"op": "append", "session": "s1", "data": {}}, "kind must be one of"),
    ({"op": "append", "kind": "session.delete", "session": 7, "data": {}}, "session must be a non-empty string"),
    ({"op": "append", "kind": "session.delete", "session": "", "data": {}}, "session must be a non-empty string"),
    ({"op": "append", "kind": "session.delete", "data": {}}, "session must be a non-empty string"),
    ({"op": "append", "kind": "session.fork", "session": "s1/x", "data": [1]}, "data must be an object"),
    ({"op": "append", "kind": "session.fork", "session": "s1/x", "data": "parent"}, "data must be an object"),
    ({"op": "append", "kind": "session.fork", "session": "s1/x", "data": None}, "data must be an object"),
    ({"op": "append", "kind": "session.delete", "session": "s1", "data": {}, "seq": 9}, "unexpected field"),
    (b'{"op": "status", "pad": "' + b"x" * (1 << 20) + b'"}', "longer than"),
]


def test_malformed_and_unknown_requests_get_an_error_and_change_nothing(bus: Bus, tmp_path: Path) -> None:
    """Every malformed or unknown request gets ``{"ok": false, "error": ...}`` naming
    what is wrong; the log, the checkpoints and the segments are unchanged and the
    socket keeps answering; the client raises ControlError with the same message."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    answering(directory, rec)
    before = records(directory)
    segments = list_segments(directory)
    checkpoints = sorted(os.listdir(directory / "checkpoints"))
    for body, reason in MALFORMED:
        reply = raw(directory, body)
        assert reply["ok"] is False, body
        assert set(reply) == {"ok", "error"}
        assert isinstance(reply["error"], str) and reason in reply["error"], (body, reply)
        assert "\n" not in reply["error"]
    for op, params in [("explode", {}), ("append", {"kind": "message", "session": "s1", "data": {}}),
                       ("status", {"extra": 1})]:
        with pytest.raises(control.ControlError) as caught:
            control.request(directory, op, **params)
        assert not isinstance(caught.value, control.NotRunningError)
    assert raw(directory, {"op": "flush"})["ok"] is True
    status = raw(directory, {"op": "status"})
    assert status["ok"] is True and status["pid"] == rec.popen.pid
    assert records(directory) == before
    assert list_segments(directory) == segments
    assert sorted(os.listdir(directory / "checkpoints")) == checkpoints
    assert rec.popen.poll() is None
    assert rec.terminate() == 0


def test_checkpoint_with_a_bad_label_is_refused_and_the_recorder_keeps_running(bus: Bus, tmp_path: Path) -> None:
    """A label outside [A-Za-z0-9._-] (a string, so it passes parse_request) gets an
    error reply; no checkpoint is written and the recorder keeps recording."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    answering(directory, rec)
    before = count(directory)
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(control.endpoint(directory))
    sock.send(orjson.dumps({"op": "checkpoint", "label": "../../etc"}))
    deadline = time.monotonic() + 30
    while not sock.poll(100):
        if rec.popen.poll() is not None:
            sock.close(linger=0)
            pytest.fail(f"the recorder died (exit {rec.popen.returncode}) on a bad label:\n{rec.output()[-1500:]}")
        assert time.monotonic() < deadline, "no reply"
    reply = orjson.loads(sock.recv())
    sock.close(linger=0)
    assert reply["ok"] is False and "label" in reply["error"]
    assert os.listdir(directory / "checkpoints") == []
    assert raw(directory, {"op": "status"})["ok"] is True
    assert count(directory) == before
    assert rec.terminate() == 0


# --------------------------------------------------------------------------- session commands


def test_session_commands_through_the_running_recorder(bus: Bus, tmp_path: Path) -> None:
    """With a recorder running, fork, rewind (--to, --checkpoint), checkpoint SESSION
    NAME, crystal and delete each print one line saying the recorder wrote it, and the
    record (source ``control``) is written by the recorder; the fold shows the result.
    Invalid targets exit non-zero with one readable line and write nothing.
    ``checkpoint create --label`` goes through the recorder too."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    answering(directory, rec)
    s1 = seed(bus, directory, rec)
    for args, kind, session in session_commands(directory):
        line = assert_one_line(cli(*args))
        assert line.startswith(f"{kind} seq ") and "(recorder)" in line and f": {session}: " in line, line
        last = records(directory)[-1]
        assert (last["kind"], last["source"], last["session"]) == (kind, "control", session)
        assert int(line.split()[2]) == last["seq"]
    assert line.endswith("s1/alt: 3 messages visible; branch alt of s1 at 3; deleted"), line
    assert_folded(directory, s1)
    assert [r["kind"] for r in control_records(directory)] == [kind for _, kind, _ in session_commands(directory)]
    assert rec.popen.poll() is None

    before = records(directory)
    for result in cli_many(invalid_commands(directory)):
        assert_refused(result)
    assert records(directory) == before

    created = assert_one_line(cli("checkpoint", "create", "--label", "release-1", "--dir", str(directory)))
    assert "written by the running recorder" in created
    assert [info.label for info in list_checkpoints(directory)] == ["release-1"]
    assert rec.terminate() == 0
    assert cli("verify", str(directory)).returncode == 0


def test_session_commands_without_a_recorder_write_directly(bus: Bus, tmp_path: Path) -> None:
    """With no recorder running, the same commands write directly (under the writer
    lock), print one line saying so, the log verifies, invalid targets write nothing,
    ``checkpoint create --label`` writes the checkpoint itself, and a recorder started
    afterwards continues seq without a hole."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    answering(directory, rec)
    s1 = seed(bus, directory, rec)
    assert rec.terminate() == 0
    assert not control.socket_path(directory).exists()

    for args, kind, session in session_commands(directory):
        line = assert_one_line(in_process(*args))
        assert line.startswith(f"{kind} seq ") and "(direct)" in line and f": {session}: " in line, line
        last = records(directory)[-1]
        assert (last["kind"], last["source"], last["session"]) == (kind, "control", session)
        assert int(line.split()[2]) == last["seq"]
    assert_folded(directory, s1)

    before = records(directory)
    for args in invalid_commands(directory):
        assert_refused(in_process(*args))
    assert records(directory) == before

    created = assert_one_line(in_process("checkpoint", "create", "--label", "offline", "--dir", str(directory)))
    assert created.startswith("checkpoint ") and created.endswith("-offline.json")
    assert (directory / "checkpoints" / created.split()[1]).exists()
    last_seq = records(directory)[-1]["seq"]

    again = bus.recorder(directory)
    status = answering(directory, again)
    assert status["pid"] == again.popen.pid
    found = records(directory)
    assert [r["seq"] for r in found] == list(range(1, len(found) + 1))
    restarts = [r for r in found if r["kind"] == "recorder.start"]
    assert len(restarts) == 2 and restarts[-1]["seq"] == last_seq + 1
    assert again.terminate() == 0
    assert cli("verify", str(directory)).returncode == 0
    assert_folded(directory, s1)


def test_verify_passes_after_a_direct_session_command(bus: Bus, tmp_path: Path) -> None:
    """A session command written directly (no recorder running) leaves a log that
    ``convlog verify`` accepts."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    answering(directory, rec)
    seed(bus, directory, rec, count=2)
    assert rec.terminate() == 0
    assert cli("verify", str(directory)).returncode == 0
    assert "(direct)" in assert_one_line(in_process("crystal", "s1", "--summary", "two", "--dir", str(directory)))
    verified = in_process("verify", str(directory))
    assert verified.returncode == 0, verified.stdout


def test_refused_command_after_a_crash_writes_nothing(bus: Bus, tmp_path: Path) -> None:
    """A log whose recorder was killed (kill -9): refused session commands write nothing,
    however often they are repeated."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory)
    answering(directory, rec)
    seed(bus, directory, rec, count=2)
    rec.kill9()
    before = records(directory)
    for _ in range(3):
        assert_refused(in_process("delete", "nosuch", "--dir", str(directory)))
    assert records(directory) == before


def test_stop_and_session_commands_with_nothing_to_talk_to(tmp_path: Path) -> None:
    """``convlog stop`` with no recorder exits 3; a session command on a directory with
    no log is refused in one line."""
    directory = tmp_path / "empty"
    stopped = in_process("stop", "--dir", str(directory))
    assert stopped.returncode == 3 and "no recorder is running" in stopped.stderr
    refused = assert_refused(in_process("delete", "s1", "--dir", str(directory)))
    assert "no event log" in refused
    assert not directory.exists()
