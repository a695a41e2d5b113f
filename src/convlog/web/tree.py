"""A session's fork tree drawn along a time axis: the model (:func:`session_tree`) and
its SVG (:func:`render_svg`), for the session page of ``convlog serve`` (issue 15).

What the tree shows. A session's **family** is the root session it descends from and
every fork below that root. Each member gets one lane (a row); along it, in seq order:

* ``start``: the session's first record (for a fork, its ``session.fork`` record);
* ``messages``: a run of messages appended to the session between two other nodes,
  drawn as one node (so a session of 10k messages is a handful of nodes);
* ``fork``: on the parent's lane, where a child was forked off (the child's ``start``
  sits at the same x);
* ``rewind``, ``checkpoint`` (session checkpoints, ``session.checkpoint``, overwritten
  ones included), ``crystal``;
* ``end``: the session as it is at the cut the state was folded to (or ``deleted``).

Edges: ``continues`` (consecutive nodes of one lane), ``forks`` (a parent's ``fork``
node to the child's ``start``) and ``rewinds-to`` (a ``rewind`` back to the node whose
state it restored: the checkpoint it named, or the node where the kept prefix ended,
the lane's ``start`` when it kept nothing of the session's own messages).

Where the facts come from. The fold decides everything: which records applied (not in
``state.errors``), which messages were appended rather than counted as copies (the
session's visible refs plus every rewind's dropped seqs), the seqs of rewinds,
crystals and forks and their counts. The fold keeps no receive time for them and
neither the checkpoint name a rewind restored nor overwritten checkpoints, so those
are read from the family's records (:func:`family_records`: one pass over the log
through :func:`convlog.readers.export.collect_trees`, the reader ``convlog export``
uses). The records are not folded again: the model only follows the visible count
along each lane (append +1, rewind to its count) to find where a rewind went back to.

Axis. x grows with seq; each distinct point (seq) is a column, at least
:data:`MIN_GAP_PX` after the previous one; when the family's receive times differ the
rest of :data:`TIME_PX` is shared out in proportion to the time between columns
(``Tree.axis == "time"``); when times are missing or all equal (an import written in
one go) the columns are evenly spaced in seq order (``Tree.axis == "seq"``). Records'
``ts`` is monotonic in seq, so x is monotonic in time along every lane.

Use from a page::

    replay = load(directory, upto_seq=as_of)            # convlog.store.replay.load
    tree = tree_of(replay, replay.resolve(session_id))  # or session_tree(state, records, sid)
    svg = render_svg(tree, link=default_link)           # str, ready to put in the page
"""

from __future__ import annotations

import html
import re
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import quote

from convlog.core.fold import State
from convlog.readers.export import collect_trees, plan_trees

__all__ = [
    "EDGE_KINDS",
    "NODE_KINDS",
    "TREE_CSS",
    "Edge",
    "Node",
    "Tick",
    "Tree",
    "default_link",
    "family_records",
    "render_svg",
    "session_tree",
    "tree_of",
]

#: Node kinds, in the order a page's legend may list them.
NODE_KINDS = ("start", "messages", "fork", "rewind", "checkpoint", "crystal", "end")
#: Edge kinds.
EDGE_KINDS = ("continues", "forks", "rewinds-to")

#: Default cap on drawn nodes (see :func:`session_tree`).
MAX_NODES = 240
#: Layout constants, SVG user units (pixels at 1:1).
MIN_GAP_PX = 28
TIME_PX = 600
LANE_PX = 44
LEFT_PX = 170
RIGHT_PX = 40
TOP_PX = 30
AXIS_PX = 34
NODE_R = 7
#: Tick labels on the time axis, at most, and their least distance apart (user units).
MAX_TICKS = 6
MIN_TICK_PX = 70
#: Characters of a lane or node label drawn (the full text is in the tooltip).
LABEL_CHARS = 22


