"""A fake Google Cloud Text-to-Speech REST endpoint: ``POST /v1/text:synthesize``.

:class:`FakeGoogleTTS` is a loopback HTTP/1.1 server (keep-alive, chunked transfer
encoding) that checks what the API checks — the path, the key (``x-goog-api-key`` or the
``key`` query; a wrong one is ``400 INVALID_ARGUMENT`` with reason ``API_KEY_INVALID``, a
missing one ``403 PERMISSION_DENIED``, as Google answers), ``content-type:
application/json`` and the body (:func:`check_body`: a ``SynthesizeSpeechRequest`` with
non-blank ``input.text`` of at most 5,000 bytes, ``voice.languageCode``,
``audioConfig.audioEncoding``, and no unknown field) — refusing with Google's error body
(``google.rpc.Status``, :func:`antiphon.testing.gemini_generate.error_body`). It answers
with a ``SynthesizeSpeechResponse``: :func:`~antiphon.testing.synth.tone_for_text` of the
text at ``sampleRateHertz`` (24 kHz by default) as base64 ``audioContent`` — bare samples
for ``PCM``, a WAV file for ``LINEAR16`` (as the API does) — the JSON body written in
4 KiB chunks, so the REST faults apply to it. Other encodings (MP3, Opus, …) are refused:
this fake makes PCM only.

Fault plan fields: as :mod:`antiphon.testing.openai_tts` (the REST TTS faults of
:meth:`~antiphon.testing.http_server.HttpConnection.stream_audio`, applied to the JSON
body; ``reject_status`` with Google's error body, a ``RetryInfo`` for 429 and 503;
``silent_after`` counting a request as two client messages).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from antiphon.protocols import google_tts as gt
from antiphon.testing.faults import FaultPlan
from antiphon.testing.gemini_generate import error_body
from antiphon.testing.http_server import FakeHttpServer, HttpConnection
from antiphon.testing.openai_tts import OpenAITTSStats, SpeechRequest
from antiphon.testing.synth import tone_for_text

__all__ = ["DEFAULT_API_KEY", "STEP", "FakeGoogleTTS", "answer_body", "check_body", "synthesize"]

DEFAULT_API_KEY = "test-key"
#: Bytes of the JSON answer per HTTP chunk.
STEP = 4096
_REQUEST = {"input", "voice", "audioConfig", "advancedVoiceOptions"}
_INPUT = {"text", "ssml", "markup", "multiSpeakerMarkup", "prompt", "customPronunciations"}
_VOICE = {"languageCode", "name", "ssmlGender", "customVoice", "voiceClone", "modelName"}
_AUDIO = {
    "audioEncoding",
    "speakingRate",
    "pitch",
    "volumeGainDb",
    "sampleRateHertz",
    "effectsProfileId",
}
_ENCODINGS = ("PCM", "LINEAR16")


def synthesize(text: str, sample_rate: int = gt.DEFAULT_SAMPLE_RATE) -> bytes:
    """The exact PCM the fake answers for ``text``."""
    return tone_for_text(text, sample_rate)


def _wav(pcm: bytes, sample_rate: int) -> bytes:
    header = b"RIFF" + (36 + len(pcm)).to_bytes(4, "little") + b"WAVEfmt "
    header += (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
    header += sample_rate.to_bytes(4, "little") + (sample_rate * 2).to_bytes(4, "little")
    header += (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    return header + b"data" + len(pcm).to_bytes(4, "little") + pcm


def answer_body(body: dict[str, Any]) -> bytes:
    """The ``SynthesizeSpeechResponse`` the fake sends for a valid request ``body``."""
    audio_config = body["audioConfig"]
    rate = int(audio_config.get("sampleRateHertz") or gt.DEFAULT_SAMPLE_RATE)
    audio = synthesize(body["input"]["text"], rate)
    if audio_config["audioEncoding"] == "LINEAR16":
        audio = _wav(audio, rate)
    return json.dumps({"audioContent": base64.b64encode(audio).decode()}).encode()


def _unknown(obj: dict[str, Any], known: set[str], where: str) -> str | None:
    extra = sorted(set(obj) - known)
    if extra:
        return f"Invalid JSON payload received. Unknown name \"{extra[0]}\" at '{where}'"
    return None


def check_body(body: Any) -> str | None:
    """The API's validation of a ``text:synthesize`` body: the message, or None."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    problem = _unknown(body, _REQUEST, "request")
    if problem:
        return problem
    sections = {"input": _INPUT, "voice": _VOICE, "audioConfig": _AUDIO}
    for name, known in sections.items():
        section = body.get(name)
        if not isinstance(section, dict):
            return f"{name} is required"
        problem = _unknown(section, known, name)
        if problem:
            return problem
    text = body["input"].get("text")
    if not isinstance(text, str) or not text.strip():
        return "Either `input.text`, `input.ssml` or `input.markup` must be set (here: text)"
    if len(text.encode("utf-8")) > gt.MAX_INPUT_BYTES:
        return f"`input.text` is longer than the limit of {gt.MAX_INPUT_BYTES} bytes."
    language, name = body["voice"].get("languageCode"), body["voice"].get("name")
    if not isinstance(language, str):
        return "Voice.language_code is required."
    if isinstance(name, str) and name and not name.lower().startswith(language.lower()):
        return f"Requested language code '{language}' doesn't match the voice '{name}'."
    audio = body["audioConfig"]
    if audio.get("audioEncoding") not in _ENCODINGS:
        return f"AudioConfig.audio_encoding: this fake makes {' or '.join(_ENCODINGS)} only"
    rate = audio.get("sampleRateHertz", gt.DEFAULT_SAMPLE_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 48000:
        return "AudioConfig.sample_rate_hertz: Invalid value"
    rate_ok = 0.25 <= audio.get("speakingRate", 1.0) <= 4.0
    if not rate_ok or not -20 <= audio.get("pitch", 0.0) <= 20:
        return "AudioConfig: speaking_rate or pitch out of range"
    return None


class FakeGoogleTTS(FakeHttpServer):
    """``http://127.0.0.1:PORT/v1/text:synthesize`` (the plugin's ``base_url`` is :attr:`url`).

    ``retry_after``: the ``retryDelay`` seconds of the ``RetryInfo`` sent with 429 and 503.
    """

    stats: OpenAITTSStats

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        reject_requests: int | None = None,
        retry_after: str = "1",
    ) -> None:
        super().__init__(
            plan, api_key=api_key, host=host, port=port, reject_requests=reject_requests
        )
        self.stats = OpenAITTSStats()
        self.retry_after = retry_after
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
        server: FakeGoogleTTS,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        index: int,
    ) -> None:
        super().__init__(server, reader, writer, index)
        self.server = server
        self.stats = server.stats
        self.messages = 0
        self.query: dict[str, list[str]] = {}

    def make_request(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> SpeechRequest:
        try:
            parsed: Any = json.loads(body) if body else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = None
        split = urlsplit(target)
        self.query = parse_qs(split.query)
        return SpeechRequest(method, split.path, headers, body, parsed, self.index)

    def on_request(self, request: SpeechRequest) -> None:
        self.messages += 2

    def error_text(self, status: int, message: str | None) -> str:
        return error_body(status, message)

    def error_head(self, status: int, length: int, keep_alive: bool) -> list[str]:
        return [
            "Content-Type: application/json; charset=UTF-8",
            f"Content-Length: {length}",
            "Vary: Origin, X-Origin, Referer",
            "Connection: " + ("keep-alive" if keep_alive else "close"),
        ]

    def rejection(self, status: int) -> tuple[str, dict[str, str]]:
        delay = f"{self.server.retry_after}s" if status in (429, 503) else None
        return error_body(status, retry_delay=delay), {}

    def check(self, request: SpeechRequest) -> tuple[int, str] | None:
        """The API's checks, in its order: path, method, key, content type, body."""
        if request.path != gt.PATH:
            return 404, error_body(404, f"Not found: {request.path}")
        if request.method != "POST":
            return 405, error_body(400, "Use POST.")
        key = request.headers.get("x-goog-api-key") or (self.query.get("key") or [""])[0]
        if not key:
            return 403, error_body(403)
        if key != self.server.api_key:
            return 400, error_body(
                400,
                "API key not valid. Please pass a valid API key.",
                reason="API_KEY_INVALID",
                service="texttospeech.googleapis.com",
            )
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return 400, error_body(400, "Invalid JSON payload: content-type")
        problem = check_body(request.json)
        return None if problem is None else (400, error_body(400, problem))

    async def answer(self, request: SpeechRequest, keep_alive: bool) -> bool:
        plan = self.plan
        silent = plan.silent_after is not None and self.messages > plan.silent_after
        await self.write_head(
            [
                "Content-Type: application/json; charset=UTF-8",
                "Transfer-Encoding: chunked",
                "Vary: Origin, X-Origin, Referer",
                "Connection: " + ("keep-alive" if keep_alive else "close"),
            ]
        )
        if silent:
            await self.hang()
        self.stats.spoken.append(request.json["input"]["text"])
        stale = b'{"audioContent": "c3RhbGU="}'
        return await self.stream_audio(answer_body(request.json), STEP, stale=stale) and keep_alive
