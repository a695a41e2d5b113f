"""The reference broker: XSUB (publishers connect) forwarding to XPUB (subscribers
connect) with libzmq's built-in proxy, as in the ZeroMQ guide, chapter 2, "The
Dynamic Discovery Problem" (the XSUB/XPUB proxy).

It exists so users and tests have a broker; the recorder works with any XSUB/XPUB
broker. High-water marks are libzmq's defaults (1,000 messages) unless given.

With CURVE (``curve_secret`` and ``curve_allow``, see :mod:`convlog.bus.curve`) both
sockets are CURVE servers and a ZAP handler accepts only the client keys of the allow
directory, so publishers and subscribers alike must hold an allowed key; the peers
refused are logged and their totals logged at stop.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path

import zmq

from convlog.bus import curve

log = logging.getLogger("convlog.broker")

DEFAULT_XSUB = "tcp://127.0.0.1:5555"
DEFAULT_XPUB = "tcp://127.0.0.1:5556"
#: The ZAP domain of each socket with CURVE, so a refusal is told apart by socket.
ZAP_DOMAINS = {"XSUB": "convlog-xsub", "XPUB": "convlog-xpub"}


class _Stop(Exception):
    pass


def _raise_stop(*_: object) -> None:
    raise _Stop


def run_broker(
    xsub: str = DEFAULT_XSUB,
    xpub: str = DEFAULT_XPUB,
    hwm: int | None = None,
    curve_secret: Path | None = None,
    curve_allow: Path | None = None,
) -> int:
    """Bind XSUB and XPUB and forward between them until SIGTERM or SIGINT.

    Args:
        xsub: endpoint publishers connect to.
        xpub: endpoint subscribers connect to.
        hwm: send/receive high-water mark (messages) for both sockets; None keeps
            libzmq's default.
        curve_secret: the broker's secret certificate (``NAME.key_secret``): both
            sockets become CURVE servers. Needs ``curve_allow``.
        curve_allow: directory of the allowed clients' public certificates (``*.key``).

    Returns:
        0 after a clean stop.

    Raises:
        ValueError: when only one of ``curve_secret`` and ``curve_allow`` is given.
        CurveError: for a certificate or allow directory that cannot be used (checked
            before anything is bound).
        zmq.ZMQError: when an endpoint cannot be bound (e.g. address in use).
    """
    if (curve_secret is None) != (curve_allow is None):
        raise ValueError("CURVE needs both the broker's secret certificate and the allow directory")
    server = curve.load_certificate(curve_secret, secret=True) if curve_secret is not None else None
    ctx = zmq.Context()
    authenticator = None
    if server is not None and curve_allow is not None:
        try:
            authenticator = curve.Authenticator(ctx, curve_allow, domains=ZAP_DOMAINS.values())
        except curve.CurveError:
            ctx.term()
            raise
    refusals = curve.RefusalCounter(authenticator) if authenticator is not None else None
    front = ctx.socket(zmq.XSUB)
    back = ctx.socket(zmq.XPUB)
    try:
        if authenticator is not None:
            # The ZAP handler runs before anything is bound: libzmq lets any CURVE
            # client in while there is none.
            authenticator.start()
        for sock, name in ((front, "XSUB"), (back, "XPUB")):
            sock.setsockopt(zmq.LINGER, 0)
            if hwm is not None:
                sock.setsockopt(zmq.SNDHWM, hwm)
                sock.setsockopt(zmq.RCVHWM, hwm)
            if server is not None and refusals is not None:
                curve.serve(sock, server, ZAP_DOMAINS[name])
                refusals.watch(sock, name, ZAP_DOMAINS[name])
        if refusals is not None:
            refusals.start()
        front.bind(xsub)
        back.bind(xpub)
        log.info("broker forwarding XSUB %s -> XPUB %s", xsub, xpub)
        if authenticator is not None:
            log.info("CURVE on: server key %s, %d allowed client key(s) in %s (%s)", server.path if server else "",
                     len(authenticator.allowed), curve_allow, curve.describe_allowed(authenticator.allowed))
        if threading.current_thread() is threading.main_thread():
            # pyzmq re-checks Python signal handlers when a blocking call is
            # interrupted (EINTR), so raising here ends zmq.proxy promptly.
            signal.signal(signal.SIGTERM, _raise_stop)
            signal.signal(signal.SIGINT, _raise_stop)
        with contextlib.suppress(_Stop, zmq.ContextTerminated):
            zmq.proxy(front, back)
    finally:
        if refusals is not None:
            refusals.stop()
            log.info("CURVE refusals: %s", refusals.summary())
        front.close(linger=0)
        back.close(linger=0)
        if authenticator is not None:
            authenticator.stop()
        ctx.term()
    log.info("broker stopped")
    return 0
