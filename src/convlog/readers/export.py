"""Export sessions as a Markdown transcript, one JSON document, native JSONL events or
CSV: ``convlog export``.

What is exported (DESIGN.md, "Fold semantics"):

* by default the **visible branch** of each session (what :meth:`convlog.store.replay.Replay.messages`
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
(:func:`convlog.core.fold.fold` gives a session the same state from its tree's records as
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

JSON is one document ``{"format": "convlog.export", "version": 1, "log", "as_of_seq",
"with_history", "exported_at", "sessions": [...]}`` (:func:`session_doc`). It carries
what re-recording needs, so it round-trips too: :func:`read_document` reads it back
(checking every field it uses) and :func:`session_events` turns it into the same native
events (the same builders as JSONL); ``convlog publish FILE`` detects the document and
publishes them. Without history each session comes back flat, as from JSONL; with
history every applied record of the session, its forks and, for a fork exported on its
own, its ancestors up to the fork (``ancestors``), merged back into log order by their
original seqs (a record present twice in the document is replayed once). A stream comes
back as one ``message.delta`` with its whole text (plus ``message.end`` when complete)
at its first record; each ``llm.request`` as the counts the fold made of it
(``requests``, :class:`LlmRequest`). Re-recorded into a fresh recorder, the fold is equal
in (tested on the demo, the Shearwater recording and generated logs):

* without history, for each exported session: its visible messages in order with their
  ids, senders, roles, texts, ``streamed`` and ``complete``; title; deleted; usage
  (requests, input and output tokens, cost to the bit, requests per model) and each
  request's counts, in order; the current crystals (``upto``, summary) and the current
  checkpoints (name, ``at``);
* with history, also parent, fork point and branch, rewinds (counts and the ids they
  dropped), every checkpoint (the ids it names), every crystal (``upto``, summary,
  ``current``), copies per message id, duplicates and participants; the new log holds
  exactly the exported sessions, their forks and, for a fork exported on its own, its
  ancestors (as far as the fork).

Never equal: seqs and receive times (the original ones travel in each event's ``ts``
and ``recorded``), and a stream's separate parts. Without history: a fork's parent and
fork point (named by ``origin``), rewinds, copies, crystals and checkpoints set aside
by a rewind. Refused records are not re-recorded.

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
import html
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from hashlib import sha256
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from convlog.core.fold import Rewind, Session, State, Step, Usage, fold, message_id
from convlog.core.record import BUS_KINDS, dump_json, parse_line
from convlog.core.view import EMPTY, payload_text, stream_text
from convlog.core.wire import DEFAULT_SESSION_FIELDS, content_text
from convlog.store.clock import Clock
from convlog.store.log import bytes_from, fsync_dir, iter_lines

__all__ = [
    "FORMATS",
    "SESSION_KINDS",
    "Ancestor",
    "Crystal",
    "Entry",
    "ExportDocumentError",
    "ExportRequest",
    "LlmRequest",
    "Message",
    "NamedCheckpoint",
    "SessionExport",
    "Tree",
    "build_exports",
    "collect_trees",
    "csv_rows",
    "document_events",
    "export",
    "export_bytes",
    "export_header",
    "export_ids",
    "looks_like_document",
    "markdown",
    "native_event",
    "out_target",
    "plan_trees",
    "read_document",
    "render",
    "replace_file",
    "safe_file_name",
    "session_doc",
    "session_events",
    "write_files",
    "write_stream",
]

#: Format name -> file suffix.
FORMATS: dict[str, str] = {"markdown": ".md", "json": ".json", "jsonl": ".jsonl", "csv": ".csv"}

#: Kinds whose records belong to a session's conversation (the fold's session kinds).
SESSION_KINDS: frozenset[str] = BUS_KINDS - {"publisher.heartbeat"}
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
        text: the body (:func:`convlog.core.view.payload_text`; a stream assembled).
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
            (else a rewind set it aside; see :meth:`convlog.core.fold.State.resume_refs`).
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


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """One ``llm.request`` record of a session, as the fold counted it (aliases such as
    ``prompt_tokens`` and a nested ``usage`` object resolved, see
    :func:`convlog.core.fold.fold`).

    Attributes:
        seq, ts: the record and its receive time.
        model: the model name, or None.
        input_tokens, output_tokens: tokens counted (0 when absent).
        cost_usd: cost counted, US dollars (0.0 when absent).
    """

    seq: int
    ts: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float

    def as_dict(self) -> dict[str, Any]:
        """The request as a JSON-friendly dict (its fields by name)."""
        return {"seq": self.seq, "ts": self.ts, "model": self.model, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cost_usd": self.cost_usd}


@dataclass(slots=True)
class Ancestor:
    """An ancestor of a fork exported on its own with history: what of it shapes the
    fork (see :attr:`SessionExport.ancestors`).

    Attributes:
        id: the ancestor session.
        history: its entries up to and including the fork of the next session on the way
            to the exported fork (that fork entry names only its ``child``; other forks,
            ``llm.request`` and ``rejected`` entries are left out).
        requests: its ``llm.request`` records up to that fork, as counted (one may be
            what created it).
    """

    id: str
    history: list[Entry]
    requests: list[LlmRequest]

    def as_dict(self) -> dict[str, Any]:
        """``{"id", "history", "requests"}``, JSON-friendly."""
        return {"id": self.id, "history": [entry.as_dict() for entry in self.history],
                "requests": [request.as_dict() for request in self.requests]}


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
            ``upto``/``summary`` for a crystal, ``at``/``branch``/``child`` for a fork,
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
        id, title, parent, fork_at, branch: as folded (see :class:`convlog.core.fold.Session`).
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
        first_ts: receive time of its first record.
        requests: its ``llm.request`` records as counted, in log order (None only for
            a document read back without them).
        ancestors: for a fork exported with history, its ancestors (root first), each
            with its history up to the fork this session descends from
            (:class:`Ancestor`): what re-recording the fork on its own needs. None
            otherwise.
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
    first_ts: str | None = None
    requests: list[LlmRequest] | None = None
    ancestors: list[Ancestor] | None = None

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


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _meta(record: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = record.get("meta")
    return meta if isinstance(meta, Mapping) else {}


def _data(record: Mapping[str, Any]) -> Mapping[str, Any]:
    data = record.get("data")
    return data if isinstance(data, Mapping) else {}


#: Steps of the fold (:class:`convlog.core.fold.Step`) that a history shows.
_HISTORY_EFFECTS = frozenset(
    {"message", "copy", "start", "fork", "rewind", "checkpoint", "crystal", "delete", "llm.request", "rejected"}
)


def _fold_tree(records: Iterable[dict[str, Any]]) -> tuple[State, dict[str, list[Step]]]:
    """Fold a tree's records into a new state with :func:`convlog.core.fold.fold`,
    keeping the steps it reports (the fold alone decides what each record did).

    Returns:
        ``(state, steps)``: the steps a history shows, by session id (a fork step is
        in its parent's list, a rejected record's in its session's).
    """
    steps: dict[str, list[Step]] = {}

    def observe(step: Step) -> None:
        if step.effect not in _HISTORY_EFFECTS:
            return
        owner = step.detail["parent"] if step.effect == "fork" else step.session
        if owner is not None:
            steps.setdefault(owner, []).append(step)

    state = State()
    for record in records:
        if isinstance(record.get("session"), str):
            fold(state, record, observe)
    return state, steps


def _request(step: Step, ts: str | None) -> LlmRequest:
    """An ``llm.request`` step as the request the fold counted."""
    d = step.detail
    return LlmRequest(step.seq, ts, d["model"], d["input_tokens"], d["output_tokens"], d["cost_usd"])


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

    def ts(self, seq: int) -> str | None:
        """The receive time of record ``seq`` of the tree (None when unknown)."""
        record = self.by_seq.get(seq)
        return _str_or_none(record.get("ts")) if record is not None else None

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
            first_ts=_str_or_none(first.get("ts")),
            requests=[_request(step, self.ts(step.seq)) for step in self.steps.get(sid, ())
                      if step.effect == "llm.request"],
        )
        if request.with_history:
            export.history = self.history(sid)
        if request.events:
            export.events = self.history_events(sid) if request.with_history else self.visible_events(export)
        return export

    def history(self, sid: str, nest: bool = True, upto: int | None = None) -> list[Entry]:
        """The entries of session ``sid``: forks nested with their own histories, or
        with ``nest`` False only named (``child``); only records up to seq ``upto``
        when given."""
        session = self.state.sessions[sid]
        visible_index = {seq: i for i, seq in enumerate(session.visible.seqs, 1)}
        entries = []
        for step in self.steps.get(sid, ()):
            seq, ts, d = step.seq, self.ts(step.seq), step.detail
            if upto is not None and seq > upto:
                break
            if step.effect == "message":
                index = visible_index.get(seq)
                entries.append(Entry("message", seq, ts, self.message(session, seq, index, index is not None)))
            elif step.effect == "copy":
                entries.append(Entry("copy", seq, ts, self.message(session, seq, None, False)))
            elif step.effect == "fork":
                detail = {"at": d["at"], "branch": d["branch"], "child": step.session}
                child = None
                if nest and step.session is not None:
                    child = self.export(step.session, ExportRequest(with_history=True, events=False))
                entries.append(Entry("fork", seq, ts, fork=child, detail=detail))
            elif step.effect == "rewind":
                rewind: Rewind = d["rewind"]
                detail = {
                    "from_count": rewind.from_count,
                    "to_count": rewind.to_count,
                    "checkpoint": d["checkpoint"],
                    "dropped": [message_id(self.by_seq.get(s, {"seq": s})) for s in rewind.dropped],
                }
                entries.append(Entry("rewind", seq, ts, detail=detail))
            elif step.effect == "checkpoint":
                entries.append(Entry("checkpoint", seq, ts, detail={"name": d["name"], "at": d["at"]}))
            elif step.effect == "crystal":
                detail = {"upto": d["crystal"].upto, "summary": d["summary"]}
                entries.append(Entry("crystal", seq, ts, detail=detail))
            elif step.effect == "start":
                entries.append(Entry("start", seq, ts, detail={"title": d["title"]}))
            elif step.effect == "delete":
                entries.append(Entry("delete", seq, ts, detail={"repeated": d["repeated"]}))
            elif step.effect == "llm.request":
                detail = {key: d[key] for key in ("model", "input_tokens", "output_tokens", "cost_usd")
                          if d[key] is not None}
                entries.append(Entry("llm.request", seq, ts, detail=detail))
            elif step.effect == "rejected":
                entries.append(Entry("rejected", seq, ts, detail={"kind": d["kind"], "reason": d["error"].reason}))
        return entries

    def ancestry(self, sid: str) -> list[Ancestor]:
        """The ancestors of fork ``sid``, root first (see :class:`Ancestor`)."""
        chain: list[tuple[str, int, str]] = []
        seen = {sid}
        child, parent = sid, self.state.sessions[sid].parent
        while parent is not None and parent in self.state.sessions and parent not in seen:
            chain.append((parent, self.state.sessions[child].first_seq, child))
            seen.add(parent)
            child, parent = parent, self.state.sessions[parent].parent
        out = []
        for ancestor, fork_seq, next_child in reversed(chain):
            entries = [
                entry for entry in self.history(ancestor, nest=False, upto=fork_seq)
                if entry.event not in ("llm.request", "rejected")
                and (entry.event != "fork" or entry.detail.get("child") == next_child)
            ]
            requests = [_request(step, self.ts(step.seq)) for step in self.steps.get(ancestor, ())
                        if step.effect == "llm.request" and step.seq <= fork_seq]
            out.append(Ancestor(ancestor, entries, requests))
        return out

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
        """Native events re-creating the visible branch of ``export`` on its own (its
        ``llm.request`` records as they were, refused ones included)."""
        requests = []
        for record in self.records:
            if record["kind"] == "llm.request" and record.get("session") == export.id:
                event = native_event(record)
                if event is not None:
                    requests.append(event)
        return _visible_events(export, self.by_seq.get, requests)


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
    if text == EMPTY:  # the source wrote nothing: re-recorded as the same nothing
        return content
    shown = content_text(content)
    if shown is None:
        shown = dump_json(content).decode("utf-8", "replace")
    return content if shown == text else text


# Event builders: the one place each native event shape is written, shared by the JSONL
# export (from records) and by reading a JSON export back (from its documents).


def _start_event(sid: str, title: str | None, ts: str | None,
                 origin: dict[str, Any] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "session.start", "session_id": sid}
    if title is not None:
        event["title"] = title
    event["ts"] = ts
    if origin is not None:
        event["origin"] = origin
    return event


def _message_events(sid: str, message: Message, record: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """A message as native events: ``message`` with its content, or for a stream one
    ``message.delta`` with the whole text and ``message.end`` when it was complete.
    Identity, receive time and provenance come from ``record`` when given, else from
    ``message`` itself."""
    if record is not None:
        base = _message_base(record, sid, message.message_id)
        content = _content(record, message.text)
    else:
        base = {"type": message.kind, "session_id": sid, "message_id": message.message_id}
        for key, value in (("sender", message.sender), ("role", message.role)):
            if value is not None:
                base[key] = value
        base["ts"] = message.ts
        base["recorded"] = {"seq": message.seq, "session": message.session}
        content = message.text
    if not message.streamed:
        return [{**base, "type": "message", "content": content}]
    events = [{**base, "type": "message.delta", "delta": message.text}]
    if message.complete:
        events.append({"type": "message.end", "session_id": sid, "message_id": message.message_id})
    return events


def _copy_events(sid: str, message: Message) -> list[dict[str, Any]]:
    """Events that the fold counts as another copy of ``message`` (already visible, or
    its stream already complete), in the kind the copy arrived as."""
    if message.kind == "message.end":
        end = _message_events(sid, replace(message, streamed=False))[0]
        end["type"] = "message.end"
        return [end]
    return _message_events(sid, replace(message, streamed=message.kind == "message.delta"))


def _fork_event(sid: str, parent: str, at: int | None, branch: str | None, ts: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "session.fork", "session_id": sid, "parent": parent}
    if at is not None:
        event["at"] = at
    if branch is not None:
        event["name"] = branch
    event["ts"] = ts
    return event


def _rewind_event(sid: str, to: int | None, checkpoint: str | None, ts: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "session.rewind", "session_id": sid}
    if checkpoint is not None:
        event["checkpoint"] = checkpoint
    else:
        event["to"] = to
    event["ts"] = ts
    return event


def _checkpoint_event(sid: str, name: str, at: int | None, ts: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "session.checkpoint", "session_id": sid, "name": name}
    if at is not None:
        event["at"] = at
    event["ts"] = ts
    return event


def _crystal_event(sid: str, summary: str | None, upto: int | None, ts: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "session.crystal", "session_id": sid, "summary": summary}
    if upto is not None:
        event["upto"] = upto
    event["ts"] = ts
    return event


def _delete_event(sid: str, ts: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "session.delete", "session_id": sid}
    if ts is not None:
        event["ts"] = ts
    return event


def _request_event(sid: str, request: LlmRequest) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "llm.request", "session_id": sid}
    if request.model is not None:
        event["model"] = request.model
    event.update(input_tokens=request.input_tokens, output_tokens=request.output_tokens,
                 cost_usd=request.cost_usd, ts=request.ts, recorded={"seq": request.seq, "session": sid})
    return event


def _visible_events(
    export: SessionExport,
    record_of: Callable[[int], Mapping[str, Any] | None],
    requests: Iterable[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Native events re-creating the visible branch of ``export`` on its own:
    ``session.start`` (title; ``origin`` naming the parent, fork point and branch of a
    fork, whose inherited messages become its own), the visible messages, the
    checkpoints and crystals that still describe them, ``requests``, and
    ``session.delete`` for a deleted session. ``record_of(seq)`` gives a message's
    record when there is one (its original content value and provenance)."""
    sid = export.id
    origin = None
    if export.parent is not None:
        origin = {"parent": export.parent, "fork_at": export.fork_at, "branch": export.branch}
    events = [_start_event(sid, export.title, export.first_ts, origin)]
    for message in export.messages:
        events += _message_events(sid, message, record_of(message.seq))
    for checkpoint in export.checkpoints:
        if checkpoint.current:
            events.append(_checkpoint_event(sid, checkpoint.name, checkpoint.at, checkpoint.ts))
    for crystal in export.crystals:
        if crystal.current and crystal.summary is not None:
            events.append(_crystal_event(sid, crystal.summary, crystal.upto, crystal.ts))
    events += requests
    if export.deleted:
        events.append(_delete_event(sid))
    return events


def native_event(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The native bus event that re-creates one record of :data:`SESSION_KINDS`. Pure.

    * ``message``: ``{"type", "session_id", "message_id", "sender", "role", "content",
      "ts", "recorded"}`` with the fold's message id (``seq:<seq>`` for a message that
      had none, so the id survives) and the original content value when it shows the
      same text (see :func:`convlog.core.view.payload_text`), else the text;
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

    With history, a wanted session that is a fork also gets its ``ancestors`` (see
    :class:`SessionExport`).

    Args:
        tree: filled by :func:`collect_trees`.
        request: what to build.

    Returns:
        one :class:`SessionExport` per ``tree.wanted`` session, in that order.
    """
    view = _TreeView(tree.records)
    out = []
    for sid in tree.wanted:
        if sid in view.state.sessions:
            item = view.export(sid, request)
            if request.with_history and item.parent is not None:
                item.ancestors = view.ancestry(sid)
            out.append(item)
    return out


# --------------------------------------------------------------------------- rendering


def session_doc(export: SessionExport) -> dict[str, Any]:
    """A session as a JSON-friendly dict: its fields, ``messages`` (the visible
    branch), ``crystals``, ``checkpoints``, ``usage``, ``requests`` (its ``llm.request``
    records as counted, see :class:`LlmRequest`) and, with history, ``history``
    (entries in log order; a fork entry names the child under ``child`` and holds its
    doc under ``session``) and, for a fork, ``ancestors`` (``[{"id", "history",
    "requests"}]``, see :class:`Ancestor`). :func:`read_document` reads it back."""
    doc: dict[str, Any] = {
        "id": export.id,
        "title": export.title,
        "parent": export.parent,
        "fork_at": export.fork_at,
        "branch": export.branch,
        "deleted": export.deleted,
        "first_seq": export.first_seq,
        "first_ts": export.first_ts,
        "last_seq": export.last_seq,
        "last_ts": export.last_ts,
        "participants": list(export.participants),
        "duplicates": export.duplicates,
        "messages": [m.as_dict() for m in export.messages],
        "crystals": [c.as_dict() for c in export.crystals],
        "checkpoints": [c.as_dict() for c in export.checkpoints],
        "usage": export.usage.to_dict(),
        "requests": [request.as_dict() for request in export.requests or ()],
    }
    if export.history is not None:
        doc["history"] = [entry.as_dict() for entry in export.history]
    if export.ancestors is not None:
        doc["ancestors"] = [ancestor.as_dict() for ancestor in export.ancestors]
    return doc


def _when(ts: str | None) -> str:
    return f"{ts[:19].replace('T', ' ')} UTC" if ts else "time unknown"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in (text.splitlines() or [""]))


def _html_safe(text: str) -> str:
    """Recorded text for a Markdown document: ``<``, ``>`` and ``&`` escaped, so a
    conversation's ``<script>`` or ``<img onerror=…>`` shows as text wherever the
    Markdown is rendered to HTML, never as markup."""
    return html.escape(text, quote=False)


def _speaker_line(message: Message, level: int) -> str:
    who = _html_safe(message.sender or message.role or "unknown")
    role = f" ({_html_safe(message.role)})" if message.role and message.role != who else ""
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
    title = _html_safe(export.title or export.id)
    lines = [f"{h} {title}", ""]
    meta = [f"- **Session:** `{export.id}`"]
    if export.parent is not None:
        meta.append(f"- **Branch:** {export.branch or 'fork'}, forked from `{export.parent}` "
                    f"after message {export.fork_at}")
    else:
        meta.append("- **Branch:** main")
    if export.participants:
        meta.append(f"- **Participants:** {_html_safe(', '.join(export.participants))}")
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
            lines += [_speaker_line(message, min(sub + 1, 6)), "", _html_safe(message.text), ""]
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
    return _quote(head + "\n" + _html_safe(crystal.summary or ""))


def _history_lines(history: list[Entry], level: int) -> list[str]:
    lines: list[str] = []
    message_level = min(level + 1, 6)
    for entry in history:
        d = entry.detail
        when = _when(entry.ts)
        if entry.event == "message" and entry.message is not None:
            lines += [_speaker_line(entry.message, message_level), "", _html_safe(entry.message.text), ""]
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
                             f"{_html_safe(str(d.get('summary') or ''))}"), ""]
        elif entry.event == "start":
            lines += [f"_{when}: session started" + (f": {_html_safe(str(d['title']))}" if d.get("title") else "")
                      + "_", ""]
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


#: First characters that make a spreadsheet read a cell as a formula (OWASP, "CSV
#: Injection"): such a cell is written with a leading ``'``, which spreadsheets hide.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?([eE][-+]?\d+)?")


def csv_safe(cell: str) -> str:
    """A cell that no spreadsheet will evaluate: a leading ``'`` when it starts like a
    formula (:data:`FORMULA_STARTS`) and is not a plain number."""
    if cell.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def _csv_text(rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # excel dialect: RFC 4180 quoting, CRLF line ends
    writer.writerows([csv_safe(cell) for cell in row] for row in rows)
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
            return (b"" if first else b",\n") + dump_json(session_doc(export))
        if self.fmt == "jsonl":
            return b"".join(dump_json(event, option=orjson.OPT_APPEND_NEWLINE) for event in export.events or ())
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


# --------------------------------------------------------------------------- reading a JSON export back


class ExportDocumentError(ValueError):
    """A JSON export document that cannot be turned back into events. The message says
    where (``sessions[2].history[5].message``) and why, on one line."""


_ABSENT: Any = object()
_DOC_HEAD = re.compile(rb'\A(?:\xef\xbb\xbf)?\s*\{\s*"format"\s*:\s*"convlog\.export"')


def looks_like_document(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first bytes, a few hundred are enough)
    is a JSON export document: an object whose first key is ``"format"`` with the value
    ``"convlog.export"``, as :func:`render` writes it (and ``jq`` keeps it). Pure."""
    return _DOC_HEAD.match(head) is not None


def _what(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "a string": lambda v: isinstance(v, str),
    "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "a number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "a boolean": lambda v: isinstance(v, bool),
    "a list": lambda v: isinstance(v, list),
    "an object": lambda v: isinstance(v, dict),
}


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ExportDocumentError(f"{where}: expected an object, found {_what(value)}")
    return value


def _get(obj: Mapping[str, Any], key: str, where: str, expect: str, null: bool = False,
         default: Any = _ABSENT) -> Any:
    """``obj[key]`` checked to be ``expect`` (a key of ``_CHECKS``), or null when
    ``null``; ``default`` when the key is absent (required when no default)."""
    if key not in obj:
        if default is _ABSENT:
            raise ExportDocumentError(f"{where}: {key!r} is missing")
        return default
    value = obj[key]
    if (value is None and null) or _CHECKS[expect](value):
        return value
    wanted = f"{expect} or null" if null else expect
    raise ExportDocumentError(f"{where}.{key}: expected {wanted}, found {_what(value)}")


def _items(obj: Mapping[str, Any], key: str, where: str) -> Iterator[tuple[str, Any]]:
    """The items of list ``obj[key]`` (empty when absent or null) with their paths."""
    for i, item in enumerate(_get(obj, key, where, "a list", null=True, default=None) or ()):
        yield f"{where}.{key}[{i}]", item


def _message_from(value: Any, where: str) -> Message:
    obj = _object(value, where)
    kind = _get(obj, "kind", where, "a string", default="message")
    if kind not in _MESSAGE_KINDS:
        raise ExportDocumentError(f"{where}.kind: not a message kind")
    copies = _get(obj, "copies", where, "an integer", default=1)
    return Message(
        session=_get(obj, "session", where, "a string", null=True, default=None),
        index=_get(obj, "index", where, "an integer", null=True, default=None),
        message_id=_get(obj, "message_id", where, "a string"),
        sender=_get(obj, "sender", where, "a string", null=True, default=None),
        role=_get(obj, "role", where, "a string", null=True, default=None),
        seq=_get(obj, "seq", where, "an integer"),
        ts=_get(obj, "ts", where, "a string", null=True, default=None),
        kind=kind,
        text=_get(obj, "text", where, "a string"),
        copies=copies,
        streamed=_get(obj, "streamed", where, "a boolean", default=False),
        complete=_get(obj, "complete", where, "a boolean", default=True),
        visible=_get(obj, "visible", where, "a boolean", default=True),
    )


def _crystal_from(value: Any, where: str) -> Crystal:
    obj = _object(value, where)
    return Crystal(
        seq=_get(obj, "seq", where, "an integer", default=0),
        ts=_get(obj, "ts", where, "a string", null=True, default=None),
        upto=_get(obj, "upto", where, "an integer"),
        summary=_get(obj, "summary", where, "a string", null=True),
        current=_get(obj, "current", where, "a boolean", default=True),
    )


def _checkpoint_from(value: Any, where: str) -> NamedCheckpoint:
    obj = _object(value, where)
    return NamedCheckpoint(
        name=_get(obj, "name", where, "a string"),
        seq=_get(obj, "seq", where, "an integer", default=0),
        ts=_get(obj, "ts", where, "a string", null=True, default=None),
        at=_get(obj, "at", where, "an integer"),
        current=_get(obj, "current", where, "a boolean", default=True),
    )


def _usage_from(value: Any, where: str) -> Usage:
    obj = _object(value, where)
    models = _get(obj, "models", where, "an object", default={})
    for name, count in models.items():
        if not _CHECKS["an integer"](count):
            raise ExportDocumentError(f"{where}.models[{name!r}]: expected an integer, found {_what(count)}")
    return Usage(
        requests=_get(obj, "requests", where, "an integer", default=0),
        input_tokens=_get(obj, "input_tokens", where, "an integer", default=0),
        output_tokens=_get(obj, "output_tokens", where, "an integer", default=0),
        cost_usd=float(_get(obj, "cost_usd", where, "a number", default=0.0)),
        models=dict(models),
    )


def _request_from(value: Any, where: str) -> LlmRequest:
    obj = _object(value, where)
    cost = _get(obj, "cost_usd", where, "a number", default=0.0)
    try:
        cost = float(cost)
    except OverflowError:
        raise ExportDocumentError(f"{where}.cost_usd: out of range") from None
    return LlmRequest(
        seq=_get(obj, "seq", where, "an integer"),
        ts=_get(obj, "ts", where, "a string", null=True, default=None),
        model=_get(obj, "model", where, "a string", null=True, default=None),
        input_tokens=_get(obj, "input_tokens", where, "an integer", default=0),
        output_tokens=_get(obj, "output_tokens", where, "an integer", default=0),
        cost_usd=cost,
    )


def _entry_from(value: Any, where: str, depth: int) -> Entry:
    obj = _object(value, where)
    event = _get(obj, "event", where, "a string")
    seq = _get(obj, "seq", where, "an integer")
    ts = _get(obj, "ts", where, "a string", null=True, default=None)
    entry = Entry(event, seq, ts)
    if event in ("message", "copy"):
        entry.message = _message_from(_get(obj, "message", where, "an object"), f"{where}.message")
    elif event == "fork":
        nested = _get(obj, "session", where, "an object", null=True, default=None)
        if nested is not None:
            entry.fork = _session_from(nested, f"{where}.session", depth + 1)
        child = _get(obj, "child", where, "a string", default=entry.fork.id if entry.fork else _ABSENT)
        if entry.fork is not None and entry.fork.id != child:
            raise ExportDocumentError(f"{where}: child {child!r} is not the nested session {entry.fork.id!r}")
        entry.detail = {"child": child, "at": _get(obj, "at", where, "an integer", null=True, default=None),
                        "branch": _get(obj, "branch", where, "a string", null=True, default=None)}
    elif event == "rewind":
        checkpoint = _get(obj, "checkpoint", where, "a string", null=True, default=None)
        to = _get(obj, "to_count", where, "an integer", null=checkpoint is not None, default=None)
        if checkpoint is None and to is None:
            raise ExportDocumentError(f"{where}: a rewind needs 'to_count' or 'checkpoint'")
        entry.detail = {"to_count": to, "checkpoint": checkpoint}
    elif event == "checkpoint":
        entry.detail = {"name": _get(obj, "name", where, "a string"),
                        "at": _get(obj, "at", where, "an integer", null=True, default=None)}
    elif event == "crystal":
        entry.detail = {"summary": _get(obj, "summary", where, "a string"),
                        "upto": _get(obj, "upto", where, "an integer", null=True, default=None)}
    elif event == "start":
        entry.detail = {"title": _get(obj, "title", where, "a string", null=True, default=None)}
    elif event in ("delete", "llm.request", "rejected"):
        pass  # nothing needed: a delete has no parameters; requests come from "requests"
    else:
        raise ExportDocumentError(f"{where}.event: unknown event {event[:40]!r}")
    return entry


def _session_from(value: Any, where: str, depth: int = 0) -> SessionExport:
    """Read one session doc (:func:`session_doc`) back; only what re-recording needs is
    required (``id``, and ``requests`` when ``usage`` counts requests)."""
    if depth > 200:
        raise ExportDocumentError(f"{where}: forks nested more than 200 deep")
    obj = _object(value, where)
    sid = _get(obj, "id", where, "a string")
    usage = _usage_from(_get(obj, "usage", where, "an object", default={}), f"{where}.usage")
    requests = None
    if _get(obj, "requests", where, "a list", null=True, default=None) is not None:
        requests = [_request_from(item, at) for at, item in _items(obj, "requests", where)]
    elif usage.requests:
        raise ExportDocumentError(f"{where}: usage counts {usage.requests} requests but 'requests' is missing "
                                  "(an export from an older convlog: export it again)")
    history = None
    if _get(obj, "history", where, "a list", null=True, default=None) is not None:
        history = [_entry_from(item, at, depth) for at, item in _items(obj, "history", where)]
    ancestors = None
    if _get(obj, "ancestors", where, "a list", null=True, default=None) is not None:
        ancestors = []
        for at, item in _items(obj, "ancestors", where):
            ancestor = _object(item, at)
            ancestors.append(Ancestor(
                _get(ancestor, "id", at, "a string"),
                [_entry_from(e, e_at, depth) for e_at, e in _items(ancestor, "history", at)],
                [_request_from(r, r_at) for r_at, r in _items(ancestor, "requests", at)],
            ))
    return SessionExport(
        id=sid,
        title=_get(obj, "title", where, "a string", null=True, default=None),
        parent=_get(obj, "parent", where, "a string", null=True, default=None),
        fork_at=_get(obj, "fork_at", where, "an integer", null=True, default=None),
        branch=_get(obj, "branch", where, "a string", null=True, default=None),
        deleted=_get(obj, "deleted", where, "a boolean", default=False),
        first_seq=_get(obj, "first_seq", where, "an integer", default=0),
        last_seq=_get(obj, "last_seq", where, "an integer", default=0),
        last_ts=_get(obj, "last_ts", where, "a string", null=True, default=None),
        participants=[],
        duplicates=_get(obj, "duplicates", where, "an integer", default=0),
        messages=[_message_from(item, at) for at, item in _items(obj, "messages", where)],
        crystals=[_crystal_from(item, at) for at, item in _items(obj, "crystals", where)],
        checkpoints=[_checkpoint_from(item, at) for at, item in _items(obj, "checkpoints", where)],
        usage=usage,
        history=history,
        first_ts=_get(obj, "first_ts", where, "a string", null=True, default=None),
        requests=requests,
        ancestors=ancestors,
    )


def read_document(doc: Any) -> list[SessionExport]:
    """Read a parsed JSON export document (:func:`render` with ``json``) back into
    session exports. Pure.

    Checks ``format`` (``convlog.readers.export``), ``version`` (at most the one written now)
    and the type of every field it reads; fields it does not need may be missing.

    Args:
        doc: the parsed document (``orjson.loads`` of the file).

    Returns:
        its sessions, in document order (forks nested in ``history`` as exported).

    Raises:
        ExportDocumentError: naming the first field that is missing or of the wrong type.
    """
    if not isinstance(doc, dict):
        raise ExportDocumentError(f"not an export document: the top level is {_what(doc)}, not an object")
    fmt = doc.get("format")
    if fmt != JSON_FORMAT:
        shown = repr(fmt[:40]) if isinstance(fmt, str) else _what(fmt)
        raise ExportDocumentError(f"not a convlog export document (format is {shown}, not {JSON_FORMAT!r})")
    version = _get(doc, "version", "document", "an integer")
    if not 1 <= version <= JSON_VERSION:
        readable = "1" if JSON_VERSION == 1 else f"1 to {JSON_VERSION}"
        raise ExportDocumentError(f"export document version {version} is not supported "
                                  f"(this convlog reads version {readable})")
    _get(doc, "sessions", "document", "a list")
    return [_session_from(item, where) for where, item in _items(doc, "sessions", "document")]


def _entry_events(sid: str, entry: Entry) -> list[dict[str, Any]]:
    """The native events re-creating one history entry of session ``sid`` (none for a
    refused record or an ``llm.request``, which comes from the session's requests)."""
    d = entry.detail
    if entry.event == "message" and entry.message is not None:
        return _message_events(sid, entry.message)
    if entry.event == "copy" and entry.message is not None:
        return _copy_events(sid, entry.message)
    if entry.event == "fork":
        return [_fork_event(d["child"], sid, d.get("at"), d.get("branch"), entry.ts)]
    if entry.event == "rewind":
        return [_rewind_event(sid, d.get("to_count"), d.get("checkpoint"), entry.ts)]
    if entry.event == "checkpoint":
        return [_checkpoint_event(sid, d["name"], d.get("at"), entry.ts)]
    if entry.event == "crystal":
        return [_crystal_event(sid, d["summary"], d.get("upto"), entry.ts)]
    if entry.event == "start":
        return [_start_event(sid, d.get("title"), entry.ts)]
    if entry.event == "delete":
        return [_delete_event(sid, entry.ts)]
    return []


def _history_replay(exports: Sequence[SessionExport]) -> list[dict[str, Any]]:
    """Events re-creating sessions exported with history: every entry of them, their
    nested forks and their ancestors (and every counted request), one record each,
    merged back into log order by the seq they were recorded with; a record present
    twice (a fork nested in one session and exported on its own too, shared
    ancestors) is replayed once."""
    by_seq: dict[int, list[dict[str, Any]]] = {}

    def keep(seq: int, events: list[dict[str, Any]]) -> None:
        if events:
            by_seq.setdefault(seq, events)

    todo = list(exports)
    while todo:
        item = todo.pop()
        for entry in item.history or ():
            if entry.fork is not None:
                todo.append(entry.fork)
            keep(entry.seq, _entry_events(item.id, entry))
        for request in item.requests or ():
            keep(request.seq, [_request_event(item.id, request)])
    for item in exports:
        for ancestor in item.ancestors or ():
            for entry in ancestor.history:
                keep(entry.seq, _entry_events(ancestor.id, entry))
            for request in ancestor.requests:
                keep(request.seq, [_request_event(ancestor.id, request)])
    return [event for seq in sorted(by_seq) for event in by_seq[seq]]


def session_events(exports: Sequence[SessionExport]) -> list[dict[str, Any]]:
    """Native bus events re-creating exported sessions: the same vocabulary and shapes
    as the JSONL export. Pure.

    * sessions with history: every record the fold applied to them, their forks and
      (for a fork exported on its own) their ancestors up to the fork, in the original
      log order (see :func:`_history_replay`): a stream as one ``message.delta`` with
      its whole text (and ``message.end`` when complete) at its first record, requests
      with the counts the fold made of them;
    * sessions without: each visible branch on its own, as the JSONL export writes it
      (a fork flat, its ``session.start`` naming the ``origin``), once per session id.

    Publishing the events into a fresh recorder folds to the same sessions: see the
    module docstring for which fields are equal.

    Args:
        exports: from :func:`read_document` (or :func:`build_exports`).

    Returns:
        the events (history ones first, then the visible branches in order).
    """
    events = _history_replay([item for item in exports if item.history is not None])
    seen: set[str] = set()
    for item in exports:
        if item.history is None and item.id not in seen:
            seen.add(item.id)
            requests = [_request_event(item.id, request) for request in item.requests or ()]
            events += _visible_events(item, lambda _seq: None, requests)
    return events


def document_events(doc: Any) -> list[dict[str, Any]]:
    """The native bus events re-creating the sessions of a parsed JSON export document:
    :func:`session_events` of :func:`read_document`. Pure.

    Raises:
        ExportDocumentError: as :func:`read_document`.
    """
    return session_events(read_document(doc))


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

    Not fsynced (unlike :func:`convlog.store.log.write_atomic`): an export is derived from the
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
