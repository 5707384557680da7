"""A fake OpenAI file-transcription server (``POST /v1/audio/transcriptions``).

It reads the ``multipart/form-data`` request the service takes (the ``file``, a WAV of
PCM16; ``model``; optional ``language``, ``prompt``; ``response_format`` ``json`` or
``text``), checks the ``Authorization: Bearer`` key (401 with OpenAI's error object) and
answers ``{"text": ..., "usage": {"type": "duration", "seconds": ...}}``. Recognition is
that of the other STT fakes (:mod:`antiphon.testing.listening`): each voiced run of the
clip is named by its pitch from the ``vocabulary``, the phrases joined by a space.

Fault plan fields that apply (the HTTP fakes' shared ones, :mod:`antiphon.testing.http_server`):
``reject_status`` (with ``reject_requests`` and a ``Retry-After`` on 429/503),
``drop_before_audio`` (close without an answer), ``first_audio_delay`` (before the
answer), ``silent_after`` (requests answered before the fake stops answering),
``idle_close_after``, ``max_connection_age``.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import io
import json
import wave
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from antiphon.protocols import openai_audio as oa
from antiphon.testing.faults import FaultPlan
from antiphon.testing.http_server import FakeHttpServer, HttpConnection
from antiphon.testing.listening import identify, voiced_runs

__all__ = ["DEFAULT_API_KEY", "FakeOpenAIAudio", "FakeTranscriptionRequest"]

DEFAULT_API_KEY = "test-key"


@dataclass(frozen=True, slots=True)
class FakeTranscriptionRequest:
    """One request as the fake read it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int


@dataclass
class OpenAIAudioStats:
    """What the fake saw and did."""

    connections: int = 0
    open_connections: int = 0
    requests: list[FakeTranscriptionRequest] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    forms: list[dict[str, str]] = field(default_factory=list)
    """The form fields (the file apart) of every valid request."""
    clips: list[float] = field(default_factory=list)
    """The seconds of audio of every valid request."""
    dropped_requests: int = 0
    idle_closes: int = 0
    cancels: int = 0


class FakeOpenAIAudio(FakeHttpServer):
    """``http://127.0.0.1:PORT/v1/audio/transcriptions``."""

    stats: OpenAIAudioStats

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        vocabulary: tuple[str, ...] | list[str] = (),
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        reject_requests: int | None = None,
    ) -> None:
        super().__init__(
            plan, api_key=api_key, host=host, port=port, reject_requests=reject_requests
        )
        self.vocabulary = list(vocabulary)
        self.stats = OpenAIAudioStats()

    def connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> _Conn:
        return _Conn(self, reader, writer, index)

    def recognise(self, pcm: np.ndarray[Any, np.dtype[np.int16]], rate: int) -> str:
        """The phrases of the vocabulary in ``pcm``, in order."""
        phrases = []
        for run in voiced_runs(pcm, rate, 0):
            x = pcm[run.start : run.end]
            if len(x) < 2:
                continue
            signs = np.signbit(x)
            crossings = int(np.count_nonzero(signs[1:] != signs[:-1]))
            phrases.append(identify(self.vocabulary, crossings / 2 / (len(x) / rate)))
        return " ".join(phrases)


def _error(message: str, kind: str, code: str | None = None) -> str:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


def _form(request: FakeTranscriptionRequest) -> tuple[dict[str, str], bytes | None] | None:
    """The form fields and the file of a multipart body (None: not multipart)."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        return None
    raw = b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + request.body
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    if not msg.is_multipart():
        return None
    fields: dict[str, str] = {}
    file: bytes | None = None
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            continue
        if part.get_filename() is not None:
            file = payload
        else:
            fields[name] = payload.decode("utf-8", "replace")
    return fields, file


class _Conn(HttpConnection[FakeTranscriptionRequest]):
    """One client connection: requests one after another (keep-alive)."""

    MAX_BODY = 26 * 1024 * 1024

    def __init__(
        self,
        server: FakeOpenAIAudio,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        index: int,
    ) -> None:
        super().__init__(server, reader, writer, index)
        self.server = server
        self.answered = 0

    def make_request(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> FakeTranscriptionRequest:
        return FakeTranscriptionRequest(method, target.split("?", 1)[0], headers, body, self.index)

    def error_text(self, status: int, message: str | None) -> str:
        return _error(message or "request too large", "invalid_request_error")

    def error_head(self, status: int, length: int, keep_alive: bool) -> list[str]:
        return [
            "Content-Type: application/json",
            f"Content-Length: {length}",
            "Connection: " + ("keep-alive" if keep_alive else "close"),
        ]

    def rejection(self, status: int) -> tuple[str, dict[str, str]]:
        extra = {"Retry-After": "1"} if status in (429, 503) else {}
        kind = "rate_limit_exceeded" if status == 429 else "server_error"
        return _error(f"rejected by fault plan ({status})", kind), extra

    def check(self, request: FakeTranscriptionRequest) -> tuple[int, str] | None:
        if request.path.rstrip("/") != oa.PATH:
            return 404, _error(f"Invalid URL (POST {request.path})", "invalid_request_error")
        if request.method != "POST":
            return 405, _error("use POST", "invalid_request_error")
        if request.headers.get("authorization") != f"Bearer {self.server.api_key}":
            return 401, _error(
                "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        form = _form(request)
        if form is None or form[1] is None:
            return 400, _error("Could not parse multipart form", "invalid_request_error")
        fields, file = form
        assert file is not None
        if not fields.get("model"):
            return 400, _error("you must provide a model parameter", "invalid_request_error")
        if fields.get("response_format", "json") not in ("json", "text"):
            return 400, _error("response_format must be json or text", "invalid_request_error")
        try:
            with wave.open(io.BytesIO(file)) as w:
                if w.getsampwidth() != 2 or w.getnchannels() != 1:
                    raise wave.Error("not 16-bit mono")
        except (wave.Error, EOFError) as exc:
            return 400, _error(f"Invalid file format: {exc}", "invalid_request_error")
        return None

    async def answer(self, request: FakeTranscriptionRequest, keep_alive: bool) -> bool:
        plan = self.plan
        if plan.silent_after is not None and self.answered >= plan.silent_after:
            await self.hang()
        form = _form(request)
        assert form is not None  # checked
        fields, file = form
        assert file is not None
        with wave.open(io.BytesIO(file)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        seconds = len(pcm) / rate
        self.server.stats.forms.append(fields)
        self.server.stats.clips.append(seconds)
        text = self.server.recognise(pcm, rate)
        if plan.first_audio_delay:
            await asyncio.sleep(plan.first_audio_delay)
        self.answered += 1
        if fields.get("response_format") == "text":
            await self.respond(200, text + "\n", keep_alive=keep_alive)
        else:
            body = {"text": text, "usage": {"type": "duration", "seconds": round(seconds, 3)}}
            await self.respond(200, json.dumps(body), keep_alive=keep_alive)
        return keep_alive
