"""The fake server of every provider the registry names, and the ``--fake`` wiring.

Production code never imports :mod:`antiphon.testing`: the CLI's ``--fake`` (and a test)
hands :class:`LoopbackFakes` to :func:`antiphon.agent.pipeline.open_services`, which then
runs each cloud service against its fake on loopback.

- :data:`TTS_FAKES`: for each name of :data:`antiphon.plugins.registry.TTS_PROVIDERS`,
  how to build its fake server (``(plan, port, accepted_key)``) and the key it accepts.
- :data:`STT_FAKES`: for each cloud STT of :mod:`antiphon.agent.pipeline`, how to build
  its fake server (``(plan, vocabulary)``) and the key it accepts.
- :class:`LoopbackFakes`: starts the STT, LLM (OpenAI-compatible, Anthropic, Gemini) and
  TTS fakes a pipeline needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from antiphon.agent.pipeline import Endpoint
from antiphon.errors import ConfigError
from antiphon.testing.anthropic_messages import DEFAULT_API_KEY as ANTHROPIC_KEY
from antiphon.testing.anthropic_messages import FakeAnthropicMessages
from antiphon.testing.assemblyai_stt import DEFAULT_API_KEY as ASSEMBLYAI_KEY
from antiphon.testing.assemblyai_stt import FakeAssemblyAISTT
from antiphon.testing.azure import FakeAzureSpeechWs, FakeAzureTTS
from antiphon.testing.azure_stt import DEFAULT_API_KEY as AZURE_STT_KEY
from antiphon.testing.azure_stt import FakeAzureSpeechRecognition
from antiphon.testing.bedrock_converse import DEFAULT_API_KEY as BEDROCK_KEY
from antiphon.testing.bedrock_converse import FakeBedrockConverse
from antiphon.testing.cartesia import FakeCartesiaTTS
from antiphon.testing.cartesia_stt import DEFAULT_API_KEY as CARTESIA_STT_KEY
from antiphon.testing.cartesia_stt import FakeCartesiaSTT
from antiphon.testing.deepgram import FakeDeepgramTTS
from antiphon.testing.deepgram_stt import DEFAULT_API_KEY as DEEPGRAM_STT_KEY
from antiphon.testing.deepgram_stt import FakeDeepgramSTT
from antiphon.testing.elevenlabs import FakeElevenLabsTTS
from antiphon.testing.elevenlabs_stt import DEFAULT_API_KEY as ELEVENLABS_STT_KEY
from antiphon.testing.elevenlabs_stt import FakeElevenLabsSTT
from antiphon.testing.faults import FaultPlan
from antiphon.testing.gemini_generate import DEFAULT_API_KEY as GEMINI_KEY
from antiphon.testing.gemini_generate import FakeGeminiGenerate
from antiphon.testing.gladia_stt import DEFAULT_API_KEY as GLADIA_KEY
from antiphon.testing.gladia_stt import FakeGladiaSTT
from antiphon.testing.google_tts import FakeGoogleTTS
from antiphon.testing.hume_tts import FakeHumeTTS
from antiphon.testing.openai_chat import DEFAULT_API_KEY as OPENAI_KEY
from antiphon.testing.openai_chat import FakeOpenAIChat
from antiphon.testing.openai_transcription import DEFAULT_API_KEY as OPENAI_STT_KEY
from antiphon.testing.openai_transcription import FakeOpenAITranscription
from antiphon.testing.openai_tts import FakeOpenAITTS
from antiphon.testing.rime_tts import FakeRimeTTS
from antiphon.testing.server import FakeServer
from antiphon.testing.speechmatics_stt import DEFAULT_API_KEY as SPEECHMATICS_KEY
from antiphon.testing.speechmatics_stt import FakeSpeechmaticsSTT
from antiphon.testing.xai import FakeXAITTS

__all__ = ["STT_FAKES", "TTS_FAKES", "FakeTTS", "LoopbackFakes", "tts_fake"]


@dataclass(frozen=True, slots=True)
class FakeTTS:
    """How to build one TTS provider's fake server."""

    make: Callable[[FaultPlan, int, str], FakeServer]
    """``(plan, port, accepted_key)`` → the fake (not started)."""
    key: str = "test-key"
    """The key the fake accepts by default."""


