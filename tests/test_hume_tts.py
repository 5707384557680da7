"""HumeTTS: the TTS conformance suite on the fake, plugin checks, and the official ``hume``
SDK as the witness of the request and the fake."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hume import AsyncHumeClient
from hume.core.api_error import ApiError
from hume.tts.types import (
    FormatPcm,
    HttpValidationError,
    PostedTts,
    PostedUtterance,
    PostedUtteranceVoiceWithName,
)

from antiphon.errors import ConfigError
from antiphon.net.pool import PoolOptions
from antiphon.plugins.hume import HumeTTS
from antiphon.protocols import hume_tts as ht
from antiphon.services.tts import TTS, StreamState, TTSDeadlines
from antiphon.testing.conformance.tts import FAST, CoreTTSConformance, TTSHarness
from antiphon.testing.faults import FaultPlan
from antiphon.testing.hume_tts import (
    DEFAULT_API_KEY,
    FakeHumeTTS,
    check_body,
    synthesize,
    validation_error,
)
from antiphon.testing.server import FakeServer, serving
from antiphon.testing.witness import WitnessError, check_model

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

VOICE_ID = "5bb7de05-c8fe-426a-8fcc-ba4fc4ce9f9c"


class HumeHarness(TTSHarness):
    def url_for_port(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def fake(self, plan: FaultPlan) -> FakeServer:
        return FakeHumeTTS(plan)

    def make_tts(
        self, base_url: str, *, deadlines: TTSDeadlines, pool: PoolOptions | None = None
    ) -> TTS:
        return HumeTTS(api_key=DEFAULT_API_KEY, base_url=base_url, deadlines=deadlines)

    def expected_pcm(self, text: str, tts: TTS) -> bytes:
        return synthesize(text.strip())  # each segment is sent stripped

    def connections(self, fake: Any) -> int:
        assert isinstance(fake, FakeHumeTTS)
        return fake.stats.connections

    def cancels(self, fake: Any) -> int:
        assert isinstance(fake, FakeHumeTTS)
        return fake.stats.cancels


class TestHumeConformance(CoreTTSConformance):
    harness = HumeHarness()


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUME_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="HUME_API_KEY"):
        HumeTTS()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"voice": None}, "instant mode needs a voice"),
        ({"voice_provider": "OTHER"}, "voice_provider"),
        ({"speed": 0}, "speed"),
        ({"version": "3"}, "version"),
        ({"base_url": "api.hume.ai"}, "http"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        HumeTTS(api_key="k", **kwargs)


async def test_request_on_the_wire() -> None:
    async with (
        serving(FakeHumeTTS()) as fake,
        HumeTTS(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            voice=VOICE_ID,
            voice_provider="CUSTOM_VOICE",
            description="calm",
            speed=1.1,
            version="2",
            deadlines=FAST,
        ) as tts,
    ):
        frame = await tts.synthesize("  Hello from Hume.  ").collect()
    assert frame.sample_rate == 48000 and frame.data == synthesize("Hello from Hume.")
    (req,) = fake.stats.requests
    assert req.path == "/v0/tts/stream/file"
    assert req.headers["x-hume-api-key"] == DEFAULT_API_KEY
    assert req.json == {
        "utterances": [
            {
                "text": "Hello from Hume.",
                "voice": {"id": VOICE_ID, "provider": "CUSTOM_VOICE"},
                "description": "calm",
                "speed": 1.1,
            }
        ],
        "format": {"type": "pcm"},
        "strip_headers": True,
        "instant_mode": True,
        "version": "2",
    }
    assert ht.voice_spec("Ava Song") == {"name": "Ava Song", "provider": "HUME_AI"}


async def test_without_instant_mode_no_voice_is_needed() -> None:
    async with (
        serving(FakeHumeTTS()) as fake,
        HumeTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, voice=None, instant_mode=False) as tts,
    ):
        s = tts.synthesize("No voice is fine without instant mode.")
        frame = await s.collect()
        assert s.state is StreamState.COMPLETED and frame.data
    refused = {"utterances": [{"text": "x"}], "format": {"type": "pcm"}, "instant_mode": True}
    assert check_body(refused) == (
        ["instant_mode"],
        "instant mode requires a voice",
    )


# -- the witness: the official SDK's types and client


async def test_every_request_fits_the_sdk_types() -> None:
    async with (
        serving(FakeHumeTTS()) as fake,
        HumeTTS(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            description="warm",
            speed=0.9,
            version="1",
            deadlines=FAST,
        ) as tts,
    ):
        await tts.synthesize("Typed.").collect()
        by_id = HumeTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, voice=VOICE_ID)
        async with by_id:
            await by_id.synthesize("By id.").collect()
    assert len(fake.stats.requests) == 2
    for request in fake.stats.requests:
        check_model(request.json, PostedTts)
        assert check_body(request.json) is None
    with pytest.raises(WitnessError):
        check_model({**fake.stats.requests[0].json, "sample_rate": 48000}, PostedTts)
    check_model(json.loads(validation_error(["x"], "bad")), HttpValidationError)


async def test_the_official_client_streams_from_the_fake() -> None:
    async with FakeHumeTTS() as fake:
        client = AsyncHumeClient(api_key=DEFAULT_API_KEY, base_url=fake.url)
        voice = PostedUtteranceVoiceWithName(name="Ava Song", provider="HUME_AI")
        chunks = [
            chunk
            async for chunk in client.tts.synthesize_file_streaming(
                utterances=[PostedUtterance(text="From the SDK.", voice=voice)],
                format=FormatPcm(),
                strip_headers=True,
                instant_mode=True,
            )
        ]
        assert b"".join(chunks) == synthesize("From the SDK.")
        with pytest.raises(ApiError) as info:
            async for _ in client.tts.synthesize_file_streaming(
                utterances=[PostedUtterance(text="No voice.")], instant_mode=True
            ):
                pass
        assert info.value.status_code == 422
