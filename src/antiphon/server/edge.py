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
- :class:`TicketBook`: HMAC-signed, expiring tickets that a verified carrier webhook
  (``/twilio/voice``, ``/<carrier>/voice``) hands to the media stream, single-use in each
  process, so a replayed signed upgrade gets no call; any process with the same key
  (:func:`ticket_key`) accepts them, so a load balancer may send the stream anywhere.
- :class:`RedactSecrets`: a logging filter that rewrites ``token=...`` (and the like) in
  every record of uvicorn's loggers, access lines included.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "FORBIDDEN",
    "TICKET_TTL",
    "BodyTooLarge",
    "HostCheck",
    "RedactSecrets",
    "TicketBook",
    "install_redaction",
    "normalize_origin",
    "origin_ok",
    "read_body",
    "redact",
    "ticket_key",
    "token_ok",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
FORBIDDEN = 4403
"""Close code of a call from a browser origin that is not allowed."""


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


TICKET_TTL = 60.0
"""Seconds a ticket stays valid: the carrier connects the stream within a second or two of
the webhook's answer; a minute covers a slow carrier and clocks a few seconds apart."""

_TICKET_CONTEXT = b"antiphon media-stream ticket v1"


def ticket_key(secret: str | None, *fallbacks: str | None) -> bytes:
    """The key that signs tickets: from ``secret`` (``ANTIPHON_TICKET_SECRET``), else from the
    carrier secrets given (auth tokens, signature secrets: secrets every pod of one deployment
    shares), else random (tickets then hold in this process only).

    A key derived from a carrier's secret is an HMAC of it, never the secret itself.
    """
    material = secret or "\0".join(f for f in fallbacks if f)
    if not material:
        return secrets.token_bytes(32)
    return hmac.new(material.encode(), _TICKET_CONTEXT, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class TicketBook:
    """Self-verifying tickets: HMAC-signed, expiring, single-use in each process.

    A ticket is ``<expiry ms>.<nonce>.<mac>``: the MAC (HMAC-SHA256 with ``key``, cut to
    128 bits) covers the expiry, the nonce and the route (``scope``) it was issued for, so
    any process holding the same key accepts it: behind a load balancer the carrier's media
    WebSocket may reach another process than the webhook did. Expiry is wall-clock time
    (``wall``, :func:`time.time`; tests inject theirs), since processes share no monotonic
    clock. Replays are refused within a process: a redeemed ticket is remembered until it
    expires, at most ``capacity`` of them; forgetting one early raises a floor under which
    every ticket is refused, so memory stays bounded and no forgotten ticket is accepted
    twice. Across processes a ticket could be redeemed once in each within its lifetime.
    """

    def __init__(
        self,
        key: bytes,
        ttl: float = TICKET_TTL,
        capacity: int = 10_000,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if len(key) < 16:
            raise ValueError("a ticket key has at least 16 bytes")
        if ttl <= 0:
            raise ValueError("a ticket's lifetime is positive")
        self._key = key
        self.ttl = ttl
        self.capacity = capacity
        self.wall = wall
        self._used: OrderedDict[str, int] = OrderedDict()  # nonce -> expiry (ms), redeemed
        self._floor = 0  # tickets expiring at or before this (ms) are refused

    def _mac(self, expires: int, nonce: str, scope: str) -> str:
        signed = f"{expires}.{nonce}.{scope}".encode()
        return _b64(hmac.new(self._key, signed, hashlib.sha256).digest()[:16])

    def issue(self, scope: str = "") -> str:
        """A new ticket for the route ``scope`` (e.g. the carrier's name)."""
        expires = int((self.wall() + self.ttl) * 1000)
        nonce = _b64(secrets.token_bytes(12))
        return f"{expires}.{nonce}.{self._mac(expires, nonce, scope)}"

    def redeem(self, ticket: str | None, scope: str = "") -> bool:
        """Whether ``ticket`` was signed with this key for ``scope``, has not expired and was
        not redeemed here before; redeems it."""
        if not ticket or len(ticket) > 100:
            return False
        parts = ticket.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return False
        expires, nonce, mac = int(parts[0]), parts[1], parts[2]
        if not hmac.compare_digest(mac.encode(), self._mac(expires, nonce, scope).encode()):
            return False
        now = int(self.wall() * 1000)
        while self._used and next(iter(self._used.values())) <= now:
            self._used.popitem(last=False)  # expired: refused by its expiry from now on
        if expires <= now or expires <= self._floor or nonce in self._used:
            return False
        self._used[nonce] = expires
        while len(self._used) > self.capacity:
            _, forgotten = self._used.popitem(last=False)
            self._floor = max(self._floor, forgotten)
        return True

    def __len__(self) -> int:
        """Redeemed tickets remembered (not yet expired)."""
        return len(self._used)


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
