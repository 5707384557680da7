"""``antiphon talk``: one conversation from a WAV file, the agent's audio to another.

The user's audio is pushed in real time (20 ms frames on the clock), followed by a
little silence so the agent hears the end of the turn; the agent's paced output is
written as it plays. The result says what was heard, what was answered, and how long
each stage took.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

from antiphon.agent.events import (
    AgentError,
    AgentEvent,
    AgentReplied,
    TurnCompleted,
    TurnMetrics,
    TurnUnanswered,
    UserTranscribed,
)
from antiphon.agent.options import AgentOptions
from antiphon.agent.pipeline import (
    DEFAULT_INSTRUCTIONS,
    FakeBackends,
    PipelineSpec,
    open_services,
)
from antiphon.agent.session import AgentSession
from antiphon.aio.clock import MonotonicClock
from antiphon.aio.tasks import TaskGroup
from antiphon.audio.frame import AudioFrame
from antiphon.audio.wav import WavWriter
from antiphon.errors import AntiphonError

__all__ = ["TalkResult", "talk"]


@dataclass
class TalkResult:
    heard: list[str] = field(default_factory=list)
    """Final transcripts of the user's speech."""
    replies: list[str] = field(default_factory=list)
    """What the agent said (each reply as played)."""
    turns: list[TurnMetrics] = field(default_factory=list)
    audio_seconds: float = 0.0
    """Seconds of agent audio written."""
    errors: list[str] = field(default_factory=list)
    """What failed, as "stage: error" (a reply may then be the agent's fallback)."""


async def talk(
    audio: AudioFrame,
    out: str | Path | BinaryIO,
    *,
    spec: PipelineSpec | None = None,
    instructions: str = DEFAULT_INSTRUCTIONS,
    options: AgentOptions | None = None,
    trailing_silence: float = 2.0,
    timeout: float = 60.0,
    turn_log: str | Path | IO[str] | None = None,
    fakes: FakeBackends | None = None,
) -> TalkResult:
    """Run one conversation on ``audio``; write the agent's audio to ``out``.

    ``fakes``: the stand-in services of a ``spec.fake`` pipeline (see ``open_services``).
    """
    if audio.duration <= 0:
        raise AntiphonError("the input audio is empty; give a WAV file with speech")
    spec = spec or PipelineSpec()
    result = TalkResult()
    clock = MonotonicClock()
    async with contextlib.AsyncExitStack() as stack:
        services = await open_services(spec, stack, fakes=fakes)
        session = AgentSession(
            vad=services.vad,
            stt=services.stt,
            llm=services.llm,
            tts=services.tts,
            tools=services.tools,
            instructions=instructions,
            options=options,
            clock=clock,
            turn_log=turn_log,
        )
        writer = WavWriter(out, sample_rate=session.output.sample_rate, channels=1)
        stack.callback(writer.close)
        await session.start()
        events = session.events()

        async def play() -> None:
            async for frame in session.output:
                writer.write(frame)

        async def listen() -> None:
            ev: AgentEvent
            async for ev in events:
                if isinstance(ev, UserTranscribed) and ev.is_final:
                    result.heard.append(ev.text)
                elif isinstance(ev, AgentReplied) and ev.text:
                    result.replies.append(ev.text)
                elif isinstance(ev, TurnCompleted):
                    result.turns.append(ev.metrics)
                elif isinstance(ev, AgentError):
                    result.errors.append(f"{ev.stage}: {ev.error}")
                elif isinstance(ev, TurnUnanswered):
                    result.errors.append(f"unanswered: {ev.reason}")

        async def feed() -> None:
            frames = [
                *audio.split(0.02),
                *AudioFrame.silence(trailing_silence, audio.sample_rate, audio.channels).split(
                    0.02
                ),
            ]
            start = clock.now()
            elapsed = 0.0
            for frame in frames:
                session.push_audio(frame)
                elapsed += frame.duration
                await clock.sleep_until(start + elapsed)
            session.end_input()

        try:
            async with TaskGroup() as tg:
                tg.create_task(play())
                tg.create_task(listen())
                try:
                    async with asyncio.timeout(audio.duration + trailing_silence + timeout):
                        await feed()
                        await session.wait_idle()
                except TimeoutError:
                    raise AntiphonError(
                        f"the agent did not finish within {timeout:g} s after the input"
                    ) from None
                finally:
                    await session.aclose(drain=True)
        except* AntiphonError as group:
            raise group.exceptions[0] from None
        result.audio_seconds = writer.duration
        if session.error is not None:
            raise AntiphonError(f"the session failed: {session.error}")
    return result
