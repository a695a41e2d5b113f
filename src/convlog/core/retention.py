"""Retention: which finished segments a log may let go of, oldest first.

Pure decision, no I/O: the shell (:mod:`convlog.store.retention`) lists the segments
with their spans and sizes and carries out the plan. The rules, as in NATS JetStream's
``MaxAge``/``MaxBytes`` limits and Kafka's ``retention.ms``/``retention.bytes`` (whole
closed segments, never the active one, oldest first):

* only whole *finished* segments go, never the last one (the recorder writes it);
* a segment goes for age when its newest record was received before ``now - max_age``;
* segments go for size, oldest first, while the log's bytes on disk exceed ``max_bytes``;
* what goes is always a run from the oldest segment: a younger segment never goes
  before an older one, so the log stays one contiguous run of seqs after its base.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from convlog.core.record import format_ts


@dataclass(frozen=True, slots=True)
class SegmentSpan:
    """One segment as retention sees it.

    Attributes:
        key: the segment's plain name (``<first seq, 20 digits>.jsonl``).
        first_seq: seq of its first record.
        last_seq: seq of its last record (``first_seq - 1`` when it holds none).
        first_ts: receive time of its first record (RFC 3339), None when unknown.
        last_ts: receive time of its last record (RFC 3339), None when unknown.
        bytes: its size on disk (compressed when sealed), bytes.
        finished: False for the last segment (the one being written).
    """

    key: str
    first_seq: int
    last_seq: int
    first_ts: str | None
    last_ts: str | None
    bytes: int
    finished: bool


@dataclass(frozen=True, slots=True)
class Limits:
    """The retention settings (``[retention]``).

    Attributes:
        max_age_s: keep records received in the last this many seconds (None: no limit).
        max_bytes: keep the log's segments under this many bytes on disk (None: no limit).
    """

    max_age_s: float | None = None
    max_bytes: int | None = None

    @property
    def active(self) -> bool:
        """True when at least one limit is set."""
        return self.max_age_s is not None or self.max_bytes is not None


@dataclass(frozen=True, slots=True)
class Doomed:
    """A segment the plan lets go of, and why (``"max_age"`` or ``"max_bytes"``)."""

    span: SegmentSpan
    reason: str


def plan(spans: list[SegmentSpan], limits: Limits, now: datetime) -> list[Doomed]:
    """The segments to let go of, oldest first (see the module doc for the rules).

    Args:
        spans: every segment of the log, oldest first.
        limits: the retention settings.
        now: the current time (aware, UTC).

    Returns:
        a prefix of ``spans`` (finished segments only) with the reason for each; empty
        when nothing is due or no limit is set.
    """
    doomed: list[Doomed] = []
    cutoff = format_ts(now - timedelta(seconds=limits.max_age_s)) if limits.max_age_s is not None else None
    total = sum(span.bytes for span in spans)
    for span in spans:
        if not span.finished:
            break
        if cutoff is not None and span.last_ts is not None and span.last_ts < cutoff:
            reason = "max_age"
        elif limits.max_bytes is not None and total > limits.max_bytes:
            reason = "max_bytes"
        else:
            break
        doomed.append(Doomed(span, reason))
        total -= span.bytes
    return doomed


def hold_for_sync(doomed: list[Doomed], synced_seq: int | None) -> tuple[list[Doomed], int]:
    """Keep, of a plan, every segment holding a record the database does not have yet
    (a sync is configured: a segment goes only once synced).

    Args:
        doomed: a plan (:func:`plan`), oldest first.
        synced_seq: the last seq the database holds, or None when there is no sync.

    Returns:
        ``(the prefix of doomed wholly at or before synced_seq, how many more were due)``.
    """
    if synced_seq is None:
        return doomed, 0
    kept = 0
    while kept < len(doomed) and doomed[kept].span.last_seq <= synced_seq:
        kept += 1
    return doomed[:kept], len(doomed) - kept


def leftovers(spans: list[SegmentSpan], horizon_seq: int) -> list[SegmentSpan]:
    """The finished segments wholly at or before the base's seq, oldest first: a prune
    that was interrupted after writing the base left them; nothing reads them and the
    next prune removes them, whatever the limits then.

    Args:
        spans: every segment of the log, oldest first.
        horizon_seq: the base's seq (0 when the log has no base).
    """
    return [span for span in spans if span.finished and span.last_seq <= horizon_seq]


def reserve_live(spans: list[SegmentSpan], live_reserve: int) -> list[SegmentSpan]:
    """``spans`` with the live (last, unfinished) segment counted as at least
    ``live_reserve`` bytes: the size it grows to before it rotates, so that ``max_bytes``
    holds until the next prune, not only at it."""
    if spans and not spans[-1].finished and spans[-1].bytes < live_reserve:
        return [*spans[:-1], replace(spans[-1], bytes=live_reserve)]
    return spans
