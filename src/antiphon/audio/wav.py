"""WAV files of int16 PCM: read whole, write whole, or write as a stream."""

from __future__ import annotations

import os
import wave
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError

__all__ = ["PathLike", "WavWriter", "read_wav", "write_wav"]

PathLike = str | os.PathLike[str]


def read_wav(path: PathLike | BinaryIO) -> AudioFrame:
    """Read a 16-bit PCM WAV file into one frame.

    Refused with a :class:`ConfigError`: not a WAV file, an empty one, another sample
    width, and a truncated one (fewer samples than its header announces).
    """
    try:
        with wave.open(path if not isinstance(path, os.PathLike) else str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise ConfigError(
                    f"{_name(path)}: {8 * w.getsampwidth()}-bit WAV is not supported; "
                    "convert it to 16-bit PCM (e.g. sox in.wav -b 16 out.wav)"
                )
            announced = w.getnframes()
            data = w.readframes(announced)
            got = len(data) // (2 * w.getnchannels())
            if got < announced:
                raise ConfigError(
                    f"{_name(path)}: truncated WAV file: the header announces {announced} "
                    f"samples, the file holds {got}"
                )
            return AudioFrame(data, w.getframerate(), w.getnchannels())
    except (wave.Error, EOFError) as exc:
        reason = str(exc) or "the file is empty or cut short"
        raise ConfigError(f"{_name(path)}: not a PCM WAV file ({reason})") from exc


def write_wav(path: PathLike | BinaryIO, frame: AudioFrame) -> None:
    """Write one frame as a 16-bit PCM WAV file."""
    with WavWriter(path, sample_rate=frame.sample_rate, channels=frame.channels) as w:
        w.write(frame)


class WavWriter:
    """Append frames to a WAV file as they arrive; the header is fixed up on close.

    >>> with WavWriter("out.wav", sample_rate=24000) as w:
    ...     w.write(frame)
    """

    def __init__(self, path: PathLike | BinaryIO, *, sample_rate: int, channels: int = 1) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise ConfigError("sample_rate and channels must be positive")
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames_written = 0
        target = str(path) if isinstance(path, os.PathLike) else path
        self._owned: BinaryIO | None = None  # the file we opened (wave leaves it open)
        if isinstance(target, str):
            try:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                self._owned = target = open(target, "wb")  # noqa: SIM115 (closed by close())
            except OSError as exc:
                raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
        self._w: wave.Wave_write | None = wave.open(target, "wb")  # noqa: SIM115 (closed by close())
        self._w.setnchannels(channels)
        self._w.setsampwidth(2)
        self._w.setframerate(sample_rate)

    def write(self, frame: AudioFrame) -> None:
        if self._w is None:
            raise ConfigError("WavWriter is closed")
        if frame.sample_rate != self.sample_rate or frame.channels != self.channels:
            raise ConfigError(
                f"frame is {frame.sample_rate} Hz x{frame.channels} but the file is "
                f"{self.sample_rate} Hz x{self.channels}; resample with AudioConverter first"
            )
        self._w.writeframesraw(frame.data)
        self.frames_written += frame.samples_per_channel

    @property
    def duration(self) -> float:
        return self.frames_written / self.sample_rate

    def close(self) -> None:
        if self._w is not None:
            w, self._w = self._w, None
            try:
                w.close()
            finally:
                if self._owned is not None:
                    self._owned.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _name(path: object) -> str:
    return str(path) if isinstance(path, str | os.PathLike) else "WAV stream"
