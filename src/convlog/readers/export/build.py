"""Building exports from a fork tree's records: fold them with the one fold
(:func:`convlog.core.fold.fold`, observed: each applied :class:`~convlog.core.fold.Step`
is kept) and turn the state and the steps into :class:`~convlog.core.document.SessionExport`
objects. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from convlog.core.document import (
    STREAM_KINDS,
    Ancestor,
    Crystal,
    Entry,
    LlmRequest,
    Message,
    NamedCheckpoint,
    SessionExport,
    native_event,
    visible_events,
)
from convlog.core.fold import Rewind, Session, State, Step, fold, message_id
from convlog.core.view import message_text, own_time, stream_text

__all__ = ["ExportRequest", "Tree", "build_exports"]


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _meta(record: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = record.get("meta")
    return meta if isinstance(meta, Mapping) else {}


def _data(record: Mapping[str, Any]) -> Mapping[str, Any]:
    data = record.get("data")
    return data if isinstance(data, Mapping) else {}


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
        if record["kind"] in STREAM_KINDS and isinstance(owner, str):
            stream = self.state.streams.get((owner, mid))
        if stream is not None:
            parts = sorted({*stream.delta_seqs, *([stream.end_seq] if stream.end_seq is not None else [])})
            text = stream_text([self.by_seq[s] for s in parts if s in self.by_seq])
            complete = bool(stream.complete)
        else:
            text = message_text(record)
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
            sent=own_time(record),
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
        return visible_events(export, self.by_seq.get, requests)


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
