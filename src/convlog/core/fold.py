"""Fold log records into conversation state (DESIGN.md, "Fold semantics").

Pure code: no I/O, no clock, no randomness, no logging. The state after a
sequence of records depends only on those records (and the state folded into).

    state = fold_all(records)            # or: state = fold(state, record), one at a time
    state.visible("s1")                  # -> [seq, ...]
    crystal, refs = state.resume_refs("s1")
    fold_all(records, observe=steps.append)   # also tell each applied Step (history views)

The state refers to records by ``seq`` only; message bodies, ids, roles, deltas and
crystal summaries stay in the log and are read from it when shown. A session keeps
20 bytes a visible message (:class:`Refs`: seq, a 64-bit key of the message id for
recognising copies, a sender index), so the state stays small while the log grows.

Records are dicts as parsed from one log line (:func:`convlog.core.record.parse_line`).
Each ``kind`` has a handler in a dispatch table (:data:`_HANDLERS`). A handler
first validates, then mutates; a record it rejects (bad parameter, unknown
session, count out of range, unknown checkpoint, ...) leaves the state
unchanged except for the record counters and one :class:`FoldError` appended to
``State.errors``. :func:`fold` never raises for a dict with an ``int`` seq and a
``str`` kind, whatever its other fields hold.

Counts (``at``, ``to``, ``upto``) are message counts: ``N`` means "the first N
visible messages", ``0 <= N <= len(visible)``; booleans are not counts.

Rules by kind (parameters are read from ``data``; ids from ``meta``):

* ``message``: appended to its session (created on first sight); no session ->
  counted in ``State.unsessioned``. ``meta.message_id`` must be a string (missing:
  ``"seq:<seq>"``); a non-string ``sender``/``role`` is read as None.
* ``message.delta`` / ``message.end``: need a session and ``meta.message_id``.
  The first delta opens a :class:`Stream` and makes it visible; an end completes
  it; an end with no stream is a one-shot stream; a second end counts as a copy.
  Deltas that arrive through another ``source`` than the stream's first record (the
  bus copy and the PUSHed copy of one stream) belong to a copy and are not added.
* Copies of a message id already visible in the session are not appended again;
  ``Session.copies`` / ``Session.duplicates`` count them.
* ``session.start`` creates a session, revives a deleted one, and fills in
  ``title`` when the session has none; otherwise it only touches the session.
* ``session.fork`` / ``rewind`` / ``checkpoint`` / ``crystal`` / ``delete``: see
  their handlers. Rewind, checkpoint and crystal also apply to a deleted session;
  a fork cannot start from one. A repeated delete keeps the first tombstone.
* ``llm.request``: creates its session on first sight (so its usage is kept).
  Token counts are integers in ``0..2**53`` (integral floats accepted); ``cost_usd``
  a finite number >= 0. Top-level fields win over ``data.usage`` ones.
* ``recorder.gap``: ``publisher`` (str or None), ``0 <= first <= last < 2**63``.
* Any other kind is only counted.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import math
import sys
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "FORMAT_VERSION",
    "Crystal",
    "FoldError",
    "Gap",
    "Refs",
    "Rewind",
    "Session",
    "SessionCheckpoint",
    "State",
    "Step",
    "Stream",
    "Usage",
    "fold",
    "fold_all",
    "message_id",
    "message_key",
]

#: Version of the :meth:`State.to_dict` layout; :meth:`State.from_dict` refuses others.
FORMAT_VERSION = 2

#: Largest token count accepted in one ``llm.request`` field (exact in a float too).
_MAX_TOKENS = 2**53
#: Largest running token total, and largest gap bound: fits a signed 64-bit integer,
#: so checkpoints (orjson) and database projections can hold it.
_MAX_INT64 = 2**63 - 1


# --------------------------------------------------------------------------- values


def message_key(message_id: str) -> int:
    """Return the 64-bit key the fold recognises a message id by.

    The first 8 bytes of BLAKE2b (RFC 7693) of the id's UTF-8 bytes, as a signed
    little-endian integer: stable across processes and machines (unlike ``hash``).
    Two different ids in one session share a key with probability about
    ``n**2 / 2**65`` for ``n`` messages; the second would then be counted as a copy.

    Args:
        message_id: the message id (``meta.message_id`` or ``"seq:<seq>"``).

    Returns:
        an int in ``-2**63 .. 2**63 - 1``.
    """
    digest = hashlib.blake2b(message_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _array_to_text(values: array) -> str:
    """An int array as base64 of its little-endian bytes (compact in a checkpoint)."""
    if sys.byteorder != "little":
        values = array(values.typecode, values)
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def _array_from_text(typecode: str, text: str) -> array:
    """Invert :func:`_array_to_text`. Raises ValueError (binascii.Error) when malformed."""
    values = array(typecode)
    values.frombytes(base64.b64decode(text, validate=True))
    if sys.byteorder != "little":
        values.byteswap()
    return values


class Refs:
    """A list of messages, by reference to their records, stored as three int columns.

    Message bodies, roles and ids stay in the log; this holds 20 bytes a message.

    Columns (attributes):
        seqs: ``array('q')``; the record that brought each message: the ``message``
            record, or the first record of a stream (its first delta, or the end of a
            one-shot stream). Read the record to show the message.
        keys: ``array('q')``; :func:`message_key` of each message id.
        senders: ``array('i')``; index of each message's sender in the owning
            session's ``speakers`` list, or -1 when it had none.

    A :class:`Refs` read from a checkpoint's binary part (:meth:`from_dict` with a
    buffer) stays a view of those bytes until a column is first used, so loading a
    checkpoint costs nothing per message for the sessions that are never touched, and
    writing the next checkpoint copies their bytes as they are.

    ``len(refs)`` is the number of messages; ``refs[i:j]`` is a new :class:`Refs`.
    Equality compares the three columns.
    """

    __slots__ = ("_keys", "_senders", "_seqs", "_view")

    def __init__(self, seqs: array | None = None, keys: array | None = None, senders: array | None = None) -> None:
        self._seqs = array("q") if seqs is None else seqs
        self._keys = array("q") if keys is None else keys
        self._senders = array("i") if senders is None else senders
        # (buffer, offset, count) while the columns are still bytes in a checkpoint.
        self._view: tuple[Any, int, int] | None = None

    @classmethod
    def _of_view(cls, buffer: Any, offset: int, count: int) -> Refs:
        refs = cls.__new__(cls)
        refs._seqs = refs._keys = refs._senders = None  # type: ignore[assignment]
        refs._view = (buffer, offset, count)
        return refs

    def _load(self) -> None:
        buffer, offset, n = self._view  # type: ignore[misc]
        columns = []
        for typecode, size in (("q", 8), ("q", 8), ("i", 4)):
            column = array(typecode)
            column.frombytes(buffer[offset : offset + size * n])
            if sys.byteorder != "little":
                column.byteswap()
            columns.append(column)
            offset += size * n
        self._seqs, self._keys, self._senders = columns
        self._view = None

    @property
    def seqs(self) -> array:
        if self._view is not None:
            self._load()
        return self._seqs

    @property
    def keys(self) -> array:
        if self._view is not None:
            self._load()
        return self._keys

    @property
    def senders(self) -> array:
        if self._view is not None:
            self._load()
        return self._senders

    def __len__(self) -> int:
        return self._view[2] if self._view is not None else len(self._seqs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Refs):
            return NotImplemented
        return self.seqs == other.seqs and self.keys == other.keys and self.senders == other.senders

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Refs(seqs={self.seqs.tolist()!r}, keys={self.keys.tolist()!r}, senders={self.senders.tolist()!r})"

    def __getitem__(self, index: slice) -> Refs:
        if not isinstance(index, slice):
            raise TypeError("Refs supports slices only; read .seqs[i] for one message")
        return Refs(self.seqs[index], self.keys[index], self.senders[index])

    def copy(self) -> Refs:
        """Return an independent copy (a view stays a view: its bytes are never written)."""
        if self._view is not None:
            return Refs._of_view(*self._view)
        return self[:]

    def append(self, seq: int, key: int, sender: int) -> None:
        """Append one message (``sender`` is a speaker index or -1)."""
        self.seqs.append(seq)
        self.keys.append(key)
        self.senders.append(sender)

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` messages."""
        del self.seqs[n:]
        del self.keys[n:]
        del self.senders[n:]

    def to_dict(self, blob: bytearray | None = None) -> dict[str, Any]:
        """Serialize for a checkpoint.

        Args:
            blob: the checkpoint's binary part, or None. Given, the columns are appended
                to it (seqs, keys, senders, little-endian: 20 bytes a message) and the
                result is ``{"blob": [offset, count]}``; else the result holds each
                column as base64 of the same bytes: ``{"seqs", "keys", "senders"}``.
        """
        if blob is None:
            return {
                "seqs": _array_to_text(self.seqs),
                "keys": _array_to_text(self.keys),
                "senders": _array_to_text(self.senders),
            }
        offset = len(blob)
        if self._view is not None:
            buffer, start, n = self._view
            blob += buffer[start : start + 20 * n]
            return {"blob": [offset, n]}
        for column in (self._seqs, self._keys, self._senders):
            if sys.byteorder != "little":
                column = array(column.typecode, column)
                column.byteswap()
            blob += column.tobytes()
        return {"blob": [offset, len(self._seqs)]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], blob: Any = None) -> Refs:
        """Invert :meth:`to_dict`.

        Args:
            d: the serialized form.
            blob: the checkpoint's binary part (bytes, or a memoryview of an mmap) when
                ``d`` points into it; the result is then a view of it.

        Raises:
            KeyError: a column is missing.
            ValueError: a column is malformed, the columns differ in length, or the
                blob range lies outside ``blob``.
        """
        if "blob" in d:
            offset, n = d["blob"]
            if blob is None or not (_is_int(offset) and _is_int(n) and offset >= 0 and n >= 0):
                raise ValueError("refs point into a binary part that is missing or malformed")
            if offset + 20 * n > len(blob):
                raise ValueError("refs point past the end of the binary part")
            return cls._of_view(blob, offset, n)
        refs = cls(
            _array_from_text("q", d["seqs"]),
            _array_from_text("q", d["keys"]),
            _array_from_text("i", d["senders"]),
        )
        if not len(refs.seqs) == len(refs.keys) == len(refs.senders):
            raise ValueError("refs columns differ in length")
        return refs


