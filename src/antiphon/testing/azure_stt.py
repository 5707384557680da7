"""A fake Azure Speech recognition endpoint, for the real Speech SDK to be pointed at.

``ws://127.0.0.1:PORT/speech/recognition/conversation/cognitiveservices/v1`` with the
Speech SDK's WebSocket messages (the framing of :mod:`antiphon.protocols.azure_tts`:
text frames are header lines, a blank line and a JSON body; binary frames a 2-byte header
length, the header lines and the audio). It checks the key
(``Ocp-Apim-Subscription-Key``, or ``Authorization: Bearer``), reads ``speech.config``
and ``speech.context`` (phrase hints under ``dgi``, the segmentation silence under
``phraseDetection``: both in :attr:`FakeAzureSpeechRecognition.stats`), takes ``audio``
frames (the first of a turn starts with a RIFF header; an empty one ends the audio) and
answers in one turn: ``turn.start``, then per utterance ``speech.startDetected``,
``speech.hypothesis`` every 0.25 s and ``speech.phrase`` once the segmentation silence
followed it; at the end of the audio the last utterance, ``speech.endDetected``, a
``speech.phrase`` with ``EndOfDictation`` and ``turn.end`` (after which the SDK stops the
session). Offsets and durations are 100 ns ticks.

Recognition is that of the other STT fakes (:mod:`antiphon.testing.listening`): test
speech is :func:`antiphon.testing.synth.tone_for_text`, named by pitch from the
``vocabulary``.

Fault plan fields that apply: ``hang_connect``, ``reject_status`` (the SDK reports 401
and 403 as ``AuthenticationFailure``, 429 as ``TooManyRequests``), ``close_on_open``;
``silent_after`` (client messages, audio included); ``close_mid_audio`` and
``error_mid_stream`` (close 1011) after ``close_after_chunks`` audio frames;
``first_audio_delay`` (before the first answer and before answering the end of audio);
``chunk_interval`` (after each answer); ``idle_close_after``/``max_connection_age``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from antiphon.protocols import azure_stt as az
from antiphon.protocols.azure_tts import encode_ws_text, parse_ws_message
from antiphon.testing.faults import FaultPlan
from antiphon.testing.listening import FakeListenServer, ListenerConnection, ListenerStats, Run

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_TOKEN",
    "AzureRecognitionStats",
    "FakeAzureSpeechRecognition",
]

DEFAULT_API_KEY = "test-key"
DEFAULT_TOKEN = "test-token"
INTERIM_EVERY = 0.25
TICKS = 10_000_000
RIFF_HEADER = 44


@dataclass
class AzureRecognitionStats(ListenerStats):
    """What the fake saw and did (read it from the test after the fact)."""

    queries: list[dict[str, str]] = field(default_factory=list)
    contexts: list[dict[str, Any]] = field(default_factory=list)
    """Every ``speech.context`` body received."""
    phrases_sent: int = 0
    ends_of_audio: int = 0


class FakeAzureSpeechRecognition(FakeListenServer):
    """The Speech SDK's recognition WebSocket endpoint on loopback."""

    stats: AzureRecognitionStats

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
        self.stats = AzureRecognitionStats()

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != az.RECOGNITION_PATH:
            return connection.respond(404, f"unknown path {parts.path}\n")
        key = request.headers.get("Ocp-Apim-Subscription-Key")
        bearer = request.headers.get("Authorization", "")
        if key != self.api_key and bearer != f"Bearer {DEFAULT_TOKEN}":
            return connection.respond(401, "Authentication error\n")
        self.count_connection(connection)
        self.stats.queries.append({k: v[-1] for k, v in parse_qs(parts.query).items()})
        return None

    async def handle(self, ws: ServerConnection) -> None:
        await self.run(_Conn(self, ws, index=self.take_index(ws)))


