"""What the caller hears when a service fails: one user turn through the cloud pipeline.

Each test runs an :class:`~antiphon.agent.AgentSession` on Deepgram STT, an
OpenAI-compatible LLM and Deepgram TTS, each against its fake server on loopback, with
one fault of the fake's :class:`~antiphon.testing.FaultPlan`, on the virtual-time loop
(every deadline, backoff and pacing wait takes its configured length of loop time and no
wall time). The user says one phrase, then stays silent. Each test asserts what the
caller hears (the reply, a part of it, the fallback line, or nothing), how many requests
the LLM got, when the session is idle again, and that nothing is left behind
(:class:`~antiphon.testing.leaks.LeakCheck`). The table in ``docs/agent.md`` is this file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import pytest

from antiphon.agent import (
    AgentError,
    AgentOptions,
    AgentReplied,
    AgentSession,
    AgentState,
    TurnCompleted,
    TurnOptions,
    UserTurnEnded,
)
from antiphon.agent.events import AgentEvent
from antiphon.aio.clock import MonotonicClock
from antiphon.audio.frame import AudioFrame
from antiphon.errors import AuthError, ProviderError
from antiphon.plugins.deepgram import DeepgramSTT, DeepgramTTS
from antiphon.plugins.openai import OpenAILLM
from antiphon.protocols.retry import Backoff
from antiphon.services.stt import STTDeadlines
from antiphon.services.tools import FunctionTool, function_tool
from antiphon.services.tts import TTS
from antiphon.services.vad import VADOptions
from antiphon.testing import FaultPlan
from antiphon.testing.agent import EnergyVAD, ToneTTS
from antiphon.testing.deepgram import DEFAULT_API_KEY as TTS_KEY
from antiphon.testing.deepgram import FakeDeepgramTTS
from antiphon.testing.deepgram_stt import DEFAULT_API_KEY as STT_KEY
from antiphon.testing.deepgram_stt import FakeDeepgramSTT
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.openai_chat import DEFAULT_API_KEY as LLM_KEY
from antiphon.testing.openai_chat import FakeOpenAIChat, Reply, ScriptedCall
from antiphon.testing.synth import tone_for_text

#: asyncio only, every fake in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

PHRASE = "what can you do"
RATE = 16000
STEP = 0.02
E = TypeVar("E")


@dataclass
class Call:
    """One session on the cloud fakes, and what its caller got."""

    session: AgentSession
    stt_fake: FakeDeepgramSTT
    llm_fake: FakeOpenAIChat
    tts_fake: FakeDeepgramTTS
    llm: OpenAILLM
    events: list[AgentEvent] = field(default_factory=list)
    frames: dict[int, float] = field(default_factory=dict)  # generation -> seconds heard

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def llm_requests(self) -> int:
        return len(self.llm_fake.stats.requests)

    def heard(self) -> list[str]:
        """The agent's lines the caller heard (some audio of), in order."""
        return [
            e.text
            for e in self.events
            if isinstance(e, AgentReplied) and e.text and self.frames.get(e.generation, 0.0) > 0
        ]

    async def push(self, audio: AudioFrame) -> None:
        """Push ``audio`` paced like a transport: 20 ms per 20 ms of loop time."""
        loop = asyncio.get_running_loop()
        start, t = loop.time(), 0.0
        for frame in audio.split(STEP):
            if self.session.state is AgentState.CLOSED:
                return  # the caller's line is dead: the transport stops pushing
            self.session.push_audio(frame)
            t += frame.duration
            await asyncio.sleep(max(0.0, start + t - loop.time()))

    async def say(self, phrase: str = PHRASE) -> float:
        """The user says ``phrase``; returns the loop time its speech ended."""
        await self.push(AudioFrame(tone_for_text(phrase, RATE), RATE))
        return asyncio.get_running_loop().time()

    async def until(self, predicate: object, *, limit: float = 30.0) -> float:
        """Stay silent until ``predicate()`` holds; the loop time it took."""
        assert callable(predicate)
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not predicate():
            if loop.time() - start > limit:
                raise AssertionError(f"not within {limit} s of loop time")
            await self.push(AudioFrame.silence(STEP, RATE))
        return loop.time() - start

    async def idle(self, *, limit: float = 30.0) -> float:
        """Silence until the session is idle (nobody speaks, nothing pending)."""
        session = self.session

        def is_idle() -> bool:
            return session.state is AgentState.LISTENING and session._idle.is_set()

        return await self.until(is_idle, limit=limit)