@dataclass(frozen=True, slots=True)
class Node:
    """One point of the tree.

    Attributes:
        id: ``n<k>``, unique in the tree (stable for the same inputs).
        kind: one of :data:`NODE_KINDS`.
        session: the session (lane) it belongs to.
        seq: its record's seq (``messages``: the span's last message; ``end``: the
            session's last record, or its ``session.delete``).
        first_seq: ``messages``: the span's first message; else ``seq``.
        ts: that record's receive time (RFC 3339 UTC text as in the log), or None.
        label: what it is, for people (untrusted text inside: escape it).
        as_of: the seq to fold the log to for "the session as it was here".
        count: messages visible in the session right after it.
        lane: index into ``Tree.lanes``.
        x, y: position in the SVG, user units (set by :func:`session_tree`).
        messages: ``messages``: how many; else 0.
        short: a few words drawn under the node (``label`` is the tooltip's).
    """

    id: str
    kind: str
    session: str
    seq: int
    first_seq: int
    ts: str | None
    label: str
    as_of: int
    count: int
    lane: int
    x: float = 0.0
    y: float = 0.0
    messages: int = 0
    short: str = ""


@dataclass(frozen=True, slots=True)
class Edge:
    """A line between two nodes: ``source`` and ``target`` are :attr:`Node.id`; ``kind``
    one of :data:`EDGE_KINDS` (``rewinds-to`` points back in time)."""

    source: str
    target: str
    kind: str


@dataclass(frozen=True, slots=True)
class Tick:
    """A label on the time axis at x (user units): a shortened time, or ``seq N``."""

    x: float
    label: str


