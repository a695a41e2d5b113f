"""Retention: letting the oldest finished segments go, after making the log's base.

:func:`prune` applies :func:`convlog.core.retention.plan` to a log directory. The steps,
in this order, so that a crash at any point leaves a log every reader folds correctly
and ``convlog verify`` accepts (a re-run finishes the job):

1. fold the log up to the last record of the last segment to go (from the newest usable
   checkpoint or the current base) and write that state as the new base
   (``base.json``, see :mod:`convlog.store.checkpoint`), atomically;
2. with ``action = "archive"``, copy the segments (and the checkpoints before the cut,
   and the old base when the archive starts with these segments) into the archive and
   record them in its manifest (:mod:`convlog.store.archive`), each copy fsynced
   before the manifest names it;
3. announce it: the caller writes a ``recorder.pruned`` record (the recorder through
   its recording loop, ``convlog prune`` through :class:`~convlog.store.offline.OfflineWriter`);
4. remove the segments (both forms of one, if an interrupted seal left two), then the
   checkpoints before the cut, and fsync the directories;
5. drop the search index's rows for the removed seqs.

Between 1 and 4 the old segments are still there but nothing reads them: folds start
at the base or a newer checkpoint. Segments before the base (a prune interrupted in 4)
are removed by the next prune, whatever the limits then.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from convlog.core.fold import fold
from convlog.core.retention import Doomed, Limits, SegmentSpan, hold_for_sync, leftovers, plan, reserve_live
from convlog.store.archive import archive_segments, segment_spans
from convlog.store.checkpoint import (
    BeforeHorizonError,
    CheckpointError,
    best_start,
    list_checkpoints,
    read_horizon,
    write_base,
)
from convlog.store.clock import Clock
from convlog.store.fsync import fsync_dir
from convlog.store.segment import (
    CHECKPOINTS,
    EVENTS,
    SEALING_SUFFIX,
    follow,
    list_segments,
    segment_key,
)

#: ``action`` values.
ACTIONS = ("delete", "archive")


class RetentionError(Exception):
    """Retention cannot be applied (the message says why); nothing was removed."""


@dataclass(slots=True)
class PruneReport:
    """What :func:`prune` did (or, with ``dry_run``, would do).

    Attributes:
        action: ``"delete"`` or ``"archive"``.
        archive_dir: where archived segments went, or None.
        segments: the segments let go of, oldest first, with why.
        leftovers: segment keys before the base left by an interrupted prune, removed now.
        checkpoints: checkpoint files removed (or archived) with them.
        base: the new base's seq, or None when none was written.
        dry_run: True when nothing was changed.
        bytes_before: the log's segments on disk before, bytes.
        bytes_after: ... and after, bytes.
        held_for_sync: segments that were due but wait until the sync has their records.
    """

    action: str
    archive_dir: Path | None
    segments: list[Doomed] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    base: int | None = None
    dry_run: bool = False
    bytes_before: int = 0
    bytes_after: int = 0
    held_for_sync: int = 0

    @property
    def records(self) -> int:
        """Records in the segments let go of."""
        return sum(d.span.last_seq - d.span.first_seq + 1 for d in self.segments)

    @property
    def removed_bytes(self) -> int:
        """Bytes on disk of the segments let go of."""
        return sum(d.span.bytes for d in self.segments)

    def as_data(self) -> dict[str, Any]:
        """The ``recorder.pruned`` record's data (and ``convlog prune --json``)::

            {"action", "archive_dir", "segments": [names], "reasons": {"max_age": n, ...},
             "first_seq", "last_seq", "records", "bytes", "first_ts", "last_ts",
             "base", "checkpoints": [names], "leftovers": [names], "dry_run",
             "held_for_sync": segments due that wait for convlog sync}
        """
        spans = [d.span for d in self.segments]
        reasons: dict[str, int] = {}
        for doomed in self.segments:
            reasons[doomed.reason] = reasons.get(doomed.reason, 0) + 1
        return {
            "action": self.action,
            "archive_dir": str(self.archive_dir) if self.archive_dir else None,
            "segments": [span.key for span in spans],
            "reasons": reasons,
            "first_seq": spans[0].first_seq if spans else None,
            "last_seq": spans[-1].last_seq if spans else None,
            "records": self.records,
            "bytes": self.removed_bytes,
            "first_ts": spans[0].first_ts if spans else None,
            "last_ts": spans[-1].last_ts if spans else None,
            "base": self.base,
            "checkpoints": self.checkpoints,
            "leftovers": self.leftovers,
            "dry_run": self.dry_run,
            "held_for_sync": self.held_for_sync,
        }


def log_bytes(directory: Path) -> int:
    """Bytes on disk of the log's segments (compressed ones as stored)."""
    total = 0
    for _, path in list_segments(directory):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def _plan(directory: Path, limits: Limits, now: datetime, horizon_seq: int,
          live_reserve: int, synced: int | None) -> tuple[list[Doomed], list[SegmentSpan], int]:
    """The plan for the segments after the base, the leftovers before it
    (:func:`convlog.core.retention.leftovers`, :func:`~convlog.core.retention.reserve_live`),
    and how many more segments would go if the sync had them all."""
    spans = reserve_live(list(segment_spans(directory)), live_reserve)
    before = leftovers(spans, horizon_seq)
    doomed, held = hold_for_sync(plan(spans[len(before):], limits, now), synced)
    return doomed, before, held


