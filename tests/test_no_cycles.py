"""A call's objects go when it ends, by reference counting: nothing of antiphon's is left
in a reference cycle for a full garbage collection (which on a busy server pauses the
event loop for tens of milliseconds, and held every ended call's objects until it ran).

Each test runs with the collector off (:class:`~antiphon.testing.leaks.CycleCheck`) and
asks, once everything is dropped, what of antiphon's only a collection would free.
"""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect

from antiphon.agent import AgentSession, AgentState
from antiphon.agent.events import Interrupted, TurnCompleted
from antiphon.agent.realtime import RealtimeAgentSession
from antiphon.aio.channel import Channel
from antiphon.aio.clock import VirtualClock
from antiphon.aio.tasks import TaskGroup, TaskOwner
from antiphon.plugins.openai import OpenAIRealtime
from antiphon.server.app import create_app
from antiphon.server.calls import DrainingServer
from antiphon.testing.agent import (
    Conversation,
    EnergyVAD,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    doubles_agent,
    silence,
    speech,
)
from antiphon.testing.asgi import serve_app
from antiphon.testing.leaks import CycleCheck
from antiphon.testing.poll import until
from antiphon.testing.realtime import DEFAULT_API_KEY as REALTIME_KEY
from antiphon.testing.realtime import FakeRealtimeServer

LONG = (
    "This is a long answer to your question. It has several sentences to speak aloud. "
    "The user will cut it off somewhere in the middle. And this last part is never heard."
)


def test_the_check_finds_a_cycle_when_there_is_one() -> None:
    with CycleCheck() as cycles:
        channel: Channel[int] = Channel(1)
        channel.me = channel  # type: ignore[attr-defined]
        del channel
        assert cycles.found() == {"Channel": 1}
        assert cycles.found() == {}


@pytest.mark.virtual_time
async def test_a_cancelled_task_leaves_its_owner_free() -> None:
    """The task's frame holds its holder, the holder the task: the kept cancellation
    would make that a cycle; the owner reaps it."""

    class Holder:
        def __init__(self) -> None:
            self.owner = TaskOwner("holder")
            self.channel: Channel[int] = Channel(1)
            self.task = self.owner.spawn(self.wait(), name="wait")

        async def wait(self) -> None:
            await self.channel.recv()

    with CycleCheck() as cycles:
        holder = Holder()
        await asyncio.sleep(0)
        await holder.owner.aclose(1.0)
        assert holder.task.cancelled()
        del holder
        assert cycles.found() == {}


@pytest.mark.virtual_time
async def test_a_task_group_cancelled_from_outside_leaves_no_cycle() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def group() -> None:
        async with TaskGroup() as tg:
            tg.create_task(forever())
            tg.create_task(forever())

    with CycleCheck() as cycles:
        task = asyncio.get_running_loop().create_task(group())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        del task
        assert cycles.found() == {}


async def _a_session_with_barge_in_and_a_close_mid_reply(clock: VirtualClock) -> None:
    stt = ScriptedSTT(["tell me everything", "stop", "and again"])
    llm = ScriptedLLM([LONG, "Okay.", LONG], clock=clock)
    tts = ToneTTS(clock=clock)
    session = AgentSession(vad=EnergyVAD(), stt=stt, llm=llm, tts=tts, clock=clock)
    async with asyncio.timeout(40), Conversation(session, clock) as c:
        await c.say(0.8)
        await c.until(lambda: session.state is AgentState.SPEAKING, limit=3)
        await c.wait(1.0)
        await c.say(0.7)  # over the agent: an interruption
        assert c.of(Interrupted)
        await c.until(lambda: len(c.of(TurnCompleted)) == 2, limit=10)
        await c.say(0.8)
        await c.until(lambda: session.state is AgentState.SPEAKING, limit=3)
        await session.aclose()  # mid-reply
    for service in (stt, llm, tts):
        await service.aclose()


@pytest.mark.virtual_time
async def test_a_session_with_barge_in_and_a_close_mid_reply_leaves_no_cycle() -> None:
    clock = VirtualClock()
    with CycleCheck() as cycles:
        await _a_session_with_barge_in_and_a_close_mid_reply(clock)  # its objects dropped
        assert cycles.found() == {}


