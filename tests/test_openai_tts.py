"""OpenAITTS: the TTS conformance suite on the fake, plugin checks, and the official
``openai`` SDK as the witness of the request and the fake."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.audio.speech_create_params import SpeechCreateParams

from antiphon.errors import ConfigError, ProviderError
from antiphon.net.pool import PoolOptions
from antiphon.plugins.openai.tts import OpenAISynthesisStream, OpenAITTS
from antiphon.protocols import openai_tts as ot
from antiphon.protocols.retry import Backoff
from antiphon.services.tts import TTS, StreamState, TTSDeadlines
from antiphon.testing.conformance.tts import FAST, CoreTTSConformance, TTSHarness
from antiphon.testing.faults import FaultPlan
from antiphon.testing.openai_tts import DEFAULT_API_KEY, FakeOpenAITTS, check_body, synthesize
from antiphon.testing.server import FakeServer, serving
from antiphon.testing.witness import WitnessError, assert_typed_dict

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


class OpenAITTSHarness(TTSHarness):
    def url_for_port(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def fake(self, plan: FaultPlan) -> FakeServer:
        return FakeOpenAITTS(plan)

    def make_tts(
        self, base_url: str, *, deadlines: TTSDeadlines, pool: PoolOptions | None = None
    ) -> TTS:
        return OpenAITTS(api_key=DEFAULT_API_KEY, base_url=base_url, deadlines=deadlines)

    def expected_pcm(self, text: str, tts: TTS) -> bytes:
        return synthesize(text.strip())  # each segment is sent stripped

    def connections(self, fake: Any) -> int:
        assert isinstance(fake, FakeOpenAITTS)
        return fake.stats.connections

    def cancels(self, fake: Any) -> int:
        assert isinstance(fake, FakeOpenAITTS)
        return fake.stats.cancels


class TestOpenAITTSConformance(CoreTTSConformance):
    harness = OpenAITTSHarness()


# -- configuration and the wire


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAITTS()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"speed": 5.0}, "speed"),
        ({"model": "tts-1", "instructions": "Cheerful."}, "instructions"),
        ({"voice": ""}, "voice"),
        ({"base_url": "api.openai.com"}, "http"),
        ({"max_retries": -1}, "max_retries"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        OpenAITTS(api_key="k", **kwargs)


def test_the_url_from_a_base_url_or_an_origin() -> None:
    assert ot.speech_url() == "https://api.openai.com/v1/audio/speech"
    assert ot.speech_url("http://127.0.0.1:9") == "http://127.0.0.1:9/v1/audio/speech"
    assert ot.speech_url("http://h/openai/v1/") == "http://h/openai/v1/audio/speech"


def test_split_input_cuts_at_sentence_ends_within_the_limit() -> None:
    text = "One two. Three four five. Six seven eight nine."
    assert ot.split_input(text, 20) == ["One two.", "Three four five.", "Six seven eight", "nine."]
    assert ot.split_input("x" * 10, 4) == ["xxxx", "xxxx", "xx"]
    assert ot.split_input("  short  ") == ["short"]
    assert all(len(p) <= ot.MAX_INPUT for p in ot.split_input("Word. " * 2000))


async def test_request_on_the_wire_and_a_long_segment_in_pieces() -> None:
    long_text = "This sentence is long enough. " * 200  # 6,000 characters
    async with (
        serving(FakeOpenAITTS()) as fake,
        OpenAITTS(
            api_key=DEFAULT_API_KEY,
            base_url=fake.base_url,
            voice="voice_custom1",
            speed=1.25,
            instructions="Speak calmly.",
            project="proj_1",
            deadlines=FAST,
        ) as tts,
    ):
        frame = await tts.synthesize(long_text).collect()
    pieces = ot.split_input(long_text)
    assert len(pieces) == 2 and fake.stats.spoken == pieces
    assert frame.sample_rate == 24000 and frame.data == b"".join(synthesize(p) for p in pieces)
    first = fake.stats.requests[0]
    assert first.path == "/v1/audio/speech"
    assert first.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert first.headers["openai-project"] == "proj_1"
    assert first.json == {
        "model": "gpt-4o-mini-tts",
        "input": pieces[0],
        "voice": {"id": "voice_custom1"},
        "response_format": "pcm",
        "speed": 1.25,
        "instructions": "Speak calmly.",
    }


async def test_a_busy_server_is_retried_once_before_any_audio() -> None:
    plan = FaultPlan(reject_status=503)
    async with (
        serving(FakeOpenAITTS(plan, reject_requests=1)) as fake,
        OpenAITTS(
            api_key=DEFAULT_API_KEY,
            base_url=fake.base_url,
            deadlines=FAST,
            retry_backoff=Backoff(base=0.1, jitter=0),
        ) as tts,
    ):
        s = tts.synthesize("Second time lucky.")
        assert isinstance(s, OpenAISynthesisStream)
        frame = await s.collect()
        assert s.state is StreamState.COMPLETED and s.requests == 2
    assert frame.data == synthesize("Second time lucky.") and fake.stats.statuses == [503, 200]


async def test_a_cut_after_audio_is_not_retried() -> None:
    plan = FaultPlan(close_mid_audio=1011, close_after_chunks=2)
    async with (
        serving(FakeOpenAITTS(plan)) as fake,
        OpenAITTS(api_key=DEFAULT_API_KEY, base_url=fake.base_url, deadlines=FAST) as tts,
    ):
        s = tts.synthesize("Cut in the middle of the sentence.")
        assert isinstance(s, OpenAISynthesisStream)
        got = b""
        with pytest.raises(ProviderError, match="dropped"):
            async for f in s:
                got += f.data
        assert s.state is StreamState.FAILED and s.requests == 1
        assert got and synthesize("Cut in the middle of the sentence.").startswith(got)


# -- the witness: the official SDK's types and client


async def test_every_request_fits_the_sdk_types() -> None:
    async with (
        serving(FakeOpenAITTS()) as fake,
        OpenAITTS(
            api_key=DEFAULT_API_KEY,
            base_url=fake.base_url,
            voice="marin",
            speed=0.9,
            instructions="Warm.",
            deadlines=FAST,
        ) as tts,
    ):
        await tts.synthesize("Typed.").collect()
        custom = OpenAITTS(
            api_key=DEFAULT_API_KEY, base_url=fake.base_url, voice="voice_x", deadlines=FAST
        )
        async with custom:
            await custom.synthesize("Custom voice.").collect()
    assert len(fake.stats.requests) == 2
    for request in fake.stats.requests:
        assert_typed_dict(request.json, SpeechCreateParams)
        assert check_body(request.json) is None
    with pytest.raises(WitnessError, match="unknown field"):
        assert_typed_dict({**fake.stats.requests[0].json, "format": "pcm"}, SpeechCreateParams)


async def test_the_official_client_streams_from_the_fake() -> None:
    async with FakeOpenAITTS() as fake:
        client = openai.AsyncOpenAI(api_key=DEFAULT_API_KEY, base_url=fake.base_url, max_retries=0)
        try:
            async with client.audio.speech.with_streaming_response.create(
                model="gpt-4o-mini-tts", voice="coral", input="From the SDK.", response_format="pcm"
            ) as response:
                audio = b"".join([chunk async for chunk in response.iter_bytes()])
            assert audio == synthesize("From the SDK.")
            with pytest.raises(openai.BadRequestError, match="response_format"):
                await client.audio.speech.create(
                    model="tts-1", voice="alloy", input="x", response_format="mp3"
                )
            fake.plan = FaultPlan(reject_status=401)
            with pytest.raises(openai.AuthenticationError):
                await client.audio.speech.create(
                    model="tts-1", voice="alloy", input="x", response_format="pcm"
                )
        finally:
            await client.close()
    bodies = [json.loads(r.body) for r in fake.stats.requests]
    assert bodies[0]["response_format"] == "pcm"
