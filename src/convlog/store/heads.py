"""Signed chain heads: ``DIR/signed-heads.jsonl``, the hash chain's head signed with an
Ed25519 key at every checkpoint, so the log can be checked on another machine against
a public key kept elsewhere (``convlog verify --key PUB``).

One JSON line per signature, appended (and fsynced) by the recorder after each
checkpoint when it has a signing key (``[recorder] sign_key``)::

    {"seq": 41, "ts": "2026-11-21T12:00:00.000001Z", "chain": "<link of record 41>",
     "signed": "2026-11-21T12:00:01.5Z", "key": "<key id>", "signature": "<base64>"}

The signature is Ed25519 (RFC 8032) over :func:`head_message`: the seq, ``ts`` and
chain link of the record at the checkpoint's cut. The key id is the first 16 hex digits
of the SHA-256 of the raw 32-byte public key.

What a good signature proves: whoever held the private key saw a log whose record
``seq`` had that link, so every record up to it (their kept fields, digests and bodies,
:mod:`convlog.core.chain`) is as it was then: an edit, insertion, deletion or reorder
at or before a signed seq, or a log cut off before the newest signed seq, is found even
by someone who rewrote the whole chain. What it does not prove: anything about the
records after the newest signed head (until the next checkpoint), or that lines of
this file were not removed from its end; and an attacker who has the private key and
write access can rewrite everything and sign it again: keep the private key readable
only by the recorder's user, and the public key (to check with) somewhere else.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from convlog.store.clock import Clock
from convlog.store.fsync import fdatasync

HEADS_FILE = "signed-heads.jsonl"
_CONTEXT = b"convlog signed chain head 1\n"


def head_message(seq: int, ts: str | None, chain: str) -> bytes:
    """The bytes an Ed25519 signature of a chain head covers: a fixed context line, then
    ``seq``, ``ts`` (empty when None) and ``chain``, each on its own line."""
    return b"%s%d\n%s\n%s\n" % (_CONTEXT, seq, (ts or "").encode(), chain.encode())


def key_id(public_key: Ed25519PublicKey) -> str:
    """A public key's id: the first 16 hex digits of SHA-256 of its 32 raw bytes."""
    return sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


class HeadSigner:
    """Appends signed chain heads to ``DIR/signed-heads.jsonl``.

    Args:
        directory: the log directory.
        private_key: the Ed25519 signing key (:func:`convlog.store.signing.load_private_key`).
        clock: time source for ``signed``.
    """

    def __init__(self, directory: Path, private_key: Ed25519PrivateKey, clock: Clock | None = None) -> None:
        self.path = Path(directory) / HEADS_FILE
        self.key = private_key
        self.key_id = key_id(private_key.public_key())
        self.clock = clock or Clock()

    def sign(self, seq: int, ts: str | None, chain: str) -> dict[str, Any]:
        """Sign the head at record ``seq`` and append it (one write, then fdatasync).

        Args:
            seq: the record's seq.
            ts: its receive time (RFC 3339), or None.
            chain: its chain link (64 hex digits).

        Returns:
            the line written, as a dict.

        Raises:
            OSError: when it cannot be written.
        """
        signature = self.key.sign(head_message(seq, ts, chain))
        entry = {"seq": seq, "ts": ts, "chain": chain, "signed": self.clock.now(), "key": self.key_id,
                 "signature": base64.b64encode(signature).decode()}
        # 0o666: the process umask gives the configured file_mode (convlog.store.modes)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
            fdatasync(fd)
        finally:
            os.close(fd)
        return entry


@dataclass(frozen=True, slots=True)
class SignedHead:
    """One line of ``signed-heads.jsonl``, parsed (fields as in the module doc)."""

    line: int
    seq: int
    ts: str | None
    chain: str
    key: str
    signature: bytes


def read_heads(directory: Path) -> Iterator[SignedHead | tuple[int, str]]:
    """The signed heads of a log, in file order.

    Yields:
        a :class:`SignedHead` per well-formed line, or ``(line number, reason)`` for a
        line that is not one.

    Raises:
        OSError: when the file exists but cannot be read.
    """
    path = Path(directory) / HEADS_FILE
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return
    with fh:
        for number, line in enumerate(fh, 1):
            try:
                entry = orjson.loads(line)
                seq, chain = entry["seq"], entry["chain"]
                ts, key = entry.get("ts"), entry["key"]
                if not (isinstance(seq, int) and isinstance(chain, str) and isinstance(key, str)
                        and (ts is None or isinstance(ts, str))):
                    raise TypeError("a field has the wrong type")
                signature = base64.b64decode(entry["signature"], validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                yield number, f"not a signed head ({exc})"
                continue
            yield SignedHead(number, seq, ts, chain, key, signature)


def signature_problem(head: SignedHead, public_key: Ed25519PublicKey) -> str | None:
    """Why ``head`` is not signed by ``public_key``, or None when it is."""
    if head.key != key_id(public_key):
        return f"signed with key {head.key}, not the given key {key_id(public_key)}"
    try:
        public_key.verify(head.signature, head_message(head.seq, head.ts, head.chain))
    except InvalidSignature:
        return f"the signature of the head at seq {head.seq} does not verify with the given key (edited?)"
    return None
