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
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from antiphon.audio.codecs import alaw_encode, ulaw_encode
from antiphon.errors import ConfigError
from antiphon.protocols import deepgram_tts as dg
from antiphon.testing.faults import ABORT, FaultPlan
from antiphon.testing.server import FakeWsServer
from antiphon.testing.synth import tone_for_text

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


class FakeDeepgramTTS(FakeWsServer):
    """``ws://127.0.0.1:PORT/v1/speak`` with the Deepgram TTS protocol."""

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
        self._indices: dict[int, int] = {}  # accepted upgrade -> connection number

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != dg.PATH:
            return connection.respond(404, f"unknown path {parts.path}; use {dg.PATH}\n")
        auth = request.headers.get("Authorization", "")
        if auth not in (f"Token {self.api_key}", f"Bearer {self.api_key}"):
            resp = connection.respond(401, "invalid credentials\n")
            resp.headers["dg-error"] = "Invalid credentials."
            return resp
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            dg.SpeakOptions(
                model=q.get("model", "aura-asteria-en"),
                encoding=q.get("encoding", dg.DEFAULT_ENCODING),
                sample_rate=int(q.get("sample_rate", dg.DEFAULT_SAMPLE_RATE)),
                speed=float(q["speed"]) if "speed" in q else None,
            )
        except (ConfigError, ValueError) as exc:
            resp = connection.respond(400, f"{exc}\n")
            resp.headers["dg-error"] = str(exc)
            return resp
        # Counted before the 101 goes out, so a client that sees its connection open
        # also sees it counted.
        self._indices[id(connection)] = self.stats.connections
        self.stats.connections += 1
        return None

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        q = {k: v[-1] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        conn = _Conn(
            self,
            ws,
            index=self._indices.pop(id(ws), self.stats.connections),
            encoding=q.get("encoding", dg.DEFAULT_ENCODING),
            sample_rate=int(q.get("sample_rate", dg.DEFAULT_SAMPLE_RATE)),
        )
        self.stats.open_connections += 1
        try:
            await conn.serve()
        finally:
            self.stats.open_connections -= 1


class _Conn:
    """One client connection of the fake."""

    def __init__(
        self,
        server: FakeDeepgramTTS,
        ws: ServerConnection,
        *,
        index: int,
        encoding: str,
        sample_rate: int,
    ) -> None:
        self.server = server
        self.plan = server.plan
        self.stats = server.stats
        self.ws = ws
        self.index = index
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.width = 2 if encoding == "linear16" else 1
        loop = asyncio.get_running_loop()
        self.opened = loop.time()
        self.last_message = loop.time()
        self.received = 0
        self.chunks_sent = 0
        self.seq = 0
        self.buffer: list[str] = []
        self.jobs: deque[str] = deque()
        self.wake = asyncio.Event()
        self.drained = asyncio.Event()  # no job queued or in progress
        self.drained.set()
        self.speaking = False
        self.clear_gen = 0
        self.current_audio = b""
        self.current_pos = 0

    async def close(self, code: int, reason: str = "") -> None:
        self.stats.closes_sent.append(code)
        if code == ABORT:
            if self.ws.transport is not None:
                self.ws.transport.abort()
            return
        with contextlib.suppress(ConnectionClosed):
            await self.ws.close(code, reason)

    async def serve(self) -> None:
        plan = self.plan
        if plan.close_on_open is not None:
            await self.close(plan.close_on_open, plan.close_on_open_reason)
            return
        await self.ws.send(
            json.dumps(
                {
                    "type": "Metadata",
                    "request_id": f"fake-{self.index}",
                    "model_name": "aura-fake",
                    "model_version": "0",
                    "model_uuid": "00000000-0000-0000-0000-000000000000",
                }
            )
        )
        async with asyncio.TaskGroup() as tg:
            speaker = tg.create_task(self._speak_loop())
            watchdog = tg.create_task(self._lifetime())
            try:
                await self._read_loop()
            finally:
                speaker.cancel()
                watchdog.cancel()

    async def _lifetime(self) -> None:
        plan = self.plan
        if plan.idle_close_after is None and plan.max_connection_age is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.02)
            now = loop.time()
            idle = not self.speaking and not self.jobs
            if (
                plan.idle_close_after is not None
                and idle
                and now - self.last_message > plan.idle_close_after
            ):
                await self.close(1011, "NET-0001: idle timeout")
                return
            if plan.max_connection_age is not None and now - self.opened > plan.max_connection_age:
                await self.close(1011, "NET-0002: maximum connection duration")
                return

    async def _read_loop(self) -> None:
        plan = self.plan
        try:
            async for raw in self.ws:
                self.last_message = asyncio.get_running_loop().time()
                self.received += 1
                if isinstance(raw, bytes):
                    await self.close(1003, "MESSAGE-0000: binary messages are not accepted")
                    return
                try:
                    msg = json.loads(raw)
                except ValueError:
                    await self.close(1008, "DATA-0000: invalid JSON")
                    return
                if not isinstance(msg, dict):
                    await self.close(1008, "DATA-0000: expected a JSON object")
                    return
                self.stats.messages.append(msg)
                if plan.silent_after is not None and self.received > plan.silent_after:
                    continue
                kind = msg.get("type")
                if kind == "Speak":
                    text = msg.get("text")
                    if not isinstance(text, str):
                        await self.close(1008, "DATA-0001: Speak needs a string 'text'")
                        return
                    if len(text) > dg.MAX_SPEAK_CHARS:
                        await self.close(1009, "BIG-0000: text too long")
                        return
                    self.buffer.append(text)
                elif kind == "Flush":
                    text = "".join(self.buffer)
                    self.buffer.clear()
                    self.jobs.append(text)
                    self.drained.clear()
                    self.wake.set()
                elif kind == "Clear":
                    await self._clear()
                elif kind == "Close":
                    await self.drained.wait()
                    await self.close(1000, "")
                    return
                else:
                    await self.close(1003, f"MESSAGE-0000: unknown message type {kind!r}")
                    return
        except ConnectionClosed:
            return

    async def _clear(self) -> None:
        self.stats.clears += 1
        if self.plan.ignore_clear:
            return
        self.buffer.clear()
        self.jobs.clear()
        if not self.speaking:
            self.drained.set()
        old_audio, pos = self.current_audio, self.current_pos
        self.clear_gen += 1  # the speaker abandons its job at the next chunk
        step = self._chunk_bytes()
        for _ in range(self.plan.audio_after_clear):
            chunk = old_audio[pos : pos + step] or bytes(step)
            pos += step
            await self._send_audio(chunk)
        await self.ws.send(json.dumps({"type": "Cleared", "sequence_id": self.seq}))

    def _chunk_bytes(self) -> int:
        n = round(CHUNK_SECONDS * self.sample_rate) * self.width
        return n + 1 if self.plan.odd_chunking and self.width == 2 else n

    async def _send_audio(self, chunk: bytes) -> None:
        if self.stats.record_send_times:
            self.stats.audio_send_times.append(time.perf_counter_ns())
        await self.ws.send(chunk)
        self.chunks_sent += 1
        self.stats.audio_bytes += len(chunk)

    async def _speak_loop(self) -> None:
        try:
            while True:
                while not self.jobs:
                    self.drained.set()
                    self.wake.clear()
                    await self.wake.wait()
                text = self.jobs.popleft()
                self.speaking = True
                await self._speak(text)
                self.speaking = False
        except ConnectionClosed:
            return

    async def _speak(self, text: str) -> None:
        plan = self.plan
        self.stats.flushed_texts.append(text)
        if self.index < plan.drop_before_audio:
            await self.close(1011, "NET-0000: dropped by fault plan")
            return
        gen = self.clear_gen
        if plan.first_audio_delay:
            await asyncio.sleep(plan.first_audio_delay)
        audio = synthesize(text, self.encoding, self.sample_rate)
        self.current_audio = audio
        step = self._chunk_bytes()
        for i, pos in enumerate(range(0, len(audio), step)):
            self.current_pos = pos
            if self.clear_gen != gen:
                return  # cleared: no Flushed for this job
            if plan.close_mid_audio is not None and self.chunks_sent >= plan.close_after_chunks:
                await self.close(plan.close_mid_audio, plan.close_reason)
                return
            if plan.error_mid_stream and i == plan.close_after_chunks:
                warning = {"code": "INTERNAL_SERVER_ERROR", "description": "fault plan"}
                await self.ws.send(json.dumps({"type": "Warning", **warning}))
                await self.close(1011, "NET-0000: the synthesis failed (fault plan)")
                return
            if plan.malformed_mid_stream and i == 1:
                await self.ws.send("{this is not json")
                await self.ws.send(json.dumps({"type": "SomethingNew", "value": 1}))
            await self._send_audio(audio[pos : pos + step])
            if plan.chunk_interval:
                await asyncio.sleep(plan.chunk_interval)
        self.current_audio = b""
        await self.ws.send(json.dumps({"type": "Flushed", "sequence_id": self.seq}))
        self.seq += 1
        for _ in range(plan.audio_after_done):
            await self._send_audio(
                synthesize("stale audio", self.encoding, self.sample_rate)[:step]
            )
