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

The harness (the plugin contract, :class:`PluginHarness`, :func:`speech`, the deadlines)
is :mod:`~antiphon.testing.conformance.stt_ws_harness`, re-exported here; this module
holds the cases.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
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
from antiphon.services.stt import STT, RecognizeStream, StreamState, Transcript
from antiphon.testing.conformance.stt_ws_harness import (
    FAST,
    GUARD,
    PHRASES,
    PluginHarness,
    Run,
    WsSTTHarness,
    all_transcripts,
    feed_audio,
    free_port,
    speech,
)
from antiphon.testing.conformance.tts_harness import slow_sends
from antiphon.testing.faults import ABORT, FaultPlan
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.testing.server import FakeWsServer, serving


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
                feed_audio(s, self.harness.speech(text))
            s.end_input()
            return await all_transcripts(s), s

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
            feed_audio(s, audio)
            first = await anext(s)
            assert not first.is_final and not s.done  # interim while the input is open
            s.end_input()
            results = [first, *await all_transcripts(s)]
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
                assert await all_transcripts(s) == []
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
                feed_audio(s, self.harness.speech(texts[0]))
                await asyncio.sleep(1.0)  # the caller pauses longer than the idle close
                feed_audio(s, self.harness.speech(texts[1]))
                s.end_input()
                results = await all_transcripts(s)
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
                feed_audio(s, self.harness.speech(texts[0]))
                if self.harness.manual_endpoints:
                    s.flush()
                await asyncio.sleep(1.0)  # the caller pauses longer than the idle close
                feed_audio(s, self.harness.speech(texts[1]))
                s.end_input()
                results = await all_transcripts(s)
            assert s.state is StreamState.COMPLETED
            finals = self._check_finals(results, *texts)
            assert finals[1].start >= self.harness.speech(texts[0]).duration - 0.05
            assert self.harness.connections(r.fake) == 2
            assert self.harness.sessions(r.fake) == 2

    # ----------------------------------------------------------------- connecting

    async def test_connect_refused(self) -> None:
        port = free_port()
        async with self.run(base_url=self.harness.url_for_port(port)) as r:
            s = r.stt.stream()
            feed_audio(s, self.harness.speech(self.harness.PHRASES[0]))
            s.end_input()
            with pytest.raises(ProviderConnectionError) as info:
                await all_transcripts(s)
            assert s.state is StreamState.FAILED and info.value.stage == "connect"
            await s.aclose()

    async def test_connect_hangs(self) -> None:
        async with self.run(FaultPlan(hang_connect=True)) as r:
            s = r.stt.stream()
            s.end_input()
            with pytest.raises(ProviderTimeoutError) as info:
                await all_transcripts(s)
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
            feed_audio(s, self.harness.speech(self.harness.PHRASES[0]))
            s.end_input()
            with pytest.raises(ProviderConnectionError) as info:
                await all_transcripts(s)
            assert info.value.code == code and info.value.retryable
            assert s.state is StreamState.FAILED
            await s.aclose()

    @pytest.mark.parametrize("flush", [False, True])
    async def test_drop_before_the_answer_is_replayed(self, flush: bool) -> None:
        text = self.harness.PHRASES[2]
        async with self.run(FaultPlan(drop_before_audio=1), max_reconnects=1) as r:
            async with r.stt.stream() as s:
                feed_audio(s, self.harness.speech(text))
                if flush:
                    s.flush()
                s.end_input()
                results = await all_transcripts(s)
            assert s.state is StreamState.COMPLETED
            (final,) = self._check_finals(results, text)
            assert final.end <= self.harness.speech(text).duration + 0.05
            assert self.harness.connections(r.fake) == 2

    async def test_connection_older_than_max_age_is_replaced(self) -> None:
        texts = self.harness.PHRASES[:2]
        plan = FaultPlan(max_connection_age=0.5)
        async with self.run(plan, keepalive_interval=0.1, max_reconnects=1) as r:
            async with r.stt.stream() as s:
                feed_audio(s, self.harness.speech(texts[0]))
                if self.harness.manual_endpoints:
                    s.flush()  # the service never ends an utterance on its own
                await asyncio.sleep(0.8)
                feed_audio(s, self.harness.speech(texts[1]))
                s.end_input()
                results = await all_transcripts(s)
            assert s.state is StreamState.COMPLETED
            finals = self._check_finals(results, *texts)
            assert finals[1].start >= self.harness.speech(texts[0]).duration - 0.05
            assert self.harness.connections(r.fake) == 2

    @pytest.mark.parametrize("after", [0, 5])
    async def test_server_never_sends_the_final(self, after: int) -> None:
        async with self.run(FaultPlan(silent_after=after)) as r:
            loop = asyncio.get_running_loop()
            s = r.stt.stream()
            feed_audio(s, self.harness.speech(self.harness.PHRASES[0]))
            s.end_input()
            began = loop.time()
            with pytest.raises(ProviderTimeoutError) as info:
                await all_transcripts(s)
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
            feed_audio(s, self.harness.speech(self.harness.PHRASES[0]))
            s.end_input()
            with pytest.raises(ProviderError):
                await all_transcripts(s)
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
            feed_audio(s, self.harness.speech(self.harness.PHRASES[0]))
            assert isinstance(r.fake, FakeWsServer)
            await until(lambda: r.fake.upgrades >= 1)
            assert not s.done  # connecting: the fake holds the upgrade
            s.cancel()
            assert await s.wait() is StreamState.CANCELLED
            assert await all_transcripts(s) == []
            await s.aclose()

    async def test_cancel_during_send(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with slow_sends(monkeypatch, before=GUARD) as probe:
            async with self.run() as r:
                s = r.stt.stream()
                feed_audio(s, self.harness.speech(self.harness.PHRASES[0]))
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
            feed_audio(s, audio)
            first = await anext(s)
            assert not first.is_final
            s.cancel()
            assert s.state is StreamState.CANCELLED and s.done
            assert await all_transcripts(s) == []  # nothing after the cancel
            with pytest.raises(StreamClosedError, match="cancelled"):
                s.push_audio(audio)
            await s.aclose()
            finals = await r.stt.recognize(audio)  # the service goes on
            assert len(finals) == 1

    async def test_aclose_twice_and_from_another_task(self) -> None:
        async with self.run() as r:
            s = r.stt.stream()
            feed_audio(s, self.harness.speech(self.harness.PHRASES[0]))
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
            feed_audio(s, self.harness.speech(self.harness.PHRASES[0]))
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
            assert await all_transcripts(s) == []


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
