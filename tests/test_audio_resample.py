"""Streaming resampling, channel mixing and the format-following converter."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antiphon.audio.frame import SUPPORTED_RATES, AudioFrame
from antiphon.audio.resample import (
    ENGINES,
    AudioConverter,
    Engine,
    StreamResampler,
    to_channels,
    to_mono,
)
from antiphon.errors import ConfigError

I16 = npt.NDArray[np.int16]


def signal(rate: int, seconds: float, channels: int = 1, seed: int = 0) -> I16:
    """A sum of sines plus noise, as int16 shaped ``(n,)`` or ``(n, channels)``."""
    rng = np.random.default_rng(seed)
    n = round(rate * seconds)
    t = np.arange(n) / rate
    cols = []
    for c in range(channels):
        x = (
            0.3 * np.sin(2 * np.pi * (440 + 100 * c) * t)
            + 0.2 * np.sin(2 * np.pi * 1234 * t + c)
            + 0.1 * np.sin(2 * np.pi * 3001 * t)
            + 0.05 * rng.standard_normal(n)
        )
        cols.append(np.round(x * 32767).astype(np.int16))
    return cols[0] if channels == 1 else np.stack(cols, axis=1)


def frame_of(x: I16, rate: int, generation: int = 0) -> AudioFrame:
    return AudioFrame.from_array(x, rate, generation=generation)


def whole(r: StreamResampler, x: I16) -> I16:
    out = r.process(frame_of(x, r.in_rate)).data + r.flush().data
    return samples(out, r.channels)


def samples(data: bytes, channels: int) -> I16:
    arr = np.frombuffer(data, dtype="<i2")
    return arr.reshape(-1, channels) if channels > 1 else arr


def chunked(r: StreamResampler, x: I16, cuts: list[int]) -> I16:
    pieces = [r.process(frame_of(part, r.in_rate)).data for part in np.split(x, cuts)]
    pieces.append(r.flush().data)
    return samples(b"".join(pieces), r.channels)


CASES = [
    (16000, 24000, 1),
    (48000, 16000, 1),
    (24000, 8000, 1),
    (44100, 48000, 1),
    (48000, 16000, 2),
    (22050, 44100, 2),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("in_rate", "out_rate", "channels"), CASES)
def test_20ms_chunks_give_exactly_the_whole_signal_result(
    in_rate: int, out_rate: int, channels: int, engine: Engine
) -> None:
    x = signal(in_rate, 1.0, channels)
    step = round(in_rate * 0.02)
    cuts = list(range(step, len(x), step))
    ref = whole(StreamResampler(in_rate, out_rate, channels, engine=engine), x)
    got = chunked(StreamResampler(in_rate, out_rate, channels, engine=engine), x, cuts)
    assert got.shape == ref.shape
    assert np.array_equal(got, ref)
    # and the result is a real resampling, not silence: energy is preserved
    rms_in = np.sqrt(np.mean(x.astype(np.float64) ** 2))
    rms_out = np.sqrt(np.mean(got.astype(np.float64) ** 2))
    assert rms_out == pytest.approx(rms_in, rel=0.05)


def test_output_is_deterministic_across_instances() -> None:
    x = signal(48000, 0.5, 2, seed=3)
    a = whole(StreamResampler(48000, 16000, 2), x)
    b = whole(StreamResampler(48000, 16000, 2), x)
    assert np.array_equal(a, b)


@settings(max_examples=60, deadline=None)
@given(
    rates=st.sampled_from([(a, b) for a in SUPPORTED_RATES for b in SUPPORTED_RATES if a != b]),
    channels=st.integers(min_value=1, max_value=2),
    cut_fractions=st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=12),
    engine=st.sampled_from(ENGINES),
)
def test_any_chunking_gives_the_same_samples(
    rates: tuple[int, int], channels: int, cut_fractions: list[float], engine: Engine
) -> None:
    in_rate, out_rate = rates
    x = signal(in_rate, 0.15, channels, seed=7)
    cuts = sorted(round(f * len(x)) for f in cut_fractions)  # may repeat: empty chunks
    ref = whole(StreamResampler(in_rate, out_rate, channels, engine=engine), x)
    got = chunked(StreamResampler(in_rate, out_rate, channels, engine=engine), x, cuts)
    assert np.array_equal(got, ref)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("in_rate", "out_rate", "n"),
    [(16000, 24000, 16000), (48000, 16000, 48007), (44100, 16000, 44100 + 13), (8000, 48000, 999)],
)
def test_output_length_follows_the_ratio(
    in_rate: int, out_rate: int, n: int, engine: Engine
) -> None:
    x = signal(in_rate, n / in_rate)
    assert len(x) == n
    out = whole(StreamResampler(in_rate, out_rate, engine=engine), x)
    assert abs(len(out) - n * out_rate / in_rate) <= 2


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("in_rate", "out_rate"), [(44100, 16000), (16000, 48000), (24000, 8000)])
def test_a_440hz_tone_stays_at_440hz(in_rate: int, out_rate: int, engine: Engine) -> None:
    t = np.arange(in_rate) / in_rate
    tone = np.round(0.5 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    r = StreamResampler(in_rate, out_rate, engine=engine)
    step = round(in_rate * 0.02)
    out = chunked(r, tone, list(range(step, in_rate, step))).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    freqs = np.fft.rfftfreq(len(out), 1 / out_rate)
    assert freqs[np.argmax(spectrum)] == pytest.approx(440, abs=1.0)
    # amplitude kept (away from the filter's start-up and the end)
    mid = out[len(out) // 10 : -len(out) // 10]
    assert np.max(np.abs(mid)) == pytest.approx(0.5 * 32767, rel=0.01)


def test_frames_of_another_format_are_refused_with_a_fix() -> None:
    r = StreamResampler(16000, 24000)
    with pytest.raises(ConfigError, match=r"48000 Hz.*AudioConverter"):
        r.process(AudioFrame.silence(0.02, 48000))
    with pytest.raises(ConfigError, match="2 ch"):
        r.process(AudioFrame.silence(0.02, 16000, channels=2))
    ident = StreamResampler(16000, 16000)
    with pytest.raises(ConfigError, match="8000 Hz"):
        ident.process(AudioFrame.silence(0.02, 8000))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 16000), "in_rate"),
        ((16000, -1), "out_rate"),
        ((16000, 8000, 0), "channels"),
        ((16000, 8000, 1, "XQ"), "quality"),
    ],
)
def test_bad_configuration_is_refused(args: tuple[object, ...], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        StreamResampler(*args)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="engine"):
        StreamResampler(16000, 8000, engine="fft")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="engine"):
        AudioConverter(16000, engine="fft")  # type: ignore[arg-type]


def test_identity_passes_frames_through_without_copy() -> None:
    r = StreamResampler(24000, 24000, 2)
    assert r.identity
    f = frame_of(signal(24000, 0.02, 2), 24000, generation=4)
    assert r.process(f) is f
    tail = r.flush()
    assert tail.samples_per_channel == 0
    assert (tail.sample_rate, tail.channels, tail.generation) == (24000, 2, 4)


@pytest.mark.parametrize("engine", ENGINES)
def test_flush_resets_and_reset_drops_state(engine: Engine) -> None:
    x = signal(16000, 0.3)
    r = StreamResampler(16000, 24000, engine=engine)
    first = whole(r, x)
    assert np.array_equal(whole(r, x), first)  # flush made it ready for a new stream
    r.process(frame_of(signal(16000, 0.1, seed=9), 16000))
    r.reset()
    assert np.array_equal(whole(r, x), first)


@pytest.mark.parametrize("engine", ENGINES)
def test_generation_is_carried(engine: Engine) -> None:
    r = StreamResampler(16000, 8000, engine=engine)
    out = r.process(frame_of(signal(16000, 0.1), 16000, generation=7))
    assert out.generation == 7
    assert r.flush().generation == 7


def test_to_mono_averages_without_overflow() -> None:
    st_ = np.array([[32767, 32767], [-32768, -32768], [1, 2], [-1, -2], [32767, -32768]])
    f = AudioFrame.from_array(st_.astype(np.int16), 16000, generation=2)
    mono = to_mono(f)
    assert (mono.channels, mono.sample_rate, mono.generation) == (1, 16000, 2)
    assert mono.as_array().tolist() == [32767, -32768, 2, -2, 0]
    m = AudioFrame.silence(0.01, 16000)
    assert to_mono(m) is m


def test_to_channels() -> None:
    mono = AudioFrame.from_array(np.array([1, -2, 3], dtype=np.int16), 8000)
    three = to_channels(mono, 3)
    assert three.channels == 3
    assert three.as_array().tolist() == [[1, 1, 1], [-2, -2, -2], [3, 3, 3]]
    assert to_channels(three, 1).as_array().tolist() == [1, -2, 3]
    assert to_channels(three, 3) is three
    with pytest.raises(ConfigError, match="to_mono"):
        to_channels(three, 2)
    with pytest.raises(ConfigError, match="channels"):
        to_channels(mono, 0)


def test_converter_mixes_down_then_resamples() -> None:
    x = signal(48000, 0.5, 2)
    conv = AudioConverter(16000, 1)
    step = 960
    out = b"".join(
        conv.process(frame_of(p, 48000)).data for p in np.split(x, range(step, len(x), step))
    )
    out += conv.flush().data
    mono = to_mono(frame_of(x, 48000)).as_array()
    assert np.array_equal(samples(out, 1), whole(StreamResampler(48000, 16000), mono))


def test_converter_upmixes_after_resampling() -> None:
    x = signal(16000, 0.3)
    conv = AudioConverter(24000, 2)
    first = conv.process(frame_of(x, 16000, generation=3))
    assert (first.sample_rate, first.channels, first.generation) == (24000, 2, 3)
    out = samples(first.data + conv.flush().data, 2)
    ref = whole(StreamResampler(16000, 24000), x)
    assert np.array_equal(out[:, 0], ref)
    assert np.array_equal(out[:, 1], ref)


def test_converter_follows_a_format_change_mid_stream() -> None:
    a = signal(48000, 0.5, 2, seed=1)
    b = signal(16000, 0.5, 1, seed=2)
    conv = AudioConverter(24000, 1)
    assert conv.input_format is None
    out = conv.process(frame_of(a, 48000)).data
    assert conv.input_format == (48000, 2)
    out += conv.process(frame_of(b, 16000)).data  # flushes the 48 kHz tail first
    assert conv.input_format == (16000, 1)
    out += conv.flush().data
    ref_a = whole(StreamResampler(48000, 24000), to_mono(frame_of(a, 48000)).as_array())
    ref_b = whole(StreamResampler(16000, 24000), b)
    assert np.array_equal(samples(out, 1), np.concatenate([ref_a, ref_b]))
    assert len(ref_a) == len(ref_b) == 12000


def test_converter_identity_and_refusals() -> None:
    conv = AudioConverter(16000, 1)
    f = AudioFrame.silence(0.02, 16000)
    assert conv.process(f) is f
    assert conv.flush().samples_per_channel == 0
    with pytest.raises(ConfigError, match="6-channel"):
        AudioConverter(16000, 2).process(AudioFrame.silence(0.02, 16000, channels=6))
    with pytest.raises(ConfigError, match="out_rate"):
        AudioConverter(0)
