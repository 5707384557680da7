"""A conversation test kit: test your own agent the way antiphon tests itself.

``async with conversation(llm=..., tools=[...]) as c`` starts an
:class:`~antiphon.agent.AgentSession` on in-process doubles (an energy VAD, a scripted
STT, a tone TTS; your LLM or a :class:`~antiphon.testing.agent.ScriptedLLM`), and
``await c.user_says("what time is it")`` plays one user turn: the phrase as audio (its
tone, which the scripted STT recognises as the phrase) or as text (``send_text``), then
silence, paced like a transport (20 ms of audio per 20 ms of loop time), until the
session is idle again. It returns a :class:`Turn`: the reply the user heard, the tool
calls made (with their arguments), and the timing from the end of the user's speech to
the agent's first audio, on the loop's clock.

How it is built: every service and the session run on the running loop's clock
(:class:`~antiphon.aio.clock.MonotonicClock`), so on
:class:`~antiphon.testing.vloop.VirtualTimeLoop` (the ``virtual_time`` marker with
``pytest_asyncio_loop_factories``, or :func:`run_virtual`) a turn costs no wall time and
its timings are exact; on an ordinary loop it runs in real time. A reader takes the
agent's frames off the output track and a listener records every event. On exit the
session and the kit's own doubles close and :class:`~antiphon.testing.leaks.LeakCheck`
fails the test if a task, thread or socket is left behind. Services you pass in are
yours to close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from antiphon.agent.events import (
    AgentEvent,
    AgentReplied,
    ToolCalled,
    TurnCompleted,
    TurnMetrics,
)
from antiphon.agent.options import AgentOptions
from antiphon.agent.session import AgentSession
from antiphon.aio.clock import MonotonicClock
from antiphon.audio.frame import AudioFrame
from antiphon.services.llm import LLM, ChatMessage
from antiphon.services.tools import FunctionTool
from antiphon.services.tts import TTS
from antiphon.services.vad import VADOptions
from antiphon.testing.agent import EnergyVAD, LLMReply, ScriptedLLM, ScriptedSTT, ToneTTS
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.synth import tone_for_text
from antiphon.testing.vloop import VirtualTimeLoop

__all__ = ["Dialogue", "ToolCall", "Turn", "conversation", "run_virtual"]

RATE = 16000
STEP = 0.02
T = TypeVar("T")
E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool the agent called in a turn: its ``arguments`` (decoded), and the result."""

    name: str
    arguments: dict[str, Any]
    output: str
    error: str | None


@dataclass(frozen=True, slots=True)
class Turn:
    """One user turn and what came of it.

    ``replies``: the agent's lines the user heard (some audio of), in order; ``reply``
    joins them. ``ended_at``: the loop time the user's speech (or typed text) ended;
    ``first_audio_at``: the loop time the first frame of the agent's answer reached the
    transport (``None``: it said nothing). ``metrics``: the session's own
    :class:`~antiphon.agent.events.TurnMetrics` of the turn, if it completed.
    """

    user: str
    replies: tuple[str, ...]
    tool_calls: tuple[ToolCall, ...]
    ended_at: float
    first_audio_at: float | None
    metrics: TurnMetrics | None
    events: tuple[AgentEvent, ...] = field(repr=False)

    @property
    def reply(self) -> str:
        return " ".join(self.replies)

    @property
    def latency(self) -> float | None:
        """End of the user's speech → the agent's first audio, in loop seconds."""
        if self.first_audio_at is None:
            return None
        return self.first_audio_at - self.ended_at


