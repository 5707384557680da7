"""A fake Rime JSON WebSocket TTS server (``/ws3``, ``/ws2``) for tests and offline demos.

It speaks the protocol as Rime documents it (see :mod:`antiphon.protocols.rime_tts`; no
official SDK exists to check it against) on loopback: it checks the path, the bearer key
(a wrong or missing one gets HTTP 401 on the upgrade) and the query (``speaker``,
``modelId``, ``audioFormat`` ``pcm``/``mulaw``, ``samplingRate``, ``segment``: HTTP 400
if invalid); text messages (``{"text", "contextId"}``) fill one buffer, ``flush`` speaks
it as ``chunk`` messages (base64 audio tagged with the most recent context id, as Rime
does), then ``timestamps`` (the words, spread evenly over the audio) and ``done``;
``clear`` drops the buffer and what is being spoken, unacknowledged; ``eos`` speaks what
is left and closes (1000). A message it cannot read gets an in-band ``error`` and the
connection stays open, as the documentation says. Only ``segment=never`` is modelled
(the server speaks on ``flush``), which is what antiphon asks for.

Fault plan fields that apply: all of them. In this protocol's terms: ``silent_after``
ignores every client message after the N-th; ``drop_before_audio`` closes (1011) the
first N connections when a flush has something to speak; ``error_mid_stream`` sends an
``error`` instead of chunk number ``close_after_chunks`` and abandons that synthesis;
``malformed_mid_stream`` sends data that is not JSON and a message of an unknown type
before the second chunk; ``audio_after_done`` sends stale chunks of the context after
its ``done``; ``audio_after_clear`` keeps sending chunks of a cleared synthesis (Rime
has no clear acknowledgement); ``ignore_clear`` lets a cleared synthesis speak on;
``idle_close_after`` closes an idle connection with 1000, ``max_connection_age`` with
1001.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from antiphon.errors import ConfigError
from antiphon.protocols import rime_tts as rt
from antiphon.testing.deepgram import synthesize
from antiphon.testing.faults import FaultPlan
from antiphon.testing.server import FakeWsServer
from antiphon.testing.speaking import SpeakerConnection
from antiphon.testing.synth import tone_duration

__all__ = ["CHUNK_SECONDS", "DEFAULT_API_KEY", "FakeRimeTTS", "RimeFakeStats", "synthesize"]

DEFAULT_API_KEY = "test-key"
CHUNK_SECONDS = 0.02
_PATHS = ("/ws3", "/ws2")


@dataclass
class RimeFakeStats:
    """What the fake saw and did (read it from the test after the fact)."""

    connections: int = 0
    open_connections: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Every client message, parsed."""
    flushed_texts: list[str] = field(default_factory=list)
    clears: int = 0
    errors_sent: int = 0
    audio_bytes: int = 0
    closes_sent: list[int] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    """Every message the fake sent, parsed (chunks without their data)."""
    audio_send_times: list[int] = field(default_factory=list)
    """``time.perf_counter_ns()`` just before each audio chunk was sent (if recording)."""
    record_send_times: bool = False


def word_timestamps(text: str) -> dict[str, list[Any]]:
    """What the fake reports for ``text``: its words, spread evenly over its audio."""
    words = text.split()
    if not words:
        return {"words": [], "start": [], "end": []}
    step = tone_duration(text) / len(words)
    start = [round(i * step, 3) for i in range(len(words))]
    end = [round((i + 1) * step, 3) for i in range(len(words))]
    return {"words": words, "start": start, "end": end}


