"""Every hosted plugin refuses a missing or non-string API key at construction.

The plugins read their key through :func:`antiphon.plugins.keys.require_api_key`; this
builds each one (no connection is made) with the key's variables unset, then with a key
that is not a string, and expects one ``ConfigError`` that names the variable to set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from antiphon.errors import ConfigError
from antiphon.plugins.anthropic import AnthropicLLM
from antiphon.plugins.assemblyai import AssemblyAISTT
from antiphon.plugins.azure import AzureSdkTTS, AzureSTT, AzureTTS, AzureVoiceLive
from antiphon.plugins.cartesia import CartesiaSTT, CartesiaTTS
from antiphon.plugins.deepgram import DeepgramSTT, DeepgramTTS
from antiphon.plugins.elevenlabs import ElevenLabsSTT, ElevenLabsTTS
from antiphon.plugins.gemini import GeminiLive, GeminiLLM
from antiphon.plugins.gladia import GladiaSTT
from antiphon.plugins.google import GoogleTTS
from antiphon.plugins.hume import HumeTTS
from antiphon.plugins.openai import OpenAIBatchSTT, OpenAILLM, OpenAIRealtime, OpenAISTT, OpenAITTS
from antiphon.plugins.rime import RimeTTS
from antiphon.plugins.speechmatics import SpeechmaticsSTT
from antiphon.plugins.xai import XAITTS, XAIRealtime

AZURE_SPEECH = {"region": "westus"}
VOICELIVE = {"endpoint": "https://r.services.ai.azure.com"}

#: (the plugin, its constructor's other arguments, the variables it reads, in order).
PLUGINS: list[tuple[Callable[..., Any], dict[str, Any], tuple[str, ...]]] = [
    (AnthropicLLM, {"model": "claude-sonnet-4-5"}, ("ANTHROPIC_API_KEY",)),
    (AssemblyAISTT, {}, ("ASSEMBLYAI_API_KEY",)),
    (AzureTTS, AZURE_SPEECH, ("AZURE_SPEECH_KEY",)),
    (AzureSTT, AZURE_SPEECH, ("AZURE_SPEECH_KEY",)),
    (AzureSdkTTS, AZURE_SPEECH, ("AZURE_SPEECH_KEY",)),
    (AzureVoiceLive, VOICELIVE, ("AZURE_VOICELIVE_API_KEY",)),
    (CartesiaSTT, {}, ("CARTESIA_API_KEY",)),
    (CartesiaTTS, {}, ("CARTESIA_API_KEY",)),
    (DeepgramSTT, {}, ("DEEPGRAM_API_KEY",)),
    (DeepgramTTS, {}, ("DEEPGRAM_API_KEY",)),
    (ElevenLabsSTT, {}, ("ELEVENLABS_API_KEY", "ELEVEN_API_KEY")),
    (ElevenLabsTTS, {}, ("ELEVEN_API_KEY", "ELEVENLABS_API_KEY")),
    (GeminiLive, {}, ("GOOGLE_API_KEY", "GEMINI_API_KEY")),
    (GeminiLLM, {"model": "gemini-2.5-flash"}, ("GOOGLE_API_KEY", "GEMINI_API_KEY")),
    (GladiaSTT, {}, ("GLADIA_API_KEY",)),
    (GoogleTTS, {}, ("GOOGLE_API_KEY",)),
    (HumeTTS, {}, ("HUME_API_KEY",)),
    (OpenAIBatchSTT, {}, ("OPENAI_API_KEY",)),
    (OpenAILLM, {"model": "gpt-4o-mini"}, ("OPENAI_API_KEY",)),
    (OpenAIRealtime, {}, ("OPENAI_API_KEY",)),
    (OpenAISTT, {}, ("OPENAI_API_KEY",)),
    (OpenAITTS, {}, ("OPENAI_API_KEY",)),
    (RimeTTS, {}, ("RIME_API_KEY",)),
    (SpeechmaticsSTT, {}, ("SPEECHMATICS_API_KEY",)),
    (XAIRealtime, {}, ("XAI_API_KEY",)),
    (XAITTS, {}, ("XAI_API_KEY",)),
]


@pytest.mark.parametrize(
    ("plugin", "kwargs", "envs"), PLUGINS, ids=[p[0].__name__ for p in PLUGINS]
)
def test_a_missing_or_non_string_key_is_one_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    plugin: Callable[..., Any],
    kwargs: dict[str, Any],
    envs: tuple[str, ...],
) -> None:
    for env in envs:
        monkeypatch.delenv(env, raising=False)
    names = " or ".join(envs)
    with pytest.raises(ConfigError, match=f"needs an API key: pass api_key=... or set {names}"):
        plugin(**kwargs)
    for env in envs:
        monkeypatch.setenv(env, "   ")
    with pytest.raises(ConfigError, match=names):
        plugin(**kwargs)
    with pytest.raises(ConfigError, match=names):
        plugin(api_key=12345, **kwargs)
