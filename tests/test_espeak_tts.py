"""EspeakTTS: the TTS contract with an in-process engine.

The WebSocket faults of CoreTTSConformance have no meaning for a library in our own
process; these are their in-process equivalents (the engine raises, hangs, is cancelled
mid-synthesis) plus the healthy-path checks of the suite, with exact audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable

import pytest

from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError, StreamClosedError
from antiphon.plugins.espeak import EspeakTTS, Voice
from antiphon.plugins.espeak.engine import synthesize, synthesize_pcm
from antiphon.services.tts import StreamState, SynthesisStream, TTSDeadlines
from antiphon.testing.leaks import LeakCheck

FAST = TTSDeadlines(connect=1.0, first_audio=2.0, idle=1.0, clear=0.5, close=5.0)
HANG = 2.5  # > FAST.idle, < FAST.close


@contextlib.asynccontextmanager
async def running(**kw: object) -> AsyncIterator[EspeakTTS]:
    leaks = LeakCheck()
    tts = EspeakTTS(deadlines=FAST, **kw)  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(30):
            yield tts
    finally:
        await tts.aclose()
    assert tts.active_streams == 0 and tts.threads == []
    await leaks.assert_clean(settle=1.0)


async def audio_of(s: SynthesisStream) -> bytes:
    return b"".join([f.data async for f in s])


class Probe:
    """Wraps the engine: counts blocks, raises or hangs after ``after`` blocks."""

    def __init__(self, *, raise_after: int | None = None, hang_after: int | None = None) -> None:
        self.raise_after = raise_after
        self.hang_after = hang_after
        self.blocks = 0
        self.aborted = threading.Event()
        self.calls = 0

    def __call__(self, text: str, voice: Voice, on_audio: Callable[[bytes], bool]) -> bool:
        self.calls += 1
        hang = False

        def wrapped(pcm: bytes) -> bool:
            nonlocal hang
            if self.raise_after is not None and self.blocks >= self.raise_after:
                raise RuntimeError("injected engine failure")
            if self.hang_after is not None and self.blocks == self.hang_after:
                hang = True
                return False  # leave espeak (and its lock), then hang outside it
            self.blocks += 1
            keep = on_audio(pcm)
            if not keep:
                self.aborted.set()
            return keep

        done = synthesize(text, voice, wrapped)
        if hang:
            time.sleep(HANG)
        return done


async def test_speaks_text_exactly_and_completes() -> None:
    async with running() as tts, tts.stream() as s:
        s.push_text("Hello there, ")
        s.push_text("how are you?")
        s.end_input()
        audio = await audio_of(s)
        assert s.state is StreamState.COMPLETED and s.error is None
    assert audio == synthesize_pcm("Hello there, how are you?")
    assert s.sample_rate == tts.native_rate == 22050


async def test_flushes_are_spoken_in_order_with_the_generation() -> None:
    sentences = ["First sentence.", " Second one here.", " And a third."]
    async with running() as tts, tts.stream(generation=7) as s:
        for text in sentences:
            s.push_text(text)
            s.flush()
        s.end_input()
        frames = [f async for f in s]
    assert frames and all(f.generation == 7 and f.sample_rate == 22050 for f in frames)
    assert b"".join(f.data for f in frames) == b"".join(
        synthesize_pcm(t.strip()) for t in sentences
    )


async def test_audio_streams_in_blocks_before_input_ends() -> None:
    async with running() as tts, tts.stream() as s:
        s.push_text("A fairly long sentence, so that several blocks of audio come out.")
        s.flush()
        first = await anext(s)
        assert first.data and not s.done
        assert first.duration < 0.2  # a block, not the whole utterance
        s.end_input()
        rest = await audio_of(s)
        assert first.data + rest == synthesize_pcm(
            "A fairly long sentence, so that several blocks of audio come out."
        )


async def test_one_shot_and_resampled_output() -> None:
    async with running(sample_rate=16000, voice=Voice(rate=200)) as tts:
        frame = await tts.synthesize("One shot.").collect()
        assert frame.sample_rate == 16000 and frame.channels == 1
        native = len(synthesize_pcm("One shot.", Voice(rate=200))) / 2 / 22050
        assert frame.duration == pytest.approx(native, abs=0.002)


async def test_empty_stream_completes_without_audio() -> None:
    async with running() as tts:
        async with tts.stream() as s:
            s.push_text("   ")
            s.flush()
            s.end_input()
            assert await audio_of(s) == b""
        assert s.state is StreamState.COMPLETED


async def test_cancel_mid_synthesis_stops_the_engine_at_once() -> None:
    probe = Probe()
    async with running(synthesize=probe) as tts:
        s = tts.stream()
        s.push_text("This is a long sentence that would take many blocks to speak. " * 5)
        s.end_input()
        await anext(s)
        s.cancel()
        assert s.state is StreamState.CANCELLED
        assert await audio_of(s) == b""
        await s.aclose()
        # the engine saw the abort at its next block instead of speaking everything
        async with asyncio.timeout(5):
            while not probe.aborted.is_set():
                await asyncio.sleep(0.01)
        whole = len(synthesize_pcm("This is a long sentence that would take many blocks. " * 5))
        assert probe.blocks * 60 * 22050 * 2 // 1000 < whole
        # and the thread serves the next stream
        frame = await tts.synthesize("Next.").collect()
        assert frame.data == synthesize_pcm("Next.")
        assert len(tts.threads) == 1


async def test_engine_raises_mid_synthesis() -> None:
    async with running(synthesize=Probe(raise_after=3)) as tts, tts.stream() as s:
        s.push_text("A sentence long enough for more than three blocks of audio.")
        s.end_input()
        got: list[bytes] = []
        with pytest.raises(ProviderError, match="injected engine failure") as info:
            async for f in s:
                got.append(f.data)
        assert info.value.stage == "synth"
        assert len(got) == 3  # the audio before the failure was delivered
        assert s.state is StreamState.FAILED
        with pytest.raises(StreamClosedError, match="failed"):
            s.push_text("more")


async def test_engine_hangs_past_the_idle_deadline() -> None:
    async with running(synthesize=Probe(hang_after=2)) as tts:
        loop = asyncio.get_running_loop()
        async with tts.stream() as s:
            s.push_text("A sentence long enough for more than two blocks of audio.")
            s.end_input()
            began = loop.time()
            with pytest.raises(ProviderTimeoutError) as info:
                await audio_of(s)
            assert info.value.stage == "idle" and info.value.timeout == FAST.idle
            assert loop.time() - began < HANG
        # a fresh thread serves the next stream while the hung one is still blocked
        frame = await tts.synthesize("Still here.").collect()
        assert frame.data  # (the probe hangs each call after its 2nd block: audio so far)


async def test_aclose_twice_and_from_another_task() -> None:
    async with running() as tts:
        s = tts.stream()
        s.push_text("Some words to speak.")
        s.flush()
        await asyncio.gather(s.aclose(), s.aclose(), asyncio.create_task(s.aclose()))
        assert s.state is StreamState.CANCELLED
        await asyncio.gather(tts.aclose(), asyncio.create_task(tts.aclose()))
        await tts.aclose()
        with pytest.raises(StreamClosedError, match="closed"):
            tts.stream()


async def test_many_streams_at_once() -> None:
    texts = [f"Stream number {i} speaks." for i in range(6)]
    async with running() as tts:

        async def one(i: int) -> bytes:
            async with tts.stream(generation=i) as s:
                s.push_text(texts[i])
                s.end_input()
                frames = [f async for f in s]
                assert all(f.generation == i for f in frames)
                return b"".join(f.data for f in frames)

        results = await asyncio.gather(*(one(i) for i in range(6)))
        assert results == [synthesize_pcm(t) for t in texts]


async def test_bad_settings_and_input_are_refused() -> None:
    with pytest.raises(ConfigError, match="rate"):
        Voice(rate=1000)
    with pytest.raises(ConfigError, match="sample_rate"):
        EspeakTTS(sample_rate=-1)
    async with running(voice=Voice(name="xx-nonexistent")) as tts:
        with pytest.raises(ProviderError, match="no voice"):
            await tts.synthesize("hello").collect()
        with pytest.raises(ConfigError, match="non-empty"):
            tts.synthesize("  ")
        async with tts.stream() as s:
            with pytest.raises(ConfigError, match="str"):
                s.push_text(5)  # type: ignore[arg-type]
