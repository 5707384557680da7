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
import contextlib
import logging

from antiphon.agent.events import AgentEvent, Interrupted, TurnCompleted
from antiphon.agent.session import AgentSession
from antiphon.aio.channel import Channel, ChannelClosed
from antiphon.audio.codecs import ulaw_decode, ulaw_encode
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.errors import StreamClosedError
from antiphon.protocols import twilio as tw
from antiphon.transports.websocket import NORMAL, POLICY, CallEnded, WebSocketLike

log = logging.getLogger(__name__)


class TwilioBridge:
    """One phone call: ``await TwilioBridge(session, ws).run()`` until it ends."""

    def __init__(
        self, session: AgentSession, ws: WebSocketLike, *, send_timeout: float = 5.0
    ) -> None:
        self.session = session
        self.ws = ws
        self.send_timeout = send_timeout
        self.state = tw.StreamState()
        self._out: Channel[tuple[bool, str]] = Channel()  # (is media, message)
        self._ended: asyncio.Future[CallEnded] | None = None
        self._started = asyncio.Event()
        self._converter = AudioConverter(tw.SAMPLE_RATE, 1)
        self._generation = 0
        self.media_sent = 0
        self.media_received = 0
        self.clears = 0

    def end(self, code: int, reason: str) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(CallEnded(code, reason))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()
        remove = self.session.on_event(self._on_event)
        tasks = [
            loop.create_task(self._read(), name="twilio-read"),
            loop.create_task(self._send(), name="twilio-send"),
            loop.create_task(self._pump_audio(), name="twilio-audio"),
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
            log.warning("twilio call: %s failed: %r", task.get_name(), exc)
            self.end(1011, "internal error")
        else:
            self.end(NORMAL, "")

    def _queue(self, message: str, *, media: bool = False) -> None:
        with contextlib.suppress(ChannelClosed):
            self._out.send_nowait((media, message))

    def _on_event(self, event: AgentEvent) -> None:
        if self.state.start is None:
            return
        sid = self.state.stream_sid
        if isinstance(event, Interrupted):
            self._queue(tw.encode_clear(sid))
            self.state.cleared()
            self.clears += 1
        elif isinstance(event, TurnCompleted):
            name = f"turn-{event.generation}"
            self.state.sent_mark(name)
            self._queue(tw.encode_mark(sid, name))

    async def _pump_audio(self) -> None:
        await self._started.wait()
        sid = self.state.stream_sid
        pending = b""
        async for frame in self.session.output:
            if frame.generation != self._generation:  # a new turn: no leftovers of the old
                self._generation, pending = frame.generation, b""
                self._converter.reset()
            pending += ulaw_encode(self._converter.process(frame).data)
            while len(pending) >= tw.FRAME_BYTES:  # 20 ms per media message
                chunk, pending = pending[: tw.FRAME_BYTES], pending[tw.FRAME_BYTES :]
                self._queue(tw.encode_media(sid, chunk), media=True)
        await asyncio.Future()  # the output closed: the call ends by the reader or end()

    async def _send(self) -> None:
        async for media, message in self._out:
            try:
                async with asyncio.timeout(self.send_timeout):
                    await self.ws.send_text(message)
            except TimeoutError:
                raise CallEnded(POLICY, "Twilio stopped reading") from None
            except Exception as exc:  # the socket is gone: the call is over
                raise CallEnded(NORMAL, f"send failed: {exc!r}") from None
            self.media_sent += media

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message is None:
                raise CallEnded(NORMAL, "Twilio closed the stream")
            if isinstance(message, bytes):
                raise CallEnded(POLICY, "Media Streams messages are JSON text")
            event = tw.parse(message)
            if isinstance(event, tw.Malformed):
                raise CallEnded(POLICY, f"malformed message: {event.reason}")
            try:
                self.state.feed(event)
            except tw.ProtocolViolation as exc:
                raise CallEnded(POLICY, str(exc)) from None
            if isinstance(event, tw.Start):
                self._started.set()
            elif isinstance(event, tw.Media):
                self.media_received += 1
                pcm = AudioFrame(ulaw_decode(event.payload), tw.SAMPLE_RATE, 1)
                try:
                    self.session.push_audio(pcm)
                except StreamClosedError as exc:
                    raise CallEnded(1011, f"the agent ended: {exc}") from None
            elif isinstance(event, tw.Stop):
                raise CallEnded(NORMAL, "the call ended")
