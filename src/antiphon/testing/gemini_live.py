"""A fake Gemini Live server (``BidiGenerateContent``) for tests and demos.

It takes the key from ``x-goog-api-key`` (or ``?key=``), waits for ``setup`` and answers
``setupComplete``, answers a ``clientContent`` turn (``turnComplete: true``) with
``serverContent``: ``modelTurn`` parts of inline 24 kHz PCM16
(:func:`~antiphon.testing.synth.tone_for_text` of the reply) interleaved with
``outputTranscription``, then ``generationComplete`` and ``turnComplete`` with
``usageMetadata``. An energy VAD on ``realtimeInput.audio`` (16 kHz) ends the user's turn
after 500 ms of silence (``inputTranscription`` with a canned transcript, then the answer)
and interrupts an answer when the user speaks (``interrupted``). A user text with a
trigger word makes a ``toolCall`` when the setup declared that tool; ``toolResponse``
continues the turn. A wrong key closes with 1007, as the documentation describes.
With ``sessionResumption`` in the setup it sends a ``sessionResumptionUpdate`` (a new
resumable handle) after ``setupComplete`` and after every ``turnComplete``; a setup that
carries a handle it issued continues that conversation (an unknown handle: close 1007).
``go_away_after``: that many seconds after each connection opens it sends ``goAway``
(``timeLeft``: ``go_away_notice`` seconds) and closes 1001 when the time is up.

Fault plan fields that apply: ``hang_connect``, ``reject_status``, ``close_on_open``,
``silent_after``, ``close_mid_audio``/``close_after_chunks``, ``error_mid_stream`` (Gemini
has no error message: the server closes 1011), ``malformed_mid_stream``,
``audio_after_done``, ``first_audio_delay``, ``chunk_interval``, ``odd_chunking``,
``drop_before_audio``, ``idle_close_after``, ``max_connection_age`` (``goAway``, then close
1001). Every message it emits
validates against ``google.genai.types.LiveServerMessage`` (tests/test_sdk_gemini_live.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from antiphon.protocols import gemini_live as gl
from antiphon.protocols.realtime import SAY_PREFIX
from antiphon.testing.faults import FaultPlan
from antiphon.testing.realtime import VAD_THRESHOLD, default_reply
from antiphon.testing.server import FakeWsServer, WsConnection
from antiphon.testing.synth import tone_for_text

__all__ = ["DEFAULT_API_KEY", "FakeGeminiLiveServer", "GeminiLiveFakeStats", "proto_json_names"]

DEFAULT_API_KEY = "test-key"
USAGE = {"promptTokenCount": 10, "responseTokenCount": 20, "totalTokenCount": 30}
#: Values that are the user's own JSON (tool arguments, results, schemas): kept as is.
_OPAQUE = frozenset({"args", "response", "parameters", "parametersJsonSchema"})


def proto_json_names(value: Any) -> Any:
    """Field names as the service reads them: proto JSON accepts ``snake_case`` as well as
    ``lowerCamelCase`` (the SDK's ``send_client_content`` sends ``client_content``)."""
    if isinstance(value, list):
        return [proto_json_names(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        head, *rest = str(k).split("_")
        name = head + "".join(w[:1].upper() + w[1:] for w in rest)
        out[name] = v if name in _OPAQUE else proto_json_names(v)
    return out


@dataclass
class GeminiLiveFakeStats:
    """What the fake saw and did."""

    connections: int = 0
    open_connections: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Every client message (audio chunks recorded without their data)."""
    sent: list[dict[str, Any]] = field(default_factory=list)
    """Every message the fake sent (for the SDK witness)."""
    session_updates: int = 0  # setups, named as in the OpenAI fake for the conformance suite
    sessions: list[dict[str, Any]] = field(default_factory=list)
    turns: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """(connection index, turn) of every ``clientContent`` turn."""
    tool_responses: list[dict[str, Any]] = field(default_factory=list)
    responses: int = 0
    interruptions: int = 0
    audio_in: bytearray = field(default_factory=bytearray)
    replies: list[str] = field(default_factory=list)
    closes_sent: list[int] = field(default_factory=list)
    go_aways: int = 0
    handles: list[str] = field(default_factory=list)
    """Every resumption handle issued, in order."""
    resumed: list[tuple[int, str]] = field(default_factory=list)
    """(connection index, handle) of every setup that resumed a session."""


class FakeGeminiLiveServer(FakeWsServer):
    """A loopback Gemini Live server (see the module docstring)."""

    stats: GeminiLiveFakeStats

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        api_key: str = DEFAULT_API_KEY,
        transcripts: tuple[str, ...] = ("hello there",),
        reply: Callable[[str], str] = default_reply,
        tool_triggers: Mapping[str, tuple[str, str]] | None = None,
        chunk_ms: float = 40.0,
        go_away_after: float | None = None,
        go_away_notice: float = 2.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(plan, host=host, port=port)
        self.api_key = api_key
        self.go_away_after = go_away_after
        self.go_away_notice = go_away_notice
        self.sessions_by_handle: dict[str, list[dict[str, Any]]] = {}
        self.transcripts = transcripts
        self.reply = reply
        self.tool_triggers = dict(
            tool_triggers if tool_triggers is not None else {"weather": ("get_weather", "")}
        )
        self.chunk_ms = chunk_ms
        self.stats = GeminiLiveFakeStats()
        self._n = 0
        self._conns: set[_Conn] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def expected_reply(self, user_text: str) -> str:
        return self.reply(user_text)

    def next_id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != gl.PATH:
            return connection.respond(404, f"unknown path {parts.path}; use {gl.PATH}\n")
        self.count_connection(connection)
        return None

    def key_ok(self, request: Request | None) -> bool:
        if request is None:
            return False
        q = {k: v[-1] for k, v in parse_qs(urlsplit(request.path).query).items()}
        return request.headers.get("x-goog-api-key", q.get("key", "")) == self.api_key

    async def handle(self, ws: ServerConnection) -> None:
        self._loop = asyncio.get_running_loop()
        conn = _Conn(self, ws, self.take_index(ws))
        self._conns.add(conn)
        try:
            await self.run(conn)
        finally:
            self._conns.discard(conn)

    def kick(self, code: int = 1011, reason: str = "kicked by the test") -> None:
        """Close every open connection (thread-safe: call it from the test's thread)."""
        loop = self._loop
        if loop is None:
            return

        def go() -> None:
            for c in list(self._conns):
                loop.create_task(c.close(code, reason))

        loop.call_soon_threadsafe(go)


class _Conn(WsConnection):
    AGE_CLOSE = (1001, "session duration limit")

    def __init__(self, server: FakeGeminiLiveServer, ws: ServerConnection, index: int) -> None:
        super().__init__(server, ws, index=index)
        self.server = server
        self.stats = server.stats
        self.setup: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.response: asyncio.Task[None] | None = None
        self.turn = 0
        self.vad_buf = bytearray()
        self.in_speech = False
        self.silence_ms = 0.0

    async def send(self, msg: dict[str, Any]) -> None:
        self.stats.sent.append(msg)
        await self.ws.send(json.dumps(msg))

    async def close(self, code: int, reason: str = "", *, drain: bool | None = None) -> None:
        """As the service does at its session limit, a ``goAway`` precedes the age close."""
        if (code, reason) == self.AGE_CLOSE and not self.closed:
            with contextlib.suppress(ConnectionClosed):
                await self.send({"goAway": {"timeLeft": "0s"}})
        await super().close(code, reason, drain=drain)

    async def on_open(self) -> None:
        if not self.server.key_ok(self.ws.request):
            await self.close(1007, "API key not valid. Please pass a valid API key.")
            return
        if self.server.go_away_after is not None:
            self.spawn(self._go_away(self.server.go_away_after, self.server.go_away_notice))

    async def _go_away(self, after: float, notice: float) -> None:
        await asyncio.sleep(after)
        with contextlib.suppress(ConnectionClosed):
            await self.send({"goAway": {"timeLeft": f"{notice:g}s"}})
            self.stats.go_aways += 1
            await asyncio.sleep(notice)
            await WsConnection.close(self, 1001, "the connection's time is up")

    async def _resumption_update(self) -> None:
        """A new resumable handle for the conversation so far (if the setup asked)."""
        if not isinstance((self.setup or {}).get("sessionResumption"), dict):
            return
        handle = self.server.next_id("handle")
        self.server.sessions_by_handle[handle] = list(self.history)
        self.stats.handles.append(handle)
        await self.send({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})

    def busy(self) -> bool:
        return self.response is not None and not self.response.done()

    def record(self, msg: dict[str, Any]) -> None:
        rt_in = msg.get("realtimeInput")
        if isinstance(rt_in, dict) and "audio" in rt_in:
            self.stats.messages.append({"realtimeInput": {"audio": {}}})
        else:
            self.stats.messages.append(msg)

    async def on_message(self, msg: dict[str, Any]) -> bool:
        msg = proto_json_names(msg)
        if self.setup is None:
            if not isinstance(msg.get("setup"), dict):
                await self.close(1007, "the first message must be setup")
                return False
            self.setup = msg["setup"]
            self.stats.session_updates += 1
            self.stats.sessions.append(msg["setup"])
            handle = (self.setup.get("sessionResumption") or {}).get("handle")
            if handle:
                if handle not in self.server.sessions_by_handle:
                    await self.close(1007, "invalid session resumption handle")
                    return False
                self.history = list(self.server.sessions_by_handle[handle])
                self.stats.resumed.append((self.index, handle))
            await self.send({"setupComplete": {}})
            await self._resumption_update()
            return True
        if isinstance(msg.get("clientContent"), dict):
            cc = msg["clientContent"]
            for t in cc.get("turns") or []:
                self.stats.turns.append((self.index, t))
                self.history.append(t)
            if cc.get("turnComplete"):
                await self._interrupt()
                self._start(self._plan())
        elif isinstance(msg.get("toolResponse"), dict):
            for fr in msg["toolResponse"].get("functionResponses") or []:
                self.stats.tool_responses.append(fr)
                out = json.dumps(fr.get("response"), separators=(",", ":"))
                self._start((f"The tool says {out}", None))
        elif isinstance(msg.get("realtimeInput"), dict):
            ri = msg["realtimeInput"]
            audio = ri.get("audio")
            manual = self._manual
            if "activityStart" in ri:
                await self._interrupt()
            if isinstance(audio, dict):
                pcm = base64.b64decode(str(audio.get("data", "")))
                self.stats.audio_in.extend(pcm)
                if not manual:
                    await self._vad(pcm)
            if "activityEnd" in ri:
                await self._user_turn()
        else:
            await self.close(1007, f"unknown client message {sorted(msg)}")
            return False
        return True

    # -- VAD (16 kHz)
    async def _vad(self, pcm: bytes) -> None:
        self.vad_buf.extend(pcm)
        window = int(gl.INPUT_RATE * 0.02) * 2
        while len(self.vad_buf) >= window:
            chunk = np.frombuffer(bytes(self.vad_buf[:window]), dtype="<i2").astype(np.float64)
            del self.vad_buf[:window]
            loud = float(np.sqrt(np.mean(chunk * chunk))) > VAD_THRESHOLD
            if loud and not self.in_speech:
                self.in_speech, self.silence_ms = True, 0.0
                await self._interrupt()
            elif self.in_speech:
                self.silence_ms = 0.0 if loud else self.silence_ms + 20.0
                if self.silence_ms >= 500:
                    self.in_speech = False
                    await self._user_turn()

    @property
    def _manual(self) -> bool:
        """The setup turned automatic activity detection off."""
        cfg = (self.setup or {}).get("realtimeInputConfig") or {}
        return bool((cfg.get("automaticActivityDetection") or {}).get("disabled"))

    async def _user_turn(self) -> None:
        heard = self.server.transcripts[min(self.turn, len(self.server.transcripts) - 1)]
        self.turn += 1
        self.history.append({"role": "user", "parts": [{"text": heard}]})
        await self.send({"serverContent": {"inputTranscription": {"text": heard}}})
        self._start(self._plan())

    async def _interrupt(self) -> None:
        task = self.response
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await task
        self.stats.interruptions += 1
        await self.send({"serverContent": {"interrupted": True}})

    # -- answers
    def _last_user_text(self) -> str:
        for t in reversed(self.history):
            if t.get("role") == "user":
                return "".join(str(p.get("text", "")) for p in t.get("parts") or [])
        return ""

    def _plan(self) -> tuple[str, tuple[str, str] | None]:
        text = self._last_user_text()
        if text.startswith(SAY_PREFIX):
            return text[len(SAY_PREFIX) :], None
        assert self.setup is not None
        tools = {
            d.get("name")
            for t in self.setup.get("tools") or []
            for d in t.get("functionDeclarations") or []
        }
        for trigger, (name, args) in self.server.tool_triggers.items():
            if trigger in text.lower() and name in tools:
                return "", (name, args or json.dumps({"query": text}))
        return self.server.reply(text), None

    def _start(self, planned: tuple[str, tuple[str, str] | None]) -> None:
        self.stats.responses += 1
        self.response = self.spawn(self._respond(*planned))

    async def _respond(self, text: str, call: tuple[str, str] | None) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._respond_inner(text, call)

    async def _respond_inner(self, text: str, call: tuple[str, str] | None) -> None:
        plan = self.plan
        if call is not None:
            name, args = call
            fc = {"id": self.server.next_id("call"), "name": name, "args": json.loads(args)}
            await self.send({"toolCall": {"functionCalls": [fc]}})
            return
        self.stats.replies.append(text)
        if self.index < plan.drop_before_audio:
            await self.close(1011, "dropped by fault plan")
            return
        if plan.first_audio_delay:
            await asyncio.sleep(plan.first_audio_delay)
        audio = tone_for_text(text, gl.OUTPUT_RATE)
        step = max(2, round(self.server.chunk_ms / 1000 * gl.OUTPUT_RATE) * 2)
        if plan.odd_chunking:
            step += 1
        words = text.split(" ")
        n = len(range(0, len(audio), step))
        said = sent = 0

        async def error() -> bool:
            await self.close(1011, "Internal error encountered.")
            return True

        async def malformed() -> None:
            await self.ws.send("{this is not json")
            await self.ws.send(json.dumps({"somethingNew": {"value": 1}}))

        async def send(chunk: bytes) -> None:
            nonlocal said, sent
            sent += 1
            content: dict[str, Any] = {"modelTurn": {"parts": [self._audio_part(chunk)]}}
            upto = round(sent * len(words) / n)
            if upto > said:
                delta = (" " if said else "") + " ".join(words[said:upto])
                content["outputTranscription"] = {"text": delta}
                said = upto
            await self.send({"serverContent": content})
            self.chunks_sent += 1

        if not await self.stream_audio(
            audio, step, send, error=error, malformed=malformed, per_answer=True
        ):
            return
        self.history.append({"role": "model", "parts": [{"text": text}]})
        await self.send({"serverContent": {"generationComplete": True}})
        await self.send({"serverContent": {"turnComplete": True}, "usageMetadata": USAGE})
        await self._resumption_update()
        for _ in range(plan.audio_after_done):
            stale = tone_for_text("stale audio", gl.OUTPUT_RATE)[:step]
            await self.send({"serverContent": {"modelTurn": {"parts": [self._audio_part(stale)]}}})

    @staticmethod
    def _audio_part(pcm: bytes) -> dict[str, Any]:
        data = base64.b64encode(pcm).decode()
        return {"inlineData": {"mimeType": f"audio/pcm;rate={gl.OUTPUT_RATE}", "data": data}}