def _fold_to(directory: Path, seq: int) -> tuple[Any, Any, str | None]:
    """The state, gap detector and last ts after record ``seq``, folded from the newest
    usable checkpoint at or before it (or the base).

    Raises:
        RetentionError: when the records up to ``seq`` cannot all be read.
    """
    try:
        start = best_start(directory, upto_seq=seq)
    except BeforeHorizonError as exc:  # the plan never reaches back before the base
        raise RetentionError(str(exc)) from None
    state, publishers = start.state, start.publishers
    last_ts: str | None = None
    errors: list[str] = []
    for record, _, _ in follow(directory, start.position, on_error=lambda s, n, r: errors.append(f"{s}: {r}")):
        if record["seq"] > seq:
            break
        fold(state, record)
        if publishers is not None:
            publishers.observe_record(record)
        last_ts = record.get("ts")
    if state.last_seq != seq:
        reason = f"; {errors[0]}" if errors else ""
        raise RetentionError(f"the records before the cut could not all be read (the fold ends at seq "
                             f"{state.last_seq}, the cut is at {seq}{reason}); run `convlog verify`")
    return state, publishers, last_ts


def _cumulative(previous: dict[str, Any], doomed: list[Doomed], action: str, archive: Path | None,
                now: str) -> dict[str, Any]:
    """The base header's ``pruned`` summary after letting ``doomed`` go."""
    spans = [d.span for d in doomed]
    return {
        "segments": int(previous.get("segments", 0)) + len(spans),
        "records": int(previous.get("records", 0)) + sum(s.last_seq - s.first_seq + 1 for s in spans),
        "bytes": int(previous.get("bytes", 0)) + sum(s.bytes for s in spans),
        "first_seq": previous.get("first_seq", spans[0].first_seq),
        "last_seq": spans[-1].last_seq,
        "first_ts": previous.get("first_ts", spans[0].first_ts),
        "last_ts": spans[-1].last_ts,
        "action": action,
        "archive_dir": str(archive) if archive else None,
        "at": now,
    }


