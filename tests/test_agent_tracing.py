"""Per-turn OpenTelemetry spans (agent/tracing.py), on the doubles and the virtual clock.

The spans go to the SDK's in-memory exporter through a provider of the test's own (the
global provider is never set); their durations are asserted against the turn's metrics
and the configured delays of the doubles.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from antiphon.agent import AgentOptions, AgentSession, AgentState, TurnCompleted, TurnOptions
from antiphon.agent import tracing as tracing_module
from antiphon.agent.tracing import TurnTracer
from antiphon.aio.clock import VirtualClock
from antiphon.errors import ConfigError, ProviderError
from antiphon.services.tools import function_tool
from antiphon.testing.agent import (
    Conversation,
    EnergyVAD,
    LLMReply,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    ToolCallScript,
)
from antiphon.testing.leaks import LeakCheck

pytestmark = pytest.mark.virtual_time

TOOL_SECONDS = 0.3
TOKEN_DELAY = 0.1
CHUNK_DELAY = 0.05
USER_TEXT = "weather in paris"


def seconds(span: ReadableSpan) -> float:
    assert span.start_time is not None and span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


@asynccontextmanager
async def traced(
    replies: list[LLMReply], *, record_text: bool = False, script: tuple[str, ...] = (USER_TEXT,)
) -> AsyncIterator[tuple[InMemorySpanExporter, Conversation, TurnTracer]]:
    clock = VirtualClock()
    leaks = LeakCheck()

    @function_tool
    async def get_weather(city: str) -> str:
        """The weather of a city.

        Args:
            city: the city
        """
        await clock.sleep_until(clock.now() + TOOL_SECONDS)
        return f"sunny in {city}"

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stt = ScriptedSTT(list(script))
    llm = ScriptedLLM(replies, clock=clock, token_delay=TOKEN_DELAY)
    tts = ToneTTS(clock=clock, chunk_delay=CHUNK_DELAY)
    session = AgentSession(
        vad=EnergyVAD(),
        stt=stt,
        llm=llm,
        tts=tts,
        tools=[get_weather],
        clock=clock,
        options=AgentOptions(turn=TurnOptions(preemptive=False), filler_text=""),
    )
    tracer = TurnTracer(tracer_provider=provider, record_text=record_text)
    tracer.attach(session)
    try:
        async with asyncio.timeout(40), Conversation(session, clock) as c:
            yield exporter, c, tracer
    finally:
        await session.aclose()
        for service in (stt, llm, tts):
            await service.aclose()
        provider.shutdown()
    await leaks.assert_clean(settle=1.0)


async def answer(c: Conversation) -> None:
    await c.say(0.8)
    await c.until(lambda: bool(c.of(TurnCompleted)), limit=20)
    await c.until(lambda: c.session.state is AgentState.LISTENING, limit=20)


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    spans = exporter.get_finished_spans()
    named = {s.name: s for s in spans}
    assert len(named) == len(spans), [s.name for s in spans]
    return named


async def test_a_turn_is_one_trace_with_a_span_per_stage() -> None:
    replies: list[LLMReply] = [
        [ToolCallScript("get_weather", {"city": "Paris"})],
        lambda ctx: f"It is {ctx.messages[-1].content}.",
    ]
    async with traced(replies) as (exporter, c, _):
        await answer(c)
        [done] = c.of(TurnCompleted)
        m = done.metrics
    spans = by_name(exporter)
    assert set(spans) == {
        "antiphon.turn",
        "antiphon.stt.final",
        "antiphon.end_of_turn",
        "antiphon.llm",
        "antiphon.tts",
        "antiphon.tool get_weather",
    }
    root = spans["antiphon.turn"]
    assert root.parent is None and root.context is not None
    for name, span in spans.items():
        if name != "antiphon.turn":
            assert span.parent is not None and span.parent.span_id == root.context.span_id
            assert span.context is not None
            assert span.context.trace_id == root.context.trace_id
    attrs = dict(root.attributes or {})
    assert attrs["antiphon.generation"] == done.generation
    assert attrs["antiphon.interrupted"] is False
    assert attrs["antiphon.tool_calls"] == ("get_weather",)
    for key, value in (
        ("antiphon.voice_to_voice", m.voice_to_voice),
        ("antiphon.llm.ttft", m.llm_ttft),
        ("antiphon.tts.ttfa", m.tts_ttfa),
        ("antiphon.end_of_turn_delay", m.end_of_turn_delay),
        ("antiphon.stt.final_delay", m.stt_final_delay),
    ):
        assert value is not None and attrs[key] == value
    # the children last what the metrics say, and the tool what it slept
    assert m.llm_ttft == pytest.approx(TOKEN_DELAY, abs=0.021)
    assert seconds(spans["antiphon.llm"]) == pytest.approx(m.llm_ttft, abs=1e-6)
    assert seconds(spans["antiphon.tts"]) == pytest.approx(m.tts_ttfa, abs=1e-6)
    assert seconds(spans["antiphon.stt.final"]) == pytest.approx(m.stt_final_delay, abs=1e-6)
    assert seconds(spans["antiphon.tool get_weather"]) == pytest.approx(TOOL_SECONDS, abs=0.021)
    # the turn spans from the end of the user's speech to the end of the reply
    assert m.voice_to_voice is not None
    assert seconds(root) > m.voice_to_voice
    tool = spans["antiphon.tool get_weather"]
    assert tool.attributes is not None and tool.attributes["antiphon.tool.error"] is False
    llm_start = spans["antiphon.llm"].start_time
    assert tool.start_time is not None and llm_start is not None
    assert tool.start_time > llm_start
    # no user text, agent text or tool data by default
    for span in spans.values():
        for attr in (span.attributes or {}).values():
            text = str(attr).lower()
            assert "paris" not in text and "sunny" not in text, (span.name, attr)


async def test_text_is_recorded_only_when_asked() -> None:
    replies: list[LLMReply] = [
        [ToolCallScript("get_weather", {"city": "Paris"})],
        "It is sunny.",
    ]
    async with traced(replies, record_text=True) as (exporter, c, _):
        await answer(c)
    spans = by_name(exporter)
    attrs = spans["antiphon.turn"].attributes or {}
    assert attrs["antiphon.user_text"] == USER_TEXT
    assert attrs["antiphon.agent_text"] == "It is sunny."
    tool = spans["antiphon.tool get_weather"].attributes or {}
    assert tool["antiphon.tool.output"] == "sunny in Paris"


async def test_a_failed_turn_is_marked_without_its_message() -> None:
    failure = ProviderError("secret-key-123 rejected", provider="scripted-llm", stage="stream")
    async with traced([failure]) as (exporter, c, _):
        await answer(c)
    root = by_name(exporter)["antiphon.turn"]
    assert root.status.status_code is StatusCode.ERROR
    assert "secret" not in (root.status.description or "")


async def test_an_open_turn_is_ended_as_abandoned_when_the_session_closes() -> None:
    async with traced(["Okay then."]) as (exporter, c, _):
        await c.say(0.8)
        await c.until(lambda: c.session.state is AgentState.THINKING, limit=5)
        await c.session.aclose()
    [root] = exporter.get_finished_spans()
    assert root.name == "antiphon.turn"
    assert (root.attributes or {})["antiphon.abandoned"] is True


async def test_without_the_api_the_tracer_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing_module, "_otel_trace", lambda: None)
    tracer = TurnTracer()
    assert not tracer.enabled
    async with traced(["Fine."]) as (_, c, _):
        tracer.attach(c.session)
        await answer(c)
        with pytest.raises(ConfigError):
            tracer.attach(c.session)
        tracer.detach()


def test_record_text_must_be_a_bool() -> None:
    with pytest.raises(ConfigError):
        TurnTracer(record_text="yes")  # type: ignore[arg-type]


WITHOUT_API = """
import asyncio, sys
sys.modules["opentelemetry"] = None  # the API is not installed
from antiphon.agent import AgentSession, AgentState, TurnCompleted
from antiphon.agent.tracing import TurnTracer
from antiphon.aio.clock import VirtualClock
from antiphon.testing.agent import Conversation, EnergyVAD, ScriptedLLM, ScriptedSTT, ToneTTS

async def main() -> None:
    clock = VirtualClock()
    services = (ScriptedSTT(["hello"]), ScriptedLLM(["Hi."], clock=clock), ToneTTS(clock=clock))
    stt, llm, tts = services
    session = AgentSession(vad=EnergyVAD(), stt=stt, llm=llm, tts=tts, clock=clock)
    tracer = TurnTracer()
    tracer.attach(session)
    async with Conversation(session, clock) as c:
        await c.say(0.8)
        await c.until(lambda: bool(c.of(TurnCompleted)), limit=10)
    for service in services:
        await service.aclose()
    assert "opentelemetry.trace" not in sys.modules and not tracer.enabled
    print(c.of(TurnCompleted)[0].metrics.agent_text)

asyncio.run(main())
"""


def test_a_session_runs_and_is_traced_as_a_no_op_without_the_api() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_API], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "Hi."
