"""``convlog demo``: a broker, a recorder and real traffic, end to end, in under a minute.

Starts ``convlog broker`` and ``convlog record`` as subprocesses on free loopback
ports, publishes ShareGPT conversations as native ``message`` events plus session
control events (a checkpoint and a rewind to it, a fork, a crystal, a streamed
message, LLM usage), waits until the recorder has written them, stops it with SIGTERM
(a clean stop), and prints what the fold rebuilt. The directory is left for the user.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from convlog.bus.publisher import NoSubscriberError, Publisher
from convlog.cli import console, output
from convlog.cli.sharegpt import conversations, native_events
from convlog.core.view import plural
from convlog.store.replay import load
from convlog.store.segment import iter_records, list_segments

STOP_TIMEOUT_S = 15.0


class DemoError(RuntimeError):
    """A demo step failed; the message says which and where its log is."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m convlog ARGS`` with stdout and stderr appended to ``log_path``."""
    with log_path.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "convlog", *args], stdout=fh, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM a subprocess and wait for it; SIGKILL after ``timeout_s``. Returns its code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    return proc.returncode


def wait_for_seq(directory: Path, seq: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> int:
    """Wait until the log holds record ``seq``; returns the last seq seen."""
    deadline = time.monotonic() + timeout_s
    last = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        segments = list_segments(directory)
        if segments:
            for record in iter_records(directory, start_seq=max(last, segments[-1][0])):
                last = record["seq"]
        if last >= seq:
            return last
        time.sleep(0.05)
    return last


def control_events(first: str, second: str, stream_session: str) -> Iterator[dict[str, Any]]:
    """The demo's session control events around two conversation session ids."""
    yield {"type": "session.checkpoint", "session_id": first, "name": "before-tangent"}
    for n, text in enumerate(("Tangent: what's the weather like?", "It is sunny, but off topic."), 1):
        yield {"type": "message", "session_id": first, "message_id": f"{first}-tangent-{n}",
               "sender": "human" if n == 1 else "gpt", "role": "user" if n == 1 else "assistant",
               "content": text}
    yield {"type": "session.rewind", "session_id": first, "checkpoint": "before-tangent"}
    yield {"type": "session.crystal", "session_id": first,
           "summary": "Summary so far: the user asked a question and the assistant answered it in detail."}
    yield {"type": "session.fork", "session_id": f"{second}-what-if", "parent": second, "at": 2,
           "name": "what-if"}
    yield {"type": "message", "session_id": f"{second}-what-if", "message_id": "what-if-1",
           "sender": "human", "role": "user", "content": "Let's try a different answer from here."}
    yield {"type": "llm.request", "session_id": second, "model": "demo-model",
           "input_tokens": 1200, "output_tokens": 350, "cost_usd": 0.0042}
    yield {"type": "session.start", "session_id": stream_session, "title": "a streamed reply"}
    yield {"type": "message", "session_id": stream_session, "message_id": "ask", "sender": "human",
           "role": "user", "content": "Stream me a haiku."}
    for piece in ("An old silent pond / ", "a frog jumps into the pond — / ", "splash! Silence again."):
        yield {"type": "message.delta", "session_id": stream_session, "message_id": "haiku",
               "sender": "gpt", "role": "assistant", "delta": piece}
    yield {"type": "message.end", "session_id": stream_session, "message_id": "haiku"}


def run_demo(directory: Path | None = None, count: int = 40) -> Path:
    """Run the demo end to end.

    Args:
        directory: a new or empty directory; default ``./conversation_logs/demo-<time>``.
        count: ShareGPT conversations to publish.

    Returns:
        the log directory.

    Raises:
        DemoError: when a subprocess fails or the recorder misses messages.
        DatasetMissingError: without the ``demo`` extra.
    """
    if directory is None:
        directory = Path("conversation_logs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise DemoError(f"{directory} is not empty: give --dir a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    convs = list(conversations(limit=count))
    xsub, xpub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    say = console.err.print
    say(f"[bold]convlog demo[/] → {directory}")
    broker = spawn(["broker", "--xsub", xsub, "--xpub", xpub], directory / "broker.log")
    recorder = spawn(["record", "--dir", str(directory), "--sub", xpub], directory / "recorder.log")
    published = 0
    try:
        with Publisher(xsub) as pub:
            _wait_for_subscriber(pub, recorder, broker, directory)
            say(f"  broker XSUB {xsub} → XPUB {xpub}; recorder subscribed (pid {recorder.pid})")
            events: list[dict[str, Any]] = [e for c in convs for e in native_events(c)]
            first, second = f"sharegpt-{convs[0].id}", f"sharegpt-{convs[1].id}"
            events.extend(control_events(first, second, "demo-stream"))
            for event in events:
                pub.send(str(event["session_id"]).encode(), orjson.dumps(event))
            published = len(events)
        say(f"  published {published} events from {len(convs)} ShareGPT conversations")
        # recorder.start (and, after a crash, recorder.recovered) come first.
        target = _first_bus_seq(directory) + published - 1
        last = wait_for_seq(directory, target, 20.0, recorder)
        if last < target:
            raise DemoError(_failure(f"only seq {last} of {target} was recorded", directory))
    finally:
        code = stop(recorder)
        stop(broker)
    if code != 0:
        raise DemoError(_failure(f"the recorder exited with {code}", directory))
    say(f"  recorder stopped cleanly; log in {directory / 'events'}\n")
    _show(directory, first, second)
    return directory


def _wait_for_subscriber(
    pub: Publisher, recorder: subprocess.Popen[bytes], broker: subprocess.Popen[bytes], directory: Path
) -> None:
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        if recorder.poll() is not None or broker.poll() is not None:
            break
        try:
            pub.wait_for_subscriber(0.2)
            return
        except NoSubscriberError:
            continue
    raise DemoError(_failure("the recorder never subscribed", directory))


def _first_bus_seq(directory: Path) -> int:
    for record in iter_records(directory):
        if record["kind"] == "recorder.start":
            return record["seq"] + 1
    return 2


def _failure(what: str, directory: Path) -> str:
    tail = ""
    log_file = directory / "recorder.log"
    if log_file.exists():
        lines = log_file.read_text(errors="replace").splitlines()[-5:]
        tail = " | ".join(lines)
    return f"{what} (recorder log {log_file}: {tail or 'empty'})"


def _show(directory: Path, first: str, second: str) -> None:
    replay = load(directory)
    data = output.summary(replay)
    out = console.out
    out.print(
        f"[bold]Folded[/]: {data['records']} records → {data['sessions']} sessions, "
        f"{data['forks']} fork, {data['messages_visible']} visible messages, "
        f"{len(data['incomplete_streams'])} incomplete streams, {len(data['gaps'])} gaps"
    )
    out.print(output.sessions_table(replay.state, limit=12))
    for sid in (f"{second}-what-if", "demo-stream"):
        out.print()
        messages = replay.messages(sid)
        info = replay.state.sessions[sid]
        out.print(f"[bold]{sid}[/] ({output.branch_label(info)}, {plural(len(messages), 'message')})")
        out.print(output.transcript(messages, "text", width=160), markup=False)
    _crystal, after = replay.state.resume_refs(first)
    out.print(
        f"\n[bold]{first}[/]: rewound to checkpoint 'before-tangent' "
        f"({len(replay.state.visible(first))} messages visible, tangent kept in history); "
        f"resume context = crystal + {len(after)} later messages"
    )
    out.print(
        f"\nExplore it: convlog sessions --dir {directory} · convlog show {first} --dir {directory}"
        f" · convlog search haiku --dir {directory} · convlog info --dir {directory}"
        f" · convlog export {first} --dir {directory} · convlog tail -n 5 --dir {directory}"
        f" · convlog --dir {directory} (menu) · zstdcat -f {directory}/events/* | jq ."
    )
