"""The agent WebSocket (docs/transport-ws.md): raw PCM both ways, JSON events.

:class:`WebSocketBridge` connects one agent session to one WebSocket through a small
:class:`WebSocketLike` protocol, so the same bridge serves the ASGI server (Starlette's
WebSocket, see :class:`StarletteSocket`) and tests.

- **One reader task** takes the client's messages in order, through a
  :class:`~antiphon.transports.limits.ConnectionGuard` (size, rate, audio budget): audio
  goes to ``session.push_audio`` (validated), ``say``, ``text`` (a typed user turn,
  ``session.send_text``), ``dtmf`` and ``end`` to the session (JSON depth and text
  length bounded); bad input ends the call with the close code the
  protocol names.
- **One order for everything the client gets**: agent audio (each frame taken from the
  session's paced output in a loop callback at its release time) and events (queued by
  a synchronous listener the moment the session emits them, so ``clear`` always goes
  before any audio of the next turn). A message with nothing before it is written at
  once on the server's direct path when the socket is writable; otherwise it waits in
  one queue for the one sender task.
- **Recording** (optional ``recorder``, a :class:`~antiphon.audio.recording.CallRecorder`):
  the user's frames as they are pushed to the session, the agent's as they are sent
  (queued audio dropped on an interruption is not in the file); closed after the call.
- **Every send has a deadline**: a client that stops reading cannot hold the session;
  its call is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from typing import Any

from starlette.websockets import WebSocketState

from antiphon.agent.events import (
    AgentError,
    AgentEvent,
    AgentSpeaking,
    AgentWords,
    Interrupted,
    StateChanged,
    TurnCompleted,
    UserTranscribed,
)
from antiphon.agent.session import AgentSession
from antiphon.aio.tasks import shielded_wait
from antiphon.audio.frame import AudioFrame
from antiphon.audio.recording import CallRecorder
from antiphon.errors import ConfigError, StreamClosedError
from antiphon.protocols import bounded_json
from antiphon.transports.base import (
    NORMAL,
    POLICY,
    TOO_BIG,
    CallBridge,
    CallEnded,
    DirectWire,
    WebSocketLike,
)
from antiphon.transports.limits import ConnectionGuard, EdgeLimits
from antiphon.transports.phone_events import deliver_dtmf

__all__ = ["BridgeLimits", "StarletteSocket", "WebSocketBridge", "event_message"]

log = logging.getLogger(__name__)


BridgeLimits = EdgeLimits
"""The former name of :class:`~antiphon.transports.limits.EdgeLimits`."""


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
    if isinstance(event, AgentWords):
        return {
            "type": "words",
            "words": [w.word for w in event.words],
            "played": round(event.played, 3),
            "estimated": event.estimated,
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
    returns the close code sent to the client. ``ws`` is read through a
    :class:`~antiphon.transports.limits.ConnectionGuard` (sizes, rates, audio budget);
    pass one to share it with whoever runs its deadlines (the server does).
    """

    def __init__(
        self,
        session: AgentSession,
        ws: WebSocketLike,
        *,
        input_rate: int = 16000,
        limits: EdgeLimits | None = None,
        recorder: CallRecorder | None = None,
    ) -> None:
        self.limits = limits or EdgeLimits()
        self.recorder = recorder
        if not isinstance(ws, ConnectionGuard):
            ws = ConnectionGuard(
                ws,
                self.limits,
                max_binary_bytes=self.limits.max_audio_bytes,
                max_text_bytes=self.limits.max_text_bytes,
                audio_rate=input_rate,
            )
        self.guard = ws
        super().__init__(session, ws, send_timeout=self.limits.send_timeout)
        if not isinstance(input_rate, int) or input_rate <= 0:
            raise ConfigError(f"input_rate must be a positive int in Hz, got {input_rate!r}")
        self.input_rate = input_rate
        self.id = secrets.token_hex(4)
        self.name = f"ws-{self.id}"
        self.frames_sent = 0
        self.frames_received = 0

    async def run(self) -> int:
        """Run the call (see :meth:`CallBridge.run`); the recording is closed after it."""
        try:
            return await super().run()
        finally:
            if self.recorder is not None:
                recorder = self.recorder
                # bounded (it joins its writer thread); completes even if we are cancelled
                closing = asyncio.get_running_loop().create_task(recorder.aclose())
                try:
                    await shielded_wait(closing)
                except OSError as exc:  # the call is over; the file is what failed
                    log.warning("%s: the recording %s failed: %s", self.name, recorder.path, exc)

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
        # what _queue and _send_now do for a frame with nothing before it, written out
        # (every frame of a call whose peer keeps up): straight to the socket
        direct, out = self._direct, self._out
        if (
            direct is not None
            and not self._sending
            and not out.qsize()
            and not out.closed
            and direct.send_now(pcm)
        ):
            self._sent_audio(pcm)
            return
        self._queue(pcm)

    async def _send_one(self, item: bytes | str) -> None:
        if isinstance(item, bytes):
            await self.ws.send_bytes(item)
            self._sent_audio(item)
        else:
            await self.ws.send_text(item)

    def _send_now(self, item: bytes | str) -> bool:
        direct = self._direct
        if direct is None or not direct.send_now(item):
            return False
        if isinstance(item, bytes):
            self._sent_audio(item)
        return True

    def _sent_audio(self, pcm: bytes) -> None:
        self.frames_sent += 1
        if self.recorder is not None:  # what the caller got, not what was queued
            self.recorder.agent(AudioFrame(pcm, self.session.output.sample_rate, 1))

    takes_direct = True  # the audio; commands stay the reader's

    async def _read(self) -> None:
        while True:
            message = await self.guard.receive()  # size, rate and audio budget checked
            if message is None:
                raise CallEnded(NORMAL, "client left")
            if isinstance(message, bytes):
                self._audio(message)
                continue
            self._reader_busy = True  # audio waits in order behind the command
            try:
                await self._command(message)
            finally:
                self._reader_busy = False

    def _takes_now(self, message: bytes | str) -> bool:
        return isinstance(message, bytes) and not self.guard.pending

    def _handle_now(self, message: bytes | str) -> None:
        assert isinstance(message, bytes)
        self.guard.admit(message)
        self._audio(message)

    def _audio(self, data: bytes) -> None:
        if len(data) % 2:
            raise CallEnded(POLICY, "audio is 16-bit PCM: an even number of bytes")
        if not data:
            return
        self.frames_received += 1
        # bytes of whole int16 samples at a checked rate: no checks again per frame
        frame = AudioFrame.trusted(data, self.input_rate)
        try:
            self.session.push_audio(frame)
        except StreamClosedError as exc:
            raise CallEnded(1011, f"the agent ended: {exc}") from None
        if self.recorder is not None:
            self.recorder.user(frame)

    async def _command(self, text: str) -> None:
        limits = self.limits
        try:
            message = bounded_json.loads(text, max_depth=limits.max_json_depth)
        except bounded_json.JSONTooDeep as exc:
            raise CallEnded(POLICY, str(exc)) from None
        except ValueError:
            raise CallEnded(POLICY, "text messages are JSON") from None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "say":
            said = message.get("text")
            if not isinstance(said, str) or not said.strip():
                raise CallEnded(POLICY, "say needs a non-empty text")
            if len(said) > limits.max_say_chars:
                raise CallEnded(TOO_BIG, f"say takes at most {limits.max_say_chars} characters")
            self.session.say(said)
        elif kind == "text":  # a typed user turn, answered by voice
            typed = message.get("text")
            if not isinstance(typed, str) or not typed.strip():
                raise CallEnded(POLICY, "text needs a non-empty text")
            if len(typed) > limits.max_say_chars:
                raise CallEnded(TOO_BIG, f"text takes at most {limits.max_say_chars} characters")
            try:
                self.session.send_text(typed)
            except StreamClosedError as exc:
                raise CallEnded(1011, f"the agent ended: {exc}") from None
        elif kind == "dtmf":  # a key pressed: to the agent as DTMFReceived
            digit = message.get("digit")
            try:
                deliver_dtmf(self.session, digit if isinstance(digit, str) else "")
            except ValueError as exc:
                raise CallEnded(POLICY, str(exc)) from None
        elif kind == "end":
            self.session.end_input()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limits.end_timeout):
                    await self.session.wait_idle()
            await self._finish_sending()
            raise CallEnded(NORMAL, "done")
        else:
            raise CallEnded(POLICY, f"unknown message type {kind!r}")


