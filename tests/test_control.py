"""The control channel of a running recorder and the session commands of the CLI: real
``convlog record`` processes on a real broker, requests sent raw over a ZeroMQ REQ socket
and through :func:`convlog.control.request`, CLI commands as subprocesses (with a
recorder running) and in-process with click's runner (with none), the log read back
from disk and folded with :func:`convlog.replay.load`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq

from conftest import Bus, Proc, answering
from convlog import control
from convlog.publisher import Publisher

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
