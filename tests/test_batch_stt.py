"""BatchSTT (services/batch_stt.py): a streaming STT over a recogniser of whole clips, on
the virtual clock; and its first user, OpenAIBatchSTT, on the file-transcription fake."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.errors import AuthError, ConfigError, ProviderError, ProviderTimeoutError
from antiphon.plugins.openai import OpenAIBatchSTT
from antiphon.protocols.retry import Backoff
from antiphon.services.batch_stt import BatchSTT, Clip
from antiphon.services.stt import StreamState, STTDeadlines, Transcript
from antiphon.testing import FaultPlan, serving
from antiphon.testing.agent import EnergyVAD
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.openai_audio import DEFAULT_API_KEY, FakeOpenAIAudio
from antiphon.testing.synth import tone_for_text

pytestmark = pytest.mark.virtual_time

PHRASES = ("What time is it?", "Turn on the lights.", "Thank you very much.")
DEADLINES = STTDeadlines(connect=1.0, process=1.0, final=2.0, idle=1.0, close=0.5)
RATE = 16000


def speech(text: str, pad: float = 0.4) -> AudioFrame:
    silence = bytes(round(pad * RATE) * 2)
    return AudioFrame(silence + tone_for_text(text, RATE) + silence, RATE)


class Recorder(BatchSTT):
    """Answers each segment with ``segment N (S s)``; ``script`` overrides answers."""

    provider = "recorder"

    def __init__(self, script: list[Any] | None = None, **kw: Any) -> None:
        super().__init__(sample_rate=RATE, deadlines=DEADLINES, **kw)
        self.segments: list[float] = []
        self.script = list(script or [])

    async def transcribe(self, pcm: bytes) -> Clip:
        seconds = len(pcm) / (2 * RATE)
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, BaseException):
                raise step
            if step == "hang":
                await asyncio.Event().wait()
        self.segments.append(seconds)
        return Clip(f"segment {len(self.segments)} ({seconds:.2f} s)", 0.8)


def _feed(s: Any, audio: AudioFrame) -> None:
    for f in audio.split(0.02):
        s.push_audio(f)


async def test_flushes_cut_segments_each_answered_by_one_final() -> None:
    first, second = speech(PHRASES[0]), speech(PHRASES[1])
    async with Recorder() as stt, stt.stream(generation=3) as s:
        _feed(s, first)
        s.flush()
        _feed(s, second)
        s.end_input()
        got = [t async for t in s]
    assert s.state is StreamState.COMPLETED
    assert stt.segments == pytest.approx([first.duration, second.duration])
    assert [(t.is_final, t.utterance, t.generation) for t in got] == [
        (True, 0, 3),
        (True, 1, 3),
    ]
    assert got[0].start == 0.0 and got[0].end == pytest.approx(first.duration)
    assert got[1].start == pytest.approx(first.duration)
    assert got[1].end == pytest.approx(first.duration + second.duration)
    assert got[0].confidence == 0.8
    assert [t.flushed for t in got] == [True, False]  # the flush's final answers it


async def test_a_flush_with_nothing_to_recognise_is_answered_empty() -> None:
    gap = AudioFrame(bytes(RATE * 2), RATE)
    async with Recorder(vad=EnergyVAD) as stt, stt.stream() as s:
        _feed(s, speech(PHRASES[0]))
        _feed(s, gap)  # the VAD ends the segment: its final comes unasked
        for _ in range(3):  # nothing is open now; three flushes queued at once
            s.flush()
        s.end_input()
        got = [t async for t in s]
    # one answer, to the last: an answer to an earlier one would not answer the later
    assert [(t.text != "", t.flushed) for t in got] == [(True, False), (False, True)]
    empty = got[1]
    assert empty.is_final and empty.start == empty.end == got[0].end
    assert len(stt.segments) == 1


async def test_a_vad_cuts_at_the_end_of_speech_and_drops_the_silence() -> None:
    gap = AudioFrame(bytes(RATE * 2 * 2), RATE)  # 2 s of silence between the phrases
    tones = [AudioFrame(tone_for_text(p, RATE), RATE) for p in PHRASES[:2]]
    async with Recorder(vad=EnergyVAD) as stt, stt.stream() as s:
        _feed(s, gap)
        _feed(s, tones[0])
        _feed(s, gap)
        _feed(s, tones[1])
        _feed(s, gap)
        s.end_input()
        got = [t async for t in s]
    assert len(got) == 2 and len(stt.segments) == 2
    for tone, seconds in zip(tones, stt.segments, strict=True):
        # each segment is its speech, within a VAD window or two: the silence is not sent
        assert seconds == pytest.approx(tone.duration, abs=0.1)
    assert got[0].start == pytest.approx(2.0, abs=0.1)
    assert got[1].start == pytest.approx(4.0 + tones[0].duration, abs=0.1)


async def test_a_long_segment_is_cut_at_max_segment() -> None:
    audio = AudioFrame(tone_for_text("x " * 40, RATE), RATE)
    async with Recorder(max_segment=2.0) as stt, stt.stream() as s:
        _feed(s, audio)
        s.end_input()
        await s.finals()
    assert stt.segments[:-1] == pytest.approx([2.0] * (len(stt.segments) - 1), abs=0.03)
    assert sum(stt.segments) == pytest.approx(audio.duration, abs=0.03)


async def test_short_segments_are_not_sent() -> None:
    async with Recorder(min_segment=0.5) as stt, stt.stream() as s:
        _feed(s, AudioFrame(bytes(RATE // 5 * 2), RATE))  # 0.2 s
        s.flush()
        s.end_input()
        assert await s.finals() == []
    assert stt.segments == [] and stt.requests == 0


async def test_a_hanging_recogniser_fails_the_stream_at_the_final_deadline() -> None:
    loop = asyncio.get_running_loop()
    async with Recorder(["hang"]) as stt:
        leaks = LeakCheck()
        s = stt.stream()
        _feed(s, speech(PHRASES[0]))
        s.end_input()
        began = loop.time()
        with pytest.raises(ProviderTimeoutError) as info:
            await s.finals()
        assert info.value.timeout == DEADLINES.final and info.value.stage == "final"
        assert loop.time() - began == pytest.approx(DEADLINES.final, abs=0.05)
        await s.aclose()
    await leaks.assert_clean(settle=0.5)


async def test_retryable_failures_are_retried_after_the_configured_backoff() -> None:
    busy = ProviderError("busy", provider="recorder", stage="final", code=503, retryable=True)
    backoff = Backoff(base=0.3, factor=2.0, jitter=0.0)
    loop = asyncio.get_running_loop()
    async with Recorder([busy, busy], backoff=backoff, max_retries=2) as stt:
        began = loop.time()
        finals = await stt.recognize(speech(PHRASES[0]))
    assert len(finals) == 1 and stt.requests == 3
    assert loop.time() - began == pytest.approx(0.3 + 0.6, abs=0.05)


async def test_auth_errors_are_never_retried() -> None:
    denied = AuthError("no", provider="recorder", stage="final", code=401)
    async with Recorder([denied], max_retries=5) as stt:
        with pytest.raises(AuthError):
            await stt.recognize(speech(PHRASES[0]))
    assert stt.requests == 1


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_segment"):
        Recorder(max_segment=0.2)
    with pytest.raises(ConfigError, match="max_retries"):
        Recorder(max_retries=-1)
    with pytest.raises(ConfigError, match="vad"):
        Recorder(vad=3)


# --------------------------------------------------------------------------- OpenAI


def _openai(url: str, **kw: Any) -> OpenAIBatchSTT:
    return OpenAIBatchSTT(api_key=DEFAULT_API_KEY, base_url=url, deadlines=DEADLINES, **kw)


async def test_openai_batch_transcribes_each_segment_on_the_fake() -> None:
    async with serving(FakeOpenAIAudio(vocabulary=PHRASES)) as fake:
        async with _openai(fake.url, language="en", prompt="home") as stt, stt.stream() as s:
            _feed(s, speech(PHRASES[0]))
            s.flush()
            _feed(s, speech(PHRASES[2]))
            s.end_input()
            finals: list[Transcript] = await s.finals()
        assert [f.text for f in finals] == [PHRASES[0], PHRASES[2]]
        assert fake.stats.forms[0] == {
            "model": "gpt-4o-transcribe",
            "response_format": "json",
            "language": "en",
            "prompt": "home",
        }
        assert fake.stats.clips == pytest.approx(
            [speech(PHRASES[0]).duration, speech(PHRASES[2]).duration], abs=0.01
        )


async def test_openai_batch_key_refused_is_an_auth_error() -> None:
    async with serving(FakeOpenAIAudio(vocabulary=PHRASES, api_key="other")) as fake:
        async with _openai(fake.url) as stt:
            with pytest.raises(AuthError, match="OPENAI_API_KEY"):
                await stt.recognize(speech(PHRASES[0]))
        assert fake.stats.statuses == [401]


async def test_openai_batch_retries_a_503_with_retry_after() -> None:
    plan = FaultPlan(reject_status=503)
    async with serving(FakeOpenAIAudio(plan, vocabulary=PHRASES, reject_requests=1)) as fake:
        async with _openai(fake.url, backoff=Backoff(jitter=0.0)) as stt:
            finals = await stt.recognize(speech(PHRASES[1]))
        assert [f.text for f in finals] == [PHRASES[1]]
        assert fake.stats.statuses == [503, 200]


async def test_openai_batch_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIBatchSTT()
    with pytest.raises(ConfigError, match="base_url"):
        OpenAIBatchSTT(api_key="k", base_url="wss://api.openai.com")
