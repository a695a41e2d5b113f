"""Checking a log directory offline: :func:`verify` reads every segment, the state file
and the quarantine file and reports what does not hold the log's rules.

It only reads (no repair, no printing; the CLI prints the :class:`VerifyReport`), and
it streams: segments are read line by line, so memory does not grow with the log.

What is checked (docs/log-format.md):

* every line of every segment is a whole record (JSON object, positive integer
  ``seq``, string ``kind``) ending in a newline; a torn last line is reported;
* each record's payload matches the digest the recorder kept (``meta.stored_sha256``
  for a redacted record, else ``meta.sha256``; :func:`convlog.core.payload.digest_problem`),
  so an edit of a payload that leaves its digest alone is found (a purged record is not
  checked: its payload is gone on purpose);
* each record's ``chain`` is the link after the record before it
  (:func:`convlog.core.chain.chain_problem`): an edit of a record (even one that fixes its
  digests), an insertion, a deletion (even with the seqs renumbered), a reorder or a swap
  of segments breaks the link at or right after it. Records that carry no chain (written
  before chaining, or with ``chain = false``) are counted in a note; a purged record keeps
  its link and is reported as purged, never as tampered;
* ``seq`` starts at 1 and runs +1 per record within and across segments; a log whose
  oldest segments retention let go of starts after its base (``base.json``): its first
  segment begins at or before the base's seq + 1 (before it only when a prune was
  interrupted: those segments are a note);
* each segment is named by its first record's seq (an empty segment, which a
  writer leaves only at the end of the log, by the seq that comes next);
* ``recovery/state.json`` agrees with the log: its segment exists, its
  ``durable_offset`` is inside that segment at a record boundary, its ``durable_seq``
  is not beyond the log and is the seq of the record ending at ``durable_offset``;
  when it says ``clean``, the durable position is the end of the log and the last
  record closes a writer's session (see :data:`CLEAN_ENDINGS`);
* every entry of ``recovery/quarantine.jsonl`` parses (the count is a note).

Sealed segments (``.jsonl.zst``) are read decompressed, like plain ones; a sealed file
that is not a complete seekable zstd file is a problem. What a crash while sealing
leaves is only a note (recovery removes it): a ``.jsonl.zst.tmp`` file, and a plain
segment beside its sealed copy (the sealed one is complete and is the one read).

Checkpoints: each must be readable, match its own ``sha256`` (an edit anywhere in the
file) and be named for its cut's seq (a swap); its cut (digest) must still match the log
and the chain head it recorded must be the link of the log's record at its cut; the base
likewise, and the first record after it must follow the base's chain head.

Signed heads (``signed-heads.jsonl``, :mod:`convlog.store.heads`): every line well formed;
with ``key``, every signature good with that key, every signed link the log's link at its
seq, and the log not ending before the newest signed seq (records cut off its end).

Purged records (``convlog purge``) are valid records, counted in a note; an
interrupted purge (``recovery/purge.json``) is a note saying how to finish it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from convlog.core.chain import ChainWalk
from convlog.core.payload import digest_problem
from convlog.core.record import decode_bytes, is_purged, parse_line
from convlog.store.checkpoint import (
    BASE_FILE,
    CheckpointError,
    Horizon,
    Inspection,
    check_cut,
    inspect_checkpoint,
    list_checkpoints,
    read_horizon,
)
from convlog.store.heads import HEADS_FILE, SignedHead, key_id, read_heads, signature_problem
from convlog.store.purge import PURGE_FILE, pending_purge
from convlog.store.replay import NoLogError
from convlog.store.segment import (
    CHECKPOINTS,
    EVENTS,
    QUARANTINE_FILE,
    RECOVERY,
    SEALED_SUFFIX,
    SEALING_SUFFIX,
    SEGMENT_SUFFIX,
    STATE_FILE,
    is_sealed,
    list_segments,
    open_segment,
    segment_first_seq,
    segment_key,
    segment_name,
    segment_size,
)

STATE_PATH = f"{RECOVERY}/{STATE_FILE}"
QUARANTINE_PATH = f"{RECOVERY}/{QUARANTINE_FILE}"


def is_clean_ending(record: dict[str, Any]) -> bool:
    """True when ``record`` may be the last one of a log whose state says ``clean``.

    A writer marks the state clean only after closing its session, and each writer
    ends its session with a record of its own: the recorder with ``recorder.stop``;
    ``convlog recover`` with the ``recorder.recovered`` it appends (the recorder itself
    always follows that record with ``recorder.start``); ``convlog import`` with its
    last ``import`` record; a session command run with no recorder (``convlog fork``, ...)
    with its ``control`` record.
    """
    kind, source = record.get("kind"), record.get("source")
    return (kind == "recorder.stop" or (kind in ("recorder.recovered", "recorder.pruned") and source == "recorder")
            or source in ("import", "control"))


#: What may end a log whose state is clean, in words (for the problem message).
CLEAN_ENDINGS = ("recorder.stop (or, after convlog recover / prune / import / a session command, "
                 "recorder.recovered, recorder.pruned, an import or a control record)")


@dataclass(slots=True)
class Problem:
    """One thing that breaks the log's rules.

    Attributes:
        where: the file, relative to the log directory (``events/<segment>``,
            ``recovery/state.json``, ``recovery/quarantine.jsonl``).
        line: 1-based line number, or None when the problem is about the whole file.
        reason: what is wrong, in words.
    """

    where: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.reason}" if self.line is not None else f"{self.where}: {self.reason}"


@dataclass(slots=True)
class VerifyReport:
    """What :func:`verify` found.

    Attributes:
        directory: the log directory.
        problems: rule violations, in the order found (segments first, in seq order).
        notes: information that is not a problem (quarantine entries, what was not checked).
        segments: number of segments.
        records: number of valid records.
        last_seq: seq of the last valid record (0 for an empty log).
        purged: how many of them are purged records (``convlog purge``), a note.
    """

    directory: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    segments: int = 0
    records: int = 0
    last_seq: int = 0
    purged: int = 0

    @property
    def ok(self) -> bool:
        """True when there is no problem."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-friendly dict."""
        return {
            "directory": str(self.directory),
            "ok": self.ok,
            "segments": self.segments,
            "records": self.records,
            "last_seq": self.last_seq,
            "problems": [{"where": p.where, "line": p.line, "reason": p.reason} for p in self.problems],
            "notes": list(self.notes),
        }


