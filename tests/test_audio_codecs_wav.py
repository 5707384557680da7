"""G.711 codecs and WAV files."""

from __future__ import annotations

import io
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from antiphon.audio import codecs
from antiphon.audio.frame import AudioFrame
from antiphon.audio.wav import WavWriter, read_wav, write_wav
from antiphon.errors import ConfigError


def pcm(*values: int) -> bytes:
    return np.array(values, dtype="<i2").tobytes()


def samples(data: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(data, dtype="<i2")]


Codec = Callable[[bytes], bytes]
ALL_PCM = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))


def test_mulaw_reference_values() -> None:
    # Silence is 0xFF, full scale 0x80 / 0x00 (inverted bits), as every G.711 coder.
    assert codecs.ulaw_encode(pcm(0, 32767, -32768)) == bytes([0xFF, 0x80, 0x00])
    assert samples(codecs.ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00]))) == [0, 0, 32124, -32124]


def test_alaw_reference_values() -> None:
    # Silence is 0xD5 / 0x55 (even bits inverted), full scale 0xAA / 0x2A.
    assert codecs.alaw_encode(pcm(0, -1, 32767, -32768)) == bytes([0xD5, 0x55, 0xAA, 0x2A])
    assert samples(codecs.alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A]))) == [8, -8, 32256, -32256]


@pytest.mark.parametrize(
    ("encode", "decode"),
    [(codecs.ulaw_encode, codecs.ulaw_decode), (codecs.alaw_encode, codecs.alaw_decode)],
)
def test_codes_are_fixed_points_and_encoding_is_monotonic(encode: Codec, decode: Codec) -> None:
    decoded = decode(ALL_CODES)
    # Every code decodes to a level that encodes back to a code with the same level.
    assert decode(encode(decoded)) == decoded
    # Louder input never decodes quieter (quantiser is monotonic over the whole range).
    levels = np.frombuffer(decode(encode(ALL_PCM)), dtype="<i2")
    assert np.all(np.diff(levels.astype(np.int32)) >= 0)


@pytest.mark.parametrize(
    ("encode", "decode"),
    [(codecs.ulaw_encode, codecs.ulaw_decode), (codecs.alaw_encode, codecs.alaw_decode)],
)
def test_roundtrip_error_is_logarithmic(encode: Codec, decode: Codec) -> None:
    x = np.frombuffer(ALL_PCM, dtype="<i2").astype(np.int32)
    y = np.frombuffer(decode(encode(ALL_PCM)), dtype="<i2").astype(np.int32)
    peak = int(np.abs(np.frombuffer(decode(ALL_CODES), dtype="<i2").astype(np.int32)).max())
    assert 32000 < peak < 32768
    clipped = np.clip(x, -peak, peak)
    err = np.abs(y - clipped)
    # 8-bit companding: error within ~1/16 of the magnitude, with a small floor near zero.
    assert np.all(err <= np.maximum(np.abs(clipped) / 16, 12))
    assert np.abs(y).max() == peak


@given(st.lists(st.integers(-32768, 32767), max_size=400))
def test_decode_to_pcm_dispatches(values: list[int]) -> None:
    data = pcm(*values)
    assert codecs.decode_to_pcm("linear16", data) == data
    for enc in ("mulaw", "alaw"):
        coded = codecs.encode_pcm(enc, data)
        assert len(coded) == len(values)
        assert len(codecs.decode_to_pcm(enc, coded)) == len(data)


def test_bad_input_says_what_to_fix() -> None:
    with pytest.raises(ConfigError, match="even number of bytes"):
        codecs.ulaw_encode(b"\x00\x01\x02")
    with pytest.raises(ConfigError, match="expected one of"):
        codecs.decode_to_pcm("opus", b"")


def test_wav_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frame = AudioFrame.from_array(rng.integers(-3000, 3000, (480, 2), dtype=np.int16), 48000)
    write_wav(tmp_path / "sub" / "a.wav", frame)
    back = read_wav(tmp_path / "sub" / "a.wav")
    assert (back.sample_rate, back.channels, back.data) == (48000, 2, frame.data)


def test_wav_writer_streams_and_fixes_header() -> None:
    buf = io.BytesIO()
    frames = [AudioFrame.silence(0.02, 16000), AudioFrame(pcm(1, 2, 3), 16000)]
    w = WavWriter(buf, sample_rate=16000)
    for f in frames:
        w.write(f)
    assert w.duration == pytest.approx(323 / 16000)
    w.close()
    w.close()  # idempotent
    buf.seek(0)
    with wave.open(buf, "rb") as r:
        assert r.getnframes() == 323
        assert r.readframes(323) == b"".join(f.data for f in frames)


def test_wav_writer_refuses_mismatched_frames() -> None:
    with (
        WavWriter(io.BytesIO(), sample_rate=16000) as w,
        pytest.raises(ConfigError, match="AudioConverter"),
    ):
        w.write(AudioFrame.silence(0.01, 24000))


def test_read_wav_rejects_non_wav_and_8_bit(tmp_path: Path) -> None:
    bad = tmp_path / "x.wav"
    bad.write_bytes(b"not a wav file at all")
    with pytest.raises(ConfigError, match="not a PCM WAV"):
        read_wav(bad)
    eight = tmp_path / "8.wav"
    with wave.open(str(eight), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes(10))
    with pytest.raises(ConfigError, match="16-bit"):
        read_wav(eight)


@given(
    st.integers(0, 200),
    st.sampled_from([8000, 16000, 24000]),
    st.integers(1, 2),
    st.integers(0, 5),
)
def test_a_trusted_frame_is_the_checked_frame(
    n: int, rate: int, channels: int, generation: int
) -> None:
    data = bytes(range(256)) * 4
    data = data[: n * 2 * channels]
    checked = AudioFrame(data, rate, channels, generation)
    trusted = AudioFrame.trusted(data, rate, channels, generation)
    assert trusted == checked and hash(trusted) == hash(checked)
    assert trusted.samples_per_channel == checked.samples_per_channel == n
    assert trusted.duration == checked.duration
    assert trusted.with_generation(9) == checked.with_generation(9)
    assert trusted.split(0.001) == checked.split(0.001)
    with pytest.raises(AttributeError):
        trusted.sample_rate = 1  # type: ignore[misc]
