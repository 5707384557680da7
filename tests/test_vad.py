"""The VAD contract's state machine (on an exact energy model), then Silero and WebRTC on
speech made by the offline espeak TTS."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt
import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError
from antiphon.services.vad import VAD, SpeechEnd, SpeechStart, VADEvent, VADOptions

RATE = 16000


class EnergyVAD(VAD):
    """Probability 1 for a window whose RMS is over 1000, else 0: exact for tones."""

    name = "energy"
    sample_rate: ClassVar[int] = RATE
    window: ClassVar[int] = 160  # 10 ms

    def _probability(self, window: npt.NDArray[np.int16]) -> float:
        rms = float(np.sqrt(np.mean(window.astype(np.float64) ** 2)))
        return 1.0 if rms > 1000 else 0.0


def tone(seconds: float, rate: int = RATE, freq: float = 440.0) -> npt.NDArray[np.int16]:
    t = np.arange(round(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def silence(seconds: float, rate: int = RATE) -> npt.NDArray[np.int16]:
    return np.zeros(round(seconds * rate), dtype=np.int16)


def run(
    vad: VAD, samples: npt.NDArray[np.int16], rate: int = RATE, chunk: float = 0.02
) -> list[VADEvent]:
    events: list[VADEvent] = []
    for f in AudioFrame.from_array(samples, rate).split(chunk):
        events += vad.process(f)
    return events + vad.flush()


NO_PAD = VADOptions(min_speech_duration=0.05, min_silence_duration=0.3, padding=0.0)


def test_silence_gives_no_events() -> None:
    vad = EnergyVAD(NO_PAD)
    assert run(vad, silence(3.0)) == []
    assert vad.position == pytest.approx(3.0)


def test_tone_bursts_give_exact_segments() -> None:
    audio = np.concatenate([silence(1.0), tone(0.5), silence(1.0), tone(0.8), silence(0.5)])
    events = run(EnergyVAD(NO_PAD), audio)
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd, SpeechStart, SpeechEnd]
    s1, e1, s2, e2 = events
    w = EnergyVAD.window / RATE
    assert s1.time == pytest.approx(1.0, abs=w) and e1.time == pytest.approx(1.5, abs=w)
    assert s2.time == pytest.approx(2.5, abs=w) and e2.time == pytest.approx(3.3, abs=w)
    assert isinstance(e1, SpeechEnd) and e1.start == s1.time
    # decided after the minimum durations, not before
    assert s1.at == pytest.approx(1.05, abs=w) and e1.at == pytest.approx(1.8, abs=w)


def test_short_blip_is_not_speech_and_short_gap_does_not_end_it() -> None:
    opts = VADOptions(min_speech_duration=0.1, min_silence_duration=0.4, padding=0.0)
    audio = np.concatenate(
        [silence(0.5), tone(0.05), silence(0.5), tone(0.6), silence(0.2), tone(0.6), silence(1)]
    )
    events = run(EnergyVAD(opts), audio)
    assert len(events) == 2
    assert events[0].time == pytest.approx(1.05, abs=0.01)
    assert events[1].time == pytest.approx(2.45, abs=0.01)


def test_padding_widens_and_never_overlaps() -> None:
    opts = VADOptions(min_speech_duration=0.05, min_silence_duration=0.3, padding=0.2)
    audio = np.concatenate([silence(0.1), tone(0.5), silence(0.35), tone(0.5), silence(1.0)])
    s1, e1, s2, e2 = run(EnergyVAD(opts), audio)
    assert s1.time == pytest.approx(0.0)  # clamped at 0
    assert e1.time == pytest.approx(0.8, abs=0.01)
    assert s2.time >= e1.time  # padding never overlaps the previous segment
    assert s2.time == pytest.approx(0.8, abs=0.01)
    assert e2.time == pytest.approx(1.65, abs=0.01)


def test_any_rate_and_channels_and_chunking_give_the_same_events() -> None:
    base = np.concatenate([silence(0.7), tone(0.6), silence(0.9)])
    ref = run(EnergyVAD(NO_PAD), base)
    assert len(ref) == 2
    for rate, channels, chunk in [(48000, 2, 0.01), (8000, 1, 0.033), (44100, 1, 0.5)]:
        mono = np.concatenate([silence(0.7, rate), tone(0.6, rate), silence(0.9, rate)])
        samples = np.stack([mono] * channels, axis=1) if channels > 1 else mono
        events = run(EnergyVAD(NO_PAD), samples, rate, chunk)
        assert len(events) == 2
        for a, b in zip(events, ref, strict=True):
            assert type(a) is type(b)
            assert a.time == pytest.approx(b.time, abs=2 * EnergyVAD.window / RATE)


def test_flush_closes_open_speech_and_reset_restarts_time() -> None:
    vad = EnergyVAD(NO_PAD)
    events = run(vad, np.concatenate([silence(0.5), tone(1.0)]))
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd]
    assert events[1].time == pytest.approx(1.5, abs=0.01)
    assert not vad.speaking
    vad.reset()
    assert vad.position == 0.0
    again = run(vad, np.concatenate([silence(0.2), tone(0.3), silence(0.5)]))
    assert again[0].time == pytest.approx(0.2, abs=0.01)


def test_bad_options_and_input_are_refused() -> None:
    with pytest.raises(ConfigError, match="activation_threshold"):
        VADOptions(activation_threshold=0.0)
    with pytest.raises(ConfigError, match="deactivation_threshold"):
        VADOptions(activation_threshold=0.5, deactivation_threshold=0.7)
    with pytest.raises(ConfigError, match="min_silence_duration"):
        VADOptions(min_silence_duration=-1)
    with pytest.raises(ConfigError, match="AudioFrame"):
        EnergyVAD().process(b"\x00\x00")  # type: ignore[arg-type]


# -- real models on real (synthetic) speech


@pytest.fixture(scope="module")
def speech() -> tuple[AudioFrame, list[tuple[float, float]]]:
    """Two espeak utterances separated by silence, and where their sound really is."""
    from antiphon.plugins.espeak.engine import sample_rate, synthesize_pcm

    rate = sample_rate()
    parts: list[npt.NDArray[np.int16]] = []
    truth: list[tuple[float, float]] = []
    pos = 0
    for text in ["Hello there, how are you today?", "I would like a cup of coffee please."]:
        parts.append(silence(1.0, rate))
        pos += parts[-1].size
        pcm = np.frombuffer(synthesize_pcm(text), dtype=np.int16)
        loud = np.flatnonzero(np.abs(pcm) > 300)
        truth.append(((pos + loud[0]) / rate, (pos + loud[-1]) / rate))
        parts.append(pcm)
        pos += pcm.size
    parts.append(silence(1.0, rate))
    return AudioFrame.from_array(np.concatenate(parts), rate), truth


@pytest.mark.parametrize("plugin", ["silero", "webrtc"])
def test_speech_segments_match_the_audio(
    plugin: str, speech: tuple[AudioFrame, list[tuple[float, float]]]
) -> None:
    from antiphon.plugins.silero import SileroVAD
    from antiphon.plugins.webrtc import WebRtcVAD

    audio, truth = speech
    opts = VADOptions(min_speech_duration=0.1, min_silence_duration=0.5, padding=0.0)
    vad: VAD = SileroVAD(opts) if plugin == "silero" else WebRtcVAD(opts)
    events: list[VADEvent] = []
    for f in audio.split(0.02):
        events += vad.process(f)
    events += vad.flush()
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd] * 2
    tol = 2 * vad.window_duration
    late = vad.hangover if isinstance(vad, WebRtcVAD) else 0.0  # the model's own overhang
    for (start, end), ev_start, ev_end in zip(truth, events[::2], events[1::2], strict=True):
        assert ev_start.time == pytest.approx(start, abs=tol)
        assert end - tol <= ev_end.time <= end + tol + late


def test_silero_is_not_fooled_by_a_pure_tone() -> None:
    from antiphon.plugins.silero import SileroVAD

    audio = np.concatenate([silence(0.5), tone(1.0), silence(0.5)])
    assert run(SileroVAD(NO_PAD), audio) == []


def test_plugins_refuse_bad_settings() -> None:
    from antiphon.plugins.silero import SileroVAD
    from antiphon.plugins.webrtc import WebRtcVAD

    with pytest.raises(ConfigError, match="aggressiveness"):
        WebRtcVAD(aggressiveness=5)
    with pytest.raises(ConfigError, match="does not exist"):
        SileroVAD(model_path="/nonexistent/model.bin")
