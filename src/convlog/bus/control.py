"""The recorder's control channel: requests and replies as JSON over a local socket.

The running recorder binds a ZeroMQ ROUTER socket on ``ipc://<dir>/recovery/control.sock``
(permissions 0600: only its user may talk to it) and answers one JSON object per
request. Clients use a REQ socket (:func:`request`), so any ZeroMQ binding can talk to
it: connect a REQ socket, send one JSON object, receive one. The ROUTER lets the
recorder answer a slow request (a checkpoint) later without holding up the others; see
the ZeroMQ guide, chapter 3, "The Asynchronous Client/Server Pattern".

Requests (``op`` and its parameters)::

    {"op": "status"}
    {"op": "checkpoint", "label": "before-upgrade"}       # label optional
    {"op": "flush"}                                         # fsync now
    {"op": "rotate"}                                        # start a new segment
    {"op": "prune", "max_age_s": 7776000, "max_bytes": null, "action": "delete",
     "archive_dir": null, "dry_run": false}                 # apply retention now
    {"op": "append", "kind": "session.fork", "session": "s1-alt", "data": {"parent": "s1", "at": 4}}
    {"op": "stop"}

Replies: ``{"ok": true, ...}`` with the op's fields, or ``{"ok": false, "error": "..."}``.
An unknown or malformed request gets an error reply and changes nothing.

``append`` writes one session control record (source ``control``), or the
``session.purged`` record of ``convlog purge``, through the recorder, so the log keeps a
single writer. The recorder checks its shape only; whether its
target exists (session, message count, checkpoint name) is checked by the client
against the fold before sending (:mod:`convlog.cli.session_control`).

This module holds the pure parts (endpoint naming, request parsing) and the client.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import zmq

from convlog.core.record import MAX_DEPTH, PURGED_KIND, dump_json, json_depth
from convlog.store.segment import RECOVERY

#: Session control kinds that ``append`` accepts (docs/fold.md).
CONTROL_KINDS = frozenset(
    {"session.start", "session.fork", "session.rewind", "session.checkpoint", "session.crystal", "session.delete"}
)
#: Kinds ``append`` accepts: the session control kinds and ``session.purged``, the record
#: ``convlog purge`` ends with when a recorder runs (a publisher cannot send it; who can
#: reach this socket, mode 0600, can rewrite the log's files anyway).
APPEND_KINDS = CONTROL_KINDS | {PURGED_KIND}
#: Operations the recorder answers.
OPS = frozenset({"status", "checkpoint", "flush", "rotate", "append", "prune", "stop"})
#: Longest request accepted, bytes.
MAX_REQUEST_BYTES = 1 << 20
#: Longest ``ipc://`` path libzmq accepts (``sun_path`` is 108 bytes on Linux, with the NUL).
_MAX_IPC_PATH = 107


class ControlError(Exception):
    """A request is malformed, or the recorder answered with an error (the message says which)."""


class NotRunningError(ControlError):
    """No recorder answers on the directory's control socket."""


def socket_path(directory: Path) -> Path:
    """The control socket's file for a log directory: ``<dir>/recovery/control.sock``, or,
    when that path is too long for a Unix socket (107 bytes), a file in the temporary
    directory named by a hash of the directory's absolute path.

    Args:
        directory: the log directory.

    Returns:
        an absolute path (the socket may not exist).
    """
    directory = Path(directory).absolute()
    path = directory / RECOVERY / "control.sock"
    if len(str(path).encode()) <= _MAX_IPC_PATH:
        return path
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"convlog-{digest}.sock"


