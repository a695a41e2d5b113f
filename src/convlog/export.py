"""Export sessions as a Markdown transcript, one JSON document, native JSONL events or
CSV: ``convlog export``.

What is exported (DESIGN.md, "Fold semantics"):

* by default the **visible branch** of each session (what :meth:`convlog.replay.Replay.messages`
  shows), with its title, fork origin, named checkpoints, crystals and usage;
* with ``with_history`` its **history** as well: every message that was ever visible in
  it (rewound ones flagged ``visible: false``), copies, rewinds, checkpoints, crystals,
  usage records, rejected records, and its forks nested where they were made (a child
  session inside its parent's history at the fork record, recursively).

Where it comes from. The fold keeps message references, rewinds (with the seqs they
dropped), the current checkpoints and the crystals, but not the ``llm.request`` records
behind a usage total, overwritten checkpoints, copies, ``session.start`` records or
records it rejected. So an export reads the records of the session's **tree** (the
root it descends from and all that root's forks) from the log in one streaming pass
(:func:`collect_trees`: a byte-level look at each line's ``session`` field decides
whether the line is parsed at all), folds those records again on their own
(:func:`convlog.fold.fold` gives a session the same state from its tree's records as
from the whole log, since a session depends only on its own records and its ancestors'
records before its fork) and builds the export from that fold and those records.

JSONL is native bus events (DESIGN.md, "Event vocabulary on the bus"): JSON objects
with a ``type`` (``session.start``, ``message``, ``message.delta``, ``message.end``,
``session.fork``, ``session.rewind``, ``session.checkpoint``, ``session.crystal``,
``session.delete``, ``llm.request``) and ``session_id``, with message ids, senders,
roles and content preserved, plus ``ts`` (the original receive time) and ``recorded``
(the original seq, topic and source). Publishing the file (``convlog publish FILE
--format native``) through a broker into a recorder gives a log whose fold holds the
same sessions:

* visible branch: ``session.start`` (title), the visible messages in order (a streamed
  message as one ``message.delta`` with its whole text, then ``message.end`` when it was
  complete), the checkpoints and crystals that still describe the visible branch, the
  session's ``llm.request`` records as they were, and ``session.delete`` for a deleted
  session. A fork is exported flat: its inherited messages become its own (the
  ``session.start`` event's ``origin`` names the parent and the fork point), so the
  export stands alone.
* with history: every record of the session and its forks that the fold applied, in
  log order, one event per record, preceded by its ancestors' records up to the fork it
  descends from (the fold needs them to rebuild the fork); the re-folded sessions then
  match in everything, rewinds, checkpoints, copies and forks included (records the
  fold refused are listed in the JSON and Markdown history, not in JSONL).

Limits: a record whose ``data`` is not a JSON object cannot be a bus event and is left
out of JSONL (the recorder never writes one for these kinds); in params-carrying events
(``session.*``, ``llm.request``) a parameter named ``ts`` or ``recorded`` keeps its
value and the provenance field is then left out.

CSV: one row per message, ``session, seq, message_id, ts, speaker, role, kind, text,
visible`` (RFC 4180 quoting by the :mod:`csv` module, UTF-8 without a byte-order mark,
CRLF line ends, header row). Cell text is exported as recorded: a spreadsheet may read
a cell starting with ``=`` as a formula.

File names: :func:`safe_file_name` maps any session id to a distinct, safe name.
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from convlog.fold import Rewind, Session, State, Usage, fold, message_id
from convlog.log import bytes_from, fsync_dir, iter_lines
from convlog.record import Clock, parse_line
from convlog.view import payload_text, stream_text
from convlog.wire import DEFAULT_SESSION_FIELDS, content_text

__all__ = [
    "FORMATS",
    "SESSION_KINDS",
    "Crystal",
    "Entry",
    "ExportRequest",
    "Message",
    "NamedCheckpoint",
    "SessionExport",
    "Tree",
    "build_exports",
    "collect_trees",
    "csv_rows",
    "export",
    "export_bytes",
    "export_header",
    "export_ids",
    "markdown",
    "native_event",
    "out_target",
    "plan_trees",
    "render",
    "replace_file",
    "safe_file_name",
    "session_doc",
    "write_files",
    "write_stream",
]

#: Format name -> file suffix.
FORMATS: dict[str, str] = {"markdown": ".md", "json": ".json", "jsonl": ".jsonl", "csv": ".csv"}

#: Kinds whose records belong to a session's conversation (the fold's session kinds).
SESSION_KINDS: frozenset[str] = frozenset(
    {
        "message",
        "message.delta",
        "message.end",
        "session.start",
        "session.fork",
        "session.rewind",
        "session.checkpoint",
        "session.crystal",
        "session.delete",
        "llm.request",
    }
)
_STREAM_KINDS = frozenset({"message.delta", "message.end"})
_MESSAGE_KINDS = frozenset({"message", *_STREAM_KINDS})

#: The CSV header.
CSV_COLUMNS = ("session", "seq", "message_id", "ts", "speaker", "role", "kind", "text", "visible")

#: Longest file name stem (characters, all ASCII) before it is cut and given a hash;
#: with a suffix the name stays well under the usual 255-byte limit.
MAX_STEM = 200
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")

#: Document format name and version of the JSON export.
JSON_FORMAT = "convlog.export"
JSON_VERSION = 1


# --------------------------------------------------------------------------- file names


def safe_file_name(session_id: str, suffix: str = "") -> str:
    """A file name for a session id: safe on any POSIX file system and distinct for
    distinct ids.

    Every byte of the id's UTF-8 outside ``[A-Za-z0-9._-]`` is percent-encoded as
    ``%XX`` (upper-case hex, as RFC 3986 section 2.1), and so is a leading ``.`` or
    ``-`` (no hidden files, no ``.``/``..``, nothing that reads as an option). The
    empty id becomes ``%`` (which no encoded id can be: an encoded ``%`` is always
    followed by two hex digits). A stem longer than :data:`MAX_STEM` characters is cut
    (not inside an escape) and ends in ``~`` and 20 hex digits of the id's SHA-256
    (``~`` never occurs in an uncut name), so distinct ids keep distinct names (two
    long ids collide only with a 2**-80 chance). Case-insensitive file systems can
    still fold two ids that differ only in case onto one file.

    Args:
        session_id: any string (lone surrogates are encoded as their UTF-8-like bytes).
        suffix: appended as is (``.md``, ...).

    Returns:
        the name: ASCII characters from ``[A-Za-z0-9._%~-]``, at most
        ``MAX_STEM + len(suffix)`` characters.
    """
    raw = session_id.encode("utf-8", "surrogatepass")
    if not raw:
        return "%" + suffix
    parts = []
    for index, byte in enumerate(raw):
        if byte in _SAFE_BYTES and not (index == 0 and byte in b".-"):
            parts.append(chr(byte))
        else:
            parts.append(f"%{byte:02X}")
    stem = "".join(parts)
    if len(stem) > MAX_STEM:
        cut = MAX_STEM - 21
        if stem[cut - 1] == "%":
            cut -= 1
        elif stem[cut - 2] == "%":
            cut -= 2
        stem = stem[:cut] + "~" + sha256(raw).hexdigest()[:20]
    return stem + suffix


# --------------------------------------------------------------------------- export model


@dataclass(frozen=True, slots=True)
class Message:
    """One message of an export.

    Attributes:
        session: the session whose record brought it (the parent's for a message a
            fork inherited).
        index: 1-based position in the exported session's visible branch, None when
            it is not visible (rewound).
        message_id, sender, role: identity (sender/role None when unknown).
        seq, ts: the record that brought it (the first delta of a stream) and its
            receive time (RFC 3339).
        kind: that record's kind (``message``, ``message.delta``, ``message.end``).
        text: the body (:func:`convlog.view.payload_text`; a stream assembled).
        copies: times it was recorded in the exported session (1 = no duplicate).
        streamed, complete: assembled from deltas; False for a stream never ended.
        visible: in the exported session's visible branch.
    """

    session: str | None
    index: int | None
    message_id: str
    sender: str | None
    role: str | None
    seq: int
    ts: str | None
    kind: str
    text: str
    copies: int = 1
    streamed: bool = False
    complete: bool = True
    visible: bool = True

    def as_dict(self) -> dict[str, Any]:
        """The message as a JSON-friendly dict (its fields by name)."""
        return {
            "index": self.index,
            "message_id": self.message_id,
            "sender": self.sender,
            "role": self.role,
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "text": self.text,
            "copies": self.copies,
            "streamed": self.streamed,
            "complete": self.complete,
            "visible": self.visible,
            "session": self.session,
        }


@dataclass(frozen=True, slots=True)
class Crystal:
    """A crystal (summary) of a session.

    Attributes:
        seq, ts: its record and receive time.
        upto: how many visible messages it covers.
        summary: its text (None when the record has no string summary).
        current: its covered messages are still the visible branch's first ``upto``
            (else a rewind set it aside; see :meth:`convlog.fold.State.resume_refs`).
    """

    seq: int
    ts: str | None
    upto: int
    summary: str | None
    current: bool

    def as_dict(self) -> dict[str, Any]:
        """The crystal as a JSON-friendly dict."""
        return {"seq": self.seq, "ts": self.ts, "upto": self.upto, "summary": self.summary, "current": self.current}


@dataclass(frozen=True, slots=True)
class NamedCheckpoint:
    """A session checkpoint (``session.checkpoint``) as the fold holds it now.

    Attributes:
        name: its name.
        seq, ts: its record and receive time.
        at: how many messages it names.
        current: those messages are still the visible branch's first ``at``.
    """

    name: str
    seq: int
    ts: str | None
    at: int
    current: bool

    def as_dict(self) -> dict[str, Any]:
        """The checkpoint as a JSON-friendly dict."""
        return {"name": self.name, "seq": self.seq, "ts": self.ts, "at": self.at, "current": self.current}


@dataclass(slots=True)
class Entry:
    """One thing that happened in a session, in log order (its history).

    Attributes:
        event: ``message`` (an appended message, visible or rewound), ``copy`` (a copy
            of a message already visible), ``start``, ``fork`` (a fork made from this
            session), ``rewind``, ``checkpoint``, ``crystal``, ``delete``,
            ``llm.request`` or ``rejected`` (a record the fold refused).
        seq, ts: the record and its receive time.
        message: for ``message`` and ``copy``.
        fork: for ``fork``: the child session's export (with its own history).
        detail: the event's facts (``from_count``/``to_count``/``checkpoint``/
            ``dropped`` message ids for a rewind, ``name``/``at`` for a checkpoint,
            ``upto``/``summary`` for a crystal, ``at``/``branch`` for a fork,
            ``title`` for a start, the usage fields of a request, ``kind``/``reason``
            for a rejected record).
    """

    event: str
    seq: int
    ts: str | None
    message: Message | None = None
    fork: SessionExport | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The entry as a JSON-friendly dict (a fork's session as a nested session doc)."""
        out: dict[str, Any] = {"event": self.event, "seq": self.seq, "ts": self.ts, **self.detail}
        if self.message is not None:
            out["message"] = self.message.as_dict()
        if self.fork is not None:
            out["session"] = session_doc(self.fork)
        return out


