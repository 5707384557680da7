"""AzureSdkTTS: the real Speech SDK on the loopback fake of its WebSocket protocol (the core
conformance suite), and the synthesizer lifecycle on a test double of the SDK that blocks
or fails at every step."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from antiphon.errors import (
    AuthError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
)
from antiphon.net.pool import PoolOptions
from antiphon.net.probe import endpoint_address, refused
from antiphon.plugins.azure.sdk import AzureSdkTTS, SdkWorker
from antiphon.plugins.azure.sdk_events import enum_name
from antiphon.protocols import azure_tts as az
from antiphon.services.tts import TTS, StreamState, TTSDeadlines
from antiphon.testing import FaultPlan, LeakCheck, running_in_thread
from antiphon.testing.azure import DEFAULT_API_KEY, FakeAzureSpeechWs, synthesize
from antiphon.testing.azure_sdk_double import SdkDouble
from antiphon.testing.conformance.tts import FAST, GUARD, CoreTTSConformance, TTSHarness
from antiphon.testing.conformance.tts_harness import free_port
from antiphon.testing.faults import ABORT
from antiphon.testing.server import FakeServer
from antiphon.testing.vloop import time_scale
from azure_helpers import on_refusing_endpoint

pytest.importorskip("azure.cognitiveservices.speech")
#: Every test here is bounded (the conformance ones also by their own guard).
#: The SDK (and its double) run on their own threads: real time; see docs/testing.md.
pytestmark = [pytest.mark.timeout(30), pytest.mark.realtime]


class AzureSdkHarness(TTSHarness):
    def url_for_port(self, port: int) -> str:
        return f"ws://127.0.0.1:{port}"  # the plugin appends the v2 path to an origin

    def fake(self, plan: FaultPlan) -> FakeServer:
        return FakeAzureSpeechWs(plan)

    def make_tts(
        self, base_url: str, *, deadlines: TTSDeadlines, pool: PoolOptions | None = None
    ) -> TTS:
        # The native SDK sets up its own threads and connection; on a cold machine (first
        # load of the library) that took over 1 s, so its connect deadline is 3 s (times
        # the CI profile's scale). A refused connection does not wait for it: the SDK
        # reports it in milliseconds, or the plugin's probe does when the SDK drops its
        # report (see antiphon.net.probe). Every other deadline is the suite's.
        deadlines = replace(deadlines, connect=max(deadlines.connect, 3.0 * time_scale()))
        return AzureSdkTTS(api_key=DEFAULT_API_KEY, endpoint=base_url, deadlines=deadlines)

    def expected_pcm(self, text: str, tts: TTS) -> bytes:
        assert isinstance(tts, AzureSdkTTS)
        return synthesize(text, tts.output_format.name)

    def connections(self, fake: Any) -> int:
        assert isinstance(fake, FakeAzureSpeechWs)
        return fake.stats.connections

    def cancels(self, fake: Any) -> int:
        assert isinstance(fake, FakeAzureSpeechWs)
        return fake.stats.stops


class TestAzureSdkConformance(CoreTTSConformance):
    """The SDK works on its own native threads, which a virtual clock cannot wait for."""

    harness = AzureSdkHarness()
    virtual_time = False


# --------------------------------------------------------------------------- real SDK extras


@contextlib.asynccontextmanager
async def sdk_run(plan: FaultPlan | None = None, **kw: Any) -> AsyncIterator[tuple[Any, Any]]:
    fake = FakeAzureSpeechWs(plan)
    with running_in_thread(fake):
        leaks = LeakCheck(ports=[fake.port])
        tts = AzureSdkTTS(
            endpoint=fake.endpoint, **{"api_key": DEFAULT_API_KEY, "deadlines": FAST, **kw}
        )
        try:
            async with asyncio.timeout(GUARD):
                yield fake, tts
        finally:
            await tts.aclose()
        await leaks.assert_clean(settle=1.0)


async def test_real_sdk_replays_a_request_dropped_before_audio() -> None:
    async with sdk_run(FaultPlan(drop_before_audio=1)) as (fake, tts):
        frame = await tts.synthesize("Second time lucky.").collect()
        assert frame.data == synthesize("Second time lucky.")
        assert fake.stats.connections == 2


@pytest.mark.parametrize("code", [1011, ABORT])
async def test_real_sdk_close_mid_audio_keeps_the_audio_before_it(code: int) -> None:
    text = "This answer is cut off in the middle of its audio."
    async with sdk_run(FaultPlan(close_mid_audio=code, close_after_chunks=3)) as (_, tts):
        received: list[bytes] = []
        with pytest.raises(ProviderConnectionError) as info:
            async for f in tts.synthesize(text):
                received.append(f.data)
        got = b"".join(received)
        assert got and got == synthesize(text)[: len(got)]
        if code == 1011:
            assert info.value.code == 1011


async def test_real_sdk_ignores_garbage_and_audio_after_the_end() -> None:
    plan = FaultPlan(malformed_mid_stream=True, audio_after_done=3)
    async with sdk_run(plan) as (_, tts):
        for text in ("Garbage in the middle.", "And the next turn."):
            assert (await tts.synthesize(text).collect()).data == synthesize(text)


async def test_real_sdk_flushes_are_requests_with_the_voice_settings() -> None:
    async with sdk_run(voice="de-DE-KatjaNeural", rate="+10%", style="cheerful") as (fake, tts):
        async with tts.stream() as s:
            s.push_text(" ")  # leading blank token: kept for the next text
            s.push_text("Erster Satz.")
            s.flush()
            s.push_text(" Zweiter")
            s.push_text(" Satz.")
            s.end_input()
            audio = b"".join([f.data async for f in s])
        assert fake.stats.spoken == [" Erster Satz.", " Zweiter Satz."]
        assert audio == synthesize(" Erster Satz.") + synthesize(" Zweiter Satz.")
        ctx = fake.stats.contexts[0]["synthesis"]
        assert ctx["audio"]["outputFormat"] == "raw-24khz-16bit-mono-pcm"
        assert ctx["input"]["voiceName"] == "de-DE-KatjaNeural"
        assert ctx["input"]["rate"] == "+10%" and ctx["input"]["style"] == "cheerful"


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
async def test_real_sdk_telephony_formats_are_decoded(encoding: str) -> None:
    from antiphon.audio.codecs import decode_to_pcm

    fmt = f"raw-8khz-8bit-mono-{encoding}"
    async with sdk_run(encoding=encoding, sample_rate=8000) as (_, tts):
        frame = await tts.synthesize("Phone call.").collect()
        assert frame.sample_rate == 8000
        assert frame.data == decode_to_pcm(encoding, synthesize("Phone call.", fmt))


async def test_real_sdk_prewarm_connects_ahead() -> None:
    async with sdk_run() as (fake, tts):
        await tts.prewarm()
        assert fake.stats.connections == 1
        await tts.synthesize("Warm start.").collect()
        assert fake.stats.connections == 1


@contextlib.asynccontextmanager
async def refusing_run() -> AsyncIterator[AzureSdkTTS]:
    """The real SDK pointed at a loopback port where nothing listens."""

    def make(endpoint: str) -> AzureSdkTTS:
        return AzureSdkTTS(api_key=DEFAULT_API_KEY, endpoint=endpoint, deadlines=FAST)

    async with on_refusing_endpoint(make, settle=1.0) as tts, asyncio.timeout(GUARD):
        yield tts


async def test_real_sdk_refusal_it_does_not_report_still_fails_the_stream_at_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK drops its report of a refused connection when the refusal is back before its
    first message went out (its trace shows the TransportError, and no cancellation ever
    comes): played here by dropping its ConnectionFailure cancellations. The plugin's own
    probe of the endpoint fails the stream with the refusal, not a connect timeout."""
    callbacks = SdkWorker._callbacks

    def unreported(self: SdkWorker) -> dict[str, Callable[[Any], None]]:
        handlers = callbacks(self)
        canceled = handlers["canceled"]

        def canceled_unless_refused(evt: Any) -> None:
            if enum_name(evt.result.cancellation_details.error_code) != "ConnectionFailure":
                canceled(evt)

        handlers["canceled"] = canceled_unless_refused
        return handlers

    monkeypatch.setattr(SdkWorker, "_callbacks", unreported)
    async with refusing_run() as tts:
        s = tts.synthesize("Nobody listens.")
        with pytest.raises(ProviderConnectionError) as info:
            await s.collect()
        assert info.value.stage == "connect" and s.state is StreamState.FAILED
        assert "refused" in str(info.value)


