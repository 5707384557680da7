"""WhisperSTT: the in-process STT conformance suite, the weights' checks, its options.

Speech is made by espeak-ng (fast, no second model); Whisper tiny.en hears its en-us
voice word for word on these short questions (see docs/offline.md for the measures).
"""

from __future__ import annotations

import dataclasses
import re
import threading
import types
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError, StreamClosedError
from antiphon.plugins.whisper import PINS, WhisperRecognizer, WhisperSTT, packaged_model_dir
from antiphon.plugins.whisper import stt as whisper_stt
from antiphon.plugins.whisper.stt import EARLY_SILENCE
from antiphon.services.stt import InProcessSTT, Recognizer, StreamState, STTDeadlines
from antiphon.testing.conformance.stt import InProcessSTTConformance, STTHarness

pytestmark = pytest.mark.engines  # real model inference: `pytest -m engines` runs them alone

PAD = 0.4


@pytest.fixture(scope="module", autouse=True)
def loaded_model() -> Iterator[object]:
    """Load the model once for the module: every WhisperSTT opened meanwhile shares it."""
    model = WhisperSTT()._load()
    yield model
    del model


@cache
def espeak_speech(text: str) -> AudioFrame:
    """``text`` spoken by espeak-ng (en-us), with silence on each side."""
    from antiphon.plugins.espeak.engine import Voice, sample_rate, synthesize_pcm

    rate = sample_rate()
    pad = bytes(2 * round(PAD * rate))
    return AudioFrame(pad + synthesize_pcm(text, Voice("en-us", 160)) + pad, rate)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


class WhisperHarness(STTHarness):
    def make_stt(
        self, *, deadlines: STTDeadlines, wrap: Callable[[Recognizer], Recognizer] | None
    ) -> InProcessSTT:
        class Wrapped(WhisperSTT):
            def make_recognizer(self) -> Recognizer:
                inner = super().make_recognizer()
                return wrap(inner) if wrap is not None else inner

        # A final is a whole model call, and the streams of one service share the model
        # (one call at a time): four streams' finals queue behind each other on a busy
        # 2-core machine, so the final deadline is wider than the suite's. Interim
        # results stay off (the default): each would be a whole model call too, past the
        # suite's 2 s ``process`` deadline on a loaded machine.
        # The early transcription (a model call inside ``process``) is off: the suite's
        # ``process`` deadline (2 s) is shorter than a model call on a loaded machine
        # (the default deadlines give it 5 s); it is tested on its own below.
        return Wrapped(deadlines=dataclasses.replace(deadlines, final=20.0), early=False)

    def speech(self, text: str) -> AudioFrame:
        return espeak_speech(text)

    def heard(self, text: str, transcript: str) -> bool:
        """Every word, in order (case and punctuation aside)."""
        return words(transcript) == words(text)


class TestWhisperConformance(InProcessSTTConformance):
    """The suite, but for interim results: Whisper hears an utterance whole, so the two
    tests of interim transcripts are replaced by their final-only counterparts."""

    harness = WhisperHarness()

    async def test_recognizes_speech_with_timings(self) -> None:
        audio = self.harness.speech(self.TEXT)
        async with self.run() as r, r.stt.stream(generation=3) as s:
            for f in audio.split(0.02):
                s.push_audio(f)
            s.end_input()
            results = [t async for t in s]
            assert s.state is StreamState.COMPLETED and s.error is None
        [final] = results
        assert final.is_final and final.generation == 3 and final.utterance == 0
        assert self.harness.heard(self.TEXT, final.text), final.text
        assert 0.0 <= final.start < final.end <= audio.duration + 0.05
        assert 0.0 <= final.confidence <= 1.0

    async def test_interim_arrives_before_input_ends(self) -> None:
        """No interim: nothing arrives until the utterance ends (flush)."""
        audio = self.harness.speech(self.TEXT)
        async with self.run() as r, r.stt.stream() as s:
            for f in audio.split(0.02):
                s.push_audio(f)
            s.flush()
            first = await anext(s)
            assert first.is_final and not s.done and self.harness.heard(self.TEXT, first.text)
            s.end_input()
            assert [t async for t in s] == []

    async def test_cancel_mid_stream(self) -> None:
        """Cancelled while the utterance is being pushed (no interim to wait for)."""
        audio = self.harness.speech(self.TEXT)
        async with self.run() as r:
            await r.stt.prewarm()  # the engine is loaded: the stream takes audio at once
            s = r.stt.stream()
            for f in audio.split(0.02):
                s.push_audio(f)
            s.cancel()
            assert s.state is StreamState.CANCELLED and s.done
            assert [t async for t in s] == []  # nothing after the cancel
            with pytest.raises(StreamClosedError, match="cancelled"):
                s.push_audio(audio)
            await s.aclose()
            # the engine was reset and is reused
            finals = await r.stt.recognize(audio)
            assert finals and self.harness.heard(self.TEXT, finals[0].text)
            assert len(r.stt.threads) == 1