@dataclass(frozen=True, slots=True)
class Rewind:
    """A ``session.rewind`` that was applied.

    Fields:
        seq: the rewind record.
        from_count: visible messages before it.
        to_count: visible messages after it.
        dropped: the seqs of the messages that left the visible list, in their former
            order (they stay in the log: history is never destroyed).
    """

    seq: int
    from_count: int
    to_count: int
    dropped: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"seq", "from_count", "to_count", "dropped": [seq, ...]}``."""
        return {
            "seq": self.seq,
            "from_count": self.from_count,
            "to_count": self.to_count,
            "dropped": list(self.dropped),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rewind:
        """Invert :meth:`to_dict`. Raises KeyError when a field is missing."""
        return cls(d["seq"], d["from_count"], d["to_count"], tuple(d["dropped"]))


@dataclass(frozen=True, slots=True)
class SessionCheckpoint:
    """A named point of a session (``session.checkpoint``).

    Fields:
        seq: the checkpoint record.
        refs: exactly the visible messages it names (the first ``at`` at that time).
            Never mutated: a rewind to it copies them.
    """

    seq: int
    refs: Refs

    def to_dict(self, blob: bytearray | None = None) -> dict[str, Any]:
        """Return ``{"seq", "refs": Refs dict}`` (see :meth:`Refs.to_dict` for ``blob``)."""
        return {"seq": self.seq, "refs": self.refs.to_dict(blob)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], blob: Any = None) -> SessionCheckpoint:
        """Invert :meth:`to_dict`. Raises KeyError/ValueError when malformed."""
        return cls(d["seq"], Refs.from_dict(d["refs"], blob))


@dataclass(frozen=True, slots=True)
class Crystal:
    """A summary of a session's first ``upto`` visible messages (``session.crystal``).

    The summary text is not stored: read it from record ``seq`` in the log.

    Fields:
        seq: the crystal record.
        upto: how many visible messages it covers.
        last_ref_seq: ``seq`` of the last covered ref (None when ``upto == 0``); lets
            :meth:`State.resume_refs` tell whether the covered messages are still the
            visible prefix after a rewind.
    """

    seq: int
    upto: int
    last_ref_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"seq", "upto", "last_ref_seq"}``."""
        return {"seq": self.seq, "upto": self.upto, "last_ref_seq": self.last_ref_seq}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Crystal:
        """Invert :meth:`to_dict`. Raises KeyError when a field is missing."""
        return cls(d["seq"], d["upto"], d["last_ref_seq"])


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages known to be missing (``recorder.gap``).

    Fields:
        seq: the gap record.
        publisher: the publisher whose sequence numbers jumped (str or None).
        first, last: the missing publisher sequence numbers, inclusive.
        ts: the gap record's ``ts`` (RFC 3339) or None.
    """

    seq: int
    publisher: str | None
    first: int
    last: int
    ts: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"seq", "publisher", "first", "last", "ts"}``."""
        return {
            "seq": self.seq,
            "publisher": self.publisher,
            "first": self.first,
            "last": self.last,
            "ts": self.ts,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Gap:
        """Invert :meth:`to_dict`. Raises KeyError when a field is missing."""
        return cls(d["seq"], d["publisher"], d["first"], d["last"], d["ts"])


@dataclass(frozen=True, slots=True)
class FoldError:
    """A record the fold rejected; it changed nothing but the record counters.

    Fields:
        seq, kind: the record's.
        session: the record's session when it is a string, else None.
        reason: why, in words.
    """

    seq: int
    kind: str
    session: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"seq", "kind", "session", "reason"}``."""
        return {"seq": self.seq, "kind": self.kind, "session": self.session, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FoldError:
        """Invert :meth:`to_dict`. Raises KeyError when a field is missing."""
        return cls(d["seq"], d["kind"], d["session"], d["reason"])


# --------------------------------------------------------------------------- mutable parts


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
        )

    def to_dict(self, blob: bytearray | None = None) -> dict[str, Any]:
        """Return the state as plain JSON-serializable data (dicts, lists, str, int, float,
        bool, None), for checkpoints.

        Layout: ``{"version": FORMAT_VERSION, "last_seq", "records", "kinds",
        "unsessioned", "usage", "sessions": [session dict, ...], "streams": [stream
        dict, ...], "gaps": [...], "errors": [...]}``; sessions and streams are lists in
        order of first sight (streams carry their own key fields).

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
            "sessions": [session.to_dict(blob) for session in self.sessions.values()],
            "streams": [stream.to_dict() for stream in self.streams.values()],
            "gaps": [gap.to_dict() for gap in self.gaps],
            "errors": [error.to_dict() for error in self.errors],
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

        Raises:
            ValueError: when ``d["version"]`` is not :data:`FORMAT_VERSION`.
            KeyError, TypeError: when ``d`` is not shaped like :meth:`to_dict` output.
        """
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported fold state version: {d.get('version')!r}")
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


# --------------------------------------------------------------------------- folding


@dataclass(frozen=True, slots=True)
class Step:
    """What one record did to the state, as told to an observer of :func:`fold`.

    An ordinary fold builds no steps: they exist only when :func:`fold` (or
    :func:`fold_all`) is given an ``observe`` callback, which then receives each step
    right after the state changed (the state is current: ``state.sessions[session]``
    shows the step applied). History views (``convlog export --history``) are built
    from them, so the fold's rules live in the fold alone.

    Fields:
        effect: what happened (the keys of ``detail`` for each):

            * ``message``: a message appended to the visible list of ``session``
              (``message_id``, ``sender``; ``index``: its 1-based position);
            * ``copy``: a copy of a message already visible (or of a stream already
              complete) counted, nothing appended (``message_id``);
            * ``stream.delta`` / ``stream.end``: a part added to an open stream, or
              the end that completed it (``message_id``);
            * ``start``: a ``session.start`` (``title`` as recorded or None,
              ``created``, ``revived``: booleans);
            * ``fork``: ``session`` is the new fork (``parent``, ``at``: parent
              messages shared, ``branch``: name or None);
            * ``rewind``: ``rewind`` (the :class:`Rewind` appended, with the seqs it
              hid), ``checkpoint`` (the checkpoint name, None for a rewind ``to`` N);
            * ``checkpoint``: ``name``, ``at`` (messages it names);
            * ``crystal``: ``crystal`` (the :class:`Crystal` appended), ``summary``;
            * ``delete``: ``repeated`` (True when the session already had a tombstone);
            * ``llm.request``: the counts added: ``model`` (str or None),
              ``input_tokens``, ``output_tokens`` (ints), ``cost_usd`` (float, USD);
            * ``gap``: ``gap`` (the :class:`Gap` appended);
            * ``rejected``: the record was refused: ``error`` (the :class:`FoldError`
              appended), ``kind``.

            Records that change only counters (unknown kinds, a stream part from a
            copy's source, a ``message`` without a session) give no step.
        seq: the record's seq.
        session: the session it applied to (the record's session when a string, else
            None).
        detail: the effect's facts, as listed above.
    """

    effect: str
    seq: int
    session: str | None
    detail: Mapping[str, Any]


#: Receives each :class:`Step` of an observed fold.
Observer = Callable[[Step], None]


class _Invalid(Exception):
    """Raised by a handler, before it changes anything, to reject its record."""


@dataclass(slots=True)
class _Record:
    """The fields of a record the handlers read, with ``meta`` and ``ts`` normalized."""

    seq: int
    session: Any
    data: Any
    meta: Mapping[str, Any]
    ts: str | None
    source: str | None = None
    observe: Observer | None = None


_Handler = Callable[[State, _Record], None]


def fold(state: State, record: Mapping[str, Any], observe: Observer | None = None) -> State:
    """Apply one record to ``state``.

    The state is updated **in place** and returned: the caller owns it linearly. Keep
    a snapshot with ``state.copy()`` (or ``to_dict()``) before folding further.

    A record whose seq is ``<= state.last_seq`` is ignored entirely (replaying a log
    over a checkpoint, or the same record twice, is idempotent). Otherwise
    ``last_seq``, ``records`` and ``kinds`` are updated for every kind, and the
    kind's handler, if any, applies it. A record the handler rejects changes nothing
    else but appends a :class:`FoldError` to ``state.errors``.

    Args:
        state: the state to fold into (mutated).
        record: a parsed log record: ``seq`` (int), ``kind`` (str), and optionally
            ``ts``, ``session``, ``data``, ``meta`` of any type.
        observe: called with each :class:`Step` the record makes (none or one),
            right after the state changed; None (the default) builds no steps.

    Returns:
        ``state``.

    Raises:
        ValueError: only when ``record`` is not a mapping with an ``int`` seq (not a
            bool) and a ``str`` kind; never for anything else in the record.
    """
    if not isinstance(record, Mapping):
        raise ValueError("record is not a mapping")
    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise ValueError("record has no integer seq")
    kind = record.get("kind")
    if not isinstance(kind, str):
        raise ValueError("record has no string kind")
    if seq <= state.last_seq:
        return state
    state.last_seq = seq
    state.records += 1
    state.kinds[kind] = state.kinds.get(kind, 0) + 1
    handler = _HANDLERS.get(kind)
    if handler is None:
        return state
    meta = record.get("meta")
    ts = record.get("ts")
    rec = _Record(
        seq=seq,
        session=record.get("session"),
        data=record.get("data"),
        meta=meta if isinstance(meta, Mapping) else {},
        ts=ts if isinstance(ts, str) else None,
        source=source if isinstance(source := record.get("source"), str) else None,
        observe=observe,
    )
    try:
        handler(state, rec)
    except _Invalid as exc:
        session = rec.session if isinstance(rec.session, str) else None
        error = FoldError(seq, kind, session, str(exc))
        state.errors.append(error)
        if observe is not None:
            observe(Step("rejected", seq, session, {"error": error, "kind": kind}))
    return state


def fold_all(
    records: Iterable[Mapping[str, Any]], state: State | None = None, observe: Observer | None = None
) -> State:
    """Fold every record, in order, into ``state`` (a new :class:`State` when None).

    Args:
        records: parsed log records (see :func:`fold`).
        state: the state to continue from; it is mutated in place.
        observe: receives every :class:`Step` (see :func:`fold`); None builds none.

    Returns:
        the folded state (``state`` itself when one was given).

    Raises:
        ValueError: as :func:`fold`.
    """
    if state is None:
        state = State()
    for record in records:
        fold(state, record, observe)
    return state


# --------------------------------------------------------------------------- validation


def _session_id(rec: _Record) -> str:
    """The record's session id; rejects a missing or non-string one."""
    sid = rec.session
    if isinstance(sid, str):
        return sid
    if sid is None:
        raise _Invalid("record has no session")
    raise _Invalid(f"session is not a string ({type(sid).__name__})")


def _existing_session(state: State, rec: _Record) -> Session:
    sid = _session_id(rec)
    session = state.sessions.get(sid)
    if session is None:
        raise _Invalid(f"unknown session {sid!r}")
    return session


def _open_session(state: State, sid: str, rec: _Record) -> Session:
    """The session ``sid``, created on first sight; marks it touched by ``rec``."""
    session = state.sessions.get(sid)
    if session is None:
        session = Session(id=sid, first_seq=rec.seq, last_seq=rec.seq, last_ts=rec.ts)
        state.sessions[sid] = session
    else:
        session._touch(rec.seq, rec.ts)
    return session


def _params(rec: _Record) -> Mapping[str, Any]:
    """The record's ``data`` as a parameter object (None counts as no parameters)."""
    if isinstance(rec.data, Mapping):
        return rec.data
    if rec.data is None:
        return {}
    raise _Invalid(f"data is not an object ({type(rec.data).__name__})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(params: Mapping[str, Any], name: str, high: int) -> int:
    """Parameter ``name``: a message count in ``0..high``, default ``high``."""
    value = params.get(name)
    if value is None:
        return high
    if not _is_int(value):
        raise _Invalid(f"{name} is not an integer ({type(value).__name__})")
    if not 0 <= value <= high:
        # The value is not formatted: a huge int cannot always be turned into a str.
        raise _Invalid(f"{name} is out of range 0..{high}")
    return value


def _optional_str(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _Invalid(f"{name} is not a string ({type(value).__name__})")


def _required_str(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise _Invalid(f"{name} is missing")
    if not isinstance(value, str):
        raise _Invalid(f"{name} is not a string ({type(value).__name__})")
    return value


def message_id(record: Mapping[str, Any]) -> str:
    """The message id the fold gives a parsed record: ``meta.message_id`` when it is a
    string, else ``"seq:<seq>"`` (the rule of ``message`` records without an id).

    Args:
        record: a parsed log record.

    Returns:
        the id (never raises for a record with an int seq).
    """
    meta = record.get("meta")
    mid = meta.get("message_id") if isinstance(meta, Mapping) else None
    return mid if isinstance(mid, str) else f"seq:{record.get('seq')}"


def _message_id(rec: _Record, required: bool = True) -> str:
    """``meta.message_id``; when missing, rejected, or ``"seq:<seq>"`` if not required."""
    mid = rec.meta.get("message_id")
    if isinstance(mid, str):
        return mid
    if mid is None:
        if required:
            raise _Invalid("meta.message_id is missing")
        try:
            return f"seq:{rec.seq}"
        except ValueError:  # more digits than int -> str allows (sys.set_int_max_str_digits)
            raise _Invalid("seq is too large to name the message") from None
    raise _Invalid(f"meta.message_id is not a string ({type(mid).__name__})")


def _sender(rec: _Record) -> str | None:
    sender = rec.meta.get("sender")
    return sender if isinstance(sender, str) else None


# --------------------------------------------------------------------------- handlers


def _on_message(state: State, rec: _Record) -> None:
    """``message``: append to the session's visible list (once per message id)."""
    if rec.session is None:
        state.unsessioned += 1
        return
    sid = _session_id(rec)
    mid = _message_id(rec, required=False)
    session = _open_session(state, sid, rec)
    added = session._add(rec.seq, mid, _sender(rec))
    if rec.observe is not None:
        _observe_add(rec, sid, session, mid, added)


def _observe_add(rec: _Record, sid: str, session: Session, mid: str, added: bool) -> None:
    """Tell the observer that a message was appended (``added``) or counted as a copy."""
    assert rec.observe is not None
    if added:
        detail = {"message_id": mid, "sender": _sender(rec), "index": len(session.visible)}
        rec.observe(Step("message", rec.seq, sid, detail))
    else:
        rec.observe(Step("copy", rec.seq, sid, {"message_id": mid}))


def _on_delta(state: State, rec: _Record) -> None:
    """``message.delta``: open a stream (visible at once) or add a part to it."""
    sid = _session_id(rec)
    mid = _message_id(rec)
    session = _open_session(state, sid, rec)
    stream = state.streams.get((sid, mid))
    if stream is None:
        state.streams[(sid, mid)] = Stream(sid, mid, rec.seq, array("q", (rec.seq,)), source=rec.source)
        added = session._add(rec.seq, mid, _sender(rec))
        if rec.observe is not None:
            _observe_add(rec, sid, session, mid, added)
    elif stream.source is None or rec.source == stream.source:
        stream.delta_seqs.append(rec.seq)
        if rec.observe is not None:
            rec.observe(Step("stream.delta", rec.seq, sid, {"message_id": mid}))


def _on_end(state: State, rec: _Record) -> None:
    """``message.end``: complete the stream; with none open, a one-shot stream."""
    sid = _session_id(rec)
    mid = _message_id(rec)
    session = _open_session(state, sid, rec)
    stream = state.streams.get((sid, mid))
    if stream is None:
        state.streams[(sid, mid)] = Stream(sid, mid, rec.seq, array("q"), rec.seq, True, rec.source)
        added = session._add(rec.seq, mid, _sender(rec))
        if rec.observe is not None:
            _observe_add(rec, sid, session, mid, added)
    elif stream.complete:
        session._count_copy(mid)
        if rec.observe is not None:
            rec.observe(Step("copy", rec.seq, sid, {"message_id": mid}))
    else:
        stream.end_seq = rec.seq
        stream.complete = True
        if rec.observe is not None:
            rec.observe(Step("stream.end", rec.seq, sid, {"message_id": mid}))


def _on_start(state: State, rec: _Record) -> None:
    """``session.start``: create, or revive a deleted session; else only fill a title."""
    sid = _session_id(rec)
    title = _optional_str(rec.data, "title") if isinstance(rec.data, Mapping) else None
    created = sid not in state.sessions
    session = _open_session(state, sid, rec)
    revived = False
    if created:
        session.title = title
    else:
        revived = session.deleted_seq is not None
        session.deleted_seq = None
        if title is not None and session.title is None:
            session.title = title
    if rec.observe is not None:
        rec.observe(Step("start", rec.seq, sid, {"title": title, "created": created, "revived": revived}))


def _on_fork(state: State, rec: _Record) -> None:
    """``session.fork``: a new session sharing the parent's first N visible refs."""
    sid = _session_id(rec)
    if sid in state.sessions:
        raise _Invalid(f"session {sid!r} already exists")
    params = _params(rec)
    parent_id = _required_str(params, "parent")
    parent = state.sessions.get(parent_id)
    if parent is None:
        raise _Invalid(f"unknown parent session {parent_id!r}")
    if parent.deleted_seq is not None:
        raise _Invalid(f"parent session {parent_id!r} is deleted")
    n = _count(params, "at", len(parent.visible))
    branch = _optional_str(params, "name")
    visible = parent.visible[:n]
    speakers = list(parent.speakers)
    child = Session(
        id=sid,
        first_seq=rec.seq,
        last_seq=rec.seq,
        last_ts=rec.ts,
        parent=parent_id,
        fork_at=n,
        branch=branch,
        visible=visible,
        speakers=speakers,
        participants=sorted({speakers[i] for i in set(visible.senders) if i >= 0}),
    )
    state.sessions[sid] = child
    if rec.observe is not None:
        rec.observe(Step("fork", rec.seq, sid, {"parent": parent_id, "at": n, "branch": branch}))


def _on_rewind(state: State, rec: _Record) -> None:
    """``session.rewind``: truncate to N, or restore a checkpoint's exact list."""
    session = _existing_session(state, rec)
    params = _params(rec)
    to = params.get("to")
    name = params.get("checkpoint")
    if (to is None) == (name is None):
        raise _Invalid("rewind needs exactly one of 'to' and 'checkpoint'")
    old = session.visible
    from_count = len(old)
    if to is not None:
        n = _count(params, "to", from_count)
        dropped = tuple(old.seqs[n:])
        if session._keys is not None:
            session._keys.difference_update(old.keys[n:])
        old.truncate(n)
    else:
        name = _required_str(params, "checkpoint")
        checkpoint = session.checkpoints.get(name)
        if checkpoint is None:
            raise _Invalid(f"unknown checkpoint {name!r}")
        kept = set(checkpoint.refs.seqs)
        dropped = tuple(seq for seq in old.seqs if seq not in kept)
        session._set_visible(checkpoint.refs.copy())
    rewind = Rewind(rec.seq, from_count, len(session.visible), dropped)
    session.rewinds.append(rewind)
    session._touch(rec.seq, rec.ts)
    if rec.observe is not None:
        rec.observe(Step("rewind", rec.seq, session.id, {"rewind": rewind, "checkpoint": name}))


def _on_checkpoint(state: State, rec: _Record) -> None:
    """``session.checkpoint``: name the first N visible refs (a reused name overwrites)."""
    session = _existing_session(state, rec)
    params = _params(rec)
    name = _required_str(params, "name")
    n = _count(params, "at", len(session.visible))
    session.checkpoints[name] = SessionCheckpoint(rec.seq, session.visible[:n])
    session._touch(rec.seq, rec.ts)
    if rec.observe is not None:
        rec.observe(Step("checkpoint", rec.seq, session.id, {"name": name, "at": n}))


def _on_crystal(state: State, rec: _Record) -> None:
    """``session.crystal``: a summary (kept in the log) of the first N visible messages."""
    session = _existing_session(state, rec)
    params = _params(rec)
    summary = _required_str(params, "summary")
    n = _count(params, "upto", len(session.visible))
    last_ref_seq = session.visible.seqs[n - 1] if n else None
    crystal = Crystal(rec.seq, n, last_ref_seq)
    session.crystals.append(crystal)
    session._touch(rec.seq, rec.ts)
    if rec.observe is not None:
        rec.observe(Step("crystal", rec.seq, session.id, {"crystal": crystal, "summary": summary}))


def _on_delete(state: State, rec: _Record) -> None:
    """``session.delete``: tombstone (history kept); a repeated delete keeps the first."""
    session = _existing_session(state, rec)
    repeated = session.deleted_seq is not None
    if not repeated:
        session.deleted_seq = rec.seq
    session._touch(rec.seq, rec.ts)
    if rec.observe is not None:
        rec.observe(Step("delete", rec.seq, session.id, {"repeated": repeated}))


def _token_field(data: Mapping[str, Any], usage: Mapping[str, Any], names: tuple[str, ...]) -> int:
    """The first present token count among ``names`` in ``data`` then ``data.usage``."""
    for where in (data, usage):
        for name in names:
            value = where.get(name)
            if value is None:
                continue
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = int(value)
            if not _is_int(value):
                raise _Invalid(f"{name} is not a token count ({type(value).__name__})")
            if not 0 <= value <= _MAX_TOKENS:
                raise _Invalid(f"{name} is out of range 0..2**53")
            return value
    return 0


def _cost_field(data: Mapping[str, Any], usage: Mapping[str, Any]) -> float:
    for where in (data, usage):
        value = where.get("cost_usd")
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _Invalid(f"cost_usd is not a number ({type(value).__name__})")
        try:
            cost = float(value)
        except OverflowError:
            raise _Invalid("cost_usd is out of range") from None
        if not (math.isfinite(cost) and cost >= 0):
            raise _Invalid("cost_usd is not a finite non-negative number")
        return cost
    return 0.0


def _on_llm_request(state: State, rec: _Record) -> None:
    """``llm.request``: add tokens and cost to the session's and the state's usage."""
    sid = None if rec.session is None else _session_id(rec)
    data = rec.data
    if not isinstance(data, Mapping):
        raise _Invalid(f"data is not an object ({type(data).__name__})")
    usage = data.get("usage")
    if usage is None:
        usage = {}
    elif not isinstance(usage, Mapping):
        raise _Invalid(f"data.usage is not an object ({type(usage).__name__})")
    input_tokens = _token_field(data, usage, ("input_tokens", "prompt_tokens"))
    output_tokens = _token_field(data, usage, ("output_tokens", "completion_tokens"))
    cost = _cost_field(data, usage)
    model = _optional_str(data, "model")
    if model is None:
        model = _optional_str(usage, "model")
    total = state.usage
    if (
        total.input_tokens + input_tokens > _MAX_INT64
        or total.output_tokens + output_tokens > _MAX_INT64
        or not math.isfinite(total.cost_usd + cost)
    ):
        raise _Invalid("usage totals would overflow")
    # A session's usage is a part of the state's (costs are non-negative), so the
    # check above covers it too.
    total._add(input_tokens, output_tokens, cost, model)
    if sid is not None:
        _open_session(state, sid, rec).usage._add(input_tokens, output_tokens, cost, model)
    if rec.observe is not None:
        detail = {"model": model, "input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": cost}
        rec.observe(Step("llm.request", rec.seq, sid, detail))


def _on_gap(state: State, rec: _Record) -> None:
    """``recorder.gap``: publisher sequence numbers ``first..last`` are missing."""
    params = _params(rec)
    publisher = _optional_str(params, "publisher")
    first = params.get("first")
    last = params.get("last")
    if not (_is_int(first) and _is_int(last)):
        raise _Invalid("first and last must be integers")
    if not 0 <= first <= last <= _MAX_INT64:
        raise _Invalid("need 0 <= first <= last < 2**63")
    gap = Gap(rec.seq, publisher, first, last, rec.ts)
    state.gaps.append(gap)
    if rec.observe is not None:
        rec.observe(Step("gap", rec.seq, None, {"gap": gap}))


#: kind -> handler. Kinds not listed (``unknown``, ``raw``, other ``recorder.*``, ...)
#: are only counted.
_HANDLERS: dict[str, _Handler] = {
    "message": _on_message,
    "message.delta": _on_delta,
    "message.end": _on_end,
    "session.start": _on_start,
    "session.fork": _on_fork,
    "session.rewind": _on_rewind,
    "session.checkpoint": _on_checkpoint,
    "session.crystal": _on_crystal,
    "session.delete": _on_delete,
    "llm.request": _on_llm_request,
    "recorder.gap": _on_gap,
}
