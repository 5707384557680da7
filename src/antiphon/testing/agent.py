"""A conversation driver for testing agents on the service doubles, fast and exactly.

- :class:`Conversation`: drives an :class:`~antiphon.agent.AgentSession` on a
  :class:`~antiphon.aio.clock.VirtualClock` in 20 ms steps: user audio in, paced agent
  audio out (:class:`Heard`), every event recorded.
- :func:`doubles_agent`: an agent of the doubles, for servers and benchmarks;
  :func:`speech` and :func:`silence` are what :class:`EnergyVAD` hears as speech or not.

The doubles themselves (:class:`EnergyVAD`, :class:`ScriptedSTT`, :class:`ScriptedLLM`,
:class:`ToneTTS`) are :mod:`antiphon.testing.doubles`, re-exported here. Provider plugins
are tested against their fake servers; these test the agent's own logic (turn-taking,
barge-in, tools, recovery) without sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

import numpy as np

from antiphon.aio.clock import VirtualClock
from antiphon.audio.frame import AudioFrame
from antiphon.services.vad import VADOptions
from antiphon.testing.doubles import (
    RATE,
    EnergyVAD,
    LLMReply,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    ToolCallScript,
)

__all__ = [
    "RATE",
    "Conversation",
    "EnergyVAD",
    "Heard",
    "LLMReply",
    "ScriptedLLM",
    "ScriptedSTT",
    "ToneTTS",
    "ToolCallScript",
    "doubles_agent",
    "silence",
    "speech",
]

if TYPE_CHECKING:
    from antiphon.agent.events import AgentEvent
    from antiphon.agent.session import AgentSession
    from antiphon.server.agents import CallableAgent

E = TypeVar("E")


# ---------------------------------------------------------------------- conversation


def speech(seconds: float, rate: int = RATE, freq: float = 300.0) -> AudioFrame:
    """A loud tone: what :class:`EnergyVAD` hears as speech."""
    t = np.arange(round(seconds * rate)) / rate
    return AudioFrame.from_array(
        (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16), rate
    )


def silence(seconds: float, rate: int = RATE) -> AudioFrame:
    return AudioFrame.silence(seconds, rate)


@dataclass(frozen=True, slots=True)
class Heard:
    """An agent frame as the user got it: when, and of which generation."""

    time: float
    frame: AudioFrame


class Conversation:
    """Drive a session in 20 ms steps on a :class:`VirtualClock`.

    Each step pushes 20 ms of user audio, moves the clock 20 ms and lets every task run,
    while a reader takes the agent's paced frames off the output track (:attr:`heard`)
    and a listener records every event (:attr:`events`).
    """

    STEP = 0.02

    def __init__(self, session: AgentSession, clock: VirtualClock, *, settle: int = 30) -> None:
        self.session = session
        self.clock = clock
        self.settle_rounds = settle
        self.heard: list[Heard] = []
        self.events: list[AgentEvent] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        events = self.session.events()  # subscribed now: nothing from start() is missed
        await self.session.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._listen(events))]
        await self.settle()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.session.aclose()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _read(self) -> None:
        async for frame in self.session.output:
            self.heard.append(Heard(self.clock.now(), frame))

    async def _listen(self, events: AsyncIterator[AgentEvent]) -> None:
        async for ev in events:
            self.events.append(ev)

    async def settle(self) -> None:
        for _ in range(self.settle_rounds):
            await asyncio.sleep(0)

    async def push(self, audio: AudioFrame) -> None:
        """Push ``audio`` in 20 ms steps, in (virtual) real time."""
        for frame in audio.split(self.STEP):
            self.session.push_audio(frame)
            await self.settle()
            await self.clock.advance(frame.duration)
            await self.settle()

    async def say(self, seconds: float) -> None:
        """The user speaks (a tone) for ``seconds``."""
        await self.push(speech(seconds))

    async def wait(self, seconds: float) -> None:
        """The user is silent for ``seconds``."""
        await self.push(silence(seconds))

    async def until(self, predicate: Callable[[], bool], *, limit: float = 10.0) -> float:
        """Stay silent until ``predicate()``; return the seconds it took (fail at ``limit``)."""
        waited = 0.0
        while not predicate():
            if waited >= limit:
                raise AssertionError(f"condition not met within {limit} s of conversation")
            await self.wait(self.STEP)
            waited += self.STEP
        return waited

    def of(self, kind: type[E]) -> list[E]:
        """The events of one type, in order."""
        return [e for e in self.events if isinstance(e, kind)]


def doubles_agent(
    script: Sequence[str],
    replies: Sequence[LLMReply],
    *,
    min_silence: float = 0.4,
    default_reply: str = "Okay.",
    record: bool = True,
    voiced_only: bool = False,
) -> CallableAgent:
    """A server agent on these doubles: one scripted STT, LLM and tone TTS shared by all
    calls (closed with the server), and an energy VAD per call. ``record=False``: the
    doubles keep no history (a bench's server would otherwise grow with every turn);
    ``voiced_only``: the STT hears words only in voiced frames (see :class:`ScriptedSTT`),
    as a recogniser does, rather than the next line in a caller's silence."""
    from antiphon.agent.session import AgentSession
    from antiphon.server.agents import CallableAgent

    stt = ScriptedSTT(script, voiced_only=voiced_only)
    llm = ScriptedLLM(replies, default=default_reply)
    tts = ToneTTS()
    stt.record = llm.record = tts.record = record

    def make() -> AgentSession:
        vad = EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=min_silence))
        return AgentSession(vad=vad, stt=stt, llm=llm, tts=tts)

    async def stop() -> None:
        for service in (stt, llm, tts):
            await service.aclose()

    return CallableAgent(make, stop=stop)
