"""Checkpoints: a consistent cut of the log plus the folded state as of it.

A checkpoint is a snapshot in the eventsourcing sense: replay starts from the newest
good one and folds only the records after its cut (docs/fold.md: fold
from a checkpoint plus the records after it equals folding everything). One JSON file
per checkpoint in ``checkpoints/``, named ``<seq, 20 digits>.json`` (automatic) or
``<seq>-<label>.json`` (labelled), written atomically (temp file, fsync, rename, fsync
of the directory). Two JSON lines: a small header (so listing does not read states),
then the state::

    {"format": 1, "label": null, "created": "...Z", "sessions": 12, "blob_bytes": 2400,
     "publishers": {<convlog.core.gaps.GapDetector.to_dict()>},   # as of the cut
     "cut": {"seq": 41, "segment": "000...1.jsonl", "offset": 18230, "ts": "...Z",
             "digest": "<sha256 of the segment's bytes before offset>",
             "segments": [["000...1.jsonl", 67108871], ...]},   # earlier segments, sizes
     "chain": "<the chain link of record 41>",                   # convlog.core.chain
     "sha256": "<digest of this header and all that follows>"}   # content_digest
    {"state": {<convlog.core.fold.State.to_dict(blob)>}}
    <blob_bytes bytes: the sessions' message columns, see convlog.core.fold.Refs>

``chain`` ties the checkpoint to the hash chain through the log (``verify`` checks it
against the log's record at the cut, and signed heads, :mod:`convlog.store.signing`,
are taken from it); ``sha256`` makes any edit of the file itself visible to ``verify``.

The publishers' snapshot lets a recorder that restarts without ``recovery/state.json``
(a crash before its first write of it, a lost file) rebuild the publishers' seqs from
the newest checkpoint and the records after it, instead of the whole log.

The digest ties the checkpoint to the log: a checkpoint whose cut no longer matches
(the log was truncated, rewritten or replaced) is refused by :func:`check_cut`, and
replay falls back to an older checkpoint or to the start. Checking reads at most one
segment (earlier, closed segments are compared by size).

Automatic checkpoints are pruned to the newest few (:func:`prune`); labelled ones are
kept until deleted.

The base
--------
When retention lets the oldest segments go (:mod:`convlog.store.retention`), a
checkpoint at the cut becomes the log's *base*: ``DIR/base.json``, the same format,
its cut at the start of the first segment kept (offset 0, no earlier segments), so it
matches the log whatever was removed before it. Its header adds ``"pruned"``, what
retention has let go of so far (segments, records, bytes, seqs and times, action,
archive). Every fold starts from a checkpoint or, with none usable, from the base
(:func:`best_start`); a target before the base's seq or time is refused with
:class:`BeforeHorizonError` naming the horizon; checkpoints older than the base are
never used, and the segments a checkpoint lists before the horizon are not checked.
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import re
import threading
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

import orjson

from convlog.core.fold import State, fold
from convlog.core.gaps import GapDetector
from convlog.store.clock import Clock
from convlog.store.fsync import write_atomic
from convlog.store.segment import CHECKPOINTS, EVENTS, follow, list_segments, open_segment, segment_key, segment_size

FORMAT = 1
SUFFIX = ".json"
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NAME_RE = re.compile(r"^(\d{20})(?:-(.+))?\.json$")


BASE_FILE = "base.json"
#: SHA-256 of no bytes: the digest of a cut at offset 0.
_EMPTY_DIGEST = sha256(b"").hexdigest()


class CheckpointError(Exception):
    """A checkpoint cannot be written, read or used (the message says which and why)."""


class BeforeHorizonError(CheckpointError):
    """A fold was asked for a point before the log's base: those records were pruned.

    Attributes:
        horizon: the base (its ``seq`` is the last record let go of).
    """

    def __init__(self, horizon: Horizon, target: str) -> None:
        self.horizon = horizon
        super().__init__(
            f"{target} is before the log's horizon: records up to seq {horizon.seq} "
            f"(received up to {horizon.ts or 'an unknown time'}) were pruned; "
            f"the earliest state kept is seq {horizon.seq}"
        )


@dataclass(frozen=True, slots=True)
class Cut:
    """A consistent cut of the log: everything up to and including record ``seq``.

    Attributes:
        seq: the last record included (0: the empty log).
        segment: the segment holding it.
        offset: byte offset just after its line in that segment.
        ts: its receive time (RFC 3339).
        digest: hex SHA-256 of ``segment``'s bytes before ``offset``.
        segments: ``(name, size in bytes)`` of the segments before ``segment``.
    """

    seq: int
    segment: str
    offset: int
    ts: str | None
    digest: str
    segments: tuple[tuple[str, int], ...]

    def as_dict(self) -> dict[str, Any]:
        """The cut as JSON-friendly values."""
        return {
            "seq": self.seq,
            "segment": self.segment,
            "offset": self.offset,
            "ts": self.ts,
            "digest": self.digest,
            "segments": [list(s) for s in self.segments],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cut:
        """Invert :meth:`as_dict`. Raises KeyError/TypeError/ValueError when malformed."""
        return cls(
            int(data["seq"]), str(data["segment"]), int(data["offset"]), data.get("ts"), str(data["digest"]),
            tuple((str(name), int(size)) for name, size in data["segments"]),
        )


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """What ``convlog checkpoints`` lists: file, seq, label, times, sessions, size (bytes)."""

    path: Path
    seq: int
    label: str | None
    created: str | None
    ts: str | None
    sessions: int | None
    size: int


def _digest(path: Path, offset: int) -> str:
    digest = sha256()
    with open_segment(path) as fh:
        left = offset
        while left > 0:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                raise CheckpointError(f"{path.name} is shorter than the cut ({offset} bytes)")
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def make_cut(directory: Path, seq: int, segment: str, offset: int, ts: str | None) -> Cut:
    """Describe the cut after record ``seq`` ending at ``offset`` in ``segment``.

    Raises:
        CheckpointError: when the segment does not exist or is shorter than ``offset``.
    """
    directory = Path(directory)
    before: list[tuple[str, int]] = []
    for _, path in list_segments(directory):
        if segment_key(path) == segment_key(segment):
            return Cut(seq, segment_key(segment), offset, ts, _digest(path, offset), tuple(before))
        before.append((segment_key(path), segment_size(path)))
    raise CheckpointError(f"no segment {segment} in {directory / EVENTS}")


def check_cut(directory: Path, cut: Cut, horizon: Horizon | None = None) -> str | None:
    """Does the log still hold this cut? Returns None when it does, else the reason.

    Args:
        directory: the log directory.
        cut: the cut to check.
        horizon: the log's base (:func:`read_horizon`): segments before its first kept
            segment were pruned and are not checked. None: none.
    """
    directory = Path(directory)
    present = {segment_key(path): path for _, path in list_segments(directory)}
    for name, size in cut.segments:
        if horizon is not None and segment_key(name) < horizon.segment:
            continue
        if segment_key(name) not in present:
            return f"segment {name} is missing"
        try:
            found = segment_size(present[segment_key(name)])
        except OSError as exc:
            return f"segment {name} cannot be read ({exc})"
        if found != size:
            return f"segment {name} is {found} bytes, the checkpoint saw {size}"
    path = present.get(segment_key(cut.segment))
    if path is None:
        return f"segment {cut.segment} is missing"
    try:
        found = segment_size(path)
    except OSError as exc:
        return f"segment {cut.segment} cannot be read ({exc})"
    if found < cut.offset:
        return f"segment {cut.segment} is shorter than the cut ({found} < {cut.offset} bytes)"
    try:
        if _digest(path, cut.offset) != cut.digest:
            return f"the first {cut.offset} bytes of {cut.segment} changed since the checkpoint (digest mismatch)"
    except (OSError, CheckpointError) as exc:
        return str(exc)
    return None


def checkpoint_name(seq: int, label: str | None = None) -> str:
    """File name of a checkpoint.

    Raises:
        CheckpointError: for a label outside ``[A-Za-z0-9._-]``, 1 to 64 characters.
    """
    if label is None:
        return f"{seq:020d}{SUFFIX}"
    if not LABEL_RE.match(label):
        raise CheckpointError(f"invalid label {label!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return f"{seq:020d}-{label}{SUFFIX}"


def write_checkpoint(
    directory: Path,
    state: State,
    cut: Cut,
    label: str | None = None,
    clock: Clock | None = None,
    publishers: GapDetector | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file, fsync, rename, fsync of the directory).

    Args:
        directory: the log directory.
        state: the fold of records 1..``cut.seq`` exactly.
        cut: where it ends (see :func:`make_cut`).
        label: a name to keep it by (never pruned), or None for an automatic one.
        clock: time source for ``created``.
        publishers: the gap detector after records 1..``cut.seq`` (its snapshot goes in
            the header), or None to write none.

    Returns:
        the checkpoint's path.

    Raises:
        CheckpointError: for a bad label or a state that does not end at the cut.
        OSError: when it cannot be written.
    """
    if state.last_seq != cut.seq:
        raise CheckpointError(f"state ends at seq {state.last_seq}, the cut at {cut.seq}")
    folder = Path(directory) / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / checkpoint_name(cut.seq, label)
    header = {
        "format": FORMAT,
        "label": label,
        "created": (clock or Clock()).now(),
        "cut": cut.as_dict(),
        "sessions": len(state.sessions),
    }
    if publishers is not None:
        header["publishers"] = publishers.to_dict()
    write_atomic(path, checkpoint_bytes(header, state))
    return path


