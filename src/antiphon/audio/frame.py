"""``AudioFrame``: int16 PCM with an explicit sample rate and channel count."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from antiphon.errors import ConfigError

__all__ = ["BYTES_PER_SAMPLE", "SUPPORTED_RATES", "AudioFrame", "float_to_int16"]

SUPPORTED_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
BYTES_PER_SAMPLE = 2


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """A block of interleaved little-endian int16 PCM.

    ``generation`` is the id of the turn the audio belongs to (0 when unused); anything of
    an older generation is dropped at the boundary that knows the current one.
    """

    data: bytes
    sample_rate: int
    channels: int = 1
    generation: int = 0
    _samples: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes | bytearray | memoryview):
            raise ConfigError(
                f"AudioFrame.data must be bytes of int16 PCM, got {type(self.data).__name__}; "
                "use AudioFrame.from_array() for numpy arrays"
            )
        if isinstance(self.data, bytearray | memoryview):
            object.__setattr__(self, "data", bytes(self.data))
        if not isinstance(self.sample_rate, int) or self.sample_rate <= 0:
            raise ConfigError(f"sample_rate must be a positive int in Hz, got {self.sample_rate!r}")
        if not isinstance(self.channels, int) or self.channels <= 0:
            raise ConfigError(f"channels must be a positive int, got {self.channels!r}")
        width = BYTES_PER_SAMPLE * self.channels
        if len(self.data) % width:
            raise ConfigError(
                f"AudioFrame of {len(self.data)} bytes is not a whole number of "
                f"{self.channels}-channel int16 samples ({width} bytes each)"
            )
        object.__setattr__(self, "_samples", len(self.data) // width)

    @classmethod
    def from_array(
        cls, samples: npt.ArrayLike, sample_rate: int, *, generation: int = 0
    ) -> AudioFrame:
        """Build from int16 samples shaped ``(n,)`` (mono) or ``(n, channels)``."""
        arr = np.asarray(samples)
        if arr.dtype != np.int16:
            raise ConfigError(
                f"expected int16 samples, got {arr.dtype}; convert float audio with "
                "antiphon.audio.float_to_int16()"
            )
        if arr.ndim == 1:
            channels = 1
        elif arr.ndim == 2:
            channels = arr.shape[1]
        else:
            raise ConfigError(f"samples must be 1-D or (n, channels), got shape {arr.shape}")
        data = np.ascontiguousarray(arr).astype("<i2", copy=False).tobytes()
        return cls(data, sample_rate, channels, generation)

    @classmethod
    def silence(
        cls, duration: float, sample_rate: int, channels: int = 1, *, generation: int = 0
    ) -> AudioFrame:
        n = round(duration * sample_rate)
        return cls(bytes(n * channels * BYTES_PER_SAMPLE), sample_rate, channels, generation)

    @property
    def samples_per_channel(self) -> int:
        return self._samples

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self._samples / self.sample_rate

    def as_array(self) -> npt.NDArray[np.int16]:
        """A read-only numpy view on the data (no copy): ``(n,)`` or ``(n, channels)``."""
        arr = np.frombuffer(self.data, dtype="<i2")
        if self.channels > 1:
            arr = arr.reshape(-1, self.channels)
        return arr

    @classmethod
    def trusted(
        cls, data: bytes, sample_rate: int, channels: int = 1, generation: int = 0
    ) -> AudioFrame:
        """Build without validation, for the framework's hot paths only.

        The caller guarantees what ``__init__`` would check: ``data`` is ``bytes`` holding
        whole int16 samples of ``channels`` channels, ``sample_rate`` and ``channels`` are
        positive ints (frames it cut or decoded itself from validated input). About half
        the cost of the checked constructor, which matters once per 20 ms chunk per stream.
        """
        frame = _new(cls)
        _set_data(frame, data)
        _set_rate(frame, sample_rate)
        _set_channels(frame, channels)
        _set_generation(frame, generation)
        _set_samples(frame, len(data) // (BYTES_PER_SAMPLE * channels))
        return frame

    def with_generation(self, generation: int) -> AudioFrame:
        return _trusted(self.data, self.sample_rate, self.channels, generation)

    def split(self, duration: float) -> list[AudioFrame]:
        """Cut into frames of ``duration`` seconds (the last may be shorter)."""
        step = max(1, round(duration * self.sample_rate)) * self.channels * BYTES_PER_SAMPLE
        mv = memoryview(self.data)
        rate, channels, generation = self.sample_rate, self.channels, self.generation
        return [
            _trusted(bytes(mv[i : i + step]), rate, channels, generation)
            for i in range(0, len(self.data), step)
        ]


# The slots' own setters: a frozen dataclass refuses ``setattr``, and these are the
# cheapest way around it for ``AudioFrame.trusted``.
_new = object.__new__
_set_data = vars(AudioFrame)["data"].__set__
_set_rate = vars(AudioFrame)["sample_rate"].__set__
_set_channels = vars(AudioFrame)["channels"].__set__
_set_generation = vars(AudioFrame)["generation"].__set__
_set_samples = vars(AudioFrame)["_samples"].__set__
_trusted = AudioFrame.trusted


def float_to_int16(samples: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """Convert float audio in [-1, 1] to int16, clipping."""
    arr = np.asarray(samples, dtype=np.float64)
    return np.clip(np.round(arr * 32767.0), -32768, 32767).astype(np.int16)
