"""Scenario tests of AgentSession on in-process doubles and a virtual clock.

Each test drives a conversation in 20 ms steps (``Conversation``): the user's audio is a
tone the energy VAD hears as speech, the STT recognises each utterance as the next line
of its script, the LLM answers from its script, and the TTS speaks each sentence as a
deterministic tone, so every frame the user hears is known.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import threading
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from antiphon.agent import (
    AgentError,
    AgentOptions,
    AgentReplied,
    AgentSession,
    AgentSpeaking,
    AgentState,
    FalseInterruption,
    Interrupted,
    InterruptionOptions,
    StateChanged,
    ToolCalled,
    TurnCompleted,
    TurnOptions,
    UserTranscribed,
    UserTurnEnded,
)
from antiphon.agent.events import DTMFReceived, MachineDetected, TurnUnanswered
from antiphon.aio.clock import VirtualClock
from antiphon.audio.frame import AudioFrame
from antiphon.errors import (
    AuthError,
    ChannelFull,
    ConfigError,
    InternalError,
    ProviderError,
    ProviderTimeoutError,
    StreamClosedError,
)
from antiphon.protocols.retry import Backoff
from antiphon.services.stt import RecognizeStream
from antiphon.services.tools import function_tool
from antiphon.services.turn import EndOfTurn, EndOfTurnOptions, TurnDetector
from antiphon.services.vad import VADOptions
from antiphon.testing.agent import (
    Conversation,
    EnergyVAD,
    LLMReply,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    ToolCallScript,
    speech,
)
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.synth import tone_duration

#: asyncio only, the doubles in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

LONG = (
    "This is a long answer to your question. It has several sentences to speak aloud. "
    "The user will cut it off somewhere in the middle. And this last part is never heard."
)


@dataclass
class Rig:
    session: AgentSession
    clock: VirtualClock
    stt: ScriptedSTT
    llm: ScriptedLLM
    tts: ToneTTS


@asynccontextmanager
async def rig(
    script: Sequence[str],
    replies: Sequence[LLMReply],
    *,
    options: AgentOptions | None = None,
    stt: ScriptedSTT | None = None,
    tts: ToneTTS | None = None,
    llm: ScriptedLLM | None = None,
    tools: Sequence[object] = (),
    vad: EnergyVAD | None = None,
    turn_log: io.StringIO | None = None,
    clock: VirtualClock | None = None,
) -> AsyncIterator[tuple[Rig, Conversation]]:
    clock = clock or VirtualClock()
    leaks = LeakCheck()
    stt = stt or ScriptedSTT(script)
    llm = llm or ScriptedLLM(replies, clock=clock)
    tts = tts or ToneTTS(clock=clock)
    session = AgentSession(
        vad=vad or EnergyVAD(),
        stt=stt,
        llm=llm,
        tts=tts,
        instructions="Be brief.",
        tools=tools,  # type: ignore[arg-type]
        options=options,
        clock=clock,
        turn_log=turn_log,
    )
    try:
        # On the virtual-time loop this guard fires only when the test hangs (the loop is
        # idle), never because a loaded machine made the CPU-bound turns slow.
        async with asyncio.timeout(40), Conversation(session, clock) as c:
            yield Rig(session, clock, stt, llm, tts), c
    finally:
        await session.aclose()
        for service in (stt, llm, tts):
            await service.aclose()
    await leaks.assert_clean(settle=1.0)


def roles(session: AgentSession) -> list[str]:
    return [m.role for m in session.history.messages]


async def one_turn(c: Conversation, speech: float = 0.8) -> None:
    """The user speaks, the agent answers in full."""
    await c.say(speech)
    await c.until(lambda: c.session.state is AgentState.SPEAKING, limit=3)
    await c.until(lambda: c.session.state is AgentState.LISTENING, limit=20)


def heard_seconds(c: Conversation, generation: int) -> float:
    return sum(h.frame.duration for h in c.heard if h.frame.generation == generation)


# ------------------------------------------------------------------ conversation


async def test_a_conversation_of_three_turns() -> None:
    log = io.StringIO()
    replies = ["Hi! How can I help you today?", "It is noon right now.", "You are welcome."]
    async with rig(["hello there", "what time is it", "thanks"], replies, turn_log=log) as (
        r,
        c,
    ):
        for _ in range(3):
            await one_turn(c)
        turns = [e.metrics for e in c.of(TurnCompleted)]
        assert [t.user_text for t in turns] == ["hello there", "what time is it", "thanks"]
        assert [t.agent_text for t in turns] == replies
        assert roles(r.session) == ["system"] + ["user", "assistant"] * 3
        assert [m.content for m in r.session.history.messages[1:]] == [
            "hello there",
            replies[0],
            "what time is it",
            replies[1],
            "thanks",
            replies[2],
        ]
        # the LLM saw the whole history each time
        assert [len(ctx) for ctx in r.llm.requests] == [2, 4, 6]
        # states follow the conversation, in order
        states = [(e.old, e.new) for e in c.of(StateChanged)]
        one = [
            (AgentState.LISTENING, AgentState.USER_SPEAKING),
            (AgentState.USER_SPEAKING, AgentState.LISTENING),
            (AgentState.LISTENING, AgentState.THINKING),
            (AgentState.THINKING, AgentState.SPEAKING),
            (AgentState.SPEAKING, AgentState.LISTENING),
        ]
        assert states == one * 3
        # every frame of every reply was heard, in order, nothing else
        for gen, text in zip((1, 2, 3), replies, strict=True):
            spoken = [e.text for e in c.of(AgentSpeaking) if e.generation == gen]
            assert " ".join(spoken) == text
            expected = sum(tone_duration(s) for s in spoken)
            assert heard_seconds(c, gen) == pytest.approx(expected, abs=0.021)
        gens = [h.frame.generation for h in c.heard]
        assert gens == sorted(gens)
        # metrics: the silence the VAD needs (0.5 s) is the voice-to-voice latency here,
        # since the doubles answer at once
        for t in turns:
            assert t.voice_to_voice == pytest.approx(0.5, abs=0.045)
            assert t.stt_final_delay is not None and t.llm_ttft is not None
            assert t.tts_ttfa is not None
        lines = [json.loads(line) for line in log.getvalue().splitlines()]
        assert [line["user_text"] for line in lines] == [t.user_text for t in turns]
        assert all(line["voice_to_voice"] > 0 for line in lines)


async def test_first_sentence_plays_while_the_rest_is_generated() -> None:
    clock = VirtualClock()
    llm = ScriptedLLM([LONG], token_delay=0.1, clock=clock)
    async with rig(["question"], [], llm=llm, clock=clock) as (r, c):
        await c.say(0.6)
        await c.until(lambda: r.session.state is AgentState.SPEAKING, limit=5)
        # the LLM is still producing tokens while the first sentence plays
        assert r.llm.active_streams == 1
        assert len(c.of(AgentSpeaking)) == 1
        await c.until(lambda: r.session.state is AgentState.LISTENING, limit=30)
        assert c.of(AgentReplied)[0].text == LONG


async def test_say_greets_and_is_kept_in_history() -> None:
    async with rig([], []) as (r, c):
        r.session.say("Hello! I am your assistant.")
        await c.until(lambda: bool(c.of(AgentReplied)), limit=5)
        assert c.of(AgentReplied)[0].text == "Hello! I am your assistant."
        assert r.session.history.messages[-1].content == "Hello! I am your assistant."
        assert not r.session.turns  # a say() is not a user turn
        assert heard_seconds(c, 1) == pytest.approx(
            tone_duration("Hello! I am your assistant."), abs=0.021
        )


async def test_notify_delivers_the_line_events_of_a_transport() -> None:
    async with rig([], []) as (r, _c):
        got: list[object] = []
        r.session.on_event(got.append)
        r.session.notify(DTMFReceived("5", r.session.generation))
        r.session.notify(MachineDetected("machine_end_beep", r.session.generation))
        assert got == [DTMFReceived("5", 0), MachineDetected("machine_end_beep", 0)]
        with pytest.raises(ConfigError, match="DTMFReceived or MachineDetected"):
            r.session.notify(UserTurnEnded("not from a transport", 0))  # type: ignore[arg-type]
        await r.session.aclose()
        r.session.notify(DTMFReceived("7", 0))  # a line event after close: dropped
        assert not [e for e in got if isinstance(e, DTMFReceived) and e.digit == "7"]


# ------------------------------------------------------------------ barge-in


async def test_barge_in_stops_audio_and_truncates_history() -> None:
    async with rig(["tell me everything", "stop"], [LONG, "Okay."]) as (r, c):
        await c.say(0.8)
        await c.until(lambda: r.session.state is AgentState.SPEAKING, limit=3)
        await c.wait(2.0)
        await c.say(0.7)  # over the agent: an interruption after 0.5 s
        [cut] = c.of(Interrupted)
        assert cut.generation == 1 and cut.dropped > 0
        # no frame of the interrupted turn after the first frame of another
        gens = [h.frame.generation for h in c.heard]
        assert 1 in gens
        last_old = max(i for i, g in enumerate(gens) if g == 1)
        assert all(g == 1 for g in gens[: last_old + 1])
        # what was heard is exactly what the history keeps
        assert heard_seconds(c, 1) == pytest.approx(cut.played, abs=1e-6)
        assert 1.5 < cut.played < 2.2
        assert cut.text and LONG.startswith(cut.text) and cut.text != LONG
        await c.until(lambda: len(c.of(TurnCompleted)) == 2, limit=10)
        assert roles(r.session) == ["system", "user", "assistant", "user", "assistant"]
        assert r.session.history.messages[2].content == cut.text
        assert r.session.history.messages[3].content == "stop"
        first = c.of(TurnCompleted)[0].metrics
        assert first.interrupted and first.agent_text == cut.text
        # the LLM and TTS streams of the interrupted turn were closed
        assert r.llm.active_streams == 0 and r.tts.active_streams == 0
        assert c.heard[-1].frame.generation == 2


async def test_audio_stops_within_one_frame_of_the_interruption() -> None:
    options = AgentOptions(interruption=InterruptionOptions(false_interruption="ignore"))
    async with rig(["go on", "stop"], [LONG, "Okay."], options=options) as (r, c):
        await c.say(0.8)
        await c.until(lambda: r.session.state is AgentState.SPEAKING, limit=3)
        await c.wait(1.0)
        before = len(c.heard)
        await c.say(0.7)
        [cut] = c.of(Interrupted)
        # "ignore": the agent kept talking during the first 0.5 s of user speech, then
        # stopped; nothing of turn 1 was heard after the decision
        old = [h for h in c.heard[before:] if h.frame.generation == 1]
        assert 0.4 <= sum(h.frame.duration for h in old) <= 0.6
        assert heard_seconds(c, 1) == pytest.approx(cut.played, abs=1e-6)
        assert all(h.time <= old[-1].time for h in c.heard if h.frame.generation == 1)


async def test_false_interruption_resumes_and_loses_nothing() -> None:
    reply = "Here is a reply that takes a few seconds to say."
    async with rig(["question"], [reply]) as (r, c):
        await c.say(0.6)
        await c.until(lambda: r.session.state is AgentState.SPEAKING, limit=3)
        await c.wait(0.5)
        await c.say(0.2)  # a cough: shorter than min_duration (0.5 s)
        await c.until(lambda: r.session.state is AgentState.LISTENING, limit=10)
        [false] = c.of(FalseInterruption)
        assert false.resumed
        assert not c.of(Interrupted)
        assert heard_seconds(c, 1) == pytest.approx(tone_duration(reply), abs=0.021)
        assert c.of(AgentReplied)[0].text == reply
        assert r.session.history.messages[-1].content == reply


async def test_min_words_keeps_the_agent_talking_over_noise() -> None:
    options = AgentOptions(interruption=InterruptionOptions(min_duration=0.3, min_words=3))
    stt = ScriptedSTT(["question", "uh"], interim_every=0.2)
    async with rig([], [LONG], stt=stt, options=options) as (r, c):
        await c.say(0.6)
        await c.until(lambda: r.session.state is AgentState.SPEAKING, limit=3)
        await c.say(0.6)  # long enough, but its transcript has one word
        await c.until(lambda: r.session.state is AgentState.LISTENING, limit=30)
        assert not c.of(Interrupted)
        assert c.of(FalseInterruption)
        assert c.of(AgentReplied)[0].text == LONG


@pytest.mark.parametrize(
    ("words", "interrupts"),
    [("uh-huh", False), ("Yeah, okay.", False), ("mm-hmm got it", False),
     ("yeah wait", True), ("no", True)],
)  # fmt: skip
async def test_backchannel_over_the_agent_never_interrupts(words: str, interrupts: bool) -> None:
    stt = ScriptedSTT(["question", words], interim_every=0.1)
    async with rig([], [LONG, "Okay."], stt=stt) as (r, c):
        await c.say(0.6)
        await c.until(lambda: r.session.state is AgentState.SPEAKING, limit=3)
        await c.wait(1.0)
        await c.say(0.8)  # longer than min_duration: only its words decide
        if interrupts:
            assert len(c.of(Interrupted)) == 1
            await c.until(lambda: len(c.of(TurnCompleted)) == 2, limit=20)
            assert r.session.history.messages[3].content == words
            return
        await c.until(lambda: r.session.state is AgentState.LISTENING, limit=30)
        assert not c.of(Interrupted)
        [false] = c.of(FalseInterruption)
        assert false.resumed and false.text == words
        # the agent said all of it; the backchannel is no turn and not in the history
        spoken = sum(tone_duration(s) for s in LONG.replace(". ", ".|").split("|"))
        assert heard_seconds(c, 1) == pytest.approx(spoken, abs=0.021)
        assert [e.text for e in c.of(UserTurnEnded)] == ["question"]
        assert roles(r.session) == ["system", "user", "assistant"]
        assert r.session.history.messages[-1].content == LONG


@pytest.mark.parametrize("backchannel", [True, False])
async def test_speech_without_words_interrupts_only_without_a_backchannel(
    backchannel: bool,
) -> None:
    # the recogniser hears no word of the overlapping speech (a cough, a door)
    interruption = (
        InterruptionOptions() if backchannel else InterruptionOptions(backchannel=frozenset())
    )
    options = AgentOptions(interruption=interruption)
    stt = ScriptedSTT(["question"])
    async with rig([], [LONG], stt=stt, options=options) as (r, c):
        await c.say(0.6)
        await c.until(lambda: r.session.state is AgentState.SPEAKING, limit=3)
        await c.say(0.8)
        if backchannel:
            await c.until(lambda: r.session.state is AgentState.LISTENING, limit=30)
            assert not c.of(Interrupted) and c.of(FalseInterruption)
            assert c.of(AgentReplied)[0].text == LONG
        else:
            [cut] = c.of(Interrupted)
            assert cut.played < tone_duration(LONG)


@pytest.mark.parametrize("talk_at_once", [False, True])
async def test_uninterruptible_say_plays_in_full(talk_at_once: bool) -> None:
    async with rig(["hello"], ["Hi."]) as (r, c):
        r.session.say("Please listen to this notice in full.", allow_interruptions=False)
        if not talk_at_once:  # else the user talks before its first audio
            await c.until(lambda: r.session.state is AgentState.SPEAKING, limit=3)
        await c.say(0.8)
        await c.until(lambda: len(c.of(AgentReplied)) >= 1, limit=10)
        assert not c.of(Interrupted)
        assert heard_seconds(c, 1) == pytest.approx(
            tone_duration("Please listen to this notice in full."), abs=0.021
        )


# ------------------------------------------------------------------ turn-taking


async def test_preemptive_reply_is_kept_when_the_final_agrees() -> None:
    async with rig(["hello there"], ["Hi."]) as (r, c):
        await one_turn(c)
        assert len(r.llm.requests) == 1  # started on the interim, kept
        assert [m.content for m in r.session.history.messages[1:]] == ["hello there", "Hi."]


async def test_preemptive_reply_is_replaced_when_the_final_differs() -> None:
    stt = ScriptedSTT(["what time is it now please"], interim_every=0.2)
    async with rig([], ["First.", "Second."], stt=stt) as (r, c):
        await one_turn(c, speech=0.8)  # the interim has fewer words than the final
        assert len(r.llm.requests) == 2
        early = r.llm.requests[0].messages[-1].content
        assert early != "what time is it now please"
        assert "what time is it now please".startswith(early)
        assert r.llm.requests[1].messages[-1].content == "what time is it now please"
        assert [m.content for m in r.session.history.messages[1:]] == [
            "what time is it now please",
            "Second.",
        ]
        assert not any(g == 1 for g in (h.frame.generation for h in c.heard))


@pytest.mark.parametrize("agrees", [True, False], ids=["final-agrees", "final-differs"])
async def test_a_failed_speculative_reply_is_never_heard(agrees: bool) -> None:
    """The reply started on the interim fails before the final: nothing is said or
    shown until the turn is decided; then one apology (final agrees: the failure is
    reused, one LLM request) or one new request (final differs)."""
    clock = VirtualClock()
    line = "hello there" if agrees else "hello there my friend"
    # the interim of 0.6 s of speech at 0.2 s steps: all of "hello there", or 3 words
    stt = ScriptedSTT([line], interim_every=0.2, final_delay=0.3, clock=clock)
    failure = ProviderError("model overloaded", provider="scripted-llm", stage="stream")
    options = AgentOptions(error_message="Sorry, I had a problem.")
    replies: list[LLMReply] = [failure, "Hi friend."]
    async with rig([], replies, stt=stt, options=options, clock=clock) as (r, c):
        await c.say(0.6)
        await c.until(lambda: len(c.of(UserTurnEnded)) == 1, limit=3)
        # the speculative request failed before the final: nothing of it showed
        kinds = [type(e).__name__ for e in c.events]
        assert kinds.index("UserTurnEnded") < min(
            (kinds.index(k) for k in ("AgentError", "AgentReplied") if k in kinds),
            default=len(kinds),
        )
        await c.until(lambda: bool(c.of(AgentReplied)), limit=10)
        await c.until(lambda: r.session.state is AgentState.LISTENING, limit=10)
        heard = [e.text for e in c.of(AgentReplied) if e.text]
        if agrees:
            assert len(r.llm.requests) == 1  # the failure was reused
            assert heard == ["Sorry, I had a problem."]
            assert len(c.of(AgentError)) == 1
        else:
            assert len(r.llm.requests) == 2  # the committed turn asked once
            assert r.llm.requests[1].messages[-1].content == line
            assert heard == ["Hi friend."]
            assert not c.of(AgentError)


async def test_user_going_on_cancels_the_reply_and_joins_the_turn() -> None:
    clock = VirtualClock()
    llm = ScriptedLLM(["Too early.", "Now I answer."], token_delay=0.3, clock=clock)
    options = AgentOptions(turn=TurnOptions(preemptive=False))
    async with rig(["first part", "second part"], [], llm=llm, options=options, clock=clock) as (
        r,
        c,
    ):
        await c.say(0.6)
        await c.until(lambda: r.session.state is AgentState.THINKING, limit=3)
        await c.say(0.6)  # before the agent said anything
        await c.until(lambda: len(c.of(AgentReplied)) == 1, limit=20)
        assert [e.text for e in c.of(UserTurnEnded)] == ["first part", "first part second part"]
        assert [m.content for m in r.session.history.messages[1:]] == [
            "first part second part",
            "Now I answer.",
        ]
        assert c.of(AgentReplied)[0].text == "Now I answer."


@pytest.mark.parametrize(
    ("thinking", "line", "seconds", "drops"),
    [
        (InterruptionOptions(min_duration_thinking=0.6), "second part", 0.3, False),
        (InterruptionOptions(min_duration_thinking=0.6), "second part", 0.9, True),
        (InterruptionOptions(min_words_thinking=2), "yes", 0.9, False),
        (InterruptionOptions(min_words_thinking=2), "second part", 0.9, True),
    ],
)
async def test_speech_while_thinking_drops_the_reply_only_past_its_thresholds(
    thinking: InterruptionOptions, line: str, seconds: float, drops: bool
) -> None:
    clock = VirtualClock()
    # the first audio is ready within 0.4 s: it comes while the user speaks
    llm = ScriptedLLM(["Too early.", "Now I answer."], token_delay=0.2, clock=clock)
    options = AgentOptions(turn=TurnOptions(preemptive=False), interruption=thinking)
    stt = ScriptedSTT(["first part", line], interim_every=0.1)
    async with rig([], [], stt=stt, llm=llm, options=options, clock=clock) as (r, c):
        await c.say(0.6)
        await c.until(lambda: r.session.state is AgentState.THINKING, limit=3)
        await c.say(seconds)  # before the agent said anything
        spoke_until = clock.now()
        assert not c.heard
        await c.until(lambda: len(c.of(AgentReplied)) == 1, limit=20)
        [replied] = c.of(AgentReplied)
        if drops:
            turns = ["first part", f"first part {line}"]
            assert [e.text for e in c.of(UserTurnEnded)] == turns
            assert replied.text == "Now I answer."
            assert r.session.history.messages[1].content == turns[1]
            return
        # the reply went on: the speech joined no turn, and its audio waited for the user
        assert [e.text for e in c.of(UserTurnEnded)] == ["first part"]
        assert replied.text == "Too early." and not replied.interrupted
        assert [m.role for m in r.session.history.messages] == ["system", "user", "assistant"]
        # (ready 0.4 s after the turn ended, it played only once the VAD heard the end)
        speech_end = spoke_until + r.session.vad.options.min_silence_duration
        assert min(h.time for h in c.heard if h.frame.generation == 1) >= speech_end - 0.021
        [false] = c.of(FalseInterruption)
        assert false.text == line


async def test_a_reply_failing_while_the_user_holds_it_still_says_the_error_line() -> None:
    clock = VirtualClock()
    # fails after its first word, while the user's "yes" holds the reply (thinking)
    llm = ScriptedLLM(["Never said at all."], token_delay=0.2, fail_after_tokens=1, clock=clock)
    options = AgentOptions(
        turn=TurnOptions(preemptive=False),
        interruption=InterruptionOptions(min_words_thinking=2),
        error_message="Sorry, I had a problem.",
    )
    stt = ScriptedSTT(["first part", "yes"], interim_every=0.1)
    async with rig([], [], stt=stt, llm=llm, options=options, clock=clock) as (r, c):
        await c.say(0.6)
        await c.until(lambda: r.session.state is AgentState.THINKING, limit=3)
        await c.say(0.9)
        assert c.of(AgentError)  # it failed while the user spoke
        await c.until(lambda: len(c.of(AgentReplied)) == 2, limit=20)
        assert c.of(AgentReplied)[1].text == "Sorry, I had a problem."
        line = c.of(AgentReplied)[1].generation
        assert heard_seconds(c, line) == pytest.approx(
            tone_duration("Sorry, I had a problem."), abs=0.021
        )


async def test_dropped_final_ends_the_turn_at_the_final_timeout() -> None:
    stt = ScriptedSTT(["what is the weather like"], silent_flushes=[0], interim_every=0.2)
    options = AgentOptions(turn=TurnOptions(final_timeout=0.4, preemptive=False))
    async with rig([], ["Sunny."], stt=stt, options=options) as (r, c):
        await c.say(0.9)
        await c.until(lambda: bool(c.of(UserTurnEnded)), limit=3)
        [turn] = c.of(UserTurnEnded)
        assert "what is the weather like".startswith(turn.text) and turn.text
        await c.until(lambda: r.session.state is AgentState.LISTENING and bool(c.of(AgentReplied)))
        m = c.of(TurnCompleted)[0].metrics
        # VAD silence (0.5 s) + the final timeout (0.4 s)
        assert m.end_of_turn_delay == pytest.approx(0.9, abs=0.045)
        assert m.stt_final_delay is None


async def test_silence_and_noise_without_words_start_no_turn() -> None:
    stt = ScriptedSTT([], interim_every=0.2)  # recognises nothing
    async with rig([], ["Should not be said."], stt=stt) as (r, c):
        await c.say(0.4)
        await c.wait(2.0)
        assert not c.of(UserTurnEnded) and r.llm.requests == []
        assert r.session.state is AgentState.LISTENING


# ------------------------------------------------------------------ tools


async def test_tool_call_with_filler_while_it_runs() -> None:
    release = asyncio.Event()
    calls: list[str] = []

    @function_tool
    async def get_weather(city: str) -> str:
        """Current weather of a city.

        Args:
            city: the city name
        """
        calls.append(city)
        await release.wait()
        return f"sunny in {city}"

    replies: list[LLMReply] = [
        [ToolCallScript("get_weather", {"city": "Paris"})],
        lambda ctx: f"It is {ctx.messages[-1].content}.",
    ]
    options = AgentOptions(filler_delay=0.5, filler_text="Let me check.")
    async with rig(["weather in paris"], replies, tools=[get_weather], options=options) as (
        r,
        c,
    ):
        await c.say(0.8)
        await c.until(lambda: bool(calls), limit=3)
        await c.until(lambda: r.session.state is AgentState.SPEAKING, limit=3)
        assert [e.text for e in c.of(AgentSpeaking)] == ["Let me check."]
        await c.wait(1.0)
        release.set()
        await c.until(lambda: bool(c.of(AgentReplied)), limit=10)
        assert calls == ["Paris"]
        [called] = c.of(ToolCalled)
        assert called.output == "sunny in Paris" and called.error is None
        assert c.of(AgentReplied)[0].text == "Let me check. It is sunny in Paris."
        assert roles(r.session) == ["system", "user", "assistant", "tool", "assistant"]
        assert r.session.history.messages[2].tool_calls[0].name == "get_weather"
        assert r.session.history.messages[3].content == "sunny in Paris"
        assert c.of(TurnCompleted)[0].metrics.tool_calls == ["get_weather"]


async def test_independent_tools_run_concurrently_and_failures_reach_the_model() -> None:
    started: list[str] = []
    both = asyncio.Event()

    @function_tool
    async def lookup(key: str) -> str:
        """Look a key up."""
        started.append(key)
        if len(started) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 5)  # deadlocks unless run concurrently
        if key == "bad":
            raise ValueError("no such key")
        return key.upper()

    replies: list[LLMReply] = [
        [ToolCallScript("lookup", {"key": "good"}), ToolCallScript("lookup", {"key": "bad"})],
        "Done.",
    ]
    async with rig(["look up"], replies, tools=[lookup]) as (r, c):
        await one_turn(c)
        outputs = [m.content for m in r.session.history.messages if m.role == "tool"]
        assert outputs[0] == "GOOD"
        assert "no such key" in outputs[1]
        assert [e.error is None for e in c.of(ToolCalled)] == [True, False]


# ------------------------------------------------------------------ failures


async def test_llm_failure_mid_turn_is_said_and_the_next_turn_works() -> None:
    replies: list[LLMReply] = [
        ProviderError("model overloaded", provider="scripted-llm", stage="stream"),
        "Back again.",
    ]
    options = AgentOptions(error_message="Sorry, I had a problem.")
    async with rig(["one", "two"], replies, options=options) as (r, c):
        await c.say(0.6)
        await c.until(lambda: len(c.of(AgentReplied)) == 2, limit=10)
        [err] = c.of(AgentError)
        assert err.recoverable and isinstance(err.error, ProviderError)
        assert err.error.provider == "scripted-llm"
        assert c.of(AgentReplied)[1].text == "Sorry, I had a problem."
        assert c.of(TurnCompleted)[0].metrics.error
        await c.until(lambda: r.session.state is AgentState.LISTENING)
        await one_turn(c)
        assert c.of(AgentReplied)[-1].text == "Back again."
        assert r.session.history.messages[-1].content == "Back again."


async def test_tts_failure_mid_sentence_recovers() -> None:
    clock = VirtualClock()
    tts = ToneTTS(fail_on="broken", clock=clock)
    async with rig(
        ["one", "two"], ["This sentence is broken today.", "Fine now."], tts=tts, clock=clock
    ) as (
        r,
        c,
    ):
        await c.say(0.6)
        await c.until(lambda: bool(c.of(AgentError)), limit=5)
        await c.until(lambda: r.session.state is AgentState.LISTENING, limit=5)
        error = c.of(AgentError)[0].error
        assert isinstance(error, ProviderError) and error.provider == "tone-tts"
        await one_turn(c)
        assert c.of(AgentReplied)[-1].text == "Fine now."


async def test_stt_failure_opens_a_new_stream() -> None:
    stt = ScriptedSTT(["lost", "hello again"], fail_streams={0: 0.3})
    async with rig([], ["Hi."], stt=stt) as (r, c):
        await c.say(0.6)  # the first stream fails mid-utterance
        await c.until(lambda: bool(c.of(AgentError)), limit=3)
        assert c.of(AgentError)[0].recoverable and stt.streams_opened == 2
        await c.wait(1.0)
        stt.script = ["hello again"]
        await one_turn(c)
        assert r.session.history.messages[-2].content == "hello again"


@pytest.mark.parametrize("policy", ["confirm", "reask", "answer"])
async def test_a_fragment_after_an_stt_failure_follows_the_misheard_policy(policy: str) -> None:
    # the stream fails 0.3 s into the utterance, after the interim "what"
    stt = ScriptedSTT(["what can you do", "do"], interim_every=0.2, fail_streams={0: 0.3})
    options = AgentOptions(misheard=policy)  # type: ignore[arg-type]
    async with rig([], ["Answered."], stt=stt, options=options) as (r, c):
        await c.say(0.8)
        await c.until(lambda: bool(c.of(AgentReplied)), limit=5)
        await c.until(lambda: r.session.state is AgentState.LISTENING, limit=10)
        assert [e.recoverable for e in c.of(AgentError)] == [True]
        said = [e.text for e in c.of(AgentReplied)]
        history = [m.content for m in r.session.history.messages[1:]]
        if policy == "answer":
            assert said == ["Answered."] and len(r.llm.requests) == 1
            assert not c.of(TurnUnanswered)
            return
        [unanswered] = c.of(TurnUnanswered)
        assert said == [unanswered.fallback] and not r.llm.requests
        if policy == "confirm":
            fragment = history[0]
            assert fragment.startswith("what")
            assert said == [options.misheard_message.replace("{text}", fragment)]
            assert history == [fragment, said[0]]
        else:
            assert said == [options.unanswered_message] and history == []


async def test_a_refused_stt_is_retried_with_backoff_and_the_session_listens_on() -> None:
    stt = ScriptedSTT(["x"], fail_streams={i: 0.0 for i in range(100)})
    backoff = Backoff(base=0.25, factor=2.0, cap=4.0, jitter=0.0)
    async with rig([], [], stt=stt, options=AgentOptions(stt_backoff=backoff)) as (r, c):
        await c.wait(3.0)
        # opened at 0, then after 0.25, 0.5, 1.0 (and 2.0: at 3.75 s, not yet)
        assert stt.streams_opened == 4
        assert r.session.state is AgentState.LISTENING
        assert all(e.recoverable for e in c.of(AgentError))


async def test_an_auth_error_of_the_stt_closes_the_session_with_it() -> None:
    class Refused(RecognizeStream):
        async def _run(self) -> None:
            raise AuthError("bad key", provider="scripted-stt", stage="connect")

    class RefusingSTT(ScriptedSTT):
        def _new_stream(self, generation: int) -> RecognizeStream:
            self.streams_opened += 1
            return Refused(
                provider=self.provider, generation=generation, owner=self._tasks, close_timeout=1
            )

    stt = RefusingSTT(["x"])
    async with rig([], [], stt=stt) as (r, c):
        await c.settle()
        assert stt.streams_opened == 1
        assert r.session.state is AgentState.CLOSED
        [error] = c.of(AgentError)
        assert not error.recoverable and isinstance(error.error, AuthError)
        assert isinstance(r.session.error, AuthError)


async def test_stt_failing_for_good_closes_the_session_with_the_error() -> None:
    stt = ScriptedSTT(["x"], fail_streams={i: 0.1 for i in range(10)})
    options = AgentOptions(max_stt_restarts=2)
    async with rig([], [], stt=stt, options=options) as (r, c):
        with pytest.raises(StreamClosedError, match="injected STT failure"):
            for _ in range(100):
                await c.say(0.2)
        assert r.session.state is AgentState.CLOSED
        assert r.session.error is not None
        assert [e.recoverable for e in c.of(AgentError)] == [True, True, False]


# ------------------------------------------------------------------ lifecycle


@pytest.mark.timeout(240)  # 200 turns under tracemalloc: CPU-bound, stretched by load
async def test_many_turns_leave_no_growth() -> None:
    clock = VirtualClock()
    vad = EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=0.2, padding=0.0))
    stt = ScriptedSTT([f"turn {i}" for i in range(200)])
    async with rig(
        [], [], vad=vad, stt=stt, llm=ScriptedLLM(default="Ok.", clock=clock), clock=clock
    ) as (
        r,
        c,
    ):
        tasks = 0
        for i in range(200):
            await c.say(0.2)
            await c.until(lambda: bool(c.of(TurnCompleted)), limit=5)
            await c.until(lambda: r.session.state is AgentState.LISTENING, limit=5)
            c.heard.clear()  # the test's own recordings are not the session's growth
            c.events.clear()
            r.llm.requests.clear()
            if i == 49:
                gc.collect()
                tasks = len(asyncio.all_tasks())
                tracemalloc.start()
                snap = tracemalloc.take_snapshot()
        gc.collect()
        grown = tracemalloc.take_snapshot().compare_to(snap, "filename")
        tracemalloc.stop()
        assert len(asyncio.all_tasks()) <= tasks
        agent_growth = sum(
            s.size_diff for s in grown if "antiphon" in str(s.traceback) and s.size_diff > 0
        )
        # the history grows by two short messages a turn; nothing else may
        history = sum(len(m.content) for m in r.session.history.messages)
        assert agent_growth < 150_000 + 8 * history
        assert len(r.session.history) == 1 + 2 * 200


async def test_close_mid_reply_is_clean_and_idempotent() -> None:
    async with rig(["talk"], [LONG]) as (r, c):
        await c.say(0.6)
        await c.until(lambda: r.session.state is AgentState.SPEAKING, limit=3)
        await asyncio.gather(r.session.aclose(), r.session.aclose())
        assert r.session.state is AgentState.CLOSED
        assert r.tts.active_streams == 0 and r.llm.active_streams == 0
        with pytest.raises(StreamClosedError):
            r.session.say("more")


async def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigError, match="stt"):
        AgentSession(vad=EnergyVAD(), stt="deepgram", llm=ScriptedLLM(), tts=ToneTTS())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="min_words"):
        InterruptionOptions(min_words=-1)
    with pytest.raises(ConfigError, match="final_timeout"):
        TurnOptions(final_timeout=0)
    with pytest.raises(ConfigError, match="min_words_thinking"):
        InterruptionOptions(min_words_thinking=-1)
    with pytest.raises(ConfigError, match="min_duration_thinking"):
        InterruptionOptions(min_duration_thinking=-0.1)
    with pytest.raises(ConfigError, match="backchannel"):
        InterruptionOptions(backchannel={"yeah"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="false_interruption"):
        InterruptionOptions(false_interruption="pause")  # type: ignore[arg-type]


async def test_turns_are_counted_in_prometheus() -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        sample("antiphon_agent_turns_total", outcome="completed"),
        sample("antiphon_agent_turns_total", outcome="interrupted"),
        sample("antiphon_agent_voice_to_voice_seconds_count"),
        sample("antiphon_agent_interruptions_total"),
    )
    async with rig(["one", "two", "three"], ["Fine.", LONG, "Ok."]) as (r, c):
        await one_turn(c)
        await c.say(0.6)
        await c.until(lambda: r.session.state is AgentState.SPEAKING, limit=3)
        await c.wait(0.5)
        await c.say(0.7)
        await c.until(lambda: len(c.of(TurnCompleted)) == 3, limit=10)
    after = (
        sample("antiphon_agent_turns_total", outcome="completed"),
        sample("antiphon_agent_turns_total", outcome="interrupted"),
        sample("antiphon_agent_voice_to_voice_seconds_count"),
        sample("antiphon_agent_interruptions_total"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 3, 1]


# ------------------------------------------------------------------ failure and close


class _BrokenLog(io.StringIO):
    """A turn log whose write raises a bug (not an OSError): the controller crashes."""

    def write(self, s: str) -> int:
        raise RuntimeError("turn log exploded")


async def test_a_controller_crash_fails_the_session_at_once() -> None:
    async with rig(["hello"], ["Hi there."], turn_log=_BrokenLog()) as (r, c):
        events = r.session.events()
        await c.say(0.6)
        await c.until(lambda: r.session.state is AgentState.CLOSED, limit=10)
        # terminal, typed, with the original as the cause
        err = r.session.error
        assert isinstance(err, InternalError) and err.task == "controller"
        assert isinstance(err.__cause__, RuntimeError) and "exploded" in str(err)
        fatal = c.of(AgentError)[-1]
        assert fatal.error is err and not fatal.recoverable and fatal.stage == "controller"
        closed = c.of(StateChanged)[-1]
        assert closed.new is AgentState.CLOSED and "controller failed" in closed.reason
        # events() ends: the error event, then CLOSED, then nothing
        seen = [e async for e in events]
        assert seen[-2:] == [fatal, closed]
        # waiting for the session raises its error instead of hanging
        with pytest.raises(InternalError):
            await asyncio.wait_for(r.session.wait_idle(), 1)
        with pytest.raises(InternalError):
            await asyncio.wait_for(r.session.wait_for(AgentState.SPEAKING), 1)
        assert await r.session.wait_for(AgentState.CLOSED) is AgentState.CLOSED
        with pytest.raises(StreamClosedError, match="exploded"):
            r.session.push_audio(speech(0.02))
        await r.session.aclose()  # closing a failed session does not raise
        assert r.session.output.closed


async def test_a_failing_tool_or_listener_does_not_fail_the_session() -> None:
    @function_tool
    def broken() -> str:
        """Raises (on a worker thread)."""
        raise KeyError("nope")

    replies: list[LLMReply] = [[ToolCallScript("broken")], "Recovered."]
    async with rig(["go"], replies, tools=[broken]) as (r, c):

        def bad_listener(event: object) -> None:
            raise RuntimeError("listener bug")

        r.session.on_event(bad_listener)
        await one_turn(c)
        [called] = c.of(ToolCalled)
        assert called.error is not None and "nope" in called.output
        assert c.of(AgentReplied)[-1].text == "Recovered."
        assert r.session.error is None and r.session.state is AgentState.LISTENING


async def test_a_blocking_sync_tool_does_not_stall_the_conversation() -> None:
    release = threading.Event()
    inside = threading.Event()

    @function_tool
    def slow_lookup() -> str:
        """Blocks its thread until released."""
        inside.set()
        release.wait(10)
        return "found"

    replies: list[LLMReply] = [[ToolCallScript("slow_lookup")], "Here it is."]
    options = AgentOptions(filler_delay=0.3, filler_text="One moment.")
    async with rig(["look"], replies, tools=[slow_lookup], options=options) as (_, c):
        try:
            await c.say(0.6)
            await c.until(inside.is_set, limit=3)
            # the loop runs on while the tool blocks its thread: the filler is spoken
            await c.until(lambda: bool(c.of(AgentSpeaking)), limit=3)
            assert [e.text for e in c.of(AgentSpeaking)] == ["One moment."]
            assert not release.is_set()
        finally:
            release.set()
        await c.until(lambda: bool(c.of(AgentReplied)), limit=10)
        assert c.of(AgentReplied)[0].text == "One moment. Here it is."


async def test_aclose_cancelled_mid_way_still_closes_and_reraises() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @function_tool
    async def stubborn() -> str:
        """Takes its time to stop when cancelled."""
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()
            raise
        return ""

    async with rig(["go"], [[ToolCallScript("stubborn")]], tools=[stubborn]) as (r, c):
        await c.say(0.6)
        await c.until(started.is_set, limit=3)
        events = r.session.events()
        closing = asyncio.create_task(r.session.aclose())
        await c.settle()
        assert not closing.done()  # waiting for the stubborn reply task
        # CLOSED and the end of events() happen at once, before the tasks are done
        assert r.session.state is AgentState.CLOSED
        seen = [e async for e in events]
        assert isinstance(seen[-1], StateChanged) and seen[-1].new is AgentState.CLOSED
        closing.cancel()
        await c.settle()
        assert not closing.done()  # the close goes on despite the cancellation
        second = asyncio.create_task(r.session.aclose())
        await c.settle()
        assert not second.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await closing  # finished the close, then re-raised the cancellation
        await second
        assert r.session.output.closed and r.session.error is None


async def test_events_sees_what_is_emitted_right_after_the_call() -> None:
    async with rig([], []) as (r, c):
        events = r.session.events()
        assert c.events == []
        await r.session.aclose()  # emits StateChanged(..., CLOSED) synchronously
        seen = [e async for e in events]
        assert [(e.old, e.new) for e in seen if isinstance(e, StateChanged)] == [
            (AgentState.LISTENING, AgentState.CLOSED)
        ]
        assert [e async for e in r.session.events()] == []  # closed: ends at once


async def test_a_slow_events_subscriber_is_disconnected_with_a_typed_error() -> None:
    async with rig(["one"], ["Fine."]) as (r, c):
        r.session._hub.max_queued = 4  # a small bound for the test
        slow = r.session.events()
        await one_turn(c)  # far more than 4 events, and nobody reads `slow`
        got = []
        with pytest.raises(ChannelFull, match="fell 4 events behind"):
            async for e in slow:
                got.append(e)
        assert len(got) == 4  # it got what was queued, then the error
        assert len(c.events) > 4  # the prompt reader was not affected


async def test_a_late_final_after_an_empty_timeout_is_answered() -> None:
    clock = VirtualClock()
    stt = ScriptedSTT(["what time is it"], interim_every=100.0, final_delay=1.6, clock=clock)
    async with rig([], ["It is noon."], stt=stt, clock=clock) as (r, c):
        await c.say(0.8)
        await c.until(lambda: stt.flushes == 1, limit=2)  # the user stopped: flushed
        flushed = clock.now()
        # no final within final_timeout (1 s): the turn ended empty...
        await c.wait(1.3)
        assert clock.now() - flushed > r.session.options.turn.final_timeout
        assert not c.of(UserTranscribed) and not c.of(UserTurnEnded)
        assert r.session.state is AgentState.LISTENING
        # ...and the final, 0.6 s later, is the turn's text: the agent answers it
        await c.until(lambda: bool(c.of(AgentReplied)), limit=10)
        assert [e.text for e in c.of(UserTurnEnded)] == ["what time is it"]
        assert c.of(AgentReplied)[0].text == "It is noon."
        assert roles(r.session) == ["system", "user", "assistant"]


# ------------------------------------------------------------------ semantic end of turn


class ScriptedDetector(TurnDetector):
    """A turn model double: answers its ``probabilities`` in order after ``delay``
    seconds of the session's clock (no answer within the timeout: a slow model)."""

    provider = "scripted-turn"

    def __init__(self, probabilities: Sequence[float], clock: VirtualClock, delay: float = 0.0):
        self.probabilities = list(probabilities)
        self.clock = clock
        self.delay = delay
        self.asked: list[float] = []  # seconds of audio of each question

    async def predict(self, audio: AudioFrame, *, timeout: float) -> float:
        self.asked.append(audio.duration)
        if self.delay > timeout:
            await self.clock.sleep(timeout)
            raise ProviderTimeoutError(
                "slow", provider=self.provider, stage="predict", timeout=timeout
            )
        await self.clock.sleep(self.delay)
        return self.probabilities.pop(0)

    async def aclose(self) -> None:
        pass