def checkpoint_bytes(header: dict[str, Any], state: State) -> bytes:
    """A checkpoint file's bytes: ``header`` completed in place with ``blob_bytes``, the
    chain head at the cut (``chain``: the state's :attr:`~convlog.core.fold.State.chain`)
    and ``sha256`` (:func:`content_digest`), then the state line and the binary part.

    Args:
        header: the header fields so far (``format``, ``label``, ``created``, ``cut``, ...).
        state: the state as of the cut.

    Returns:
        the bytes to write.
    """
    blob = bytearray()
    state_line = orjson.dumps({"state": state.to_dict(blob)})
    header["blob_bytes"] = len(blob)
    header["chain"] = state.chain
    rest = sha256(state_line)
    rest.update(b"\n")
    rest.update(blob)
    header["sha256"] = content_digest(header, rest)
    return b"".join((orjson.dumps(header), b"\n", state_line, b"\n", blob))


def content_digest(header: dict[str, Any], rest: Any) -> str:
    """The ``sha256`` a checkpoint's header carries: the hex SHA-256 of the header without
    its ``sha256`` (compact JSON, keys sorted), a newline, and the hex SHA-256 of every
    byte after the header line (the state line and the binary part).

    Args:
        header: the parsed header (its ``sha256``, if any, is left out).
        rest: a ``hashlib.sha256`` object fed with the bytes after the header line.

    Returns:
        64 hex digits.
    """
    fields = {key: value for key, value in header.items() if key != "sha256"}
    return sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS) + b"\n" + rest.hexdigest().encode()).hexdigest()


