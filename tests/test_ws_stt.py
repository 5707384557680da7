"""The WebSocket STT driver's retries (services/ws_stt.py), on the virtual clock.

A refused connection is retried at the configured backoff times, within the stream's
``max_reconnects`` and the outage's ``reconnect_budget``, then fails with the typed
error; credentials and quota errors are never retried. Run through the Deepgram and
AssemblyAI plugins, which share the driver.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable
from typing import Any

import pytest

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError, ProviderError
from antiphon.net.ws import WsConnection
from antiphon.plugins.assemblyai import AssemblyAISTT
from antiphon.plugins.deepgram import DeepgramSTT
from antiphon.plugins.openai import OpenAISTT
from antiphon.protocols.retry import Backoff
from antiphon.services.stt import StreamState, Transcript
from antiphon.services.ws_stt import WebSocketRecognizeStream, WebSocketSTT
from antiphon.testing import FaultPlan, serving
from antiphon.testing.assemblyai_stt import DEFAULT_API_KEY as AAI_KEY
from antiphon.testing.assemblyai_stt import FakeAssemblyAISTT
from antiphon.testing.conformance.stt_ws import FAST, speech
from antiphon.testing.deepgram_stt import DEFAULT_API_KEY as DG_KEY
from antiphon.testing.deepgram_stt import FakeDeepgramSTT
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.openai_transcription import DEFAULT_API_KEY as OAI_KEY
from antiphon.testing.openai_transcription import FakeOpenAITranscription
from antiphon.testing.poll import until

pytestmark = pytest.mark.virtual_time

PHRASE = "What time is it?"
Make = Callable[..., WebSocketSTT[Any]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _deepgram(url: str, **kw: Any) -> DeepgramSTT:
    return DeepgramSTT(api_key=DG_KEY, base_url=url, deadlines=FAST, **kw)


def _assemblyai(url: str, **kw: Any) -> AssemblyAISTT:
    return AssemblyAISTT(api_key=AAI_KEY, base_url=url, deadlines=FAST, **kw)


PLUGINS = [pytest.param(_deepgram, id="deepgram"), pytest.param(_assemblyai, id="assemblyai")]


def _record_attempts(stt: WebSocketSTT[Any], times: list[float]) -> None:
    """Note the loop time of every connection attempt the stream makes."""
    original = stt._connect
    loop = asyncio.get_running_loop()

    async def connect() -> WsConnection:
        times.append(loop.time())
        return await original()

    stt._connect = connect  # type: ignore[method-assign]


@pytest.mark.parametrize("make", PLUGINS)
async def test_refused_connection_is_retried_at_the_backoff_times_then_fails(make: Make) -> None:
    backoff = Backoff(base=0.5, factor=2.0, cap=4.0, jitter=0.0)
    port = _free_port()
    leaks = LeakCheck(ports=[port])
    times: list[float] = []
    async with make(
        f"ws://127.0.0.1:{port}", backoff=backoff, max_reconnects=3, reconnect_budget=30.0
    ) as stt:
        _record_attempts(stt, times)
        s = stt.stream()
        for f in speech(PHRASE).split(0.02):
            s.push_audio(f)
        s.end_input()
        with pytest.raises(ProviderConnectionError) as info:
            await s.finals()
        assert s.state is StreamState.FAILED and info.value.stage == "connect"
        assert isinstance(s, WebSocketRecognizeStream) and s.reconnects == 3
    waits = [b - a for a, b in itertools.pairwise(times)]
    assert waits == pytest.approx([backoff.delay(0), backoff.delay(1), backoff.delay(2)])
    assert waits == pytest.approx([0.5, 1.0, 2.0])  # the configured series, spelled out
    await leaks.assert_clean(settle=1.0)


async def test_jitter_spreads_the_waits_below_the_exponential_ceiling() -> None:
    draws = iter([1.0, 0.5, 0.0])
    backoff = Backoff(base=0.4, factor=2.0, cap=4.0, jitter=0.5, rand=lambda: next(draws))
    times: list[float] = []
    async with _deepgram(
        f"ws://127.0.0.1:{_free_port()}", backoff=backoff, max_reconnects=3
    ) as stt:
        _record_attempts(stt, times)
        with pytest.raises(ProviderConnectionError):
            await stt.recognize(speech(PHRASE))
    waits = [b - a for a, b in itertools.pairwise(times)]
    # ceiling * (1 - jitter * draw): 0.4 * 0.5, 0.8 * 0.75, 1.6 * 1.0
    assert waits == pytest.approx([0.2, 0.6, 1.6])


async def test_the_budget_ends_an_outage_before_max_reconnects() -> None:
    backoff = Backoff(base=0.5, factor=2.0, cap=4.0, jitter=0.0)
    times: list[float] = []
    async with _deepgram(
        f"ws://127.0.0.1:{_free_port()}",
        backoff=backoff,
        max_reconnects=10,
        reconnect_budget=1.6,
    ) as stt:
        _record_attempts(stt, times)
        with pytest.raises(ProviderConnectionError):
            await stt.recognize(speech(PHRASE))
    # waits 0.5 and 1.0 fit in 1.6 s; the next (2.0) does not: three attempts in all
    waits = [b - a for a, b in itertools.pairwise(times)]
    assert waits == pytest.approx([0.5, 1.0])


@pytest.mark.parametrize("status", [401, 403])
async def test_credentials_refused_are_never_retried(status: int) -> None:
    async with (
        serving(FakeDeepgramSTT(FaultPlan(reject_status=status), vocabulary=[PHRASE])) as fake,
        _deepgram(fake.url, max_reconnects=5) as stt,
    ):
        with pytest.raises(AuthError):
            await stt.recognize(speech(PHRASE))
    assert fake.upgrades == 1


@pytest.mark.parametrize(("code", "kind"), [(4002, ProviderConnectionError), (4001, AuthError)])
async def test_quota_and_auth_closes_are_never_retried(
    code: int, kind: type[ProviderError]
) -> None:
    """AssemblyAI closes with 4002 (no funds) or 4001 (not authorized) after the upgrade."""
    plan = FaultPlan(close_on_open=code, close_on_open_reason="no")
    async with (
        serving(FakeAssemblyAISTT(plan, vocabulary=[PHRASE])) as fake,
        _assemblyai(fake.url, max_reconnects=5) as stt,
    ):
        with pytest.raises(kind) as info:
            await stt.recognize(speech(PHRASE))
    assert info.value.code == code and not info.value.retryable
    assert fake.upgrades == 1


async def test_a_server_error_on_upgrade_is_retried_then_served() -> None:
    """A 503 on the first upgrade, then a healthy server: the stream recovers."""
    fake = FakeDeepgramSTT(FaultPlan(reject_status=503), vocabulary=[PHRASE])
    backoff = Backoff(base=0.3, jitter=0.0)
    times: list[float] = []
    async with serving(fake), _deepgram(fake.url, backoff=backoff, max_reconnects=2) as stt:
        _record_attempts(stt, times)
        s = stt.stream()
        for f in speech(PHRASE).split(0.02):
            s.push_audio(f)
        await until(lambda: fake.upgrades >= 1)  # the first upgrade was refused
        fake.plan = FaultPlan()
        s.end_input()
        finals = await s.finals()
    assert [f.text for f in finals] == [PHRASE]
    assert times[1] - times[0] == pytest.approx(0.3)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="reconnect_budget"):
        _deepgram("ws://127.0.0.1:1", reconnect_budget=-1)
    with pytest.raises(ConfigError, match="backoff"):
        _deepgram("ws://127.0.0.1:1", backoff=0.5)


def _openai(url: str, **kw: Any) -> OpenAISTT:
    return OpenAISTT(api_key=OAI_KEY, base_url=url, deadlines=FAST, **kw)


FAKES: list[Any] = [
    pytest.param(_deepgram, FakeDeepgramSTT, id="deepgram"),
    pytest.param(_assemblyai, FakeAssemblyAISTT, id="assemblyai"),
    pytest.param(_openai, FakeOpenAITranscription, id="openai"),
]


@pytest.mark.parametrize(("make", "fake_type"), FAKES)
async def test_transcripts_reach_the_consumer_from_the_protocol_callback(
    make: Make, fake_type: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One task hop: the connection's handler feeds the protocol machine and delivers each
    transcript itself, in the protocol callback that parsed the message (no task at
    all); the stream's task (the caller's side) never relays one, and reads no socket."""
    async with serving(fake_type(vocabulary=[PHRASE])) as fake, make(fake.url) as stt:
        s = stt.stream()
        deliverers: list[tuple[asyncio.Task[Any] | None, int]] = []
        emit = s._emit

        def recording(t: Transcript) -> None:
            deliverers.append((asyncio.current_task(), len(stt._tasks)))
            emit(t)

        monkeypatch.setattr(s, "_emit", recording)
        for f in speech(PHRASE).split(0.02):
            s.push_audio(f)
        s.end_input()
        got = [t async for t in s]
    assert any(t.is_final and t.text == PHRASE for t in got)
    assert len(deliverers) == len(got) > 0
    # each from the protocol callback (no task), while the stream's task is the service's
    # only one (no reader task)
    assert deliverers == [(None, 1)] * len(got)


async def test_a_reader_that_breaks_fails_its_stream_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in the protocol machine (here: feed raises) fails the stream with a typed
    error at the first server message, not at a deadline."""
    loop = asyncio.get_running_loop()
    async with (
        serving(FakeDeepgramSTT(vocabulary=[PHRASE])) as fake,
        _deepgram(fake.url) as stt,
    ):
        s = stt.stream()
        assert isinstance(s, WebSocketRecognizeStream)

        def broken(frame: str | bytes) -> list[Any]:
            raise RuntimeError("bug")

        monkeypatch.setattr(s._session, "feed", broken)
        for f in speech(PHRASE).split(0.02):
            s.push_audio(f)
        began = loop.time()
        with pytest.raises(ProviderError, match="unexpected error") as info:
            await s.finals()
        assert info.value.stage == "receive" and s.state is StreamState.FAILED
        assert loop.time() - began < FAST.idle  # at once, not at a deadline
        await s.aclose()
