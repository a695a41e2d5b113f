"""Native bus events (docs/log-format.md) re-creating exported
sessions. Pure.

The one place each native event shape is written, shared by the JSONL export (from
records: :func:`native_event`, :func:`visible_events`) and by reading a JSON export
back (from its documents: :func:`session_events`, :func:`document_events`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson

from convlog.core.document.model import MESSAGE_KINDS, Entry, LlmRequest, Message, SessionExport
from convlog.core.document.reader import read_document
from convlog.core.fold import message_id
from convlog.core.record import BUS_KINDS, dump_json
from convlog.core.view import message_text
from convlog.core.wire import DEFAULT_SESSION_FIELDS, content_text

__all__ = ["SESSION_KINDS", "document_events", "native_event", "session_events", "visible_events"]

#: Kinds whose records belong to a session's conversation (the fold's session kinds).
SESSION_KINDS: frozenset[str] = BUS_KINDS - {"publisher.heartbeat"}


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _meta(record: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = record.get("meta")
    return meta if isinstance(meta, Mapping) else {}


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
    """The original content value of a message record when its text
    (:func:`convlog.core.view.message_text`) is ``text`` (so a re-recorded event reads
    the same), else ``text`` itself."""
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


def visible_events(
    export: SessionExport,
    record_of: Callable[[int], Mapping[str, Any] | None],
    requests: Iterable[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Native events re-creating the visible branch of ``export`` on its own:
    ``session.start`` (title; ``origin`` naming the parent, fork point and branch of a
    fork, whose inherited messages become its own), the visible messages, the
    checkpoints and crystals that still describe them, ``requests``, and
    ``session.delete`` for a deleted session.

    Args:
        export: the session.
        record_of: ``record_of(seq)`` gives the parsed record of a message when there
            is one (its original content value and provenance), else None (the
            message's own fields are used).
        requests: its ``llm.request`` events, appended as they are.

    Returns:
        the events, in publishing order.
    """
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
      same text (see :func:`convlog.core.view.message_text`), else the text;
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
    if kind in MESSAGE_KINDS:
        mid = message_id(record) if kind == "message" else _str_or_none(meta.get("message_id"))
        event = _message_base(record, sid, mid or "")
        if mid is None:
            del event["message_id"]
        if kind == "message":
            event["content"] = _content(record, message_text(record))
        elif kind == "message.delta":
            event["delta"] = message_text(record)
        else:
            data = record.get("data")
            inner = data.get("message") if isinstance(data, Mapping) and meta.get("shape") == "shearwater.push" \
                else data
            if isinstance(inner, Mapping) and inner.get("content") is not None:
                event["content"] = _content(record, message_text(record))
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
            events += visible_events(item, lambda _seq: None, requests)
    return events


def document_events(doc: Any) -> list[dict[str, Any]]:
    """The native bus events re-creating the sessions of a parsed JSON export document:
    :func:`session_events` of :func:`read_document`. Pure.

    Raises:
        ExportDocumentError: as :func:`read_document`.
    """
    return session_events(read_document(doc))
