"""A fake Hume TTS endpoint: ``POST /v0/tts/stream/file``, raw PCM streamed.

:class:`FakeHumeTTS` is a loopback HTTP/1.1 server (keep-alive, chunked transfer encoding)
that checks what the API checks — the path, ``X-Hume-Api-Key``, ``content-type:
application/json`` and the body (:func:`check_body`: ``utterances`` of non-empty
``text`` with an optional ``voice`` by ``id`` or ``name``, ``format``, ``instant_mode``
only with a voice and one generation, no unknown field) — refusing a bad body with the
API's validation error (``422``, ``{"detail": [{"loc", "msg", "type"}]}``), and answers
``format: pcm`` with :func:`~antiphon.testing.synth.tone_for_text` of the utterances'
text at 48 kHz in 20 ms chunks (``content-type: audio/pcm``).

Fault plan fields: as :mod:`antiphon.testing.openai_tts` (the REST TTS faults of
:meth:`~antiphon.testing.http_server.HttpConnection.stream_audio`, ``reject_status`` with
a JSON error body, ``silent_after`` counting a request as two client messages).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from antiphon.protocols import hume_tts as ht
from antiphon.testing.faults import FaultPlan
from antiphon.testing.http_server import FakeHttpServer, HttpConnection
from antiphon.testing.openai_tts import OpenAITTSStats, SpeechRequest
from antiphon.testing.synth import tone_for_text

__all__ = ["CHUNK_SECONDS", "DEFAULT_API_KEY", "FakeHumeTTS", "check_body", "synthesize"]

DEFAULT_API_KEY = "test-key"
CHUNK_SECONDS = 0.02
_FIELDS = {
    "utterances",
    "context",
    "format",
    "include_timestamp_types",
    "num_generations",
    "split_utterances",
    "strip_headers",
    "temperature",
    "version",
    "instant_mode",
}
_UTTERANCE = {"text", "voice", "description", "speed", "trailing_silence"}


def synthesize(text: str) -> bytes:
    """The exact PCM (48 kHz, 16-bit, mono) the fake sends for ``text``."""
    return tone_for_text(text, ht.SAMPLE_RATE)


def validation_error(loc: list[str | int], msg: str, kind: str = "value_error") -> str:
    return json.dumps({"detail": [{"loc": ["body", *loc], "msg": msg, "type": kind}]})


def check_body(body: Any) -> tuple[list[str | int], str] | None:
    """The API's validation of a stream request: (location, message), or None."""
    if not isinstance(body, dict):
        return [], "Input should be a valid dictionary"
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        return [unknown[0]], "Extra inputs are not permitted"
    utterances = body.get("utterances")
    if not isinstance(utterances, list) or not utterances:
        return ["utterances"], "Field required (a non-empty list)"
    voiced = False
    for i, u in enumerate(utterances):
        if not isinstance(u, dict) or not isinstance(u.get("text"), str) or not u["text"]:
            return ["utterances", i, "text"], "Field required"
        unknown = sorted(set(u) - _UTTERANCE)
        if unknown:
            return ["utterances", i, unknown[0]], "Extra inputs are not permitted"
        voice = u.get("voice")
        if voice is not None:
            keys = set(voice) if isinstance(voice, dict) else set()
            if not (
                {"id"} <= keys <= {"id", "provider"} or {"name"} <= keys <= {"name", "provider"}
            ):
                return ["utterances", i, "voice"], "a voice has an id or a name (and a provider)"
            if voice.get("provider", "HUME_AI") not in ht.PROVIDERS:
                return [
                    "utterances",
                    i,
                    "voice",
                    "provider",
                ], "Input should be 'HUME_AI' or 'CUSTOM_VOICE'"
            voiced = True
    fmt = body.get("format") or {"type": "mp3"}
    if fmt.get("type") not in ("mp3", "pcm", "wav"):
        return ["format", "type"], "Input should be 'mp3', 'pcm' or 'wav'"
    if fmt["type"] != "pcm":
        return ["format", "type"], "this fake speaks pcm only"
    if body.get("instant_mode") and not voiced:
        return ["instant_mode"], "instant mode requires a voice"
    if body.get("instant_mode") and body.get("num_generations", 1) != 1:
        return ["num_generations"], "instant mode requires a single generation"
    if body.get("version") not in (None, "1", "2"):
        return ["version"], "Input should be '1' or '2'"
    return None


class FakeHumeTTS(FakeHttpServer):
    """``http://127.0.0.1:PORT/v0/tts/stream/file`` (the plugin's ``base_url`` is :attr:`url`)."""

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

    def connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> _Conn:
        return _Conn(self, reader, writer, index)


class _Conn(HttpConnection[SpeechRequest]):
    MAX_BODY = 64 * 1024
    CHUNKED_OVERFLOW = "refuse"
    WRITE_CHECKS_EOF = False

    def __init__(
        self,
        server: FakeHumeTTS,
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
        return json.dumps({"message": message or "request body too large"})

    def error_head(self, status: int, length: int, keep_alive: bool) -> list[str]:
        return [
            "content-type: application/json",
            f"content-length: {length}",
            "connection: " + ("keep-alive" if keep_alive else "close"),
        ]

    def rejection(self, status: int) -> tuple[str, dict[str, str]]:
        extra = {"retry-after": "1"} if status in (429, 503) else {}
        return json.dumps({"message": f"rejected by fault plan ({status})"}), extra

    def check(self, request: SpeechRequest) -> tuple[int, str] | None:
        if request.path.rstrip("/") != ht.STREAM_PATH:
            return 404, json.dumps({"message": f"Not found: {request.path}"})
        if request.method != "POST":
            return 405, json.dumps({"message": "Method Not Allowed"})
        if request.headers.get("x-hume-api-key") != self.server.api_key:
            return 401, json.dumps({"fault": {"faultstring": "Invalid ApiKey"}})
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return 422, validation_error([], "Input should be a valid dictionary", "dict_type")
        problem = check_body(request.json)
        return None if problem is None else (422, validation_error(*problem))

    async def answer(self, request: SpeechRequest, keep_alive: bool) -> bool:
        plan = self.plan
        silent = plan.silent_after is not None and self.messages > plan.silent_after
        await self.write_head(
            [
                "content-type: audio/pcm",
                "transfer-encoding: chunked",
                f"x-request-id: fake-{next(self.server._ids)}",
                "connection: " + ("keep-alive" if keep_alive else "close"),
            ]
        )
        if silent:
            await self.hang()
        text = " ".join(u["text"] for u in request.json["utterances"])
        self.stats.spoken.append(text)
        step = round(CHUNK_SECONDS * ht.SAMPLE_RATE) * 2 + (1 if plan.odd_chunking else 0)
        stale = synthesize("stale audio")[:step]
        return await self.stream_audio(synthesize(text), step, stale=stale) and keep_alive
