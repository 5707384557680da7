"""``agent.machine.TurnMachine``: the turn-taking rules, through every order of events.

Hypothesis drives the pure machine through arbitrary interleavings of VAD edges, STT
transcripts (interim, final, flush answers, from a replaced stream), timers (armed,
stale), turn-model verdicts, replies' progress (first audio, done, failed; stale ones),
``say()``, typed turns and recogniser failures, under several option sets. A model of
the world (:class:`World`) executes the actions as the session would and checks, after
every event and once the conversation is brought to rest:

- no double reply: at most one reply runs at a time, a generation starts once, is
  committed at most once and ends exactly once (done, failed, interrupted or abandoned);
- no lost turn: every user turn ends exactly once with a typed outcome; at rest no turn
  is open but one whose late final may still come (``MISSED``), and closing abandons it
  explicitly;
- the history holds only what was heard: user messages are the words of committed
  turns (or a fragment asked about), made of words the recogniser or the keyboard gave,
  taken back when their reply is dropped unheard; agent messages only for committed
  replies;
- the phases are always the declared ones and agree with each other and with the
  published state; illegal events raise ``ProtocolStateError`` and change nothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Literal, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antiphon.agent.events import AgentState, UserTurnEnded
from antiphon.agent.machine import TurnMachine
from antiphon.agent.options import AgentOptions, InterruptionOptions, TurnOptions
from antiphon.agent.turn_events import (
    AbandonReply,
    Action,
    ArmTimer,
    CancelTimer,
    ChangeState,
    Close,
    CommitReply,
    Emit,
    EndReply,
    Event,
    Fail,
    ForgetUser,
    InterruptReply,
    RecordUser,
    ReplyAudio,
    ReplyDone,
    ReplyFailed,
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
    Verdict,
)
from antiphon.agent.turns import AgentPhase, Outcome, Overlap, UserPhase
from antiphon.errors import ProtocolStateError, ProviderError

WORDS = ("what", "can", "you", "do", "hello", "again", "uh-huh", "stop")
TYPED = ("typed", "words")

OPTIONS = [
    AgentOptions(),
    AgentOptions(
        interruption=InterruptionOptions(min_words=1, false_interruption="ignore"),
        misheard="answer",
    ),
    AgentOptions(
        interruption=InterruptionOptions(min_duration_thinking=0.3, min_words_thinking=1),
        misheard="reask",
    ),
    AgentOptions(
        interruption=InterruptionOptions(enabled=False), turn=TurnOptions(preemptive=False)
    ),
]


@dataclass
class World:
    """What the session would make of the actions, with the invariants it checks."""

    machine: TurnMachine
    now: float = 0.0
    timer: ArmTimer | None = None
    started: dict[int, StartReply] = field(default_factory=dict)
    live: int | None = None  # the generation running
    committed: set[int] = field(default_factory=set)
    ended: dict[int, str] = field(default_factory=dict)  # generation -> how it ended
    history: list[tuple[str, str]] = field(default_factory=list)
    outcomes: dict[int, TurnEnded] = field(default_factory=dict)
    heard_words: set[str] = field(default_factory=lambda: set(TYPED))
    failed: bool = False
    closing: bool = False  # the event applied is Close

    def feed(self, event: Event) -> list[Action]:
        m = self.machine
        if isinstance(event, Transcribed):
            self.heard_words.update(event.text.split())
        before = _snapshot(m)
        try:
            actions = m.feed(event)
        except ProtocolStateError:
            assert _snapshot(m) == before, "a refused event changed the machine"
            raise
        self.closing = isinstance(event, Close)
        for action in actions:
            self.apply(action)
        self.check()
        return actions

    def apply(self, a: Action) -> None:
        m = self.machine
        match a:
            case ArmTimer():
                self.timer = a
            case CancelTimer():
                self.timer = None
            case StartReply():
                assert a.generation not in self.started, "a generation started twice"
                assert self.live is None, "two replies at once"
                self.started[a.generation] = a
                self.live = a.generation
            case CommitReply():
                assert a.generation == self.live, "commit of a reply not running"
                assert a.generation not in self.committed, "committed twice"
                self.committed.add(a.generation)
            case AbandonReply() | EndReply() | InterruptReply():
                gen = a.generation
                assert gen == self.live, f"{type(a).__name__} of a reply not running"
                assert gen not in self.ended, "a reply ended twice"
                self.ended[gen] = "closed" if self.closing else type(a).__name__
                self.live = None
                if not isinstance(a, AbandonReply):
                    assert gen in self.committed, "a speculative reply spoke"
                    start = self.started[gen]
                    if start.add_to_history:
                        self.history.append(("agent", f"reply {gen}"))
            case RecordUser():
                assert a.text, "an empty user message"
                assert set(a.text.split()) <= self.heard_words, f"never heard: {a.text!r}"
                self.history.append(("user", a.text))
            case ForgetUser():
                if self.history and self.history[-1] == ("user", a.text):
                    self.history.pop()
            case ChangeState():
                assert a.old is not a.new
                assert a.generation <= m.generation
            case TurnEnded():
                assert a.turn not in self.outcomes, f"turn {a.turn} ended twice"
                assert 1 <= a.turn <= m.turns
                self.outcomes[a.turn] = a
            case Emit():
                if isinstance(a.event, UserTurnEnded):
                    assert a.event.generation == self.live
            case Fail():
                self.failed = True

    def check(self) -> None:
        m = self.machine
        assert isinstance(m.user, UserPhase)
        assert isinstance(m.agent, AgentPhase)
        assert isinstance(m.overlap, Overlap)
        assert isinstance(m.state, AgentState)
        if m.closed:
            assert m.reply is None and m.state is AgentState.CLOSED
            return
        # the phases agree with each other, with the replies and with the published state
        assert (m.reply is None) == (m.agent is AgentPhase.IDLE)
        assert (m.reply is None) == (self.live is None)
        if m.reply is not None:
            assert m.reply.generation == self.live
            committed = m.agent in (AgentPhase.THINKING, AgentPhase.SPEAKING)
            assert committed == (self.live in self.committed)
        if m.overlap is not Overlap.NONE:
            # speech over the agent, or its final awaited to decide it
            assert m.reply is not None
            assert m.user in (UserPhase.SPEAKING, UserPhase.AWAITING_FINAL)
        if m.agent is AgentPhase.SPEAKING and m.overlap is Overlap.NONE:
            assert m.state is AgentState.SPEAKING
        if m.user is UserPhase.SPEAKING and m.reply is None:
            assert m.state is AgentState.USER_SPEAKING
        if m.user in (UserPhase.PAUSED, UserPhase.AWAITING_FINAL):
            assert self.timer is not None, "a pause or a final awaited with no timer"
        # the user's messages are committed turns' words, or fragments asked about
        for gen in self.committed:
            start = self.started[gen]
            if start.fixed_text is not None:
                assert start.user_text == ""


Kind = Literal[
    "speech", "lasted", "transcript", "flushed", "timer", "stale_timer", "verdict",
    "audio", "done", "failed", "stale_reply", "say", "typed", "stt_failed",
]  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One move of the world, made legal for the phase by :func:`event_for`."""

    kind: Kind
    words: tuple[str, ...] = ()
    flag: bool = False
    number: float = 0.0