# Every retry wait is jittered in production; here the draw is fixed (mid-range) so that each
# row's timeline, and so what the caller hears, is the same on every run.
STEADY = Backoff(rand=lambda: 0.5)


@contextlib.asynccontextmanager
async def cloud_call(
    *,
    stt_plan: FaultPlan | None = None,
    llm_plan: FaultPlan | None = None,
    tts_plan: FaultPlan | None = None,
    options: AgentOptions | None = None,
    vad_silence: float = 0.5,
    vad_threshold: float = 0.02,
    endpointing: int | None = None,
    stt_deadlines: STTDeadlines | None = None,
    offline_fallback: bool = True,
    fallback_tts: TTS | None = None,
    llm_replies: Sequence[Reply] | None = None,
    tools: Sequence[FunctionTool] = (),
) -> AsyncIterator[Call]:
    leaks = LeakCheck()
    async with contextlib.AsyncExitStack() as stack:
        stt_fake = await stack.enter_async_context(
            FakeDeepgramSTT(stt_plan, vocabulary=(PHRASE, "hello again"))
        )
        llm_fake = await stack.enter_async_context(FakeOpenAIChat(llm_plan, replies=llm_replies))
        tts_fake = FakeDeepgramTTS(tts_plan)
        await tts_fake.start()
        stack.push_async_callback(tts_fake.aclose)
        stt = DeepgramSTT(
            api_key=STT_KEY,
            base_url=stt_fake.url,
            endpointing=endpointing,
            deadlines=stt_deadlines,
            backoff=STEADY,
        )
        llm = OpenAILLM(
            "gpt-4o-mini", api_key=LLM_KEY, base_url=llm_fake.base_url, retry_backoff=STEADY
        )
        tts = DeepgramTTS(api_key=TTS_KEY, base_url=tts_fake.url)
        # the offline fallback: the tone TTS double (in-process, on the loop's clock) stands
        # in for espeak, whose engine thread the virtual-time loop cannot wait for
        fallback = fallback_tts
        if fallback is None and offline_fallback:
            fallback = ToneTTS(clock=MonotonicClock())
        for service in (stt, llm, tts, fallback):
            if service is not None:
                stack.push_async_callback(service.aclose)
        vad = EnergyVAD(
            VADOptions(min_speech_duration=0.06, min_silence_duration=vad_silence),
            threshold=vad_threshold,
        )
        session = AgentSession(
            vad=vad,
            stt=stt,
            llm=llm,
            tts=tts,
            tools=tools,
            clock=MonotonicClock(),
            options=replace(options or AgentOptions(), stt_backoff=STEADY),
            fallback_tts=fallback,
        )
        call = Call(session, stt_fake, llm_fake, tts_fake, llm)
        events = session.events()
        stack.push_async_callback(session.aclose)
        await session.start()

        async def listen() -> None:
            async for ev in events:
                call.events.append(ev)

        async def read() -> None:
            async for frame in session.output:
                g = frame.generation
                call.frames[g] = call.frames.get(g, 0.0) + frame.duration

        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(listen()), loop.create_task(read())]
        try:
            async with asyncio.timeout(120):  # fires only if the test hangs (loop idle)
                await call.push(AudioFrame.silence(0.3, RATE))
                yield call
        finally:
            await session.aclose()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    await leaks.assert_clean(settle=1.0)


# ------------------------------------------------------------------ end of turn


@pytest.mark.parametrize(
    ("vad_silence", "endpointing", "order"),
    [
        (0.5, 300, "speech_final before the VAD's silence window ends"),
        (0.2, 400, "the VAD's silence first: the answer to Finalize is the final"),
    ],
)
async def test_the_turn_ends_on_the_first_sufficient_evidence(
    vad_silence: float, endpointing: int, order: str
) -> None:
    final_timeout = 3.0  # long, so that waiting for it could not pass unnoticed
    options = AgentOptions(turn=TurnOptions(final_timeout=final_timeout))
    async with cloud_call(options=options, vad_silence=vad_silence, endpointing=endpointing) as c:
        for _ in range(2):
            await c.say()
            await c.until(lambda: bool(c.of(TurnCompleted)))
            await c.idle()
            c.events.clear()
        turns = list(c.session.turns)
        assert [t.user_text for t in turns] == [PHRASE, PHRASE], order
        for t in turns:
            assert t.end_of_turn_delay is not None and t.voice_to_voice is not None
            # the VAD's silence window, plus loopback round trips (no fallback wait)
            assert vad_silence - 0.021 < t.end_of_turn_delay < vad_silence + 0.2, order
            assert t.voice_to_voice < vad_silence + 0.5 < final_timeout, order
        assert c.llm_requests == 2


