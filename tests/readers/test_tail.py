"""``convlog tail`` (newest records, ``-f`` following) and ``convlog info``.

Real recorders and brokers as subprocesses (conftest's Bus), real ``convlog tail -f``
subprocesses read through a pipe, and property tests of the reading core on real files
in temporary directories.
"""

from __future__ import annotations

import collections
import itertools
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import PLAIN, Bus, Proc, convlog_cmd, records, shearwater_file, wait_for_records
from convlog.bus.publisher import Publisher
from convlog.core.record import make_line
from convlog.readers.tail import Follower, RecordFilter, newest
from convlog.store.replay import load
from convlog.store.segment import list_segments, segment_name

# --------------------------------------------------------------------------- helpers


def stop(proc: Proc) -> None:
    """SIGTERM a recorder and require a clean exit."""
    code = proc.terminate()
    assert code == 0, f"recorder exited with {code}:\n{proc.output()}"


def send(pub: Publisher, session: str, mid: str, text: str, sender: str = "alice") -> None:
    """Publish one native message event."""
    event = {"type": "message", "session_id": session, "message_id": mid, "sender": sender, "content": text}
    pub.send(session.encode(), orjson.dumps(event))


def log_lines(directory: Path) -> list[bytes]:
    """Every complete line of every segment, in order, newline included."""
    out: list[bytes] = []
    for _, path in list_segments(directory):
        out.extend(line + b"\n" for line in path.read_bytes().split(b"\n")[:-1])
    return out


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m convlog ARGS`` to completion, output captured (piped: no terminal)."""
    return subprocess.run(convlog_cmd(*args), capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


class TailProc:
    """``convlog tail ...`` as a subprocess whose stdout lines are collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(convlog_cmd("tail", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL)
        self.lines: list[bytes] = []
        self._eof = False
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[list[bytes]], bool], what: str, timeout_s: float = 30.0) -> list[bytes]:
        """Wait for the lines printed so far to satisfy ``predicate``; fail with what
        was printed when they do not within ``timeout_s`` (a deadline, not a speed check)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    self.kill()
                    pytest.fail(f"tail did not print {what} in {timeout_s} s (exit {self.popen.poll()}); "
                                f"printed {len(self.lines)} lines, last {self.lines[-3:]!r}; stderr: "
                                f"{self.stderr()!r}")
                self._cond.wait(min(left, 0.5))
            return list(self.lines)

    def interrupt(self) -> tuple[int, str]:
        """SIGINT (Ctrl-C) and wait: the exit code and stderr."""
        self.popen.send_signal(signal.SIGINT)
        try:
            code = self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("tail -f did not exit within 20 s of SIGINT")
        return code, self.stderr()

    def stderr(self) -> str:
        if self.popen.poll() is None or self.popen.stderr is None:
            return ""
        return self.popen.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def tails() -> Iterator[list[TailProc]]:
    """Tail subprocesses started by a test, killed at its end."""
    started: list[TailProc] = []
    yield started
    for proc in started:
        proc.kill()


def ids_in(lines: list[bytes]) -> list[str]:
    """Message ids of the ``message`` records among ``--json`` lines."""
    out = []
    for line in lines:
        record = orjson.loads(line)
        if record["kind"] == "message":
            out.append(record["data"]["message_id"])
    return out


# --------------------------------------------------------------------------- tail -n


def test_tail_n_prints_the_newest_records_of_a_multi_segment_log_without_reading_old_segments(
    bus: Bus, tmp_path: Path
) -> None:
    """``tail -n N`` on a log of many segments prints exactly its last N records (plain
    lines with seq, kind, session, speaker and text; ``--json`` the lines byte for byte),
    filters before counting, and reads backwards from the end: an old segment full of
    garbage is never touched unless N reaches into it."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory, "--segment-bytes", "4000", env=PLAIN)
    pub = bus.publisher(rec, heartbeat_s=None)
    for i in range(120):
        send(pub, f"s{i % 3}", f"m{i}", f"hello {i}\n" + "x" * 100, sender=f"agent{i % 2}")
    send(pub, "s0", "m120", "bell\x07 and \x1b[2J clear screen")
    wait_for_records(directory, 121)
    stop(rec)
    pub.close(0)
    found = records(directory)
    lines = log_lines(directory)
    assert len(list_segments(directory)) >= 5

    result = run("tail", "-n", "25", "--dir", str(directory))
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    printed = result.stdout.decode().splitlines()
    assert [int(line.split("  ")[1]) for line in printed] == [r["seq"] for r in found[-25:]]
    assert b"\x1b" not in result.stdout and b"\x07" not in result.stdout  # control characters made visible
    for line, record in zip(printed, found[-25:], strict=True):
        if record["kind"] == "message" and record["data"]["message_id"] == "m120":
            assert line.endswith("  message  s0  alice: bell\\x07 and \\x1b[2J clear screen"), line
        elif record["kind"] == "message":
            i = int(record["data"]["message_id"][1:])
            assert line.endswith(f"  message  s{i % 3}  agent{i % 2}: hello {i} {'x' * 100}"), line
            assert line.startswith(record["ts"][:10] + " " + record["ts"][11:23])

    result = run("tail", "-n", "40", "--json", "--dir", str(directory))
    assert result.returncode == 0
    assert result.stdout == b"".join(lines[-40:])

    result = run("tail", "-n", "7", "--session", "s1", "--kind", "message", "--json", "--dir", str(directory))
    assert [orjson.loads(line) for line in result.stdout.splitlines()] == [
        r for r in found if r["session"] == "s1" and r["kind"] == "message"][-7:]
    result = run("tail", "-n", "3", "--kind", "recorder.*", "--json", "--dir", str(directory))
    assert [orjson.loads(line)["kind"] for line in result.stdout.splitlines()] == ["recorder.start", "recorder.stop"]

    result = run("tail", "-n", "100000", "--json", "--dir", str(directory))
    assert result.stdout == b"".join(lines)

    # Overwrite the first segment with garbage: the newest records never need it...
    first = list_segments(directory)[0][1]
    first.write_bytes(b"not a record\n" * (first.stat().st_size // 13))
    result = run("tail", "-n", "5", "--json", "--dir", str(directory))
    assert result.returncode == 0 and result.stderr == b""
    assert result.stdout == b"".join(lines[-5:])
    # ...and reaching into it reports what it skipped, one line each, and goes on.
    result = run("tail", "-n", "100000", "--dir", str(directory))
    assert result.returncode == 0
    assert b"convlog: skipped an invalid line: events/" + first.name.encode() in result.stderr
    assert b"Traceback" not in result.stderr


def test_tail_misuse_and_a_missing_log_give_one_readable_line(tmp_path: Path) -> None:
    """A kind that matches nothing is a usage error naming it; tail without -f on a
    directory without a log says so; neither prints a traceback."""
    result = run("tail", "--kind", "mesage", "--dir", str(tmp_path))
    assert result.returncode == 2
    assert b"no record kind matches 'mesage'" in result.stderr and b"Traceback" not in result.stderr
    result = run("tail", "--dir", str(tmp_path / "nothing"))
    assert result.returncode == 1
    assert result.stderr.decode().strip() == f"convlog: no event log in {tmp_path / 'nothing'} " \
                                              f"(expected {tmp_path / 'nothing' / 'events'}/*.jsonl)"


@settings(max_examples=80, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 200), max_size=40),
    cuts=st.sets(st.integers(2, 40), max_size=6),
    empty_last=st.booleans(),
    torn=st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    count=st.integers(0, 45),
    sessions=st.sets(st.sampled_from(["s0", "s1", "s2"]), max_size=2),
    kinds=st.sets(st.sampled_from(["message", "session.*", "llm.request"]), max_size=2),
    chunk=st.integers(1, 300),
)
def test_newest_equals_the_end_of_a_forward_read(
    sizes: list[int], cuts: set[int], empty_last: bool, torn: bytes, count: int, sessions: set[str],
    kinds: set[str], chunk: int,
) -> None:
    """Law: reading backwards gives the last ``count`` records a forward read gives
    (after the filter), with their exact lines, whatever the segment boundaries, line
    lengths, read chunk size and torn last line; the position is the end of the last
    complete line and ``last_seq`` the log's last seq."""
    keep = RecordFilter.of(sessions, kinds)
    kinds_cycle = ["message", "session.start", "llm.request", "message"]
    lines = [
        make_line(seq, f"2026-01-01T00:00:{seq % 60:02d}.000000Z", kinds_cycle[seq % 4], "sub", "t", f"s{seq % 3}",
                  {"content": "y" * size})
        for seq, size in enumerate(sizes, 1)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        events = directory / "events"
        events.mkdir()
        bounds = [1, *sorted(c for c in cuts if c <= len(lines)), len(lines) + 1]
        if lines:
            for low, high in itertools.pairwise(bounds):
                if low < high:
                    (events / segment_name(low)).write_bytes(b"".join(lines[low - 1:high - 1]))
        if empty_last or not lines:
            (events / segment_name(len(lines) + 1)).write_bytes(b"")
        last = list_segments(directory)[-1][1]
        with last.open("ab") as fh:
            fh.write(torn)
        expected = [(orjson.loads(line), line) for line in lines if keep(orjson.loads(line))]
        expected = expected[-count:] if count else []
        got = newest(directory, count, keep, raw=True, chunk=chunk)
        assert [(t.record, t.line) for t in got.records] == expected
        assert got.position == (last.name, last.stat().st_size - len(torn))
        assert got.last_seq == len(lines)
        assert got.skipped == []


# --------------------------------------------------------------------------- Follower on real files


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(1, 5)),
            st.tuples(st.just("split"), st.integers(1, 30)),
            st.just(("rotate", 0)),
            st.tuples(st.just("crash"), st.integers(1, 30)),
            st.just(("garbage", 0)),
            st.just(("empty-segment", 0)),
            st.just(("unrotate", 0)),
        ),
        max_size=25,
    ),
    start_with=st.integers(0, 6),
    start_rotated=st.booleans(),
    kinds=st.sets(st.sampled_from(["message", "recorder.*"]), max_size=1),
)
@example(ops=[("unrotate", 0), ("append", 3)], start_with=2, start_rotated=True, kinds=set())  # its segment vanishes
@example(ops=[("garbage", 0), ("append", 2), ("split", 5)], start_with=1, start_rotated=False, kinds=set())
def test_follower_returns_every_appended_record_once_across_rotation_and_recovery(
    ops: list[tuple[str, int]], start_with: int, start_rotated: bool, kinds: set[str]
) -> None:
    """Law: whatever a recorder does to the end of the log between two polls (append
    whole lines, a line written in two parts, rotate, crash leaving a torn tail that
    recovery truncates, an invalid line that recovery cuts, an empty new segment that
    recovery removes, possibly the one the follower started in, the writer then going
    on in the previous segment), the records the follower returns, in order, are exactly
    the records after its start position that pass the filter, each once, with its
    exact line."""
    keep = RecordFilter.of((), kinds)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        events = directory / "events"
        events.mkdir()
        seq = 0
        current = events / segment_name(1)
        current.write_bytes(b"")

        def line(n: int) -> bytes:
            kind = "message" if n % 3 else "recorder.start"
            return make_line(n, "2026-01-01T00:00:00.000000Z", kind, "sub", "t", "s", {"content": f"m{n}"})

        def write(data: bytes) -> None:
            with current.open("ab") as fh:
                fh.write(data)

        for _ in range(start_with):
            seq += 1
            write(line(seq))
        if start_rotated and seq:
            current = events / segment_name(seq + 1)
            current.write_bytes(b"")
        start = newest(directory, 0)
        follower = Follower(directory, start.position, start.last_seq, keep, raw=True)
        got: list[tuple[dict, bytes]] = []

        def poll() -> None:
            got.extend((t.record, t.line) for t in follower.poll().records)

        for op, arg in ops:
            if op == "append":
                for _ in range(arg):
                    seq += 1
                    write(line(seq))
            elif op == "split":
                seq += 1
                whole = line(seq)
                cut = min(arg, len(whole) - 1)
                write(whole[:cut])
                poll()
                write(whole[cut:])
            elif op == "rotate":
                current = events / segment_name(seq + 1)
                current.write_bytes(b"")
            elif op == "crash":  # torn tail, then recovery cuts it
                size = current.stat().st_size
                write(line(seq + 1)[:arg])
                poll()
                os.truncate(current, size)
            elif op == "garbage":  # an invalid whole line, then recovery cuts it
                size = current.stat().st_size
                write(b'{"not": "a record"}\n')
                poll()
                os.truncate(current, size)
            elif op == "unrotate":  # recovery removed the empty last segment; the writer reopens the one before
                segments = list_segments(directory)
                if len(segments) > 1 and current.stat().st_size == 0:
                    current.unlink()
                    current = segments[-2][1]
            elif op == "empty-segment":  # rotated just before a crash; recovery removes it
                empty = events / segment_name(seq + 1)
                if empty != current:
                    empty.write_bytes(b"")
                    poll()
                    empty.unlink()
            poll()
        poll()
        everything = [(orjson.loads(x), x) for x in log_lines(directory)]
        expected = [(r, x) for r, x in everything if r["seq"] > start.last_seq and keep(r)]
        assert got == expected