def list_checkpoints(directory: Path) -> list[CheckpointInfo]:
    """The checkpoints of a log directory, oldest first (unreadable files included,
    with None fields, so they can be seen and deleted)."""
    folder = Path(directory) / CHECKPOINTS
    out = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = _NAME_RE.match(path.name)
            if not match:
                continue
            header: Any = {}
            with contextlib.suppress(OSError, orjson.JSONDecodeError), path.open("rb") as fh:
                header = orjson.loads(fh.readline())
            if not isinstance(header, dict):
                header = {}
            cut = header.get("cut") if isinstance(header.get("cut"), dict) else {}
            out.append(
                CheckpointInfo(
                    path=path, seq=int(match.group(1)), label=match.group(2), created=header.get("created"),
                    ts=cut.get("ts"), sessions=header.get("sessions"), size=path.stat().st_size,
                )
            )
    out.sort(key=lambda info: (info.seq, info.label or ""))
    return out


def _read_header(fh: Any, name: str) -> tuple[dict[str, Any], Cut]:
    """The header line of an open checkpoint file and its cut.

    Raises:
        CheckpointError: for another format; ValueError, KeyError, TypeError: when malformed.
    """
    header = orjson.loads(fh.readline())
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise CheckpointError(f"{name}: unknown format {found!r}")
    return header, Cut.from_dict(header["cut"])