async def test_finals_only_by_default_with_punctuation_and_timings() -> None:
    audio = espeak_speech("What can you do?")
    async with WhisperSTT() as stt, stt.stream() as s:
        for f in audio.split(0.02):
            s.push_audio(f)
        s.end_input()
        got = [t async for t in s]
    assert [t.is_final for t in got] == [True]
    [final] = got
    assert final.text == "What can you do?"
    # the words lie between the pads (the energy gate finds them)
    assert PAD - 0.1 <= final.start < final.end <= audio.duration - PAD + 0.1
    assert 0.0 < final.confidence <= 1.0


async def test_quiet_noise_is_not_sent_to_the_model() -> None:
    """Whisper invents words in near-silence; the energy gate never asks it."""
    import numpy as np

    rng = np.random.default_rng(7)
    hiss = (rng.normal(0, 20, 16000)).astype("<i2").tobytes()  # about -64 dBFS
    async with WhisperSTT() as stt:
        assert await stt.recognize(AudioFrame(hiss, 16000)) == []


def _copy_of_the_weights(tmp_path: Path, tamper: str | None) -> Path:
    """The packaged files, linked into ``tmp_path`` (``tamper`` one changed by a byte)."""
    source = packaged_model_dir()
    for name in PINS:
        target = tmp_path / name
        if name == tamper:
            target.write_bytes((source / name).read_bytes() + b" ")
        else:
            target.symlink_to(source / name)
    return tmp_path


async def test_a_tampered_weight_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = _copy_of_the_weights(tmp_path, tamper="config.json")
    monkeypatch.setattr(whisper_stt, "packaged_model_dir", lambda: copy)
    async with WhisperSTT() as stt:
        with pytest.raises(ProviderError) as info:
            await stt.prewarm()
    err = info.value
    assert err.provider == "whisper" and err.stage == "load"
    assert str(copy / "config.json") in str(err)
    assert PINS["config.json"] in str(err) and "pip install" in str(err)


async def test_own_model_directory_with_own_checksums(tmp_path: Path) -> None:
    copy = _copy_of_the_weights(tmp_path, tamper=None)
    async with WhisperSTT(model=copy, checksums={"config.json": "0" * 64}) as stt:
        with pytest.raises(ProviderError, match="0000000000"):
            await stt.prewarm()
    async with WhisperSTT(model=copy, checksums=PINS) as stt:
        finals = await stt.recognize(espeak_speech("What time is it?"))
    assert [words(t.text) for t in finals] == [["what", "time", "is", "it"]]


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        WhisperSTT(model=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"model\.bin, config\.json, tokenizer\.json missing"):
        WhisperSTT(model=tmp_path)
    with pytest.raises(ConfigError, match="threads"):
        WhisperSTT(threads=0)
    with pytest.raises(ConfigError, match="min_level"):
        WhisperSTT(min_level=2.0)


# ----------------------------------------------------------------- early transcription


