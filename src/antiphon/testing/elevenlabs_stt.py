"""A fake ElevenLabs Scribe realtime server (``/v1/speech-to-text/realtime``).

It speaks the realtime wire protocol on loopback: checks the path, the ``xi-api-key``
header (or a ``token`` query parameter) and the query (``model_id``, ``audio_format``,
``commit_strategy`` and the VAD thresholds, ``keyterms``, ``include_timestamps``);
answers the upgrade with ``session_started`` (its ``config``); takes
``input_audio_chunk`` messages (base64 audio at the ``sample_rate`` the format names,
else an ``input_error``), sends ``partial_transcript`` while a phrase is heard, and on
each commit (the client's, or with ``commit_strategy=vad`` its own after
``vad_silence_threshold_secs`` of silence) ``committed_transcript`` and, with
``include_timestamps``, ``committed_transcript_with_timestamps`` (words and the spacing
between them, seconds of the connection's audio). Every message it sends is in
:attr:`FakeElevenLabsSTT.sent` for witness tests.

Recognition is the shared one of :mod:`antiphon.testing.listening`.

Fault plan fields that apply: ``hang_connect``, ``reject_status``, ``close_on_open``;
``silent_after`` (client messages); ``close_mid_audio`` and ``error_mid_stream`` (a
``transcriber_error``, then close 1011) after ``close_after_chunks`` audio messages;
``drop_before_audio`` (close 1011 at the first commit of the first N connections,
before answering); ``malformed_mid_stream`` (garbage and an unknown type before the first
transcript); ``audio_after_done`` (stale partials after answering a commit);
``first_audio_delay`` (before the first transcript and before answering each commit);
``chunk_interval`` (after each transcript); ``idle_close_after`` and
``max_connection_age`` (close 1011).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
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
from antiphon.protocols import elevenlabs_stt as xi
from antiphon.testing.faults import FaultPlan
from antiphon.testing.listening import FakeListenServer, ListenerConnection, ListenerStats, Run

__all__ = ["DEFAULT_API_KEY", "ElevenLabsSTTFakeStats", "FakeElevenLabsSTT"]

DEFAULT_API_KEY = "test-key"
DEFAULT_VAD_SILENCE = 1.5
INTERIM_EVERY = 0.25


@dataclass
class ElevenLabsSTTFakeStats(ListenerStats):
    """What the fake saw and did (read it from the test after the fact)."""

    queries: list[dict[str, list[str]]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    """The JSON messages received, parsed (audio left in base64)."""
    commits: int = 0


class FakeElevenLabsSTT(FakeListenServer):
    """``ws://127.0.0.1:PORT/v1/speech-to-text/realtime`` with Scribe's protocol."""

    stats: ElevenLabsSTTFakeStats

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
        self.stats = ElevenLabsSTTFakeStats()
        self.sent: list[dict[str, Any]] = []

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != xi.PATH:
            return connection.respond(404, f"unknown path {parts.path}; use {xi.PATH}\n")
        q = parse_qs(parts.query)
        if (
            request.headers.get("xi-api-key", "") != self.api_key
            and q.get("token", [""])[-1] != self.api_key
        ):
            return connection.respond(401, '{"detail": "invalid api key"}')
        try:
            xi.options_from_query(q)
        except ConfigError as exc:
            return connection.respond(400, json.dumps({"detail": str(exc)}))
        self.count_connection(connection)
        self.stats.queries.append(q)
        self.stats.headers.append({k: v for k, v in request.headers.raw_items()})
        return None

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        options = xi.options_from_query(parse_qs(urlsplit(ws.request.path).query))
        await self.run(_Conn(self, ws, index=self.take_index(ws), options=options))


