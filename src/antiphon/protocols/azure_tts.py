"""Azure Speech text-to-speech, sans I/O: REST requests, SSML, audio formats, SDK mapping.

- Output formats (:data:`OUTPUT_FORMATS`): the raw and RIFF PCM rates and 8 kHz
  mu-law/a-law; compressed formats (mp3, opus, ...) are refused with a message, since
  antiphon yields PCM frames.
- :class:`Voice` and :func:`build_ssml`: SSML with the user's text escaped
  (``xml:lang``, ``voice``, ``mstts:express-as`` style/styledegree/role, ``prosody``
  rate/pitch/volume), every value validated at the edge; :func:`parse_ssml` reads it back.
- :func:`build_url`, :func:`request_headers`: ``POST /cognitiveservices/v1`` with a key or
  a bearer token, ``X-Microsoft-OutputFormat`` and ``User-Agent``.
- :class:`RiffReader`: strips the RIFF/WAVE header of ``riff-*`` formats from a streamed
  body, checking that it describes the requested format.
- The Speech SDK side: :func:`sdk_error` maps a cancellation to a typed error; and the
  SDK's (undocumented) v2 WebSocket framing, :func:`encode_ws_text` & co., for the fake.

How it is built: this module holds the formats, the REST request and the RIFF reader; the
SSML is :mod:`~antiphon.protocols.azure_tts_ssml`, the errors and their hints
:mod:`~antiphon.protocols.azure_tts_errors`, the WebSocket framing
:mod:`~antiphon.protocols.azure_tts_ws`. Every name of those is re-exported here, so
``from antiphon.protocols import azure_tts as az`` stays the one import of the protocol.

See ``docs/azure-tts.md`` for sources.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

from antiphon.errors import ConfigError
from antiphon.protocols.azure_tts_errors import (
    AUTH_HINT,
    KEY_ENV,
    PROVIDER,
    REGION_ENV,
    STATUS_HINTS,
    sdk_error,
)
from antiphon.protocols.azure_tts_ssml import (
    DEFAULT_LANGUAGE,
    DEFAULT_VOICE,
    MSTTS_NS,
    SSML_NS,
    XML_NS,
    SsmlError,
    SsmlInfo,
    Voice,
    build_ssml,
    clean_text,
    escape_text,
    language_of,
    parse_ssml,
)
from antiphon.protocols.azure_tts_ws import (
    WsMessage,
    encode_ws_audio,
    encode_ws_text,
    parse_ws_message,
)

__all__ = [
    "AUTH_HINT",
    "COMPRESSED_FORMATS",
    "DEFAULT_LANGUAGE",
    "DEFAULT_OUTPUT_FORMAT",
    "DEFAULT_VOICE",
    "KEY_ENV",
    "MSTTS_NS",
    "OUTPUT_FORMATS",
    "PCM_RATES",
    "PROVIDER",
    "REGION_ENV",
    "REST_PATH",
    "SSML_NS",
    "STATUS_HINTS",
    "WS_V2_PATH",
    "XML_NS",
    "OutputFormat",
    "RiffError",
    "RiffReader",
    "SsmlError",
    "SsmlInfo",
    "Voice",
    "WsMessage",
    "build_ssml",
    "build_url",
    "clean_text",
    "encode_ws_audio",
    "encode_ws_text",
    "escape_text",
    "language_of",
    "output_format_for",
    "parse_ssml",
    "parse_ws_message",
    "request_headers",
    "resolve_output_format",
    "riff_header",
    "sdk_error",
]

REST_PATH = "/cognitiveservices/v1"
WS_V2_PATH = "/cognitiveservices/websocket/v2"
DEFAULT_OUTPUT_FORMAT = "raw-24khz-16bit-mono-pcm"


# --------------------------------------------------------------------------- formats


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """One ``X-Microsoft-OutputFormat`` value antiphon can turn into PCM frames."""

    name: str
    container: str  # "raw" or "riff"
    encoding: str  # "linear16", "mulaw" or "alaw"
    sample_rate: int
    sdk_name: str  # member of azure.cognitiveservices.speech.SpeechSynthesisOutputFormat

    @property
    def sample_width(self) -> int:
        """Bytes per sample on the wire."""
        return 2 if self.encoding == "linear16" else 1


def _fmt(name: str, encoding: str, rate: int, sdk_name: str) -> OutputFormat:
    return OutputFormat(name, name.split("-", 1)[0], encoding, rate, sdk_name)


_RATE_TOKENS = {
    8000: ("8khz", "8Khz"),
    16000: ("16khz", "16Khz"),
    22050: ("22050hz", "22050Hz"),
    24000: ("24khz", "24Khz"),
    44100: ("44100hz", "44100Hz"),
    48000: ("48khz", "48Khz"),
}
#: Sample rates of 16-bit PCM output (both containers).
PCM_RATES: tuple[int, ...] = tuple(_RATE_TOKENS)
#: Every output format antiphon accepts, by its header value.
OUTPUT_FORMATS: dict[str, OutputFormat] = {}
for _container, _cap in (("raw", "Raw"), ("riff", "Riff")):
    for _rate, (_tok, _sdk) in _RATE_TOKENS.items():
        _name = f"{_container}-{_tok}-16bit-mono-pcm"
        OUTPUT_FORMATS[_name] = _fmt(_name, "linear16", _rate, f"{_cap}{_sdk}16BitMonoPcm")
    for _enc, _law in (("mulaw", "MULaw"), ("alaw", "ALaw")):
        _name = f"{_container}-8khz-8bit-mono-{_enc}"
        OUTPUT_FORMATS[_name] = _fmt(_name, _enc, 8000, f"{_cap}8Khz8BitMono{_law}")

#: Formats the service offers that antiphon does not decode.
COMPRESSED_FORMATS = frozenset(
    {
        "amr-wb-16000hz",
        "audio-16khz-16bit-32kbps-mono-opus",
        "audio-16khz-32kbitrate-mono-mp3",
        "audio-16khz-64kbitrate-mono-mp3",
        "audio-16khz-128kbitrate-mono-mp3",
        "audio-24khz-16bit-24kbps-mono-opus",
        "audio-24khz-16bit-48kbps-mono-opus",
        "audio-24khz-48kbitrate-mono-mp3",
        "audio-24khz-96kbitrate-mono-mp3",
        "audio-24khz-160kbitrate-mono-mp3",
        "audio-48khz-96kbitrate-mono-mp3",
        "audio-48khz-192kbitrate-mono-mp3",
        "ogg-16khz-16bit-mono-opus",
        "ogg-24khz-16bit-mono-opus",
        "ogg-48khz-16bit-mono-opus",
        "raw-16khz-16bit-mono-truesilk",
        "raw-24khz-16bit-mono-truesilk",
        "webm-16khz-16bit-mono-opus",
        "webm-24khz-16bit-24kbps-mono-opus",
        "webm-24khz-16bit-mono-opus",
    }
)


def resolve_output_format(name: str) -> OutputFormat:
    """The :class:`OutputFormat` called ``name``, or a ConfigError saying what to use."""
    fmt = OUTPUT_FORMATS.get(name)
    if fmt is not None:
        return fmt
    if name in COMPRESSED_FORMATS:
        raise ConfigError(
            f"Azure output format {name!r} is compressed; antiphon yields PCM frames and "
            f"does not decode it. Use a raw format such as {DEFAULT_OUTPUT_FORMAT!r} "
            "(or raw-8khz-8bit-mono-mulaw for telephony)"
        )
    raise ConfigError(
        f"unknown Azure output format {name!r}; use one of {', '.join(OUTPUT_FORMATS)}"
    )


def output_format_for(
    encoding: str = "linear16", sample_rate: int = 24000, container: str = "raw"
) -> OutputFormat:
    """The output format for an encoding, a sample rate and a container (raw or riff)."""
    if container not in ("raw", "riff"):
        raise ConfigError(f"Azure container must be 'raw' or 'riff', got {container!r}")
    if encoding == "linear16":
        if sample_rate not in _RATE_TOKENS:
            raise ConfigError(
                f"Azure 16-bit PCM does not support sample_rate {sample_rate}; "
                f"use one of {', '.join(map(str, PCM_RATES))}"
            )
        name = f"{container}-{_RATE_TOKENS[sample_rate][0]}-16bit-mono-pcm"
    elif encoding in ("mulaw", "alaw"):
        if sample_rate != 8000:
            raise ConfigError(
                f"Azure {encoding} output is 8000 Hz only, got sample_rate {sample_rate}; "
                "use sample_rate=8000 (or linear16 for other rates)"
            )
        name = f"{container}-8khz-8bit-mono-{encoding}"
    else:
        raise ConfigError(
            f"Azure TTS does not support encoding {encoding!r} as PCM output; use linear16, "
            "mulaw or alaw (compressed formats are not decoded by antiphon)"
        )
    return OUTPUT_FORMATS[name]


# --------------------------------------------------------------------------- REST

_REGION = re.compile(r"^[a-z][a-z0-9]{1,40}$")


def build_url(
    *, region: str | None = None, base_url: str | None = None, deployment_id: str | None = None
) -> str:
    """``https://{region}.tts.speech.microsoft.com/cognitiveservices/v1``, or ``base_url``.

    ``base_url`` is an origin (``https://host``, or ``http://127.0.0.1:PORT`` for a local
    fake) with or without the path. ``deployment_id`` (a custom voice deployment) uses the
    region's ``voice`` host and adds ``?deploymentId=``.
    """
    if deployment_id is not None:
        if not re.match(r"^[A-Za-z0-9\-]{1,64}$", deployment_id):
            raise ConfigError(
                f"Azure deployment_id must be a deployment GUID, got {deployment_id!r}"
            )
        url = build_url(region=region, base_url=base_url)
        if not base_url:
            url = url.replace(".tts.speech.", ".voice.speech.", 1)
        return f"{url}?deploymentId={deployment_id}"
    if base_url:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                "Azure base_url must look like 'https://westus.tts.speech.microsoft.com' "
                f"(or http://127.0.0.1:PORT for a local fake), got {base_url!r}"
            )
        path = parts.path.rstrip("/")
        if not path.endswith(REST_PATH):
            path += REST_PATH
        return f"{parts.scheme}://{parts.netloc}{path}"
    if not region:
        raise ConfigError(
            f"Azure TTS needs a region: pass region=... or set {REGION_ENV} (e.g. 'westus'), "
            "or pass base_url"
        )
    region = region.strip().lower()
    if not _REGION.match(region):
        raise ConfigError(
            f"Azure region must be a region name such as 'westus' or 'westeurope', got {region!r}"
        )
    return f"https://{region}.tts.speech.microsoft.com{REST_PATH}"


def request_headers(
    output_format: OutputFormat,
    *,
    key: str | None = None,
    token: str | None = None,
    user_agent: str = "antiphon",
) -> dict[str, str]:
    """Headers of a synthesis request: credentials, content type, output format, agent."""
    if (key is None) == (token is None):
        raise ConfigError("Azure TTS needs exactly one of an API key or a bearer token")
    headers = {
        "Content-Type": "application/ssml+xml",
        "X-Microsoft-OutputFormat": output_format.name,
        "User-Agent": user_agent[:254],
    }
    if key is not None:
        headers["Ocp-Apim-Subscription-Key"] = key
    else:
        headers["Authorization"] = f"Bearer {token}"
    return headers


# --------------------------------------------------------------------------- RIFF


class RiffError(ValueError):
    """The body does not start with a RIFF/WAVE header of the requested format."""


_WAVE_TAGS = {"linear16": 1, "alaw": 6, "mulaw": 7}


def riff_header(fmt: OutputFormat, data_len: int) -> bytes:
    """A 44-byte RIFF/WAVE header for ``data_len`` bytes of ``fmt`` audio."""
    width = fmt.sample_width
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_len)
        + b"WAVEfmt "
        + struct.pack(
            "<IHHIIHH",
            16,
            _WAVE_TAGS[fmt.encoding],
            1,
            fmt.sample_rate,
            fmt.sample_rate * width,
            width,
            8 * width,
        )
        + b"data"
        + struct.pack("<I", data_len)
    )


class RiffReader:
    """Strips the RIFF/WAVE header off a streamed body, whatever its chunking.

    :meth:`feed` returns the audio bytes of each piece (nothing until the header has
    passed); a header that does not describe ``expected`` (1 channel, its encoding and
    rate) raises :class:`RiffError`. Chunks before ``data`` (``LIST``, ``fact``) are
    skipped; the ``data`` size is ignored, as streaming servers may not know it.
    """

    MAX_HEADER = 64 * 1024

    def __init__(self, expected: OutputFormat) -> None:
        self.expected = expected
        self._buf = b""
        self._in_data = False
        self._seen_fmt = False
        self._pos = 0  # bytes consumed before self._buf

    @property
    def in_data(self) -> bool:
        """The header has passed: every further byte is audio."""
        return self._in_data

    def feed(self, data: bytes) -> bytes:
        if self._in_data:
            return data
        self._buf += data
        while not self._in_data:
            if self._pos == 0:
                if len(self._buf) < 12:
                    break
                if self._buf[:4] != b"RIFF" or self._buf[8:12] != b"WAVE":
                    raise RiffError("the audio does not start with a RIFF/WAVE header")
                self._consume(12)
                continue
            if len(self._buf) < 8:
                break
            cid, size = self._buf[:4], struct.unpack("<I", self._buf[4:8])[0]
            if cid == b"data":
                if not self._seen_fmt:
                    raise RiffError("the RIFF header has no 'fmt ' chunk before the audio")
                self._consume(8)
                self._in_data = True
                break
            padded = size + (size & 1)
            if padded > self.MAX_HEADER:
                raise RiffError(f"RIFF chunk {cid!r} of {size} bytes before the audio")
            if len(self._buf) < 8 + padded:
                break
            if cid == b"fmt ":
                self._check_fmt(self._buf[8 : 8 + size])
            self._consume(8 + padded)
        if self._pos > self.MAX_HEADER:
            raise RiffError("no audio within the first 64 KiB of the RIFF body")
        if self._in_data:
            out, self._buf = self._buf, b""
            return out
        return b""

    def finish(self) -> None:
        """The body ended: fail if it ended inside the header (an empty body is fine)."""
        if not self._in_data and (self._buf or self._pos):
            raise RiffError("the body ended inside the RIFF header")

    def _consume(self, n: int) -> None:
        self._buf = self._buf[n:]
        self._pos += n

    def _check_fmt(self, chunk: bytes) -> None:
        if len(chunk) < 16:
            raise RiffError("the RIFF 'fmt ' chunk is too short")
        tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", chunk[:16])
        if tag == 0xFFFE and len(chunk) >= 26:  # WAVE_FORMAT_EXTENSIBLE: sub-format GUID
            tag = struct.unpack("<H", chunk[24:26])[0]
        exp = self.expected
        want = (_WAVE_TAGS[exp.encoding], 1, exp.sample_rate, 8 * exp.sample_width)
        if (tag, channels, rate, bits) != want:
            raise RiffError(
                f"the server sent format tag {tag}, {channels} channel(s), {rate} Hz, {bits} "
                f"bits; {exp.name} was requested"
            )
        self._seen_fmt = True
