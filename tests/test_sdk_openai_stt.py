"""The ``openai`` SDK as witness of the realtime transcription fake and the OpenAI STT plugin.

The WebSocket STT conformance suite runs again with :class:`~sdk_witness.Wire` recording
both directions: every frame the fake sends must be a strict ``RealtimeServerEvent`` and
every frame the plugin sends a strict ``RealtimeClientEvent`` (the fault plan's deliberate
garbage excepted). Then the official ``AsyncOpenAI`` realtime client opens a transcription
session (``intent=transcription``) on the fake and transcribes one utterance. For the file
endpoint (``audio/transcriptions``, the batch STT), the official client's multipart request
is answered by the fake and parsed by the SDK's ``Transcription``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from openai import AsyncOpenAI
from openai.types.audio import Transcription
from openai.types.audio.transcription_create_params import (
    TranscriptionCreateParamsNonStreaming,
)
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent

import test_openai_stt
from antiphon.audio.resample import AudioConverter
from antiphon.plugins.openai import OpenAIBatchSTT, OpenAISTT
from antiphon.protocols import openai_audio as oa
from antiphon.protocols import openai_transcription as ot
from antiphon.testing import serving
from antiphon.testing.conformance.stt_ws import FAST, PHRASES, speech
from antiphon.testing.openai_audio import DEFAULT_API_KEY as AUDIO_KEY
from antiphon.testing.openai_audio import FakeOpenAIAudio
from antiphon.testing.openai_transcription import DEFAULT_API_KEY, FakeOpenAITranscription
from sdk_witness import Wire, assert_all_valid, strict_errors, wire
from test_openai_stt import VAD

__all__ = ["wire"]

pytestmark = pytest.mark.virtual_time

#: Frames a fault plan sends on purpose to test the client's tolerance.
GARBAGE = ("{this is not json", '"SomethingNew"')


def deliberate(text: str) -> bool:
    return any(g in text for g in GARBAGE)


def check_transcription_wire(w: Wire) -> None:
    server = w.messages("server", skip=deliberate)
    client = w.messages("client", skip=deliberate)
    assert_all_valid(RealtimeServerEvent, server, "fake")
    assert_all_valid(RealtimeClientEvent, client, "plugin")


class TestOpenAISTTConformanceUnderWitness(test_openai_stt.TestOpenAISTTConformance):
    """Every scenario of the suite (healthy and faulty), its wire checked by the SDK."""

    @pytest.fixture(autouse=True)
    def witness(self, wire: Wire) -> Iterator[None]:
        yield
        check_transcription_wire(wire)


async def test_a_recognition_speaks_every_event_kind_the_sdk_knows(wire: Wire) -> None:
    """One stream with VAD runs, a flush mid-speech and the end: each kind checked."""
    async with (
        serving(FakeOpenAITranscription(vocabulary=PHRASES)) as fake,
        OpenAISTT(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            deadlines=FAST,
            turn_detection=VAD,
            language="en",
            prompt="household commands",
            noise_reduction={"type": "near_field"},
            logprobs=True,
        ) as stt,
        stt.stream() as s,
    ):
        for f in speech(PHRASES[0]).split(0.02):
            s.push_audio(f)
        for f in speech(PHRASES[1], pad=0.0).split(0.02)[:20]:
            s.push_audio(f)
        s.flush()  # mid-speech: the plugin commits
        s.end_input()
        finals = [t.text for t in await s.finals()]
    assert finals[0] == PHRASES[0]
    check_transcription_wire(wire)
    assert {
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    } <= wire.types("server")
    assert {"session.update", "input_audio_buffer.append", "input_audio_buffer.commit"} <= (
        wire.types("client")
    )


def test_the_witness_refuses_what_a_careless_fake_would_send() -> None:
    no_usage = {
        "type": "conversation.item.input_audio_transcription.completed",
        "event_id": "e",
        "item_id": "i",
        "content_index": 0,
        "transcript": "hi",
    }
    assert any("usage" in e for e in strict_errors(RealtimeServerEvent, no_usage))
    beta_update = {"type": "transcription_session.update", "session": {}}
    assert strict_errors(RealtimeClientEvent, beta_update)  # GA has no such event
    wrong_rate = {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
        },
    }
    assert strict_errors(RealtimeClientEvent, wrong_rate)


async def test_official_client_transcribes_on_the_fake(wire: Wire) -> None:
    """``AsyncOpenAI().realtime.connect(extra_query={"intent": "transcription"})``."""
    text = PHRASES[2]
    converter = AudioConverter(ot.SAMPLE_RATE, 1)
    pcm = converter.process(speech(text)).data + converter.flush().data
    async with FakeOpenAITranscription(vocabulary=PHRASES) as fake:
        client = AsyncOpenAI(api_key=DEFAULT_API_KEY, websocket_base_url=fake.url + "/v1")
        seen: list[str] = []
        transcript = ""
        deltas = ""
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            await conn.session.update(
                session={
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": 24000},
                            "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                            "turn_detection": None,
                        }
                    },
                }
            )
            step = 24000 * 2 // 10
            for i in range(0, len(pcm), step):
                await conn.input_audio_buffer.append(
                    audio=base64.b64encode(pcm[i : i + step]).decode()
                )
            await conn.input_audio_buffer.commit()
            async for event in conn:
                seen.append(event.type)
                if event.type == "conversation.item.input_audio_transcription.delta":
                    deltas += event.delta or ""
                elif event.type == "conversation.item.input_audio_transcription.completed":
                    transcript = event.transcript
                    assert event.usage.type == "duration"
                    break
        await client.close()
    assert seen[:2] == ["session.created", "session.updated"]
    assert "input_audio_buffer.committed" in seen
    assert transcript == deltas == text
    check_transcription_wire(wire)


# --------------------------------------------------------------------------- file endpoint


async def test_official_client_transcribes_a_file_on_the_audio_fake() -> None:
    """``AsyncOpenAI().audio.transcriptions.create`` against the file-transcription fake:
    the SDK's multipart request is accepted and its ``Transcription`` parses the answer."""
    text = PHRASES[1]
    pcm = speech(text).data
    async with FakeOpenAIAudio(vocabulary=PHRASES) as fake:
        client = AsyncOpenAI(api_key=AUDIO_KEY, base_url=fake.url + "/v1", max_retries=0)
        result = await client.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("speech.wav", oa.wav(pcm, 16000)), language="en"
        )
        await client.close()
    assert isinstance(result, Transcription) and result.text == text
    assert fake.stats.forms[0]["model"] == "gpt-4o-transcribe"
    assert fake.stats.forms[0]["language"] == "en"


