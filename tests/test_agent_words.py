"""Transcripts synced to playback word by word, and "only what was heard" at word precision.

Everything runs on the virtual clock: a word's event is checked against the audio the
user had been handed when it was sent, never against wall-clock time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antiphon.agent import (
    AgentOptions,
    AgentSession,
    AgentState,
    AgentWords,
    Interrupted,
    TurnCompleted,
)
from antiphon.agent.options import InterruptionOptions
from antiphon.agent.playback import Playback, WordSync
from antiphon.aio.clock import VirtualClock
from antiphon.services.tts import WordTiming
from antiphon.testing.agent import Conversation, EnergyVAD, ScriptedLLM, ScriptedSTT, ToneTTS
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.synth import SECONDS_PER_CHAR

pytestmark = pytest.mark.virtual_time

W = WordTiming


# ------------------------------------------------------------------ Playback


def timed() -> Playback:
    p = Playback()
    p.begin("Hello there.", 0.0, [W("Hello", 0.0, 0.4), W("there.", 0.5, 1.0)])
    p.grow(1.0)
    p.finish()
    words = [W("This", 0.0, 0.2), W("is", 0.3, 0.4), W("slow.", 0.5, 1.8)]
    p.begin("This is slow.", 1.0, words)
    p.grow(3.0)
    p.finish()
    return p


def test_heard_with_timings_keeps_the_words_played_to_their_end() -> None:
    p = timed()
    assert p.heard(0.39) == ""
    assert p.heard(0.4) == "Hello"
    assert p.heard(1.0) == "Hello there."
    assert p.heard(1.45) == "Hello there. This is"
    # by characters "slow." would be kept at 2.7 s; by its timing it is heard at 2.8 s
    assert p.heard(2.7) == "Hello there. This is"
    assert p.heard(2.8) == p.heard(3.0) == p.text


def test_words_without_timings_are_estimated_by_characters() -> None:
    p = Playback()
    p.add("ab cd", 1.0, 2.0)
    words, estimated = p.words(0)
    assert estimated
    assert words == [W("ab", 1.0, 1.4), W("cd", 1.6, 2.0)]
    words, estimated = timed().words(1)
    assert not estimated and words[0] == W("This", 1.0, 1.2)


# a sentence has text (the segmenter gives no empty one)
_TEXTS = st.lists(
    st.sampled_from(["a", "bb", "ccc.", "Hello,", " ", "x  y"]), min_size=1, max_size=6
)
_SENTENCE = st.tuples(
    _TEXTS.map(" ".join).filter(str.strip),
    st.floats(min_value=0, max_value=3),  # audio written of it
    st.booleans(),  # complete
    st.none() | st.lists(st.floats(min_value=0, max_value=3), max_size=6),  # timings
)


@given(
    st.lists(_SENTENCE, min_size=1, max_size=4),
    st.integers(min_value=0, max_value=7),
    st.data(),
)
def test_what_word_sync_reads_of_a_sentence_is_its_words_filtered(
    sentences: list[tuple[str, float, bool, list[float] | None]], first: int, data: st.DataObject
) -> None:
    """``Playback._follow`` (a wake-up's read) is ``words()`` from ``first`` on, filtered."""
    p = Playback()
    for text, seconds, complete, starts in sentences:
        timings = None if starts is None else [W("w", t, t + 0.1) for t in sorted(starts)]
        p.begin(text, p.written, timings)
        p.written += seconds
        p.grow(p.written)
        if complete:
            p.finish()
    starts = [w.start for i in range(len(p.segments)) for w in p.words(i)[0]]
    # a position anywhere, or exactly where a word starts
    played = data.draw(st.floats(min_value=-1, max_value=12) | st.sampled_from([0.0, *starts]))
    for index in range(len(p.segments)):
        words, estimated = p.words(index)
        first_ = min(first, len(words))
        due = [w for w in words[first_:] if w.start <= played] if played > 0 else []
        after = first_ + len(due)
        upcoming = words[after].start if after < len(words) else None
        assert p._follow(index, first_, played) == (due, estimated, upcoming)


async def test_word_sync_follows_the_playout_position_not_the_clock() -> None:
    """Words are sent when the position reaches them; a stalled playout holds them back."""
    clock = VirtualClock()
    position = 0.0
    got: list[tuple[float, AgentWords]] = []
    sync = WordSync(
        timed(),
        position=lambda: position,
        clock=clock,
        emit=lambda e: got.append((clock.now(), e)),
        generation=3,
    )
    task = asyncio.get_running_loop().create_task(sync.run())
    try:
        await clock.advance(1.0)  # the clock runs but nothing plays yet
        assert got == []
        position = 0.6
        await clock.advance(0.1)
        assert [w.word for _, e in got for w in e.words] == ["Hello", "there."]
        position = 1.35  # the playout moves at the clock's pace: the next wake-up is 0.4 s on
        await clock.advance(0.3)
        assert len(got) == 1
        await clock.advance(0.1)
        assert [w.word for w in got[-1][1].words] == ["This", "is"]
        assert all(e.generation == 3 and not e.estimated for _, e in got)
        position = 3.0
        await clock.advance(0.2)
        assert " ".join(e.text for _, e in got) == "Hello there. This is slow."
    finally:
        task.cancel()
        await asyncio.wait([task])


# ------------------------------------------------------------------ a session

LONG = (
    "This is a long answer to your question. It has several sentences to speak aloud. "
    "The user will cut it off somewhere in the middle. And this last part is never heard."
)


@asynccontextmanager
async def rig(
    script: Sequence[str],
    replies: Sequence[str],
    *,
    timings: bool,
    options: AgentOptions | None = None,
) -> AsyncIterator[tuple[AgentSession, Conversation]]:
    clock = VirtualClock()
    leaks = LeakCheck()
    stt, llm = ScriptedSTT(script), ScriptedLLM(replies, clock=clock)
    tts = ToneTTS(clock=clock, word_timings=timings)
    session = AgentSession(vad=EnergyVAD(), stt=stt, llm=llm, tts=tts, options=options, clock=clock)
    try:
        async with asyncio.timeout(40), Conversation(session, clock) as c:
            yield session, c
    finally:
        await session.aclose()
        for service in (stt, llm, tts):
            await service.aclose()
    await leaks.assert_clean(settle=1.0)


def heard_seconds(c: Conversation, generation: int) -> float:
    return sum(h.frame.duration for h in c.heard if h.frame.generation == generation)


def words_of(events: list[tuple[float, AgentWords]]) -> list[WordTiming]:
    return [w for _, e in events for w in e.words]


@pytest.mark.parametrize("timings", [True, False])
async def test_each_word_is_sent_as_its_audio_plays(timings: bool) -> None:
    reply = "Here is a reply of a few words. And a second sentence."
    async with rig(["question"], [reply], timings=timings) as (session, c):
        sent: list[tuple[float, AgentWords]] = []

        def record(event: object) -> None:
            if isinstance(event, AgentWords):
                sent.append((heard_seconds(c, event.generation), event))

        session.on_event(record)
        await c.say(0.8)
        await c.until(lambda: session.state is AgentState.SPEAKING, limit=3)
        await c.until(lambda: bool(c.of(TurnCompleted)), limit=20)
        words = words_of(sent)
        assert [w.word for w in words] == reply.split()
        assert all(e.estimated is not timings and e.generation == 1 for _, e in sent)
        starts = [w.start for w in words]
        assert starts == sorted(starts)
        for heard, event in sent:
            for w in event.words:
                # sent once its audio had reached the user, within two 20 ms frames
                assert w.start <= heard + 1e-9
                assert heard - w.start <= 0.04 + 1e-9
        if timings:  # the tone's words: SECONDS_PER_CHAR a character of each sentence
            assert words[1] == W("is", 5 * SECONDS_PER_CHAR, 7 * SECONDS_PER_CHAR)


async def test_interruption_keeps_the_words_heard_and_sends_no_more() -> None:
    options = AgentOptions(interruption=InterruptionOptions(false_interruption="ignore"))
    script, replies = ["tell me", "stop"], [LONG, "Okay."]
    async with rig(script, replies, timings=True, options=options) as (session, c):
        await c.say(0.8)
        await c.until(lambda: session.state is AgentState.SPEAKING, limit=3)
        await c.wait(1.5)
        await c.say(0.7)
        [cut] = c.of(Interrupted)
        spoken = [e for e in c.events if isinstance(e, AgentWords) and e.generation == 1]
        assert spoken, "words of the interrupted reply played before the interruption"
        after = c.events[c.events.index(cut) :]
        assert not [e for e in after if isinstance(e, AgentWords) and e.generation == 1]
        # the history keeps the words whose audio played to its end, by the tone's timings
        # (SECONDS_PER_CHAR a character of the first sentence, which was playing)
        first = "This is a long answer to your question."
        assert 0 < cut.played < len(first) * SECONDS_PER_CHAR
        offset, ends = 0, []
        for word in first.split():
            offset = first.index(word, offset) + len(word)
            ends.append(offset * SECONDS_PER_CHAR)
        k = sum(1 for end in ends if end <= cut.played + 1e-9)
        assert k >= 1
        assert cut.text == " ".join(first.split()[:k])
        await c.until(lambda: len(c.of(TurnCompleted)) == 2, limit=10)
        said = [m.content for m in session.history.messages if m.role == "assistant"]
        assert said[0] == cut.text
