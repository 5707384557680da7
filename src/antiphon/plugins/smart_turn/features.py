"""Whisper's log-mel features in numpy, as Smart Turn v3 expects them.

Smart Turn v3 is a Whisper-tiny encoder with a classification head; its ONNX graph
takes the features, not audio: ``(batch, 80, 800)`` log-mel frames of 8 s of 16 kHz
audio. They are Whisper's (``n_fft`` 400, hop 160, a periodic Hann window, 80
Slaney-scale mel bands with Slaney area normalisation up to 8 kHz, ``log10`` floored at
1e-10, clamped to 8 below the maximum, then ``(x + 4) / 4``), computed on the waveform
normalised to zero mean and unit variance, as the model was trained. Written here from
that definition (numpy only) so the plugin needs neither ``transformers`` nor torch; a
test checks the filter bank and the features against faster-whisper's extractor.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

__all__ = ["HOP", "N_FFT", "N_MELS", "SAMPLE_RATE", "log_mel", "mel_filters", "normalise"]

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
N_MELS = 80

_F_SP = 200.0 / 3  # Slaney: linear below 1 kHz ...
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0  # ... logarithmic above


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    mel = hz / _F_SP
    high = hz >= _MIN_LOG_HZ
    mel[high] = _MIN_LOG_MEL + np.log(hz[high] / _MIN_LOG_HZ) / _LOG_STEP
    return mel


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    hz = mel * _F_SP
    high = mel >= _MIN_LOG_MEL
    hz[high] = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel[high] - _MIN_LOG_MEL))
    return hz


@functools.cache
def mel_filters() -> npt.NDArray[np.float32]:
    """The ``(80, 201)`` Slaney mel filter bank of Whisper (read-only)."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(
        np.linspace(
            _hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([SAMPLE_RATE / 2]))[0], N_MELS + 2
        )
    )
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    bank = np.maximum(0.0, np.minimum(lower, upper))
    bank *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per band
    out = bank.astype(np.float32)
    out.flags.writeable = False
    return out


@functools.cache
def _window() -> npt.NDArray[np.float64]:
    n = np.arange(N_FFT)
    return 0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)  # periodic Hann


def normalise(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Zero mean, unit variance (the waveform normalisation the model was trained with)."""
    x = audio.astype(np.float32)
    out: npt.NDArray[np.float32] = ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)
    return out


def log_mel(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Whisper's ``(80, len(audio) // 160)`` log-mel features of 16 kHz float audio.

    The STFT is centred (the signal reflected by ``n_fft / 2`` on both sides) and its
    last frame dropped, as Whisper does, so 8 s give exactly 800 frames.
    """
    x = np.asarray(audio, dtype=np.float64)
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:-1]
    spectrum = np.fft.rfft(frames * _window(), axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).T  # (201, frames)
    mel = mel_filters().astype(np.float64) @ power
    logs = np.log10(np.maximum(mel, 1e-10))
    logs = np.maximum(logs, logs.max() - 8.0)
    out: npt.NDArray[np.float32] = ((logs + 4.0) / 4.0).astype(np.float32)
    return out
