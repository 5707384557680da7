"""Cartesia streaming TTS: options, URL and handshake headers.

The configuration half of :mod:`antiphon.protocols.cartesia_tts`: the constants of the
``/tts/websocket`` endpoint and :class:`CartesiaOptions`, everything identical in every
message of a context, validated when built (voice UUID, encoding and rate, API version,
generation settings) so a mistake fails at construction rather than as a server error;
:func:`build_url` and :func:`auth_headers` for the handshake. Split from the wire messages
and the session so each reads on its own; everything is re-exported from ``cartesia_tts``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from antiphon.errors import ConfigError

__all__ = [
    "CARTESIA_ENCODINGS",
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "DEFAULT_ENCODING",
    "DEFAULT_LANGUAGE",
    "DEFAULT_MODEL",
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_VOICE",
    "ENCODINGS",
    "PATH",
    "PROVIDER",
    "SAMPLE_RATES",
    "CartesiaOptions",
    "auth_headers",
    "build_url",
]

PROVIDER = "cartesia"
DEFAULT_BASE_URL = "wss://api.cartesia.ai"
PATH = "/tts/websocket"
#: ``Cartesia-Version`` sent on the handshake: the one Cartesia's own SDK (4.x) sends.
DEFAULT_API_VERSION = "2026-08-14"
DEFAULT_MODEL = "sonic-2"
#: The voice Cartesia's own Python SDK falls back to.
DEFAULT_VOICE = "6ccbfb76-1fc6-48f7-b71d-91ac6298247b"
DEFAULT_LANGUAGE = "en"
DEFAULT_ENCODING = "linear16"
DEFAULT_SAMPLE_RATE = 24000
#: ``output_format.sample_rate`` values the API accepts.
SAMPLE_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 44100, 48000)
#: antiphon's wire encoding -> Cartesia's ``output_format.encoding``.
CARTESIA_ENCODINGS: dict[str, str] = {
    "linear16": "pcm_s16le",
    "mulaw": "pcm_mulaw",
    "alaw": "pcm_alaw",
}
#: Streamed encodings and the sample rates antiphon allows for each (G.711 is for
#: telephony: 8 kHz, or 16 kHz wideband; Cartesia documents no restriction).
ENCODINGS: dict[str, tuple[int, ...]] = {
    "linear16": SAMPLE_RATES,
    "mulaw": (8000, 16000),
    "alaw": (8000, 16000),
}
_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class CartesiaOptions:
    """Everything that is identical in every message of a context.

    ``encoding`` is antiphon's name (``linear16``, ``mulaw``, ``alaw``); Cartesia's
    (``pcm_s16le``, ``pcm_mulaw``, ``pcm_alaw``) are accepted and normalised. ``speed``,
    ``volume`` and ``emotion`` go into ``generation_config`` (Sonic-3 models only);
    ``None`` leaves a field out, so the server's default applies. ``add_timestamps``
    asks for word timings (``type: timestamps`` messages), surfaced on the stream.
    """

    model: str = DEFAULT_MODEL
    voice: str = DEFAULT_VOICE
    language: str | None = DEFAULT_LANGUAGE
    encoding: str = DEFAULT_ENCODING
    sample_rate: int = DEFAULT_SAMPLE_RATE
    api_version: str = DEFAULT_API_VERSION
    speed: float | None = None
    volume: float | None = None
    emotion: str | None = None
    max_buffer_delay_ms: int | None = None
    pronunciation_dict_id: str | None = None
    add_timestamps: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("Cartesia model must be a model id such as 'sonic-2' or 'sonic-3'")
        try:
            uuid.UUID(str(self.voice))
        except ValueError:
            raise ConfigError(
                f"Cartesia voice must be a voice id (a UUID such as {DEFAULT_VOICE!r}), "
                f"got {self.voice!r}; find ids in the Cartesia playground or GET /voices"
            ) from None
        if self.language is not None and not _LANGUAGE_RE.match(self.language):
            raise ConfigError(
                f"Cartesia language must be a language code such as 'en', 'fr' or 'de', "
                f"got {self.language!r}"
            )
        encoding = {v: k for k, v in CARTESIA_ENCODINGS.items()}.get(self.encoding, self.encoding)
        if encoding == "pcm_f32le":
            raise ConfigError(
                "Cartesia encoding 'pcm_f32le' is not streamed by antiphon (frames are 16-bit); "
                "use 'linear16' (pcm_s16le), or 'mulaw'/'alaw' for telephony"
            )
        rates = ENCODINGS.get(encoding)
        if rates is None:
            raise ConfigError(
                f"Cartesia streaming TTS does not support encoding {self.encoding!r}; use one of "
                f"{', '.join(ENCODINGS)} (the WebSocket streams raw audio; mp3/wav are for the "
                "HTTP /tts/bytes endpoint)"
            )
        object.__setattr__(self, "encoding", encoding)
        if isinstance(self.sample_rate, bool) or self.sample_rate not in rates:
            raise ConfigError(
                f"Cartesia encoding {encoding!r} does not support sample_rate "
                f"{self.sample_rate}; use one of {', '.join(map(str, rates))}"
            )
        if not isinstance(self.api_version, str) or not _VERSION_RE.match(self.api_version):
            raise ConfigError(
                f"Cartesia api_version must be a date such as {DEFAULT_API_VERSION!r}, "
                f"got {self.api_version!r}"
            )
        if self.speed is not None and not (0.6 <= self.speed <= 1.5):
            raise ConfigError(f"Cartesia speed must be between 0.6 and 1.5, got {self.speed}")
        if self.volume is not None and not (0.5 <= self.volume <= 2.0):
            raise ConfigError(f"Cartesia volume must be between 0.5 and 2.0, got {self.volume}")
        if self.emotion is not None and not self.emotion.strip():
            raise ConfigError("Cartesia emotion must be a name such as 'neutral' or 'excited'")
        if self.max_buffer_delay_ms is not None and not (0 <= self.max_buffer_delay_ms <= 5000):
            raise ConfigError(
                f"Cartesia max_buffer_delay_ms must be between 0 and 5000, "
                f"got {self.max_buffer_delay_ms}"
            )

    @property
    def cartesia_encoding(self) -> str:
        """The encoding's name on the wire (``pcm_s16le``, ``pcm_mulaw``, ``pcm_alaw``)."""
        return CARTESIA_ENCODINGS[self.encoding]

    def output_format(self) -> dict[str, Any]:
        return {
            "container": "raw",
            "encoding": self.cartesia_encoding,
            "sample_rate": self.sample_rate,
        }

    def fixed_fields(self) -> dict[str, Any]:
        """The fields every message of a context repeats unchanged."""
        fields: dict[str, Any] = {
            "model_id": self.model,
            "voice": {"mode": "id", "id": self.voice},
            "output_format": self.output_format(),
        }
        if self.language is not None:
            fields["language"] = self.language
        config: dict[str, Any] = {}
        if self.speed is not None:
            config["speed"] = self.speed
        if self.volume is not None:
            config["volume"] = self.volume
        if self.emotion is not None:
            config["emotion"] = self.emotion
        if config:
            fields["generation_config"] = config
        if self.max_buffer_delay_ms is not None:
            fields["max_buffer_delay_ms"] = self.max_buffer_delay_ms
        if self.pronunciation_dict_id is not None:
            fields["pronunciation_dict_id"] = self.pronunciation_dict_id
        if self.add_timestamps:
            fields["add_timestamps"] = True
        return fields


def build_url(base_url: str, options: CartesiaOptions) -> str:
    """``wss://host/tts/websocket?cartesia_version=...``; ``base_url`` is a ws(s) origin."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(
            f"Cartesia base_url must look like 'wss://api.cartesia.ai' (or ws://127.0.0.1:PORT "
            f"for a local fake), got {base_url!r}"
        )
    path = parts.path.rstrip("/")
    if not path.endswith(PATH):
        path += PATH
    query = urlencode({"cartesia_version": options.api_version})
    return f"{parts.scheme}://{parts.netloc}{path}?{query}"


def auth_headers(api_key: str, api_version: str = DEFAULT_API_VERSION) -> dict[str, str]:
    """``Authorization: Bearer <key>`` and ``Cartesia-Version: <date>``, as Cartesia's own
    SDK sends them (the service still takes the older ``X-API-Key`` too)."""
    return {"Authorization": f"Bearer {api_key}", "Cartesia-Version": api_version}