PROBE = 0.2  # the VAD's silence window with a model: the short probe
EOT = EndOfTurnOptions(threshold=0.5, max_silence=2.0, fallback_silence=0.6, model_timeout=0.3)


def eot_options(detector: ScriptedDetector) -> AgentOptions:
    hook = EndOfTurn(detector, EOT, clock=detector.clock)
    return AgentOptions(turn=TurnOptions(preemptive=False, end_of_turn=hook))


def probe_vad() -> EnergyVAD:
    return EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=PROBE, padding=0))


async def test_a_complete_verdict_ends_the_turn_at_the_probe() -> None:
    clock = VirtualClock()
    detector = ScriptedDetector([0.9], clock)
    async with rig(
        ["what can you do"],
        ["Many things."],
        options=eot_options(detector),
        vad=probe_vad(),
        clock=clock,
    ) as (r, c):
        await c.say(0.8)
        await c.until(lambda: bool(c.of(AgentReplied)), limit=10)
        [turn] = r.session.turns
        assert detector.asked and detector.asked[0] >= 0.8  # it heard the utterance
        assert turn.end_of_turn_delay is not None
        # the probe and the loop's 20 ms steps; not the fallback silence
        assert turn.end_of_turn_delay < PROBE + 0.1 < EOT.fallback_silence


