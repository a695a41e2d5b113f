"""``convlog doctor``: checks that say whether recording really works, each with a fix.

:func:`run_checks` returns one :class:`Check` per item, in this order:

1. ``config``: the configuration file loads (:func:`convlog.recorder.config.load_config`);
2. ``directory``: the log directory is writable and has free space;
3. ``recorder``: a recorder answers on the directory's control channel;
4. ``sub <endpoint>``: one per SUB endpoint, reachable and really a PUB or XPUB
   (:func:`convlog.bus.probe.probe_endpoint`): a recorder subscribed to a broker's XSUB
   port receives nothing, silently;
5. ``silence``: known publishers have not gone quiet (no message, no heartbeat) for
   longer than a threshold;
6. ``clock``: the system clock is plausible and the newest record is not in the future;
7. ``retention``: ``[retention]`` can hold the log: ``max_bytes`` fits on the disk and
   is larger than two segments (only finished segments go), an archive directory is
   writable.

The checks only read, except for a temporary file created and removed to prove the
directory is writable, and the probe connections. ``convlog doctor`` and the web UI's
health page compose them (they ask the running recorder for ``status`` and show the
lines); nothing here prints.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from convlog.bus.probe import probe_endpoint
from convlog.core.record import parse_line
from convlog.recorder.config import Config, ConfigError, load_config
from convlog.store.lock import LogLock, pid_alive
from convlog.store.segment import list_segments, open_segment

#: Free space below this many bytes fails the directory check.
MIN_FREE_BYTES = 1 << 30
#: Free space below this fraction of the file system fails the directory check.
MIN_FREE_FRACTION = 0.05
#: How far (seconds) the newest record's ``ts`` may lie ahead of the system clock.
CLOCK_SKEW_S = 5.0
#: The system clock must read after this (2020-01-01T00:00:00Z, Unix seconds).
EARLIEST_PLAUSIBLE_TIME_S = 1_577_836_800
#: The fix for the classic mistake (docs/operations.md, "Status and doctor").
XSUB_FIX = "this is the broker's XSUB (publisher-side) port; point --sub at its XPUB port, usually the other one"
#: How many bytes of the newest segment's end are read to find its last record.
_TAIL_BYTES = 1 << 20


@dataclass(frozen=True)
class Check:
    """The result of one check.

    Attributes:
        name: short name (``config``, ``directory``, ``recorder``, ``sub <endpoint>``,
            ``silence``, ``clock``).
        ok: the check passed (a skipped check passes and says why it was skipped).
        message: one line saying what was found.
        fix: one line saying what to do, when ``ok`` is False; else None.
    """

    name: str
    ok: bool
    message: str
    fix: str | None = None


def check_inputs(config_path: Path | None, sub: Sequence[str], status: dict | None) -> tuple[Config, list[str]]:
    """What ``doctor`` checks against: the configuration (defaults when it is invalid;
    the config check reports that) and the SUB endpoints: those given, else the running
    recorder's (from its ``status``), else the configuration's.

    Args:
        config_path: ``--config`` or None (``CONVLOG_CONFIG`` if set).
        sub: endpoints given on the command line (may be empty).
        status: the running recorder's ``status`` reply, or None.

    Returns:
        ``(config, endpoints)``.
    """
    try:
        config = load_config(config_path, overrides={})
    except ConfigError:
        config = Config()
    endpoints = list(sub)
    if not endpoints and status is not None:
        endpoints = [ep["endpoint"] for ep in status.get("endpoints", []) if ep.get("kind") == "sub"]
    return config, endpoints or list(config.sub)


def run_checks(
    config_path: Path | None,
    directory: Path,
    sub: list[str],
    status: dict | None,
    silence_s: float = 120.0,
    probe_timeout_s: float = 2.0,
) -> list[Check]:
    """Run every check and return them in the order of the module doc.

    Args:
        config_path: the configuration file given with ``--config``, or None (then
            ``CONVLOG_CONFIG`` is used if set, else only defaults and environment).
        directory: the log directory (it need not exist yet).
        sub: the SUB endpoints the recorder is (or would be) configured with.
        status: the running recorder's ``status`` reply from its control channel
            (fields as documented for ``convlog status --json``; any may be missing),
            or None when no recorder answered.
        silence_s: seconds without any message or heartbeat from known publishers
            after which the ``silence`` check fails.
        probe_timeout_s: upper bound per endpoint probe, seconds.

    Returns:
        the checks, one per item; every failing check has a ``fix``.

    Never raises for what it checks: problems become failing checks.
    """
    directory = Path(directory)
    checks = [check_config(config_path), check_directory(directory), check_recorder(directory, status)]
    if sub:
        checks.extend(check_endpoint(endpoint, probe_timeout_s) for endpoint in sub)
    else:
        checks.append(Check("sub", False, "no SUB endpoint configured: the recorder would receive nothing",
                            "give the broker's XPUB endpoint with --sub (or `sub` in [recorder])"))
    checks.append(check_silence(status, silence_s))
    checks.append(check_clock(directory, status))
    checks.append(check_retention(config_path, directory))
    checks.append(check_database(config_path, directory))
    return checks


def check_database(config_path: Path | None, directory: Path, timeout_s: float = 5.0) -> Check:
    """The sync's database (``[sync] db`` or ``$CONVLOG_DB``): it answers, its convlog
    schema is the version this convlog writes, and the sync is writing this log."""
    try:
        config = load_config(config_path)
    except ConfigError:
        return Check("database", True, "skipped: the configuration does not load")
    if not config.sync_db:
        return Check("database", True, "no sync configured ([sync] db): the log stays on this host only")
    import psycopg

    from convlog.db.schema import SCHEMA_VERSION, first_line, redact_url, schema_version
    from convlog.store.sync_state import read_sync_state

    where = redact_url(config.sync_db)
    try:
        with psycopg.connect(config.sync_db, connect_timeout=max(1, int(timeout_s))) as conn:
            found = schema_version(conn)
    except psycopg.Error as exc:
        return Check("database", False, f"{where} does not answer: {first_line(exc)}",
                     "start PostgreSQL, or fix [sync] db (host, port, user, database, password in ~/.pgpass)")
    if found != SCHEMA_VERSION:
        said = "has no convlog schema" if found == 0 else f"has convlog schema version {found}"
        fix = ("run convlog sync once to create or migrate it" if found < SCHEMA_VERSION
               else "upgrade convlog to the version that wrote it")
        return Check("database", False, f"{where} {said}, this convlog writes version {SCHEMA_VERSION}", fix)
    state = read_sync_state(directory)
    if state is None:
        return Check("database", False, f"{where} answers (schema version {found}) but no sync has written this log",
                     f"run convlog sync --dir {directory} (or its systemd unit convlog-sync@)")
    return Check("database", True, f"{where} answers (schema version {found}); the sync wrote up to seq "
                                   f"{state.get('seq')} at {state.get('updated')}")


def check_retention(config_path: Path | None, directory: Path) -> Check:
    """``[retention]`` can do its job (see the module doc); skipped (passing) when the
    configuration does not load (the ``config`` check names why)."""
    try:
        config = load_config(config_path)
    except ConfigError:
        return Check("retention", True, "skipped: the configuration does not load")
    limits = config.retention()
    if not limits.active:
        return Check("retention", True, "off: the log keeps every segment (sealed); set [retention] max_age "
                                        "or max_bytes to bound it")
    said = []
    if limits.max_age_s is not None:
        said.append(f"max_age {limits.max_age_s / 86400:g} d")
    if limits.max_bytes is not None:
        said.append(f"max_bytes {_gib(limits.max_bytes)}")
        if limits.max_bytes < 2 * config.segment_bytes:
            return Check("retention", False, f"max_bytes ({limits.max_bytes:,} bytes) is less than two segments "
                         f"({config.segment_bytes:,} bytes each): only finished segments go, so it cannot be held",
                         "raise max_bytes, or lower segment_bytes in [recorder]")
        target = _existing_ancestor(directory)
        used = sum(path.stat().st_size for _, path in list_segments(directory)) if directory.is_dir() else 0
        free = shutil.disk_usage(target).free
        if free + used < limits.max_bytes:
            return Check("retention", False, f"max_bytes is {_gib(limits.max_bytes)} but {target} has "
                         f"{_gib(free)} free (the log holds {_gib(used)}): the disk fills first",
                         "lower max_bytes, or free space on that file system")
    if config.retention_action == "archive" and config.retention_archive_dir is not None:
        archive = _existing_ancestor(config.retention_archive_dir)
        if not os.access(archive, os.W_OK):
            return Check("retention", False, f"the archive directory {config.retention_archive_dir} cannot be "
                         f"written ({archive} is not writable)",
                         f"give the recorder's user write access to {archive}, or choose another archive_dir")
        said.append(f"archive to {config.retention_archive_dir}")
    else:
        said.append("delete")
    return Check("retention", True, ", ".join(said))


def check_config(config_path: Path | None) -> Check:
    """The configuration loads. A bad file gives ``file:line: key: reason``."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        where = f"{exc.origin}:{exc.line}" if exc.line else exc.origin
        return Check("config", False, f"invalid configuration: {exc}",
                     f"correct {exc.key} at {where}, then run `convlog doctor` again")
    if config.source == "defaults":
        return Check("config", True, "no configuration file; defaults and CONVLOG_* environment apply")
    return Check("config", True, f"{config.source} is valid")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB"


