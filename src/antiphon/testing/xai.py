"""A fake xAI streaming TTS server (``/v1/tts``) for tests and offline demos.

It speaks the wire protocol on loopback: checks the path, the ``Authorization: Bearer``
header (HTTP 401 on the upgrade otherwise) and the query parameters (HTTP 400 with a JSON
body naming the problem), buffers ``text.delta``, answers every ``text.done`` with
``audio.delta`` messages (base64 of a deterministic tone per text, in the requested codec
and rate) and exactly one ``audio.done``, answers ``text.clear`` with ``audio.clear``, and
follows a :class:`FaultPlan`.

Fault plan fields that apply: all of them. In this protocol's terms:
``close_on_open`` closes right after the upgrade; ``silent_after`` stops answering after
N client messages; ``close_mid_audio`` closes (or drops TCP) after ``close_after_chunks``
``audio.delta`` messages; ``drop_before_audio`` closes 1011 when the first N connections
get their first ``text.done``; ``error_mid_stream`` sends ``{"type":"error","message":...}``
after ``close_after_chunks`` chunks; ``malformed_mid_stream`` sends invalid JSON, an
unknown type and a binary frame in the middle of the audio; ``audio_after_done`` sends
stale ``audio.delta`` after ``audio.done``; ``audio_after_clear`` keeps sending old audio
before ``audio.clear``; ``ignore_clear`` never answers ``text.clear`` (and keeps talking);
``first_audio_delay``/``chunk_interval``/``odd_chunking`` shape the audio;
``idle_close_after``/``max_connection_age`` close 1001.

``instant_done=True`` answers a ``text.done`` inside the read loop, the instant it is read
(audio and ``audio.done`` go out before the next client message is even looked at): the
server side of the xAI race that hangs clients which note "text.done sent" only after
their ``send`` returned.
"""

from __future__ import annotations

import asyncio
import base64
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
from antiphon.protocols import xai_tts as xai
from antiphon.testing.faults import ABORT, FaultPlan
from antiphon.testing.server import FakeWsServer
from antiphon.testing.synth import tone_for_text

DEFAULT_API_KEY = "test-key"
CHUNK_SECONDS = 0.02
#: The codecs the fake can produce (``wav``/``mp3`` are valid for xAI, not for the fake).
FAKE_CODECS = {"pcm": "linear16", "mulaw": "mulaw", "ulaw": "mulaw", "alaw": "alaw"}


