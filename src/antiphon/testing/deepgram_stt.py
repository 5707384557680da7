"""A fake Deepgram streaming STT server (``/v1/listen``) for tests and offline demos.

It speaks the real wire protocol on loopback: checks the path, the query (raw audio needs
``encoding`` and ``sample_rate``) and the ``Authorization`` header; takes binary audio,
``KeepAlive``, ``Finalize`` and ``CloseStream``; answers with ``Results`` (interim, then
final with word timings in seconds of the audio received), ``from_finalize`` results,
and on ``CloseStream`` the last results, a ``Metadata`` summary and a 1000 close.

Recognition is deterministic: test speech is made with
:func:`antiphon.testing.synth.tone_for_text`, one tone per phrase whose pitch follows the
text. The fake cuts the audio into voiced runs (by energy), measures each run's pitch and
names the phrase of its ``vocabulary`` with that pitch (``"unknown"`` if none is close).
Words are spread evenly over the run; an interim or a ``Finalize`` in the middle of a run
gives the words heard so far. Endpointing: a run followed by ``endpointing`` ms of
silence (query parameter; 300 ms when absent, none when ``false``) gets a final result
with ``speech_final``.

As Deepgram does, ``vad_events=true`` adds a ``SpeechStarted`` (``channel``, the
``timestamp`` in seconds) when a voiced run begins, and ``utterance_end_ms`` an
``UtteranceEnd`` (``channel``, ``last_word_end``) once the audio after the last word of
the results runs that long without a new word: the words not yet final get a final
result first (``speech_final`` false), then the ``UtteranceEnd``.

Fault plan fields that apply: ``hang_connect``, ``reject_status``, ``close_on_open``;
``silent_after`` (client messages, audio included); ``close_mid_audio`` and
``error_mid_stream`` after ``close_after_chunks`` audio messages were received;
``drop_before_audio`` (close 1011 at the first Finalize/CloseStream, before answering);
``malformed_mid_stream`` (garbage before the first Results); ``audio_after_done``
(stale Results after the closing Metadata); ``first_audio_delay`` (before the first
result and before answering each Finalize/CloseStream); ``chunk_interval`` (after each
Results); ``idle_close_after`` (Deepgram's no-audio timeout, 1011 ``NET-0001``);
``max_connection_age``. The Clear and chunking fields have no meaning here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from antiphon.audio.codecs import decode_to_pcm
from antiphon.errors import ConfigError
from antiphon.protocols import deepgram_stt as dg
from antiphon.testing.deepgram import check_upgrade
from antiphon.testing.faults import FaultPlan
from antiphon.testing.listening import (
    FakeListenServer,
    ListenerConnection,
    ListenerStats,
    Run,
    phrase_pitch,
)

__all__ = ["DEFAULT_API_KEY", "DeepgramSTTFakeStats", "FakeDeepgramSTT", "phrase_pitch"]

DEFAULT_API_KEY = "test-key"
#: Endpointing when the query has none (Deepgram's own default is 10 ms).
DEFAULT_ENDPOINTING = 0.3
#: Audio between interim results, and silence after which an empty final is sent.
INTERIM_EVERY = 0.25
SILENCE_FINAL = 1.0


@dataclass
class DeepgramSTTFakeStats(ListenerStats):
    """What the fake saw and did (read it from the test after the fact)."""

    queries: list[dict[str, str]] = field(default_factory=list)
    results_sent: int = 0
    speech_started: list[float] = field(default_factory=list)
    """``timestamp`` of every ``SpeechStarted`` sent."""
    utterance_ends: list[float] = field(default_factory=list)
    """``last_word_end`` of every ``UtteranceEnd`` sent."""


class FakeDeepgramSTT(FakeListenServer):
    """``ws://127.0.0.1:PORT/v1/listen`` with the Deepgram live STT protocol."""

    stats: DeepgramSTTFakeStats

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
        self.stats = DeepgramSTTFakeStats()

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        queries: list[dict[str, str]] = []

        def check_query(q: dict[str, str]) -> None:
            dg.options_from_query(q)
            queries.append(q)

        refusal = check_upgrade(
            connection,
            request,
            path=dg.PATH,
            api_key=self.api_key,
            check_query=check_query,
            errors=(ConfigError,),
        )
        if refusal is None:
            self.count_connection(connection)
            self.stats.queries.extend(queries)
        return refusal

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        q = {k: v[-1] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        options = dg.options_from_query(q)
        await self.run(_Conn(self, ws, index=self.take_index(ws), options=options))


class _Conn(ListenerConnection):
    """One client connection of the fake."""

    IDLE_CLOSE = (
        1011,
        "NET-0001: the service has not received audio data or a KeepAlive "
        "message within the timeout window",
    )
    AGE_CLOSE = (1011, "NET-0002: maximum connection duration")
    DROP_REASON = "NET-0000: dropped by fault plan"

    def __init__(
        self,
        server: FakeDeepgramSTT,
        ws: ServerConnection,
        *,
        index: int,
        options: dg.ListenOptions,
    ) -> None:
        super().__init__(server, ws, index=index, rate=options.sample_rate)
        self.stats = server.stats
        self.options = options
        ep = options.endpointing
        self.endpoint: float | None = (
            None if ep is False else (DEFAULT_ENDPOINTING if ep is None else max(ep / 1000, 0.0))
        )
        self.request_id = f"fake-stt-{index}"
        self.speech_heard_until = -1  # sample: end of the last voiced run announced
        self.last_word_end = 0.0  # seconds: the end of the last word of any result
        self.utterance_ended_at = 0.0  # last_word_end of the last UtteranceEnd

    def decode(self, wire: bytes) -> npt.NDArray[np.int16]:
        enc = self.options.encoding
        pcm = wire if enc == "linear16" else decode_to_pcm(enc, wire)
        x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
        if self.options.channels > 1:
            x = x[: len(x) // self.options.channels * self.options.channels]
            x = x.reshape(-1, self.options.channels)[:, 0].copy()
        return x

    async def send_failure(self) -> None:
        await self.send_json(
            {"type": "Error", "variant": "InternalError", "description": "fault plan"}
        )
        await self.close(1011, "NET-0000: fault plan")

    async def on_control(self, kind: str | None, msg: Any, raw: str) -> bool:
        if kind == "Finalize":
            if not await self.answer_gate():
                return False
            await self._final(from_finalize=True)
        elif kind == "CloseStream":
            if not await self.answer_gate():
                return False
            await self._close_stream()
            return False
        else:
            await self.send_json(
                {
                    "type": "Error",
                    "variant": "SchemaError",
                    "description": f"could not parse the client message (type {kind!r})",
                    "message": raw[:200],
                }
            )
        return True

    # -- recognition
    def _words(self, run: Run, upto: int) -> list[dict[str, Any]]:
        """Word entries of ``run`` as heard up to sample ``upto`` (connection seconds)."""
        return [
            {
                "word": tok.strip(".,?!;:").lower(),
                "start": round(start, 6),
                "end": round(end, 6),
                "confidence": 0.99,
                "punctuated_word": tok,
            }
            for tok, start, end in self.heard(run, upto)
        ]

    def _transcribe(self, runs: Sequence[Run], upto: int) -> list[dict[str, Any]]:
        words: list[dict[str, Any]] = []
        for run in runs:
            words.extend(self._words(run, upto))
        return words

    async def _send_results(
        self,
        start: int,
        end: int,
        words: list[dict[str, Any]],
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
    ) -> None:
        plan = self.plan
        await self.first_answer()
        transcript = " ".join(w["punctuated_word"] for w in words)
        if words:
            self.last_word_end = max(self.last_word_end, float(words[-1]["end"]))
        msg = {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round((end - start) / self.rate, 6),
            "start": round(start / self.rate, 6),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {"transcript": transcript, "confidence": 0.99 if words else 0.0, "words": words}
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": self.options.model, "version": "fake", "arch": "fake"},
                "model_uuid": "00000000-0000-0000-0000-000000000000",
            },
        }
        await self.send_json(msg)
        self.stats.results_sent += 1
        if plan.chunk_interval:
            await asyncio.sleep(plan.chunk_interval)

    async def advance(self) -> None:
        """After new audio: SpeechStarted, the finals that endpointing allows, an interim,
        then UtteranceEnd."""
        if self.options.vad_events:
            runs = self.runs(self.finalized)
            await self._speech_started(runs)
        while True:
            runs = self.runs(self.finalized)
            gap = round(self.endpoint * self.rate) if self.endpoint is not None else None
            done = [r for r in runs if gap is not None and r.end + max(gap, 1) <= self.samples]
            if done:
                last = done[-1]
                end = last.end + max(gap or 0, 1)
                words = self._transcribe(done, end)
                await self._send_results(
                    self.finalized, end, words, is_final=True, speech_final=True
                )
                self.finalized = self.last_interim = end
                continue
            if not runs and self.samples - self.finalized >= SILENCE_FINAL * self.rate:
                await self._send_results(self.finalized, self.samples, [], is_final=True)
                self.finalized = self.last_interim = self.samples
            break
        if (
            self.options.interim_results
            and self.samples - self.last_interim >= INTERIM_EVERY * self.rate
        ):
            runs = self.runs(self.finalized)
            self.last_interim = self.samples
            if runs:
                words = self._transcribe(runs, self.samples)
                await self._send_results(self.finalized, self.samples, words, is_final=False)
        if self.options.utterance_end_ms is not None:
            await self._utterance_end(self.options.utterance_end_ms / 1000)

    async def _speech_started(self, runs: list[Run]) -> None:
        """``SpeechStarted`` for each voiced run that begins after the last announced one."""
        for run in runs:
            if run.start > self.speech_heard_until:
                t = round(run.start / self.rate, 6)
                self.stats.speech_started.append(t)
                await self.send_json({"type": "SpeechStarted", "channel": [0], "timestamp": t})
            self.speech_heard_until = max(self.speech_heard_until, run.end)

    async def _utterance_end(self, gap: float) -> None:
        """``UtteranceEnd`` once ``gap`` seconds passed since the last word, no new word
        begun; the words still interim get their final result first."""
        end = self.last_word_end
        if end <= self.utterance_ended_at or self.samples / self.rate - end < gap:
            return
        since = max(self.finalized, round(end * self.rate) + 1)
        if self.runs(since):
            return  # someone is speaking again: no gap after all
        if self.samples > self.finalized:
            runs = self.runs(self.finalized)
            words = self._transcribe(runs, self.samples)
            if words:
                await self._send_results(self.finalized, self.samples, words, is_final=True)
                self.finalized = self.last_interim = self.samples
        self.utterance_ended_at = end
        self.stats.utterance_ends.append(end)
        await self.send_json({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": end})

    async def _final(self, *, from_finalize: bool) -> None:
        """A final result for everything not finalized yet (nothing if there is nothing)."""
        if self.samples <= self.finalized:
            return
        runs = self.runs(self.finalized)
        words = self._transcribe(runs, self.samples)
        await self._send_results(
            self.finalized,
            self.samples,
            words,
            is_final=True,
            speech_final=not from_finalize and bool(words),
            from_finalize=from_finalize,
        )
        self.finalized = self.last_interim = self.samples

    async def _close_stream(self) -> None:
        await self._final(from_finalize=False)
        await self.send_json(
            {
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": self.request_id,
                "sha256": "0" * 64,
                "created": "2024-01-01T00:00:00.000Z",
                "duration": round(self.samples / self.rate, 6),
                "channels": self.options.channels,
            }
        )
        for i in range(self.plan.audio_after_done):
            await self._send_results(
                self.samples, self.samples + self.rate, [], is_final=i % 2 == 0
            )
        await self.close(1000, "")
