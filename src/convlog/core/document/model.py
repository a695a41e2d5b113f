"""The export document's model: what ``convlog export`` says about a session. Pure.

The dataclasses here are what :mod:`convlog.readers.export` builds from a log and
renders (Markdown, CSV, JSON, JSONL), and what :func:`convlog.core.document.read_document`
reads back from a JSON export: one :class:`SessionExport` per session, its visible
:class:`Message` list, :class:`Crystal` and :class:`NamedCheckpoint` lists, its
:class:`LlmRequest` records and, with history, its :class:`Entry` list (forks nested)
and :class:`Ancestor` list. :func:`session_doc` is the JSON form of a session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from convlog.core.fold import Usage
from convlog.core.view import shown_text

__all__ = [
    "JSON_FORMAT",
    "JSON_VERSION",
    "MESSAGE_KINDS",
    "STREAM_KINDS",
    "Ancestor",
    "Crystal",
    "Entry",
    "LlmRequest",
    "Message",
    "NamedCheckpoint",
    "SessionExport",
    "session_doc",
]

#: Document format name and version of the JSON export.
JSON_FORMAT = "convlog.export"
JSON_VERSION = 1

#: Record kinds of a streamed message, and of any message.
STREAM_KINDS = frozenset({"message.delta", "message.end"})
MESSAGE_KINDS = frozenset({"message", *STREAM_KINDS})


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
        text: the body as its source wrote it (:func:`convlog.core.view.message_text`;
            a stream assembled), never the display marker; :attr:`shown` is what a
            reader shows.
        copies: times it was recorded in the exported session (1 = no duplicate).
        streamed, complete: assembled from deltas; False for a stream never ended.
        visible: in the exported session's visible branch.
        sent: the message's own time (:func:`convlog.core.view.own_time`: a legacy
            ``Timestamp``, a payload ``timestamp``/``ts``/``created_at``), or None.
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
    sent: str | None = None

    @property
    def shown(self) -> str:
        """The text to show: :data:`convlog.core.view.EMPTY` for a ``message`` whose
        source wrote nothing (see :func:`convlog.core.view.shown_text`), else ``text``."""
        return shown_text(self.kind, self.text)

    def as_dict(self) -> dict[str, Any]:
        """The message as a JSON-friendly dict (its fields by name)."""
        return {
            "index": self.index,
            "message_id": self.message_id,
            "sender": self.sender,
            "role": self.role,
            "seq": self.seq,
            "ts": self.ts,
            "sent": self.sent,
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
