"""The fold's state: :class:`State` (sessions, streams, gaps, errors, usage, the log's
tally) and its mutable parts (:class:`Session`, :class:`Stream`, :class:`Usage`,
:class:`Tally`), with their checkpoint
forms (``to_dict``/``from_dict``) and queries. Pure; the rules that change them are in
:mod:`convlog.core.fold.rules`.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from convlog.core.fold.values import (
    Crystal,
    FoldError,
    Gap,
    Refs,
    Rewind,
    SessionCheckpoint,
    _array_from_text,
    _array_to_text,
    message_key,
)
from convlog.core.view import own_time

__all__ = ["FORMAT_VERSION", "Session", "State", "Stream", "Tally", "Usage"]

#: Version of the :meth:`State.to_dict` layout. :meth:`State.from_dict` also reads
#: version 2 (before the :class:`Tally`), as a state whose tally is unknown.
FORMAT_VERSION = 3
_READABLE_VERSIONS = (2, FORMAT_VERSION)


@dataclass(slots=True)
class Tally:
    """What a summary of the whole log counts besides conversations (``convlog info``):
    records per source, the messages' own times and the messages the recorder dropped.
    It is part of the state so that checkpoints carry it, and a summary reads only the
    records after the newest checkpoint.

    Fields:
        sources: records per ``source`` (``-`` when the field is not a string).
        own_messages: ``message`` records whose payload carries a time of its own
            (:func:`convlog.core.view.own_time`).
        first_own, last_own: the earliest and the latest of those times (RFC 3339 UTC
            text as records write it, which compares as time), or None.
        dropped: messages the ``recorder.dropped`` records say were dropped (the sum of
            their ``data.messages`` that are positive integers).
    """

    sources: dict[str, int] = field(default_factory=dict)
    own_messages: int = 0
    first_own: str | None = None
    last_own: str | None = None
    dropped: int = 0

    def add(self, record: Mapping[str, Any], kind: str) -> None:
        """Count one record (folded, so not a replay) of kind ``kind``."""
        source = record.get("source")
        source = source if source.__class__ is str else "-"
        self.sources[source] = self.sources.get(source, 0) + 1
        if kind == "message":
            own = own_time(record)  # type: ignore[arg-type]
            if own is not None:
                self.own_messages += 1
                if self.first_own is None or own < self.first_own:
                    self.first_own = own
                if self.last_own is None or own > self.last_own:
                    self.last_own = own
        elif kind == "recorder.dropped":
            data = record.get("data")
            messages = data.get("messages") if isinstance(data, Mapping) else None
            if messages.__class__ is int and messages > 0:
                self.dropped += messages

    def copy(self) -> Tally:
        """Return an independent copy."""
        return replace(self, sources=dict(self.sources))

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"sources", "own_messages", "first_own", "last_own", "dropped"}``."""
        return {"sources": dict(self.sources), "own_messages": self.own_messages, "first_own": self.first_own,
                "last_own": self.last_own, "dropped": self.dropped}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Tally:
        """Invert :meth:`to_dict`. Raises KeyError when a field is missing."""
        return cls(dict(d["sources"]), d["own_messages"], d["first_own"], d["last_own"], d["dropped"])


