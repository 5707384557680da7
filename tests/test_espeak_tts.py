"""EspeakTTS: the TTS contract with an in-process engine.

CoreTTSConformance needs a fake server; these are its in-process equivalents (the engine
raises, hangs, holds the process-wide library; the caller cancels mid-synthesis, closes
twice, runs many streams) plus the healthy path. espeak-ng's samples differ slightly
from call to call (see engine.py), so the audio is compared byte for byte with the blocks

#: Real threads and wall-clock time: the engine runs on its own thread.
pytestmark = pytest.mark.realtime
the engine produced in that very call, recorded by :class:`Engine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError, StreamClosedError
from antiphon.plugins.espeak import EspeakTTS, Voice
from antiphon.plugins.espeak import engine as esp
from antiphon.services.tts import StreamState, SynthesisStream, TTSDeadlines
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.vloop import time_scale

#: The engine runs on a real thread: deadlines scale with the CI profile (docs/testing.md).
_K = time_scale()
FAST = TTSDeadlines(
    connect=1.0 * _K, first_audio=2.0 * _K, idle=1.0 * _K, clear=0.5 * _K, close=5.0 * _K
)
LONG = "This is a long sentence that takes many blocks of audio to speak. " * 4


@dataclass
class Call:
    text: str
    blocks: list[bytes] = field(default_factory=list)  # delivered to the stream
    result: bool | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def pcm(self) -> bytes:
        return b"".join(self.blocks)


class Engine:
    """The real engine, recorded, with faults on cue (all bounded by ``WAIT``)."""

    WAIT = 10.0 * _K

    def __init__(
        self,
        *,
        gate_after: int | None = None,
        raise_after: int | None = None,
        hang_after: int | None = None,
        hang_holding_library: bool = False,
    ) -> None:
        self.gate_after = gate_after
        self.raise_after = raise_after
        self.hang_after = hang_after
        self.hang_holding_library = hang_holding_library
        self.calls: list[Call] = []
        self.gated = threading.Event()  # the engine waits at the gate
        self.gate = threading.Event()  # opens it
        self.hanging = threading.Event()
        self.release = threading.Event()  # ends a hang
        self.hang_over = threading.Event()  # set once a hang has returned

    def by_text(self) -> dict[str, bytes]:
        return {c.text: c.pcm for c in self.calls}

    def __call__(self, text: str, voice: Voice, on_audio: Callable[[bytes], bool]) -> bool:
        call = Call(text)
        self.calls.append(call)
        first_call = len(self.calls) == 1
        hang_later = False

        def sink(pcm: bytes) -> bool:
            nonlocal hang_later
            n = len(call.blocks)
            if self.raise_after is not None and n >= self.raise_after:
                raise RuntimeError("injected engine failure")
            if first_call and self.hang_after is not None and n == self.hang_after:
                self.hanging.set()
                if self.hang_holding_library:
                    self.release.wait(self.WAIT)  # inside espeak_Synth, holding the library
                    self.hang_over.set()
                else:
                    hang_later = True
                    return False  # leave espeak (and its lock), then hang outside it
            if self.gate_after is not None and n == self.gate_after:
                self.gated.set()
                self.gate.wait(self.WAIT)
            keep = on_audio(pcm)
            if keep:
                call.blocks.append(pcm)
            return keep

        try:
            call.result = esp.synthesize(text, voice, sink, wait=FAST.first_audio)
        finally:
            call.finished.set()
        if hang_later:
            self.release.wait(self.WAIT)
            self.hang_over.set()
        return call.result


@contextlib.asynccontextmanager
async def running(**kw: object) -> AsyncIterator[EspeakTTS]:
    leaks = LeakCheck()
    tts = EspeakTTS(deadlines=FAST, **kw)  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(30):
            yield tts
    finally:
        await tts.aclose()
    assert tts.active_streams == 0 and tts.threads == []  # aclose joined the thread
    await leaks.assert_clean(settle=2.0)


@contextlib.asynccontextmanager
async def pair(a: Engine, b: Engine) -> AsyncIterator[tuple[EspeakTTS, EspeakTTS]]:
    """Two instances (sharing the process's one library), one leak check for both."""
    leaks = LeakCheck()
    one = EspeakTTS(deadlines=FAST, synthesize=a)
    two = EspeakTTS(deadlines=FAST, synthesize=b)
    try:
        async with asyncio.timeout(30):
            yield one, two
    finally:
        a.release.set()
        b.release.set()
        await asyncio.gather(one.aclose(), two.aclose())
    assert one.threads == [] and two.threads == []
    await leaks.assert_clean(settle=2.0)


async def audio_of(s: SynthesisStream) -> bytes:
    return b"".join([f.data async for f in s])


async def until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll ``condition`` (set by the engine thread) for at most ``limit`` seconds."""
    for _ in range(round(limit / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met within {limit}s")


# ----------------------------------------------------------------- healthy engine


async def test_speaks_what_the_engine_makes_and_completes() -> None:
    engine = Engine()
    async with running(synthesize=engine) as tts, tts.stream() as s:
        s.push_text("Hello there, ")
        s.push_text("how are you?")
        s.end_input()
        audio = await audio_of(s)
        assert s.state is StreamState.COMPLETED and s.error is None
    assert [c.text for c in engine.calls] == ["Hello there, how are you?"]
    assert engine.calls[0].result is True
    assert audio == engine.calls[0].pcm and len(audio) > 22050  # over half a second
    assert s.sample_rate == tts.native_rate == 22050


async def test_the_real_engine_speaks_without_a_wrapper() -> None:
    async with running() as tts:
        frame = await tts.synthesize("Hello there.").collect()
    native = len(esp.synthesize_pcm("Hello there.")) / 2 / 22050
    assert frame.sample_rate == 22050 and frame.duration == pytest.approx(native, abs=0.01)


async def test_flushes_are_spoken_in_order_with_the_generation() -> None:
    engine = Engine()
    sentences = ["First sentence.", " Second one here.", " And a third."]
    async with running(synthesize=engine) as tts, tts.stream(generation=7) as s:
        for text in sentences:
            s.push_text(text)
            s.flush()
        s.end_input()
        frames = [f async for f in s]
    assert [c.text for c in engine.calls] == [t.strip() for t in sentences]
    assert frames and all(f.generation == 7 and f.sample_rate == 22050 for f in frames)
    assert b"".join(f.data for f in frames) == b"".join(c.pcm for c in engine.calls)


async def test_first_audio_arrives_while_the_engine_is_still_synthesising() -> None:
    engine = Engine(gate_after=3)  # the engine stops at its 4th block until told
    async with running(synthesize=engine) as tts, tts.stream() as s:
        s.push_text(LONG)
        s.flush()
        first = await anext(s)
        assert first.data and not s.done
        assert first.duration <= esp.BLOCK_MS / 1000 + 0.01  # a block, not the utterance
        await until(engine.gated.is_set)
        assert not engine.calls[0].finished.is_set()  # still inside espeak_Synth
        engine.gate.set()
        s.end_input()
        rest = await audio_of(s)
    assert engine.calls[0].result is True
    assert first.data + rest == engine.calls[0].pcm


async def test_one_shot_resampled_output() -> None:
    engine = Engine()
    async with running(synthesize=engine, sample_rate=16000, voice=Voice(rate=200)) as tts:
        frame = await tts.synthesize("One shot.").collect()
    assert frame.sample_rate == 16000 and frame.channels == 1
    native = len(engine.calls[0].pcm) / 2 / 22050
    assert frame.duration == pytest.approx(native, abs=1 / 16000)


async def test_empty_text_completes_without_audio_or_engine_calls() -> None:
    engine = Engine()
    async with running(synthesize=engine) as tts:
        async with tts.stream() as s:
            s.push_text("   ")
            s.flush()
            s.end_input()
            assert await audio_of(s) == b""
        assert s.state is StreamState.COMPLETED
    assert engine.calls == []


# ----------------------------------------------------------------- the caller


async def test_cancel_mid_synthesis_aborts_the_engine_at_its_next_block() -> None:
    engine = Engine(gate_after=2)
    async with running(synthesize=engine) as tts:
        s = tts.stream()
        s.push_text(LONG)
        s.end_input()
        await anext(s)
        await until(engine.gated.is_set)
        s.cancel()
        assert s.state is StreamState.CANCELLED
        assert await audio_of(s) == b""
        engine.gate.set()  # espeak goes on to its next block, and is told to stop there
        await until(engine.calls[0].finished.is_set)
        assert engine.calls[0].result is False  # aborted, not spoken to the end
        assert len(engine.calls[0].blocks) == 2
        await s.aclose()
        # the same thread serves the next stream
        frame = await tts.synthesize("Next.").collect()
        assert frame.data == engine.calls[1].pcm
        assert len(tts.threads) == 1


async def test_a_stream_cancelled_while_queued_never_takes_the_library() -> None:
    engine = Engine(gate_after=1)
    async with running(synthesize=engine) as tts:
        a = tts.synthesize(LONG)
        await until(engine.gated.is_set)
        b = tts.synthesize("Queued behind the first.")
        worker = tts._slot.current
        assert worker is not None
        # b's job is queued behind a's on the (busy) engine thread before the cancel
        await until(lambda: worker._jobs.qsize() >= 1)
        b.cancel()
        engine.gate.set()
        await audio_of(a)
        await b.aclose()
        assert a.state is StreamState.COMPLETED and b.state is StreamState.CANCELLED
        assert [c.text for c in engine.calls] == [LONG.strip()]


async def test_aclose_twice_and_from_another_task() -> None:
    async with running() as tts:
        s = tts.stream()
        s.push_text(LONG)
        s.flush()
        await asyncio.gather(s.aclose(), s.aclose(), asyncio.create_task(s.aclose()))
        assert s.state is StreamState.CANCELLED
        live = tts.synthesize(LONG)
        await asyncio.gather(tts.aclose(), asyncio.create_task(tts.aclose()))
        await tts.aclose()
        assert live.state is StreamState.CANCELLED and tts.threads == []
        with pytest.raises(StreamClosedError, match="closed"):
            tts.stream()


async def test_many_streams_on_several_instances() -> None:
    texts = [f"Stream number {i} speaks." for i in range(6)]
    engines = [Engine(), Engine()]
    async with pair(*engines) as (one, two):

        async def speak(i: int) -> bytes:
            tts = (one, two)[i % 2]
            async with tts.stream(generation=i) as s:
                s.push_text(texts[i])
                s.end_input()
                frames = [f async for f in s]
                assert all(f.generation == i for f in frames)
                return b"".join(f.data for f in frames)

        results = await asyncio.gather(*(speak(i) for i in range(6)))
    made = {**engines[0].by_text(), **engines[1].by_text()}
    assert results == [made[t] for t in texts]
    assert all(results)


# ----------------------------------------------------------------- engine faults


async def test_engine_raises_mid_synthesis() -> None:
    async with running(synthesize=Engine(raise_after=3)) as tts, tts.stream() as s:
        s.push_text(LONG)
        s.end_input()
        got: list[bytes] = []
        with pytest.raises(ProviderError, match="injected engine failure") as info:
            async for f in s:
                got.append(f.data)
        assert info.value.stage == "synth" and info.value.provider == "espeak"
        assert len(got) == 3  # the audio before the failure was delivered
        assert s.state is StreamState.FAILED
        with pytest.raises(StreamClosedError, match="failed"):
            s.push_text("more")


async def test_engine_hangs_past_the_idle_deadline() -> None:
    engine = Engine(hang_after=2)
    async with running(synthesize=engine) as tts:
        async with tts.stream() as s:
            s.push_text(LONG)
            s.end_input()
            with pytest.raises(ProviderTimeoutError) as info:
                await audio_of(s)
            assert info.value.stage == "idle" and info.value.timeout == FAST.idle
        # ended by the deadline, not by the engine: it is still inside its hang
        assert engine.hanging.is_set() and not engine.hang_over.is_set()
        # a fresh thread serves the next stream while the hung one is still blocked
        frame = await tts.synthesize("Still here.").collect()
        assert frame.data == engine.calls[1].pcm
        assert len(tts.threads) == 2
        engine.release.set()  # the retired thread can end now; aclose joins it


async def test_a_synthesis_holding_the_library_fails_other_instances_in_their_deadline() -> None:
    """libespeak-ng is one per process: a hang inside it blocks every instance. They fail
    with a timeout instead of waiting for ever, and no blocked thread piles up."""
    stuck = Engine(hang_after=1, hang_holding_library=True)
    other = Engine()
    async with pair(stuck, other) as (a, b):
        hung = a.synthesize(LONG)
        await until(stuck.hanging.is_set)
        with pytest.raises(ProviderTimeoutError):
            await b.synthesize("Waiting for the library.").collect()
        with pytest.raises(ProviderTimeoutError):
            await audio_of(hung)
        # b's thread gave up its wait for the library: it is free again (or ended)
        await until(lambda: all(c.finished.is_set() for c in other.calls))
        stuck.release.set()
        frame = await b.synthesize("The library is free.").collect()
        assert frame.data == other.calls[-1].pcm


# ----------------------------------------------------------------- settings


async def test_bad_settings_and_input_are_refused() -> None:
    with pytest.raises(ConfigError, match="rate must be an int in"):
        Voice(rate=1000)
    with pytest.raises(ConfigError, match="pitch"):
        Voice(pitch=True)
    with pytest.raises(ConfigError, match="non-empty string"):
        Voice(name=" ")
    with pytest.raises(ConfigError, match="sample_rate must be a positive int"):
        EspeakTTS(sample_rate=-1)
    with pytest.raises(ConfigError, match=r"has no voice 'xx-nonexistent'; use e\.g\."):
        EspeakTTS(voice=Voice(name="xx-nonexistent"))
    with pytest.raises(ConfigError, match="must be an espeak Voice"):
        EspeakTTS(voice="en-us")  # type: ignore[arg-type]
    async with running(voice=Voice(name="en-us+f3", rate=150)) as tts:
        assert (await tts.synthesize("A variant voice.").collect()).duration > 0.5
        with pytest.raises(ConfigError, match="non-empty"):
            tts.synthesize("  ")
        async with tts.stream() as s:
            with pytest.raises(ConfigError, match="str"):
                s.push_text(5)  # type: ignore[arg-type]