class Dialogue:
    """A running test conversation (made by :func:`conversation`)."""

    def __init__(self, session: AgentSession, stt: ScriptedSTT) -> None:
        self.session = session
        self.stt = stt
        self.events: list[AgentEvent] = []
        """Every event of the session, in order."""
        self.frames: list[tuple[float, AudioFrame]] = []
        """The agent's audio as the transport took it: (loop time, frame)."""
        self.turns: list[Turn] = []
        """Every turn :meth:`user_says` played, in order."""

    @property
    def history(self) -> list[ChatMessage]:
        """The session's chat history (system prompt, user and assistant turns, tools)."""
        return list(self.session.history.messages)

    def of(self, kind: type[E]) -> list[E]:
        """The events of one type, in order."""
        return [e for e in self.events if isinstance(e, kind)]

    async def push(self, audio: AudioFrame) -> None:
        """Push ``audio`` paced like a transport: each 20 ms frame when it has been
        captured (at its end), so the push returns at the loop time the audio ends."""
        loop = asyncio.get_running_loop()
        start, t = loop.time(), 0.0
        for frame in audio.split(STEP):
            t += frame.duration
            await asyncio.sleep(max(0.0, start + t - loop.time()))
            self.session.push_audio(frame)

    async def silence(self, seconds: float) -> None:
        """The user is silent for ``seconds`` of loop time."""
        await self.push(AudioFrame.silence(seconds, RATE))

    async def user_says(self, text: str, *, typed: bool = False, limit: float = 30.0) -> Turn:
        """The user says ``text`` (as audio, or ``typed`` through ``send_text``), then
        stays silent until the session is idle (at most ``limit`` loop seconds).

        The turn is also kept in :attr:`turns`. Raises the session's error if it failed,
        ``AssertionError`` if the turn does not end within ``limit``.
        """
        loop = asyncio.get_running_loop()
        mark_events, mark_frames = len(self.events), len(self.frames)
        mark_turns = len(self.session.turns)
        if typed:
            self.session.send_text(text)
        else:
            self.stt.script.append(text)
            await self.push(AudioFrame(tone_for_text(text, RATE), RATE))
        ended_at = loop.time()
        idle = loop.create_task(self.session.wait_idle())
        try:
            while not idle.done():
                if loop.time() - ended_at > limit:
                    raise AssertionError(f"the turn did not end within {limit} s of loop time")
                await self.silence(STEP)
            idle.result()
        finally:
            idle.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await idle
        await asyncio.sleep(0)  # the listener takes the last events
        events = tuple(self.events[mark_events:])
        frames = self.frames[mark_frames:]
        heard = {f.generation for _, f in frames}
        replies = tuple(
            e.text
            for e in events
            if isinstance(e, AgentReplied) and e.text and e.generation in heard
        )
        calls = tuple(
            ToolCall(e.name, _arguments(e.arguments), e.output, e.error)
            for e in events
            if isinstance(e, ToolCalled)
        )
        completed = [e.metrics for e in events if isinstance(e, TurnCompleted)]
        if not completed and len(self.session.turns) > mark_turns:
            completed = [self.session.turns[-1]]
        turn = Turn(
            user=text,
            replies=replies,
            tool_calls=calls,
            ended_at=ended_at,
            first_audio_at=frames[0][0] if frames else None,
            metrics=completed[-1] if completed else None,
            events=events,
        )
        self.turns.append(turn)
        return turn


def _arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}


@contextlib.asynccontextmanager
async def conversation(
    *,
    llm: LLM | Sequence[LLMReply] = (),
    tools: Sequence[FunctionTool] = (),
    instructions: str = "",
    options: AgentOptions | None = None,
    tts: TTS | None = None,
    vad_silence: float = 0.4,
    lead_in: float = 0.2,
    check_leaks: bool = True,
    leak_settle: float = 1.0,
) -> AsyncIterator[Dialogue]:
    """A test conversation with an agent (see the module docstring).

    ``llm``: your LLM, or a script of replies for a
    :class:`~antiphon.testing.agent.ScriptedLLM` (texts, lists of
    :class:`~antiphon.testing.agent.ToolCallScript`, errors). ``tts``: yours, or a
    :class:`~antiphon.testing.agent.ToneTTS`. ``vad_silence``: the VAD's silence window
    (``min_silence_duration``) that ends a spoken turn. ``lead_in``: seconds of silence
    before the first turn. ``check_leaks``: fail on exit if anything is left behind.
    """
    leaks = LeakCheck()
    clock = MonotonicClock()
    owned: list[LLM | TTS | ScriptedSTT] = []
    the_llm = llm if isinstance(llm, LLM) else ScriptedLLM(list(llm), clock=clock)
    the_tts = tts if tts is not None else ToneTTS(clock=clock)
    stt = ScriptedSTT(clock=clock)
    owned.append(stt)
    if the_llm is not llm:
        owned.append(the_llm)
    if the_tts is not tts:
        owned.append(the_tts)
    async with contextlib.AsyncExitStack() as stack:
        for service in owned:
            stack.push_async_callback(service.aclose)
        vad = EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=vad_silence))
        session = AgentSession(
            vad=vad,
            stt=stt,
            llm=the_llm,
            tts=the_tts,
            tools=tools,
            instructions=instructions,
            options=options,
            clock=clock,
        )
        dialogue = Dialogue(session, stt)
        subscription = session.events()
        stack.push_async_callback(session.aclose)
        await session.start()

        async def listen() -> None:
            async for ev in subscription:
                dialogue.events.append(ev)

        async def read() -> None:
            loop = asyncio.get_running_loop()
            async for frame in session.output:
                dialogue.frames.append((loop.time(), frame))

        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(listen()), loop.create_task(read())]
        try:
            if lead_in > 0:
                await dialogue.silence(lead_in)
            yield dialogue
        finally:
            await session.aclose()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    if check_leaks:
        await leaks.assert_clean(settle=leak_settle)


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on a fresh :class:`~antiphon.testing.vloop.VirtualTimeLoop`.

    For a test suite without pytest-asyncio or antiphon's loop hook:
    ``def test_x(): run_virtual(check_x())``. Not from inside a running loop.
    """
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
