"""convlog sync into a real PostgreSQL (started by the test run, tests/pg_server.py), and
the readers on it: every record once, the projections equal to the local fold, show,
search and export answering like the log directory does; values PostgreSQL refuses kept
losslessly; retention waiting for the sync; status and doctor."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import orjson
import psycopg
import pytest

from conftest import convlog_cmd, records
from convlog.core.ingest import Ingest
from convlog.core.record import make_line
from convlog.db.schema import SCHEMA_VERSION
from convlog.store.identity import read_log_id
from convlog.store.segment import ensure_layout, list_segments
from convlog.store.writer import SegmentWriter

pytestmark = pytest.mark.slow

#: The fields of ``sessions --json`` that do not depend on where the log lives.
SESSION_FIELDS = ("id", "branch", "parent", "fork_at", "messages", "duplicates", "participants", "last_activity",
                  "deleted")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(convlog_cmd(*args), capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def ok(*args: str) -> str:
    result = run(*args)
    assert result.returncode == 0, f"convlog {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's log (a real broker, recorder and traffic: ShareGPT conversations, a
    fork, a rewind, a crystal, a streamed reply, llm requests)."""
    directory = tmp_path_factory.mktemp("demo") / "log"
    ok("demo", "--dir", str(directory), "--conversations", "6")
    return directory


def session_view(rows: list[dict]) -> list[dict]:
    return sorted(({key: row[key] for key in SESSION_FIELDS} for row in rows), key=lambda row: row["id"])


def test_sync_writes_every_record_once_and_the_projection_is_the_local_fold(demo_log: Path, pg_url: str) -> None:
    ok("sync", "--db", pg_url, "--dir", str(demo_log), "--once")
    log = records(demo_log)
    log_id = read_log_id(demo_log)
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("""SELECT seq, kind, session, meta->>'sha256', chain FROM convlog.records
                               WHERE log_id = %s ORDER BY seq""", (log_id,)).fetchall()
        position = conn.execute("SELECT seq, records FROM convlog.positions WHERE log_id = %s", (log_id,)).fetchone()
    assert rows == [(r["seq"], r["kind"], r.get("session"), (r.get("meta") or {}).get("sha256"), r.get("chain"))
                    for r in log]
    assert position == (log[-1]["seq"], len(log))

    local = orjson.loads(ok("sessions", "--dir", str(demo_log), "--json", "--all"))
    remote = orjson.loads(ok("sessions", "--db", pg_url, "--json", "--all"))
    assert session_view(remote) == session_view(local)
    assert all(row["logs"] == [log_id] for row in remote)

    # A second run writes nothing.
    ok("sync", "--db", pg_url, "--dir", str(demo_log), "--once")
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*), max(seq) FROM convlog.records").fetchone() == (len(log), log[-1]["seq"])
        assert conn.execute("SELECT records FROM convlog.positions").fetchone() == (len(log),)


def test_show_export_and_search_on_the_database_answer_like_the_log(demo_log: Path, pg_url: str) -> None:
    ok("sync", "--db", pg_url, "--dir", str(demo_log), "--once")
    ids = [row["id"] for row in orjson.loads(ok("sessions", "--dir", str(demo_log), "--json"))]
    assert len(ids) >= 5
    for sid in ids:
        local = orjson.loads(ok("show", sid, "--dir", str(demo_log), "--format", "json"))
        remote = orjson.loads(ok("show", sid, "--db", pg_url, "--format", "json"))
        fields = ("message_id", "sender", "role", "text", "ts", "copies", "streamed", "complete")
        assert [{k: m[k] for k in fields} for m in remote["messages"]] == \
            [{k: m[k] for k in fields} for m in local["messages"]], sid
        assert (remote["parent"], remote["fork_at"], remote["branch"]) == \
            (local["parent"], local["fork_at"], local["branch"])
    local_md = ok("export", ids[0], "--dir", str(demo_log), "--format", "markdown")
    remote_md = ok("export", ids[0], "--db", pg_url, "--format", "markdown")
    # The same transcript; seqs differ (the database numbers a family's records from 1).
    assert _without_seqs(remote_md) == _without_seqs(local_md)

    # Rare words: a word of one message only, found by both searches in the same session.
    words: dict[str, set[str]] = {}
    for record in records(demo_log):
        if record["kind"] == "message" and isinstance(record.get("data"), dict):
            for word in str(record["data"].get("content", "")).lower().split():
                if word.isalpha() and len(word) > 7:
                    words.setdefault(word, set()).add(record["session"])
    rare = sorted(word for word, where in words.items() if len(where) == 1)[:8]
    assert rare
    for word in rare:
        local_hits = orjson.loads(ok("search", word, "--dir", str(demo_log), "--json"))
        remote_hits = orjson.loads(ok("search", word, "--db", pg_url, "--json"))
        assert {h["session"] for h in remote_hits} == {h["session"] for h in local_hits}, word
        assert len(remote_hits) == len(local_hits), word


def _without_seqs(text: str) -> str:
    import re

    return re.sub(r"seqs? \d+(?: to \d+)?", "seq N", text)


