"""Opt-in CURVE security for the bus: only holders of an allowed key are heard.

CurveZMQ (ZeroMQ RFC 26, https://rfc.zeromq.org/spec/26/) encrypts and authenticates a
connection with the server's long-term key pair and the client's; the server learns the
client's public key during the handshake. ZAP (ZeroMQ RFC 27,
https://rfc.zeromq.org/spec/27/) lets a socket ask a handler in the same process
whether to accept that key. pyzmq ships both halves: certificate files
(``zmq.auth.create_certificates`` / ``load_certificate``: a ``NAME.key`` with the public
key, a ``NAME.key_secret`` with both) and a ZAP handler on a thread
(``zmq.auth.thread.ThreadAuthenticator``, ``configure_curve(domain, location)``: allow the
public keys of the ``*.key`` files in a directory); see pyzmq's "Authentication"
documentation (``zmq.auth``).

This module holds what the broker and the clients need around them:

* :func:`load_certificate`: a certificate file, with a :class:`CurveError` naming the file
  and the reason instead of pyzmq's bare ``OSError``/``ValueError``;
* :func:`serve` / :func:`connect_as` / :class:`ClientKeys`: a socket made a CURVE server,
  or a client holding its own key pair and the server's public key;
* :class:`Authenticator`: the ZAP handler checking client keys against an allow directory;
* :class:`RefusalCounter`: the server sockets' monitors, one WARNING line per refused
  peer and totals by reason.

A handshake refused by the server is silent for the client: libzmq keeps reconnecting
and the messages it queues are never delivered.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket as pysocket
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger("convlog.curve")

#: Suffix of a public certificate file (pyzmq's and czmq's convention).
PUBLIC_SUFFIX = ".key"
#: Suffix of a secret certificate file.
SECRET_SUFFIX = ".key_secret"
#: Repeats of one refusal (same socket, host and reason) within this window are counted
#: but not logged again: a refused client reconnects every 100 ms or so.
REPEAT_WINDOW_S = 60.0


class CurveError(ValueError):
    """A certificate or allow directory that cannot be used; the message names the file
    (or directory) and the reason, on one line."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True, slots=True)
class Certificate:
    """A loaded CURVE certificate.

    Attributes:
        path: the file it came from.
        public: the public key, Z85 (40 bytes).
        secret: the secret key, Z85 (40 bytes), or None for a public certificate.
    """

    path: Path
    public: bytes
    secret: bytes | None = field(default=None, repr=False)


def load_certificate(path: Path | str, *, secret: bool) -> Certificate:
    """Read a pyzmq certificate file (``zmq.auth.load_certificate``).

    Args:
        path: a ``NAME.key`` (public) or ``NAME.key_secret`` (both keys) file.
        secret: True when the secret key is needed (a server's or client's own
            certificate); the file must then hold a secret key and be accessible to its
            owner only (no group or other permission bits, as ssh requires of a private key).

    Returns:
        a :class:`Certificate`.

    Raises:
        CurveError: the file is missing, not a regular readable file, not a certificate
            (no valid 40-character Z85 public key), lacks the secret key asked for, or
            holds a secret key and is open to group or others.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CurveError(path, "no such certificate file") from None
    except OSError as exc:
        raise CurveError(path, f"cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CurveError(path, "not a regular file")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise CurveError(path, f"cannot read: {exc.strerror or exc}") from None
    except (ValueError, IndexError, UnicodeDecodeError):
        raise CurveError(path, "not a CURVE certificate (no public-key line; make one with `convlog keys generate`)") \
            from None
    for what, key in (("public", public), ("secret", secret_key)):
        if key is not None and not _valid_z85_key(key):
            raise CurveError(path, f"not a CURVE certificate (its {what} key is not 40 Z85 characters)")
    if secret_key is not None and info.st_mode & 0o077:
        raise CurveError(path, f"holds a secret key but has mode {stat.S_IMODE(info.st_mode):04o}: "
                               f"refusing a secret readable by group or others (chmod 600 {path})")
    if secret and secret_key is None:
        raise CurveError(path, f"holds no secret key (give the {SECRET_SUFFIX} file, not the public {PUBLIC_SUFFIX})")
    return Certificate(path, public, secret_key if secret else None)


def _valid_z85_key(key: bytes) -> bool:
    if len(key) != 40:
        return False
    try:
        return len(z85.decode(key)) == 32
    except (ValueError, KeyError, TypeError):
        return False


def load_allow_dir(directory: Path | str) -> list[Certificate]:
    """The public certificates a broker allows: every ``*.key`` file of a directory, as
    ``ThreadAuthenticator.configure_curve`` reads them (``*.key_secret`` and other files
    are ignored).

    Args:
        directory: the allow directory.

    Returns:
        the certificates, sorted by file name (at least one).

    Raises:
        CurveError: the directory is missing or not a directory, holds no ``*.key``
            file, or one of them is not a certificate (pyzmq would silently allow nobody).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CurveError(directory, "no such allow directory" if not directory.exists() else "not a directory")
    certs = [load_certificate(path, secret=False) for path in sorted(directory.glob(f"*{PUBLIC_SUFFIX}"))]
    if not certs:
        raise CurveError(directory, f"no allowed public key (*{PUBLIC_SUFFIX} certificate files) in the directory")
    return certs


