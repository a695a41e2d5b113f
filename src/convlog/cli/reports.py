"""Terminal output (rich) of reports: verify, recover and import, the checkpoints table,
the recorder's status, the doctor's checks and what a purge did."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from convlog.cli.console import err, out
from convlog.core.view import plural

if TYPE_CHECKING:
    from convlog.store.importer import ImportReport
    from convlog.store.offline import RepairReport
    from convlog.store.purge import PurgeReport
    from convlog.store.seal import Sealed
    from convlog.store.verify import VerifyReport


# -- offline tools (verify, recover, compress, import) ----------------------------------------------


def print_sync_line(sync: dict[str, Any]) -> None:
    """The ``sync:`` line of ``convlog status`` (what ``recovery/sync.json`` says)."""
    if not sync.get("updated"):
        out.print("  sync: [sync] db is set but convlog sync has not written yet (retention waits for it)",
                  markup=False)
        return
    behind = sync.get("lag_records") or 0
    lag = f"{behind:,} records behind ({sync.get('lag_s') or 0:g} s)" if behind else "caught up"
    out.print(f"  sync: seq {sync.get('seq')} in {sync.get('db')}, {lag}; last written {sync.get('updated')}",
              markup=False)


def print_sync_lag(rows: list[dict[str, Any]], where: str) -> None:
    """``convlog status --db``: each synced log's position and lag."""
    table = Table("log", "host", "directory", "seq", "records", "behind", "lag s", "search behind", "updated",
                  pad_edge=False)
    for row in rows:
        behind = row["lag_records"]
        table.add_row(row["log_id"][:8], row["host"] or "", row["directory"] or "", str(row["seq"] or 0),
                      f"{row['records'] or 0:,}", "?" if behind is None else f"{behind:,}",
                      "?" if row["lag_s"] is None else f"{row['lag_s']:.3f}", f"{row['search_behind']:,}",
                      (row["updated"] or "")[:19])
    out.print(table)
    out.print(f"{len(rows)} log(s) synced into {where}", markup=False)


def print_verify(report: VerifyReport) -> None:
    """Print a :class:`~convlog.store.verify.VerifyReport`: one ``where:line: reason`` line per
    problem, one ``NOTE`` line per note, then a one-line summary."""
    for problem in report.problems:
        out.print(str(problem), markup=False)
    for note in report.notes:
        out.print(f"NOTE {note}", markup=False)
    count = len(report.problems)
    out.print(
        f"{report.directory}: {report.segments} segments, {report.records} records, last seq {report.last_seq}, "
        f"{count} problem{'' if count == 1 else 's'}",
        markup=False,
    )


def print_repair(directory: Path, report: RepairReport) -> None:
    """Print what ``convlog recover`` found and did."""
    rec = report.recovery
    if rec.reason:
        lines = f"{rec.quarantined_lines} line{'' if rec.quarantined_lines == 1 else 's'}"
        out.print(
            f"{directory}: moved {rec.quarantined_bytes} bytes ({lines}) from events/{rec.segment} at offset "
            f"{rec.offset} to recovery/quarantine.jsonl: {rec.reason}",
            markup=False,
        )
    else:
        shutdown = "clean" if rec.was_clean else "unclean"
        out.print(f"{directory}: nothing to repair (last seq {rec.last_seq}, previous shutdown {shutdown})",
                  markup=False)
    if report.recovered_seq is not None:
        out.print(f"wrote recorder.recovered at seq {report.recovered_seq}; state marked clean", markup=False)


def print_compress(directory: Path, sealed: Sealed) -> None:
    """Print the summary line of ``convlog compress``: segments, bytes before and after,
    ratio."""
    if not sealed.segments:
        out.print(f"{directory}: nothing to compress (the finished segments are sealed already)", markup=False)
        return
    noun = "segment" if sealed.segments == 1 else "segments"
    out.print(f"{directory}: compressed {sealed.segments} {noun}: {sealed.before:,} -> {sealed.after:,} bytes "
              f"(ratio {sealed.ratio:.1f}x)", markup=False)


