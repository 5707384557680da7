"""A phone call through Twilio Media Streams: ``TwilioBridge`` between the call's
WebSocket and one agent session.

The caller's μ-law 8 kHz audio goes to ``session.push_audio`` (the session converts it);
the agent's paced 20 ms frames are converted to 8 kHz, μ-law encoded and sent as
``media`` messages. When the caller interrupts, ``clear`` goes out at once (queued by a
synchronous listener, so before any audio of the next turn) and Twilio drops what it has
buffered. A ``mark`` after each turn tells when Twilio has played it. ``stop`` or a
closed socket ends the call; every send has a deadline.
"""

from __future__ import annotations

import asyncio
import logging

from antiphon.agent.events import AgentEvent, Interrupted, TurnCompleted
from antiphon.agent.session import AgentSession
from antiphon.audio.codecs import ulaw_decode, ulaw_encode
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.errors import StreamClosedError
from antiphon.protocols import twilio as tw
from antiphon.transports.base import NORMAL, POLICY, TOO_BIG, CallBridge, CallEnded, WebSocketLike
from antiphon.transports.limits import guard_of

log = logging.getLogger(__name__)


class TwilioBridge(CallBridge[tuple[bool, str]]):
    """One phone call: ``await TwilioBridge(session, ws).run()`` until it ends."""

    name = "twilio"

    def __init__(
        self, session: AgentSession, ws: WebSocketLike, *, send_timeout: float = 5.0
    ) -> None:
        super().__init__(session, ws, send_timeout=send_timeout)
        self.state = tw.StreamState()
        self._started = asyncio.Event()
        self._converter = AudioConverter(tw.SAMPLE_RATE, 1)
        self._generation = 0
        self._pending = b""
        self.media_sent = 0
        self.media_received = 0
        self.clears = 0

    def _on_event(self, event: AgentEvent) -> None:
        if self.state.start is None:
            return
        sid = self.state.stream_sid
        if isinstance(event, Interrupted):
            self._queue((False, tw.encode_clear(sid)))
            self.state.cleared()
            self.clears += 1
        elif isinstance(event, TurnCompleted):
            name = f"turn-{event.generation}"
            self.state.sent_mark(name)
            self._queue((False, tw.encode_mark(sid, name)))

    async def _pump_audio(self) -> None:
        await self._started.wait()  # media needs the stream's id
        await super()._pump_audio()

    def _audio_out(self, pcm: bytes, generation: int) -> None:
        if generation != self._generation:  # a new turn: no leftovers of the old one
            self._generation, self._pending = generation, b""
            self._converter.reset()
        frame = AudioFrame(pcm, self.session.output.sample_rate, 1)
        self._pending += ulaw_encode(self._converter.process(frame).data)
        sid = self.state.stream_sid
        while len(self._pending) >= tw.FRAME_BYTES:  # 20 ms per media message
            chunk = self._pending[: tw.FRAME_BYTES]
            self._pending = self._pending[tw.FRAME_BYTES :]
            self._queue((True, tw.encode_media(sid, chunk)))

    async def _send_one(self, item: tuple[bool, str]) -> None:
        media, message = item
        await self.ws.send_text(message)
        self.media_sent += media

    async def _read(self) -> None:
        limits, guard = guard_of(self.ws)  # a guard checks sizes, rates and deadlines
        while True:
            message = await self.ws.receive()
            if message is None:
                raise CallEnded(NORMAL, "Twilio closed the stream")
            if isinstance(message, bytes):
                raise CallEnded(POLICY, "Media Streams messages are JSON text")
            if len(message) > limits.max_twilio_message_bytes:
                raise CallEnded(TOO_BIG, "a Media Streams message too large")
            event = tw.parse(message, max_depth=limits.max_json_depth)
            if isinstance(event, tw.Malformed):
                raise CallEnded(POLICY, f"malformed message: {event.reason}")
            try:
                self.state.feed(event)
            except tw.ProtocolViolation as exc:
                raise CallEnded(POLICY, str(exc)) from None
            if isinstance(event, tw.Start):
                self._started.set()
            elif isinstance(event, tw.Media):
                if len(event.payload) > limits.max_twilio_media_bytes:
                    raise CallEnded(TOO_BIG, f"media of {len(event.payload)} bytes (20 ms: 160)")
                if guard is not None:
                    guard.spend_audio(len(event.payload) / tw.SAMPLE_RATE)
                self.media_received += 1
                pcm = AudioFrame(ulaw_decode(event.payload), tw.SAMPLE_RATE, 1)
                try:
                    self.session.push_audio(pcm)
                except StreamClosedError as exc:
                    raise CallEnded(1011, f"the agent ended: {exc}") from None
            elif isinstance(event, tw.Stop):
                raise CallEnded(NORMAL, "the call ended")
