"""Deterministic test speech: a tone whose pitch and length follow the text.

The same text always gives the same bytes, so a test can compute exactly the audio a
fake server sent for a text and compare it byte for byte with what a client received.
The last texts' audio is kept (:func:`tone_for_text` is cached): a double that speaks
the same reply on hundreds of calls at once (``bench/capacity.py``) stands in for a
provider whose synthesis costs the server nothing, so it should not cost the server
a synthesis per turn either.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np

__all__ = ["MIN_SECONDS", "SECONDS_PER_CHAR", "tone_duration", "tone_for_text"]

#: Seconds of audio per character of text (about the pace of real speech).
SECONDS_PER_CHAR = 0.06
MIN_SECONDS = 0.1


def tone_duration(text: str) -> float:
    return max(MIN_SECONDS, SECONDS_PER_CHAR * len(text.strip()))


@functools.lru_cache(maxsize=64)
def tone_for_text(text: str, sample_rate: int) -> bytes:
    """int16 little-endian mono PCM for ``text``: length ~60 ms per character."""
    n = round(tone_duration(text) * sample_rate)
    freq = 220.0 + (zlib.crc32(text.encode("utf-8")) % 500)
    t = np.arange(n, dtype=np.float64) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t)
    ramp = min(n // 2, int(0.005 * sample_rate))
    if ramp:
        fade = np.linspace(0.0, 1.0, ramp)
        wave[:ramp] *= fade
        wave[-ramp:] *= fade[::-1]
    return (wave * 32767).astype("<i2").tobytes()