async def test_real_sdk_prewarm_of_a_refusing_endpoint_fails_at_connect() -> None:
    """``Connection.open()`` reports a refused connection not at all: the probe does."""
    async with refusing_run() as tts:
        with pytest.raises(ProviderConnectionError) as info:
            await tts.prewarm()
        assert info.value.stage == "connect" and "refused" in str(info.value)


async def test_probe_tells_refused_from_accepted() -> None:
    port = free_port()
    why = await refused("127.0.0.1", port)
    assert why is not None and f"127.0.0.1:{port}" in why
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    async with server:
        host, open_port = server.sockets[0].getsockname()[:2]
        assert await refused(host, open_port) is None


def test_probe_target_is_the_endpoints_host_and_port() -> None:
    assert endpoint_address("wss://westus.tts.speech.microsoft.com/cognitiveservices") == (
        "westus.tts.speech.microsoft.com",
        443,
    )
    assert endpoint_address("ws://127.0.0.1:5000/x") == ("127.0.0.1", 5000)
    assert endpoint_address("ws://[::1]/x") == ("::1", 80)
    tts = AzureSdkTTS(api_key="k", endpoint="ws://127.0.0.1:5000")
    assert tts.probe_target == ("127.0.0.1", 5000)
    # Through a proxy the SDK connects to the proxy; a stand-in SDK connects nowhere.
    proxied = {"SpeechServiceConnection_ProxyHostName": "proxy.local"}
    assert AzureSdkTTS(api_key="k", region="westus", properties=proxied).probe_target is None
    assert AzureSdkTTS(api_key="k", region="westus", sdk=SdkDouble().module).probe_target is None


