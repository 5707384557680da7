"""PocketsphinxSTT: the in-process STT conformance suite on speech made by espeak."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError
from antiphon.plugins.pocketsphinx import PocketsphinxSTT
from antiphon.services.stt import InProcessSTT, Recognizer, STTDeadlines
from antiphon.services.stt_conformance import InProcessSTTConformance, STTHarness


@cache
def espeak_speech(text: str) -> AudioFrame:
    """``text`` spoken by espeak-ng at 130 wpm, with 0.5 s of silence on each side."""
    from antiphon.plugins.espeak.engine import Voice, sample_rate, synthesize_pcm

    rate = sample_rate()
    pad = bytes(rate)  # 0.5 s of int16 silence
    return AudioFrame(pad + synthesize_pcm(text, Voice(rate=130)) + pad, rate)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


class PocketsphinxHarness(STTHarness):
    def make_stt(
        self, *, deadlines: STTDeadlines, wrap: Callable[[Recognizer], Recognizer] | None
    ) -> InProcessSTT:
        class Wrapped(PocketsphinxSTT):
            def make_recognizer(self) -> Recognizer:
                inner = super().make_recognizer()
                return wrap(inner) if wrap is not None else inner

        return Wrapped(deadlines=deadlines)

    def speech(self, text: str) -> AudioFrame:
        return espeak_speech(text)

    def heard(self, text: str, transcript: str) -> bool:
        """PocketSphinx on a synthetic voice is rough: most of the words must be there."""
        want, got = set(words(text)), set(words(transcript))
        return len(want & got) >= max(1, len(want) // 2)


class TestPocketsphinxConformance(InProcessSTTConformance):
    harness = PocketsphinxHarness()
    TEXT = "What can you do?"  # a phrase it gets from espeak's voice (see docs/offline.md)


async def test_closed_vocabulary_recognises_the_words() -> None:
    vocab = ["what", "time", "is", "it", "can", "you", "do", "hello", "there", "how", "are"]
    async with PocketsphinxSTT(words=vocab) as stt:
        finals = await stt.recognize(espeak_speech("What can you do?"))
    assert finals and set(words(finals[0].text)) <= set(vocab)
    assert "can" in words(finals[0].text)


def test_unknown_words_and_missing_files_are_refused() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        PocketsphinxSTT(lm="/nonexistent.lm.bin")
    with pytest.raises(ConfigError, match="interim_interval"):
        PocketsphinxSTT(interim_interval=-1)
    with pytest.raises(ConfigError, match="not in the PocketSphinx dictionary: zzqxv"):
        PocketsphinxSTT(words=["hello", "zzqxv"])