def print_prune(directory: Path, data: dict[str, Any]) -> None:
    """Print what ``convlog prune`` let go of (``recorder.pruned``'s data, see
    :meth:`convlog.store.retention.PruneReport.as_data`)."""
    segments = data.get("segments") or []
    verb = "would " + data["action"] if data.get("dry_run") else ("archived" if data["action"] == "archive" else
                                                                  "deleted")
    if not segments:
        leftovers = data.get("leftovers") or []
        tail = f" (removed {len(leftovers)} segment(s) left by an interrupted prune)" if leftovers else ""
        out.print(f"{directory}: nothing to prune{tail}", markup=False)
        return
    noun = "segment" if len(segments) == 1 else "segments"
    reasons = ", ".join(f"{count} by {reason}" for reason, count in sorted(data.get("reasons", {}).items()))
    where = f" into {data['archive_dir']}" if data.get("archive_dir") else ""
    out.print(f"{directory}: {verb} {len(segments)} {noun}{where} ({reasons}): seq {data['first_seq']}"
              f"-{data['last_seq']}, {data['records']:,} records, {data['bytes']:,} bytes, received "
              f"{data.get('first_ts') or '?'} to {data.get('last_ts') or '?'}", markup=False)
    if not data.get("dry_run"):
        out.print(f"base: the state at seq {data['base']} (base.json); the log's horizon is seq {data['base']}",
                  markup=False)
        if data.get("checkpoints"):
            out.print(f"checkpoints before the horizon {verb}: {', '.join(data['checkpoints'])}", markup=False)


def print_import(report: ImportReport) -> None:
    """Print the invalid lines of an import (``file:line: reason``, stderr) and its
    summary line (stdout)."""
    for invalid in report.invalid:
        err.print(str(invalid), markup=False)
    out.print(report.summary(), markup=False)


def checkpoint_row(info: Any) -> dict[str, Any]:
    """One checkpoint as a JSON-friendly dict."""
    return {
        "file": info.path.name,
        "seq": info.seq,
        "label": info.label,
        "created": info.created,
        "ts": info.ts,
        "sessions": info.sessions,
        "bytes": info.size,
    }