class _Conn(ListenerConnection):
    """One client connection of the fake."""

    def __init__(
        self,
        server: FakeElevenLabsSTT,
        ws: ServerConnection,
        *,
        index: int,
        options: xi.ScribeOptions,
    ) -> None:
        super().__init__(server, ws, index=index, rate=options.sample_rate)
        self.server = server
        self.stats = server.stats
        self.options = options
        silence = options.vad_silence_threshold_secs
        self.vad_silence = DEFAULT_VAD_SILENCE if silence is None else silence

    async def send_json(self, msg: dict[str, Any]) -> None:
        self.server.sent.append(msg)
        await super().send_json(msg)

    async def _error(self, kind: str, error: str, code: int = 1008) -> bool:
        await self.send_json({"message_type": kind, "error": error})
        await self.close(code, kind)
        return False

    async def on_open(self) -> None:
        o = self.options
        config: dict[str, Any] = {
            "sample_rate": o.sample_rate,
            "audio_format": o.audio_format,
            "commit_strategy": o.commit_strategy,
            "model_id": o.model_id,
            "include_timestamps": o.include_timestamps,
        }
        if o.language_code is not None:
            config["language_code"] = o.language_code
        if o.keyterms:
            config["keyterms"] = list(o.keyterms)
        if o.vad_silence_threshold_secs is not None:
            config["vad_silence_threshold_secs"] = o.vad_silence_threshold_secs
        await self.send_json(
            {
                "message_type": "session_started",
                "session_id": f"{self.index:032x}",
                "config": config,
            }
        )

    async def on_frame(self, raw: str | bytes) -> bool:
        if isinstance(raw, bytes):
            return await self._error("input_error", "send audio as input_audio_chunk messages")
        try:
            msg = json.loads(raw)
        except ValueError:
            return await self._error("invalid_request", "not JSON")
        if not isinstance(msg, dict) or msg.get("message_type") != "input_audio_chunk":
            kind = msg.get("message_type") if isinstance(msg, dict) else None
            return await self._error("invalid_request", f"unexpected message {kind!r}")
        self.stats.received.append(msg)
        self.stats.control.append("commit" if msg.get("commit") else "input_audio_chunk")
        if msg.get("sample_rate") != self.rate:
            return await self._error(
                "input_error", f"sample_rate {msg.get('sample_rate')} is not {self.rate}"
            )
        try:
            wire = base64.b64decode(str(msg.get("audio_base_64", "")), validate=True)
        except (binascii.Error, ValueError):
            return await self._error("input_error", "audio_base_64 is not base64")
        if wire and not await super().on_frame(wire):
            return False
        if msg.get("commit") is True:
            return await self._client_commit()
        return True

    def decode(self, wire: bytes) -> npt.NDArray[np.int16]:
        pcm = wire if self.options.width == 2 else decode_to_pcm("mulaw", wire)
        return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")

    async def send_failure(self) -> None:
        await self._error("transcriber_error", "fault plan", 1011)

    async def on_control(self, kind: str | None, msg: Any, raw: str) -> bool:
        raise AssertionError("every text frame is handled by on_frame")  # pragma: no cover

    # -- recognition
    def _words(self, runs: list[Run], upto: int) -> list[tuple[str, float, float]]:
        return [w for run in runs for w in self.heard(run, upto)]

    async def advance(self) -> None:
        """After new audio: the service's own commit (``vad``), then a partial."""
        if self.options.commit_strategy == "vad":
            gap = max(1, round(self.vad_silence * self.rate))
            runs = self.runs(self.finalized)
            done = [r for r in runs if r.end + gap <= self.samples]
            if done:
                await self._commit(done, done[-1].end + gap)
        runs = self.runs(self.finalized)
        if runs and self.samples - self.last_interim >= INTERIM_EVERY * self.rate:
            self.last_interim = self.samples
            await self.first_answer()
            words = self._words(runs, self.samples)
            await self.send_json(
                {"message_type": "partial_transcript", "text": " ".join(w[0] for w in words)}
            )
            if self.plan.chunk_interval:
                await asyncio.sleep(self.plan.chunk_interval)

    async def _client_commit(self) -> bool:
        self.stats.commits += 1
        if self.silent:
            return True
        if not await self.answer_gate():
            return False
        await self._commit(self.runs(self.finalized), self.samples)
        for _ in range(self.plan.audio_after_done):
            await self.ws.send(json.dumps({"message_type": "partial_transcript", "text": "stale"}))
        return True

    async def _commit(self, runs: list[Run], until: int) -> None:
        """Commit the audio before sample ``until`` (``runs`` heard in it)."""
        await self.first_answer()
        words = self._words(runs, until)
        text = " ".join(w[0] for w in words)
        await self.send_json({"message_type": "committed_transcript", "text": text})
        if self.options.include_timestamps:
            timed: list[dict[str, Any]] = []
            for i, (tok, start, end) in enumerate(words):
                if i:
                    prev = words[i - 1][2]
                    timed.append(
                        {
                            "text": " ",
                            "start": round(prev, 3),
                            "end": round(start, 3),
                            "type": "spacing",
                        }
                    )
                timed.append(
                    {
                        "text": tok,
                        "start": round(start, 3),
                        "end": round(end, 3),
                        "type": "word",
                        "logprob": -0.01,
                    }
                )
            await self.send_json(
                {
                    "message_type": "committed_transcript_with_timestamps",
                    "text": text,
                    "language_code": self.options.language_code or "en",
                    "words": timed,
                }
            )
        self.finalized = self.last_interim = until
        if self.plan.chunk_interval:
            await asyncio.sleep(self.plan.chunk_interval)