def check_directory(directory: Path) -> Check:
    """The log directory (or, when it does not exist yet, its nearest existing parent,
    where the recorder would create it) accepts a new file, and its file system has at
    least :data:`MIN_FREE_BYTES` and :data:`MIN_FREE_FRACTION` free."""
    target = _existing_ancestor(directory)
    where = str(directory) if target == directory.absolute() else f"{target} (where {directory} would be created)"
    if not target.is_dir():
        return Check("directory", False, f"{target} exists and is not a directory",
                     f"choose another --dir, or move {target} away")
    try:
        with tempfile.NamedTemporaryFile(dir=target, prefix=".convlog-doctor-"):
            pass
    except OSError as exc:
        return Check("directory", False, f"cannot create a file in {where}: {exc.strerror or exc}",
                     f"give the recorder's user write access to {target} (or choose another --dir)")
    usage = shutil.disk_usage(target)
    fraction = usage.free / usage.total if usage.total else 0.0
    summary = f"{_gib(usage.free)} free of {_gib(usage.total)} ({fraction:.0%})"
    if usage.free < MIN_FREE_BYTES or fraction < MIN_FREE_FRACTION:
        return Check("directory", False, f"{where} is writable but low on space: {summary}",
                     "free space on that file system, or move --dir to one with room")
    return Check("directory", True, f"{where} is writable; {summary}")


