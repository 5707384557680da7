"""Audio: frames, streaming resampling and mixing, codecs, WAV files, paced output."""

from antiphon.audio.frame import AudioFrame, float_to_int16

__all__ = ["AudioFrame", "float_to_int16"]
