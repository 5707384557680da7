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

See ``docs/azure-tts.md`` for sources.
"""

from __future__ import annotations

import json
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from antiphon.errors import (
    AuthError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
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

PROVIDER = "azure"
REST_PATH = "/cognitiveservices/v1"
WS_V2_PATH = "/cognitiveservices/websocket/v2"
DEFAULT_VOICE = "en-US-AvaMultilingualNeural"
DEFAULT_LANGUAGE = "en-US"
DEFAULT_OUTPUT_FORMAT = "raw-24khz-16bit-mono-pcm"
SSML_NS = "http://www.w3.org/2001/10/synthesis"
MSTTS_NS = "http://www.w3.org/2001/mstts"
XML_NS = "http://www.w3.org/XML/1998/namespace"
KEY_ENV = "AZURE_SPEECH_KEY"
REGION_ENV = "AZURE_SPEECH_REGION"
AUTH_HINT = (
    f"check {KEY_ENV} (or the api_key/auth_token argument) and that the key belongs to "
    f"the region in {REGION_ENV}"
)


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


# --------------------------------------------------------------------------- SSML

_INVALID_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_LOCALE = re.compile(r"^[a-z]{2,3}-([A-Z]{2}|\d{3})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:()\- ]{0,199}$")
_STYLE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
_NUM = r"\d+(\.\d+)?"
_RATE = re.compile(rf"^(x-slow|slow|medium|fast|x-fast|default|{_NUM}|[+-]?{_NUM}%)$")
_PITCH = re.compile(
    rf"^(x-low|low|medium|high|x-high|default|{_NUM}Hz|[+-]{_NUM}(Hz|st)|[+-]?{_NUM}%)$"
)
_VOLUME = re.compile(
    rf"^(silent|x-soft|soft|medium|loud|x-loud|default|{_NUM}|[+-]{_NUM}|[+-]?{_NUM}%)$"
)


def clean_text(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry (control characters)."""
    return _INVALID_XML.sub("", text)


def language_of(voice: str) -> str:
    """The locale a voice name starts with (``en-US-AvaNeural`` → ``en-US``)."""
    parts = voice.split("-")
    if len(parts) >= 3 and _LOCALE.match(f"{parts[0]}-{parts[1]}"):
        return f"{parts[0]}-{parts[1]}"
    return DEFAULT_LANGUAGE


@dataclass(frozen=True, slots=True)
class Voice:
    """Who speaks and how: the voice, its language, speaking style and prosody.

    ``language`` defaults to the voice name's locale. ``style``/``style_degree``/``role``
    go into ``mstts:express-as`` (styledegree 0.01-2); ``rate``, ``pitch`` and
    ``volume`` into ``prosody`` using the SSML value forms (``"+10%"``, ``"1.2"``,
    ``"-2st"``, ``"+50Hz"``, ``"loud"``, ...). Values the service would reject are
    refused here with a ConfigError.
    """

    name: str = DEFAULT_VOICE
    language: str | None = None
    style: str | None = None
    style_degree: float | None = None
    role: str | None = None
    rate: str | None = None
    pitch: str | None = None
    volume: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(
                f"Azure voice must be a voice name such as {DEFAULT_VOICE!r}, got {self.name!r}"
            )
        if self.language is not None and not _LANG.match(self.language):
            raise ConfigError(
                f"Azure language must be a locale such as 'en-US', got {self.language!r}"
            )
        for attr in ("style", "role"):
            value = getattr(self, attr)
            if value is not None and not _STYLE.match(value):
                raise ConfigError(
                    f"Azure {attr} must be a name such as 'cheerful' (letters, digits, - and "
                    f"_), got {value!r}"
                )
        if self.style_degree is not None:
            if self.style is None:
                raise ConfigError("Azure style_degree needs a style (e.g. style='cheerful')")
            if not 0.01 <= self.style_degree <= 2:
                raise ConfigError(
                    f"Azure style_degree must be between 0.01 and 2, got {self.style_degree}"
                )
        checks = (
            ("rate", _RATE, "'+10%', '-20%', '1.2' or x-slow/slow/medium/fast/x-fast"),
            ("pitch", _PITCH, "'+2st', '-10%', '+50Hz', '600Hz' or x-low/low/medium/high"),
            ("volume", _VOLUME, "'+10%', '-5', '80' or silent/x-soft/soft/medium/loud/x-loud"),
        )
        for attr, pattern, forms in checks:
            value = getattr(self, attr)
            if value is not None and not pattern.match(value):
                raise ConfigError(f"Azure {attr} {value!r} is not valid; use a form like {forms}")

    @property
    def locale(self) -> str:
        return self.language or language_of(self.name)


