"""``SimulatedCarrierCall``: Telnyx's, Plivo's, Exotel's or Vonage's side of a call's stream.

It speaks the carrier's side as its documentation describes it (the protocol modules
cite the pages): for the Media-Streams family (Telnyx, Plivo, Exotel) ``connected``,
``start`` with the carrier's keys and media format, the caller's audio as ``media``
messages (base64, one frame per message, paced on the loop's clock), ``dtmf`` and
``stop``; for Vonage the ``websocket:connected`` message, then binary 16-bit PCM frames
and ``websocket:dtmf``, and a hang-up is the socket closing. What the server sends back
is "played" in real time: audio joins a playback buffer, a mark (Plivo's
``checkpoint``, Vonage's ``notify``) is echoed once the audio before it has played, and a
clear (``clearAudio``, ``{"action": "clear"}``) empties the buffer at once, echoing the
marks in it (Plivo drops them: it answers a ``checkpoint`` only once played).

Only the test layer builds the carrier's messages; the spelling comes from the
carrier's dialect (:class:`~antiphon.protocols.media_stream.JsonSpelling`), so the
simulator and the protocol module cannot drift apart in key names unnoticed by a test
that checks a documented example.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from antiphon.agent.events import AgentEvent
from antiphon.agent.session import AgentSession
from antiphon.audio.codecs import ulaw_encode
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.protocols import exotel, plivo, telnyx, vonage
from antiphon.protocols.media_stream import Dialect, JsonDialect
from antiphon.server.agents import AgentFactory

__all__ = ["ENCODINGS", "Heard", "RecordingAgent", "SimulatedCarrierCall", "dialect_of"]

DIALECTS: Mapping[str, Dialect] = {
    "telnyx": telnyx.DIALECT,
    "plivo": plivo.DIALECT,
    "exotel": exotel.DIALECT,
    "vonage": vonage.DIALECT,
}
ENCODINGS: Mapping[str, str] = {
    "telnyx": "PCMU",
    "plivo": "audio/x-mulaw",
    "exotel": "audio/x-raw",
}
"""The ``encoding`` each JSON carrier announces in its ``start``."""


def dialect_of(carrier: str) -> Dialect:
    return DIALECTS[carrier]


@dataclass
class Heard:
    """What the simulated carrier got from the server."""

    audio: list[bytes] = field(default_factory=list)
    """Audio payloads in the dialect's codec, in order."""
    marks: list[str] = field(default_factory=list)
    """Mark names echoed (played, or dropped by a clear)."""
    clears: int = 0
    events: list[str] = field(default_factory=list)
    """``media``, ``mark`` or ``clear`` for each message, in order."""
    played: int = 0
    dropped: int = 0


