"""WebSocket connections with deadlines on every await and typed errors.

Two ways to read a connection. ``recv`` (and ``read_into``, its loop) awaits
``websockets``' own message queue: a task wakes per message. A **handler**
(:meth:`WsConnection.set_handler`) is called with every data message straight from the
protocol callback that parsed it, in the event loop's read of the socket, with no task
and no queue in between: the streaming readers use it, so a chunk's one task hop is the
consumer's own wake-up, as for a bare client awaiting ``recv()``. ``connect`` makes the
``websockets`` connection a :class:`_Client`, which routes data frames to the handler
when one is set (and to ``websockets``' queue otherwise) and reports the connection's
loss to it. A handler must not block; what it raises is logged and drops the socket.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)
from websockets.frames import BINARY, CONT, TEXT, Frame
from websockets.protocol import State

from antiphon.aio.deadline import deadline
from antiphon.errors import (
    AuthError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
)

__all__ = [
    "ConnectionLost",
    "LostHandler",
    "MessageHandler",
    "WsConnection",
    "WsOptions",
    "connect",
]

log = logging.getLogger(__name__)
_ids = itertools.count(1)

MessageHandler = Callable[[str | bytes], None]
"""Called with each data message (``str`` for text, ``bytes`` for binary)."""
LostHandler = Callable[["ConnectionLost"], None]
"""Called once when the connection is gone (closed by either side, or dropped)."""

#: Frames of one fragmented message at most (as ``websockets``' own queue allows).
MAX_FRAGMENTS = 4096
_OPEN = State.OPEN
_FRAME_HEAD = 14  # bytes of a frame's header at most (client frames are masked)
# (A str is bounded by 4 bytes a character in UTF-8.)


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


class _Client(ClientConnection):
    """``websockets``' client connection with a direct route for data frames.

    ``route`` (when set) takes every data frame instead of ``websockets``' message queue;
    ``on_lost`` is called once the connection is lost (after ``websockets`` has set its
    close code). Both are set only by :class:`WsConnection`.
    """

    route: Callable[[Frame], None] | None = None
    on_lost: Callable[[], None] | None = None
    lost = False

    def process_event(self, event: Any) -> None:
        route = self.route
        if route is not None and type(event) is Frame and event.opcode in (BINARY, TEXT, CONT):
            route(event)
        else:
            super().process_event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost = True
        on_lost = self.on_lost
        if on_lost is not None:
            on_lost()


class WsConnection:
    """One client WebSocket. ``send`` has a deadline; ``aclose`` is idempotent and bounded.

    ``recv`` has none of its own: the caller knows what it waits for and sets the deadline
    (cancelling ``recv`` loses no data). Or a handler takes every message as it arrives
    (:meth:`set_handler`); ``recv`` is refused while one is set.
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
        self._on_message: MessageHandler | None = None
        self._on_lost: LostHandler | None = None
        self._parts: list[Frame] = []  # a fragmented message on its way to the handler
        self._broken = ""  # why the socket was dropped under a handler
        self._stage = "receive"  # the stage a handler's ConnectionLost names
        self._receiving = 0  # recv/read_into calls in progress

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
            reason=self._broken or self._ws.close_reason or "",
        )

    # -- reading with a handler
    @property
    def has_handler(self) -> bool:
        return self._on_message is not None

    def set_handler(
        self, on_message: MessageHandler, on_lost: LostHandler, *, stage: str = "receive"
    ) -> None:
        """From now on, call ``on_message(data)`` with every data message as it arrives,
        in the protocol callback (no task), and ``on_lost(error)`` once the connection is
        gone — at once if it already is. Replaces a handler set before.

        Messages ``websockets`` queued before (nobody called ``recv``) go to ``on_message``
        first, in order. ``on_message`` must not block; if it raises, the error is logged
        and the socket dropped (``on_lost`` follows). Refused while a ``recv`` waits.
        """
        if self._receiving:
            raise RuntimeError(f"{self!r}: set_handler() while a recv() is in progress")
        ws = self._ws
        if not isinstance(ws, _Client):
            raise TypeError(f"{self!r}: handlers need a connection made by connect()")
        self._on_message = on_message
        self._on_lost = on_lost
        self._stage = stage
        ws.route = self._route
        ws.on_lost = self._lost_now
        self._route_queued()
        if ws.lost:
            self._lost_now()

    def clear_handler(self) -> None:
        """Stop calling the handler: messages wait for ``recv`` again (idempotent)."""
        self._on_message = self._on_lost = None
        ws = self._ws
        if isinstance(ws, _Client):
            ws.route = ws.on_lost = None
            if self._parts and not ws.lost:  # the rest of it will reach websockets' queue
                parts, self._parts = self._parts, []
                for frame in parts:
                    ws.recv_messages.put(frame)
        self._parts = []

    def _route_queued(self) -> None:
        """Hand over what ``websockets`` queued while nobody read (its ``Assembler``)."""
        queue = getattr(getattr(self._ws.recv_messages, "frames", None), "queue", None)
        if not queue:
            return
        while queue and self._on_message is not None:
            self._route(queue.popleft())
        resume = getattr(self._ws.recv_messages, "maybe_resume", None)
        if resume is not None:
            resume()  # reading was paused if that queue was full

    def _route(self, frame: Frame) -> None:
        """One data frame from the protocol callback: a whole message goes to the handler."""
        if frame.fin and not self._parts:  # the common case: one frame, one message
            data = frame.data
            opcode = frame.opcode
        else:
            self._parts.append(frame)
            if not frame.fin:
                if len(self._parts) > MAX_FRAGMENTS:
                    self._drop(f"a message in more than {MAX_FRAGMENTS} fragments")
                return
            parts, self._parts = self._parts, []
            data = b"".join(f.data for f in parts)
            opcode = parts[0].opcode
        handler = self._on_message
        if handler is None:
            return
        try:
            message: str | bytes
            if opcode is TEXT:
                message = str(data, "utf-8")
            else:
                message = data if type(data) is bytes else bytes(data)
        except UnicodeDecodeError:
            self._drop("a text message that is not valid UTF-8")
            return
        try:
            handler(message)
        except Exception:
            log.exception("%r: the message handler failed; dropping the connection", self)
            self._drop("the message handler failed")

    def _drop(self, why: str) -> None:
        self._broken = why
        self._parts = []
        self.abort()  # websockets calls connection_lost: the handler hears of it

    def _lost_now(self) -> None:
        on_lost = self._on_lost
        self._on_message = self._on_lost = None
        self._parts = []
        ws = self._ws
        if isinstance(ws, _Client):
            ws.route = ws.on_lost = None
        if on_lost is not None:
            on_lost(self._lost(self._stage))

    @property
    def writable(self) -> bool:
        """A message written now goes out without waiting: the WebSocket is open and its
        write buffer under its high-water mark (else a send waits for it to drain, under
        the send deadline)."""
        ws = self._ws
        return ws.protocol.state is _OPEN and not ws.paused

    def send_nowait(self, message: str | bytes) -> None:
        """Write ``message`` now, without awaiting; only while :attr:`writable`.

        A socket that died a moment ago but is not reported yet drops the bytes, as it
        would have dropped a send just before; the connection's loss is reported to its
        reader (or handler) as usual.
        """
        ws = self._ws
        if isinstance(message, str):
            ws.protocol.send_text(message.encode())
        else:
            ws.protocol.send_binary(message)
        ws.send_data()

    async def send(self, message: str | bytes, *, stage: str = "send") -> None:
        """Send ``message`` within ``send_timeout``.

        A send that cannot wait takes no timer: the connection is open, writing is not
        paused, nothing is queued for the socket and the message fits under the write
        buffer's high-water mark, so ``websockets`` hands it to the transport and returns
        without awaiting anything (it waits only while writing is paused or the
        connection closes). Every other send runs under the deadline.
        """
        ws = self._ws
        transport = ws.transport
        if (
            ws.state is _OPEN
            and not ws.paused
            and not transport.is_closing()
            and not transport.get_write_buffer_size()
            and (len(message) * 4 if type(message) is str else len(message)) + _FRAME_HEAD
            <= transport.get_write_buffer_limits()[1]
        ):
            try:
                await ws.send(message)
            except ConnectionClosed:
                raise self._lost(stage) from None
            return
        # aio.deadline() written out: the context-manager generator around the timer cost
        # as much as the timer.
        timeout = asyncio.timeout(self._options.send_timeout)
        try:
            async with timeout:
                await self._ws.send(message)
        except ConnectionClosed:
            raise self._lost(stage) from None
        except TimeoutError as exc:
            if not timeout.expired():
                raise
            raise ProviderTimeoutError(
                "the message was not sent",
                provider=self.provider,
                stage=stage,
                timeout=self._options.send_timeout,
                hint="the server stopped reading; the connection will be replaced",
            ) from exc

    async def recv(self, *, stage: str = "receive") -> str | bytes:
        if self._on_message is not None:
            raise RuntimeError(f"{self!r}: recv() while a handler takes the messages")
        self._receiving += 1
        try:
            return await self._ws.recv()
        except ConnectionClosed:
            raise self._lost(stage) from None
        finally:
            self._receiving -= 1

    async def read_into(
        self, handle: Callable[[str | bytes], bool], *, stage: str = "receive"
    ) -> None:
        """Pass every message to ``handle`` until it returns False (a reader task's loop).

        The same as calling :meth:`recv` in a loop (``ConnectionLost`` when the peer
        closes; cancel-safe), with one coroutine per connection instead of one per
        message: the per-chunk path of every streaming reader.
        """
        if self._on_message is not None:
            raise RuntimeError(f"{self!r}: read_into() while a handler takes the messages")
        recv = self._ws.recv
        self._receiving += 1
        try:
            while True:
                if not handle(await recv()):
                    return
        except ConnectionClosed:
            raise self._lost(stage) from None
        finally:
            self._receiving -= 1

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
                create_connection=_Client,
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
