"""A fake OpenAI text-to-speech endpoint: ``POST /v1/audio/speech``, raw PCM streamed.

:class:`FakeOpenAITTS` is a loopback HTTP/1.1 server (keep-alive, chunked transfer
encoding) that checks what the API checks — the path, ``Authorization: Bearer KEY``,
``Content-Type: application/json`` and the body (:func:`check_body`: ``model``,
``input`` of 1 to 4,096 characters, ``voice`` a name or ``{"id"}``, ``response_format``,
``speed`` in [0.25, 4], ``instructions`` not with ``tts-1``/``tts-1-hd``, no unknown
field) — refusing with OpenAI's error body, and answers ``response_format: "pcm"`` with
:func:`~antiphon.testing.synth.tone_for_text` of the input at 24 kHz in 20 ms chunks
(``Content-Type: audio/pcm``). Other formats are refused (the fake has no encoders).

Fault plan fields that apply, in HTTP's terms (as the Azure REST fake):

- ``hang_connect``: accept TCP, read, never answer.
- ``reject_status``: answer every request (or the first ``reject_requests``) with that
  status and an OpenAI error body; 429 and 503 carry ``retry-after: 1``.
- ``silent_after``: a request counts as two client messages (its head and its body);
  once more than ``silent_after`` were read on a connection, requests get a ``200`` head
  and then nothing.
- ``close_mid_audio``: cut the body after ``close_after_chunks`` chunks (``ABORT`` resets
  the TCP connection, any other value closes it).
- ``drop_before_audio``: close the connection after reading each of the first N requests.
- ``first_audio_delay``, ``chunk_interval``, ``odd_chunking`` (odd-sized chunks): as named.
- ``audio_after_done``: stale audio on the connection after the body's final chunk.
- ``idle_close_after`` / ``max_connection_age``: close keep-alive connections idle for
  that long / older than that.

Not applicable: ``close_on_open``, ``close_on_open_reason``, ``close_reason``,
``error_mid_stream``, ``malformed_mid_stream``, ``audio_after_clear``, ``ignore_clear``.
A client's cancel is an aborted response; ``stats.cancels`` counts those noticed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from antiphon.protocols import openai_tts as ot
from antiphon.testing.faults import FaultPlan
from antiphon.testing.http_server import FakeHttpServer, HttpConnection
from antiphon.testing.synth import tone_for_text

__all__ = [
    "CHUNK_SECONDS",
    "DEFAULT_API_KEY",
    "FakeOpenAITTS",
    "OpenAITTSStats",
    "SpeechRequest",
    "check_body",
    "synthesize",
]

DEFAULT_API_KEY = "test-key"
CHUNK_SECONDS = 0.02
_FIELDS = {"model", "input", "voice", "instructions", "response_format", "speed", "stream_format"}
_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


def synthesize(text: str) -> bytes:
    """The exact PCM (24 kHz, 16-bit, mono) the fake sends for ``text``."""
    return tone_for_text(text, ot.SAMPLE_RATE)


def _error(message: str, kind: str = "invalid_request_error", code: str | None = None) -> str:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


def check_body(body: Any) -> str | None:
    """The API's validation of a speech body: the error message, or None."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request."
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        return f"Unrecognized request argument supplied: {unknown[0]}"
    for required in ("model", "input", "voice"):
        if required not in body:
            return f"Missing required parameter: '{required}'."
    text = body["input"]
    if not isinstance(text, str) or not text:
        return "'input' must be a non-empty string"
    if len(text) > ot.MAX_INPUT:
        return f"'input' is too long: {len(text)} characters, at most {ot.MAX_INPUT}"
    voice = body["voice"]
    if not (isinstance(voice, str) and voice) and not (
        isinstance(voice, dict) and isinstance(voice.get("id"), str) and set(voice) == {"id"}
    ):
        return "'voice' must be a voice name or {'id': ...}"
    fmt = body.get("response_format", "mp3")
    if fmt not in _FORMATS:
        return f"Invalid value for 'response_format': {fmt!r}"
    if fmt != "pcm":
        return "this fake speaks response_format 'pcm' only"
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.25 <= speed <= 4:
        return "'speed' must be between 0.25 and 4.0"
    if "instructions" in body and body["model"] in ot.NO_INSTRUCTIONS:
        return f"instructions are not supported for {body['model']}"
    if body.get("stream_format", "audio") not in ("audio", "sse"):
        return "Invalid value for 'stream_format'"
    if body.get("stream_format") == "sse":
        return "this fake streams raw audio only (stream_format 'audio')"
    return None


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    """One request as the fake read it (``json``: the parsed body, if it parsed)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    connection: int


@dataclass
class OpenAITTSStats:
    """What the fake saw and did."""

    connections: int = 0
    open_connections: int = 0
    requests: list[SpeechRequest] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    spoken: list[str] = field(default_factory=list)
    cancels: int = 0
    cut_bodies: int = 0
    dropped_requests: int = 0
    idle_closes: int = 0
    audio_bytes: int = 0


class FakeOpenAITTS(FakeHttpServer):
    """``http://127.0.0.1:PORT/v1/audio/speech`` (the plugin's ``base_url`` is
    :attr:`base_url`)."""

    stats: OpenAITTSStats

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        reject_requests: int | None = None,
    ) -> None:
        super().__init__(
            plan, api_key=api_key, host=host, port=port, reject_requests=reject_requests
        )
        self.stats = OpenAITTSStats()
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> _Conn:
        return _Conn(self, reader, writer, index)


_REJECTIONS: dict[int, tuple[str, str, str | None]] = {
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model.", "invalid_request_error", None),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


class _Conn(HttpConnection[SpeechRequest]):
    MAX_BODY = 64 * 1024
    CHUNKED_OVERFLOW = "refuse"
    WRITE_CHECKS_EOF = False

    def __init__(
        self,
        server: FakeOpenAITTS,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        index: int,
    ) -> None:
        super().__init__(server, reader, writer, index)
        self.server = server
        self.stats = server.stats
        self.messages = 0

    def make_request(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> SpeechRequest:
        try:
            parsed: Any = json.loads(body) if body else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = None
        return SpeechRequest(method, target.split("?", 1)[0], headers, body, parsed, self.index)

    def on_request(self, request: SpeechRequest) -> None:
        self.messages += 2

    def error_text(self, status: int, message: str | None) -> str:
        return _error(message or "request body too large")

    def error_head(self, status: int, length: int, keep_alive: bool) -> list[str]:
        return [
            "Content-Type: application/json",
            f"Content-Length: {length}",
            f"x-request-id: req_fake_{next(self.server._ids)}",
            "Connection: " + ("keep-alive" if keep_alive else "close"),
        ]

    def rejection(self, status: int) -> tuple[str, dict[str, str]]:
        message, kind, code = _REJECTIONS.get(
            status, (f"rejected by fault plan ({status})", "invalid_request_error", None)
        )
        extra = {"retry-after": "1"} if status in (429, 503) else {}
        return _error(message, kind, code), extra

    def check(self, request: SpeechRequest) -> tuple[int, str] | None:
        if request.path.rstrip("/") != "/v1" + ot.SPEECH_PATH:
            return 404, _error(f"Invalid URL (POST {request.path})")
        if request.method != "POST":
            return 405, _error("Use POST.")
        if request.headers.get("authorization") != f"Bearer {self.server.api_key}":
            message, kind, code = _REJECTIONS[401]
            return 401, _error(message, kind, code)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return 400, _error("Content-Type must be application/json")
        problem = check_body(request.json)
        return None if problem is None else (400, _error(problem))

    async def answer(self, request: SpeechRequest, keep_alive: bool) -> bool:
        plan = self.plan
        silent = plan.silent_after is not None and self.messages > plan.silent_after
        await self.write_head(
            [
                "Content-Type: audio/pcm",
                "Transfer-Encoding: chunked",
                f"x-request-id: req_fake_{next(self.server._ids)}",
                "openai-processing-ms: 1",
                "Connection: " + ("keep-alive" if keep_alive else "close"),
            ]
        )
        if silent:
            await self.hang()
        text = request.json["input"]
        self.stats.spoken.append(text)
        return await self._speak(text) and keep_alive

    async def _speak(self, text: str) -> bool:
        step = round(CHUNK_SECONDS * ot.SAMPLE_RATE) * 2 + (1 if self.plan.odd_chunking else 0)
        return await self.stream_audio(
            synthesize(text), step, stale=synthesize("stale audio")[:step]
        )