# --------------------------------------------------------------------------- tail -f


def test_tail_follow_sees_new_records_across_rotations_and_a_kill9_restart(
    bus: Bus, tmp_path: Path, tails: list[TailProc]
) -> None:
    """``tail -f --json`` started on a running log prints every record appended after
    it started, exactly as in the log and each once: a message published after it
    started, records across many segment rotations, and the records of a recorder
    killed with kill -9 (leaving a torn line, which recovery quarantines and tail never
    prints) and started again. Ctrl-C ends it with exit 0 and nothing on stderr."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory, "--segment-bytes", "3000", env=PLAIN)
    pub = bus.publisher(rec, heartbeat_s=None)
    for i in range(5):
        send(pub, "s", f"before{i}", "x")
    wait_for_records(directory, 5)

    tail = TailProc("-f", "-n", "1", "--json", "--dir", str(directory))
    tails.append(tail)
    first = tail.wait_until(lambda lines: len(lines) >= 1, "the newest record")[0]
    assert orjson.loads(first)["data"]["message_id"] == "before4"

    send(pub, "s", "after-start", "published after tail started")
    tail.wait_until(lambda lines: "after-start" in ids_in(lines[1:]), "the message published after it started")

    segments_before = len(list_segments(directory))
    for i in range(40):
        send(pub, "s", f"rot{i}", "y" * 200)
    tail.wait_until(lambda lines: "rot39" in ids_in(lines), "the records across rotations")
    assert len(list_segments(directory)) >= segments_before + 3

    rec.kill9()
    torn = b'{"seq": 999999, "ts": "2026-'
    last_segment = list_segments(directory)[-1][1]
    with last_segment.open("ab") as fh:
        fh.write(torn)
    rec = bus.recorder(directory, "--segment-bytes", "3000", env=PLAIN)
    pub.close(0)
    pub = bus.publisher(rec, heartbeat_s=None)
    for i in range(10):
        send(pub, "s", f"restart{i}", "z" * 100)
    lines = tail.wait_until(lambda lines: "restart9" in ids_in(lines), "the records after the restart")
    stop(rec)
    pub.close(0)
    lines = tail.wait_until(lambda lines: orjson.loads(lines[-1])["kind"] == "recorder.stop", "recorder.stop")

    log = log_lines(directory)
    assert lines == log[log.index(first):]  # every record from where it started, once, byte for byte
    kinds = [orjson.loads(line)["kind"] for line in lines]
    assert "recorder.recovered" in kinds and kinds.count("recorder.start") == 1
    quarantine = (directory / "recovery" / "quarantine.jsonl").read_bytes()
    assert orjson.loads(quarantine)["text"] == torn.decode()
    assert all(torn not in line for line in lines)

    code, err = tail.interrupt()
    assert code == 0, err
    assert err == ""


def test_tail_follow_waits_for_a_log_that_does_not_exist_yet_and_filters(
    bus: Bus, tmp_path: Path, tails: list[TailProc]
) -> None:
    """``tail -f`` on a directory that does not exist yet waits for it; once a recorder
    starts there it prints what passes the filters (a session and a kind), from the
    first record on, in both the plain and the JSON form."""
    directory = tmp_path / "later" / "log"
    as_json = TailProc("-f", "--json", "--session", "s2", "--kind", "message", "--dir", str(directory))
    plain = TailProc("-f", "--session", "s2", "--kind", "message", "--dir", str(directory))
    tails += [as_json, plain]
    time.sleep(1.0)  # let both start watching before the directory appears (not a speed check)
    assert as_json.popen.poll() is None and plain.popen.poll() is None

    directory.parent.mkdir()
    rec = bus.recorder(directory)
    pub = bus.publisher(rec, heartbeat_s=None)
    for i in range(30):
        send(pub, f"s{i % 3}", f"m{i}", f"text {i}")
    wait_for_records(directory, 30)
    wanted = [f"m{i}" for i in range(30) if i % 3 == 2]
    lines = as_json.wait_until(lambda lines: len(lines) >= len(wanted), "the s2 messages")
    plain_lines = plain.wait_until(lambda lines: len(lines) >= len(wanted), "the s2 messages (plain)")
    stop(rec)
    pub.close(0)

    expected = [r for r in records(directory) if r["session"] == "s2" and r["kind"] == "message"]
    assert [orjson.loads(line) for line in lines] == expected
    assert ids_in(lines) == wanted
    assert [line.decode().split("  ", 2)[1] for line in plain_lines] == [str(r["seq"]) for r in expected]
    assert all(f"  message  s2  alice: text {m[1:]}\n" in line.decode() for line, m in zip(plain_lines, wanted,
                                                                                          strict=True))
    for proc in (as_json, plain):
        code, err = proc.interrupt()
        assert (code, err) == (0, "")
    assert len(as_json.lines) == len(wanted)  # recorder.start/stop and other sessions never passed


# --------------------------------------------------------------------------- info


def test_info_counts_equal_counts_computed_from_the_log(bus: Bus, tmp_path: Path) -> None:
    """``convlog info --json`` on a real recording (the Shearwater crash-recovery file
    published through a broker, a gap made by a publisher whose stamps jump, a fork and
    a delete through the control channel, a labelled checkpoint, a torn tail moved to
    quarantine by ``convlog recover``) reports what a direct count over the log gives:
    records by kind and source, time span, segments, sessions, publishers, gaps,
    checkpoints, disk use and quarantine. The plain form shows the same figures."""
    directory = tmp_path / "log"
    rec = bus.recorder(directory, "--segment-bytes", "20000", env=PLAIN)
    bus.publisher(rec, heartbeat_s=None).close(0)
    source = shearwater_file("crash_recovery.jsonl")
    result = subprocess.run(
        convlog_cmd("publish", str(source), "--endpoint", bus.xsub, "--publisher-id", "shearwater-replay"),
        capture_output=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    jumpy = bus.publisher(rec, heartbeat_s=None)
    jumpy.stamp = False  # stamps written by hand: seq 1, then 5 (2..4 never sent)
    for n in (1, 5):
        jumpy.send(b"jumpy", orjson.dumps({"type": "message", "session_id": "j", "message_id": f"j{n}",
                                           "content": "x", "convlog": {"publisher": "jumpy", "seq": n}}))
    jumpy.close(0)
    wait_for_records(directory, 416)
    for args in (["fork", "j", "--name", "alt"], ["delete", "j"], ["checkpoint", "create", "--label", "before"]):
        done = subprocess.run(convlog_cmd(*args, "--dir", str(directory)), capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr
    stop(rec)
    torn = b'{"seq": 424242, "kind": "mess'
    with list_segments(directory)[-1][1].open("ab") as fh:
        fh.write(torn)
    assert subprocess.run(convlog_cmd("recover", str(directory)), capture_output=True, timeout=60).returncode == 0

    result = run("info", "--json", "--dir", str(directory))
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    info = orjson.loads(result.stdout)

    found = records(directory)
    assert info["records"] == len(found)
    assert (info["first_seq"], info["last_seq"]) == (1, found[-1]["seq"])
    assert info["by_kind"] == dict(collections.Counter(r["kind"] for r in found))
    assert info["by_source"] == dict(collections.Counter(r["source"] for r in found))
    assert info["first_ts"] == min(r["ts"] for r in found) and info["last_ts"] == max(r["ts"] for r in found)
    assert info["duration_s"] >= 0
    segments = list_segments(directory)
    assert len(segments) >= 3
    assert info["segments"] == [
        {"name": path.name, "first_seq": first, "bytes": path.stat().st_size,
         "records": sum(1 for line in path.read_bytes().splitlines() if line.strip())}
        for first, path in segments
    ]
    stamped: collections.Counter[str] = collections.Counter()
    for r in found:
        if r["source"] == "sub" and isinstance(r["data"], dict) and isinstance(r["data"].get("convlog"), dict):
            stamped[r["data"]["convlog"]["publisher"]] += r["kind"] != "publisher.heartbeat"
    assert {p["id"]: p["messages"] for p in info["publishers"]} == dict(stamped)
    assert stamped["shearwater-replay"] == 414
    gaps = [r for r in found if r["kind"] == "recorder.gap"]
    assert info["gaps"] == {"records": len(gaps), "missing": sum(r["data"]["missing"] for r in gaps)} \
        == {"records": 1, "missing": 3}
    assert next(p for p in info["publishers"] if p["id"] == "jumpy")["missing"] == 3
    drops = [r for r in found if r["kind"] == "recorder.dropped"]
    assert info["drops"] == {"records": len(drops), "messages": sum(r["data"]["messages"] for r in drops)}
    state = load(directory, use_checkpoints=False).state
    every = state.session_list(include_deleted=True)
    assert info["sessions"]["live"] == len(state.session_list()) > 0
    assert info["sessions"]["deleted"] == sum(1 for s in every if s.deleted) == 1
    assert info["sessions"]["forks"] == sum(1 for s in every if s.parent is not None) == 1
    checkpoint_files = sorted((directory / "checkpoints").glob("*.json"))
    assert info["checkpoints"]["count"] == len(checkpoint_files) >= 2  # labelled + the one at the clean stop
    assert info["checkpoints"]["labelled"] == ["before"]
    assert info["checkpoints"]["bytes"] == sum(p.stat().st_size for p in checkpoint_files)
    assert info["disk"]["events"]["bytes"] == sum(p.stat().st_size for _, p in segments)
    assert info["disk"]["checkpoints"]["files"] == len(checkpoint_files)
    quarantine = directory / "recovery" / "quarantine.jsonl"
    assert info["quarantine"] == {"file_bytes": quarantine.stat().st_size, "entries": 1,
                                  "salvaged_bytes": len(torn), "unreadable_entries": 0}
    assert info["disk"]["total"]["bytes"] == sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())

    plain = run("info", "--dir", str(directory))
    assert plain.returncode == 0 and plain.stderr == b""  # no progress bar when stderr is not a terminal
    text = plain.stdout.decode()
    assert f"records:      {len(found):,} (seq 1..{found[-1]['seq']})" in text
    assert "gaps:         1 recorder.gap records, 3 messages missing" in text
    assert f"sessions:     {info['sessions']['live']:,} live, 1 deleted, 1 forks" in text
    assert all(path.name in text for _, path in segments[-10:])

    empty = run("info", "--dir", str(tmp_path / "empty"))
    assert empty.returncode == 1 and empty.stderr.decode().startswith("convlog: no event log in ")


def test_a_purged_record_is_shown_as_purged_and_its_kind_can_be_followed() -> None:
    """``tail`` shows a purged record's text as ``(purged)`` (nothing of the payload) and
    ``--kind session.purged`` is a kind of the vocabulary."""
    from convlog.core.purge import purged_line
    from convlog.core.record import parse_line
    from convlog.readers.tail import line_parts, plain_line

    original = parse_line(make_line(7, "2026-11-21T12:00:00.000000Z", "message", "sub", "t", "s",
                                    {"content": "private"}, {"sender": "ann", "sha256": "00"}))
    line = plain_line(line_parts(parse_line(purged_line(original))))
    assert line.endswith("message  s  sub: (purged)") and "private" not in line and "ann" not in line
    assert RecordFilter.of(kinds=["session.purged"])({"kind": "session.purged"})
