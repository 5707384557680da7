"""ElevenLabsTTS: the conformance suite on the fake server, plus plugin-specific checks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from antiphon.audio.codecs import decode_to_pcm
from antiphon.errors import AuthError, ConfigError, ProviderConnectionError, ProviderError
from antiphon.net.pool import PoolOptions
from antiphon.plugins.elevenlabs import ElevenLabsTTS
from antiphon.protocols import elevenlabs_tts as el
from antiphon.services.tts import TTS, StreamState, TTSDeadlines
from antiphon.testing import FaultPlan, serving
from antiphon.testing.conformance.tts import FAST, TTSConformance, TTSHarness
from antiphon.testing.elevenlabs import (
    DEFAULT_API_KEY,
    MAX_CONTEXTS_MESSAGE,
    FakeElevenLabsTTS,
    synthesize,
)
from antiphon.testing.server import FakeWsServer

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


class ElevenLabsHarness(TTSHarness):
    context_ids = True

    def fake(self, plan: FaultPlan) -> FakeWsServer:
        return FakeElevenLabsTTS(plan)

    def make_tts(
        self, base_url: str, *, deadlines: TTSDeadlines, pool: PoolOptions | None = None
    ) -> TTS:
        return ElevenLabsTTS(
            api_key=DEFAULT_API_KEY, base_url=base_url, deadlines=deadlines, pool=pool
        )

    def make_timed_tts(self, base_url: str, *, deadlines: TTSDeadlines) -> TTS:
        return self.make_tts(base_url, deadlines=deadlines)

    def expected_pcm(self, text: str, tts: TTS) -> bytes:
        return synthesize(text, "linear16", tts.sample_rate)

    def connections(self, fake: FakeWsServer) -> int:
        assert isinstance(fake, FakeElevenLabsTTS)
        return fake.stats.connections

    def cancels(self, fake: FakeWsServer) -> int:
        assert isinstance(fake, FakeElevenLabsTTS)
        return fake.stats.cancels


class TestElevenLabsConformance(TTSConformance):
    harness = ElevenLabsHarness()


# ----------------------------------------------------------------- configuration


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVEN_API_KEY", raising=False)
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ELEVEN_API_KEY"):
        ElevenLabsTTS()


def test_key_from_environment_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVEN_API_KEY", raising=False)
    monkeypatch.setenv("ELEVENLABS_API_KEY", "fallback")
    assert ElevenLabsTTS().headers == {"xi-api-key": "fallback"}
    monkeypatch.setenv("ELEVEN_API_KEY", "primary")
    tts = ElevenLabsTTS()
    assert tts.headers == {"xi-api-key": "primary"}
    assert tts.url.startswith(
        f"wss://api.elevenlabs.io/v1/text-to-speech/{el.DEFAULT_VOICE}/multi-stream-input?"
    )
    assert "model_id=eleven_flash_v2_5" in tts.url and "output_format=pcm_24000" in tts.url
    assert tts.sample_rate == 24000 and tts.wire_encoding == "linear16"


def test_unsupported_combinations_are_refused() -> None:
    with pytest.raises(ConfigError, match="use one of 8000"):
        ElevenLabsTTS(api_key="k", encoding="mulaw", sample_rate=16000)
    with pytest.raises(ConfigError, match="compressed"):
        ElevenLabsTTS(api_key="k", output_format="mp3_44100_128")
    with pytest.raises(ConfigError, match="eleven_flash_v2_5"):
        ElevenLabsTTS(api_key="k", model="eleven_v3")
    with pytest.raises(ConfigError, match="contradicts"):
        ElevenLabsTTS(api_key="k", output_format="pcm_16000", sample_rate=24000)


def test_output_format_and_telephony_defaults() -> None:
    assert ElevenLabsTTS(api_key="k", output_format="ulaw_8000").wire_encoding == "mulaw"
    tts = ElevenLabsTTS(api_key="k", encoding="alaw")
    assert tts.sample_rate == 8000 and "output_format=alaw_8000" in tts.url


def test_every_option_reaches_the_wire() -> None:
    tts = ElevenLabsTTS(
        api_key="k",
        voice="abc123",
        model="eleven_multilingual_v2",
        sample_rate=16000,
        language_code="de",
        inactivity_timeout=180,
        auto_mode=True,
        enable_ssml_parsing=False,
        apply_text_normalization="off",
        enable_logging=False,
        seed=7,
        voice_settings=el.VoiceSettings(stability=0.4, speed=1.1),
        chunk_length_schedule=[50, 100],
        pronunciation_dictionaries=[el.PronunciationDictionary("d1", "v1")],
    )
    for part in (
        "/abc123/multi-stream-input?",
        "model_id=eleven_multilingual_v2",
        "output_format=pcm_16000",
        "language_code=de",
        "inactivity_timeout=180",
        "auto_mode=true",
        "enable_ssml_parsing=false",
        "apply_text_normalization=off",
        "enable_logging=false",
        "seed=7",
    ):
        assert part in tts.url
    init = json.loads(tts.new_session().speak("Hi ")[0])
    assert init["voice_settings"] == {"stability": 0.4, "speed": 1.1}
    assert init["generation_config"] == {"chunk_length_schedule": [50, 100]}
    assert init["pronunciation_dictionary_locators"] == [
        {"pronunciation_dictionary_id": "d1", "version_id": "v1"}
    ]


# ----------------------------------------------------------------- against the fake


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
async def test_telephony_encodings_are_decoded_to_pcm(encoding: str) -> None:
    async with (
        serving(FakeElevenLabsTTS()) as fake,
        ElevenLabsTTS(
            api_key=DEFAULT_API_KEY, base_url=fake.url, encoding=encoding, deadlines=FAST
        ) as tts,
    ):
        frame = await tts.synthesize("Phone call audio.").collect()
    assert frame.sample_rate == 8000
    assert frame.data == decode_to_pcm(encoding, synthesize("Phone call audio.", encoding, 8000))


@pytest.mark.parametrize("rate", [16000, 22050, 44100])
async def test_other_pcm_rates(rate: int) -> None:
    async with (
        FakeElevenLabsTTS() as fake,
        ElevenLabsTTS(
            api_key=DEFAULT_API_KEY, base_url=fake.url, sample_rate=rate, deadlines=FAST
        ) as tts,
    ):
        frame = await tts.synthesize("Rate check.").collect()
    assert frame.sample_rate == rate
    assert frame.data == synthesize("Rate check.", "linear16", rate)


async def test_wrong_key_is_an_auth_error_from_the_fake() -> None:
    async with (
        serving(FakeElevenLabsTTS()) as fake,
        ElevenLabsTTS(api_key="wrong", base_url=fake.url, deadlines=FAST) as tts,
    ):
        with pytest.raises(AuthError, match="ELEVEN_API_KEY") as info:
            await tts.synthesize("hi").collect()
    assert info.value.code == 1008 and fake.stats.closes_sent == [1008]


async def test_every_text_message_ends_with_a_space_and_tokens_are_not_split() -> None:
    tokens = ["Hel", "lo", " wor", "ld,", " how", " are", " you", "?"]
    async with (
        FakeElevenLabsTTS() as fake,
        ElevenLabsTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
        tts.stream() as s,
    ):
        for t in tokens:
            s.push_text(t)
        s.end_input()
        audio = (await s.collect()).data
    assert audio == synthesize("Hello world, how are you?", "linear16", 24000)
    assert fake.stats.unterminated_texts == 0
    assert fake.stats.flushed_texts == ["Hello world, how are you?"]
    sent = [m for m in fake.stats.messages if "text" in m]
    assert sent[0]["text"] == " " and all(m["text"].endswith(" ") for m in sent)


async def test_each_stream_uses_its_own_context_and_closes_it() -> None:
    async with (
        FakeElevenLabsTTS() as fake,
        ElevenLabsTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        for i in range(3):
            await tts.synthesize(f"Turn {i}.").collect()
    ids = {m["context_id"] for m in fake.stats.messages}
    assert len(ids) == 3 and fake.stats.connections == 1
    assert fake.stats.contexts_opened == 3 and fake.stats.context_closes == 3
    assert fake.stats.max_open_contexts == 1 and fake.stats.cancels == 0


async def test_cancelled_audio_keeps_arriving_but_never_reaches_the_next_turn() -> None:
    """A server that ignores close_context: the next stream drops the old context's audio."""
    plan = FaultPlan(ignore_clear=True, chunk_interval=0.002)
    async with (
        FakeElevenLabsTTS(plan) as fake,
        ElevenLabsTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        s1 = tts.synthesize("An old answer that keeps on talking after the cancel. " * 3)
        await anext(s1)
        await s1.aclose()
        frame = await tts.synthesize("New turn.").collect()
    assert frame.data == synthesize("New turn.", "linear16", 24000)
    assert fake.stats.connections == 1 and fake.stats.cancels == 1


async def test_cancel_before_the_input_ends_closes_the_context() -> None:
    async with (
        FakeElevenLabsTTS(FaultPlan(chunk_interval=0.002)) as fake,
        ElevenLabsTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        s1 = tts.stream()
        s1.push_text("Talking while the model still thinks. " * 2)
        s1.flush()
        await anext(s1)
        s1.push_text("More text that is never flushed ")
        await asyncio.sleep(0.02)
        await s1.aclose()
        frame = await tts.synthesize("After the interruption.").collect()
    assert frame.data == synthesize("After the interruption.", "linear16", 24000)
    assert fake.stats.cancels == 1 and fake.stats.connections == 1


async def test_idle_close_before_any_audio_is_replayed_on_a_new_connection() -> None:
    """The server's inactivity close (1008) is retryable: unspoken text moves connections."""
    async with (
        FakeElevenLabsTTS(FaultPlan(idle_close_after=0.3)) as fake,
        ElevenLabsTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
        tts.stream() as s,
    ):
        s.push_text("Waiting for the model to think ")
        while not fake.stats.closes_sent:  # noqa: ASYNC110 - the fake closes the idle connection
            await asyncio.sleep(0.01)
        s.push_text("about it.")
        s.end_input()
        audio = (await s.collect()).data
    assert audio == synthesize("Waiting for the model to think about it.", "linear16", 24000)
    assert fake.stats.connections == 2 and fake.stats.closes_sent == [1008]


async def test_a_pause_longer_than_the_inactivity_timeout_fails_with_a_hint() -> None:
    """Known gap: no keep-alive while the caller is silent; the error says what to raise."""
    async with (
        FakeElevenLabsTTS(FaultPlan(idle_close_after=0.15)) as fake,
        ElevenLabsTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
        tts.stream() as s,
    ):
        s.push_text("A long pause follows ")
        assert await s.wait() is StreamState.FAILED  # two idle closes: one replay allowed
    assert isinstance(s.error, ProviderConnectionError) and s.error.code == 1008
    assert "inactivity_timeout" in str(s.error)
    assert fake.stats.connections == 2


def _metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, {"provider": "elevenlabs", **labels}) or 0.0


async def test_error_message_fails_the_stream_with_its_text() -> None:
    failed = _metric("antiphon_tts_streams_total", outcome="failed")
    async with (
        FakeElevenLabsTTS(FaultPlan(error_mid_stream=True)) as fake,
        ElevenLabsTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        s = tts.synthesize("This fails half way through its audio.")
        with pytest.raises(ProviderError, match="internal_error: fault plan"):
            await s.collect()
    assert s.state is StreamState.FAILED
    assert _metric("antiphon_tts_streams_total", outcome="failed") == failed + 1


async def test_first_audio_is_timed_once_per_stream() -> None:
    """No per-flush acknowledgement: time to first audio is measured for the first flush."""
    ttfb = _metric("antiphon_tts_time_to_first_audio_seconds_count")
    async with (
        FakeElevenLabsTTS() as fake,
        ElevenLabsTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
        tts.stream() as s,
    ):
        s.push_text("First sentence.")
        s.flush()
        s.push_text(" Second one.")
        s.end_input()
        await s.collect()
    assert _metric("antiphon_tts_time_to_first_audio_seconds_count") == ttfb + 1


# ----------------------------------------------------------------- the fake itself


async def _raw(fake: FakeElevenLabsTTS, query: str = "model_id=eleven_flash_v2_5") -> Any:
    url = f"{fake.url}/v1/text-to-speech/{el.DEFAULT_VOICE}/multi-stream-input?{query}"
    return ws_connect(url, additional_headers={"xi-api-key": DEFAULT_API_KEY})


async def test_fake_refuses_a_sixth_open_context() -> None:
    async with FakeElevenLabsTTS() as fake, await _raw(fake) as ws:
        for i in range(6):
            await ws.send(json.dumps({"text": " ", "context_id": f"c{i}"}))
        error = json.loads(await ws.recv())
        assert error["error"] == "max_active_conversations"
        assert error["message"] == MAX_CONTEXTS_MESSAGE
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    err = el.close_error(1008, info.value.rcvd.reason, stage="receive")
    assert not err.retryable and "at most 5 contexts" in (err.hint or "")


async def test_fake_closed_contexts_free_their_slot() -> None:
    async with FakeElevenLabsTTS() as fake, await _raw(fake) as ws:
        for i in range(8):
            await ws.send(json.dumps({"text": "Hi ", "context_id": f"c{i}", "flush": True}))
            await ws.send(json.dumps({"context_id": f"c{i}", "close_context": True}))
        finals: set[str] = set()
        while len(finals) < 8:
            msg = json.loads(await ws.recv())
            if msg.get("isFinal"):
                finals.add(msg["contextId"])
    assert fake.stats.contexts_opened == 8 and fake.stats.cancels == 0


async def test_fake_rejects_changed_voice_settings_and_bad_queries() -> None:
    async with FakeElevenLabsTTS() as fake:
        async with await _raw(fake) as ws:
            await ws.send(json.dumps({"text": " ", "context_id": "a"}))
            await ws.send(
                json.dumps({"text": "x ", "context_id": "a", "voice_settings": {"speed": 1.1}})
            )
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
        assert info.value.rcvd is not None and "voice_settings" in info.value.rcvd.reason
        for query in ("output_format=mp3_44100_128", "model_id=eleven_v3", "bogus=1"):
            with pytest.raises(InvalidStatus, match="400"):
                async with await _raw(fake, query):
                    pass


async def test_closes_are_typed_from_the_fakes_reasons() -> None:
    async with (
        FakeElevenLabsTTS(FaultPlan(close_mid_audio=1008, close_reason="Invalid API key")) as fake,
        ElevenLabsTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        with pytest.raises(AuthError):
            await tts.synthesize("Cut by a policy close.").collect()
    async with (
        FakeElevenLabsTTS(FaultPlan(max_connection_age=0.05, chunk_interval=0.01)) as fake,
        ElevenLabsTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        with pytest.raises(ProviderConnectionError) as info:
            await tts.synthesize("A connection that gets too old while it talks.").collect()
    assert info.value.code == 1011
