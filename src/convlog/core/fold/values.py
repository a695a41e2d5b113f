"""The fold's immutable values: message references (:class:`Refs`, stored as int
columns), and the records of what happened to a session (:class:`Rewind`,
:class:`SessionCheckpoint`, :class:`Crystal`), of gaps (:class:`Gap`) and of refused
records (:class:`FoldError`). Pure.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Crystal", "FoldError", "Gap", "Refs", "Rewind", "SessionCheckpoint", "message_key"]


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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