async def test_the_audio_fake_answers_what_the_sdk_types() -> None:
    """Each answer of the fake is a strict ``Transcription``; the plugin's form fields are
    those of the SDK's ``TranscriptionCreateParams``."""
    async with (
        serving(FakeOpenAIAudio(vocabulary=PHRASES)) as fake,
        OpenAIBatchSTT(
            api_key=AUDIO_KEY, base_url=fake.url, deadlines=FAST, language="en", prompt="p"
        ) as stt,
    ):
        finals = await stt.recognize(speech(PHRASES[0]))
        client = httpx.AsyncClient()
        try:
            response = await client.post(
                fake.url + oa.PATH,
                headers={"Authorization": f"Bearer {AUDIO_KEY}"},
                data={"model": "whisper-1"},
                files={"file": ("a.wav", oa.wav(speech(PHRASES[2]).data, 16000), "audio/wav")},
            )
        finally:
            await client.aclose()
    assert [f.text for f in finals] == [PHRASES[0]]
    assert strict_errors(Transcription, response.json()) == []
    # the params' file type (IO[bytes]) has no schema: the field names are checked
    params = TranscriptionCreateParamsNonStreaming
    declared = params.__required_keys__ | params.__optional_keys__
    assert set(fake.stats.forms[0]) | {"file"} <= declared
    assert params.__required_keys__ <= set(fake.stats.forms[0]) | {"file"}