class CountingModel:
    """A stand-in for ``WhisperModel``: says what it heard, counts its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # samples given to each call

    def transcribe(self, audio: Any, **_: Any) -> tuple[list[Any], None]:
        self.calls.append(len(audio))
        segment = types.SimpleNamespace(text=f" {len(self.calls)} calls", avg_logprob=-0.1)
        return [segment], None


def tone(seconds: float, level: float = 0.2) -> bytes:
    t = np.arange(round(seconds * 16000)) / 16000
    return (level * 32767 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()


def feed(r: WhisperRecognizer, pcm: bytes) -> None:
    for i in range(0, len(pcm), 640):  # 20 ms chunks, as the stream sends them
        r.process(pcm[i : i + 640])


def test_early_transcript_is_the_final_when_only_quiet_follows() -> None:
    model = CountingModel()
    r = WhisperRecognizer(model)
    r.start()
    feed(r, tone(0.5))
    assert model.calls == []
    feed(r, bytes(2 * 16000 * 3 // 10))  # 0.3 s of quiet: past EARLY_SILENCE
    assert model.calls == [round((0.5 + EARLY_SILENCE) * 16000)]  # transcribed once
    final = r.finish()
    assert final is not None and final.text == "1 calls" and len(model.calls) == 1
    assert final.start == 0.0 and final.end == pytest.approx(0.5, abs=0.011)


def test_speech_after_the_early_transcript_is_transcribed_again() -> None:
    model = CountingModel()
    r = WhisperRecognizer(model)
    r.start()
    feed(r, tone(0.5) + bytes(2 * 16000 * 3 // 10) + tone(0.4))
    assert len(model.calls) == 1  # the pause
    final = r.finish()  # the words after the pause are not lost
    assert final is not None and len(model.calls) == 2 and model.calls[1] == 19200
    assert final.end == pytest.approx(1.2, abs=0.011)
    r.start()  # a new utterance starts clean
    feed(r, bytes(2 * 16000))
    assert r.finish() is None and len(model.calls) == 2  # quiet only: no model call


def test_early_transcription_can_be_off_and_waits_for_no_busy_model() -> None:
    model = CountingModel()
    r = WhisperRecognizer(model, early=False)
    r.start()
    feed(r, tone(0.5) + bytes(16000))
    assert model.calls == []
    assert r.finish() is not None and len(model.calls) == 1
    slots = threading.Semaphore(1)
    busy = WhisperRecognizer(model, slots=slots)
    busy.start()
    with slots:  # another stream holds the model: no early call, no wait
        feed(busy, tone(0.5) + bytes(16000))
    assert len(model.calls) == 1
    assert busy.finish() is not None and len(model.calls) == 2


async def test_default_stream_gives_the_early_final_after_the_flush() -> None:
    audio = espeak_speech("What time is it?")  # ends with 0.4 s of silence
    async with WhisperSTT() as stt:
        assert stt._early
        async with stt.stream() as s:
            for f in audio.split(0.02):
                s.push_audio(f)
            s.flush()
            final = await anext(s)
            s.end_input()
            assert [t async for t in s] == []
    assert final.is_final and final.text == "What time is it?"


def test_repeated_words_are_recognised_as_a_loop() -> None:
    assert whisper_stt._repeats("Goodbye Goodbye")
    assert whisper_stt._repeats("10 of clubs 10 of clubs.")
    assert not whisper_stt._repeats("What time is it?")
    assert not whisper_stt._repeats("")


async def test_short_utterances_decode_in_the_shorter_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    windows: list[int] = []
    decode = WhisperRecognizer._transcribe_window

    def counted(self: WhisperRecognizer, audio: Any) -> Any:
        windows.append(len(audio))
        return decode(self, audio)

    monkeypatch.setattr(WhisperRecognizer, "_transcribe_window", counted)
    speech = espeak_speech("What time is it?")
    for window, used in ((whisper_stt.WINDOW, 1), (30.0, 0)):
        windows.clear()
        async with WhisperSTT(window=window) as stt:
            finals = await stt.recognize(speech)
        assert words(" ".join(f.text for f in finals)) == ["what", "time", "is", "it"]
        assert len(windows) == used
    with pytest.raises(ConfigError, match="window"):
        WhisperSTT(window=0.5)
