"""Running ``convlog serve``: bind the socket, print the address to open, hand the
socket to uvicorn.

The socket is bound and listening before the address is printed, so whoever reads the
first line of stdout can connect at once (connections wait in the listen backlog
until uvicorn accepts them), and ``--port 0`` picks a free port that the printed
address names. uvicorn logs only warnings and errors, to stderr: stdout carries the
address alone. SIGINT and SIGTERM stop it cleanly: uvicorn finishes the requests in flight, then
re-raises the signal, which the handlers installed here turn into exit status 0 (as
``convlog tail -f`` ends).
"""

from __future__ import annotations

import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any

from convlog.web.access import Access, allowed_hosts
from convlog.web.app import create_app


@dataclass(frozen=True, slots=True)
class Listener:
    """A bound, listening TCP socket and how to name it.

    Attributes:
        sock: the socket.
        host: the host it was bound to, as given (``127.0.0.1``, ``::1``, ``localhost``).
        port: the port it is bound to (the one the OS picked for port 0).
    """

    sock: socket.socket
    host: str
    port: int

    def url(self, token: str | None) -> str:
        """The address to open: ``http://HOST:PORT/`` (an IPv6 address in brackets), with
        ``?token=TOKEN`` when one is required; a wildcard host is shown as 127.0.0.1."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else "[::1]" if self.host in ("::", "[::]") else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}/" + (f"?token={token}" if token else "")


def listen(host: str, port: int) -> Listener:
    """Bind ``host``:``port`` (port 0: any free port) and listen.

    Raises:
        OSError: when the address cannot be bound (in use, not this machine's, no
            permission for a port below 1024); the message names it.
    """
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host in ("::", "[::]") else 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return Listener(sock, host, sock.getsockname()[1])


def run(source: Any, listener: Listener, token: str | None) -> None:
    """Print the address to open as the first line of stdout (flushed), then serve the
    application on ``listener`` until SIGINT or SIGTERM.

    Args:
        source: a :class:`~convlog.web.sources.LogSource` or :class:`~convlog.web.sources.DbSource`.
        listener: the bound socket (:func:`listen`).
        token: the access token, or None (``--no-token``).
    """
    import uvicorn

    access = Access(token=token, hosts=allowed_hosts(listener.host, listener.port), port=listener.port)
    app = create_app(source, access)
    for signum in (signal.SIGINT, signal.SIGTERM):  # what uvicorn re-raises once it has stopped
        signal.signal(signum, lambda *_: sys.exit(0))
    print(listener.url(token), flush=True)
    print(f"convlog serve: reading {source.where}; Ctrl-C stops", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, date_header=True,
                            proxy_headers=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[listener.sock])