def generate_certificates(directory: Path | str, name: str) -> tuple[Path, Path]:
    """Write a new CURVE key pair as pyzmq certificates (``zmq.auth.create_certificates``):
    ``NAME.key`` (public, mode 0644) and ``NAME.key_secret`` (public and secret, mode 0600).

    The files are made in a private temporary directory inside ``directory`` and linked
    into place, so neither is ever more open than its final mode and an existing file is
    never overwritten.

    Args:
        directory: an existing directory.
        name: the base name.

    Returns:
        ``(public_path, secret_path)``.

    Raises:
        FileExistsError: when either file already exists (nothing is written then).
        OSError: when the directory cannot be written.
    """
    import tempfile

    directory = Path(directory)
    targets = (directory / f"{name}{PUBLIC_SUFFIX}", directory / f"{name}{SECRET_SUFFIX}")
    for target in targets:
        if target.exists() or target.is_symlink():
            raise FileExistsError(17, "refusing to overwrite an existing file", str(target))
    with tempfile.TemporaryDirectory(dir=directory, prefix=".convlog-keys-") as tmp:  # made 0700
        public, secret = (Path(p) for p in zmq.auth.create_certificates(tmp, name))
        public.chmod(0o644)
        secret.chmod(0o600)
        done: list[Path] = []
        try:
            for made, target in zip((public, secret), targets, strict=True):
                os.link(made, target)  # fails if target exists: no overwrite
                done.append(target)
        except OSError:
            for target in done:
                target.unlink()
            raise
    return targets


def serve(sock: zmq.Socket, secret_cert: Certificate, domain: str = "") -> None:
    """Make ``sock`` a CURVE server (``CURVE_SERVER``, ``CURVE_SECRETKEY``, and a ZAP
    domain). Call before ``bind``; client keys are checked only while a ZAP handler
    (:class:`Authenticator`) runs in the same context.

    Args:
        sock: a socket not yet bound.
        secret_cert: the server's own certificate, with its secret key.
        domain: the ZAP domain the authenticator sees for this socket (e.g. the
            socket's role), "" for none.

    Raises:
        ValueError: when ``secret_cert`` has no secret key.
    """
    if secret_cert.secret is None:
        raise ValueError(f"{secret_cert.path}: a CURVE server needs its secret key")
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret_cert.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, secret_cert.public)
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    if domain:
        sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())