def load_checkpoint(path: Path) -> tuple[Cut, State]:
    """Read a checkpoint file.

    Raises:
        CheckpointError: when it cannot be read or is not a checkpoint of this format.
    """
    try:
        with Path(path).open("rb") as fh:
            header, cut = _read_header(fh, Path(path).name)
            state_line = fh.readline()
            start, size = fh.tell(), header.get("blob_bytes", 0)
            blob: Any = b""
            if size:
                if not isinstance(size, int) or start + size != fh.seek(0, 2):
                    raise CheckpointError(f"{Path(path).name}: binary part is not {size!r} bytes (truncated?)")
                # Mapped, not read: the message columns of sessions the caller never
                # touches are never copied (see fold.Refs).
                blob = memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))[start:]
            # Building a state makes objects per session; the cyclic collector would run
            # over them again and again and can find nothing: the state holds no cycles.
            collecting = gc.isenabled()
            gc.disable()
            try:
                return cut, State.from_dict(orjson.loads(state_line)["state"], blob)
            finally:
                if collecting:
                    gc.enable()
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{Path(path).name}: unreadable checkpoint ({exc})") from None


class _OneLine:
    """A reader of one line of a binary file, for a streaming parser (stops at its LF);
    what it reads also goes into ``digest``."""

    def __init__(self, fh: Any, digest: Any) -> None:
        self.fh, self.done, self.digest = fh, False, digest

    def read(self, size: int = -1) -> bytes:
        if self.done or size == 0:  # (ijson reads 0 bytes first, to learn the type)
            return b""
        chunk = self.fh.readline(size if size > 0 else 1 << 16)
        if not chunk or chunk.endswith(b"\n"):
            self.done = True
        self.digest.update(chunk)
        return chunk


@dataclass(frozen=True, slots=True)
class Inspection:
    """What :func:`inspect_checkpoint` found in a checkpoint file.

    Attributes:
        cut: its cut.
        last_seq: the seq its state ends at.
        chain: the chain head it recorded at the cut (None: none, or written before the
            chain was kept).
        sealed: True when its header carries a ``sha256`` (which then matched); False
            for a checkpoint written before it was kept.
        header: the parsed header.
    """

    cut: Cut
    last_seq: int
    chain: str | None
    sealed: bool
    header: dict[str, Any]


