"""The streaming-STT vocabulary shared by the protocol machines: the audio chunker."""

from __future__ import annotations

import pytest

from antiphon.audio.codecs import encode_pcm
from antiphon.errors import ConfigError
from antiphon.protocols.stt_session import SEND_CHUNK_SECONDS, AudioChunker


def test_push_cuts_whole_messages_and_keeps_the_rest() -> None:
    chunker = AudioChunker(sample_rate=16000, width=2)
    step = round(SEND_CHUNK_SECONDS * 16000) * 2
    assert chunker.step == step
    pcm = bytes(range(256)) * 30  # 7680 bytes: 4 whole messages and 1280 bytes over
    chunks = chunker.push(pcm)
    assert [len(c) for c in chunks] == [step] * (len(pcm) // step)
    assert b"".join(chunks) == pcm[: len(pcm) - len(chunker)]
    assert len(chunker) == len(pcm) % step
    (tail,) = chunker.tail()
    assert b"".join(chunks) + tail == pcm  # nothing lost, nothing reordered
    assert chunker.tail() == [] and len(chunker) == 0


def test_mulaw_is_encoded_and_padded_with_its_silence() -> None:
    chunker = AudioChunker(sample_rate=8000, width=1)
    pcm = b"\x10\x00" * 100
    assert chunker.push(pcm) == []  # 100 samples < 400 per message
    (tail,) = chunker.tail(min_bytes=400)
    assert tail == encode_pcm("mulaw", pcm) + b"\xff" * 300


def test_int16_tail_padding_is_zero_samples() -> None:
    chunker = AudioChunker(sample_rate=16000, width=2)
    chunker.push(b"\x01\x02" * 10)
    assert chunker.tail(min_bytes=40) == [b"\x01\x02" * 10 + b"\x00\x00" * 10]
    chunker.push(b"\x01\x02" * 30)
    assert chunker.tail(min_bytes=40) == [b"\x01\x02" * 30]  # long enough: no padding


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="whole samples"):
        AudioChunker(sample_rate=16000, width=2).push(b"\x00\x00\x00")
    with pytest.raises(ConfigError, match="1 \\(mu-law\\) or 2"):
        AudioChunker(sample_rate=16000, width=3)
