"""Secrets never reach the disk: a real broker and recorder, every built-in secret
format (and a user rule) published, then every file under DIR, the search index, an
export, an import and the recorder's output searched for any piece of a secret."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
import pyzstd

from conftest import Bus, answering, convlog_cmd, records, wait_for_records
from convlog.bus import control
from convlog.store.replay import load
from secret_samples import SAMPLES, message_text

USER_SECRET = "itk_" + "Q7w2E9r4T6y1U3i5O8p0A2s4D6f8G1h3"
CONFIG = """
[redact]
enabled = true
[[redact.rules]]
id = "internal-token"
regex = "itk_[A-Za-z0-9]{32}"
keywords = ["itk_"]
"""
RULES = [*sorted(SAMPLES), "internal-token"]


def secrets() -> dict[str, str]:
    return {**SAMPLES, "internal-token": USER_SECRET}


def pieces(secret: str) -> list[bytes]:
    """Parts of a secret that must appear nowhere: the whole, and each run of 12+
    letters and digits (a tokenizer such as the search index's splits on ``_`` and ``-``)."""
    runs = re.findall(r"[A-Za-z0-9]{12,}", secret)
    return [secret.encode(), *(r.encode() for r in runs)]


def file_bytes(path: Path) -> bytes:
    """A file's bytes, decompressed when it is zstd (sealed segments, checkpoints, exports)."""
    raw = path.read_bytes()
    if raw[:4] == b"\x28\xb5\x2f\xfd" or path.suffix == ".zst":
        try:
            return raw + pyzstd.decompress(raw)
        except pyzstd.ZstdError:
            return raw
    return raw


def assert_nothing_of_the_secrets(where: str, blobs: dict[str, bytes]) -> None:
    found = []
    for name, blob in blobs.items():
        for rule, secret in secrets().items():
            for piece in pieces(secret):
                if piece in blob:
                    found.append(f"{rule} in {name} ({piece[:12]!r}...)")
                    break
    assert not found, f"secret bytes in {where}: {found}"


def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(convlog_cmd(*args), capture_output=True, timeout=120)


def test_no_secret_byte_reaches_any_file_under_dir(bus: Bus, tmp_path: Path) -> None:
    directory = tmp_path / "log"
    config = tmp_path / "convlog.toml"
    config.write_text(CONFIG)
    rec = bus.recorder(directory, "--config", str(config), "--segment-bytes", "4096", "--log-level", "DEBUG")
    pub = bus.publisher(rec, heartbeat_s=None)
    answering(directory, rec)
    sent = 0
    for index, rule in enumerate(RULES):
        text = message_text(rule) if rule in SAMPLES else f"my token is {USER_SECRET}, keep it"
        session = f"s{index % 3}"
        event = {"type": "message", "session_id": session, "message_id": f"m{index}", "sender": "ann",
                 "role": "user", "content": text}
        pub.send(session.encode(), orjson.dumps(event))
        sent += 1
        if index % 5 == 0:  # the same message again (a copy, as a PUSHed twin would be)
            pub.send(session.encode(), orjson.dumps(event))
            sent += 1
    # In a topic, in a non-JSON payload and in an extra frame.
    pub.send_frames([SAMPLES["github-pat"].encode(), f"plain {SAMPLES['gcp-api-key']}".encode(),
                     SAMPLES["aws-access-token"].encode()])
    sent += 1
    for n in range(40):  # enough bytes for several 4 KiB segments, sealed in the background
        pub.send(b"s9", orjson.dumps({"type": "message", "session_id": "s9", "message_id": f"p{n}",
                                      "content": "filler " * 30}))
        sent += 1
    wait_for_records(directory, sent)
    # A session control record through the control channel, with a secret in its data.
    control.request(directory, "append", kind="session.checkpoint", session="s0",
                    data={"name": "cp", "note": SAMPLES["slack-bot-token"]})
    assert run_cli("checkpoint", "create", "--dir", str(directory), "--label", "mid").returncode == 0
    status = run_cli("status", "--dir", str(directory))
    assert b"redaction: on" in status.stdout, status.stdout + status.stderr
    pub.close(1000)
    assert rec.terminate() == 0, rec.output()

    # Import (recorder stopped): a legacy-looking line and an OpenAI chat line with secrets.
    chat = tmp_path / "chat.jsonl"
    chat.write_text(orjson.dumps({"role": "user", "content": message_text("openai-api-key")}).decode() + "\n")
    imported = run_cli("import", "--dir", str(directory), str(chat))
    assert imported.returncode == 0, imported.stderr

    # Readers: search (builds the index), an export, the fold.
    search = run_cli("search", "--dir", str(directory), "token")
    exports = tmp_path / "exports"
    exports.mkdir()
    export = run_cli("export", "--dir", str(directory), "--out", str(exports), "--all", "--with-history")
    outputs = {"search stdout": search.stdout + search.stderr, "export stdout": export.stdout + export.stderr,
               "status": status.stdout + status.stderr, "import": imported.stdout + imported.stderr,
               "recorder output": rec.output().encode()}

    blobs = {str(p.relative_to(tmp_path)): file_bytes(p) for p in directory.rglob("*") if p.is_file()}
    blobs |= {str(p.relative_to(tmp_path)): file_bytes(p) for p in exports.rglob("*") if p.is_file()}
    assert any(name.endswith(".zst") for name in blobs), sorted(blobs)  # sealed segments were searched
    assert any("index" in name for name in blobs), sorted(blobs)  # so was the search index
    assert any("checkpoints" in name for name in blobs), sorted(blobs)
    assert_nothing_of_the_secrets("the log directory or exports", blobs)
    assert_nothing_of_the_secrets("command output", outputs)

    log = records(directory)
    text = b"\n".join(orjson.dumps(r) for r in log)
    for rule in RULES:
        assert f"[REDACTED:{rule}:".encode() in text, rule
    redacted = [r for r in log if "redactions" in (r.get("meta") or {})]
    assert all(r["meta"]["stored_sha256"] != r["meta"]["sha256"] for r in redacted if r["source"] == "sub")
    assert any(r["source"] == "import" for r in redacted)
    control_records = [r for r in log if r["source"] == "control"]
    assert control_records and "[REDACTED:slack-bot-token:" in control_records[0]["data"]["note"]

    # The fold: every session with all its distinct messages; the copies counted as copies.
    state = load(directory).state
    copies = sum(1 + (i % 5 == 0) for i in range(len(RULES))) - len(RULES)
    assert sum(s.duplicates for s in state.sessions.values()) == copies
    for n in range(3):
        expected = sum(1 for index in range(len(RULES)) if index % 3 == n)
        assert len(state.sessions[f"s{n}"].visible.seqs) == expected


def test_no_redact_stores_the_bytes_and_status_says_so(bus: Bus, tmp_path: Path) -> None:
    directory = tmp_path / "log"
    rec = bus.recorder(directory, "--no-redact")
    pub = bus.publisher(rec, heartbeat_s=None)
    answering(directory, rec)
    pub.send(b"s", orjson.dumps({"type": "message", "session_id": "s", "message_id": "m",
                                 "content": message_text("github-pat")}))
    found = wait_for_records(directory, 1)
    status = run_cli("status", "--dir", str(directory))
    assert b"redaction: OFF" in status.stdout, status.stdout + status.stderr
    pub.close(1000)
    assert rec.terminate() == 0
    message = next(r for r in found if r["kind"] == "message")
    assert SAMPLES["github-pat"] in message["data"]["content"] and "redactions" not in message["meta"]


def test_a_bad_redact_rule_stops_the_recorder_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "convlog.toml"
    config.write_text('[redact]\ndisable = ["no-such-rule"]\n')
    result = subprocess.run([sys.executable, "-m", "convlog", "record", "--dir", str(tmp_path / "log"),
                             "--config", str(config)], capture_output=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "no-such-rule" in lines[0], result.stderr
