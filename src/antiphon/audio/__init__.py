"""Audio: frames, streaming resampling and mixing, codecs, WAV files, paced output."""

from antiphon.audio.frame import AudioFrame, float_to_int16
from antiphon.audio.resample import (
    ENGINES,
    QUALITIES,
    AudioConverter,
    Engine,
    Quality,
    StreamResampler,
    to_channels,
    to_mono,
)
from antiphon.audio.track import OutputTrack

__all__ = [
    "ENGINES",
    "QUALITIES",
    "AudioConverter",
    "AudioFrame",
    "Engine",
    "OutputTrack",
    "Quality",
    "StreamResampler",
    "float_to_int16",
    "to_channels",
    "to_mono",
]
