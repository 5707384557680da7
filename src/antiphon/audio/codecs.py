"""G.711 mu-law and a-law (telephony) to and from int16 PCM, by table lookup.

The tables follow ITU-T G.711 as in the classic reference coder (and Python's former
``audioop``): mu-law on 14-bit magnitudes with bias 0x84 >> 2 and clip 8159, a-law on
13-bit magnitudes with the even-bit inversion (0x55).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from antiphon.errors import ConfigError

__all__ = [
    "ENCODINGS",
    "Encoding",
    "alaw_decode",
    "alaw_encode",
    "decode_to_pcm",
    "encode_pcm",
    "ulaw_decode",
    "ulaw_encode",
]

Encoding = Literal["linear16", "mulaw", "alaw"]
ENCODINGS: tuple[Encoding, ...] = ("linear16", "mulaw", "alaw")

_MU_BIAS = 0x84
_MU_CLIP = 8159  # in 14-bit units


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + _MU_BIAS
    t = t << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _MU_BIAS - t, t - _MU_BIAS).astype(np.int16)


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    x = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit, as the reference coder
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.where(x < 0, -x, x), _MU_CLIP) + (_MU_BIAS >> 2)
    # segment: the smallest s with mag <= 0x3F << s
    seg = np.searchsorted(
        np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), mag, side="left"
    ).astype(np.int32)
    uval = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    uval = np.where(seg >= 8, 0x7F, uval)
    return ((uval ^ mask) & 0xFF).astype(np.uint8)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    x = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(x >= 0, 0xD5, 0x55)
    mag = np.where(x >= 0, x, -x - 1)
    # segment: the smallest s with mag <= 0x1F << s (8 means overflow)
    seg = np.searchsorted(
        np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]), mag, side="left"
    ).astype(np.int32)
    shift = np.where(seg < 2, 1, seg)
    aval = (seg << 4) | ((mag >> shift) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)
    return ((aval ^ mask) & 0xFF).astype(np.uint8)


# little-endian int16 already, so a lookup is the decoded PCM (no conversion per call)
_ULAW_DEC = _ulaw_decode_table().astype("<i2")
_ALAW_DEC = _alaw_decode_table().astype("<i2")
_ULAW_ENC = _ulaw_encode_table()
_ALAW_ENC = _alaw_encode_table()


def _pcm(data: bytes) -> npt.NDArray[np.uint16]:
    """The encode tables' index of each sample: the int16 value + 32768 (its bits read as
    uint16 with the sign bit flipped, without widening)."""
    if len(data) % 2:
        raise ConfigError(f"int16 PCM must have an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<u2") ^ np.uint16(0x8000)


def ulaw_encode(pcm: bytes) -> bytes:
    """int16 little-endian PCM to one mu-law byte per sample."""
    return _ULAW_ENC.take(_pcm(pcm)).tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    """int16 little-endian PCM to one a-law byte per sample."""
    return _ALAW_ENC.take(_pcm(pcm)).tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """mu-law bytes to int16 little-endian PCM."""
    return _ULAW_DEC.take(np.frombuffer(data, dtype=np.uint8)).tobytes()


def alaw_decode(data: bytes) -> bytes:
    """a-law bytes to int16 little-endian PCM."""
    return _ALAW_DEC.take(np.frombuffer(data, dtype=np.uint8)).tobytes()


def decode_to_pcm(encoding: str, data: bytes) -> bytes:
    """Decode ``data`` of ``encoding`` (linear16, mulaw or alaw) to int16 PCM."""
    if encoding == "linear16":
        return data
    if encoding == "mulaw":
        return ulaw_decode(data)
    if encoding == "alaw":
        return alaw_decode(data)
    raise ConfigError(f"unknown audio encoding {encoding!r}; expected one of {ENCODINGS}")


def encode_pcm(encoding: str, pcm: bytes) -> bytes:
    """Encode int16 PCM as ``encoding`` (linear16, mulaw or alaw)."""
    if encoding == "linear16":
        return pcm
    if encoding == "mulaw":
        return ulaw_encode(pcm)
    if encoding == "alaw":
        return alaw_encode(pcm)
    raise ConfigError(f"unknown audio encoding {encoding!r}; expected one of {ENCODINGS}")
