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
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from antiphon.audio.codecs import decode_to_pcm
from antiphon.errors import ConfigError
from antiphon.protocols import assemblyai_stt as aai
from antiphon.testing.faults import FaultPlan
from antiphon.testing.listening import FakeListenServer, ListenerConnection, ListenerStats, Run

__all__ = ["DEFAULT_API_KEY", "AssemblyAIFakeStats", "FakeAssemblyAISTT"]

DEFAULT_API_KEY = "test-key"
DEFAULT_TURN_SILENCE_MS = 400
INTERIM_EVERY = 0.25


@dataclass
class AssemblyAIFakeStats(ListenerStats):
    """What the fake saw and did (read it from the test after the fact)."""

    queries: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    """The JSON messages received, parsed."""
    turns_sent: int = 0


class FakeAssemblyAISTT(FakeListenServer):
    """``ws://127.0.0.1:PORT/v3/ws`` with AssemblyAI's v3 streaming protocol."""

    stats: AssemblyAIFakeStats

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        vocabulary: Iterable[str] = (),
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(plan, vocabulary=vocabulary, api_key=api_key, host=host, port=port)
        self.stats = AssemblyAIFakeStats()
        self.sent: list[dict[str, Any]] = []

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
        self.count_connection(connection)
        self.stats.queries.append(q)
        self.stats.headers.append({k: v for k, v in request.headers.raw_items()})
        return None

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        q = {k: v[-1] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        options = aai.options_from_query(q)
        await self.run(_Conn(self, ws, index=self.take_index(ws), options=options))


class _Conn(ListenerConnection):
    """One client connection of the fake."""

    IDLE_CLOSE = (4031, "Session idle for too long")
    AGE_CLOSE = (3008, "Session expired: maximum session duration exceeded")

    def __init__(
        self,
        server: FakeAssemblyAISTT,
        ws: ServerConnection,
        *,
        index: int,
        options: aai.StreamingOptions,
    ) -> None:
        super().__init__(server, ws, index=index, rate=options.sample_rate)
        self.server = server
        self.stats = server.stats
        self.options = options
        silence = options.min_turn_silence
        self.turn_silence = (DEFAULT_TURN_SILENCE_MS if silence is None else silence) / 1000
        self.turn_order = 0

    async def send_json(self, msg: dict[str, Any]) -> None:
        self.server.sent.append(msg)
        await super().send_json(msg)

    async def on_open(self) -> None:
        await self.send_json(
            {
                "type": "Begin",
                "id": f"00000000-0000-4000-8000-{self.index:012d}",
                "expires_at": int(time.time()) + 3 * 3600,
            }
        )

    def record(self, msg: dict[str, Any]) -> None:
        self.stats.received.append(msg)

    async def check_audio(self, wire: bytes) -> bool:
        seconds = len(wire) / (self.rate * aai.ENCODINGS[self.options.encoding])
        if not aai.MIN_CHUNK_SECONDS - 1e-9 <= seconds <= aai.MAX_CHUNK_SECONDS:
            await self.close(3007, "Audio chunk duration violation")
            return False
        return True

    def decode(self, wire: bytes) -> npt.NDArray[np.int16]:
        pcm = wire if self.options.encoding == "pcm_s16le" else decode_to_pcm("mulaw", wire)
        return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")

    async def send_failure(self) -> None:
        await self.send_json(
            {"type": "Error", "error_code": 3005, "error": "Server error (fault plan)"}
        )
        await self.close(3005, "Server error")

    async def on_control(self, kind: str | None, msg: Any, raw: str) -> bool:
        if kind == "UpdateConfiguration":
            silence = msg.get("min_turn_silence")
            if isinstance(silence, int):
                self.turn_silence = silence / 1000
        elif kind == "ForceEndpoint":
            if not await self.answer_gate():
                return False
            await self._end_turn()
        elif kind == "Terminate":
            if not await self.answer_gate():
                return False
            await self._terminate()
            return False
        else:
            await self.send_json(
                {"type": "Error", "error_code": 3006, "error": f"Invalid message: {kind!r}"}
            )
            await self.close(3006, "Input validation error")
            return False
        return True

    # -- recognition
    def _words(self, run: Run, upto: int, *, formatted: bool) -> list[dict[str, Any]]:
        return [
            {
                "start": round(start * 1000),
                "end": round(end * 1000),
                "confidence": 0.99,
                "text": tok if formatted else tok.strip(".,?!;:").lower(),
                "word_is_final": True,
            }
            for tok, start, end in self.heard(run, upto)
        ]

    async def _send_turn(self, runs: list[Run], upto: int, *, end: bool) -> None:
        plan = self.plan
        await self.first_answer()
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

    async def advance(self) -> None:
        """After new audio: end the turns that enough silence allows, then a partial."""
        gap = max(1, round(self.turn_silence * self.rate))
        runs = self.runs(self.finalized)
        done = [r for r in runs if r.end + gap <= self.samples]
        if done:
            await self._send_turn(done, self.samples, end=True)
            self.finalized = self.last_interim = done[-1].end + gap
            runs = self.runs(self.finalized)
        if runs and self.samples - self.last_interim >= INTERIM_EVERY * self.rate:
            self.last_interim = self.samples
            await self._send_turn(runs, self.samples, end=False)

    async def _end_turn(self) -> None:
        """End the open turn now (ForceEndpoint): nothing if no word was heard."""
        runs = self.runs(self.finalized)
        if runs:
            await self._send_turn(runs, self.samples, end=True)
        self.finalized = self.last_interim = self.samples

    async def _terminate(self) -> None:
        await self._end_turn()
        await self.send_json(
            {
                "type": "Termination",
                "audio_duration_seconds": round(self.samples / self.rate),
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