STEPS = st.builds(
    Step,
    st.sampled_from(get_args(Kind)),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(tuple),
    st.booleans(),
    st.sampled_from([0.0, 0.2, 0.4, 0.7, 1.5]),
)


def event_for(world: World, step: Step) -> Event | None:
    """The legal event a step stands for in the machine's current phase (None: none)."""
    m = world.machine
    world.now += 0.05 + step.number
    now = world.now
    text = " ".join(step.words)
    match step.kind:
        case "speech":
            if m.user is UserPhase.SPEAKING:
                stt_end = now - 0.2 if step.flag else None
                return SpeechEnded(now, stt_end, "stream")
            return SpeechStarted(heard=step.flag or step.number < 1)
        case "lasted":
            if m.user is UserPhase.SPEAKING:
                return SpeechLasted(step.number)
            return None
        case "transcript":
            final = step.flag or step.number > 0.5
            return Transcribed(text, final, now, now - 0.1, "stream", current=step.number < 1)
        case "flushed":
            return Transcribed("", True, now, now, "stream", flushed=True, current=step.flag)
        case "timer" | "stale_timer":
            timer = world.timer
            if timer is None:
                return None
            token = timer.token if step.kind == "timer" else timer.token - 1
            return TimerFired(timer.kind, token, now, behind=step.flag and step.number < 1)
        case "verdict":
            return Verdict(m.pause - (1 if step.flag else 0), step.number if step.number < 1 else 0)
        case "audio" | "done" | "failed":
            gen = world.live
            if gen is None:
                return None
            if step.kind == "audio":
                return ReplyAudio(gen) if gen in world.committed else None
            if step.kind == "done":
                return ReplyDone(gen)
            error = ProviderError("broke", provider="llm-x", stage="llm")
            apology: Literal["online", "offline"] | None = "online" if step.flag else None
            return ReplyFailed(gen, error, apology, fatal=step.number > 1)
        case "stale_reply":
            return ReplyDone(m.generation - 1) if m.generation > 1 else None
        case "say":
            return SayRequested(text, allow_interruptions=step.flag, add_to_history=step.number < 1)
        case "typed":
            return TextTyped(" ".join(TYPED[: 1 + int(step.flag)]))
        case "stt_failed":
            return SttFailed(now)
    return None


