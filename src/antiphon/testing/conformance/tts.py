"""The TTS conformance suite: every fault of DESIGN.md against any streaming TTS plugin.

A WebSocket plugin's tests subclass :class:`TTSConformance` and set ``harness``::

    class TestDeepgramConformance(TTSConformance):
        harness = DeepgramHarness()

A plugin on another transport (HTTP) subclasses :class:`CoreTTSConformance`, the faults
that every transport has, and adds its transport's own.

Each test runs the plugin against the plugin's fake server (in the test's own event
loop) with a :class:`~antiphon.testing.FaultPlan`, asserts that the stream ends in the
expected terminal state with the expected audio or typed error, and that no task, thread
or socket is left behind. Requires pytest and pytest-asyncio.

Time: the suite sets ``virtual_time = True``, so with
:func:`antiphon.testing.vloop.pytest_asyncio_loop_factories` in your ``conftest.py`` every
test runs on a loop whose clock jumps to the next timer when idle: deadlines are exact
and cost no wall-clock time, however loaded the machine. A plugin whose work runs on
threads the loop cannot see (a native SDK) sets ``virtual_time = False``.

How it is built: the harness (:class:`TTSHarness`, :data:`FAST`, :func:`slow_sends`) is
:mod:`~antiphon.testing.conformance.tts_harness`, re-exported here; this module holds
the cases, in two layers: :class:`CoreTTSConformance` (connecting, streaming faults,
cancel and close, the contract) and :class:`TTSConformance`, which adds a WebSocket's own
(prewarm, a close mid-audio, error and garbage frames, audio after done, idle and old
connections replaced, a cancel that is never acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from antiphon.errors import (
    AuthError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    StreamClosedError,
)
from antiphon.net.pool import PoolOptions
from antiphon.services.tts import TTS, StreamState, SynthesisStream, TTSDeadlines
from antiphon.testing.conformance.tts_harness import (
    FAST,
    GUARD,
    Run,
    SendProbe,
    TTSHarness,
    all_audio,
    free_port,
    slow_sends,
)
from antiphon.testing.faults import ABORT, FaultPlan
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.testing.server import serving
from antiphon.testing.vloop import time_scale


class CoreTTSConformance:
    """The faults every transport has; subclasses set ``harness``."""

    harness: ClassVar[TTSHarness]
    #: Run on :class:`~antiphon.testing.vloop.VirtualTimeLoop` (see the module docstring).
    virtual_time: ClassVar[bool] = True

    @property
    def fast(self) -> TTSDeadlines:
        """The deadlines under test: :data:`FAST` on virtual time; on real time, FAST
        times the CI profile's :func:`~antiphon.testing.vloop.time_scale`."""
        if self.virtual_time:
            return FAST
        k = time_scale()
        f = FAST
        return TTSDeadlines(
            connect=f.connect * k,
            first_audio=f.first_audio * k,
            idle=f.idle * k,
            clear=f.clear * k,
            close=f.close * k,
        )

    @contextlib.asynccontextmanager
    async def run(
        self,
        plan: FaultPlan | None = None,
        *,
        pool: PoolOptions | None = None,
        base_url: str | None = None,
        timed: bool = False,
    ) -> AsyncIterator[Run]:
        fake = self.harness.fake(plan or FaultPlan())
        async with serving(fake):
            url = base_url or fake.url
            port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
            leaks = LeakCheck(ports=[port])
            timed_tts = self.harness.make_timed_tts(url, deadlines=self.fast) if timed else None
            tts = timed_tts or self.harness.make_tts(url, deadlines=self.fast, pool=pool)
            try:
                async with asyncio.timeout(GUARD):
                    yield Run(fake, tts, self.harness)
            finally:
                await tts.aclose()
            await leaks.assert_clean(settle=0.5)
            assert tts.active_streams == 0

    async def _speak(self, tts: TTS, text: str) -> tuple[bytes, SynthesisStream]:
        async with tts.stream() as s:
            s.push_text(text)
            s.end_input()
            audio = await all_audio(s)
        return audio, s

    # ----------------------------------------------------------------- healthy server

    async def test_speaks_text_and_completes(self) -> None:
        async with self.run() as r:
            audio, s = await self._speak(r.tts, "Hello there, how are you?")
            assert s.state is StreamState.COMPLETED and s.error is None
            assert audio == self.harness.expected_pcm("Hello there, how are you?", r.tts)

    async def test_synthesize_one_shot(self) -> None:
        async with self.run() as r:
            frame = await r.tts.synthesize("One shot.").collect()
            assert frame.data == self.harness.expected_pcm("One shot.", r.tts)
            assert frame.sample_rate == r.tts.sample_rate and frame.channels == 1

    async def test_flushes_are_spoken_in_order(self) -> None:
        sentences = ["First sentence.", " Second one here.", " And a third."]
        async with self.run() as r:
            async with r.tts.stream(generation=7) as s:
                frames = []
                for text in sentences:
                    s.push_text(text)
                    s.flush()
                s.end_input()
                frames = [f async for f in s]
            assert all(f.generation == 7 for f in frames)
            expected = b"".join(self.harness.expected_pcm(t, r.tts) for t in sentences)
            assert b"".join(f.data for f in frames) == expected

    async def test_first_segment_audio_arrives_before_input_ends(self) -> None:
        async with self.run() as r, r.tts.stream() as s:
            s.push_text("Streaming works.")
            s.flush()
            first = await anext(s)
            assert first.data and not s.done
            s.end_input()
            rest = await all_audio(s)
            whole = first.data + rest
            assert whole == self.harness.expected_pcm("Streaming works.", r.tts)

    async def test_word_timings_follow_the_audio_or_are_none(self) -> None:
        """Word timings, where the service sends them, name the words spoken in order and
        lie inside the stream's audio, the second segment's after the first's; a service
        that sends none leaves ``words`` None (nothing is invented)."""
        sentences = ["Hello there, friend.", " How are you today?"]
        async with self.run(timed=True) as r:
            async with r.tts.stream() as s:
                for text in sentences:
                    s.push_text(text)
                    s.flush()
                s.end_input()
                audio = await all_audio(s)
            assert s.state is StreamState.COMPLETED
            if not r.tts.word_timings:
                assert s.words is None
                return
            assert s.words is not None
            assert [w.word for w in s.words] == " ".join(sentences).split()
            first = len(self.harness.expected_pcm(sentences[0], r.tts)) / 2 / r.tts.sample_rate
            total = len(audio) / 2 / r.tts.sample_rate
            tolerance = 0.005  # providers give milliseconds
            starts = [w.start for w in s.words]
            assert starts == sorted(starts)
            assert all(0 <= w.start <= w.end <= total + tolerance for w in s.words)
            n = len(sentences[0].split())
            assert all(w.end <= first + tolerance for w in s.words[:n])
            assert all(w.start >= first - tolerance for w in s.words[n:])

    async def test_without_timings_configured_words_is_none(self) -> None:
        async with self.run() as r:
            _, s = await self._speak(r.tts, "Plain speech.")
            assert (s.words is not None) == r.tts.word_timings
            if s.words is not None:
                assert [w.word for w in s.words] == ["Plain", "speech."]

    async def test_empty_stream_completes_without_audio(self) -> None:
        async with self.run() as r:
            async with r.tts.stream() as s:
                s.end_input()
                assert await all_audio(s) == b""
            assert s.state is StreamState.COMPLETED

    async def test_connection_is_reused_across_turns(self) -> None:
        async with self.run() as r:
            for i in range(3):
                audio, s = await self._speak(r.tts, f"Turn number {i}.")
                assert s.state is StreamState.COMPLETED
                assert audio == self.harness.expected_pcm(f"Turn number {i}.", r.tts)
            assert self.harness.connections(r.fake) == 1

    async def test_many_streams_at_once(self) -> None:
        texts = [f"Concurrent stream {i}." for i in range(16)]
        async with self.run() as r:
            results = await asyncio.gather(*(self._speak(r.tts, t) for t in texts))
            for text, (audio, s) in zip(texts, results, strict=True):
                assert s.state is StreamState.COMPLETED
                assert audio == self.harness.expected_pcm(text, r.tts)

    async def test_odd_sized_audio_chunks_keep_every_sample(self) -> None:
        async with self.run(FaultPlan(odd_chunking=True)) as r:
            audio, s = await self._speak(r.tts, "Odd byte boundaries.")
            assert s.state is StreamState.COMPLETED
            assert audio == self.harness.expected_pcm("Odd byte boundaries.", r.tts)

    # ----------------------------------------------------------------- connecting

    async def test_connect_refused(self) -> None:
        port = free_port()
        async with self.run(base_url=self.harness.url_for_port(port)) as r:
            async with r.tts.stream() as s:
                s.push_text("Nobody listens.")
                s.end_input()
                with pytest.raises(ProviderConnectionError) as info:
                    await all_audio(s)
            assert s.state is StreamState.FAILED and info.value.stage == "connect"

    async def test_connect_hangs(self) -> None:
        async with self.run(FaultPlan(hang_connect=True)) as r:
            async with r.tts.stream() as s:
                s.push_text("Hello?")
                s.end_input()
                with pytest.raises(ProviderTimeoutError) as info:
                    await all_audio(s)
            assert info.value.stage == "connect"
            assert info.value.timeout == r.tts.deadlines.connect  # the deadline it was given

    @pytest.mark.parametrize("status", [401, 403])
    async def test_auth_rejected_on_upgrade(self, status: int) -> None:
        async with self.run(FaultPlan(reject_status=status)) as r:
            s = r.tts.synthesize("Let me in.")
            with pytest.raises(AuthError) as info:
                await all_audio(s)
            assert info.value.code == status and s.state is StreamState.FAILED

    @pytest.mark.parametrize("status", [429, 500])
    async def test_upgrade_refused_with_status(self, status: int) -> None:
        async with self.run(FaultPlan(reject_status=status)) as r:
            s = r.tts.synthesize("Busy?")
            with pytest.raises(ProviderError) as info:
                await all_audio(s)
            assert info.value.code == status and info.value.retryable
            assert not isinstance(info.value, AuthError)

    # ----------------------------------------------------------------- streaming faults

    @pytest.mark.parametrize("after", [0, 1])
    async def test_server_silent_after_a_message(self, after: int) -> None:
        async with self.run(FaultPlan(silent_after=after)) as r:
            s = r.tts.synthesize("Anyone there?")
            with pytest.raises(ProviderTimeoutError) as info:
                await all_audio(s)
            assert info.value.stage == "receive"
            assert s.state is StreamState.FAILED

    async def test_slow_server_within_deadline(self) -> None:
        async with self.run(FaultPlan(first_audio_delay=self.fast.first_audio / 3)) as r:
            audio, s = await self._speak(r.tts, "Slow but fine.")
            assert s.state is StreamState.COMPLETED
            assert audio == self.harness.expected_pcm("Slow but fine.", r.tts)

    async def test_slow_server_past_deadline(self) -> None:
        async with self.run(FaultPlan(first_audio_delay=self.fast.first_audio * 3)) as r:
            s = r.tts.synthesize("Too slow.")
            with pytest.raises(ProviderTimeoutError):
                await all_audio(s)

    # ----------------------------------------------------------------- cancel and close

    async def test_cancel_during_connect(self) -> None:
        async with self.run(FaultPlan(hang_connect=True)) as r:
            s = r.tts.stream()
            s.push_text("Never mind.")
            s.flush()
            await until(lambda: self.harness.connect_attempts(r.fake) >= 1)
            assert not s.done  # connecting: the fake holds the upgrade
            s.cancel()
            assert await s.wait() is StreamState.CANCELLED
            assert await all_audio(s) == b""
            await s.aclose()

    async def test_cancel_mid_audio_drops_old_audio(self) -> None:
        plan = FaultPlan(chunk_interval=0.005, audio_after_clear=3)
        long_text = "This is a long answer that the user interrupts. " * 3
        async with self.run(plan) as r:
            s1 = r.tts.stream(generation=1)
            s1.push_text(long_text)
            s1.end_input()
            got = [await anext(s1) for _ in range(3)]
            s1.cancel()
            assert s1.state is StreamState.CANCELLED
            assert [f async for f in s1] == []  # nothing more after the cancel
            assert all(f.generation == 1 for f in got)
            await s1.aclose()
            audio, s2 = await self._speak(r.tts, "Next turn.")
            assert s2.state is StreamState.COMPLETED
            assert audio == self.harness.expected_pcm("Next turn.", r.tts)
            self.check_cancel_reused_connection(r)

    def check_cancel_reused_connection(self, r: Run) -> None:
        """Transport-specific checks after a cancel and a next turn (none by default)."""

    async def test_aclose_twice_and_from_another_task(self) -> None:
        async with self.run(FaultPlan(chunk_interval=0.005)) as r:
            s = r.tts.synthesize("Close me from everywhere. " * 3)
            await anext(s)
            await asyncio.gather(s.aclose(), s.aclose(), asyncio.create_task(s.aclose()))
            await s.aclose()
            assert s.state is StreamState.CANCELLED
            await asyncio.gather(r.tts.aclose(), asyncio.create_task(r.tts.aclose()))
            await r.tts.aclose()

    async def test_tts_aclose_cancels_live_streams(self) -> None:
        async with self.run() as r:
            s = r.tts.stream()
            s.push_text("Waiting for more text")
            s.flush()
            await anext(s)
            await r.tts.aclose()
            assert s.state is StreamState.CANCELLED
            with pytest.raises(StreamClosedError):
                r.tts.stream()

    # ----------------------------------------------------------------- contract

    async def test_exactly_one_terminal_state(self) -> None:
        async with self.run() as r:
            _, s = await self._speak(r.tts, "Done once.")
            assert s.state is StreamState.COMPLETED
            s.cancel()
            assert s.state is StreamState.COMPLETED
            with pytest.raises(StreamClosedError, match="completed"):
                s.push_text("more")

    async def test_bad_input_is_refused_with_a_message(self) -> None:
        async with self.run() as r:
            with pytest.raises(ConfigError, match="non-empty"):
                r.tts.synthesize("   ")
            async with r.tts.stream() as s:
                bad: Any = 42
                with pytest.raises(ConfigError, match="str"):
                    s.push_text(bad)
                s.end_input()
                with pytest.raises(StreamClosedError, match="end_input"):
                    s.push_text("late")


