"""Benchmark: how fast does ``convlog serve`` answer with 100,000 sessions, and how big
does it grow?

1. A log is built (no broker: the recorder's own line builder and segment writer, as
   ``bench_sync.py`` does) with ``--sessions`` sessions (default 100,000) of
   ``--messages`` ShareGPT messages each (default 2), an ``llm.request`` for every
   tenth session (usage and models to list), one session of ``--big`` messages
   (default 10,000) and a rare word in a few messages; a checkpoint is written at the
   end, as a running recorder would have, so the server's first fold starts from it.
2. ``convlog serve --dir LOG --port 0 --token-file F`` runs as a subprocess; every
   request carries ``Authorization: Bearer``, as a script would. The first request
   (the server folds the log) is timed on its own; then each endpoint is asked
   ``--rounds`` times (default 30, sequentially, one keep-alive connection) and its
   p50/p99 printed:

   * ``/`` and ``/api/sessions``: the newest page, a page deep in the list
     (``?page=1000``), a text filter, a model filter, sorted by messages;
   * ``/sessions/BIG`` and ``/api/sessions/BIG``: the session of 10,000 messages;
   * ``/search?q=`` and ``/api/search?q=``: the rare word;
   * ``/health``; ``/static/convlog.css`` (a file through the same middleware).

3. Baselines measured in the same run: the static file (the server's floor: token,
   Host check, headers) and the command line's own answers to the same questions
   (``convlog sessions --json --limit 50``, ``convlog show BIG --format json``,
   ``convlog search WORD --json``), each a new process folding the log from its
   checkpoint: ratios web / CLI are printed.
4. Memory: the server's RSS after the first fold and after ``--requests`` (default
   1,000) more requests spread over all the endpoints and pages; the growth is printed.

Targets (issue 15): sessions page and API p50 and p99 < 200 ms with 100k sessions.
A table (rich) and PASS/FAIL lines are printed; a missed target does not change the
exit code (1 only when something crashed or a request failed).

Run (from the project root, with the ``test`` and ``demo`` extras installed)::

    python scripts/bench_serve.py --quick        # 20,000 sessions, a 2,000-message one
    python scripts/bench_serve.py                # 100,000 sessions, a 10,000-message one
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench_record import prepare, read_messages
from benchmark import fmt, print_targets, ratio, stop_process, vm_rss_mb, write_json

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 200.0
RARE = "quodlibetarian"
BIG = "bench-big-session"


def build_log(directory: Path, messages: list[tuple[bytes, bytes]], sessions: int, per_session: int,
              big: int) -> int:
    """The log of part 1; returns its record count."""
    from convlog.core.ingest import Ingest
    from convlog.store.checkpoint import Checkpointer
    from convlog.store.clock import Clock
    from convlog.store.segment import ensure_layout
    from convlog.store.writer import SegmentWriter

    ensure_layout(directory)
    ingest, clock = Ingest(), Clock()
    writer = SegmentWriter(directory, 1, fsync="never")
    chunk: list[bytes] = []
    seq = 0
    source = iter(messages * (1 + (sessions * per_session + big) // max(1, len(messages))))

    def add(session: str, number: int, text: str | None = None) -> None:
        nonlocal seq
        _topic, payload = next(source)
        event = orjson.loads(payload)
        event.update(session_id=session, message_id=f"{session}-{number}")
        if text is not None:
            event["content"] = text
        seq += 1
        chunk.append(ingest.line([session.encode(), orjson.dumps(event)], seq, clock.now(), "sub"))
        if len(chunk) >= 1000:
            writer.write(b"".join(chunk), seq)
            chunk.clear()

    for number in range(sessions):
        session = f"bench-{number:06d}"
        for m in range(1, per_session + 1):
            add(session, m, f"a {RARE} moment in session {number}" if number % 5000 == 7 and m == 1 else None)
        if number % 10 == 0:
            seq += 1
            request = {"type": "llm.request", "session_id": session, "model": f"model-{number % 3}",
                       "usage": {"input_tokens": 100 + number % 50, "output_tokens": 20 + number % 7}}
            chunk.append(ingest.line([session.encode(), orjson.dumps(request)], seq, clock.now(), "sub"))
    for m in range(1, big + 1):
        add(BIG, m)
    if chunk:
        writer.write(b"".join(chunk), seq)
    writer.save_state(True, clock.now())
    writer.close()
    Checkpointer(directory).checkpoint()
    return seq


@dataclass
class Endpoint:
    name: str
    path: str
    ms: list[float] = field(default_factory=list)
    failures: int = 0
    bytes: int = 0

    def p(self, q: float) -> float | None:
        if not self.ms:
            return None
        ordered = sorted(self.ms)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


class Server:
    """``convlog serve`` as a subprocess, with a token file; :meth:`get` asks it."""

    def __init__(self, directory: Path, workdir: Path) -> None:
        import httpx

        token_file = workdir / "token"
        token_file.write_text("bench-" + os.urandom(16).hex() + "\n")
        token_file.chmod(0o600)
        self.token = token_file.read_text().strip()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "convlog", "serve", "--dir", str(directory), "--port", "0",
             "--token-file", str(token_file)],
            stdout=subprocess.PIPE, stderr=open(workdir / "serve.stderr", "wb"))  # noqa: SIM115
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("http://"):
            raise RuntimeError(f"convlog serve printed {line!r} (see {workdir}/serve.stderr)")
        self.base = line.split("?", 1)[0].rstrip("/")
        self.client = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.token}"},
                                   timeout=120)

    def get(self, path: str) -> tuple[float, int, int]:
        """(milliseconds, status, body bytes) of one GET."""
        started = time.perf_counter()
        response = self.client.get(path)
        body = response.content
        return (time.perf_counter() - started) * 1000, response.status_code, len(body)

    def close(self) -> None:
        self.client.close()
        stop_process(self.proc, 30.0)  # type: ignore[arg-type]


def cli_ms(args: list[str], directory: Path, rounds: int) -> float:
    """Median wall time of a ``convlog`` command (a new process each time), ms."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "convlog", *args, "--dir", str(directory)],
                                capture_output=True, timeout=600)
        times.append((time.perf_counter() - started) * 1000)
        if result.returncode != 0:
            raise RuntimeError(f"convlog {' '.join(args)} failed: {result.stderr.decode()[-500:]}")
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=2, help="messages per session (default 2)")
    parser.add_argument("--big", type=int, default=10_000, help="messages of the big session (default 10000)")
    parser.add_argument("--rounds", type=int, default=30, help="requests per endpoint (default 30)")
    parser.add_argument("--requests", type=int, default=1000, help="requests before the memory figure")
    parser.add_argument("--cli-rounds", type=int, default=3, help="runs of each CLI baseline (default 3)")
    parser.add_argument("--quick", action="store_true", help="20,000 sessions, 2,000-message session, 300 requests")
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.big, args.requests, args.rounds = 20_000, 2_000, 300, 20

    workdir = Path(tempfile.mkdtemp(prefix="bench_serve-"))
    log = workdir / "log"
    print(f"preparing messages and a log of {args.sessions:,} sessions in {log} ...", flush=True)
    prepare(workdir / "messages.bin", 20_000)
    started = time.perf_counter()
    records = build_log(log, read_messages(str(workdir / "messages.bin"), 20_000), args.sessions, args.messages,
                        args.big)
    print(f"  {records:,} records in {time.perf_counter() - started:.1f} s", flush=True)

    endpoints = [
        Endpoint("sessions page", "/"),
        Endpoint("sessions page 1000", "/?page=1000" if args.sessions >= 50_000 else "/?page=200"),
        Endpoint("sessions page, text filter", "/?q=bench-0123"),
        Endpoint("sessions page, model filter", "/?model=model-1"),
        Endpoint("sessions page, by messages", "/?order=messages"),
        Endpoint("api/sessions", "/api/sessions"),
        Endpoint("api/sessions page 1000", "/api/sessions?page=1000" if args.sessions >= 50_000
                 else "/api/sessions?page=200"),
        Endpoint(f"session of {args.big:,} messages", f"/sessions/{BIG}"),
        Endpoint(f"api/sessions/ ({args.big:,} messages)", f"/api/sessions/{BIG}"),
        Endpoint("search page", f"/search?q={RARE}"),
        Endpoint("api/search", f"/api/search?q={RARE}"),
        Endpoint("health", "/health"),
        Endpoint("static file (floor)", "/static/convlog.css"),
    ]
    failed = False
    results: dict[str, Any] = {}
    server = Server(log, workdir)
    try:
        first_ms, status, _ = server.get("/api/sessions")
        results["first_request_ms"] = first_ms
        print(f"  first request (the server folds the log): {first_ms:,.0f} ms, HTTP {status}", flush=True)
        rss_after_fold = vm_rss_mb(server.proc.pid)
        for endpoint in endpoints:
            server.get(endpoint.path)  # warm: templates compiled, pages cached
            for _ in range(args.rounds):
                ms, status, size = server.get(endpoint.path)
                endpoint.ms.append(ms)
                endpoint.bytes = size
                endpoint.failures += status not in (200, 503)
            failed |= endpoint.failures > 0
            print(f"  {endpoint.name}: p50 {fmt(endpoint.p(50), '.1f')} ms, p99 {fmt(endpoint.p(99), '.1f')} ms",
                  flush=True)
        paths = [e.path for e in endpoints] + [f"/?page={n}" for n in range(1, 50)]
        for n in range(args.requests):
            _, status, _ = server.get(paths[n % len(paths)])
            failed |= status not in (200, 503)
        rss_after = vm_rss_mb(server.proc.pid)
        results["rss_after_fold_mb"], results["rss_after_requests_mb"] = rss_after_fold, rss_after
    finally:
        server.close()

    print("CLI baselines (a new process each, folding from the checkpoint) ...", flush=True)
    cli = {
        "sessions": cli_ms(["sessions", "--json", "--limit", "50"], log, args.cli_rounds),
        "show": cli_ms(["show", BIG, "--format", "json"], log, args.cli_rounds),
        "search": cli_ms(["search", RARE, "--json"], log, args.cli_rounds),
    }
    ok = report(args, records, endpoints, results, cli, failed)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok and not failed else 1