def bring_to_rest(world: World) -> None:
    """End the speech, fire the timers and let the replies finish, until nothing moves."""
    m = world.machine
    for _ in range(200):
        world.now += 10.0
        if m.user is UserPhase.SPEAKING:
            world.feed(SpeechEnded(world.now))
        elif world.timer is not None:
            world.feed(TimerFired(world.timer.kind, world.timer.token, world.now))
        elif world.live is not None:
            gen = world.live
            world.feed(ReplyAudio(gen) if m.agent is AgentPhase.THINKING else ReplyDone(gen))
        else:
            return
    raise AssertionError("the machine never came to rest")


def _snapshot(m: TurnMachine) -> str:
    return repr((
        m.user, m.agent, m.overlap, m.state, m.generation, m.turn, m.reply, m.says, m.typed,
        m.pause, m.timer, m.turns, m.open_turn, m.speech_end_at, m.final_delay, m.spoken_for,
        m._spoken_before,
    ))  # fmt: skip


def run(world: World, steps: list[Step]) -> None:
    for step in steps:
        event = event_for(world, step)
        if event is None:
            continue
        world.feed(event)
        if world.failed:  # the session fails for good: it closes
            world.feed(Close("failed"))
            return


@pytest.mark.parametrize("options", OPTIONS, ids=["default", "ignore", "thinking", "no-barge-in"])
@pytest.mark.parametrize("semantic", [False, True], ids=["silence", "turn-model"])
@given(steps=st.lists(STEPS, max_size=60))
def test_every_turn_ends_once_and_every_reply_once(
    options: AgentOptions, semantic: bool, steps: list[Step]
) -> None:
    world = World(TurnMachine(options, semantic_hold=0.5 if semantic else None))
    run(world, steps)
    check_ends(world)