@dataclass(slots=True)
class SessionExport:
    """Everything exported about one session.

    Attributes:
        id, title, parent, fork_at, branch: as folded (see :class:`convlog.fold.Session`).
        deleted: it carries a tombstone.
        first_seq, last_seq, last_ts: its first and last record.
        participants: sorted senders of every message ever visible in it.
        duplicates: extra copies received.
        messages: its visible branch, in order.
        crystals: every crystal, in order.
        checkpoints: its named checkpoints now, by seq.
        usage: its ``llm.request`` totals.
        history: its entries in log order (only when exported with history).
        events: native bus events for JSONL (only when asked for).
    """

    id: str
    title: str | None
    parent: str | None
    fork_at: int | None
    branch: str | None
    deleted: bool
    first_seq: int
    last_seq: int
    last_ts: str | None
    participants: list[str]
    duplicates: int
    messages: list[Message]
    crystals: list[Crystal]
    checkpoints: list[NamedCheckpoint]
    usage: Usage
    history: list[Entry] | None = None
    events: list[dict[str, Any]] | None = None

    def tree(self) -> Iterator[SessionExport]:
        """This session, then its forks (depth first, in history order) when exported
        with history."""
        yield self
        for entry in self.history or ():
            if entry.fork is not None:
                yield from entry.fork.tree()


