"""Hume Octave text to speech (sans-I/O): ``POST {base_url}/v0/tts/stream/file``, raw PCM.

The wire protocol as the ``hume`` SDK's generated client sends it (its
``tts.synthesize_file_streaming``; the API reference is
https://dev.hume.ai/reference/text-to-speech-tts/synthesize-file-streaming): the key in
``X-Hume-Api-Key``, a JSON body of ``utterances`` (``text``, an optional ``voice`` by
``id`` or by ``name`` with its ``provider``, an acting ``description``, ``speed``),
``format: {"type": "pcm"}``, ``strip_headers: true`` (the chunks of a generation make
one stream, no header per chunk) and ``instant_mode`` (the low-latency streaming mode,
which needs a voice). The response body is the audio itself, streamed as it is made;
``pcm`` is 16-bit mono at 48 kHz (:data:`SAMPLE_RATE`: not stated in the SDK's types,
taken from Hume's streaming guide and the integrations that use it).

- :func:`build_body` (with :func:`voice_spec`), :func:`stream_url`,
  :func:`request_headers`. Errors are typed by status by the plugin's HTTP loop (422:
  the API's validation error, ``{"detail": [...]}``).

No I/O and no asyncio here; the plugin is ``antiphon.plugins.hume.tts``.
"""

from __future__ import annotations

import re
from typing import Any

from antiphon.errors import ConfigError
from antiphon.protocols.openai_chat import encode_body

__all__ = [
    "DEFAULT_BASE_URL",
    "KEY_ENV",
    "PROVIDERS",
    "SAMPLE_RATE",
    "STREAM_PATH",
    "build_body",
    "encode_body",
    "request_headers",
    "stream_url",
    "voice_spec",
]

DEFAULT_BASE_URL = "https://api.hume.ai"
STREAM_PATH = "/v0/tts/stream/file"
KEY_ENV = "HUME_API_KEY"
SAMPLE_RATE = 48000
#: Where a voice named by ``name`` lives.
PROVIDERS = ("HUME_AI", "CUSTOM_VOICE")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def stream_url(base_url: str = DEFAULT_BASE_URL) -> str:
    """``{base_url}/v0/tts/stream/file``."""
    base = base_url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base):
        raise ConfigError(
            f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL!r}, got {base_url!r}"
        )
    return base if base.endswith(STREAM_PATH) else base + STREAM_PATH


def request_headers(api_key: str) -> dict[str, str]:
    """``X-Hume-Api-Key`` and the content type (the key: never log them)."""
    return {"X-Hume-Api-Key": api_key, "Content-Type": "application/json"}


def voice_spec(voice: str, provider: str = "HUME_AI") -> dict[str, str]:
    """A voice by id (a UUID) or by name (with the library it lives in)."""
    if not isinstance(voice, str) or not voice.strip():
        raise ConfigError("voice must be a voice id or the name of a voice")
    if provider not in PROVIDERS:
        raise ConfigError(f"voice_provider must be one of {', '.join(PROVIDERS)}")
    if _UUID.match(voice):
        return {"id": voice, "provider": provider}
    return {"name": voice, "provider": provider}


def build_body(
    text: str,
    *,
    voice: str | None,
    voice_provider: str = "HUME_AI",
    description: str | None = None,
    speed: float | None = None,
    version: str | None = None,
    instant_mode: bool = True,
) -> dict[str, Any]:
    """The JSON body for ``text`` (see the module docstring); ``ConfigError`` if invalid."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("the speech text must be non-empty")
    utterance: dict[str, Any] = {"text": text}
    if voice is not None:
        utterance["voice"] = voice_spec(voice, voice_provider)
    elif instant_mode:
        raise ConfigError(
            "Hume's instant mode needs a voice: pass voice=... (or instant_mode=False)"
        )
    if description is not None:
        utterance["description"] = description
    if speed is not None:
        # the SDK: values below 0.75 or above 1.5 "may sometimes cause instability"
        if isinstance(speed, bool) or not isinstance(speed, int | float) or speed <= 0:
            raise ConfigError(f"speed must be a positive multiplier, got {speed!r}")
        utterance["speed"] = speed
    body: dict[str, Any] = {
        "utterances": [utterance],
        "format": {"type": "pcm"},
        "strip_headers": True,
        "instant_mode": instant_mode,
    }
    if version is not None:
        if version not in ("1", "2"):
            raise ConfigError(f"version must be '1' or '2' (Octave), got {version!r}")
        body["version"] = version
    return body
