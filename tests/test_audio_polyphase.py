"""The polyphase engine: per-frame latency, exactness, chunking, and the filter's quality."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antiphon.audio.frame import SUPPORTED_RATES, AudioFrame
from antiphon.audio.polyphase import (
    PASSBAND,
    TAP_BITS,
    PolyphaseFilter,
    PolyphaseResampler,
    design,
    polyphase_ratio,
)
from antiphon.audio.resample import StreamResampler

F64 = npt.NDArray[np.float64]
I16 = npt.NDArray[np.int16]

SMALL = [
    (a, b) for a in SUPPORTED_RATES for b in SUPPORTED_RATES if polyphase_ratio(a, b) is not None
]
PHONE = [
    (24000, 8000),
    (16000, 8000),
    (48000, 8000),
    (8000, 16000),
    (8000, 24000),
    (8000, 48000),
    (16000, 24000),
    (24000, 16000),
    (48000, 16000),
    (16000, 48000),
]


def noise(rate: int, seconds: float, channels: int = 1, seed: int = 0) -> I16:
    """Loud white noise (every frequency, up to full scale), shaped ``(n, channels)``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 9000, (round(rate * seconds), channels))
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def tone(rate: int, freq: float, seconds: float, amp: float = 0.5) -> I16:
    t = np.arange(round(rate * seconds)) / rate
    return np.rint(amp * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def in_frames(r: StreamResampler, x: I16, seconds: float = 0.02) -> list[AudioFrame]:
    """Feed ``x`` in frames of ``seconds``; return the outputs, then the flushed tail."""
    frames = AudioFrame.from_array(x, r.in_rate).split(seconds)
    return [r.process(f) for f in frames] + [r.flush()]


def pcm(frames: list[AudioFrame]) -> F64:
    return np.frombuffer(b"".join(f.data for f in frames), dtype="<i2").astype(np.float64)


def impulse_response(f: PolyphaseFilter) -> F64:
    """The filter's taps ``h`` (at the upsampled rate, gain ``L``), read back from its matrix."""
    per_phase = -(-f.taps // f.up)
    h = np.zeros(per_phase * f.up)
    for r in range(f.up):
        q, p = divmod(r * f.down + f.delay, f.up)
        for i in range(per_phase):
            h[p + i * f.up] = f.matrix[q - i - f.first, r]
    return h


def reference(x: F64, f: PolyphaseFilter, n_out: int) -> F64:
    """Textbook resampling: zero-stuff by L, convolve with h, keep every M-th, undo the delay."""
    up = np.zeros(len(x) * f.up + f.taps)
    up[: len(x) * f.up : f.up] = x
    y = np.convolve(up, impulse_response(f))
    return y[f.delay : f.delay + n_out * f.down : f.down]


# -- which ratios, and the filter


def test_the_small_ratios_take_the_polyphase_engine() -> None:
    assert polyphase_ratio(24000, 8000) == (1, 3)
    assert polyphase_ratio(16000, 24000) == (3, 2)
    assert polyphase_ratio(8000, 48000) == (6, 1)
    assert polyphase_ratio(22050, 44100) == (2, 1)
    assert polyphase_ratio(44100, 48000) is None  # 160/147
    assert polyphase_ratio(22050, 16000) is None  # 320/441
    assert polyphase_ratio(16000, 16000) is None
    assert StreamResampler(24000, 8000).polyphase
    assert StreamResampler(24000, 8000, quality="LQ").polyphase
    assert not StreamResampler(24000, 8000, quality="QQ").polyphase
    assert not StreamResampler(24000, 8000, quality="VHQ").polyphase
    assert not StreamResampler(24000, 8000, engine="soxr").polyphase
    assert not StreamResampler(44100, 16000).polyphase
    assert not StreamResampler(16000, 16000).polyphase
    assert StreamResampler(16000, 16000).delay == 0.0
    assert StreamResampler(44100, 16000).delay is None


@pytest.mark.parametrize(("in_rate", "out_rate"), SMALL)
def test_the_filter_is_flat_in_the_passband_and_70db_down_from_the_lower_nyquist(
    in_rate: int, out_rate: int
) -> None:
    ratio = polyphase_ratio(in_rate, out_rate)
    assert ratio is not None
    f = design(*ratio)
    assert design(*ratio) is f  # designed once per ratio
    nfft = 1 << 17
    gain = np.abs(np.fft.rfft(impulse_response(f) / f.up, nfft))
    freq = np.arange(len(gain)) / nfft * f.up * in_rate  # Hz
    nyquist = min(in_rate, out_rate) / 2
    passband = 20 * np.log10(gain[freq <= PASSBAND * nyquist])
    stopband = 20 * np.log10(np.maximum(gain[freq >= nyquist], 1e-12))
    assert np.max(np.abs(passband)) < 0.01
    assert np.max(stopband) <= -70.0


@pytest.mark.parametrize(("in_rate", "out_rate"), SMALL)
def test_the_arithmetic_is_exact(in_rate: int, out_rate: int) -> None:
    """Taps are multiples of 2**-TAP_BITS and no partial sum of int16 x taps reaches 2**53,
    so float64 gives the exact sum in any order: the chunking cannot change a sample."""
    ratio = polyphase_ratio(in_rate, out_rate)
    assert ratio is not None
    f = design(*ratio)
    scaled = f.matrix * 2.0**TAP_BITS
    assert np.array_equal(scaled, np.rint(scaled))
    assert 32768 * np.abs(scaled).sum(axis=0).max() < 2.0**53
    assert np.array_equal(f.matrix.sum(axis=0), np.ones(f.matrix.shape[1]))  # DC passes as is


@settings(max_examples=60, deadline=None)
@given(
    rates=st.sampled_from(SMALL),
    channels=st.integers(min_value=1, max_value=2),
    cut_fractions=st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=16),
    seconds=st.floats(min_value=0.0, max_value=0.12),
)
def test_any_chunking_gives_the_exact_textbook_samples_and_lengths(
    rates: tuple[int, int], channels: int, cut_fractions: list[float], seconds: float
) -> None:
    in_rate, out_rate = rates
    ratio = polyphase_ratio(in_rate, out_rate)
    assert ratio is not None
    x = noise(in_rate, seconds, channels, seed=len(cut_fractions))
    cuts = sorted(round(c * len(x)) for c in cut_fractions)  # may repeat: empty chunks
    r = PolyphaseResampler(*ratio, channels)
    f = r.filter
    pieces = []
    n_in = 0
    for part in np.split(x, cuts):
        got = r.process(part)
        n_in += len(part)
        pieces.append(got.copy())
        # every output whose input has all arrived, and no other
        assert sum(len(p) for p in pieces) == f.ready(n_in)
    pieces.append(r.flush())
    y = np.concatenate(pieces)
    assert y.shape == (math.ceil(len(x) * f.up / f.down), channels)
    for ch in range(channels):
        ref = reference(x[:, ch].astype(np.float64), f, len(y))
        assert np.allclose(y[:, ch], ref, rtol=0, atol=1e-6)


# -- latency


@pytest.mark.parametrize(("in_rate", "out_rate"), PHONE)
def test_every_20ms_frame_gives_its_share_at_once(in_rate: int, out_rate: int) -> None:
    r = StreamResampler(in_rate, out_rate)
    delay = r.delay
    assert delay is not None and 0.001 < delay < 0.005  # a few ms: the filter's group delay
    per_frame = out_rate // 50
    outs = in_frames(r, noise(in_rate, 0.5)[:, 0])
    counts = [f.samples_per_channel for f in outs[:-1]]
    # the first frame is held back by the delay, every later one gives 20 ms (+-1) at once
    assert abs(counts[0] - (per_frame - delay * out_rate)) <= 1
    assert all(abs(c - per_frame) <= 1 for c in counts[1:])
    for k in range(1, len(counts) + 1):
        expected = k * per_frame - delay * out_rate
        assert abs(sum(counts[:k]) - expected) <= 1
    # the flush hands out the held-back delay, and the whole is 0.5 s
    assert abs(outs[-1].samples_per_channel - delay * out_rate) <= 1
    assert sum(f.samples_per_channel for f in outs) == out_rate // 2


@pytest.mark.parametrize(("in_rate", "out_rate"), PHONE)
def test_the_output_is_aligned_with_the_input(in_rate: int, out_rate: int) -> None:
    """Zero phase: output sample n is the input's signal at n / out_rate (so the only delay
    is the hold-back above, not a shift of the audio)."""
    r = StreamResampler(in_rate, out_rate)
    y = pcm(in_frames(r, tone(in_rate, 440.0, 0.5)))
    ideal = 0.5 * 32767 * np.sin(2 * np.pi * 440.0 * np.arange(len(y)) / out_rate)
    mid = slice(out_rate // 50, -out_rate // 50)  # away from the start-up and the end
    assert np.max(np.abs(y[mid] - ideal[mid])) < 4.0  # LSB: rounding and the passband ripple


# -- quality


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 8000), (16000, 8000), (48000, 8000)])
@pytest.mark.parametrize("freq", [440.0, 3000.0])
def test_tones_keep_their_level_at_8khz(in_rate: int, out_rate: int, freq: float) -> None:
    x = tone(in_rate, freq, 0.5)
    y = pcm(in_frames(StreamResampler(in_rate, out_rate), x))
    mid = y[out_rate // 20 : -out_rate // 20]
    level = 20 * np.log10(np.sqrt(np.mean(mid**2)) / (0.5 * 32767 / math.sqrt(2)))
    assert abs(level) < 0.5


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "freq"),
    [
        (24000, 8000, 4200.0),
        (24000, 8000, 6000.0),
        (24000, 8000, 11000.0),
        (16000, 8000, 4500.0),
        (48000, 8000, 15000.0),
        (48000, 16000, 8500.0),
        (24000, 16000, 9000.0),
    ],
)
def test_a_tone_above_the_output_nyquist_is_60db_down(
    in_rate: int, out_rate: int, freq: float
) -> None:
    y = pcm(in_frames(StreamResampler(in_rate, out_rate), tone(in_rate, freq, 0.5)))
    rms = np.sqrt(np.mean(y[out_rate // 20 : -out_rate // 20] ** 2))
    assert 20 * np.log10(max(rms, 1e-9) / (0.5 * 32767 / math.sqrt(2))) <= -60.0


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (8000, 48000), (16000, 24000)])
def test_upsampling_leaves_no_image_above_the_input_nyquist(in_rate: int, out_rate: int) -> None:
    freq = 0.4 * in_rate  # its first image is at in_rate - freq, above in_rate / 2
    y = pcm(in_frames(StreamResampler(in_rate, out_rate), tone(in_rate, freq, 0.5)))
    y = y[out_rate // 20 : -out_rate // 20]
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    bins = np.fft.rfftfreq(len(y), 1 / out_rate)
    signal = spectrum[np.argmin(np.abs(bins - freq))]
    image = spectrum[np.argmin(np.abs(bins - (in_rate - freq)))]
    assert 20 * np.log10(image / signal) <= -60.0


def test_a_constant_comes_out_as_that_constant() -> None:
    x = np.full(8000, 12345, dtype=np.int16)
    y = pcm(in_frames(StreamResampler(8000, 48000), x))
    assert np.all(y[600:-600] == 12345)


def test_a_long_call_is_done_in_blocks_with_the_same_samples() -> None:
    x = noise(48000, 2.0, channels=2, seed=5)
    whole = StreamResampler(48000, 8000, 2)
    one = whole.process(AudioFrame.from_array(x, 48000)).data + whole.flush().data
    chunked = b"".join(f.data for f in in_frames(StreamResampler(48000, 8000, 2), x))
    assert one == chunked
    assert len(one) == 2 * 2 * 16000
