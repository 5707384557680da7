"""The TTS providers antiphon knows by name, for the CLI, the server and benchmarks.

Each entry builds the plugin from common settings (key, base URL, voice, encoding, sample
rate). Imports are lazy so that naming a provider never loads another one's
dependencies. The providers' fake servers are test code: :mod:`antiphon.testing.registry`
names them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from antiphon.errors import ConfigError

__all__ = ["TTS_PROVIDERS", "TTSProvider", "TTSSettings", "tts_provider"]

if TYPE_CHECKING:
    from antiphon.services.tts import TTS, TTSDeadlines


@dataclass(frozen=True, slots=True)
class TTSSettings:
    """Provider-neutral settings; ``None`` means the provider's default."""

    api_key: str | None = None
    base_url: str | None = None
    voice: str | None = None
    encoding: str | None = None
    sample_rate: int | None = None
    deadlines: TTSDeadlines | None = None


@dataclass(frozen=True, slots=True)
class TTSProvider:
    name: str
    env: str
    """Environment variable(s) the plugin reads its credentials from."""
    make: Callable[[TTSSettings], TTS]
    transport: str = "websocket"
    """``websocket``, ``http`` or ``sdk`` (a native SDK on a worker thread)."""


def _deepgram(s: TTSSettings) -> TTS:
    from antiphon.plugins.deepgram import DeepgramTTS
    from antiphon.protocols import deepgram_tts as dg

    return DeepgramTTS(
        api_key=s.api_key,
        base_url=s.base_url or dg.DEFAULT_BASE_URL,
        model=s.voice or dg.DEFAULT_MODEL,
        encoding=s.encoding or dg.DEFAULT_ENCODING,
        sample_rate=s.sample_rate or dg.DEFAULT_SAMPLE_RATE,
        deadlines=s.deadlines,
    )


def _cartesia(s: TTSSettings) -> TTS:
    from antiphon.plugins.cartesia import CartesiaTTS
    from antiphon.protocols import cartesia_tts as ca

    return CartesiaTTS(
        api_key=s.api_key,
        base_url=s.base_url or ca.DEFAULT_BASE_URL,
        voice=s.voice or ca.DEFAULT_VOICE,
        encoding=s.encoding or ca.DEFAULT_ENCODING,
        sample_rate=s.sample_rate or ca.DEFAULT_SAMPLE_RATE,
        deadlines=s.deadlines,
    )


def _elevenlabs(s: TTSSettings) -> TTS:
    from antiphon.plugins.elevenlabs import ElevenLabsTTS
    from antiphon.protocols import elevenlabs_tts as el

    return ElevenLabsTTS(
        api_key=s.api_key,
        base_url=s.base_url or el.DEFAULT_BASE_URL,
        voice=s.voice or el.DEFAULT_VOICE,
        encoding=s.encoding,
        sample_rate=s.sample_rate,
        deadlines=s.deadlines,
    )


def _azure(s: TTSSettings) -> TTS:
    from antiphon.plugins.azure import AzureTTS
    from antiphon.protocols import azure_tts as az

    return AzureTTS(
        api_key=s.api_key,
        base_url=s.base_url,
        voice=s.voice or az.DEFAULT_VOICE,
        encoding=s.encoding or "linear16",
        sample_rate=s.sample_rate,
        deadlines=s.deadlines,
    )


def _azure_sdk(s: TTSSettings) -> TTS:
    from antiphon.plugins.azure import AzureSdkTTS
    from antiphon.protocols import azure_tts as az

    return AzureSdkTTS(
        api_key=s.api_key,
        endpoint=s.base_url,
        voice=s.voice or az.DEFAULT_VOICE,
        encoding=s.encoding or "linear16",
        sample_rate=s.sample_rate,
        deadlines=s.deadlines,
    )


def _xai(s: TTSSettings) -> TTS:
    from antiphon.plugins.xai import XAITTS
    from antiphon.protocols import xai_tts as xai

    return XAITTS(
        api_key=s.api_key,
        base_url=s.base_url or xai.DEFAULT_BASE_URL,
        voice=s.voice or xai.DEFAULT_VOICE,
        encoding=s.encoding or xai.DEFAULT_ENCODING,
        sample_rate=s.sample_rate or xai.DEFAULT_SAMPLE_RATE,
        deadlines=s.deadlines,
    )


