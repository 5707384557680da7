"""The server's edge: who may call, bounded request bodies, and secrets kept out of logs.

Everything here is a small pure check the endpoints of :mod:`antiphon.server.app` call
before any work is done for a peer (the threat model is in docs/server.md):

- :func:`token_ok`: the server's token, from ``?token=`` or ``Authorization: Bearer``,
  compared in constant time.
- :func:`origin_ok`: a browser's ``Origin`` must be the server's own (the ``Host`` it
  asked for) or one the operator allowed; a request without ``Origin`` is not from a
  page, so it is allowed (other checks still apply). This stops a page on another site
  from opening a call with the visitor's network position, and ``text/plain`` posts
  (which need no CORS preflight) are refused by the endpoint's content type check.
- :class:`HostCheck`: ASGI middleware refusing a ``Host`` outside an allow-list (DNS
  rebinding: a hostile name that resolves to this server), for HTTP (400) and WebSocket
  (refused upgrade).
- :func:`read_body`: a request body of at most N bytes, refused (413) as soon as it
  passes N, before any signature is computed over it.
- :class:`TicketBook`: single-use, expiring tickets that ``/twilio/voice`` hands to the
  media stream (a TwiML ``<Parameter>``), so a replayed signed upgrade gets no call.
- :class:`RedactSecrets`: a logging filter that rewrites ``token=...`` (and the like) in
  every record of uvicorn's loggers, access lines included.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from antiphon.aio.clock import Clock

__all__ = [
    "BodyTooLarge",
    "HostCheck",
    "RedactSecrets",
    "TicketBook",
    "install_redaction",
    "normalize_origin",
    "origin_ok",
    "read_body",
    "redact",
    "token_ok",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def token_ok(expected: str | None, query: str | None, authorization: str | None) -> bool:
    """Whether a request carries ``expected`` (None: no token needed)."""
    if expected is None:
        return True
    given = query or ""
    if authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    return hmac.compare_digest(given.encode(), expected.encode())


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]``, lowercased, default ports dropped (``*`` stays ``*``)."""
    origin = origin.strip().rstrip("/").lower()
    if origin in ("*", "null"):
        return origin
    parts = urlsplit(origin)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return origin
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(parts.scheme)
    netloc = host if port is None or port == default else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}"


def origin_ok(origin: str | None, host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a request from ``origin`` to ``host`` (its ``Host`` header) may proceed.

    No ``Origin``: allowed (not a browser page). Same origin (the Origin's host and port
    are the request's ``Host``): allowed. Otherwise only an origin in ``allowed``
    (normalized, or ``*``).
    """
    if origin is None:
        return True
    allowed = set(allowed)
    if "*" in allowed:
        return True
    normal = normalize_origin(origin)
    if normal in allowed:
        return True
    if host is None or normal == "null":
        return False
    parts = urlsplit(normal)
    return parts.scheme in ("http", "https") and parts.netloc == _netloc(host, parts.scheme)


def _netloc(host: str, scheme: str) -> str:
    """A ``Host`` header as the netloc of a normalized origin of ``scheme``."""
    return urlsplit(normalize_origin(f"{scheme}://{host.strip()}")).netloc


def host_allowed(host_header: str | None, allowed: Iterable[str]) -> bool:
    """Whether a ``Host`` header names one of ``allowed`` (``*.example.com``, ``*``)."""
    if host_header is None:
        return False
    host = urlsplit(f"//{host_header.strip().lower()}").hostname or ""
    for pattern in allowed:
        pattern = pattern.strip().lower().strip("[]")
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


class HostCheck:
    """ASGI middleware: only requests whose ``Host`` is in ``allowed`` reach ``app``."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = tuple(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = None
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1")
                break
        if host_allowed(host, self.allowed):
            await self.app(scope, receive, send)
            return
        log.info("refused a request for host %r (not in --allow-host)", host)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "host not allowed"})
            return
        body = b"host not allowed: add it with --allow-host\n"
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    """A request body over its limit."""


async def read_body(request: Any, limit: int, timeout: float) -> bytes:
    """The body of a Starlette ``request``: at most ``limit`` bytes within ``timeout`` s.

    Raises:
        BodyTooLarge: ``Content-Length`` says more, or more arrives.
        TimeoutError: the body took longer than ``timeout``.
    """
    async with asyncio.timeout(timeout):
        return await _read_body(request, limit)


async def _read_body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge(f"request bodies are at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request bodies are at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class TicketBook:
    """Single-use tickets valid for ``ttl`` seconds; at most ``capacity`` outstanding.

    Issuing beyond ``capacity`` forgets the oldest (bounded memory whatever the rate).
    """

    def __init__(self, clock: Clock, ttl: float = 60.0, capacity: int = 10_000) -> None:
        self.clock = clock
        self.ttl = ttl
        self.capacity = capacity
        self._tickets: OrderedDict[str, float] = OrderedDict()

    def issue(self) -> str:
        ticket = secrets.token_urlsafe(18)
        self._tickets[ticket] = self.clock.now() + self.ttl
        while len(self._tickets) > self.capacity:
            self._tickets.popitem(last=False)
        return ticket

    def redeem(self, ticket: str | None) -> bool:
        """Whether ``ticket`` was issued, has not expired and was not used; uses it."""
        if not ticket:
            return False
        expires = self._tickets.pop(ticket, None)
        return expires is not None and self.clock.now() < expires

    def __len__(self) -> int:
        return len(self._tickets)


# ------------------------------------------------------------------ secrets out of logs

_SECRET = re.compile(
    r"(?i)((?:token|ticket|auth_token|api_key|key|signature)=)[^&\s\"'<>]+"
    r"|(bearer\s+)[^\s\"',]+"
)


def redact(text: str) -> str:
    """``text`` with the values of ``token=``, ``key=`` (...) and Bearer credentials hidden."""
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2)) + "[redacted]", text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message and string arguments through :func:`redact`.

    Arguments stay arguments (uvicorn's access formatter reads them by position).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in args.items()}
        return True


_REDACTED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def install_redaction(names: Iterable[str] = _REDACTED_LOGGERS) -> None:
    """Add one :class:`RedactSecrets` to each named logger (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


log = logging.getLogger(__name__)