async def test_an_empty_answer_to_finalize_ends_the_turn_at_once() -> None:
    """The STT's end-of-speech final does not reach the VAD's end of speech (the VAD
    hears a quiet tail, a breath or a noise, that the recogniser does not), so the
    session flushes; Deepgram answers the Finalize with an empty result. That answer is
    the flush's (``Transcript.flushed``): the turn ends on it, not at ``final_timeout``."""
    final_timeout = 3.0
    vad_silence = 0.5
    options = AgentOptions(turn=TurnOptions(final_timeout=final_timeout))
    # the VAD hears RMS 300 (of 32768), the fake recogniser's voiced runs need 500
    tail_seconds = 0.8  # longer than endpointing plus the cover slack: not covered
    t = np.arange(round(tail_seconds * RATE)) / RATE
    tail = (np.sin(2 * np.pi * 150.0 * t) * 300 * np.sqrt(2)).astype(np.int16)
    async with cloud_call(
        options=options, vad_silence=vad_silence, vad_threshold=0.005, endpointing=300
    ) as c:
        await c.say()
        await c.push(AudioFrame(tail.tobytes(), RATE))
        await c.until(lambda: bool(c.of(TurnCompleted)))
        await c.idle()
        assert [e.text for e in c.of(UserTurnEnded)] == [PHRASE]
        [turn] = c.session.turns
        assert turn.end_of_turn_delay is not None and turn.voice_to_voice is not None
        # the VAD's silence window plus loopback round trips: never the fallback wait
        assert turn.end_of_turn_delay < vad_silence + 0.2 < final_timeout
        assert turn.voice_to_voice < vad_silence + 0.5
        # the order this is about: the final text came before the flush's Finalize
        assert c.stt_fake.stats.count("Finalize") == 1
        assert c.llm_requests == 1


async def test_an_early_final_of_the_first_words_does_not_cut_the_turn() -> None:
    """A pause longer than the STT's endpointing (a speech_final) but shorter than the
    VAD's window, then more words: the turn holds both parts and ends on the last."""
    options = AgentOptions(turn=TurnOptions(final_timeout=3.0))
    async with cloud_call(options=options, vad_silence=0.5, endpointing=300) as c:
        await c.say(PHRASE)
        await c.push(AudioFrame.silence(0.4, RATE))
        await c.say("hello again")
        await c.until(lambda: bool(c.of(TurnCompleted)))
        await c.idle()
        assert [e.text for e in c.of(UserTurnEnded)] == [f"{PHRASE} hello again"]
        [turn] = c.session.turns
        assert turn.end_of_turn_delay is not None
        assert 0.5 - 0.021 < turn.end_of_turn_delay < 0.5 + 0.2
        assert c.llm_requests == 1


# ------------------------------------------------------------------ LLM faults


APOLOGY = "Sorry, something went wrong on my side. Please say that again."


LLM_FAULTS = {
    # fault: (plan, retried by the plugin before its first token)
    "http-500": (FaultPlan(reject_status=500), True),
    "cut-stream": (FaultPlan(close_mid_audio=1011, close_after_chunks=2), False),
    "error-mid-stream": (FaultPlan(error_mid_stream=True, close_after_chunks=2), False),
    "malformed-chunk": (FaultPlan(malformed_mid_stream=True), False),
}


@pytest.mark.parametrize("speculative", [False, True], ids=["final-first", "speculative"])
@pytest.mark.parametrize("fault", list(LLM_FAULTS))
async def test_an_llm_failure_is_one_apology(fault: str, speculative: bool) -> None:
    plan, retried = LLM_FAULTS[fault]
    # speculative: the VAD's silence ends first and the STT's final is slow, so the reply
    # starts on the interim transcript and fails before the turn is decided
    stt_plan = FaultPlan(first_audio_delay=0.4) if speculative else None
    vad_silence, endpointing = (0.2, 800) if speculative else (0.5, 300)
    async with cloud_call(
        llm_plan=plan, stt_plan=stt_plan, vad_silence=vad_silence, endpointing=endpointing
    ) as c:
        await c.say()
        await c.until(lambda: bool(c.of(TurnCompleted)))
        await c.idle()
        assert c.heard() == [APOLOGY]
        # nothing of the failure shows before the turn is decided, on its final
        kinds = [type(e).__name__ for e in c.events]
        assert kinds.index("UserTurnEnded") < kinds.index("AgentError")
        assert [e.text for e in c.of(UserTurnEnded)] == [PHRASE]
        assert len(c.of(AgentError)) == 1
        assert c.llm_requests == 1 + (c.llm.max_retries if retried else 0)


