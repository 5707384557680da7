"""OpenAI file transcription (``POST /v1/audio/transcriptions``), sans I/O.

As documented in the API reference
(https://developers.openai.com/api/reference/resources/audio/subresources/transcriptions/methods/create):
a ``multipart/form-data`` request with the audio ``file`` (WAV here: PCM16 mono),
``model`` (``gpt-4o-transcribe``, ``gpt-4o-mini-transcribe``, ``whisper-1``...),
optional ``language`` (ISO-639-1) and ``prompt``, and ``response_format=json``; the answer
is ``{"text": ..., "usage": ...}`` (``openai.types.audio.Transcription``, the witness in
``tests/test_sdk_openai_stt.py``). The plugin is ``antiphon.plugins.openai.stt``
(:class:`~antiphon.plugins.openai.stt.OpenAIBatchSTT`), on
:class:`~antiphon.services.batch_stt.BatchSTT`.
"""

from __future__ import annotations

import io
import json
import wave
from dataclasses import dataclass
from urllib.parse import urlsplit

from antiphon.errors import ConfigError, ProviderError

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "PATH",
    "SAMPLE_RATE",
    "TranscriptionRequest",
    "build_url",
    "parse_response",
    "wav",
]

PROVIDER = "openai"
DEFAULT_BASE_URL = "https://api.openai.com"
PATH = "/v1/audio/transcriptions"
DEFAULT_MODEL = "gpt-4o-transcribe"
#: The rate the plugin uploads (the service resamples any rate; 16 kHz is what it uses).
SAMPLE_RATE = 16000
#: The service's limit on an uploaded file.
MAX_FILE_BYTES = 25 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TranscriptionRequest:
    """The form fields of one request (the file apart)."""

    model: str = DEFAULT_MODEL
    language: str | None = None
    prompt: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("model must name a transcription model, e.g. 'gpt-4o-transcribe'")

    def fields(self) -> dict[str, str]:
        out = {"model": self.model, "response_format": "json"}
        if self.language:
            out["language"] = self.language
        if self.prompt:
            out["prompt"] = self.prompt
        return out


def build_url(base_url: str) -> str:
    """``https://host/v1/audio/transcriptions`` (``base_url`` without ``/v1``)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"base_url must be http(s)://host[:port], got {base_url!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}{PATH}"


def wav(pcm: bytes, sample_rate: int) -> bytes:
    """A WAV file of int16 mono ``pcm``."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    data = buf.getvalue()
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"a segment of {len(data)} bytes is over the 25 MB upload limit")
    return data


def parse_response(body: bytes) -> str:
    """The ``text`` of a ``json`` response (a ``ProviderError`` when it has none)."""
    try:
        msg = json.loads(body)
    except ValueError:
        msg = None
    text = msg.get("text") if isinstance(msg, dict) else None
    if not isinstance(text, str):
        raise ProviderError(
            f"a transcription response without text: {body[:200]!r}",
            provider=PROVIDER,
            stage="receive",
            retryable=True,
        )
    return text