class FakeRimeTTS(FakeWsServer):
    """``ws://127.0.0.1:PORT/ws3`` with Rime's JSON WebSocket protocol."""

    stats: RimeFakeStats

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
        self.stats = RimeFakeStats()

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") not in _PATHS:
            return connection.respond(404, f"unknown path {parts.path}; use /ws3\n")
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            return connection.respond(401, "Unauthorized\n")
        try:
            options = rt.RimeOptions.from_query(
                {k: v[-1] for k, v in parse_qs(parts.query).items()}
            )
        except (ConfigError, ValueError) as exc:
            return connection.respond(400, f"{exc}\n")
        if options.segment != "never":
            return connection.respond(400, "this fake models segment=never only\n")
        self.count_connection(connection)
        return None

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = {k: v[-1] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        options = rt.RimeOptions.from_query(query)
        await self.run(
            _Conn(
                self,
                ws,
                index=self.take_index(ws),
                encoding=options.encoding,
                sample_rate=options.sample_rate,
            )
        )


class _Conn(SpeakerConnection):
    """One client connection of the fake: one buffer, one synthesis at a time."""

    IDLE_CLOSE = (1000, "idle timeout")
    AGE_CLOSE = (1001, "maximum connection duration")
    chunk_seconds = CHUNK_SECONDS
    SPEAK_BLANK = False

    def __init__(self, server: FakeRimeTTS, ws: ServerConnection, *, index: int, **kw: Any):
        super().__init__(server, ws, index=index, **kw)
        self.stats = server.stats
        self.context: str | None = None  # the most recent context id sent
        self.job_contexts: deque[str | None] = deque()
        self.speaking_context: str | None = None

    async def send_json(self, msg: dict[str, Any]) -> None:
        self.stats.sent.append({k: v for k, v in msg.items() if k != "data"})
        await super().send_json(msg)

    async def send_error(self, message: str) -> None:
        self.stats.errors_sent += 1
        await self.send_json({"type": "error", "message": message})

    async def refuse(self, problem: str) -> bool:
        await self.send_error(f"could not read the message: {problem}")
        return True  # Rime keeps the connection open

    def record(self, msg: dict[str, Any]) -> None:
        self.stats.messages.append(msg)

    async def on_message(self, msg: dict[str, Any]) -> bool:
        if "text" in msg:
            text, cid = msg["text"], msg.get("contextId")
            if not isinstance(text, str) or not (cid is None or isinstance(cid, str)):
                await self.send_error("text must be a string, contextId a string")
                return True
            if len(text) > rt.MAX_TEXT_CHARS:
                await self.send_error(f"text is longer than {rt.MAX_TEXT_CHARS} characters")
                return True
            self.buffer.append(text)
            self.context = cid
            return True
        operation = msg.get("operation")
        if operation == "flush":
            self._queue()
        elif operation == "clear":
            self.stats.clears += 1
            await self.clear()
        elif operation == "eos":
            self._queue()
            await self.drained.wait()
            await self.close(1000, "")
            return False
        else:
            await self.send_error(f"unknown message {json.dumps(msg)[:100]}")
        return True

    def _queue(self) -> None:
        self.job_contexts.append(self.context)
        self.queue(self.flush_buffer())

    async def clear(self) -> bool:
        if not self.plan.ignore_clear:
            self.job_contexts.clear()
        return await super().clear()

    def synthesize(self, text: str) -> bytes:
        return synthesize(text, self.encoding, self.sample_rate)

    async def send_audio(self, chunk: bytes) -> None:
        if self.stats.record_send_times:
            self.stats.audio_send_times.append(time.perf_counter_ns())
        data = base64.b64encode(chunk).decode()
        await self.send_json({"type": "chunk", "data": data, "contextId": self.speaking_context})
        self.chunks_sent += 1
        self.stats.audio_bytes += len(chunk)

    async def _error(self) -> bool:
        await self.send_error("synthesis failed (fault plan)")
        return True

    async def speak(self, text: str) -> None:
        plan = self.plan
        context = self.job_contexts.popleft() if self.job_contexts else self.context
        self.speaking_context = context
        self.stats.flushed_texts.append(text)
        if text.strip() and self.index < plan.drop_before_audio:
            await self.close(1011, "dropped by fault plan")
            return
        gen = self.clear_gen
        if plan.first_audio_delay:
            await asyncio.sleep(plan.first_audio_delay)
        malformed = ("{this is not json", json.dumps({"type": "somethingNew", "value": 1}))
        if not await self.speak_audio(text, gen=gen, error=self._error, malformed=malformed):
            return  # cleared, failed or closed: no done for this synthesis
        if text.split():
            timestamps = {"type": "timestamps", "word_timestamps": word_timestamps(text)}
            await self.send_json({**timestamps, "contextId": context})
        await self.send_json({"type": "done", "contextId": context})
        await self.send_stale()
