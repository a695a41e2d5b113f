"""Prometheus metrics (``convlog record --metrics HOST:PORT``): a real recorder
subprocess serving real HTTP, scraped and parsed with the client library's own parser,
and compared with what the log holds."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Bus, answering, convlog_cmd, records, wait_for_records
from convlog.bus import control
from convlog.cli.demo import free_port
from convlog.recorder.config import ConfigError, load_config, parse_host_port


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from one scrape of ``url``."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def stamped(publisher: str, seq: int, text: str) -> bytes:
    return orjson.dumps({"convlog": {"publisher": publisher, "seq": seq}, "type": "message",
                         "session_id": "m1", "sender": "alice", "content": text})


def test_metrics_match_the_log(bus: Bus, tmp_path: Path) -> None:
    directory = tmp_path / "log"
    proc = bus.recorder(directory, "--metrics", "127.0.0.1:0", "--fsync", "always")
    url = answering(directory, proc)["metrics"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    # Stamped by hand, with publisher seqs 3..5 missing: one gap of three messages.
    payloads = [stamped("pub-a", n, f"hello {n}") for n in (1, 2, 6, 7)]
    payloads.append(orjson.dumps({"type": "session.fork", "session_id": "m1", "new_session_id": "m2"}))
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(payloads) + b"\n")
    subprocess.run(convlog_cmd("publish", str(path), "--endpoint", bus.xsub, "--no-stamp", "--format", "native"),
                   check=True, capture_output=True, timeout=60)
    pub = bus.publisher(proc, heartbeat_s=None)
    pub.send_frames([b"raw-topic", b"not json at all"])
    pub.close(heartbeat=False)
    found = wait_for_records(directory, 6)
    control.request(directory, "flush")
    control.request(directory, "checkpoint", timeout_s=30, label="metrics-test")

    got = scrape(url)
    by_kind_source: dict[tuple[str, str], int] = {}
    for record in records(directory):
        key = (record["kind"], record["source"])
        by_kind_source[key] = by_kind_source.get(key, 0) + 1
    exported = {(dict(labels)["kind"], dict(labels)["source"]): value
                for (name, labels), value in got.items() if name == "convlog_records_total"}
    assert exported == by_kind_source
    assert got[("convlog_gap_records_total", ())] == sum(1 for r in found if r["kind"] == "recorder.gap") == 1
    assert got[("convlog_missing_messages_total", ())] == 3
    assert got[("convlog_dropped_messages_total", ())] == 0
    assert got[("convlog_received_messages_total", (("source", "sub"),))] == 6
    log_bytes = sum(p.stat().st_size for p in (directory / "events").glob("*.jsonl"))
    assert got[("convlog_written_bytes_total", ())] == log_bytes
    assert got[("convlog_last_seq", ())] == records(directory)[-1]["seq"]
    newest = [r for r in records(directory) if r["source"] == "sub"][-1]["ts"]
    from convlog.recorder.metrics import _epoch
    assert got[("convlog_last_record_timestamp_seconds", ())] == pytest.approx(_epoch(newest), abs=1e-3)
    assert 0 <= got[("convlog_checkpoint_age_seconds", ())] < 600
    assert got[("convlog_fsync_duration_seconds_count", ())] >= 6  # fsync "always": one per write at least
    assert got[("convlog_degraded", ())] == 0
    assert got[("convlog_publishers_known", ())] == 1
    assert proc.terminate() == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)  # the endpoint is gone after a clean stop


def test_metrics_off_by_default(bus: Bus, tmp_path: Path) -> None:
    directory = tmp_path / "log"
    proc = bus.recorder(directory)
    assert answering(directory, proc)["metrics"] is None
    assert "serving Prometheus metrics" not in proc.output()
    assert proc.terminate() == 0


def test_metrics_address_in_use_stops_the_recorder_at_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            convlog_cmd("record", "--dir", str(tmp_path / "log"), "--sub", f"tcp://127.0.0.1:{free_port()}",
                        "--metrics", f"127.0.0.1:{port}"),
            capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"convlog: cannot serve metrics on 127.0.0.1:{port}: ")
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "log").glob("events/*.jsonl"))  # nothing written


def test_bad_metrics_address_in_config_names_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "convlog.toml"
    config.write_text('[recorder]\nsub = ["tcp://127.0.0.1:5556"]\nmetrics = "localhost"\n')
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert f"{config}:3" in str(err.value) and "metrics" in str(err.value)
    assert load_config(None, overrides={"metrics": "127.0.0.1:9464"}).metrics == "127.0.0.1:9464"


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    (":9464", ("127.0.0.1", 9464)),  # loopback unless told otherwise
    ("[::1]:9464", ("::1", 9464)),
    ("localhost:0", ("localhost", 0)),
])
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["localhost", "host:", "host:http", "host:70000", ""])
def test_parse_host_port_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_host_port(text)


def test_metrics_and_pull_bind_loopback_unless_told_and_a_wildcard_is_warned(bus: Bus, tmp_path: Path) -> None:
    """``:PORT`` for the metrics means loopback (``0.0.0.0:PORT`` every interface); a
    recorder whose PULL endpoint or metrics listen on every interface says so at start,
    and one bound to loopback does not."""
    from convlog.recorder.config import wildcard_bind

    assert parse_host_port(":9464") == ("127.0.0.1", 9464)
    assert parse_host_port("0.0.0.0:9464") == ("0.0.0.0", 9464)
    for address in ("tcp://*:5557", "tcp://0.0.0.0:5557", "tcp://[::]:5557", "0.0.0.0:9464", "[::]:9464"):
        assert wildcard_bind(address), address
    for address in ("tcp://127.0.0.1:5557", "ipc:///tmp/x", ":9464", "127.0.0.1:9464", "tcp://host.example:1"):
        assert not wildcard_bind(address), address
    quiet = bus.recorder(tmp_path / "quiet", "--pull", f"tcp://127.0.0.1:{free_port()}", "--metrics", ":0")
    status = answering(tmp_path / "quiet", quiet)
    assert status["metrics"].startswith("http://127.0.0.1:"), status["metrics"]
    assert "listens on every interface" not in quiet.output()
    assert quiet.terminate() == 0
    loud = bus.recorder(tmp_path / "loud", "--pull", f"tcp://*:{free_port()}", "--metrics", "0.0.0.0:0")
    answering(tmp_path / "loud", loud)
    output = loud.output()
    assert "the PULL endpoint tcp://*:" in output and "the metrics endpoint 0.0.0.0:0" in output, output
    assert output.count("listens on every interface") == 2
    assert loud.terminate() == 0
