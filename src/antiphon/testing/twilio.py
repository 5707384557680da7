"""``SimulatedTwilioCall``: a client that behaves like Twilio's side of a Media Stream.

It sends ``connected`` and ``start`` (μ-law 8 kHz mono, a ``streamSid`` and
``callSid``), then the caller's audio as ``media`` messages every 20 ms with increasing
``chunk`` and ``timestamp``, and ``stop`` at the end. What the server sends back is
"played" in real time: ``media`` joins a playback buffer, a ``mark`` is echoed once the
audio queued before it has played, and ``clear`` empties the buffer at once and echoes
the pending marks, as Twilio does.

A real phone line never pauses: with ``line=True`` the call streams 20 ms of audio every
20 ms on a fixed schedule from the moment it connects, silence unless
:meth:`SimulatedTwilioCall.say` queued the caller's voice. Arrival times of every
``media`` and ``clear`` (on the loop's clock) are kept, so a caller can measure the
agent's latency: :meth:`Received.first_media_after`, :meth:`Received.first_clear_after`.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import json
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from antiphon.audio.codecs import ulaw_decode, ulaw_encode
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.protocols import twilio as tw

__all__ = ["Received", "SimulatedTwilioCall", "Utterance"]


@dataclass
class Received:
    media: list[bytes] = field(default_factory=list)
    """μ-law payloads, in order."""
    marks: list[str] = field(default_factory=list)
    clears: int = 0
    events: list[str] = field(default_factory=list)
    """Every message's event name, in order."""
    played: int = 0
    """20 ms frames played (not dropped by a clear)."""
    dropped: int = 0
    """Frames dropped by a clear."""
    media_times: list[float] = field(default_factory=list)
    """Loop time each ``media`` arrived."""
    clear_times: list[float] = field(default_factory=list)
    """Loop time each ``clear`` arrived."""

    def first_media_after(self, when: float) -> float | None:
        """Arrival time of the first ``media`` after ``when`` (None: none yet)."""
        i = bisect.bisect_right(self.media_times, when)
        return self.media_times[i] if i < len(self.media_times) else None

    def first_clear_after(self, when: float) -> float | None:
        """Arrival time of the first ``clear`` after ``when`` (None: none yet)."""
        i = bisect.bisect_right(self.clear_times, when)
        return self.clear_times[i] if i < len(self.clear_times) else None

    def pcm(self) -> bytes:
        return b"".join(ulaw_decode(m) for m in self.media)


@dataclass(frozen=True, slots=True)
class Utterance:
    """When the caller's voice went out: first and last frame's send time (loop clock)."""

    onset: float
    end: float


