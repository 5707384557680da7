"""AzureTTS (REST): the core conformance suite on the fake server, plus HTTP's own faults."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from antiphon.audio.codecs import decode_to_pcm
from antiphon.errors import (
    AuthError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
)
from antiphon.net.http import HttpStatusError
from antiphon.net.pool import PoolOptions
from antiphon.plugins.azure import AzureTTS
from antiphon.protocols import azure_tts as az
from antiphon.services.tts import TTS, StreamState, TTSDeadlines
from antiphon.testing import FaultPlan, LeakCheck, serving
from antiphon.testing.azure import DEFAULT_API_KEY, DEFAULT_TOKEN, FakeAzureTTS, synthesize
from antiphon.testing.conformance.tts import FAST, GUARD, CoreTTSConformance, TTSHarness
from antiphon.testing.faults import ABORT
from antiphon.testing.server import FakeServer


class AzureHarness(TTSHarness):
    def url_for_port(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def fake(self, plan: FaultPlan) -> FakeServer:
        return FakeAzureTTS(plan)

    def make_tts(
        self, base_url: str, *, deadlines: TTSDeadlines, pool: PoolOptions | None = None
    ) -> TTS:
        return AzureTTS(api_key=DEFAULT_API_KEY, base_url=base_url, deadlines=deadlines)

    def expected_pcm(self, text: str, tts: TTS) -> bytes:
        assert isinstance(tts, AzureTTS)
        return synthesize(text, tts.output_format.name)

    def connections(self, fake: Any) -> int:
        assert isinstance(fake, FakeAzureTTS)
        return fake.stats.connections

    def cancels(self, fake: Any) -> int:
        assert isinstance(fake, FakeAzureTTS)
        return fake.stats.cancels


class TestAzureConformance(CoreTTSConformance):
    harness = AzureHarness()


# --------------------------------------------------------------------------- helpers

#: Every test here is asyncio only: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

TEXT = "The quick brown fox jumps over the lazy dog."


class _Run:
    def __init__(self, fake: FakeAzureTTS, tts: AzureTTS) -> None:
        self.fake = fake
        self.tts = tts


@contextlib.asynccontextmanager
async def azure_run(
    plan: FaultPlan | None = None, *, reject_requests: int | None = None, **kw: Any
) -> AsyncIterator[_Run]:
    """Fake in the test's loop + AzureTTS pointed at it; leak-checked on the way out."""
    fake = FakeAzureTTS(plan, reject_requests=reject_requests)
    async with serving(fake):
        leaks = LeakCheck(ports=[fake.port])
        tts = AzureTTS(base_url=fake.url, **{"api_key": DEFAULT_API_KEY, "deadlines": FAST, **kw})
        try:
            async with asyncio.timeout(GUARD):
                yield _Run(fake, tts)
        finally:
            await tts.aclose()
        await leaks.assert_clean(settle=0.5)
        assert tts.active_streams == 0


async def _collect(s: Any) -> tuple[bytes, list[bytes]]:
    received: list[bytes] = []
    async for f in s:
        received.append(f.data)
    return b"".join(received), received


def _pcm(text: str, fmt: str = az.DEFAULT_OUTPUT_FORMAT) -> bytes:
    return synthesize(text, fmt)


# --------------------------------------------------------------------------- HTTP faults


@pytest.mark.parametrize("how", [1011, ABORT])
async def test_cut_body_fails_with_the_audio_before_it_intact(how: int) -> None:
    async with azure_run(FaultPlan(close_mid_audio=how, close_after_chunks=3)) as r:
        s = r.tts.synthesize(TEXT)
        received: list[bytes] = []
        with pytest.raises(ProviderConnectionError) as info:
            async for f in s:
                received.append(f.data)
        got = b"".join(received)
        assert got and got == _pcm(TEXT)[: len(got)]
        assert info.value.stage == "receive" and info.value.retryable
        assert s.state is StreamState.FAILED
        assert len(r.fake.stats.requests) == 1  # audio was heard: never retried
        assert r.fake.stats.cut_bodies == 1


async def test_429_with_retry_after_is_retried_once_then_succeeds() -> None:
    loop = asyncio.get_running_loop()
    async with azure_run(FaultPlan(reject_status=429), reject_requests=1) as r:
        started = loop.time()
        audio = await r.tts.synthesize(TEXT).collect()
        assert audio.data == _pcm(TEXT)
        assert r.fake.stats.statuses == [429, 200]
        assert loop.time() - started >= 1.0  # waited for Retry-After: 1 (virtual time)


