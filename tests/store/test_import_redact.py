"""``convlog import`` redacts secrets with the built-in rules: a legacy Shearwater
recording with keys pasted into its messages, and another log's records."""

from __future__ import annotations

from pathlib import Path

import orjson

from conftest import records, shearwater_file
from convlog.store.importer import import_files
from secret_samples import SAMPLES


def _legacy_with_keys(tmp_path: Path) -> tuple[Path, list[str]]:
    lines = shearwater_file("current_session.jsonl").read_bytes().splitlines()[:20]
    keys = [SAMPLES["github-pat"], SAMPLES["anthropic-api-key"], SAMPLES["private-key"]]
    out = []
    for index, line in enumerate(lines):
        value = orjson.loads(line)
        if index < len(keys):
            value["Message"] = f"{value.get('Message', '')} key: {keys[index]}"
        out.append(orjson.dumps(value))
    path = tmp_path / "legacy.jsonl"
    path.write_bytes(b"\n".join(out) + b"\n")
    return path, keys


def test_legacy_import_redacts_and_no_redact_keeps(tmp_path: Path) -> None:
    path, keys = _legacy_with_keys(tmp_path)
    report = import_files(tmp_path / "log", [path])
    assert report.imported == 20 and not report.invalid
    raw = b"".join(p.read_bytes() for p in (tmp_path / "log").rglob("*") if p.is_file())
    for key in keys:
        assert key.encode() not in raw
    found = records(tmp_path / "log")
    redacted = [r for r in found if "redactions" in r["meta"]]
    assert [sorted(r["meta"]["redactions"]) for r in redacted] == [["github-pat"], ["anthropic-api-key"],
                                                                   ["private-key"]]
    for r in redacted:
        assert r["meta"]["stored_sha256"] != r["meta"]["sha256"]

    # Importing that log into another keeps the markers and meta.redactions.
    segments = sorted((tmp_path / "log" / "events").glob("*.jsonl*"))
    again = import_files(tmp_path / "copy", segments)
    assert again.imported == 20
    copied = [r for r in records(tmp_path / "copy") if "redactions" in r["meta"]]
    assert len(copied) == 3

    plain = import_files(tmp_path / "plain", [path], redact=False)
    assert plain.imported == 20
    raw = b"".join(p.read_bytes() for p in (tmp_path / "plain").rglob("*") if p.is_file())
    assert all(key.encode() in raw for key in keys[:2])


def test_convlog_records_with_secrets_are_redacted_on_import(tmp_path: Path) -> None:
    record = {"seq": 1, "ts": "2026-12-06T00:00:00.000000Z", "kind": "message", "source": "sub",
              "topic": SAMPLES["gitlab-pat"], "session": "s1",
              "data": {"type": "message", "session_id": "s1", "text": f"token {SAMPLES['slack-bot-token']}"},
              "meta": {"sha256": "0" * 64}}
    path = tmp_path / "other.jsonl"
    path.write_bytes(orjson.dumps(record) + b"\n")
    assert import_files(tmp_path / "log", [path]).imported == 1
    (got,) = [r for r in records(tmp_path / "log") if r["source"] == "import"]
    assert got["meta"]["redactions"] == {"gitlab-pat": 1, "slack-bot-token": 1}
    line = orjson.dumps(got)
    assert SAMPLES["gitlab-pat"].encode() not in line and SAMPLES["slack-bot-token"].encode() not in line
