"""Google Cloud Text-to-Speech over REST (sans-I/O): ``POST /v1/text:synthesize``.

The request and response as documented at
https://cloud.google.com/text-to-speech/docs/reference/rest/v1/text/synthesize
(``SynthesizeSpeechRequest``: ``input``, ``voice``, ``audioConfig``;
``SynthesizeSpeechResponse``: base64 ``audioContent``) and
https://cloud.google.com/docs/authentication/api-keys (an API key in the
``x-goog-api-key`` header or the ``key`` query parameter). The JSON is checked against
the official SDK's own message types (``google-cloud-texttospeech``,
``SynthesizeSpeechRequest.from_json``/``SynthesizeSpeechResponse.from_json``) in
``tests/test_google_tts.py``.

Why REST, one request per sentence, and not streaming: Google's streaming synthesis
(``StreamingSynthesize``) is a bidirectional gRPC method only, with no REST or WebSocket
form; speaking it needs ``grpcio`` (an 18 MB native wheel) and HTTP/2, a heavy runtime
dependency for one provider. ``text:synthesize`` is one-shot — the whole audio of a text
in one JSON answer — so antiphon sends one request per flush segment (a sentence, from
the agent's segmenter), in order, on the shared REST TTS loop
(:mod:`antiphon.services.http_tts`); the first sentence's audio arrives when that
sentence is synthesized, not word by word.

- :class:`GoogleTTSOptions` (voice, language, sample rate, rate, pitch, gain),
  :func:`synthesize_url`, :func:`request_headers`, :func:`build_body` (``audioEncoding:
  PCM``: 16-bit little-endian samples without a WAV header), :func:`split_text` (the API
  refuses more than 5,000 bytes of input), :func:`parse_response` (the PCM of an
  answer; a WAV header, as ``LINEAR16`` would have, is stripped), and
  :func:`is_invalid_key` (a wrong key is ``400 INVALID_ARGUMENT``, reason
  ``API_KEY_INVALID``, not a 401).

No I/O and no asyncio here; the plugin is ``antiphon.plugins.google.tts``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from antiphon.errors import ConfigError

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_VOICE",
    "KEY_ENV",
    "MAX_INPUT_BYTES",
    "PATH",
    "SAMPLE_RATES",
    "GoogleTTSOptions",
    "MalformedResponse",
    "build_body",
    "is_invalid_key",
    "parse_response",
    "request_headers",
    "split_text",
    "synthesize_url",
]

DEFAULT_BASE_URL = "https://texttospeech.googleapis.com"
PATH = "/v1/text:synthesize"
KEY_ENV = "GOOGLE_API_KEY"
DEFAULT_VOICE = "en-US-Chirp3-HD-Charon"
DEFAULT_SAMPLE_RATE = 24000
SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
#: The API's limit on ``input.text`` (bytes of UTF-8).
MAX_INPUT_BYTES = 5000
_LANGUAGE = re.compile(r"^[a-z]{2,3}-[A-Z0-9]{2,3}")


@dataclass(frozen=True, slots=True)
class GoogleTTSOptions:
    """What a request asks for (``voice`` and ``audioConfig``)."""

    voice: str = DEFAULT_VOICE
    language: str | None = None
    sample_rate: int = DEFAULT_SAMPLE_RATE
    speaking_rate: float | None = None
    pitch: float | None = None
    volume_gain_db: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.voice, str) or not self.voice.strip():
            raise ConfigError(f"voice must name a Google voice, e.g. {DEFAULT_VOICE!r}")
        if self.language is None and not _LANGUAGE.match(self.voice):
            raise ConfigError(
                f"cannot tell the language of voice {self.voice!r}; pass language='en-US'"
            )
        if self.sample_rate not in SAMPLE_RATES:
            raise ConfigError(
                f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))}, "
                f"got {self.sample_rate!r}"
            )
        for label, value, low, high in (
            ("speaking_rate", self.speaking_rate, 0.25, 4.0),
            ("pitch", self.pitch, -20.0, 20.0),
            ("volume_gain_db", self.volume_gain_db, -96.0, 16.0),
        ):
            if value is not None and not low <= value <= high:
                raise ConfigError(f"{label} must be between {low:g} and {high:g}, got {value!r}")

    @property
    def language_code(self) -> str:
        """``language``, or the voice name's first two parts (``en-US-...`` → ``en-US``)."""
        if self.language:
            return self.language
        match = _LANGUAGE.match(self.voice)
        assert match is not None  # checked in __post_init__
        return match.group(0)


