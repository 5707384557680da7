"""The agent WebSocket (docs/transport-ws.md): raw PCM both ways, JSON events.

:class:`WebSocketBridge` connects one agent session to one WebSocket through a small
:class:`WebSocketLike` protocol, so the same bridge serves the ASGI server (Starlette's
WebSocket, see :class:`StarletteSocket`) and tests.

- **One reader task** takes the client's messages in order: audio goes to
  ``session.push_audio`` (validated), ``say`` and ``end`` to the session; bad input ends
  the call with the close code the protocol names.
- **One sender task** sends everything the client gets, in order, from one queue: agent
  audio (from the session's paced output, by a pump task) and events. Events are queued
  by a synchronous listener the moment the session emits them, so ``clear`` is always
  queued before any audio of the next turn.
- **Every send has a deadline**: a client that stops reading cannot hold the session;
  its call is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol

from antiphon.agent.events import (
    AgentError,
    AgentEvent,
    AgentSpeaking,
    Interrupted,
    StateChanged,
    TurnCompleted,
    UserTranscribed,
)
from antiphon.agent.session import AgentSession
from antiphon.aio.channel import Channel, ChannelClosed
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, StreamClosedError

log = logging.getLogger(__name__)

NORMAL = 1000
GOING_AWAY = 1001
POLICY = 1008
TOO_BIG = 1009
TRY_AGAIN = 1013
UNAUTHORIZED = 4401
RATE_LIMITED = 4429


class WebSocketLike(Protocol):
    """The little of a WebSocket the bridge needs."""

    async def receive(self) -> bytes | str | None:
        """The next message; ``None`` once the client has gone."""
        ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = NORMAL, reason: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class BridgeLimits:
    """What one call may do (see the close codes in docs/transport-ws.md)."""

    max_message_bytes: int = 32_000
    max_messages_per_second: int = 200
    send_timeout: float = 5.0
    """The longest one send may take before the call is closed (a client not reading)."""
    end_timeout: float = 20.0
    """After ``end``: the longest the reply in progress may take to finish."""

    def __post_init__(self) -> None:
        if self.max_message_bytes < 2 or self.max_messages_per_second < 1:
            raise ConfigError("BridgeLimits: message size and rate limits must be positive")
        if self.send_timeout <= 0 or self.end_timeout <= 0:
            raise ConfigError("BridgeLimits: timeouts must be positive seconds")


class CallEnded(Exception):
    """Why a call ends: the close code and reason sent to the client."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


def event_message(event: AgentEvent) -> dict[str, Any] | None:
    """The JSON message for an agent event (None: not sent to clients)."""
    gen = event.generation
    if isinstance(event, StateChanged):
        return {"type": "state", "state": event.new.value, "generation": gen}
    if isinstance(event, UserTranscribed):
        return {
            "type": "transcript",
            "role": "user",
            "text": event.text,
            "final": event.is_final,
            "generation": gen,
        }
    if isinstance(event, AgentSpeaking):
        return {
            "type": "transcript",
            "role": "agent",
            "text": event.text,
            "final": True,
            "generation": gen,
        }
    if isinstance(event, Interrupted):
        return {
            "type": "interrupted",
            "played": round(event.played, 3),
            "text": event.text,
            "generation": gen,
        }
    if isinstance(event, TurnCompleted):
        return {"type": "turn", "metrics": event.metrics.to_dict(), "generation": gen}
    if isinstance(event, AgentError):
        return {
            "type": "error",
            "stage": event.stage,
            "message": str(event.error),
            "recoverable": event.recoverable,
        }
    return None