def check_ends(world: World) -> None:
    """Bring the conversation to rest and close it: every turn and reply ended once."""
    m = world.machine
    if not m.closed:
        bring_to_rest(world)
        # at rest: nothing runs, nothing waits, and no turn is open but a missed one
        assert m.idle
        assert world.live is None
        assert m.open_turn is None or m.user is UserPhase.MISSED
        for gen in world.started:
            assert gen in world.ended, f"reply {gen} never ended"
        world.feed(Close())
    assert m.closed and world.live is None
    # every user turn ended exactly once, with a typed outcome
    assert sorted(world.outcomes) == list(range(1, m.turns + 1))
    answered = [t.generation for t in world.outcomes.values() if t.outcome is Outcome.ANSWERED]
    assert len(answered) == len(set(answered)), "one reply answered two turns"
    for answer in answered:
        assert answer is not None and answer in world.started
        assert answer in world.committed or world.failed
    # every reply started ended exactly once
    assert set(world.ended) == set(world.started)


@pytest.mark.parametrize("options", OPTIONS[:3], ids=["default", "ignore", "thinking"])
@given(steps=st.lists(STEPS, max_size=60))
def test_the_history_holds_only_what_was_heard(options: AgentOptions, steps: list[Step]) -> None:
    world = World(TurnMachine(options))
    run(world, steps)
    if not world.machine.closed:
        bring_to_rest(world)
    # every user message is a committed turn's words (still answered: its reply was not
    # dropped unheard) or a fragment asked about; every agent message a committed reply
    users = [text for role, text in world.history if role == "user"]
    kept = [
        world.started[gen].user_text
        for gen in sorted(world.committed)
        if world.started[gen].fixed_text is None and world.ended.get(gen) != "AbandonReply"
    ]
    fragments = [
        t.text for t in world.outcomes.values() if t.outcome is Outcome.UNANSWERED and t.text
    ]
    assert sorted(users) == sorted(kept + fragments)
    for role, text in world.history:
        if role == "agent":
            gen = int(text.split()[1])
            assert gen in world.committed and world.ended[gen] != "AbandonReply"


RAW_EVENTS = st.one_of(
    st.just(SpeechStarted()),
    st.builds(SpeechEnded, st.just(1.0)),
    st.builds(SpeechLasted, st.sampled_from([0.1, 0.6])),
    st.builds(ReplyAudio, st.integers(0, 4)),
    st.builds(ReplyDone, st.integers(0, 4)),
    st.builds(Transcribed, st.sampled_from(WORDS), st.booleans(), st.just(1.0)),
    st.builds(TimerFired, st.sampled_from(["final", "hold"]), st.integers(0, 6), st.just(1.0)),
    st.builds(SayRequested, st.sampled_from(WORDS)),
    st.builds(TextTyped, st.sampled_from(TYPED)),
)


@given(events=st.lists(RAW_EVENTS, max_size=40))
def test_illegal_events_are_refused_and_change_nothing(events: list[Event]) -> None:
    """Any event in any phase: a legal one is taken, an illegal one raises (and the
    machine is as before: ``World.feed`` compares); after close, everything raises."""
    world = World(TurnMachine(AgentOptions()))
    m = world.machine
    for event in events:
        speaking = m.user is UserPhase.SPEAKING
        illegal = (isinstance(event, SpeechStarted) and speaking) or (
            isinstance(event, SpeechEnded | SpeechLasted) and not speaking
        )
        if illegal:
            with pytest.raises(ProtocolStateError):
                world.feed(event)
        else:
            with contextlib.suppress(ProtocolStateError):  # audio of a speculative reply
                world.feed(event)
    world.feed(Close())
    for event in events[:3]:
        with pytest.raises(ProtocolStateError, match="after close"):
            world.machine.feed(event)


def test_speech_edges_out_of_order_are_refused() -> None:
    m = TurnMachine()
    with pytest.raises(ProtocolStateError, match="no speech"):
        m.feed(SpeechEnded(0.0))
    m.feed(SpeechStarted())
    with pytest.raises(ProtocolStateError, match="twice"):
        m.feed(SpeechStarted())
    assert m.user is UserPhase.SPEAKING


def test_first_audio_of_a_speculative_reply_is_refused() -> None:
    m = TurnMachine()
    m.feed(SpeechStarted())
    m.feed(Transcribed("what can", False, 0.1))
    actions = m.feed(SpeechEnded(0.5))
    start = next(a for a in actions if isinstance(a, StartReply))  # preemptive
    assert m.agent is AgentPhase.SPECULATING
    with pytest.raises(ProtocolStateError, match="not committed"):
        m.feed(ReplyAudio(start.generation))


