"""Fake provider servers with fault plans, for antiphon's tests and for yours.

Every fake speaks its provider's real wire protocol on loopback and takes a
:class:`FaultPlan`. Run one in the test's event loop (``async with FakeDeepgramTTS()``)
(``async with serving(FakeDeepgramTTS()) as fake``, its tasks apart from yours for leak
checks, and on virtual time with ``antiphon.testing.vloop``) or on its own thread
(``with running_in_thread(FakeDeepgramTTS()) as fake``).
"""

from antiphon.testing.anthropic_messages import FakeAnthropicMessages
from antiphon.testing.assemblyai_stt import FakeAssemblyAISTT
from antiphon.testing.azure import FakeAzureSpeechWs, FakeAzureTTS
from antiphon.testing.azure_sdk_double import SdkDouble
from antiphon.testing.cartesia import FakeCartesiaTTS
from antiphon.testing.cartesia_stt import FakeCartesiaSTT
from antiphon.testing.deepgram import FakeDeepgramTTS
from antiphon.testing.deepgram_stt import FakeDeepgramSTT
from antiphon.testing.elevenlabs import FakeElevenLabsTTS
from antiphon.testing.elevenlabs_stt import FakeElevenLabsSTT
from antiphon.testing.faults import ABORT, FaultPlan
from antiphon.testing.gemini_live import FakeGeminiLiveServer
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.openai_chat import FakeOpenAIChat, Reply, ScriptedCall
from antiphon.testing.realtime import FakeRealtimeServer, RealtimeFakeStats
from antiphon.testing.server import FakeServer, FakeWsServer, running_in_thread, serving
from antiphon.testing.speechmatics_stt import FakeSpeechmaticsSTT
from antiphon.testing.xai import FakeXAITTS
from antiphon.testing.xai_realtime import FakeXAIRealtimeServer

__all__ = [
    "ABORT",
    "FakeAnthropicMessages",
    "FakeAssemblyAISTT",
    "FakeAzureSpeechWs",
    "FakeAzureTTS",
    "FakeCartesiaSTT",
    "FakeCartesiaTTS",
    "FakeDeepgramSTT",
    "FakeDeepgramTTS",
    "FakeElevenLabsSTT",
    "FakeElevenLabsTTS",
    "FakeGeminiLiveServer",
    "FakeOpenAIChat",
    "FakeRealtimeServer",
    "FakeServer",
    "FakeSpeechmaticsSTT",
    "FakeWsServer",
    "FakeXAIRealtimeServer",
    "FakeXAITTS",
    "FaultPlan",
    "LeakCheck",
    "RealtimeFakeStats",
    "Reply",
    "ScriptedCall",
    "SdkDouble",
    "running_in_thread",
    "serving",
]