def _pid_command(pid: int) -> str | None:
    """The command line of ``pid`` (Linux ``/proc``), or None when unknown."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def check_recorder(directory: Path, status: dict | None) -> Check:
    """A recorder answers on the control channel. When none does, the lock file tells
    whether the last one is gone (stopped or crashed) or still alive but silent."""
    start = f"start it: `convlog record --dir {directory}` (or `convlog launch`, or the systemd unit)"
    if status is not None:
        pid = status.get("pid", "?")
        uptime = status.get("uptime_s")
        records = status.get("records")
        parts = [f"running: pid {pid}"]
        if isinstance(uptime, int | float):
            parts.append(f"up {uptime:.0f} s")
        if isinstance(records, int):
            parts.append(f"{records} records written")
        degraded = [str(d) for d in status.get("degraded") or []]
        if degraded:
            return Check("recorder", False, f"{', '.join(parts)}; degraded: {'; '.join(degraded)}",
                         "see `convlog status` and the recorder's log for the cause")
        return Check("recorder", True, ", ".join(parts))
    holder = LogLock.last_holder(directory)
    if holder is None:
        return Check("recorder", False, f"not running: no recorder answers for {directory} and none has run there",
                     start)
    pid = holder["pid"]
    since = f", started {holder['started']}" if holder.get("started") else ""
    host = holder.get("host")
    if host and host != socket.gethostname():
        return Check("recorder", False,
                     f"no recorder answers; the last one was pid {pid} on host {host}{since}, not this machine",
                     f"check it on {host}, or {start}")
    if not pid_alive(pid):
        return Check("recorder", False, f"not running: the last recorder (pid {pid}{since}) is gone",
                     f"{start}; its log (journalctl, or the log file in {directory}) says why it stopped")
    if not LogLock.is_held(directory):
        # Alive, but not holding the lock: it stopped writing (or it was an offline
        # writer such as a session command, which releases the lock when done).
        return Check("recorder", False, f"not running: no process holds {directory} (last writer: pid {pid}{since})",
                     start)
    command = _pid_command(pid)
    if command is not None and "convlog" not in command:
        return Check("recorder", False,
                     f"not running: the last recorder (pid {pid}{since}) is gone; its pid now belongs to: {command}",
                     start)
    return Check("recorder", False,
                 f"pid {pid}{since} holds the directory but does not answer on the control channel",
                 f"it may be hung or an older convlog: check `convlog status`, then stop it (kill {pid}) "
                 "and start it again")


def check_endpoint(endpoint: str, timeout_s: float = 2.0) -> Check:
    """One SUB endpoint is reachable and a PUB or XPUB (see :mod:`convlog.bus.probe`)."""
    name = f"sub {endpoint}"
    probe = probe_endpoint(endpoint, timeout_s)
    if probe.ok_for_sub:
        return Check(name, True, probe.detail)
    if probe.socket_type == "XSUB":
        fix = XSUB_FIX
    elif not probe.reachable:
        fix = ("start the broker (e.g. `convlog broker`) or correct the address: the broker's XPUB side "
               "as tcp://host:port or ipc://path")
    elif probe.socket_type is not None:
        fix = f"point --sub at a PUB or XPUB endpoint (this one is a {probe.socket_type})"
    else:
        fix = "check the port: --sub must be the broker's XPUB endpoint"
    return Check(name, False, probe.detail, fix)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def check_silence(status: dict | None, silence_s: float = 120.0) -> Check:
    """Known publishers are not silent for longer than ``silence_s`` seconds.

    Uses ``status["publishers"]``: ``known`` (publishers seen, by their heartbeats or
    sequence numbers) and ``silent_s`` (seconds since the last message or heartbeat
    from any of them); falls back to ``newest_age_s`` when ``silent_s`` is missing.
    With no recorder, or no known publisher, there is nothing to expect and it passes.
    """
    if status is None:
        return Check("silence", True, "skipped: no recorder answers")
    publishers = status.get("publishers") if isinstance(status.get("publishers"), dict) else {}
    known = publishers.get("known")
    if not isinstance(known, int) or known <= 0:
        return Check("silence", True, "no publishers known yet; silence is expected")
    silent = _number(publishers.get("silent_s"))
    if silent is None:
        silent = _number(status.get("newest_age_s"))
    if silent is None:
        return Check("silence", True, f"{known} publishers known; nothing received from them yet")
    if silent > silence_s:
        return Check("silence", False,
                     f"{known} publishers known, but nothing (message or heartbeat) for {silent:.0f} s "
                     f"(threshold {silence_s:g} s)",
                     "check that the publishers run and connect to the broker's XSUB port, and that the broker "
                     "runs; `convlog status` shows the recorder's endpoints")
    return Check("silence", True, f"{known} publishers known; last heard {silent:.0f} s ago")


def newest_record(directory: Path) -> dict[str, Any] | None:
    """The last whole record of the log, read from the end of the newest non-empty
    segment (at most its last MiB), or None when there is none."""
    for _, path in reversed(list_segments(directory)):
        try:
            with open_segment(path) as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - _TAIL_BYTES))
                data = fh.read()
        except OSError:
            continue
        lines = data.split(b"\n")[:-1]  # the part after the last newline is not whole
        if size > _TAIL_BYTES:
            lines = lines[1:]  # the first may be cut
        for line in reversed(lines):
            try:
                return parse_line(line)
            except ValueError:
                continue
    return None


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def check_clock(directory: Path, status: dict | None, now_s: float | None = None) -> Check:
    """The system clock reads after 2020 and the newest record's ``ts`` is at most
    :data:`CLOCK_SKEW_S` seconds ahead of it.

    A record from the future means the clock was set back after it was written (or
    the log came from a machine with a clock ahead). The log's order is carried by
    ``seq``, never by ``ts``, so a wrong clock misleads ``--as-of`` and readers, not
    the log itself. A jump of the clock while the recorder runs is not detected: that
    would need a monotonic reference kept by the recorder; keeping the clock in sync
    is the job of the system's time service.

    Args:
        directory: the log directory (its newest record is read from disk; the
            status's ``newest_ts`` is used when the log cannot be read).
        status: the recorder's status reply, or None.
        now_s: the current time, Unix seconds (default ``time.time()``).
    """
    now_s = time.time() if now_s is None else now_s
    now = datetime.fromtimestamp(now_s, UTC)
    now_text = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    time_fix = "set the clock and keep it in sync (e.g. `timedatectl set-ntp true`, chrony)"
    if now_s < EARLIEST_PLAUSIBLE_TIME_S:
        return Check("clock", False, f"system time is {now_text}, before 2020: the clock is not set", time_fix)
    record = newest_record(directory)
    seq, ts = (record.get("seq"), record.get("ts")) if record else (None, status.get("newest_ts") if status else None)
    newest = _parse_ts(ts)
    if newest is None:
        return Check("clock", True, f"system time {now_text}; no record to compare with")
    label = f"newest record (seq {seq})" if seq is not None else "newest record"
    ahead_s = (newest - now).total_seconds()
    if ahead_s > CLOCK_SKEW_S:
        return Check("clock", False,
                     f"system time {now_text}, but the {label} is {ahead_s:.0f} s in the future ({ts}): "
                     "the clock was set back, or the log came from a machine whose clock was ahead",
                     f"{time_fix}; records stay ordered by seq, only their ts are off")
    return Check("clock", True, f"system time {now_text}; {label} is {max(0.0, -ahead_s):.0f} s old")