# ------------------------------------------------------------------ the fault table

ANSWER = f"You said: {PHRASE}"
MISSED = AgentOptions().unanswered_message
CAUGHT = AgentOptions().misheard_message.replace("{text}", "what")


@dataclass(frozen=True)
class Row:
    """One fault and what the caller gets (the table of docs/agent.md)."""

    stt: FaultPlan | None = None
    llm: FaultPlan | None = None
    tts: FaultPlan | None = None
    heard: tuple[str, ...] = ()
    llm_requests: int = 1
    idle_within: float = 3.0  # loop seconds from the end of the user's speech
    closed: type[Exception] | None = None  # the session closes with this error
    next_turn: str = ANSWER  # the next turn, the provider's fault plan lifted


TABLE: dict[str, Row] = {
    "control": Row(heard=(ANSWER,), idle_within=2.5),
    # -- STT (Deepgram): every connection of the stream gets the fault
    "stt refuses (HTTP 503)": Row(
        stt=FaultPlan(reject_status=503), heard=(MISSED,), llm_requests=0, idle_within=4.5
    ),
    "stt hangs on connect": Row(
        stt=FaultPlan(hang_connect=True), heard=(MISSED,), llm_requests=0, idle_within=8.0
    ),
    # (the connection opened after the failure keeps its plan: silent again)
    "stt goes silent": Row(
        stt=FaultPlan(silent_after=20),
        heard=(MISSED,),
        llm_requests=0,
        idle_within=8.5,
        next_turn=MISSED,
    ),
    "stt closes mid-stream": Row(
        stt=FaultPlan(close_mid_audio=1011, close_after_chunks=20),
        heard=(CAUGHT,),
        llm_requests=0,
        idle_within=5.0,
    ),
    "stt error mid-stream": Row(
        stt=FaultPlan(error_mid_stream=True, close_after_chunks=20),
        heard=(CAUGHT,),
        llm_requests=0,
        idle_within=5.0,
    ),
    "stt garbage": Row(stt=FaultPlan(malformed_mid_stream=True), heard=(ANSWER,), idle_within=2.5),
    "stt drops at Finalize": Row(
        stt=FaultPlan(drop_before_audio=1), heard=(ANSWER,), idle_within=2.5
    ),
    "stt slow (0.5 s per answer)": Row(
        stt=FaultPlan(first_audio_delay=0.5), heard=(ANSWER,), idle_within=2.5
    ),
    "stt rejects the key (401)": Row(
        stt=FaultPlan(reject_status=401), llm_requests=0, idle_within=0.0, closed=AuthError
    ),
    # -- LLM (OpenAI-compatible): the plugin retries once before its first token
    "llm HTTP 500": Row(
        llm=FaultPlan(reject_status=500), heard=(APOLOGY,), llm_requests=2, idle_within=5.0
    ),
    "llm HTTP 429": Row(
        llm=FaultPlan(reject_status=429), heard=(APOLOGY,), llm_requests=2, idle_within=5.5
    ),
    "llm cut stream": Row(
        llm=FaultPlan(close_mid_audio=1011, close_after_chunks=2), heard=(APOLOGY,), idle_within=4.5
    ),
    "llm error mid-stream": Row(
        llm=FaultPlan(error_mid_stream=True, close_after_chunks=2),
        heard=(APOLOGY,),
        idle_within=4.5,
    ),
    "llm malformed chunk": Row(
        llm=FaultPlan(malformed_mid_stream=True), heard=(APOLOGY,), idle_within=4.5
    ),
    "llm stalls mid-stream": Row(
        llm=FaultPlan(chunk_interval=3600.0), heard=(APOLOGY,), idle_within=14.5
    ),
    "llm hangs (no answer)": Row(
        llm=FaultPlan(hang_connect=True), heard=(APOLOGY,), llm_requests=0, idle_within=19.5
    ),
    "llm slow tokens (0.2 s)": Row(
        llm=FaultPlan(chunk_interval=0.2), heard=(ANSWER,), idle_within=3.5
    ),
    # -- TTS (Deepgram): the offline fallback TTS says the apology
    "tts refuses (HTTP 500)": Row(
        tts=FaultPlan(reject_status=500), heard=(APOLOGY,), idle_within=4.5
    ),
    "tts hangs on connect": Row(
        tts=FaultPlan(hang_connect=True), heard=(APOLOGY,), idle_within=9.5
    ),
    "tts goes silent": Row(tts=FaultPlan(silent_after=0), heard=(APOLOGY,), idle_within=14.5),
    "tts closes mid-stream": Row(
        tts=FaultPlan(close_mid_audio=1011, close_after_chunks=2), heard=(APOLOGY,), idle_within=4.5
    ),
    "tts rejects the key (401)": Row(
        tts=FaultPlan(reject_status=401), idle_within=0.6, closed=AuthError
    ),
}


