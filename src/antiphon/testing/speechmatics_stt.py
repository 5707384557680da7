"""A fake Speechmatics real-time server (``/v2``) for tests and offline demos.

It speaks the real-time wire protocol on loopback: checks the path, the
``Authorization: Bearer`` key (or a ``jwt`` query parameter); waits for
``StartRecognition`` (audio before it is a ``protocol_error``), checks it and answers
``RecognitionStarted``; acks each binary audio message with ``AudioAdded`` and its
``seq_no``; sends ``AddPartialTranscript`` while a phrase is heard, then on the silence
of ``end_of_utterance_silence_trigger`` (or ``max_delay`` without one) the phrase as one
``AddTranscript`` (its words and punctuation as results) and, with the trigger set,
``EndOfUtterance``; answers ``ForceEndOfUtterance`` the same way at once, and
``EndOfStream`` (whose ``last_seq_no`` must count the audio messages) with the last
segment, ``EndOfTranscript`` and a 1000 close. Every message it sends is in
:attr:`FakeSpeechmaticsSTT.sent` for witness tests.

Recognition is the shared one of :mod:`antiphon.testing.listening` (test speech is
:func:`antiphon.testing.synth.tone_for_text`, named by pitch from the ``vocabulary``).

Fault plan fields that apply: ``hang_connect``, ``reject_status``, ``close_on_open``;
``silent_after`` (client messages after ``StartRecognition``, audio included; with
``answer_start=False`` the fake never answers ``StartRecognition`` either);
``close_mid_audio`` and ``error_mid_stream`` (an ``Error`` of type ``job_error``, then
close 4013) after ``close_after_chunks`` audio messages; ``drop_before_audio`` (close
1011 at the first ForceEndOfUtterance/EndOfStream of the first N connections, before
answering); ``malformed_mid_stream`` (garbage and an unknown message before the first
transcript); ``audio_after_done`` (stale partials after EndOfTranscript);
``first_audio_delay`` (before the first transcript and before answering each
ForceEndOfUtterance/EndOfStream); ``chunk_interval`` (after each transcript);
``idle_close_after`` and ``max_connection_age`` (close 1011).
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

from antiphon.audio.codecs import decode_to_pcm
from antiphon.errors import ConfigError
from antiphon.protocols import speechmatics_stt as sm
from antiphon.testing.faults import FaultPlan
from antiphon.testing.listening import FakeListenServer, ListenerConnection, ListenerStats, Run

__all__ = ["DEFAULT_API_KEY", "FakeSpeechmaticsSTT", "SpeechmaticsFakeStats"]

DEFAULT_API_KEY = "test-key"
#: Finalization without an end-of-utterance trigger: the service's default max_delay.
DEFAULT_MAX_DELAY = 0.7
INTERIM_EVERY = 0.25
_PUNCTUATION = ".,?!;:"


@dataclass
class SpeechmaticsFakeStats(ListenerStats):
    """What the fake saw and did (read it from the test after the fact)."""

    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    """The JSON messages received, parsed."""
    messages: list[str] = field(default_factory=list)
    """``message`` of each JSON message received, in order."""
    transcripts_sent: int = 0

    def count_message(self, kind: str) -> int:
        return self.messages.count(kind)


class FakeSpeechmaticsSTT(FakeListenServer):
    """``ws://127.0.0.1:PORT/v2`` with Speechmatics' real-time protocol."""

    stats: SpeechmaticsFakeStats

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        vocabulary: Iterable[str] = (),
        api_key: str = DEFAULT_API_KEY,
        answer_start: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(plan, vocabulary=vocabulary, api_key=api_key, host=host, port=port)
        self.stats = SpeechmaticsFakeStats()
        self.sent: list[dict[str, Any]] = []
        self.answer_start = answer_start

    @property
    def url(self) -> str:
        return f"{super().url}/v2"

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if not (parts.path.rstrip("/") == "/v2" or parts.path.startswith("/v2/")):
            return connection.respond(404, f"unknown path {parts.path}; use /v2\n")
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.api_key}" and q.get("jwt") != self.api_key:
            return connection.respond(401, "Unauthorized\n")
        self.count_connection(connection)
        self.stats.paths.append(request.path)
        self.stats.headers.append({k: v for k, v in request.headers.raw_items()})
        return None

    async def handle(self, ws: ServerConnection) -> None:
        await self.run(_Conn(self, ws, index=self.take_index(ws)))