def inspect_checkpoint(path: Path) -> Inspection:
    """Check a checkpoint file without building its state, in constant memory: the
    header, the state line parsed as a stream (ijson) for its ``last_seq``, the
    binary part's size, and the ``sha256`` over all of it (:func:`content_digest`),
    so that an edit anywhere in the file is found. What :func:`load_checkpoint` would
    refuse, this refuses, but for a state whose fields do not fit together.

    Returns:
        an :class:`Inspection`.

    Raises:
        CheckpointError: when it is not a readable checkpoint of this format, or its
            content does not match its ``sha256``.
    """
    import ijson

    name = Path(path).name
    rest = sha256()
    try:
        with Path(path).open("rb") as fh:
            header, cut = _read_header(fh, name)
            last_seq = None
            for prefix, event, value in ijson.parse(_OneLine(fh, rest), use_float=True):
                if prefix == "state.last_seq" and event == "number":
                    last_seq = value
            size = header.get("blob_bytes", 0)
            start = fh.tell()
            if not isinstance(size, int) or start + size != fh.seek(0, 2):
                raise CheckpointError(f"{name}: binary part is not {size!r} bytes (truncated?)")
            fh.seek(start)
            while chunk := fh.read(1 << 20):
                rest.update(chunk)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ijson.JSONError) as exc:
        raise CheckpointError(f"{name}: unreadable checkpoint ({exc})") from None
    if not isinstance(last_seq, int):
        raise CheckpointError(f"{name}: unreadable checkpoint (its state has no last_seq)")
    sealed = "sha256" in header
    if sealed and header["sha256"] != content_digest(header, rest):
        raise CheckpointError(f"{name}: its content does not match its sha256 (edited after it was written?)")
    chain = header.get("chain")
    return Inspection(cut, last_seq, chain if isinstance(chain, str) else None, sealed, header)


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete automatic checkpoints beyond the newest ``keep``; labelled ones stay.

    Returns:
        the deleted paths.
    """
    automatic = [info for info in list_checkpoints(directory) if info.label is None]
    doomed = automatic[: max(0, len(automatic) - keep)]
    for info in doomed:
        info.path.unlink(missing_ok=True)
    return [info.path for info in doomed]


def delete_checkpoint(directory: Path, label: str) -> Path:
    """Delete the labelled checkpoint ``label``.

    Raises:
        CheckpointError: when there is none.
    """
    for info in list_checkpoints(directory):
        if info.label == label:
            info.path.unlink()
            return info.path
    raise CheckpointError(f"no checkpoint labelled {label!r} in {Path(directory) / CHECKPOINTS}")


@dataclass(frozen=True, slots=True)
class Horizon:
    """The log's base as its header says: where the kept log begins.

    Attributes:
        seq: the last record let go of (the base's state ends there).
        segment: key of the first segment kept (records from ``seq + 1``).
        ts: receive time of record ``seq`` (RFC 3339), or None.
        pruned: what retention let go of so far (see the module doc), ``{}`` when unknown.
        path: the base file.
        chain: the chain link of record ``seq`` (the first kept record follows it), or
            None when the base was written before the chain was kept.
    """

    seq: int
    segment: str
    ts: str | None
    pruned: dict[str, Any]
    path: Path
    chain: str | None = None


def base_path(directory: Path) -> Path:
    """``DIR/base.json``."""
    return Path(directory) / BASE_FILE


def read_horizon(directory: Path) -> Horizon | None:
    """The base's header, without its state.

    Returns:
        the :class:`Horizon`, or None when the log has no base (it starts at seq 1).

    Raises:
        CheckpointError: when ``base.json`` exists but cannot be read (a log whose base
            is lost cannot be folded: its first records' state is gone).
    """
    path = base_path(directory)
    try:
        with path.open("rb") as fh:
            header = orjson.loads(fh.readline())
        cut = Cut.from_dict(header["cut"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{BASE_FILE}: unreadable base ({exc}); the log's first records were pruned, "
                              "so it cannot be folded without it") from None
    pruned = header.get("pruned") if isinstance(header.get("pruned"), dict) else {}
    chain = header.get("chain")
    return Horizon(cut.seq, cut.segment, cut.ts, pruned, path, chain if isinstance(chain, str) else None)


def write_base(
    directory: Path,
    state: State,
    segment: str,
    ts: str | None,
    pruned: dict[str, Any],
    publishers: GapDetector | None,
    clock: Clock | None = None,
) -> Path:
    """Write ``DIR/base.json`` atomically: the fold of every record before ``segment``.

    The base holds the folded state, not the records: messages before the horizon are
    known by their refs (seq, id, sender) and counted, but their bodies went with their
    segments (into the archive with ``action = "archive"``).

    Args:
        directory: the log directory.
        state: the fold of records 1..``state.last_seq`` (the last record before ``segment``).
        segment: key of the first segment kept.
        ts: receive time of record ``state.last_seq``.
        pruned: the cumulative summary of what retention let go of (kept in the header).
        publishers: the gap detector as of the cut, or None.
        clock: time source for ``created``.

    Returns:
        the base's path.

    Raises:
        OSError: when it cannot be written.
    """
    cut = Cut(state.last_seq, segment_key(segment), 0, ts, _EMPTY_DIGEST, ())
    header: dict[str, Any] = {"format": FORMAT, "label": "base", "created": (clock or Clock()).now(),
                              "cut": cut.as_dict(), "sessions": len(state.sessions), "pruned": pruned}
    if publishers is not None:
        header["publishers"] = publishers.to_dict()
    path = base_path(directory)
    write_atomic(path, checkpoint_bytes(header, state))
    return path


def _check_target(horizon: Horizon | None, upto_seq: int | None, as_of_ts: str | None) -> None:
    if horizon is None:
        return
    if upto_seq is not None and upto_seq < horizon.seq:
        raise BeforeHorizonError(horizon, f"seq {upto_seq}")
    if as_of_ts is not None and horizon.ts is not None and as_of_ts < horizon.ts:
        raise BeforeHorizonError(horizon, as_of_ts)


@dataclass(slots=True)
class Start:
    """Where a fold starts: a checkpoint's state and position, or the empty log.

    Attributes:
        state: the state at the start (a fresh :class:`State` for the empty log).
        position: ``(segment, offset)`` after the cut, or None for the log's start.
        checkpoint: the checkpoint file used, or None.
        refused: ``"<file>: <reason>"`` for every newer checkpoint that could not be used.
        publishers: the gap detector as of the start (empty for the log's start; None
            when the checkpoint has no publishers' snapshot).
        horizon: the last seq retention let go of (the base's), 0 when none.
    """

    state: State
    position: tuple[str, int] | None
    checkpoint: Path | None
    refused: list[str]
    publishers: GapDetector | None = None
    horizon: int = 0


def best_start(
    directory: Path, upto_seq: int | None = None, as_of_ts: str | None = None, use_checkpoints: bool = True
) -> Start:
    """The newest checkpoint at or before ``upto_seq`` (and ``as_of_ts``) whose cut still
    matches the log; refused ones are listed, and with none usable, the log's base
    (``base.json``) or, without one, the log's start.

    Args:
        directory: the log directory.
        upto_seq: the target seq, or None for the end of the log.
        as_of_ts: the target time (RFC 3339 as in records), or None.
        use_checkpoints: False to start from the base or the log's start.

    Raises:
        BeforeHorizonError: when the target is before the base (those records were pruned).
        CheckpointError: when the log has a base that cannot be read.
    """
    refused: list[str] = []
    horizon = read_horizon(directory)
    _check_target(horizon, upto_seq, as_of_ts)
    for info in reversed(list_checkpoints(directory) if use_checkpoints else []):
        if upto_seq is not None and info.seq > upto_seq:
            continue
        if as_of_ts is not None and (info.ts is None or info.ts > as_of_ts):
            continue
        if horizon is not None and info.seq < horizon.seq:
            break  # older than the base: its records are gone
        try:
            cut, state = load_checkpoint(info.path)
        except CheckpointError as exc:
            refused.append(str(exc))
            continue
        reason = check_cut(directory, cut, horizon)
        if reason is not None:
            refused.append(f"{info.path.name}: {reason}")
            continue
        return Start(state, (cut.segment, cut.offset), info.path, refused, _publishers(info.path),
                     horizon.seq if horizon is not None else 0)
    if horizon is not None:
        try:
            cut, state = load_checkpoint(horizon.path)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}; the log's first records were pruned, so it cannot be folded "
                                  "without it") from None
        return Start(state, (cut.segment, 0), horizon.path, refused, _publishers(horizon.path), horizon.seq)
    return Start(State(), None, None, refused, GapDetector())


def _publishers(path: Path) -> GapDetector | None:
    """The publishers' snapshot in a checkpoint's header, or None when it has none."""
    try:
        with Path(path).open("rb") as fh:
            header = orjson.loads(fh.readline())
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict) or not isinstance(header.get("publishers"), dict):
        return None
    return GapDetector.from_dict(header["publishers"])


def publishers_start(directory: Path, upto_seq: int) -> tuple[GapDetector, tuple[str, int], int] | None:
    """The newest checkpoint at or before ``upto_seq`` with a publishers' snapshot and a
    cut that still matches the log, without reading its state.

    Args:
        directory: the log directory.
        upto_seq: the last seq that may be covered.

    Returns:
        ``(detector, (segment, offset) after the cut, cut seq)``, or None when there is none.
    """
    try:
        horizon = read_horizon(directory)
    except CheckpointError:
        horizon = None
    candidates = [info.path for info in reversed(list_checkpoints(directory))
                  if info.seq <= upto_seq and (horizon is None or info.seq >= horizon.seq)]
    if horizon is not None and horizon.seq <= upto_seq:
        candidates.append(horizon.path)
    for path in candidates:
        detector = _publishers(path)
        if detector is None:
            continue
        try:
            with path.open("rb") as fh:
                cut = Cut.from_dict(orjson.loads(fh.readline())["cut"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if check_cut(directory, cut, horizon) is None:
            return detector, (cut.segment, cut.offset), cut.seq
    return None


class Checkpointer:
    """Keeps a fold of a log current by following it, and writes checkpoints of it.

    The recorder runs :meth:`catch_up` and :meth:`checkpoint` from APScheduler jobs in
    a background thread, so its hot path never folds; the fold lags the log by at
    most the catch-up interval. Only complete lines are read (a write in progress is
    picked up by the next call). Methods are serialized by an internal lock.

    Args:
        directory: the log directory.
        keep: automatic checkpoints kept by :meth:`checkpoint` (older ones pruned).
        clock: time source.
        signer: signs the chain head of each checkpoint written
            (:class:`convlog.store.heads.HeadSigner`: ``sign(seq, ts, chain) -> dict``),
            or None.

    Attributes:
        signed: what the signer returned for the last checkpoint written, or None.
    """

    def __init__(self, directory: Path, keep: int = 12, clock: Clock | None = None, signer: Any = None) -> None:
        self.directory = Path(directory)
        self.signer = signer
        self.signed: dict[str, Any] | None = None
        self.keep = keep
        self.clock = clock or Clock()
        self._lock = threading.Lock()
        start = best_start(self.directory)
        self.state = start.state
        self.position = start.position
        self.refused = start.refused
        # None after a checkpoint without a snapshot: then none is written either (an
        # empty detector would make every known publisher look new).
        self.publishers = start.publishers
        self.last_ts: str | None = None
        self.last_checkpoint: Path | None = start.checkpoint

    def catch_up(self) -> int:
        """Fold every complete record written since the last call.

        Returns:
            how many records were folded.
        """
        with self._lock:
            count = 0
            state = self.state
            observe = self.publishers.observe_record if self.publishers is not None else None
            for record, segment, offset in follow(self.directory, self.position):
                fold(state, record)
                if observe is not None:
                    observe(record)
                self.position = (segment, offset)
                self.last_ts = record.get("ts")
                count += 1
            return count

    def checkpoint(self, label: str | None = None) -> Path | None:
        """Catch up, then write a checkpoint at the current position and prune.

        Args:
            label: keep it under this name; None for an automatic checkpoint (skipped
                when nothing was recorded since the last one).

        Returns:
            the new checkpoint's path, or None when none was needed.

        Raises:
            CheckpointError, OSError: when it cannot be written (or its head signed).
        """
        self.catch_up()
        with self._lock:
            if self.position is None:
                if label is None:
                    return None
                raise CheckpointError("the log is empty: nothing to checkpoint")
            seq = self.state.last_seq
            if label is None and self.last_checkpoint is not None and self.last_checkpoint.name == checkpoint_name(seq):
                return None
            segment, offset = self.position
            cut = make_cut(self.directory, seq, segment, offset, self.last_ts)
            path = write_checkpoint(self.directory, self.state, cut, label, self.clock, self.publishers)
            if self.signer is not None and self.state.chain is not None:
                self.signed = self.signer.sign(seq, cut.ts, self.state.chain)
            if label is None:
                self.last_checkpoint = path
                prune(self.directory, self.keep)
            return path
