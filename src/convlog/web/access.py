"""Who may read ``convlog serve`` and how every answer is sent: one pure ASGI
middleware (:class:`Guard`) in front of the whole application.

In order, for each HTTP request:

1. **Host check** (DNS-rebinding protection): the ``Host`` header must name the
   server as it is bound (``127.0.0.1``, ``localhost``, ``[::1]`` or the ``--host``
   given, with or without the port); anything else gets 400. A web page on another
   origin whose name was made to resolve to 127.0.0.1 sends its own name and is
   refused (the defence the Jupyter server and webpack-dev-server use).
2. **Read-only**: only ``GET`` and ``HEAD``; any other method gets 405 with
   ``Allow: GET, HEAD`` (RFC 9110 §15.5.6).
3. **Access token**, the Jupyter server's scheme: a random token
   (:func:`new_token`, ``secrets.token_urlsafe``) printed as the URL to open. It is
   accepted as ``?token=`` (then kept in an ``HttpOnly; SameSite=Strict`` cookie and
   the browser redirected (303) to the same URL without it, so it does not stay in the
   address bar or history), as that cookie, or as ``Authorization: Bearer TOKEN``
   (RFC 6750); compared with :func:`secrets.compare_digest`. Without it: 401 with
   ``WWW-Authenticate: Bearer`` (RFC 9110 §11.6.1) and a plain page saying how to get
   in. One exception: ``/health`` without the token answers its status code and
   ``{"healthy": true|false}`` alone (:data:`PUBLIC_HEALTH_PATH`), for load balancers
   and uptime checks; the report itself needs the token.

Every response, refusals included, carries the security headers of
:data:`SECURITY_HEADERS`: a strict Content-Security-Policy (CSP Level 3: scripts,
styles, images and fetches from this origin only, no inline script or style, no
framing, no ``<base>``), ``X-Content-Type-Options: nosniff``,
``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import html
import re
import secrets
import socket
import stat
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

#: The Content-Security-Policy of every response (CSP Level 3).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

#: Headers added to every response (lower-case names, as ASGI sends them).
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)

#: The methods a read-only server answers (RFC 9110 §9.3.1, §9.3.2).
ALLOWED_METHODS = frozenset({"GET", "HEAD"})

#: Host names that always name a loopback server.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

#: Hosts ``--no-token`` is allowed with (addresses only this machine can reach).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

#: Bytes of randomness in a token (:func:`new_token`): 256 bits.
TOKEN_BYTES = 32

#: The shortest token ``--token-file`` may hold, characters.
MIN_TOKEN_CHARS = 16

#: What a token may be made of: RFC 3986's unreserved characters, safe as they are in a
#: query string and a cookie value.
TOKEN_PATTERN = re.compile(rf"[A-Za-z0-9._~-]{{{MIN_TOKEN_CHARS},}}")

ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


class TokenFileError(ValueError):
    """A ``--token-file`` that cannot be used (missing, readable by others, empty); the
    message is one readable line."""


def new_token() -> str:
    """A fresh access token: :data:`TOKEN_BYTES` random bytes from the OS's CSPRNG as
    URL-safe base64 (``secrets.token_urlsafe``), 43 characters."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def read_token_file(path: Path) -> str:
    """The token in ``path`` (its first line, blanks stripped).

    Refuses a file that its group or other users may read (mode ``& 0o077``), as ssh
    refuses such a private key: a token anyone on the machine can read protects nothing.

    Raises:
        TokenFileError: when the file is missing, not a regular file, readable by group
            or others, or holds no token.
    """
    try:
        info = path.stat()
    except OSError as exc:
        raise TokenFileError(f"--token-file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise TokenFileError(f"--token-file {path}: not a regular file")
    if info.st_mode & 0o077:
        raise TokenFileError(f"--token-file {path} may be read by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                             f"chmod 600 it")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"--token-file {path}: {exc}") from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise TokenFileError(f"--token-file {path} is empty")
    if not TOKEN_PATTERN.fullmatch(token):
        raise TokenFileError(f"--token-file {path}: a token is at least {MIN_TOKEN_CHARS} of A-Z a-z 0-9 . _ ~ - "
                             f"(it goes into a URL and a cookie)")
    return token


def is_loopback(host: str) -> bool:
    """True when ``host`` is a loopback name or address (``127.0.0.0/8``, ``::1``,
    ``localhost``): only this machine can connect to a server bound there."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_HOSTS:
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` header values the server accepts when bound to ``host``:``port``:
    each of :data:`LOOPBACK_NAMES` and ``host`` (an IPv6 address in brackets), alone and
    with ``:port``, lower-case. A wildcard bind (``0.0.0.0``, ``::``) adds this
    machine's host name and fully qualified name."""
    names = {*LOOPBACK_NAMES, f"[{host}]" if ":" in host and not host.startswith("[") else host}
    if host in ("0.0.0.0", "::", "[::]", ""):
        names |= {socket.gethostname(), socket.getfqdn()}
    names = {name.lower() for name in names if name}
    return frozenset(names | {f"{name}:{port}" for name in names})


def cookie_name(port: int) -> str:
    """The token cookie's name for a server on ``port``: cookies are kept per host, not
    per port, so two servers on one machine each keep their own."""
    return f"convlog_token_{port}"


@dataclass(frozen=True, slots=True)
class Access:
    """What :class:`Guard` checks.

    Attributes:
        token: the access token, or None for ``--no-token`` (loopback only).
        hosts: the accepted ``Host`` values (:func:`allowed_hosts`).
        port: the bound port (names the cookie).
    """

    token: str | None
    hosts: frozenset[str]
    port: int

    def token_ok(self, given: str | None) -> bool:
        """True when ``given`` is the token (constant-time comparison), or when no token
        is required."""
        if self.token is None:
            return True
        return given is not None and secrets.compare_digest(given.encode(), self.token.encode())


def _header(scope: MutableMapping[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _cookie(scope: MutableMapping[str, Any], name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header is as good as none
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def _bearer(scope: MutableMapping[str, Any]) -> str | None:
    raw = _header(scope, b"authorization")
    if raw and raw[:7].lower() == "bearer ":
        return raw[7:].strip()
    return None


#: The one path answered without the token: ``/health``'s status code (200/503) and
#: ``{"healthy": …}`` only, for load balancers and uptime checks, which send no token.
PUBLIC_HEALTH_PATH = "/health"
#: The request-state key (``request.state``) set on a request answered without the token.
ANONYMOUS = "anonymous"

#: The page a request without the token gets (with 401).
LOCKED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>convlog: access token needed</title></head>
<body><h1>convlog serve needs its access token</h1>
<p>Open the address <code>convlog serve</code> printed on the first line of its output,
<code>http://{host}/?token=…</code>: the browser then keeps the token in a cookie for this server.</p>
<p>Scripts send it as a header: <code>Authorization: Bearer TOKEN</code>.
With <code>--token-file FILE</code> the token is the first line of FILE.</p></body></html>
"""


class Guard:
    """ASGI middleware in front of the application: the Host check, the methods allowed,
    the access token and the security headers (see the module doc).

    Args:
        app: the application it guards.
        access: what to check.
    """

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*headers, *SECURITY_HEADERS]}
            await send(message)

        host = (_header(scope, b"host") or "").lower()
        if host not in self.access.hosts:
            await _plain(send_secured, 400, "convlog: this server answers only to the host names it is bound to "
                                            "(Host header refused)\n")
            return
        if scope["method"] not in ALLOWED_METHODS:
            await _plain(send_secured, 405, "convlog serve is read-only: GET and HEAD only\n",
                         [(b"allow", b"GET, HEAD")])
            return
        if self.access.token is not None:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            from_query = next((value for key, value in query if key == "token"), None)
            if from_query is not None and self.access.token_ok(from_query):
                await self._keep_in_cookie(send_secured, scope, [(k, v) for k, v in query if k != "token"])
                return
            name = cookie_name(self.access.port)
            if not (self.access.token_ok(_cookie(scope, name)) or self.access.token_ok(_bearer(scope))):
                if scope["path"] == PUBLIC_HEALTH_PATH:
                    # A load balancer or uptime check sends no token: it gets the
                    # status code and {"healthy": …}, nothing of the report.
                    await self.app({**scope, "state": {**scope.get("state", {}), ANONYMOUS: True}}, receive,
                                   send_secured)
                    return
                await _locked(send_secured, scope, host)
                return
        await self.app(scope, receive, send_secured)

    async def _keep_in_cookie(self, send: Callable[[Any], Awaitable[None]], scope: MutableMapping[str, Any],
                              rest: Iterable[tuple[str, str]]) -> None:
        """303 to the same path and query without ``token``, setting the cookie. The
        path is the request's own bytes (still percent-encoded) with its leading slashes
        made one, so ``//other.host/`` stays on this server instead of naming another."""
        query = urlencode(list(rest))
        raw = scope.get("raw_path") or scope["path"].encode()
        path = "/" + raw.decode("latin-1").lstrip("/")
        location = path + (f"?{query}" if query else "")
        cookie = (f"{cookie_name(self.access.port)}={self.access.token}; Path=/; HttpOnly; SameSite=Strict")
        await _plain(send, 303, "signed in\n", [(b"location", location.encode("latin-1", "replace")),
                                                (b"set-cookie", cookie.encode())])


async def _plain(send: Callable[[Any], Awaitable[None]], status: int, text: str,
                 headers: list[tuple[bytes, bytes]] | None = None, content_type: bytes = b"text/plain; charset=utf-8"
                 ) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _locked(send: Callable[[Any], Awaitable[None]], scope: MutableMapping[str, Any], host: str) -> None:
    """401: JSON for the API, the plain page saying how to get in for the rest."""
    challenge = [(b"www-authenticate", b'Bearer realm="convlog"')]
    if scope["path"].startswith("/api/"):
        await _plain(send, 401, '{"error": "the access token is missing or wrong"}\n', challenge,
                     b"application/json")
    else:
        await _plain(send, 401, LOCKED_PAGE.format(host=html.escape(host)), challenge, b"text/html; charset=utf-8")
