"""OpenAI text to speech (sans-I/O): ``POST {base_url}/audio/speech``, streamed raw PCM.

The wire protocol as documented at https://platform.openai.com/docs/api-reference/audio/createSpeech
(the body and its limits) and https://platform.openai.com/docs/guides/text-to-speech
(streaming, and ``pcm``: raw 24 kHz 16-bit little-endian mono samples, no header):

- :func:`build_body` is the JSON body of one request: ``model``, ``input`` (at most
  :data:`MAX_INPUT` characters), ``voice`` (a built-in name, or a custom voice's
  ``voice_…`` id sent as ``{"id": ...}``), ``response_format: "pcm"``, and ``speed`` /
  ``instructions`` when set (``instructions`` is refused for ``tts-1`` and ``tts-1-hd``,
  as the API refuses it). The response body is the audio itself, chunked as it is made.
- :func:`split_input` cuts a text longer than the limit at sentence ends (else at spaces),
  so a long flush segment is several requests spoken in order.
- :func:`speech_url` and :func:`request_headers` (``Authorization: Bearer``, and the
  optional organization and project headers). An error response has the chat API's
  ``{"error": {...}}`` body; the plugin types it by status
  (:func:`antiphon.net.http.status_error`).

No I/O and no asyncio here; the plugin is ``antiphon.plugins.openai.tts``.
"""

from __future__ import annotations

import re
from typing import Any

from antiphon.errors import ConfigError
from antiphon.protocols.openai_chat import DEFAULT_BASE_URL, encode_body

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_VOICE",
    "MAX_INPUT",
    "SAMPLE_RATE",
    "SPEECH_PATH",
    "build_body",
    "encode_body",
    "request_headers",
    "speech_url",
    "split_input",
]

SPEECH_PATH = "/audio/speech"
DEFAULT_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "alloy"
#: Characters of ``input`` one request may carry.
MAX_INPUT = 4096
#: The rate of ``response_format: "pcm"`` (fixed by the API).
SAMPLE_RATE = 24000
#: Models that take no ``instructions``.
NO_INSTRUCTIONS = frozenset({"tts-1", "tts-1-hd"})
_SENTENCE_END = re.compile(r"[.!?。！？;:]\s+")


def speech_url(base_url: str = DEFAULT_BASE_URL) -> str:
    """``{base_url}/audio/speech``; a bare origin (``https://host``, no path) gets the
    API's ``/v1`` first, as the other providers' base URLs are origins."""
    base = base_url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base):
        raise ConfigError(
            f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL!r}, got {base_url!r}"
        )
    if base.endswith(SPEECH_PATH):
        return base
    if re.fullmatch(r"https?://[^/\s]+", base):
        base += "/v1"
    return base + SPEECH_PATH


def request_headers(
    api_key: str, *, organization: str | None = None, project: str | None = None
) -> dict[str, str]:
    """The headers of a request (the key among them: do not log them)."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    if organization:
        headers["OpenAI-Organization"] = organization
    if project:
        headers["OpenAI-Project"] = project
    return headers


def build_body(
    text: str,
    *,
    model: str = DEFAULT_MODEL,
    voice: str = DEFAULT_VOICE,
    speed: float | None = None,
    instructions: str | None = None,
) -> dict[str, Any]:
    """The JSON body for ``text`` (see the module docstring); ``ConfigError`` if invalid."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("the speech input must be non-empty text")
    if len(text) > MAX_INPUT:
        raise ConfigError(f"the speech input is {len(text)} characters; at most {MAX_INPUT}")
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"model must name a TTS model, e.g. {DEFAULT_MODEL!r}")
    if not isinstance(voice, str) or not voice.strip():
        raise ConfigError(f"voice must name a voice, e.g. {DEFAULT_VOICE!r}, or a voice_… id")
    body: dict[str, Any] = {
        "model": model,
        "input": text,
        "voice": {"id": voice} if voice.startswith("voice_") else voice,
        "response_format": "pcm",
    }
    if speed is not None:
        if isinstance(speed, bool) or not isinstance(speed, int | float):
            raise ConfigError(f"speed must be a number from 0.25 to 4.0, got {speed!r}")
        if not 0.25 <= speed <= 4.0:
            raise ConfigError(f"speed must be from 0.25 to 4.0, got {speed!r}")
        body["speed"] = speed
    if instructions is not None:
        if model in NO_INSTRUCTIONS:
            raise ConfigError(f"{model} takes no instructions; use gpt-4o-mini-tts")
        body["instructions"] = instructions
    return body


def split_input(text: str, limit: int = MAX_INPUT) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut after a sentence end where
    one is in reach, else at a space, else hard; pieces are stripped, none empty."""
    if limit < 1:
        raise ValueError("limit must be >= 1")
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[: limit + 1]
        ends = [m.end() for m in _SENTENCE_END.finditer(window)]
        cut = ends[-1] if ends else window.rfind(" ")
        if cut <= 0:
            cut = limit
        piece, rest = rest[:cut].strip(), rest[cut:].strip()
        if piece:
            pieces.append(piece)
    if rest:
        pieces.append(rest)
    return pieces
