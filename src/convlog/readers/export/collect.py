"""Reading the records of the exported sessions' fork trees from the log, in one
streaming pass, and the :func:`export` entry point (``convlog export``).

The fold keeps message references, rewinds, the current checkpoints and the crystals,
but not the ``llm.request`` records behind a usage total, overwritten checkpoints,
copies, ``session.start`` records or records it rejected. So an export reads the
records of the session's **tree** (the root it descends from and all that root's
forks) and folds them again on their own (:mod:`convlog.readers.export.build`).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from convlog.core.document import SESSION_KINDS, SessionExport
from convlog.core.fold import State
from convlog.core.record import parse_line
from convlog.readers.export.build import ExportRequest, Tree, build_exports
from convlog.store.clock import Clock
from convlog.store.segment import bytes_from, iter_lines

__all__ = ["Tree", "collect_trees", "export", "export_bytes", "export_header", "export_ids", "plan_trees"]


_HEAD = re.compile(rb'\{"seq":(\d+),')
# The first '"session":' of a record line is its top-level field: the fields before it
# (seq, ts, kind, source, topic) cannot hold an unescaped quote.
_SESSION = re.compile(rb'"session":("[^"\\]*(?:\\.[^"\\]*)*"|null)', re.S)


def _root(state: State, sid: str) -> str:
    seen = {sid}
    session = state.sessions[sid]
    while session.parent is not None and session.parent in state.sessions and session.parent not in seen:
        seen.add(session.parent)
        session = state.sessions[session.parent]
    return session.id


def plan_trees(state: State, wanted: Sequence[str]) -> list[Tree]:
    """Group the sessions to export by fork tree. Pure.

    Args:
        state: the folded state (the export's cut).
        wanted: session ids present in ``state``.

    Returns:
        the trees holding them, in order of their first wanted session.
    """
    children: dict[str, list[str]] = {}
    for sid, session in state.sessions.items():
        if session.parent is not None:
            children.setdefault(session.parent, []).append(sid)
    last_error: dict[str, int] = {}
    for error in state.errors:
        if error.session is not None:
            last_error[error.session] = max(error.seq, last_error.get(error.session, 0))
    trees: dict[str, Tree] = {}
    for sid in wanted:
        root = _root(state, sid)
        tree = trees.get(root)
        if tree is None:
            members: set[str] = set()
            todo = [root]
            while todo:
                current = todo.pop()
                if current not in members:
                    members.add(current)
                    todo.extend(children.get(current, ()))
            done = max(max(state.sessions[m].last_seq, last_error.get(m, 0)) for m in members)
            tree = trees[root] = Tree(root, frozenset(members), done, [])
        if sid not in tree.wanted:
            tree.wanted.append(sid)
    return list(trees.values())


def collect_trees(
    directory: Path,
    state: State,
    trees: Sequence[Tree],
    progress: Callable[[int], None] | None = None,
) -> Iterator[Tree]:
    """Read the records of the given trees from the log in one pass, yielding each tree
    as soon as all its records have been read (so memory holds only unfinished trees).

    A line is parsed only when its ``session`` field (compared as the JSON bytes the
    writer produced) names a member; records after ``state.last_seq`` (the export's
    cut, e.g. ``--as-of``) are ignored. Invalid lines are skipped (``convlog verify``
    reports them).

    Args:
        directory: the log directory.
        state: the folded state the trees were planned from.
        trees: from :func:`plan_trees`; their ``records`` are filled.
        progress: called with bytes read.

    Yields:
        the trees, in order of ``done_seq``.
    """
    cut = state.last_seq
    owner: dict[bytes, Tree] = {}
    for tree in trees:
        for sid in tree.members:
            owner[orjson.dumps(sid)] = tree
    heap = [(tree.done_seq, i) for i, tree in enumerate(trees)]
    heapq.heapify(heap)
    if not heap:
        return
    member_ids = {sid for tree in trees for sid in tree.members}
    starts = [state.sessions[sid].first_seq for sid in member_ids]
    starts += [error.seq for error in state.errors if error.session in member_ids]
    for line in iter_lines(directory, min(starts), progress):
        record: dict[str, Any] | None = None
        head = _HEAD.match(line)
        if head is not None:
            seq = int(head.group(1))
            found = _SESSION.search(line, head.end())
            tree = owner.get(found.group(1)) if found is not None else None
        else:  # not laid out as convlog writes lines: parse it to know
            seq, record = _parse(line)
            if record is None:
                continue
            sid = record.get("session")
            tree = owner.get(orjson.dumps(sid)) if isinstance(sid, str) else None
        if seq > cut:
            break
        if tree is not None:
            if record is None:
                _, record = _parse(line)
            if record is not None and record["kind"] in SESSION_KINDS and record.get("session") in tree.members:
                tree.records.append(record)
        while heap and heap[0][0] <= seq:
            yield trees[heapq.heappop(heap)[1]]
        if not heap:
            return
    while heap:
        yield trees[heapq.heappop(heap)[1]]


def _parse(line: bytes) -> tuple[int, dict[str, Any] | None]:
    try:
        record = parse_line(line)
    except ValueError:
        return 0, None
    return record["seq"], record


def export(
    directory: Path,
    state: State,
    sessions: Sequence[str],
    request: ExportRequest,
    progress: Callable[[int], None] | None = None,
) -> Iterator[SessionExport]:
    """Read and build the exports of ``sessions`` from a log.

    Args:
        directory: the log directory.
        state: its folded state at the export's cut (``replay.load(...).state``).
        sessions: session ids present in ``state`` (resolve prefixes first with
            :meth:`convlog.store.replay.Replay.resolve`).
        request: what to build.
        progress: called with bytes read from the log.

    Yields:
        the exports, each as soon as its tree has been read (order of the trees' last
        records; several sessions of one tree come out together, in request order).

    Raises:
        OSError: when the log cannot be read.
    """
    trees = plan_trees(state, sessions)
    for tree in collect_trees(directory, state, trees, progress):
        yield from build_exports(tree, request)
        tree.records = []


def export_bytes(directory: Path, state: State, sessions: Sequence[str]) -> int:
    """Bytes of log :func:`export` reads for ``sessions`` (a progress bar's total)."""
    first = min((state.sessions[m].first_seq for tree in plan_trees(state, sessions) for m in tree.members),
                default=1)
    return bytes_from(directory, first)


def export_ids(state: State, with_history: bool) -> list[str]:
    """The sessions ``--all`` exports: every live session, or, with history, the root of
    every fork tree holding a live session (its forks come nested). Ordered by first seq."""
    live = state.session_list()
    if not with_history:
        return [s.id for s in live]
    roots: dict[str, int] = {}
    for session in live:
        root = _root(state, session.id)
        roots.setdefault(root, state.sessions[root].first_seq)
    return sorted(roots, key=lambda sid: roots[sid])


def export_header(directory: Path, state: State, with_history: bool) -> dict[str, Any]:
    """The JSON document's header fields: log, cut seq, history flag, export time."""
    return {
        "log": str(directory),
        "as_of_seq": state.last_seq,
        "with_history": with_history,
        "exported_at": Clock().now(),
    }
