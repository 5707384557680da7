"""A fake Cartesia streaming TTS server (``/tts/websocket``) for tests and offline demos.

It speaks the real wire protocol on loopback: checks the path, the API key
(``Authorization: Bearer``, as Cartesia's SDK sends it, the older ``X-API-Key`` or the
``api_key`` query parameter; a wrong key gets HTTP 401 on the upgrade, as the real
service answers) and the API version (``Cartesia-Version`` header
or ``cartesia_version`` query), and multiplexes contexts on one connection the way the
service does: generation requests append their transcript to a context verbatim,
``flush: true`` speaks what was sent and answers ``flush_done`` with the flush's id,
``continue: false`` speaks the rest and answers ``done``, ``cancel: true`` stops a context
silently. Audio is ``type: chunk`` JSON with base64 data. Every message of a context must
repeat the first one's fields (all but ``transcript``, ``continue``, ``flush``,
``duration``); otherwise, and for other invalid requests, the fake answers an in-band
``type: error`` for that context.

Fault plan fields that apply: all of them. In this protocol's terms: ``silent_after``
ignores every client message after the N-th; ``drop_before_audio`` closes (1011) the first
N connections when a context first has something to speak; ``error_mid_stream`` sends an
``error`` for the context (``done: true``) instead of its chunk number
``close_after_chunks``; ``audio_after_done`` sends stale chunks of the context after its
``done``; ``audio_after_clear`` keeps sending chunks of a cancelled context (Cartesia has
no cancel acknowledgement); ``ignore_clear`` lets a cancelled context speak on to its end;
``idle_close_after`` closes an idle connection with 1000, ``max_connection_age`` with 1001.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from antiphon.audio.codecs import alaw_encode, ulaw_encode
from antiphon.protocols import cartesia_tts as ca
from antiphon.testing.faults import FaultPlan
from antiphon.testing.server import FakeWsServer, WsConnection
from antiphon.testing.synth import tone_for_text

__all__ = [
    "CHUNK_SECONDS",
    "DEFAULT_API_KEY",
    "VARIABLE_FIELDS",
    "CartesiaFakeStats",
    "FakeCartesiaTTS",
    "synthesize",
]

DEFAULT_API_KEY = "test-key"
CHUNK_SECONDS = 0.02
#: Fields that may change between the messages of one context.
VARIABLE_FIELDS = frozenset({"transcript", "continue", "flush", "duration"})
_ENCODINGS = ("pcm_s16le", "pcm_f32le", "pcm_mulaw", "pcm_alaw")
_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class CartesiaFakeStats:
    """What the fake saw and did (read it from the test after the fact)."""

    connections: int = 0
    """WebSocket upgrades accepted (counted before the 101 response is sent)."""
    open_connections: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)
    """Context ids in the order they were opened."""
    flushed_texts: list[str] = field(default_factory=list)
    """Every piece of text spoken (one per flush or end of context)."""
    cancels: int = 0
    audio_bytes: int = 0
    errors_sent: list[dict[str, Any]] = field(default_factory=list)
    handshakes: list[tuple[str, str]] = field(default_factory=list)
    """(how the key came: ``bearer``, ``x-api-key`` or ``query``; the API version) of
    every accepted upgrade."""
    closes_sent: list[int] = field(default_factory=list)
    audio_send_times: list[int] = field(default_factory=list)
    """``time.perf_counter_ns()`` just before each audio chunk was sent (if recording)."""
    record_send_times: bool = False

    def count(self, kind: str) -> int:
        """Client messages of ``kind``: ``generation``, ``flush``, ``end`` or ``cancel``."""
        return sum(1 for m in self.messages if _kind(m) == kind)


def _kind(msg: dict[str, Any]) -> str:
    if msg.get("cancel") is True:
        return "cancel"
    if msg.get("flush") is True:
        return "flush"
    if msg.get("continue") is not True:
        return "end"
    return "generation"


def synthesize(text: str, encoding: str, sample_rate: int) -> bytes:
    """The exact audio the fake sends for ``text`` (what a test should expect).

    ``encoding`` is antiphon's name (``linear16``, ``mulaw``, ``alaw``) or Cartesia's
    (``pcm_s16le``, ``pcm_mulaw``, ``pcm_alaw``, ``pcm_f32le``). Blank text is silent.
    """
    if not text.strip():
        return b""
    pcm = tone_for_text(text, sample_rate)
    if encoding in ("mulaw", "pcm_mulaw"):
        return bytes(ulaw_encode(pcm))
    if encoding in ("alaw", "pcm_alaw"):
        return bytes(alaw_encode(pcm))
    if encoding == "pcm_f32le":
        samples = np.frombuffer(pcm, dtype="<i2").astype("<f4") / np.float32(32768.0)
        return samples.astype("<f4").tobytes()
    return pcm


class FakeCartesiaTTS(FakeWsServer):
    """``ws://127.0.0.1:PORT/tts/websocket`` with the Cartesia TTS protocol."""

    stats: CartesiaFakeStats

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
        self.stats = CartesiaFakeStats()

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != ca.PATH:
            return connection.respond(404, f"unknown path {parts.path}; use {ca.PATH}\n")
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        auth = request.headers.get("Authorization", "")
        keys = {
            "x-api-key": request.headers.get("X-API-Key"),
            "bearer": auth[len("Bearer ") :] if auth.startswith("Bearer ") else None,
            "query": q.get("api_key"),
        }
        form = next((name for name, key in keys.items() if key is not None), "none")
        if keys.get(form) != self.api_key:
            return connection.respond(401, "Invalid API key\n")
        header_version = request.headers.get("Cartesia-Version")
        query_version = q.get("cartesia_version")
        version = header_version or query_version
        if version is None:
            return connection.respond(
                400, "missing API version: send a Cartesia-Version header (e.g. 2026-08-14)\n"
            )
        if header_version and query_version and header_version != query_version:
            return connection.respond(400, "Cartesia-Version and cartesia_version differ\n")
        if not _VERSION_RE.match(version):
            return connection.respond(400, f"invalid Cartesia-Version {version!r}\n")
        self.count_connection(connection)
        self.stats.handshakes.append((form, version))
        return None

    async def handle(self, ws: ServerConnection) -> None:
        await self.run(_Conn(self, ws, index=self.take_index(ws)))


