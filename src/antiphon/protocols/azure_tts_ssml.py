"""Azure Speech SSML (sans I/O): :class:`Voice`, :func:`build_ssml` and :func:`parse_ssml`.

How it is built: a :class:`Voice` validates every value at the edge (voice name, locale,
``mstts:express-as`` style/styledegree/role, ``prosody`` rate/pitch/volume) and raises a
ConfigError for what the service would refuse; :func:`build_ssml` then writes one
``<speak>`` document with the user's text escaped (:func:`escape_text`, whitespace kept),
and :func:`parse_ssml` reads one back (for the fake). Why a module of its own: the SSML
is pure text building, shared by the REST plugin and the fake, and apart from the REST
request, the audio formats and the SDK framing of :mod:`antiphon.protocols.azure_tts`,
which re-exports every name here.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field

from antiphon.errors import ConfigError

__all__ = [
    "DEFAULT_LANGUAGE",
    "DEFAULT_VOICE",
    "MSTTS_NS",
    "SSML_NS",
    "XML_NS",
    "SsmlError",
    "SsmlInfo",
    "Voice",
    "build_ssml",
    "clean_text",
    "escape_text",
    "language_of",
    "parse_ssml",
]

DEFAULT_VOICE = "en-US-AvaMultilingualNeural"
DEFAULT_LANGUAGE = "en-US"
SSML_NS = "http://www.w3.org/2001/10/synthesis"
MSTTS_NS = "http://www.w3.org/2001/mstts"
XML_NS = "http://www.w3.org/XML/1998/namespace"

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
