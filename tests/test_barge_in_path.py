"""The barge-in path when inference owns the CPU: VAD results acted on as the worker
delivers them, and inference's native threads below the real-time ones.

- An :class:`~antiphon.services.vad.OffloadedVAD` with a listener hands the worker's events
  over the moment they are delivered (before, they waited for the next pushed frame); the
  session listens, so a barge-in's pause needs no further frame. Driven on the virtual
  clock with a worker that runs its jobs only when the test says.
- Inference runs below the event loop: an ``inference`` :class:`~antiphon.aio.worker.ThreadWorker`
  lowers its own thread, :func:`~antiphon.aio.worker.build_niced` the threads an engine
  creates (never the calling thread); with real engines (``engines``): Piper's thread and
  onnxruntime pool, Whisper's engine threads and CTranslate2 team.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from antiphon.agent.events import AgentPaused
from antiphon.agent.session import AgentSession
from antiphon.aio import worker as worker_module
from antiphon.aio.clock import VirtualClock
from antiphon.aio.worker import (
    BatchWorker,
    ThreadWorker,
    build_niced,
    lower_thread_priority,
    thread_nice,
)
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError
from antiphon.services.vad import OffloadedVAD, SpeechEnd, SpeechStart, VADEvent
from antiphon.testing.agent import (
    Conversation,
    EnergyVAD,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    silence,
    speech,
)

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's"
)


@pytest.fixture(autouse=True)
def serving_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests build engines as ``antiphon serve`` does: inference lowered."""
    monkeypatch.setattr(worker_module, "INFERENCE_NICE", worker_module.SERVE_INFERENCE_NICE)


def test_inference_runs_at_normal_priority_unless_a_server_lowers_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import subprocess

    probe = "import antiphon.aio.worker as w; print(w.INFERENCE_NICE)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "0"  # a library, a test, `antiphon talk`: not lowered
    monkeypatch.delenv(worker_module.NICE_ENV, raising=False)
    assert worker_module.inference_nice_from_env(5) == 5
    monkeypatch.setenv(worker_module.NICE_ENV, "0")
    assert worker_module.inference_nice_from_env(5) == 0
    for bad in ("-1", "20", "low"):
        monkeypatch.setenv(worker_module.NICE_ENV, bad)
        with pytest.raises(ConfigError, match="ANTIPHON_INFERENCE_NICE must be an integer"):
            worker_module.inference_nice_from_env(5)


class HeldWorker(BatchWorker):
    """A worker that runs its jobs, and delivers their results, only on :meth:`release`."""

    def __init__(self) -> None:
        super().__init__("held")
        self.held: list[tuple[Callable[[], Any], Callable[[Any], None]]] = []

    def submit(self, job: Callable[[], Any], done: Callable[[Any], None]) -> bool:
        self.held.append((job, done))
        return True

    def release(self) -> int:
        held, self.held = self.held, []
        for job, done in held:
            done(job())
        return len(held)


# ------------------------------------------------------------ VAD results, as delivered


def test_a_listener_gets_the_workers_events_at_delivery_each_once_in_order() -> None:
    audio = AudioFrame.from_array(
        np.concatenate([silence(0.2).as_array(), speech(0.3).as_array(), silence(0.6).as_array()]),
        16000,
    )
    frames = audio.split(0.02)
    expected: list[VADEvent] = []
    reference = EnergyVAD()
    for f in frames:
        expected += reference.process(f)
    expected += reference.flush()
    assert [type(e) for e in expected] == [SpeechStart, SpeechEnd]

    worker = HeldWorker()
    vad = OffloadedVAD(EnergyVAD(), worker)
    heard: list[VADEvent] = []
    vad.on_decided(heard.extend)
    returned: list[VADEvent] = []
    for i, f in enumerate(frames):
        returned += vad.process(f)
        if i % 3 == 2:  # the worker wakes every third frame
            before = len(heard)
            worker.release()
            # what this delivery decided is with the listener now, not at the next frame
            assert heard[before:] == [
                e for e in expected if e not in heard[:before] and e.at <= vad.position
            ]
    worker.release()
    returned += vad.flush()
    assert heard + returned == expected  # every event once, in order
    assert SpeechStart in {type(e) for e in heard}  # the worker's went to the listener


def test_without_a_listener_the_events_wait_for_the_next_frame() -> None:
    worker = HeldWorker()
    vad = OffloadedVAD(EnergyVAD(), worker)
    for f in speech(0.2).split(0.02):
        assert vad.process(f) == []  # nothing delivered yet
    worker.release()
    assert vad.speaking  # decided and delivered, but not yet handed over
    events = vad.process(silence(0.02))
    assert [type(e) for e in events] == [SpeechStart]


@pytest.mark.virtual_time
async def test_the_session_pauses_the_agent_when_the_worker_delivers_not_a_frame_later() -> None:
    """A barge-in's speech start reaches the session as the VAD worker delivers it: the
    pause (a phone bridge's ``clear``) goes out with no further frame pushed."""
    clock = VirtualClock()
    worker = HeldWorker()
    stt = ScriptedSTT(["a question"])
    llm = ScriptedLLM([], default="A long answer, said slowly enough to talk over it.", clock=clock)
    tts = ToneTTS(clock=clock)
    session = AgentSession(
        vad=OffloadedVAD(EnergyVAD(), worker), stt=stt, llm=llm, tts=tts, clock=clock
    )

    async def push(audio: AudioFrame, *, release: bool) -> None:
        for frame in audio.split(0.02):
            session.push_audio(frame)
            if release:
                worker.release()
            await c.settle()
            await clock.advance(frame.duration)
            await c.settle()

    try:
        async with asyncio.timeout(40), Conversation(session, clock) as c:
            await push(speech(0.4), release=True)
            for _ in range(200):  # the agent answers
                if len(c.heard) >= 10:
                    break
                await push(silence(0.02), release=True)
            assert len(c.heard) >= 10 and not c.of(AgentPaused)
            await push(speech(0.1), release=False)  # the caller talks over: not yet analysed
            assert not c.of(AgentPaused)
            assert worker.release() == 1
            await c.settle()  # no frame pushed since
            assert len(c.of(AgentPaused)) == 1
    finally:
        await session.aclose()
        for service in (stt, llm, tts):
            await service.aclose()