async def test_persistent_429_fails_with_retry_after_after_one_retry() -> None:
    async with azure_run(FaultPlan(reject_status=429)) as r:
        with pytest.raises(HttpStatusError) as info:
            await r.tts.synthesize(TEXT).collect()
        err = info.value
        assert err.code == 429 and err.status == 429 and err.retryable
        assert err.retry_after == 1.0 and "retry after 1s" in str(err)
        assert r.fake.stats.statuses == [429, 429]


async def test_long_retry_after_is_not_waited_for() -> None:
    async with azure_run(FaultPlan(reject_status=503), max_retry_wait=0.5) as r:
        with pytest.raises(HttpStatusError) as info:
            await r.tts.synthesize(TEXT).collect()
        assert info.value.retry_after == 1.0 and info.value.code == 503
        assert r.fake.stats.statuses == [503]


async def test_5xx_without_retry_after_is_retried_after_the_backoff() -> None:
    async with azure_run(FaultPlan(reject_status=502), reject_requests=1) as r:
        audio = await r.tts.synthesize(TEXT).collect()
        assert audio.data == _pcm(TEXT)
        assert r.fake.stats.statuses == [502, 200]


async def test_drop_before_audio_is_retried_on_a_new_connection() -> None:
    async with azure_run(FaultPlan(drop_before_audio=1)) as r:
        audio = await r.tts.synthesize(TEXT).collect()
        assert audio.data == _pcm(TEXT)
        assert r.fake.stats.connections == 2
        assert len(r.fake.stats.requests) == 2


async def test_drop_before_audio_twice_fails_after_one_retry() -> None:
    async with azure_run(FaultPlan(drop_before_audio=2)) as r:
        with pytest.raises(ProviderConnectionError) as info:
            await r.tts.synthesize(TEXT).collect()
        assert info.value.retryable
        assert len(r.fake.stats.requests) == 2


@pytest.mark.parametrize(
    ("status", "fragment"), [(400, "voice name"), (415, "application/ssml+xml"), (404, "region")]
)
async def test_client_errors_are_not_retried_and_say_what_to_check(
    status: int, fragment: str
) -> None:
    async with azure_run(FaultPlan(reject_status=status)) as r:
        with pytest.raises(HttpStatusError) as info:
            await r.tts.synthesize(TEXT).collect()
        err = info.value
        assert err.code == status and not err.retryable and not isinstance(err, AuthError)
        assert err.hint is not None and fragment in err.hint
        assert "rejected by fault plan" in err.body
        assert len(r.fake.stats.requests) == 1


async def test_wrong_key_is_an_auth_error_naming_the_variables() -> None:
    async with azure_run(api_key="wrong") as r:
        with pytest.raises(AuthError) as info:
            await r.tts.synthesize(TEXT).collect()
        assert info.value.code == 401 and "AZURE_SPEECH_KEY" in str(info.value)
        assert len(r.fake.stats.requests) == 1


async def test_cancel_mid_audio_aborts_the_response_and_next_turn_is_clean() -> None:
    text = "A long answer that the user interrupts half way through. " * 3
    async with azure_run(FaultPlan(chunk_interval=0.01)) as r:
        s1 = r.tts.synthesize(text, generation=1)
        first = [await anext(s1) for _ in range(3)]
        s1.cancel()
        assert [f async for f in s1] == []
        assert all(f.generation == 1 for f in first)
        await s1.aclose()
        for _ in range(100):  # the fake notices the abort at its next chunk
            if r.fake.stats.cancels:
                break
            await asyncio.sleep(0.01)
        assert r.fake.stats.cancels == 1
        audio = await r.tts.synthesize("Next turn.", generation=2).collect()
        assert audio.data == _pcm("Next turn.") and audio.generation == 2
        assert r.fake.stats.connections == 2  # the aborted connection was not reused


async def test_audio_stopping_mid_body_hits_the_idle_deadline() -> None:
    deadlines = TTSDeadlines(connect=1.0, first_audio=1.0, idle=0.2, clear=0.5, close=0.5)
    async with azure_run(FaultPlan(chunk_interval=0.6), deadlines=deadlines) as r:
        s = r.tts.synthesize(TEXT)
        with pytest.raises(ProviderTimeoutError) as info:
            await _collect(s)
        assert info.value.stage == "receive" and info.value.timeout == 0.2
        assert "audio stopped" in str(info.value)