@dataclass(slots=True)
class _Durable:
    """The durable position claimed by state.json, and what the segments say about it."""

    segment: str
    offset: int
    seq: int
    seen: bool = False
    size: int = 0
    seq_at_offset: int | None = None


@dataclass(slots=True)
class _Tail:
    """Where the log ends: the last segment, the end of its last valid record, and the last
    valid record of the log (which is in an earlier segment when the last one is empty)."""

    segment: str | None = None
    valid_end: int = 0
    last: dict[str, Any] | None = None
    #: ``(segment, end of its last valid record)`` of the last segment holding records.
    filled: tuple[str, int] | None = None


def verify(
    directory: str | Path,
    progress: Callable[[int, int], None] | None = None,
    key: Ed25519PublicKey | None = None,
) -> VerifyReport:
    """Check a log directory (see the module doc for the rules).

    Args:
        directory: the log directory.
        progress: called as ``progress(bytes checked, bytes of all segments)`` after
            each segment; None for none.
        key: the Ed25519 public key the recorder's signed heads must verify with
            (``convlog verify --key PUB``, :mod:`convlog.store.heads`); None to check
            only their form.

    Returns:
        a :class:`VerifyReport`; ``report.ok`` is False when any rule is broken.

    Raises:
        NoLogError: when ``directory`` has no ``events/`` folder.
        OSError: when a file cannot be read.
    """
    directory = Path(directory)
    events = directory / EVENTS
    if not events.is_dir():
        raise NoLogError(f"no event log in {directory} (expected {events}/*.jsonl)")
    report = VerifyReport(directory=directory)
    for path in sorted(events.iterdir()):
        if path.name.endswith(SEALING_SUFFIX):
            report.notes.append(f"{EVENTS}/{path.name}: left by an interrupted seal; readers ignore it and "
                                "recovery removes it")
            continue
        if segment_first_seq(path.name) is not None and not is_sealed(path) \
                and path.with_name(path.name + ".zst").exists():
            report.notes.append(f"{EVENTS}/{path.name}: its sealed copy {path.name}.zst is complete and is the one "
                                "read; recovery removes this one")
            continue
        if path.name.endswith((SEGMENT_SUFFIX, SEALED_SUFFIX)) and segment_first_seq(path.name) is None:
            report.problems.append(Problem(
                f"{EVENTS}/{path.name}", None,
                "not a segment name (<first seq, 20 digits>.jsonl or .jsonl.zst); readers ignore it",
            ))
    state, durable = _read_state(directory, report)
    segments = list_segments(directory)
    report.segments = len(segments)
    horizon = _check_base(directory, segments, report)
    walk = ChainWalk()
    if horizon is not None:
        starts_at_base = bool(segments) and segments[0][0] == horizon.seq + 1
        walk.prev = horizon.chain if starts_at_base else None
    checkpoints = _inspect_checkpoints(directory, report)
    walk.wanted.update(found.cut.seq for _, found in checkpoints)
    heads = list(read_heads(directory))
    walk.wanted.update(head.seq for head in heads if isinstance(head, SignedHead))
    tail = _Tail()
    sizes = []
    for _, path in segments:
        try:
            sizes.append(segment_size(path))
        except OSError:
            sizes.append(0)  # reported by _check_segment
    for index, (first, path) in enumerate(segments):
        _check_segment(first, path, index == len(segments) - 1, report, durable, tail, walk)
        if progress is not None:
            progress(sum(sizes[: index + 1]), sum(sizes))
    if state is not None:
        _check_state(state, durable, tail, report)
    _check_quarantine(directory, report)
    _check_checkpoints(directory, report, horizon, checkpoints, walk)
    _check_heads(heads, key, horizon, walk, report)
    _note_chain(walk, report)
    _note_purges(directory, report)
    return report