def _attr(value: str) -> str:
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
    )


def escape_text(text: str) -> str:
    """``text`` as SSML character data: control characters removed, ``& < >`` escaped.

    Carriage returns become ``&#13;`` so that a parser gives back exactly ``text``.
    """
    return (
        clean_text(text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r", "&#13;")
    )


def build_ssml(text: str, voice: Voice) -> str:
    """One ``<speak>`` document that says ``text`` (escaped, whitespace kept) with ``voice``."""
    body = escape_text(text)
    prosody = [
        f'{a}="{_attr(v)}"'
        for a, v in (("rate", voice.rate), ("pitch", voice.pitch), ("volume", voice.volume))
        if v is not None
    ]
    if prosody:
        body = f"<prosody {' '.join(prosody)}>{body}</prosody>"
    if voice.style is not None or voice.role is not None:
        attrs = []
        if voice.style is not None:
            attrs.append(f'style="{_attr(voice.style)}"')
        if voice.style_degree is not None:
            attrs.append(f'styledegree="{voice.style_degree:g}"')
        if voice.role is not None:
            attrs.append(f'role="{_attr(voice.role)}"')
        body = f"<mstts:express-as {' '.join(attrs)}>{body}</mstts:express-as>"
    return (
        f'<speak version="1.0" xmlns="{SSML_NS}" xmlns:mstts="{MSTTS_NS}" '
        f'xml:lang="{_attr(voice.locale)}"><voice name="{_attr(voice.name)}">{body}'
        "</voice></speak>"
    )


class SsmlError(ValueError):
    """The SSML document is not valid (what the service answers with 400)."""


@dataclass(frozen=True, slots=True)
class SsmlInfo:
    """What a ``<speak>`` document asks for (read back by :func:`parse_ssml`)."""

    text: str
    voice: str
    language: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    """Attributes of ``express-as`` and ``prosody`` (style, styledegree, rate, ...)."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_ssml(ssml: str | bytes) -> SsmlInfo:
    """Check a ``<speak>`` document and return its text (all voices joined) and settings."""
    try:
        root = ET.fromstring(ssml)
    except ET.ParseError as exc:
        raise SsmlError(f"SSML is not well-formed XML: {exc}") from None
    if _local(root.tag) != "speak":
        raise SsmlError(f"the root element must be <speak>, got <{_local(root.tag)}>")
    if root.get("version") != "1.0":
        raise SsmlError("<speak> needs version='1.0'")
    language = root.get(f"{{{XML_NS}}}lang")
    if not language:
        raise SsmlError("<speak> needs xml:lang")
    voices = [el for el in root if _local(el.tag) == "voice"]
    if not voices:
        raise SsmlError("<speak> needs at least one <voice> element")
    attributes: dict[str, str] = {}
    for v in voices:
        if not v.get("name"):
            raise SsmlError("<voice> needs a name")
        for el in v.iter():
            if _local(el.tag) in ("express-as", "prosody"):
                attributes.update(el.attrib)
    text = "".join("".join(v.itertext()) for v in voices)
    return SsmlInfo(text, voices[0].get("name", ""), language, attributes)


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


#: What to check for each HTTP status of the synthesis endpoint.
STATUS_HINTS: dict[int, str] = {
    400: (
        "the service refused the request: check the voice name (it must exist in the region), "
        "the style and prosody values, and the output format"
    ),
    401: AUTH_HINT,
    403: AUTH_HINT,
    404: "no synthesis endpoint at this URL; check the region or base_url",
    415: "the request's Content-Type must be application/ssml+xml (please report this)",
    429: "over the resource's request quota (free tier: 20 per minute); slow down or upgrade",
    502: "a network or server problem at Azure (or invalid headers); retrying usually helps",
}


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


# --------------------------------------------------------------------------- Speech SDK


#: ``CancellationErrorCode`` names of the Speech SDK → HTTP-like status for the error.
_SDK_STATUS = {
    "AuthenticationFailure": 401,
    "Forbidden": 403,
    "TooManyRequests": 429,
    "BadRequest": 400,
    "ServiceUnavailable": 503,
    "ServiceError": 500,
}
_CLOSED_BY_SERVER = re.compile(r"closed by the remote host\. Error code: (\d+)")
_STATUS_IN_TEXT = re.compile(r"\((\d{3})\)|\b(?:status|code)[: ]+(\d{3})\b", re.IGNORECASE)


def sdk_error(error_code: str, details: str, *, stage: str) -> ProviderError:
    """The typed error for a Speech SDK cancellation (``error_code`` is the enum's name).

    The SDK reports refused WebSocket upgrades as text (``... (401)``); that status, when
    present, becomes the error's code.
    """
    details = " ".join(details.split())[:400] or "no details"
    closed = _CLOSED_BY_SERVER.search(details)
    if closed and error_code not in ("AuthenticationFailure", "Forbidden"):
        code = int(closed.group(1))
        return ProviderConnectionError(
            f"the service closed the connection: {details}",
            provider=PROVIDER,
            stage=stage,
            code=code,
            hint="the service dropped the connection; retrying usually helps",
            retryable=code in (1001, 1006, 1011, 1012, 1013),
        )
    m = _STATUS_IN_TEXT.search(details)
    status = int(m.group(1) or m.group(2)) if m else _SDK_STATUS.get(error_code)
    if error_code in ("AuthenticationFailure", "Forbidden") or status in (401, 403):
        return AuthError(
            f"the service refused the credentials: {details}",
            provider=PROVIDER,
            stage="connect",
            code=status or 401,
            hint=AUTH_HINT,
        )
    if error_code == "ConnectionFailure" and status is None:
        return ProviderConnectionError(
            f"the connection failed: {details}",
            provider=PROVIDER,
            stage=stage,
            hint="check the region or endpoint and the network",
            retryable=True,
        )
    if error_code == "ServiceTimeout":
        return ProviderConnectionError(
            f"the service timed out: {details}",
            provider=PROVIDER,
            stage=stage,
            hint="the service did not answer in time; retrying usually helps",
            retryable=True,
        )
    retryable = status is not None and (status == 429 or status >= 500)
    if status is None:
        retryable = error_code in ("ServiceError", "ServiceUnavailable", "ConnectionFailure")
    return ProviderError(
        f"synthesis was cancelled ({error_code}): {details}",
        provider=PROVIDER,
        stage="connect" if status is not None and error_code == "ConnectionFailure" else stage,
        code=status if status is not None else error_code,
        hint=STATUS_HINTS.get(status or 0),
        retryable=retryable,
    )


# The Speech SDK's WebSocket messages (read from Microsoft's JS SDK; not a published API):
# text frames are "Name:value" header lines, a blank line, then the body; binary frames
# are a 2-byte big-endian header length, the header lines, then the payload.


@dataclass(frozen=True, slots=True)
class WsMessage:
    """One Speech SDK WebSocket message: its headers (``Path``, ``X-RequestId``, ...) and body."""

    headers: Mapping[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.header("Path").lower()

    @property
    def request_id(self) -> str:
        return self.header("X-RequestId")

    def header(self, name: str) -> str:
        name = name.lower()
        for k, v in self.headers.items():
            if k.lower() == name:
                return v
        return ""

    def json(self) -> object:
        """The body parsed as JSON (None if it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def _header_lines(headers: Mapping[str, str]) -> str:
    return "".join(f"{k}:{v}\r\n" for k, v in headers.items())


def _parse_headers(text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in text.split("\r\n"):
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip()] = v.strip()
    return headers


def encode_ws_text(
    path: str, request_id: str, body: str = "", content_type: str = "application/json"
) -> str:
    """A text frame with ``Path``/``X-RequestId``/``Content-Type`` headers and ``body``."""
    head = {"X-RequestId": request_id, "Content-Type": content_type, "Path": path}
    return _header_lines(head) + "\r\n" + body


def encode_ws_audio(request_id: str, stream_id: str, audio: bytes) -> bytes:
    """A binary ``Path: audio`` frame carrying ``audio``."""
    head = _header_lines(
        {"X-RequestId": request_id, "X-StreamId": stream_id, "Path": "audio"}
    ).encode("ascii")
    return struct.pack(">H", len(head)) + head + audio


def parse_ws_message(frame: str | bytes) -> WsMessage:
    """Headers and body of a text or binary frame (``ValueError`` if it is malformed)."""
    if isinstance(frame, str):
        head, sep, body = frame.partition("\r\n\r\n")
        if not sep:
            raise ValueError("text frame without a blank line after its headers")
        return WsMessage(_parse_headers(head), body.encode("utf-8"))
    if len(frame) < 2:
        raise ValueError("binary frame shorter than its header length")
    n = struct.unpack(">H", frame[:2])[0]
    if len(frame) < 2 + n:
        raise ValueError("binary frame shorter than its headers")
    return WsMessage(_parse_headers(frame[2 : 2 + n].decode("ascii", "replace")), frame[2 + n :])