class _Conn(ListenerConnection):
    """One SDK connection: one turn per audio stream."""

    IDLE_CLOSE = (1000, "idle timeout")
    AGE_CLOSE = (1000, "maximum connection duration")

    def __init__(self, server: FakeAzureSpeechRecognition, ws: ServerConnection, *, index: int):
        super().__init__(server, ws, index=index, rate=az.SAMPLE_RATE)
        self.server = server
        self.stats = server.stats
        self.request_id = ""
        self.turn_open = False
        self.silence = 0.5  # segmentation silence (s), from speech.context
        self.utterance_started = False
        self.ended = False

    async def send_usp(self, path: str, body: dict[str, Any]) -> None:
        await self.ws.send(encode_ws_text(path, self.request_id, json.dumps(body)))

    def decode(self, wire: bytes) -> npt.NDArray[np.int16]:
        return np.frombuffer(wire[: len(wire) // 2 * 2], dtype="<i2")

    async def send_failure(self) -> None:
        await self.close(1011, "Internal service error")

    async def on_frame(self, raw: str | bytes) -> bool:
        try:
            msg = parse_ws_message(raw)
        except ValueError:
            await self.close(1007, "malformed message")
            return False
        if isinstance(raw, str):
            self._listen.control.append(msg.path)
            if msg.path == "speech.context":
                body = msg.json()
                if isinstance(body, dict):
                    self.stats.contexts.append(body)
                    self._read_context(body)
                self.request_id = msg.request_id
            return True
        if msg.path != "audio":
            return True
        self.request_id = msg.request_id or self.request_id
        audio = msg.body
        if audio.startswith(b"RIFF"):
            audio = audio[RIFF_HEADER:]
            if not audio:
                return True
        if not audio:  # the end of the audio
            self.stats.ends_of_audio += 1
            if self.silent or self.ended:
                return True
            if not await self.answer_gate():
                return False
            await self._end_of_audio()
            return True
        return await super().on_frame(audio)

    def _read_context(self, body: dict[str, Any]) -> None:
        detection = body.get("phraseDetection") or {}
        segmentation = (detection.get("CONVERSATION") or {}).get("segmentation") or {}
        ms = segmentation.get("segmentationSilenceTimeoutMs")
        if isinstance(ms, int | float) and ms > 0:
            self.silence = ms / 1000

    async def _answer(self, path: str, body: dict[str, Any]) -> None:
        await self.first_answer_usp()
        if not self.turn_open:
            self.turn_open = True
            await self.send_usp("turn.start", {"context": {"serviceTag": f"fake-{self.index}"}})
        await self.send_usp(path, body)
        if self.plan.chunk_interval:
            await asyncio.sleep(self.plan.chunk_interval)

    async def first_answer_usp(self) -> None:
        if self.answered_once:
            return
        self.answered_once = True
        if self.plan.first_audio_delay:
            await asyncio.sleep(self.plan.first_audio_delay)

    def _text(self, run: Run, upto: int) -> tuple[str, int, int] | None:
        heard = self.heard(run, upto)
        if not heard:
            return None
        start, end = heard[0][1], heard[-1][2]
        text = " ".join(tok for tok, _, _ in heard)
        return text, round(start * TICKS), round((end - start) * TICKS)

    async def _phrase(self, run: Run, upto: int) -> None:
        found = self._text(run, upto)
        if found is None:
            return
        text, offset, duration = found
        await self._answer(
            "speech.phrase",
            {
                "RecognitionStatus": "Success",
                "DisplayText": text,
                "Offset": offset,
                "Duration": duration,
            },
        )
        self.stats.phrases_sent += 1
        self.utterance_started = False

    async def advance(self) -> None:
        gap = max(1, round(self.silence * self.rate))
        runs = self.runs(self.finalized)
        if runs and not self.utterance_started:
            self.utterance_started = True
            await self._answer(
                "speech.startDetected", {"Offset": round(runs[0].start / self.rate * TICKS)}
            )
        for run in [r for r in runs if r.end + gap <= self.samples]:
            await self._phrase(run, self.samples)
            self.finalized = self.last_interim = run.end + gap
        runs = self.runs(self.finalized)
        if runs and self.samples - self.last_interim >= INTERIM_EVERY * self.rate:
            self.last_interim = self.samples
            found = self._text(runs[0], self.samples)
            if found is not None:
                text, offset, duration = found
                await self._answer(
                    "speech.hypothesis", {"Text": text, "Offset": offset, "Duration": duration}
                )

    async def _end_of_audio(self) -> None:
        self.ended = True
        for run in self.runs(self.finalized):
            await self._phrase(run, self.samples)
        self.finalized = self.last_interim = self.samples
        total = round(self.samples / self.rate * TICKS)
        await self._answer("speech.endDetected", {"Offset": total})
        await self._answer(
            "speech.phrase", {"RecognitionStatus": "EndOfDictation", "Offset": total, "Duration": 0}
        )
        await self.send_usp("turn.end", {})
        self.turn_open = False