def _check_heads(heads: list[SignedHead | tuple[int, str]], key: Ed25519PublicKey | None,
                 horizon: Horizon | None, walk: ChainWalk, report: VerifyReport) -> None:
    """The signed heads (:mod:`convlog.store.heads`): each line well formed; with a key,
    each signature good and each signed link the log's link at that seq, and the log
    not ending before the newest signed seq."""
    problems = report.problems
    good = [head for head in heads if isinstance(head, SignedHead)]
    for head in heads:
        if not isinstance(head, SignedHead):
            problems.append(Problem(HEADS_FILE, head[0], head[1]))
    if key is None:
        if good:
            report.notes.append(f"{HEADS_FILE}: {len(good)} signed chain head(s), newest at seq "
                                f"{max(h.seq for h in good)}; check them with --key PUB")
        return
    if not good:
        problems.append(Problem(HEADS_FILE, None, "no signed chain heads to check with the key (was the recorder "
                                                  "given sign_key?)"))
        return
    before = 0
    for head in good:
        reason = signature_problem(head, key)
        if reason is None:
            if head.seq > report.last_seq:
                reason = (f"the log ends at seq {report.last_seq}, before this head signed at seq {head.seq}: "
                          "records were cut off its end (or the log was replaced)")
            elif horizon is not None and head.seq <= horizon.seq:
                if head.seq != horizon.seq or horizon.chain != head.chain:
                    before += 1
                    continue
            elif head.seq not in walk.links:
                reason = f"the log has no record at seq {head.seq}, whose chain head was signed"
            elif walk.links[head.seq] != head.chain:
                reason = (f"record {head.seq}'s link in the log is not the signed one: the log up to seq {head.seq} "
                          "changed after it was signed")
        if reason is not None:
            problems.append(Problem(HEADS_FILE, head.line, reason))
    newest = max(head.seq for head in good)
    report.notes.append(f"{HEADS_FILE}: {len(good) - before} signed chain head(s) checked with key {key_id(key)}, "
                        f"newest at seq {newest} (records after it are covered by the chain only)"
                        + (f"; {before} older than the base's horizon not checked" if before else ""))


def _note_chain(walk: ChainWalk, report: VerifyReport) -> None:
    """What the hash chain covered, as notes (a record with no chain is not a problem:
    the log was written before chaining, or with ``chain = false``)."""
    if walk.chained:
        report.notes.append(f"hash chain: {walk.chained} record(s) linked, from seq {walk.first_chained}")
    if walk.unchained:
        after = (f", {walk.unchained_after} of them after chained ones (written with chain = false?)"
                 if walk.unchained_after else "")
        report.notes.append(f"hash chain: {walk.unchained} record(s) carry no chain and are not tamper-evident "
                            f"(written before chaining{after})")