@dataclass
class _Job:
    text: str
    final: bool  # continue:false (answered by done) rather than a flush (flush_done)
    flush_id: int


class _Context:
    """One context of a connection: its fixed fields, text buffer and queued jobs."""

    def __init__(self, context_id: str, base: dict[str, Any]) -> None:
        self.id = context_id
        self.base = base
        self.encoding: str = base["output_format"]["encoding"]
        self.sample_rate: int = base["output_format"]["sample_rate"]
        self.timestamps = base.get("add_timestamps") is True
        self.buffer: list[str] = []
        self.jobs: deque[_Job] = deque()
        self.wake = asyncio.Event()
        self.flush_id = 1  # the id of the segment being filled (1-based)
        self.ended = False  # continue:false received
        self.stopped = False  # cancelled (and honoured), failed or done: speak no more
        self.cancelled = False
        self.speaking = False
        self.task: asyncio.Task[None] | None = None
        self.current_audio = b""
        self.current_pos = 0
        self.audio_seconds = 0.0  # spoken in this context before the current job

    @property
    def width(self) -> int:
        return {"pcm_s16le": 2, "pcm_f32le": 4}.get(self.encoding, 1)

    @property
    def busy(self) -> bool:
        return not self.stopped and (self.speaking or bool(self.jobs))