async def test_audio_after_the_end_of_a_body_never_reaches_the_next_stream() -> None:
    async with azure_run(FaultPlan(audio_after_done=3)) as r:
        a1 = await r.tts.synthesize("First turn.").collect()
        await asyncio.sleep(0.05)
        a2 = await r.tts.synthesize("Second turn.").collect()
        assert a1.data == _pcm("First turn.") and a2.data == _pcm("Second turn.")


@pytest.mark.parametrize(
    "plan", [FaultPlan(idle_close_after=0.1), FaultPlan(max_connection_age=0.2)]
)
async def test_server_closing_keep_alive_connections_is_survived(plan: FaultPlan) -> None:
    async with azure_run(plan) as r:
        await r.tts.synthesize("Before the close.").collect()
        await asyncio.sleep(0.4)
        audio = await r.tts.synthesize("After the close.").collect()
        assert audio.data == _pcm("After the close.")
        assert r.fake.stats.connections == 2


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    "fmt", ["riff-24khz-16bit-mono-pcm", "riff-16khz-16bit-mono-pcm", "riff-8khz-16bit-mono-pcm"]
)
@pytest.mark.parametrize("odd", [False, True])
async def test_riff_header_is_stripped(fmt: str, odd: bool) -> None:
    async with azure_run(FaultPlan(odd_chunking=odd), output_format=fmt) as r:
        frame = await r.tts.synthesize(TEXT).collect()
        assert frame.sample_rate == az.resolve_output_format(fmt).sample_rate
        assert frame.data == _pcm(TEXT, fmt)


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
@pytest.mark.parametrize("container", ["raw", "riff"])
async def test_telephony_encodings_are_decoded_to_pcm(encoding: str, container: str) -> None:
    fmt = f"{container}-8khz-8bit-mono-{encoding}"
    async with azure_run(output_format=fmt) as r:
        frame = await r.tts.synthesize("Phone call audio.").collect()
        assert frame.sample_rate == 8000 and frame.channels == 1
        assert frame.data == decode_to_pcm(encoding, _pcm("Phone call audio.", fmt))
        assert r.fake.stats.requests[0].headers["x-microsoft-outputformat"] == fmt


async def test_encoding_and_sample_rate_pick_the_raw_format() -> None:
    async with azure_run(encoding="alaw", sample_rate=8000) as r:
        assert r.tts.output_format.name == "raw-8khz-8bit-mono-alaw"
        frame = await r.tts.synthesize("Hi.").collect()
        assert frame.data == decode_to_pcm("alaw", _pcm("Hi.", "raw-8khz-8bit-mono-alaw"))
    async with azure_run(sample_rate=48000) as r:
        assert r.tts.output_format.name == "raw-48khz-16bit-mono-pcm"
        assert (await r.tts.synthesize("Hi.").collect()).data == _pcm(
            "Hi.", "raw-48khz-16bit-mono-pcm"
        )


# --------------------------------------------------------------------------- requests


async def test_request_carries_headers_and_safe_ssml() -> None:
    text = 'Tom & Jerry say "<hello>" and \'bye\' </voice><voice name="evil">'
    async with azure_run(
        voice="de-DE-KatjaNeural", style="cheerful", style_degree=1.5, rate="+10%", pitch="-2st"
    ) as r:
        audio = await r.tts.synthesize(text).collect()
        assert audio.data == _pcm(text)  # the fake spoke exactly the text
        req = r.fake.stats.requests[0]
        h = req.headers
        assert h["content-type"] == "application/ssml+xml"
        assert h["x-microsoft-outputformat"] == "raw-24khz-16bit-mono-pcm"
        assert h["ocp-apim-subscription-key"] == DEFAULT_API_KEY
        assert h["user-agent"].startswith("antiphon")
        info = az.parse_ssml(req.body)
        assert info.text == text and info.voice == "de-DE-KatjaNeural"
        assert info.language == "de-DE"
        assert info.attributes == {
            "style": "cheerful",
            "styledegree": "1.5",
            "rate": "+10%",
            "pitch": "-2st",
        }


async def test_bearer_token_static_and_refreshed() -> None:
    calls = 0

    async def fresh_token() -> str:
        nonlocal calls
        calls += 1
        return DEFAULT_TOKEN

    async with azure_run(api_key=None, auth_token=DEFAULT_TOKEN) as r:
        assert (await r.tts.synthesize("Token.").collect()).data == _pcm("Token.")
        assert r.fake.stats.requests[0].headers["authorization"] == f"Bearer {DEFAULT_TOKEN}"
        assert "ocp-apim-subscription-key" not in r.fake.stats.requests[0].headers
    async with azure_run(api_key=None, auth_token=fresh_token) as r:
        await r.tts.synthesize("One.").collect()
        await r.tts.synthesize("Two.").collect()
        assert calls == 2