def _check_base(directory: Path, segments: list[tuple[int, Path]], report: VerifyReport) -> Horizon | None:
    """Read the base (when the log has one) and set where the log's seqs must start."""
    try:
        horizon = read_horizon(directory)
    except CheckpointError as exc:
        report.problems.append(Problem(BASE_FILE, None, str(exc).split(": ", 1)[-1]))
        return None
    if horizon is None:
        return None
    where = BASE_FILE
    try:
        found = inspect_checkpoint(horizon.path)
    except CheckpointError as exc:  # its header still says where the log starts
        report.problems.append(Problem(where, None, str(exc).split(": ", 1)[-1]))
    else:
        if found.last_seq != found.cut.seq:
            report.problems.append(Problem(where, None,
                                           f"its state ends at seq {found.last_seq}, its cut at {found.cut.seq}"))
    pruned = horizon.pruned
    report.notes.append(
        f"{where}: the log starts after its base at seq {horizon.seq} ({pruned.get('records', '?')} records in "
        f"{pruned.get('segments', '?')} segment(s) let go of by retention, action {pruned.get('action', '?')})"
    )
    first = segments[0][0] if segments else horizon.seq + 1
    if first <= horizon.seq + 1:
        report.last_seq = first - 1
        before = [path.name for start, path in segments if start <= horizon.seq]
        if before and first <= horizon.seq:
            report.notes.append(f"{EVENTS}/: {len(before)} segment(s) before the base remain from an interrupted "
                                "prune; nothing reads them and the next prune removes them")
    else:
        report.last_seq = horizon.seq
    return horizon


def _note_purges(directory: Path, report: VerifyReport) -> None:
    """Purged records and a pending purge are notes, never problems."""
    if report.purged:
        report.notes.append(f"{report.purged} purged record(s): payload removed by convlog purge (seq, time, kind, "
                            "source, session and the payload's sha256 kept)")
    pending = pending_purge(directory)
    if pending is not None:
        session = pending.get("session")
        report.notes.append(f"{RECOVERY}/{PURGE_FILE}: a purge of session {session!r} started "
                            f"{pending.get('started')} has not finished: run convlog purge {session} again to "
                            "finish it")


def _inspect_checkpoints(directory: Path, report: VerifyReport) -> list[tuple[Path, Inspection]]:
    """Read every checkpoint as a stream (:func:`~convlog.store.checkpoint.inspect_checkpoint`:
    memory does not grow with its state; its ``sha256`` is checked); an unreadable or
    edited one is a problem. Returns the readable ones."""
    found = []
    for info in list_checkpoints(directory):
        where = f"{CHECKPOINTS}/{info.path.name}"
        try:
            inspection = inspect_checkpoint(info.path)
        except CheckpointError as exc:
            report.problems.append(Problem(where, None, str(exc).split(": ", 1)[-1]))
            continue
        if inspection.cut.seq != info.seq:
            report.problems.append(Problem(where, None, f"it is named for seq {info.seq} but its cut is at seq "
                                                        f"{inspection.cut.seq} (renamed or swapped?)"))
            continue
        found.append((info.path, inspection))
    return found


def _check_checkpoints(directory: Path, report: VerifyReport, horizon: Horizon | None,
                       checkpoints: list[tuple[Path, Inspection]], walk: ChainWalk) -> None:
    """Every readable checkpoint's cut must still match the log (digest of the cut's
    segment, sizes of the earlier ones after the base), its state must end at its cut,
    and the chain head it recorded must be the link of the log's record at the cut."""
    for path, found in checkpoints:
        where = f"{CHECKPOINTS}/{path.name}"
        cut = found.cut
        reason = check_cut(directory, cut, horizon)
        if reason is None and found.last_seq != cut.seq:
            reason = f"its state ends at seq {found.last_seq}, its cut at {cut.seq}"
        if reason is None and found.chain is not None and cut.seq in walk.links \
                and walk.links[cut.seq] != found.chain:
            reason = (f"its chain head {found.chain[:16]}... is not the link of record {cut.seq} in the log "
                      f"({(walk.links[cut.seq] or 'none')[:16]}...)")
        if reason is not None:
            report.problems.append(Problem(where, None, reason))
    count = len(list_checkpoints(directory))
    if count:
        report.notes.append(f"{CHECKPOINTS}/: {count} checkpoint(s) checked against the log")