class StarletteSocket:
    """:class:`WebSocketLike` over a Starlette/FastAPI ``WebSocket`` (already accepted).

    Per message it calls the connection's ASGI ``receive`` and ``send`` directly: on an
    accepted socket, Starlette's state checks around them decide nothing, and they ran
    for every 20 ms frame each way. The one state they keep, the client's disconnect, is
    kept here too; ``close`` goes through Starlette. ``direct`` is the server's direct
    path for the connection (:mod:`antiphon.server.ws_protocol`), if it offers one.
    """

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        extensions = (getattr(ws, "scope", None) or {}).get("extensions") or {}
        self.direct: DirectWire | None = extensions.get("antiphon.direct")
        # the ASGI callables Starlette's WebSocket wraps (its own methods if it has none)
        self._receive = getattr(ws, "_receive", None) or ws.receive
        self._send = getattr(ws, "_send", None) or ws.send

    async def receive(self) -> bytes | str | None:
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            with contextlib.suppress(AttributeError):
                self._ws.client_state = WebSocketState.DISCONNECTED
            return None
        data = message.get("bytes")
        if data is not None:
            return bytes(data)
        text = message.get("text")
        return text if text is not None else ""

    async def send_bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    async def send_text(self, data: str) -> None:
        await self._send({"type": "websocket.send", "text": data})

    async def close(self, code: int = NORMAL, reason: str = "") -> None:
        await self._ws.close(code, reason)
