"""The STT conformance suite for in-process engines (:class:`~antiphon.services.stt.InProcessSTT`).

A plugin's tests subclass :class:`InProcessSTTConformance` and set ``harness``::

    class TestPocketsphinxConformance(InProcessSTTConformance):
        harness = PocketsphinxHarness()

The faults are those an engine in our own process has: it fails to load, raises
mid-stream, hangs past its deadline; the caller cancels mid-stream, closes twice or from
another task, runs many streams at once. Faults are injected by wrapping the plugin's
recogniser in :class:`FaultyRecognizer`. Each test asserts the stream's one terminal
state, its transcripts or typed error, and that no task or thread is left behind. The
WebSocket faults of DESIGN.md are in :mod:`antiphon.testing.conformance.stt_ws`.
Requires pytest and pytest-asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import ClassVar

import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError, StreamClosedError
from antiphon.services.stt import (
    STT,
    Hypothesis,
    InProcessSTT,
    Recognizer,
    RecognizeStream,
    StreamState,
    STTDeadlines,
    Transcript,
)
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.vloop import time_scale

#: Deadlines for the suite, times the CI profile's
#: :func:`~antiphon.testing.vloop.time_scale`: the engine does real work on a real thread,
#: so the suite runs on real time (marker ``realtime``), and a loaded 2-core machine
#: stretches it. The guard catches real hangs of the suite.
_SCALE = time_scale()
FAST = STTDeadlines(
    connect=20.0 * _SCALE,
    process=5.0 * _SCALE,
    final=8.0 * _SCALE,
    idle=5.0 * _SCALE,
    close=10.0 * _SCALE,
)
GUARD = 60.0 * _SCALE
#: The longest a hanging engine call blocks if the test never releases it (a safety
#: net: the test releases it once it has seen the stream fail by its deadline).
HANG_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class EngineFaults:
    """What a wrapped in-process engine does wrong, on purpose."""

    fail_load: bool = False
    """Raise while the engine is being built."""
    raise_after_chunks: int | None = None
    """Raise from ``process()`` once this many chunks were processed."""
    hang_after_chunks: int | None = None
    """Block ``process()`` once this many chunks were processed, until the test calls
    :meth:`FaultyRecognizer.release` (or ``hang_seconds`` pass)."""
    hang_seconds: float = HANG_SECONDS


class EngineFault(RuntimeError):
    """The error a :class:`FaultyRecognizer` raises."""


class FaultyRecognizer:
    """Wraps a :class:`~antiphon.services.stt.Recognizer` and misbehaves per ``faults``."""

    def __init__(self, inner: Recognizer, faults: EngineFaults) -> None:
        self.inner = inner
        self.faults = faults
        self.sample_rate = inner.sample_rate
        self.chunks = 0
        #: Set while ``process()`` is blocked by ``hang_after_chunks``.
        self.hanging = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        """End a hang of ``process()`` now."""
        self._released.set()

    def start(self) -> None:
        self.inner.start()

    def process(self, pcm: bytes) -> None:
        f = self.faults
        if f.raise_after_chunks is not None and self.chunks >= f.raise_after_chunks:
            raise EngineFault("injected engine failure")
        if f.hang_after_chunks is not None and self.chunks == f.hang_after_chunks:
            self.hanging.set()
            try:
                self._released.wait(f.hang_seconds)
            finally:
                self.hanging.clear()
        self.chunks += 1
        self.inner.process(pcm)

    def partial(self) -> Hypothesis | None:
        return self.inner.partial()

    def finish(self) -> Hypothesis | None:
        return self.inner.finish()

    def close(self) -> None:
        self.inner.close()


def wrapper(
    faults: EngineFaults, made: list[FaultyRecognizer] | None = None
) -> Callable[[Recognizer], Recognizer] | None:
    """The recogniser wrapper for ``faults`` (None when healthy); each recogniser it
    builds is appended to ``made``."""
    if faults == EngineFaults():
        return None

    def wrap(inner: Recognizer) -> Recognizer:
        if faults.fail_load:
            inner.close()
            raise EngineFault("injected load failure")
        faulty = FaultyRecognizer(inner, faults)
        if made is not None:
            made.append(faulty)
        return faulty

    return wrap


class STTHarness(ABC):
    """What the suite needs to know about one in-process plugin."""

    @abstractmethod
    def make_stt(
        self, *, deadlines: STTDeadlines, wrap: Callable[[Recognizer], Recognizer] | None
    ) -> InProcessSTT:
        """The plugin, building each recogniser as ``wrap(recogniser)`` when ``wrap``."""

    @abstractmethod
    def speech(self, text: str) -> AudioFrame:
        """Audio of ``text`` spoken (with a little silence around it)."""

    @abstractmethod
    def heard(self, text: str, transcript: str) -> bool:
        """Whether ``transcript`` is an acceptable recognition of ``text``."""


@dataclass
class Run:
    stt: InProcessSTT
    harness: STTHarness
    engines: list[FaultyRecognizer]


async def _all(stream: RecognizeStream) -> list[Transcript]:
    return [t async for t in stream]


def _feed(stream: RecognizeStream, audio: AudioFrame, chunk: float = 0.02) -> None:
    for f in audio.split(chunk):
        stream.push_audio(f)


@pytest.mark.realtime
class InProcessSTTConformance:
    """The in-process faults; subclasses set ``harness``. The engine works on a real
    thread, so the suite keeps real time (its deadlines scale with the CI profile)."""

    harness: ClassVar[STTHarness]
    TEXT: ClassVar[str] = "What time is it?"

    @contextlib.asynccontextmanager
    async def run(self, faults: EngineFaults | None = None) -> AsyncIterator[Run]:
        leaks = LeakCheck()
        engines: list[FaultyRecognizer] = []
        stt = self.harness.make_stt(deadlines=FAST, wrap=wrapper(faults or EngineFaults(), engines))
        try:
            async with asyncio.timeout(GUARD):
                yield Run(stt, self.harness, engines)
        finally:
            for engine in engines:  # a test that failed early leaves no engine blocked
                engine.release()
            await stt.aclose()
        assert stt.active_streams == 0
        assert stt.threads == []
        await leaks.assert_clean(settle=1.0 * _SCALE)

    # ----------------------------------------------------------------- healthy engine

    async def test_recognizes_speech_with_timings(self) -> None:
        audio = self.harness.speech(self.TEXT)
        async with self.run() as r, r.stt.stream(generation=3) as s:
            _feed(s, audio)
            s.end_input()
            results = await _all(s)
            assert s.state is StreamState.COMPLETED and s.error is None
        finals = [t for t in results if t.is_final]
        assert len(finals) == 1
        final = finals[0]
        assert self.harness.heard(self.TEXT, final.text), final.text
        assert 0.0 <= final.start < final.end <= audio.duration + 0.05
        assert 0.0 <= final.confidence <= 1.0
        assert all(t.generation == 3 for t in results)
        assert results[-1] is final
        interim = [t for t in results if not t.is_final]
        assert interim, "interim transcripts arrive while audio is pushed"
        assert all(t.utterance == 0 and t.start >= 0.0 for t in interim)

    async def test_interim_arrives_before_input_ends(self) -> None:
        audio = self.harness.speech(self.TEXT)
        async with self.run() as r, r.stt.stream() as s:
            _feed(s, audio)
            first = await anext(s)
            assert not first.is_final and not s.done
            s.end_input()
            rest = await _all(s)
            assert rest[-1].is_final

    async def test_flush_ends_an_utterance_and_the_stream_goes_on(self) -> None:
        audio = self.harness.speech(self.TEXT)
        async with self.run() as r, r.stt.stream() as s:
            _feed(s, audio)
            s.flush()
            _feed(s, audio)
            s.end_input()
            finals = await s.finals()
        assert [t.utterance for t in finals] == [0, 1]
        first, second = finals
        assert first.end <= audio.duration + 0.05
        assert second.start >= audio.duration - 0.05  # times run on across utterances
        assert all(self.harness.heard(self.TEXT, t.text) for t in finals)

    async def test_empty_stream_completes_without_transcripts(self) -> None:
        async with self.run() as r:
            async with r.stt.stream() as s:
                s.end_input()
                assert await _all(s) == []
            assert s.state is StreamState.COMPLETED

    async def test_silence_gives_no_final(self) -> None:
        async with self.run() as r:
            finals = await r.stt.recognize(AudioFrame.silence(1.0, 16000))
            assert [t for t in finals if t.text.strip()] == []

    async def test_engine_is_reused_across_streams(self) -> None:
        audio = self.harness.speech(self.TEXT)
        async with self.run() as r:
            for _ in range(3):
                finals = await r.stt.recognize(audio)
                assert finals and self.harness.heard(self.TEXT, finals[0].text)
            assert len(r.stt.threads) == 1

    async def test_any_rate_and_channels(self) -> None:
        import numpy as np

        from antiphon.audio.resample import AudioConverter

        audio = self.harness.speech(self.TEXT)
        conv = AudioConverter(48000, 2)
        stereo = conv.process(audio)
        tail = conv.flush()
        stereo48 = AudioFrame(stereo.data + tail.data, 48000, 2)
        assert stereo48.as_array().shape[1] == 2 and np.any(stereo48.as_array())
        async with self.run() as r:
            finals = await r.stt.recognize(stereo48)
            assert finals and self.harness.heard(self.TEXT, finals[0].text)

    # ----------------------------------------------------------------- engine faults

    async def test_engine_fails_to_load(self) -> None:
        async with self.run(EngineFaults(fail_load=True)) as r, r.stt.stream() as s:
            _feed(s, self.harness.speech(self.TEXT))
            s.end_input()
            with pytest.raises(ProviderError) as info:
                await _all(s)
            assert info.value.stage == "load"
            assert s.state is StreamState.FAILED and s.error is info.value

    async def test_engine_raises_mid_stream(self) -> None:
        async with self.run(EngineFaults(raise_after_chunks=40)) as r, r.stt.stream() as s:
            _feed(s, self.harness.speech(self.TEXT))
            s.end_input()
            got: list[Transcript] = []
            with pytest.raises(ProviderError, match="injected engine failure") as info:
                async for t in s:
                    got.append(t)
            assert info.value.stage == "process"
            assert all(not t.is_final for t in got)
            assert s.state is StreamState.FAILED
            with pytest.raises(StreamClosedError, match="failed"):
                s.push_audio(AudioFrame.silence(0.02, 16000))
        # the failed engine is not reused: a new stream works
        async with self.run() as r:
            assert await r.stt.recognize(self.harness.speech(self.TEXT))

    async def test_engine_hangs_past_its_deadline(self) -> None:
        async with self.run(EngineFaults(hang_after_chunks=5)) as r:
            async with r.stt.stream() as s:
                _feed(s, self.harness.speech(self.TEXT))
                s.end_input()
                with pytest.raises(ProviderTimeoutError) as info:
                    await _all(s)
                assert info.value.stage == "process"
                assert info.value.timeout == FAST.process
                # ended by its deadline, not by the engine's return: it still hangs
                assert [e.hanging.is_set() for e in r.engines] == [True]
                r.engines[0].release()
            assert s.state is StreamState.FAILED

    # ----------------------------------------------------------------- the caller

    async def test_cancel_mid_stream(self) -> None:
        audio = self.harness.speech(self.TEXT)
        async with self.run() as r:
            s = r.stt.stream()
            _feed(s, audio)
            first = await anext(s)
            assert not first.is_final
            s.cancel()
            assert s.state is StreamState.CANCELLED and s.done
            assert await _all(s) == []  # nothing after the cancel
            with pytest.raises(StreamClosedError, match="cancelled"):
                s.push_audio(audio)
            await s.aclose()
            # the engine was reset and is reused
            finals = await r.stt.recognize(audio)
            assert finals and self.harness.heard(self.TEXT, finals[0].text)
            assert len(r.stt.threads) == 1

    async def test_aclose_twice_and_from_another_task(self) -> None:
        async with self.run() as r:
            s = r.stt.stream()
            _feed(s, self.harness.speech(self.TEXT))
            await asyncio.gather(s.aclose(), s.aclose(), asyncio.create_task(s.aclose()))
            await s.aclose()
            assert s.state is StreamState.CANCELLED
            await asyncio.gather(r.stt.aclose(), asyncio.create_task(r.stt.aclose()))
            await r.stt.aclose()
            assert r.stt.closed
            with pytest.raises(StreamClosedError, match="closed"):
                r.stt.stream()

    async def test_service_aclose_cancels_live_streams(self) -> None:
        async with self.run() as r:
            s = r.stt.stream()
            _feed(s, self.harness.speech(self.TEXT))
            await r.stt.aclose()
            assert s.state is StreamState.CANCELLED

    async def test_many_streams_at_once(self) -> None:
        audio = self.harness.speech(self.TEXT)
        async with self.run() as r:

            async def one(i: int) -> list[Transcript]:
                async with r.stt.stream(generation=i) as s:
                    _feed(s, audio)
                    s.end_input()
                    return await s.finals()

            results = await asyncio.gather(*(one(i) for i in range(4)))
            for i, finals in enumerate(results):
                assert len(finals) == 1 and finals[0].generation == i
                assert self.harness.heard(self.TEXT, finals[0].text)
            assert r.stt.active_streams == 0

    async def test_bad_input_is_refused(self) -> None:
        async with self.run() as r, r.stt.stream() as s:
            with pytest.raises(ConfigError, match="AudioFrame"):
                s.push_audio(b"\x00\x00")  # type: ignore[arg-type]
            s.end_input()
            with pytest.raises(StreamClosedError, match="end_input"):
                s.push_audio(AudioFrame.silence(0.02, 16000))
            with pytest.raises(StreamClosedError, match="end_input"):
                s.flush()
            await _all(s)

    async def test_no_thread_left_after_close(self) -> None:
        before = set(threading.enumerate())
        async with self.run() as r:
            await r.stt.prewarm()
            assert len(r.stt.threads) == 1
        assert set(threading.enumerate()) <= before


__all__ = [
    "FAST",
    "STT",
    "EngineFault",
    "EngineFaults",
    "FaultyRecognizer",
    "InProcessSTTConformance",
    "STTHarness",
    "wrapper",
]
