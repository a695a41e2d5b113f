"""The web sources' fold cache on a real log written by the segment writer: a slow
whole-log fold is answered stale while it is made again in the background, and the new
one answers once made; a fast one is made again at once."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from convlog.core.ingest import Ingest
from convlog.store.segment import ensure_layout
from convlog.store.writer import SegmentWriter
from convlog.web.sources import ReplayCache


def write_messages(writer: SegmentWriter, first: int, count: int) -> None:
    ingest = Ingest()
    lines = []
    for seq in range(first, first + count):
        event = {"type": "message", "session_id": f"s{seq % 7}", "message_id": f"m{seq}", "sender": "a",
                 "content": f"message {seq}"}
        lines.append(ingest.line([b"t", orjson.dumps(event)], seq, f"2026-12-06T08:00:{seq % 60:02d}.000000Z", "sub"))
    writer.write(b"".join(lines), first + count - 1)


def test_a_slow_fold_is_answered_stale_and_made_again_in_the_background(tmp_path: Path) -> None:
    ensure_layout(tmp_path)
    writer = SegmentWriter(tmp_path, 1, fsync="never")
    write_messages(writer, 1, 50)
    fast, slow = ReplayCache(tmp_path), ReplayCache(tmp_path)
    slow.SLOW_FOLD_S = 0.0  # every fold counts as slow: the background path
    assert fast.get().state.last_seq == slow.get().state.last_seq == 50
    write_messages(writer, 51, 10)
    assert fast.get().state.last_seq == 60  # folded again at once
    assert slow.get().state.last_seq == 50  # the last fold, while the next is made
    deadline = time.monotonic() + 10
    while slow.get().state.last_seq != 60:
        assert time.monotonic() < deadline, "the background fold never answered"
        time.sleep(0.01)
    assert slow.get(upto_seq=55).state.last_seq == 55  # an as-of view is folded at once
    writer.close()


def test_a_long_session_page_shows_a_window_of_its_messages() -> None:
    """The page's window (``?from=``): the newest 500 by default, any 500 from a
    message, and the links' starts before and after."""
    from convlog.web.app import MESSAGES_PER_PAGE, message_window

    assert MESSAGES_PER_PAGE == 500
    newest = message_window(10_000)
    assert (newest.start, newest.end, newest.earlier, newest.later) == (9_501, 10_000, 9_001, None)
    first = message_window(10_000, 1)
    assert (first.start, first.end, first.earlier, first.later) == (1, 500, None, 501)
    middle = message_window(10_000, 700)
    assert (middle.start, middle.end, middle.earlier, middle.later) == (700, 1_199, 200, 1_200)
    assert message_window(10_000, 10_001) == newest  # out of range: the newest
    small = message_window(12)
    assert (small.start, small.end, small.earlier, small.later) == (1, 12, None, None)
    empty = message_window(0)
    assert (empty.start, empty.end, empty.total) == (1, 0, 0)


def test_a_served_long_session_pages_its_messages(tmp_path: Path) -> None:
    """A real ``convlog serve`` on a session of 1,200 messages: the page holds the
    newest 500 with links to the others, ``?from=1`` the first 500, a bad ``from`` is a
    400; the API still gives all 1,200."""
    import pytest

    pytest.register_assert_rewrite("served")
    from served import serve

    log = tmp_path / "log"
    ensure_layout(log)
    writer = SegmentWriter(log, 1, fsync="never")
    ingest = Ingest()
    lines = [ingest.line([b"long", orjson.dumps({"type": "message", "session_id": "long", "message_id": f"m{n}",
                                                 "sender": "a", "content": f"words number {n}"})],
                         n, f"2026-12-06T08:{n // 60 % 60:02d}:{n % 60:02d}.000000Z", "sub") for n in range(1, 1201)]
    writer.write(b"".join(lines), 1200)
    writer.close()
    server = serve(log, tmp_path / "serve.err")
    try:
        with server.client() as client:
            page = client.get("/sessions/long").text
            assert page.count('class="message ') == 500
            assert "messages 701–1,200 of 1,200" in page and "words number 1200" in page
            assert "words number 700<" not in page and "?from=1" in page and "?from=201" in page
            first = client.get("/sessions/long", params={"from": "1"}).text
            assert first.count('class="message ') == 500 and "words number 1<" in first and "?from=501" in first
            assert client.get("/sessions/long", params={"from": "x"}).status_code == 400
            assert len(client.get("/api/sessions/long").json()["messages"]) == 1200
    finally:
        assert server.stop() == 0


def test_a_dropped_fold_is_freed_without_the_cyclic_collector(tmp_path: Path) -> None:
    """The cache freezes its folds out of the garbage collector (gc.freeze): that is
    only safe while a fold holds no reference cycles, so that a dropped one is freed by
    reference counting alone. A fold of a real log with sessions, a fork and a listing
    made from it leaves nothing for the collector."""
    import gc

    from convlog.web.sources import LogSource, SessionQuery

    ensure_layout(tmp_path)
    writer = SegmentWriter(tmp_path, 1, fsync="never")
    write_messages(writer, 1, 200)
    writer.close()
    warm = LogSource(tmp_path)  # first use imports modules (their classes are cyclic, and kept)
    warm.sessions(SessionQuery())
    warm.session("s1")
    del warm
    gc.collect()
    gc.disable()
    try:
        source = LogSource(tmp_path)
        source.sessions(SessionQuery())
        source.session("s1")
        assert source.folds.get().state.sessions
        del source
        assert gc.collect() == 0  # nothing was left in a cycle for the collector
    finally:
        gc.enable()