# --------------------------------------------------------------------------- reading the log


_HEAD = re.compile(rb'\{"seq":(\d+),')
# The first '"session":' of a record line is its top-level field: the fields before it
# (seq, ts, kind, source, topic) cannot hold an unescaped quote.
_SESSION = re.compile(rb'"session":("[^"\\]*(?:\\.[^"\\]*)*"|null)', re.S)


@dataclass(slots=True)
class Tree:
    """A fork tree of sessions and the records read for it.

    Attributes:
        root: the session it descends from (no parent).
        members: every session of the tree.
        done_seq: once the log has been read past this seq every record of the tree
            has been seen (the members' last records and rejected records).
        wanted: the exported sessions in this tree, in request order.
        records: the tree's records of :data:`SESSION_KINDS`, in seq order.
    """

    root: str
    members: frozenset[str]
    done_seq: int
    wanted: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)


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


# --------------------------------------------------------------------------- folding a tree


@dataclass(slots=True)
class _Step:
    """What one record did to its session, seen while folding a tree."""

    record: dict[str, Any]
    effect: str
    detail: dict[str, Any] = field(default_factory=dict)
    child: str | None = None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _meta(record: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = record.get("meta")
    return meta if isinstance(meta, Mapping) else {}


def _data(record: Mapping[str, Any]) -> Mapping[str, Any]:
    data = record.get("data")
    return data if isinstance(data, Mapping) else {}


def _fold_tree(records: Iterable[dict[str, Any]]) -> tuple[State, dict[str, list[_Step]]]:
    """Fold a tree's records into a new state, noting what each record did.

    Returns:
        ``(state, steps)``: steps by session id (a fork step is in the parent's list).
    """
    state = State()
    steps: dict[str, list[_Step]] = {}
    for record in records:
        sid = record.get("session")
        if not isinstance(sid, str):
            continue
        kind = record["kind"]
        before = state.sessions.get(sid)
        count_before = len(before.visible) if before is not None else 0
        errors_before = len(state.errors)
        stream_before = None
        if kind in _STREAM_KINDS:
            stream = state.streams.get((sid, message_id(record)))
            stream_before = (stream is not None, stream is not None and stream.complete)
        deleted_before = before is not None and before.deleted_seq is not None
        fold(state, record)
        after = state.sessions.get(sid)
        if len(state.errors) > errors_before:
            error = state.errors[-1]
            steps.setdefault(sid, []).append(_Step(record, "rejected", {"kind": kind, "reason": error.reason}))
            continue
        if after is None:
            continue
        step = _Step(record, kind)
        if kind in _MESSAGE_KINDS:
            if len(after.visible) > count_before:
                step.effect = "message"
            else:
                # Not appended: a copy, unless it continues (or ends) an open stream.
                opened, complete = stream_before or (False, False)
                if kind != "message" and opened and not (kind == "message.end" and complete):
                    continue
                step.effect = "copy"
        elif kind == "session.fork":
            assert after.parent is not None
            step = _Step(record, "fork", {"at": after.fork_at, "branch": after.branch}, child=sid)
            steps.setdefault(after.parent, []).append(step)
            continue
        elif kind == "session.start":
            step.effect = "start"
            step.detail = {"title": _str_or_none(_data(record).get("title"))}
        elif kind == "session.rewind":
            rewind: Rewind = after.rewinds[-1]
            step.effect = "rewind"
            step.detail = {
                "from_count": rewind.from_count,
                "to_count": rewind.to_count,
                "checkpoint": _str_or_none(_data(record).get("checkpoint")),
                "dropped": list(rewind.dropped),
            }
        elif kind == "session.checkpoint":
            name = _data(record).get("name")
            step.effect = "checkpoint"
            checkpoint = after.checkpoints.get(name) if isinstance(name, str) else None
            step.detail = {"name": name, "at": len(checkpoint.refs) if checkpoint else None}
        elif kind == "session.crystal":
            crystal = after.crystals[-1]
            step.effect = "crystal"
            step.detail = {"upto": crystal.upto, "summary": _str_or_none(_data(record).get("summary"))}
        elif kind == "session.delete":
            step.effect = "delete"
            step.detail = {"repeated": deleted_before}
        elif kind == "llm.request":
            step.effect = "llm.request"
            data = _data(record)
            usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
            step.detail = {
                key: data.get(key, usage.get(key))
                for key in ("model", "input_tokens", "output_tokens", "cost_usd")
                if data.get(key, usage.get(key)) is not None
            }
        steps.setdefault(sid, []).append(step)
    return state, steps


# --------------------------------------------------------------------------- building exports


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to build for each session.

    Attributes:
        with_history: add histories and nest forks.
        events: build native events (for JSONL).
    """

    with_history: bool = False
    events: bool = False


class _TreeView:
    """A folded tree with its records, building exports of its sessions."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.by_seq = {record["seq"]: record for record in records}
        self.state, self.steps = _fold_tree(records)

    def message(self, viewer: Session, seq: int, index: int | None, visible: bool) -> Message:
        """The message brought by record ``seq``, as seen from session ``viewer``."""
        record = self.by_seq.get(seq)
        if record is None:  # cannot happen for a tree read whole; kept readable anyway
            return Message(None, index, f"seq:{seq}", None, None, seq, None, "message",
                           "<record missing from the log>", visible=visible)
        meta = _meta(record)
        mid = message_id(record)
        owner = record.get("session")
        stream = None
        if record["kind"] in _STREAM_KINDS and isinstance(owner, str):
            stream = self.state.streams.get((owner, mid))
        if stream is not None:
            parts = sorted({*stream.delta_seqs, *([stream.end_seq] if stream.end_seq is not None else [])})
            text = stream_text([self.by_seq[s] for s in parts if s in self.by_seq])
            complete = bool(stream.complete)
        else:
            text = payload_text(record)
            complete = True
        return Message(
            session=owner if isinstance(owner, str) else None,
            index=index,
            message_id=mid,
            sender=_str_or_none(meta.get("sender")),
            role=_str_or_none(meta.get("role")),
            seq=seq,
            ts=_str_or_none(record.get("ts")),
            kind=record["kind"],
            text=text,
            copies=1 + viewer.copies.get(mid, 0),
            streamed=stream is not None,
            complete=complete,
            visible=visible,
        )

    def export(self, sid: str, request: ExportRequest) -> SessionExport:
        """Build the export of session ``sid`` of this tree."""
        session = self.state.sessions[sid]
        seqs = session.visible.seqs
        visible_index = {seq: i for i, seq in enumerate(seqs, 1)}
        messages = [self.message(session, seq, i, True) for seq, i in visible_index.items()]
        crystals = []
        for crystal in session.crystals:
            n = crystal.upto
            current = n <= len(seqs) and (n == 0 or seqs[n - 1] == crystal.last_ref_seq)
            record = self.by_seq.get(crystal.seq, {})
            crystals.append(Crystal(crystal.seq, _str_or_none(record.get("ts")), n,
                                    _str_or_none(_data(record).get("summary")), current))
        checkpoints = []
        for name, checkpoint in sorted(session.checkpoints.items(), key=lambda item: item[1].seq):
            at = len(checkpoint.refs)
            current = checkpoint.refs == session.visible[:at]
            record = self.by_seq.get(checkpoint.seq, {})
            checkpoints.append(NamedCheckpoint(name, checkpoint.seq, _str_or_none(record.get("ts")), at, current))
        first = self.by_seq.get(session.first_seq, {})
        export = SessionExport(
            id=sid,
            title=session.title,
            parent=session.parent,
            fork_at=session.fork_at,
            branch=session.branch,
            deleted=session.deleted_seq is not None,
            first_seq=session.first_seq,
            last_seq=session.last_seq,
            last_ts=session.last_ts or _str_or_none(first.get("ts")),
            participants=list(session.participants),
            duplicates=session.duplicates,
            messages=messages,
            crystals=crystals,
            checkpoints=checkpoints,
            usage=session.usage.copy(),
        )
        if request.with_history:
            export.history = self.history(sid, request)
        if request.events:
            export.events = self.history_events(sid) if request.with_history else self.visible_events(export)
        return export

    def history(self, sid: str, request: ExportRequest) -> list[Entry]:
        """The entries of session ``sid``, forks nested with their own histories."""
        session = self.state.sessions[sid]
        visible_index = {seq: i for i, seq in enumerate(session.visible.seqs, 1)}
        entries = []
        for step in self.steps.get(sid, ()):
            record = step.record
            seq, ts = record["seq"], _str_or_none(record.get("ts"))
            if step.effect == "message":
                index = visible_index.get(seq)
                entries.append(Entry("message", seq, ts, self.message(session, seq, index, index is not None)))
            elif step.effect == "copy":
                entries.append(Entry("copy", seq, ts, self.message(session, seq, None, False)))
            elif step.effect == "fork":
                assert step.child is not None
                child = self.export(step.child, ExportRequest(with_history=True, events=False))
                entries.append(Entry("fork", seq, ts, fork=child, detail=dict(step.detail)))
            elif step.effect == "rewind":
                detail = dict(step.detail)
                detail["dropped"] = [message_id(self.by_seq.get(s, {"seq": s})) for s in detail["dropped"]]
                entries.append(Entry("rewind", seq, ts, detail=detail))
            else:
                entries.append(Entry(step.effect, seq, ts, detail=dict(step.detail)))
        return entries

    # ------------------------------------------------------------- native events

    def history_events(self, sid: str) -> list[dict[str, Any]]:
        """Native events re-creating ``sid`` and its forks record by record: the records
        of its ancestors before the fork it descends from, then every record of it and
        its descendants, in log order. Records the fold refused are left out: they
        changed nothing, and in another order (a fork refused because its parent did not
        exist yet) they could be accepted."""
        state = self.state
        limits: dict[str, int] = {}
        for member in state.sessions:
            if _descends(state, member, sid):
                limits[member] = state.last_seq
        child, parent = sid, state.sessions[sid].parent
        while parent is not None and parent in state.sessions and parent not in limits:
            limits[parent] = state.sessions[child].first_seq - 1
            child, parent = parent, state.sessions[parent].parent
        refused = {error.seq for error in state.errors}
        events = []
        for record in self.records:
            owner = record.get("session")
            if isinstance(owner, str) and record["seq"] <= limits.get(owner, 0) and record["seq"] not in refused:
                event = native_event(record)
                if event is not None:
                    events.append(event)
        return events

    def visible_events(self, export: SessionExport) -> list[dict[str, Any]]:
        """Native events re-creating the visible branch of ``export`` on its own."""
        sid = export.id
        start: dict[str, Any] = {"type": "session.start", "session_id": sid}
        if export.title is not None:
            start["title"] = export.title
        first = self.by_seq.get(export.first_seq, {})
        start["ts"] = _str_or_none(first.get("ts"))
        if export.parent is not None:
            start["origin"] = {"parent": export.parent, "fork_at": export.fork_at, "branch": export.branch}
        events = [start]
        for message in export.messages:
            record = self.by_seq.get(message.seq, {"seq": message.seq, "kind": "message"})
            base = _message_base(record, sid, message.message_id)
            if message.streamed:
                events.append({**base, "type": "message.delta", "delta": message.text})
                if message.complete:
                    events.append({"type": "message.end", "session_id": sid, "message_id": message.message_id})
            else:
                events.append({**base, "type": "message", "content": _content(record, message.text)})
        for checkpoint in export.checkpoints:
            if checkpoint.current:
                events.append({"type": "session.checkpoint", "session_id": sid, "name": checkpoint.name,
                               "at": checkpoint.at, "ts": checkpoint.ts})
        for crystal in export.crystals:
            if crystal.current and crystal.summary is not None:
                events.append({"type": "session.crystal", "session_id": sid, "summary": crystal.summary,
                               "upto": crystal.upto, "ts": crystal.ts})
        for record in self.records:
            if record["kind"] == "llm.request" and record.get("session") == sid:
                event = native_event(record)
                if event is not None:
                    events.append(event)
        if export.deleted:
            events.append({"type": "session.delete", "session_id": sid})
        return events


def _descends(state: State, sid: str, ancestor: str) -> bool:
    seen: set[str] = set()
    current: str | None = sid
    while current is not None and current not in seen:
        if current == ancestor:
            return True
        seen.add(current)
        session = state.sessions.get(current)
        current = session.parent if session is not None else None
    return False


def _recorded(record: Mapping[str, Any]) -> dict[str, Any]:
    """Where an event's record came from: its seq, session, topic and source."""
    return {"seq": record.get("seq"), "session": record.get("session"), "topic": record.get("topic"),
            "source": record.get("source")}


def _message_base(record: Mapping[str, Any], sid: str, mid: str) -> dict[str, Any]:
    meta = _meta(record)
    base: dict[str, Any] = {"type": record.get("kind"), "session_id": sid, "message_id": mid}
    for key in ("sender", "role"):
        value = _str_or_none(meta.get(key))
        if value is not None:
            base[key] = value
    base["ts"] = _str_or_none(record.get("ts"))
    base["recorded"] = _recorded(record)
    return base


def _content(record: Mapping[str, Any], text: str) -> Any:
    """The original content value of a message record when it shows as ``text`` (so a
    re-recorded event reads the same), else ``text`` itself."""
    meta = _meta(record)
    data = record.get("data")
    content: Any = None
    if meta.get("encoding") is None and isinstance(data, Mapping):
        shape = meta.get("shape")
        if shape == "shearwater.push" and isinstance(data.get("message"), Mapping):
            data = data["message"]
        if shape == "legacy":
            content = data.get("Message")
            if isinstance(content, str):
                with contextlib.suppress(orjson.JSONDecodeError):
                    content = orjson.loads(content)
        else:
            content = data.get("content")
    if content is None:
        return text
    shown = content_text(content)
    if shown is None:
        shown = orjson.dumps(content).decode("utf-8")
    return content if shown == text else text


def native_event(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The native bus event that re-creates one record of :data:`SESSION_KINDS`. Pure.

    * ``message``: ``{"type", "session_id", "message_id", "sender", "role", "content",
      "ts", "recorded"}`` with the fold's message id (``seq:<seq>`` for a message that
      had none, so the id survives) and the original content value when it shows the
      same text (see :func:`convlog.view.payload_text`), else the text;
    * ``message.delta``: ``delta`` the part's text; ``message.end``: ``content`` only
      when the original had one; both carry ``message_id`` only when the record had one
      (the fold refuses them without);
    * ``session.*`` and ``llm.request``: the record's parameters (its ``data`` object
      without ``type``, the ``convlog`` stamp and the session fields), with ``ts`` and
      ``recorded`` unless the parameters use those names.

    Args:
        record: a parsed record with a string session.

    Returns:
        the event, or None for another kind, a record without a string session, or a
        ``session.*``/``llm.request`` record whose ``data`` is not an object.
    """
    kind = record.get("kind")
    sid = record.get("session")
    if kind not in SESSION_KINDS or not isinstance(sid, str):
        return None
    meta = _meta(record)
    if kind in _MESSAGE_KINDS:
        mid = message_id(record) if kind == "message" else _str_or_none(meta.get("message_id"))
        event = _message_base(record, sid, mid or "")
        if mid is None:
            del event["message_id"]
        if kind == "message":
            event["content"] = _content(record, payload_text(record))
        elif kind == "message.delta":
            event["delta"] = payload_text(record)
        else:
            data = record.get("data")
            inner = data.get("message") if isinstance(data, Mapping) and meta.get("shape") == "shearwater.push" \
                else data
            if isinstance(inner, Mapping) and inner.get("content") is not None:
                event["content"] = _content(record, payload_text(record))
        return event
    data = record.get("data")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        return None
    skip = {"type", "convlog", *DEFAULT_SESSION_FIELDS}
    event = {"type": kind, "session_id": sid}
    event.update((key, value) for key, value in data.items() if key not in skip)
    if "ts" not in event:
        event["ts"] = _str_or_none(record.get("ts"))
    if "recorded" not in event:
        event["recorded"] = _recorded(record)
    return event


def build_exports(tree: Tree, request: ExportRequest) -> list[SessionExport]:
    """Fold a tree's records and build the export of each of its wanted sessions. Pure.

    Args:
        tree: filled by :func:`collect_trees`.
        request: what to build.

    Returns:
        one :class:`SessionExport` per ``tree.wanted`` session, in that order.
    """
    view = _TreeView(tree.records)
    return [view.export(sid, request) for sid in tree.wanted if sid in view.state.sessions]


# --------------------------------------------------------------------------- rendering


def session_doc(export: SessionExport) -> dict[str, Any]:
    """A session as a JSON-friendly dict: its fields, ``messages`` (the visible
    branch), ``crystals``, ``checkpoints``, ``usage`` and, with history, ``history``
    (entries in log order; a fork entry holds the child's doc under ``session``)."""
    doc: dict[str, Any] = {
        "id": export.id,
        "title": export.title,
        "parent": export.parent,
        "fork_at": export.fork_at,
        "branch": export.branch,
        "deleted": export.deleted,
        "first_seq": export.first_seq,
        "last_seq": export.last_seq,
        "last_ts": export.last_ts,
        "participants": list(export.participants),
        "duplicates": export.duplicates,
        "messages": [m.as_dict() for m in export.messages],
        "crystals": [c.as_dict() for c in export.crystals],
        "checkpoints": [c.as_dict() for c in export.checkpoints],
        "usage": export.usage.to_dict(),
    }
    if export.history is not None:
        doc["history"] = [entry.as_dict() for entry in export.history]
    return doc


def _when(ts: str | None) -> str:
    return f"{ts[:19].replace('T', ' ')} UTC" if ts else "time unknown"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in (text.splitlines() or [""]))