class _Conn(ListenerConnection):
    """One client connection of the fake."""

    def __init__(self, server: FakeSpeechmaticsSTT, ws: ServerConnection, *, index: int) -> None:
        super().__init__(server, ws, index=index, rate=sm.DEFAULT_SAMPLE_RATE)
        self.server = server
        self.stats = server.stats
        self.options: sm.RealtimeOptions | None = None
        self.handshake = 0  # client messages up to and including StartRecognition
        self.utterance_open = False  # a segment sent since the last EndOfUtterance

    @property
    def silent(self) -> bool:
        after = self.plan.silent_after
        return after is not None and self.received - self.handshake > after

    async def send_json(self, msg: dict[str, Any]) -> None:
        self.server.sent.append(msg)
        await super().send_json(msg)

    async def _error(self, kind: str, reason: str, code: int) -> bool:
        await self.send_json({"message": "Error", "type": kind, "reason": reason})
        await self.close(code, kind)
        return False

    async def on_frame(self, raw: str | bytes) -> bool:
        if self.options is None:
            return await self._start(raw)
        return await super().on_frame(raw)

    async def _start(self, raw: str | bytes) -> bool:
        """The first message must be StartRecognition."""
        if isinstance(raw, bytes):
            return await self._error("protocol_error", "audio before StartRecognition", 1003)
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or msg.get("message") != "StartRecognition":
            return await self._error("protocol_error", "expected StartRecognition", 1003)
        self.record(msg)
        self.handshake = self.received
        try:
            self.options = sm.options_from_start(msg)
        except ConfigError as exc:
            return await self._error("invalid_config", str(exc), 1011)
        self.rate = self.options.sample_rate
        if self.server.answer_start:
            await self.send_json(
                {
                    "message": "RecognitionStarted",
                    "id": f"00000000-0000-4000-8000-{self.index:012d}",
                    "language_pack_info": {
                        "adapted": False,
                        "itn": True,
                        "language_description": "English",
                        "word_delimiter": " ",
                        "writing_direction": "left-to-right",
                    },
                }
            )
        return True

    def record(self, msg: dict[str, Any]) -> None:
        self.stats.received.append(msg)
        self.stats.messages.append(str(msg.get("message")))

    def decode(self, wire: bytes) -> npt.NDArray[np.int16]:
        assert self.options is not None
        pcm = wire if self.options.encoding == "pcm_s16le" else decode_to_pcm("mulaw", wire)
        return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")

    async def send_failure(self) -> None:
        await self._error("job_error", "fault plan", 4013)

    async def on_control(self, kind: str | None, msg: Any, raw: str) -> bool:
        kind = msg.get("message") if isinstance(msg, dict) else None
        if kind == "ForceEndOfUtterance":
            if not await self.answer_gate():
                return False
            await self._end_utterance(force=True)
        elif kind == "EndOfStream":
            if msg.get("last_seq_no") != self.audio_messages:
                return await self._error(
                    "protocol_error",
                    f"last_seq_no {msg.get('last_seq_no')} but {self.audio_messages} sent",
                    1003,
                )
            if not await self.answer_gate():
                return False
            await self._end_of_stream()
            return False
        else:
            return await self._error("invalid_message", f"unexpected message {kind!r}", 1003)
        return True

    # -- recognition
    def _results(self, run: Run, upto: int) -> tuple[str, list[dict[str, Any]]]:
        results: list[dict[str, Any]] = []
        words: list[str] = []
        for tok, start, end in self.heard(run, upto):
            bare = tok.rstrip(_PUNCTUATION)
            results.append(
                {
                    "type": "word",
                    "start_time": round(start, 3),
                    "end_time": round(end, 3),
                    "alternatives": [{"content": bare, "confidence": 0.99, "language": "en"}],
                }
            )
            words.append(bare)
            if bare != tok:
                results.append(
                    {
                        "type": "punctuation",
                        "start_time": round(end, 3),
                        "end_time": round(end, 3),
                        "attaches_to": "previous",
                        "is_eos": tok[-1] in ".?!",
                        "alternatives": [{"content": tok[len(bare) :], "confidence": 1.0}],
                    }
                )
                words[-1] = tok
        return " ".join(words), results

    async def _send_segment(self, runs: list[Run], upto: int, *, final: bool) -> None:
        await self.first_answer()
        texts: list[str] = []
        results: list[dict[str, Any]] = []
        for run in runs:
            text, res = self._results(run, upto)
            texts.append(text)
            results.extend(res)
        if not results:
            return
        await self.send_json(
            {
                "message": "AddTranscript" if final else "AddPartialTranscript",
                "format": "2.9",
                "metadata": {
                    "start_time": results[0]["start_time"],
                    "end_time": results[-1]["end_time"],
                    "transcript": " ".join(texts) + (" " if final else ""),
                },
                "results": results,
            }
        )
        self.stats.transcripts_sent += 1
        if final:
            self.utterance_open = True
        if self.plan.chunk_interval:
            await asyncio.sleep(self.plan.chunk_interval)

    async def _end_of_utterance(self) -> None:
        if not self.utterance_open:
            return
        self.utterance_open = False
        end = round(self.finalized / self.rate, 3)
        await self.send_json(
            {"message": "EndOfUtterance", "metadata": {"start_time": end, "end_time": end}}
        )

    async def advance(self) -> None:
        """After new audio: ack it, finalize what enough silence allows, then a partial."""
        assert self.options is not None
        await self.send_json({"message": "AudioAdded", "seq_no": self.audio_messages})
        trigger = self.options.end_of_utterance_silence
        silence = trigger if trigger is not None else (self.options.max_delay or DEFAULT_MAX_DELAY)
        gap = max(1, round(silence * self.rate))
        runs = self.runs(self.finalized)
        done = [r for r in runs if r.end + gap <= self.samples]
        if done:
            await self._send_segment(done, self.samples, final=True)
            self.finalized = self.last_interim = done[-1].end + gap
            if trigger is not None:
                await self._end_of_utterance()
            runs = self.runs(self.finalized)
        if (
            runs
            and self.options.enable_partials
            and self.samples - self.last_interim >= INTERIM_EVERY * self.rate
        ):
            self.last_interim = self.samples
            await self._send_segment(runs, self.samples, final=False)

    async def _end_utterance(self, *, force: bool) -> None:
        """Finalize what is heard now; ForceEndOfUtterance ends the utterance too."""
        runs = self.runs(self.finalized)
        if runs:
            await self._send_segment(runs, self.samples, final=True)
        self.finalized = self.last_interim = self.samples
        if force:
            await self._end_of_utterance()

    async def _end_of_stream(self) -> None:
        await self._end_utterance(force=False)
        await self.send_json({"message": "EndOfTranscript"})
        for _ in range(self.plan.audio_after_done):
            await self.ws.send(
                json.dumps(
                    {
                        "message": "AddPartialTranscript",
                        "format": "2.9",
                        "metadata": {"start_time": 0.0, "end_time": 0.1, "transcript": "stale"},
                        "results": [
                            {
                                "type": "word",
                                "start_time": 0.0,
                                "end_time": 0.1,
                                "alternatives": [{"content": "stale", "confidence": 0.5}],
                            }
                        ],
                    }
                )
            )
        await self.close(1000, "")