@dataclass(slots=True)
class Usage:
    """Token and cost usage added up from ``llm.request`` records.

    Fields:
        requests: number of requests.
        input_tokens, output_tokens: token totals.
        cost_usd: cost total in US dollars (float; sums in record order).
        models: requests per model name (requests without a model are not listed).
    """

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    models: dict[str, int] = field(default_factory=dict)

    def copy(self) -> Usage:
        """Return an independent copy."""
        return replace(self, models=dict(self.models))

    def _add(
        self, input_tokens: int, output_tokens: int, cost_usd: float, model: str | None
    ) -> None:
        self.requests += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost_usd += cost_usd
        if model is not None:
            self.models[model] = self.models.get(model, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"requests", "input_tokens", "output_tokens", "cost_usd", "models"}``."""
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "models": dict(self.models),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Usage:
        """Invert :meth:`to_dict`. Raises KeyError when a field is missing."""
        return cls(
            d["requests"],
            d["input_tokens"],
            d["output_tokens"],
            float(d["cost_usd"]),
            dict(d["models"]),
        )


@dataclass(slots=True)
class Stream:
    """A streamed message assembled from ``message.delta`` / ``message.end`` records.

    Fields:
        session, message_id: its key (``State.streams[(session, message_id)]``).
        first_seq: its first record (first delta, or the end of a one-shot stream).
        delta_seqs: ``array('q')``: every ``message.delta`` record of it, in log order
            (including the first one, and deltas that arrive after the end).
        end_seq: the ``message.end`` record, or None while it is open.
        complete: True once ended. An open stream is reported by
            :meth:`State.incomplete_streams`; the fold never completes or drops it.
        source: the ``source`` of its first record (``sub``, ``pull``, ...); deltas
            from another source are a copy's and are not added.
    """

    session: str
    message_id: str
    first_seq: int
    delta_seqs: array = field(default_factory=lambda: array("q"))
    end_seq: int | None = None
    complete: bool = False
    source: str | None = None

    def copy(self) -> Stream:
        """Return an independent copy."""
        return replace(self, delta_seqs=array("q", self.delta_seqs))

    def to_dict(self) -> dict[str, Any]:
        """Return the stream as a dict with its field names as keys (JSON-serializable)."""
        return {
            "session": self.session,
            "message_id": self.message_id,
            "first_seq": self.first_seq,
            "delta_seqs": _array_to_text(self.delta_seqs),
            "end_seq": self.end_seq,
            "complete": self.complete,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Stream:
        """Invert :meth:`to_dict`. Raises KeyError when a field is missing."""
        return cls(
            d["session"],
            d["message_id"],
            d["first_seq"],
            _array_from_text("q", d["delta_seqs"]),
            d["end_seq"],
            bool(d["complete"]),
            d.get("source"),
        )


@dataclass(slots=True)
class Session:
    """One conversation (or branch of one) as folded from the log.

    Fields:
        id: the session id.
        first_seq: the record that created it.
        last_seq, last_ts: the last valid record naming it (``ts`` None when that
            record had no string ``ts``).
        parent, fork_at, branch: for a fork, the parent id, the number of parent
            messages it shares, and the branch name (all None otherwise).
        title: from ``session.start`` ``data.title``, or None.
        deleted_seq: the ``session.delete`` tombstone, or None when live.
        visible: the visible messages of this branch (:class:`Refs`; message ids unique).
        rewinds: every applied rewind, in order, with the seqs it dropped.
        checkpoints: name -> :class:`SessionCheckpoint` (a reused name overwrites).
        crystals: every crystal, in order; see :meth:`State.resume_refs`.
        speakers: every sender seen in this session or inherited by a fork, in order of
            first sight; ``Refs.senders`` index it.
        participants: sorted unique senders of every message that has been visible
            in this session (including those a fork inherited).
        copies: message id -> number of extra copies received (beyond the first).
        duplicates: total extra copies (the sum of ``copies``).
        usage: usage of ``llm.request`` records naming this session.
    """

    id: str
    first_seq: int
    last_seq: int
    last_ts: str | None = None
    parent: str | None = None
    fork_at: int | None = None
    branch: str | None = None
    title: str | None = None
    deleted_seq: int | None = None
    visible: Refs = field(default_factory=Refs)
    rewinds: list[Rewind] = field(default_factory=list)
    checkpoints: dict[str, SessionCheckpoint] = field(default_factory=dict)
    crystals: list[Crystal] = field(default_factory=list)
    speakers: list[str] = field(default_factory=list)
    participants: list[str] = field(default_factory=list)
    copies: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    usage: Usage = field(default_factory=Usage)
    # Derived, so neither compared nor serialized; built on first use, since most
    # sessions of a loaded checkpoint never receive another message.
    _keys: set[int] | None = field(default=None, init=False, repr=False, compare=False)
    _speaker_index: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def deleted(self) -> bool:
        """True while the session carries a tombstone."""
        return self.deleted_seq is not None

    def copy(self) -> Session:
        """Return a copy that shares nothing mutable with this session."""
        return replace(
            self,
            visible=self.visible.copy(),
            rewinds=list(self.rewinds),
            checkpoints=dict(self.checkpoints),
            crystals=list(self.crystals),
            speakers=list(self.speakers),
            participants=list(self.participants),
            copies=dict(self.copies),
            usage=self.usage.copy(),
        )

    def _touch(self, seq: int, ts: str | None) -> None:
        self.last_seq = seq
        self.last_ts = ts

    def _visible_keys(self) -> set[int]:
        if self._keys is None:
            self._keys = set(self.visible.keys)
        return self._keys

    def _set_visible(self, refs: Refs) -> None:
        self.visible = refs
        self._keys = None

    def _speaker(self, sender: str | None) -> int:
        """The index of ``sender`` in ``speakers`` (added on first sight), -1 for None."""
        if sender is None:
            return -1
        if self._speaker_index is None:
            self._speaker_index = {name: i for i, name in enumerate(self.speakers)}
        index = self._speaker_index.get(sender)
        if index is None:
            index = self._speaker_index[sender] = len(self.speakers)
            self.speakers.append(sender)
        return index

    def _add(self, seq: int, message_id: str, sender: str | None) -> bool:
        """Append a message, or count it as a copy when its id is already visible.
        Returns True when appended."""
        key = message_key(message_id)
        keys = self._visible_keys()
        if key in keys:
            self._count_copy(message_id)
            return False
        self.visible.append(seq, key, self._speaker(sender))
        keys.add(key)
        self._note_participant(sender)
        return True

    def _count_copy(self, message_id: str) -> None:
        self.copies[message_id] = self.copies.get(message_id, 0) + 1
        self.duplicates += 1

    def _note_participant(self, sender: str | None) -> None:
        if sender is None:
            return
        i = bisect.bisect_left(self.participants, sender)
        if i == len(self.participants) or self.participants[i] != sender:
            self.participants.insert(i, sender)

    def to_dict(self, blob: bytearray | None = None) -> dict[str, Any]:
        """Return the session as a JSON-serializable dict (field names as keys; the
        :class:`Refs` as their base64 columns, or in ``blob``: see :meth:`Refs.to_dict`)."""
        return {
            "id": self.id,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "last_ts": self.last_ts,
            "parent": self.parent,
            "fork_at": self.fork_at,
            "branch": self.branch,
            "title": self.title,
            "deleted_seq": self.deleted_seq,
            "visible": self.visible.to_dict(blob),
            "rewinds": [rewind.to_dict() for rewind in self.rewinds],
            "checkpoints": {name: cp.to_dict(blob) for name, cp in self.checkpoints.items()},
            "crystals": [crystal.to_dict() for crystal in self.crystals],
            "speakers": list(self.speakers),
            "participants": list(self.participants),
            "copies": dict(self.copies),
            "duplicates": self.duplicates,
            "usage": self.usage.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], blob: Any = None) -> Session:
        """Invert :meth:`to_dict` (``blob``: see :meth:`Refs.from_dict`). Raises
        KeyError/ValueError when malformed."""
        return cls(
            id=d["id"],
            first_seq=d["first_seq"],
            last_seq=d["last_seq"],
            last_ts=d["last_ts"],
            parent=d["parent"],
            fork_at=d["fork_at"],
            branch=d["branch"],
            title=d["title"],
            deleted_seq=d["deleted_seq"],
            visible=Refs.from_dict(d["visible"], blob),
            rewinds=[Rewind.from_dict(item) for item in d["rewinds"]],
            checkpoints={
                name: SessionCheckpoint.from_dict(item, blob) for name, item in d["checkpoints"].items()
            },
            crystals=[Crystal.from_dict(item) for item in d["crystals"]],
            speakers=list(d["speakers"]),
            participants=list(d["participants"]),
            copies=dict(d["copies"]),
            duplicates=d["duplicates"],
            usage=Usage.from_dict(d["usage"]),
        )


@dataclass(slots=True)
class State:
    """Everything folded from a log so far.

    Fields:
        last_seq: the highest seq folded (0 before any); records at or below it are
            ignored by :func:`fold`.
        records: number of records folded (replays excluded, rejected records included).
        kinds: kind -> number of records of that kind (every kind, known or not).
        sessions: session id -> :class:`Session`, in order of first sight.
        streams: ``(session, message_id)`` -> :class:`Stream`, in order of first sight.
        gaps: every ``recorder.gap``, in order.
        errors: every rejected record, in order.
        usage: usage of every ``llm.request``, with or without a session.
        unsessioned: ``message`` records that had no session (counted, not stored).
        tally: sources, own times and drops of every record (:class:`Tally`); None
            when the state was read from a checkpoint written before it was kept
            (format 2), so it is unknown.
        chain: the ``chain`` link of the last record folded (:mod:`convlog.core.chain`),
            None when it carries none; checkpoints and the base record it as the
            chain head at their cut.

    Equality (``==``) compares every field, so two states are equal exactly when they
    fold to the same conversations. Folding mutates the state in place: use
    :meth:`copy` to keep a snapshot.
    """

    last_seq: int = 0
    records: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    streams: dict[tuple[str, str], Stream] = field(default_factory=dict)
    gaps: list[Gap] = field(default_factory=list)
    errors: list[FoldError] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    unsessioned: int = 0
    tally: Tally | None = field(default_factory=Tally)
    chain: str | None = None

    # ----------------------------------------------------------------- snapshots

    def copy(self) -> State:
        """Return a copy such that folding into either never changes the other.

        Immutable values (refs, rewinds, checkpoints, crystals, gaps, errors) are
        shared; every list, dict, session, stream and usage is copied. O(state size).
        """
        return State(
            last_seq=self.last_seq,
            records=self.records,
            kinds=dict(self.kinds),
            sessions={sid: session.copy() for sid, session in self.sessions.items()},
            streams={key: stream.copy() for key, stream in self.streams.items()},
            gaps=list(self.gaps),
            errors=list(self.errors),
            usage=self.usage.copy(),
            unsessioned=self.unsessioned,
            tally=None if self.tally is None else self.tally.copy(),
            chain=self.chain,
        )

    def to_dict(self, blob: bytearray | None = None) -> dict[str, Any]:
        """Return the state as plain JSON-serializable data (dicts, lists, str, int, float,
        bool, None), for checkpoints.

        Layout: ``{"version": FORMAT_VERSION, "last_seq", "records", "kinds",
        "unsessioned", "usage", "tally" (or null), "sessions": [session dict, ...],
        "streams": [stream dict, ...], "gaps": [...], "errors": [...], "chain"}``; sessions and
        streams are lists in order of first sight (streams carry their own key fields).

        Args:
            blob: a binary part to put the message columns in (see :meth:`Refs.to_dict`),
                or None to keep them in the dict as base64.
        """
        return {
            "version": FORMAT_VERSION,
            "last_seq": self.last_seq,
            "records": self.records,
            "kinds": dict(self.kinds),
            "unsessioned": self.unsessioned,
            "usage": self.usage.to_dict(),
            "tally": None if self.tally is None else self.tally.to_dict(),
            "sessions": [session.to_dict(blob) for session in self.sessions.values()],
            "streams": [stream.to_dict() for stream in self.streams.values()],
            "gaps": [gap.to_dict() for gap in self.gaps],
            "errors": [error.to_dict() for error in self.errors],
            "chain": self.chain,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], blob: Any = None) -> State:
        """Rebuild a state from :meth:`to_dict` output (also after a JSON round trip).

        ``State.from_dict(s.to_dict()) == s`` for every state ``s``, and
        ``State.from_dict(s.to_dict(b), bytes(b)) == s``.

        Args:
            d: the serialized state.
            blob: the binary part :meth:`to_dict` filled, when one was given; the
                sessions' message columns stay views of it until used (keep it alive
                and unchanged: an ``mmap`` of a checkpoint file, or bytes).

        A version 2 state (written before the tally was kept) is read with
        ``tally=None``.

        Raises:
            ValueError: when ``d["version"]`` is neither 2 nor :data:`FORMAT_VERSION`.
            KeyError, TypeError: when ``d`` is not shaped like :meth:`to_dict` output.
        """
        if d.get("version") not in _READABLE_VERSIONS:
            raise ValueError(f"unsupported fold state version: {d.get('version')!r}")
        tally = d["tally"] if d["version"] == FORMAT_VERSION else None
        sessions = [Session.from_dict(item, blob) for item in d["sessions"]]
        streams = [Stream.from_dict(item) for item in d["streams"]]
        return cls(
            last_seq=d["last_seq"],
            records=d["records"],
            kinds=dict(d["kinds"]),
            sessions={session.id: session for session in sessions},
            streams={(stream.session, stream.message_id): stream for stream in streams},
            gaps=[Gap.from_dict(item) for item in d["gaps"]],
            errors=[FoldError.from_dict(item) for item in d["errors"]],
            usage=Usage.from_dict(d["usage"]),
            unsessioned=d["unsessioned"],
            tally=None if tally is None else Tally.from_dict(tally),
            chain=d.get("chain") if isinstance(d.get("chain"), str) else None,
        )

    # ----------------------------------------------------------------- queries

    def visible(self, session_id: str) -> list[int]:
        """Return a new list of the seqs of the session's visible messages, oldest first
        (the record that brought each; see :class:`Refs`).

        Raises:
            KeyError: when there is no session ``session_id``.
        """
        return self.sessions[session_id].visible.seqs.tolist()

    def session_list(self, include_deleted: bool = False) -> list[Session]:
        """Return the sessions sorted by ``first_seq`` ascending.

        Args:
            include_deleted: also list sessions that carry a tombstone.

        Returns:
            the :class:`Session` objects themselves (do not mutate them).
        """
        sessions = (s for s in self.sessions.values() if include_deleted or s.deleted_seq is None)
        return sorted(sessions, key=lambda s: s.first_seq)

    def incomplete_streams(self) -> list[Stream]:
        """Return the streams that have no ``message.end`` yet, by ``first_seq``.

        Returns:
            the :class:`Stream` objects themselves (do not mutate them).
        """
        return [stream for stream in self.streams.values() if not stream.complete]

    def resume_refs(self, session_id: str) -> tuple[Crystal | None, list[int]]:
        """Return what a resumed agent needs: a summary and the messages after it.

        The crystal is the latest one whose covered messages are still the session's
        visible prefix (a rewind below a crystal's ``upto`` sets it aside until a
        rewind brings those messages back); the refs are the visible messages after
        its ``upto``, as seqs (see :meth:`visible`). With no such crystal:
        ``(None, all visible seqs)``.

        Raises:
            KeyError: when there is no session ``session_id``.
        """
        session = self.sessions[session_id]
        seqs = session.visible.seqs
        for crystal in reversed(session.crystals):
            n = crystal.upto
            if n > len(seqs):
                continue
            if n == 0 or seqs[n - 1] == crystal.last_ref_seq:
                return crystal, seqs[n:].tolist()
        return None, seqs.tolist()
