"""A fake AssemblyAI Universal-Streaming server (``/v3/ws``) for tests and offline demos.

It speaks the v3 wire protocol on loopback: checks the path, the ``Authorization`` key
(or a ``token`` query parameter) and the query (``sample_rate``, ``encoding``,
``speech_model``, ``format_turns``, ``keyterms_prompt`` as a JSON list, the turn
thresholds); answers the upgrade with ``Begin``; takes binary audio (50 to 1000 ms per
message, else it closes with 3007 as the service does), ``ForceEndpoint``,
``UpdateConfiguration``, ``KeepAlive`` and ``Terminate``; sends ``Turn`` messages —
partials with the words so far (``word_is_final`` false on the last), the end of the
turn unformatted and then, with ``format_turns``, formatted — and on ``Terminate`` the
last turn, ``Termination`` and a 1000 close. Every message it sends is in
:attr:`FakeAssemblyAISTT.sent` for witness tests.

Recognition is that of the Deepgram fake (:mod:`antiphon.testing.deepgram_stt`): test
speech is :func:`antiphon.testing.synth.tone_for_text`; voiced runs are found by energy
and named by pitch from the ``vocabulary``. Turn detection: a run followed by
``min_turn_silence`` ms of silence (400 by default) ends the turn.
Unformatted words are lower case without punctuation; the formatted turn is the phrase.

Fault plan fields that apply: ``hang_connect``, ``reject_status``, ``close_on_open``;
``silent_after`` (client messages, audio included); ``close_mid_audio`` and
``error_mid_stream`` (an ``Error`` message, then close 3005) after ``close_after_chunks``
audio messages; ``drop_before_audio`` (close 1011 at the first ForceEndpoint/Terminate
of the first N connections, before answering); ``malformed_mid_stream`` (garbage and an
unknown type before the first Turn); ``audio_after_done`` (stale Turns after
Termination); ``first_audio_delay`` (before the first Turn and before answering each
ForceEndpoint/Terminate); ``chunk_interval`` (after each Turn); ``idle_close_after``
(close 4031, session idle); ``max_connection_age`` (close 3008, session expired).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from antiphon.audio.codecs import decode_to_pcm
from antiphon.errors import ConfigError
from antiphon.protocols import assemblyai_stt as aai
from antiphon.testing.deepgram_stt import phrase_pitch
from antiphon.testing.faults import ABORT, FaultPlan
from antiphon.testing.server import FakeWsServer
from antiphon.testing.synth import tone_duration

__all__ = ["DEFAULT_API_KEY", "AssemblyAIFakeStats", "FakeAssemblyAISTT"]

DEFAULT_API_KEY = "test-key"
BLOCK_SECONDS = 0.01
VOICED_RMS = 500.0
MIN_GAP = 0.1
DEFAULT_TURN_SILENCE_MS = 400
INTERIM_EVERY = 0.25
PITCH_TOLERANCE = 6.0


@dataclass
class AssemblyAIFakeStats:
    """What the fake saw and did (read it from the test after the fact)."""

    connections: int = 0
    open_connections: int = 0
    queries: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    audio_messages: int = 0
    audio_bytes: int = 0
    control: list[str] = field(default_factory=list)
    """Types of the JSON messages received, in order."""
    received: list[dict[str, Any]] = field(default_factory=list)
    """The JSON messages received, parsed."""
    turns_sent: int = 0
    closes_sent: list[int] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return self.control.count(kind)


@dataclass(frozen=True, slots=True)
class _Run:
    start: int
    end: int


def _runs(x: npt.NDArray[np.int16], rate: int, base: int) -> list[_Run]:
    """Voiced runs of ``x`` (which starts at sample ``base``), short gaps merged."""
    block = max(1, round(BLOCK_SECONDS * rate))
    n = len(x) // block
    if n == 0:
        return []
    blocks = x[: n * block].astype(np.float64).reshape(n, block)
    voiced = np.sqrt((blocks**2).mean(axis=1)) > VOICED_RMS
    runs: list[_Run] = []
    gap = max(1, round(MIN_GAP / BLOCK_SECONDS)) * block
    i = 0
    while i < n:
        if not voiced[i]:
            i += 1
            continue
        j = i
        while j < n and voiced[j]:
            j += 1
        if runs and (i * block + base) - runs[-1].end < gap:
            runs[-1] = _Run(runs[-1].start, j * block + base)
        else:
            runs.append(_Run(i * block + base, j * block + base))
        i = j
    return runs


class FakeAssemblyAISTT(FakeWsServer):
    """``ws://127.0.0.1:PORT/v3/ws`` with AssemblyAI's v3 streaming protocol."""

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        vocabulary: Iterable[str] = (),
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(plan, host=host, port=port)
        self.vocabulary: list[str] = list(vocabulary)
        self.api_key = api_key
        self.stats = AssemblyAIFakeStats()
        self.sent: list[dict[str, Any]] = []
        self._indices: dict[int, int] = {}

    def identify(self, pitch: float) -> str:
        best = min(self.vocabulary, key=lambda p: abs(phrase_pitch(p) - pitch), default=None)
        if best is None or abs(phrase_pitch(best) - pitch) > PITCH_TOLERANCE:
            return "unknown"
        return best

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != aai.PATH:
            return connection.respond(404, f"unknown path {parts.path}; use {aai.PATH}\n")
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if (
            request.headers.get("Authorization", "") != self.api_key
            and q.get("token") != self.api_key
        ):
            return connection.respond(401, '{"error": "Unauthorized connection: Invalid API key"}')
        if "speech_model" not in q:
            return connection.respond(400, '{"error": "speech_model is required"}')
        try:
            aai.options_from_query(q)
        except ConfigError as exc:
            return connection.respond(400, json.dumps({"error": str(exc)}))
        self._indices[id(connection)] = self.stats.connections
        self.stats.connections += 1
        self.stats.queries.append(q)
        self.stats.headers.append({k: v for k, v in request.headers.raw_items()})
        return None

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        q = {k: v[-1] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        conn = _Conn(
            self,
            ws,
            index=self._indices.pop(id(ws), self.stats.connections),
            options=aai.options_from_query(q),
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
        server: FakeAssemblyAISTT,
        ws: ServerConnection,
        *,
        index: int,
        options: aai.StreamingOptions,
    ) -> None:
        self.server = server
        self.plan = server.plan
        self.stats = server.stats
        self.ws = ws
        self.index = index
        self.options = options
        self.rate = options.sample_rate
        silence = options.min_turn_silence
        self.turn_silence = (DEFAULT_TURN_SILENCE_MS if silence is None else silence) / 1000
        loop = asyncio.get_running_loop()
        self.opened = loop.time()
        self.last_message = loop.time()
        self.pcm = np.zeros(0, dtype=np.int16)
        self.chunks: list[npt.NDArray[np.int16]] = []
        self.received = 0
        self.finalized = 0
        self.last_interim = 0
        self.turn_order = 0
        self.messages = 0
        self.audio_messages = 0
        self.answered_once = False
        self.errored = False
        self.closing = False

    # -- plumbing
    async def close(self, code: int, reason: str = "", *, drain: bool = True) -> None:
        self.stats.closes_sent.append(code)
        self.closing = True
        if code == ABORT:
            if self.ws.transport is not None:
                self.ws.transport.abort()
            return
        drainer = asyncio.create_task(self._drain()) if drain else None
        try:
            with contextlib.suppress(ConnectionClosed):
                await self.ws.close(code, reason)
        finally:
            if drainer is not None:
                drainer.cancel()
                await asyncio.wait([drainer])

    async def _drain(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in self.ws:
                pass

    async def send_json(self, msg: dict[str, Any]) -> None:
        self.server.sent.append(msg)
        await self.ws.send(json.dumps(msg))

    async def serve(self) -> None:
        plan = self.plan
        if plan.close_on_open is not None:
            await self.close(plan.close_on_open, plan.close_on_open_reason)
            return
        await self.send_json(
            {
                "type": "Begin",
                "id": f"00000000-0000-4000-8000-{self.index:012d}",
                "expires_at": int(time.time()) + 3 * 3600,
            }
        )
        async with asyncio.TaskGroup() as tg:
            watchdog = tg.create_task(self._lifetime())
            try:
                await self._read_loop()
            except ConnectionClosed:
                pass
            finally:
                watchdog.cancel()

    async def _lifetime(self) -> None:
        plan = self.plan
        if plan.idle_close_after is None and plan.max_connection_age is None:
            return
        loop = asyncio.get_running_loop()
        while not self.closing:
            await asyncio.sleep(0.02)
            now = loop.time()
            idle = plan.idle_close_after
            if idle is not None and now - self.last_message > idle:
                await self.close(4031, "Session idle for too long", drain=False)
                return
            age = plan.max_connection_age
            if age is not None and now - self.opened > age:
                await self.close(
                    3008, "Session expired: maximum session duration exceeded", drain=False
                )
                return

    # -- reading
    async def _read_loop(self) -> None:
        plan = self.plan
        async for raw in self.ws:
            self.last_message = asyncio.get_running_loop().time()
            self.messages += 1
            silent = plan.silent_after is not None and self.messages > plan.silent_after
            if isinstance(raw, bytes):
                self.stats.audio_messages += 1
                self.stats.audio_bytes += len(raw)
                if self.closing:
                    continue
                seconds = len(raw) / (self.rate * aai.ENCODINGS[self.options.encoding])
                if not aai.MIN_CHUNK_SECONDS - 1e-9 <= seconds <= aai.MAX_CHUNK_SECONDS:
                    await self.close(3007, "Audio chunk duration violation")
                    return
                self.audio_messages += 1
                self._append(raw)
                if silent:
                    continue
                if not await self._audio_faults():
                    return
                await self._advance()
                continue
            try:
                msg = json.loads(raw)
            except ValueError:
                msg = None
            kind = msg.get("type") if isinstance(msg, dict) else None
            self.stats.control.append(str(kind))
            if isinstance(msg, dict):
                self.stats.received.append(msg)
            if silent or kind == "KeepAlive":
                continue
            if kind == "UpdateConfiguration":
                assert isinstance(msg, dict)
                silence = msg.get("min_turn_silence")
                if isinstance(silence, int):
                    self.turn_silence = silence / 1000
            elif kind == "ForceEndpoint":
                if not await self._answer_gate():
                    return
                await self._end_turn()
            elif kind == "Terminate":
                if not await self._answer_gate():
                    return
                await self._terminate()
                return
            else:
                await self.send_json(
                    {"type": "Error", "error_code": 3006, "error": f"Invalid message: {kind!r}"}
                )
                await self.close(3006, "Input validation error")
                return

    def _append(self, wire: bytes) -> None:
        pcm = wire if self.options.encoding == "pcm_s16le" else decode_to_pcm("mulaw", wire)
        x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
        self.chunks.append(x)
        self.received += len(x)

    def _samples(self) -> npt.NDArray[np.int16]:
        if self.chunks:
            self.pcm = np.concatenate([self.pcm, *self.chunks])
            self.chunks = []
        return self.pcm

    async def _audio_faults(self) -> bool:
        plan = self.plan
        if plan.close_mid_audio is not None and self.audio_messages >= plan.close_after_chunks:
            await self.close(plan.close_mid_audio, plan.close_reason)
            return False
        if plan.error_mid_stream and self.audio_messages >= plan.close_after_chunks:
            if not self.errored:
                self.errored = True
                await self.send_json(
                    {"type": "Error", "error_code": 3005, "error": "Server error (fault plan)"}
                )
                await self.close(3005, "Server error")
            return False
        return True

    async def _answer_gate(self) -> bool:
        if self.index < self.plan.drop_before_audio:
            await self.close(1011, "dropped by fault plan")
            return False
        if self.plan.first_audio_delay:
            await asyncio.sleep(self.plan.first_audio_delay)
        return True

    # -- recognition
    def _words(self, run: _Run, upto: int, *, formatted: bool) -> list[dict[str, Any]]:
        x = self._samples()[run.start : min(run.end, upto)]
        if len(x) < 2:
            return []
        signs = np.signbit(x)
        crossings = int(np.count_nonzero(signs[1:] != signs[:-1]))
        phrase = self.server.identify(crossings / 2 / (len(x) / self.rate))
        tokens = phrase.split()
        heard = len(x) / self.rate
        expected = tone_duration(phrase) if phrase != "unknown" else heard
        n = (
            len(tokens)
            if heard >= 0.9 * expected
            else max(1, math.floor(len(tokens) * heard / expected))
        )
        step = expected / len(tokens)
        t0 = run.start / self.rate
        out = []
        for i, tok in enumerate(tokens[:n]):
            start = t0 + i * step
            end = min(t0 + (i + 1) * step, (run.start + len(x)) / self.rate)
            out.append(
                {
                    "start": round(start * 1000),
                    "end": round(max(start, end) * 1000),
                    "confidence": 0.99,
                    "text": tok if formatted else tok.strip(".,?!;:").lower(),
                    "word_is_final": True,
                }
            )
        return out

    async def _send_turn(self, runs: list[_Run], upto: int, *, end: bool) -> None:
        plan = self.plan
        if not self.answered_once:
            self.answered_once = True
            if plan.first_audio_delay:
                await asyncio.sleep(plan.first_audio_delay)
            if plan.malformed_mid_stream:
                await self.ws.send("{this is not json")
                await self.ws.send(json.dumps({"type": "SomethingNew", "value": 1}))
        forms = [False, True] if end and self.options.format_turns else [False]
        for formatted in forms:
            words = [w for r in runs for w in self._words(r, upto, formatted=formatted)]
            if not end and words:
                words[-1]["word_is_final"] = False
            final_words = [w["text"] for w in words if w["word_is_final"]]
            await self.send_json(
                {
                    "type": "Turn",
                    "turn_order": self.turn_order,
                    "turn_is_formatted": formatted,
                    "end_of_turn": end,
                    "transcript": " ".join(final_words),
                    "end_of_turn_confidence": 0.9 if end else 0.01,
                    "words": words,
                }
            )
            self.stats.turns_sent += 1
            if plan.chunk_interval:
                await asyncio.sleep(plan.chunk_interval)
        if end:
            self.turn_order += 1

    async def _advance(self) -> None:
        """After new audio: end the turns that enough silence allows, then a partial."""
        x = self._samples()
        gap = max(1, round(self.turn_silence * self.rate))
        runs = _runs(x[self.finalized : self.received], self.rate, self.finalized)
        done = [r for r in runs if r.end + gap <= self.received]
        if done:
            await self._send_turn(done, self.received, end=True)
            self.finalized = self.last_interim = done[-1].end + gap
            runs = _runs(x[self.finalized : self.received], self.rate, self.finalized)
        if runs and self.received - self.last_interim >= INTERIM_EVERY * self.rate:
            self.last_interim = self.received
            await self._send_turn(runs, self.received, end=False)

    async def _end_turn(self) -> None:
        """End the open turn now (ForceEndpoint): nothing if no word was heard."""
        x = self._samples()
        runs = _runs(x[self.finalized : self.received], self.rate, self.finalized)
        if runs:
            await self._send_turn(runs, self.received, end=True)
        self.finalized = self.last_interim = self.received

    async def _terminate(self) -> None:
        await self._end_turn()
        await self.send_json(
            {
                "type": "Termination",
                "audio_duration_seconds": round(self.received / self.rate),
                "session_duration_seconds": round(asyncio.get_running_loop().time() - self.opened),
            }
        )
        for _ in range(self.plan.audio_after_done):
            await self.ws.send(
                json.dumps(
                    {
                        "type": "Turn",
                        "turn_order": self.turn_order,
                        "turn_is_formatted": False,
                        "end_of_turn": False,
                        "transcript": "",
                        "end_of_turn_confidence": 0.0,
                        "words": [
                            {
                                "start": 0,
                                "end": 100,
                                "confidence": 0.5,
                                "text": "stale",
                                "word_is_final": False,
                            }
                        ],
                    }
                )
            )
        await self.close(1000, "")