@dataclass(slots=True)
class Tree:
    """The drawn model of one session's family.

    Attributes:
        session: the session asked for (its lane gets the class ``lane-focus``).
        root: the family's root session.
        lanes: session ids, one per lane, top to bottom (depth-first from the root,
            children in the order they were forked).
        parents: session id -> parent id (None for the root).
        nodes: every drawn node, by lane then seq.
        edges: every drawn edge.
        axis: ``"time"`` or ``"seq"`` (see the module docstring).
        ticks: axis labels.
        width, height: the SVG's size, user units.
        hidden: nodes left out to stay under the cap (0 when all are drawn).
        mismatches: rewinds whose count did not match the lane's (a record the
            family's records lacked); their ``rewinds-to`` edge is left out.
    """

    session: str
    root: str
    lanes: list[str]
    parents: dict[str, str | None]
    nodes: list[Node]
    edges: list[Edge]
    axis: str
    ticks: list[Tick]
    width: int
    height: int
    hidden: int = 0
    mismatches: list[int] = field(default_factory=list)

    def node(self, node_id: str) -> Node:
        """The node with this id (KeyError when none)."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)


# --------------------------------------------------------------------------- reading


def family_records(directory: Path, state: State, session: str) -> list[dict[str, Any]]:
    """Read the records of ``session``'s family (root and all its forks) from the log,
    up to the state's cut, in seq order: one streaming pass through
    :func:`convlog.readers.export.collect_trees` (session kinds only; a line naming
    no member is not parsed).

    Args:
        directory: the log directory (``Replay.directory``).
        state: the folded state (``Replay.state``) at the page's cut.
        session: a session id present in ``state``.

    Returns:
        the parsed records (dicts as in the log).

    Raises:
        KeyError: when ``session`` is not in ``state``. OSError when the log cannot be read.
    """
    trees = plan_trees(state, [session])
    records: list[dict[str, Any]] = []
    for tree in collect_trees(directory, state, trees):
        records.extend(tree.records)
    return records


def tree_of(replay: Any, session: str, max_nodes: int = MAX_NODES) -> Tree:
    """:func:`session_tree` of a :class:`convlog.store.replay.Replay` (its state and
    the family's records read from its directory)."""
    return session_tree(replay.state, family_records(replay.directory, replay.state, session), session,
                        max_nodes=max_nodes)


# --------------------------------------------------------------------------- the model


@dataclass(slots=True)
class _Point:
    """A node before layout: ``key`` orders it along the axis (seq, then 0 for events
    and 1 for an ``end`` drawn after the last event at the same seq)."""

    kind: str
    session: str
    seq: int
    first_seq: int
    label: str
    as_of: int
    count: int
    messages: int = 0
    order: int = 0
    target: tuple[str, int] | None = None  # rewinds-to: (kind of target, its seq)
    id: str = ""
    short: str = ""

    @property
    def key(self) -> tuple[int, int]:
        return (self.seq, self.order)


def _family(state: State, session: str) -> tuple[str, list[str], dict[str, str | None]]:
    """(root, lanes in depth-first order, parent of each member)."""
    seen = {session}
    root = session
    while True:
        parent = state.sessions[root].parent
        if parent is None or parent not in state.sessions or parent in seen:
            break
        seen.add(parent)
        root = parent
    children: dict[str, list[str]] = {}
    for sid, info in state.sessions.items():
        if info.parent is not None and info.parent != sid:
            children.setdefault(info.parent, []).append(sid)
    lanes: list[str] = []
    parents: dict[str, str | None] = {root: None}
    todo = [root]
    while todo:
        sid = todo.pop()
        lanes.append(sid)
        kids = sorted((c for c in children.get(sid, ()) if c not in parents), key=lambda c: state.sessions[c].first_seq)
        for kid in kids:
            parents[kid] = sid
        todo.extend(reversed(kids))
    return root, lanes, parents


def _data(record: Mapping[str, Any] | None) -> Mapping[str, Any]:
    data = record.get("data") if record is not None else None
    return data if isinstance(data, Mapping) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _lane_points(
    state: State, sid: str, by_seq: Mapping[int, Mapping[str, Any]], own_checkpoints: list[Mapping[str, Any]],
    fork_children: list[str], mismatches: list[int],
) -> list[_Point]:
    """The points of one lane, in seq order (see the module docstring)."""
    info = state.sessions[sid]
    start = info.first_seq
    appended = set(info.visible.seqs)
    for rewind in info.rewinds:
        appended.update(rewind.dropped)
    messages = sorted(seq for seq in appended if seq >= start)
    # Events by seq: (seq, kind, payload).
    events: list[tuple[int, str, Any]] = [(r.seq, "rewind", r) for r in info.rewinds]
    events += [(c.seq, "crystal", c) for c in info.crystals]
    events += [(rec["seq"], "checkpoint", rec) for rec in own_checkpoints]
    events += [(state.sessions[c].first_seq, "fork", c) for c in fork_children]
    events.sort(key=lambda e: e[0])

    inherited = -1
    visible: list[int] = [inherited] * (info.fork_at or 0) if info.parent is not None else []
    saved: dict[str, tuple[int, list[int]]] = {}  # checkpoint name -> (its seq, its list)
    title = info.title
    if info.parent is not None:
        branch = f" ({info.branch})" if info.branch else ""
        label = f"fork of {info.parent} at {info.fork_at}{branch}"
    else:
        label = f"start: {title}" if title else "start"
    if messages and messages[0] == start:  # the session began with a message: the start brings it
        visible.append(messages.pop(0))
    points = [_Point("start", sid, start, start, label, start, len(visible),
                     short="fork" if info.parent is not None else "start")]
    span: list[int] = []

    def flush() -> None:
        if span:
            n = len(span)
            points.append(_Point("messages", sid, span[-1], span[0], f"{n} message{'s' if n != 1 else ''}",
                                 span[-1], len(visible), messages=n))
            span.clear()

    i = 0
    for seq, kind, item in events:
        while i < len(messages) and messages[i] < seq:
            span.append(messages[i])
            visible.append(messages[i])
            i += 1
        flush()
        if kind == "rewind":
            record = by_seq.get(seq)
            name = _data(record).get("checkpoint") if record is not None else None
            target: tuple[str, int] | None
            if len(visible) != item.from_count:
                mismatches.append(seq)
            if isinstance(name, str) and name in saved:
                cp_seq, cp_list = saved[name]
                visible = list(cp_list)
                target = ("checkpoint", cp_seq)
                label = f'rewind to checkpoint "{name}" ({item.from_count} → {item.to_count})'
            else:
                visible = visible[: item.to_count]
                last = visible[-1] if visible else inherited
                target = ("start", start) if last in (inherited, start) else ("messages", last)
                label = f"rewind to {item.to_count} ({item.from_count} → {item.to_count})"
            if len(visible) != item.to_count or seq in mismatches:
                if seq not in mismatches:
                    mismatches.append(seq)
                target = None
                visible = visible[: item.to_count] + [inherited] * (item.to_count - len(visible))
            points.append(_Point("rewind", sid, seq, seq, label, seq, len(visible), target=target,
                                 short=f"rewind → {len(visible)}"))
        elif kind == "crystal":
            summary = _data(by_seq.get(seq)).get("summary")
            text = f": {summary}" if isinstance(summary, str) else ""
            points.append(_Point("crystal", sid, seq, seq, f"crystal up to {item.upto}{text}", seq, len(visible),
                                 short=f"crystal ≤ {item.upto}"))
        elif kind == "checkpoint":
            data = _data(item)
            name = data.get("name")
            at = _int(data.get("at"))
            at = len(visible) if at is None or not 0 <= at <= len(visible) else at
            if isinstance(name, str):
                saved[name] = (seq, visible[:at])
            points.append(_Point("checkpoint", sid, seq, seq, f'checkpoint "{name}" at {at}', seq, len(visible),
                                 short=str(name)))
        else:  # fork made from this lane
            child = state.sessions[item]
            branch = f" ({child.branch})" if child.branch else ""
            points.append(_Point("fork", sid, seq, seq, f"fork → {item} at {child.fork_at}{branch}", seq,
                                 len(visible), short=f"→ {child.branch or item}"))
    while i < len(messages):
        span.append(messages[i])
        visible.append(messages[i])
        i += 1
    flush()
    # Split spans where a rewind kept a prefix ending inside them, so the target is a node.
    ends = {p.target[1] for p in points if p.target is not None and p.target[0] == "messages"}
    if ends:
        points = _split_spans(points, ends, messages)
    if info.deleted_seq is not None:
        end_seq, label = info.deleted_seq, f"deleted ({len(visible)} visible)"
        end_seq = max(end_seq, points[-1].seq)
    else:
        end_seq, label = max(info.last_seq, points[-1].seq), f"now: {len(visible)} visible"
    points.append(_Point("end", sid, end_seq, end_seq, label, state.last_seq, len(visible), order=1,
                         short="deleted" if info.deleted_seq is not None else f"{len(visible)} visible"))
    return points


def _split_spans(points: list[_Point], ends: set[int], messages: list[int]) -> list[_Point]:
    out: list[_Point] = []
    for point in points:
        if point.kind != "messages":
            out.append(point)
            continue
        lo = bisect_right(messages, point.first_seq) - 1
        hi = bisect_right(messages, point.seq)
        run = messages[lo:hi]
        count0 = point.count - len(run)
        begin = 0
        for j, seq in enumerate(run):
            if seq in ends or j == len(run) - 1:
                part = run[begin : j + 1]
                n = len(part)
                out.append(replace(point, seq=part[-1], first_seq=part[0], as_of=part[-1], messages=n,
                                   count=count0 + j + 1, label=f"{n} message{'s' if n != 1 else ''}"))
                begin = j + 1
    return out


def _thin(lanes: dict[str, list[_Point]], max_nodes: int) -> int:
    """Leave out nodes until at most ``max_nodes`` remain: first ``messages`` spans that
    no rewind goes back to, then, evenly along each lane, checkpoints, crystals and
    rewinds; ``start``, ``end`` and ``fork`` nodes always stay. Returns how many went."""
    total = sum(len(points) for points in lanes.values())
    if total <= max_nodes:
        return 0
    targets = {(sid, p.target) for sid, points in lanes.items() for p in points if p.target is not None}
    hidden = 0
    for sid, points in lanes.items():
        keep = [p for p in points if p.kind != "messages" or (sid, ("messages", p.seq)) in targets]
        hidden += len(points) - len(keep)
        lanes[sid] = keep
    total -= hidden
    if total <= max_nodes:
        return hidden
    fixed = sum(1 for points in lanes.values() for p in points if p.kind in ("start", "end", "fork"))
    room = max(max_nodes - fixed, 0)
    optional = total - fixed
    for sid, points in lanes.items():
        extras = [i for i, p in enumerate(points) if p.kind not in ("start", "end", "fork")]
        if not extras:
            continue
        share = len(extras) * room // optional if optional else 0
        chosen = {extras[round(k * (len(extras) - 1) / (share - 1))] for k in range(share)} if share > 1 else (
            {extras[-1]} if share == 1 else set())
        keep = [p for i, p in enumerate(points) if i not in extras or i in chosen]
        hidden += len(points) - len(keep)
        lanes[sid] = keep
    return hidden


def session_tree(
    state: State, records: Iterable[Mapping[str, Any]], session: str, *, max_nodes: int = MAX_NODES
) -> Tree:
    """Build the drawn tree of ``session``'s family. Pure.

    Args:
        state: the fold at the page's cut (``Replay.state``); it decides what applied.
        records: the family's records up to that cut (:func:`family_records`; any
            superset works: records of other sessions, after the cut or refused by the
            fold are ignored). Used for receive times, checkpoint names and the
            checkpoint a rewind restored; a missing record leaves a time unknown.
        session: a session id in ``state`` (resolve prefixes first).
        max_nodes: at most this many nodes are drawn (``start``, ``end`` and ``fork``
            nodes are always drawn, so a family with many forks may exceed it);
            ``Tree.hidden`` says how many were left out.

    Returns:
        the :class:`Tree`, laid out (nodes carry x, y in user units).

    Raises:
        KeyError: when ``session`` is not in ``state``.
    """
    if session not in state.sessions:
        raise KeyError(session)
    root, order, parents = _family(state, session)
    members = set(order)
    refused = {error.seq for error in state.errors}
    by_seq: dict[int, Mapping[str, Any]] = {}
    checkpoints: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        seq = record.get("seq")
        sid = record.get("session")
        if not isinstance(seq, int) or seq > state.last_seq or seq in refused or sid not in members:
            continue
        by_seq[seq] = record
        if record.get("kind") == "session.checkpoint":
            meta = record.get("meta")
            if not (isinstance(meta, Mapping) and meta.get("purged") is True):
                checkpoints.setdefault(sid, []).append(record)  # type: ignore[arg-type]
    children: dict[str, list[str]] = {sid: [] for sid in order}
    for sid in order:
        parent = parents[sid]
        if parent is not None:
            children[parent].append(sid)
    mismatches: list[int] = []
    lanes = {sid: _lane_points(state, sid, by_seq, sorted(checkpoints.get(sid, ()), key=lambda r: r["seq"]),
                               children[sid], mismatches)
             for sid in order}
    hidden = _thin(lanes, max_nodes)
    # Ids, then edges.
    k = 0
    for points in lanes.values():
        for point in points:
            point.id = f"n{k}"
            k += 1
    edges: list[Edge] = []
    starts = {sid: points[0] for sid, points in lanes.items()}
    for sid, points in lanes.items():
        edges += [Edge(a.id, b.id, "continues") for a, b in pairwise(points)]
        index = {(p.kind, p.seq): p for p in points}
        for point in points:
            if point.kind == "fork":
                for child in children[sid]:
                    if state.sessions[child].first_seq == point.seq:
                        edges.append(Edge(point.id, starts[child].id, "forks"))
            elif point.target is not None:
                target = index.get(point.target)
                if target is not None:
                    edges.append(Edge(point.id, target.id, "rewinds-to"))
    return _layout(session, root, order, parents, lanes, edges, by_seq, hidden, mismatches)


def _seconds(ts: str | None) -> float | None:
    if ts is None:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _short(ts: str, same_day: bool) -> str:
    """``2026-12-05T22:08:36.123456Z`` -> ``22:08:36`` (same day) or ``12-05 22:08``."""
    match = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)", ts)
    if match is None:
        return ts[:16]
    _, mo, d, h, mi, s = match.groups()
    return f"{h}:{mi}:{s}" if same_day else f"{mo}-{d} {h}:{mi}"


