"""A fake ElevenLabs multi-context TTS server (``/multi-stream-input``) for tests and demos.

It speaks the real wire protocol on loopback: checks the path, the query parameters and
the ``xi-api-key`` header (or a key in a context's first message; a wrong key closes the
connection with 1008), keeps up to five contexts per connection, speaks the text of each
flush as base64 audio tagged with the context id, answers ``close_context`` with
``isFinal`` once the flushed audio is out, and closes idle connections with 1008 after
``inactivity_timeout`` (default 20 s) like the service.

Audio is :func:`antiphon.testing.synth.tone_for_text` of the flushed text with its
whitespace collapsed (the server joins text pieces; clients add trailing spaces), so a
test computes the exact bytes with :func:`synthesize`.

How the :class:`FaultPlan` maps onto this protocol — every field applies:

- ``hang_connect``/``reject_status``: the upgrade hangs / is answered with that status.
- ``close_on_open``: close with that code and ``close_on_open_reason`` right after the
  upgrade.
- ``silent_after``: client messages after the first N are read and ignored.
- ``close_mid_audio``/``close_after_chunks``/``close_reason``: close (or drop TCP for
  ``ABORT``) once the connection has sent that many audio chunks.
- ``drop_before_audio``: the first N connections close with 1011 when their first flush
  starts to be spoken.
- ``error_mid_stream``: an ``{"error": ..., "message": ...}`` message for the context
  after ``close_after_chunks`` chunks of an answer; that context then stops.
- ``malformed_mid_stream``: invalid JSON and an unknown message in the middle of audio.
- ``audio_after_done``: that many audio chunks of the context right after its ``isFinal``.
- ``audio_after_clear``/``ignore_clear``: a *cancel* is a ``close_context`` that does not
  directly follow a flush of that context (``end_input`` sends flush then close; a cancel
  sends ``close_context`` on its own or a second time). On a cancel the context sends this
  many more chunks of its audio, then ``isFinal``; with ``ignore_clear`` it keeps speaking
  everything and never sends ``isFinal``.
- ``first_audio_delay``/``chunk_interval``/``odd_chunking``: timing and odd byte cuts.
- ``idle_close_after``: replaces ``inactivity_timeout`` for the idle close (1008).
- ``max_connection_age``: close with 1011 once the connection is that old.

Behaviour the documentation leaves open is marked *[fake]* in ``docs/elevenlabs-tts.md``.

How it is built: what the service checks and says (the query, its messages, the audio
and alignment of a flush) is :mod:`antiphon.testing.elevenlabs_wire`, pure and
re-exported here; this module is the server (the upgrade check) and the connection
(contexts, each speaking its flushes on a task of its own).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from antiphon.errors import ConfigError
from antiphon.protocols import elevenlabs_tts as el
from antiphon.testing.elevenlabs_wire import (
    CHUNK_SECONDS,
    DEFAULT_API_KEY,
    MAX_CONTEXTS_MESSAGE,
    PATH,
    VOICE_SETTINGS_MESSAGE,
    alignment,
    char_times,
    check_query,
    inactivity_message,
    normalize_text,
    synthesize,
)
from antiphon.testing.faults import FaultPlan
from antiphon.testing.server import BINARY, INVALID_JSON, FakeWsServer, WsConnection

__all__ = [
    "CHUNK_SECONDS",
    "DEFAULT_API_KEY",
    "MAX_CONTEXTS_MESSAGE",
    "VOICE_SETTINGS_MESSAGE",
    "ElevenLabsFakeStats",
    "FakeElevenLabsTTS",
    "inactivity_message",
    "normalize_text",
    "synthesize",
]


@dataclass
class ElevenLabsFakeStats:
    """What the fake saw and did (read it from the test after the fact)."""

    connections: int = 0
    open_connections: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    flushed_texts: list[str] = field(default_factory=list)
    """Normalised text of every answer spoken (or started)."""
    contexts_opened: int = 0
    context_closes: int = 0
    cancels: int = 0
    """``close_context`` messages that did not directly follow a flush of the context."""
    keepalives: int = 0
    unterminated_texts: int = 0
    """Non-empty text messages that did not end with a space (clients should add one)."""
    max_open_contexts: int = 0
    finals_sent: int = 0
    audio_bytes: int = 0
    audio_chunks: int = 0
    errors_sent: list[str] = field(default_factory=list)
    closes_sent: list[int] = field(default_factory=list)
    audio_send_times: list[int] = field(default_factory=list)
    """``time.perf_counter_ns()`` just before each audio chunk was sent (if recording)."""
    record_send_times: bool = False

    def count(self, key: str) -> int:
        """Client messages in which ``key`` is present and truthy (``flush``, ...)."""
        return sum(1 for m in self.messages if m.get(key))


class FakeElevenLabsTTS(FakeWsServer):
    """``ws://127.0.0.1:PORT/v1/text-to-speech/{voice}/multi-stream-input``.

    Its messages are the SDK's ``ReceiveMessageMulti``: audio (``AudioOutputMulti``) and
    the end of a context (``FinalOutputMulti``, ``isFinal`` without audio) apart, the
    context named ``contextId``.
    """

    stats: ElevenLabsFakeStats

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
        self.stats = ElevenLabsFakeStats()

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if not PATH.match(parts.path):
            return connection.respond(404, f"unknown path {parts.path}; use {el.PATH_TEMPLATE}\n")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            check_query(query)
        except ConfigError as exc:
            return connection.respond(400, f"{exc}\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.stats.connections += 1
        parts = urlsplit(ws.request.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        encoding, rate = check_query(query)
        match = PATH.match(parts.path)
        assert match is not None
        conn = _Conn(
            self,
            ws,
            index=self.stats.connections - 1,
            voice=unquote(match.group(1)),
            encoding=encoding,
            sample_rate=rate,
            inactivity=float(query.get("inactivity_timeout", el.DEFAULT_INACTIVITY_TIMEOUT)),
            authenticated=ws.request.headers.get("xi-api-key") == self.api_key,
        )
        await self.run(conn)


class _Context:
    """Server-side state of one context."""

    def __init__(self, context_id: str, voice_settings: object) -> None:
        self.id = context_id
        self.voice_settings = voice_settings
        self.buffer: list[str] = []
        self.jobs: deque[str] = deque()
        self.state = "open"  # open | closing | cancelled | done
        self.last_was_flush = False
        self.speaking = False
        self.stop_after = 0  # chunks still sent after a cancel
        self.no_final = False  # a cancel that is ignored, or an error: never isFinal
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class _Conn(WsConnection):
    """One client connection of the fake."""

    AGE_CLOSE = (1011, "maximum connection duration reached")

    def __init__(
        self,
        server: FakeElevenLabsTTS,
        ws: ServerConnection,
        *,
        index: int,
        voice: str,
        encoding: str,
        sample_rate: int,
        inactivity: float,
        authenticated: bool,
    ) -> None:
        super().__init__(server, ws, index=index)
        self.server = server
        self.stats = server.stats
        self.voice = voice
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.width = 2 if encoding == "linear16" else 1
        self.inactivity = (
            self.plan.idle_close_after if self.plan.idle_close_after is not None else inactivity
        )
        self.authenticated = authenticated
        self.spoken = 0  # answers started on this connection
        self.contexts: dict[str, _Context] = {}

    # -- sending
    async def send_json(self, obj: dict[str, Any]) -> None:
        if self.closed:
            raise ConnectionClosed(None, None)
        await self.ws.send(json.dumps(obj))

    async def send_audio(
        self, ctx: _Context, chunk: bytes, alignment: dict[str, Any] | None = None
    ) -> None:
        msg: dict[str, Any] = {
            "audio": base64.b64encode(chunk).decode("ascii"),
            "normalizedAlignment": alignment,
            "alignment": alignment,
            "contextId": ctx.id,
        }
        if self.stats.record_send_times:
            self.stats.audio_send_times.append(time.perf_counter_ns())
        await self.send_json(msg)
        self.chunks_sent += 1
        self.stats.audio_chunks += 1
        self.stats.audio_bytes += len(chunk)

    async def send_final(self, ctx: _Context) -> None:
        ctx.state = "done"
        await self.send_json({"isFinal": True, "contextId": ctx.id})
        self.stats.finals_sent += 1
        step = self.chunk_bytes()
        for _ in range(self.plan.audio_after_done):
            await self.send_audio(
                ctx, synthesize("stale audio", self.encoding, self.sample_rate)[:step]
            )

    def chunk_bytes(self) -> int:
        n = round(CHUNK_SECONDS * self.sample_rate) * self.width
        return n + 1 if self.plan.odd_chunking and self.width == 2 else n

    # -- the connection
    def busy(self) -> bool:
        return any(c.speaking or c.jobs for c in self.contexts.values())

    def idle_limit(self) -> float | None:
        return self.inactivity

    def idle_close(self) -> tuple[int, str]:
        return (1008, inactivity_message(self.inactivity))

    async def refuse(self, problem: str) -> bool:
        what = {BINARY: "JSON text", INVALID_JSON: "JSON"}.get(problem, "a JSON object")
        await self.close(1008, f"Invalid message: expected {what}")
        return False

    def record(self, msg: dict[str, Any]) -> None:
        self.stats.messages.append(msg)

    async def on_message(self, msg: dict[str, Any]) -> bool:
        if not self.authenticated:
            key = msg.get("xi_api_key", msg.get("xi-api-key"))
            auth = msg.get("authorization")
            if key == self.server.api_key or auth == f"Bearer {self.server.api_key}":
                self.authenticated = True
            else:
                await self.close(1008, "Invalid API key")
                return False
        return await self._handle(msg)

    async def _handle(self, msg: dict[str, Any]) -> bool:
        """Act on one client message; False when the connection was closed."""
        if msg.get("close_socket") is True:
            for c in list(self.contexts.values()):
                if c.state == "open":
                    await self._close_context(c.id)
            tasks = [c.task for c in self.contexts.values() if c.task is not None]
            if tasks:
                await asyncio.wait(tasks, timeout=5.0)
            await self.close(1000, "")
            return False
        raw_id = msg.get("context_id", msg.get("contextId"))
        context_id = raw_id if isinstance(raw_id, str) and raw_id else "default"
        if msg.get("close_context") is True:
            await self._close_context(context_id)
            return True
        ctx = self.contexts.get(context_id)
        if ctx is None or ctx.state == "done":
            open_now = sum(1 for c in self.contexts.values() if c.state == "open")
            if open_now >= el.MAX_CONTEXTS:
                self.stats.errors_sent.append("max_active_conversations")
                await self.send_json(
                    {
                        "message": MAX_CONTEXTS_MESSAGE,
                        "error": "max_active_conversations",
                        "code": 1008,
                    }
                )
                await self.close(1008, "max_active_conversations: too many simultaneous contexts")
                return False
            ctx = _Context(context_id, msg.get("voice_settings"))
            self.contexts[context_id] = ctx
            self.stats.contexts_opened += 1
            self.stats.max_open_contexts = max(self.stats.max_open_contexts, open_now + 1)
            ctx.task = self.spawn(self._context_loop(ctx))
        elif "voice_settings" in msg and msg["voice_settings"] != ctx.voice_settings:
            await self.close(1008, VOICE_SETTINGS_MESSAGE)
            return False
        if ctx.state != "open":
            return True  # text for a closing context is ignored
        text = msg.get("text")
        flush = msg.get("flush") is True
        if isinstance(text, str) and text:
            if not text.endswith(" "):
                self.stats.unterminated_texts += 1
            ctx.buffer.append(text)
        elif text == "" and not flush:
            self.stats.keepalives += 1
            return True
        if flush:
            job = "".join(ctx.buffer)
            ctx.buffer.clear()
            if job.strip():
                ctx.jobs.append(job)
                ctx.wake.set()
            ctx.last_was_flush = True
        elif isinstance(text, str) and text.strip():
            ctx.last_was_flush = False
        return True

    async def _close_context(self, context_id: str) -> None:
        self.stats.context_closes += 1
        ctx = self.contexts.get(context_id)
        graceful = (
            ctx is not None
            and ctx.state == "open"
            and ctx.last_was_flush
            and not "".join(ctx.buffer).strip()
        )
        if ctx is not None and graceful:
            ctx.state = "closing"
            ctx.wake.set()
            return
        self.stats.cancels += 1
        if ctx is None or ctx.state in ("done", "cancelled"):
            return
        ctx.buffer.clear()
        if self.plan.ignore_clear:
            ctx.state = "closing"
            ctx.no_final = True
        else:
            ctx.jobs.clear()
            ctx.state = "cancelled"
            ctx.stop_after = self.plan.audio_after_clear
        ctx.wake.set()

    async def _context_loop(self, ctx: _Context) -> None:
        """Speak a context's flushes in order; ``isFinal`` once it is closed and spoken."""
        try:
            while True:
                if ctx.jobs and ctx.state in ("open", "closing"):
                    job = ctx.jobs.popleft()
                    ctx.speaking = True
                    try:
                        await self._speak(ctx, job)
                    finally:
                        ctx.speaking = False
                    continue
                if ctx.state == "cancelled" or (ctx.state == "closing" and not ctx.jobs):
                    break
                ctx.wake.clear()
                await ctx.wake.wait()
            if not ctx.no_final and not self.closed:
                await self.send_final(ctx)
        except ConnectionClosed:
            return

    async def _speak(self, ctx: _Context, text: str) -> None:
        plan = self.plan
        self.stats.flushed_texts.append(normalize_text(text))
        self.spoken += 1
        if self.index < plan.drop_before_audio and self.spoken == 1:
            await self.close(1011, "dropped by fault plan")
            raise ConnectionClosed(None, None)
        if plan.first_audio_delay:
            await asyncio.sleep(plan.first_audio_delay)
        audio = synthesize(text, self.encoding, self.sample_rate)

        def stopped() -> bool:
            if ctx.state != "cancelled":
                return False
            if ctx.stop_after <= 0:
                return True
            ctx.stop_after -= 1
            return False

        async def error() -> bool:
            self.stats.errors_sent.append("fault_plan")
            await self.send_json(
                {
                    "message": "fault plan: synthesis failed",
                    "error": "internal_error",
                    "code": 1011,
                    "contextId": ctx.id,
                }
            )
            ctx.jobs.clear()
            ctx.no_final = True
            ctx.state = "cancelled"
            ctx.stop_after = 0
            return True

        timings = char_times(normalize_text(text))
        bytes_per_second = self.width * self.sample_rate
        sent = 0

        async def send(chunk: bytes) -> None:
            nonlocal sent
            start, sent = sent / bytes_per_second, sent + len(chunk)
            end = sent / bytes_per_second if sent < len(audio) else float("inf")
            await self.send_audio(ctx, chunk, alignment(timings, start, end))

        malformed = ("{this is not json", json.dumps({"type": "SomethingNew", "value": 1}))
        if (
            not await self.stream_audio(
                audio, self.chunk_bytes(), send, stopped=stopped, error=error, malformed=malformed
            )
            and self.closed
        ):
            raise ConnectionClosed(None, None)