@pytest.mark.realtime  # a real server on loopback; nothing here is timed
async def test_calls_through_the_server_leave_no_cycle() -> None:
    """Two calls, each asking and hearing a reply, then one hanging up mid-reply."""
    agent = doubles_agent(
        [f"question {i}" for i in range(10)], [], min_silence=0.3, default_reply=LONG
    )
    app = create_app(agent, max_sessions=4)
    turn = speech(0.6).split(0.02) + silence(0.5).split(0.02)

    async def call(host: str, *, hang_up_mid_reply: bool) -> None:
        async with connect(f"ws://{host}/ws/agent", max_queue=None) as ws:
            for frame in turn:
                await ws.send(frame.data)
            got = 0
            async for message in ws:  # the reply's audio, as the agent speaks it
                if isinstance(message, bytes):
                    got += 1
                    if got == 10 and hang_up_mid_reply:
                        return
                elif got and json.loads(message).get("state") == "listening":
                    return

    async with serve_app(app) as host:
        await call(host, hang_up_mid_reply=False)  # the first call warms what is shared
        with CycleCheck() as cycles:
            await asyncio.gather(
                call(host, hang_up_mid_reply=False), call(host, hang_up_mid_reply=True)
            )
            await _until_no_calls(app)
            found = cycles.found()
    assert found == {}


async def _until_no_calls(app: Any) -> None:
    await until(lambda: not app.state.calls.calls, timeout=30)
    await asyncio.sleep(0.2)  # the handlers' last steps after leaving the registry


@pytest.mark.realtime  # a real uvicorn server on loopback; nothing here is timed
async def test_the_server_settles_its_heap_once_started() -> None:
    """What startup made (the agent's models, the modules) is frozen out of collections;
    what calls make later stays collectable."""
    agent = doubles_agent(["hello"], [])
    app = create_app(agent, max_sessions=1)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = DrainingServer(config, app.state.calls, 1.0)
    assert gc.get_freeze_count() == 0
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        await until(lambda: server.started or task.done(), timeout=30)
        assert server.started
        assert gc.get_freeze_count() > 0 and server.heap.full_collections == 1
        later = Channel[int](1)
        assert gc.is_tracked(later) and later not in gc.get_objects(generation=2)
        keeping = server._keeping
        assert keeping is not None and not keeping.done()  # the keeper ticks while serving
    finally:
        gc.unfreeze()
        server.should_exit = True
        await asyncio.wait_for(task, 30)
    assert keeping.done() and server._keeping is None  # and stops with the server


async def _a_realtime_call_with_barge_in() -> None:
    fake = FakeRealtimeServer(transcripts=("tell me", "stop"), reply=lambda _: LONG)
    await fake.start()
    model = OpenAIRealtime(api_key=REALTIME_KEY, base_url=fake.url)
    session = RealtimeAgentSession(model, instructions="Be brief.")
    events: list[object] = []

    async def listen() -> None:
        async for event in session.events():
            events.append(event)

    async def play() -> None:
        async for _ in session.output:
            pass

    async def push(audio: Any, pace: float) -> None:
        for frame in audio.split(0.02):
            session.push_audio(frame)
            await asyncio.sleep(pace)

    try:
        async with asyncio.timeout(30), session, TaskGroup() as tg:
            tg.create_task(listen())
            tg.create_task(play())
            await push(speech(0.4, 24000), 0)
            await push(silence(0.7, 24000), 0)
            await until(lambda: session.state is AgentState.SPEAKING)
            await asyncio.sleep(1.0)
            await push(speech(0.2, 24000), 0.02)  # over the model's reply
            await until(lambda: any(isinstance(e, Interrupted) for e in events))
            await session.aclose()
    finally:
        await model.aclose()
        await fake.aclose()


@pytest.mark.virtual_time
async def test_a_realtime_session_with_barge_in_leaves_no_cycle() -> None:
    with CycleCheck() as cycles:
        await _a_realtime_call_with_barge_in()
        # the fake server hangs off websockets' own server, a cycle of that library
        assert cycles.found(ignore=("antiphon.testing",)) == {}