def connect_as(sock: zmq.Socket, secret_cert: Certificate, server_public_cert: Certificate) -> None:
    """Make ``sock`` a CURVE client that talks only to the server holding
    ``server_public_cert``'s key, presenting ``secret_cert``'s. Call before ``connect``.

    Args:
        sock: a socket not yet connected.
        secret_cert: the client's own certificate, with its secret key.
        server_public_cert: the server's public certificate (its ``NAME.key``).

    Raises:
        ValueError: when ``secret_cert`` has no secret key.
    """
    if secret_cert.secret is None:
        raise ValueError(f"{secret_cert.path}: a CURVE client needs its secret key")
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret_cert.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, secret_cert.public)
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_public_cert.public)


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """What a CURVE client holds: its own key pair and the server's public key.

    Attributes:
        own: the client's certificate (``NAME.key_secret``).
        server: the server's public certificate (the broker's ``NAME.key``).
    """

    own: Certificate
    server: Certificate

    @classmethod
    def load(cls, secret_file: Path | str, server_file: Path | str) -> ClientKeys:
        """Load both certificates (see :func:`load_certificate`).

        Raises:
            CurveError: for either file.
        """
        return cls(load_certificate(secret_file, secret=True), load_certificate(server_file, secret=False))

    def apply(self, sock: zmq.Socket) -> None:
        """:func:`connect_as` with these keys (before ``connect``)."""
        connect_as(sock, self.own, self.server)


def client_keys(secret_file: Path | str | None, server_file: Path | str | None) -> ClientKeys | None:
    """The ``--curve-secret`` / ``--curve-server`` pair of a client command.

    Returns:
        :class:`ClientKeys`, or None when neither is given.

    Raises:
        ValueError: when only one is given (a usage error for the caller to word).
        CurveError: for either file.
    """
    if secret_file is None and server_file is None:
        return None
    if secret_file is None or server_file is None:
        raise ValueError("CURVE needs both the own secret certificate and the server's public one")
    return ClientKeys.load(secret_file, server_file)


@dataclass(frozen=True, slots=True)
class Denial:
    """A client key the ZAP handler refused.

    Attributes:
        domain: the ZAP domain of the socket asked for (see :func:`serve`).
        address: the client's IP address, as ZAP reports it.
        key: the client's public key, Z85.
        reason: the ZAP status text, e.g. ``Unknown key``.
    """

    domain: str
    address: str
    key: str
    reason: str


class _RecordingAuthenticator(ThreadAuthenticator):
    """pyzmq's thread authenticator, noting each CURVE key it denies (with the address
    and domain of the ZAP request) for :class:`RefusalCounter`."""

    def __init__(self, context: zmq.Context) -> None:
        super().__init__(context, log=logging.getLogger("convlog.curve.zap"))
        self.denials: dict[str, collections.deque[Denial]] = collections.defaultdict(collections.deque)
        self._request: tuple[str, str] = ("", "")
        self._denials_lock = threading.Lock()

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        if len(msg) >= 6:
            self._request = (msg[2].decode(errors="replace"), msg[3].decode(errors="replace"))
        await super().handle_zap_message(msg)

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        allowed, reason = await super()._authenticate_curve(domain, client_key)
        if not allowed:
            request_domain, address = self._request
            denial = Denial(request_domain, address, z85.encode(client_key).decode(), reason.decode(errors="replace"))
            with self._denials_lock:
                queue = self.denials[request_domain]
                queue.append(denial)
                while len(queue) > 1000:
                    queue.popleft()
        return allowed, reason

    def take_denial(self, domain: str) -> Denial | None:
        """The oldest denial of ``domain`` not yet taken, or None."""
        with self._denials_lock:
            queue = self.denials.get(domain)
            return queue.popleft() if queue else None


class Authenticator:
    """The ZAP handler of a context: CURVE clients whose public key is in an allow
    directory are accepted, every other key is refused (ZAP status 400).

    Wraps ``zmq.auth.thread.ThreadAuthenticator`` with
    ``configure_curve(domain="*", location=allow_dir)``, and the same for each ZAP domain
    the server sockets name (pyzmq's ``"*"`` stands for requests without a domain only,
    not for every domain). Start it before binding the server sockets: libzmq accepts any
    CURVE client while no ZAP handler runs.

    Args:
        context: the context of the server sockets.
        allow_dir: directory of allowed public certificates (``*.key``); checked with
            :func:`load_allow_dir` so a bad one fails here, not silently in pyzmq.
        domains: the ZAP domains of the server sockets (see :func:`serve`).

    Attributes:
        allowed: the allowed certificates, as loaded at start.

    Raises:
        CurveError: from :func:`load_allow_dir`.
    """

    def __init__(self, context: zmq.Context, allow_dir: Path | str, domains: Iterable[str] = ()) -> None:
        self.allow_dir = Path(allow_dir)
        self.allowed = load_allow_dir(self.allow_dir)
        self.domains = ("*", *domains)
        self._auth = _RecordingAuthenticator(context)

    def start(self) -> None:
        """Start the handler thread and load the allowed keys."""
        self._auth.start()
        for domain in self.domains:
            self._auth.configure_curve(domain=domain, location=str(self.allow_dir))

    def stop(self) -> None:
        """Stop the handler thread (before the context is terminated)."""
        self._auth.stop()

    def take_denial(self, domain: str) -> Denial | None:
        """The oldest refused key of ``domain`` not yet taken (see :class:`Denial`)."""
        return self._auth.take_denial(domain)


