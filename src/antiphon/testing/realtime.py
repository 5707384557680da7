"""A fake OpenAI Realtime (GA) / Azure Voice Live (beta names) server for tests and demos.

``dialect="ga"``: ``/v1/realtime?model=...`` with ``Authorization: Bearer <key>``.
``dialect="beta"``: ``/voice-live/realtime?api-version=...&model=...`` with an ``api-key``
header (or ``Authorization: Bearer``), speaking the preview event names.

It sends ``session.created``, answers ``session.update`` with ``session.updated``, runs an
energy VAD on the incoming audio (``speech_started``/``speech_stopped`` with
``audio_start_ms``/``audio_end_ms``), "transcribes" a user turn with canned transcripts
(it cannot recognise speech), answers with a transcript and synthetic speech
(:func:`~antiphon.testing.synth.tone_for_text` of the reply, base64 PCM16 deltas),
makes function calls when the user's text contains a trigger, and handles
``conversation.item.truncate`` and ``response.cancel`` (``response.done`` ``cancelled``).

Fault plan fields that apply: ``hang_connect``, ``reject_status``, ``close_on_open``,
``silent_after`` (client messages), ``close_mid_audio``/``close_after_chunks``/
``close_reason`` (mid-response), ``error_mid_stream`` (an ``error`` event, then the
response ends ``failed``), ``malformed_mid_stream``, ``audio_after_done`` (deltas of the
finished response), ``audio_after_clear`` (deltas after ``response.cancel``),
``ignore_clear`` (``response.cancel`` ignored), ``first_audio_delay``, ``chunk_interval``,
``odd_chunking``, ``drop_before_audio`` (close 1011 the first N connections just before
their first audio), ``idle_close_after``, ``max_connection_age``.

Built in two files along the input/output seam of a connection: this one holds the server
(upgrade checks, stats, ids, ``kick``) and :class:`RealtimeConnection`'s input side (session,
client events, VAD, user turns); the responses it sends (and their mid-response faults) are
:class:`~antiphon.testing.realtime_responses.RealtimeResponder`, its base class.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from antiphon.protocols import realtime as rt
from antiphon.testing.faults import FaultPlan
from antiphon.testing.realtime_responses import RealtimeResponder
from antiphon.testing.server import BINARY, INVALID_JSON, FakeWsServer

__all__ = [
    "BETA_PATH",
    "DEFAULT_API_KEY",
    "GA_PATH",
    "VAD_THRESHOLD",
    "FakeRealtimeServer",
    "RealtimeConnection",
    "RealtimeFakeStats",
    "default_reply",
]

DEFAULT_API_KEY = "test-key"
GA_PATH = "/v1/realtime"
BETA_PATH = "/voice-live/realtime"
#: RMS (int16 scale) above which a 20 ms window counts as speech.
VAD_THRESHOLD = 300.0


def default_reply(user_text: str) -> str:
    """What the fake answers to a user turn."""
    return f"You said: {user_text.strip()}"


@dataclass
class RealtimeFakeStats:
    """What the fake saw and did (read it from the test after the fact)."""

    connections: int = 0
    open_connections: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    """The query parameters of every accepted upgrade (``model``, ``api-version``...)."""
    session_updates: int = 0
    sessions: list[dict[str, Any]] = field(default_factory=list)
    """The ``session`` of every ``session.update``, in order."""
    items_created: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """(connection index, item) of every ``conversation.item.create``."""
    truncates: list[tuple[str, int]] = field(default_factory=list)
    """(item_id, audio_end_ms) of every ``conversation.item.truncate``."""
    cancels: int = 0
    responses: int = 0
    audio_in: bytearray = field(default_factory=bytearray)
    audio_out_bytes: int = 0
    replies: list[str] = field(default_factory=list)
    closes_sent: list[int] = field(default_factory=list)

    @property
    def audio_bytes_received(self) -> int:
        return len(self.audio_in)

    def count(self, kind: str) -> int:
        return sum(1 for m in self.messages if m.get("type") == kind)


class FakeRealtimeServer(FakeWsServer):
    """A loopback server of the OpenAI Realtime schema in ``dialect`` ``"ga"`` or ``"beta"``.

    ``transcripts``: what the VAD "hears", turn after turn (the last one repeats).
    ``reply``: the answer to a user text. ``tool_triggers``: a word in the user's text →
    (tool name, JSON arguments); the call is made when the session has that tool.
    ``chunk_ms``: milliseconds of audio per delta.
    """

    stats: RealtimeFakeStats

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        dialect: str = "ga",
        api_key: str = DEFAULT_API_KEY,
        transcripts: tuple[str, ...] = ("hello there",),
        reply: Callable[[str], str] = default_reply,
        tool_triggers: Mapping[str, tuple[str, str]] | None = None,
        chunk_ms: float = 40.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(plan, host=host, port=port)
        if dialect not in ("ga", "beta"):
            raise ValueError("dialect must be 'ga' (OpenAI) or 'beta' (Azure Voice Live)")
        self.dialect = rt.Dialect(dialect)
        self.names = rt.NAMES[self.dialect]
        self.path = GA_PATH if self.dialect is rt.Dialect.GA else BETA_PATH
        self.api_key = api_key
        self.transcripts = transcripts
        self.reply = reply
        self.tool_triggers = dict(
            tool_triggers if tool_triggers is not None else {"weather": ("get_weather", "")}
        )
        self.chunk_ms = chunk_ms
        self.stats = RealtimeFakeStats()
        self._ids = itertools.count(1)
        self._conns: set[RealtimeConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def expected_reply(self, user_text: str) -> str:
        return self.reply(user_text)

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != self.path:
            return connection.respond(404, f"unknown path {parts.path}; use {self.path}\n")
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if "model" not in q:
            return connection.respond(400, "missing query parameter 'model'\n")
        if self.dialect is rt.Dialect.BETA and "api-version" not in q:
            return connection.respond(400, "missing query parameter 'api-version'\n")
        ok = {f"Bearer {self.api_key}"}
        auth = request.headers.get("Authorization", "")
        key = request.headers.get("api-key", "") if self.dialect is rt.Dialect.BETA else ""
        if auth not in ok and key != self.api_key:
            return connection.respond(401, "invalid credentials\n")
        if self.dialect is rt.Dialect.GA and request.headers.get("OpenAI-Beta"):
            return connection.respond(400, "the OpenAI-Beta header is not accepted in GA\n")
        self.count_connection(connection)
        self.stats.queries.append(q)
        return None

    async def handle(self, ws: ServerConnection) -> None:
        self._loop = asyncio.get_running_loop()
        conn = self.connection(ws, self.take_index(ws))
        self._conns.add(conn)
        try:
            await self.run(conn)
        finally:
            self._conns.discard(conn)

    def connection(self, ws: ServerConnection, index: int) -> RealtimeConnection:
        """The object that serves one client connection (a dialect's fake overrides it)."""
        return RealtimeConnection(self, ws, index)

    def kick(self, code: int = 1011, reason: str = "kicked by the test") -> None:
        """Close every open connection (thread-safe: call it from the test's thread)."""
        loop = self._loop
        if loop is None:
            return

        def go() -> None:
            for c in list(self._conns):
                loop.create_task(c.close(code, reason))

        loop.call_soon_threadsafe(go)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"


class RealtimeConnection(RealtimeResponder):
    """One client connection of the fake (the xAI fake subclasses it)."""

    AGE_CLOSE = (1001, "maximum session duration")

    def __init__(self, server: FakeRealtimeServer, ws: ServerConnection, index: int) -> None:
        super().__init__(server, ws, index=index)
        self.server = server
        self.stats = server.stats
        self.names = server.names
        self.ga = server.dialect is rt.Dialect.GA
        self.session: dict[str, Any] = (
            {
                "type": "realtime",
                "object": "realtime.session",
                "id": server.next_id("sess"),
                "model": "gpt-realtime",
                "output_modalities": ["audio"],
                "expires_at": 0,
            }
            if self.ga
            else {"id": server.next_id("sess")}
        )
        self.conversation: list[dict[str, Any]] = []
        self.response: asyncio.Task[None] | None = None
        self.response_id = ""
        self.cancelled = False
        self.audio_sent_ms: dict[str, float] = {}
        self.turn = 0
        # VAD
        self.vad_buf = bytearray()
        self.audio_ms = 0.0
        self.in_speech = False
        self.speech_start = 0.0
        self.silence_ms = 0.0
        self.user_item = ""
        self._current_item = ""

    # -- helpers
    @property
    def input_rate(self) -> int:
        if self.ga:
            fmt = self.session.get("audio", {}).get("input", {}).get("format", {})
            return int(fmt.get("rate", 24000))
        return int(self.session.get("input_audio_sampling_rate", 24000))

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        td = (
            self.session.get("audio", {}).get("input", {}).get("turn_detection", {"type": "x"})
            if self.ga
            else self.session.get("turn_detection", {"type": "x"})
        )
        return td if isinstance(td, dict) else None

    # -- serving
    async def on_open(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.send({"type": "session.created", "session": dict(self.session)})

    def busy(self) -> bool:
        return self.response is not None and not self.response.done()

    async def refuse(self, problem: str) -> bool:
        if problem == BINARY:
            await self._error("invalid_request_error", "binary_not_supported", "")
        elif problem == INVALID_JSON:
            await self._error("invalid_request_error", "invalid_json", "invalid JSON")
        return True

    def record(self, msg: dict[str, Any]) -> None:
        self.stats.messages.append(
            msg if msg.get("type") != "input_audio_buffer.append" else {"type": msg["type"]}
        )

    async def on_message(self, msg: dict[str, Any]) -> bool:
        await self._dispatch(msg)
        return True

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "session.update":
            session = msg.get("session")
            if not isinstance(session, dict):
                await self._error("invalid_request_error", "missing_session", "no session")
                return
            if self.ga and session.get("type") != "realtime":
                await self._error("invalid_request_error", "invalid_type", "session.type?")
                return
            self.stats.session_updates += 1
            self.stats.sessions.append(session)
            self.session.update(session)
            await self.send({"type": "session.updated", "session": dict(self.session)})
        elif kind == "input_audio_buffer.append":
            try:
                pcm = base64.b64decode(msg.get("audio", ""), validate=True)
            except ValueError:
                await self._error("invalid_request_error", "invalid_audio", "not base64")
                return
            self.stats.audio_in.extend(pcm)
            await self._vad(pcm)
        elif kind == "input_audio_buffer.commit":
            await self._commit_user_turn(self.audio_ms, vad=False)
        elif kind == "input_audio_buffer.clear":
            self.vad_buf.clear()
            await self.send({"type": "input_audio_buffer.cleared"})
        elif kind == "conversation.item.create":
            item = dict(msg.get("item") or {})
            item.setdefault("id", self.server.next_id("item"))
            self.stats.items_created.append((self.index, item))
            self.conversation.append(item)
            await self._item_added(item)
        elif kind == "response.create":
            if self.response is not None and not self.response.done():
                await self._error(
                    "invalid_request_error",
                    "conversation_already_has_active_response",
                    "Conversation already has an active response",
                )
                return
            instructions = (msg.get("response") or {}).get("instructions")
            self._start_response(instructions if isinstance(instructions, str) else None)
        elif kind == "response.cancel":
            await self._cancel("client_cancelled")
        elif kind == "conversation.item.truncate":
            item_id, end = str(msg.get("item_id")), int(msg.get("audio_end_ms", -1))
            sent = self.audio_sent_ms.get(item_id)
            if sent is None or end < 0 or end > sent + 1:
                await self._error(
                    "invalid_request_error",
                    "invalid_value",
                    f"audio_end_ms {end} is beyond the audio of {item_id}",
                    "audio_end_ms",
                )
                return
            self.stats.truncates.append((item_id, end))
            await self.send(
                {
                    "type": "conversation.item.truncated",
                    "item_id": item_id,
                    "content_index": int(msg.get("content_index", 0)),
                    "audio_end_ms": end,
                }
            )
        else:
            await self._error("invalid_request_error", "unknown_event", f"unknown {kind!r}")

    async def _item_added(self, item: dict[str, Any]) -> None:
        item = {**item, "object": "realtime.item"}
        if self.ga or item.get("type") != "function_call_output":
            item["status"] = "completed"  # Voice Live's function_call_output has no status
        if self.ga:
            await self.send({"type": "conversation.item.added", "item": item})
            await self.send({"type": "conversation.item.done", "item": item})
        else:
            await self.send({"type": "conversation.item.created", "item": item})

    # -- VAD
    async def _vad(self, pcm: bytes) -> None:
        if self.turn_detection is None:
            self.vad_buf.extend(pcm)
            self.audio_ms += len(pcm) / 2 / self.input_rate * 1000
            return
        td = self.turn_detection
        silence_needed = float(td.get("silence_duration_ms", 500))
        self.vad_buf.extend(pcm)
        window = int(self.input_rate * 0.02) * 2
        while len(self.vad_buf) >= window:
            chunk = np.frombuffer(bytes(self.vad_buf[:window]), dtype="<i2").astype(np.float64)
            del self.vad_buf[:window]
            start_ms = self.audio_ms
            self.audio_ms += 20.0
            loud = float(np.sqrt(np.mean(chunk * chunk))) > VAD_THRESHOLD
            if loud and not self.in_speech:
                self.in_speech = True
                self.speech_start = start_ms
                self.silence_ms = 0.0
                self.user_item = self.server.next_id("item")
                await self.send(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": int(start_ms),
                        "item_id": self.user_item,
                    }
                )
                if td.get("interrupt_response", True):
                    await self._cancel("turn_detected", quiet=True)
            elif self.in_speech:
                self.silence_ms = 0.0 if loud else self.silence_ms + 20.0
                if self.silence_ms >= silence_needed:
                    self.in_speech = False
                    end = self.audio_ms - self.silence_ms
                    await self.send(
                        {
                            "type": "input_audio_buffer.speech_stopped",
                            "audio_end_ms": int(end),
                            "item_id": self.user_item,
                        }
                    )
                    await self._commit_user_turn(end, vad=True)

    async def _commit_user_turn(self, end_ms: float, *, vad: bool) -> None:
        item_id = self.user_item if vad else self.server.next_id("item")
        transcript = self.server.transcripts[min(self.turn, len(self.server.transcripts) - 1)]
        self.turn += 1
        await self.send({"type": "input_audio_buffer.committed", "item_id": item_id})
        item = {
            "id": item_id,
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self.conversation.append(
            {"id": item_id, "type": "message", "role": "user", "_heard": transcript}
        )
        await self._item_added(item)
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
                **self._transcription_usage(end_ms - self.speech_start if vad else end_ms),
            }
        )
        td = self.turn_detection
        idle = self.response is None or self.response.done()
        if vad and td is not None and td.get("create_response", True) and idle:
            self._start_response(None)

    def _transcription_usage(self, ms: float) -> dict[str, Any]:
        """GA bills transcription by duration (whisper-1: ``{type: duration, seconds}``);
        the Voice Live preview sends no usage."""
        if not self.ga:
            return {}
        return {"usage": {"type": "duration", "seconds": round(max(ms, 0.0) / 1000, 3)}}
