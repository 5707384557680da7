"""Streaming resampling and channel mixing for :class:`AudioFrame` streams.

``StreamResampler`` keeps the filter state across chunks, so resampling a signal in 20 ms
pieces gives exactly the samples that resampling it in one piece gives: no clicks at chunk
edges, unlike an FFT resample per chunk. It has two engines:

* **Polyphase FIR** (:mod:`antiphon.audio.polyphase`, numpy) for the small ratios that
  real-time speech uses (``L/M`` with ``L, M <= 8``: 8k <-> 16k, 24k, 32k, 48k; 16k <->
  24k, 48k; 24k <-> 48k; ...) at the filtered qualities (``LQ``, ``MQ``, ``HQ``). Every
  frame gives its share of output at once, held back only by the filter's group delay
  (:attr:`StreamResampler.delay`: 3.9 ms to 8 kHz, 2 ms for 16k <-> 24k/48k). A
  Kaiser-windowed sinc, flat to 0.85 of the lower Nyquist, >= 73 dB down from it on.
* **soxr** for every other ratio (44.1k <-> 48k, 22.05k -> 16k: ``L/M`` like 160/147),
  for ``QQ`` (cubic, per frame already) and ``VHQ``, or when asked (``engine="soxr"``).

Why not soxr for the small ratios: its filtered qualities convolve by FFT in blocks, so
fed 20 ms frames it hands out its output in bursts. Samples out per 20 ms frame in, soxr
1.1 HQ: 24 kHz -> 8 kHz ``[0, 0, 0, 490, 0, 0, 489, 0, 0, 489, ...]`` (the first audio after
80 ms, then 60 ms bursts); 16 kHz -> 8 kHz ``[0, 0, 0, 0, 0, 830, 0, 0, 0, 0, 830, ...]``
and 8 kHz -> 16 kHz ``[0, 0, 0, 0, 0, 1660, 0, ...]`` (100 ms blocks). In a call that is
every phone reply's first audio ~80 ms later, the Twilio bridge sending media in 60-100 ms
bursts, and speech reaching an STT provider up to 100 ms late. The polyphase engine costs
1.3-1.9x soxr HQ's CPU per 20 ms frame (10-18 µs against 6-13 µs, int16 in and out
included: docs/performance.md, ``bench/resample.py``); libsamplerate, also per frame,
costs 25-45 µs.

Both engines are deterministic, int16 in and out: the polyphase arithmetic is exact (see
its module), and soxr runs in float32 here, with int16 in and out at the edges. soxr's
own int16 mode adds TPDF dither seeded from the wall clock, so its output differs from
run to run and with the chunking (by up to 2 LSB); converting int16 -> float32 is exact
and rounding the float result back is deterministic, so our output depends only on the
input samples.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import soxr

from antiphon.audio.frame import AudioFrame
from antiphon.audio.polyphase import PolyphaseResampler, polyphase_ratio
from antiphon.errors import ConfigError

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]
#: ``"auto"``: the polyphase engine where it applies, soxr elsewhere; ``"soxr"``: always
#: soxr (whole-signal users who prefer its wider passband to the lower latency).
Engine = Literal["auto", "soxr"]
ENGINES: tuple[Engine, ...] = ("auto", "soxr")
QUALITIES: tuple[Quality, ...] = ("QQ", "LQ", "MQ", "HQ", "VHQ")
#: The qualities served by the polyphase filter when the ratio is small (see the module
#: docstring); ``QQ`` (cubic, per frame already) and ``VHQ`` (28-bit) stay with soxr.
POLYPHASE_QUALITIES: tuple[Quality, ...] = ("LQ", "MQ", "HQ")

__all__ = [
    "ENGINES",
    "POLYPHASE_QUALITIES",
    "QUALITIES",
    "AudioConverter",
    "Engine",
    "Quality",
    "StreamResampler",
    "to_channels",
    "to_mono",
]


def _check_rate(name: str, rate: int) -> None:
    if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
        raise ConfigError(f"{name} must be a positive int in Hz, got {rate!r}")


def _check_channels(name: str, channels: int) -> None:
    if not isinstance(channels, int) or isinstance(channels, bool) or channels <= 0:
        raise ConfigError(f"{name} must be a positive int, got {channels!r}")


def _check_quality(quality: Quality, engine: Engine) -> None:
    if quality not in QUALITIES:
        raise ConfigError(f"quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")


_LO = np.float32(-32768.0)
_HI = np.float32(32767.0)


def _float_to_pcm(y: npt.NDArray[np.floating[Any]]) -> bytes:
    """Round float samples in int16 scale to little-endian int16 bytes, clipping."""
    np.rint(y, out=y)
    y.clip(_LO, _HI, out=y)  # the method with float32 bounds: ~2x faster than np.clip
    return y.astype("<i2").tobytes()


class StreamResampler:
    """Resample one stream of int16 frames from ``in_rate`` to ``out_rate``, keeping state.

    Feed frames with :meth:`process`; each returns what is ready so far (possibly an
    empty frame: the filter holds back its delay, and soxr whole blocks). :meth:`flush`
    returns the held-back tail at the end of the stream and makes the resampler ready for
    a new one. When ``in_rate == out_rate`` frames pass through unchanged (the same object).

    Args:
        in_rate: Sample rate of the frames fed in, Hz.
        out_rate: Sample rate of the output, Hz.
        channels: Channels of the frames fed in (and of the output).
        quality: soxr's quality names; ``LQ``/``MQ``/``HQ`` take the polyphase engine
            where the ratio is small (see the module docstring).
        engine: ``"auto"`` (the default) or ``"soxr"`` to keep soxr at every ratio.

    Raises:
        ConfigError: A rate or channel count that is not a positive int, or an unknown
            quality or engine.
    """

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        channels: int = 1,
        quality: Quality = "HQ",
        *,
        engine: Engine = "auto",
    ) -> None:
        _check_rate("in_rate", in_rate)
        _check_rate("out_rate", out_rate)
        _check_channels("channels", channels)
        _check_quality(quality, engine)
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.channels = channels
        self.quality: Quality = quality
        self.engine: Engine = engine
        self._generation = 0
        self._stream: soxr.ResampleStream | None = None
        self._poly: PolyphaseResampler | None = None
        use_poly = engine == "auto" and quality in POLYPHASE_QUALITIES
        ratio = polyphase_ratio(in_rate, out_rate) if use_poly else None
        if ratio is not None:
            self._poly = PolyphaseResampler(*ratio, channels)
        elif in_rate != out_rate:
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, channels, dtype="float32", quality=quality
            )
        self._empty_in = np.zeros((0, channels), dtype=np.float32)

    @property
    def generation(self) -> int:
        """Generation of the last frame processed (carried by :meth:`flush`'s output)."""
        return self._generation

    @property
    def identity(self) -> bool:
        """True when the rates are equal and frames pass through untouched."""
        return self._stream is None and self._poly is None

    @property
    def polyphase(self) -> bool:
        """True when the polyphase filter resamples (a small ratio), False for soxr."""
        return self._poly is not None

    @property
    def delay(self) -> float | None:
        """Seconds the polyphase filter holds the output back (its group delay).

        None for soxr, which holds back whole blocks (see the module docstring); 0 for
        the identity.
        """
        if self._poly is not None:
            return self._poly.filter.input_delay / self.in_rate
        return None if self._stream is not None else 0.0

    def _check(self, frame: AudioFrame) -> None:
        if frame.sample_rate != self.in_rate or frame.channels != self.channels:
            raise ConfigError(
                f"StreamResampler({self.in_rate} Hz -> {self.out_rate} Hz, {self.channels} ch) "
                f"got a frame of {frame.sample_rate} Hz, {frame.channels} ch; create a "
                "resampler for that format, or use AudioConverter, which follows the input "
                "format"
            )

    def _frame(self, y: npt.NDArray[np.floating[Any]]) -> AudioFrame:
        # int16 of whole frames of samples, made here: built without the checks
        return AudioFrame.trusted(_float_to_pcm(y), self.out_rate, self.channels, self._generation)

    def process(self, frame: AudioFrame) -> AudioFrame:
        """Resample ``frame``; return the output ready so far (may have 0 samples).

        The output carries ``frame.generation``.
        """
        self._check(frame)
        self._generation = frame.generation
        if self._poly is not None:
            x = np.frombuffer(frame.data, dtype="<i2").reshape(-1, self.channels)
            return self._frame(self._poly.process(x))
        if self._stream is None:
            return frame
        x = np.frombuffer(frame.data, dtype="<i2").reshape(-1, self.channels)
        return self._frame(self._stream.resample_chunk(x.astype(np.float32)))

    def flush(self) -> AudioFrame:
        """End the stream: return the held-back tail, then reset for a new stream."""
        if self._poly is not None:
            return self._frame(self._poly.flush())
        if self._stream is None:
            return AudioFrame(b"", self.out_rate, self.channels, self._generation)
        tail = self._frame(self._stream.resample_chunk(self._empty_in, last=True))
        self._stream.clear()
        return tail

    def reset(self) -> None:
        """Drop the filter state and any held-back audio (e.g. after an interruption)."""
        if self._poly is not None:
            self._poly.reset()
        if self._stream is not None:
            self._stream.clear()


def to_mono(frame: AudioFrame) -> AudioFrame:
    """Average the channels into one (rounded, computed in int32 so it cannot overflow).

    A mono frame is returned as is.
    """
    if frame.channels == 1:
        return frame
    total = frame.as_array().sum(axis=1, dtype=np.int32)
    mono = np.rint(total / frame.channels).astype("<i2")
    return AudioFrame(mono.tobytes(), frame.sample_rate, 1, frame.generation)


def to_channels(frame: AudioFrame, channels: int) -> AudioFrame:
    """Convert to ``channels``: mono is duplicated to every channel, N channels are
    averaged to mono; the same count returns ``frame`` itself.

    Other conversions (e.g. 6 -> 2) are refused with :class:`ConfigError`.
    """
    _check_channels("channels", channels)
    if channels == frame.channels:
        return frame
    if channels == 1:
        return to_mono(frame)
    if frame.channels == 1:
        dup = np.repeat(frame.as_array(), channels)
        return AudioFrame(dup.tobytes(), frame.sample_rate, channels, frame.generation)
    raise ConfigError(
        f"cannot convert {frame.channels}-channel audio to {channels} channels: only mono "
        "to N and N to mono are supported; mix down with to_mono() first"
    )


class AudioConverter:
    """Convert a stream of frames of any format to ``out_rate`` / ``out_channels``.

    The input format may change mid-stream: the old resampler is flushed (its tail is
    returned ahead of the new audio) and a new one is made. Channels are reduced before
    resampling and duplicated after it, so the resampler never does more work than needed.
    """

    def __init__(
        self,
        out_rate: int,
        out_channels: int = 1,
        quality: Quality = "HQ",
        *,
        engine: Engine = "auto",
    ) -> None:
        _check_rate("out_rate", out_rate)
        _check_channels("out_channels", out_channels)
        _check_quality(quality, engine)
        self.out_rate = out_rate
        self.out_channels = out_channels
        self.quality: Quality = quality
        self.engine: Engine = engine
        self._in_format: tuple[int, int] | None = None
        self._resampler: StreamResampler | None = None

    @property
    def input_format(self) -> tuple[int, int] | None:
        """``(sample_rate, channels)`` of the current input stream, None before any."""
        return self._in_format

    def _to_out_channels(self, frame: AudioFrame) -> AudioFrame:
        return to_channels(frame, self.out_channels)

    def _flush_resampler(self) -> AudioFrame | None:
        if self._resampler is None:
            return None
        tail = self._resampler.flush()
        return self._to_out_channels(tail) if tail.samples_per_channel else None

    def process(self, frame: AudioFrame) -> AudioFrame:
        """Convert ``frame``; return the output ready so far (may have 0 samples)."""
        fmt = (frame.sample_rate, frame.channels)
        tail: AudioFrame | None = None
        if fmt != self._in_format:
            if (
                frame.channels != self.out_channels
                and frame.channels != 1
                and self.out_channels != 1
            ):
                raise ConfigError(
                    f"AudioConverter cannot turn {frame.channels}-channel audio into "
                    f"{self.out_channels} channels: only mono to N and N to mono are "
                    "supported; mix down with to_mono() first"
                )
            tail = self._flush_resampler()
            self._in_format = fmt
            self._resampler = StreamResampler(
                frame.sample_rate,
                self.out_rate,
                min(frame.channels, self.out_channels),
                self.quality,
                engine=self.engine,
            )
        assert self._resampler is not None
        if frame.channels > self.out_channels:
            frame = to_mono(frame)
        out = self._to_out_channels(self._resampler.process(frame))
        if tail is None:
            return out
        return AudioFrame(tail.data + out.data, self.out_rate, self.out_channels, out.generation)

    def flush(self) -> AudioFrame:
        """End the stream: return the held-back tail; the converter can then be reused."""
        tail = self._flush_resampler()
        if tail is None:
            gen = self._resampler.generation if self._resampler is not None else 0
            return AudioFrame(b"", self.out_rate, self.out_channels, gen)
        return tail

    def reset(self) -> None:
        """Drop held-back audio without returning it (e.g. after an interruption)."""
        if self._resampler is not None:
            self._resampler.reset()