def report(args: argparse.Namespace, records: int, endpoints: list[Endpoint], results: dict[str, Any],
           cli: dict[str, float], failed: bool) -> bool:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title=f"convlog serve benchmark: {args.sessions:,} sessions, {records:,} records, "
                        f"{args.rounds} requests per endpoint; {os.cpu_count()} CPUs, load average "
                        f"{os.getloadavg()[0]:.1f} (other work on the machine disturbs every figure)",
                  title_justify="left")
    for name, justify in (("endpoint", "left"), ("p50 ms", "right"), ("p99 ms", "right"), ("bytes", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for e in endpoints:
        table.add_row(f"{e.name} ({e.path})", fmt(e.p(50), ".1f"), fmt(e.p(99), ".1f"), f"{e.bytes:,}")
    table.add_row("first request (fold from the checkpoint)", fmt(results.get("first_request_ms"), ".0f"), "", "")
    for name, ms in cli.items():
        table.add_row(f"CLI baseline: convlog {name} (new process)", fmt(ms, ".0f"), "", "")
    table.add_row("server RSS after the first fold (MB)", fmt(results.get("rss_after_fold_mb"), ".0f"), "", "")
    table.add_row(f"server RSS after {args.requests:,} more requests (MB)",
                  fmt(results.get("rss_after_requests_mb"), ".0f"), "", "")
    console.print(table)
    by_name = {e.name: e for e in endpoints}
    floor = by_name["static file (floor)"].p(50)
    ratios = {
        "sessions page p50 / static file p50": ratio(by_name["sessions page"].p(50), floor),
        "api/sessions p50 / CLI sessions": ratio(by_name["api/sessions"].p(50), cli["sessions"]),
        "big session API p50 / CLI show": ratio(endpoints[8].p(50), cli["show"]),
        "api/search p50 / CLI search": ratio(by_name["api/search"].p(50), cli["search"]),
        "RSS growth over the requests (MB)": (None if results.get("rss_after_requests_mb") is None
                                              or results.get("rss_after_fold_mb") is None else
                                              results["rss_after_requests_mb"] - results["rss_after_fold_mb"]),
    }
    targets = []
    for e in endpoints[:7]:
        p50, p99 = e.p(50), e.p(99)
        targets.append({"target": f"{e.name}: p50 and p99 < {TARGET_MS:g} ms",
                        "pass": None if p99 is None or p50 is None else p50 < TARGET_MS and p99 < TARGET_MS,
                        "detail": f"p50 {fmt(p50, '.1f')} ms, p99 {fmt(p99, '.1f')} ms"})
    targets.append({"target": "every request answered", "pass": not failed, "detail": ""})
    print_targets(console, ratios, targets)
    if args.json_path:
        write_json(args.json_path, vars(args), {"endpoints": [e.__dict__ for e in endpoints], "results": results,
                                                "cli_ms": cli}, ratios, targets)
    return all(t["pass"] for t in targets)


if __name__ == "__main__":
    sys.exit(main())
