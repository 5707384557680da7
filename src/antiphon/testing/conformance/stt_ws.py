"""The STT conformance suite for plugins over a WebSocket: DESIGN.md's faults.

A cloud STT plugin's tests subclass :class:`WebSocketSTTConformance` and set ``harness``;
a plugin built like the ones here (``api_key``, ``base_url``, ``deadlines``,
``keepalive_interval``, ``max_reconnects``) and a fake built like theirs
(``Fake(plan, vocabulary=...)`` counting in ``stats``) need only :class:`PluginHarness`::

    class TestDeepgramSTTConformance(WebSocketSTTConformance):
        harness = PluginHarness(DeepgramSTT, FakeDeepgramSTT, api_key=DEFAULT_API_KEY,
                                keepalive="KeepAlive")

Each test runs the plugin against the plugin's fake server (on its own thread) with a
:class:`~antiphon.testing.FaultPlan`: connect refused or hanging, auth rejected, the server
dropping mid-stream, never sending the final, slow, sending garbage or messages after the
end, closing idle or old connections; the caller cancelling during connect, send and
receive, closing twice and from another task, running many streams. Each asserts the
stream's one terminal state, its transcripts or typed error, and that no task, thread or
socket to the fake is left (:class:`~antiphon.testing.leaks.LeakCheck`). Requires pytest
and pytest-asyncio. The in-process faults are in :mod:`antiphon.testing.conformance.stt`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.errors import (
    AuthError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    StreamClosedError,
)
from antiphon.services.stt import STT, RecognizeStream, StreamState, STTDeadlines, Transcript
from antiphon.testing.conformance.tts import slow_sends
from antiphon.testing.faults import ABORT, FaultPlan
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.testing.server import FakeServer, FakeWsServer, serving
from antiphon.testing.synth import tone_for_text

#: Short deadlines so that faults resolve quickly; the guard catches real hangs.
FAST = STTDeadlines(connect=1.0, process=1.0, final=1.0, idle=1.0, close=0.5)
GUARD = 20.0

#: Phrases the tests speak (every fake's vocabulary knows them).
PHRASES: tuple[str, ...] = ("What time is it?", "Turn on the lights.", "Thank you very much.")


def speech(text: str, sample_rate: int = 16000, pad: float = 0.4) -> AudioFrame:
    """The fakes' stand-in for ``text`` spoken (:func:`tone_for_text`), ``pad`` seconds of
    silence on each side."""
    silence = bytes(round(pad * sample_rate) * 2)
    return AudioFrame(silence + tone_for_text(text, sample_rate) + silence, sample_rate)


class WsSTTHarness(ABC):
    """What the suite needs to know about one plugin and its fake server."""

    #: Phrases the tests speak (the fake must be able to recognise them).
    PHRASES: ClassVar[tuple[str, ...]] = PHRASES
    #: The protocol has a keep-alive message (else the paused-stream test expects the
    #: idle close to cost one reconnect instead).
    has_keepalive: bool = True
    #: The service ends an utterance only when told (a flush): the tests that pause
    #: between phrases flush first.
    manual_endpoints: bool = False

    def url_for_port(self, port: int) -> str:
        """The plugin's base URL for a local server on ``port``."""
        return f"ws://127.0.0.1:{port}"

    @abstractmethod
    def fake(self, plan: FaultPlan) -> FakeServer:
        """A new (not started) fake server following ``plan`` that knows :attr:`PHRASES`."""

    @abstractmethod
    def make_stt(
        self,
        base_url: str,
        *,
        deadlines: STTDeadlines,
        keepalive_interval: float | None = None,
        max_reconnects: int | None = None,
    ) -> STT:
        """The plugin pointed at ``base_url`` with valid test credentials (None: default)."""

    @abstractmethod
    def speech(self, text: str, sample_rate: int = 16000) -> AudioFrame:
        """Audio of ``text`` spoken, with a little silence around it."""

    @abstractmethod
    def heard(self, text: str, transcript: str) -> bool:
        """Whether ``transcript`` is an acceptable recognition of ``text``."""

    @abstractmethod
    def connections(self, fake: Any) -> int:
        """How many connections the fake has accepted so far."""

    @abstractmethod
    def keepalives(self, fake: Any) -> int:
        """How many keep-alive messages the fake has received."""

    def sessions(self, fake: Any) -> int:
        """How many recognition sessions the fake has started (by default one a
        connection; protocols that configure a session after connecting count those)."""
        return self.connections(fake)


