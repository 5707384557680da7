"""RealtimeAgentSession: the agent API over a realtime model, on the fake server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import pytest

from antiphon.agent import (
    AgentError,
    AgentReplied,
    AgentState,
    Interrupted,
    StateChanged,
    ToolCalled,
    TurnCompleted,
    UserTranscribed,
)
from antiphon.agent.events import AgentEvent
from antiphon.agent.realtime import RealtimeAgentSession
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError, StreamClosedError
from antiphon.plugins.openai import OpenAIRealtime
from antiphon.services.tools import function_tool
from antiphon.testing.agent import silence, speech
from antiphon.testing.faults import FaultPlan
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.testing.realtime import DEFAULT_API_KEY, FakeRealtimeServer
from antiphon.testing.synth import tone_duration

#: asyncio only: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

REPLY = "Here is a fairly long answer, so there is time to talk over it before it ends."


@asynccontextmanager
async def agent(
    fake_kwargs: Mapping[str, object], **kwargs: object
) -> AsyncIterator[
    tuple[FakeRealtimeServer, RealtimeAgentSession, list[AgentEvent], list[AudioFrame]]
]:
    leaks = LeakCheck()
    fake = FakeRealtimeServer(**fake_kwargs)  # type: ignore[arg-type]
    await fake.start()
    model = OpenAIRealtime(api_key=DEFAULT_API_KEY, base_url=fake.url)
    session = RealtimeAgentSession(model, instructions="Be brief.", **kwargs)  # type: ignore[arg-type]
    events: list[AgentEvent] = []
    heard: list[AudioFrame] = []
    try:
        async with asyncio.timeout(30), session:

            async def listen() -> None:
                async for ev in session.events():
                    events.append(ev)

            async def play() -> None:
                async for frame in session.output:
                    heard.append(frame)

            async with asyncio.TaskGroup() as tg:
                tg.create_task(listen())
                tg.create_task(play())
                await asyncio.sleep(0)
                try:
                    yield fake, session, events, heard
                finally:
                    await session.aclose()
    finally:
        await model.aclose()
        await fake.aclose()
    await leaks.assert_clean(settle=1.0)


async def push(session: RealtimeAgentSession, audio: AudioFrame, *, realtime: bool) -> None:
    for frame in audio.split(0.02):
        session.push_audio(frame)
        await asyncio.sleep(0.02 if realtime else 0)


async def test_a_turn_is_heard_answered_and_measured() -> None:
    async with agent({"transcripts": ("hello there",)}) as (fake, session, events, heard):
        await push(session, speech(0.4, 24000), realtime=False)
        await push(session, silence(0.7, 24000), realtime=False)
        await until(lambda: any(isinstance(e, TurnCompleted) for e in events))
        [turn] = [e.metrics for e in events if isinstance(e, TurnCompleted)]
        expected = fake.expected_reply("hello there")
        assert turn.agent_text == expected and not turn.interrupted
        assert turn.voice_to_voice is not None
        assert [e.text for e in events if isinstance(e, UserTranscribed)] == ["hello there"]
        played = sum(f.duration for f in heard)
        assert played == pytest.approx(tone_duration(expected), abs=0.05)
        assert [m.role for m in session.history.messages] == ["system", "user", "assistant"]
        assert session.state is AgentState.LISTENING


async def test_barge_in_truncates_the_model_item_at_what_was_played() -> None:
    fake_kwargs = {"transcripts": ("tell me", "stop"), "reply": lambda _: REPLY}
    async with agent(fake_kwargs) as (fake, session, events, heard):
        await push(session, speech(0.4, 24000), realtime=False)
        await push(session, silence(0.7, 24000), realtime=False)
        await until(lambda: session.state is AgentState.SPEAKING)
        await asyncio.sleep(1.0)
        await push(session, speech(0.2, 24000), realtime=True)
        await until(lambda: any(isinstance(e, Interrupted) for e in events))
        [cut] = [e for e in events if isinstance(e, Interrupted)]
        assert 0.8 < cut.played < tone_duration(REPLY)
        assert cut.dropped > 0
        await until(lambda: bool(fake.stats.truncates))
        [(_, end_ms)] = fake.stats.truncates
        assert end_ms == pytest.approx(cut.played * 1000, abs=25)
        assert REPLY.startswith(cut.text) and cut.text != REPLY
        assert session.history.messages[-1].content == cut.text
        old = [f for f in heard if f.generation == cut.generation]
        assert sum(f.duration for f in old) == pytest.approx(cut.played, abs=0.021)
        replied = [e for e in events if isinstance(e, AgentReplied)]
        assert replied[0].interrupted


async def test_tools_run_locally_and_answer_the_model() -> None:
    @function_tool
    def get_weather(query: str) -> str:
        """The weather."""
        return f"sunny ({query})"

    fake_kwargs = {"transcripts": ("weather please",)}
    async with agent(fake_kwargs, tools=[get_weather]) as (fake, session, events, _):
        await push(session, speech(0.4, 24000), realtime=False)
        await push(session, silence(0.7, 24000), realtime=False)
        await until(lambda: any(isinstance(e, TurnCompleted) for e in events))
        [called] = [e for e in events if isinstance(e, ToolCalled)]
        assert called.name == "get_weather" and called.error is None
        assert called.output == "sunny (weather please)"
        assert fake.stats.count("conversation.item.create") >= 1


async def test_needs_a_realtime_model() -> None:
    with pytest.raises(ConfigError, match="RealtimeModel"):
        RealtimeAgentSession("openai")  # type: ignore[arg-type]


async def test_the_model_failing_for_good_fails_the_session_at_once() -> None:
    leaks = LeakCheck()
    plan = FaultPlan(close_mid_audio=1011, close_after_chunks=2)
    fake = FakeRealtimeServer(transcripts=("hello",), plan=plan)
    await fake.start()
    model = OpenAIRealtime(api_key=DEFAULT_API_KEY, base_url=fake.url, max_reconnects=0)
    session = RealtimeAgentSession(model)
    try:
        async with asyncio.timeout(20):
            await session.start()
            events = session.events()
            with contextlib.suppress(StreamClosedError):  # the model may fail meanwhile
                await push(session, speech(0.4, 24000), realtime=False)
                await push(session, silence(0.7, 24000), realtime=False)
            seen = [e async for e in events]  # ends: the session failed
            assert session.state is AgentState.CLOSED
            assert isinstance(session.error, ProviderError) and "1011" in str(session.error)
            fatal = [e for e in seen if isinstance(e, AgentError)][-1]
            assert fatal.error is session.error and not fatal.recoverable
            closed = seen[-1]
            assert isinstance(closed, StateChanged) and closed.new is AgentState.CLOSED
            with pytest.raises(ProviderError):
                await session.wait_idle()
            with pytest.raises(StreamClosedError):
                session.push_audio(speech(0.02, 24000))
    finally:
        await session.aclose()
        await model.aclose()
        await fake.aclose()
    await leaks.assert_clean(settle=1.0)


async def test_a_failing_tool_does_not_fail_the_realtime_session() -> None:
    @function_tool
    def get_weather(query: str) -> str:
        """The weather (broken)."""
        raise RuntimeError("weather service down")

    fake_kwargs = {"transcripts": ("weather please",)}
    async with agent(fake_kwargs, tools=[get_weather]) as (_, session, events, _heard):
        await push(session, speech(0.4, 24000), realtime=False)
        await push(session, silence(0.7, 24000), realtime=False)
        await until(lambda: any(isinstance(e, TurnCompleted) for e in events))
        [called] = [e for e in events if isinstance(e, ToolCalled)]
        assert called.error is not None and "weather service down" in called.output
        assert session.error is None and session.state is not AgentState.CLOSED
