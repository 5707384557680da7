"""PocketsphinxSTT: the in-process STT conformance suite on speech made by espeak."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError
from antiphon.plugins.pocketsphinx import PocketsphinxSTT
from antiphon.services.stt import InProcessSTT, Recognizer, STTDeadlines
from antiphon.testing.conformance.stt import InProcessSTTConformance, STTHarness

#: Real threads and wall-clock time: PocketSphinx runs on its own thread.
pytestmark = pytest.mark.realtime

#: The espeak voice PocketSphinx hears best (measured, see docs/offline.md).
VOICE = ("en-us+f3", 150)
PAD = 0.5


@cache
def espeak_speech(text: str) -> AudioFrame:
    """``text`` spoken by espeak-ng (:data:`VOICE`), with 0.5 s of silence on each side."""
    from antiphon.plugins.espeak.engine import Voice, sample_rate, synthesize_pcm

    rate = sample_rate()
    pad = bytes(2 * round(PAD * rate))
    return AudioFrame(pad + synthesize_pcm(text, Voice(*VOICE)) + pad, rate)


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
        """PocketSphinx on a synthetic voice is rough: at least half of the words must be
        there (measured on "What can you do?": "what can you do" or "what you do")."""
        want, got = set(words(text)), set(words(transcript))
        return len(want & got) >= max(1, (len(want) + 1) // 2)


class TestPocketsphinxConformance(InProcessSTTConformance):
    harness = PocketsphinxHarness()
    TEXT = "What can you do?"  # a phrase it gets from espeak's voice (see docs/offline.md)


async def test_closed_vocabulary_hears_only_its_words() -> None:
    vocab = ["what", "time", "is", "it", "can", "you", "do", "hello", "there", "how", "are"]
    async with PocketsphinxSTT(words=vocab) as stt:
        finals = await stt.recognize(espeak_speech("What can you do?"))
    assert len(finals) == 1
    got = words(finals[0].text)
    assert got and set(got) <= set(vocab)  # the grammar allows nothing else
    assert len(set(got) & {"what", "can", "you", "do"}) >= 2


async def test_final_timings_lie_inside_the_utterance() -> None:
    audio = espeak_speech("What can you do?")
    async with PocketsphinxSTT(interim_interval=0.2) as stt, stt.stream() as s:
        for f in audio.split(0.02):
            s.push_audio(f)
        s.end_input()
        got = [t async for t in s]
    final = got[-1]
    assert final.is_final and final.utterance == 0
    # the speech is the audio between the two 0.5 s pads: the words lie within it
    assert PAD - 0.15 <= final.start < final.end <= audio.duration - PAD + 0.15
    assert 0.0 < final.confidence <= 1.0
    interim = got[:-1]
    assert interim and all(not t.is_final and t.confidence == 0.0 for t in interim)
    assert all(t.start >= PAD - 0.15 for t in interim)


async def test_no_interim_when_disabled() -> None:
    async with PocketsphinxSTT(interim_interval=0) as stt, stt.stream() as s:
        for f in espeak_speech("What can you do?").split(0.02):
            s.push_audio(f)
        s.end_input()
        got = [t async for t in s]
    assert got and all(t.is_final for t in got)


async def test_a_language_model_that_is_not_one_fails_the_load(tmp_path: Path) -> None:
    bad = tmp_path / "broken.lm"
    bad.write_text("this is not an ARPA or binary language model\n")
    async with PocketsphinxSTT(lm=str(bad)) as stt:
        with pytest.raises(ProviderError) as info:
            await stt.prewarm()
    assert info.value.stage == "load" and info.value.provider == "pocketsphinx"


def test_unknown_words_and_missing_files_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"lm file '/nonexistent\.lm\.bin' does not exist"):
        PocketsphinxSTT(lm="/nonexistent.lm.bin")
    with pytest.raises(ConfigError, match="dictionary file"):
        PocketsphinxSTT(dictionary="/nonexistent.dict")
    with pytest.raises(ConfigError, match="interim_interval"):
        PocketsphinxSTT(interim_interval=-1)
    with pytest.raises(ConfigError, match="not in the PocketSphinx dictionary: qqzx, zzqxv"):
        PocketsphinxSTT(words=["hello", "zzqxv", "qqzx"])
    with pytest.raises(ConfigError, match=r"\(none given\)"):
        PocketsphinxSTT(words=[" "])
