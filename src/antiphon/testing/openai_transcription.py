"""A fake OpenAI realtime transcription server (``/v1/realtime?intent=transcription``).

It speaks the GA transcription session on loopback: checks the path, the
``intent=transcription`` query and the ``Authorization: Bearer`` key; greets with
``session.created``; answers ``session.update`` (``type: "transcription"``, PCM at
24 kHz) with ``session.updated``; takes ``input_audio_buffer.append`` (base64 PCM16),
``input_audio_buffer.commit`` (``error`` ``input_audio_buffer_commit_empty`` below
100 ms, as the service does) and ``input_audio_buffer.clear``. With server VAD it sends
``input_audio_buffer.speech_started`` when a voiced run begins and, after
``silence_duration_ms`` of silence (500 by default), ``speech_stopped`` and
``committed``; each committed item is transcribed: one
``conversation.item.input_audio_transcription.delta`` per word, then ``completed`` with
the phrase and a duration ``usage``. An unknown client event is answered with an
``error`` event (the connection stays open). Every message it sends is in
:attr:`FakeOpenAITranscription.sent` for witness tests.

Recognition is that of the other STT fakes (:mod:`antiphon.testing.listening`): test
speech is :func:`antiphon.testing.synth.tone_for_text`, named by pitch from the
``vocabulary``.

Fault plan fields that apply: ``hang_connect``, ``reject_status``, ``close_on_open``;
``silent_after`` (client messages); ``close_mid_audio`` and ``error_mid_stream`` (an
``error`` event, then close 1011) after ``close_after_chunks`` appends;
``drop_before_audio`` (close 1011 before the first transcription of each of the first N
connections); ``malformed_mid_stream`` (garbage and an unknown type before the first
transcription); ``audio_after_done`` (deltas of an unknown item after each completed
transcript); ``first_audio_delay`` (before each transcription); ``chunk_interval``
(between deltas); ``idle_close_after``; ``max_connection_age`` (close 1001).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from antiphon.protocols import openai_transcription as ot
from antiphon.testing.faults import FaultPlan
from antiphon.testing.listening import FakeListenServer, ListenerConnection, ListenerStats, Run

__all__ = ["DEFAULT_API_KEY", "FakeOpenAITranscription", "OpenAITranscriptionStats"]

DEFAULT_API_KEY = "test-key"
DEFAULT_SILENCE_MS = 500


@dataclass
class OpenAITranscriptionStats(ListenerStats):
    """What the fake saw and did (read it from the test after the fact)."""

    headers: list[dict[str, str]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    """The ``session`` objects of the ``session.update`` messages received."""
    commits: int = 0
    transcripts_sent: int = 0


class FakeOpenAITranscription(FakeListenServer):
    """``ws://127.0.0.1:PORT/v1/realtime?intent=transcription``."""

    stats: OpenAITranscriptionStats

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
        self.stats = OpenAITranscriptionStats()
        self.sent: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != ot.PATH:
            return connection.respond(404, f"unknown path {parts.path}; use {ot.PATH}\n")
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            return connection.respond(
                401,
                json.dumps(
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "code": "invalid_api_key",
                            "message": "Incorrect API key provided.",
                        }
                    }
                ),
            )
        if q.get("intent") != "transcription":
            return connection.respond(400, "a transcription session needs intent=transcription\n")
        self.count_connection(connection)
        self.stats.headers.append({k: v for k, v in request.headers.raw_items()})
        return None

    async def handle(self, ws: ServerConnection) -> None:
        await self.run(_Conn(self, ws, index=self.take_index(ws)))


def _default_session() -> dict[str, Any]:
    return {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": ot.SAMPLE_RATE},
                "noise_reduction": None,
                "transcription": {"model": ot.DEFAULT_MODEL},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": DEFAULT_SILENCE_MS,
                },
            }
        },
    }


