"""Sealing finished segments: compress ``events/<first seq>.jsonl`` into
``events/<first seq>.jsonl.zst`` in the zstd seekable format (independent frames of
``FRAME_BYTES`` decompressed bytes and a seek table, so ``zstd -dc`` reads it and a
reader seeks by decompressed offset), and the rule that makes it crash-safe.

The steps, each durable before the next: write ``<name>.zst.tmp``, fsync it, rename it
to ``<name>.zst``, fsync the directory, remove the plain ``<name>``, fsync the
directory. A crash at any point leaves one complete copy, read the same by every
reader (:func:`convlog.store.segment.list_segments` prefers the sealed file);
:func:`settle` (run by recovery) removes the leftovers: a ``.zst.tmp`` file, and a
plain segment whose sealed copy exists. The live (last) segment is never sealed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyzstd

from convlog.store.fsync import fsync_dir
from convlog.store.segment import EVENTS, SEALED_BLOCK, SEALING_SUFFIX, is_sealed, list_segments, segment_first_seq

#: Decompressed bytes per independent zstd frame of a sealed segment (1 MiB): what
#: :func:`convlog.store.segment.find_record` decompresses to find one record
#: (docs/performance.md has the frame size against ratio and lookup time).
FRAME_BYTES = SEALED_BLOCK
#: Bytes read from the plain segment per write.
_READ_BYTES = 1 << 20
#: Compression methods the ``compress`` setting accepts.
METHODS = ("zstd", "none")


@dataclass(slots=True)
class Sealed:
    """What sealing one or more segments did.

    Attributes:
        segments: segments sealed.
        before: their plain bytes.
        after: their compressed bytes.
    """

    segments: int = 0
    before: int = 0
    after: int = 0

    def add(self, other: Sealed) -> None:
        """Count ``other`` in too."""
        self.segments += other.segments
        self.before += other.before
        self.after += other.after

    @property
    def ratio(self) -> float:
        """before / after (1.0 when nothing was sealed)."""
        return self.before / self.after if self.after else 1.0


def seal_segment(path: Path, level: int = 3, frame_bytes: int = FRAME_BYTES) -> Sealed:
    """Compress one finished plain segment into its sealed file and remove it (the
    crash-safe steps of the module doc).

    Args:
        path: a plain segment (``.../events/<first seq>.jsonl``) no writer appends to.
        level: zstd compression level (1-22; 3 is zstd's default).
        frame_bytes: decompressed bytes per frame.

    Returns:
        a :class:`Sealed` for this one segment.

    Raises:
        ValueError: when ``path`` is not a plain segment name.
        OSError: when a step fails; the temporary file is then removed and the plain
            segment is left as it was.
    """
    path = Path(path)
    if is_sealed(path) or segment_first_seq(path.name) is None:
        raise ValueError(f"{path.name} is not a plain segment")
    target = path.with_name(path.name + ".zst")
    tmp = path.with_name(path.name + SEALING_SUFFIX.removeprefix(".jsonl"))
    before = 0
    try:
        with path.open("rb") as src, tmp.open("wb") as raw:
            with pyzstd.SeekableZstdFile(raw, "w", level_or_option=level, max_frame_content_size=frame_bytes) as dst:
                while chunk := src.read(_READ_BYTES):
                    dst.write(chunk)
                    before += len(chunk)
            raw.flush()
            os.fsync(raw.fileno())
            after = raw.tell()
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    path.unlink()
    fsync_dir(path.parent)
    return Sealed(1, before, after)


def sealable(directory: Path) -> list[Path]:
    """The plain segments of a log that may be sealed: all but the last (live) one.

    Returns:
        their paths in seq order.
    """
    segments = list_segments(directory)
    return [path for _first, path in segments[:-1] if not is_sealed(path)]


def settle(directory: Path) -> list[str]:
    """Finish what a crash while sealing left: remove ``*.jsonl.zst.tmp`` files and
    plain segments whose sealed copy exists (it is complete: it was renamed into place
    only once fsynced). The caller holds the writer lock.

    Args:
        directory: the log directory.

    Returns:
        the names of the files removed.

    Raises:
        OSError: when a file cannot be removed.
    """
    events = Path(directory) / EVENTS
    removed: list[str] = []
    if not events.is_dir():
        return removed
    for path in sorted(events.iterdir()):
        name = path.name
        if name.endswith(SEALING_SUFFIX) or (
            segment_first_seq(name) is not None and not is_sealed(name) and path.with_name(name + ".zst").exists()
        ):
            path.unlink()
            removed.append(name)
    if removed:
        fsync_dir(events)
    return removed


def compress_log(directory: Path, level: int = 3, on_segment: Callable[[Path, Sealed], None] | None = None) -> Sealed:
    """Seal every finished plain segment of a log (all but the last), oldest first.
    The caller holds the writer lock (no recorder is writing).

    Args:
        directory: the log directory.
        level: zstd compression level.
        on_segment: called after each segment with its path and :class:`Sealed`.

    Returns:
        the totals.

    Raises:
        OSError: when a segment cannot be sealed (those before it stay sealed).
    """
    settle(directory)
    total = Sealed()
    for path in sealable(directory):
        done = seal_segment(path, level)
        total.add(done)
        if on_segment is not None:
            on_segment(path, done)
    return total
