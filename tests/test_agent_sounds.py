"""Thinking cue and ambient bed (agent/sounds.py) on the doubles and the virtual clock.

Every frame the user hears is known: the reply is the tone TTS's audio, the cue and the
bed are generated, so the tests compare samples, not loudness.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import numpy as np
import numpy.typing as npt
import pytest

from antiphon.agent import (
    AgentEvent,
    AgentOptions,
    AgentSession,
    AgentState,
    InterruptionOptions,
    StateChanged,
    ToolCalled,
    TurnOptions,
)
from antiphon.agent.sounds import BackgroundAudio, Sound
from antiphon.aio.clock import VirtualClock
from antiphon.audio.frame import AudioFrame
from antiphon.audio.wav import write_wav
from antiphon.errors import ConfigError
from antiphon.services.tools import FunctionTool, function_tool
from antiphon.testing.agent import (
    Conversation,
    EnergyVAD,
    LLMReply,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    ToolCallScript,
)
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.synth import tone_for_text

pytestmark = pytest.mark.virtual_time

FRAME = 320  # 20 ms at 16 kHz
REPLY = "Sure thing."


def loop(sound: Sound, gain: float, n: int) -> npt.NDArray[np.int32]:
    """What the mixer adds over ``n`` samples: the sound scaled, looped from its start."""
    scaled = np.round(sound.pcm.astype(np.float64) * gain).astype(np.int32)
    return np.resize(scaled, n)


@asynccontextmanager
async def sounding(
    sounds: BackgroundAudio,
    *,
    token_delay: float,
    options: AgentOptions | None = None,
    replies: Sequence[LLMReply] = (REPLY,),
    tools: Sequence[FunctionTool] = (),
    clock: VirtualClock | None = None,
) -> AsyncIterator[tuple[Conversation, list[tuple[float, AgentEvent]]]]:
    clock = clock or VirtualClock()
    leaks = LeakCheck()
    stt = ScriptedSTT(["hello there"])
    llm = ScriptedLLM(replies, clock=clock, token_delay=token_delay)
    tts = ToneTTS(clock=clock)
    session = AgentSession(
        vad=EnergyVAD(),
        stt=stt,
        llm=llm,
        tts=tts,
        tools=tools,
        clock=clock,
        options=options or AgentOptions(turn=TurnOptions(preemptive=False)),
    )
    timeline: list[tuple[float, AgentEvent]] = []
    session.on_event(lambda e: timeline.append((clock.now(), e)))
    sounds.attach(session)
    try:
        async with asyncio.timeout(40), Conversation(session, clock) as c:
            yield c, timeline
    finally:
        await session.aclose()
        for service in (stt, llm, tts):
            await service.aclose()
    await leaks.assert_clean(settle=1.0)


def heard(c: Conversation) -> npt.NDArray[np.int32]:
    return np.concatenate([h.frame.as_array() for h in c.heard]).astype(np.int32)


def find(audio: npt.NDArray[np.int32], part: npt.NDArray[np.int32]) -> int:
    """The frame index where ``part`` starts in ``audio`` (it starts on a frame)."""
    for k in range(len(audio) // FRAME):
        if np.array_equal(audio[k * FRAME : k * FRAME + FRAME], part[:FRAME]):
            return k
    raise AssertionError("not heard")


def entered(timeline: list[tuple[float, AgentEvent]], state: AgentState) -> float:
    return next(t for t, e in timeline if isinstance(e, StateChanged) and e.new is state)


async def test_the_cue_plays_while_thinking_and_the_reply_cuts_it_on_its_first_frame() -> None:
    cue = Sound.thinking_tone()
    sounds = BackgroundAudio(thinking=cue, thinking_gain=0.5, thinking_delay=0.2)
    async with sounding(sounds, token_delay=0.6) as (c, timeline):
        await c.say(0.8)
        await c.until(lambda: c.session.state is AgentState.SPEAKING, limit=5)
        await c.until(lambda: c.session.state is AgentState.LISTENING, limit=10)
        await c.wait(0.2)
    audio = heard(c)
    reply = np.frombuffer(tone_for_text(REPLY, 16000), dtype="<i2").astype(np.int32)
    k = find(audio, reply)
    # the reply plays unchanged from its first frame: not one sample of cue on it
    assert np.array_equal(audio[k * FRAME : k * FRAME + reply.size], reply)
    assert not audio[k * FRAME + reply.size :].any()  # and none after it
    before = audio[: k * FRAME]
    first = next(i for i in range(k) if before[i * FRAME : (i + 1) * FRAME].any())
    cued = before[first * FRAME :]
    # the cue, from its start, filled every frame from thinking_delay to the reply
    assert cued.size >= 0.5 * 16000
    assert np.array_equal(cued, loop(cue, 0.5, cued.size))
    thinking = entered(timeline, AgentState.THINKING)
    assert c.heard[first].time - thinking == pytest.approx(0.2, abs=0.041)
    assert entered(timeline, AgentState.SPEAKING) >= c.heard[k - 1].time


async def test_user_speech_silences_the_cue_on_the_next_frame_then_it_resumes() -> None:
    # long speech needed to drop the reply: the agent stays THINKING while the user
    # speaks briefly, so only the VAD (not a state change) can silence the cue
    options = AgentOptions(
        turn=TurnOptions(preemptive=False),
        interruption=InterruptionOptions(min_duration_thinking=5.0),
    )
    sounds = BackgroundAudio(thinking=hum(), thinking_gain=0.5)
    async with sounding(sounds, token_delay=3.0, options=options) as (c, timeline):
        await c.say(0.8)
        await c.until(lambda: c.session.state is AgentState.THINKING, limit=5)
        await c.wait(0.5)
        assert sounds.cue_playing
        spoke = c.clock.now()
        await c.say(0.4)
        spoke_until = c.clock.now()
        await c.wait(1.0)
        assert c.session.state is AgentState.THINKING
        # no state change while the user spoke: the VAD alone stopped the cue
        assert not [t for t, e in timeline if spoke <= t and isinstance(e, StateChanged)]
    frames = [(h.time, h.frame.as_array()) for h in c.heard]
    vad_onset = 0.06 + 0.04  # EnergyVAD's min_speech_duration, and a frame each way
    during = [a for t, a in frames if spoke + vad_onset <= t <= spoke_until]
    assert len(during) >= 10 and not any(a.any() for a in during)
    assert all(a.any() for t, a in frames if spoke - 0.3 <= t < spoke)  # it played before
    # and again once the VAD's silence window (0.5 s) says the speech is over
    after = [a for t, a in frames if t > spoke_until + 0.5 + 0.04]
    assert len(after) >= 10 and all(a.any() for a in after)


def hum(seconds: float = 1.0) -> Sound:
    """A cue that never pauses: every silent frame is the cue stopped."""
    t = np.arange(round(seconds * 16000)) / 16000
    return Sound((0.2 * np.sin(2 * np.pi * 500 * t) * 32767).astype(np.int16), 16000)


async def test_the_cue_fills_a_long_tool_around_the_filler_line_and_ends_with_it() -> None:
    clock = VirtualClock()

    @function_tool
    async def slow_lookup() -> str:
        """Looks something up, slowly."""
        await clock.sleep_until(clock.now() + 2.0)
        return "found"

    options = AgentOptions(
        turn=TurnOptions(preemptive=False), filler_delay=0.5, filler_text="One moment."
    )
    sounds = BackgroundAudio(thinking=hum(), thinking_gain=0.5)
    replies: list[LLMReply] = [[ToolCallScript("slow_lookup")], REPLY]
    async with sounding(
        sounds, token_delay=0.0, options=options, replies=replies, tools=[slow_lookup], clock=clock
    ) as (c, timeline):
        await c.say(0.8)
        await c.until(lambda: bool(c.of(ToolCalled)), limit=5)
        await c.until(lambda: c.session.state is AgentState.LISTENING, limit=10)
        await c.wait(0.2)
    audio = heard(c)
    filler = np.frombuffer(tone_for_text("One moment.", 16000), dtype="<i2").astype(np.int32)
    reply = np.frombuffer(tone_for_text(REPLY, 16000), dtype="<i2").astype(np.int32)
    f, k = find(audio, filler), find(audio, reply)
    # the filler and the answer are heard unchanged: the cue never plays over a voice
    assert np.array_equal(audio[f * FRAME : f * FRAME + filler.size], filler)
    assert np.array_equal(audio[k * FRAME : k * FRAME + reply.size], reply)
    # the cue fills the wait before the filler and after it, until the tool is done
    thinking = entered(timeline, AgentState.THINKING)
    tool_done = next(t for t, e in timeline if isinstance(e, ToolCalled))
    frames = c.heard
    before = [h for h in frames[:f] if h.time > thinking + 0.04]
    after_filler = f + -(-filler.size // FRAME)
    between = [h for h in frames[after_filler:k] if h.time < tool_done - 0.04]
    assert len(before) >= 10 and all(h.frame.as_array().any() for h in before)
    assert len(between) >= 30 and all(h.frame.as_array().any() for h in between)
    # and stops when the tool returns: silence until the answer
    gap = [h for h in frames[after_filler:k] if h.time > tool_done + 0.04]
    assert not any(h.frame.as_array().any() for h in gap)


async def test_the_bed_loops_under_everything_and_the_voice_is_added_unchanged() -> None:
    bed = Sound.ambient_tone()
    sounds = BackgroundAudio(ambient=bed, ambient_gain=0.2)
    async with sounding(sounds, token_delay=0.1) as (c, _):
        await c.say(0.8)
        await c.until(lambda: c.session.state is AgentState.SPEAKING, limit=5)
        await c.until(lambda: c.session.state is AgentState.LISTENING, limit=10)
        await c.wait(4.5)  # past the end of the bed's loop
    audio = heard(c)
    assert audio.size > bed.pcm.size  # it wrapped around
    rest = audio - loop(bed, 0.2, audio.size)
    reply = np.frombuffer(tone_for_text(REPLY, 16000), dtype="<i2").astype(np.int32)
    k = find(rest, reply)
    assert np.array_equal(rest[k * FRAME : k * FRAME + reply.size], reply)
    rest[k * FRAME : k * FRAME + reply.size] = 0
    assert not rest.any()  # everything else the user heard is the bed, seamlessly


async def test_detach_gives_the_track_back() -> None:
    sounds = BackgroundAudio(ambient=Sound.ambient_tone())
    async with sounding(sounds, token_delay=0.0) as (c, _):
        track = c.session.output
        assert track.mixer is not None and track.fill_silence
        with pytest.raises(ConfigError, match="already attached"):
            sounds.attach(c.session)
        with pytest.raises(ConfigError, match="mixer"):
            BackgroundAudio().attach(c.session)
        sounds.detach()
        assert track.mixer is None and not track.fill_silence


def test_a_wav_of_any_rate_and_width_is_mixed_down_and_resampled() -> None:
    t = np.arange(8000) / 8000
    left = (0.2 * np.sin(2 * np.pi * 200 * t) * 32767).astype(np.int16)
    stereo = np.stack([left, left], axis=1)
    buf = io.BytesIO()
    write_wav(buf, AudioFrame.from_array(stereo, 8000))
    buf.seek(0)
    sound = Sound.from_wav(buf)
    assert sound.sample_rate == 8000 and sound.pcm.size == 8000
    assert np.array_equal(sound.pcm, left)
    up = sound.resampled(16000)
    assert up.sample_rate == 16000 and abs(up.pcm.size - 16000) <= 16
    assert np.abs(up.pcm.astype(np.int32)).max() == pytest.approx(np.abs(left).max(), rel=0.05)


def test_the_generated_sounds_loop_without_a_click() -> None:
    for sound in (Sound.ambient_tone(), Sound.thinking_tone()):
        x = sound.pcm.astype(np.int32)
        largest_step = int(np.abs(np.diff(x)).max())
        assert abs(int(x[0]) - int(x[-1])) <= largest_step
        assert 0 < np.abs(x).max() < 0.5 * 32767  # soft


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="ambient_gain"):
        BackgroundAudio(ambient_gain=1.5)
    with pytest.raises(ConfigError, match="thinking_delay"):
        BackgroundAudio(thinking_delay=-1)
    with pytest.raises(ConfigError, match="Sound"):
        BackgroundAudio(thinking="ding.wav")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Sound(np.zeros(0, dtype=np.int16), 16000)
