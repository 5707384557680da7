"""xAI streaming TTS: options, URL and handshake headers.

The configuration half of :mod:`antiphon.protocols.xai_tts`: the constants of the
``/v1/tts`` endpoint (voices, languages, codecs, sample rates), :class:`XAIOptions`, the
query string of a connection (xAI takes all configuration there), validated when built so a
bad voice, codec or rate fails at construction rather than as a server close, and
:func:`build_url` / :func:`auth_headers` for the handshake. Split from the wire messages and
the session so each reads on its own; everything is re-exported from ``xai_tts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from antiphon.errors import ConfigError

__all__ = [
    "CODECS",
    "DEFAULT_BASE_URL",
    "DEFAULT_ENCODING",
    "DEFAULT_LANGUAGE",
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_VOICE",
    "ENCODING_ALIASES",
    "G711_SAMPLE_RATES",
    "LANGUAGES",
    "LATENCY_LEVELS",
    "PATH",
    "PROVIDER",
    "SAMPLE_RATES",
    "SPEED_RANGE",
    "VOICES",
    "XAIOptions",
    "auth_headers",
    "build_url",
    "canonical_encoding",
    "canonical_language",
]

PROVIDER = "xai"
DEFAULT_BASE_URL = "wss://api.x.ai"
PATH = "/v1/tts"
DEFAULT_VOICE = "eve"
DEFAULT_LANGUAGE = "en"
DEFAULT_ENCODING = "linear16"
DEFAULT_SAMPLE_RATE = 24000
#: Built-in voices (``GET /v1/tts/voices``); custom voice ids are accepted as well.
VOICES = ("eve", "ara", "rex", "sal", "leo")
#: ``language`` values (BCP-47, case-insensitive), from xAI's WebSocket spec.
# fmt: off
LANGUAGES = (
    "auto", "en", "ar-EG", "ar-SA", "ar-AE", "bn", "zh", "fr", "de", "hi", "id", "it", "ja",
    "ko", "pt-BR", "pt-PT", "ru", "es-MX", "es-ES", "tr", "vi",
)
# fmt: on
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
#: antiphon's wire encoding -> the ``codec`` query value.
CODECS: dict[str, str] = {"linear16": "pcm", "mulaw": "mulaw", "alaw": "alaw"}
#: Names accepted for an encoding (xAI's codec names and antiphon's).
ENCODING_ALIASES: dict[str, str] = {
    "linear16": "linear16",
    "pcm": "linear16",
    "mulaw": "mulaw",
    "ulaw": "mulaw",
    "alaw": "alaw",
}
#: G.711 (mulaw/alaw) is telephony audio: antiphon asks for it at 8 kHz only.
G711_SAMPLE_RATES = (8000,)
SPEED_RANGE = (0.7, 1.5)
LATENCY_LEVELS = (0, 1, 2)


def canonical_encoding(encoding: str) -> str:
    """``pcm``/``linear16`` -> ``linear16``, ``ulaw``/``mulaw`` -> ``mulaw``, ``alaw``."""
    enc = ENCODING_ALIASES.get(encoding.lower()) if isinstance(encoding, str) else None
    if enc is None:
        raise ConfigError(
            f"xAI streaming TTS: encoding {encoding!r} is not streamed raw; use 'linear16' "
            "(codec pcm), 'mulaw' or 'alaw' (wav and mp3 are containers/compressed: use the "
            "REST endpoint for those)"
        )
    return enc


def canonical_language(language: str) -> str:
    """The spec's spelling of ``language`` (matched case-insensitively)."""
    if isinstance(language, str):
        for known in LANGUAGES:
            if known.lower() == language.lower():
                return known
    raise ConfigError(
        f"xAI TTS does not support language {language!r}; use 'auto' or one of "
        f"{', '.join(LANGUAGES[1:])}"
    )


@dataclass(frozen=True, slots=True)
class XAIOptions:
    """Query parameters of a ``/v1/tts`` connection (validated; see :meth:`query`)."""

    voice: str = DEFAULT_VOICE
    language: str = DEFAULT_LANGUAGE
    encoding: str = DEFAULT_ENCODING
    sample_rate: int = DEFAULT_SAMPLE_RATE
    speed: float | None = None
    optimize_streaming_latency: int | None = None
    text_normalization: bool | None = None
    with_timestamps: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.voice, str) or not self.voice.strip() or " " in self.voice:
            raise ConfigError(
                f"xAI voice must be a voice id such as {', '.join(VOICES)} or a custom voice "
                f"id, got {self.voice!r}"
            )
        object.__setattr__(self, "language", canonical_language(self.language))
        object.__setattr__(self, "encoding", canonical_encoding(self.encoding))
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int) or rate not in SAMPLE_RATES:
            raise ConfigError(
                f"xAI TTS does not support sample_rate {rate!r}; use one of "
                f"{', '.join(map(str, SAMPLE_RATES))}"
            )
        if self.encoding != "linear16" and rate not in G711_SAMPLE_RATES:
            raise ConfigError(
                f"xAI encoding {self.encoding!r} (G.711 telephony) is used at sample_rate "
                f"{', '.join(map(str, G711_SAMPLE_RATES))}, not {rate}; use sample_rate=8000, "
                f"or encoding 'linear16' for {rate} Hz"
            )
        if self.speed is not None:
            lo, hi = SPEED_RANGE
            if isinstance(self.speed, bool) or not isinstance(self.speed, int | float):
                raise ConfigError(f"xAI speed must be a number between {lo} and {hi}")
            if not lo <= self.speed <= hi:
                raise ConfigError(f"xAI speed must be between {lo} and {hi}, got {self.speed}")
        lat = self.optimize_streaming_latency
        if lat is not None and (isinstance(lat, bool) or lat not in LATENCY_LEVELS):
            raise ConfigError(
                f"xAI optimize_streaming_latency must be 0, 1 or 2 (or None for the server's "
                f"default), got {lat!r}"
            )
        for name in ("text_normalization", "with_timestamps"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"xAI {name} must be True, False or None, got {value!r}")

    @property
    def codec(self) -> str:
        return CODECS[self.encoding]

    def query(self) -> dict[str, str]:
        """The query string; booleans as lowercase ``true``/``false``."""
        q = {
            "voice": self.voice,
            "language": self.language,
            "codec": self.codec,
            "sample_rate": str(self.sample_rate),
        }
        if self.speed is not None:
            q["speed"] = f"{self.speed:g}"
        if self.optimize_streaming_latency is not None:
            q["optimize_streaming_latency"] = str(self.optimize_streaming_latency)
        if self.text_normalization is not None:
            q["text_normalization"] = _bool(self.text_normalization)
        if self.with_timestamps is not None:
            q["with_timestamps"] = _bool(self.with_timestamps)
        return q


def _bool(value: bool) -> str:
    return "true" if value else "false"


def build_url(base_url: str, options: XAIOptions) -> str:
    """``wss://api.x.ai/v1/tts?voice=...``; ``base_url`` is a ws(s) origin, path optional."""
    parts = urlsplit(base_url) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(
            f"xAI base_url must look like 'wss://api.x.ai' (or ws://127.0.0.1:PORT for a "
            f"local fake), got {base_url!r}"
        )
    path = parts.path.rstrip("/")
    if not path.endswith(PATH):
        path += PATH
    return f"{parts.scheme}://{parts.netloc}{path}?{urlencode(options.query())}"


def auth_headers(api_key: str) -> dict[str, str]:
    """``Authorization: Bearer <key>``."""
    return {"Authorization": f"Bearer {api_key}"}
