"""Segments of the event log: the directory layout, segment names and listing, and
reading records, lines and bytes by seq (forwards from a seq or a byte position, and
backwards from the end).

Layout of a log directory (docs/log-format.md)::

    events/<first seq, 20 digits>.jsonl   segments; only the last one is written
    events/<first seq>.jsonl.zst          a sealed segment: zstd, seekable format
    recovery/state.json                   last durable position, clean-shutdown flag
    recovery/quarantine.jsonl             bytes salvaged from torn or invalid lines
    recovery/recorder.lock                held (flock) by the one running writer

Segments are named by the seq of their first record, so the segment holding a seq is
found by bisecting the names; inside a segment records are sorted by seq.

A finished segment may be sealed (:mod:`convlog.store.seal`): compressed into
``<first seq>.jsonl.zst`` in the zstd seekable format. Readers never tell the two
apart: :func:`list_segments` lists both, :func:`open_segment` opens either as a
binary file seekable by decompressed offset and :func:`segment_size` gives the
decompressed size. A segment is known everywhere by its *key*, the plain name
``<first seq>.jsonl`` (:func:`segment_key`), so positions (checkpoint cuts, the search
index, a follower's position, state.json) stay valid when a segment is sealed.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import os
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyzstd

from convlog.core.record import parse_line

EVENTS = "events"
RECOVERY = "recovery"
CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
QUARANTINE_FILE = "quarantine.jsonl"
LOCK_FILE = "recorder.lock"
SEGMENT_SUFFIX = ".jsonl"
SEALED_SUFFIX = ".jsonl.zst"
#: A sealed segment being written: never a segment; removed by recovery.
SEALING_SUFFIX = ".jsonl.zst.tmp"
SEQ_DIGITS = 20


def segment_name(first_seq: int) -> str:
    """File name of the segment whose first record has ``first_seq``."""
    return f"{first_seq:0{SEQ_DIGITS}d}{SEGMENT_SUFFIX}"


def sealed_name(first_seq: int) -> str:
    """File name of the sealed (zstd) segment whose first record has ``first_seq``."""
    return f"{first_seq:0{SEQ_DIGITS}d}{SEALED_SUFFIX}"


def segment_first_seq(name: str) -> int | None:
    """The first seq a segment file name stands for (``00000000000000000042.jsonl`` or
    ``00000000000000000042.jsonl.zst`` -> 42), or None when the name is not a
    segment's."""
    for suffix in (SEGMENT_SUFFIX, SEALED_SUFFIX):
        stem = name.removesuffix(suffix)
        if name.endswith(suffix) and stem.isdigit():
            return int(stem)
    return None


def is_sealed(path: Path | str) -> bool:
    """Whether a segment path (or name) is a sealed, zstd-compressed one."""
    return str(path).endswith(SEALED_SUFFIX)


def segment_key(path: Path | str) -> str:
    """The name a segment is known by whether sealed or not: its plain file name
    (``.../00000000000000000042.jsonl.zst`` -> ``00000000000000000042.jsonl``)."""
    name = path.name if isinstance(path, Path) else str(path).rsplit("/", 1)[-1]
    return name.removesuffix(".zst") if name.endswith(SEALED_SUFFIX) else name


def segment_path(directory: Path, key: str) -> Path:
    """The file now holding the segment known as ``key`` (a plain segment name): the
    sealed file when there is one, else the plain one (which may not exist)."""
    plain = Path(directory) / EVENTS / segment_key(key)
    sealed = plain.with_name(plain.name + ".zst")
    return sealed if sealed.exists() else plain


def _sealed_since(plain: Path) -> Path:
    """The sealed file of a plain segment that was sealed (and removed) since it was
    listed. Raises FileNotFoundError when there is none either."""
    sealed = plain.with_name(plain.name + ".zst")
    if not sealed.exists():
        raise FileNotFoundError(2, "no such segment", str(plain))
    return sealed


#: What pyzstd raises for a sealed file that is not a complete seekable zstd file.
UNREADABLE = (pyzstd.ZstdError, pyzstd.SeekableFormatError, EOFError)


