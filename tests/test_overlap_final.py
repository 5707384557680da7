"""Speech over the agent decided by its final, for STTs that give words only once flushed.

Whisper (the offline default) and the batch STTs give no words while the user speaks:
speech over the agent then had no words when it ended and was dropped as a false
interruption, so a question asked over the greeting was never answered. Now speech over
the agent that lasted long enough to interrupt but has too few words when it ends
flushes the STT and waits (``final_timeout``) for the final, which decides: words are an
interruption and a turn, backchannel or nothing resumes the reply.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antiphon.agent import AgentState, Interrupted, UserTurnEnded
from antiphon.agent.events import AgentResumed, FalseInterruption
from antiphon.agent.machine import TurnMachine
from antiphon.agent.options import AgentOptions, InterruptionOptions, TurnOptions
from antiphon.agent.turn_events import (
    Action,
    ArmTimer,
    CommitReply,
    Emit,
    FlushStt,
    InterruptReply,
    ReplyAudio,
    ReplyDone,
    ResumeOutput,
    SayRequested,
    SpeechEnded,
    SpeechLasted,
    SpeechStarted,
    StartReply,
    SttFailed,
    TextTyped,
    TimerFired,
    Transcribed,
    TurnEnded,
)
from antiphon.agent.turns import AgentPhase, Outcome, Overlap, UserPhase
from antiphon.testing.agent import ScriptedSTT
from antiphon.testing.synth import tone_duration
from test_agent_session import LONG, heard_seconds, rig
from test_turn_machine import OPTIONS, STEPS, Step, World, check_ends, run

FINAL_TIMEOUT = 0.8


def _speaking(options: AgentOptions | None = None) -> tuple[TurnMachine, int]:
    """A machine whose greeting (an interruptible say()) is playing."""
    m = TurnMachine(options or AgentOptions(turn=TurnOptions(final_timeout=FINAL_TIMEOUT)))
    start = next(a for a in m.feed(SayRequested("Hello!")) if isinstance(a, StartReply))
    m.feed(ReplyAudio(start.generation))
    assert m.agent is AgentPhase.SPEAKING
    return m, start.generation


def _over(m: TurnMachine, seconds: float, end: float) -> list[Action]:
    """Speech over the agent with no words while spoken, ``seconds`` long."""
    m.feed(SpeechStarted())
    m.feed(SpeechLasted(seconds))
    assert m.overlap is Overlap.SPEECH
    return m.feed(SpeechEnded(end))


def _events(actions: list[Action], kind: type) -> list[object]:
    return [a.event for a in actions if isinstance(a, Emit) and isinstance(a.event, kind)]


def test_a_question_over_the_agent_with_no_words_yet_waits_for_its_final() -> None:
    m, greeting = _speaking()
    actions = _over(m, 1.2, 3.0)
    assert FlushStt() in actions
    arm = next(a for a in actions if isinstance(a, ArmTimer))
    assert (arm.kind, arm.seconds) == ("final", FINAL_TIMEOUT)
    assert not _events(actions, FalseInterruption)
    assert m.user is UserPhase.AWAITING_FINAL and m.overlap is Overlap.SPEECH
    # the final has words: the greeting is interrupted and the question answered
    actions = m.feed(Transcribed("what time is it", True, 3.4, flushed=True))
    assert InterruptReply(greeting) in actions
    start = next(a for a in actions if isinstance(a, StartReply))
    assert start.user_text == "what time is it"
    assert TurnEnded(1, Outcome.ANSWERED, "what time is it", start.generation) in actions
    commit = next(a for a in actions if isinstance(a, CommitReply))
    assert commit.final_delay is not None and abs(commit.final_delay - 0.4) < 1e-9
    assert (m.overlap, m.user) == (Overlap.NONE, UserPhase.QUIET)


def test_a_backchannel_final_resumes_the_reply() -> None:
    m, greeting = _speaking()
    _over(m, 0.9, 2.0)
    actions = m.feed(Transcribed("uh-huh", True, 2.3, flushed=True))
    assert ResumeOutput() in actions
    assert _events(actions, AgentResumed) == [AgentResumed(greeting)]
    (false,) = _events(actions, FalseInterruption)
    assert isinstance(false, FalseInterruption) and false.text == "uh-huh"
    assert not any(isinstance(a, InterruptReply) for a in actions)
    assert TurnEnded(1, Outcome.IGNORED, "uh-huh") in actions
    assert m.agent is AgentPhase.SPEAKING and m.reply is not None
    assert m.user is UserPhase.QUIET and m.overlap is Overlap.NONE


def test_an_empty_answer_to_the_flush_resumes_the_reply() -> None:
    m, _ = _speaking()
    _over(m, 0.9, 2.0)
    actions = m.feed(Transcribed("", True, 2.3, flushed=True))
    assert ResumeOutput() in actions
    assert TurnEnded(1, Outcome.IGNORED) in actions
    assert m.agent is AgentPhase.SPEAKING and m.user is UserPhase.QUIET


def test_no_final_within_the_timeout_resumes_the_reply() -> None:
    m, _ = _speaking()
    arm = next(a for a in _over(m, 0.9, 2.0) if isinstance(a, ArmTimer))
    actions = m.feed(TimerFired("final", arm.token, 2.0 + FINAL_TIMEOUT))
    assert ResumeOutput() in actions
    assert _events(actions, FalseInterruption)
    assert m.agent is AgentPhase.SPEAKING and m.user is UserPhase.QUIET
    # a final that comes later starts no turn over the agent
    late = m.feed(Transcribed("what time is it", True, 3.5))
    assert not any(isinstance(a, InterruptReply | StartReply) for a in late)


def test_a_recogniser_behind_is_waited_for_within_its_deadline() -> None:
    m, greeting = _speaking()
    m.stt_final_deadline = 3.0
    arm = next(a for a in _over(m, 0.9, 2.0) if isinstance(a, ArmTimer))
    again = m.feed(TimerFired("final", arm.token, 2.0 + FINAL_TIMEOUT, behind=True))
    assert not _events(again, FalseInterruption)
    assert m.user is UserPhase.AWAITING_FINAL
    actions = m.feed(Transcribed("stop please", True, 3.5, flushed=True))
    assert InterruptReply(greeting) in actions


def test_short_speech_is_still_a_false_interruption_at_once() -> None:
    m, _ = _speaking()
    actions = _over(m, 0.3, 1.0)  # under min_duration (0.5)
    assert FlushStt() not in actions
    assert _events(actions, FalseInterruption)
    assert m.user is UserPhase.QUIET and m.agent is AgentPhase.SPEAKING


def test_a_streaming_final_that_covers_the_speech_decides_at_once() -> None:
    """A streaming STT already gave the speech's final ("uh-huh"): nothing is owed."""
    m, _ = _speaking()
    m.feed(SpeechStarted())
    m.feed(SpeechLasted(0.9))
    m.feed(Transcribed("uh-huh", True, 1.9, 1.9, "stream"))
    actions = m.feed(SpeechEnded(2.0, 2.0, "stream"))
    assert FlushStt() not in actions
    assert _events(actions, FalseInterruption)
    assert m.user is UserPhase.QUIET