class PluginHarness(WsSTTHarness):
    """The harness of a plugin and fake built like the ones antiphon ships.

    Args:
        plugin: the plugin class (or factory); it is called with ``api_key``,
            ``base_url``, ``deadlines``, ``options`` and, when a test sets them,
            ``keepalive_interval`` and ``max_reconnects``.
        fake: the fake server class, called as ``fake(plan, vocabulary=PHRASES)``; its
            ``stats`` count ``connections`` and messages (``count(type)``).
        api_key: the key the fake accepts.
        scheme: the base URL's scheme (``http`` for a service whose sessions start with an
            HTTP request).
        path: appended to the local server's URL (a service whose base URL has a path).
        keepalive: the keep-alive message type the fake counts (None: the protocol has
            none).
        manual_endpoints: see :attr:`WsSTTHarness.manual_endpoints`.
        sessions: how to count the fake's sessions (default: one a connection).
        options: more keyword arguments for the plugin.
    """

    def __init__(
        self,
        plugin: Callable[..., STT],
        fake: Callable[..., FakeServer],
        *,
        api_key: str,
        scheme: str = "ws",
        path: str = "",
        keepalive: str | None = None,
        manual_endpoints: bool = False,
        sessions: Callable[[Any], int] | None = None,
        **options: Any,
    ) -> None:
        self._plugin = plugin
        self._fake = fake
        self._api_key = api_key
        self._scheme = scheme
        self._path = path
        self._keepalive = keepalive
        self._sessions = sessions
        self._options = options
        self.has_keepalive = keepalive is not None
        self.manual_endpoints = manual_endpoints

    def url_for_port(self, port: int) -> str:
        return f"{self._scheme}://127.0.0.1:{port}{self._path}"

    def fake(self, plan: FaultPlan) -> FakeServer:
        return self._fake(plan, vocabulary=self.PHRASES)

    def make_stt(
        self,
        base_url: str,
        *,
        deadlines: STTDeadlines,
        keepalive_interval: float | None = None,
        max_reconnects: int | None = None,
    ) -> STT:
        extra = dict(self._options)
        if keepalive_interval is not None:
            extra["keepalive_interval"] = keepalive_interval
        if max_reconnects is not None:
            extra["max_reconnects"] = max_reconnects
        return self._plugin(api_key=self._api_key, base_url=base_url, deadlines=deadlines, **extra)

    def speech(self, text: str, sample_rate: int = 16000) -> AudioFrame:
        return speech(text, sample_rate)

    def heard(self, text: str, transcript: str) -> bool:
        return transcript == text

    def connections(self, fake: Any) -> int:
        n: int = fake.stats.connections
        return n

    def keepalives(self, fake: Any) -> int:
        if self._keepalive is None:
            return 0
        n: int = fake.stats.count(self._keepalive)
        return n

    def sessions(self, fake: Any) -> int:
        return self._sessions(fake) if self._sessions else self.connections(fake)


@dataclass
class Run:
    fake: Any
    stt: STT
    harness: WsSTTHarness


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _all(stream: RecognizeStream) -> list[Transcript]:
    return [t async for t in stream]


def _feed(stream: RecognizeStream, audio: AudioFrame, chunk: float = 0.02) -> None:
    for f in audio.split(chunk):
        stream.push_audio(f)


