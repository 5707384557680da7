"""A fake Deepgram streaming TTS server (``/v1/speak``) for tests and offline demos.

It speaks the real wire protocol on loopback: checks the path, query parameters and the
``Authorization`` header, answers ``Speak``/``Flush``/``Clear``/``Close`` the way the
service does (audio as binary frames, then ``Flushed``; ``Cleared``; close 1000), refuses
protocol misuse with Deepgram's close codes, and follows a :class:`FaultPlan`.

Fault plan fields that apply: all of them. ``error_mid_stream`` does what the service
does when synthesis fails mid-stream: a ``Warning`` (``code``, ``description``: the only
in-band problem report of the speak protocol, per its SDK), then a close 1011 with a
``NET-`` reason.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from antiphon.audio.codecs import alaw_encode, ulaw_encode
from antiphon.errors import ConfigError
from antiphon.protocols import deepgram_tts as dg
from antiphon.testing.faults import FaultPlan
from antiphon.testing.server import BINARY, FakeWsServer
from antiphon.testing.speaking import SpeakerConnection
from antiphon.testing.synth import tone_for_text

__all__ = [
    "CHUNK_SECONDS",
    "DEFAULT_API_KEY",
    "DeepgramFakeStats",
    "FakeDeepgramTTS",
    "check_upgrade",
    "synthesize",
]

DEFAULT_API_KEY = "test-key"
CHUNK_SECONDS = 0.02


@dataclass
class DeepgramFakeStats:
    """What the fake saw and did (read it from the test after the fact)."""

    connections: int = 0
    open_connections: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    flushed_texts: list[str] = field(default_factory=list)
    clears: int = 0
    audio_bytes: int = 0
    closes_sent: list[int] = field(default_factory=list)
    audio_send_times: list[int] = field(default_factory=list)
    """``time.perf_counter_ns()`` just before each audio chunk was sent (if recording)."""
    record_send_times: bool = False

    def count(self, kind: str) -> int:
        return sum(1 for m in self.messages if m.get("type") == kind)


def synthesize(text: str, encoding: str, sample_rate: int) -> bytes:
    """The exact audio the fake sends for ``text`` (what a test should expect)."""
    pcm = tone_for_text(text, sample_rate)
    if encoding == "mulaw":
        return bytes(ulaw_encode(pcm))
    if encoding == "alaw":
        return bytes(alaw_encode(pcm))
    return pcm


def check_upgrade(
    connection: ServerConnection,
    request: Request,
    *,
    path: str,
    api_key: str,
    check_query: Callable[[dict[str, str]], object],
    errors: tuple[type[Exception], ...] = (ConfigError, ValueError),
) -> Response | None:
    """Deepgram's refusals of an upgrade: the path (404), the key (401, ``Token`` or
    ``Bearer``), the query (400 when ``check_query`` raises one of ``errors``), the
    problem in a ``dg-error`` header."""
    parts = urlsplit(request.path)
    if parts.path.rstrip("/") != path:
        return connection.respond(404, f"unknown path {parts.path}; use {path}\n")
    auth = request.headers.get("Authorization", "")
    if auth not in (f"Token {api_key}", f"Bearer {api_key}"):
        resp = connection.respond(401, "invalid credentials\n")
        resp.headers["dg-error"] = "Invalid credentials."
        return resp
    try:
        check_query({k: v[-1] for k, v in parse_qs(parts.query).items()})
    except errors as exc:
        resp = connection.respond(400, f"{exc}\n")
        resp.headers["dg-error"] = str(exc)
        return resp
    return None


def _speak_options(q: dict[str, str]) -> dg.SpeakOptions:
    return dg.SpeakOptions(
        model=q.get("model", "aura-asteria-en"),
        encoding=q.get("encoding", dg.DEFAULT_ENCODING),
        sample_rate=int(q.get("sample_rate", dg.DEFAULT_SAMPLE_RATE)),
        speed=float(q["speed"]) if "speed" in q else None,
    )


class FakeDeepgramTTS(FakeWsServer):
    """``ws://127.0.0.1:PORT/v1/speak`` with the Deepgram TTS protocol."""

    stats: DeepgramFakeStats

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(plan, host=host, port=port)
        self.api_key = api_key
        self.stats = DeepgramFakeStats()

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        refusal = check_upgrade(
            connection, request, path=dg.PATH, api_key=self.api_key, check_query=_speak_options
        )
        if refusal is None:
            self.count_connection(connection)
        return refusal

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        q = {k: v[-1] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        await self.run(
            _Conn(
                self,
                ws,
                index=self.take_index(ws),
                encoding=q.get("encoding", dg.DEFAULT_ENCODING),
                sample_rate=int(q.get("sample_rate", dg.DEFAULT_SAMPLE_RATE)),
            )
        )


class _Conn(SpeakerConnection):
    """One client connection of the fake."""

    IDLE_CLOSE = (1011, "NET-0001: idle timeout")
    AGE_CLOSE = (1011, "NET-0002: maximum connection duration")
    chunk_seconds = CHUNK_SECONDS

    def __init__(
        self, server: FakeDeepgramTTS, ws: ServerConnection, *, index: int, **kw: Any
    ) -> None:
        super().__init__(server, ws, index=index, **kw)
        self.stats = server.stats
        self.seq = 0

    async def on_open(self) -> None:
        await self.send_json(
            {
                "type": "Metadata",
                "request_id": f"fake-{self.index}",
                "model_name": "aura-fake",
                "model_version": "0",
                "model_uuid": "00000000-0000-0000-0000-000000000000",
            }
        )
        await super().on_open()

    async def refuse(self, problem: str) -> bool:
        if problem == BINARY:
            await self.close(1003, "MESSAGE-0000: binary messages are not accepted")
        else:
            await self.close(1008, f"DATA-0000: {problem}")
        return False

    def record(self, msg: dict[str, Any]) -> None:
        self.stats.messages.append(msg)

    async def on_message(self, msg: dict[str, Any]) -> bool:
        kind = msg.get("type")
        if kind == "Speak":
            text = msg.get("text")
            if not isinstance(text, str):
                await self.close(1008, "DATA-0001: Speak needs a string 'text'")
                return False
            if len(text) > dg.MAX_SPEAK_CHARS:
                await self.close(1009, "BIG-0000: text too long")
                return False
            self.buffer.append(text)
        elif kind == "Flush":
            self.queue(self.flush_buffer())
        elif kind == "Clear":
            self.stats.clears += 1
            if await self.clear():
                await self.send_json({"type": "Cleared", "sequence_id": self.seq})
        elif kind == "Close":
            await self.drained.wait()
            await self.close(1000, "")
            return False
        else:
            await self.close(1003, f"MESSAGE-0000: unknown message type {kind!r}")
            return False
        return True

    def synthesize(self, text: str) -> bytes:
        return synthesize(text, self.encoding, self.sample_rate)

    async def send_audio(self, chunk: bytes) -> None:
        if self.stats.record_send_times:
            self.stats.audio_send_times.append(time.perf_counter_ns())
        await self.ws.send(chunk)
        self.chunks_sent += 1
        self.stats.audio_bytes += len(chunk)

    async def _error(self) -> bool:
        warning = {"code": "INTERNAL_SERVER_ERROR", "description": "fault plan"}
        await self.send_json({"type": "Warning", **warning})
        await self.close(1011, "NET-0000: the synthesis failed (fault plan)")
        return True

    async def speak(self, text: str) -> None:
        plan = self.plan
        self.stats.flushed_texts.append(text)
        if self.index < plan.drop_before_audio:
            await self.close(1011, "NET-0000: dropped by fault plan")
            return
        gen = self.clear_gen
        if plan.first_audio_delay:
            await asyncio.sleep(plan.first_audio_delay)
        malformed = ("{this is not json", json.dumps({"type": "SomethingNew", "value": 1}))
        if not await self.speak_audio(text, gen=gen, error=self._error, malformed=malformed):
            return  # cleared (no Flushed for this job) or closed
        await self.send_json({"type": "Flushed", "sequence_id": self.seq})
        self.seq += 1
        await self.send_stale()
