"""Enrichment rules that reload: the pure decision (:func:`convlog.recorder.reload.compare`) and
a real recorder subprocess whose configuration file is edited while it records."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from conftest import Bus, answering, records, wait_for_records
from convlog.recorder.config import Config, ConfigError, load_config
from convlog.recorder.reload import compare

RULES_A = """
[recorder]
sub = ["{xpub}"]

[[enrich.rules]]
keywords = ["deploy"]
tag = "@ops"
"""

RULES_B = """
[recorder]
sub = ["{xpub}"]

[enrich]
defaults = {{ team = "blue" }}

[[enrich.rules]]
keywords = ["deploy", "rollback"]
tag = "@release"
"""

BROKEN = """
[recorder]
sub = ["{xpub}"]

[[enrich.rules]]
regex = "(unclosed"
tag = "@bad"
"""


def message(i: int, text: str) -> tuple[bytes, bytes]:
    return b"s1", orjson.dumps({"type": "message", "session_id": "s1", "message_id": f"m{i}", "sender": "a",
                                "content": text})


def write(path: Path, text: str) -> None:
    """Save like an editor that writes a new file and renames it into place."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def wait_config_records(directory: Path, count: int, timeout_s: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [r for r in records(directory) if r["kind"] == "recorder.config"]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    pytest.fail(f"fewer than {count} recorder.config records after {timeout_s} s")


def test_rules_reload_while_recording(bus: Bus, tmp_path: Path) -> None:
    config = tmp_path / "convlog.toml"
    config.write_text(RULES_A.format(xpub=bus.xpub))
    directory = tmp_path / "log"
    proc = bus.recorder(directory, "--config", str(config))
    answering(directory, proc)
    pub = bus.publisher(proc, heartbeat_s=None)
    pub.send(*message(1, "deploy the rollback plan"))
    wait_for_records(directory, 1)

    write(config, RULES_B.format(xpub=bus.xpub))
    applied = wait_config_records(directory, 1)[-1]
    assert applied["source"] == "recorder"
    assert applied["data"]["applied"] is True and applied["data"]["error"] is None
    assert applied["data"]["changed"] == ["rules", "defaults"] and applied["data"]["rules"] == 1
    pub.send(*message(2, "deploy the rollback plan"))
    wait_for_records(directory, 2)

    write(config, BROKEN.format(xpub=bus.xpub))
    refused = wait_config_records(directory, 2)[-1]
    assert refused["data"]["applied"] is False
    assert f"{config.resolve()}:" in refused["data"]["error"] and "regex" in refused["data"]["error"]
    pub.send(*message(3, "deploy the rollback plan"))
    wait_for_records(directory, 3)

    config.write_text(RULES_B.format(xpub=bus.xpub).replace('sub = [', 'fsync = "always"\nsub = ['))
    restart = wait_config_records(directory, 3)[-1]
    assert restart["data"]["applied"] is False and restart["data"]["error"] is None
    assert restart["data"]["restart_needed"] == ["fsync"]
    pub.close(heartbeat=False)
    assert proc.terminate() == 0

    messages = [r for r in records(directory) if r["kind"] == "message"]
    tags = [r["meta"].get("tags") for r in messages]
    assert tags == [["@ops"], ["@release"], ["@release"]]  # the refused edit changed nothing
    assert [r["meta"].get("team") for r in messages] == [None, "blue", "blue"]
    order = [r["kind"] for r in records(directory) if r["kind"] in ("message", "recorder.config")]
    assert order == ["message", "recorder.config", "message", "recorder.config", "message", "recorder.config"]
    output = proc.output()
    assert "rules not reloaded, the previous ones stay in force" in output and "takes a restart" in output


def test_no_watch_without_a_config_file(bus: Bus, tmp_path: Path) -> None:
    directory = tmp_path / "log"
    proc = bus.recorder(directory)
    answering(directory, proc)
    assert "watching" not in proc.output()
    assert proc.terminate() == 0


def base(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(path, env={})


def test_compare_decides_what_applies(tmp_path: Path) -> None:
    a = base(tmp_path, RULES_A.format(xpub="tcp://127.0.0.1:5556"))
    b = base(tmp_path, RULES_B.format(xpub="tcp://127.0.0.1:5556"))
    assert compare(a, a, "f", "d") is None  # saved unchanged
    result = compare(a, b, "f", "d")
    assert result is not None and result.enricher is not None and result.config is not None
    assert result.data["changed"] == ["rules", "defaults"] and result.data["restart_needed"] == []
    assert result.config.rules == b.rules and result.config.sub == a.sub
    moved = base(tmp_path, RULES_A.format(xpub="tcp://127.0.0.1:6000"))
    result = compare(a, moved, "f", "d")
    assert result is not None and result.enricher is None and result.data["restart_needed"] == ["sub"]
    assert result.data["applied"] is False and result.config is not None and result.config.sub == a.sub
    with pytest.raises(ConfigError) as err:
        base(tmp_path, BROKEN.format(xpub="tcp://127.0.0.1:5556"))
    refused = compare(a, None, "f", "d", str(err.value))
    assert refused is not None and refused.enricher is None and refused.data["error"] == str(err.value)
