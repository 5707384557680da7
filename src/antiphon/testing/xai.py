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
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from antiphon.audio.codecs import alaw_encode, ulaw_encode
from antiphon.protocols import xai_tts as xai
from antiphon.testing.faults import FaultPlan
from antiphon.testing.server import BINARY, FakeWsServer
from antiphon.testing.speaking import SpeakerConnection
from antiphon.testing.synth import SECONDS_PER_CHAR, tone_for_text

__all__ = [
    "CHUNK_SECONDS",
    "DEFAULT_API_KEY",
    "FAKE_CODECS",
    "FakeXAITTS",
    "XAIFakeStats",
    "check_query",
    "synthesize",
]

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

    stats: XAIFakeStats

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
        self.count_connection(connection)
        self.stats.queries.append(q)
        return None

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        q = {k: v[-1] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        await self.run(
            _Conn(
                self,
                ws,
                index=self.take_index(ws),
                encoding=FAKE_CODECS[q.get("codec", "pcm")],
                sample_rate=int(q.get("sample_rate", xai.DEFAULT_SAMPLE_RATE)),
                timestamps=q.get("with_timestamps") == "true",
            )
        )


class _Conn(SpeakerConnection):
    """One client connection of the fake."""

    IDLE_CLOSE = (1001, "idle timeout")
    AGE_CLOSE = (1001, "maximum connection duration")
    SPEAK_BLANK = False

    def __init__(
        self, server: FakeXAITTS, ws: ServerConnection, *, timestamps: bool, **kw: Any
    ) -> None:
        super().__init__(server, ws, **kw)
        self.server = server
        self.stats = server.stats
        self.chunk_seconds = server.chunk_seconds
        self.timestamps = timestamps
        self.utterances = 0

    async def send_error(self, message: str) -> None:
        self.stats.errors_sent.append(message)
        await self.send_json({"type": "error", "message": message})

    async def refuse(self, problem: str) -> bool:
        await self.send_error(
            "binary messages are not accepted; send JSON text" if problem == BINARY else problem
        )
        await self.close(1003 if problem == BINARY else 1008, problem)
        return False

    def record(self, msg: dict[str, Any]) -> None:
        self.stats.messages.append(msg)

    async def on_message(self, msg: dict[str, Any]) -> bool:
        kind = msg.get("type")
        if kind == "text.delta":
            delta = msg.get("delta")
            if not isinstance(delta, str):
                await self.send_error("text.delta needs a string 'delta'")
                await self.close(1008, "invalid text.delta")
                return False
            if len(delta) > xai.MAX_DELTA_CHARS:
                await self.send_error("text.delta is capped at 15000 characters")
                await self.close(1009, "text.delta too long")
                return False
            self.buffer.append(delta)
        elif kind == "text.done":
            text = self.flush_buffer()
            if self.server.instant_done:
                await self.speak(text)
            else:
                self.queue(text)
        elif kind == "text.clear":
            self.stats.clears += 1
            if await self.clear():
                await self.send_json({"type": "audio.clear"})
        else:
            await self.send_error(f"unknown message type {kind!r}")
            await self.close(1008, "unknown message type")
            return False
        return True

    def synthesize(self, text: str) -> bytes:
        return synthesize(text, self.encoding, self.sample_rate)

    async def send_audio(self, chunk: bytes) -> None:
        if self.stats.record_send_times:
            self.stats.audio_send_times.append(time.perf_counter_ns())
        await self.send_json({"type": "audio.delta", "delta": base64.b64encode(chunk).decode()})
        self.chunks_sent += 1
        self.stats.audio_messages += 1
        self.stats.audio_bytes += len(chunk)

    def _timestamps(self, text: str) -> dict[str, Any]:
        """Per-character timings over the audio the fake speaks for ``text`` (its
        stripped characters, :data:`~antiphon.testing.synth.SECONDS_PER_CHAR` each)."""
        step = SECONDS_PER_CHAR
        text = text.strip()
        return {
            "graph_chars": list(text),
            "graph_times": [
                [round(i * step, 3), round((i + 1) * step, 3)] for i in range(len(text))
            ],
        }

    async def _error(self) -> bool:
        await self.send_error("fault plan: synthesis failed")
        return False  # the audio goes on

    async def speak(self, text: str) -> None:
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
        malformed = (
            "{this is not json",
            json.dumps({"type": "audio.something_new", "value": 1}),
            b"\x00\x01binary",
        )
        if not await self.speak_audio(text, gen=gen, error=self._error, malformed=malformed):
            return  # cleared (no audio.done for this utterance) or closed
        await self.send_json(
            {"type": "audio.done", "trace_id": f"fake-{self.index}-{self.utterances}"}
        )
        self.utterances += 1
        self.stats.done_sent += 1
        await self.send_stale()
