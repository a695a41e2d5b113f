"""What the benchmark scripts share: ports, stopping processes, peak RSS, parsing record
times, formatting figures and printing the PASS/FAIL lines of the targets.

Imported by ``bench_record.py`` and ``bench_recovery.py`` (run as scripts, so this
folder is on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from convlog.cli.demo import free_port

__all__ = [
    "Processes",
    "fmt",
    "free_port",
    "parse_ts",
    "print_targets",
    "ratio",
    "stop_process",
    "vm_hwm_mb",
    "vm_rss_mb",
    "write_json",
]


def _status_mb(pid: int, key: str) -> float | None:
    """A ``kB`` field of /proc/PID/status in MB (1 MB = 1024 kB here), or None when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident memory (``VmHWM`` in /proc/PID/status) in MB, or None when gone."""
    return _status_mb(pid, "VmHWM:")


def vm_rss_mb(pid: int) -> float | None:
    """Resident memory now (``VmRSS`` in /proc/PID/status) in MB, or None when gone."""
    return _status_mb(pid, "VmRSS:")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` (default SIGTERM) and wait ``timeout`` seconds; SIGKILL after that."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def parse_ts(value: str) -> float:
    """A record's ``ts`` (RFC 3339) as Unix seconds."""
    return datetime.fromisoformat(value).timestamp()


def fmt(value: float | None, spec: str = ",.0f") -> str:
    """``value`` formatted with ``spec``, or ``-`` when it is None."""
    return "-" if value is None else format(value, spec)


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, or None when either is missing or ``den`` is 0."""
    if num is None or den is None or den == 0:
        return None
    return num / den


def print_targets(console: Any, ratios: Mapping[str, float | None], targets: Sequence[Mapping[str, Any]]) -> None:
    """Print the ratios, then one PASS/FAIL/N/A line per target and the failed ones.

    Args:
        console: a rich Console.
        ratios: name -> ratio.
        targets: ``{"target": name, "pass": True | False | None, "detail": text}``.
    """
    for name, value in ratios.items():
        console.print(f"  {name}: {fmt(value, '.2f')}")
    failed = []
    for t in targets:
        mark = {True: "[green]PASS[/green]", False: "[red]FAIL[/red]", None: "[yellow]N/A[/yellow]"}[t["pass"]]
        console.print(f"  {mark} {t['target']}: {t['detail']}")
        if t["pass"] is not True:
            failed.append(t["target"])
    console.print("targets failed: " + (", ".join(failed) if failed else "none"))


def write_json(path: str | Path, config: Mapping[str, Any], sections: Mapping[str, Any],
               ratios: Mapping[str, Any], targets: Sequence[Mapping[str, Any]]) -> None:
    """Write a benchmark's figures as one JSON document (``--json PATH``):
    ``{"config", <sections...>, "ratios", "targets"}``, indented, ending in a newline."""
    document = {"config": dict(config), **sections, "ratios": dict(ratios), "targets": list(targets)}
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


class Processes:
    """The subprocesses of one benchmark run, each with its stderr in
    ``WORKDIR/<name>.stderr``; :meth:`cleanup` stops them all (SIGTERM, then SIGKILL).

    Args:
        workdir: where the stderr files go.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def say(text: str) -> None:
        """A progress line on stderr (stdout is the report)."""
        print(text, file=sys.stderr, flush=True)

    def spawn(self, cmd: list[str], name: str, stdout: bool = False, stdin: bool = False) -> subprocess.Popen[bytes]:
        """Start ``cmd``; ``stdout``/``stdin`` give pipes (else /dev/null)."""
        err = (self.workdir / f"{name}.stderr").open("ab")
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        )
        err.close()
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        """Stop every process started, newest first (5 s each before SIGKILL)."""
        for proc in reversed(self.procs):
            stop_process(proc, 5.0)
        self.procs.clear()