#: Monitor events that mean the server refused a peer, and the reason logged.
REFUSAL_EVENTS: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "key not allowed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake failed",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed",
}
_PROTOCOL_REASONS = {
    zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: "not a CURVE client (security mechanism mismatch)",
    zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: "CURVE cryptographic error (wrong server key?)",
    zmq.PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE: "CURVE key exchange failed",
}
_WATCHED = (zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def refusal_reason(event: int, value: int) -> str:
    """What a refusal event means, in words.

    Args:
        event: a :data:`REFUSAL_EVENTS` event.
        value: its value: the ZAP status code (AUTH), a ``zmq.PROTOCOL_ERROR_*`` code
            (PROTOCOL) or an errno (NO_DETAIL).

    Returns:
        e.g. ``"key not allowed (ZAP 400)"``, ``"not a CURVE client (security mechanism mismatch)"``.
    """
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"key not allowed (ZAP {value})"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return _PROTOCOL_REASONS.get(value, f"protocol error 0x{value:08x}")
    return f"handshake failed ({os.strerror(value) if value else 'no detail'})"


def _peer_of(fd: int) -> str | None:
    """``host:port`` of the peer of libzmq's connection ``fd`` (best effort: the
    connection may be gone already)."""
    try:
        sock = pysocket.socket(fileno=fd)
    except OSError:
        return None
    try:
        host, port = sock.getpeername()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    except (OSError, ValueError, TypeError):
        return None
    finally:
        sock.detach()  # libzmq's descriptor: never close it


@dataclass
class _Watched:
    name: str
    domain: str
    monitor: zmq.Socket
    peers: dict[int, str | None] = field(default_factory=dict)
    pending: str | None = None  # a protocol refusal waiting for its DISCONNECTED (which names the fd)


class RefusalCounter:
    """Watches CURVE server sockets (a socket monitor each, ``zmq.utils.monitor``) and
    counts the peers they refuse: ``EVENT_HANDSHAKE_FAILED_AUTH`` (the ZAP handler denied
    the key: an unknown publisher or subscriber), ``EVENT_HANDSHAKE_FAILED_PROTOCOL`` and
    ``EVENT_HANDSHAKE_FAILED_NO_DETAIL`` (a plain, non-CURVE client, or a broken one).

    Each refusal is one WARNING line on ``convlog.curve`` naming the socket, the peer
    (the key and IP address from ZAP for a denied key; ``host:port`` from the connection
    for a failed handshake, read when libzmq reports it accepted: "an unknown peer" when
    libzmq had closed it already, as a plain client is refused within a millisecond) and
    the reason. A client refused
    once reconnects and is refused again every ~100 ms: repeats of the same socket, host
    and reason within :data:`REPEAT_WINDOW_S` are counted but not logged, and the next
    line logged for them says how many were not. :attr:`totals` counts every refusal.

    Args:
        authenticator: where the denied keys' details come from, or None.

    Attributes:
        totals: ``{socket name: {reason: refusals}}``.
    """

    def __init__(self, authenticator: Authenticator | None = None) -> None:
        self.authenticator = authenticator
        self.totals: dict[str, dict[str, int]] = {}
        self._watched: list[_Watched] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._recent: dict[tuple[str, str, str], list[float | int]] = {}

    def watch(self, sock: zmq.Socket, name: str, domain: str = "") -> None:
        """Monitor ``sock`` (before it is bound, so no connection is missed).

        Args:
            sock: a CURVE server socket (see :func:`serve`).
            name: how the log names it, e.g. ``"XSUB"``.
            domain: its ZAP domain, to find the denied key's details.
        """
        self._watched.append(_Watched(name, domain, sock.get_monitor_socket(_WATCHED)))
        self.totals.setdefault(name, {})

    def start(self) -> None:
        """Read the monitors on a thread of their own until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="convlog-curve-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, dict[str, int]]:
        """Stop the thread, close the monitor sockets (before the context is terminated).

        Returns:
            :attr:`totals`.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for watched in self._watched:
            if watched.pending is not None:
                self._refused(watched, watched.pending, None)
            watched.monitor.close(linger=0)
        return self.total_copy()

    def total_copy(self) -> dict[str, dict[str, int]]:
        """A copy of :attr:`totals` (safe from any thread)."""
        with self._lock:
            return {name: dict(reasons) for name, reasons in self.totals.items()}

    def summary(self) -> str:
        """The totals in one line: ``"XSUB: 3 (key not allowed 2, not a CURVE client 1); XPUB: 0"``."""
        parts = []
        for name, reasons in self.total_copy().items():
            count = sum(reasons.values())
            detail = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
            parts.append(f"{name}: {count}" + (f" ({detail})" if detail else ""))
        return "; ".join(parts) or "no CURVE socket watched"

    def _run(self) -> None:
        poller = zmq.Poller()
        by_socket = {}
        for watched in self._watched:
            poller.register(watched.monitor, zmq.POLLIN)
            by_socket[watched.monitor] = watched
        while not self._stop.is_set():
            try:
                ready = dict(poller.poll(100))
            except zmq.ZMQError:  # the context is going away
                return
            for sock in ready:
                watched = by_socket[sock]
                with contextlib.suppress(zmq.Again):
                    while True:
                        self._event(watched, recv_monitor_message(sock, zmq.NOBLOCK))

    def _event(self, watched: _Watched, message: dict[str, Any]) -> None:
        event, value = message["event"], message["value"]
        if event == zmq.EVENT_ACCEPTED:
            watched.peers[value] = _peer_of(value)
        elif event == zmq.EVENT_DISCONNECTED:
            peer = watched.peers.pop(value, None)
            if watched.pending is not None:
                self._refused(watched, watched.pending, peer)
                watched.pending = None
        elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            denial = self.authenticator.take_denial(watched.domain) if self.authenticator else None
            peer = f"key {denial.key} from {denial.address}" if denial else None
            reason = refusal_reason(event, value)
            if denial is not None and denial.reason:
                reason = f"{reason[:-1]}: {denial.reason})"
            self._refused(watched, reason, peer, host=denial.address if denial else None)
        elif event in REFUSAL_EVENTS:
            # Its DISCONNECTED follows at once and names the connection (the peer).
            if watched.pending is not None:
                self._refused(watched, watched.pending, None)
            watched.pending = refusal_reason(event, value)

    def _refused(self, watched: _Watched, reason: str, peer: str | None, host: str | None = None) -> None:
        with self._lock:
            reasons = self.totals.setdefault(watched.name, {})
            reasons[reason] = reasons.get(reason, 0) + 1
            total = sum(reasons.values())
        if host is None and peer is not None:
            host = peer.rpartition(":")[0] or peer
        key = (watched.name, host or "?", reason)
        now = time.monotonic()
        recent = self._recent.get(key)
        if recent is not None and now - float(recent[0]) < REPEAT_WINDOW_S:
            recent[1] = int(recent[1]) + 1
            return
        unlogged = int(recent[1]) if recent is not None else 0
        self._recent[key] = [now, 0]
        more = f", {unlogged} more like it not logged" if unlogged else ""
        log.warning("CURVE: %s refused %s: %s (%d refused on %s so far%s)", watched.name, peer or "an unknown peer",
                    reason, total, watched.name, more)


def describe_allowed(certs: Iterable[Certificate]) -> str:
    """The allowed certificates' file names, for the start-up log line."""
    return ", ".join(cert.path.name for cert in certs)