# ------------------------------------------------------------ priority of inference


def _nice_of_threads_made_by(factory: Callable[[], Any]) -> tuple[Any, dict[int, int]]:
    """``factory()``'s result and the nice value of each thread it left alive."""
    before = set(os.listdir("/proc/self/task"))
    result = factory()
    made = {int(t) for t in os.listdir("/proc/self/task")} - {int(t) for t in before}
    nices = {tid: thread_nice(tid) for tid in made}
    return result, {tid: n for tid, n in nices.items() if n is not None}


@linux_only
def test_threads_made_by_a_niced_build_inherit_its_priority_and_the_caller_keeps_its_own() -> None:
    base = thread_nice()
    assert base is not None
    stop = threading.Event()

    def factory() -> tuple[threading.Thread, int | None]:
        pool = threading.Thread(target=stop.wait, daemon=True)  # a native pool's stand-in
        pool.start()
        return pool, thread_nice()

    try:
        (pool, builder), _ = _nice_of_threads_made_by(lambda: build_niced(factory, name="t"))
        assert builder == min(19, base + worker_module.INFERENCE_NICE)
        assert pool.native_id is not None
        assert thread_nice(pool.native_id) == builder  # inherited at creation
        assert thread_nice() == base  # the caller (which holds the GIL) is untouched
    finally:
        stop.set()


@linux_only
def test_a_niced_build_raises_what_the_factory_raises_and_nice_zero_builds_inline() -> None:
    def boom() -> None:
        raise ValueError("no model")

    with pytest.raises(ValueError, match="no model"):
        build_niced(boom, name="t")
    here = threading.get_ident()
    assert build_niced(threading.get_ident, name="t", nice=0) == here


@linux_only
async def test_an_inference_worker_runs_below_the_loop_and_an_ordinary_one_does_not() -> None:
    base = thread_nice()
    assert base is not None
    lowered = min(19, base + worker_module.INFERENCE_NICE)
    inference = ThreadWorker(lambda: None, provider="t", inference=True)
    ordinary = ThreadWorker(lambda: None, provider="t")
    try:
        assert await inference.call(lambda _: thread_nice(), timeout=30, stage="t") == lowered
        assert await ordinary.call(lambda _: thread_nice(), timeout=30, stage="t") == base
        # idempotent: lowering a lowered thread again leaves it where it is
        again = await inference.call(
            lambda _: (lower_thread_priority(worker_module.INFERENCE_NICE), thread_nice()),
            timeout=30,
            stage="t",
        )
        assert again == (True, lowered)
        assert thread_nice() == base  # the loop's thread
    finally:
        assert await inference.aclose(5.0) and await ordinary.aclose(5.0)


@linux_only
@pytest.mark.engines
async def test_piper_runs_below_the_loop_on_its_thread_and_its_pool() -> None:
    import onnxruntime  # noqa: F401 - its import makes threads of its own: not the pool's

    from antiphon.plugins.piper.tts import PiperTTS

    base = thread_nice()
    assert base is not None
    lowered = min(19, base + worker_module.INFERENCE_NICE)
    tts = PiperTTS(threads=2)
    before = {int(t) for t in os.listdir("/proc/self/task")}
    try:
        await tts.prewarm()
        made = {int(t) for t in os.listdir("/proc/self/task")} - before
        (engine,) = tts.threads
        assert engine.native_id in made and thread_nice(engine.native_id) == lowered
        pool = made - {engine.native_id}
        assert pool, "onnxruntime made no pool thread for 2 intra-op threads"
        assert {thread_nice(t) for t in pool} == {lowered}
        assert thread_nice() == base
    finally:
        await tts.aclose()


@linux_only
@pytest.mark.engines
def test_whisper_runs_ctranslate2s_threads_below_the_engine_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CTranslate2 starts its workers when the model is built (their OpenMP team, at the
    first decode, is made by them and inherits their priority). The load's warm-up
    decode is skipped here: lowered threads on a machine under full load are slow."""
    from faster_whisper import WhisperModel

    from antiphon.plugins.whisper import WhisperSTT
    from antiphon.plugins.whisper import stt as whisper

    monkeypatch.setattr(whisper, "_models", {})  # a model loaded by another test: elsewhere
    monkeypatch.setattr(WhisperModel, "transcribe", lambda *a, **k: ([], None))
    base = thread_nice()
    assert base is not None
    lowered = min(19, base + worker_module.INFERENCE_NICE)
    _, made = _nice_of_threads_made_by(WhisperSTT(threads=2)._load)
    assert made and set(made.values()) == {lowered}  # CTranslate2's workers
    assert thread_nice() == base  # the thread that loaded it (here, the test's)
    # a stream's engine thread lowers itself when it makes its recogniser
    niced: list[int | None] = []
    stt = WhisperSTT(threads=2)

    def engine_thread() -> None:
        stt.make_recognizer()
        niced.append(thread_nice())

    engine = threading.Thread(target=engine_thread)
    engine.start()
    engine.join()
    assert niced == [lowered]