def checkpoints_table(infos: Sequence[Any]) -> Table:
    """The checkpoints as a rich table, oldest first."""
    table = Table(pad_edge=False)
    for name, justify in (("seq", "right"), ("time (last record)", "left"), ("label", "left"),
                          ("sessions", "right"), ("size", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for info in infos:
        table.add_row(
            str(info.seq), (info.ts or "?")[:19].replace("T", " "), info.label or "(automatic)",
            "?" if info.sessions is None else str(info.sessions), f"{info.size / 1024:,.1f} KiB",
        )
    return table


def print_status(status: dict[str, Any]) -> None:
    """Print a running recorder's ``status`` reply (see ``convlog.recorder.daemon.Recorder.status``)
    as a short report: health first, then one line per aspect."""
    healthy = bool(status.get("healthy"))
    where = f" recorder pid {status.get('pid')} · up {status.get('uptime_s', 0):.0f} s · {status.get('directory')}"
    out.print(Text("healthy" if healthy else "UNHEALTHY", style="bold green" if healthy else "bold red"), Text(where))
    for problem in status.get("problems") or []:
        out.print(Text(f"  problem: {problem}", style="red"))
    for warning in status.get("warnings") or []:
        out.print(Text(f"  warning: {warning}", style="yellow"))
    for ep in status.get("endpoints") or []:
        state = "connected" if ep.get("connected") else "NOT connected"
        out.print(f"  {ep.get('kind')} {ep.get('endpoint')}: {state}", markup=False)
    if "curve" in status:
        curve = status["curve"]
        out.print(f"  CURVE: on (own key {curve.get('secret')}, broker key {curve.get('server')})" if curve
                  else "  CURVE: off (plain connection to the broker)", markup=False)
    age = status.get("newest_age_s")
    out.print(
        f"  records: {status.get('records', 0):,} since start (seq {status.get('last_seq')}), "
        f"{status.get('rate_1m', 0):.1f}/s over the last minute, newest "
        + (f"{age:.1f} s ago" if age is not None else "none yet"),
        markup=False,
    )
    fsync = status.get("fsync") or {}
    disk = status.get("disk") or {}
    out.print(
        f"  fsync {fsync.get('policy')} (lag {fsync.get('lag_s', 0):.3f} s, durable seq {fsync.get('durable_seq')}); "
        f"log {(disk.get('used_bytes') or 0) / 1e6:.1f} MB, {(disk.get('free_bytes') or 0) / 1e9:.1f} GB free",
        markup=False,
    )
    cp = status.get("last_checkpoint")
    out.print(f"  last checkpoint: {cp.get('file')} (seq {cp.get('seq')})" if cp else "  last checkpoint: none",
              markup=False)
    retention = status.get("retention") or {}
    if retention.get("limits"):
        limits, last = retention["limits"], retention.get("last_prune")
        parts = [f"max_age {limits['max_age_s']:g} s" if limits.get("max_age_s") else "",
                 f"max_bytes {limits['max_bytes']:,}" if limits.get("max_bytes") else ""]
        done = (f"; last {last['action']} of {len(last['segments'])} segment(s) up to seq {last['last_seq']}"
                if last else "; nothing pruned since start")
        out.print(f"  retention: {', '.join(p for p in parts if p)} ({limits['action']}){done}", markup=False)
    redact = status.get("redact")
    if redact is not None:
        if redact.get("enabled"):
            counts = redact.get("redactions") or {}
            done = ", ".join(f"{rule} {n}" for rule, n in counts.items()) or "none"
            out.print(f"  redaction: on ({len(redact.get('rules') or [])} rules); secrets replaced since start: "
                      f"{done}", markup=False)
        else:
            out.print("  redaction: OFF (secrets are stored as received)", markup=False)
    sync = status.get("sync")
    if sync is not None:
        print_sync_line(sync)
    chain = status.get("chain")
    if chain is not None:
        signing = chain.get("signing")
        signed = ("not signed" if signing is None else
                  f"heads signed with key {signing['key']}"
                  + (f", last at seq {signing['last_seq']}" if signing.get("last_seq") is not None else
                     ", none yet (at the next checkpoint)"))
        if chain.get("enabled"):
            out.print(f"  hash chain: on (head {str(chain.get('head'))[:16]}...); {signed}", markup=False)
        else:
            out.print(f"  hash chain: OFF (new records are not tamper-evident); {signed}", markup=False)
    if status.get("metrics"):
        out.print(f"  metrics: {status['metrics']}", markup=False)
    gaps, pubs = status.get("gaps") or {}, status.get("publishers") or {}
    silent = pubs.get("silent_s")
    out.print(
        f"  publishers: {pubs.get('known', 0)} known ({pubs.get('open', 0)} open), last heard {silent:.0f} s ago; "
        if silent is not None and pubs.get("known") else f"  publishers: {pubs.get('known', 0)} known; ",
        f"missing {gaps.get('missing', 0)}, restarts {gaps.get('restarts', 0)}, "
        f"unverified {gaps.get('unverified', 0)}, invalid stamps {gaps.get('invalid', 0)}, "
        f"dropped {status.get('drops', 0)}",
        sep="", markup=False,
    )


def print_checks(checks: Sequence[Any]) -> None:
    """Print ``convlog doctor`` results: one line per check, its fix indented below."""
    for check in checks:
        mark = Text("ok  ", style="green") if check.ok else Text("FAIL", style="bold red")
        out.print(mark, Text(f" {check.name}: {check.message}"))
        if not check.ok and check.fix:
            out.print(Text(f"      fix: {check.fix}", style="yellow"))


# -- purge ------------------------------------------------------------------------------------------


def print_purge(report: PurgeReport) -> None:
    """Print what ``convlog purge`` did (or, as a dry run, would do): the records purged,
    then one line per kind of file it rewrote, removed or left alone."""
    dry = report.via == "dry-run"
    when = f", received before {report.before}" if report.before else ""
    seqs = f" (seq {report.first_seq}..{report.last_seq}{when})" if report.first_seq is not None else when
    verb = "would purge" if dry else ("finished purging" if report.resumed else "purged")
    if not report.records:
        out.print(f"{report.directory}: nothing to purge for session {report.session}", markup=False)
        for note in report.notes:
            out.print(f"NOTE {note}", markup=False)
        return
    out.print(f"{report.directory}: {verb} {plural(report.records, 'record')} of session {report.session}{seqs}",
              markup=False)
    lines = []
    if report.segments:
        lines.append(f"segments {'to rewrite' if dry else 'rewritten'}: {len(report.segments)} "
                     f"({', '.join(report.segments)})")
    if report.checkpoints:
        lines.append(f"checkpoints {'to rebuild' if dry else 'rebuilt'}: {len(report.checkpoints)} "
                     f"({', '.join(report.checkpoints)})")
    if report.checkpoints_removed:
        lines.append(f"checkpoints removed (cannot be rebuilt): {', '.join(report.checkpoints_removed)}")
    if report.base:
        lines.append("base.json: the session taken out of its state" if report.base == "edited"
                     else "base.json: kept as it was")
    if report.index:
        lines.append(f"search index: {'to rebuild' if dry else report.index}")
    if report.quarantine:
        lines.append(f"quarantine: {plural(report.quarantine, 'entry', 'entries')} "
                     f"{'to redact' if dry else 'redacted'}")
    if report.exports_removed:
        lines.append(f"exports {'to remove' if dry else 'removed'}: {', '.join(report.exports_removed)}")
    for line in lines:
        out.print(f"  {line}", markup=False)
    for note in report.notes:
        out.print(f"NOTE {note}", markup=False)
    if report.untouched:
        out.print(f"NOTE files under the directory that name the session were left alone (check them): "
                  f"{', '.join(report.untouched)}", markup=False)
    if dry:
        out.print("nothing was changed (dry run)", markup=False)
    elif report.record_seq is not None:
        how = "by the running recorder" if report.via == "recorder" else "directly (no recorder running)"
        out.print(f"session.purged written at seq {report.record_seq} {how}", markup=False)