def _remove_segment(directory: Path, key: str) -> None:
    """Remove every form of one segment (plain, sealed, an interrupted seal's temp)."""
    events = directory / EVENTS
    for name in (key, key + ".zst", key.removesuffix(".jsonl") + SEALING_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(events / name)


def prune(
    directory: str | Path,
    limits: Limits,
    action: str = "delete",
    archive_dir: str | Path | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    announce: Callable[[PruneReport], None] | None = None,
    clock: Clock | None = None,
    live_reserve: int = 0,
    synced_seq: int | None = None,
) -> PruneReport:
    """Apply retention to a log no other process is pruning (see the module doc).

    The caller holds the log's writer lock (``convlog prune``) or is the recorder
    (which runs it in its job thread, one at a time with sealing and checkpoints).

    Args:
        directory: the log directory.
        limits: ``max_age_s`` (seconds) and ``max_bytes`` (bytes on disk).
        action: ``"delete"`` or ``"archive"``.
        archive_dir: for ``"archive"``, the archive's directory (created if missing).
        dry_run: only report what would go.
        now: the current time (default: the system clock, UTC).
        announce: called with the report after the base is written and before anything
            is removed (to write the ``recorder.pruned`` record); not called when
            nothing goes or for a dry run.
        clock: time source for the base's ``created``.
        live_reserve: bytes the live segment counts as at least for ``max_bytes`` (the
            size it grows to before rotating, ``segment_bytes``), so the log stays under
            the bound until the next prune; 0 counts its current size.
        synced_seq: when a sync is configured, the last seq the database holds
            (:func:`convlog.store.sync_state.synced_seq`): segments holding a later
            record wait (counted in ``held_for_sync``); None when there is no sync.

    Returns:
        a :class:`PruneReport`.

    Raises:
        RetentionError: a bad action, an archive without a directory, or records before
            the cut that cannot be read (nothing is removed then).
        CheckpointError: the log's base cannot be read.
        OSError: a step fails (what was done so far is consistent; a re-run finishes).
    """
    directory = Path(directory)
    if action not in ACTIONS:
        raise RetentionError(f"unknown retention action {action!r} (use {' or '.join(ACTIONS)})")
    archive = Path(archive_dir) if archive_dir is not None else None
    if action == "archive" and archive is None:
        raise RetentionError('action "archive" needs an archive directory (--archive DIR or archive_dir)')
    if archive is not None and archive.resolve() == directory.resolve():
        raise RetentionError("the archive directory cannot be the log directory itself")
    now = now or datetime.now(UTC)
    horizon = read_horizon(directory)
    doomed, left, held = _plan(directory, limits, now, horizon.seq if horizon else 0, live_reserve, synced_seq)
    report = PruneReport(action, archive if action == "archive" else None, doomed,
                         [span.key for span in left], dry_run=dry_run, bytes_before=log_bytes(directory),
                         held_for_sync=held)
    cut = doomed[-1].span.last_seq if doomed else (horizon.seq if horizon else 0)
    stale = [info for info in list_checkpoints(directory) if info.seq <= cut]
    report.checkpoints = [info.path.name for info in stale]
    if dry_run or not (doomed or left or stale):
        report.bytes_after = report.bytes_before - sum(d.span.bytes for d in doomed) if dry_run else report.bytes_before
        return report
    if doomed:
        state, publishers, last_ts = _fold_to(directory, cut)
        first_kept = _first_kept(directory, cut)
        pruned = _cumulative(horizon.pruned if horizon else {}, doomed, action, report.archive_dir,
                             (clock or Clock()).now())
        if report.archive_dir is not None:
            archive_segments(directory, report.archive_dir, [d.span for d in doomed], [i.path for i in stale], horizon)
        write_base(directory, state, first_kept, last_ts or doomed[-1].span.last_ts, pruned, publishers, clock)
        report.base = cut
        if announce is not None:
            announce(report)
    for key in [*report.leftovers, *(d.span.key for d in doomed)]:
        _remove_segment(directory, key)
    fsync_dir(directory / EVENTS)
    for info in stale:
        with contextlib.suppress(FileNotFoundError):
            info.path.unlink()
    if stale:
        fsync_dir(directory / CHECKPOINTS)
    _forget_in_index(directory, cut + 1)
    report.bytes_after = log_bytes(directory)
    return report


def _first_kept(directory: Path, cut: int) -> str:
    """Key of the segment that begins right after record ``cut``.

    Raises:
        CheckpointError: when no segment begins there.
    """
    for first, path in list_segments(directory):
        if first == cut + 1:
            return segment_key(path)
    raise CheckpointError(f"no segment begins at seq {cut + 1}")


def _forget_in_index(directory: Path, first_kept: int) -> None:
    """Drop the search index's rows for records before ``first_kept`` (when there is an index)."""
    from convlog.store.search_index import INDEX_DIR, INDEX_FILE, TextIndex

    if not (directory / INDEX_DIR / INDEX_FILE).exists():
        return
    with contextlib.suppress(OSError), TextIndex(directory) as index:
        index.forget_before(first_kept)
