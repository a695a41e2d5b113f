"""The hash chain and signed heads through the real recorder: a recorder with a signing
key signs the chain head at each checkpoint; ``convlog verify --key PUB`` checks the log
on its own (another key, a log cut off its end, and a log whose chain was rewritten
from an edited record are refused, though the last passes verify without the key);
``--no-chain`` writes records without links and status says so; a signing key others
can read stops the recorder at start with one line."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import orjson

from conftest import PLAIN, Bus, answering, convlog_cmd, records, wait_for_records
from convlog.bus import control
from convlog.core.chain import CHAIN, Chain
from convlog.store.heads import HEADS_FILE
from convlog.store.segment import CHECKPOINTS, list_segments


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(convlog_cmd(*args), capture_output=True, text=True, timeout=120)


def keys(tmp_path: Path, name: str) -> tuple[Path, Path]:
    made = run_cli("keys", "generate", "--dir", str(tmp_path / "keys"), "--name", name)
    assert made.returncode == 0, made.stderr
    return tmp_path / "keys" / f"{name}-sign.pem", tmp_path / "keys" / f"{name}-sign.pub"


def record_signed(bus: Bus, directory: Path, private: Path, messages: int = 30) -> None:
    """Record ``messages`` messages with two checkpoints between them, then stop (segments
    left plain, so the tests below can cut and rewrite their bytes)."""
    rec = bus.recorder(directory, "--sign-key", str(private), "--segment-bytes", "4000", env=PLAIN)
    pub = bus.publisher(rec, heartbeat_s=None)
    answering(directory, rec)
    for n in range(messages):
        pub.send(b"s1", orjson.dumps({"type": "message", "session_id": f"s{n % 2}", "message_id": f"m{n}",
                                      "sender": "ann", "content": f"message number {n} " * 5}))
        if n in (messages // 3, 2 * messages // 3):
            wait_for_records(directory, n + 1)
            control.request(directory, "checkpoint", timeout_s=10.0)
    wait_for_records(directory, messages)
    status = run_cli("status", "--dir", str(directory))
    assert "hash chain: on" in status.stdout and "heads signed with key" in status.stdout, status.stdout
    pub.close(1000)
    assert rec.terminate() == 0, rec.output()


def test_signed_heads_verify_with_the_public_key_and_catch_what_the_chain_alone_cannot(bus: Bus,
                                                                                       tmp_path: Path) -> None:
    private, public = keys(tmp_path, "rec")
    _, other = keys(tmp_path, "other")
    directory = tmp_path / "log"
    record_signed(bus, directory, private)
    heads = [orjson.loads(line) for line in (directory / HEADS_FILE).read_bytes().splitlines()]
    assert len(heads) >= 3  # two asked for, one at the clean stop
    assert (directory / HEADS_FILE).stat().st_mode & 0o077 == 0
    assert all(r.get(CHAIN) for r in records(directory))

    good = run_cli("verify", str(directory), "--key", str(public))
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"{len(heads)} signed chain head(s) checked" in good.stdout

    wrong = run_cli("verify", str(directory), "--key", str(other))
    assert wrong.returncode == 1 and f"{HEADS_FILE}:1: signed with key" in wrong.stdout, wrong.stdout

    # Cut off the end of the log, back to a line boundary before the newest signed head:
    # the chain cannot see it (what is left links fine), the signature can.
    cut = tmp_path / "cut"
    shutil.copytree(directory, cut)
    shutil.rmtree(cut / CHECKPOINTS)
    (cut / "recovery" / "state.json").unlink()
    last = list_segments(cut)[-1][1]
    while list_segments(cut) and orjson.loads(last.read_bytes().splitlines()[-1])["seq"] >= heads[-1]["seq"]:
        lines = last.read_bytes().splitlines(keepends=True)
        if len(lines) == 1:
            last.unlink()
            last = list_segments(cut)[-1][1]
        else:
            last.write_bytes(b"".join(lines[:-1]))
    assert run_cli("verify", str(cut)).returncode == 0
    cut_off = run_cli("verify", str(cut), "--key", str(public))
    assert cut_off.returncode == 1 and "records were cut off its end" in cut_off.stdout, cut_off.stdout

    # Rewrite a message and every link after it (and drop the checkpoints that name the
    # old heads): verify alone passes, the signed heads do not.
    forged = tmp_path / "forged"
    shutil.copytree(directory, forged)
    shutil.rmtree(forged / CHECKPOINTS)
    chain = Chain()
    for _, path in list_segments(forged):
        out = []
        for line in path.read_bytes().splitlines(keepends=True):
            record = orjson.loads(line)
            del record[CHAIN]
            if record["kind"] == "recorder.start":
                record["data"]["note"] = "forged"  # a record whose data has no digest: bound by the body
            out.append(chain.link_lines(orjson.dumps(record) + b"\n"))
        path.write_bytes(b"".join(out))
    (forged / "recovery" / "state.json").unlink()
    alone = run_cli("verify", str(forged))
    assert alone.returncode == 0, alone.stdout
    caught = run_cli("verify", str(forged), "--key", str(public))
    assert caught.returncode == 1 and "is not the signed one" in caught.stdout, caught.stdout


def test_no_chain_writes_unlinked_records_and_status_says_so(bus: Bus, tmp_path: Path) -> None:
    directory = tmp_path / "log"
    rec = bus.recorder(directory, "--no-chain")
    pub = bus.publisher(rec, heartbeat_s=None)
    answering(directory, rec)
    pub.send(b"s", orjson.dumps({"type": "message", "session_id": "s", "message_id": "m", "content": "hi"}))
    found = wait_for_records(directory, 1)
    status = run_cli("status", "--dir", str(directory))
    assert "hash chain: OFF" in status.stdout, status.stdout
    pub.close(1000)
    assert rec.terminate() == 0
    assert not any(CHAIN in r for r in found)
    report = run_cli("verify", str(directory))
    assert report.returncode == 0 and "carry no chain and are not tamper-evident" in report.stdout, report.stdout


def test_a_signing_key_others_can_read_stops_the_recorder_with_one_line(tmp_path: Path) -> None:
    private, _ = keys(tmp_path, "loose")
    os.chmod(private, 0o644)
    result = subprocess.run(convlog_cmd("record", "--dir", str(tmp_path / "log"), "--sign-key", str(private)),
                            capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and str(private) in lines[0], result.stderr
