"""AzureSTT: the real Speech SDK on the loopback fake of its recognition WebSocket
(interim and final results, flushes, keyterms, typed cancellations, cancel and close with
no thread left), and the recognition machine on its own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from antiphon.errors import (
    AuthError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
)
from antiphon.plugins.azure.stt import AzureSTT
from antiphon.protocols import azure_stt as az
from antiphon.protocols.stt_session import Act, Phase
from antiphon.services.stt import StreamState, STTDeadlines, Transcript
from antiphon.testing import FaultPlan, LeakCheck, serving
from antiphon.testing.azure_stt import DEFAULT_API_KEY, FakeAzureSpeechRecognition
from antiphon.testing.azure_stt_double import RecognitionDouble
from antiphon.testing.conformance.stt_ws import PHRASES, speech
from antiphon.testing.faults import ABORT
from antiphon.testing.vloop import time_scale
from azure_helpers import on_refusing_endpoint

pytest.importorskip("azure.cognitiveservices.speech")
#: The SDK runs on its own native threads: real time (docs/testing.md); every test bounded.
pytestmark = [pytest.mark.timeout(60), pytest.mark.realtime]

_S = time_scale()
#: The native SDK sets up its connection itself; on a cold, loaded machine that is slow.
DEADLINES = STTDeadlines(
    connect=5.0 * _S, process=3.0 * _S, final=4.0 * _S, idle=4.0 * _S, close=3.0 * _S
)


@dataclass
class Run:
    fake: FakeAzureSpeechRecognition
    stt: AzureSTT


@contextlib.asynccontextmanager
async def running(
    plan: FaultPlan | None = None, *, settle: float = 15.0, **kwargs: Any
) -> AsyncIterator[Run]:
    """The plugin on the fake; after the test, no task, thread or socket of it is left
    (``settle``: how long the SDK may take to end its thread by itself)."""
    async with serving(FakeAzureSpeechRecognition(plan, vocabulary=PHRASES)) as fake:
        leaks = LeakCheck(ports=[fake.port])
        options: dict[str, Any] = {"deadlines": DEADLINES, **kwargs}
        stt = AzureSTT(api_key=DEFAULT_API_KEY, endpoint=fake.url, **options)
        try:
            yield Run(fake, stt)
        finally:
            await stt.aclose()
        await leaks.assert_clean(settle=settle * _S)
        assert stt.threads == [] and stt.active_streams == 0


def feed(s: Any, text: str) -> None:
    for f in speech(text).split(0.02):
        s.push_audio(f)


async def test_recognizes_speech_with_interims_finals_and_keyterms() -> None:
    text = PHRASES[0]
    async with running(keyterms=["antiphon", "Claude"], segmentation_silence_ms=300) as r:
        async with r.stt.stream(generation=3) as s:
            feed(s, text)
            s.end_input()
            results = [t async for t in s]
        assert s.state is StreamState.COMPLETED
        finals = [t for t in results if t.is_final]
        assert [t.text for t in finals] == [text]
        assert any(not t.is_final for t in results)  # interim results came first
        final = finals[0]
        assert 0.0 < final.start < final.end <= speech(text).duration + 0.05
        assert all(t.generation == 3 and t.utterance == 0 for t in results)
        (context,) = r.fake.stats.contexts
        items = context["dgi"]["Groups"][0]["Items"]
        assert [i["Text"] for i in items] == ["antiphon", "Claude"]
        segmentation = context["phraseDetection"]["CONVERSATION"]["segmentation"]
        assert segmentation["segmentationSilenceTimeoutMs"] == 300
        assert r.fake.stats.queries[0]["language"] == "en-US"


async def test_flush_ends_an_utterance_and_its_final_answers_it() -> None:
    texts = PHRASES[:2]
    async with running(segmentation_silence_ms=800) as r, r.stt.stream() as s:
        # the speech's own trailing silence (0.4 s) is shorter than the segmentation:
        # only the flush's silence ends the first utterance
        feed(s, texts[0])
        first = await anext(s)
        assert not first.is_final
        s.flush()
        got: list[Transcript] = [first]
        while not (got[-1].is_final and got[-1].text):
            got.append(await anext(s))
        assert got[-1].text == texts[0] and got[-1].flushed
        feed(s, texts[1])
        s.end_input()
        rest = [t async for t in s]
        finals = [t for t in rest if t.is_final and t.text]
        assert [t.text for t in finals] == [texts[1]]
        assert finals[0].utterance == 1 and not finals[0].flushed
        assert finals[0].start >= got[-1].end  # the stream's timeline runs on
        assert s.state is StreamState.COMPLETED


async def test_empty_stream_completes() -> None:
    async with running() as r, r.stt.stream() as s:
        s.end_input()
        assert [t async for t in s] == []
        assert s.state is StreamState.COMPLETED


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_an_auth_error(status: int) -> None:
    async with running(FaultPlan(reject_status=status)) as r:
        with pytest.raises(AuthError) as info:
            await r.stt.recognize(speech(PHRASES[0]))
        assert info.value.code == status and not info.value.retryable
        assert "AZURE_SPEECH_KEY" in str(info.value)


@pytest.mark.parametrize("status", [429, 500])
async def test_quota_and_service_errors_are_typed_and_retryable(status: int) -> None:
    async with running(FaultPlan(reject_status=status)) as r:
        with pytest.raises(ProviderError) as info:
            await r.stt.recognize(speech(PHRASES[0]))
        assert not isinstance(info.value, AuthError)
        assert info.value.code == status and info.value.retryable


#: Against a silent service the SDK's own stop waits for its turn to time out (about 10 s,
#: then as long again to release the recognizer): the plugin's close returns within its
#: deadline and the thread ends by itself later.
SDK_LINGER = 40.0


@pytest.mark.timeout(120)
async def test_server_never_answers_the_end() -> None:
    async with running(FaultPlan(silent_after=3), settle=SDK_LINGER) as r:
        loop = asyncio.get_running_loop()
        s = r.stt.stream()
        feed(s, PHRASES[0])
        s.end_input()
        began = loop.time()
        with pytest.raises(ProviderTimeoutError) as info:
            _ = [t async for t in s]
        assert info.value.stage in ("final", "receive")
        assert loop.time() - began >= min(DEADLINES.final, DEADLINES.idle) - 0.1
        assert s.state is StreamState.FAILED
        await s.aclose()


@pytest.mark.parametrize("code", [1011, ABORT])
async def test_server_drops_mid_stream(code: int) -> None:
    async with running(FaultPlan(close_mid_audio=code, close_after_chunks=10)) as r:
        s = r.stt.stream()
        feed(s, PHRASES[0])
        s.end_input()
        with pytest.raises(ProviderError) as info:
            _ = [t async for t in s]
        assert info.value.retryable and not isinstance(info.value, AuthError)
        assert info.value.stage in ("receive", "final")  # it had connected
        assert s.state is StreamState.FAILED
        await s.aclose()


@pytest.mark.timeout(120)
async def test_connect_hangs() -> None:
    deadlines = STTDeadlines(connect=2.0 * _S, close=DEADLINES.close)
    async with running(FaultPlan(hang_connect=True), settle=SDK_LINGER, deadlines=deadlines) as r:
        s = r.stt.stream()
        feed(s, PHRASES[0])
        with pytest.raises(ProviderError) as info:
            _ = [t async for t in s]
        # our connect deadline, or the SDK's own report of the failed connection
        assert info.value.stage == "connect" or info.value.retryable
        assert s.state is StreamState.FAILED
        await s.aclose()


@contextlib.asynccontextmanager
async def refusing() -> AsyncIterator[AzureSTT]:
    """The plugin on the real SDK pointed at a loopback port where nothing listens."""

    def make(endpoint: str) -> AzureSTT:
        return AzureSTT(api_key=DEFAULT_API_KEY, endpoint=endpoint, deadlines=DEADLINES)

    async with on_refusing_endpoint(make, settle=SDK_LINGER * _S) as stt:
        yield stt
    assert stt.threads == [] and stt.active_streams == 0


async def test_connect_refused() -> None:
    async with refusing() as stt:
        s = stt.stream()
        feed(s, PHRASES[0])
        s.end_input()
        with pytest.raises(ProviderConnectionError) as info:
            _ = [t async for t in s]
        assert info.value.retryable and "refused" in str(info.value).lower()
        assert info.value.stage == "connect"  # as the WebSocket STTs report a refusal
        assert s.state is StreamState.FAILED
        await s.aclose()


async def test_cancel_mid_stream_then_the_service_goes_on() -> None:
    async with running() as r:
        s = r.stt.stream()
        feed(s, PHRASES[0])
        first = await anext(s)
        assert not first.is_final
        s.cancel()
        assert s.state is StreamState.CANCELLED
        await s.aclose()
        await s.aclose()
        finals = await r.stt.recognize(speech(PHRASES[1]))
        assert [f.text for f in finals] == [PHRASES[1]]


async def test_streams_at_once_and_a_service_close_cancels_them() -> None:
    async with running() as r:
        results = await asyncio.gather(*(r.stt.recognize(speech(t)) for t in PHRASES))
        assert [[f.text for f in got] for got in results] == [[t] for t in PHRASES]
        live = r.stt.stream()
        feed(live, PHRASES[0])
        await anext(live)
        await r.stt.aclose()
        assert live.state is StreamState.CANCELLED


def test_configuration_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_SPEECH_KEY", raising=False)
    monkeypatch.delenv("AZURE_SPEECH_REGION", raising=False)
    with pytest.raises(ConfigError, match="AZURE_SPEECH_KEY"):
        AzureSTT(region="westus")
    with pytest.raises(ConfigError, match="region"):
        AzureSTT(api_key="k")
    with pytest.raises(ConfigError, match="100 to 5000"):
        AzureSTT(api_key="k", region="westus", segmentation_silence_ms=50)
    with pytest.raises(ConfigError, match="WebSocket URL"):
        AzureSTT(api_key="k", endpoint="https://x")
    stt = AzureSTT(api_key="k", region="WestEurope")
    assert stt.endpoint == f"wss://westeurope.stt.speech.microsoft.com{az.RECOGNITION_PATH}"


# --------------------------------------------------------------------------- the machine


def test_machine_interims_finals_and_the_end() -> None:
    m = az.RecognitionSession(az.RecognizerOptions())
    m.audio(bytes(32000))  # one second
    (a,) = m.receive(az.RecognizingEvent("what", 1_000_000, 2_000_000))
    assert a.transcript is not None and not a.transcript.is_final and m.utterance_open
    assert m.flush() and m.awaiting  # an open utterance: its final is owed
    (b,) = m.receive(az.RecognizedEvent("What time is it?", 1_000_000, 8_000_000, True))
    assert b.transcript is not None and b.transcript.is_final
    assert (b.transcript.start, b.transcript.end) == (0.1, 0.9)
    assert not m.awaiting and m.utterance == 1
    assert m.receive(az.RecognizedEvent("", 9_000_000, 0, False)) == []  # NoMatch
    (n,) = m.receive(az.SpeechEnded(10_000_000))
    assert n.act is Act.NOTICE
    m.end()
    assert m.phase is Phase.CLOSING and m.awaiting
    (d,) = m.receive(az.SessionStopped())
    assert d.act is Act.DONE and m.done


def test_machine_flush_without_an_open_utterance_owes_nothing() -> None:
    m = az.RecognitionSession(az.RecognizerOptions(segmentation_silence_ms=400))
    assert m.flush() == b""  # nothing written since the last final
    m.audio(bytes(3200))
    silence = m.flush()
    assert len(silence) == round((0.4 + az.FLUSH_MARGIN) * 16000) * 2
    assert not m.awaiting


def test_machine_early_stop_and_errors_fail() -> None:
    m = az.RecognitionSession(az.RecognizerOptions())
    (a,) = m.receive(az.SessionStopped())
    assert a.act is Act.FAIL
    (b,) = m.receive(az.Canceled("Error", "ServiceError", "boom"))
    assert b.act is Act.FAIL


@pytest.mark.parametrize(
    ("code", "details", "kind", "status", "retryable"),
    [
        (
            "AuthenticationFailure",
            "WebSocket upgrade failed: Authentication error (401).",
            AuthError,
            401,
            False,
        ),
        ("Forbidden", "", AuthError, 403, False),
        ("TooManyRequests", "Too many requests (429).", ProviderError, 429, True),
        ("ServiceError", "Internal service error (500).", ProviderError, 500, True),
        ("BadRequest", "bad language", ProviderError, 400, False),
        (
            "ConnectionFailure",
            "Connection was closed by the remote host.",
            ProviderError,
            None,
            True,
        ),
    ],
)
def test_cancellations_are_typed(
    code: str, details: str, kind: type, status: int | None, retryable: bool
) -> None:
    error = az.cancellation_error(code, details, stage="receive")
    assert isinstance(error, kind)
    assert error.code == status and error.retryable is retryable


# --------------------------------------------------------------------------- registration


async def test_the_pipeline_builds_it_on_its_fake_by_name() -> None:
    from antiphon.agent.pipeline import PipelineSpec, open_services
    from antiphon.cli import STT_NAMES
    from antiphon.testing.registry import LoopbackFakes

    assert "azure" in STT_NAMES
    spec = PipelineSpec(
        vad="webrtc", stt="azure", llm="openai:gpt-4o-mini", tts="deepgram", fake=True
    )
    async with contextlib.AsyncExitStack() as stack:
        services = await open_services(spec, stack, fakes=LoopbackFakes())
        assert isinstance(services.stt, AzureSTT)
        assert services.stt.endpoint.startswith("ws://127.0.0.1:")
        finals = await services.stt.recognize(speech("what is the weather"))
    assert [f.text for f in finals] == ["unknown"]  # no vocabulary given: heard, not named


# --------------------------------------------------------------------------- on a double of the SDK
# (every step can block or fail: the deadlines of each call and the close are exercised)

FAST = STTDeadlines(
    connect=1.0 * _S, process=1.0 * _S, final=2.0 * _S, idle=2.0 * _S, close=1.0 * _S
)


@contextlib.asynccontextmanager
async def on_double(double: RecognitionDouble) -> AsyncIterator[AzureSTT]:
    leaks = LeakCheck()
    stt = AzureSTT(api_key="k", region="westus", deadlines=FAST, sdk=double.module)
    try:
        yield stt
    finally:
        double.release_all()
        await stt.aclose()
    await leaks.assert_clean(settle=5.0 * _S)
    assert stt.threads == []


async def test_every_sdk_call_runs_on_the_stream_s_own_thread() -> None:
    double = RecognitionDouble(["hello there"])
    async with on_double(double) as stt:
        async with stt.stream() as s:
            s.push_audio(speech(PHRASES[0]))
            s.end_input()
            got = [t async for t in s]
        assert [(t.text, t.is_final) for t in got][-1] == ("hello there", True)
        assert s.state is StreamState.COMPLETED
        (recognizer,) = double.recognizers
        assert recognizer.phrases == []
        assert recognizer.config.speech_recognition_language == "en-US"
        callers = {c.thread for c in double.calls}
        assert len(callers) == 1 and threading.main_thread().name not in callers
        steps = [c.step for c in double.calls]
        assert steps[:4] == ["SpeechConfig", "SpeechRecognizer", "start", "write"]
        assert "close" in steps and steps[-1] == "disconnect_all"


@pytest.mark.parametrize(("step", "stage"), [("start", "connect"), ("write", "send")])
async def test_a_call_that_never_returns_fails_the_stream_by_its_deadline(
    step: str, stage: str
) -> None:
    double = RecognitionDouble(["hello there"])
    gate = double.block(step)
    async with on_double(double) as stt:
        loop = asyncio.get_running_loop()
        s = stt.stream()
        s.push_audio(speech(PHRASES[0]))
        began = loop.time()
        with pytest.raises(ProviderTimeoutError) as info:
            _ = [t async for t in s]
        assert info.value.stage == stage
        assert info.value.timeout == (FAST.connect if step == "start" else FAST.process)
        assert s.state is StreamState.FAILED
        closing = loop.time()
        await s.aclose()
        assert loop.time() - closing <= FAST.close + 0.5 * _S  # the close is bounded too
        assert loop.time() - began >= info.value.timeout - 0.05
        gate.set()  # the call returns at last: the thread finishes the close by itself


async def test_a_failing_build_is_a_typed_error_and_leaves_no_thread() -> None:
    double = RecognitionDouble()
    double.fail("SpeechRecognizer")
    async with on_double(double) as stt:
        with pytest.raises(ProviderError) as info:
            await stt.recognize(speech(PHRASES[0]))
        assert info.value.stage == "connect" and "injected failure" in str(info.value)


async def test_a_close_that_hangs_does_not_hold_aclose() -> None:
    double = RecognitionDouble(["hello there"])
    gate = double.block("close")  # the push stream's close hangs, on the worker thread
    async with on_double(double) as stt:
        loop = asyncio.get_running_loop()
        s = stt.stream()
        s.push_audio(speech(PHRASES[0]))
        await asyncio.sleep(0.2 * _S)  # the audio is written
        s.cancel()
        began = loop.time()
        await s.aclose()
        assert loop.time() - began <= FAST.close + 0.5 * _S
        assert s.state is StreamState.CANCELLED
        gate.set()
