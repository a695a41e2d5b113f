"""The recorder's control channel: requests and replies as JSON over a local socket.

The running recorder binds a ZeroMQ ROUTER socket on ``ipc://<dir>/recovery/control.sock``
(or, for a long path, in a private per-user directory: :func:`socket_path`) and answers
one JSON object per request. Only its user may talk to it: the socket file is 0600, its
directory is the user's and closed to others, and the recorder accepts connections from
its own uid only (libzmq's ``ZMQ_IPC_FILTER_UID``, SO_PEERCRED). A client checks the
socket file and its directory are owned by its own uid before sending anything
(:func:`check_socket`), so a socket another user created first is refused.

Clients use a REQ socket (:func:`request`), so any ZeroMQ binding can talk to
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
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import zmq

from convlog.core.record import MAX_DEPTH, PURGED_KIND, dump_json, json_depth
from convlog.store import modes
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


class UnsafeSocketError(ControlError):
    """The control socket, or its directory, belongs to another user or is open to others:
    it is not used (someone may have created it first to answer in the recorder's place)."""


def runtime_dir() -> Path:
    """The per-user directory for control sockets of logs whose own path is unsuitable:
    ``$XDG_RUNTIME_DIR/convlog`` when ``XDG_RUNTIME_DIR`` is set (an absolute path), else
    ``<temporary directory>/convlog-<uid>`` (``tempfile.gettempdir()``, which honours
    ``TMPDIR``). It must be ours, mode 0700 and not a symlink (:func:`check_socket_dir`);
    the recorder creates it so (XDG Base Directory specification, "XDG_RUNTIME_DIR").

    Returns:
        an absolute path (the directory may not exist).
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "convlog"
    return Path(tempfile.gettempdir()) / f"convlog-{os.geteuid()}"


def _usable_recovery(directory: Path) -> bool:
    """Whether ``<dir>/recovery`` may hold the control socket: it is missing (nothing to
    talk to yet), or it and the log directory are ours and nobody else can create or
    remove entries in them (mode without 0o022). A directory we cannot examine (another
    user's log) is not usable."""
    try:
        for path in (directory, directory / RECOVERY):
            modes.check_private_dir(path, open_bits=0o022)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def socket_path(directory: Path) -> Path:
    """The control socket's file for a log directory: ``<dir>/recovery/control.sock``
    when that path fits a Unix socket (107 bytes) and the directory is ours and closed to
    others' writes (see ``_usable_recovery``), else ``<runtime_dir()>/<hash>.sock``, the
    hash a SHA-256 prefix of the directory's absolute path.

    The answer depends on the files as they are: the recorder creates ``recovery/``
    before binding, and clients ask again for each request.

    Args:
        directory: the log directory.

    Returns:
        an absolute path (the socket may not exist).
    """
    directory = Path(directory).absolute()
    path = directory / RECOVERY / "control.sock"
    if len(str(path).encode()) <= _MAX_IPC_PATH and _usable_recovery(directory):
        return path
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:20]
    return runtime_dir() / f"{digest}.sock"


def check_socket_dir(path: Path) -> None:
    """Check the directory of a control socket: ``recovery/`` (ours, not writable by
    others) or the runtime directory (ours, mode 0700); neither a symlink.

    Args:
        path: the socket's file.

    Raises:
        UnsafeSocketError: when the directory is not safe (message says why).
        FileNotFoundError: when it is missing.
    """
    parent = path.parent
    try:
        if parent.name == RECOVERY and path.name == "control.sock":
            modes.check_private_dir(parent.parent, open_bits=0o022)
            modes.check_private_dir(parent, open_bits=0o022)
        else:
            modes.check_private_dir(parent, open_bits=0o077)
    except modes.UnsafeDirectoryError as exc:
        raise UnsafeSocketError(f"unsafe control socket directory: {exc}") from None


def check_socket(path: Path) -> None:
    """Check a control socket may be trusted before connecting to it: its directory
    passes :func:`check_socket_dir` and the file is a socket owned by our effective uid
    (so the process answering is one of ours: only we can bind in that directory).

    Args:
        path: the socket's file.

    Raises:
        NotRunningError: when the socket or its directory does not exist.
        UnsafeSocketError: when either is not ours.
    """
    try:
        check_socket_dir(path)
        info = os.lstat(path)
    except FileNotFoundError:
        raise NotRunningError(f"no control socket {path}") from None
    except PermissionError as exc:
        raise NotRunningError(f"cannot reach the control socket {path} ({exc.strerror})") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise UnsafeSocketError(f"{path} is not a socket: refusing to talk to it")
    if info.st_uid != os.geteuid():
        raise UnsafeSocketError(
            f"control socket {path} is owned by uid {info.st_uid}, not by us (uid {os.geteuid()}): "
            "refusing to trust it (another user may have created it; remove it)"
        )


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
        UnsafeSocketError: when the socket or its directory is not ours (:func:`check_socket`):
            nothing is sent.
        ControlError: when the recorder answered ``ok: false`` (its error as the message).
    """
    path = socket_path(directory)
    try:
        check_socket(path)
    except NotRunningError:
        raise NotRunningError(f"no recorder is running for {directory} (no control socket {path})") from None
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


#: ``convlog status``'s exit codes: healthy, recording but unhealthy, no recorder.
STATUS_HEALTHY, STATUS_UNHEALTHY, STATUS_NOT_RUNNING = 0, 1, 3


def status_report(directory: Path, timeout_s: float = 5.0) -> tuple[int, dict[str, Any]]:
    """What ``convlog status --json`` prints for the recorder of ``directory``, with the
    exit code it ends with (``convlog serve``'s ``/health`` answers from the same pair).

    Args:
        directory: the log directory.
        timeout_s: how long to wait for the recorder's answer, seconds.

    Returns:
        ``(code, report)``: :data:`STATUS_HEALTHY` (0) with the recorder's status reply
        (``running: true``, ``healthy: true``, …) when it is recording and healthy,
        :data:`STATUS_UNHEALTHY` (1) when it answers unhealthy, :data:`STATUS_NOT_RUNNING`
        (3) with ``{"running": false, "healthy": false, "problems": [reason]}`` when no
        recorder answers.

    Raises:
        UnsafeSocketError, ControlError: as :func:`request` (a socket that is not ours,
            a recorder that answered with an error).
    """
    try:
        reply = request(directory, "status", timeout_s=timeout_s)
    except NotRunningError as exc:
        return STATUS_NOT_RUNNING, {"running": False, "healthy": False, "problems": [str(exc)]}
    reply.pop("ok", None)
    reply["running"] = True
    return (STATUS_HEALTHY if reply.get("healthy") else STATUS_UNHEALTHY), reply
