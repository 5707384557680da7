"""The streaming STT contract (services/stt.py) with a scripted in-process recogniser.

The recogniser "hears" words written in the audio: each run of equal non-zero samples
is one word named after its value (``w7`` for samples of 7), zero is silence. So every
transcript, timing and utterance index is known exactly, and faults are injected on cue.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError, StreamClosedError
from antiphon.services.stt import (
    EngineWorker,
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

#: Real threads and wall-clock time: the recogniser runs on its own thread.
pytestmark = pytest.mark.realtime

RATE = 16000
#: The recogniser runs on a real thread: deadlines scale with the CI profile.
_K = time_scale()
DL = STTDeadlines(connect=5.0 * _K, process=0.5 * _K, final=2.0 * _K, idle=1.0 * _K, close=3.0 * _K)
GUARD = 20.0 * _K


class Script:
    """Faults and observations shared by every recogniser of one STT."""

    def __init__(self) -> None:
        self.fail_load = False
        self.raise_on_chunk: int | None = None
        self.hang_on_chunk: int | None = None
        self.release = threading.Event()  # ends a hang
        self.hanging = threading.Event()  # set while a call hangs
        self.built = 0
        self.closed = 0
        self.finishes = 0  # utterances ended by finish()
        self.threads: set[str] = set()


class ScriptedRecognizer:
    sample_rate = RATE

    def __init__(self, script: Script) -> None:
        if script.fail_load:
            raise RuntimeError("model file is corrupt")
        script.built += 1
        self.script = script
        self.samples: list[np.ndarray] = []
        self.in_utt = False
        self.chunks = 0

    def _words(self) -> Hypothesis | None:
        if not self.samples:
            return None
        x = np.concatenate(self.samples)
        nz = np.flatnonzero(x)
        if not nz.size:
            return None
        words: list[str] = []
        prev = 0
        for v in x:
            if v and v != prev:
                words.append(f"w{v}")
            prev = v
        return Hypothesis(" ".join(words), nz[0] / RATE, (nz[-1] + 1) / RATE, 0.9)

    def start(self) -> None:
        self.script.threads.add(threading.current_thread().name)
        self.samples, self.in_utt = [], True

    def process(self, pcm: bytes) -> None:
        if not self.in_utt:
            raise RuntimeError("process() outside an utterance: start() was not called")
        s = self.script
        if s.raise_on_chunk is not None and self.chunks >= s.raise_on_chunk:
            raise RuntimeError("injected engine failure")
        if s.hang_on_chunk is not None and self.chunks == s.hang_on_chunk:
            s.hanging.set()
            try:
                s.release.wait(GUARD)  # past every deadline; running() releases it
            finally:
                s.hanging.clear()
        self.chunks += 1
        self.samples.append(np.frombuffer(pcm, dtype=np.int16))

    def partial(self) -> Hypothesis | None:
        h = self._words()
        return None if h is None else Hypothesis(h.text, h.start, h.end, 0.0)

    def finish(self) -> Hypothesis | None:
        if not self.in_utt:
            return None
        self.script.finishes += 1
        h = self._words()
        self.in_utt = False
        self.samples = []
        return h

    def close(self) -> None:
        self.script.closed += 1


class ScriptedSTT(InProcessSTT):
    provider = "scripted"

    def __init__(self, script: Script, **kw: object) -> None:
        super().__init__(deadlines=DL, **kw)  # type: ignore[arg-type]
        self.script = script

    def make_recognizer(self) -> Recognizer:
        return ScriptedRecognizer(self.script)


@contextlib.asynccontextmanager
async def running(**kw: object) -> AsyncIterator[tuple[ScriptedSTT, Script]]:
    leaks = LeakCheck()
    script = Script()
    stt = ScriptedSTT(script, **kw)
    try:
        async with asyncio.timeout(GUARD):
            yield stt, script
    finally:
        script.release.set()
        await stt.aclose()
    assert stt.active_streams == 0 and stt.threads == []
    await leaks.assert_clean(settle=2.0)


def words(*spec: tuple[int, float]) -> AudioFrame:
    """Audio of ``(value, seconds)`` runs: value 0 is silence, others are words."""
    parts = [np.full(round(sec * RATE), v, dtype=np.int16) for v, sec in spec]
    return AudioFrame.from_array(np.concatenate(parts), RATE)


def feed(s: RecognizeStream, audio: AudioFrame, chunk: float = 0.02) -> None:
    for f in audio.split(chunk):
        s.push_audio(f)


async def until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll ``condition`` (set by another thread) for at most ``limit`` seconds."""
    for _ in range(round(limit / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met within {limit}s")


async def drain(s: RecognizeStream) -> list[Transcript]:
    return [t async for t in s]


# ----------------------------------------------------------------- transcripts


async def test_finals_have_utterance_indexes_times_and_generation() -> None:
    async with running(interim_interval=0) as (stt, _), stt.stream(generation=4) as s:
        feed(s, words((0, 0.2), (7, 0.3), (0, 0.1), (8, 0.2), (0, 0.2)))  # 0.0-1.0 s
        s.flush()
        feed(s, words((0, 0.5), (9, 0.25), (0, 0.25)))  # 1.0-2.0 s
        s.end_input()  # ends the open utterance too
        got = await drain(s)
        assert s.state is StreamState.COMPLETED and s.error is None and s.done
    assert got == [
        Transcript("w7 w8", True, 0.2, 0.8, 0.9, 0, 4, flushed=True),  # the flush's answer
        Transcript("w9", True, 1.5, 1.75, 0.9, 1, 4),  # end_input's: not a flush
    ]
    assert s.audio_seconds == pytest.approx(2.0)


async def test_a_flush_with_nothing_to_recognise_is_answered_empty() -> None:
    """The answer ends a caller's wait on the flush even when there is no text."""
    async with running(interim_interval=0) as (stt, _), stt.stream(generation=1) as s:
        s.flush()  # nothing pushed: nothing to recognise
        first = await anext(s)
        assert first == Transcript("", True, 0.0, 0.0, 0.0, 0, 1, flushed=True)
        feed(s, words((0, 0.2), (7, 0.3), (0, 0.1)))
        s.flush()
        s.flush()  # the second flush is queued behind the first: only its answer counts
        s.end_input()
        got = await drain(s)
    assert [(t.text, t.flushed) for t in got] == [("w7", False), ("", True)]


async def test_interim_transcripts_grow_then_the_final_replaces_them() -> None:
    async with running(interim_interval=0.1) as (stt, _), stt.stream(generation=2) as s:
        feed(s, words((0, 0.1), (3, 0.3), (4, 0.3), (0, 0.1)))
        first = await anext(s)  # while the input is still open
        assert not first.is_final and not s.done
        s.end_input()
        rest = await drain(s)
    got = [first, *rest]
    interim = [t for t in got if not t.is_final]
    assert [t.text for t in interim] == ["w3", "w3 w4"]  # only changes are sent
    assert all(t.utterance == 0 and t.generation == 2 and t.confidence == 0.0 for t in interim)
    assert interim[0].start == pytest.approx(0.1)
    assert got[-1] == Transcript("w3 w4", True, 0.1, 0.7, 0.9, 0, 2)


async def test_flush_without_audio_and_empty_streams_give_no_utterance() -> None:
    async with running() as (stt, _):
        async with stt.stream() as s:
            s.flush()
            s.flush()
            feed(s, words((5, 0.2)))
            s.end_input()
            got = await drain(s)
        # one empty answer, to the second flush (the first was queued behind it)
        assert [(t.text, t.utterance, t.flushed) for t in got if t.is_final] == [
            ("", 0, True),
            ("w5", 0, False),
        ]
        async with stt.stream() as s:
            s.end_input()
            assert await drain(s) == []
            assert await s.wait() is StreamState.COMPLETED
        assert await stt.recognize(words((0, 1.0))) == []  # silence: no final


async def test_any_rate_and_channels_are_converted_with_exact_times() -> None:
    async with running(interim_interval=0) as (stt, _):
        audio = words((0, 0.5), (6, 0.5), (0, 0.5))
        stereo48 = AudioFrame.from_array(
            np.repeat(np.repeat(audio.as_array(), 3), 2).reshape(-1, 2), 48000
        )
        (final,) = await stt.recognize(stereo48)
        # resampling rings around the edges: the words are there, the times exact to ~ms
        assert "w6" in final.text.split()
        assert final.start == pytest.approx(0.5, abs=0.01)
        assert final.end == pytest.approx(1.0, abs=0.01)


async def test_an_utterance_held_back_in_the_resampler_is_still_recognised() -> None:
    """A frame shorter than the resampler's delay yields nothing until the flush."""
    async with running(interim_interval=0) as (stt, _), stt.stream() as s:
        s.push_audio(AudioFrame.from_array(np.full(8, 9, dtype=np.int16), 48000))
        s.end_input()
        await drain(s)  # no "process() outside an utterance" failure
        assert s.state is StreamState.COMPLETED


# ----------------------------------------------------------------- input rules


async def test_input_after_the_end_is_refused() -> None:
    async with running() as (stt, _), stt.stream() as s:
        with pytest.raises(ConfigError, match="AudioFrame"):
            s.push_audio(b"\x00\x00")  # type: ignore[arg-type]
        s.end_input()
        ops: list[Callable[[], None]] = [
            lambda: s.push_audio(words((1, 0.02))),
            s.flush,
            s.end_input,
        ]
        for op in ops:
            with pytest.raises(StreamClosedError, match="after end_input"):
                op()
        await drain(s)
        with pytest.raises(StreamClosedError, match="stream is completed"):
            s.push_audio(words((1, 0.02)))


async def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"STTDeadlines\.process"):
        STTDeadlines(process=0)
    with pytest.raises(ConfigError, match="interim_interval"):
        ScriptedSTT(Script(), interim_interval=-0.1)
    with pytest.raises(ConfigError, match="max_idle"):
        ScriptedSTT(Script(), max_idle=-1)
    with pytest.raises(ConfigError, match="deadlines must be STTDeadlines"):
        InProcessSTT.__init__(ScriptedSTT(Script()), deadlines=5)  # type: ignore[arg-type]


# ----------------------------------------------------------------- terminal states


async def test_cancel_mid_stream_stops_at_once_and_the_engine_is_reset_and_reused() -> None:
    async with running() as (stt, script):
        s = stt.stream()
        feed(s, words((2, 0.5)))
        assert not (await anext(s)).is_final
        s.cancel()
        assert s.state is StreamState.CANCELLED and await s.wait() is StreamState.CANCELLED
        assert await drain(s) == []
        with pytest.raises(StreamClosedError, match="cancelled"):
            s.push_audio(words((2, 0.02)))
        await s.aclose()
        assert script.finishes == 1  # the open utterance was ended on the engine (reset)
        # and the same engine serves again
        (final,) = await stt.recognize(words((3, 0.2)))
        assert final.text == "w3" and final.utterance == 0 and final.start == 0.0
        assert script.built == 1 and len(stt.threads) == 1 and len(script.threads) == 1


async def test_engine_raising_fails_the_stream_and_the_engine_is_discarded() -> None:
    async with running(interim_interval=0.1) as (stt, script):
        script.raise_on_chunk = 20
        async with stt.stream() as s:
            feed(s, words((1, 0.3), (2, 0.3)))
            s.end_input()
            got: list[Transcript] = []
            with pytest.raises(ProviderError, match="injected engine failure") as info:
                async for t in s:
                    got.append(t)
            assert info.value.stage == "process" and info.value.provider == "scripted"
            assert got and all(not t.is_final for t in got)  # what came before is kept
            assert s.state is StreamState.FAILED and s.error is info.value
            with pytest.raises(StreamClosedError, match="failed"):
                s.flush()
        script.raise_on_chunk = None
        (final,) = await stt.recognize(words((4, 0.2)))
        assert final.text == "w4"
        assert script.built == 2 and script.closed >= 1  # a new engine; the old one closed


async def test_hung_engine_fails_the_stream_by_its_deadline() -> None:
    async with running() as (stt, script):
        script.hang_on_chunk = 3
        async with stt.stream() as s:
            feed(s, words((1, 0.3)))
            s.end_input()
            with pytest.raises(ProviderTimeoutError) as info:
                await drain(s)
            assert info.value.stage == "process" and info.value.timeout == DL.process
            assert s.state is StreamState.FAILED
        assert script.hanging.is_set()  # the deadline ended it: the engine still hangs
        script.hang_on_chunk = None
        # a new engine serves the next stream while the stuck one is still blocked
        (final,) = await stt.recognize(words((6, 0.2)))
        assert final.text == "w6" and script.built == 2
        script.release.set()  # the stuck thread can now end; aclose joins it


async def test_cancel_while_the_engine_hangs_discards_the_worker() -> None:
    async with running() as (stt, script):
        script.hang_on_chunk = 2
        s = stt.stream()
        feed(s, words((1, 0.3)))
        await until(script.hanging.is_set)
        s.cancel()
        assert s.state is StreamState.CANCELLED
        script.hang_on_chunk = None
        (final,) = await stt.recognize(words((5, 0.2)))
        assert final.text == "w5" and script.built == 2
        script.release.set()
        await s.aclose()


async def test_engine_failing_to_load() -> None:
    async with running() as (stt, script):
        script.fail_load = True
        with pytest.raises(ProviderError, match="corrupt") as info:
            await stt.prewarm()
        assert info.value.stage == "load"
        async with stt.stream() as s:
            s.end_input()
            with pytest.raises(ProviderError) as info:
                await drain(s)
            assert info.value.stage == "load" and s.state is StreamState.FAILED


async def test_aclose_twice_from_other_tasks_and_after_close() -> None:
    async with running() as (stt, _):
        s = stt.stream()
        feed(s, words((1, 0.3)))
        await asyncio.gather(s.aclose(), asyncio.create_task(s.aclose()), s.aclose())
        assert s.state is StreamState.CANCELLED
        live = stt.stream()
        feed(live, words((2, 0.3)))
        await asyncio.gather(stt.aclose(), asyncio.create_task(stt.aclose()))
        assert live.state is StreamState.CANCELLED and stt.closed
        with pytest.raises(StreamClosedError, match="closed"):
            stt.stream()
        with pytest.raises(StreamClosedError, match="closed"):
            await stt.prewarm()


async def test_parallel_streams_get_their_own_engines_and_idle_ones_are_capped() -> None:
    async with running(max_idle=1, interim_interval=0) as (stt, script):

        async def one(i: int) -> list[Transcript]:
            async with stt.stream(generation=i) as s:
                feed(s, words((0, 0.1), (i + 1, 0.3)))
                s.end_input()
                return await s.finals()

        results = await asyncio.gather(*(one(i) for i in range(4)))
        assert [[(t.text, t.generation) for t in r] for r in results] == [
            [(f"w{i + 1}", i)] for i in range(4)
        ]
        assert script.built == 4 and len(script.threads) == 4
        await until(lambda: len(stt.threads) == 1)  # the extra engines closed and joined
        assert script.closed == 3 and stt.active_streams == 0


# ----------------------------------------------------------------- the worker itself


async def test_engine_worker_deadline_marks_it_stuck_and_close_is_bounded() -> None:
    leaks = LeakCheck()
    release = threading.Event()
    w: EngineWorker[list[int]] = EngineWorker(list, provider="unit")

    def add(engine: list[int]) -> int:
        engine.append(1)
        return len(engine)

    assert await w.call(add, timeout=2, stage="x") == 1
    assert await w.call(add, timeout=2, stage="x") == 2  # the same engine, built once
    with pytest.raises(ProviderError, match="ZeroDivisionError") as info:
        await w.call(lambda e: 1 / 0 if e else 0, timeout=2, stage="y")
    assert info.value.stage == "y" and isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(ProviderTimeoutError) as tinfo:
        await w.call(lambda e: release.wait(10), timeout=0.1, stage="slow")
    assert tinfo.value.stage == "slow" and w.stuck == "slow" and not w.usable
    assert await w.aclose(0.1) is False  # still blocked: abandoned, not joined
    with pytest.raises(StreamClosedError):
        w.submit(lambda e: None)
    release.set()
    assert await w.aclose(5.0) is True  # the call returned: the thread ended and joined
    assert not w.thread.is_alive()
    await leaks.assert_clean()


# ----------------------------------------------------------------- the engine pool


async def test_streams_share_a_bounded_pool_one_engine_per_utterance() -> None:
    async with running(max_engines=1, interim_interval=0) as (stt, script):
        await stt.prewarm()  # learns the engines' rate: streams lease only for speech
        a, b = stt.stream(generation=1), stt.stream(generation=2)
        # utterances that do not overlap: one engine serves both calls
        feed(a, words((1, 0.2)))
        a.flush()
        await until(lambda: stt.busy_engines == 0 and script.finishes == 1)
        feed(b, words((2, 0.2)))
        b.flush()
        await until(lambda: script.finishes == 2)
        # overlapping ones: the second waits for the engine, then is answered too
        feed(a, words((3, 0.2)))
        feed(b, words((4, 0.2)))
        a.end_input()
        b.end_input()
        got_a, got_b = await asyncio.gather(a.finals(), b.finals())
        assert [t.text for t in got_a] == ["w1", "w3"]
        assert [t.text for t in got_b] == ["w2", "w4"]
        assert script.built == 1 and stt.pool_waits >= 1 and stt.leases == 1 + 4  # prewarm
        await a.aclose()
        await b.aclose()


async def test_no_free_engine_within_the_deadline_is_a_typed_error_not_silence() -> None:
    fast = STTDeadlines(connect=0.3, process=0.5, final=2.0, idle=1.0, close=3.0)
    async with running(max_engines=1, interim_interval=0) as (stt, _):
        stt.deadlines = fast
        await stt.prewarm()
        a, b = stt.stream(), stt.stream()
        feed(a, words((1, 0.2)))  # a holds the engine: its utterance never ends
        await until(lambda: stt.busy_engines == 1)
        feed(b, words((2, 0.2)))
        with pytest.raises(ProviderTimeoutError) as info:
            await drain(b)
        assert info.value.stage == "engine pool" and info.value.timeout == fast.connect
        assert b.state is StreamState.FAILED
        a.end_input()
        assert [t.text for t in await a.finals()] == ["w1"]  # the holder is unharmed
        await a.aclose()
        await b.aclose()


def test_max_engines_must_be_a_positive_int() -> None:
    with pytest.raises(ConfigError, match="max_engines"):
        ScriptedSTT(Script(), max_engines=0)


async def test_the_scripted_double_marks_its_answer_to_a_flush() -> None:
    """``antiphon.testing.agent.ScriptedSTT`` answers a flush as the cloud STTs do: its
    final is ``flushed``, an empty final when there was nothing to recognise, and none
    for a flush the script drops (``silent_flushes``)."""
    from antiphon.testing.agent import ScriptedSTT

    async with (
        ScriptedSTT(["hello there", "again"], silent_flushes=[2]) as stt,
        stt.stream() as s,
    ):
        s.push_audio(AudioFrame.silence(0.5, 16000))
        s.flush()
        got = [await anext(s)]
        while not got[-1].is_final:
            got.append(await anext(s))
        s.flush()  # nothing since: an empty answer
        got.append(await anext(s))
        s.push_audio(AudioFrame.silence(0.5, 16000))
        s.flush()  # dropped by the script: no answer at all
        s.end_input()
        got += [t async for t in s]
    finals = [(t.text, t.flushed) for t in got if t.is_final]
    assert finals == [("hello there", True), ("", True)]