def _openai(s: TTSSettings) -> TTS:
    from antiphon.plugins.openai.tts import OpenAITTS
    from antiphon.protocols import openai_tts as ot

    if s.encoding not in (None, "linear16"):
        raise ConfigError("OpenAI TTS streams linear16 (pcm) only")
    if s.sample_rate not in (None, ot.SAMPLE_RATE):
        raise ConfigError(f"OpenAI TTS streams {ot.SAMPLE_RATE} Hz only")
    return OpenAITTS(
        api_key=s.api_key,
        base_url=s.base_url or ot.DEFAULT_BASE_URL,
        voice=s.voice or ot.DEFAULT_VOICE,
        deadlines=s.deadlines,
    )


def _hume(s: TTSSettings) -> TTS:
    from antiphon.plugins.hume import HumeTTS
    from antiphon.plugins.hume.tts import DEFAULT_VOICE
    from antiphon.protocols import hume_tts as ht

    if s.encoding not in (None, "linear16"):
        raise ConfigError("Hume TTS streams linear16 (pcm) only")
    if s.sample_rate not in (None, ht.SAMPLE_RATE):
        raise ConfigError(f"Hume TTS streams {ht.SAMPLE_RATE} Hz only")
    return HumeTTS(
        api_key=s.api_key,
        base_url=s.base_url or ht.DEFAULT_BASE_URL,
        voice=s.voice or DEFAULT_VOICE,
        deadlines=s.deadlines,
    )


def _rime(s: TTSSettings) -> TTS:
    from antiphon.plugins.rime import RimeTTS
    from antiphon.protocols import rime_tts as rt

    return RimeTTS(
        api_key=s.api_key,
        base_url=s.base_url or rt.DEFAULT_BASE_URL,
        speaker=s.voice or rt.DEFAULT_SPEAKER,
        encoding=s.encoding or "linear16",
        sample_rate=s.sample_rate or rt.DEFAULT_SAMPLE_RATE,
        deadlines=s.deadlines,
    )


def _google(s: TTSSettings) -> TTS:
    from antiphon.plugins.google import GoogleTTS
    from antiphon.protocols import google_tts as gt

    if s.encoding not in (None, "linear16"):
        raise ConfigError("Google TTS is asked for linear16 (PCM) only")
    return GoogleTTS(
        api_key=s.api_key,
        base_url=s.base_url or gt.DEFAULT_BASE_URL,
        voice=s.voice or gt.DEFAULT_VOICE,
        sample_rate=s.sample_rate or gt.DEFAULT_SAMPLE_RATE,
        deadlines=s.deadlines,
    )


TTS_PROVIDERS: dict[str, TTSProvider] = {
    p.name: p
    for p in [
        TTSProvider("deepgram", "DEEPGRAM_API_KEY", _deepgram),
        TTSProvider("xai", "XAI_API_KEY", _xai),
        TTSProvider("cartesia", "CARTESIA_API_KEY", _cartesia),
        TTSProvider("elevenlabs", "ELEVEN_API_KEY", _elevenlabs),
        TTSProvider("azure", "AZURE_SPEECH_KEY, AZURE_SPEECH_REGION", _azure, transport="http"),
        TTSProvider(
            "azure-sdk",
            "AZURE_SPEECH_KEY, AZURE_SPEECH_REGION",
            _azure_sdk,
            transport="sdk",
        ),
        TTSProvider("openai", "OPENAI_API_KEY", _openai, transport="http"),
        TTSProvider("hume", "HUME_API_KEY", _hume, transport="http"),
        TTSProvider("rime", "RIME_API_KEY", _rime),
        TTSProvider("google", "GOOGLE_API_KEY", _google, transport="http"),
    ]
}


def tts_provider(name: str) -> TTSProvider:
    """The provider called ``name``, or a ConfigError listing the known ones."""
    try:
        return TTS_PROVIDERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown TTS provider {name!r}; choose one of {', '.join(TTS_PROVIDERS)}"
        ) from None
