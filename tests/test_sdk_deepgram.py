"""The ``deepgram-sdk`` as witness of the Deepgram STT and TTS fakes and plugins.

Both conformance suites run again with every text frame recorded; each JSON message the
fakes send must be the SDK's strict type for its ``type`` (``ListenV1Results``,
``SpeakV1Flushed``...), and so must each one the plugins send (``KeepAlive``,
``Finalize``, ``Speak``...). Then the official ``AsyncDeepgramClient``, given the fake's
URL as its environment, runs one recognition and one synthesis against the fakes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from deepgram import AsyncDeepgramClient
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v1.types import (
    ListenV1CloseStream,
    ListenV1Error,
    ListenV1Finalize,
    ListenV1KeepAlive,
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from deepgram.speak.v1.types import (
    SpeakV1Clear,
    SpeakV1Cleared,
    SpeakV1Close,
    SpeakV1Flush,
    SpeakV1Flushed,
    SpeakV1Metadata,
    SpeakV1Text,
    SpeakV1Warning,
)

from antiphon.audio.frame import AudioFrame
from antiphon.plugins.deepgram import DeepgramSTT
from antiphon.testing import serving
from antiphon.testing.conformance.stt_ws import FAST, WebSocketSTTConformance, speech
from antiphon.testing.conformance.tts import TTSConformance
from antiphon.testing.deepgram import DEFAULT_API_KEY, FakeDeepgramTTS, synthesize
from antiphon.testing.deepgram_stt import FakeDeepgramSTT
from sdk_witness import Wire, assert_all_valid, strict_errors, wire
from test_deepgram_stt import HARNESS
from test_deepgram_tts import DeepgramHarness

__all__ = ["wire"]

LISTEN_SERVER: Mapping[str, Any] = {
    "Results": ListenV1Results,
    "Metadata": ListenV1Metadata,
    "SpeechStarted": ListenV1SpeechStarted,
    "UtteranceEnd": ListenV1UtteranceEnd,
    "Error": ListenV1Error,
}
LISTEN_CLIENT: Mapping[str, Any] = {
    "KeepAlive": ListenV1KeepAlive,
    "Finalize": ListenV1Finalize,
    "CloseStream": ListenV1CloseStream,
}
SPEAK_SERVER: Mapping[str, Any] = {
    "Metadata": SpeakV1Metadata,
    "Flushed": SpeakV1Flushed,
    "Cleared": SpeakV1Cleared,
    "Warning": SpeakV1Warning,
}
SPEAK_CLIENT: Mapping[str, Any] = {
    "Speak": SpeakV1Text,
    "Flush": SpeakV1Flush,
    "Clear": SpeakV1Clear,
    "Close": SpeakV1Close,
}
#: ``sha256`` of the closing ``Metadata``: in Deepgram's reference and on the wire, not in
#: the SDK's ``ListenV1Metadata``.
#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


METADATA_GAPS = frozenset({"$.sha256"})
GARBAGE = ("{this is not json", '"SomethingNew"')


def deliberate(text: str) -> bool:
    return any(g in text for g in GARBAGE)


def check_by_type(
    types: Mapping[str, Any], messages: list[Any], what: str, gaps: frozenset[str] = frozenset()
) -> None:
    """Each message is the SDK type its ``type`` names (an unknown ``type`` fails)."""
    unknown = [m for m in messages if m.get("type") not in types]
    assert not unknown, f"{what} messages of no SDK type: {unknown[:3]}"
    for kind, tp in types.items():
        assert_all_valid(tp, [m for m in messages if m["type"] == kind], what, sdk_gaps=gaps)


def check_listen_wire(w: Wire) -> None:
    check_by_type(LISTEN_SERVER, w.messages("server", skip=deliberate), "fake", METADATA_GAPS)
    check_by_type(LISTEN_CLIENT, w.messages("client"), "plugin")


def check_speak_wire(w: Wire) -> None:
    check_by_type(SPEAK_SERVER, w.messages("server", skip=deliberate), "fake")
    check_by_type(SPEAK_CLIENT, w.messages("client"), "plugin")


class TestSTTConformanceUnderWitness(WebSocketSTTConformance):
    harness = HARNESS

    @pytest.fixture(autouse=True)
    def witness(self, wire: Wire) -> Iterator[None]:
        yield
        check_listen_wire(wire)


class TestTTSConformanceUnderWitness(TTSConformance):
    harness = DeepgramHarness()

    @pytest.fixture(autouse=True)
    def witness(self, wire: Wire) -> Iterator[None]:
        yield
        check_speak_wire(wire)


def test_the_witness_refuses_what_the_fakes_used_to_send() -> None:
    error = {"type": "Error", "err_code": "INTERNAL", "description": "fault plan"}
    assert error["type"] not in SPEAK_SERVER  # the speak protocol has no Error message
    assert strict_errors(SpeakV1Warning, {**error, "type": "Warning"})  # nor these fields


async def test_vad_events_and_utterance_end_are_sdk_messages(wire: Wire) -> None:
    """The fake's SpeechStarted and UtteranceEnd, and the plugin's messages around them."""
    text = "What time is it?"
    async with (
        serving(FakeDeepgramSTT(vocabulary=[text])) as fake,
        DeepgramSTT(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            deadlines=FAST,
            endpointing=False,
            interim_results=True,
            utterance_end_ms=1000,
            vad_events=True,
        ) as stt,
        stt.stream() as s,
    ):
        for f in speech(text).split(0.02):
            s.push_audio(f)
        for f in AudioFrame(bytes(16000 * 2 * 12 // 10), 16000).split(0.02):
            s.push_audio(f)
        s.end_input()
        finals = [t.text async for t in s if t.is_final]
    assert finals == [text]
    assert {"SpeechStarted", "UtteranceEnd", "Results", "Metadata"} <= wire.types("server")
    check_listen_wire(wire)


def official_client(url: str) -> AsyncDeepgramClient:
    http = url.replace("ws://", "http://")
    env = DeepgramClientEnvironment(base=http, production=url, agent=url, agent_rest=http)
    return AsyncDeepgramClient(api_key=DEFAULT_API_KEY, environment=env)


async def test_official_listen_client_against_the_fake() -> None:
    """``client.listen.v1.connect``: audio in, Results and the closing Metadata out."""
    text = "Thank you very much."
    async with FakeDeepgramSTT(vocabulary=[text]) as fake:
        client = official_client(fake.url)
        got: list[Any] = []
        async with client.listen.v1.connect(
            model="nova-3", encoding="linear16", sample_rate=16000, interim_results="true"
        ) as conn:
            for f in speech(text).split(0.1):
                await conn.send_media(f.data)
            await conn.send_close_stream(ListenV1CloseStream(type="CloseStream"))
            async for msg in conn:
                got.append(msg)
    finals = [m for m in got if isinstance(m, ListenV1Results) and m.is_final]
    assert " ".join(m.channel.alternatives[0].transcript for m in finals).strip() == text
    assert isinstance(got[-1], ListenV1Metadata) and got[-1].request_id == "fake-stt-0"


async def test_official_speak_client_against_the_fake() -> None:
    """``client.speak.v1.connect``: Speak and Flush in, the audio and Flushed out."""
    text = "Hello from the official client."
    async with FakeDeepgramTTS() as fake:
        client = official_client(fake.url)
        audio = bytearray()
        async with client.speak.v1.connect(
            model="aura-2-thalia-en", encoding="linear16", sample_rate=24000
        ) as conn:
            await conn.send_text(SpeakV1Text(text=text))
            await conn.send_flush(SpeakV1Flush(type="Flush"))
            while True:
                msg = await conn.recv()
                if isinstance(msg, bytes):
                    audio.extend(msg)
                elif isinstance(msg, SpeakV1Flushed):
                    break
            await conn.send_close(SpeakV1Close(type="Close"))
    assert bytes(audio) == synthesize(text, "linear16", 24000)
