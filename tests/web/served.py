"""Fixtures and helpers of the web UI's tests (imported by the test modules; not a conftest,
so that `from conftest import …` keeps naming tests/conftest.py): real logs (made by ``convlog demo``, by the real
recorder from hostile messages, and imported from the Shearwater recording) and a real
``convlog serve`` subprocess on a free loopback port for each, with its token read from
the first line of its stdout.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import REPO, convlog_cmd, running_bus, shearwater_file, wait_for_records
from convlog.cli.demo import free_port

#: Messages that would run script in the page if they were not escaped.
HOSTILE = (
    "<script>window.pwned=1</script>",
    '<img src=x onerror="window.pwned=2">',
    "</div><svg onload=window.pwned=3> & \"quotes\" 'too'",
)


def run(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``convlog ARGS`` to the end (text output, no stdin)."""
    return subprocess.run(convlog_cmd(*args), capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL)


@dataclass
class Served:
    """A running ``convlog serve``.

    Attributes:
        popen: the process (stdout a pipe, of which the first line was read).
        url: the first line of stdout, the address to open with its token.
        base: ``http://127.0.0.1:PORT`` (no trailing slash).
        port: the port.
        token: the access token.
        stderr_path: where its stderr goes.
    """

    popen: subprocess.Popen[bytes]
    url: str
    base: str
    port: int
    token: str
    stderr_path: Path

    def client(self, **kwargs: object) -> httpx.Client:
        """An httpx client for the server sending the token as ``Authorization: Bearer``."""
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.token}"}, timeout=60,
                            **kwargs)  # type: ignore[arg-type]

    def anonymous(self) -> httpx.Client:
        """An httpx client without the token."""
        return httpx.Client(base_url=self.base, timeout=60)

    def stop(self) -> int:
        """SIGTERM and wait (kill after 15 s); the exit code."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return self.popen.returncode


def first_line(popen: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """The first line a process writes to its stdout pipe (b"" when it exits or the time
    runs out first)."""
    assert popen.stdout is not None
    fd = popen.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout_s
    while b"\n" not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\n", 1)[0] if b"\n" in data else b""


def serve(directory: Path | None, stderr_path: Path, *extra: str, port: int | None = None) -> Served:
    """Start ``convlog serve --dir DIRECTORY --port PORT EXTRA`` (a free port unless
    given) and wait for the first line of its stdout; fails with its stderr when none
    comes within 30 s."""
    port = port or free_port()
    args = ["serve", "--port", str(port), *(["--dir", str(directory)] if directory else []), *extra]
    with stderr_path.open("ab") as err:
        popen = subprocess.Popen(convlog_cmd(*args), stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    line = first_line(popen, 30.0).decode()
    if not line:
        popen.kill()
        popen.wait()
        pytest.fail(f"convlog serve printed no address:\n{stderr_path.read_text(errors='replace')}")
    token = line.partition("?token=")[2]
    return Served(popen, line, f"http://127.0.0.1:{port}", port, token, stderr_path)


@pytest.fixture(scope="session")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log made by the real ``convlog demo`` (broker, recorder, ShareGPT traffic with a
    fork, a rewind to a checkpoint, a crystal, a streamed reply and usage)."""
    directory = tmp_path_factory.mktemp("web-demo") / "log"
    result = run("demo", "--dir", str(directory), "--conversations", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


@pytest.fixture(scope="session")
def shearwater_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Shearwater recording (../shared/data) imported with ``convlog import``, as the
    README's walk-through does."""
    directory = tmp_path_factory.mktemp("web-shearwater") / "log"
    result = run("import", str(shearwater_file("current_session.jsonl")), "--dir", str(directory))
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


@pytest.fixture(scope="session")
def hostile_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log written by the real recorder from a real broker: session ``xss`` whose
    messages are :data:`HOSTILE` markup, then one plain reply saying ``needle``."""
    tmp = tmp_path_factory.mktemp("web-hostile")
    directory = tmp / "log"
    with running_bus(tmp) as bus:
        recorder = bus.recorder(directory)
        publisher = bus.publisher(recorder)
        texts = [*HOSTILE, "a plain reply with the needle word"]
        for i, text in enumerate(texts, 1):
            sender = "mallory" if i <= len(HOSTILE) else "bob"
            publisher.send(b"xss", orjson.dumps({"type": "message", "session_id": "xss", "message_id": f"x{i}",
                                                 "sender": sender, "role": "user", "content": text}))
        publisher.close()
        wait_for_records(directory, len(texts))
        assert recorder.terminate() == 0, recorder.output()
    return directory


def _served(directory: Path, tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Served]:
    server = serve(directory, tmp_path_factory.mktemp(name) / "serve.err")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def demo_server(demo_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``convlog serve`` on the demo's log."""
    yield from _served(demo_log, tmp_path_factory, "serve-demo")


@pytest.fixture(scope="session")
def shearwater_server(shearwater_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``convlog serve`` on the imported Shearwater recording."""
    yield from _served(shearwater_log, tmp_path_factory, "serve-shearwater")


@pytest.fixture(scope="session")
def hostile_server(hostile_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``convlog serve`` on the log of hostile messages."""
    yield from _served(hostile_log, tmp_path_factory, "serve-hostile")


def artifacts_dir() -> Path:
    """Where the browser tests save their screenshots: ``$CONVLOG_ARTIFACTS``, else
    ``test-artifacts/web/`` in the repository (ignored by git)."""
    directory = Path(os.environ.get("CONVLOG_ARTIFACTS") or REPO / "test-artifacts" / "web")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def api(server: Served, path: str, **params: Any) -> Any:
    """The server's JSON answer to ``path`` (which must be 200)."""
    with server.client() as client:
        response = client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()