async def test_a_failing_or_hanging_token_source_is_a_typed_error() -> None:
    async def broken() -> str:
        raise RuntimeError("vault down")

    async def hangs() -> str:
        await asyncio.sleep(30)
        return DEFAULT_TOKEN

    async with azure_run(api_key=None, auth_token=broken) as r:
        with pytest.raises(AuthError, match="vault down"):
            await r.tts.synthesize("No token.").collect()
    async with azure_run(api_key=None, auth_token=hangs) as r:
        with pytest.raises(ProviderTimeoutError) as info:
            await r.tts.synthesize("No token.").collect()
        assert info.value.stage == "connect" and info.value.timeout == FAST.connect
        assert r.fake.stats.requests == []


async def test_each_flush_is_one_request_in_order() -> None:
    parts = ["First part.", " Second part.", " Third."]
    async with azure_run(FaultPlan(first_audio_delay=0.05)) as r, r.tts.stream() as s:
        for p in parts:
            s.push_text(p)
            s.flush()
        s.push_text("   ")  # blank text is never sent
        s.end_input()
        audio, _ = await _collect(s)
        assert audio == b"".join(_pcm(p) for p in parts)
        assert r.fake.stats.spoken == parts
        assert r.fake.stats.connections == 1


# --------------------------------------------------------------------------- config


def test_key_and_region_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_SPEECH_KEY", "from-env")
    monkeypatch.setenv("AZURE_SPEECH_REGION", "westeurope")
    tts = AzureTTS()
    assert tts.url == "https://westeurope.tts.speech.microsoft.com/cognitiveservices/v1"
    assert tts._key == "from-env"
    assert tts.sample_rate == 24000 and tts.output_format.name == "raw-24khz-16bit-mono-pcm"


def test_missing_key_or_region_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_SPEECH_KEY", raising=False)
    monkeypatch.delenv("AZURE_SPEECH_REGION", raising=False)
    with pytest.raises(ConfigError, match="AZURE_SPEECH_KEY"):
        AzureTTS(region="westus")
    with pytest.raises(ConfigError, match="AZURE_SPEECH_REGION"):
        AzureTTS(api_key="k")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"encoding": "mulaw", "sample_rate": 24000}, "8000 Hz only"),
        ({"sample_rate": 32000}, "22050"),
        ({"encoding": "mp3"}, "linear16, mulaw or alaw"),
        ({"output_format": "audio-24khz-48kbitrate-mono-mp3"}, "compressed"),
        ({"output_format": "raw-24khz-16bit-mono-pcm", "sample_rate": 8000}, "drop one"),
        ({"voice": "en-US-AvaNeural", "style_degree": 1.0}, "needs a style"),
        ({"style": "cheerful", "style_degree": 3.0}, "0.01 and 2"),
        ({"rate": "very fast"}, "rate"),
        ({"base_url": "ws://127.0.0.1:1"}, "https://"),
        ({"region": "West US"}, "region name"),
        ({"max_retries": -1}, ">= 0"),
    ],
)
def test_unsupported_settings_are_refused_with_a_fix(kwargs: dict[str, Any], fragment: str) -> None:
    kw: dict[str, Any] = {"api_key": "k", "region": "westus", **kwargs}
    with pytest.raises(ConfigError, match=fragment):
        AzureTTS(**kw)


def _metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, {"provider": "azure", **labels}) or 0.0


async def test_metrics_time_each_request_and_count_outcomes() -> None:
    ttfb = _metric("antiphon_tts_time_to_first_audio_seconds_count")
    completed = _metric("antiphon_tts_streams_total", outcome="completed")
    failed = _metric("antiphon_tts_streams_total", outcome="failed")
    async with azure_run() as r, r.tts.stream() as s:
        s.push_text("First sentence.")
        s.flush()
        s.push_text("Second one.")
        s.end_input()
        await s.collect()
    assert _metric("antiphon_tts_time_to_first_audio_seconds_count") == ttfb + 2
    assert _metric("antiphon_tts_streams_total", outcome="completed") == completed + 1
    async with azure_run(FaultPlan(reject_status=400)) as r:
        with pytest.raises(ProviderError):
            await r.tts.synthesize("Fails.").collect()
    assert _metric("antiphon_tts_streams_total", outcome="failed") == failed + 1