def _read_state(directory: Path, report: VerifyReport) -> tuple[dict[str, Any] | None, _Durable | None]:
    """Read state.json; report what is malformed; return it and its durable position."""
    path = directory / RECOVERY / STATE_FILE
    if not path.exists():
        report.notes.append(f"{STATE_PATH}: missing, so the log is not compared with a durable position")
        return None, None
    try:
        state = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        report.problems.append(Problem(STATE_PATH, None, f"not JSON: {exc}"))
        return None, None
    if not isinstance(state, dict):
        report.problems.append(Problem(STATE_PATH, None, "not a JSON object"))
        return None, None
    if state.get("format", 1) != 1:
        report.problems.append(Problem(STATE_PATH, None, f"unknown format {state.get('format')!r} (expected 1)"))
    fields_ok = True
    for name, kind in (("segment", str), ("durable_offset", int), ("durable_seq", int)):
        value = state.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            what = "a string" if kind is str else "a non-negative integer"
            report.problems.append(Problem(STATE_PATH, None, f"{name} is {value!r}, not {what}"))
            fields_ok = False
    if not isinstance(state.get("clean", False), bool):
        report.problems.append(Problem(STATE_PATH, None, f"clean is {state.get('clean')!r}, not true or false"))
    if not fields_ok:
        return state, None
    return state, _Durable(state["segment"], state["durable_offset"], state["durable_seq"])


def _check_segment(
    first: int, path: Path, is_last: bool, report: VerifyReport, durable: _Durable | None, tail: _Tail, walk: ChainWalk
) -> None:
    """Stream one segment: each line whole and valid, seq contiguous, the name right."""
    where = f"{EVENTS}/{path.name}"
    problems = report.problems
    watch = durable is not None and segment_key(durable.segment) == segment_key(path)
    if watch:
        durable.seen = True
        if durable.offset == 0:
            durable.seq_at_offset = report.last_seq
    offset = 0
    first_valid: int | None = None
    valid_end = 0
    number = 0
    try:
        fh = open_segment(path)
    except OSError as exc:
        problems.append(Problem(where, None, f"unreadable: {exc}"))
        return
    with fh:
        for number, line in enumerate(fh, 1):
            offset += len(line)
            if not line.endswith(b"\n"):
                problems.append(Problem(where, number, f"torn last line: {len(line)} bytes without a newline"))
                break
            try:
                record = parse_line(line)
            except ValueError as exc:
                problems.append(Problem(where, number, f"invalid record: {exc}"))
                walk.lost()
            else:
                found_before = len(problems)
                mismatch = digest_problem(line, record)
                if mismatch is not None:
                    problems.append(Problem(where, number, f"seq {record['seq']}: {mismatch}"))
                broken = walk.step(line, record)
                seq = record["seq"]
                expected = report.last_seq + 1
                if seq != expected:
                    if seq <= report.last_seq:
                        what = "a duplicate" if seq == report.last_seq else "out of order"
                    else:
                        missing = seq - expected
                        what = f"{missing} record{'s' if missing > 1 else ''} missing"
                    problems.append(Problem(where, number, f"seq {seq} where {expected} was expected ({what})"))
                if broken is not None and len(problems) == found_before:
                    # (a seq or digest problem on this line already says what its broken link would)
                    problems.append(Problem(where, number, f"seq {seq}: {broken}"))
                if first_valid is None:
                    first_valid = seq
                    if segment_key(path) != segment_name(seq):
                        named = f"is named for seq {first} but its" if first != seq else "name is not padded; its"
                        problems.append(Problem(
                            where, number,
                            f"segment {named} first record has seq {seq} (expected name {segment_name(seq)})",
                        ))
                report.last_seq = seq
                report.records += 1
                report.purged += is_purged(record)
                valid_end = offset
                tail.last = record
            if watch and offset == durable.offset:
                durable.seq_at_offset = report.last_seq
    if watch:
        durable.size = offset
    if first_valid is None and number == 0:
        if not is_last:
            problems.append(Problem(where, None, "empty segment (only the last segment may be empty)"))
        elif first != report.last_seq + 1:
            problems.append(Problem(
                where, None,
                f"empty last segment is named for seq {first} but the next seq is {report.last_seq + 1}",
            ))
    if first_valid is not None:
        tail.filled = (segment_key(path), valid_end)
    if is_last:
        tail.segment = segment_key(path)
        tail.valid_end = valid_end