async def test_an_incomplete_verdict_holds_and_speech_resumes_without_a_cut_in() -> None:
    clock = VirtualClock()
    detector = ScriptedDetector([0.1, 0.9], clock)
    async with rig(
        ["I would like to book a table"],
        ["For how many?"],
        options=eot_options(detector),
        vad=probe_vad(),
        clock=clock,
    ) as (r, c):
        await c.say(0.6)
        # a pause longer than the probe and the fallback silence, shorter than max_silence
        await c.wait(PROBE + EOT.fallback_silence + 0.2)
        assert not c.of(UserTurnEnded) and r.session.state is AgentState.LISTENING
        assert r.stt.flushes == 0  # the turn is not over: nothing was finalised
        await c.say(0.6)
        await c.until(lambda: bool(c.of(AgentReplied)), limit=10)
        assert [e.text for e in c.of(UserTurnEnded)] == ["I would like to book a table"]
        assert len(detector.asked) == 2 and len(r.llm.requests) == 1


async def test_a_slow_model_leaves_the_decision_to_the_fallback_silence() -> None:
    clock = VirtualClock()
    detector = ScriptedDetector([0.9], clock, delay=5.0)
    async with rig(
        ["what can you do"],
        ["Many things."],
        options=eot_options(detector),
        vad=probe_vad(),
        clock=clock,
    ) as (r, c):
        await c.say(0.8)
        await c.until(lambda: bool(c.of(AgentReplied)), limit=10)
        [turn] = r.session.turns
        assert turn.end_of_turn_delay is not None
        assert EOT.fallback_silence - 0.021 < turn.end_of_turn_delay < EOT.fallback_silence + 0.1


# ------------------------------------------------------------------ typed turns


async def test_a_typed_turn_interrupts_the_agent_and_is_answered() -> None:
    async with rig(["tell me a story"], [LONG, "Sure, the weather."]) as (r, c):
        await c.say(0.8)
        await c.until(lambda: r.session.state is AgentState.SPEAKING, limit=5)
        r.session.send_text("what about the weather")
        await c.until(lambda: len(c.of(AgentReplied)) == 2, limit=20)
        assert len(c.of(Interrupted)) == 1
        assert [e.text for e in c.of(UserTurnEnded)] == [
            "tell me a story",
            "what about the weather",
        ]
        assert c.of(AgentReplied)[1].text == "Sure, the weather."
        assert r.stt.flushes == 1  # the typed turn never went through the recogniser
        assert r.session.history.messages[-2].content == "what about the weather"
        with pytest.raises(ConfigError):
            r.session.send_text("  ")