async def test_real_sdk_builds_and_closes_a_synthesizer_without_a_network() -> None:
    leaks = LeakCheck()
    tts = AzureSdkTTS(api_key="not-a-key", region="westus", deadlines=FAST)
    assert tts.settings.endpoint == (
        "wss://westus.tts.speech.microsoft.com/cognitiveservices/websocket/v2"
    )
    worker = await tts._acquire()  # builds SpeechConfig + SpeechSynthesizer, no connection
    assert worker.thread.is_alive()
    tts._return(worker, reusable=True)
    await tts.aclose()
    assert not worker.thread.is_alive() and not tts.workers
    await leaks.assert_clean(settle=1.0)


# --------------------------------------------------------------------------- the double

#: Short deadlines: blocked steps resolve fast; the guard catches real hangs. The double
#: works on real threads, so they scale with the CI profile (docs/testing.md).
_K = time_scale()
QUICK = TTSDeadlines(
    connect=0.5 * _K, first_audio=0.5 * _K, idle=0.5 * _K, clear=0.3 * _K, close=0.3 * _K
)
#: How long TTS.aclose() may take: tasks (close + clear) then the workers (close), plus
#: the profile's margin for scheduling.
ACLOSE_BOUND = QUICK.close + QUICK.clear + QUICK.close + 0.5 * _K