def test_a_late_final_answers_a_turn_that_ended_empty() -> None:
    """The final comes after ``final_timeout`` with no interim before it: the turn is
    answered (issue 14: a question went unanswered), not lost."""
    m = TurnMachine(AgentOptions(turn=TurnOptions(final_timeout=1.0)))
    m.feed(SpeechStarted())
    actions = m.feed(SpeechEnded(1.0))
    arm = next(a for a in actions if isinstance(a, ArmTimer))
    assert arm.seconds == 1.0
    m.feed(TimerFired("final", arm.token, 2.0))
    assert m.user is UserPhase.MISSED and m.open_turn == 1
    actions = m.feed(Transcribed("what can you do", True, 2.5))
    ended = [a for a in actions if isinstance(a, TurnEnded)]
    assert ended == [TurnEnded(1, Outcome.ANSWERED, "what can you do", 1)]
    assert any(isinstance(a, CommitReply) for a in actions)


def test_a_speculative_reply_on_an_interim_is_never_the_answer_to_a_longer_final() -> None:
    """Under load the agent once answered the interim "what" instead of "what can you
    do": the reply started on the interim is abandoned unheard, the final is answered."""
    m = TurnMachine()
    m.feed(SpeechStarted())
    m.feed(Transcribed("what", False, 0.2))
    first = m.feed(SpeechEnded(0.5))
    spec = next(a for a in first if isinstance(a, StartReply))
    assert spec.user_text == "what"
    actions = m.feed(Transcribed("what can you do", True, 0.7))
    assert AbandonReply(spec.generation, "the final transcript differs") in actions
    start = next(a for a in actions if isinstance(a, StartReply))
    assert start.user_text == "what can you do"
    assert RecordUser("what can you do") in actions
    assert RecordUser("what") not in actions


def test_a_turn_whose_speculative_reply_is_dropped_is_answered_before_a_queued_say() -> None:
    """A say() queued behind a speculative reply never takes the user's turn: when the
    final differs, the user's words are answered first, then the line is said."""
    m = TurnMachine()
    m.feed(SpeechStarted())
    m.feed(Transcribed("what", False, 0.2))
    spec = next(a for a in m.feed(SpeechEnded(0.5)) if isinstance(a, StartReply))
    assert m.feed(SayRequested("A notice.")) == []  # queued behind the running reply
    actions = m.feed(Transcribed("what can you do", True, 0.7))
    starts = [a for a in actions if isinstance(a, StartReply)]
    assert [s.user_text for s in starts] == ["what can you do"]
    assert TurnEnded(1, Outcome.ANSWERED, "what can you do", spec.generation + 1) in actions
    m.feed(ReplyAudio(spec.generation + 1))
    after = m.feed(ReplyDone(spec.generation + 1))
    said = [a for a in after if isinstance(a, StartReply)]
    assert [s.fixed_text for s in said] == ["A notice."]


def test_speech_over_an_uninterruptible_line_is_ignored_not_carried() -> None:
    """Words said over an uninterruptible say() end as an ignored turn; they do not
    join the next turn's text."""
    m = TurnMachine()
    start = next(
        a
        for a in m.feed(SayRequested("Welcome.", allow_interruptions=False))
        if isinstance(a, StartReply)
    )
    m.feed(SpeechStarted())  # before the line's first audio: heard, then spoken over
    m.feed(Transcribed("hello there", True, 0.5))
    assert m.turn.text() == "hello there"
    m.feed(ReplyAudio(start.generation))
    ended = [a for a in m.feed(SpeechEnded(0.8)) if isinstance(a, TurnEnded)]
    assert ended == [TurnEnded(1, Outcome.IGNORED)]
    assert m.turn.text() == ""
    assert m.state is AgentState.SPEAKING
