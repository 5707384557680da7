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
import contextlib
import json
import math
from collections.abc import Iterable, Sequence
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
from antiphon.protocols import deepgram_stt as dg
from antiphon.testing.faults import ABORT, FaultPlan
from antiphon.testing.server import FakeWsServer
from antiphon.testing.synth import tone_duration

DEFAULT_API_KEY = "test-key"
#: Energy analysis block and the RMS above which a block is voiced.
BLOCK_SECONDS = 0.01
VOICED_RMS = 500.0
#: Silence shorter than this does not split a voiced run.
MIN_GAP = 0.1
#: Endpointing when the query has none (Deepgram's own default is 10 ms).
DEFAULT_ENDPOINTING = 0.3
#: Audio between interim results, and silence after which an empty final is sent.
INTERIM_EVERY = 0.25
SILENCE_FINAL = 1.0
#: A phrase matches a run whose pitch is within this many Hz of the phrase's.
PITCH_TOLERANCE = 6.0


def phrase_pitch(text: str) -> float:
    """The pitch of :func:`~antiphon.testing.synth.tone_for_text` for ``text``."""
    import zlib

    return 220.0 + (zlib.crc32(text.encode("utf-8")) % 500)


@dataclass
class DeepgramSTTFakeStats:
    """What the fake saw and did (read it from the test after the fact)."""

    connections: int = 0
    open_connections: int = 0
    queries: list[dict[str, str]] = field(default_factory=list)
    audio_messages: int = 0
    audio_bytes: int = 0
    control: list[str] = field(default_factory=list)
    """Types of the JSON messages received, in order."""
    results_sent: int = 0
    speech_started: list[float] = field(default_factory=list)
    """``timestamp`` of every ``SpeechStarted`` sent."""
    utterance_ends: list[float] = field(default_factory=list)
    """``last_word_end`` of every ``UtteranceEnd`` sent."""
    closes_sent: list[int] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return self.control.count(kind)


@dataclass(frozen=True, slots=True)
class _Run:
    start: int  # samples from the connection's first sample
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
    gap = max(1, round(MIN_GAP / BLOCK_SECONDS))
    i = 0
    while i < n:
        if not voiced[i]:
            i += 1
            continue
        j = i
        while j < n and voiced[j]:
            j += 1
        if runs and (i * block + base) - runs[-1].end < gap * block:
            runs[-1] = _Run(runs[-1].start, j * block + base)
        else:
            runs.append(_Run(i * block + base, j * block + base))
        i = j
    return runs