@dataclass
class XAIFakeStats:
    """What the fake saw and did (read it from the test after the fact)."""

    connections: int = 0
    open_connections: int = 0
    queries: list[dict[str, str]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    done_texts: list[str] = field(default_factory=list)
    """The text of each ``text.done`` (what was spoken, in order)."""
    clears: int = 0
    audio_bytes: int = 0
    audio_messages: int = 0
    done_sent: int = 0
    errors_sent: list[str] = field(default_factory=list)
    closes_sent: list[int] = field(default_factory=list)
    audio_send_times: list[int] = field(default_factory=list)
    """``time.perf_counter_ns()`` just before each audio chunk was sent (if recording)."""
    record_send_times: bool = False

    def count(self, kind: str) -> int:
        return sum(1 for m in self.messages if m.get("type") == kind)


def synthesize(text: str, encoding: str, sample_rate: int) -> bytes:
    """The exact audio the fake sends for ``text`` (``encoding``: linear16/pcm, mulaw, alaw)."""
    pcm = tone_for_text(text, sample_rate)
    enc = xai.ENCODING_ALIASES.get(encoding, encoding)
    if enc == "mulaw":
        return bytes(ulaw_encode(pcm))
    if enc == "alaw":
        return bytes(alaw_encode(pcm))
    if enc != "linear16":
        raise ValueError(f"the fake cannot synthesize {encoding!r}")
    return pcm


def _json_response(connection: ServerConnection, status: int, message: str) -> Response:
    resp = connection.respond(status, json.dumps({"error": message}) + "\n")
    del resp.headers["Content-Type"]
    resp.headers["Content-Type"] = "application/json"
    return resp


def check_query(q: dict[str, str]) -> str | None:
    """What the server would refuse in the query (None if acceptable)."""
    if "language" not in q:
        return "missing required query parameter 'language'"
    try:
        xai.canonical_language(q["language"])
    except ValueError as exc:
        return str(exc)
    if not q.get("voice", xai.DEFAULT_VOICE).strip():
        return "empty 'voice'"
    codec = q.get("codec", "mp3")
    if codec not in FAKE_CODECS:
        return f"codec {codec!r}: the fake serves pcm, mulaw, ulaw and alaw only"
    try:
        rate = int(q.get("sample_rate", str(xai.DEFAULT_SAMPLE_RATE)))
    except ValueError:
        return "sample_rate must be an integer"
    if rate not in xai.SAMPLE_RATES:
        return f"unsupported sample_rate {rate}"
    if "speed" in q:
        try:
            speed = float(q["speed"])
        except ValueError:
            return "speed must be a number"
        if not xai.SPEED_RANGE[0] <= speed <= xai.SPEED_RANGE[1]:
            return "speed must be between 0.7 and 1.5"
    if q.get("optimize_streaming_latency", "0") not in ("0", "1", "2"):
        return "optimize_streaming_latency must be 0, 1 or 2"
    for name in ("text_normalization", "with_timestamps"):
        if q.get(name, "false") not in ("true", "false"):
            return f"{name} must be 'true' or 'false'"
    return None


class FakeXAITTS(FakeWsServer):
    """``ws://127.0.0.1:PORT/v1/tts`` with the xAI streaming TTS protocol.

    ``instant_done``: speak each ``text.done`` inside the read loop, so its audio and
    ``audio.done`` are sent the instant it is read. ``chunk_seconds``: audio per
    ``audio.delta``.
    """

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        api_key: str = DEFAULT_API_KEY,
        instant_done: bool = False,
        chunk_seconds: float = CHUNK_SECONDS,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(plan, host=host, port=port)
        if chunk_seconds <= 0:
            raise ValueError("chunk_seconds must be > 0")
        self.api_key = api_key
        self.instant_done = instant_done
        self.chunk_seconds = chunk_seconds
        self.stats = XAIFakeStats()
        self._indices: dict[int, int] = {}  # accepted upgrade -> connection number

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != xai.PATH:
            return _json_response(connection, 404, f"unknown path {parts.path}; use {xai.PATH}")
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            return _json_response(connection, 401, "Incorrect API key provided")
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        problem = check_query(q)
        if problem is not None:
            return _json_response(connection, 400, problem)
        # Counted before the 101 goes out, so a client that sees its connection open
        # also sees it counted.
        self._indices[id(connection)] = self.stats.connections
        self.stats.connections += 1
        self.stats.queries.append(q)
        return None

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        q = {k: v[-1] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        conn = _Conn(
            self,
            ws,
            index=self._indices.pop(id(ws), self.stats.connections),
            encoding=FAKE_CODECS[q.get("codec", "pcm")],
            sample_rate=int(q.get("sample_rate", xai.DEFAULT_SAMPLE_RATE)),
            timestamps=q.get("with_timestamps") == "true",
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
        server: FakeXAITTS,
        ws: ServerConnection,
        *,
        index: int,
        encoding: str,
        sample_rate: int,
        timestamps: bool,
    ) -> None:
        self.server = server
        self.plan = server.plan
        self.stats = server.stats
        self.ws = ws
        self.index = index
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.timestamps = timestamps
        self.width = 2 if encoding == "linear16" else 1
        loop = asyncio.get_running_loop()
        self.opened = loop.time()
        self.last_message = loop.time()
        self.received = 0
        self.chunks_sent = 0
        self.utterances = 0
        self.buffer: list[str] = []
        self.jobs: deque[str] = deque()
        self.wake = asyncio.Event()
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

    async def send_json(self, msg: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(msg))

    async def send_error(self, message: str) -> None:
        self.stats.errors_sent.append(message)
        await self.send_json({"type": "error", "message": message})

    async def serve(self) -> None:
        plan = self.plan
        if plan.close_on_open is not None:
            await self.close(plan.close_on_open, plan.close_on_open_reason)
            return
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
                await self.close(1001, "idle timeout")
                return
            if plan.max_connection_age is not None and now - self.opened > plan.max_connection_age:
                await self.close(1001, "maximum connection duration")
                return

    async def _read_loop(self) -> None:
        plan = self.plan
        try:
            async for raw in self.ws:
                self.last_message = asyncio.get_running_loop().time()
                self.received += 1
                if isinstance(raw, bytes):
                    await self.send_error("binary messages are not accepted; send JSON text")
                    await self.close(1003, "binary messages are not accepted")
                    return
                try:
                    msg = json.loads(raw)
                except ValueError:
                    await self.send_error("invalid JSON")
                    await self.close(1008, "invalid JSON")
                    return
                if not isinstance(msg, dict):
                    await self.send_error("expected a JSON object")
                    await self.close(1008, "expected a JSON object")
                    return
                self.stats.messages.append(msg)
                if plan.silent_after is not None and self.received > plan.silent_after:
                    continue
                kind = msg.get("type")
                if kind == "text.delta":
                    delta = msg.get("delta")
                    if not isinstance(delta, str):
                        await self.send_error("text.delta needs a string 'delta'")
                        await self.close(1008, "invalid text.delta")
                        return
                    if len(delta) > xai.MAX_DELTA_CHARS:
                        await self.send_error("text.delta is capped at 15000 characters")
                        await self.close(1009, "text.delta too long")
                        return
                    self.buffer.append(delta)
                elif kind == "text.done":
                    text = "".join(self.buffer)
                    self.buffer.clear()
                    if self.server.instant_done:
                        await self._speak(text)
                    else:
                        self.jobs.append(text)
                        self.wake.set()
                elif kind == "text.clear":
                    await self._clear()
                else:
                    await self.send_error(f"unknown message type {kind!r}")
                    await self.close(1008, "unknown message type")
                    return
        except ConnectionClosed:
            return

    async def _clear(self) -> None:
        self.stats.clears += 1
        if self.plan.ignore_clear:
            return
        self.buffer.clear()
        self.jobs.clear()
        old_audio, pos = self.current_audio, self.current_pos
        self.clear_gen += 1  # the speaker abandons its utterance at the next chunk
        step = self._chunk_bytes()
        for _ in range(self.plan.audio_after_clear):
            chunk = old_audio[pos : pos + step] or bytes(step)
            pos += step
            await self._send_audio(chunk)
        await self.send_json({"type": "audio.clear"})

    def _chunk_bytes(self) -> int:
        n = max(1, round(self.server.chunk_seconds * self.sample_rate)) * self.width
        return n + 1 if self.plan.odd_chunking and self.width == 2 else n

    async def _send_audio(self, chunk: bytes, extra: dict[str, Any] | None = None) -> None:
        if self.stats.record_send_times:
            self.stats.audio_send_times.append(time.perf_counter_ns())
        msg: dict[str, Any] = {"type": "audio.delta", "delta": base64.b64encode(chunk).decode()}
        if extra:
            msg.update(extra)
        await self.send_json(msg)
        self.chunks_sent += 1
        self.stats.audio_messages += 1
        self.stats.audio_bytes += len(chunk)

    async def _speak_loop(self) -> None:
        try:
            while True:
                while not self.jobs:
                    self.wake.clear()
                    await self.wake.wait()
                text = self.jobs.popleft()
                self.speaking = True
                await self._speak(text)
                self.speaking = False
        except ConnectionClosed:
            return

    def _timestamps(self, text: str) -> dict[str, Any]:
        step = 0.06
        return {
            "graph_chars": list(text),
            "graph_times": [
                [round(i * step, 3), round((i + 1) * step, 3)] for i in range(len(text))
            ],
        }

    async def _speak(self, text: str) -> None:
        plan = self.plan
        self.stats.done_texts.append(text)
        if self.index < plan.drop_before_audio:
            await self.close(1011, "dropped by fault plan")
            return
        gen = self.clear_gen
        if plan.first_audio_delay:
            await asyncio.sleep(plan.first_audio_delay)
        if self.clear_gen != gen:
            return  # cleared while waiting: no audio.done for this utterance
        if self.timestamps and text.strip():
            # Timings may come in a delta that carries no audio at all.
            await self.send_json(
                {"type": "audio.delta", "delta": "", "audio_timestamps": self._timestamps(text)}
            )
        audio = synthesize(text, self.encoding, self.sample_rate) if text.strip() else b""
        self.current_audio = audio
        step = self._chunk_bytes()
        for i, pos in enumerate(range(0, len(audio), step)):
            self.current_pos = pos
            if self.clear_gen != gen:
                return  # cleared: no audio.done for this utterance
            if plan.close_mid_audio is not None and self.chunks_sent >= plan.close_after_chunks:
                await self.close(plan.close_mid_audio, plan.close_reason)
                return
            if plan.error_mid_stream and i == plan.close_after_chunks:
                await self.send_error("fault plan: synthesis failed")
            if plan.malformed_mid_stream and i == 1:
                await self.ws.send("{this is not json")
                await self.send_json({"type": "audio.something_new", "value": 1})
                await self.ws.send(b"\x00\x01binary")
            await self._send_audio(audio[pos : pos + step])
            if plan.chunk_interval:
                await asyncio.sleep(plan.chunk_interval)
        self.current_audio = b""
        await self.send_json(
            {"type": "audio.done", "trace_id": f"fake-{self.index}-{self.utterances}"}
        )
        self.utterances += 1
        self.stats.done_sent += 1
        for _ in range(plan.audio_after_done):
            await self._send_audio(
                synthesize("stale audio", self.encoding, self.sample_rate)[:step]
            )