def _check_state(state: dict[str, Any], durable: _Durable | None, tail: _Tail, report: VerifyReport) -> None:
    """Compare state.json with what the segments hold."""
    problems = report.problems
    before = len(problems)
    if durable is not None:
        if not durable.seen:
            problems.append(Problem(STATE_PATH, None, f"segment {durable.segment} does not exist in {EVENTS}/"))
        elif durable.offset > durable.size:
            problems.append(Problem(
                STATE_PATH, None,
                f"durable_offset {durable.offset} is beyond the end of {durable.segment} ({durable.size} bytes)",
            ))
        elif durable.seq_at_offset is None:
            problems.append(Problem(
                STATE_PATH, None, f"durable_offset {durable.offset} is not at a record boundary of {durable.segment}"
            ))
        if durable.seq > report.last_seq:
            problems.append(Problem(
                STATE_PATH, None, f"durable_seq {durable.seq} is beyond the last seq in the log ({report.last_seq})"
            ))
        elif durable.seq_at_offset is not None and durable.seq != durable.seq_at_offset:
            problems.append(Problem(
                STATE_PATH, None,
                f"durable_seq {durable.seq} but the record ending at durable_offset {durable.offset} "
                f"of {durable.segment} has seq {durable.seq_at_offset}",
            ))
    if state.get("clean") is not True:
        return
    # Only when the position itself is sound (durable_seq is then the seq of the record
    # ending at durable_offset, so the end of the log in segment and offset suffices).
    # The end of the log: the end of the last record, or the start of an empty last
    # segment after it (a writer that rotated, or sealed its segment, and stopped).
    ends = {(tail.segment, tail.valid_end)}
    if tail.valid_end == 0 and tail.filled is not None:
        ends.add(tail.filled)
    if (
        durable is not None
        and len(problems) == before
        and (segment_key(durable.segment), durable.offset) not in ends
    ):
        problems.append(Problem(
            STATE_PATH, None,
            f"clean is true but the durable position ({durable.segment} offset {durable.offset}) is not the "
            f"end of the log's last record ({tail.segment} offset {tail.valid_end})",
        ))
    if tail.last is not None and not is_clean_ending(tail.last):
        problems.append(Problem(
            STATE_PATH, None,
            f"clean is true but the last record (seq {tail.last['seq']}) is {tail.last['kind']} "
            f"from {tail.last.get('source')}, not {CLEAN_ENDINGS}",
        ))


def _check_quarantine(directory: Path, report: VerifyReport) -> None:
    """Every quarantine entry is a whole JSON object with a reason and decodable bytes."""
    path = directory / RECOVERY / QUARANTINE_FILE
    if not path.exists():
        return
    entries = 0
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            reason = _quarantine_problem(line)
            if reason is None:
                entries += 1
            else:
                report.problems.append(Problem(QUARANTINE_PATH, number, reason))
    noun = "entry" if entries == 1 else "entries"
    report.notes.append(f"{QUARANTINE_PATH}: {entries} {noun} (bytes salvaged by recovery)")


def _quarantine_problem(line: bytes) -> str | None:
    """Why a quarantine line is not a valid entry, or None when it is."""
    if not line.endswith(b"\n"):
        return f"torn last line: {len(line)} bytes without a newline"
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"invalid entry: {exc}"
    if not isinstance(entry, dict):
        return "invalid entry: not a JSON object"
    if not isinstance(entry.get("reason"), str):
        return "invalid entry: no reason"
    try:
        salvaged = decode_bytes(entry)
    except (ValueError, TypeError, AttributeError) as exc:
        return f"invalid entry: salvaged bytes unreadable: {exc}"
    if isinstance(entry.get("bytes"), int) and entry["bytes"] != len(salvaged):
        return f"invalid entry: says {entry['bytes']} bytes but holds {len(salvaged)}"
    return None
