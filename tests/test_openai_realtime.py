"""OpenAIRealtime: the realtime conformance suite on the fake (GA), plus plugin checks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from antiphon.errors import ConfigError, ProviderTimeoutError
from antiphon.plugins.openai import OpenAIRealtime
from antiphon.services.realtime import RealtimeDeadlines, RealtimeModel
from antiphon.testing.conformance.realtime import (
    FAST,
    OpenAISchemaHarness,
    RealtimeConformance,
    turn,
)
from antiphon.testing.realtime import DEFAULT_API_KEY, FakeRealtimeServer
from antiphon.testing.server import serving

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


class OpenAIHarness(OpenAISchemaHarness):
    dialect = "ga"

    def make_model(
        self, base_url: str, *, deadlines: RealtimeDeadlines, **kwargs: Any
    ) -> RealtimeModel:
        if "turn_detection" in kwargs and kwargs["turn_detection"] is None:
            kwargs.pop("turn_detection")
            kwargs["server_vad"] = False
        return OpenAIRealtime(
            api_key=DEFAULT_API_KEY, base_url=base_url, deadlines=deadlines, **kwargs
        )

    def other_voice(self) -> Any:
        return "marin"


class TestOpenAIRealtimeConformance(RealtimeConformance[FakeRealtimeServer]):
    harness = OpenAIHarness()


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIRealtime()


async def test_key_from_environment_and_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    m = OpenAIRealtime()
    assert m.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert await m.connect_headers() == {"Authorization": "Bearer from-env"}


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"voice": {"name": "en-US-AvaNeural", "type": "azure-standard"}}, "Azure Voice Live"),
        ({"voice": "nova-ish"}, "not an OpenAI voice"),
    ],
)
def test_what_ga_cannot_carry_is_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        OpenAIRealtime(api_key="k", **kwargs)


async def test_ga_session_shape_on_the_wire() -> None:
    async with (
        serving(FakeRealtimeServer(dialect="ga")) as fake,
        OpenAIRealtime(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            instructions="Hi",
            voice="cedar",
            noise_reduction={"type": "near_field"},
            deadlines=FAST,
        ) as model,
        model.session() as s,
    ):
        s.say("ok")
        await turn(s)
    sent = fake.stats.sessions[0]
    assert sent["type"] == "realtime" and sent["output_modalities"] == ["audio"]
    assert sent["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert sent["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    assert sent["audio"]["output"]["voice"] == "cedar"
    assert "voice" not in sent and "input_audio_format" not in sent
    assert json.dumps(sent).count("server_vad") == 1


async def test_metrics_count_tokens_responses_and_interruptions() -> None:
    from prometheus_client import REGISTRY

    from antiphon.testing.conformance.realtime import turn
    from antiphon.testing.realtime import FakeRealtimeServer

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"provider": "openai", **labels}) or 0.0

    out_tokens = value("antiphon_realtime_tokens_total", direction="output")
    responses = value("antiphon_realtime_response_seconds_count")
    interruptions = value("antiphon_realtime_interruptions_total")
    async with (
        FakeRealtimeServer(dialect="ga") as fake,
        OpenAIRealtime(api_key=DEFAULT_API_KEY, base_url=fake.url) as model,
        model.session() as s,
    ):
        s.send_text("What time is it?")
        await turn(s)
        s.interrupt()
    assert value("antiphon_realtime_tokens_total", direction="output") == out_tokens + 20
    assert value("antiphon_realtime_response_seconds_count") == responses + 1
    assert value("antiphon_realtime_interruptions_total") == interruptions + 1


async def test_failed_response_reports_the_servers_error() -> None:
    from antiphon.services.realtime import ResponseDone
    from antiphon.testing.faults import FaultPlan

    plan = FaultPlan(error_mid_stream=True)
    async with (
        FakeRealtimeServer(plan, dialect="ga") as fake,
        OpenAIRealtime(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as model,
        model.session() as s,
    ):
        s.send_text("This one fails.")
        end = (await turn(s))[-1]
    assert isinstance(end, ResponseDone) and end.status == "failed" and end.reason == ""
    assert end.error == "server_error (internal_error): fault plan error"


class _ServerStopsReading:
    """A connection whose server sent ``session.created`` and then stopped reading: the
    first send hits its own deadline (as ``WsConnection.send`` reports it)."""

    id = 1
    open = True

    def __init__(self) -> None:
        self._created = False

    async def recv(self, *, stage: str = "receive") -> str:
        if not self._created:
            self._created = True
            return json.dumps({"type": "session.created", "session": {"id": "sess_1"}})
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(self, message: str | bytes, *, stage: str = "send") -> None:
        raise ProviderTimeoutError(
            "the message was not sent",
            provider="openai",
            stage=stage,
            timeout=0.25,
            hint="the server stopped reading",
        )

    def abort(self) -> None:
        self.open = False

    def clear_handler(self) -> None:
        pass

    async def aclose(self) -> None:
        self.open = False


async def test_a_send_that_hangs_while_opening_is_reported_as_a_send_timeout() -> None:
    model = OpenAIRealtime(api_key=DEFAULT_API_KEY, base_url="ws://127.0.0.1:9", max_reconnects=0)
    conn = _ServerStopsReading()

    async def connect() -> Any:
        return conn

    model._connect = connect  # type: ignore[method-assign]
    try:
        session = model.session()
        with pytest.raises(ProviderTimeoutError) as info:
            await asyncio.wait_for(session.start(), 5)
        err = info.value
        assert (err.stage, err.timeout) == ("send", 0.25)
        assert "not sent" in str(err) and "session.updated" not in str(err)
        await session.aclose()
    finally:
        await model.aclose()
