"""A fake Gladia live STT server (v2: ``POST /v2/live`` and the session WebSocket).

Two loopback listeners, one fake: the HTTP endpoint ``POST /v2/live`` (its port is the
fake's :attr:`~FakeGladiaSTT.url`, the plugin's ``base_url``) checks the method, the
``x-gladia-key`` and the configuration (:func:`~antiphon.protocols.gladia_stt.options_from_init`)
and answers ``{"id", "created_at", "url"}`` with a session URL on the WebSocket listener
(``/v2/live?token=...``); the WebSocket refuses an unknown token, sends
``start_recording`` (``start_session`` belongs to the ``POST``: the official SDK makes it
up from the answer), takes binary audio and ``stop_recording``,
and sends ``speech_start``, partial and final ``transcript`` messages and
``speech_end``; on ``stop_recording`` the last utterance, ``end_recording``,
``end_session`` and a 1000 close. When the session asked for acknowledgments
(``messages_config.receive_acknowledgments``, which the official SDK always sets), each
audio message is answered by an ``audio_chunk`` acknowledgment (its byte and time range)
and ``stop_recording`` by its own. Every message it sends is in :attr:`FakeGladiaSTT.sent`,
and each one is a message of the official SDK's types (``tests/test_sdk_gladia.py``): the
protocol has no ``error`` message, so a failure is a refused acknowledgment
(``acknowledged: false`` with its ``error``) and a close, and a client message of an
unknown type is refused with a 1003 close.

Recognition is that of the other STT fakes (:mod:`antiphon.testing.listening`): test
speech is :func:`antiphon.testing.synth.tone_for_text`, voiced runs found by energy and
named by pitch from the ``vocabulary``. A run followed by the session's ``endpointing``
seconds of silence is one final utterance.

Fault plan fields that apply: on ``POST /v2/live``, ``hang_connect`` (accept TCP, never
answer) and ``reject_status`` (429 and 503 with ``Retry-After: 1``); on the WebSocket,
``close_on_open``; ``silent_after`` (client messages, audio included);
``close_mid_audio`` and ``error_mid_stream`` (a refused ``audio_chunk``, then close 1011)
after ``close_after_chunks`` audio messages; ``drop_before_audio`` (close 1011 at the
``stop_recording`` of the first N connections, before answering);
``malformed_mid_stream`` (garbage and an unknown type before the first transcript);
``audio_after_done`` (stale transcripts after ``end_recording``); ``first_audio_delay``
(before the first transcript and before answering ``stop_recording``);
``chunk_interval`` (after each transcript); ``idle_close_after`` and
``max_connection_age`` (close 1001 / 1011).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from antiphon.audio.codecs import decode_to_pcm
from antiphon.errors import ConfigError
from antiphon.protocols import gladia_stt as gl
from antiphon.testing.faults import FaultPlan
from antiphon.testing.http_server import FakeHttpServer, HttpConnection
from antiphon.testing.listening import FakeListenServer, ListenerConnection, ListenerStats, Run

__all__ = ["DEFAULT_API_KEY", "FakeGladiaSTT", "GladiaFakeStats", "InitRequest"]

DEFAULT_API_KEY = "test-key"
INTERIM_EVERY = 0.25
_tokens = itertools.count(1)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class InitRequest:
    """One request to the HTTP endpoint as the fake read it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int


@dataclass
class _InitStats:
    connections: int = 0
    open_connections: int = 0
    requests: list[InitRequest] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    dropped_requests: int = 0
    idle_closes: int = 0
    cancels: int = 0


@dataclass
class GladiaFakeStats(ListenerStats):
    """What the fake saw and did (read it from the test after the fact)."""

    sessions: list[dict[str, Any]] = field(default_factory=list)
    """The configuration of every session created (``POST /v2/live`` bodies)."""
    answers: list[dict[str, Any]] = field(default_factory=list)
    """The answers to those requests (``{"id", "created_at", "url"}``)."""
    init: _InitStats = field(default_factory=_InitStats)
    transcripts_sent: int = 0


class _InitServer(FakeHttpServer):
    """``POST /v2/live`` of :class:`FakeGladiaSTT`."""

    stats: _InitStats

    def __init__(self, fake: FakeGladiaSTT, plan: FaultPlan) -> None:
        super().__init__(plan, api_key=fake.api_key, host=fake.host, port=0, reject_requests=None)
        self.fake = fake
        self.stats = fake.stats.init

    def connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> _InitConn:
        return _InitConn(self, reader, writer, index)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a session's opening handshake begins here: counted (held ones included) as the
        # WebSocket fakes count their upgrades
        self.fake.upgrades += 1
        await super()._handle(reader, writer)


def _error(status: int, message: str) -> str:
    return json.dumps({"statusCode": status, "message": message})


