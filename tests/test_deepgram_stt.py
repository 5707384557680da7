"""DeepgramSTT: the WebSocket STT conformance suite on the fake server, plus its own checks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.errors import AuthError, ConfigError, ProviderConnectionError
from antiphon.plugins.deepgram import DeepgramSTT
from antiphon.services.stt import StreamState, Transcript
from antiphon.testing import FaultPlan, serving
from antiphon.testing.conformance.stt_ws import (
    FAST,
    PluginHarness,
    WebSocketSTTConformance,
    speech,
)
from antiphon.testing.deepgram_stt import DEFAULT_API_KEY, FakeDeepgramSTT

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


HARNESS = PluginHarness(
    DeepgramSTT,
    FakeDeepgramSTT,
    api_key=DEFAULT_API_KEY,
    keepalive="KeepAlive",
)


class TestDeepgramSTTConformance(WebSocketSTTConformance):
    harness = HARNESS


# --------------------------------------------------------------------------- plugin-specific


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="DEEPGRAM_API_KEY"):
        DeepgramSTT()


def test_key_from_environment_and_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "from-env")
    stt = DeepgramSTT(language="de", endpointing=300)
    assert stt._headers == {"Authorization": "Token from-env"}
    assert stt.url.startswith("wss://api.deepgram.com/v1/listen?model=nova-3&encoding=linear16")
    assert "language=de" in stt.url and "endpointing=300" in stt.url


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keepalive_interval": 12}, "10 s"),
        ({"max_reconnects": -1}, "max_reconnects"),
        ({"journal_seconds": -1}, "journal_seconds"),
        ({"sample_rate": 100}, "8000 and 48000"),
        ({"base_url": "http://x"}, "ws://127.0.0.1:PORT"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DeepgramSTT(api_key="k", **kwargs)


async def test_wrong_key_is_an_auth_error() -> None:
    async with (
        serving(FakeDeepgramSTT()) as fake,
        DeepgramSTT(api_key="wrong", base_url=fake.url, deadlines=FAST) as stt,
    ):
        with pytest.raises(AuthError, match="DEEPGRAM_API_KEY"):
            await stt.recognize(speech("What time is it?"))


@pytest.mark.parametrize(
    ("encoding", "rate"), [("mulaw", 8000), ("alaw", 8000), ("linear16", 48000)]
)
async def test_wire_encodings_and_rates(encoding: str, rate: int) -> None:
    text = "Turn on the lights."
    async with serving(FakeDeepgramSTT(vocabulary=[text])) as fake:
        async with DeepgramSTT(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            encoding=encoding,
            sample_rate=rate,
            deadlines=FAST,
        ) as stt:
            finals = await stt.recognize(speech(text, 16000))
        assert fake.stats.queries[0]["encoding"] == encoding
        assert fake.stats.queries[0]["sample_rate"] == str(rate)
    assert [f.text for f in finals] == [text]


async def test_replay_keeps_stream_times_continuous() -> None:
    """A drop after the first utterance: the second is replayed and its times run on."""
    texts = ["What time is it?", "Thank you very much."]
    first_len = speech(texts[0]).duration
    plan = FaultPlan(drop_before_audio=1)
    async with (
        serving(FakeDeepgramSTT(plan, vocabulary=texts)) as fake,
        DeepgramSTT(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as stt,
    ):
        async with stt.stream() as s:
            for f in speech(texts[0]).split(0.02):
                s.push_audio(f)
            got: list[Transcript] = []
            async for t in s:  # the first utterance ends by endpointing
                got.append(t)
                if t.is_final:
                    break
            for f in speech(texts[1]).split(0.02):
                s.push_audio(f)
            s.flush()  # the fake drops the connection here, before answering
            s.end_input()
            got += [t async for t in s]
        assert s.state is StreamState.COMPLETED
        assert fake.stats.connections == 2
    finals = [t for t in got if t.is_final]
    assert [f.text for f in finals] == texts
    assert [f.utterance for f in finals] == [0, 1]
    # the second connection started at the journal, not at 0: times are the stream's
    assert first_len + 0.3 <= finals[1].start <= first_len + 0.5
    assert finals[1].end <= 2 * first_len + 0.1


async def test_drop_with_more_audio_than_the_journal_fails_retryable() -> None:
    text = "What time is it?"
    plan = FaultPlan(drop_before_audio=1)
    async with serving(FakeDeepgramSTT(plan, vocabulary=[text])) as fake:
        async with DeepgramSTT(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            deadlines=FAST,
            endpointing=False,  # nothing is finalized before the end
            journal_seconds=0.5,
        ) as stt:
            with pytest.raises(ProviderConnectionError) as info:
                await stt.recognize(speech(text))
        assert info.value.retryable and info.value.code == 1011
        assert fake.stats.connections == 1


async def test_idle_close_without_keepalive_is_recovered_on_a_new_connection() -> None:
    """With keep-alives too rare, the server's idle close loses nothing: replayed."""
    texts = ["What time is it?", "Turn on the lights."]
    plan = FaultPlan(idle_close_after=0.3)
    async with serving(FakeDeepgramSTT(plan, vocabulary=texts)) as fake:
        async with (
            DeepgramSTT(
                api_key=DEFAULT_API_KEY,
                base_url=fake.url,
                deadlines=FAST,
                keepalive_interval=5,
                max_reconnects=10,  # every idle close while paused costs one
            ) as stt,
            stt.stream() as s,
        ):
            for f in speech(texts[0]).split(0.02):
                s.push_audio(f)
            await asyncio.sleep(0.8)
            for f in speech(texts[1]).split(0.02):
                s.push_audio(f)
            s.end_input()
            finals = await s.finals()
        assert fake.stats.count("KeepAlive") == 0
        assert fake.stats.connections >= 2
    assert [f.text for f in finals] == texts


async def test_vad_events_and_utterance_end_over_the_fake() -> None:
    """With endpointing off, Deepgram's ``UtteranceEnd`` ends each utterance: the plugin
    emits its final transcript then, long before the input ends; ``SpeechStarted`` marks
    where each one began and emits nothing."""
    texts = ["What time is it?", "Thank you very much."]
    async with serving(FakeDeepgramSTT(vocabulary=texts)) as fake:
        async with DeepgramSTT(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            deadlines=FAST,
            endpointing=False,
            interim_results=True,
            utterance_end_ms=1000,
            vad_events=True,
        ) as stt:
            async with stt.stream() as s:
                finals: list[Transcript] = []
                for text in texts:
                    for f in speech(text, pad=0.6).split(0.02):
                        s.push_audio(f)
                    for f in AudioFrame(bytes(16000 * 2 * 12 // 10), 16000).split(0.02):
                        s.push_audio(f)  # 1.2 s of silence: more than utterance_end_ms
                    async for t in s:
                        if t.is_final:
                            finals.append(t)
                            break
                assert fake.stats.control == []  # no Finalize, no CloseStream: UtteranceEnd
                s.end_input()
                rest = [t async for t in s]
            assert s.state is StreamState.COMPLETED
        assert fake.stats.queries[0]["vad_events"] == "true"
        assert fake.stats.queries[0]["utterance_end_ms"] == "1000"
    assert [(f.text, f.utterance) for f in finals] == [(texts[0], 0), (texts[1], 1)]
    assert not [t for t in rest if t.is_final]
    assert len(fake.stats.utterance_ends) == 2
    assert [round(f.end, 2) for f in finals] == [round(e, 2) for e in fake.stats.utterance_ends]
    first, second = fake.stats.speech_started
    assert abs(first - 0.6) < 0.05 and abs(second - finals[1].start) < 0.05