class _Conn(WsConnection):
    """One client connection of the fake."""

    IDLE_CLOSE = (1000, "idle timeout")
    AGE_CLOSE = (1001, "maximum connection duration")

    def __init__(self, server: FakeCartesiaTTS, ws: ServerConnection, *, index: int) -> None:
        super().__init__(server, ws, index=index)
        self.stats = server.stats
        self.contexts: dict[str, _Context] = {}

    # -- sending
    async def send_error(
        self, context_id: str | None, message: str, *, status: int = 400, title: str = ""
    ) -> None:
        msg: dict[str, Any] = {
            "type": "error",
            "done": True,
            "status_code": status,
            "title": title or "Invalid request",
            "message": message,
            "error_code": "invalid_request" if status == 400 else "internal_error",
            "request_id": f"fake-{self.index}",
        }
        if context_id is not None:
            msg["context_id"] = context_id
        self.stats.errors_sent.append(msg)
        await self.send_json(msg)

    async def send_chunk(self, ctx: _Context, audio: bytes, flush_id: int) -> None:
        if self.stats.record_send_times:
            self.stats.audio_send_times.append(time.perf_counter_ns())
        await self.send_json(
            {
                "type": "chunk",
                "context_id": ctx.id,
                "data": base64.b64encode(audio).decode("ascii"),
                "done": False,
                "status_code": 206,
                "step_time": 1.5,
                "flush_id": flush_id,
            }
        )
        self.chunks_sent += 1
        self.stats.audio_bytes += len(audio)

    # -- receiving
    def busy(self) -> bool:
        return any(c.busy for c in self.contexts.values())

    async def refuse(self, problem: str) -> bool:
        await self.send_error(None, problem)
        return True

    def record(self, msg: dict[str, Any]) -> None:
        self.stats.messages.append(msg)

    async def on_message(self, msg: dict[str, Any]) -> bool:
        if msg.get("cancel") is True:
            await self._cancel(msg)
        else:
            await self._generation(msg)
        return True

    async def _cancel(self, msg: dict[str, Any]) -> None:
        self.stats.cancels += 1
        ctx = self.contexts.get(str(msg.get("context_id")))
        if ctx is None or ctx.stopped or self.plan.ignore_clear:
            return
        ctx.cancelled = ctx.stopped = True
        ctx.jobs.clear()
        ctx.wake.set()
        old_audio, pos = ctx.current_audio, ctx.current_pos
        step = self._chunk_bytes(ctx)
        for _ in range(self.plan.audio_after_clear):
            pos += step
            await self.send_chunk(ctx, old_audio[pos : pos + step] or bytes(step), ctx.flush_id)

    def _invalid(self, msg: dict[str, Any]) -> str | None:
        """Why a generation request is invalid (None if it is valid)."""
        if not isinstance(msg.get("context_id"), str) or not msg["context_id"]:
            return "context_id must be a non-empty string"
        if not isinstance(msg.get("model_id"), str) or not msg["model_id"]:
            return "model_id is required"
        if not isinstance(msg.get("transcript"), str):
            return "transcript must be a string"
        voice = msg.get("voice")
        if not (isinstance(voice, dict) and voice.get("mode") == "id" and voice.get("id")):
            return "voice must be {'mode': 'id', 'id': <voice id>}"
        fmt = msg.get("output_format")
        if not isinstance(fmt, dict) or fmt.get("container") != "raw":
            return "output_format.container must be 'raw' on the WebSocket"
        if fmt.get("encoding") not in _ENCODINGS:
            return f"output_format.encoding must be one of {', '.join(_ENCODINGS)}"
        if fmt.get("sample_rate") not in ca.SAMPLE_RATES:
            return f"output_format.sample_rate must be one of {ca.SAMPLE_RATES}"
        if "continue" in msg and not isinstance(msg["continue"], bool):
            return "continue must be a boolean"
        if msg.get("flush") is True and msg["transcript"]:
            return "a flush must have an empty transcript"
        return None

    async def _generation(self, msg: dict[str, Any]) -> None:
        cid = msg.get("context_id")
        reason = self._invalid(msg)
        if reason is not None:
            await self.send_error(cid if isinstance(cid, str) else None, reason)
            return
        assert isinstance(cid, str)
        base = {k: v for k, v in msg.items() if k not in VARIABLE_FIELDS}
        ctx = self.contexts.get(cid)
        if ctx is None:
            ctx = self.contexts[cid] = _Context(cid, base)
            self.stats.contexts.append(cid)
        elif ctx.cancelled:
            return  # nothing more for a cancelled context
        elif ctx.stopped or ctx.ended:
            await self.send_error(cid, "the context has ended; use a new context_id")
            return
        elif base != ctx.base:
            changed = sorted(
                k for k in base.keys() | ctx.base.keys() if base.get(k) != ctx.base.get(k)
            )
            ctx.stopped = True
            ctx.jobs.clear()
            ctx.wake.set()
            await self.send_error(
                cid,
                "inputs on the same context must keep all fields except transcript, continue "
                f"and duration the same; changed: {', '.join(changed)}",
            )
            return
        ctx.buffer.append(msg["transcript"])
        if msg.get("continue") is not True:
            ctx.ended = True
            self._queue(ctx, final=True)
        elif msg.get("flush") is True:
            self._queue(ctx, final=False)

    def _queue(self, ctx: _Context, *, final: bool) -> None:
        ctx.jobs.append(_Job("".join(ctx.buffer), final, ctx.flush_id))
        ctx.buffer.clear()
        if not final:
            ctx.flush_id += 1
        ctx.wake.set()
        if ctx.task is None:
            ctx.task = self.spawn(self._speak_loop(ctx))

    # -- speaking
    def _chunk_bytes(self, ctx: _Context) -> int:
        n = round(CHUNK_SECONDS * ctx.sample_rate) * ctx.width
        return n + 1 if self.plan.odd_chunking and ctx.width == 2 else n

    async def _speak_loop(self, ctx: _Context) -> None:
        try:
            while not ctx.stopped:
                if not ctx.jobs:
                    ctx.wake.clear()
                    await ctx.wake.wait()
                    continue
                job = ctx.jobs.popleft()
                ctx.speaking = True
                try:
                    finished = await self._speak(ctx, job)
                finally:
                    ctx.speaking = False
                if not finished or ctx.stopped:
                    return
                if job.final:
                    ctx.stopped = True
                    await self.send_json(
                        {"type": "done", "context_id": ctx.id, "done": True, "status_code": 206}
                    )
                    step = self._chunk_bytes(ctx)
                    stale = synthesize("stale audio", ctx.encoding, ctx.sample_rate)[:step]
                    for _ in range(self.plan.audio_after_done):
                        await self.send_chunk(ctx, stale, job.flush_id)
                    return
                await self.send_json(
                    {
                        "type": "flush_done",
                        "context_id": ctx.id,
                        "done": False,
                        "flush_done": True,
                        "flush_id": job.flush_id,
                        "status_code": 206,
                    }
                )
        except ConnectionClosed:
            return

    async def _speak(self, ctx: _Context, job: _Job) -> bool:
        """Send the job's audio; False if the context or connection stopped meanwhile."""
        plan = self.plan
        self.stats.flushed_texts.append(job.text)
        if self.index < plan.drop_before_audio:
            await self.close(1011, "dropped by fault plan")
            return False
        if plan.first_audio_delay:
            await asyncio.sleep(plan.first_audio_delay)
        audio = synthesize(job.text, ctx.encoding, ctx.sample_rate)
        ctx.current_audio = audio

        def at(pos: int) -> None:
            ctx.current_pos = pos

        async def error() -> bool:
            ctx.stopped = True
            await self.send_error(
                ctx.id, "synthesis failed (fault plan)", status=500, title="Internal error"
            )
            return True

        async def send(chunk: bytes) -> None:
            await self.send_chunk(ctx, chunk, job.flush_id)

        malformed = (
            "{this is not json",
            json.dumps({"type": "something_new", "context_id": ctx.id}),
        )
        if not await self.stream_audio(
            audio,
            self._chunk_bytes(ctx),
            send,
            stopped=lambda: ctx.stopped,
            error=error,
            malformed=malformed,
            at=at,
        ):
            return False
        ctx.current_audio = b""
        seconds = len(audio) / ctx.width / ctx.sample_rate
        if ctx.timestamps and job.text.strip():
            await self._send_timestamps(ctx, job, seconds)
        ctx.audio_seconds += seconds
        return True

    async def _send_timestamps(self, ctx: _Context, job: _Job, seconds: float) -> None:
        """Word timings of a job, spread evenly over its audio, in seconds from the start
        of the context's audio (as the service counts them, across flushes)."""
        words = job.text.split()
        each = seconds / max(1, len(words))
        base = ctx.audio_seconds
        await self.send_json(
            {
                "type": "timestamps",
                "context_id": ctx.id,
                "done": False,
                "status_code": 206,
                "flush_id": job.flush_id,
                "word_timestamps": {
                    "words": words,
                    "start": [round(base + i * each, 3) for i in range(len(words))],
                    "end": [round(base + (i + 1) * each, 3) for i in range(len(words))],
                },
            }
        )