class WebSocketBridge:
    """One call: ``await WebSocketBridge(session, ws).run()`` until it ends.

    The session must be started; the bridge closes it when the call ends. ``run``
    returns the close code sent to the client.
    """

    def __init__(
        self,
        session: AgentSession,
        ws: WebSocketLike,
        *,
        input_rate: int = 16000,
        limits: BridgeLimits | None = None,
    ) -> None:
        self.session = session
        self.ws = ws
        self.input_rate = input_rate
        self.limits = limits or BridgeLimits()
        self.id = secrets.token_hex(4)
        self._out: Channel[bytes | str] = Channel()
        self._ended: asyncio.Future[CallEnded] | None = None
        self._sender: asyncio.Task[None] | None = None
        self.frames_sent = 0
        self.frames_received = 0

    def end(self, code: int, reason: str) -> None:
        """End the call from outside (e.g. a server shutting down)."""
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(CallEnded(code, reason))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()
        remove = self.session.on_event(self._on_event)
        self._queue(
            json.dumps(
                {
                    "type": "ready",
                    "session": self.id,
                    "input_rate": self.input_rate,
                    "output_rate": self.session.output.sample_rate,
                    "frame_ms": 20,
                }
            )
        )
        self._sender = loop.create_task(self._send(), name=f"ws-{self.id}-send")
        tasks = [
            loop.create_task(self._read(), name=f"ws-{self.id}-read"),
            self._sender,
            loop.create_task(self._pump_audio(), name=f"ws-{self.id}-audio"),
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
            async with asyncio.timeout(self.limits.send_timeout):
                await self.ws.close(ended.code, ended.reason)
        return ended.code

    # -- internals

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, CallEnded):
            self.end(exc.code, exc.reason)
        elif exc is not None:
            log.warning("call %s: %s failed: %r", self.id, task.get_name(), exc)
            self.end(1011, "internal error")
        elif task is not self._sender:
            self.end(NORMAL, "")

    def _queue(self, item: bytes | str) -> None:
        with contextlib.suppress(ChannelClosed):
            self._out.send_nowait(item)

    def _on_event(self, event: AgentEvent) -> None:
        if isinstance(event, Interrupted):
            # the client drops its buffered agent audio now, before any newer audio
            self._queue(json.dumps({"type": "clear", "generation": event.generation + 1}))
        message = event_message(event)
        if message is not None:
            self._queue(json.dumps(message))

    async def _pump_audio(self) -> None:
        async for frame in self.session.output:
            self._queue(frame.data)
        await asyncio.Future()  # the output closed: the call ends by the reader or end()

    async def _send(self) -> None:
        async for item in self._out:
            try:
                async with asyncio.timeout(self.limits.send_timeout):
                    if isinstance(item, bytes):
                        await self.ws.send_bytes(item)
                        self.frames_sent += 1
                    else:
                        await self.ws.send_text(item)
            except TimeoutError:
                raise CallEnded(POLICY, "the client stopped reading") from None
            except Exception as exc:  # the socket is gone: the call is over
                raise CallEnded(NORMAL, f"send failed: {exc!r}") from None

    async def _read(self) -> None:
        limits = self.limits
        window_start, count = time.monotonic(), 0
        while True:
            message = await self.ws.receive()
            if message is None:
                raise CallEnded(NORMAL, "client left")
            now = time.monotonic()
            if now - window_start >= 1.0:
                window_start, count = now, 0
            count += 1
            if count > limits.max_messages_per_second:
                raise CallEnded(RATE_LIMITED, "too many messages per second")
            if isinstance(message, bytes):
                self._audio(message)
            else:
                await self._command(message)

    def _audio(self, data: bytes) -> None:
        if len(data) > self.limits.max_message_bytes:
            raise CallEnded(TOO_BIG, f"audio messages are at most {self.limits.max_message_bytes}")
        if len(data) % 2:
            raise CallEnded(POLICY, "audio is 16-bit PCM: an even number of bytes")
        if not data:
            return
        self.frames_received += 1
        try:
            self.session.push_audio(AudioFrame(data, self.input_rate, 1))
        except StreamClosedError as exc:
            raise CallEnded(1011, f"the agent ended: {exc}") from None

    async def _command(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            raise CallEnded(POLICY, "text messages are JSON") from None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "say":
            said = message.get("text")
            if not isinstance(said, str) or not said.strip():
                raise CallEnded(POLICY, "say needs a non-empty text")
            self.session.say(said)
        elif kind == "end":
            self.session.end_input()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.limits.end_timeout):
                    await self.session.wait_idle()
            # let the sender take what is queued, then end
            self._out.close()
            if self._sender is not None:
                await asyncio.wait([self._sender], timeout=self.limits.send_timeout)
            raise CallEnded(NORMAL, "done")
        else:
            raise CallEnded(POLICY, f"unknown message type {kind!r}")


class StarletteSocket:
    """:class:`WebSocketLike` over a Starlette/FastAPI ``WebSocket`` (already accepted)."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    async def receive(self) -> bytes | str | None:
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        data = message.get("bytes")
        if data is not None:
            return bytes(data)
        text = message.get("text")
        return text if text is not None else ""

    async def send_bytes(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def send_text(self, data: str) -> None:
        await self._ws.send_text(data)

    async def close(self, code: int = NORMAL, reason: str = "") -> None:
        await self._ws.close(code, reason)
