"""Full-text search (convlog.store.search, ``convlog search``, ``convlog reindex``) on real logs:
recorded through a real broker and recorder, written by the real segment writer, and
imported from the real Shearwater recordings."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import ColorSystem, Console
from rich.style import Style

from conftest import Bus, convlog_cmd, records, shearwater_file, wait_for_records
from convlog.cli import log_view
from convlog.cli.commands import main
from convlog.core.ingest import Ingest
from convlog.store.search import MARK_END, MARK_START, Hit, SearchIndex, SearchQueryError
from convlog.store.search_index import BATCH_RECORDS, INDEX_DIR, INDEX_FILE, record_text
from convlog.store.segment import ensure_layout, iter_records, list_segments
from convlog.store.writer import SegmentWriter

TS = "2026-11-21T12:00:00.000000Z"


class LogBuilder:
    """Appends native events to a real log directory with the recorder's own line
    builder (:class:`Ingest`) and writer (:class:`SegmentWriter`), one write per record,
    so segments rotate at record boundaries as the recorder's do."""

    def __init__(self, directory: Path, segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.ingest = Ingest(verify=False)
        self.seq = 0
        ensure_layout(directory)

    def append(self, events: Sequence[dict[str, Any]], ts: Sequence[str] | None = None) -> list[int]:
        """Write ``events`` (one record each); returns their seqs."""
        writer = SegmentWriter(self.directory, next_seq=self.seq + 1, segment_bytes=self.segment_bytes)
        seqs = []
        try:
            for i, event in enumerate(events):
                self.seq += 1
                frames = [str(event.get("session_id", "t")).encode(), orjson.dumps(event)]
                writer.write(self.ingest.line(frames, self.seq, ts[i] if ts else TS, "sub"), self.seq)
                seqs.append(self.seq)
        finally:
            writer.close()
        return seqs


def message(session: str, mid: str, content: str, sender: str = "ann", role: str = "user") -> dict[str, Any]:
    return {"type": "message", "session_id": session, "message_id": mid, "sender": sender, "role": role,
            "content": content}


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def tokens(text: str) -> set[str]:
    """The words of a text as the index's tokenizer sees ASCII text: runs of letters and
    digits, case folded."""
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def scan(directory: Path, token: str) -> list[int]:
    """Linear scan: seqs (newest first) of the records whose text holds ``token``."""
    found = [r["seq"] for r in iter_records(directory) if token in tokens(record_text(r) or "")]
    return sorted(found, reverse=True)


def index_dump(path: Path) -> dict[str, Any]:
    """Everything an index holds, read with plain sqlite3: its records and streams rows,
    every (term, seq, offset) of the inverted index (fts5vocab), and the position."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, fts, 'instance')")
        return {
            "records": conn.execute("SELECT * FROM records ORDER BY seq").fetchall(),
            "streams": conn.execute("SELECT * FROM streams ORDER BY first_seq").fetchall(),
            "terms": conn.execute("SELECT term, doc, offset FROM temp.vocab ORDER BY term, doc, offset").fetchall(),
            "position": conn.execute("SELECT segment, offset, last_seq FROM position").fetchall(),
        }
    finally:
        conn.close()


@pytest.fixture
def chat(tmp_path: Path) -> Path:
    """A small log: two sessions, two speakers, a crystal, distinct receive times."""
    directory = tmp_path / "log"
    builder = LogBuilder(directory)
    events = [
        message("s1", "m1", "The quantum harmonic oscillator has evenly spaced levels."),
        message("s1", "m2", "Quantum tunnelling explains alpha decay.", sender="bot", role="assistant"),
        message("s2", "m3", "Bake the bread at 220 degrees; quantum of heat not required."),
        {"type": "session.crystal", "session_id": "s1", "summary": "A chat about quantum physics.", "upto": 2},
        message("s2", "m4", "Sourdough bread needs a starter.", sender="bot", role="assistant"),
        {"type": "session.start", "session_id": "s3", "title": "quantum title is not message text"},
    ]
    builder.append(events, ts=[f"2026-11-21T12:0{i}:00.000000Z" for i in range(len(events))])
    return directory


# -- API: filters, order, snippets -----------------------------------------------------------


def test_query_newest_first_with_filters(chat: Path) -> None:
    """Hits come newest first; session, speaker (sender or role, any case), kind, since,
    until and limit each narrow them; records without text (session.start) are not indexed."""
    with SearchIndex(chat) as index:
        assert [h.seq for h in index.query("quantum")] == [4, 3, 2, 1]
        assert [h.seq for h in index.query("quantum", session="s1")] == [4, 2, 1]
        assert [h.seq for h in index.query("quantum", speaker="BOT")] == [2]
        assert [h.seq for h in index.query("quantum OR bread", speaker="assistant")] == [5, 2]
        assert [h.seq for h in index.query("quantum", kind="session.crystal")] == [4]
        assert [h.seq for h in index.query("quantum", since="2026-11-21T12:01:00Z")] == [4, 3, 2]
        assert [h.seq for h in index.query("quantum", until="2026-11-21T13:01:00+01:00")] == [2, 1]
        assert [h.seq for h in index.query("quantum", since="2026-11-21T12:01", until="2026-11-21T12:02")] == [3, 2]
        assert [h.seq for h in index.query("quantum", limit=2)] == [4, 3]
        assert [h.seq for h in index.query('"harmonic oscillator"')] == [1]
        assert [h.seq for h in index.query("quant*", session="s2")] == [3]
        assert index.query("title") == []
        hit = index.query("tunnelling")[0]
        assert (hit.seq, hit.ts, hit.session, hit.speaker, hit.kind, hit.source) == (
            2, "2026-11-21T12:01:00.000000Z", "s1", "bot", "message", "sub")


def test_snippet_marks_each_match(chat: Path) -> None:
    """The snippet wraps each matched token (in the original case) in the marker pair;
    as_dict gives the plain snippet and the character ranges of the matches."""
    with SearchIndex(chat) as index:
        hit = index.query("quantum levels", session="s1")[0]
    assert hit.seq == 1
    assert f"{MARK_START}quantum{MARK_END}" in hit.snippet.lower()
    assert f"{MARK_START}levels{MARK_END}" in hit.snippet
    data = hit.as_dict()
    assert MARK_START not in data["snippet"] and MARK_END not in data["snippet"]
    marked = [data["snippet"][start:end].lower() for start, end in data["highlights"]]
    assert marked == ["quantum", "levels"]


def test_rendering_highlights_on_terminal_and_plain_when_piped(chat: Path) -> None:
    """On a terminal the match is drawn in reverse video; ``convlog search`` piped
    prints plain text without markers or escape codes, with session, speaker, time, seq."""
    hit = Hit(seq=7, ts=TS, session="s1", speaker="ann", kind="message",
              snippet=f"before {MARK_START}word{MARK_END} after")
    console = Console(force_terminal=True, color_system="standard", width=200, record=True)
    log_view.print_hits([hit], console=console)
    rendered = console.export_text(styles=True, clear=False)
    # rich's own rendering of the style, whatever escape codes its version uses
    assert Style.parse("bold reverse").render("word", color_system=ColorSystem.STANDARD) in rendered
    assert "s1 · ann · received 2026-11-21 12:00:00 · seq 7" in console.export_text()
    code, out, _ = run("search", "tunnelling", "--dir", str(chat))
    assert code == 0
    assert out.splitlines()[0] == "s1 · bot · received 2026-11-21 12:01:00 · seq 2"
    assert "Quantum tunnelling explains alpha decay." in out
    assert "\x1b" not in out and MARK_START not in out


def test_cli_json_and_crystal_kind(chat: Path) -> None:
    """``--json`` prints one JSON list; filters pass through."""
    code, out, _ = run("search", "quantum", "--dir", str(chat), "--json", "--kind", "session.crystal")
    assert code == 0
    hits = orjson.loads(out)
    assert [(h["seq"], h["kind"], h["session"]) for h in hits] == [(4, "session.crystal", "s1")]
    assert hits[0]["snippet"][slice(*hits[0]["highlights"][0])] == "quantum"
    code, out, err = run("search", "nothingatall", "--dir", str(chat), "--json")
    assert code == 0 and orjson.loads(out) == []
    code, out, err = run("search", "zzzzzz", "--dir", str(chat))
    assert code == 0 and out == "" and "no matches" in err


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ['"unterminated', "rtx-2070", "foo:bar", "AND", "a NEAR("])
def test_fts_syntax_error_is_one_line_exit_1(chat: Path, query: str) -> None:
    """A query FTS5 cannot parse exits 1 with one readable ``convlog:`` line, no traceback."""
    result = subprocess.run(convlog_cmd("search", query, "--dir", str(chat)), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"convlog: search query {query!r} is not valid FTS5 syntax")
    assert result.stdout == ""
    with SearchIndex(chat) as index, pytest.raises(SearchQueryError):
        index.query(query)


def test_misuse_and_missing_log(chat: Path, tmp_path: Path) -> None:
    """A bad --since is a usage error naming the option; no log is one line, exit 1; an
    empty query is refused."""
    code, _, err = run("search", "quantum", "--dir", str(chat), "--since", "the day before")
    assert code == 2 and "--since 'the day before' is not a time" in err
    code, _, err = run("search", "quantum", "--dir", str(tmp_path / "none"))
    assert code == 1 and err.strip() == f"convlog: no event log in {tmp_path / 'none'} " \
        f"(expected {tmp_path / 'none' / 'events'}/*.jsonl)"
    assert not (tmp_path / "none").exists()
    code, _, err = run("search", " ", "--dir", str(chat))
    assert code == 1 and err.strip() == "convlog: empty search query"


def test_index_that_is_not_a_database_is_replaced(chat: Path) -> None:
    """The index is derived data: a file that is not a SQLite database is rebuilt."""
    path = chat / INDEX_DIR / INDEX_FILE
    path.parent.mkdir()
    path.write_bytes(b"this is not sqlite" * 100)
    code, out, _ = run("search", "sourdough", "--dir", str(chat), "--json")
    assert code == 0 and [h["seq"] for h in orjson.loads(out)] == [5]


def test_damaged_index_rebuilt_by_reindex(tmp_path: Path) -> None:
    """An index whose pages were overwritten: ``search`` fails in one line or answers,
    never with a traceback; ``convlog reindex`` replaces the damaged file."""
    directory = tmp_path / "log"
    LogBuilder(directory).append([message(f"s{i % 5}", f"m{i}", f"entry {i} marker{i % 50} filler text")
                                  for i in range(3000)])
    path = directory / INDEX_DIR / INDEX_FILE
    with SearchIndex(directory) as index:
        index.update()
    with path.open("r+b") as fh:
        fh.seek(8 * 4096)
        fh.write(b"\xff" * (path.stat().st_size - 12 * 4096))
    result = subprocess.run(convlog_cmd("search", "marker7", "--dir", str(directory)), capture_output=True,
                            text=True, timeout=60)
    assert "Traceback" not in result.stderr
    assert result.returncode == 0 or (result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
                                      and "convlog reindex" in result.stderr), result.stderr
    code, out, err = run("reindex", "--dir", str(directory))
    assert code == 0, err
    code, out, _ = run("search", "marker7", "--dir", str(directory), "--json", "--limit", "100")
    assert [h["seq"] for h in orjson.loads(out)] == scan(directory, "marker7")


# -- incremental updates, streams, rebuilds ----------------------------------------------------


def test_live_recording_indexed_incrementally_across_rotation(bus: Bus, tmp_path: Path) -> None:
    """Traffic recorded through a real broker and recorder (4 KB segments) is found; after
    more traffic rotates segments, an update reads only the new records."""
    directory = tmp_path / "rec"
    proc = bus.recorder(directory, "--segment-bytes", "4096")
    pub = bus.publisher(proc, heartbeat_s=None)
    try:
        for i in range(40):
            pub.send(b"chat", orjson.dumps(message(f"live{i % 3}", f"a{i}", f"first wave word{i} common text " * 3)))
        wait_for_records(directory, 40)
        with SearchIndex(directory) as index:
            first = index.update()
            before = index.last_seq
            assert first == before == records(directory)[-1]["seq"]
            assert [h.seq for h in index.query("word7")] == scan(directory, "word7")
            segments_before = len(list_segments(directory))
            for i in range(40, 100):
                pub.send(b"chat", orjson.dumps(message(f"live{i % 3}", f"a{i}", f"second wave word{i} text " * 3)))
            found = wait_for_records(directory, 100)
            assert len(list_segments(directory)) > segments_before + 3
            assert index.update() == found[-1]["seq"] - before  # only the records after the position
            assert index.update() == 0
            assert [h.seq for h in index.query("word93")] == scan(directory, "word93")
            assert [h.seq for h in index.query("text", limit=1000)] == scan(directory, "text")
            hits = index.query("wave", session="live1", limit=5)
            by_seq = records_by_seq(directory)
            assert [h.seq for h in hits] == [s for s in scan(directory, "wave") if by_seq[s]["session"] == "live1"][:5]
    finally:
        pub.close(0, heartbeat=False)
        proc.terminate()


def records_by_seq(directory: Path) -> dict[int, dict[str, Any]]:
    return {r["seq"]: r for r in records(directory)}


def test_streams_are_assembled_and_updated(tmp_path: Path) -> None:
    """A streamed message is found by words split across deltas, under its first seq;
    while open its text so far is searchable, and its end (with content) replaces it in
    a later update. A one-shot end and a delta after the end behave like the fold's."""
    directory = tmp_path / "log"
    builder = LogBuilder(directory)
    delta = {"type": "message.delta", "session_id": "s", "message_id": "m", "sender": "bot"}
    first, _ = builder.append([{**delta, "delta": "the answer is par"}, {**delta, "delta": "tial so"}])
    with SearchIndex(directory) as index:
        hits = index.query("partial")
        assert [(h.seq, h.kind, h.speaker) for h in hits] == [(first, "message.delta", "bot")]
        assert f"{MARK_START}partial{MARK_END}" in hits[0].snippet
        builder.append([{**delta, "delta": "mewhat"}, message("s", "x", "unrelated")])
        assert [h.seq for h in index.query("somewhat")] == [first]
        assert index.query("so") == []
        builder.append([
            {"type": "message.end", "session_id": "s", "message_id": "m", "content": "final complete reply"},
            {**delta, "delta": "late delta ignored"},
            {"type": "message.end", "session_id": "s", "message_id": "one", "content": "oneshot reply"},
        ])
        assert [h.seq for h in index.query("final")] == [first]
        assert index.query("partial") == [] and index.query("late") == []
        assert [(h.seq, h.kind) for h in index.query("reply")] == [(7, "message.end"), (first, "message.delta")]
        incremental = index_dump(index.path)
        index.rebuild()
        assert index_dump(index.path) == incremental


def test_reindex_equals_incremental_index(tmp_path: Path) -> None:
    """Indexing a log in many small updates (across segment rotations, with a stream cut
    between updates) leaves exactly the index ``convlog reindex`` builds in one go."""
    directory = tmp_path / "log"
    builder = LogBuilder(directory, segment_bytes=1500)
    builder.append([message("s0", "seed", "seed message")])
    words = ["amber", "basil", "cedar", "dune", "ember", "fjord", "grove"]
    with SearchIndex(directory) as index:
        for round_ in range(8):
            events: list[dict[str, Any]] = [
                message(f"s{i % 3}", f"r{round_}-{i}", " ".join(words[(round_ + i + k) % 7] for k in range(4)),
                        sender=["ann", "bob"][i % 2])
                for i in range(5)
            ]
            events.append({"type": "message.delta", "session_id": "s0", "message_id": "stream",
                           "delta": f"{words[round_ % 7]} "})
            builder.append(events)
            index.update()
        incremental = index_dump(index.path)
    assert len(list_segments(directory)) > 5
    code, out, _ = run("reindex", "--dir", str(directory))
    assert code == 0 and out.startswith(f"indexed {len(incremental['records'])} records with text up to seq ")
    assert index_dump(directory / INDEX_DIR / INDEX_FILE) == incremental
    with SearchIndex(directory) as index:
        for word in words:
            assert [h.seq for h in index.query(word, limit=500)] == scan_with_streams(directory, word)
        calls: list[tuple[int, int]] = []
        index.rebuild(lambda done, total: calls.append((done, total)))
        assert index.update(lambda done, total: calls.append((-1, -1))) == 0  # current: no report
    log_bytes = sum(path.stat().st_size for _, path in list_segments(directory))
    assert calls[-1] == (log_bytes, log_bytes)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def scan_with_streams(directory: Path, token: str) -> list[int]:
    """Linear scan that assembles open streams (deltas joined) under their first seq."""
    found: set[int] = set()
    streams: dict[tuple[Any, Any], tuple[int, str]] = {}
    for r in iter_records(directory):
        if r["kind"] == "message.delta":
            key = (r["session"], r["meta"]["message_id"])
            first, text = streams.get(key, (r["seq"], ""))
            streams[key] = (first, text + (record_text(r) or ""))
        elif token in tokens(record_text(r) or ""):
            found.add(r["seq"])
    found |= {first for first, text in streams.values() if token in tokens(text)}
    return sorted(found, reverse=True)


def _replace_log(directory: Path, builder_events: list[dict[str, Any]], tmp: Path) -> None:
    """Replace the log of ``directory`` (its events) with a fresh one, keeping the index."""
    fresh = tmp / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    LogBuilder(fresh).append(builder_events)
    shutil.rmtree(directory / "events")
    shutil.copytree(fresh / "events", directory / "events")


def test_index_rebuilt_when_log_replaced(tmp_path: Path) -> None:
    """An index ahead of the log (the log was replaced by a shorter one) and an index whose
    last line no longer matches (same length and names, other bytes) are rebuilt."""
    directory = tmp_path / "log"
    LogBuilder(directory).append([message("a", f"m{i}", f"apple number{i}") for i in range(20)])
    with SearchIndex(directory) as index:
        assert len(index.query("apple", limit=100)) == 20
    _replace_log(directory, [message("b", f"m{i}", f"banana number{i}") for i in range(5)], tmp_path)
    with SearchIndex(directory) as index:
        assert index.query("apple") == []
        assert [h.seq for h in index.query("banana")] == [5, 4, 3, 2, 1]
        assert index.last_seq == 5
    _replace_log(directory, [message("b", f"m{i}", f"cherry number{i}") for i in range(5)], tmp_path)
    assert all(len(p.read_bytes()) for _, p in list_segments(directory))
    with SearchIndex(directory) as index:
        assert index.query("banana") == []
        assert [h.seq for h in index.query("cherry")] == [5, 4, 3, 2, 1]
        assert [h.session for h in index.query("number3")] == ["b"]


UPDATER = """
import sys, time
from pathlib import Path
from convlog.store.search import SearchIndex
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
with SearchIndex(Path(sys.argv[1])) as index:
    print(index.update(), [h.seq for h in index.query("tag13", limit=100)])
"""


def test_concurrent_readers_update_without_corruption(tmp_path: Path) -> None:
    """Four processes released together update one fresh index (several batches each):
    every record is read exactly once in total, all answer the same, the index passes
    SQLite's and FTS5's integrity checks and equals one built alone; then three
    ``convlog search`` processes on the grown log agree too."""
    directory = tmp_path / "log"
    builder = LogBuilder(directory)
    count = BATCH_RECORDS * 6
    builder.append(
        [message(f"s{i % 7}", f"m{i}", f"record {i} tag{i % 97} shared words here") for i in range(count)])
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", UPDATER, str(directory), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(1.0)  # let them all start and wait at the barrier
    go.touch()
    results = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0], [err for _, err in results]
    counts = [int(out.split(" ", 1)[0]) for out, _ in results]
    assert sum(counts) == count, counts
    expected = [i + 1 for i in range(count - 1, -1, -1) if i % 97 == 13][:100]
    assert all(out.split(" ", 1)[1].strip() == str(expected) for out, _ in results)
    path = directory / INDEX_DIR / INDEX_FILE
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.execute("INSERT INTO fts(fts) VALUES ('integrity-check')")
    finally:
        conn.close()
    together = index_dump(path)
    assert len(together["records"]) == count
    with SearchIndex(directory) as index:
        index.rebuild()
    assert index_dump(path) == together
    builder.append([message("late", f"n{i}", f"tag13 late {i}") for i in range(BATCH_RECORDS + 10)])
    procs = [subprocess.Popen(convlog_cmd("search", "tag13", "--dir", str(directory), "--json", "--limit", "20"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    answers = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], [err for _, err in answers]
    seqs = [[h["seq"] for h in orjson.loads(out)] for out, _ in answers]
    assert seqs[0] == seqs[1] == seqs[2] == list(range(builder.seq, builder.seq - 20, -1))
    assert len(index_dump(path)["records"]) == builder.seq


# -- real recordings -----------------------------------------------------------------------


def test_shearwater_recording_searchable(tmp_path: Path) -> None:
    """The real Shearwater recording, imported with ``convlog import``: search finds
    exactly what a linear scan finds, names the speaker and session."""
    directory = tmp_path / "sw"
    result = subprocess.run(convlog_cmd("import", str(shearwater_file("current_session.jsonl")), "--dir",
                                        str(directory)), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    code, out, _ = run("search", "nvidia", "--dir", str(directory), "--json", "--limit", "1000")
    assert code == 0
    hits = orjson.loads(out)
    assert [h["seq"] for h in hits] == scan(directory, "nvidia") and hits
    by_seq = records_by_seq(directory)
    for hit in hits:
        record = by_seq[hit["seq"]]
        assert (hit["session"], hit["speaker"], hit["source"]) == (record["session"], record["meta"]["sender"],
                                                                   "import")
        assert "nvidia" in [hit["snippet"][a:b].lower() for a, b in hit["highlights"]]
    with SearchIndex(directory) as index:
        agents = index.query("context", speaker="claude_code", limit=1000)
        assert agents and all(by_seq[h.seq]["meta"]["sender"] == "claude_code" for h in agents)


# -- the law: the index finds exactly what a linear scan finds ---------------------------------

POOL = st.lists(st.text(alphabet="abcdefgh", min_size=2, max_size=4), min_size=2, max_size=6, unique=True)
SEPARATORS = [" ", ", ", "-", ".\n", "/", "  (", "_"]


@st.composite
def logs(draw: st.DrawFn) -> tuple[list[str], list[list[str]], str]:
    """A token pool, messages made of pool tokens (random case and separators) cut into
    chunks (one update each), and a query token (from the pool or not)."""
    pool = draw(POOL)
    texts = []
    for _ in range(draw(st.integers(1, 25))):
        words = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=6))
        parts = []
        for word in words:
            case = draw(st.sampled_from([str.lower, str.upper, str.capitalize]))
            parts.append(case(word) + draw(st.sampled_from(SEPARATORS)))
        texts.append("".join(parts))
    cuts = sorted(draw(st.lists(st.integers(0, len(texts)), max_size=4)))
    chunks = [texts[a:b] for a, b in zip([0, *cuts], [*cuts, len(texts)], strict=True)]
    token = draw(st.one_of(st.sampled_from(pool), st.text(alphabet="abcdefgh", min_size=2, max_size=4)))
    return pool, chunks, token


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs())
def test_index_finds_exactly_the_records_holding_a_token(case: tuple[list[str], list[list[str]], str]) -> None:
    """For any log (several segments, indexed in several updates) and any token, the
    index returns exactly the records whose text holds that token (a linear scan of the
    log), newest first (``_`` and punctuation separate words, as in FTS5's unicode61)."""
    _pool, chunks, token = case
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "log"
        builder = LogBuilder(directory, segment_bytes=700)
        builder.append([message("p", "first", "start")])
        with SearchIndex(directory) as index:
            for number, chunk in enumerate(chunks):
                builder.append([message(f"p{k % 2}", f"c{number}-{k}", text) for k, text in enumerate(chunk)])
                index.update()
            hits = index.query(token, limit=1000)
        assert [h.seq for h in hits] == scan(directory, token)
        for hit in hits:
            assert token in [hit.as_dict()["snippet"][a:b].lower() for a, b in hit.as_dict()["highlights"]]
