"""ElevenLabs multi-context TTS: options, output formats, URL and handshake headers.

The configuration half of :mod:`antiphon.protocols.elevenlabs_tts`: the constants of the
``/multi-stream-input`` endpoint, :class:`StreamOptions` (the query of a connection and the
settings every context opens with), validated when built so a bad voice id, model or
format fails at construction rather than as a server close, and :func:`build_url` /
:func:`auth_headers` for the handshake. Split from the wire messages and the session so
each reads on its own; everything is re-exported from ``elevenlabs_tts``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from antiphon.errors import ConfigError

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_ENCODING",
    "DEFAULT_INACTIVITY_TIMEOUT",
    "DEFAULT_MODEL",
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_VOICE",
    "ENCODINGS",
    "MAX_CONTEXTS",
    "MAX_INACTIVITY_TIMEOUT",
    "PATH_TEMPLATE",
    "PROVIDER",
    "TEXT_NORMALIZATION",
    "UNSUPPORTED_MODELS",
    "PronunciationDictionary",
    "StreamOptions",
    "VoiceSettings",
    "auth_headers",
    "build_url",
    "output_format",
    "parse_output_format",
    "resolve_format",
]

PROVIDER = "elevenlabs"
DEFAULT_BASE_URL = "wss://api.elevenlabs.io"
PATH_TEMPLATE = "/v1/text-to-speech/{voice_id}/multi-stream-input"
DEFAULT_MODEL = "eleven_flash_v2_5"
#: A premade voice ("George") used in ElevenLabs' own streaming examples.
DEFAULT_VOICE = "JBFqnCBsd6RMkjVDRZzb"
DEFAULT_ENCODING = "linear16"
DEFAULT_SAMPLE_RATE = 24000
#: Raw encodings the multi-context endpoint streams, and their sample rates.
ENCODINGS: dict[str, tuple[int, ...]] = {
    "linear16": (8000, 16000, 22050, 24000, 44100),
    "mulaw": (8000,),
    "alaw": (8000,),
}
_FORMAT_PREFIX = {"linear16": "pcm", "mulaw": "ulaw", "alaw": "alaw"}
_PREFIX_ENCODING = {v: k for k, v in _FORMAT_PREFIX.items()}
#: Contexts one connection may have open at once (the server refuses a sixth).
MAX_CONTEXTS = 5
DEFAULT_INACTIVITY_TIMEOUT = 20
MAX_INACTIVITY_TIMEOUT = 180
TEXT_NORMALIZATION = ("auto", "on", "off")
#: Models the multi-context endpoint refuses, with what to use instead.
UNSUPPORTED_MODELS = {
    "eleven_v3": "multi-context WebSockets are not available for eleven_v3; use "
    "eleven_flash_v2_5 (lowest latency), eleven_turbo_v2_5 or eleven_multilingual_v2",
}
_VOICE_ID = re.compile(r"^[A-Za-z0-9_-]+$")


# --------------------------------------------------------------------------- config


def output_format(encoding: str, sample_rate: int) -> str:
    """The ``output_format`` value for a wire encoding and rate (``pcm_24000``)."""
    return f"{_FORMAT_PREFIX[encoding]}_{sample_rate}"


def parse_output_format(value: str) -> tuple[str, int]:
    """``"pcm_24000"`` → ``("linear16", 24000)``; compressed formats are refused."""
    prefix, _, rest = value.partition("_")
    if prefix in ("mp3", "opus"):
        raise ConfigError(
            f"ElevenLabs output_format {value!r} is compressed; antiphon streams raw audio "
            "frames: use pcm_24000 (encoding='linear16') or ulaw_8000 / alaw_8000 for telephony"
        )
    encoding = _PREFIX_ENCODING.get(prefix)
    rate = rest.split("_", 1)[0]
    if encoding is None or not rate.isdigit():
        raise ConfigError(
            f"unknown ElevenLabs output_format {value!r}; use one of "
            + ", ".join(output_format(e, r) for e, rates in ENCODINGS.items() for r in rates)
        )
    return encoding, int(rate)


def resolve_format(
    encoding: str | None, sample_rate: int | None, fmt: str | None
) -> tuple[str, int]:
    """The wire encoding and rate from either ``output_format`` or encoding/sample_rate.

    Without a rate, linear16 defaults to 24 kHz and mulaw/alaw to 8 kHz.
    """
    if fmt is not None:
        enc, rate = parse_output_format(fmt)
        if (encoding is not None and encoding != enc) or (
            sample_rate is not None and sample_rate != rate
        ):
            raise ConfigError(
                f"output_format={fmt!r} contradicts encoding={encoding!r}/sample_rate="
                f"{sample_rate!r}; pass either output_format or encoding and sample_rate"
            )
        return enc, rate
    enc = encoding or DEFAULT_ENCODING
    if sample_rate is None:
        sample_rate = DEFAULT_SAMPLE_RATE if enc == "linear16" else 8000
    return enc, sample_rate


def _unit(name: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ConfigError(f"ElevenLabs voice setting {name} must be between 0 and 1, got {value}")


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    """Per-context voice settings; ``None`` leaves the voice's own setting."""

    stability: float | None = None
    similarity_boost: float | None = None
    style: float | None = None
    use_speaker_boost: bool | None = None
    speed: float | None = None

    def __post_init__(self) -> None:
        _unit("stability", self.stability)
        _unit("similarity_boost", self.similarity_boost)
        _unit("style", self.style)
        if self.speed is not None and not 0.7 <= self.speed <= 1.2:
            raise ConfigError(f"ElevenLabs speed must be between 0.7 and 1.2, got {self.speed}")

    def to_json(self) -> dict[str, float | bool]:
        names = ("stability", "similarity_boost", "style", "use_speaker_boost", "speed")
        return {n: v for n in names if (v := getattr(self, n)) is not None}


