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
from typing import Any

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
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, StreamClosedError
from antiphon.transports.base import (
    NORMAL,
    POLICY,
    RATE_LIMITED,
    TOO_BIG,
    CallBridge,
    CallEnded,
    WebSocketLike,
)

log = logging.getLogger(__name__)


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


class WebSocketBridge(CallBridge[bytes | str]):
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
        self.limits = limits or BridgeLimits()
        super().__init__(session, ws, send_timeout=self.limits.send_timeout)
        self.input_rate = input_rate
        self.id = secrets.token_hex(4)
        self.name = f"ws-{self.id}"
        self.frames_sent = 0
        self.frames_received = 0

    def _hello(self) -> None:
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

    def _on_event(self, event: AgentEvent) -> None:
        if isinstance(event, Interrupted):
            # the client drops its buffered agent audio now, before any newer audio
            self._queue(json.dumps({"type": "clear", "generation": event.generation + 1}))
        message = event_message(event)
        if message is not None:
            self._queue(json.dumps(message))

    def _audio_out(self, pcm: bytes, generation: int) -> None:
        self._queue(pcm)

    async def _send_one(self, item: bytes | str) -> None:
        if isinstance(item, bytes):
            await self.ws.send_bytes(item)
            self.frames_sent += 1
        else:
            await self.ws.send_text(item)

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
            await self._finish_sending()
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
