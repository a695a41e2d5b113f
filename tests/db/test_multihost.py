"""Past one machine, on one machine: three hosts (each a real broker, a real recorder
and a real ``convlog sync --follow``) and one PostgreSQL. ShareGPT conversations and the
Shearwater recording are spread across the hosts, and one conversation travels through
two of them (an agent on host A answering one on host B: its messages alternate between
the two buses, and its first message is heard by both). The database must then show
the union of the three logs' sessions, the shared conversation once with each message
once and its copy counted, and search the same rare words to the same sessions."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import orjson
import psycopg
import pytest

from conftest import answering, convlog_cmd, records, running_bus, shearwater_file, spawn, wait_for_records
from convlog.cli.sharegpt import conversations, native_events
from convlog.store.identity import read_log_id

pytestmark = pytest.mark.slow

FIELDS = ("id", "branch", "parent", "fork_at", "messages", "duplicates", "participants", "deleted")
SHARED = "shared-across-hosts"


def ok(*args: str) -> str:
    result = subprocess.run(convlog_cmd(*args), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"convlog {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_three_hosts_one_database(tmp_path: Path, pg_url: str) -> None:
    hosts = []
    for name in "abc":
        (tmp_path / name).mkdir()
    with running_bus(tmp_path / "a") as bus_a, running_bus(tmp_path / "b") as bus_b, \
            running_bus(tmp_path / "c") as bus_c:
        syncs = []
        for name, bus in (("a", bus_a), ("b", bus_b), ("c", bus_c)):
            directory = tmp_path / name / "log"
            recorder = bus.recorder(directory)
            answering(directory, recorder)
            syncs.append(spawn(["sync", "--follow", "--dir", str(directory), "--log-level", "WARNING"],
                               tmp_path / name / "sync.log", env={"CONVLOG_DB": pg_url}))
            hosts.append((bus, directory, recorder))
        try:
            publishers = [bus.publisher(recorder, heartbeat_s=None) for bus, _, recorder in hosts]
            sent = [0, 0, 0]
            # ShareGPT conversations, each on one host.
            for index, conversation in enumerate(conversations()):
                if index == 12:
                    break
                for event in native_events(conversation):
                    publishers[index % 3].send(event["session_id"].encode(), orjson.dumps(event))
                    sent[index % 3] += 1
            # The Shearwater recording on host C.
            ok("publish", str(shearwater_file("current_session.jsonl")), "--to", hosts[2][0].xsub, "--wait", "10")
            # One conversation through hosts A and B: message 1 heard by both buses, then
            # alternating; each message waits for the one before it to be recorded.
            texts = ["Where is the zymurgical report?", "In the otolaryngological archive.",
                     "Send it to the quinquagenarian reviewer.", "Done: the palimpsestuous draft is out."]
            for number, text in enumerate(texts, 1):
                event = {"type": "message", "session_id": SHARED, "message_id": f"x{number}",
                         "sender": "agent-a" if number % 2 else "agent-b", "content": text}
                targets = (0, 1) if number == 1 else ((0,) if number % 2 else (1,))
                for target in targets:
                    publishers[target].send(SHARED.encode(), orjson.dumps(event))
                    sent[target] += 1
                    wait_for_records(hosts[target][1], sent[target])
            for target in range(3):
                wait_for_records(hosts[target][1], sent[target])
            for publisher in publishers:
                publisher.close(1000)
            for _, _, recorder in hosts:
                assert recorder.terminate() == 0, recorder.output()
            # The followers catch up with the logs' ends.
            ends = {read_log_id(directory): records(directory)[-1]["seq"] for _, directory, _ in hosts}
            deadline = time.monotonic() + 60
            with psycopg.connect(pg_url, autocommit=True) as conn:
                while True:
                    synced = dict(conn.execute("SELECT log_id::text, seq FROM convlog.positions").fetchall())
                    dirty = conn.execute("SELECT count(*) FROM convlog.dirty").fetchone()[0]
                    if synced == ends and dirty == 0:
                        break
                    assert time.monotonic() < deadline, (synced, ends, [s.output() for s in syncs])
                    time.sleep(0.2)
        finally:
            for proc in syncs:
                if proc.popen.poll() is None:
                    proc.popen.terminate()
                    proc.popen.wait(30)
    assert all(proc.popen.returncode == 0 for proc in syncs), [proc.output() for proc in syncs]

    local: dict[str, list[dict]] = {}
    for _, directory, _ in hosts:
        for row in orjson.loads(ok("sessions", "--dir", str(directory), "--json", "--all")):
            local.setdefault(row["id"], []).append(row)
    remote = {row["id"]: row for row in orjson.loads(ok("sessions", "--db", pg_url, "--json", "--all"))}
    assert set(remote) == set(local)
    assert [sid for sid, rows in local.items() if len(rows) > 1] == [SHARED]
    for sid, rows in local.items():
        if sid != SHARED:
            assert {k: remote[sid][k] for k in FIELDS} == {k: rows[0][k] for k in FIELDS}, sid
    shared = remote[SHARED]
    assert (shared["messages"], shared["duplicates"]) == (4, 1)
    assert sorted(shared["participants"]) == ["agent-a", "agent-b"] and len(shared["logs"]) == 2
    shown = orjson.loads(ok("show", SHARED, "--db", pg_url, "--format", "json"))
    assert [m["text"] for m in shown["messages"]] == texts
    assert [m["copies"] for m in shown["messages"]] == [2, 1, 1, 1]

    # Rare words answer alike: the local searches' union and the database's.
    for word in ("zymurgical", "otolaryngological", "quinquagenarian", "palimpsestuous"):
        hits = orjson.loads(ok("search", word, "--db", pg_url, "--json"))
        assert [h["session"] for h in hits] == [SHARED], word
    checked = 0
    for conversation in list(conversations())[:12]:
        words = [w for event in native_events(conversation) for w in str(event.get("content", "")).split()
                 if w.isalpha() and len(w) > 9]
        for word in words[:2]:
            local_sessions: set[str] = set()
            for _, directory, _ in hosts:
                found = ok("search", word, "--dir", str(directory), "--json", "--limit", "200")
                local_sessions |= {h["session"] for h in orjson.loads(found)}
            remote_sessions = {h["session"] for h in
                               orjson.loads(ok("search", word, "--db", pg_url, "--json", "--limit", "200"))}
            assert remote_sessions == local_sessions, word
            checked += 1
    assert checked >= 10
    assert os.environ.get("CONVLOG_DB") is None  # the syncs got it through their environment only
