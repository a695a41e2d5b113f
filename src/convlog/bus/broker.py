"""The reference broker: XSUB (publishers connect) forwarding to XPUB (subscribers
connect) with libzmq's built-in proxy, as in the ZeroMQ guide, chapter 2, "The
Dynamic Discovery Problem" (the XSUB/XPUB proxy).

It exists so users and tests have a broker; the recorder works with any XSUB/XPUB
broker. High-water marks are libzmq's defaults (1,000 messages) unless given.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

import zmq

log = logging.getLogger("convlog.broker")

DEFAULT_XSUB = "tcp://127.0.0.1:5555"
DEFAULT_XPUB = "tcp://127.0.0.1:5556"


class _Stop(Exception):
    pass


def _raise_stop(*_: object) -> None:
    raise _Stop


def run_broker(xsub: str = DEFAULT_XSUB, xpub: str = DEFAULT_XPUB, hwm: int | None = None) -> int:
    """Bind XSUB and XPUB and forward between them until SIGTERM or SIGINT.

    Args:
        xsub: endpoint publishers connect to.
        xpub: endpoint subscribers connect to.
        hwm: send/receive high-water mark (messages) for both sockets; None keeps
            libzmq's default.

    Returns:
        0 after a clean stop.

    Raises:
        zmq.ZMQError: when an endpoint cannot be bound (e.g. address in use).
    """
    ctx = zmq.Context()
    front = ctx.socket(zmq.XSUB)
    back = ctx.socket(zmq.XPUB)
    for sock in (front, back):
        sock.setsockopt(zmq.LINGER, 0)
        if hwm is not None:
            sock.setsockopt(zmq.SNDHWM, hwm)
            sock.setsockopt(zmq.RCVHWM, hwm)
    try:
        front.bind(xsub)
        back.bind(xpub)
        log.info("broker forwarding XSUB %s -> XPUB %s", xsub, xpub)
        if threading.current_thread() is threading.main_thread():
            # pyzmq re-checks Python signal handlers when a blocking call is
            # interrupted (EINTR), so raising here ends zmq.proxy promptly.
            signal.signal(signal.SIGTERM, _raise_stop)
            signal.signal(signal.SIGINT, _raise_stop)
        with contextlib.suppress(_Stop, zmq.ContextTerminated):
            zmq.proxy(front, back)
    finally:
        front.close(linger=0)
        back.close(linger=0)
        ctx.term()
    log.info("broker stopped")
    return 0