def _layout(
    session: str, root: str, order: list[str], parents: dict[str, str | None], lanes: dict[str, list[_Point]],
    edges: list[Edge], by_seq: Mapping[int, Mapping[str, Any]], hidden: int, mismatches: list[int],
) -> Tree:
    keys = sorted({p.key for points in lanes.values() for p in points})
    ts_of: dict[tuple[int, int], str | None] = {}
    for points in lanes.values():
        for p in points:
            record = by_seq.get(p.seq)
            ts = record.get("ts") if record is not None else None
            ts_of[p.key] = ts if isinstance(ts, str) else ts_of.get(p.key)
    times = [_seconds(ts_of[key]) for key in keys]
    known = [t for t in times if t is not None]
    span = (max(known) - min(known)) if known else 0.0
    axis = "time" if span > 0 and len(known) == len(times) else "seq"
    xs: dict[tuple[int, int], float] = {}
    x = float(LEFT_PX)
    for i, key in enumerate(keys):
        if i:
            x += MIN_GAP_PX
            if axis == "time":
                x += TIME_PX * max(times[i] - times[i - 1], 0.0) / span  # type: ignore[operator]
        xs[key] = round(x, 1)
    width = int(x) + RIGHT_PX
    height = TOP_PX + LANE_PX * len(order) + AXIS_PX
    lane_of = {sid: i for i, sid in enumerate(order)}
    nodes = []
    for sid, points in lanes.items():
        y = float(TOP_PX + LANE_PX * lane_of[sid] + LANE_PX // 2)
        for p in points:
            nodes.append(Node(p.id, p.kind, sid, p.seq, p.first_seq, ts_of.get(p.key), p.label, p.as_of, p.count,
                              lane_of[sid], xs[p.key], y, p.messages, p.short or p.kind))
    ticks: list[Tick] = []
    if keys:
        step = max(1, (len(keys) + MAX_TICKS - 1) // MAX_TICKS)
        chosen = []
        for key in keys[::step]:
            if not chosen or xs[key] - xs[chosen[-1]] >= MIN_TICK_PX:
                chosen.append(key)
        if axis == "time":
            days = {str(ts_of[key])[:10] for key in keys}
            ticks = [Tick(xs[key], _short(str(ts_of[key]), len(days) == 1)) for key in chosen]
        else:
            ticks = [Tick(xs[key], f"seq {key[0]}") for key in chosen]
    return Tree(session, root, order, parents, nodes, edges, axis, ticks, width, height, hidden, mismatches)


# --------------------------------------------------------------------------- the SVG

#: The stylesheet for the classes :func:`render_svg` writes: ``static/tree.css``, which
#: the session page links (the SVG carries no style of its own: the
#: Content-Security-Policy forbids inline styles). One source, read here.
TREE_CSS = (Path(__file__).resolve().parent / "static" / "tree.css").read_text(encoding="utf-8")

# XML 1.0 Char: a character outside it cannot appear in a document, even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: Any) -> str:
    """Untrusted text as XML character data or a double-quoted attribute value."""
    return html.escape(_NOT_XML.sub("\ufffd", str(value)), quote=True)


def _clip(text: str, limit: int = LABEL_CHARS) -> str:
    """At most ``limit`` characters: the head and the tail around an ellipsis (the tail
    tells forks apart: ``parent/fork-2``)."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 3
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


def default_link(node: Node) -> str:
    """``/sessions/<id, percent-encoded>?as_of=<seq>``: the session page at the node."""
    return f"/sessions/{quote(node.session, safe='')}?as_of={node.as_of}"


def _tooltip(node: Node) -> str:
    when = node.ts or "time unknown"
    seqs = f"seq {node.first_seq}–{node.seq}" if node.first_seq != node.seq else f"seq {node.seq}"
    return f"{node.kind} · {node.session} · {seqs} · {when}\n{node.label}\n{node.count} visible after it"


def _kind_class(kind: str) -> str:
    return kind.replace(".", "-")


def render_svg(tree: Tree, link: Callable[[Node], str] = default_link, selected: Collection[str] = ()) -> str:
    """Draw a tree as one self-contained ``<svg>`` element (no ``style`` attribute, no
    script: every element carries classes for the page's CSS to style).

    Structure (classes): ``svg.convlog-tree`` > ``g.lanes`` (``line.lane`` and
    ``text.lane-label`` per lane, ``lane-focus`` on the session asked for), ``g.edges``
    (``path.edge.edge-<kind>`` with ``data-from``, ``data-to``, ``data-kind``),
    ``g.nodes`` (``a.node-link[href]`` > ``title`` + a shape ``.node.node-<kind>``
    with ``data-kind``, ``data-seq``, ``data-session``, ``data-as-of``, ``data-node``,
    and a ``text.node-label`` for non-message nodes), ``g.axis`` (``line.axis-line``,
    ``text.tick``). Every text and attribute value is escaped; characters XML cannot
    hold become U+FFFD.

    Args:
        tree: from :func:`session_tree`.
        link: the URL of a node (:func:`default_link` by default); the result is
            escaped as an attribute value, so it must already be a URL (percent-encode
            what it carries).
        selected: ids of nodes to mark as the one shown (their shape gets the class
            ``node-selected``, their link ``aria-current="true"``).

    Returns:
        the SVG text (UTF-8 str); its size grows with lanes and drawn nodes, not with
        messages.
    """
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="convlog-tree" width="{tree.width}" '
        f'height="{tree.height}" viewBox="0 0 {tree.width} {tree.height}" role="img" '
        f'data-session="{_text(tree.session)}" data-axis="{tree.axis}" data-hidden="{tree.hidden}">',
        f"<title>{_text(f'fork tree of {tree.root}')}</title>",
        '<g class="lanes">',
    ]
    by_id = {node.id: node for node in tree.nodes}
    right = tree.width - RIGHT_PX // 2
    for i, sid in enumerate(tree.lanes):
        y = TOP_PX + LANE_PX * i + LANE_PX // 2
        focus = " lane-focus" if sid == tree.session else ""
        out.append(f'<line class="lane{focus}" data-session="{_text(sid)}" x1="{LEFT_PX - 10}" y1="{y}" '
                   f'x2="{right}" y2="{y}"/>')
        out.append(f'<text class="lane-label{focus}" x="8" y="{y + 4}"><title>{_text(sid)}</title>'
                   f"{_text(_clip(sid))}</text>")
    out.append("</g>")
    out.append('<g class="edges">')
    for edge in tree.edges:
        a, b = by_id[edge.source], by_id[edge.target]
        if edge.kind == "continues" or (edge.kind == "forks" and a.y == b.y):
            d = f"M{a.x} {a.y}L{b.x} {b.y}"
        elif edge.kind == "forks":
            mid = (a.y + b.y) / 2
            d = f"M{a.x} {a.y}C{a.x} {mid} {b.x} {mid} {b.x} {b.y}" if a.x == b.x else (
                f"M{a.x} {a.y}C{a.x} {b.y} {a.x} {b.y} {b.x} {b.y}")
        else:  # rewinds-to: an arc above the lane, back in time
            lift = min(LANE_PX * 0.45, 8 + abs(a.x - b.x) / 6)
            d = f"M{a.x} {a.y}C{a.x} {a.y - lift} {b.x} {b.y - lift} {b.x} {b.y}"
        out.append(f'<path class="edge edge-{edge.kind}" data-from="{edge.source}" data-to="{edge.target}" '
                   f'data-kind="{edge.kind}" d="{d}"/>')
    out.append("</g>")
    out.append('<g class="nodes">')
    parity: dict[int, int] = {}  # labels of one lane alternate between two rows
    for node in tree.nodes:
        chosen = node.id in selected
        mark = " node-selected" if chosen else ""
        attrs = (f'class="node node-{_kind_class(node.kind)}{mark}" data-node="{node.id}" data-kind="{node.kind}" '
                 f'data-seq="{node.seq}" data-first-seq="{node.first_seq}" data-session="{_text(node.session)}" '
                 f'data-as-of="{node.as_of}" data-count="{node.count}"')
        if node.kind == "messages":
            shape = (f'<rect {attrs} x="{node.x - NODE_R - 3}" y="{node.y - NODE_R + 1}" '
                     f'width="{2 * NODE_R + 6}" height="{2 * NODE_R - 2}" rx="3"/>')
            label = f'<text class="node-count" x="{node.x}" y="{node.y + 3.5}">{node.messages}</text>'
        else:
            shape = f'<circle {attrs} cx="{node.x}" cy="{node.y}" r="{NODE_R}"/>'
            below = NODE_R + (11 if parity.get(node.lane, 0) % 2 == 0 else 21)
            parity[node.lane] = parity.get(node.lane, 0) + 1
            label = (f'<text class="node-label" x="{node.x}" y="{node.y + below}">'
                     f"{_text(_clip(node.short, 14))}</text>")
        current = ' aria-current="true"' if chosen else ""
        out.append(f'<a class="node-link" href="{_text(link(node))}"{current}><title>{_text(_tooltip(node))}</title>'
                   f"{shape}{label}</a>")
    out.append("</g>")
    axis_y = TOP_PX + LANE_PX * len(tree.lanes) + 8
    out.append(f'<g class="axis" data-axis="{tree.axis}">')
    out.append(f'<line class="axis-line" x1="{LEFT_PX - 10}" y1="{axis_y}" x2="{right}" y2="{axis_y}"/>')
    for tick in tree.ticks:
        out.append(f'<line class="tick-mark" x1="{tick.x}" y1="{axis_y}" x2="{tick.x}" y2="{axis_y + 4}"/>')
        out.append(f'<text class="tick" x="{tick.x}" y="{axis_y + 16}">{_text(tick.label)}</text>')
    out.append("</g></svg>")
    return "".join(out)