def test_the_reply_ending_while_the_final_is_awaited_leaves_a_plain_turn() -> None:
    m, greeting = _speaking()
    _over(m, 0.9, 2.0)
    actions = m.feed(ReplyDone(greeting))
    assert m.overlap is Overlap.NONE and m.user is UserPhase.AWAITING_FINAL
    assert not _events(actions, FalseInterruption)
    actions = m.feed(Transcribed("what time is it", True, 2.4, flushed=True))
    assert not any(isinstance(a, InterruptReply) for a in actions)
    start = next(a for a in actions if isinstance(a, StartReply))
    assert start.user_text == "what time is it"


def test_speech_resumed_while_the_final_is_awaited_is_the_same_overlap() -> None:
    m, greeting = _speaking()
    _over(m, 0.6, 2.0)
    m.feed(SpeechStarted())
    assert m.overlap is Overlap.SPEECH and m.user is UserPhase.SPEAKING
    m.feed(SpeechLasted(0.2))
    assert abs(m.spoken_for - 0.8) < 1e-9  # the overlap's duration counts both parts
    # the flush's answer for the first part comes while the user speaks again
    actions = m.feed(Transcribed("wait", True, 2.3, flushed=True))
    assert InterruptReply(greeting) in actions
    assert (m.user, m.overlap) == (UserPhase.SPEAKING, Overlap.NONE)
    actions = m.feed(SpeechEnded(2.6))
    assert FlushStt() in actions  # now a plain turn: its final is awaited
    actions = m.feed(Transcribed("what time is it", True, 2.9, flushed=True))
    start = next(a for a in actions if isinstance(a, StartReply))
    assert start.user_text == "wait what time is it"


def test_a_failed_recogniser_while_the_final_is_awaited_resumes_the_reply() -> None:
    m, _ = _speaking()
    arm = next(a for a in _over(m, 0.9, 2.0) if isinstance(a, ArmTimer))
    actions = m.feed(SttFailed(2.2))
    assert ResumeOutput() in actions
    assert m.user is UserPhase.QUIET and m.agent is AgentPhase.SPEAKING
    assert m.feed(TimerFired("final", arm.token, 3.0)) == []  # its timer is stale


