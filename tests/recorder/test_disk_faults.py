"""Disk faults with a real failure: the recorder runs under a file-size limit
(RLIMIT_FSIZE), so its writes fail with EFBIG until the test lifts the limit."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from pathlib import Path

import orjson

from conftest import Bus, Proc, convlog_cmd, records, wait_for_final_heartbeat, wait_for_records
from convlog.bus.publisher import Publisher
from convlog.store.segment import list_segments

LIMIT = 64 * 1024
HELD = 100 * 1024


def message(i: int) -> tuple[bytes, bytes]:
    body = {"type": "message", "session_id": "disk", "message_id": f"d{i}", "content": f"{i} " + "x" * 900}
    return b"disk", orjson.dumps(body)


def limited_recorder(bus: Bus, directory: Path) -> Proc:
    """A recorder whose files may not grow past LIMIT bytes, holding at most HELD bytes."""
    log_path = directory.parent / "recorder.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, resource.RLIM_INFINITY))

    with log_path.open("ab") as fh:
        popen = subprocess.Popen(
            convlog_cmd("record", "--dir", str(directory), "--sub", bus.xpub),
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=limit,
            env={**os.environ, "CONVLOG_HELD_BYTES": str(HELD), "CONVLOG_STATE_INTERVAL_MS": "100"},
        )
    proc = Proc(popen, log_path)
    bus.procs.append(proc)
    return proc


def test_write_failures_hold_records_then_resume_and_count_drops(bus: Bus, tmp_path: Path) -> None:
    """While writes fail the recorder keeps running: it holds records in memory up to
    the bound, drops (and counts) what comes after, says so in its log, and when writes
    succeed again writes everything it held, a ``recorder.degraded`` record and a
    ``recorder.dropped`` record; seq stays gapless and every dropped stamped message is
    also named by a ``recorder.gap``."""
    directory = tmp_path / "log"
    rec = limited_recorder(bus, directory)
    pub = Publisher(bus.xsub, heartbeat_s=None)  # no idle heartbeats: only messages can be dropped
    pub.wait_for_subscriber(20)
    sent = 0
    for _ in range(40):  # about 40 KB: fits under the limit
        sent += 1
        pub.send(*message(sent))
    wait_for_records(directory, 40)
    for _ in range(300):  # about 300 KB more: the limit is hit, HELD bytes are held, the rest dropped
        sent += 1
        pub.send(*message(sent))
        if sent % 50 == 0:
            time.sleep(0.2)
    time.sleep(1.0)
    assert rec.popen.poll() is None, "the recorder must keep running while writes fail"
    assert max(path.stat().st_size for _, path in list_segments(directory)) <= LIMIT
    assert "cannot write" in rec.output() and "EFBIG" in rec.output()

    resource.prlimit(rec.popen.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(r["kind"] == "recorder.degraded" for r in records(directory)):
        time.sleep(0.1)
    for _ in range(10):  # writes work again
        sent += 1
        pub.send(*message(sent))
    pub.close()
    wait_for_final_heartbeat(directory, sent)
    assert rec.terminate() == 0, rec.output()

    found = records(directory)
    assert [r["seq"] for r in found] == list(range(1, len(found) + 1))
    degraded = [r["data"] for r in found if r["kind"] == "recorder.degraded"]
    dropped = [r["data"] for r in found if r["kind"] == "recorder.dropped"]
    assert len(degraded) == 1 and degraded[0]["error"].startswith("EFBIG") and degraded[0]["held_records"] > 0
    assert len(dropped) == 1 and dropped[0]["messages"] > 0
    recorded = {r["data"]["convlog"]["seq"] for r in found if r["kind"] == "message"}
    lost = set(range(1, sent + 1)) - recorded
    assert len(lost) == dropped[0]["messages"], "every message not in the log is counted as dropped"
    gaps = [r["data"] for r in found if r["kind"] == "recorder.gap"]
    reported = {seq for gap in gaps for seq in range(gap["first"], gap["last"] + 1)}
    assert reported == lost, "and named by a gap"
    assert {sent - 9, sent} <= recorded, "recording resumed"
