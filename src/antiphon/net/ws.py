"""WebSocket connections with deadlines on every await and typed errors."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from antiphon.aio.deadline import deadline
from antiphon.errors import (
    AuthError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
)

__all__ = ["ConnectionLost", "WsConnection", "WsOptions", "connect"]

log = logging.getLogger(__name__)
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class WsOptions:
    """Deadlines and limits of one WebSocket connection (seconds, bytes)."""

    connect_timeout: float = 5.0
    send_timeout: float = 5.0
    close_timeout: float = 2.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    max_message_size: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "send_timeout", "close_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"WsOptions.{name} must be > 0 seconds")


class ConnectionLost(ProviderConnectionError):
    """The peer closed the connection or it dropped; ``code``/``reason`` say how."""

    def __init__(self, *, provider: str, stage: str, code: int | None, reason: str) -> None:
        self.close_code = code
        self.close_reason = reason
        super().__init__(
            f"connection closed: {reason or 'no reason given'}",
            provider=provider,
            stage=stage,
            code=code if code is not None else 1006,
            retryable=True,
        )


class WsConnection:
    """One client WebSocket. ``send`` has a deadline; ``aclose`` is idempotent and bounded.

    ``recv`` has none of its own: the caller knows what it waits for and sets the deadline
    (cancelling ``recv`` loses no data).
    """

    def __init__(
        self, ws: ClientConnection, *, provider: str, options: WsOptions, created_at: float
    ) -> None:
        self.id = next(_ids)
        self.provider = provider
        self.created_at = created_at
        self._ws = ws
        self._options = options
        self._closing = False
        self._closed = asyncio.Event()
        self._aborted = False

    def __repr__(self) -> str:
        return f"<WsConnection #{self.id} {self.provider} open={self.open}>"

    @property
    def open(self) -> bool:
        return not self._aborted and not self._closing and self._ws.close_code is None

    @property
    def response_headers(self) -> Mapping[str, str]:
        return self._ws.response.headers if self._ws.response else {}

    def age(self, now: float) -> float:
        return now - self.created_at

    def _lost(self, stage: str) -> ConnectionLost:
        return ConnectionLost(
            provider=self.provider,
            stage=stage,
            code=self._ws.close_code,
            reason=self._ws.close_reason or "",
        )

    async def send(self, message: str | bytes, *, stage: str = "send") -> None:
        try:
            async with deadline(
                self._options.send_timeout,
                provider=self.provider,
                stage=stage,
                hint="the server stopped reading; the connection will be replaced",
                what="the message was not sent",
            ):
                await self._ws.send(message)
        except ConnectionClosed:
            raise self._lost(stage) from None

    async def recv(self, *, stage: str = "receive") -> str | bytes:
        try:
            return await self._ws.recv()
        except ConnectionClosed:
            raise self._lost(stage) from None

    async def read_into(
        self, handle: Callable[[str | bytes], bool], *, stage: str = "receive"
    ) -> None:
        """Pass every message to ``handle`` until it returns False (a reader task's loop).

        The same as calling :meth:`recv` in a loop (``ConnectionLost`` when the peer
        closes; cancel-safe), with one coroutine per connection instead of one per
        message: the per-chunk path of every streaming reader.
        """
        recv = self._ws.recv
        try:
            while True:
                if not handle(await recv()):
                    return
        except ConnectionClosed:
            raise self._lost(stage) from None

    def abort(self) -> None:
        """Drop the socket at once, without a close handshake."""
        self._aborted = True
        if self._ws.transport is not None:
            self._ws.transport.abort()

    async def aclose(self) -> None:
        """Close the handshake within ``close_timeout``, else abort the socket.

        Idempotent; concurrent callers wait for the first. If the closing caller is
        cancelled, the socket is aborted on the way out, so nothing is left behind.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            await self._close()
        finally:
            self._closed.set()

    async def _close(self) -> None:
        try:
            async with asyncio.timeout(self._options.close_timeout):
                await self._ws.close()
        except (TimeoutError, OSError, ConnectionClosed):
            pass
        finally:
            # Make sure the socket is gone even if the peer never answered the close.
            if self._ws.transport is not None:
                self._ws.transport.abort()


async def connect(
    url: str,
    *,
    provider: str,
    headers: Mapping[str, str] | None = None,
    options: WsOptions | None = None,
    auth_hint: str = "check the API key",
) -> WsConnection:
    """Open a WebSocket within ``options.connect_timeout``, mapping failures to typed errors."""
    opts = options or WsOptions()
    loop = asyncio.get_running_loop()
    stage = "connect"
    try:
        async with deadline(
            opts.connect_timeout,
            provider=provider,
            stage=stage,
            hint=f"is the service reachable at {_origin(url)}?",
        ):
            ws = await ws_connect(
                url,
                additional_headers=dict(headers or {}),
                open_timeout=None,  # the deadline above governs
                close_timeout=opts.close_timeout,
                ping_interval=opts.ping_interval,
                ping_timeout=opts.ping_timeout,
                max_size=opts.max_message_size,
                compression=None,
                proxy=None,
                user_agent_header="antiphon",
            )
    except ProviderError:
        raise  # our own deadline, already typed
    except InvalidStatus as exc:
        raise _status_error(exc, provider=provider, auth_hint=auth_hint) from None
    except InvalidURI as exc:
        raise ConfigError(f"{provider}: invalid WebSocket URL {url!r}: {exc}") from None
    except InvalidHandshake as exc:
        raise ProviderConnectionError(
            f"WebSocket handshake failed: {exc}", provider=provider, stage=stage, retryable=True
        ) from None
    except OSError as exc:
        raise ProviderConnectionError(
            f"cannot connect to {_origin(url)}: {exc.strerror or exc}",
            provider=provider,
            stage=stage,
            hint="check the base URL and that the service is reachable",
            retryable=True,
        ) from None
    return WsConnection(ws, provider=provider, options=opts, created_at=loop.time())


def _origin(url: str) -> str:
    return url.split("?", 1)[0]


def _status_error(exc: InvalidStatus, *, provider: str, auth_hint: str) -> ProviderError:
    resp = exc.response
    status = resp.status_code
    detail = ""
    for header in ("dg-error", "x-error", "www-authenticate"):
        if header in resp.headers:
            detail = resp.headers[header]
            break
    if not detail and resp.body:
        detail = resp.body.decode("utf-8", "replace").strip()[:300]
    msg = f"HTTP {status} on WebSocket upgrade" + (f": {detail}" if detail else "")
    if status in (401, 403):
        return AuthError(msg, provider=provider, stage="connect", code=status, hint=auth_hint)
    if status == 429:
        return ProviderError(
            msg,
            provider=provider,
            stage="connect",
            code=status,
            hint="too many concurrent connections or requests; lower the concurrency",
            retryable=True,
        )
    return ProviderError(
        msg, provider=provider, stage="connect", code=status, retryable=status >= 500
    )