class _InitConn(HttpConnection[InitRequest]):
    def __init__(
        self,
        server: _InitServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        index: int,
    ) -> None:
        super().__init__(server, reader, writer, index)
        self.server = server

    def make_request(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> InitRequest:
        return InitRequest(method, target.split("?", 1)[0], headers, body, self.index)

    def error_text(self, status: int, message: str | None) -> str:
        return _error(status, message or "request too large")

    def error_head(self, status: int, length: int, keep_alive: bool) -> list[str]:
        return [
            "Content-Type: application/json",
            f"Content-Length: {length}",
            "Connection: " + ("keep-alive" if keep_alive else "close"),
        ]

    def rejection(self, status: int) -> tuple[str, dict[str, str]]:
        extra = {"Retry-After": "1"} if status in (429, 503) else {}
        return _error(status, f"rejected by fault plan ({status})"), extra

    def check(self, request: InitRequest) -> tuple[int, str] | None:
        if request.path.rstrip("/") != gl.INIT_PATH:
            return 404, _error(404, f"Cannot {request.method} {request.path}")
        if request.method != "POST":
            return 405, _error(405, "use POST")
        if request.headers.get("x-gladia-key") != self.server.api_key:
            return 401, _error(401, "Invalid or missing x-gladia-key")
        try:
            body = json.loads(request.body)
            if not isinstance(body, dict):
                raise ConfigError("the body is no JSON object")
            gl.options_from_init(body)
        except (ValueError, ConfigError) as exc:
            return 422, _error(422, f"Invalid configuration: {exc}")
        return None

    async def answer(self, request: InitRequest, keep_alive: bool) -> bool:
        body = json.loads(request.body)
        fake = self.server.fake
        token = f"00000000-0000-4000-8000-{next(_tokens):012d}"
        fake.tokens[token] = gl.options_from_init(body)
        messages = body.get("messages_config") or {}
        fake.acks[token] = messages.get("receive_acknowledgments") is True
        fake.stats.sessions.append(body)
        answer = {
            "id": token,
            "created_at": _now(),
            "url": f"ws://{fake.host}:{fake.ws_port}{gl.INIT_PATH}?token={token}",
        }
        fake.stats.answers.append(answer)
        data = json.dumps(answer).encode()
        self.server.stats.statuses.append(201)
        head = [
            "HTTP/1.1 201 Created",
            *self.error_head(201, len(data), keep_alive),
        ]
        await self.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
        return keep_alive


class FakeGladiaSTT(FakeListenServer):
    """``http://127.0.0.1:PORT/v2/live`` and its sessions' WebSocket, as Gladia's v2."""

    stats: GladiaFakeStats
    scheme = "http"  # :attr:`url` is the HTTP endpoint's, the plugin's base_url

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        vocabulary: Iterable[str] = (),
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(plan, vocabulary=vocabulary, api_key=api_key, host=host, port=0)
        self.stats = GladiaFakeStats()
        self.sent: list[dict[str, Any]] = []
        self.tokens: dict[str, gl.LiveOptions] = {}
        self.acks: dict[str, bool] = {}  # token: the session asked for acknowledgments
        self.ws_port = 0
        # the HTTP endpoint follows only the plan's faults of a request
        http_plan = FaultPlan(hang_connect=self.plan.hang_connect)
        if self.plan.reject_status is not None:
            http_plan = FaultPlan(
                hang_connect=self.plan.hang_connect, reject_status=self.plan.reject_status
            )
        self._init = _InitServer(self, http_plan)
        self._init.port = port

    @property
    def ports(self) -> tuple[int, int]:
        """The HTTP endpoint's port and the WebSocket's."""
        return (self.port, self.ws_port)

    async def start(self) -> str:
        """Listen on both ports; return the HTTP endpoint's base URL."""
        await super().start()
        self.ws_port = self.port
        await self._init.start()
        self.port = self._init.port
        return self.url

    async def aclose(self) -> None:
        await self._init.aclose()
        await super().aclose()

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != gl.INIT_PATH:
            return connection.respond(404, f"unknown path {parts.path}\n")
        token = parse_qs(parts.query).get("token", [""])[-1]
        if token not in self.tokens:
            return connection.respond(401, _error(401, "Invalid or expired session token"))
        self.count_connection(connection)
        return None

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        token = parse_qs(urlsplit(ws.request.path).query)["token"][-1]
        options = self.tokens[token]
        await self.run(_Conn(self, ws, index=self.take_index(ws), options=options, token=token))


class _Conn(ListenerConnection):
    """One session's connection."""

    IDLE_CLOSE = (1001, "Session idle for too long")
    AGE_CLOSE = (1011, "Maximum session duration reached")

    def __init__(
        self,
        server: FakeGladiaSTT,
        ws: ServerConnection,
        *,
        index: int,
        options: gl.LiveOptions,
        token: str,
    ) -> None:
        super().__init__(server, ws, index=index, rate=options.sample_rate)
        self.server = server
        self.stats = server.stats
        self.options = options
        self.session_id = token
        self.utterances = 0
        self.speaking = False
        self.acks = server.acks.get(token, False)
        self.bytes_in = 0

    async def send_json(self, msg: dict[str, Any]) -> None:
        self.server.sent.append(msg)
        await super().send_json(msg)

    def _message(self, kind: str, **extra: Any) -> dict[str, Any]:
        return {"session_id": self.session_id, "created_at": _now(), "type": kind, **extra}

    async def on_open(self) -> None:
        # no start_session here: the session started at ``POST /v2/live``, before any
        # connection, and the official SDK makes that message up from the answer itself
        await self.send_json(self._message("start_recording"))

    def decode(self, wire: bytes) -> npt.NDArray[np.int16]:
        pcm = wire if self.options.encoding == "wav/pcm" else decode_to_pcm("mulaw", wire)
        return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")

    async def check_audio(self, wire: bytes) -> bool:
        """Acknowledge the audio message when the session asked for it."""
        start, self.bytes_in = self.bytes_in, self.bytes_in + len(wire)
        if self.acks and not self.silent:
            bps = self.options.bytes_per_second
            await self.send_json(
                self._message(
                    "audio_chunk",
                    acknowledged=True,
                    data={
                        "byte_range": [start, self.bytes_in],
                        "time_range": [start / bps, self.bytes_in / bps],
                    },
                )
            )
        return True

    async def send_failure(self) -> None:
        await self.send_json(
            self._message(
                "audio_chunk",
                acknowledged=False,
                error={"message": "Internal server error (fault plan)"},
                data=None,
            )
        )
        await self.close(1011, "Internal server error")

    async def on_control(self, kind: str | None, msg: Any, raw: str) -> bool:
        if kind == "stop_recording":
            if not await self.answer_gate():
                return False
            if self.acks:
                duration = self.samples / self.rate
                await self.send_json(
                    self._message(
                        "stop_recording",
                        acknowledged=True,
                        data={"recording_duration": duration, "recording_left_to_process": 0.0},
                    )
                )
            await self._stop()
            return False
        if kind == "audio_chunk" and isinstance(msg, dict):
            return True  # base64 audio in JSON: not what the plugin sends; ignored here
        await self.close(1003, f"Invalid message {kind!r}")
        return False

    # -- recognition
    def _utterance(self, run: Run, upto: int, *, final: bool) -> dict[str, Any] | None:
        heard = self.heard(run, upto)
        if not heard:
            return None
        text = " ".join(tok for tok, _, _ in heard)
        words = [
            {"word": (" " if i else "") + tok, "start": start, "end": end, "confidence": 0.99}
            for i, (tok, start, end) in enumerate(heard)
        ]
        return self._message(
            "transcript",
            data={
                "id": f"{self.index:02d}-{self.utterances:08d}",
                "is_final": final,
                "utterance": {
                    "start": words[0]["start"],
                    "end": words[-1]["end"],
                    "confidence": 0.99,
                    "channel": 0,
                    "words": words,
                    "text": text,
                    "language": (self.options.languages or ("en",))[0],
                },
            },
        )

    async def _send_transcript(self, msg: dict[str, Any]) -> None:
        await self.first_answer()
        await self.send_json(msg)
        self.stats.transcripts_sent += 1
        if self.plan.chunk_interval:
            await asyncio.sleep(self.plan.chunk_interval)

    async def _final(self, run: Run, upto: int) -> None:
        msg = self._utterance(run, upto, final=True)
        if msg is not None:
            await self._send_transcript(msg)
            self.utterances += 1
        if self.speaking:
            self.speaking = False
            await self.send_json(
                self._message("speech_end", data={"time": upto / self.rate, "channel": 0})
            )

    async def advance(self) -> None:
        """After new audio: end the utterances that endpointing allows, then a partial."""
        gap = max(1, round(self.options.endpointing * self.rate))
        runs = self.runs(self.finalized)
        if runs and not self.speaking:
            self.speaking = True
            await self.send_json(
                self._message(
                    "speech_start", data={"time": runs[0].start / self.rate, "channel": 0}
                )
            )
        for run in [r for r in runs if r.end + gap <= self.samples]:
            await self._final(run, self.samples)
            self.finalized = self.last_interim = run.end + gap
        runs = self.runs(self.finalized)
        if (
            self.options.partials
            and runs
            and self.samples - self.last_interim >= INTERIM_EVERY * self.rate
        ):
            self.last_interim = self.samples
            msg = self._utterance(runs[0], self.samples, final=False)
            if msg is not None:
                await self._send_transcript(msg)

    async def _stop(self) -> None:
        for run in self.runs(self.finalized):
            await self._final(run, self.samples)
        self.finalized = self.last_interim = self.samples
        duration = self.samples / self.rate
        await self.send_json(self._message("end_recording", data={"recording_duration": duration}))
        for i in range(self.plan.audio_after_done):
            await self.ws.send(
                json.dumps(
                    self._message(
                        "transcript",
                        data={
                            "id": f"stale-{i}",
                            "is_final": False,
                            "utterance": {
                                "start": 0.0,
                                "end": 0.1,
                                "confidence": 0.5,
                                "channel": 0,
                                "words": [],
                                "text": "stale",
                                "language": "en",
                            },
                        },
                    )
                )
            )
        await self.send_json(self._message("end_session"))
        await self.close(1000, "")