#: Each cloud STT's fake: ``(plan, vocabulary)`` -> the fake (not started), and its key.
STT_FAKES: dict[str, tuple[Callable[[FaultPlan, tuple[str, ...]], FakeServer], str]] = {
    "deepgram": (lambda p, v: FakeDeepgramSTT(p, vocabulary=v), DEEPGRAM_STT_KEY),
    "assemblyai": (lambda p, v: FakeAssemblyAISTT(p, vocabulary=v), ASSEMBLYAI_KEY),
    "openai": (lambda p, v: FakeOpenAITranscription(p, vocabulary=v), OPENAI_STT_KEY),
    "speechmatics": (lambda p, v: FakeSpeechmaticsSTT(p, vocabulary=v), SPEECHMATICS_KEY),
    "elevenlabs": (lambda p, v: FakeElevenLabsSTT(p, vocabulary=v), ELEVENLABS_STT_KEY),
    "cartesia": (lambda p, v: FakeCartesiaSTT(p, vocabulary=v), CARTESIA_STT_KEY),
    "gladia": (lambda p, v: FakeGladiaSTT(p, vocabulary=v), GLADIA_KEY),
    "azure": (lambda p, v: FakeAzureSpeechRecognition(p, vocabulary=v), AZURE_STT_KEY),
}

TTS_FAKES: dict[str, FakeTTS] = {
    "deepgram": FakeTTS(lambda plan, port, key: FakeDeepgramTTS(plan, port=port, api_key=key)),
    "xai": FakeTTS(lambda plan, port, key: FakeXAITTS(plan, port=port, api_key=key)),
    "cartesia": FakeTTS(lambda plan, port, key: FakeCartesiaTTS(plan, port=port, api_key=key)),
    "elevenlabs": FakeTTS(lambda plan, port, key: FakeElevenLabsTTS(plan, port=port, api_key=key)),
    "azure": FakeTTS(lambda plan, port, key: FakeAzureTTS(plan, port=port, api_key=key)),
    "azure-sdk": FakeTTS(lambda plan, port, key: FakeAzureSpeechWs(plan, port=port, api_key=key)),
    "openai": FakeTTS(lambda plan, port, key: FakeOpenAITTS(plan, port=port, api_key=key)),
    "hume": FakeTTS(lambda plan, port, key: FakeHumeTTS(plan, port=port, api_key=key)),
    "rime": FakeTTS(lambda plan, port, key: FakeRimeTTS(plan, port=port, api_key=key)),
    "google": FakeTTS(lambda plan, port, key: FakeGoogleTTS(plan, port=port, api_key=key)),
}


def tts_fake(name: str) -> FakeTTS:
    """The fake of TTS provider ``name``, or a ConfigError listing the known ones."""
    try:
        return TTS_FAKES[name]
    except KeyError:
        raise ConfigError(
            f"no fake server for TTS provider {name!r}; choose one of {', '.join(TTS_FAKES)}"
        ) from None


class LoopbackFakes:
    """Each cloud service of a pipeline on its fake server, started on the caller's stack.

    ``plan``: the fault plan every fake gets (default: none).
    """

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self.plan = plan or FaultPlan()

    async def stt(
        self, provider: str, stack: contextlib.AsyncExitStack, vocabulary: tuple[str, ...]
    ) -> Endpoint:
        if provider not in STT_FAKES:
            raise ConfigError(
                f"no fake server for STT provider {provider!r}; use {', '.join(STT_FAKES)}"
            )
        make, key = STT_FAKES[provider]
        fake = make(self.plan, vocabulary)
        await fake.start()
        stack.push_async_callback(fake.aclose)
        return Endpoint(fake.url, key)

    async def llm(self, stack: contextlib.AsyncExitStack, provider: str = "openai") -> Endpoint:
        """An LLM fake: Anthropic Messages for ``anthropic``, Gemini streamGenerateContent
        for ``gemini``, Bedrock ConverseStream for ``bedrock``, else OpenAI chat
        completions."""
        if provider == "gemini":
            gemini = await stack.enter_async_context(FakeGeminiGenerate(self.plan))
            return Endpoint(gemini.url, GEMINI_KEY)
        if provider == "anthropic":
            claude = await stack.enter_async_context(FakeAnthropicMessages(self.plan))
            return Endpoint(claude.url, ANTHROPIC_KEY)
        if provider == "bedrock":
            bedrock = await stack.enter_async_context(FakeBedrockConverse(self.plan))
            return Endpoint(bedrock.url, BEDROCK_KEY)
        fake = await stack.enter_async_context(FakeOpenAIChat(self.plan))
        return Endpoint(fake.base_url, OPENAI_KEY)

    async def tts(self, provider: str, stack: contextlib.AsyncExitStack) -> Endpoint:
        entry = tts_fake(provider)
        fake = entry.make(self.plan, 0, entry.key)
        await fake.start()
        stack.push_async_callback(fake.aclose)
        return Endpoint(fake.url, entry.key)