class _Conn(ListenerConnection):
    """One client connection of the fake."""

    AGE_CLOSE = (1001, "maximum session duration")
    DROP_REASON = "server error (fault plan)"

    def __init__(self, server: FakeOpenAITranscription, ws: ServerConnection, *, index: int):
        super().__init__(server, ws, index=index, rate=ot.SAMPLE_RATE)
        self.server = server
        self.stats = server.stats
        self.session = _default_session()
        self.speech: tuple[str, int] | None = None  # VAD: item id and first sample
        self.previous_item: str | None = None

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        td: dict[str, Any] | None = self.session["audio"]["input"]["turn_detection"]
        return td

    async def send_json(self, msg: dict[str, Any]) -> None:
        msg = {"event_id": self.server.next_id("event"), **msg}
        self.server.sent.append(msg)
        await super().send_json(msg)

    async def on_open(self) -> None:
        await self.send_json({"type": "session.created", "session": self.session})

    def decode(self, wire: bytes) -> npt.NDArray[np.int16]:
        return np.frombuffer(wire[: len(wire) // 2 * 2], dtype="<i2")

    async def send_failure(self) -> None:
        await self._error("server_error", "server_error", "The server had an error (fault plan)")
        await self.close(1011, "server error")

    async def _error(self, kind: str, code: str | None, message: str) -> None:
        await self.send_json(
            {
                "type": "error",
                "error": {
                    "type": kind,
                    "code": code,
                    "message": message,
                    "param": None,
                    "event_id": None,
                },
            }
        )

    async def on_control(self, kind: str | None, msg: Any, raw: str) -> bool:
        if kind == "input_audio_buffer.append":
            try:
                pcm = base64.b64decode(msg.get("audio", ""), validate=True)
            except (binascii.Error, ValueError):
                await self._error("invalid_request_error", "invalid_value", "audio is not base64")
                return True
            return await self.on_frame(pcm)
        if kind == "session.update":
            return await self._update(msg.get("session"))
        if kind == "input_audio_buffer.commit":
            self.stats.commits += 1
            if self.samples - self.finalized < round(ot.MIN_COMMIT_SECONDS * self.rate):
                await self._error(
                    "invalid_request_error",
                    ot.COMMIT_EMPTY,
                    "Error committing input audio buffer: buffer too small. Expected at "
                    "least 100ms of audio.",
                )
                return True
            item = self.speech[0] if self.speech else self.server.next_id("item")
            start = self.speech[1] if self.speech else self.finalized
            self.speech = None
            return await self._commit(item, start, self.samples)
        if kind == "input_audio_buffer.clear":
            self.finalized = self.last_interim = self.samples
            self.speech = None
            await self.send_json({"type": "input_audio_buffer.cleared"})
            return True
        await self._error(
            "invalid_request_error", "invalid_value", f"Invalid value: {kind!r}: unknown event"
        )
        return True

    async def _update(self, session: Any) -> bool:
        audio_in = session.get("audio", {}).get("input", {}) if isinstance(session, dict) else None
        fmt = audio_in.get("format") if isinstance(audio_in, dict) else None
        if (
            not isinstance(session, dict)
            or session.get("type") != "transcription"
            or not isinstance(audio_in, dict)
            or (fmt is not None and fmt != {"type": "audio/pcm", "rate": ot.SAMPLE_RATE})
        ):
            await self._error(
                "invalid_request_error", "invalid_value", "expected a transcription session"
            )
            return True
        self.stats.sessions.append(session)
        current = self.session["audio"]["input"]
        for key in ("format", "noise_reduction", "transcription", "turn_detection"):
            if key in audio_in:
                current[key] = audio_in[key]
        if "include" in session:
            self.session["include"] = session["include"]
        await self.send_json({"type": "session.updated", "session": self.session})
        return True

    # -- recognition
    async def advance(self) -> None:
        """Server VAD: speech_started at a voiced run, stopped and committed after the
        silence window."""
        td = self.turn_detection
        if td is None:
            return
        silence = round(td.get("silence_duration_ms", DEFAULT_SILENCE_MS) / 1000 * self.rate)
        for run in self.runs(self.finalized):
            if self.speech is None:
                self.speech = (self.server.next_id("item"), run.start)
                await self.send_json(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": round(run.start / self.rate * 1000),
                        "item_id": self.speech[0],
                    }
                )
            if run.end + max(1, silence) > self.samples:
                return  # still speaking, or not silent long enough yet
            item, start = self.speech
            self.speech = None
            await self.send_json(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": round(run.end / self.rate * 1000),
                    "item_id": item,
                }
            )
            if not await self._commit(item, start, run.end):
                return

    async def _commit(self, item: str, start: int, end: int) -> bool:
        """Commit samples up to ``end`` as ``item`` and transcribe them."""
        if not await self.answer_gate():
            return False
        runs = [r for r in self.runs(self.finalized) if r.start < end]
        self.finalized = self.last_interim = max(end, self.finalized)
        await self.send_json(
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": self.previous_item,
                "item_id": item,
            }
        )
        self.previous_item = item
        await self._transcribe(item, runs, end - start)
        return True

    async def _transcribe(self, item: str, runs: list[Run], samples: int) -> None:
        await self.first_answer()
        words = [tok for run in runs for tok, _, _ in self.heard(run, run.end)]
        for i, word in enumerate(words):
            await self.send_json(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item,
                    "content_index": 0,
                    "delta": word if i == 0 else f" {word}",
                }
            )
            if self.plan.chunk_interval:
                await asyncio.sleep(self.plan.chunk_interval)
        await self.send_json(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item,
                "content_index": 0,
                "transcript": " ".join(words),
                "usage": {"type": "duration", "seconds": round(samples / self.rate, 3)},
            }
        )
        self.stats.transcripts_sent += 1
        for _ in range(self.plan.audio_after_done):
            await self.ws.send(
                json.dumps(
                    {
                        "type": "conversation.item.input_audio_transcription.delta",
                        "event_id": self.server.next_id("event"),
                        "item_id": "item_stale",
                        "content_index": 0,
                        "delta": "stale",
                    }
                )
            )
