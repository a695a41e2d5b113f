"""Archives: where retention with ``action = "archive"`` moves the segments it lets go of.

An archive is itself a log directory, readable by every command with ``--dir``::

    <archive>/events/<first seq>.jsonl.zst   the archived segments, as they were in the log
    <archive>/base.json                       the base that preceded its first segment
                                              (absent when it starts at seq 1)
    <archive>/checkpoints/                    checkpoints archived with the segments
    <archive>/manifest.json                   what it holds (below)

``manifest.json`` (replaced atomically after every file it names is fsynced)::

    {"format": 1, "log": "/abs/path/of/the/log",
     "segments": [{"name": "<first seq>.jsonl.zst", "first_seq": 1, "last_seq": 9120,
                   "first_ts": "...Z", "last_ts": "...Z", "records": 9120,
                   "bytes": 1048576, "sha256": "<hex of the file>", "archived": "...Z"}, ...],
     "base": {"seq": 0 | N, "sha256": "<hex of base.json>" | null}}

:func:`check_archive` compares the files with the manifest; ``convlog import --archive``
reads an archive's records back into a log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import orjson

from convlog.core.record import parse_line
from convlog.core.retention import SegmentSpan
from convlog.store.checkpoint import BASE_FILE, Horizon
from convlog.store.clock import Clock
from convlog.store.fsync import fsync_dir, write_atomic
from convlog.store.segment import (
    CHECKPOINTS,
    EVENTS,
    complete_end,
    lines_backwards,
    list_segments,
    open_segment,
    segment_key,
    segment_path,
)

MANIFEST_FILE = "manifest.json"
FORMAT = 1


class ArchiveError(Exception):
    """An archive cannot be written or read, or does not match its manifest."""


def _seq_and_ts(lines: Iterable[bytes]) -> tuple[int, str | None] | None:
    """``(seq, ts)`` of the first valid record among ``lines``, or None."""
    for line in lines:
        try:
            record = parse_line(line)
        except ValueError:
            continue
        ts = record.get("ts")
        return record["seq"], ts if isinstance(ts, str) else None
    return None


def _first_record(path: Path) -> tuple[int, str | None] | None:
    """``(seq, ts)`` of a segment's first valid record, or None."""
    with open_segment(path) as fh:
        return _seq_and_ts(fh)


def _last_record(path: Path) -> tuple[int, str | None] | None:
    """``(seq, ts)`` of a segment's last valid record, read backwards from its end."""
    return _seq_and_ts(line for _, line in lines_backwards(path, complete_end(path)))