def test_values_postgres_refuses_are_kept_losslessly(tmp_path: Path, pg_url: str) -> None:
    """A NUL escape in a JSON payload (jsonb refuses it), a NUL in a topic (text refuses
    it), an integer past 64 bits, bytes that are not UTF-8: synced, nothing lost."""
    directory = tmp_path / "log"
    ensure_layout(directory)
    ingest = Ingest()
    payloads = [
        (b"s1", b'{"type":"message","session_id":"s1","message_id":"a","content":"nul \\u0000 here"}'),
        (b"t\x00pic", b'{"type":"message","session_id":"s2","message_id":"b","content":"big",'
                      b'"n":123456789012345678901234567890}'),
        (b"raw", b"\xff\xfe not utf-8"),
    ]
    writer = SegmentWriter(directory, next_seq=1)
    for seq, frames in enumerate(payloads, 1):
        writer.write(ingest.line(list(frames), seq, f"2026-11-21T12:00:0{seq}.000000Z", "sub"), seq)
    writer.write(make_line(4, "2026-11-21T12:00:04.000000Z", "recorder.stop", "recorder", None, None, {}), 4)
    writer.close()
    ok("sync", "--db", pg_url, "--dir", str(directory), "--once")
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT seq, topic, data, data_json::text, meta FROM convlog.records "
                            "ORDER BY seq").fetchall()
    assert rows[0][2] is None and rows[0][3] == payloads[0][1].decode()  # kept as the exact JSON text
    assert rows[1][1] == "t\ufffdpic" and rows[1][2]["n"] == 123456789012345678901234567890
    assert rows[2][2] == {"base64": "//4gbm90IHV0Zi04"} and rows[2][4]["encoding"] == "base64"
    assert hashlib.sha256(payloads[0][1]).hexdigest() == rows[0][4]["sha256"]


def test_retention_waits_for_the_sync(tmp_path: Path, pg_url: str) -> None:
    directory = tmp_path / "log"
    ensure_layout(directory)
    writer = SegmentWriter(directory, next_seq=1, segment_bytes=2000)
    ingest = Ingest()
    for seq in range(1, 121):
        event = {"type": "message", "session_id": f"s{seq % 3}", "message_id": f"m{seq}", "content": f"hello {seq}"}
        writer.write(ingest.line([b"t", orjson.dumps(event)], seq, f"2026-11-21T12:{seq // 60:02d}:{seq % 60:02d}."
                                 "000000Z", "sub"), seq)
    writer.close()
    config = tmp_path / "convlog.toml"
    config.write_text(f'[sync]\ndb = "{pg_url}"\n')
    first = list_segments(directory)[0][1].name
    report = orjson.loads(ok("prune", str(directory), "--config", str(config), "--max-bytes", "4000", "--json"))
    assert report["segments"] == [] and report["held_for_sync"] > 0
    assert list_segments(directory)[0][1].name == first and records(directory)[0]["seq"] == 1
    ok("sync", "--db", pg_url, "--dir", str(directory), "--once")
    report = orjson.loads(ok("prune", str(directory), "--config", str(config), "--max-bytes", "4000", "--json"))
    assert report["segments"] and report["held_for_sync"] == 0
    # The position's segment went: the next sync reads on from the next seq.
    ok("sync", "--db", pg_url, "--dir", str(directory), "--once")
    log = records(directory)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT max(seq) FROM convlog.records").fetchone()[0] == log[-1]["seq"]
    shutil.rmtree(directory)


def test_status_and_doctor_see_the_sync(demo_log: Path, pg_url: str, tmp_path: Path) -> None:
    copy = tmp_path / "log"
    shutil.copytree(demo_log, copy)
    (copy / "log_id").unlink(missing_ok=True)  # a log of its own
    ok("sync", "--db", pg_url, "--dir", str(copy), "--once")
    lag = orjson.loads(ok("status", "--db", pg_url, "--json"))
    assert [row["lag_records"] for row in lag] == [0] and lag[0]["directory"] == str(copy)
    assert [row["search_behind"] for row in lag] == [0]  # --once makes the views before it ends
    config = tmp_path / "convlog.toml"
    config.write_text(f'[sync]\ndb = "{pg_url}"\n')
    doctor = run("doctor", "--dir", str(copy), "--config", str(config), "--sub", "tcp://127.0.0.1:1")
    assert "database" in doctor.stdout and f"schema version {SCHEMA_VERSION}" in doctor.stdout, doctor.stdout
    bad = run("sessions", "--db", "postgresql://nobody@127.0.0.1:1/none")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_the_documented_sql_runs(demo_log: Path, pg_url: str) -> None:
    """Every statement of docs/database.md's example SQL runs against a synced log, and
    the questions it answers have answers there."""
    import re

    ok("sync", "--db", pg_url, "--dir", str(demo_log), "--once")
    doc = (Path(__file__).resolve().parents[2] / "docs" / "database.md").read_text()
    statements = [s.strip() for block in re.findall(r"```sql\n(.*?)```", doc, re.S) for s in block.split(";")]
    statements = [s for s in statements if s]
    assert len(statements) >= 6
    answered = 0
    with psycopg.connect(pg_url) as conn:
        for statement in statements:
            answered += bool(conn.execute(statement).fetchall())
    assert answered >= 4  # costs, messages per agent per day, sync positions, a transcript