class SimulatedCarrierCall:
    """``async with SimulatedCarrierCall("plivo", url) as call: await call.speak(audio)``."""

    def __init__(
        self,
        carrier: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        vonage_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.carrier = carrier
        self.dialect = dialect_of(carrier)
        self.url = url
        self.headers = dict(headers or {})
        self.vonage_headers = dict(vonage_headers or {})
        self.stream_sid = secrets.token_hex(12)
        self.call_sid = secrets.token_hex(12)
        self.heard = Heard()
        self.close_code: int | None = None
        self._ws: ClientConnection | None = None
        self._chunk = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._buffer: list[bytes | str] = []

    @property
    def ws(self) -> ClientConnection:
        assert self._ws is not None, "not connected"
        return self._ws

    async def __aenter__(self) -> SimulatedCarrierCall:
        self._ws = await connect(
            self.url, compression=None, additional_headers=self.headers or None
        )
        if isinstance(self.dialect, JsonDialect):
            k = self.dialect.spelling
            await self._send({"event": "connected", "version": "1.0.0"})
            media_format = {
                "encoding": ENCODINGS[self.carrier],
                k.sample_rate: self.dialect.sample_rate,
                "channels": 1,
            }
            start = {
                k.stream: self.stream_sid,
                k.call: self.call_sid,
                k.account: "AC1",
                "tracks": ["inbound"],
                k.media_format: media_format,
            }
            await self._send(
                {"event": "start", "sequence_number": "1", k.stream: self.stream_sid,
                 "start": start}
            )  # fmt: skip
        else:
            rate = self.dialect.sample_rate
            await self._send(
                {"event": "websocket:connected", "content-type": f"audio/l16;rate={rate}",
                 "uuid": self.call_sid, **self.vonage_headers}
            )  # fmt: skip
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
        await self.ws.send(json.dumps(message))

    def _encode(self, audio: AudioFrame) -> bytes:
        converter = AudioConverter(self.dialect.sample_rate, 1)
        pcm = converter.process(audio).data + converter.flush().data
        return ulaw_encode(pcm) if self.dialect.codec == "mulaw" else pcm

    async def speak(self, audio: AudioFrame) -> None:
        """Send ``audio`` (any rate) as the caller's voice, a frame per frame time."""
        data = self._encode(audio)
        size, seconds = self.dialect.frame_bytes, self.dialect.frame_seconds
        for i in range(0, len(data), size):
            await self._send_audio(data[i : i + size])
            await asyncio.sleep(seconds)

    async def _send_audio(self, chunk: bytes) -> None:
        if not isinstance(self.dialect, JsonDialect):
            await self.ws.send(chunk)
            return
        self._chunk += 1
        k = self.dialect.spelling
        ms = round(self._chunk * self.dialect.frame_seconds * 1000)
        await self._send(
            {"event": "media", k.stream: self.stream_sid,
             "media": {"track": "inbound", "chunk": str(self._chunk), "timestamp": str(ms),
                       "payload": base64.b64encode(chunk).decode()}}
        )  # fmt: skip

    async def press(self, digit: str) -> None:
        """The caller presses a key."""
        if isinstance(self.dialect, JsonDialect):
            k = self.dialect.spelling
            await self._send({"event": "dtmf", k.stream: self.stream_sid, "dtmf": {"digit": digit}})
        else:
            await self._send({"event": "websocket:dtmf", "digit": digit, "duration": 260})

    async def hang_up(self) -> None:
        """``stop`` (Vonage: the socket closes, it has no stop message)."""
        if isinstance(self.dialect, JsonDialect):
            k = self.dialect.spelling
            await self._send(
                {"event": "stop", k.stream: self.stream_sid, "stop": {k.call: self.call_sid}}
            )
        else:
            await self.ws.close()

    def _classify(self, raw: str | bytes) -> tuple[str, bytes | str | None]:
        """A server message → (``media``/``mark``/``clear``/other, audio or mark name)."""
        if isinstance(raw, bytes):
            return "media", raw
        msg = json.loads(raw)
        if not isinstance(self.dialect, JsonDialect):
            action = msg.get("action")
            if action == "notify":
                return "mark", str(msg["payload"]["name"])
            return str(action), None
        k = self.dialect.spelling
        event = msg["event"]
        if k.sid_out is not None:
            assert msg[k.sid_out] == self.stream_sid, "a message for another stream"
        if event == k.media_event:
            for name, value in k.media_extra.items():
                assert msg["media"][name] == value, f"{event} without its {name}"
            return "media", base64.b64decode(msg["media"]["payload"])
        if event == k.mark_event:
            return "mark", str(msg["name"] if k.flat_mark else msg["mark"]["name"])
        if event == k.clear_event:
            return "clear", None
        return str(event), None

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                kind, value = self._classify(raw)
                self.heard.events.append(kind)
                if kind == "media" and isinstance(value, bytes):
                    self.heard.audio.append(value)
                    self._buffer.append(value)
                elif kind == "mark" and isinstance(value, str):
                    self._buffer.append(value)
                elif kind == "clear":
                    self.heard.clears += 1
                    for item in self._buffer:
                        if not isinstance(item, str):
                            self.heard.dropped += 1
                        elif self.carrier != "plivo":  # Plivo answers only what played
                            await self._echo_mark(item)
                    self._buffer.clear()
                    if not isinstance(self.dialect, JsonDialect):
                        await self._send({"event": "websocket:cleared"})

    async def _echo_mark(self, name: str) -> None:
        self.heard.marks.append(name)
        with contextlib.suppress(ConnectionClosed):
            if not isinstance(self.dialect, JsonDialect):
                await self._send({"event": "websocket:notify", "payload": {"name": name}})
                return
            k = self.dialect.spelling
            mark: dict[str, Any] = {"name": name} if k.flat_mark else {"mark": {"name": name}}
            await self._send({"event": k.played, k.stream: self.stream_sid, **mark})

    async def _play(self) -> None:
        while True:
            await asyncio.sleep(self.dialect.frame_seconds)
            while self._buffer and isinstance(self._buffer[0], str):
                name = self._buffer.pop(0)
                assert isinstance(name, str)
                await self._echo_mark(name)
            if self._buffer:
                self._buffer.pop(0)
                self.heard.played += 1


class RecordingAgent:
    """An agent factory that keeps every event of every session it made (``events``)."""

    def __init__(self, inner: AgentFactory) -> None:
        self.inner = inner
        self.events: list[AgentEvent] = []

    async def start(self) -> None:
        await self.inner.start()

    def new_session(self) -> AgentSession:
        session = self.inner.new_session()
        session.on_event(self.events.append)
        return session

    async def aclose(self) -> None:
        await self.inner.aclose()
