"""AzureVoiceLive: the realtime conformance suite on the fake (beta names), plus plugin checks."""

from __future__ import annotations

from typing import Any

import pytest

from antiphon.errors import AuthError, ConfigError
from antiphon.plugins.azure.voicelive import AzureVoiceLive
from antiphon.protocols.realtime import Voice
from antiphon.services.realtime import AgentAudio, RealtimeDeadlines, RealtimeModel
from antiphon.testing.conformance.realtime import (
    FAST,
    OpenAISchemaHarness,
    RealtimeConformance,
    audio_of,
    speech,
    turn,
)
from antiphon.testing.realtime import DEFAULT_API_KEY, FakeRealtimeServer
from antiphon.testing.server import serving
from antiphon.testing.synth import tone_for_text

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


class AzureHarness(OpenAISchemaHarness):
    dialect = "beta"

    def make_model(
        self, base_url: str, *, deadlines: RealtimeDeadlines, **kwargs: Any
    ) -> RealtimeModel:
        return AzureVoiceLive(
            endpoint=base_url, api_key=DEFAULT_API_KEY, deadlines=deadlines, **kwargs
        )

    def other_voice(self) -> Any:
        return Voice("en-US-AndrewNeural", "azure-standard", temperature=0.7)


class TestAzureVoiceLiveConformance(RealtimeConformance[FakeRealtimeServer]):
    harness = AzureHarness()


def test_missing_endpoint_and_key_say_where_to_put_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_VOICELIVE_ENDPOINT", raising=False)
    monkeypatch.delenv("AZURE_VOICELIVE_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="AZURE_VOICELIVE_ENDPOINT"):
        AzureVoiceLive(api_key="k")
    with pytest.raises(ConfigError, match="AZURE_VOICELIVE_API_KEY"):
        AzureVoiceLive(endpoint="https://r.services.ai.azure.com")
    with pytest.raises(ConfigError, match="only one"):
        AzureVoiceLive(endpoint="https://r.services.ai.azure.com", api_key="k", token="t")


async def test_url_and_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_VOICELIVE_ENDPOINT", "https://res.services.ai.azure.com")
    monkeypatch.setenv("AZURE_VOICELIVE_API_KEY", "k1")
    m = AzureVoiceLive()
    assert m.url == (
        "wss://res.services.ai.azure.com/voice-live/realtime"
        "?api-version=2026-07-15&model=gpt-realtime"
    )
    assert await m.connect_headers() == {"api-key": "k1"}
    calls = []

    async def provider() -> str:
        calls.append(1)
        return f"tok{len(calls)}"

    m2 = AzureVoiceLive(token_provider=provider)
    assert await m2.connect_headers() == {"Authorization": "Bearer tok1"}
    assert await m2.connect_headers() == {"Authorization": "Bearer tok2"}  # fresh per connect


@pytest.mark.parametrize(
    ("voice", "fragment"),
    [
        ({"name": "en-US-Custom", "type": "azure-custom"}, "endpoint_id"),
        ({"name": "me", "type": "azure-personal"}, "model"),
        ({"name": "bob", "type": "azure-realtime-native"}, "azure-realtime-native"),
        ({"name": "en-US-AvaNeural"}, "needs a 'type'"),
        ("en-US-AvaNeural", "not an OpenAI voice"),
    ],
)
def test_voice_type_comes_from_config(voice: Any, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        AzureVoiceLive(endpoint="https://r.services.ai.azure.com", api_key="k", voice=voice)


async def test_beta_session_shape_with_azure_additions() -> None:
    voice = {"name": "en-US-Custom", "type": "azure-custom", "endpoint_id": "ep-1"}
    async with (
        serving(FakeRealtimeServer(dialect="beta")) as fake,
        AzureVoiceLive(
            endpoint=fake.url,
            api_key=DEFAULT_API_KEY,
            voice=voice,
            deadlines=FAST,
        ) as model,
        model.session() as s,
    ):
        s.say("ok")
        await turn(s)
    sent = fake.stats.sessions[0]
    assert sent["voice"] == voice
    assert sent["turn_detection"]["type"] == "azure_semantic_vad"
    assert sent["input_audio_noise_reduction"] == {"type": "azure_deep_noise_suppression"}
    assert sent["input_audio_echo_cancellation"] == {"type": "server_echo_cancellation"}
    assert sent["input_audio_format"] == "pcm16" and sent["input_audio_sampling_rate"] == 24000
    assert "audio" not in sent and "type" not in sent


async def test_16k_in_and_out_on_the_wire() -> None:
    async with (
        serving(FakeRealtimeServer(dialect="beta")) as fake,
        AzureVoiceLive(
            endpoint=fake.url,
            api_key=DEFAULT_API_KEY,
            input_sample_rate=16000,
            output_sample_rate=16000,
            deadlines=FAST,
        ) as model,
        model.session() as s,
    ):
        for f in speech(0.5, 48000, channels=2).split(0.02):
            s.push_audio(f)  # 48 kHz stereo in: mixed and resampled to 16 kHz
        for f in speech(0.0, 16000).split(0.02):
            s.push_audio(f)
        s.say("sixteen")
        events = await turn(s)
    assert fake.stats.sessions[0]["output_audio_format"] == "pcm16_16000hz"
    assert abs(len(fake.stats.audio_in) - 16000) < 400  # ~0.5 s of 16-bit 16 kHz mono
    frames = [e.frame for e in events if isinstance(e, AgentAudio)]
    assert frames and all(f.sample_rate == 16000 for f in frames)
    assert audio_of(events) == tone_for_text("sixteen", 16000)


async def test_wrong_token_is_an_auth_error() -> None:
    async with (
        serving(FakeRealtimeServer(dialect="beta")) as fake,
        AzureVoiceLive(endpoint=fake.url, token="nope", deadlines=FAST) as model,
    ):
        with pytest.raises(AuthError, match="AZURE_VOICELIVE_API_KEY"):
            async with model.session():
                pass