class SimulatedTwilioCall:
    """``async with SimulatedTwilioCall(url) as call: await call.speak(audio)``.

    ``line=True``: stream continuously (silence between utterances); use :meth:`say`.
    """

    def __init__(
        self, url: str, *, parameters: dict[str, str] | None = None, line: bool = False
    ) -> None:
        self.url = url
        self.line = line
        self._voice: deque[tuple[bytes, asyncio.Future[Utterance] | None]] = deque()
        self._onset: float | None = None
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.call_sid = "CA" + secrets.token_hex(16)
        self.parameters = parameters or {}
        self.received = Received()
        self._ws: ClientConnection | None = None
        self._chunk = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._buffer: list[bytes | str] = []  # media payloads and mark names, in order
        self.close_code: int | None = None

    async def __aenter__(self) -> SimulatedTwilioCall:
        self._ws = await connect(self.url, compression=None)  # Twilio does not deflate
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": "AC" + "0" * 32,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": self.parameters,
                },
            }
        )
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._play())]
        if self.line:
            self._tasks.append(loop.create_task(self._stream_line()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
            self.close_code = self._ws.close_code

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send(json.dumps(message))

    async def _send_media(self, ulaw: bytes) -> None:
        self._chunk += 1
        await self._send(
            {
                "event": "media",
                "sequenceNumber": str(self._chunk + 1),
                "streamSid": self.stream_sid,
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunk),
                    "timestamp": str(self._chunk * 20),
                    "payload": base64.b64encode(ulaw).decode(),
                },
            }
        )

    async def say(self, audio: AudioFrame) -> Utterance:
        """(``line=True``) Queue ``audio`` as the caller's voice; returns once it is sent."""
        if not self.line:
            raise RuntimeError("say() needs SimulatedTwilioCall(line=True); use speak()")
        ulaw = _to_ulaw(audio)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Utterance] = loop.create_future()
        chunks = [ulaw[i : i + tw.FRAME_BYTES] for i in range(0, len(ulaw), tw.FRAME_BYTES)]
        for i, chunk in enumerate(chunks):
            self._voice.append(
                (chunk.ljust(tw.FRAME_BYTES, b"\xff"), done if i == len(chunks) - 1 else None)
            )
        return await done

    async def _stream_line(self) -> None:
        """20 ms every 20 ms on a fixed schedule: the caller's voice, or silence."""
        loop = asyncio.get_running_loop()
        silence = b"\xff" * tw.FRAME_BYTES  # μ-law zero
        due = loop.time()
        try:
            await self._line(loop, silence, due)
        except ConnectionClosed as exc:  # the server hung up: say() fails, not hangs
            for _, done in self._voice:
                if done is not None and not done.done():
                    done.set_exception(exc)
            self._voice.clear()

    async def _line(self, loop: asyncio.AbstractEventLoop, silence: bytes, due: float) -> None:
        while True:
            now = loop.time()
            if self._voice:
                chunk, done = self._voice.popleft()
                if self._onset is None:
                    self._onset = now
                await self._send_media(chunk)
                if done is not None:
                    onset, self._onset = self._onset, None
                    if not done.done():
                        done.set_result(Utterance(onset, now))
            else:
                await self._send_media(silence)
            due += 0.02
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def speak(self, audio: AudioFrame) -> None:
        """Send ``audio`` (any rate) as the caller's voice, 20 ms every 20 ms."""
        if self.line:
            await self.say(audio)
            return
        ulaw = _to_ulaw(audio)
        for i in range(0, len(ulaw), tw.FRAME_BYTES):
            await self._send_media(ulaw[i : i + tw.FRAME_BYTES])
            await asyncio.sleep(0.02)

    async def hang_up(self) -> None:
        await self._send(
            {"event": "stop", "streamSid": self.stream_sid, "stop": {"callSid": self.call_sid}}
        )

    async def _read(self) -> None:
        assert self._ws is not None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionClosed):
            async for raw in self._ws:
                msg = json.loads(raw)
                event = msg["event"]
                self.received.events.append(event)
                assert msg["streamSid"] == self.stream_sid, "a message for another stream"
                if event == "media":
                    payload = base64.b64decode(msg["media"]["payload"])
                    self.received.media.append(payload)
                    self.received.media_times.append(loop.time())
                    self._buffer.append(payload)
                elif event == "mark":
                    self._buffer.append(msg["mark"]["name"])
                elif event == "clear":
                    self.received.clears += 1
                    self.received.clear_times.append(loop.time())
                    for item in self._buffer:
                        if isinstance(item, str):
                            await self._echo_mark(item)
                        else:
                            self.received.dropped += 1
                    self._buffer.clear()

    async def _echo_mark(self, name: str) -> None:
        self.received.marks.append(name)
        with contextlib.suppress(ConnectionClosed):
            await self._send(
                {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}
            )

    async def _play(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            while self._buffer and isinstance(self._buffer[0], str):
                name = self._buffer.pop(0)
                assert isinstance(name, str)
                await self._echo_mark(name)
            if self._buffer:
                self._buffer.pop(0)
                self.received.played += 1


def _to_ulaw(audio: AudioFrame) -> bytes:
    converter = AudioConverter(tw.SAMPLE_RATE, 1)
    return ulaw_encode(converter.process(audio).data + converter.flush().data)
