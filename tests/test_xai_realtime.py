"""XAIRealtime: the realtime conformance suite on the xAI Voice Agent fake, plus plugin
checks of what differs from OpenAI Realtime GA (the protocol's own checks:
``test_protocol_xai_realtime.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from antiphon.errors import AuthError, ConfigError
from antiphon.plugins.xai import XAIRealtime
from antiphon.protocols import xai_realtime as xr
from antiphon.protocols.realtime import Voice
from antiphon.services.realtime import RealtimeDeadlines, RealtimeModel
from antiphon.testing.conformance.realtime import (
    FAST,
    RealtimeConformance,
    RealtimeHarness,
    audio_of,
    turn,
)
from antiphon.testing.faults import FaultPlan
from antiphon.testing.server import serving
from antiphon.testing.synth import tone_for_text
from antiphon.testing.xai_realtime import DEFAULT_API_KEY, FakeXAIRealtimeServer

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


class XAIHarness(RealtimeHarness[FakeXAIRealtimeServer]):
    def fake(self, plan: FaultPlan, **kwargs: Any) -> FakeXAIRealtimeServer:
        return FakeXAIRealtimeServer(plan, **kwargs)

    def make_model(
        self, base_url: str, *, deadlines: RealtimeDeadlines, **kwargs: Any
    ) -> RealtimeModel:
        if "turn_detection" in kwargs and kwargs["turn_detection"] is None:
            kwargs.pop("turn_detection")
            kwargs["server_vad"] = False
        return XAIRealtime(
            api_key=DEFAULT_API_KEY, base_url=base_url, deadlines=deadlines, **kwargs
        )

    def other_voice(self) -> Any:
        return "ara"


class TestXAIRealtimeConformance(RealtimeConformance[FakeXAIRealtimeServer]):
    harness = XAIHarness()

    async def test_unknown_voice_type_is_refused(self) -> None:
        """xAI takes its own voice ids (custom ones too): any other service's is refused."""
        async with self.run() as r:
            with pytest.raises(ConfigError, match="type"):
                self.harness.make_model(
                    r.fake.url, deadlines=FAST, voice={"name": "x", "type": "azure-magic"}
                )
            with pytest.raises(ConfigError, match="xAI takes its own voices"):
                self.harness.make_model(r.fake.url, deadlines=FAST, voice=Voice("alloy"))
            model = self.harness.make_model(r.fake.url, deadlines=FAST, voice="my-custom-voice")
            await model.aclose()

    async def test_say_is_a_force_message(self) -> None:
        """``say()`` sends xAI's ``force_message`` item; no ``response.create``."""
        async with self.run() as r, r.model.session() as s:
            s.say("Scripted line.")
            events = await turn(s)
            assert audio_of(events) == tone_for_text("Scripted line.", 24000)
            assert r.fake.stats.count("response.create") == 0
            (item,) = [m["item"] for m in r.fake.stats.messages if "item" in m]
            assert item["type"] == "force_message" and item["role"] == "assistant"

    async def test_session_is_in_xai_shape(self) -> None:
        async with self.run(instructions="Be kind.", voice="rex") as r, r.model.session():
            (session,) = r.fake.stats.sessions
            assert session["voice"] == "rex" and session["instructions"] == "Be kind."
            assert session["turn_detection"] == {"type": "server_vad"}
            assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
            assert not {"type", "output_modalities", "tool_choice"} & set(session)
            assert r.fake.stats.queries == [{"model": xr.DEFAULT_MODEL}]


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="XAI_API_KEY"):
        XAIRealtime()


async def test_key_from_environment_and_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAI_API_KEY", "from-env")
    m = XAIRealtime()
    assert m.url == "wss://api.x.ai/v1/realtime?model=grok-voice-fast-1.0"
    assert await m.connect_headers() == {"Authorization": "Bearer from-env"}
    await m.aclose()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"input_sample_rate": 22050}, "input sample rate"),
        ({"voice": {"name": "Kore", "type": "gemini"}}, "own voices"),
        ({"model": " "}, "voice model"),
    ],
)
def test_what_xai_cannot_carry_is_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        XAIRealtime(api_key="k", **kwargs)


async def test_other_rates_reach_the_wire() -> None:
    async with serving(FakeXAIRealtimeServer()) as fake:
        model = XAIRealtime(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            input_sample_rate=16000,
            output_sample_rate=16000,
            deadlines=FAST,
        )
        async with model, model.session() as s:
            s.send_text("hi")
            events = await turn(s)
            assert audio_of(events) == tone_for_text(fake.expected_reply("hi"), 16000)
            (session,) = fake.stats.sessions
            assert session["audio"]["output"]["format"]["rate"] == 16000


async def test_wrong_key_is_refused_on_upgrade() -> None:
    async with serving(FakeXAIRealtimeServer(api_key="right")) as fake:
        model = XAIRealtime(api_key="wrong", base_url=fake.url, deadlines=FAST)
        async with model:
            with pytest.raises(AuthError, match="XAI_API_KEY"):
                async with model.session():
                    pass
