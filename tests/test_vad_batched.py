"""Silero on onnxruntime, batched across calls: the same decisions as the ggml Silero on the
suite's speech, many calls' windows in one run with each call's state kept apart, and the
VAD contract (close mid-batch, reset, flush). The batch's jobs are held and run by the
test (no thread, no clock), except in the tests of the real worker thread. The model is the
default one: Silero VAD v6 from the ``faster-whisper`` wheel, rewritten for a batch."""

from __future__ import annotations

import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from antiphon.agent.pipeline import PipelineSpec
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError, StreamClosedError
from antiphon.plugins.silero import BatchedSileroVAD, SileroBatchWorker, SileroOnnxVAD, SileroVAD
from antiphon.plugins.silero import batched as silero_batched
from antiphon.services.vad import VAD, SpeechEnd, SpeechStart, VADEvent, VADOptions
from test_vad import RATE, conversation, kinds, opts, run, silence, tone

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "question.wav"


class HeldWorker(SileroBatchWorker):
    """A batch worker whose drain jobs run only when the test says (no thread)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__("held-vad", model=silero_batched.shared_model(), **kw)
        self.held: list[tuple[Callable[[], Any], Callable[[Any], None]]] = []

    def submit(self, job: Callable[[], Any], done: Callable[[Any], None]) -> bool:
        self.held.append((job, done))
        return True

    def run_held(self) -> int:
        """Run the queued drain jobs as the thread would; how many ran."""
        held, self.held = self.held, []
        for job, done in held:
            done(job())
        return len(held)


def question() -> npt.NDArray[np.int16]:
    with wave.open(str(EXAMPLE)) as w:
        assert (w.getframerate(), w.getnchannels()) == (RATE, 1)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return np.concatenate([silence(0.5), pcm, silence(1.0)])


def agree(a: list[VADEvent], b: list[VADEvent], window: float) -> None:
    """The same decisions: the same events in order, times within one model window."""
    assert kinds(a) == kinds(b), (a, b)
    for x, y in zip(a, b, strict=True):
        assert x.time == pytest.approx(y.time, abs=window + 1e-9)
        assert x.at == pytest.approx(y.at, abs=window + 1e-9)


# ------------------------------------------------------------ the model agrees with ggml


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_onnx_silero_decides_like_the_ggml_silero_on_the_suite_speech(rate: int) -> None:
    samples, _ = conversation(rate)
    o = opts(speech=0.1, silence_=0.5)
    ggml = run(SileroVAD(o), samples, rate)
    onnx = SileroOnnxVAD(o)
    got = run(onnx, samples, rate)
    assert kinds(ggml) == [SpeechStart, SpeechEnd] * 2
    agree(got, ggml, onnx.window_duration)


@pytest.mark.parametrize(
    "options",
    [opts(speech=0.1, silence_=0.5), opts(speech=0.1, silence_=0.2), VADOptions()],
    ids=["default-test", "short-silence", "library-defaults"],
)
def test_onnx_silero_decides_like_the_ggml_silero_on_the_example_recording(
    options: VADOptions,
) -> None:
    samples = question()
    ggml = run(SileroVAD(options), samples)
    assert ggml  # the recording has speech in it
    agree(run(SileroOnnxVAD(options), samples), ggml, 512 / RATE)


def test_onnx_silero_is_not_fooled_by_tones_or_noise() -> None:
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 2000, RATE * 2).clip(-32768, 32767).astype(np.int16)
    bursts = np.concatenate([silence(0.5), tone(1.0), silence(0.5), tone(0.5, freq=1000)])
    assert run(SileroOnnxVAD(opts()), bursts) == []
    assert run(SileroOnnxVAD(opts()), noise) == []


# ------------------------------------------------------------ batching


def frames(samples: npt.NDArray[np.int16], seconds: float = 0.032) -> list[AudioFrame]:
    return AudioFrame.from_array(samples, RATE).split(seconds)


def test_the_windows_of_n_calls_go_through_one_model_run() -> None:
    worker = HeldWorker()
    calls = [BatchedSileroVAD(opts(), worker=worker) for _ in range(5)]
    window = frames(tone(0.032))[0]  # exactly one model window
    for vad in calls:
        assert vad.process(window) == []
    assert len(worker.held) == 1  # one drain job for every waiting call
    assert worker.run_held() == 1
    assert (worker.runs, worker.windows, worker.largest_batch) == (1, 5, 5)
    for vad in calls:
        assert vad.position == pytest.approx(0.032)
    # a call with three windows waiting: three rounds, the others ride in the first
    three = frames(tone(0.096), 0.096)[0]
    calls[0].process(three)
    for vad in calls[1:]:
        vad.process(window)
    worker.run_held()
    assert (worker.runs, worker.windows) == (1 + 3, 5 + 3 + 4)


def test_max_batch_splits_a_round_into_runs() -> None:
    worker = HeldWorker(max_batch=2)
    calls = [BatchedSileroVAD(opts(), worker=worker) for _ in range(5)]
    for vad in calls:
        vad.process(frames(tone(0.032))[0])
    worker.run_held()
    assert (worker.runs, worker.windows, worker.largest_batch) == (3, 5, 2)


def test_each_call_keeps_its_own_state_in_the_batch() -> None:
    """Calls hearing different audio, batched together, decide what each alone decides."""
    speech, _ = conversation(RATE)
    late = np.concatenate([silence(1.3), speech])[: speech.size]  # the same, later
    recorded = question()
    recorded = np.concatenate([recorded, silence((speech.size - recorded.size) / RATE)])
    audios = [speech, late, silence(speech.size / RATE), recorded]
    o = opts(speech=0.1, silence_=0.5)
    alone = [run(SileroOnnxVAD(o), a) for a in audios]
    worker = HeldWorker()
    calls = [BatchedSileroVAD(o, worker=worker) for _ in audios]
    got: list[list[VADEvent]] = [[] for _ in calls]
    for vad, g in zip(calls, got, strict=True):
        vad.on_decided(g.extend)
    split = [frames(a, 0.02) for a in audios]
    for step in range(len(split[0])):
        for vad, f in zip(calls, split, strict=True):
            assert vad.process(f[step]) == []  # decided on the worker, given to the listener
        if step % 3 == 2:  # a drain every 60 ms: several windows of each call in one job
            worker.run_held()
    worker.run_held()
    for vad, g in zip(calls, got, strict=True):
        g += vad.flush()
    assert got == alone  # the same events as each call alone, exactly
    assert alone[0] and alone[1] and not alone[2]
    assert worker.largest_batch == len(audios)


def test_a_call_closed_mid_batch_is_left_out_and_the_others_go_on() -> None:
    worker = HeldWorker()
    calls = [BatchedSileroVAD(opts(), worker=worker) for _ in range(3)]
    window = frames(tone(0.032))[0]
    for vad in calls:
        vad.process(window)
    calls[1].close()  # queued in the drain job, closed before it runs
    assert worker.run_held() == 1
    assert (worker.runs, worker.windows) == (1, 2)
    assert calls[0].position == calls[2].position == pytest.approx(0.032)
    assert calls[1].position == 0.0
    with pytest.raises(StreamClosedError):
        calls[1].process(window)
    calls[0].process(window)  # the batch goes on without it
    worker.run_held()
    assert calls[0].position == pytest.approx(0.064)


def test_reset_restarts_the_rows_of_one_call_only() -> None:
    speech, _ = conversation(RATE)
    o = opts(speech=0.1, silence_=0.5)
    expected = run(SileroOnnxVAD(o), speech)
    worker = HeldWorker()
    a, b = BatchedSileroVAD(o, worker=worker), BatchedSileroVAD(o, worker=worker)
    got_a: list[VADEvent] = []
    got_b: list[VADEvent] = []
    a.on_decided(got_a.extend)
    b.on_decided(got_b.extend)
    first, second = frames(speech[: speech.size // 2], 0.02), frames(speech, 0.02)
    for f in first:
        a.process(f)
        b.process(f)
        worker.run_held()
    assert a._streams.hidden.any()  # it has heard something
    a.reset()  # forget a's audio; b goes on
    assert not a._streams.hidden.any() and not a._streams.context.any()
    assert a.position == 0.0
    got_a.clear()
    for f in second:
        a.process(f)
        worker.run_held()
    for f in frames(speech[speech.size // 2 :], 0.02):
        b.process(f)
        worker.run_held()
    got_a += a.flush()
    got_b += b.flush()
    assert got_a == expected  # as fresh after the reset
    assert got_b == expected  # b's rows were never touched by a's reset


def test_flush_ends_open_speech_on_the_calls_own_rows() -> None:
    pcm = conversation(RATE)[0][: int(2.0 * RATE)]  # cut inside the first utterance
    o = opts(speech=0.1, silence_=0.5)
    expected = run(SileroOnnxVAD(o), pcm)
    worker = HeldWorker()
    vad = BatchedSileroVAD(o, worker=worker)
    got: list[VADEvent] = []
    for f in frames(pcm, 0.02):
        got += vad.process(f)
        worker.run_held()
    got += vad.flush()  # the last delivery, then the tail at batch 1 on this thread
    assert kinds(got) == [SpeechStart, SpeechEnd]
    assert got == expected


def test_refused_submits_run_inline_with_the_same_events() -> None:
    class Closed(SileroBatchWorker):
        def submit(self, job: object, done: object) -> bool:
            return False

    samples, _ = conversation(RATE)
    o = opts(speech=0.1, silence_=0.5)
    vad = BatchedSileroVAD(o, worker=Closed("closed", model=silero_batched.shared_model()))
    assert run(vad, samples) == run(SileroOnnxVAD(o), samples)


async def test_batched_calls_on_the_real_worker_thread_decide_like_one_call_alone() -> None:
    from antiphon.testing.poll import until

    speech, _ = conversation(RATE)
    o = opts(speech=0.1, silence_=0.5)
    expected = run(SileroOnnxVAD(o), speech)
    worker = SileroBatchWorker("test-vad-batched")
    try:
        await worker.load(60.0)
        # fed faster than real time: no inline fallback (max_lag), the drains take what
        # has piled up, several windows of each call at once
        calls = [BatchedSileroVAD(o, worker=worker, max_lag=3600.0) for _ in range(4)]
        got: list[list[VADEvent]] = [[] for _ in calls]
        for vad, g in zip(calls, got, strict=True):
            vad.on_decided(g.extend)
        for f in frames(speech, 0.02):
            for vad in calls:
                assert vad.process(f) == []  # decided on the worker, given to the listener
        analysed = (speech.size // 512) * 512 / RATE
        await until(lambda: all(v.position == pytest.approx(analysed) for v in calls), 30)
        for vad, g in zip(calls, got, strict=True):
            g += vad.flush()
            assert g == expected
            vad.close()
        assert worker.windows == 4 * (speech.size // 512)  # every window on the worker
        assert worker.largest_batch >= 4
    finally:
        assert await worker.aclose(10.0)
    assert worker.thread is not None and not worker.thread.is_alive()


def test_events_keep_their_order_when_an_inline_analysis_overtakes_a_delivery() -> None:
    """The worker analysed a speech start and its delivery is still in flight when the
    loop, the worker starved, analyses the next frames itself and hears the end: the
    caller gets the start, then the end (the late delivery brings nothing)."""
    from antiphon.aio.worker import BatchWorker
    from antiphon.services.vad import OffloadedVAD
    from test_vad import EnergyVAD

    class Held(BatchWorker):
        def __init__(self) -> None:
            super().__init__("held")
            self.held: list[tuple[Callable[[], Any], Callable[[Any], None]]] = []

        def submit(self, job: Callable[[], Any], done: Callable[[Any], None]) -> bool:
            self.held.append((job, done))
            return True

    o = opts(speech=0.05, silence_=0.05)
    audio = np.concatenate([tone(0.3), silence(0.3)])
    expected = run(EnergyVAD(o), audio)
    assert kinds(expected) == [SpeechStart, SpeechEnd]
    worker = Held()
    vad = OffloadedVAD(EnergyVAD(o), worker, max_lag=0.1)
    got: list[VADEvent] = []
    vad.on_decided(got.extend)
    split = frames(audio, 0.02)
    for f in split[:4]:  # 80 ms of the tone, queued behind one held job
        got += vad.process(f)
    (job, done), *_ = worker.held
    in_flight = job()  # the worker analysed it (a speech start); not delivered yet
    for f in split[4:]:  # the rest: the worker is starved, the loop decides inline
        got += vad.process(f)
    assert vad.inline_frames > 0 and SpeechEnd in kinds(got)
    done(in_flight)  # the late delivery
    got += vad.flush()
    assert got == expected


# ------------------------------------------------------------ weights, wiring


def test_the_model_is_found_in_a_wheel_and_pinned(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = silero_batched.packaged_model()
    assert path.name == silero_batched.MODEL_FILE and path.is_file()
    monkeypatch.setattr(silero_batched, "LOCATIONS", {"no-such-distribution-here": "x.onnx"})
    with pytest.raises(ConfigError, match="pip install 'faster-whisper"):
        silero_batched.packaged_model()
    assert not silero_batched.available()
    altered = tmp_path / silero_batched.MODEL_FILE
    altered.write_bytes(path.read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(silero_batched, "packaged_model", lambda: altered)
    with pytest.raises(ProviderError, match="SHA-256"):
        silero_batched.SileroOnnxModel()
    with pytest.raises(ConfigError, match="does not exist"):
        silero_batched.SileroOnnxModel(tmp_path / "missing.onnx")


async def test_the_pipeline_builds_batched_silero_on_one_shared_worker() -> None:
    """``silero``, the default, is the batched ONNX model (``silero-batched`` its old
    name); ``silero-ggml`` the ggml detector, offloaded to a plain worker."""
    import contextlib

    from antiphon.agent.pipeline import make_vad
    from antiphon.aio.worker import BatchWorker
    from antiphon.services.vad import OffloadedVAD

    with pytest.raises(ConfigError, match="silero-ggml"):
        PipelineSpec(vad="nope")
    with pytest.raises(ConfigError, match="unknown VAD 'nope'"):
        make_vad("nope")
    assert PipelineSpec().vad == "silero"
    PipelineSpec(vad="silero-batched")
    async with contextlib.AsyncExitStack() as stack:
        worker = SileroBatchWorker("test-pipeline-vad")
        stack.push_async_callback(worker.aclose)
        await worker.load(60.0)
        a, b = make_vad("silero", worker), make_vad("silero-batched", worker)
        assert isinstance(a, BatchedSileroVAD) and isinstance(b, BatchedSileroVAD)
        assert a._streams.model is b._streams.model  # one session for every call
        inline: VAD = make_vad("silero")
        assert isinstance(inline, SileroOnnxVAD)
        plain = BatchWorker("test-pipeline-ggml")
        stack.push_async_callback(plain.aclose)
        ggml = make_vad("silero-ggml", plain)
        assert isinstance(ggml, OffloadedVAD) and isinstance(ggml.inner, SileroVAD)
        assert isinstance(make_vad("silero-ggml"), SileroVAD)
        with pytest.raises(ConfigError, match="SileroBatchWorker"):
            BatchedSileroVAD(worker=object())  # type: ignore[arg-type]
    assert worker.thread is None or not worker.thread.is_alive()


async def test_the_light_offline_agent_answers_on_batched_silero(tmp_path: Path) -> None:
    """The whole pipeline (open_services loads the batch worker's model on its thread)."""
    from antiphon.agent.options import AgentOptions, TurnOptions
    from antiphon.agent.talk import talk
    from antiphon.audio.wav import read_wav

    spec = PipelineSpec(stt="pocketsphinx", tts="espeak")  # vad: silero, the default
    result = await talk(
        read_wav(str(EXAMPLE)),
        str(tmp_path / "r.wav"),
        spec=spec,
        timeout=45,
        options=AgentOptions(turn=TurnOptions(final_timeout=30.0)),
    )
    assert result.heard == ["what can you do"]  # the VAD cut the user's turn where ggml does
    assert result.audio_seconds > 2.0
