"""XAITTS: the conformance suite on the fake server, the xAI race, plugin-specific checks."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from antiphon.audio.codecs import decode_to_pcm
from antiphon.errors import AuthError, ConfigError, ProviderConnectionError, ProviderError
from antiphon.net.pool import PoolOptions
from antiphon.net.ws import ConnectionLost, WsConnection
from antiphon.plugins.xai import XAITTS
from antiphon.protocols import xai_tts as xai
from antiphon.services.tts import TTS, StreamState, TTSDeadlines
from antiphon.testing import FaultPlan, LeakCheck, serving
from antiphon.testing.conformance.tts import FAST, TTSConformance, TTSHarness
from antiphon.testing.server import FakeWsServer
from antiphon.testing.xai import DEFAULT_API_KEY, FakeXAITTS, synthesize

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


class XAIHarness(TTSHarness):
    def fake(self, plan: FaultPlan) -> FakeWsServer:
        return FakeXAITTS(plan)

    def make_tts(
        self, base_url: str, *, deadlines: TTSDeadlines, pool: PoolOptions | None = None
    ) -> TTS:
        return XAITTS(api_key=DEFAULT_API_KEY, base_url=base_url, deadlines=deadlines, pool=pool)

    def make_timed_tts(self, base_url: str, *, deadlines: TTSDeadlines) -> TTS:
        return XAITTS(
            api_key=DEFAULT_API_KEY, base_url=base_url, deadlines=deadlines, with_timestamps=True
        )

    def expected_pcm(self, text: str, tts: TTS) -> bytes:
        return synthesize(text, "linear16", tts.sample_rate)

    def connections(self, fake: FakeWsServer) -> int:
        assert isinstance(fake, FakeXAITTS)
        return fake.stats.connections

    def cancels(self, fake: FakeWsServer) -> int:
        assert isinstance(fake, FakeXAITTS)
        return fake.stats.clears


class TestXAIConformance(TTSConformance):
    harness = XAIHarness()


# ----------------------------------------------------------------------------- the xAI race

RACE_ITERATIONS = 1000


@pytest.mark.virtual_time
async def test_audio_done_before_send_returns_never_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server sends audio.done the instant it reads text.done, while the client's send
    of text.done has not returned yet (delayed *after* the write): every one of 1000
    streams on one warm connection must complete with exactly its audio.

    A client that notes "text.done sent" only after ``await send()`` and ignores an
    audio.done that comes before hangs here; antiphon's state machine counted the owed
    audio.done when it decided to send, so the order of events decides.
    """
    original_send = WsConnection.send
    original_set_handler = WsConnection.set_handler
    delays = itertools.cycle((0.0, 0.001, 0.005))  # sleep(0) yields once; then tiny waits
    in_done_send = False
    raced = 0

    async def slow_send(self: WsConnection, message: str | bytes, *, stage: str = "send") -> None:
        nonlocal in_done_send
        await original_send(self, message, stage=stage)
        if message == xai.TEXT_DONE:
            in_done_send = True
            try:
                await asyncio.sleep(next(delays))
            finally:
                in_done_send = False

    def watching(handle: Callable[[str | bytes], None]) -> Callable[[str | bytes], None]:
        def watch(data: str | bytes) -> None:
            nonlocal raced
            if in_done_send and isinstance(data, str) and '"audio.done"' in data:
                raced += 1  # the answer arrived while our send had not returned
            handle(data)

        return watch

    def watching_set_handler(
        self: WsConnection,
        on_message: Callable[[str | bytes], None],
        on_lost: Callable[[ConnectionLost], None],
        *,
        stage: str = "receive",
    ) -> None:
        original_set_handler(self, watching(on_message), on_lost, stage=stage)

    monkeypatch.setattr(WsConnection, "send", slow_send)
    monkeypatch.setattr(WsConnection, "set_handler", watching_set_handler)
    async with serving(FakeXAITTS(instant_done=True, chunk_seconds=1.0)) as fake:
        leaks = LeakCheck(ports=[fake.port])
        tts = XAITTS(api_key=DEFAULT_API_KEY, base_url=fake.url, sample_rate=8000, deadlines=FAST)
        try:
            for i in range(RACE_ITERATIONS):
                text = f"Race {i}."
                async with asyncio.timeout(2.0):  # a hang fails fast, not at the suite timeout
                    async with tts.stream(generation=i) as s:
                        s.push_text(text)
                        s.end_input()
                        frame = await s.collect()
                assert s.state is StreamState.COMPLETED, (i, s.error)
                assert frame.data == synthesize(text, "linear16", 8000), i
                assert frame.generation == i
        finally:
            await tts.aclose()
        await leaks.assert_clean(settle=0.5)
        assert fake.stats.connections == 1  # one warm connection, reused every time
        assert fake.stats.done_sent == RACE_ITERATIONS
    assert raced >= RACE_ITERATIONS // 10, f"the race happened only {raced} times"


