"""Probing a SUB endpoint: is something listening there, and is it a PUB or XPUB?

The classic mistake (the original Shearwater recorder made it) is to connect the
recorder's SUB socket to a broker's **XSUB** port, the side publishers connect to. The
connection is refused silently: ``connect`` succeeds, libzmq keeps the socket, and the
recorder receives nothing, forever. The ZeroMQ guide's XSUB/XPUB proxy ("The Dynamic
Discovery Problem", chapter 2) binds XSUB for publishers and XPUB for subscribers; the
recorder belongs on the XPUB side.

How the probe decides (ZMTP 3.0, https://rfc.zeromq.org/spec/23/, and 3.1,
https://rfc.zeromq.org/spec/37/): after the greeting, each peer sends a ``READY``
command whose ``Socket-Type`` property names its socket type, and a peer closes the
connection when the other's type is not one it may talk to (a SUB talks only to PUB
and XPUB). :func:`probe_endpoint` lets libzmq itself judge: it connects a real SUB
socket with a socket monitor and watches the events. Observed with libzmq 4.3.5
(pyzmq 27) and relied on here:

* a PUB or XPUB peer: ``CONNECTED`` then ``HANDSHAKE_SUCCEEDED``;
* a peer of an incompatible type (XSUB, SUB, PULL, ROUTER, ...): ``CONNECTED`` then
  ``DISCONNECTED`` with no handshake event in between (libzmq does not report a
  socket-type mismatch as ``HANDSHAKE_FAILED_PROTOCOL``) and no reconnect; or, when
  the peer noticed the mismatch first and closed, ``HANDSHAKE_FAILED_NO_DETAIL``
  then ``DISCONNECTED`` (a race: a few percent of attempts with a fresh context);
* a peer requiring CURVE or PLAIN security: ``HANDSHAKE_FAILED_PROTOCOL`` with
  ``ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH``, or ``NO_DETAIL`` by the same race;
* something that is not ZeroMQ and closes the connection: ``HANDSHAKE_FAILED_NO_DETAIL``
  (then libzmq reconnects); one that accepts and says nothing: ``CONNECTED`` alone;
* nothing listening: ``CLOSED`` and ``CONNECT_RETRIED`` only (ipc: ``CLOSED`` first
  too); a host that cannot be resolved or used: ``CONNECT_RETRIED`` alone.

So a successful handshake is the verdict "a SUB receives here". libzmq's events never
name the peer's type, compatibility alone cannot tell PUB from XPUB (both accept
exactly SUB and XSUB), and ``NO_DETAIL`` does not separate a refusing ZeroMQ peer from
a non-ZeroMQ one. So, once libzmq has connected, the probe also reads the peer's
greeting and ``READY`` over a plain socket (:func:`read_peer`, NULL mechanism only) to
name it. When that fails, an XSUB is still recognised by a second libzmq probe with a
PUB socket, whose handshake an XSUB (or a bound SUB) accepts.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import recv_monitor_message

#: Socket types a SUB socket can receive from (ZMTP 3.x, "Socket Types").
SUB_PEERS: frozenset[str] = frozenset({"PUB", "XPUB"})

_PROBE_TRANSPORTS = ("tcp", "ipc")
_PROTOCOL_ERRORS = {
    getattr(zmq, name): name.removeprefix("PROTOCOL_ERROR_")
    for name in dir(zmq)
    if name.startswith("PROTOCOL_ERROR_")
}
# ZMTP 3.0 greeting of a NULL-mechanism client (spec 23, "The Greeting"): signature
# %xFF 8*%x00 %x7F, version 3.0, mechanism "NULL" padded to 20 octets, as-server 0,
# 31 octets of filler.
_GREETING = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31


@dataclass(frozen=True, slots=True)
class Probe:
    """What :func:`probe_endpoint` found.

    Attributes:
        endpoint: the endpoint as given.
        reachable: a connection (TCP or Unix socket) was made.
        socket_type: the peer's ZMTP socket type (``"XPUB"``, ``"PUB"``, ``"XSUB"``,
            ...) when learned, else None.
        ok_for_sub: a SUB socket completed the ZMTP handshake there, so the recorder
            would receive what is published.
        detail: one line saying what was found.
    """

    endpoint: str
    reachable: bool
    socket_type: str | None
    ok_for_sub: bool
    detail: str


@dataclass(frozen=True, slots=True)
class _Handshake:
    """The outcome of one libzmq connection attempt, from its monitor events.

    ``kind`` is ``ok``, ``refused`` (connected, then closed without a handshake event:
    incompatible socket types), ``protocol`` (``value`` is the ZMTP error code),
    ``auth`` (``value`` is the ZAP status), ``not_zmtp``, ``silent`` (connected, no
    handshake before the deadline), ``refused_tcp`` (nothing listening), ``no_route``
    (address not resolvable or usable) or ``timeout`` (no connection before the
    deadline).
    """

    kind: str
    connected: bool
    value: int = 0


def _transport_problem(endpoint: object) -> str | None:
    """Why ``endpoint`` cannot be probed, or None when it can be tried."""
    if not isinstance(endpoint, str):
        return f"not an endpoint string: {endpoint!r}"
    transport, sep, address = endpoint.partition("://")
    if not sep or not address:
        return f"not a ZeroMQ endpoint (transport://address): {endpoint!r}"
    if transport == "inproc":
        return "inproc:// endpoints exist only inside one process; nothing to probe from here"
    if transport not in _PROBE_TRANSPORTS:
        return f"cannot probe {transport}:// endpoints (only tcp:// and ipc://)"
    return None


def _handshake(ctx: zmq.Context, socket_type: int, endpoint: str, deadline: float) -> _Handshake:
    """Connect a ``socket_type`` socket to ``endpoint`` and classify its monitor events
    until one is decisive or ``deadline`` (``time.monotonic``) passes.

    Raises:
        zmq.ZMQError: when libzmq rejects the endpoint string.
    """
    sock = ctx.socket(socket_type)
    sock.setsockopt(zmq.LINGER, 0)
    monitor = sock.get_monitor_socket()
    try:
        sock.connect(endpoint)
        connected = tried = False
        while (remaining_ms := int((deadline - time.monotonic()) * 1000)) > 0:
            if not monitor.poll(remaining_ms):
                break
            event = recv_monitor_message(monitor)
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_CONNECTED:
                connected = True
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return _Handshake("ok", True)
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                return _Handshake("protocol", True, value)
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                return _Handshake("auth", True, value)
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                return _Handshake("not_zmtp", True, value)
            elif kind == zmq.EVENT_DISCONNECTED and connected:
                return _Handshake("refused", True)
            elif kind == zmq.EVENT_CLOSED:
                tried = True  # the TCP/IPC connect itself failed
            elif kind == zmq.EVENT_CONNECT_RETRIED and not connected:
                return _Handshake("refused_tcp" if tried else "no_route", False)
        return _Handshake("silent" if connected else "timeout", connected)
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)


@dataclass(frozen=True, slots=True)
class Peer:
    """What the peer said in its ZMTP greeting and ``READY`` command.

    Attributes:
        zmtp: its first bytes were a ZMTP 3.x greeting (False: something else, or it
            closed without sending one; a ZMTP peer always sends its signature first).
        mechanism: the security mechanism of its greeting (``NULL``, ``PLAIN``,
            ``CURVE``), or None.
        socket_type: the ``Socket-Type`` of its ``READY`` (NULL mechanism only), in
            upper case, or None.
    """

    zmtp: bool
    mechanism: str | None = None
    socket_type: str | None = None


class _NotZmtp(Exception):
    pass


def _recv_exact(conn: socket.socket, size: int, deadline: float) -> bytes:
    """Exactly ``size`` bytes. Raises TimeoutError at ``deadline`` and _NotZmtp when
    the peer closes first."""
    data = b""
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        conn.settimeout(remaining)
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise _NotZmtp
        data += chunk
    return data


def _open_stream(endpoint: str, deadline: float) -> socket.socket:
    """A plain stream socket connected to a ``tcp://`` or ``ipc://`` endpoint.

    Raises:
        OSError, ValueError: when it cannot connect or the address does not parse.
    """
    transport, _, address = endpoint.partition("://")
    remaining = max(deadline - time.monotonic(), 0.001)
    if transport == "ipc":
        path = "\0" + address[1:] if address.startswith("@") else address  # abstract namespace
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(remaining)
        try:
            conn.connect(path)
        except OSError:
            conn.close()
            raise
        return conn
    address = address.rpartition(";")[2]  # libzmq's "source;destination" form
    host, _, port = address.rpartition(":")
    return socket.create_connection((host.strip("[]"), int(port)), timeout=remaining)


def read_peer(endpoint: str, deadline: float) -> Peer | None:
    """Read the greeting and ``READY`` of the ZeroMQ peer at ``endpoint``.

    Exchanges ZMTP 3.0 NULL-mechanism greetings (64 octets each, in two steps as
    libzmq does, see :func:`_recv_first`), then reads the peer's first command
    (spec 23: ``command = %x04 short-size / %x06 long-size, command-body``; ``READY``
    metadata is ``name-size name value-size(4 octets, network order) value`` pairs),
    answers with the ``READY`` of a SUB socket (so a PUB or XPUB sees an ordinary
    subscriber come and go) and closes.

    Args:
        endpoint: a ``tcp://`` or ``ipc://`` endpoint.
        deadline: the ``time.monotonic()`` value after which it gives up.

    Returns:
        a :class:`Peer`, or None when nothing could be learned (no connection,
        timeout, malformed command).
    """
    try:
        conn = _open_stream(endpoint, deadline)
    except (OSError, ValueError):
        return None
    try:
        greeting = _recv_first(conn, deadline)
        if greeting is None:
            return Peer(zmtp=False)
        mechanism = greeting[12:32].rstrip(b"\x00").decode("ascii", "replace")
        if mechanism != "NULL":
            return Peer(True, mechanism)
        flags = _recv_exact(conn, 1, deadline)[0]
        if not flags & 0x04:
            return Peer(True, mechanism)
        size = int.from_bytes(_recv_exact(conn, 8 if flags & 0x02 else 1, deadline), "big")
        if size > 65536:
            return Peer(True, mechanism)
        peer_type = _ready_socket_type(_recv_exact(conn, size, deadline))
        ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 3) + b"SUB"
        with contextlib.suppress(OSError):  # it may have closed already; what it said counts
            conn.sendall(bytes([0x04, len(ready)]) + ready)
        return Peer(True, mechanism, peer_type)
    except _NotZmtp:
        return Peer(True)  # a valid greeting, then closed: ZMTP, type unknown
    except (OSError, TimeoutError, ValueError, IndexError, struct.error):
        return None
    finally:
        conn.close()


def _recv_first(conn: socket.socket, deadline: float) -> bytes | None:
    """Exchange greetings the way libzmq does: signature and major version first, the
    rest once the peer's have arrived (a libzmq peer that gets a whole greeting with
    another mechanism closes without sending its own). Returns the peer's 64 octets,
    or None when they are not a ZMTP 3.x greeting."""
    try:
        conn.sendall(_GREETING[:11])
        head = _recv_exact(conn, 11, deadline)
        if head[0] != 0xFF or head[9] & 1 != 1 or head[10] < 3:
            return None
        conn.sendall(_GREETING[11:])
        return head + _recv_exact(conn, 53, deadline)
    except _NotZmtp:
        return None


def _ready_socket_type(body: bytes) -> str | None:
    """``Socket-Type`` from a READY command body, or None."""
    if not body.startswith(b"\x05READY"):
        return None
    pos = 6
    while pos < len(body):
        name_size = body[pos]
        name = body[pos + 1 : pos + 1 + name_size]
        pos += 1 + name_size
        (value_size,) = struct.unpack(">I", body[pos : pos + 4])
        value = body[pos + 4 : pos + 4 + value_size]
        pos += 4 + value_size
        if name.lower() == b"socket-type":
            return value.decode("ascii", "replace").upper()
    return None


def _unreachable_detail(endpoint: str, outcome: _Handshake, timeout_s: float) -> str:
    transport, _, address = endpoint.partition("://")
    if transport == "ipc":
        return f"nothing listening at {address} (no socket there, or no process bound to it)"
    if outcome.kind == "refused_tcp":
        return f"nothing listening at {address} (connection refused)"
    if outcome.kind == "no_route":
        return f"cannot connect to {address} (host not resolvable or address not usable)"
    return f"no answer from {address} within {timeout_s:g} s"


def _refusal(ctx: zmq.Context, endpoint: str, deadline: float, outcome: _Handshake, peer: Peer | None) -> Probe:
    """The :class:`Probe` for a reachable peer whose handshake with a SUB failed.

    Which side notices a socket-type mismatch first is a race: the SUB sees either
    ``DISCONNECTED`` alone or ``HANDSHAKE_FAILED_NO_DETAIL`` (the peer closed first),
    and with a CURVE peer either ``MECHANISM_MISMATCH`` or ``NO_DETAIL``. So the
    peer's own greeting and READY (``peer``) decide the wording, not the event.
    """
    if peer is not None and not peer.zmtp:
        return Probe(endpoint, True, None, False,
                     "not a ZeroMQ peer: it did not answer with a ZMTP 3.x greeting")
    if peer is not None and peer.mechanism not in (None, "NULL"):
        return Probe(endpoint, True, None, False,
                     f"the peer requires {peer.mechanism} security; the recorder connects without (NULL)")
    if outcome.kind == "auth":
        return Probe(endpoint, True, peer and peer.socket_type, False,
                     f"the peer's authentication (ZAP) rejected the connection, status {outcome.value}")
    socket_type = peer.socket_type if peer else None
    inferred = ""
    if socket_type is None and _handshake(ctx, zmq.PUB, endpoint, deadline).kind == "ok":
        socket_type, inferred = "XSUB", " (inferred: it accepts a PUB but refuses a SUB)"
    if socket_type == "XSUB":
        return Probe(endpoint, True, "XSUB", False,
                     f"XSUB socket{inferred}, a broker's publisher side: a SUB connected here "
                     "receives nothing (libzmq refuses the handshake)")
    if socket_type in SUB_PEERS:
        return Probe(endpoint, True, socket_type, False,
                     f"{socket_type} socket, but the SUB's handshake failed (the peer closed the connection)")
    if socket_type is not None:
        return Probe(endpoint, True, socket_type, False,
                     f"{socket_type} socket, not a PUB or XPUB: libzmq refuses a SUB's handshake")
    if outcome.kind == "protocol":
        error = _PROTOCOL_ERRORS.get(outcome.value, str(outcome.value))
        return Probe(endpoint, True, None, False, f"ZMTP handshake failed: {error}")
    return Probe(endpoint, True, None, False,
                 "the peer refuses a SUB's handshake (and a PUB's): not a PUB or XPUB")


def probe_endpoint(endpoint: str, timeout_s: float = 2.0) -> Probe:
    """Find out whether a recorder's SUB socket connected to ``endpoint`` would receive.

    Args:
        endpoint: a ZeroMQ endpoint (``tcp://host:port`` or ``ipc://path``); other
            transports and malformed strings give an unreachable :class:`Probe`.
        timeout_s: upper bound on the whole probe, seconds. Decisive answers (a
            handshake, a refused connection) come back in milliseconds; only a peer
            that does not answer takes the whole time.

    Returns:
        a :class:`Probe`. Never raises for a bad endpoint. Its sockets are closed with
        linger 0 and its own ZeroMQ context is destroyed before it returns.
    """
    problem = _transport_problem(endpoint)
    if problem is not None:
        return Probe(str(endpoint), False, None, False, problem)
    deadline = time.monotonic() + max(timeout_s, 0.01)
    ctx = zmq.Context()
    try:
        try:
            outcome = _handshake(ctx, zmq.SUB, endpoint, deadline)
        except zmq.ZMQError as exc:
            return Probe(endpoint, False, None, False, f"not a valid ZeroMQ endpoint: {zmq.strerror(exc.errno)}")
        if not outcome.connected:
            return Probe(endpoint, False, None, False, _unreachable_detail(endpoint, outcome, timeout_s))
        if outcome.kind == "silent":
            return Probe(endpoint, True, None, False,
                         f"connected, but no ZMTP handshake within {timeout_s:g} s (not a ZeroMQ peer?)")
        peer = read_peer(endpoint, deadline)
        if outcome.kind == "ok":
            socket_type = peer.socket_type if peer else None
            return Probe(endpoint, True, socket_type, True,
                         f"{socket_type or 'PUB or XPUB'} socket: a SUB's handshake succeeds")
        return _refusal(ctx, endpoint, deadline, outcome, peer)
    finally:
        ctx.destroy(linger=0)