@dataclass(frozen=True, slots=True)
class PronunciationDictionary:
    """A pronunciation dictionary (id and version) applied to every context."""

    dictionary_id: str
    version_id: str


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """The query parameters of a connection and the settings every context opens with.

    ``None`` leaves the server's default (and sends nothing).
    """

    voice: str = DEFAULT_VOICE
    model: str = DEFAULT_MODEL
    encoding: str = DEFAULT_ENCODING
    sample_rate: int = DEFAULT_SAMPLE_RATE
    language_code: str | None = None
    inactivity_timeout: int | None = None
    auto_mode: bool | None = None
    enable_ssml_parsing: bool | None = None
    apply_text_normalization: str | None = None
    enable_logging: bool | None = None
    seed: int | None = None
    voice_settings: VoiceSettings | None = None
    chunk_length_schedule: tuple[int, ...] | None = None
    pronunciation_dictionaries: tuple[PronunciationDictionary, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.voice, str) or not _VOICE_ID.match(self.voice):
            raise ConfigError(
                f"ElevenLabs voice must be a voice id such as {DEFAULT_VOICE!r} "
                f"(see the voice library), got {self.voice!r}"
            )
        if not isinstance(self.model, str) or not self.model.strip() or " " in self.model:
            raise ConfigError(f"ElevenLabs model must be a model id such as {DEFAULT_MODEL!r}")
        if self.model in UNSUPPORTED_MODELS:
            raise ConfigError(f"ElevenLabs model {self.model!r}: {UNSUPPORTED_MODELS[self.model]}")
        rates = ENCODINGS.get(self.encoding)
        if rates is None:
            raise ConfigError(
                f"ElevenLabs streaming in antiphon does not support encoding {self.encoding!r}; "
                f"use one of {', '.join(ENCODINGS)} (mp3/opus are compressed, not raw frames)"
            )
        if self.sample_rate not in rates:
            raise ConfigError(
                f"ElevenLabs encoding {self.encoding!r} does not support sample_rate "
                f"{self.sample_rate}; use one of {', '.join(map(str, rates))}"
            )
        if self.inactivity_timeout is not None and not (
            1 <= self.inactivity_timeout <= MAX_INACTIVITY_TIMEOUT
        ):
            raise ConfigError(
                f"ElevenLabs inactivity_timeout must be 1 to {MAX_INACTIVITY_TIMEOUT} seconds, "
                f"got {self.inactivity_timeout}"
            )
        if (
            self.apply_text_normalization is not None
            and self.apply_text_normalization not in TEXT_NORMALIZATION
        ):
            raise ConfigError(
                "ElevenLabs apply_text_normalization must be one of "
                f"{', '.join(TEXT_NORMALIZATION)}, got {self.apply_text_normalization!r}"
            )
        if self.seed is not None and not 0 <= self.seed <= 4294967295:
            raise ConfigError(f"ElevenLabs seed must be between 0 and 4294967295, got {self.seed}")
        if self.chunk_length_schedule is not None and (
            not self.chunk_length_schedule
            or not all(50 <= n <= 500 for n in self.chunk_length_schedule)
        ):
            raise ConfigError(
                "ElevenLabs chunk_length_schedule must be a non-empty list of character counts "
                f"between 50 and 500 (default [120, 160, 250, 290]), got "
                f"{list(self.chunk_length_schedule)}"
            )
        if self.language_code is not None and not re.match(r"^[a-z]{2,3}$", self.language_code):
            raise ConfigError(
                f"ElevenLabs language_code must be an ISO 639-1 code such as 'en', "
                f"got {self.language_code!r}"
            )

    @property
    def output_format(self) -> str:
        return output_format(self.encoding, self.sample_rate)

    def query(self) -> dict[str, str]:
        q = {"model_id": self.model, "output_format": self.output_format}
        flags = {
            "auto_mode": self.auto_mode,
            "enable_ssml_parsing": self.enable_ssml_parsing,
            "enable_logging": self.enable_logging,
        }
        for name, flag in flags.items():
            if flag is not None:
                q[name] = "true" if flag else "false"
        if self.language_code is not None:
            q["language_code"] = self.language_code
        if self.inactivity_timeout is not None:
            q["inactivity_timeout"] = str(self.inactivity_timeout)
        if self.apply_text_normalization is not None:
            q["apply_text_normalization"] = self.apply_text_normalization
        if self.seed is not None:
            q["seed"] = str(self.seed)
        return q

    def init_fields(self) -> dict[str, Any]:
        """What the first message of every context carries besides text and id."""
        fields: dict[str, Any] = {}
        if self.voice_settings is not None and self.voice_settings.to_json():
            fields["voice_settings"] = self.voice_settings.to_json()
        if self.chunk_length_schedule is not None:
            fields["generation_config"] = {
                "chunk_length_schedule": list(self.chunk_length_schedule)
            }
        if self.pronunciation_dictionaries:
            fields["pronunciation_dictionary_locators"] = [
                {"pronunciation_dictionary_id": d.dictionary_id, "version_id": d.version_id}
                for d in self.pronunciation_dictionaries
            ]
        return fields


def build_url(base_url: str, options: StreamOptions) -> str:
    """``wss://host/v1/text-to-speech/{voice}/multi-stream-input?model_id=...``.

    ``base_url`` is a ws(s) origin (``wss://api.elevenlabs.io``, a residency host, or
    ``ws://127.0.0.1:PORT`` for a local fake), optionally with a path prefix.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(
            "ElevenLabs base_url must look like 'wss://api.elevenlabs.io' (or "
            f"ws://127.0.0.1:PORT for a local fake), got {base_url!r}"
        )
    path = parts.path.rstrip("/")
    if path.endswith("/multi-stream-input"):
        path = path[: path.rfind("/v1/text-to-speech/")]
    elif path.endswith("/v1"):
        path = path[:-3]
    path += PATH_TEMPLATE.format(voice_id=quote(options.voice, safe=""))
    return f"{parts.scheme}://{parts.netloc}{path}?{urlencode(options.query())}"


def auth_headers(api_key: str) -> dict[str, str]:
    """``xi-api-key: <key>``."""
    return {"xi-api-key": api_key}