def test_an_interim_word_while_the_final_is_awaited_interrupts_at_once() -> None:
    m, greeting = _speaking()
    _over(m, 0.9, 2.0)
    actions = m.feed(Transcribed("what", False, 2.1))
    assert InterruptReply(greeting) in actions
    assert m.overlap is Overlap.NONE and m.user is UserPhase.AWAITING_FINAL
    start = next(a for a in m.feed(Transcribed("what now", True, 2.3)) if isinstance(a, StartReply))
    assert start.user_text == "what now"


def test_a_typed_turn_while_the_final_is_awaited_takes_the_floor() -> None:
    m, greeting = _speaking()
    _over(m, 0.9, 2.0)
    actions = m.feed(TextTyped("typed"))
    assert InterruptReply(greeting) in actions
    start = next(a for a in actions if isinstance(a, StartReply))
    assert start.user_text == "typed"
    assert TurnEnded(1, Outcome.EMPTY) in actions  # no words of the speech were heard
    assert m.overlap is Overlap.NONE and m.user is UserPhase.QUIET


def test_thinking_thresholds_are_decided_by_the_final_too() -> None:
    options = AgentOptions(
        turn=TurnOptions(final_timeout=FINAL_TIMEOUT),
        interruption=InterruptionOptions(min_duration_thinking=0.3, min_words_thinking=1),
    )
    m = TurnMachine(options)
    m.feed(SpeechStarted())
    m.feed(SpeechEnded(1.0))
    answered = m.feed(Transcribed("hello", True, 1.2, flushed=True))
    reply = next(a for a in answered if isinstance(a, StartReply))
    assert m.agent is AgentPhase.THINKING
    m.feed(SpeechStarted())
    assert m.overlap is Overlap.THINKING
    m.feed(SpeechLasted(0.6))
    actions = m.feed(SpeechEnded(2.5))
    assert FlushStt() in actions and m.user is UserPhase.AWAITING_FINAL
    actions = m.feed(Transcribed("actually never mind", True, 2.8, flushed=True))
    start = next(a for a in actions if isinstance(a, StartReply))
    assert start.generation == reply.generation + 1
    assert start.user_text == "hello actually never mind"


@pytest.mark.parametrize("options", OPTIONS[:3], ids=["default", "ignore", "thinking"])
@given(
    backchannel=st.booleans(),
    steps=st.lists(STEPS, max_size=40),
)
def test_every_order_of_events_while_the_final_is_awaited(
    options: AgentOptions, backchannel: bool, steps: list[Step]
) -> None:
    """From speech over the agent awaiting its final, any events (finals, timers, the
    reply's end, new speech, typed turns, failures) end every turn and reply once."""
    world = World(TurnMachine(options))
    m = world.machine
    start = next(a for a in world.feed(SayRequested("Hello!")) if isinstance(a, StartReply))
    world.feed(ReplyAudio(start.generation))
    world.feed(SpeechStarted())
    world.feed(SpeechLasted(0.9))
    if backchannel:
        world.feed(Transcribed("uh-huh", False, 0.5))
    world.feed(SpeechEnded(1.0))
    assert m.user is UserPhase.AWAITING_FINAL and m.overlap is Overlap.SPEECH
    world.now = 1.0
    run(world, steps)
    check_ends(world)


# ------------------------------------------------------------------ through a session


@pytest.mark.virtual_time
@pytest.mark.parametrize(("words", "interrupts"), [("what time is it", True), ("uh-huh", False)])
async def test_a_session_whose_stt_gives_words_only_when_flushed(
    words: str, interrupts: bool
) -> None:
    """As with Whisper: no interim ever (``interim_every`` longer than any speech), the
    words come in the answer to the flush. A question over the reply interrupts it and
    is answered; a backchannel lets the reply play to its end."""
    stt = ScriptedSTT(["question", words], interim_every=60.0)
    async with rig([], [LONG, "It is noon."], stt=stt) as (r, c):
        await c.say(0.6)
        await c.until(lambda: r.session.state is AgentState.SPEAKING, limit=3)
        await c.wait(1.0)
        await c.say(0.8)  # over the agent, long enough; its words come only when flushed
        await c.until(lambda: r.session.state is AgentState.LISTENING, limit=30)
        if interrupts:
            [cut] = c.of(Interrupted)
            assert cut.generation == 1 and cut.played < tone_duration(LONG)
            assert [e.text for e in c.of(UserTurnEnded)] == ["question", words]
            assert r.session.history.messages[-2].content == words
            assert r.session.history.messages[-1].content == "It is noon."
            assert heard_seconds(c, 2) == pytest.approx(tone_duration("It is noon."), abs=0.021)
        else:
            assert not c.of(Interrupted)
            [false] = c.of(FalseInterruption)
            assert false.resumed and false.text == words
            spoken = sum(tone_duration(s) for s in LONG.replace(". ", ".|").split("|"))
            assert heard_seconds(c, 1) == pytest.approx(spoken, abs=0.021)
            assert [e.text for e in c.of(UserTurnEnded)] == ["question"]