@pytest.mark.parametrize("name", list(TABLE))
async def test_what_the_caller_hears(name: str) -> None:
    row = TABLE[name]
    async with cloud_call(stt_plan=row.stt, llm_plan=row.llm, tts_plan=row.tts) as c:
        loop = asyncio.get_running_loop()
        if row.closed is not None and row.stt is not None:
            # the recogniser refuses the key at once: the session closes before any turn
            async with asyncio.timeout(5):
                await c.session.wait_for(AgentState.CLOSED)
            took = 0.0
        else:
            end = await c.say()

            def settled() -> bool:
                s = c.session
                return s.state is AgentState.CLOSED or (
                    s.state is AgentState.LISTENING and s._idle.is_set() and bool(c.heard())
                )

            await c.until(settled if row.heard else lambda: c.session.state is AgentState.CLOSED)
            took = loop.time() - end
        assert c.heard() == list(row.heard), name
        assert c.llm_requests == row.llm_requests, name
        assert took <= row.idle_within, (name, took)
        if row.closed is not None:
            assert c.session.state is AgentState.CLOSED
            [fatal] = [e for e in c.of(AgentError) if not e.recoverable]
            assert isinstance(fatal.error, row.closed)
            assert isinstance(c.session.error, row.closed)
        else:
            assert c.session.state is AgentState.LISTENING and c.session.error is None
            assert all(e.recoverable for e in c.of(AgentError))
            # still listening: the next turn is answered once the service is back
            for fake in (c.stt_fake, c.llm_fake, c.tts_fake):
                fake.plan = FaultPlan()
            # (a hanging connection attempt ends at its connect deadline)
            back = STTDeadlines().connect + 5.0 if row.stt is not None else 1.0
            await c.push(AudioFrame.silence(back, RATE))
            before = len(c.heard())
            await c.say()
            await c.until(lambda: len(c.heard()) > before and c.session._idle.is_set())
            assert c.heard()[-1] == row.next_turn, name


@pytest.mark.realtime  # espeak-ng runs on its engine thread: real time
async def test_the_offline_espeak_voice_says_the_apology_when_the_cloud_tts_fails() -> None:
    from antiphon.plugins.espeak import EspeakTTS

    espeak = EspeakTTS()
    try:
        async with cloud_call(tts_plan=FaultPlan(reject_status=500), fallback_tts=espeak) as c:
            await c.say()
            await c.until(lambda: bool(c.heard()) and c.session._idle.is_set(), limit=30)
            assert c.heard() == [APOLOGY]
            [error] = c.of(AgentError)
            assert error.recoverable and isinstance(error.error, ProviderError)
            assert error.error.provider == "deepgram"
            assert c.llm_requests == 1
    finally:
        await espeak.aclose()


async def test_bad_tool_arguments_reach_the_model_which_answers() -> None:
    called: list[str] = []

    @function_tool
    async def weather(city: str) -> str:
        """The weather in a city."""
        called.append(city)
        return "sunny"

    replies = [
        Reply(tool_calls=(ScriptedCall("weather", '{"city": "Par'),)),  # cut JSON
        Reply("I could not look that up."),
    ]
    async with cloud_call(llm_replies=replies, tools=[weather]) as c:
        end = await c.say()
        await c.until(lambda: bool(c.heard()) and c.session._idle.is_set())
        took = asyncio.get_running_loop().time() - end
        assert c.heard() == ["I could not look that up."]
        assert called == []  # the tool never ran on arguments that do not parse
        assert c.llm_requests == 2  # the tool round, then the answer
        assert not c.of(AgentError)
        assert took <= 3.0