class WebSocketSTTConformance:
    """The WebSocket faults for streaming STT plugins; subclasses set ``harness``."""

    harness: ClassVar[WsSTTHarness]
    #: Run on :class:`~antiphon.testing.vloop.VirtualTimeLoop`: the fake runs in the test's
    #: loop and every deadline is exact virtual time.
    virtual_time: ClassVar[bool] = True

    @contextlib.asynccontextmanager
    async def run(
        self,
        plan: FaultPlan | None = None,
        *,
        base_url: str | None = None,
        keepalive_interval: float | None = None,
        max_reconnects: int | None = None,
    ) -> AsyncIterator[Run]:
        fake = self.harness.fake(plan or FaultPlan())
        async with serving(fake):
            url = base_url or fake.url
            port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
            # a fake on two listeners (an HTTP session endpoint, a WebSocket) names both
            leaks = LeakCheck(ports={port, *getattr(fake, "ports", ())})
            stt = self.harness.make_stt(
                url,
                deadlines=FAST,
                keepalive_interval=keepalive_interval,
                max_reconnects=max_reconnects,
            )
            try:
                async with asyncio.timeout(GUARD):
                    yield Run(fake, stt, self.harness)
            finally:
                await stt.aclose()
            await leaks.assert_clean(settle=1.0)
            assert stt.active_streams == 0

    async def _recognize(self, stt: STT, *texts: str) -> tuple[list[Transcript], RecognizeStream]:
        """Speak ``texts`` as utterances separated by flushes; end; return everything."""
        async with stt.stream() as s:
            for i, text in enumerate(texts):
                if i:
                    s.flush()
                _feed(s, self.harness.speech(text))
            s.end_input()
            return await _all(s), s

    def _check_finals(self, results: list[Transcript], *texts: str) -> list[Transcript]:
        finals = [t for t in results if t.is_final]
        assert len(finals) == len(texts), finals
        for text, final in zip(texts, finals, strict=True):
            assert self.harness.heard(text, final.text), (text, final.text)
        return finals

    # ----------------------------------------------------------------- healthy server

    async def test_recognizes_speech_with_interims_and_timings(self) -> None:
        text = self.harness.PHRASES[0]
        audio = self.harness.speech(text)
        async with self.run() as r, r.stt.stream(generation=5) as s:
            _feed(s, audio)
            first = await anext(s)
            assert not first.is_final and not s.done  # interim while the input is open
            s.end_input()
            results = [first, *await _all(s)]
            assert s.state is StreamState.COMPLETED and s.error is None
        (final,) = self._check_finals(results, text)
        assert results[-1] is final
        assert 0.0 <= final.start < final.end <= audio.duration + 0.05
        assert 0.0 <= final.confidence <= 1.0
        assert all(t.generation == 5 and t.utterance == 0 for t in results)

    async def test_flush_ends_an_utterance_and_the_stream_goes_on(self) -> None:
        texts = self.harness.PHRASES[:2]
        async with self.run() as r:
            results, s = await self._recognize(r.stt, *texts)
            assert s.state is StreamState.COMPLETED
        first, second = self._check_finals(results, *texts)
        assert (first.utterance, second.utterance) == (0, 1)
        first_len = self.harness.speech(texts[0]).duration
        assert first.end <= first_len + 0.05 <= second.start + 0.1  # times run on

    async def test_any_rate_and_channels(self) -> None:
        text = self.harness.PHRASES[1]
        mono48 = self.harness.speech(text, 48000).as_array()
        stereo = AudioFrame.from_array(mono48.repeat(2).reshape(-1, 2), 48000)
        async with self.run() as r:
            finals = await r.stt.recognize(stereo)
        assert len(finals) == 1 and self.harness.heard(text, finals[0].text)

    async def test_empty_stream_completes_without_transcripts(self) -> None:
        async with self.run() as r:
            async with r.stt.stream() as s:
                s.end_input()
                assert await _all(s) == []
            assert s.state is StreamState.COMPLETED

    async def test_many_streams_at_once(self) -> None:
        async with self.run() as r:
            texts = [self.harness.PHRASES[i % len(self.harness.PHRASES)] for i in range(12)]
            results = await asyncio.gather(*(self._recognize(r.stt, t) for t in texts))
            for text, (got, s) in zip(texts, results, strict=True):
                assert s.state is StreamState.COMPLETED
                self._check_finals(got, text)
            assert self.harness.connections(r.fake) == len(texts)

    async def test_keepalive_holds_a_paused_stream_open(self) -> None:
        """Keep-alives hold a paused stream's connection open; a protocol without them
        (WebSocket pings keep a live connection) loses a paused connection to a server's
        idle close, at the cost of one reconnect: the stream's audio not yet answered is
        replayed or the session started again, and the next speech is heard on the new
        connection, times running on."""
        if not self.harness.has_keepalive:
            await self._paused_stream_reconnects()
            return
        texts = self.harness.PHRASES[:2]
        async with self.run(FaultPlan(idle_close_after=0.4), keepalive_interval=0.1) as r:
            async with r.stt.stream() as s:
                _feed(s, self.harness.speech(texts[0]))
                await asyncio.sleep(1.0)  # the caller pauses longer than the idle close
                _feed(s, self.harness.speech(texts[1]))
                s.end_input()
                results = await _all(s)
            assert s.state is StreamState.COMPLETED
            self._check_finals(results, *texts)
            assert self.harness.keepalives(r.fake) >= 2
            assert self.harness.connections(r.fake) == 1

    async def _paused_stream_reconnects(self) -> None:
        texts = self.harness.PHRASES[:2]
        # the idle close at 0.6 s, the reconnect within the first backoff wait (at most
        # 0.25 s): the new connection is busy again when the caller resumes at 1.0 s
        async with self.run(FaultPlan(idle_close_after=0.6), max_reconnects=2) as r:
            async with r.stt.stream() as s:
                _feed(s, self.harness.speech(texts[0]))
                if self.harness.manual_endpoints:
                    s.flush()
                await asyncio.sleep(1.0)  # the caller pauses longer than the idle close
                _feed(s, self.harness.speech(texts[1]))
                s.end_input()
                results = await _all(s)
            assert s.state is StreamState.COMPLETED
            finals = self._check_finals(results, *texts)
            assert finals[1].start >= self.harness.speech(texts[0]).duration - 0.05
            assert self.harness.connections(r.fake) == 2
            assert self.harness.sessions(r.fake) == 2

    # ----------------------------------------------------------------- connecting

    async def test_connect_refused(self) -> None:
        port = _free_port()
        async with self.run(base_url=self.harness.url_for_port(port)) as r:
            s = r.stt.stream()
            _feed(s, self.harness.speech(self.harness.PHRASES[0]))
            s.end_input()
            with pytest.raises(ProviderConnectionError) as info:
                await _all(s)
            assert s.state is StreamState.FAILED and info.value.stage == "connect"
            await s.aclose()

    async def test_connect_hangs(self) -> None:
        async with self.run(FaultPlan(hang_connect=True)) as r:
            s = r.stt.stream()
            s.end_input()
            with pytest.raises(ProviderTimeoutError) as info:
                await _all(s)
            assert info.value.stage == "connect" and info.value.timeout == FAST.connect
            await s.aclose()

    @pytest.mark.parametrize("status", [401, 403])
    async def test_auth_rejected_on_upgrade(self, status: int) -> None:
        async with self.run(FaultPlan(reject_status=status)) as r:
            with pytest.raises(AuthError) as info:
                await r.stt.recognize(self.harness.speech(self.harness.PHRASES[0]))
            assert info.value.code == status and not info.value.retryable

    async def test_auth_rejected_by_close_1008(self) -> None:
        async with self.run(FaultPlan(close_on_open=1008)) as r:
            with pytest.raises(AuthError):
                await r.stt.recognize(self.harness.speech(self.harness.PHRASES[0]))

    @pytest.mark.parametrize("status", [429, 500])
    async def test_upgrade_refused_with_status(self, status: int) -> None:
        async with self.run(FaultPlan(reject_status=status)) as r:
            with pytest.raises(ProviderError) as info:
                await r.stt.recognize(self.harness.speech(self.harness.PHRASES[0]))
            assert info.value.code == status and info.value.retryable
            assert not isinstance(info.value, AuthError)

    # ----------------------------------------------------------------- streaming faults

    @pytest.mark.parametrize("code", [1011, ABORT])
    async def test_server_drops_mid_stream(self, code: int) -> None:
        plan = FaultPlan(close_mid_audio=code, close_after_chunks=30)
        async with self.run(plan, max_reconnects=0) as r:
            s = r.stt.stream()
            _feed(s, self.harness.speech(self.harness.PHRASES[0]))
            s.end_input()
            with pytest.raises(ProviderConnectionError) as info:
                await _all(s)
            assert info.value.code == code and info.value.retryable
            assert s.state is StreamState.FAILED
            await s.aclose()

    @pytest.mark.parametrize("flush", [False, True])
    async def test_drop_before_the_answer_is_replayed(self, flush: bool) -> None:
        text = self.harness.PHRASES[2]
        async with self.run(FaultPlan(drop_before_audio=1), max_reconnects=1) as r:
            async with r.stt.stream() as s:
                _feed(s, self.harness.speech(text))
                if flush:
                    s.flush()
                s.end_input()
                results = await _all(s)
            assert s.state is StreamState.COMPLETED
            (final,) = self._check_finals(results, text)
            assert final.end <= self.harness.speech(text).duration + 0.05
            assert self.harness.connections(r.fake) == 2

    async def test_connection_older_than_max_age_is_replaced(self) -> None:
        texts = self.harness.PHRASES[:2]
        plan = FaultPlan(max_connection_age=0.5)
        async with self.run(plan, keepalive_interval=0.1, max_reconnects=1) as r:
            async with r.stt.stream() as s:
                _feed(s, self.harness.speech(texts[0]))
                if self.harness.manual_endpoints:
                    s.flush()  # the service never ends an utterance on its own
                await asyncio.sleep(0.8)
                _feed(s, self.harness.speech(texts[1]))
                s.end_input()
                results = await _all(s)
            assert s.state is StreamState.COMPLETED
            finals = self._check_finals(results, *texts)
            assert finals[1].start >= self.harness.speech(texts[0]).duration - 0.05
            assert self.harness.connections(r.fake) == 2

    @pytest.mark.parametrize("after", [0, 5])
    async def test_server_never_sends_the_final(self, after: int) -> None:
        async with self.run(FaultPlan(silent_after=after)) as r:
            loop = asyncio.get_running_loop()
            s = r.stt.stream()
            _feed(s, self.harness.speech(self.harness.PHRASES[0]))
            s.end_input()
            began = loop.time()
            with pytest.raises(ProviderTimeoutError) as info:
                await _all(s)
            assert info.value.stage in ("final", "receive")
            assert info.value.timeout in (FAST.final, FAST.idle)
            # ended by that deadline (virtual time: exact), not by the guard
            assert loop.time() - began <= info.value.timeout + 1e-9
            assert s.state is StreamState.FAILED
            await s.aclose()

    async def test_slow_server_within_deadline(self) -> None:
        text = self.harness.PHRASES[1]
        async with self.run(FaultPlan(first_audio_delay=FAST.final / 4)) as r:
            results, s = await self._recognize(r.stt, text)
            assert s.state is StreamState.COMPLETED
            self._check_finals(results, text)

    async def test_slow_server_past_deadline(self) -> None:
        async with self.run(FaultPlan(first_audio_delay=FAST.final * 3)) as r:
            with pytest.raises(ProviderTimeoutError):
                await r.stt.recognize(self.harness.speech(self.harness.PHRASES[0]))

    async def test_error_event_mid_stream(self) -> None:
        async with self.run(FaultPlan(error_mid_stream=True, close_after_chunks=10)) as r:
            s = r.stt.stream()
            _feed(s, self.harness.speech(self.harness.PHRASES[0]))
            s.end_input()
            with pytest.raises(ProviderError):
                await _all(s)
            assert s.state is StreamState.FAILED
            await s.aclose()

    async def test_malformed_and_unknown_messages_are_ignored(self) -> None:
        text = self.harness.PHRASES[2]
        async with self.run(FaultPlan(malformed_mid_stream=True)) as r:
            results, s = await self._recognize(r.stt, text)
            assert s.state is StreamState.COMPLETED
            self._check_finals(results, text)

    async def test_messages_after_the_end_are_ignored(self) -> None:
        text = self.harness.PHRASES[0]
        async with self.run(FaultPlan(audio_after_done=3)) as r:
            for _ in range(2):
                results, s = await self._recognize(r.stt, text)
                assert s.state is StreamState.COMPLETED
                self._check_finals(results, text)

    async def test_ack_before_the_last_send_returns(self, monkeypatch: pytest.MonkeyPatch) -> None:
        text = self.harness.PHRASES[1]
        with slow_sends(monkeypatch, after=0.002):
            async with self.run() as r:
                results, s = await self._recognize(r.stt, text)
                assert s.state is StreamState.COMPLETED
                self._check_finals(results, text)

    # ----------------------------------------------------------------- the caller

    async def test_cancel_during_connect(self) -> None:
        async with self.run(FaultPlan(hang_connect=True)) as r:
            s = r.stt.stream()
            _feed(s, self.harness.speech(self.harness.PHRASES[0]))
            assert isinstance(r.fake, FakeWsServer)
            await until(lambda: r.fake.upgrades >= 1)
            assert not s.done  # connecting: the fake holds the upgrade
            s.cancel()
            assert await s.wait() is StreamState.CANCELLED
            assert await _all(s) == []
            await s.aclose()

    async def test_cancel_during_send(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with slow_sends(monkeypatch, before=GUARD) as probe:
            async with self.run() as r:
                s = r.stt.stream()
                _feed(s, self.harness.speech(self.harness.PHRASES[0]))
                await probe.entered.wait()  # the stream is inside a send that never ends
                assert not s.done
                s.cancel()
                assert await s.wait() is StreamState.CANCELLED
                await s.aclose()
                assert probe.interrupted >= 1  # the cancel broke the stuck send

    async def test_cancel_mid_stream(self) -> None:
        audio = self.harness.speech(self.harness.PHRASES[0])
        async with self.run() as r:
            s = r.stt.stream()
            _feed(s, audio)
            first = await anext(s)
            assert not first.is_final
            s.cancel()
            assert s.state is StreamState.CANCELLED and s.done
            assert await _all(s) == []  # nothing after the cancel
            with pytest.raises(StreamClosedError, match="cancelled"):
                s.push_audio(audio)
            await s.aclose()
            finals = await r.stt.recognize(audio)  # the service goes on
            assert len(finals) == 1

    async def test_aclose_twice_and_from_another_task(self) -> None:
        async with self.run() as r:
            s = r.stt.stream()
            _feed(s, self.harness.speech(self.harness.PHRASES[0]))
            await anext(s)
            await asyncio.gather(s.aclose(), s.aclose(), asyncio.create_task(s.aclose()))
            await s.aclose()
            assert s.state is StreamState.CANCELLED
            await asyncio.gather(r.stt.aclose(), asyncio.create_task(r.stt.aclose()))
            await r.stt.aclose()
            assert r.stt.closed
            with pytest.raises(StreamClosedError, match="closed"):
                r.stt.stream()

    async def test_service_aclose_cancels_live_streams(self) -> None:
        async with self.run() as r:
            s = r.stt.stream()
            _feed(s, self.harness.speech(self.harness.PHRASES[0]))
            await anext(s)
            await r.stt.aclose()
            assert s.state is StreamState.CANCELLED

    # ----------------------------------------------------------------- contract

    async def test_exactly_one_terminal_state(self) -> None:
        async with self.run() as r:
            _, s = await self._recognize(r.stt, self.harness.PHRASES[0])
            assert s.state is StreamState.COMPLETED
            s.cancel()
            assert s.state is StreamState.COMPLETED
            with pytest.raises(StreamClosedError, match="completed"):
                s.flush()

    async def test_bad_input_is_refused(self) -> None:
        async with self.run() as r, r.stt.stream() as s:
            bad: Any = b"\x00\x00"
            with pytest.raises(ConfigError, match="AudioFrame"):
                s.push_audio(bad)
            s.end_input()
            with pytest.raises(StreamClosedError, match="end_input"):
                s.push_audio(AudioFrame.silence(0.02, 16000))
            assert await _all(s) == []


__all__ = [
    "FAST",
    "GUARD",
    "PHRASES",
    "PluginHarness",
    "Run",
    "WebSocketSTTConformance",
    "WsSTTHarness",
    "speech",
]
