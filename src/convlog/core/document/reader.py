"""Reading a JSON export document back (``convlog publish FILE`` of a ``convlog export
--format json`` file). Pure: it takes the parsed document, never a file.

:func:`looks_like_document` tells a document from its first bytes; :func:`read_document`
checks and reads it into :class:`~convlog.core.document.model.SessionExport` objects,
raising :class:`ExportDocumentError` naming the first bad field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from convlog.core.document.model import (
    JSON_FORMAT,
    JSON_VERSION,
    MESSAGE_KINDS,
    Ancestor,
    Crystal,
    Entry,
    LlmRequest,
    Message,
    NamedCheckpoint,
    SessionExport,
)
from convlog.core.fold import Usage

__all__ = ["ExportDocumentError", "looks_like_document", "read_document"]


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
    if kind not in MESSAGE_KINDS:
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
        sent=_get(obj, "sent", where, "a string", null=True, default=None),
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

    Checks ``format`` (``convlog.export``), ``version`` (at most the one written now)
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