class FakeDeepgramSTT(FakeWsServer):
    """``ws://127.0.0.1:PORT/v1/listen`` with the Deepgram live STT protocol."""

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
        self.stats = DeepgramSTTFakeStats()
        self._indices: dict[int, int] = {}

    def identify(self, pitch: float) -> str:
        """The phrase of the vocabulary whose tone has ``pitch`` (``"unknown"`` if none)."""
        best = min(self.vocabulary, key=lambda p: abs(phrase_pitch(p) - pitch), default=None)
        if best is None or abs(phrase_pitch(best) - pitch) > PITCH_TOLERANCE:
            return "unknown"
        return best

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != dg.PATH:
            return connection.respond(404, f"unknown path {parts.path}; use {dg.PATH}\n")
        auth = request.headers.get("Authorization", "")
        if auth not in (f"Token {self.api_key}", f"Bearer {self.api_key}"):
            resp = connection.respond(401, "invalid credentials\n")
            resp.headers["dg-error"] = "Invalid credentials."
            return resp
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            dg.options_from_query(q)
        except ConfigError as exc:
            resp = connection.respond(400, f"{exc}\n")
            resp.headers["dg-error"] = str(exc)
            return resp
        self._indices[id(connection)] = self.stats.connections
        self.stats.connections += 1
        self.stats.queries.append(q)
        return None

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        q = {k: v[-1] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        conn = _Conn(
            self,
            ws,
            index=self._indices.pop(id(ws), self.stats.connections),
            options=dg.options_from_query(q),
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
        server: FakeDeepgramSTT,
        ws: ServerConnection,
        *,
        index: int,
        options: dg.ListenOptions,
    ) -> None:
        self.server = server
        self.plan = server.plan
        self.stats = server.stats
        self.ws = ws
        self.index = index
        self.options = options
        self.rate = options.sample_rate
        ep = options.endpointing
        self.endpoint: float | None = (
            None if ep is False else (DEFAULT_ENDPOINTING if ep is None else max(ep / 1000, 0.0))
        )
        loop = asyncio.get_running_loop()
        self.opened = loop.time()
        self.last_message = loop.time()
        self.pcm = np.zeros(0, dtype=np.int16)
        self.chunks: list[npt.NDArray[np.int16]] = []
        self.received = 0  # samples
        self.finalized = 0
        self.last_interim = 0
        self.messages = 0
        self.audio_messages = 0
        self.answered_once = False
        self.errored = False
        self.closing = False
        self.request_id = f"fake-stt-{index}"
        self.speech_heard_until = -1  # sample: end of the last voiced run announced
        self.last_word_end = 0.0  # seconds: the end of the last word of any result
        self.utterance_ended_at = 0.0  # last_word_end of the last UtteranceEnd

    # -- plumbing
    async def close(self, code: int, reason: str = "", *, drain: bool = True) -> None:
        """Close with ``code``; ``drain``: read what the client still sends meanwhile.

        Unread client messages pause the socket's reading, so the client's close frame
        would not be read until the close timeout; draining completes the handshake at
        once, as a server that keeps reading does. Only the reading task may drain.
        """
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
        await self.ws.send(json.dumps(msg))

    async def serve(self) -> None:
        plan = self.plan
        if plan.close_on_open is not None:
            await self.close(plan.close_on_open, plan.close_on_open_reason)
            return
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
            if (
                plan.idle_close_after is not None
                and now - self.last_message > plan.idle_close_after
            ):
                await self.close(
                    1011,
                    "NET-0001: the service has not received audio data or a KeepAlive "
                    "message within the timeout window",
                    drain=False,
                )
                return
            if plan.max_connection_age is not None and now - self.opened > plan.max_connection_age:
                await self.close(1011, "NET-0002: maximum connection duration", drain=False)
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
            if silent:
                continue
            if kind == "KeepAlive":
                continue
            if kind == "Finalize":
                if not await self._answer_gate():
                    return
                await self._final(from_finalize=True)
            elif kind == "CloseStream":
                if not await self._answer_gate():
                    return
                await self._close_stream()
                return
            else:
                await self.send_json(
                    {
                        "type": "Error",
                        "variant": "SchemaError",
                        "description": f"could not parse the client message (type {kind!r})",
                        "message": raw[:200],
                    }
                )

    def _append(self, wire: bytes) -> None:
        enc = self.options.encoding
        pcm = wire if enc == "linear16" else decode_to_pcm(enc, wire)
        x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
        if self.options.channels > 1:
            x = x[: len(x) // self.options.channels * self.options.channels]
            x = x.reshape(-1, self.options.channels)[:, 0].copy()
        self.chunks.append(x)
        self.received += len(x)

    def _samples(self) -> npt.NDArray[np.int16]:
        if self.chunks:
            self.pcm = np.concatenate([self.pcm, *self.chunks])
            self.chunks = []
        return self.pcm

    async def _audio_faults(self) -> bool:
        """Apply the faults counted in audio messages; False when the connection ended."""
        plan = self.plan
        if plan.close_mid_audio is not None and self.audio_messages >= plan.close_after_chunks:
            await self.close(plan.close_mid_audio, plan.close_reason)
            return False
        if plan.error_mid_stream and self.audio_messages >= plan.close_after_chunks:
            if not self.errored:
                self.errored = True
                await self.send_json(
                    {"type": "Error", "variant": "InternalError", "description": "fault plan"}
                )
                await self.close(1011, "NET-0000: fault plan")
            return False
        return True

    async def _answer_gate(self) -> bool:
        """Before answering a Finalize/CloseStream: drop or delay per plan."""
        if self.index < self.plan.drop_before_audio:
            await self.close(1011, "NET-0000: dropped by fault plan")
            return False
        if self.plan.first_audio_delay:
            await asyncio.sleep(self.plan.first_audio_delay)
        return True

    # -- recognition
    def _words(self, run: _Run, upto: int) -> list[dict[str, Any]]:
        """Word entries of ``run`` as heard up to sample ``upto`` (connection seconds)."""
        x = self._samples()[run.start : min(run.end, upto)]
        if len(x) < 2:
            return []
        signs = np.signbit(x)
        crossings = int(np.count_nonzero(signs[1:] != signs[:-1]))
        pitch = crossings / 2 / (len(x) / self.rate)
        phrase = self.server.identify(pitch)
        tokens = phrase.split()
        heard = len(x) / self.rate
        expected = tone_duration(phrase) if phrase != "unknown" else heard
        # Energy detection trims the tone's fade-in/out: 90% heard is the whole phrase.
        if heard >= 0.9 * expected:
            n = len(tokens)
        else:
            n = max(1, math.floor(len(tokens) * heard / expected))
        step = expected / len(tokens)
        t0 = run.start / self.rate
        out = []
        for i, tok in enumerate(tokens[:n]):
            start = t0 + i * step
            end = min(t0 + (i + 1) * step, (run.start + len(x)) / self.rate)
            out.append(
                {
                    "word": tok.strip(".,?!;:").lower(),
                    "start": round(start, 6),
                    "end": round(max(start, end), 6),
                    "confidence": 0.99,
                    "punctuated_word": tok,
                }
            )
        return out

    def _transcribe(self, runs: Sequence[_Run], upto: int) -> list[dict[str, Any]]:
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
        if not self.answered_once:
            self.answered_once = True
            if plan.first_audio_delay:
                await asyncio.sleep(plan.first_audio_delay)
            if plan.malformed_mid_stream:
                await self.ws.send("{this is not json")
                await self.send_json({"type": "SomethingNew", "value": 1})
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

    async def _advance(self) -> None:
        """After new audio: SpeechStarted, the finals that endpointing allows, an interim,
        then UtteranceEnd."""
        x = self._samples()
        if self.options.vad_events:
            runs = _runs(x[self.finalized : self.received], self.rate, self.finalized)
            await self._speech_started(runs)
        while True:
            runs = _runs(x[self.finalized : self.received], self.rate, self.finalized)
            gap = round(self.endpoint * self.rate) if self.endpoint is not None else None
            done = [r for r in runs if gap is not None and r.end + max(gap, 1) <= self.received]
            if done:
                last = done[-1]
                end = last.end + max(gap or 0, 1)
                words = self._transcribe(done, end)
                await self._send_results(
                    self.finalized, end, words, is_final=True, speech_final=True
                )
                self.finalized = self.last_interim = end
                continue
            if not runs and self.received - self.finalized >= SILENCE_FINAL * self.rate:
                await self._send_results(self.finalized, self.received, [], is_final=True)
                self.finalized = self.last_interim = self.received
            break
        if (
            self.options.interim_results
            and self.received - self.last_interim >= INTERIM_EVERY * self.rate
        ):
            runs = _runs(x[self.finalized : self.received], self.rate, self.finalized)
            self.last_interim = self.received
            if runs:
                words = self._transcribe(runs, self.received)
                await self._send_results(self.finalized, self.received, words, is_final=False)
        if self.options.utterance_end_ms is not None:
            await self._utterance_end(self.options.utterance_end_ms / 1000)

    async def _speech_started(self, runs: list[_Run]) -> None:
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
        if end <= self.utterance_ended_at or self.received / self.rate - end < gap:
            return
        x = self._samples()
        since = max(self.finalized, round(end * self.rate) + 1)
        if _runs(x[since : self.received], self.rate, since):
            return  # someone is speaking again: no gap after all
        if self.received > self.finalized:
            runs = _runs(x[self.finalized : self.received], self.rate, self.finalized)
            words = self._transcribe(runs, self.received)
            if words:
                await self._send_results(self.finalized, self.received, words, is_final=True)
                self.finalized = self.last_interim = self.received
        self.utterance_ended_at = end
        self.stats.utterance_ends.append(end)
        await self.send_json({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": end})

    async def _final(self, *, from_finalize: bool) -> None:
        """A final result for everything not finalized yet (nothing if there is nothing)."""
        if self.received <= self.finalized:
            return
        x = self._samples()
        runs = _runs(x[self.finalized : self.received], self.rate, self.finalized)
        words = self._transcribe(runs, self.received)
        await self._send_results(
            self.finalized,
            self.received,
            words,
            is_final=True,
            speech_final=not from_finalize and bool(words),
            from_finalize=from_finalize,
        )
        self.finalized = self.last_interim = self.received

    async def _close_stream(self) -> None:
        await self._final(from_finalize=False)
        await self.send_json(
            {
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": self.request_id,
                "sha256": "0" * 64,
                "created": "2024-01-01T00:00:00.000Z",
                "duration": round(self.received / self.rate, 6),
                "channels": self.options.channels,
            }
        )
        for i in range(self.plan.audio_after_done):
            await self._send_results(
                self.received, self.received + self.rate, [], is_final=i % 2 == 0
            )
        await self.close(1000, "")
