"""``SimulatedTwilioCall``: a client that behaves like Twilio's side of a Media Stream.

It sends ``connected`` and ``start`` (μ-law 8 kHz mono, a ``streamSid`` and
``callSid``), then the caller's audio as ``media`` messages every 20 ms with increasing
``chunk`` and ``timestamp``, and ``stop`` at the end. What the server sends back is
"played" in real time: ``media`` joins a playback buffer, a ``mark`` is echoed once the
audio queued before it has played, and ``clear`` empties the buffer at once and echoes
the pending marks, as Twilio does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from antiphon.audio.codecs import ulaw_decode, ulaw_encode
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.protocols import twilio as tw


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

    def pcm(self) -> bytes:
        return b"".join(ulaw_decode(m) for m in self.media)


class SimulatedTwilioCall:
    """``async with SimulatedTwilioCall(url) as call: await call.speak(audio)``."""

    def __init__(self, url: str, *, parameters: dict[str, str] | None = None) -> None:
        self.url = url
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
        self._ws = await connect(self.url)
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

    async def speak(self, audio: AudioFrame) -> None:
        """Send ``audio`` (any rate) as the caller's voice, 20 ms every 20 ms."""
        converter = AudioConverter(tw.SAMPLE_RATE, 1)
        pcm = converter.process(audio).data + converter.flush().data
        ulaw = ulaw_encode(pcm)
        for i in range(0, len(ulaw), tw.FRAME_BYTES):
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
                        "payload": base64.b64encode(ulaw[i : i + tw.FRAME_BYTES]).decode(),
                    },
                }
            )
            await asyncio.sleep(0.02)

    async def hang_up(self) -> None:
        await self._send(
            {"event": "stop", "streamSid": self.stream_sid, "stop": {"callSid": self.call_sid}}
        )

    async def _read(self) -> None:
        assert self._ws is not None
        with contextlib.suppress(ConnectionClosed):
            async for raw in self._ws:
                msg = json.loads(raw)
                event = msg["event"]
                self.received.events.append(event)
                assert msg["streamSid"] == self.stream_sid, "a message for another stream"
                if event == "media":
                    payload = base64.b64decode(msg["media"]["payload"])
                    self.received.media.append(payload)
                    self._buffer.append(payload)
                elif event == "mark":
                    self._buffer.append(msg["mark"]["name"])
                elif event == "clear":
                    self.received.clears += 1
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
