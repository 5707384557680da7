"""The end-of-turn hook (services/turn.py) and the Smart Turn plugin (plugins/smart_turn).

The policy runs on the virtual clock against scripted detectors; the real model runs on
recorded speech of the installed ``pipecat-ai`` wheel (``make test`` installs it).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError
from antiphon.plugins.smart_turn import PINS, SmartTurnDetector, packaged_model
from antiphon.plugins.smart_turn.detector import fit
from antiphon.plugins.smart_turn.features import log_mel, mel_filters, normalise
from antiphon.services.turn import EndOfTurn, EndOfTurnOptions, TurnAudio, TurnDetector

RECORDINGS = Path("/usr/share/pocketsphinx/test/data/librivox")


def tone(seconds: float, rate: int = 16_000) -> AudioFrame:
    t = np.arange(round(seconds * rate)) / rate
    return AudioFrame.from_array((np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16), rate)


class Scripted(TurnDetector):
    """Answers ``probability`` after ``delay`` seconds (on the loop's clock), or raises."""

    def __init__(self, probability: float, delay: float = 0.0, error: bool = False) -> None:
        self.probability, self.delay, self.error = probability, delay, error
        self.calls = 0

    async def predict(self, audio: AudioFrame, *, timeout: float) -> float:
        self.calls += 1
        if self.error:
            raise ProviderError("broken", provider="scripted", stage="predict")
        if self.delay > timeout:
            await asyncio.sleep(timeout)
            raise ProviderTimeoutError(
                "late", provider="scripted", stage="predict", timeout=timeout
            )
        await asyncio.sleep(self.delay)
        return self.probability

    async def aclose(self) -> None:
        pass


# ------------------------------------------------------------------ the policy


@pytest.mark.virtual_time
async def test_complete_ends_now_incomplete_holds_to_max_silence() -> None:
    opts = EndOfTurnOptions(threshold=0.5, max_silence=2.0, fallback_silence=0.5)
    done = await EndOfTurn(Scripted(0.9, delay=0.05), opts).decide(tone(1), silent_for=0.2)
    assert (done.complete, done.source, done.hold) == (True, "model", 0.0)
    assert done.took == pytest.approx(0.05)
    wait = await EndOfTurn(Scripted(0.1, delay=0.05), opts).decide(tone(1), silent_for=0.2)
    assert (wait.complete, wait.source, wait.probability) == (False, "model", 0.1)
    assert wait.hold == pytest.approx(opts.max_silence - 0.2 - 0.05)


@pytest.mark.virtual_time
async def test_silence_decides_without_model_or_when_it_is_slow_or_broken() -> None:
    opts = EndOfTurnOptions(fallback_silence=0.5, model_timeout=0.3)
    none = await EndOfTurn(None, opts).decide(tone(1), silent_for=0.2)
    assert (none.source, none.complete) == ("no-model", False)
    assert none.hold == pytest.approx(0.3)
    loop = asyncio.get_running_loop()
    start = loop.time()
    slow = await EndOfTurn(Scripted(0.9, delay=5.0), opts).decide(tone(1), silent_for=0.2)
    assert loop.time() - start == pytest.approx(opts.model_timeout)  # the deadline, not 5 s
    assert slow.source == "slow" and slow.probability is None
    assert slow.hold == 0.0  # 0.2 heard + 0.3 waited: the fallback silence is reached
    eot = EndOfTurn(Scripted(0.9, error=True), opts)
    broken = await eot.decide(tone(1), silent_for=0.2)
    assert broken.source == "failed" and broken.hold == pytest.approx(0.3)
    assert isinstance(eot.last_error, ProviderError)
    empty = await EndOfTurn(Scripted(0.9), opts).decide(AudioFrame(b"", 16_000), silent_for=0.0)
    assert (empty.source, empty.hold) == ("no-audio", 0.5)


def test_options_refuse_bad_values() -> None:
    for bad in (
        {"threshold": 1.5},
        {"max_silence": -1},
        {"model_timeout": 0},
        {"fallback_silence": 3.0, "max_silence": 2.0},
        {"max_silence": float("nan")},
    ):
        with pytest.raises(ConfigError):
            EndOfTurnOptions(**bad)


def test_turn_audio_keeps_the_trailing_seconds_at_the_model_rate() -> None:
    buf = TurnAudio(16_000, seconds=1.0)
    ramp = np.arange(24_000, dtype=np.int16)
    for chunk in np.split(ramp, 8):  # 3,000 samples each, wrapping the 16,000-sample ring
        buf.push(AudioFrame.from_array(chunk, 16_000))
    snap = np.frombuffer(buf.snapshot().data, "<i2")
    assert np.array_equal(snap, ramp[-16_000:])
    assert buf.duration == 1.0
    buf.push(AudioFrame.from_array(ramp, 16_000))  # longer than the ring at once
    assert np.array_equal(np.frombuffer(buf.snapshot().data, "<i2"), ramp[-16_000:])
    buf.clear()
    assert buf.snapshot().samples_per_channel == 0
    phone = TurnAudio(16_000, seconds=2.0)
    for _ in range(50):  # 1 s of 8 kHz audio, resampled with state across frames
        phone.push(tone(0.02, 8_000))
    held = phone.snapshot().samples_per_channel  # less the resampler's delay (< 0.1 s)
    assert 16_000 - 1_600 < held <= 16_000


# ------------------------------------------------------------------ the features


def test_features_match_faster_whisper() -> None:
    from faster_whisper.feature_extractor import FeatureExtractor

    extractor = FeatureExtractor(feature_size=80)
    assert np.allclose(extractor.mel_filters, mel_filters(), atol=1e-7)
    audio = normalise(np.random.default_rng(7).standard_normal(128_000).astype(np.float32))
    ours = log_mel(audio)
    assert ours.shape == (80, 800)
    theirs = extractor(audio, padding=0)[:, :800]
    assert np.abs(ours - theirs).max() < 1e-4


def test_fit_keeps_the_last_eight_seconds_and_pads_the_front() -> None:
    short = fit(np.full(16_000, 16_384, np.int16))
    assert short.shape == (128_000,) and short[0] == 0.0 and short[-1] == 0.5
    long = fit(np.concatenate([np.zeros(16_000, np.int16), np.full(128_000, -16_384, np.int16)]))
    assert long.shape == (128_000,) and np.all(long == -0.5)


# ------------------------------------------------------------------ the packaged model


def test_the_packaged_model_is_the_pinned_file() -> None:
    path = packaged_model()
    assert path.name in PINS
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PINS[path.name]


def read(path: Path) -> AudioFrame:
    with wave.open(str(path)) as w:
        return AudioFrame(w.readframes(w.getnframes()), w.getframerate(), w.getnchannels())


@pytest.mark.realtime
async def test_the_model_tells_a_finished_sentence_from_a_cut_one(tmp_path: Path) -> None:
    """A recorded sentence, whole and cut mid-way (``pocketsphinx-testdata`` or Piper)."""
    source = RECORDINGS / "sense_and_sensibility_01_austen_64kb-0920.wav"
    if source.is_file():
        whole = read(source)
    else:  # Debian's recordings are not installed: the packaged Piper voice says it
        from antiphon.audio.resample import AudioConverter
        from antiphon.plugins.piper import PiperVoice, VoiceConfig, packaged_voice

        voice = PiperVoice(
            packaged_voice(), VoiceConfig.from_json(Path(f"{packaged_voice()}.json"))
        )
        pcm = voice.synthesize("I would like to book a table for two people tonight.")
        conv = AudioConverter(16_000)
        frame = AudioFrame(pcm, voice.config.sample_rate)
        whole = AudioFrame(conv.process(frame).data + conv.flush().data, 16_000)
        voice.close()
    samples = np.frombuffer(whole.data, "<i2")
    cut = AudioFrame.from_array(samples[: len(samples) * 2 // 5], 16_000)
    detector = SmartTurnDetector()
    try:
        await detector.prewarm()
        complete = await detector.predict(whole, timeout=30.0)
        incomplete = await detector.predict(cut, timeout=30.0)
    finally:
        await detector.aclose()
    assert complete > 0.5 > incomplete
    assert not any(t.name.startswith("smart-turn-engine") for t in threading.enumerate())


@pytest.mark.realtime
async def test_a_busy_detector_refuses_at_once_and_closes_cleanly() -> None:
    detector = SmartTurnDetector()
    gate = threading.Event()
    try:
        await detector.prewarm()
        worker = detector._engine()
        blocker = worker.submit(lambda _m: gate.wait(30.0))  # the thread is busy
        with pytest.raises(ProviderTimeoutError):
            await detector.predict(tone(1), timeout=0.01)  # queued behind it: misses
        with pytest.raises(ProviderTimeoutError, match="still running"):
            await detector.predict(tone(1), timeout=30.0)  # refused at once
        gate.set()
        await blocker
        await detector.idle()  # the late prediction finishes; its answer was dropped
        assert not detector.busy
        eot = EndOfTurn(detector, EndOfTurnOptions(model_timeout=30.0))
        verdict = await eot.decide(tone(1), silent_for=0.2)
        assert verdict.source == "model" and verdict.probability is not None
    finally:
        gate.set()
        await detector.aclose()
        await detector.aclose()  # idempotent
    with pytest.raises(ProviderError, match="closed"):
        await detector.predict(tone(1), timeout=1.0)
    assert not any(t.name.startswith("smart-turn-engine") for t in threading.enumerate())


async def test_a_model_altered_on_disk_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "smart-turn.onnx"
    bad.write_bytes(b"not the model")
    detector = SmartTurnDetector(model=bad, checksums={bad.name: "0" * 64})
    try:
        with pytest.raises(ProviderError, match="SHA-256"):
            await detector.prewarm(timeout=30.0)
    finally:
        await detector.aclose()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SmartTurnDetector(model=tmp_path / "missing.onnx")
    with pytest.raises(ConfigError, match="threads"):
        SmartTurnDetector(threads=0)