def endpoint(directory: Path) -> str:
    """The control channel's ZeroMQ endpoint for a log directory (``ipc://`` + :func:`socket_path`)."""
    return f"ipc://{socket_path(directory)}"


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request.

    Attributes:
        op: one of :data:`OPS`.
        params: the other fields, checked for the op: ``label`` (str or None) for
            ``checkpoint``; ``kind``, ``session`` (str) and ``data`` (dict) for ``append``.
    """

    op: str
    params: dict[str, Any]


def parse_request(body: bytes) -> Request:
    """Parse and check one request.

    Args:
        body: the request's bytes (one JSON object, at most :data:`MAX_REQUEST_BYTES`).

    Returns:
        the :class:`Request`.

    Raises:
        ControlError: with a one-line reason for anything malformed or unknown.
    """
    if len(body) > MAX_REQUEST_BYTES:
        raise ControlError(f"request is longer than {MAX_REQUEST_BYTES} bytes")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ControlError(f"request is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ControlError("request is not a JSON object")
    op = value.get("op")
    if not isinstance(op, str):
        raise ControlError("request has no string 'op'")
    if op not in OPS:
        raise ControlError(f"unknown op {op!r} (known: {', '.join(sorted(OPS))})")
    params = {k: v for k, v in value.items() if k != "op"}
    allowed = {"checkpoint": {"label"}, "append": {"kind", "session", "data"},
               "prune": {"max_age_s", "max_bytes", "action", "archive_dir", "dry_run"}}.get(op, set())
    extra = sorted(set(params) - allowed)
    if extra:
        raise ControlError(f"{op}: unexpected field(s) {', '.join(map(repr, extra))}")
    if op == "checkpoint":
        label = params.get("label")
        if label is not None and not isinstance(label, str):
            raise ControlError("checkpoint: label must be a string")
        params["label"] = label
    elif op == "append":
        kind, session, data = params.get("kind"), params.get("session"), params.get("data", {})
        if kind not in APPEND_KINDS:
            raise ControlError(f"append: kind must be one of {', '.join(sorted(APPEND_KINDS))}")
        if not isinstance(session, str) or not session:
            raise ControlError("append: session must be a non-empty string")
        if not isinstance(data, dict):
            raise ControlError("append: data must be an object")
        if json_depth(data) > MAX_DEPTH:
            raise ControlError(f"append: data is nested deeper than {MAX_DEPTH} levels")
        params = {"kind": kind, "session": session, "data": data}
    elif op == "prune":
        params = _prune_params(params)
    return Request(op, params)


def _prune_params(params: dict[str, Any]) -> dict[str, Any]:
    """Check ``prune``'s fields: positive numbers or null, an action, a path or null."""
    out: dict[str, Any] = {}
    for name in ("max_age_s", "max_bytes"):
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            raise ControlError(f"prune: {name} must be a positive number or null")
        out[name] = value
    action = params.get("action", "delete")
    if action not in ("delete", "archive"):
        raise ControlError("prune: action must be delete or archive")
    archive = params.get("archive_dir")
    if archive is not None and (not isinstance(archive, str) or not archive):
        raise ControlError("prune: archive_dir must be a path or null")
    if action == "archive" and archive is None:
        raise ControlError("prune: action archive needs an archive_dir")
    if not isinstance(params.get("dry_run", False), bool):
        raise ControlError("prune: dry_run must be true or false")
    out.update(action=action, archive_dir=archive, dry_run=params.get("dry_run", False))
    return out


def error_reply(message: str) -> bytes:
    """The reply bytes for a failed request: ``{"ok": false, "error": message}``."""
    return orjson.dumps({"ok": False, "error": message})


def ok_reply(fields: dict[str, Any] | None = None) -> bytes:
    """The reply bytes for a request that succeeded: ``{"ok": true, **fields}``."""
    return dump_json({"ok": True, **(fields or {})}, option=orjson.OPT_NON_STR_KEYS)


def request(directory: Path, op: str, timeout_s: float = 10.0, **params: Any) -> dict[str, Any]:
    """Send one request to the recorder of ``directory`` and return its reply.

    Args:
        directory: the log directory.
        op: the operation (see the module docstring).
        timeout_s: how long to wait for the reply, seconds.
        **params: the op's fields.

    Returns:
        the reply object (``ok`` is True).

    Raises:
        NotRunningError: when no control socket exists or nothing answers in time.
        ControlError: when the recorder answered ``ok: false`` (its error as the message).
    """
    path = socket_path(directory)
    if not path.exists():
        raise NotRunningError(f"no recorder is running for {directory} (no control socket {path})")
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{path}")
        sock.send(orjson.dumps({"op": op, **params}))
        if not sock.poll(int(timeout_s * 1000)):
            raise NotRunningError(f"the recorder of {directory} did not answer within {timeout_s:g} s")
        reply = orjson.loads(sock.recv())
    finally:
        sock.close(linger=0)
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else None
        raise ControlError(str(error or "the recorder answered with an unreadable reply"))
    return reply