def synthesize_url(base_url: str = DEFAULT_BASE_URL) -> str:
    """``{base_url}/v1/text:synthesize``."""
    base = base_url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base):
        raise ConfigError(
            f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL!r}, got {base_url!r}"
        )
    return base if base.endswith(PATH) else base + PATH


def request_headers(api_key: str) -> dict[str, str]:
    """The key in ``x-goog-api-key`` (kept out of the URL, so out of logs), JSON types."""
    return {
        "x-goog-api-key": api_key,
        "content-type": "application/json; charset=utf-8",
        "accept": "application/json",
    }


def build_body(text: str, options: GoogleTTSOptions) -> dict[str, Any]:
    """The ``SynthesizeSpeechRequest`` of ``text`` (at most :data:`MAX_INPUT_BYTES`)."""
    if not text.strip():
        raise ConfigError("Google TTS needs non-blank text")
    if len(text.encode("utf-8")) > MAX_INPUT_BYTES:
        raise ConfigError(f"Google TTS takes at most {MAX_INPUT_BYTES} bytes; use split_text")
    audio: dict[str, Any] = {"audioEncoding": "PCM", "sampleRateHertz": options.sample_rate}
    if options.speaking_rate is not None:
        audio["speakingRate"] = options.speaking_rate
    if options.pitch is not None:
        audio["pitch"] = options.pitch
    if options.volume_gain_db is not None:
        audio["volumeGainDb"] = options.volume_gain_db
    return {
        "input": {"text": text},
        "voice": {"languageCode": options.language_code, "name": options.voice},
        "audioConfig": audio,
    }


def split_text(text: str, limit: int = MAX_INPUT_BYTES) -> list[str]:
    """``text`` in pieces of at most ``limit`` UTF-8 bytes, cut at spaces where possible."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest.encode("utf-8")) > limit:
        cut = limit
        while len(rest[:cut].encode("utf-8")) > limit:
            cut -= 1
        space = rest.rfind(" ", 0, cut)
        if space > 0:
            cut = space
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return pieces


class MalformedResponse(ValueError):
    """A 2xx answer that is not a ``SynthesizeSpeechResponse`` with audio."""


def parse_response(body: bytes) -> bytes:
    """The int16 PCM of a ``SynthesizeSpeechResponse`` (a WAV header is stripped)."""
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MalformedResponse("the answer is not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("audioContent"), str):
        raise MalformedResponse("the answer has no audioContent")
    try:
        audio = base64.b64decode(obj["audioContent"], validate=True)
    except (binascii.Error, ValueError):
        raise MalformedResponse("audioContent is not base64") from None
    return _strip_wav(audio)


def _strip_wav(audio: bytes) -> bytes:
    """The samples of a RIFF/WAVE file (its ``data`` chunk), or ``audio`` as it is."""
    if len(audio) < 12 or audio[:4] != b"RIFF" or audio[8:12] != b"WAVE":
        return audio
    pos = 12
    while pos + 8 <= len(audio):
        kind, size = audio[pos : pos + 4], int.from_bytes(audio[pos + 4 : pos + 8], "little")
        if kind == b"data":
            return audio[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)
    raise MalformedResponse("a WAV answer without a data chunk")


def is_invalid_key(status: int, body: str) -> bool:
    """Whether an error answer means a wrong key (Google answers it with 400)."""
    return status == 400 and ("API_KEY_INVALID" in body or "API key not valid" in body)