class TTSConformance(CoreTTSConformance):
    """The whole suite for a plugin over a WebSocket: core faults plus the socket's own."""

    def check_cancel_reused_connection(self, r: Run) -> None:
        assert self.harness.cancels(r.fake) == 1
        assert self.harness.connections(r.fake) == 1

    async def test_prewarm_connects_ahead(self) -> None:
        async with self.run() as r:
            await r.tts.prewarm()
            assert self.harness.connections(r.fake) == 1
            await self._speak(r.tts, "Warm start.")
            assert self.harness.connections(r.fake) == 1

    async def test_auth_rejected_by_close_1008(self) -> None:
        async with self.run(FaultPlan(close_on_open=1008)) as r:
            s = r.tts.synthesize("Let me in.")
            with pytest.raises(AuthError):
                await all_audio(s)

    async def test_ack_before_the_last_send_returns(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The server answers before our send() returns: the stream must still end."""
        with slow_sends(monkeypatch, after=0.02):
            async with self.run() as r:
                for i in range(10):
                    audio, s = await self._speak(r.tts, f"Race {i}.")
                    assert s.state is StreamState.COMPLETED
                    assert audio == self.harness.expected_pcm(f"Race {i}.", r.tts)

    @pytest.mark.parametrize("code", [1011, ABORT])
    async def test_close_mid_audio(self, code: int) -> None:
        text = "This answer is cut off in the middle of its audio."
        async with self.run(FaultPlan(close_mid_audio=code, close_after_chunks=3)) as r:
            s = r.tts.synthesize(text)
            received: list[bytes] = []
            with pytest.raises(ProviderConnectionError) as info:
                async for f in s:
                    received.append(f.data)
            assert info.value.code == code
            # Nothing received before the fault is lost.
            assert (
                b"".join(received)
                == self.harness.expected_pcm(text, r.tts)[: len(b"".join(received))]
            )
            assert received

    async def test_error_event_mid_stream(self) -> None:
        async with self.run(FaultPlan(error_mid_stream=True, close_after_chunks=2)) as r:
            s = r.tts.synthesize("This one fails with an error message.")
            with pytest.raises(ProviderError):
                await all_audio(s)
            assert s.state is StreamState.FAILED

    async def test_malformed_and_unknown_messages_are_ignored(self) -> None:
        async with self.run(FaultPlan(malformed_mid_stream=True)) as r:
            audio, s = await self._speak(r.tts, "Garbage in the middle.")
            assert s.state is StreamState.COMPLETED
            assert audio == self.harness.expected_pcm("Garbage in the middle.", r.tts)

    async def test_audio_after_done_never_reaches_the_next_stream(self) -> None:
        async with self.run(FaultPlan(audio_after_done=3)) as r:
            a1, _ = await self._speak(r.tts, "First turn.")
            await asyncio.sleep(0.05)
            a2, _ = await self._speak(r.tts, "Second turn.")
            assert a1 == self.harness.expected_pcm("First turn.", r.tts)
            assert a2 == self.harness.expected_pcm("Second turn.", r.tts)

    async def test_server_idle_timeout_then_next_turn(self) -> None:
        async with self.run(FaultPlan(idle_close_after=0.1)) as r:
            await self._speak(r.tts, "Before the idle close.")
            await asyncio.sleep(0.4)
            audio, s = await self._speak(r.tts, "After the idle close.")
            assert s.state is StreamState.COMPLETED
            assert audio == self.harness.expected_pcm("After the idle close.", r.tts)
            assert self.harness.connections(r.fake) == 2

    async def test_connection_older_than_max_age_is_replaced(self) -> None:
        async with self.run(pool=PoolOptions(max_age=0.2)) as r:
            await self._speak(r.tts, "Young connection.")
            await asyncio.sleep(0.3)
            audio, _ = await self._speak(r.tts, "New connection.")
            assert audio == self.harness.expected_pcm("New connection.", r.tts)
            assert self.harness.connections(r.fake) == 2

    async def test_reconnects_when_dropped_before_audio(self) -> None:
        async with self.run(FaultPlan(drop_before_audio=1)) as r:
            audio, s = await self._speak(r.tts, "Second time lucky.")
            assert s.state is StreamState.COMPLETED
            assert audio == self.harness.expected_pcm("Second time lucky.", r.tts)
            assert self.harness.connections(r.fake) == 2

    async def test_cancel_during_send(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with slow_sends(monkeypatch, before=GUARD) as probe:
            async with self.run() as r:
                s = r.tts.stream()
                s.push_text("Stuck in send.")
                s.end_input()
                await probe.entered.wait()  # the stream is inside a send that never ends
                assert not s.done
                s.cancel()
                assert await s.wait() is StreamState.CANCELLED
                await s.aclose()
                assert probe.interrupted >= 1  # the cancel broke the stuck send

    async def test_cancel_not_acknowledged_discards_connection(self) -> None:
        async with self.run(FaultPlan(ignore_clear=True, chunk_interval=0.005)) as r:
            s1 = r.tts.synthesize("A long answer that is never cleared by the server. " * 2)
            await anext(s1)
            s1.cancel()
            await s1.aclose()
            await asyncio.sleep(self.fast.clear + 0.1)
            audio, _ = await self._speak(r.tts, "Fresh connection.")
            assert audio == self.harness.expected_pcm("Fresh connection.", r.tts)
            # Without stream ids the connection cannot be trusted again; with them it can,
            # and the old stream's audio, still arriving, is dropped by the new one.
            assert self.harness.connections(r.fake) == (1 if self.harness.context_ids else 2)


__all__ = [
    "FAST",
    "GUARD",
    "CoreTTSConformance",
    "Run",
    "SendProbe",
    "TTSConformance",
    "TTSHarness",
    "slow_sends",
]