def _tts(double: SdkDouble, **kw: Any) -> AzureSdkTTS:
    return AzureSdkTTS(
        api_key="k", region="westus", sdk=double.module, **{"deadlines": QUICK, **kw}
    )


async def _wait_for(predicate: Callable[[], bool], timeout: float = 3.0 * _K) -> None:
    """Poll a condition set by another thread (no event to await across threads)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def _worker(tts: AzureSdkTTS) -> SdkWorker:
    (worker,) = tts.workers
    return worker


async def _assert_released(double: SdkDouble) -> None:
    """Every native handle released now; the double's own threads (service, late
    callbacks) end by themselves, so those are waited for, bounded."""
    assert not double.synthesizers and not double.requests and not double.configs
    assert double.connected_callbacks == 0
    await _wait_for(lambda: not double.native_threads())


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Objects must go when the plugin drops them, not when a collection runs."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


async def test_every_sdk_call_runs_on_one_worker_thread_and_is_released_there() -> None:
    double = SdkDouble()
    leaks = LeakCheck()
    with _no_gc():
        tts = _tts(double)
        frames = []
        for text in ("First turn.", "Second turn."):
            frames.append(await tts.synthesize(text).collect())
        assert [f.data for f in frames] == [synthesize("First turn."), synthesize("Second turn.")]
        worker = _worker(tts)  # reused across turns
        assert len(double.calls_to("SpeechSynthesizer")) == 1
        await tts.aclose()
        assert double.api_threads() == {worker.thread.ident}
        assert threading.get_ident() not in double.api_threads()
        assert not worker.thread.is_alive() and not tts.workers
        await _assert_released(double)
        # The native objects were released on the worker thread.
        (release,) = double.calls_to("release")
        assert release.thread == worker.thread.ident
    await leaks.assert_clean(settle=1.0)


def _names_after(double: SdkDouble, start: int) -> list[str]:
    names = [c.name for c in double.calls[start:]]
    return [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]


@pytest.mark.parametrize("open_input", [True, False])
async def test_cancel_closes_input_stops_gets_disconnects_and_releases_in_order(
    open_input: bool,
) -> None:
    double = SdkDouble(silent=True)
    leaks = LeakCheck()
    with _no_gc():
        tts = _tts(double)
        s = tts.stream()
        s.push_text("Never answered.")
        if not open_input:
            s.end_input()
        await _wait_for(lambda: bool(double.calls_to("write")))
        if not open_input:
            await _wait_for(lambda: bool(double.calls_to("close")))
        start = len(double.calls)
        worker = _worker(tts)
        s.cancel()
        await s.aclose()
        await _wait_for(lambda: not worker.thread.is_alive())
        expected = ["stop_speaking", "get", "disconnect_all", "release"]
        assert _names_after(double, start) == (["close", *expected] if open_input else expected)
        assert double.api_threads() == {worker.thread.ident}
        await _assert_released(double)
        await tts.aclose()
    await leaks.assert_clean(settle=1.0)


@pytest.mark.parametrize(
    ("step", "stage"),
    [
        ("SpeechSynthesizer", "connect"),
        ("speak_async", "connect"),
        ("write", "send"),
        ("close", "send"),
    ],
)
async def test_a_hanging_call_fails_the_stream_in_its_deadline(step: str, stage: str) -> None:
    double = SdkDouble()
    double.block(step)
    leaks = LeakCheck()
    loop = asyncio.get_running_loop()
    tts = _tts(double)
    try:
        s = tts.synthesize("Stuck somewhere.")
        with pytest.raises(ProviderTimeoutError) as info:
            await s.collect()
        assert info.value.stage == stage and s.state is StreamState.FAILED
        started = loop.time()
        await tts.aclose()
        assert loop.time() - started < ACLOSE_BOUND
        worker = _worker(tts)  # kept: its thread is still inside the SDK
        assert worker.thread.is_alive() and worker.stuck is not None
    finally:
        double.unblock_all()
    # Released, the thread carries out the rest of the close by itself.
    await _wait_for(lambda: not worker.thread.is_alive())
    assert double.connected_callbacks == 0
    assert double.api_threads() == {worker.thread.ident}
    await leaks.assert_clean(settle=1.0)


@pytest.mark.parametrize("step", ["get", "stop_speaking", "disconnect_all", "release"])
async def test_a_hanging_close_step_cannot_hold_aclose(step: str) -> None:
    """``get()`` never returns, ``stop`` hangs, ...: aclose still ends in its deadline."""
    double = SdkDouble(silent=True)
    double.block(step)
    leaks = LeakCheck()
    loop = asyncio.get_running_loop()
    tts = _tts(double)
    try:
        s = tts.stream()
        s.push_text("Interrupted.")
        s.end_input()
        await _wait_for(lambda: bool(double.calls_to("close")))
        worker = _worker(tts)
        started = loop.time()
        await asyncio.gather(s.aclose(), tts.aclose(), tts.aclose())
        assert loop.time() - started < ACLOSE_BOUND
        assert s.state is StreamState.CANCELLED
        assert double.entered(step, timeout=0)
        assert worker.thread.is_alive()  # still inside the hanging call
    finally:
        double.unblock_all()
    await _wait_for(lambda: not worker.thread.is_alive())
    assert double.connected_callbacks == 0 and not double.synthesizers
    await leaks.assert_clean(settle=1.0)


async def test_get_never_returning_after_the_audio_still_completes_the_stream() -> None:
    double = SdkDouble()
    double.block("get")
    tts = _tts(double)
    try:
        frame = await tts.synthesize("All audio arrived.").collect()
        assert frame.data == synthesize("All audio arrived.")
        worker = _worker(tts)
        assert worker.stuck == "ResultFuture.get()" and not worker.reusable
        await tts.aclose()
    finally:
        double.unblock_all()
    await _wait_for(lambda: not worker.thread.is_alive())
    await _assert_released(double)


@pytest.mark.parametrize("step", ["SpeechSynthesizer", "speak_async", "write"])
async def test_a_failing_call_is_a_provider_error_and_the_synthesizer_is_closed(step: str) -> None:
    double = SdkDouble()
    double.fail(step, RuntimeError("SPXERR_UNEXPECTED (0x5)"))
    leaks = LeakCheck()
    tts = _tts(double)
    with pytest.raises(ProviderError, match="SPXERR_UNEXPECTED"):
        await tts.synthesize("Boom.").collect()
    await tts.aclose()
    assert not tts.workers
    await leaks.assert_clean(settle=1.0)


async def test_callbacks_firing_after_close_reach_nobody() -> None:
    double = SdkDouble(late_callbacks=True)
    tts = _tts(double)
    await tts.synthesize("First.").collect()
    (old,) = tts.workers
    tts._idle.clear()
    tts._return(old, reusable=False)  # closed now; its callbacks fire once more, late
    frame = await tts.synthesize("Second.").collect()  # on a new synthesizer
    await _wait_for(lambda: double.late_fired > 0)
    assert frame.data == synthesize("Second.")
    await _wait_for(lambda: not old.thread.is_alive())
    # The late events reached the loop and were dropped there, as nobody's.
    await _wait_for(lambda: old.dropped_events > 0)
    await tts.aclose()
    await _wait_for(lambda: not double.native_threads())
    await _assert_released(double)


def test_callbacks_firing_after_the_loop_closed_are_harmless() -> None:
    double = SdkDouble(late_callbacks=True)

    async def main() -> None:
        async with _tts(double) as tts:
            await tts.synthesize("Before shutdown.").collect()

    asyncio.run(main())
    deadline = time.monotonic() + 3.0
    while double.native_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert double.late_fired > 0 and not double.native_threads()


@pytest.mark.parametrize(
    ("code", "details", "error", "status"),
    [
        (
            "AuthenticationFailure",
            "WebSocket upgrade failed: Authentication error (401).",
            AuthError,
            401,
        ),
        (
            "AuthenticationFailure",
            "WebSocket upgrade failed: Authentication error (403).",
            AuthError,
            403,
        ),
        (
            "TooManyRequests",
            "WebSocket upgrade failed: Too many requests (429).",
            ProviderError,
            429,
        ),
    ],
)
async def test_service_cancellations_are_typed_errors(
    code: str, details: str, error: type[ProviderError], status: int
) -> None:
    double = SdkDouble(cancel_with=(code, details))
    async with _tts(double) as tts:
        with pytest.raises(error) as info:
            await tts.synthesize("Refused.").collect()
        assert info.value.code == status
        assert (status == 429) == info.value.retryable
        # A retryable refusal before any audio is replayed once on the same synthesizer.
        assert len(double.calls_to("speak_async")) == (2 if status == 429 else 1)


async def test_settings_reach_the_sdk() -> None:
    double = SdkDouble()
    async with _tts(
        double,
        voice="fr-FR-DeniseNeural",
        rate="-10%",
        pitch="+2st",
        style="chat",
        properties={"SpeechSynthesis_RtfTimeoutThreshold": "5"},
    ) as tts:
        await tts.synthesize("Bonjour.").collect()
        (config,) = list(double.configs)
        assert config.subscription == "k"
        assert config.endpoint == az.build_url(region="westus").replace("https", "wss").replace(
            "/cognitiveservices/v1", az.WS_V2_PATH
        )
        assert config.speech_synthesis_voice_name == "fr-FR-DeniseNeural"
        assert config.speech_synthesis_language == "fr-FR"
        assert config.output_format.name == "Raw24Khz16BitMonoPcm"
        assert config.properties == {
            "SpeechSynthesis_FrameTimeoutInterval": "100000000",
            "SpeechSynthesis_RtfTimeoutThreshold": "5",
        }
        assert double.request_props == [{"rate": "-10%", "pitch": "+2st", "style": "chat"}]
        assert not double.requests  # released once its result was taken


async def test_bearer_token_is_set_on_the_config() -> None:
    double = SdkDouble()
    async with AzureSdkTTS(
        auth_token="tok",
        endpoint="wss://x.example/cognitiveservices/websocket/v2",
        sdk=double.module,
        deadlines=QUICK,
    ) as tts:
        await tts.synthesize("Token.").collect()
        (config,) = list(double.configs)
        assert config.subscription is None and config.authorization_token == "tok"


async def test_each_flush_is_one_request_spoken_in_order() -> None:
    double = SdkDouble()
    async with _tts(double) as tts, tts.stream() as s:
        s.push_text("One.")
        s.flush()
        s.push_text(" Two.")
        s.flush()
        s.flush()  # nothing new: no request
        s.end_input()
        audio = b"".join([f.data async for f in s])
        assert double.spoken == ["One.", " Two."]
        assert audio == synthesize("One.") + synthesize(" Two.")
        assert len(double.calls_to("speak_async")) == 2


# --------------------------------------------------------------------------- config


def test_missing_sdk_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import antiphon.plugins.azure.sdk as mod

    monkeypatch.setattr(mod, "sdk_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'antiphon\[azure\]'"):
        AzureSdkTTS(api_key="k", region="westus")
    monkeypatch.setattr(mod, "SDK_MODULE", "azure.cognitiveservices.nothing_here")
    with pytest.raises(ConfigError, match="antiphon"):
        mod.load_sdk()


def test_the_real_sdk_imports() -> None:
    from antiphon.plugins.azure.sdk import load_sdk, sdk_installed

    sdk = load_sdk()
    assert sdk_installed()
    for name in ("SpeechConfig", "SpeechSynthesizer", "SpeechSynthesisRequest", "Connection"):
        assert hasattr(sdk, name)
    for fmt in az.OUTPUT_FORMATS.values():  # every format name maps onto the SDK's enum
        assert hasattr(sdk.SpeechSynthesisOutputFormat, fmt.sdk_name)
    from antiphon.plugins.azure.sdk import DEFAULT_PROPERTIES

    for prop in DEFAULT_PROPERTIES:
        assert hasattr(sdk.PropertyId, prop)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"output_format": "riff-24khz-16bit-mono-pcm"}, "raw-24khz-16bit-mono-pcm"),
        ({"voice": az.Voice(style="cheerful", style_degree=2.0)}, "style_degree"),
        ({"encoding": "opus"}, "linear16, mulaw or alaw"),
        ({"endpoint": "https://westus.tts.speech.microsoft.com"}, "WebSocket URL"),
        ({"auth_token": " "}, "empty"),
        ({"max_idle": -1}, "max_idle"),
    ],
)
def test_unsupported_settings_are_refused(kwargs: dict[str, Any], fragment: str) -> None:
    kw: dict[str, Any] = {"api_key": "k", "region": "westus", "sdk": SdkDouble().module, **kwargs}
    with pytest.raises(ConfigError, match=fragment):
        AzureSdkTTS(**kw)


def test_endpoint_origin_gets_the_v2_path() -> None:
    module = SdkDouble().module
    tts = AzureSdkTTS(api_key="k", endpoint="ws://127.0.0.1:9/", sdk=module)
    assert tts.settings.endpoint == "ws://127.0.0.1:9/cognitiveservices/websocket/v2"
    custom = "wss://host.example/custom/path"
    assert AzureSdkTTS(api_key="k", endpoint=custom, sdk=module).settings.endpoint == custom


def test_key_and_region_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_SPEECH_KEY", "env-key")
    monkeypatch.setenv("AZURE_SPEECH_REGION", "eastus")
    tts = AzureSdkTTS(sdk=SdkDouble().module)
    assert tts.settings.key == "env-key"
    assert tts.settings.endpoint.startswith("wss://eastus.tts.speech.microsoft.com/")
    monkeypatch.delenv("AZURE_SPEECH_KEY")
    with pytest.raises(ConfigError, match="AZURE_SPEECH_KEY"):
        AzureSdkTTS(sdk=SdkDouble().module)


async def test_word_boundaries_become_the_streams_words() -> None:
    """With ``word_boundaries=True`` the SDK's word boundaries (not its punctuation ones)
    reach ``words``, each request's offsets shifted by the audio before it; without, the
    handler is not even connected and ``words`` is None."""
    double = SdkDouble()
    leaks = LeakCheck()
    tts = _tts(double, word_boundaries=True)
    try:
        assert tts.word_timings
        async with tts.stream() as s:
            s.push_text("Hello there, friend.")
            s.flush()
            s.push_text(" How are you?")
            s.end_input()
            audio = b"".join([f.data async for f in s])
        assert [t.strip() for t in double.spoken] == ["Hello there, friend.", "How are you?"]
        assert audio == b"".join(synthesize(t) for t in double.spoken)
        assert s.words is not None
        assert [w.word for w in s.words] == ["Hello", "there", "friend", "How", "are", "you"]
        step = 0.06  # the double's seconds per character
        assert s.words[1].start == pytest.approx(6 * step) and s.words[1].end == pytest.approx(
            11 * step
        )
        first = len(synthesize("Hello there, friend.")) / 2 / tts.sample_rate
        assert s.words[3].start == pytest.approx(first)  # the second request's first word
        assert s.words[-1].end <= len(audio) / 2 / tts.sample_rate + 1e-9
    finally:
        await tts.aclose()
    plain = _tts(SdkDouble())
    try:
        assert (await plain.synthesize("No timings.").collect()).data
        async with plain.stream() as s:
            s.push_text("Still none.")
            s.end_input()
            assert [f async for f in s]
        assert s.words is None
    finally:
        await plain.aclose()
    await leaks.assert_clean(settle=1.0)
