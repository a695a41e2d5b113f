"""The recorder's side of the control channel: the ROUTER socket that answers requests.

The protocol (requests, replies, the socket's path) and the client are in
:mod:`convlog.bus.control`. Requests are answered on the recording thread, between two
batches; a checkpoint is written in the scheduler's thread and its reply is queued for
the recording loop to send.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import zmq

from convlog.bus import control
from convlog.core.redact import Redactor
from convlog.core.retention import Limits
from convlog.recorder.durable import DurableWriter, describe
from convlog.recorder.jobs import Jobs
from convlog.recorder.sequencer import Sequencer, error_text
from convlog.store import modes
from convlog.store.checkpoint import CheckpointError, checkpoint_name
from convlog.store.segment import RECOVERY

log = logging.getLogger("convlog.recorder")

_NOBLOCK = int(zmq.NOBLOCK)
#: Control requests answered per loop iteration (the rest wait for the next one).
CONTROL_BATCH = 16


class ControlServer:
    """Answers ``status``, ``flush``, ``rotate``, ``stop``, ``append`` and ``checkpoint``.

    Args:
        directory: the log directory (the socket lives under it, see
            :func:`convlog.bus.control.socket_path`).
        sequencer: writes ``append``'s record and records internal errors.
        durable: the writer flushed and rotated.
        jobs: runs the checkpoints asked for.
        status: makes the ``status`` reply's data (see ``Recorder.status``).
        request_stop: asks the recording loop to stop.

    Attributes:
        socket: the bound ROUTER socket, or None.
        path: its file, once bound.
        replies: replies finished in other threads, ``(*route, reply)``, for
            :meth:`send_replies` (a deque: thread-safe appends and pops).
    """

    def __init__(
        self,
        directory: Path,
        sequencer: Sequencer,
        durable: DurableWriter,
        jobs: Jobs,
        status: Callable[[], dict[str, Any]],
        request_stop: Callable[[], None],
    ) -> None:
        self.directory = directory
        #: replaces secrets in ``append``'s data (set by the recorder), or None.
        self.redactor: Redactor | None = None
        self.sequencer = sequencer
        self.durable = durable
        self.jobs = jobs
        self.status = status
        self.request_stop = request_stop
        self.socket: zmq.Socket | None = None
        self.path: Path | None = None
        self.replies: collections.deque[tuple[bytes, ...]] = collections.deque()

    def bind(self, ctx: zmq.Context) -> zmq.Socket:
        """Bind the control ROUTER socket, mode 0600, in a directory that is ours (see
        :func:`convlog.bus.control.socket_path`; the per-user runtime directory is made
        0700 when missing). Only peers of our own uid may connect (``ZMQ_IPC_FILTER_UID``,
        when libzmq has it). A socket file left by a recorder that died is removed first:
        this one holds the lock.

        Args:
            ctx: the context to make it in.

        Returns:
            the bound socket (also kept as :attr:`socket`).

        Raises:
            convlog.bus.control.UnsafeSocketError: when the socket's directory is another
                user's, open to others or a symlink (someone may have created it first).
            OSError, zmq.ZMQError: when the socket's directory or file cannot be made.
        """
        path = self.prepare()
        path.unlink(missing_ok=True)
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        if hasattr(zmq, "IPC_FILTER_UID"):
            with contextlib.suppress(zmq.ZMQError):  # libzmq built without it: the 0600 file still guards
                sock.setsockopt(zmq.IPC_FILTER_UID, os.geteuid())
        old = os.umask(0o177)  # the socket file is created 0600, with no window
        try:
            sock.bind(f"ipc://{path}")
        finally:
            os.umask(old)
        self.socket = sock
        self.path = path
        return sock

    def prepare(self) -> Path:
        """Make the control socket's directory (``recovery/``, or the per-user runtime
        directory, mode 0700) and check it is ours; the recorder calls it before taking
        the lock, so an unsafe directory stops it before anything is written.

        Returns:
            the socket's path (:func:`convlog.bus.control.socket_path`).

        Raises:
            convlog.bus.control.UnsafeSocketError: see :meth:`bind`.
            OSError: when a directory cannot be made.
        """
        (self.directory / RECOVERY).mkdir(parents=True, exist_ok=True)
        path = control.socket_path(self.directory)
        if path.parent != self.directory.absolute() / RECOVERY:
            path.parent.parent.mkdir(parents=True, exist_ok=True)
            try:
                modes.private_mkdir(path.parent)
            except modes.UnsafeDirectoryError as exc:
                raise control.UnsafeSocketError(f"unsafe control socket directory: {exc}") from None
        control.check_socket_dir(path)
        return path

    def close(self) -> None:
        """Close the socket and remove its file (a disk error there is ignored)."""
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None
            with contextlib.suppress(OSError):  # a failed disk must not skip the stop that names lost seqs
                if self.path is not None:
                    self.path.unlink(missing_ok=True)

    def serve(self) -> None:
        """Answer up to :data:`CONTROL_BATCH` queued requests (a checkpoint is answered
        when written). Never raises for what a peer sends: errors become error replies."""
        sock = self.socket
        assert sock is not None
        for _ in range(CONTROL_BATCH):
            try:
                frames = sock.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 3 or frames[-2] != b"":
                continue  # not a REQ envelope: nothing to answer
            route, body = frames[:-1], frames[-1]
            try:
                request = control.parse_request(body)
                reply = self.answer(route, request)
            except (control.ControlError, CheckpointError) as exc:
                reply = control.error_reply(str(exc))
            except OSError as exc:
                reply = control.error_reply(describe(exc))
            except Exception as exc:  # nothing a peer sends may stop the recorder
                self.sequencer.record_error("answering a control request", exc)
                reply = control.error_reply(f"internal error: {error_text(exc)}")
            if reply is not None:
                try:
                    sock.send_multipart([*route, reply])
                except zmq.ZMQError as exc:
                    log.warning("could not send a control reply: %s", exc)

    def send_replies(self) -> None:
        """Send the replies finished in other threads.

        Raises:
            zmq.ZMQError: when a reply cannot be sent (the recording loop records it).
        """
        sock = self.socket
        assert sock is not None
        while self.replies:
            sock.send_multipart([*self.replies.popleft()])

    def answer(self, route: list[bytes], request: control.Request) -> bytes | None:
        """The reply to one request, or None when it will be sent later (a checkpoint).

        Args:
            route: the ROUTER envelope (identity frames and the empty delimiter).
            request: the parsed request.

        Returns:
            the encoded reply, or None.

        Raises:
            control.ControlError: ``append`` while writes fail.
            CheckpointError: a bad checkpoint label.
            OSError: a flush or rotation that fails.
        """
        writer = self.durable.segment_writer
        assert writer is not None
        op, params = request.op, request.params
        if op == "status":
            return control.ok_reply(self.status())
        if op == "flush":
            writer.sync()
            return control.ok_reply({"durable_seq": writer.durable_seq})
        if op == "rotate":
            writer.rotate()
            return control.ok_reply({"segment": writer.segment.name})
        if op == "stop":
            log.info("stop requested on the control channel")
            self.request_stop()
            return control.ok_reply({"stopping": True, "pid": os.getpid()})
        if op == "append":
            if self.durable.held:
                raise control.ControlError("the log cannot be written at the moment (disk fault): try again later")
            data = params["data"]
            if self.redactor is not None:  # the same rules as for the bus (data is JSON)
                raw = orjson.dumps(data)
                redacted = self.redactor.redact_json(raw)
                if redacted is not raw:
                    data = orjson.loads(redacted)
            self.sequencer.append(params["kind"], data, source="control", session=params["session"])
            writer.sync()  # a control record is rare and someone waits for it: make it durable
            return control.ok_reply({"seq": self.sequencer.seq})
        if op == "prune":  # in the scheduler's thread; the loop sends the reply
            self.jobs.submit(self.prune_for, route, params)
            return None
        # checkpoint: written in the scheduler's thread; the loop sends the reply.
        label = params["label"]
        if label is not None:
            checkpoint_name(0, label)  # CheckpointError (an error reply) for a bad label
        self.jobs.submit(self.checkpoint_for, route, label)
        return None

    def prune_for(self, route: list[bytes], params: dict[str, Any]) -> None:
        """Apply retention for a control request and queue the reply (runs in the
        scheduler's thread; any failure becomes an error reply)."""
        try:
            report = self.jobs.prune(Limits(params["max_age_s"], params["max_bytes"]), params["action"],
                                     params["archive_dir"], params["dry_run"], raise_errors=True)
            reply = control.ok_reply(report.as_data() if report is not None else {})
        except Exception as exc:  # any failure becomes the reply
            reply = control.error_reply(f"prune failed: {error_text(exc)}")
        self.replies.append((*route, reply))

    def checkpoint_for(self, route: list[bytes], label: str | None) -> None:
        """Write a checkpoint for a control request and queue the reply (runs in the
        scheduler's thread; any failure becomes an error reply)."""
        try:
            path = self.jobs.checkpoint(label)
            last = self.jobs.last_checkpoint
            reply = control.ok_reply({"checkpoint": path.name if path else None,
                                      "seq": last["seq"] if path and last else None})
        except Exception as exc:  # any failure becomes the reply
            reply = control.error_reply(f"checkpoint failed: {exc}")
        self.replies.append((*route, reply))