def segment_spans(directory: Path) -> Iterator[SegmentSpan]:
    """The log's segments as retention sees them, oldest first, read lazily (the first
    and last record of each: one frame of a sealed segment each).

    A segment's last seq is the next one's first minus one (the log is contiguous),
    checked against its last record when that can be read.

    Raises:
        OSError: when a segment cannot be listed or stat'ed.
    """
    segments = list_segments(directory)
    for index, (first, path) in enumerate(segments):
        finished = index < len(segments) - 1
        first_ts = last_ts = None
        last_seq = segments[index + 1][0] - 1 if finished else first - 1
        with contextlib.suppress(OSError):
            head = _first_record(path)
            tail = _last_record(path)
            first_ts = head[1] if head else None
            if tail is not None:
                last_ts = tail[1]
                if not finished:
                    last_seq = tail[0]
        yield SegmentSpan(segment_key(path), first, last_seq, first_ts, last_ts, path.stat().st_size, finished)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks.

    Raises:
        OSError: when it cannot be read.
    """
    digest = sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _copy(source: Path, target: Path) -> None:
    """Copy a file durably: to a temp name, fsync, rename (the target never half-written)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(source, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_manifest(archive: Path) -> dict[str, Any]:
    """An archive's manifest; an empty one when it has none yet.

    Raises:
        ArchiveError: when the manifest exists but is not one.
    """
    path = Path(archive) / MANIFEST_FILE
    try:
        manifest = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {"format": FORMAT, "log": None, "segments": [], "base": None}
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ArchiveError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or \
            not isinstance(manifest.get("segments"), list):
        raise ArchiveError(f"{path}: not a convlog archive manifest (format {FORMAT})")
    return manifest


def _entries(manifest: dict[str, Any], archive: Path) -> dict[str, dict[str, Any]]:
    """The manifest's segment entries by name.

    Raises:
        ArchiveError: when one is not ``{"name": str, "first_seq": int, "last_seq": int, ...}``.
    """
    out = {}
    for index, entry in enumerate(manifest["segments"], 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not all(
                isinstance(entry.get(key), int) and not isinstance(entry.get(key), bool)
                for key in ("first_seq", "last_seq")):
            raise ArchiveError(f"{archive / MANIFEST_FILE}: segment entry {index} is malformed; "
                               "use a new archive directory")
        out[entry["name"]] = entry
    return out


def archive_segments(
    directory: Path, archive: Path, spans: list[SegmentSpan], checkpoints: list[Path], horizon: Horizon | None
) -> None:
    """Copy segments (and checkpoints) of a log into its archive and name them in the
    manifest; the caller removes them from the log afterwards.

    The archive must continue where it stops: its last segment's ``last_seq + 1`` is the
    first seq given (or it is empty, and then the log's current base, if any, is copied
    as the archive's base).

    Args:
        directory: the log directory.
        archive: the archive directory (created when missing).
        spans: the segments to archive, oldest first.
        checkpoints: checkpoint files to archive with them.
        horizon: the log's current base, or None.

    Raises:
        ArchiveError: when the archive holds other segments that the given ones do not continue.
        OSError: when a copy fails.
    """
    archive = Path(archive)
    manifest = read_manifest(archive)
    known = _entries(manifest, archive)
    last = max((entry["last_seq"] for entry in known.values()), default=None)
    fresh = [span for span in spans if segment_path(directory, span.key).name not in known]
    if fresh and last is not None and fresh[0].first_seq != last + 1:
        raise ArchiveError(f"{archive} ends at seq {last} but the segments to archive begin at "
                           f"{fresh[0].first_seq}: use a new archive directory")
    (archive / EVENTS).mkdir(parents=True, exist_ok=True)
    if not known and manifest.get("base") is None:
        base_sum = None
        if horizon is not None:
            _copy(horizon.path, archive / BASE_FILE)
            base_sum = file_sha256(archive / BASE_FILE)
        manifest["base"] = {"seq": horizon.seq if horizon else 0, "sha256": base_sum}
    manifest["log"] = str(Path(directory).resolve())
    now = Clock().now()
    for span in fresh:
        source = segment_path(directory, span.key)
        target = archive / EVENTS / source.name
        _copy(source, target)
        manifest["segments"].append({
            "name": source.name, "first_seq": span.first_seq, "last_seq": span.last_seq,
            "first_ts": span.first_ts, "last_ts": span.last_ts,
            "records": span.last_seq - span.first_seq + 1, "bytes": target.stat().st_size,
            "sha256": file_sha256(target), "archived": now,
        })
    if checkpoints:
        (archive / CHECKPOINTS).mkdir(exist_ok=True)
        for path in checkpoints:
            with contextlib.suppress(FileNotFoundError):
                _copy(path, archive / CHECKPOINTS / path.name)
        fsync_dir(archive / CHECKPOINTS)
    fsync_dir(archive / EVENTS)
    fsync_dir(archive)
    write_atomic(archive / MANIFEST_FILE, orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")


@dataclass(slots=True)
class ArchiveCheck:
    """What :func:`check_archive` found.

    Attributes:
        segments: segment files named by the manifest and present with their digest.
        problems: ``"<file>: <reason>"`` for each missing, changed or unnamed file.
    """

    segments: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every file matches the manifest."""
        return not self.problems


def check_archive(archive: Path) -> ArchiveCheck:
    """Compare an archive's segments (and base) with its manifest: every file named is
    present with its sha256, and every segment present is named.

    Returns:
        an :class:`ArchiveCheck`; its segments oldest first.

    Raises:
        ArchiveError: when ``archive`` has no manifest or an unreadable one.
    """
    archive = Path(archive)
    if not (archive / MANIFEST_FILE).exists():
        raise ArchiveError(f"{archive} is not a convlog archive (no {MANIFEST_FILE})")
    manifest = read_manifest(archive)
    check = ArchiveCheck()
    named = set()
    entries = []
    for index, entry in enumerate(manifest["segments"], 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or \
                not isinstance(entry.get("first_seq"), int) or "/" in entry["name"]:
            check.problems.append(f"{MANIFEST_FILE}: segment entry {index} is not a segment's name, seqs and digest")
            continue
        entries.append(entry)
    for entry in sorted(entries, key=lambda e: e["first_seq"]):
        name = entry["name"]
        named.add(name)
        path = archive / EVENTS / name
        if not path.exists():
            check.problems.append(f"{EVENTS}/{name}: missing")
        elif file_sha256(path) != entry.get("sha256"):
            check.problems.append(f"{EVENTS}/{name}: its sha256 differs from the manifest's (changed or damaged)")
        else:
            check.segments.append(path)
    base = manifest.get("base") if isinstance(manifest.get("base"), dict) else {}
    if base.get("sha256"):
        path = archive / BASE_FILE
        if not path.exists():
            check.problems.append(f"{BASE_FILE}: missing")
        elif file_sha256(path) != base["sha256"]:
            check.problems.append(f"{BASE_FILE}: its sha256 differs from the manifest's")
    for _, path in list_segments(archive):
        if path.name not in named:
            check.problems.append(f"{EVENTS}/{path.name}: not named in the manifest")
    return check


def refresh_manifest(archive: Path) -> list[str]:
    """Bring an archive's manifest up to date after its files were rewritten on purpose
    (``convlog purge SESSION --dir ARCHIVE``): the digest and size of every segment that
    changed, an entry for a segment that is new (the one holding ``session.purged``),
    and the base's digest. Replaced atomically.

    Returns:
        the names whose entries changed or were added.

    Raises:
        ArchiveError: when the manifest cannot be read.
        OSError: when a file cannot be read or the manifest written.
    """
    archive = Path(archive)
    manifest = read_manifest(archive)
    entries = _entries(manifest, archive)
    changed = []
    spans = {span.key: span for span in segment_spans(archive)}
    for _, path in list_segments(archive):
        digest = file_sha256(path)
        entry = entries.get(path.name)
        if entry is not None and entry.get("sha256") == digest:
            continue
        span = spans[segment_key(path)]
        fresh = {"name": path.name, "first_seq": span.first_seq, "last_seq": span.last_seq,
                 "first_ts": span.first_ts, "last_ts": span.last_ts,
                 "records": span.last_seq - span.first_seq + 1, "bytes": path.stat().st_size,
                 "sha256": digest, "archived": entry.get("archived") if entry else Clock().now()}
        if entry is None:
            manifest["segments"].append(fresh)
        else:
            entry.update(fresh)
        changed.append(path.name)
    base = manifest.get("base") if isinstance(manifest.get("base"), dict) else {}
    if base.get("sha256") and (archive / BASE_FILE).exists():
        digest = file_sha256(archive / BASE_FILE)
        if digest != base["sha256"]:
            base["sha256"] = digest
            changed.append(BASE_FILE)
    if changed:
        write_atomic(archive / MANIFEST_FILE, orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return changed