async def test_instant_answers_to_several_flushes_keep_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sentences = ["First one.", " Second one.", " Third."]
    original_send = WsConnection.send

    async def slow_send(self: WsConnection, message: str | bytes, *, stage: str = "send") -> None:
        await original_send(self, message, stage=stage)
        await asyncio.sleep(0.002)

    monkeypatch.setattr(WsConnection, "send", slow_send)
    async with (
        serving(FakeXAITTS(instant_done=True)) as fake,
        XAITTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        for _ in range(20):
            async with asyncio.timeout(5.0), tts.stream() as s:
                for text in sentences:
                    s.push_text(text)
                    s.flush()
                s.end_input()
                frame = await s.collect()
            assert frame.data == b"".join(synthesize(t, "pcm", 24000) for t in sentences)


# ----------------------------------------------------------------------------- configuration


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="XAI_API_KEY"):
        XAITTS()
    with pytest.raises(ConfigError, match="api_key="):
        XAITTS(api_key="   ")


def test_key_from_environment_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAI_API_KEY", " from-env ")
    tts = XAITTS()
    assert tts.headers == {"Authorization": "Bearer from-env"}
    assert tts.url == "wss://api.x.ai/v1/tts?voice=eve&language=en&codec=pcm&sample_rate=24000"
    assert tts.sample_rate == 24000 and tts.wire_encoding == "linear16"
    assert tts.pool.options.max_age < 2100  # under xAI's observed connection deadline


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"encoding": "mulaw", "sample_rate": 24000}, "sample_rate=8000"),
        ({"encoding": "mp3"}, "REST"),
        ({"sample_rate": 11025}, "8000, 16000, 22050"),
        ({"language": "xx"}, "auto"),
        ({"speed": 3}, "0.7 and 1.5"),
        ({"base_url": "https://api.x.ai"}, "wss://"),
    ],
)
def test_unsupported_combinations_are_refused(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        XAITTS(api_key="k", **kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- on the fake


async def test_every_option_reaches_the_server_as_query_parameters() -> None:
    async with serving(FakeXAITTS()) as fake:
        async with XAITTS(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            voice="Rex",
            language="auto",
            sample_rate=16000,
            speed=0.8,
            optimize_streaming_latency=1,
            text_normalization=False,
            deadlines=FAST,
        ) as tts:
            frame = await tts.synthesize("Options.").collect()
        assert frame.data == synthesize("Options.", "linear16", 16000)
        assert fake.stats.queries == [
            {
                "voice": "Rex",
                "language": "auto",
                "codec": "pcm",
                "sample_rate": "16000",
                "speed": "0.8",
                "optimize_streaming_latency": "1",
                "text_normalization": "false",
            }
        ]
        assert [m["type"] for m in fake.stats.messages] == ["text.delta", "text.done"]


@pytest.mark.parametrize("encoding", ["mulaw", "ulaw", "alaw"])
async def test_telephony_encodings_are_decoded_to_pcm(encoding: str) -> None:
    async with serving(FakeXAITTS()) as fake:
        async with XAITTS(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            encoding=encoding,
            sample_rate=8000,
            deadlines=FAST,
        ) as tts:
            frame = await tts.synthesize("Phone call audio.").collect()
        assert fake.stats.queries[0]["codec"] == ("mulaw" if encoding == "ulaw" else encoding)
    wire = "alaw" if encoding == "alaw" else "mulaw"
    assert frame.sample_rate == 8000 and frame.channels == 1
    assert frame.data == decode_to_pcm(wire, synthesize("Phone call audio.", wire, 8000))


async def test_wrong_key_is_an_auth_error_from_the_fake() -> None:
    async with (
        serving(FakeXAITTS()) as fake,
        XAITTS(api_key="wrong", base_url=fake.url, deadlines=FAST) as tts,
    ):
        with pytest.raises(AuthError, match="XAI_API_KEY") as info:
            await tts.synthesize("hi").collect()
        assert info.value.code == 401 and "Incorrect API key" in str(info.value)
        assert fake.stats.connections == 0


async def test_auth_close_code_after_open_is_an_auth_error() -> None:
    plan = FaultPlan(close_on_open=4001, close_on_open_reason="unauthorized")
    async with (
        serving(FakeXAITTS(plan)) as fake,
        XAITTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        with pytest.raises(AuthError, match="XAI_API_KEY"):
            await tts.synthesize("hi").collect()


async def test_error_message_is_reported_with_its_text() -> None:
    async with (
        serving(FakeXAITTS(FaultPlan(error_mid_stream=True))) as fake,
        XAITTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        with pytest.raises(ProviderError, match="synthesis failed") as info:
            await tts.synthesize("This answer fails half way.").collect()
    assert info.value.provider == "xai" and info.value.stage == "receive"


async def test_timestamp_only_deltas_are_not_audio_and_not_errors() -> None:
    async with serving(FakeXAITTS()) as fake:
        async with XAITTS(
            api_key=DEFAULT_API_KEY, base_url=fake.url, with_timestamps=True, deadlines=FAST
        ) as tts:
            frame = await tts.synthesize("With timings.").collect()
        assert fake.stats.queries[0]["with_timestamps"] == "true"
    assert frame.data == synthesize("With timings.", "linear16", 24000)


async def test_long_text_is_split_into_capped_deltas_and_spoken_whole() -> None:
    text = "Long words here. " * 1000  # 17,000 characters
    async with serving(FakeXAITTS(chunk_seconds=1.0)) as fake:
        async with XAITTS(
            api_key=DEFAULT_API_KEY, base_url=fake.url, sample_rate=8000, deadlines=FAST
        ) as tts:
            frame = await tts.synthesize(text).collect()
        deltas = [m["delta"] for m in fake.stats.messages if m["type"] == "text.delta"]
        assert len(deltas) == 2 and all(len(d) <= xai.MAX_DELTA_CHARS for d in deltas)
        assert fake.stats.done_texts == [text]
    assert frame.data == synthesize(text, "linear16", 8000)


async def test_cancel_sends_text_clear_and_reuses_the_connection_after_audio_clear() -> None:
    plan = FaultPlan(chunk_interval=0.005, audio_after_clear=2)
    async with (
        serving(FakeXAITTS(plan)) as fake,
        XAITTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        s1 = tts.synthesize("A long answer that the user interrupts. " * 3, generation=1)
        await anext(s1)
        s1.cancel()
        await s1.aclose()
        frame = await tts.synthesize("Next turn.", generation=2).collect()
        assert frame.data == synthesize("Next turn.", "pcm", 24000)
        assert frame.generation == 2
        assert fake.stats.count("text.clear") == 1 and fake.stats.connections == 1


async def test_drop_before_audio_is_replayed_on_a_new_connection() -> None:
    async with (
        serving(FakeXAITTS(FaultPlan(drop_before_audio=1))) as fake,
        XAITTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        frame = await tts.synthesize("Second time lucky.").collect()
        assert fake.stats.done_texts == ["Second time lucky.", "Second time lucky."]
        assert fake.stats.connections == 2
    assert frame.data == synthesize("Second time lucky.", "pcm", 24000)


async def test_going_away_mid_audio_is_a_connection_error_with_its_code() -> None:
    plan = FaultPlan(close_mid_audio=1001, close_reason="going away", close_after_chunks=2)
    async with (
        serving(FakeXAITTS(plan)) as fake,
        XAITTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        with pytest.raises(ProviderConnectionError) as info:
            await tts.synthesize("Cut off after some audio.").collect()
    assert info.value.code == 1001 and info.value.retryable
