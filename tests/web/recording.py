"""A live recording served: a real broker and recorder writing a log while ``convlog
serve`` reads it, and a publisher to send messages through the broker (for the Live
tests, over HTTP and in the browser)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from served import Served, serve

from conftest import Proc, records, running_bus


@dataclass
class Recording:
    """A recorder writing ``directory`` from a broker, ``convlog serve`` on it.

    Attributes:
        directory: the log directory.
        recorder: the recorder process.
        publisher: a publisher connected to the broker (heartbeats on: the log also
            gets ``publisher.heartbeat`` records).
        server: the running ``convlog serve``.
    """

    directory: Path
    recorder: Proc
    publisher: Any
    server: Served

    def say(self, session: str, number: int, text: str, sender: str = "ada") -> None:
        """Publish one ``message`` of ``session`` (message id ``SESSION-NUMBER``)."""
        self.publisher.send(session.encode(), orjson.dumps({
            "type": "message", "session_id": session, "message_id": f"{session}-{number}", "sender": sender,
            "role": "user", "content": text}))

    def written(self, word: str, timeout_s: float = 20.0, poll_s: float = 0.005) -> tuple[dict[str, Any], float]:
        """Wait until a ``message`` record whose content contains ``word`` is complete in
        the log (polling the segment files every ``poll_s``); the record and the
        ``time.monotonic()`` it was first seen at."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                found = [r for r in records(self.directory) if r["kind"] == "message"
                         and word in str(r.get("data", {}).get("content", ""))]
            except (FileNotFoundError, ValueError):
                found = []
            if found:
                return found[0], time.monotonic()
            time.sleep(poll_s)
        raise AssertionError(f"no message with {word!r} reached {self.directory} in {timeout_s} s:\n"
                             f"{self.recorder.output()}")


@contextlib.contextmanager
def recording(tmp: Path) -> Iterator[Recording]:
    """Start a broker, a recorder on ``tmp/log`` and ``convlog serve`` on it; one first
    message (session ``warm-up``) is recorded before it is handed over, so the log
    exists; everything is stopped at the end."""
    directory = tmp / "log"
    with running_bus(tmp) as bus:
        recorder = bus.recorder(directory)
        publisher = bus.publisher(recorder)
        server = serve(directory, tmp / "serve.err")
        live = Recording(directory, recorder, publisher, server)
        try:
            live.say("warm-up", 1, "the log exists")
            live.written("the log exists")
            yield live
        finally:
            server.stop()
            publisher.close()
            recorder.terminate()
