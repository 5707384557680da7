"""``CallBridge``: what every transport's call shares, whatever its wire format.

One call connects one agent session to one socket with three owned tasks: a reader (the
peer's messages, in order), a sender (everything the peer gets, in order, from one
queue; every send has a deadline) and an audio pump (the session's paced output into
that queue). Events are queued by a synchronous session listener the moment the session
emits them, so an interruption's notice always precedes any audio of the next turn.
The first task to end (or :meth:`end`) ends the call; the session is closed and the
socket closed with the call's code, all bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from typing import Generic, Protocol, TypeVar

from antiphon.agent.events import AgentEvent
from antiphon.agent.session import AgentSession
from antiphon.aio.channel import Channel, ChannelClosed

log = logging.getLogger(__name__)
M = TypeVar("M")

NORMAL = 1000
GOING_AWAY = 1001
POLICY = 1008
TOO_BIG = 1009
INTERNAL = 1011
TRY_AGAIN = 1013
UNAUTHORIZED = 4401
RATE_LIMITED = 4429


class WebSocketLike(Protocol):
    """The little of a WebSocket a bridge needs."""

    async def receive(self) -> bytes | str | None:
        """The next message; ``None`` once the peer has gone."""
        ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = NORMAL, reason: str = "") -> None: ...


class CallEnded(Exception):
    """Why a call ends: the close code and reason sent to the peer."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class CallBridge(ABC, Generic[M]):
    """One call between ``session`` and ``ws``; subclasses speak a wire format.

    Subclasses implement :meth:`_read`, :meth:`_pump_audio`, :meth:`_on_event` and
    :meth:`_send_one`, and queue outgoing messages of type ``M`` with :meth:`_queue`.
    """

    name = "call"

    def __init__(self, session: AgentSession, ws: WebSocketLike, *, send_timeout: float) -> None:
        self.session = session
        self.ws = ws
        self.send_timeout = send_timeout
        self._out: Channel[M] = Channel()
        self._ended: asyncio.Future[CallEnded] | None = None
        self._sender: asyncio.Task[None] | None = None

    def end(self, code: int, reason: str) -> None:
        """End the call from outside (e.g. a server shutting down)."""
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(CallEnded(code, reason))

    async def run(self) -> int:
        """Run the call until it ends; the session is closed; returns the close code."""
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()
        remove = self.session.on_event(self._on_event)
        self._hello()
        self._sender = loop.create_task(self._send(), name=f"{self.name}-send")
        tasks = [
            loop.create_task(self._read(), name=f"{self.name}-read"),
            self._sender,
            loop.create_task(self._pump_audio(), name=f"{self.name}-audio"),
        ]
        for t in tasks:
            t.add_done_callback(self._task_done)
        try:
            ended = await self._ended
        finally:
            remove()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.session.aclose()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.send_timeout):
                await self.ws.close(ended.code, ended.reason)
        return ended.code

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, CallEnded):
            self.end(exc.code, exc.reason)
        elif exc is not None:
            log.warning("%s: %s failed: %r", self.name, task.get_name(), exc)
            self.end(INTERNAL, "internal error")
        elif task is not self._sender:
            self.end(NORMAL, "")

    def _queue(self, item: M) -> None:
        with contextlib.suppress(ChannelClosed):
            self._out.send_nowait(item)

    async def _finish_sending(self) -> None:
        """Send what is queued (bounded), then nothing more."""
        self._out.close()
        if self._sender is not None:
            await asyncio.wait([self._sender], timeout=self.send_timeout)

    async def _send(self) -> None:
        async for item in self._out:
            try:
                async with asyncio.timeout(self.send_timeout):
                    await self._send_one(item)
            except TimeoutError:
                raise CallEnded(POLICY, "the peer stopped reading") from None
            except Exception as exc:  # the socket is gone: the call is over
                raise CallEnded(NORMAL, f"send failed: {exc!r}") from None

    def _hello(self) -> None:
        """Queue what the peer gets first (nothing by default)."""

    async def _pump_audio(self) -> None:
        async for frame in self.session.output:
            self._audio_out(frame.data, frame.generation)
        await asyncio.Future()  # the output closed: the call ends by the reader or end()

    @abstractmethod
    def _audio_out(self, pcm: bytes, generation: int) -> None:
        """Queue one 20 ms frame of agent audio (PCM16 at the session's output rate)."""

    @abstractmethod
    async def _send_one(self, item: M) -> None:
        """Send one queued message."""

    @abstractmethod
    async def _read(self) -> None:
        """Take the peer's messages until the call ends (raise :class:`CallEnded`)."""

    @abstractmethod
    def _on_event(self, event: AgentEvent) -> None:
        """Act on a session event as it happens (queue notices; never block)."""