def open_segment(path: Path) -> io.BufferedIOBase:
    """Open a segment for reading, sealed or not, as a binary file whose offsets are
    those of the plain lines (``seek``/``tell``/``readline``/iteration work the same).

    A plain segment sealed (and removed) since it was listed is read from its sealed
    file instead.

    Args:
        path: a segment path as :func:`list_segments` gives it.

    Returns:
        an open binary file (a ``pyzstd.SeekableZstdFile`` for a sealed segment).

    Raises:
        OSError: when it cannot be opened (FileNotFoundError when neither file exists;
            a sealed file that is not a complete seekable zstd file too).
    """
    path = Path(path)
    if not is_sealed(path):
        try:
            return path.open("rb")
        except FileNotFoundError:
            path = _sealed_since(path)
    try:
        return pyzstd.SeekableZstdFile(path, "r")
    except UNREADABLE as exc:
        raise OSError(f"{path.name}: not a readable sealed segment: {exc}") from exc


def segment_size(path: Path) -> int:
    """Bytes of a segment's lines: the file size of a plain segment, the decompressed
    size (from the seek table, without decompressing) of a sealed one, 0 for a sealed
    one too damaged to open (``convlog verify`` names it).

    Raises:
        OSError: when it cannot be read.
    """
    path = Path(path)
    if not is_sealed(path):
        try:
            return path.stat().st_size
        except FileNotFoundError:
            path = _sealed_since(path)
    try:
        with open_segment(path) as fh:
            return fh.seek(0, 2)
    except OSError:
        if not is_sealed(path) or not path.exists():
            raise
        return 0  # a damaged sealed segment holds nothing a reader can use (verify names it)


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """The segments of a log directory.

    Args:
        directory: the log directory.

    Returns:
        ``[(first_seq, path), ...]`` sorted by first seq, a path ending in ``.jsonl``
        or ``.jsonl.zst`` (sealed; when both exist the sealed one is complete and is
        the one listed); files whose name is not a seq are ignored.
    """
    events = Path(directory) / EVENTS
    found: dict[int, Path] = {}
    if events.is_dir():
        for path in events.iterdir():
            first = segment_first_seq(path.name)
            if first is not None and (first not in found or is_sealed(path)):
                found[first] = path
    return sorted(found.items())

def ensure_layout(directory: Path) -> None:
    """Create the directory and its ``events``, ``recovery`` and ``checkpoints`` parts."""
    for part in (EVENTS, RECOVERY, CHECKPOINTS):
        (Path(directory) / part).mkdir(parents=True, exist_ok=True)


