"""DeepgramTTS: the conformance suite on the fake server, plus plugin-specific checks."""

from __future__ import annotations

import pytest

from antiphon.errors import ConfigError
from antiphon.net.pool import PoolOptions
from antiphon.plugins.deepgram import DeepgramTTS
from antiphon.services.tts import TTS, StreamState, TTSDeadlines
from antiphon.testing import FakeDeepgramTTS, FaultPlan, serving
from antiphon.testing.conformance.tts import FAST, TTSConformance, TTSHarness
from antiphon.testing.deepgram import DEFAULT_API_KEY, synthesize
from antiphon.testing.server import FakeWsServer

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


class DeepgramHarness(TTSHarness):
    def fake(self, plan: FaultPlan) -> FakeWsServer:
        return FakeDeepgramTTS(plan)

    def make_tts(
        self, base_url: str, *, deadlines: TTSDeadlines, pool: PoolOptions | None = None
    ) -> TTS:
        return DeepgramTTS(
            api_key=DEFAULT_API_KEY, base_url=base_url, deadlines=deadlines, pool=pool
        )

    def expected_pcm(self, text: str, tts: TTS) -> bytes:
        return synthesize(text, "linear16", tts.sample_rate)

    def connections(self, fake: FakeWsServer) -> int:
        assert isinstance(fake, FakeDeepgramTTS)
        return fake.stats.connections

    def cancels(self, fake: FakeWsServer) -> int:
        assert isinstance(fake, FakeDeepgramTTS)
        return fake.stats.clears


class TestDeepgramConformance(TTSConformance):
    harness = DeepgramHarness()


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="DEEPGRAM_API_KEY"):
        DeepgramTTS()


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "from-env")
    tts = DeepgramTTS()
    assert tts._headers == {"Authorization": "Token from-env"}
    assert tts.url.startswith("wss://api.deepgram.com/v1/speak?")


def test_unsupported_combination_is_refused() -> None:
    with pytest.raises(ConfigError, match="8000, 16000"):
        DeepgramTTS(api_key="k", encoding="mulaw", sample_rate=24000)


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
async def test_telephony_encodings_are_decoded_to_pcm(encoding: str) -> None:
    from antiphon.audio.codecs import decode_to_pcm

    async with (
        serving(FakeDeepgramTTS()) as fake,
        DeepgramTTS(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            encoding=encoding,
            sample_rate=8000,
            deadlines=FAST,
        ) as tts,
    ):
        frame = await tts.synthesize("Phone call audio.").collect()
    assert frame.sample_rate == 8000
    assert frame.data == decode_to_pcm(encoding, synthesize("Phone call audio.", encoding, 8000))


async def test_wrong_key_is_an_auth_error_from_the_fake() -> None:
    from antiphon.errors import AuthError

    async with (
        serving(FakeDeepgramTTS()) as fake,
        DeepgramTTS(api_key="wrong", base_url=fake.url, deadlines=FAST) as tts,
    ):
        with pytest.raises(AuthError, match="DEEPGRAM_API_KEY"):
            await tts.synthesize("hi").collect()


def _metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, {"provider": "deepgram", **labels}) or 0.0


