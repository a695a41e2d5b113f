"""Find-by-seq in sealed segments through their seek tables: the same answers as on the
plain log whatever the frame size, line lengths (lines longer than a frame, lines ending
exactly at a frame's end), invalid lines and missing seqs; one frame decompressed per
lookup, neighbours served from the bounded per-process cache."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convlog.core.record import make_line
from convlog.store import segment
from convlog.store.seal import seal_segment
from convlog.store.segment import clear_caches, ensure_layout, find_record, is_sealed, list_segments, read_seqs
from convlog.store.writer import SegmentWriter


def build(directory: Path, items: list[tuple[int, int]], segment_bytes: int) -> int:
    """Write a log from ``(text length, what)`` items: ``what`` 0 is a record, 1 a record
    after a skipped seq, 2 an invalid line before the record. Returns the last seq."""
    ensure_layout(directory)
    writer = SegmentWriter(directory, next_seq=1, segment_bytes=segment_bytes, fsync="never")
    seq = 0
    for length, what in items:
        seq += 2 if what == 1 else 1
        if what == 2:
            writer.write(b"not a record\n", seq)
        writer.write(make_line(seq, "2026-11-21T00:00:00.000000Z", "message", "sub", "t", f"s{seq % 3}",
                               {"content": "y" * length}), seq)
    writer.close()
    return seq


def sealed_copy(plain: Path, target: Path, frame_bytes: int) -> Path:
    shutil.copytree(plain, target)
    for _, path in list_segments(target)[:-1]:
        seal_segment(path, level=1, frame_bytes=frame_bytes)
    return target


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.tuples(st.one_of(st.integers(0, 300), st.integers(300, 5000)),
                                st.sampled_from([0, 0, 0, 0, 1, 2])), min_size=1, max_size=120),
       frame_bytes=st.integers(200, 3000), segment_bytes=st.integers(2000, 40000))
def test_find_record_in_sealed_frames_equals_the_plain_log(items: list[tuple[int, int]], frame_bytes: int,
                                                           segment_bytes: int) -> None:
    """For random logs sealed with small frames (so lines cross frames, some span several
    and some end exactly at a frame's end), every seq (and the ones missing) is found as in
    the plain log, with a cold cache and a warm one."""
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain"
        last = build(plain, items, segment_bytes)
        sealed = sealed_copy(plain, Path(tmp) / "sealed", frame_bytes)
        expected = {seq: find_record(plain, seq) for seq in range(0, last + 2)}
        for seq, record in expected.items():
            clear_caches()
            assert find_record(sealed, seq) == record, seq
        for seq, record in reversed(expected.items()):
            assert find_record(sealed, seq) == record, seq
        assert read_seqs(sealed, range(1, last + 1, 7)) == read_seqs(plain, range(1, last + 1, 7))


def test_frame_boundaries_exactly_at_line_ends(tmp_path: Path) -> None:
    """Lines of one fixed length sealed in frames of a multiple of it: every frame starts
    with a whole line, and each is still found."""
    plain = tmp_path / "plain"
    ensure_layout(plain)
    writer = SegmentWriter(plain, next_seq=1, segment_bytes=50_000, fsync="never")
    sizes = set()
    for seq in range(1, 1001):
        line = make_line(seq, "2026-11-21T00:00:00.000000Z", "message", "sub", "t", "s",
                         {"content": "z" * (60 - len(str(seq)))})
        sizes.add(len(line))
        writer.write(line, seq)
    writer.close()
    assert len(sizes) == 1
    sealed = sealed_copy(plain, tmp_path / "sealed", frame_bytes=4 * sizes.pop())
    for seq in range(1, 1002):
        clear_caches()
        assert find_record(sealed, seq) == find_record(plain, seq)


@pytest.fixture()
def frames_counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The frames decompressed whole (not from the cache) by :class:`segment._Sealed`."""
    decompressed: list[int] = []
    original = segment._Sealed.frame

    def frame(self: segment._Sealed, index: int) -> bytes:
        if segment._FRAMES.get((*self.key, index)) is None:
            decompressed.append(index)
        return original(self, index)

    monkeypatch.setattr(segment._Sealed, "frame", frame)
    return decompressed


def test_a_lookup_decompresses_one_frame_and_neighbours_come_from_the_cache(
        tmp_path: Path, frames_counted: list[int]) -> None:
    """A cold find-by-seq decompresses one whole frame (the one holding the line; the
    frames it probes are read only up to their first line), the next seqs in that frame
    decompress nothing, and the cache stays within ``FRAME_CACHE_BYTES``."""
    plain = tmp_path / "plain"
    last = build(plain, [(200, 0)] * 6000, segment_bytes=1 << 20)
    sealed = sealed_copy(plain, tmp_path / "sealed", frame_bytes=64 << 10)
    _first, path = list_segments(sealed)[0]
    assert is_sealed(path)
    clear_caches()
    assert find_record(sealed, 1000)["seq"] == 1000
    assert len(frames_counted) == 1
    for seq in range(1001, 1051):
        assert find_record(sealed, seq)["seq"] == seq
    assert len(frames_counted) <= 2  # 50 neighbours: at most the next frame too
    for seq in range(1, last, 3):
        find_record(sealed, seq)
    assert 0 < segment._FRAMES.weight <= segment.FRAME_CACHE_BYTES