def _speaker_line(message: Message, level: int) -> str:
    who = message.sender or message.role or "unknown"
    role = f" ({message.role})" if message.role and message.role != who else ""
    flags = []
    if message.copies > 1:
        flags.append(f"received {message.copies} times")
    if message.streamed and not message.complete:
        flags.append("incomplete stream")
    if not message.visible:
        flags.append("rewound: not in the visible branch")
    number = f"{message.index}. " if message.index is not None else ""
    flag_text = f" · _{'; '.join(flags)}_" if flags else ""
    return f"{'#' * level} {number}{who}{role} · {_when(message.ts)}{flag_text}"


def _usage_table(usage: Usage) -> list[str]:
    lines = [
        "| requests | input tokens | output tokens | cost (USD) |",
        "|---:|---:|---:|---:|",
        f"| {usage.requests} | {usage.input_tokens:,} | {usage.output_tokens:,} | {usage.cost_usd:.6f} |",
    ]
    if usage.models:
        lines += ["", "| model | requests |", "|---|---:|"]
        lines += [f"| {model} | {count} |" for model, count in sorted(usage.models.items())]
    return lines


def markdown(export: SessionExport, level: int = 1) -> str:
    """A session as a Markdown transcript: title, a metadata list, then one heading per
    message (number, speaker, role, time, flags) followed by its text, crystals as
    quoted summaries after the message they cover up to, and a usage table. With
    history, the transcript is the history: rewound messages flagged, copies, rewinds,
    checkpoints and crystals in log order, each fork nested one heading level deeper
    where it was made.

    Args:
        export: the session.
        level: heading level of the title (forks use deeper levels, at most 6).

    Returns:
        the Markdown text, ending with a newline.
    """
    h = "#" * min(level, 6)
    sub = min(level + 1, 6)
    title = export.title or export.id
    lines = [f"{h} {title}", ""]
    meta = [f"- **Session:** `{export.id}`"]
    if export.parent is not None:
        meta.append(f"- **Branch:** {export.branch or 'fork'}, forked from `{export.parent}` "
                    f"after message {export.fork_at}")
    else:
        meta.append("- **Branch:** main")
    if export.participants:
        meta.append(f"- **Participants:** {', '.join(export.participants)}")
    span = [m.ts for m in export.messages if m.ts]
    meta.append(f"- **Messages:** {len(export.messages)} visible"
                + (f", {export.duplicates} duplicate copies" if export.duplicates else ""))
    if span:
        meta.append(f"- **Time:** {_when(min(span))} to {_when(max(span))}")
    meta.append(f"- **Records:** seq {export.first_seq} to {export.last_seq}")
    if export.deleted:
        meta.append("- **Deleted:** yes (a tombstone; the history is kept)")
    if export.checkpoints:
        meta.append("- **Checkpoints:** " + ", ".join(
            f"`{c.name}` at {c.at}" + ("" if c.current else " (no longer the visible branch)")
            for c in export.checkpoints))
    lines += [*meta, ""]
    if export.history is None:
        lines += [f"{'#' * sub} Transcript", ""]
        by_upto: dict[int, list[Crystal]] = {}
        for crystal in export.crystals:
            if crystal.current:
                by_upto.setdefault(crystal.upto, []).append(crystal)
        for crystal in by_upto.get(0, []):
            lines += [_crystal_block(crystal), ""]
        for message in export.messages:
            lines += [_speaker_line(message, min(sub + 1, 6)), "", message.text, ""]
            for crystal in by_upto.get(message.index or 0, []):
                lines += [_crystal_block(crystal), ""]
        aside = [c for c in export.crystals if not c.current]
        if aside:
            lines += [f"{'#' * sub} Crystals set aside by a rewind", ""]
            for crystal in aside:
                lines += [_crystal_block(crystal), ""]
    else:
        lines += [f"{'#' * sub} History", ""]
        lines += _history_lines(export.history, sub)
    if export.usage.requests:
        lines += [f"{'#' * sub} Usage", "", *_usage_table(export.usage), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _crystal_block(crystal: Crystal) -> str:
    head = f"**Crystal** (summary of messages 1–{crystal.upto}, {_when(crystal.ts)}):"
    return _quote(head + "\n" + (crystal.summary or ""))


def _history_lines(history: list[Entry], level: int) -> list[str]:
    lines: list[str] = []
    message_level = min(level + 1, 6)
    for entry in history:
        d = entry.detail
        when = _when(entry.ts)
        if entry.event == "message" and entry.message is not None:
            lines += [_speaker_line(entry.message, message_level), "", entry.message.text, ""]
        elif entry.event == "copy" and entry.message is not None:
            lines += [f"_{when}: another copy of message `{entry.message.message_id}` "
                      f"from {entry.message.sender or 'unknown'} (seq {entry.seq})_", ""]
        elif entry.event == "fork" and entry.fork is not None:
            lines += [f"_{when}: forked `{entry.fork.id}` after message {d.get('at')} (seq {entry.seq})_", ""]
            lines += [markdown(entry.fork, message_level).rstrip("\n"), ""]
        elif entry.event == "rewind":
            target = f"checkpoint `{d['checkpoint']}`" if d.get("checkpoint") else f"{d.get('to_count')} messages"
            lines += [f"_{when}: rewound to {target}: {d.get('from_count')} → {d.get('to_count')} visible "
                      f"messages (seq {entry.seq})_", ""]
        elif entry.event == "checkpoint":
            lines += [f"_{when}: checkpoint `{d.get('name')}` at {d.get('at')} messages (seq {entry.seq})_", ""]
        elif entry.event == "crystal":
            lines += [_quote(f"**Crystal** (summary of messages 1–{d.get('upto')}, {when}):\n"
                             f"{d.get('summary') or ''}"), ""]
        elif entry.event == "start":
            lines += [f"_{when}: session started" + (f": {d['title']}" if d.get("title") else "") + "_", ""]
        elif entry.event == "delete":
            lines += [f"_{when}: session deleted (seq {entry.seq})_", ""]
        elif entry.event == "llm.request":
            parts = ", ".join(f"{k} {v}" for k, v in d.items())
            lines += [f"_{when}: LLM request: {parts or 'no usage fields'}_", ""]
        elif entry.event == "rejected":
            lines += [f"_{when}: {d.get('kind')} record refused: {d.get('reason')} (seq {entry.seq})_", ""]
    return lines


def csv_rows(export: SessionExport) -> Iterator[list[str]]:
    """The CSV rows (without the header, see :data:`CSV_COLUMNS`) of a session: its
    visible messages and, with history, its rewound messages too, ordered by seq;
    with history the rows of its forks follow (depth first)."""
    for session in export.tree():
        messages = list(session.messages)
        if session.history is not None:
            messages += [e.message for e in session.history
                         if e.event == "message" and e.message is not None and not e.message.visible]
            messages.sort(key=lambda m: m.seq)
        for m in messages:
            yield [session.id, str(m.seq), m.message_id, m.ts or "", m.sender or "", m.role or "", m.kind, m.text,
                   "true" if m.visible else "false"]


def _csv_text(rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # excel dialect: RFC 4180 quoting, CRLF line ends
    writer.writerows(rows)
    return buffer.getvalue()


@dataclass(slots=True)
class _Renderer:
    """Writes exports of one format as one stream: ``head``, items, ``tail``."""

    fmt: str
    header: dict[str, Any]

    def head(self) -> bytes:
        if self.fmt == "csv":
            return _csv_text([CSV_COLUMNS]).encode("utf-8")
        if self.fmt == "json":
            return orjson.dumps(self.header)[:-1] + b',"sessions":[\n'
        return b""

    def item(self, export: SessionExport, first: bool) -> bytes:
        if self.fmt == "markdown":
            return (b"" if first else b"\n---\n\n") + markdown(export).encode("utf-8")
        if self.fmt == "json":
            return (b"" if first else b",\n") + orjson.dumps(session_doc(export))
        if self.fmt == "jsonl":
            return b"".join(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE) for event in export.events or ())
        return _csv_text(csv_rows(export)).encode("utf-8")

    def tail(self) -> bytes:
        return b"\n]}\n" if self.fmt == "json" else b""


def render(exports: Iterable[SessionExport], fmt: str, header: dict[str, Any] | None = None) -> Iterator[bytes]:
    """Render exports as one stream in ``fmt``. Pure.

    * ``markdown``: the transcripts, separated by a ``---`` rule;
    * ``json``: one document ``{"format": "convlog.export", "version": 1, ...header,
      "sessions": [session doc, ...]}`` (see :func:`session_doc`), one session a line;
    * ``jsonl``: the native events (build the exports with ``events``);
    * ``csv``: the header row, then :func:`csv_rows` of each.

    Args:
        exports: the sessions.
        fmt: a key of :data:`FORMATS`.
        header: extra top-level fields of the JSON document.

    Yields:
        UTF-8 bytes to concatenate.

    Raises:
        ValueError: for an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")
    renderer = _Renderer(fmt, {"format": JSON_FORMAT, "version": JSON_VERSION, **(header or {})})
    yield renderer.head()
    for i, export in enumerate(exports):
        yield renderer.item(export, i == 0)
    yield renderer.tail()


# --------------------------------------------------------------------------- the shell


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
            :meth:`convlog.replay.Replay.resolve`).
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


def out_target(out: str | None, several: bool) -> tuple[Path | None, bool]:
    """Where ``--out`` sends an export. Pure but for looking at the path.

    Args:
        out: the ``--out`` value; None or ``-`` is stdout.
        several: more than one session (or ``--all``).

    Returns:
        ``(None, False)`` for stdout; ``(path, True)`` for a directory (several
        sessions, an existing directory, or a path ending in ``/``): one file per
        session; else ``(path, False)``: that file.

    Raises:
        ValueError: when several sessions would go to an existing file.
    """
    if out is None or out == "-":
        return None, False
    target = Path(out)
    as_dir = several or target.is_dir() or out.endswith(("/", os.sep))
    if as_dir and target.exists() and not target.is_dir():
        raise ValueError(f"{out} is a file; several sessions need a directory")
    return target, as_dir


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


def write_stream(
    exports: Iterable[SessionExport], fmt: str, header: dict[str, Any], stream: BinaryIO
) -> int:
    """Write exports to a binary stream (stdout) as one :func:`render` stream, each
    session as soon as it is built.

    Returns:
        the number of sessions written.

    Raises:
        OSError: when the stream fails (BrokenPipeError when its reader went away).
    """
    count = 0

    def counted() -> Iterator[SessionExport]:
        nonlocal count
        for item in exports:
            count += 1
            yield item

    for chunk in render(counted(), fmt, header):
        if chunk:
            stream.write(chunk)
            stream.flush()
    return count


def replace_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: written to a temporary file in the same
    directory, then renamed over it (rename(2) is atomic), so a reader sees the old file
    or the new one, never half of one; the temporary file is removed on failure.

    Not fsynced (unlike :func:`convlog.log.write_atomic`): an export is derived from the
    log and can be run again, and an fsync per file (0.4 ms on ext4, measured) would
    double the time of an export of many small sessions.

    Raises:
        OSError: when it cannot be written (the old file, if any, is left as it was).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_files(
    exports: Iterable[SessionExport], fmt: str, header: dict[str, Any], out: Path, as_dir: bool
) -> list[Path]:
    """Write exports to files, each replaced atomically (:func:`replace_file`); the
    directory is fsynced once at the end, so the names survive a power failure.

    Args:
        exports: the sessions.
        fmt: a key of :data:`FORMATS`.
        header: see :func:`render`.
        out: the file (``as_dir`` False: every session goes into it, as one stream) or
            the directory (created if missing; one file per session named
            ``safe_file_name(id) + suffix``, replaced when it exists).
        as_dir: see ``out``.

    Returns:
        the files written.

    Raises:
        OSError: when a file cannot be written (the files written before it stay).
    """
    if not as_dir:
        out.parent.mkdir(parents=True, exist_ok=True)
        replace_file(out, b"".join(render(exports, fmt, header)))
        fsync_dir(out.parent)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for item in exports:
        path = out / safe_file_name(item.id, FORMATS[fmt])
        replace_file(path, b"".join(render([item], fmt, header)))
        written.append(path)
    fsync_dir(out)
    return written