def iter_records(
    directory: Path,
    start_seq: int = 1,
    upto_seq: int | None = None,
    on_error: Callable[[str, int, str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the records of a log in seq order.

    Starts at the segment holding ``start_seq`` (segments are named by first seq), so
    reading the end of a long log does not scan it all; see :func:`follow` for torn
    and invalid lines.

    Args:
        directory: the log directory.
        start_seq: first seq wanted.
        upto_seq: last seq wanted (inclusive), or None for all.
        on_error: callback for invalid lines: ``(segment name, line number, reason)``.

    Yields:
        record dicts as :func:`convlog.core.record.parse_line` returns them.
    """
    segments = list_segments(directory)
    if not segments:
        return
    index = max(0, bisect.bisect_right([first for first, _ in segments], start_seq) - 1)
    for record, _segment, _offset in follow(directory, (segment_key(segments[index][1]), 0), on_error):
        seq = record["seq"]
        if seq < start_seq:
            continue
        if upto_seq is not None and seq > upto_seq:
            return
        yield record


def segments_from(directory: Path, start_seq: int) -> list[Path]:
    """The segment paths from the one holding ``start_seq`` on (bisect over the names)."""
    segments = list_segments(directory)
    index = max(0, bisect.bisect_right([first for first, _ in segments], start_seq) - 1)
    return [path for _first, path in segments[index:]]


def segment_lines(
    path: Path, offset: int = 0, on_damage: Callable[[OSError], None] | None = None
) -> Iterator[bytes]:
    """The lines of one segment from a byte offset (decompressed for a sealed one), each
    with its LF; a torn last line comes without one.

    A damaged sealed segment costs its own records, never the reader: when it cannot be
    opened, or a frame cannot be decompressed, ``on_damage`` is called with the error
    and the lines stop there (``convlog verify`` names the file).

    Args:
        path: a segment path as :func:`list_segments` gives it.
        offset: where to start, bytes.
        on_damage: called once for a damaged sealed segment; None to ignore it.

    Yields:
        line bytes.

    Raises:
        OSError: when a plain segment cannot be read.
    """
    try:
        with open_segment(path) as fh:
            fh.seek(offset)
            lines = iter(fh)
            while True:
                try:
                    line = next(lines)
                except StopIteration:
                    return
                except UNREADABLE as exc:  # a damaged frame of a sealed segment
                    raise OSError(f"{path.name}: not a readable sealed segment: {exc}") from exc
                yield line
    except OSError as exc:
        if not is_sealed(path):
            raise
        if on_damage is not None:
            on_damage(exc)


def iter_lines(
    directory: Path, start_seq: int = 1, progress: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """Yield the whole lines (with their LF) of a log, in order, from the segment that
    holds ``start_seq`` (segments are named by their first seq).

    A torn last line of the last segment (a write in progress) is not yielded; a torn
    line inside an earlier segment is skipped, and so is what follows the damage in a
    sealed segment too damaged to read (see :func:`segment_lines`). Lines are not
    validated: parse them with :func:`convlog.core.record.parse_line`.

    Args:
        directory: the log directory.
        start_seq: the first seq wanted (earlier lines of its segment are yielded too).
        progress: called with the bytes read since its last call (about every 1 MiB).

    Yields:
        line bytes.
    """
    pending = 0
    for path in segments_from(directory, start_seq):
        with contextlib.closing(segment_lines(path)) as lines:
            for line in lines:
                pending += len(line)
                if progress is not None and pending >= 1 << 20:
                    progress(pending)
                    pending = 0
                if line.endswith(b"\n"):
                    yield line
    if progress is not None and pending:
        progress(pending)


def bytes_from(directory: Path, start_seq: int = 1) -> int:
    """Bytes :func:`iter_lines` reads from ``start_seq`` on (for a progress bar's total;
    decompressed bytes for sealed segments)."""
    total = 0
    for path in segments_from(directory, start_seq):
        with contextlib.suppress(OSError):
            total += segment_size(path)
    return total


def _seq_at(fh: Any, offset: int, size: int) -> tuple[int, int, bytes] | None:
    """The first whole record starting at or after ``offset``: ``(start, seq, line)``,
    or None when there is none before ``size``. Invalid lines are stepped over."""
    fh.seek(offset)
    if offset:
        fh.readline()  # the rest of a line cut in the middle
    while True:
        start = fh.tell()
        if start >= size:
            return None
        line = fh.readline()
        if not line.endswith(b"\n"):
            return None
        try:
            return start, parse_line(line)["seq"], line
        except ValueError:
            continue


#: Decompressed bytes per frame of a sealed segment (:mod:`convlog.store.seal` seals with
#: it; :func:`find_record` reads whatever frame sizes a segment's seek table gives).
SEALED_BLOCK = 1 << 20
#: Bytes of decompressed frames :func:`find_record` keeps per process (least recently
#: used dropped first), so that lookups of neighbouring seqs (``show``, ``export``,
#: ``resume``) decompress each frame once: 8 MiB, eight 1 MiB frames.
FRAME_CACHE_BYTES = 8 << 20


def find_record(directory: Path, seq: int) -> dict[str, Any] | None:
    """The record with ``seq``, found without scanning: the segment by its name (first
    seq, bisect), then the line by binary search over byte offsets (records are sorted
    by seq inside a segment). About log2(segment size / line size) reads.

    In a sealed segment the search is over its zstd frames, through the seek table
    (:class:`_Sealed`): the frame whose first line has the greatest seq not above
    ``seq`` is found by interpolation (seqs are contiguous, so a seq's place in the
    segment estimates its frame) from the first seq of the frames probed, each read
    from the first compressed block of its frame only; then that one frame is
    decompressed (kept in a per-process cache of ``FRAME_CACHE_BYTES``) and the line
    found in memory.

    Args:
        directory: the log directory.
        seq: the seq wanted.

    Returns:
        the record, or None when the log has no record ``seq`` (or it is in a sealed
        segment too damaged to read, which ``convlog verify`` names).

    Raises:
        OSError: when a plain segment cannot be read.
    """
    segments = list_segments(directory)
    index = bisect.bisect_right([first for first, _ in segments], seq) - 1
    if index < 0:
        return None
    first, path = segments[index]
    if is_sealed(path):
        after = segments[index + 1][0] if index + 1 < len(segments) else None
        try:
            return _find_sealed(path, seq, first, after)
        except (OSError, *UNREADABLE):
            return None  # a damaged sealed segment: its records are missing, not the reader
    return _bisect_lines(path, seq)


#: The head of a record line as :func:`convlog.core.record.format_line` writes it.
_SEQ_HEAD = re.compile(rb'\{"seq":(\d+),')
#: zstd seekable format: the seek table's skippable frame magic and its footer's magic
#: (https://github.com/facebook/zstd/blob/dev/contrib/seekable_format/zstd_seekable_compression_format.md).
_SKIPPABLE_MAGIC = 0x184D2A5E
_SEEKABLE_MAGIC = 0x8F92EAB1
_FOOTER = struct.Struct("<IBI")
_ENTRY = struct.Struct("<II")
#: Decompressed bytes asked for at a time while reading the start of a frame.
_PROBE_OUT = 1 << 14


class _Unusual(Exception):
    """A sealed segment whose lines the fast frame search cannot place (a line longer
    than a frame, a line not written by the recorder): the general search reads it."""


class _Sealed:
    """Frame-level random access to one sealed segment: its seek table (decompressed
    and compressed offsets of every frame), one frame decompressed (cached per process,
    see :data:`FRAME_CACHE_BYTES`) and the seq that leads each frame (cached too).

    Frame *k* holds the lines that start after its first newline, up to and including
    the line that runs into frame *k + 1* (frame 0 holds its first line too), so each
    line belongs to exactly one frame.
    """

    def __init__(self, path: Path, fh: Any) -> None:
        st = os.fstat(fh.fileno())
        self.key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        self.fh = fh
        table = _TABLES.get(self.key)
        if table is None:
            table = _read_seek_table(fh, st.st_size)
            _TABLES.put(self.key, table, 1)
        self.c_offsets, self.d_offsets = table
        self.frames = len(self.d_offsets) - 1

    def _compressed(self, frame: int) -> bytes:
        start = self.c_offsets[frame]
        self.fh.seek(start)
        return self.fh.read(self.c_offsets[frame + 1] - start)

    def frame(self, frame: int) -> bytes:
        """Frame ``frame``, decompressed (from the cache when it is there).

        Raises:
            OSError: when it does not decompress to the size its seek table gives.
        """
        key = (*self.key, frame)
        data = _FRAMES.get(key)
        if data is None:
            size = self.d_offsets[frame + 1] - self.d_offsets[frame]
            decompressor = pyzstd.ZstdDecompressor()
            data = decompressor.decompress(self._compressed(frame), size + 1)
            if not decompressor.eof or len(data) != size:
                raise OSError(f"{self.key[0]}: frame {frame} is not {size} bytes")
            _FRAMES.put(key, data, len(data))
        return data

    def start(self, frame: int, need: int) -> bytes:
        """Frame ``frame`` decompressed up to its first newline and at least ``need``
        bytes past it (less when the frame ends first): from the cache, else from as
        few of its compressed blocks as that takes."""
        data = _FRAMES.get((*self.key, frame))
        if data is not None:
            return data
        decompressor = pyzstd.ZstdDecompressor()
        out = decompressor.decompress(self._compressed(frame), _PROBE_OUT)
        while not decompressor.eof:
            cut = out.find(b"\n")
            if cut >= 0 and len(out) - cut > need:
                break
            out += decompressor.decompress(b"", _PROBE_OUT)
        return out

    def head(self, frame: int) -> int:
        """The seq of the first line that belongs to ``frame`` (cached).

        Raises:
            _Unusual: when no line starts in the frame after its first newline, or that
                line does not begin as the recorder writes lines.
        """
        key = (*self.key, frame)
        seq = _HEADS.get(key)
        if seq is None:
            data = self.start(frame, 32)
            cut = data.find(b"\n") + 1 if frame else 0
            match = _SEQ_HEAD.match(data, cut) if (cut or not frame) and cut < len(data) else None
            if match is None:
                raise _Unusual
            seq = int(match.group(1))
            _HEADS.put(key, seq, 1)
        return seq

    def continuation(self, frame: int) -> bytes:
        """The part of the next frame that belongs to ``frame``: from its start to its
        first newline included (the end of the line that runs out of ``frame``; when
        ``frame`` ends with a newline, the whole line that starts the next one). Empty
        for the last frame.

        Raises:
            _Unusual: when that line does not end in the next frame.
        """
        if frame + 1 >= self.frames:
            return b""
        rest = self.start(frame + 1, 0)
        end = rest.find(b"\n")
        if end < 0:
            raise _Unusual
        return rest[: end + 1]

    def owned(self, frame: int) -> bytes:
        """The lines that belong to ``frame``, each with its newline.

        Raises:
            _Unusual: when the frame holds no newline, or the line that runs into the
                next frame does not end there.
        """
        data = self.frame(frame)
        cut = data.find(b"\n") + 1 if frame else 0
        if frame and cut == 0:
            raise _Unusual
        return data[cut:] + self.continuation(frame)


class _Lru:
    """A small least-recently-used map bounded by the total of its entries' weights
    (bytes of frames, or a count), safe to share between threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.weight = 0
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Any, value: Any, weight: int) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.weight -= old[1]
            self._items[key] = (value, weight)
            self.weight += weight
            while self.weight > self.limit and len(self._items) > 1:
                _key, (_value, dropped) = self._items.popitem(last=False)
                self.weight -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.weight = 0


_TABLES = _Lru(256)
_FRAMES = _Lru(FRAME_CACHE_BYTES)
_HEADS = _Lru(1 << 16)


def clear_caches() -> None:
    """Forget the sealed segments' seek tables, frames and frame heads this process
    has read (for a cold measurement; files that change get new cache keys anyway)."""
    for cache in (_TABLES, _FRAMES, _HEADS):
        cache.clear()


def _read_seek_table(fh: Any, size: int) -> tuple[list[int], list[int]]:
    """The compressed and decompressed offsets of every frame of a seekable zstd file,
    and its end (``frames + 1`` each), from its seek table.

    Raises:
        OSError: when the file does not end in a valid seek table.
    """
    if size >= 17:
        fh.seek(size - _FOOTER.size)
        frames, descriptor, magic = _FOOTER.unpack(fh.read(_FOOTER.size))
        entry = _ENTRY.size + (4 if descriptor & 0x80 else 0)
        table = frames * entry + _FOOTER.size
        if magic == _SEEKABLE_MAGIC and not descriptor & 0x7C and 8 + table <= size:
            fh.seek(size - 8 - table)
            raw = fh.read(8 + table)
            frame_magic, frame_size = _ENTRY.unpack_from(raw)
            if frame_magic == _SKIPPABLE_MAGIC and frame_size == table:
                c_offsets, d_offsets = [0], [0]
                for index in range(frames):
                    compressed, decompressed = _ENTRY.unpack_from(raw, 8 + index * entry)
                    c_offsets.append(c_offsets[-1] + compressed)
                    d_offsets.append(d_offsets[-1] + decompressed)
                if c_offsets[-1] + 8 + table == size:
                    return c_offsets, d_offsets
    raise OSError(f"{getattr(fh, 'name', '?')}: no valid zstd seek table")


def _find_sealed(path: Path, seq: int, first: int, after: int | None) -> dict[str, Any] | None:
    """:func:`find_record` in a sealed segment (``first``: its first seq; ``after``: the
    next segment's first seq, or None)."""
    with path.open("rb") as fh:
        sealed = _Sealed(path, fh)
        try:
            return _find_in_frames(sealed, seq, first, after)
        except _Unusual:
            pass
    return _bisect_lines(path, seq)  # the general search, over lines as any reader reads them


def _find_in_frames(sealed: _Sealed, seq: int, first: int, after: int | None) -> dict[str, Any] | None:
    """Interpolation search for the frame ``seq`` belongs to, then the line in it."""
    low, low_seq = 0, first  # the frame: the last one whose head is <= seq, in [low, high)
    high, high_seq = sealed.frames, after
    offsets = sealed.d_offsets
    while high - low > 1:
        if high_seq is not None and high_seq > low_seq:  # where seq falls between the two heads' bytes
            at = offsets[low] + (seq - low_seq) * (offsets[high] - offsets[low]) // (high_seq - low_seq)
            guess = min(max(bisect.bisect_right(offsets, at) - 1, low + 1), high - 1)
        else:
            guess = (low + high) // 2
        head = sealed.head(guess)
        if head <= seq:
            low, low_seq = guess, head
        else:
            high, high_seq = guess, head
    data = sealed.frame(low)
    needle = b'{"seq":%d,' % seq
    if low == 0 and data.startswith(needle):
        at = 0
    else:
        cut = data.find(b"\n") if low else 0
        at = data.find(b"\n" + needle, cut) + 1 if cut >= 0 else 0
    if at:  # the line starts in this frame: it ends here or in the next one
        end = data.find(b"\n", at) + 1
        line = data[at:end] if end else data[at:] + sealed.continuation(low)
    else:  # its start may straddle the end of the frame
        line = data[data.rfind(b"\n") + 1:] + sealed.continuation(low)
    if line.startswith(needle):
        with contextlib.suppress(ValueError):
            record = parse_line(line)
            if record["seq"] == seq:
                return record
    # Not where a recorder's line would be: the lines one by one (invalid ones skipped).
    for line in sealed.owned(low).split(b"\n"):
        with contextlib.suppress(ValueError):
            record = parse_line(line)
            if record["seq"] == seq:
                return record
    return None


def _bisect_lines(path: Path, seq: int) -> dict[str, Any] | None:
    """Find record ``seq`` in one segment by binary search over byte offsets (records are
    sorted by seq inside a segment), then a scan of the last 4 KiB or so."""
    with open_segment(path) as fh:
        size = fh.seek(0, 2)
        low, high = 0, size  # invariant: the line of ``seq``, if any, starts in [low, high)
        while high - low > 4096:
            middle = (low + high) // 2
            found = _seq_at(fh, middle, high)
            if found is None or found[1] > seq:
                high = middle
            elif found[1] == seq:
                return parse_line(found[2])
            else:
                low = found[0]
        fh.seek(low)  # 0 or the start of a line found above
        return scan_for_seq(fh, seq)


def scan_for_seq(fh: Any, seq: int, limit: int | None = None) -> dict[str, Any] | None:
    """Read complete lines from ``fh``'s position (a line start) until the record
    ``seq``: records are sorted by seq inside a segment, so it stops at a higher seq.
    Invalid lines are passed over.

    Args:
        fh: a segment opened in binary mode, positioned at a line start.
        seq: the seq wanted.
        limit: lines read at most (None: to the end).

    Returns:
        the record, or None when it is not there.
    """
    for number, line in enumerate(fh):
        if (limit is not None and number >= limit) or not line.endswith(b"\n"):
            break
        try:
            record = parse_line(line)
        except ValueError:
            continue
        if record["seq"] == seq:
            return record
        if record["seq"] > seq:
            break
    return None


def read_seqs(directory: Path, seqs: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Fetch the records with the given seqs.

    A few seqs spread over a long log are looked up one by one (:func:`find_record`);
    many seqs close together are read in one forward pass.

    Returns:
        ``{seq: record}`` for those found.
    """
    wanted = sorted(set(seqs))
    if not wanted:
        return {}
    span = wanted[-1] - wanted[0] + 1
    if len(wanted) * 64 < span:
        out = {}
        for seq in wanted:
            record = find_record(directory, seq)
            if record is not None:
                out[seq] = record
        return out
    out = {}
    want = set(wanted)
    for record in iter_records(directory, start_seq=wanted[0], upto_seq=wanted[-1]):
        if record["seq"] in want:
            out[record["seq"]] = record
    return out


def follow(
    directory: Path,
    position: tuple[str, int] | None = None,
    on_error: Callable[[str, int, str], None] | None = None,
) -> Iterator[tuple[dict[str, Any], str, int]]:
    """Yield the complete records after a byte position, with the position after each.

    Args:
        directory: the log directory.
        position: ``(segment key, byte offset)`` just after the last record already
            seen, or None to start at the beginning of the log. The key is the plain
            segment name (:func:`segment_key`), the offset a decompressed one.

    Yields:
        ``(record, segment key, offset after its line)``. Stops at the end of what is
        written; an incomplete last line (a write in progress) is left for the next
        call. Invalid lines are skipped and reported to ``on_error(segment name,
        line number, reason)``; line numbers count from the start position.
    """
    for _line, record, key, offset in follow_lines(directory, position, on_error):
        yield record, key, offset


def follow_lines(
    directory: Path,
    position: tuple[str, int] | None = None,
    on_error: Callable[[str, int, str], None] | None = None,
) -> Iterator[tuple[bytes, dict[str, Any], str, int]]:
    """:func:`follow`, with each record's line: ``(line, record, segment key, offset
    after the line)``. Yields nothing when ``position`` names a segment the log no
    longer has (see :func:`follow`)."""
    segments = list_segments(directory)
    names = [segment_key(path) for _, path in segments]
    if position is None:
        index, offset = 0, 0
    else:
        name, offset = position
        name = segment_key(name)
        if name not in names:
            return
        index = names.index(name)
    last = segments[-1][1] if segments else None
    for _, path in segments[index:]:
        key = segment_key(path)
        number = 0
        damage: list[OSError] = []
        with contextlib.closing(segment_lines(path, offset, damage.append)) as lines:
            for line in lines:
                number += 1
                if not line.endswith(b"\n"):
                    if path == last:
                        return  # a write in progress: the next call reads it whole
                    if on_error is not None:
                        on_error(key, number, f"torn line: {len(line)} bytes without a newline")
                    break
                offset += len(line)
                try:
                    record = parse_line(line)
                except ValueError as exc:
                    if on_error is not None:
                        on_error(key, number, str(exc))
                    continue
                yield line, record, key, offset
        if damage and on_error is not None:
            on_error(key, number + 1, f"unreadable from here: {damage[0]}")
        offset = 0


# -- reading from the end ---------------------------------------------------------------------

#: First read size when reading a segment backwards, bytes (doubled up to 4 MiB per read).
BACKWARD_CHUNK = 1 << 16


def complete_end(path: Path, chunk: int | None = None) -> int:
    """Byte offset just after the last newline of a segment (0 when it has none): the
    end of its complete lines; a line still being written is not included. Reads
    backwards from the end in chunks of ``chunk`` bytes (default ``BACKWARD_CHUNK``, 64 KiB), doubling.

    Raises:
        OSError: when the file cannot be read.
    """
    with open_segment(path) as fh:
        pos = fh.seek(0, 2)
        chunk = chunk or BACKWARD_CHUNK
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            data = fh.read(pos - start)
            cut = data.rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            pos = start
            chunk = min(chunk * 2, 1 << 22)
    return 0


def lines_backwards(path: Path, end: int, chunk: int | None = None) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a segment before byte ``end`` (a line boundary), newest
    first, read from the end in chunks of ``chunk`` bytes (default ``BACKWARD_CHUNK``, 64 KiB), doubling up
    to 4 MiB (a longer line is assembled from several chunks).

    Yields:
        ``(byte offset of the line, line bytes with its newline)``.

    Raises:
        OSError: when the file cannot be read.
    """
    with open_segment(path) as fh:
        pos, rest, chunk = end, b"", chunk or BACKWARD_CHUNK
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            data = fh.read(pos - start) + rest
            pieces = data.split(b"\n")
            offsets = [start]
            for piece in pieces[:-1]:
                offsets.append(offsets[-1] + len(piece) + 1)
            rest = pieces[0]  # may begin before ``start``: completed by the next chunk
            for offset, line in zip(reversed(offsets[1:]), reversed(pieces[1:]), strict=True):
                if line.strip():
                    yield offset, line + b"\n"
            pos = start
            chunk = min(chunk * 2, 1 << 22)
        if rest.strip():
            yield 0, rest + b"\n"