async def test_metrics_time_each_flush_and_count_audio_and_outcomes() -> None:
    from antiphon.errors import ProviderError
    from antiphon.testing.synth import tone_duration

    ttfb = _metric("antiphon_tts_time_to_first_audio_seconds_count")
    audio = _metric("antiphon_tts_audio_seconds_total")
    completed = _metric("antiphon_tts_streams_total", outcome="completed")
    failed = _metric("antiphon_tts_streams_total", outcome="failed")
    async with (
        FakeDeepgramTTS() as fake,
        DeepgramTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
        tts.stream() as stream,
    ):
        stream.push_text("First sentence.")
        stream.flush()
        stream.push_text("Second one.")
        stream.end_input()
        await stream.collect()
    assert _metric("antiphon_tts_time_to_first_audio_seconds_count") == ttfb + 2
    expected = tone_duration("First sentence.") + tone_duration("Second one.")
    assert _metric("antiphon_tts_audio_seconds_total") - audio == pytest.approx(expected)
    assert _metric("antiphon_tts_streams_total", outcome="completed") == completed + 1

    # Deepgram reports a failed synthesis with a Warning and a 1011 close.
    errors = _metric("antiphon_tts_errors_total", kind="ProviderConnectionError")
    async with (
        FakeDeepgramTTS(FaultPlan(error_mid_stream=True)) as fake,
        DeepgramTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        with pytest.raises(ProviderError):
            await tts.synthesize("This will fail half way.").collect()
    assert _metric("antiphon_tts_streams_total", outcome="failed") == failed + 1
    assert _metric("antiphon_tts_errors_total", kind="ProviderConnectionError") == errors + 1


async def test_a_stream_is_one_task_its_audio_read_by_the_connection_handler() -> None:
    """The socket's messages reach the stream without a reader task (the connection's
    handler feeds the session), and a warm connection is leased and given back without
    a task of the pool: per stream, the stream's own task is the only one."""
    async with (
        FakeDeepgramTTS() as fake,
        DeepgramTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        await tts.prewarm()
        for text in ("First turn.", "Second turn."):
            frames = 0
            async with tts.synthesize(text) as stream:
                async for frame in stream:
                    frames += frame.duration > 0
                    assert (len(tts._tasks), len(tts.pool._tasks)) == (1, 0)
            assert frames and stream.state is StreamState.COMPLETED
            await stream.wait()
        assert (fake.stats.connections, tts.pool.stats.reused) == (1, 2)


async def test_closing_the_service_right_after_a_cancel_leaves_no_socket() -> None:
    """A cancelled stream's connection is cleared by a task of the service; when the
    service closes before that task ever ran, the connection is still discarded."""
    import asyncio

    from antiphon.services.ws_tts import WebSocketSynthesisStream
    from antiphon.testing.leaks import LeakCheck

    async with FakeDeepgramTTS() as fake:
        leaks = LeakCheck(ports=[fake.port])
        tts = DeepgramTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST)
        stream = tts.synthesize("A long sentence that is interrupted half way through.")
        assert isinstance(stream, WebSocketSynthesisStream)
        await anext(aiter(stream))  # audio is flowing: a cancel must send Clear
        conn = stream._conn
        assert conn is not None
        stream.cancel()
        await asyncio.sleep(0)  # the stream's task ends and hands the connection over
        assert tts.pool.is_returning(conn)
        await tts.aclose()  # cancels the clearing before its first step
        assert not conn.open
        assert not tts.pool.is_returning(conn)
        await leaks.assert_clean()


async def test_the_readme_fault_plan_example_runs() -> None:
    """README's ``FakeDeepgramTTS(FaultPlan(...))``: the stream fails, the fake lives on."""
    import re
    from pathlib import Path

    from antiphon.errors import ProviderError

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    (expr,) = re.findall(r"FakeDeepgramTTS\((FaultPlan\([^)]*\))\)", readme)
    plan = eval(expr, {"FaultPlan": FaultPlan})
    async with (
        FakeDeepgramTTS(plan) as fake,
        DeepgramTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        with pytest.raises(ProviderError) as err:
            await tts.synthesize("Cut in the middle of this sentence.").collect()
        # the fake closed as planned (a crashed handler closes 1011 without a reason)
        assert plan.close_reason in str(err.value)
        assert f"code {plan.close_mid_audio}" in str(err.value)


@pytest.mark.parametrize("code", [True, 1, 1005, 5000, "1011"])
def test_a_fault_plan_close_code_must_be_sendable(code: object) -> None:
    with pytest.raises(ConfigError, match="close code"):
        FaultPlan(close_mid_audio=code)  # type: ignore[arg-type]
