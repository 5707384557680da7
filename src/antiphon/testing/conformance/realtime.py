"""The realtime conformance suite: every fault of DESIGN.md against a realtime plugin.

A plugin's tests subclass :class:`RealtimeConformance` and set ``harness``::

    class TestOpenAIRealtimeConformance(RealtimeConformance[FakeRealtimeServer]):
        harness = OpenAIHarness()

The suite is generic over the fake (:class:`RealtimeFake`: what every realtime fake
offers, e.g. :class:`~antiphon.testing.realtime.FakeRealtimeServer` or
:class:`~antiphon.testing.gemini_live.FakeGeminiLiveServer`); the few checks that read
what only the OpenAI Realtime schema has (``response.cancel``, ``conversation.item.truncate``,
items) narrow its stats with :meth:`RealtimeConformance.openai_stats`, and a plugin of
another schema overrides those tests with what its service really does.
Each test runs the plugin against its fake
(in the test's loop, on virtual time) with a :class:`~antiphon.testing.FaultPlan`,
asserts the terminal state, the audio and the typed error, and that no task, thread or
socket is left behind.
It also holds one test per defect of issue 4 (stereo guessing, per-chunk resampling,
reordered audio, voice type guessed from the name, barge-in without truncation, function
calls, reconnect without restoring the session). Requires pytest and pytest-asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import StreamResampler
from antiphon.errors import (
    AuthError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    StreamClosedError,
)
from antiphon.protocols.realtime import Voice
from antiphon.services.realtime import (
    AgentAudio,
    AgentTranscriptDelta,
    AgentTranscriptDone,
    FunctionCall,
    RealtimeDeadlines,
    RealtimeError,
    RealtimeEvent,
    RealtimeModel,
    RealtimeSession,
    Reconnected,
    ResponseDone,
    SessionReady,
    SessionState,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscript,
)
from antiphon.testing.faults import ABORT, FaultPlan
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.testing.realtime import FakeRealtimeServer, RealtimeFakeStats
from antiphon.testing.server import FakeServer, serving
from antiphon.testing.synth import tone_for_text

#: Short deadlines so that faults resolve quickly; the guard catches real hangs.
FAST = RealtimeDeadlines(connect=1.0, ready=1.0, response=1.0, idle=1.0, send=1.0, close=0.5)
GUARD = 20.0
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


class RealtimeFakeStatsView(Protocol):
    """What the suite reads of every realtime fake's stats."""

    @property
    def connections(self) -> int: ...
    @property
    def session_updates(self) -> int:
        """Configurations received (``session.update``, Gemini's ``setup``)."""

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """Each configuration as received, in order."""

    @property
    def audio_in(self) -> bytearray:
        """The user audio received, as sent on the wire."""

    @property
    def closes_sent(self) -> list[int]: ...


class RealtimeFake(FakeServer, Protocol):
    """What the suite needs of a realtime fake server."""

    upgrades: int

    @property
    def stats(self) -> RealtimeFakeStatsView: ...

    def expected_reply(self, user_text: str) -> str:
        """What the fake answers to ``user_text``."""

    def kick(self, code: int = 1011, reason: str = "kicked by the test") -> None:
        """Close every open connection with ``code``."""


FakeT = TypeVar("FakeT", bound=RealtimeFake)


class RealtimeHarness(ABC, Generic[FakeT]):
    """What the suite needs to know about one plugin and its fake."""

    #: Wire input rates the plugin can be configured for (besides 24000).
    input_rates: ClassVar[tuple[int, ...]] = (24000,)

    @abstractmethod
    def fake(self, plan: FaultPlan, **kwargs: Any) -> FakeT:
        """The plugin's fake with ``plan``; ``kwargs`` are ``transcripts``, ``api_key``,
        ``chunk_ms`` (what every realtime fake takes)."""

    def url_for_port(self, port: int) -> str:
        return f"ws://127.0.0.1:{port}"

    @abstractmethod
    def make_model(
        self, base_url: str, *, deadlines: RealtimeDeadlines, **kwargs: Any
    ) -> RealtimeModel:
        """The plugin pointed at ``base_url`` with valid test credentials; ``kwargs`` are
        ``instructions``, ``voice``, ``tools``, ``max_reconnects``, ``input_sample_rate``,
        ``max_input_backlog``, ``turn_detection`` (None: off)."""

    @abstractmethod
    def other_voice(self) -> Any:
        """A valid voice different from the default (for update/restore tests)."""


class OpenAISchemaHarness(RealtimeHarness[FakeRealtimeServer]):
    """A harness whose fake is :class:`~antiphon.testing.realtime.FakeRealtimeServer` in
    ``dialect`` ``"ga"`` (OpenAI) or ``"beta"`` (Azure Voice Live)."""

    dialect: ClassVar[str] = "ga"

    def fake(self, plan: FaultPlan, **kwargs: Any) -> FakeRealtimeServer:
        return FakeRealtimeServer(plan, dialect=self.dialect, **kwargs)


@dataclass
class Run(Generic[FakeT]):
    fake: FakeT
    model: RealtimeModel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def turn(
    s: RealtimeSession, until: Callable[[RealtimeEvent], bool] | None = None
) -> list[RealtimeEvent]:
    """Events up to and including the first ``ResponseDone`` (or ``until``)."""
    stop = until or (lambda e: isinstance(e, ResponseDone))
    out: list[RealtimeEvent] = []
    async for ev in s:
        out.append(ev)
        if stop(ev):
            break
    return out


async def eventually(check: Callable[[], bool], timeout: float = 1.0) -> None:
    """Wait (bounded) until the fake has caught up."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        if loop.time() >= end:
            raise AssertionError("the fake server did not get there in time")
        await asyncio.sleep(0.01)


def audio_of(events: list[RealtimeEvent]) -> bytes:
    return b"".join(e.frame.data for e in events if isinstance(e, AgentAudio))


def speech(seconds: float, rate: int, *, channels: int = 1, freq: float = 300.0) -> AudioFrame:
    """A loud tone that the fake's VAD hears as speech."""
    t = np.arange(round(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)
    if channels > 1:
        x = np.repeat(x[:, None], channels, axis=1)
    return AudioFrame.from_array(x, rate)


class RealtimeConformance(Generic[FakeT]):
    """The suite; subclasses set ``harness``."""

    harness: RealtimeHarness[FakeT]
    #: Run on :class:`~antiphon.testing.vloop.VirtualTimeLoop`: the fake runs in the test's
    #: loop and every deadline is exact virtual time.
    virtual_time: ClassVar[bool] = True

    @contextlib.asynccontextmanager
    async def run(
        self,
        plan: FaultPlan | None = None,
        *,
        base_url: str | None = None,
        fake_kwargs: dict[str, Any] | None = None,
        **model_kwargs: Any,
    ) -> AsyncIterator[Run[FakeT]]:
        fake = self.harness.fake(plan or FaultPlan(), **(fake_kwargs or {}))
        async with serving(fake):
            url = base_url or fake.url
            port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
            leaks = LeakCheck(ports=[port])
            model = self.harness.make_model(url, deadlines=FAST, **model_kwargs)
            try:
                async with asyncio.timeout(GUARD):
                    yield Run(fake, model)
            finally:
                await model.aclose()
            await leaks.assert_clean(settle=0.5)
            assert model.active_sessions == 0

    @staticmethod
    def openai_stats(r: Run[FakeT]) -> RealtimeFakeStats:
        """The fake's stats for a check of the OpenAI Realtime schema (cancels, truncates,
        items); a fake of another schema fails here, and its plugin overrides the test."""
        stats = r.fake.stats
        assert isinstance(stats, RealtimeFakeStats), "this check needs the OpenAI schema"
        return stats

    # ----------------------------------------------------------------- healthy server

    async def test_text_turn_speaks_the_reply_and_completes(self) -> None:
        async with self.run() as r, r.model.session() as s:
            s.send_text("What time is it?")
            events = await turn(s)
            reply = r.fake.expected_reply("What time is it?")
            assert audio_of(events) == tone_for_text(reply, 24000)
            deltas = "".join(e.text for e in events if isinstance(e, AgentTranscriptDelta))
            done = [e for e in events if isinstance(e, AgentTranscriptDone)]
            assert deltas == reply and done[0].text == reply
            end = events[-1]
            assert isinstance(end, ResponseDone) and end.status == "completed"
            assert end.usage is not None and end.usage.total_tokens == 30
            gens = {e.generation for e in events if isinstance(e, AgentAudio)}
            assert gens == {end.generation}
            assert all(
                e.frame.generation == end.generation for e in events if isinstance(e, AgentAudio)
            )

    async def test_session_ready_is_the_first_event(self) -> None:
        async with self.run() as r, r.model.session() as s:
            first = await anext(s)
            assert isinstance(first, SessionReady) and first.session_id
            assert s.state is SessionState.RUNNING
            assert r.fake.stats.session_updates == 1

    async def test_say_speaks_the_given_text(self) -> None:
        async with self.run() as r, r.model.session() as s:
            s.say("Welcome to antiphon.")
            events = await turn(s)
            assert audio_of(events) == tone_for_text("Welcome to antiphon.", 24000)

    async def test_voice_turn_with_server_vad(self) -> None:
        async with (
            self.run(fake_kwargs={"transcripts": ("book a table",)}) as r,
            r.model.session() as s,
        ):
            for f in speech(0.6, 24000).split(0.02):
                s.push_audio(f)
            for f in AudioFrame.silence(0.8, 24000).split(0.02):
                s.push_audio(f)
            events = await turn(s)
            kinds = [type(e) for e in events]
            assert kinds.index(UserSpeechStarted) < kinds.index(UserSpeechStopped)
            stopped = next(e for e in events if isinstance(e, UserSpeechStopped))
            assert 550 <= stopped.audio_end_ms <= 650
            said = next(e for e in events if isinstance(e, UserTranscript))
            assert said.text == "book a table"
            assert audio_of(events) == tone_for_text(r.fake.expected_reply("book a table"), 24000)

    async def test_many_sessions_at_once(self) -> None:
        async def one(model: RealtimeModel, i: int) -> bytes:
            async with model.session() as s:
                s.send_text(f"Session {i}")
                return audio_of(await turn(s))

        async with self.run() as r:
            got = await asyncio.gather(*(one(r.model, i) for i in range(8)))
            for i, audio in enumerate(got):
                assert audio == tone_for_text(r.fake.expected_reply(f"Session {i}"), 24000)

    async def test_update_sends_the_new_configuration(self) -> None:
        async with self.run() as r, r.model.session() as s:
            s.update(instructions="Be brief.", voice=self.harness.other_voice(), tools=[WEATHER])
            s.send_text("hi")
            await turn(s)
            assert r.fake.stats.session_updates == 2
            last = json.dumps(r.fake.stats.sessions[-1])
            assert "Be brief." in last and "get_weather" in last

    # ----------------------------------------------------------------- connecting

    async def test_connect_refused(self) -> None:
        url = self.harness.url_for_port(_free_port())
        async with self.run(base_url=url) as r:
            with pytest.raises(ProviderConnectionError) as info:
                async with r.model.session():
                    pass
            assert info.value.stage == "connect"

    async def test_connect_hangs(self) -> None:
        async with self.run(FaultPlan(hang_connect=True)) as r:
            with pytest.raises(ProviderTimeoutError) as info:
                async with r.model.session():
                    pass
            assert info.value.stage == "connect" and info.value.timeout == FAST.connect

    @pytest.mark.parametrize("status", [401, 403])
    async def test_auth_rejected_on_upgrade(self, status: int) -> None:
        async with self.run(FaultPlan(reject_status=status)) as r:
            with pytest.raises(AuthError) as info:
                async with r.model.session():
                    pass
            assert info.value.code == status

    async def test_upgrade_refused_with_500(self) -> None:
        async with self.run(FaultPlan(reject_status=500)) as r:
            with pytest.raises(ProviderError) as info:
                async with r.model.session():
                    pass
            assert info.value.code == 500 and not isinstance(info.value, AuthError)

    async def test_auth_rejected_by_close_1008(self) -> None:
        async with self.run(FaultPlan(close_on_open=1008)) as r:
            with pytest.raises(AuthError):
                async with r.model.session():
                    pass

    async def test_wrong_key_is_an_auth_error(self) -> None:
        async with self.run(fake_kwargs={"api_key": "another"}) as r:
            with pytest.raises(AuthError):
                async with r.model.session():
                    pass

    async def test_cancel_during_connect(self) -> None:
        async with self.run(FaultPlan(hang_connect=True)) as r:
            s = r.model.session()
            task = asyncio.create_task(s.start())
            await until(lambda: r.fake.upgrades >= 1)
            assert not task.done()  # connecting: the fake holds the upgrade
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await s.wait() is SessionState.CLOSED

    # ----------------------------------------------------------------- streaming faults

    async def test_server_silent_after_session_update(self) -> None:
        async with self.run(FaultPlan(silent_after=0)) as r:
            with pytest.raises(ProviderTimeoutError) as info:
                async with r.model.session():
                    pass
            assert info.value.stage == "session.update"

    async def test_server_silent_after_a_request(self) -> None:
        async with self.run(FaultPlan(silent_after=1)) as r, r.model.session() as s:
            s.send_text("Anyone there?")
            with pytest.raises(ProviderTimeoutError) as info:
                await turn(s)
            assert info.value.stage == "receive"
            assert s.state is SessionState.FAILED

    @pytest.mark.parametrize("code", [1011, ABORT])
    async def test_close_mid_response_without_reconnects_fails(self, code: int) -> None:
        plan = FaultPlan(close_mid_audio=code, close_after_chunks=3)
        async with self.run(plan, max_reconnects=0) as r, r.model.session() as s:
            s.send_text("This answer is cut off in the middle of its audio.")
            received: list[RealtimeEvent] = []
            with pytest.raises(ProviderConnectionError) as info:
                async for ev in s:
                    received.append(ev)
            assert info.value.code == code
            got = audio_of(received)
            reply = r.fake.expected_reply("This answer is cut off in the middle of its audio.")
            assert got and got == tone_for_text(reply, 24000)[: len(got)]
            assert s.state is SessionState.FAILED

    async def test_close_mid_response_reconnects_and_goes_on(self) -> None:
        plan = FaultPlan(close_mid_audio=1011, close_after_chunks=2)
        async with self.run(plan, max_reconnects=1) as r, r.model.session() as s:
            s.send_text("First question")
            events = await turn(s, lambda e: isinstance(e, Reconnected))
            rec = events[-1]
            assert isinstance(rec, Reconnected) and rec.lost_response and not rec.response_requested
            assert r.fake.stats.connections == 2

    async def test_error_event_mid_response(self) -> None:
        plan = FaultPlan(error_mid_stream=True, close_after_chunks=2)
        async with self.run(plan) as r, r.model.session() as s:
            s.send_text("This one fails half way.")
            events = await turn(s)
            errors = [e for e in events if isinstance(e, RealtimeError)]
            assert len(errors) == 1 and not errors[0].fatal
            assert errors[0].error.code == "internal_error"
            end = events[-1]
            assert isinstance(end, ResponseDone) and end.status == "failed"
            assert s.state is SessionState.RUNNING  # the session goes on
            s.send_text("And the next turn works.")
            events = await turn(s)
            assert isinstance(events[-1], ResponseDone) and events[-1].status == "failed"

    async def test_malformed_and_unknown_events_are_ignored(self) -> None:
        async with self.run(FaultPlan(malformed_mid_stream=True)) as r, r.model.session() as s:
            s.send_text("Garbage in the middle.")
            events = await turn(s)
            reply = r.fake.expected_reply("Garbage in the middle.")
            assert audio_of(events) == tone_for_text(reply, 24000)

    async def test_audio_after_response_done_is_dropped(self) -> None:
        async with self.run(FaultPlan(audio_after_done=3)) as r, r.model.session() as s:
            s.send_text("First turn.")
            a1 = audio_of(await turn(s))
            s.send_text("Second turn.")
            a2 = audio_of(await turn(s))
            assert a1 == tone_for_text(r.fake.expected_reply("First turn."), 24000)
            assert a2 == tone_for_text(r.fake.expected_reply("Second turn."), 24000)

    async def test_odd_sized_audio_deltas_keep_every_sample(self) -> None:
        async with self.run(FaultPlan(odd_chunking=True)) as r, r.model.session() as s:
            s.send_text("Odd byte boundaries.")
            events = await turn(s)
            reply = r.fake.expected_reply("Odd byte boundaries.")
            assert audio_of(events) == tone_for_text(reply, 24000)

    async def test_slow_audio_within_deadline(self) -> None:
        plan = FaultPlan(first_audio_delay=FAST.idle / 3, chunk_interval=0.01)
        async with self.run(plan) as r, r.model.session() as s:
            s.send_text("Slow but fine.")
            events = await turn(s)
            assert audio_of(events) == tone_for_text(r.fake.expected_reply("Slow but fine."), 24000)

    async def test_slow_audio_past_deadline(self) -> None:
        async with (
            self.run(FaultPlan(first_audio_delay=FAST.idle * 3)) as r,
            r.model.session() as s,
        ):
            s.send_text("Too slow.")
            with pytest.raises(ProviderTimeoutError):
                await turn(s)
            assert s.state is SessionState.FAILED

    async def test_dropped_before_audio_is_requested_again(self) -> None:
        async with self.run(FaultPlan(drop_before_audio=1)) as r, r.model.session() as s:
            s.send_text("Second time lucky.")
            events = await turn(s)
            rec = [e for e in events if isinstance(e, Reconnected)]
            assert len(rec) == 1 and rec[0].response_requested and not rec[0].lost_response
            reply = r.fake.expected_reply("Second time lucky.")
            assert audio_of(events) == tone_for_text(reply, 24000)
            assert r.fake.stats.connections == 2

    async def test_server_idle_timeout_then_next_turn(self) -> None:
        async with self.run(FaultPlan(idle_close_after=0.2)) as r, r.model.session() as s:
            s.send_text("Before the idle close.")
            await turn(s)
            events = await turn(s, lambda e: isinstance(e, Reconnected))
            assert isinstance(events[-1], Reconnected)
            s.send_text("After the idle close.")
            events = await turn(s)
            reply = r.fake.expected_reply("After the idle close.")
            assert audio_of(events) == tone_for_text(reply, 24000)
            assert r.fake.stats.connections == 2

    async def test_reconnects_are_bounded(self) -> None:
        async with (
            self.run(FaultPlan(idle_close_after=0.1), max_reconnects=2) as r,
            r.model.session() as s,
        ):
            with pytest.raises(ProviderConnectionError):
                async for _ in s:
                    pass
            assert s.reconnects == 2 and r.fake.stats.connections == 3

    async def test_input_backlog_is_bounded(self) -> None:
        async with self.run(max_input_backlog=0.5) as r, r.model.session() as s:
            with contextlib.suppress(StreamClosedError):
                for f in AudioFrame.silence(2.0, 24000).split(0.02):
                    s.push_audio(f)
            assert s.state is SessionState.FAILED
            assert s.error is not None and s.error.stage == "send"
            with pytest.raises(ProviderError):
                async for _ in s:
                    pass

    # ----------------------------------------------------------------- close

    async def test_aclose_twice_and_from_another_task(self) -> None:
        async with self.run(FaultPlan(chunk_interval=0.005)) as r:
            s = r.model.session()
            await s.start()
            s.send_text("Close me from everywhere.")
            await anext(s)
            await asyncio.gather(s.aclose(), s.aclose(), asyncio.create_task(s.aclose()))
            await s.aclose()
            assert s.state is SessionState.CLOSED
            await asyncio.gather(r.model.aclose(), asyncio.create_task(r.model.aclose()))

    async def test_model_aclose_closes_live_sessions(self) -> None:
        async with self.run() as r:
            s = r.model.session()
            await s.start()
            await r.model.aclose()
            assert s.state is SessionState.CLOSED
            with pytest.raises(StreamClosedError):
                r.model.session()

    async def test_exactly_one_terminal_state(self) -> None:
        async with self.run(FaultPlan(silent_after=1)) as r, r.model.session() as s:
            s.send_text("Hello?")
            with pytest.raises(ProviderTimeoutError):
                await turn(s)
            await s.aclose()
            assert s.state is SessionState.FAILED
            with pytest.raises(StreamClosedError, match="failed"):
                s.send_text("more")

    async def test_bad_input_is_refused_with_a_message(self) -> None:
        async with self.run() as r, r.model.session() as s:
            with pytest.raises(ConfigError, match="non-empty"):
                s.send_text("  ")
            bad: Any = b"\x00\x01"
            with pytest.raises(ConfigError, match="AudioFrame"):
                s.push_audio(bad)
            with pytest.raises(ConfigError, match="seconds"):
                s.interrupt(played=-1)
            with pytest.raises(StreamClosedError, match=r"model\.session"):
                r.model.session().send_text("not started")

    # ----------------------------------------------------------------- issue 4 defects

    async def test_mono_with_an_even_sample_count_is_not_treated_as_stereo(self) -> None:
        rng = np.random.default_rng(4)
        mono = rng.integers(-8000, 8000, size=480, dtype=np.int16)  # even count
        async with self.run(turn_detection=None) as r, r.model.session() as s:
            s.push_audio(AudioFrame.from_array(mono, 24000))
            stereo = np.stack([mono, np.zeros_like(mono)], axis=1)
            s.push_audio(AudioFrame.from_array(stereo, 24000))
            s.say("ok")
            await turn(s)
            got = np.frombuffer(bytes(r.fake.stats.audio_in), dtype="<i2")
            assert np.array_equal(got[:480], mono)  # untouched: not averaged in pairs
            assert np.array_equal(got[480:960], np.rint(mono / 2).astype(np.int16))  # real stereo

    async def test_chunked_input_is_resampled_continuously(self) -> None:
        sig = speech(0.5, 16000, freq=440.0)
        async with self.run(turn_detection=None) as r, r.model.session() as s:
            for f in sig.split(0.02):
                s.push_audio(f)
            s.commit_audio()
            await turn(s)
            got = bytes(r.fake.stats.audio_in)
        whole = StreamResampler(16000, 24000)
        expected = whole.process(sig).data + whole.flush().data
        assert got == expected  # the same samples as resampling the whole signal at once

    async def test_audio_order_is_kept_under_many_small_deltas(self) -> None:
        text = "Many tiny audio deltas must arrive in order."
        async with self.run(fake_kwargs={"chunk_ms": 1.0}) as r, r.model.session() as s:
            s.say(text)
            events = await turn(s)
            assert sum(isinstance(e, AgentAudio) for e in events) > 500
            assert audio_of(events) == tone_for_text(text, 24000)

    async def test_unknown_voice_type_is_refused(self) -> None:
        async with self.run() as r:
            with pytest.raises(ConfigError, match="type"):
                self.harness.make_model(
                    r.fake.url, deadlines=FAST, voice={"name": "x", "type": "azure-magic"}
                )
            with pytest.raises(ConfigError, match="not an OpenAI voice"):
                self.harness.make_model(r.fake.url, deadlines=FAST, voice="en-US-AvaNeural")
            with pytest.raises(ConfigError, match="endpoint_id"):
                Voice("my-voice", "azure-custom")

    async def test_interrupt_truncates_at_the_played_position(self) -> None:
        plan = FaultPlan(chunk_interval=0.01, audio_after_clear=3)
        long = "This is a long answer that the user interrupts after a moment. " * 3
        async with self.run(plan) as r, r.model.session() as s:
            s.say(long)
            got = []
            async for ev in s:
                if isinstance(ev, AgentAudio):
                    got.append(ev)
                    if len(got) == 5:
                        break
            old = got[0].generation
            s.interrupt(played=0.1)
            rest = await turn(s)
            assert not any(
                isinstance(e, AgentAudio | AgentTranscriptDelta) and e.generation <= old
                for e in rest
            )
            done = rest[-1]
            assert isinstance(done, ResponseDone) and done.status == "cancelled"
            await eventually(
                lambda: bool(self.openai_stats(r).truncates) and self.openai_stats(r).cancels > 0
            )
            assert self.openai_stats(r).cancels == 1
            assert self.openai_stats(r).truncates == [(got[0].item_id, 100)]
            s.say("Next turn.")
            nxt = await turn(s)
            assert audio_of(nxt) == tone_for_text("Next turn.", 24000)
            assert all(e.generation > old for e in nxt if isinstance(e, AgentAudio))
            assert r.fake.stats.connections == 1  # the warm connection stays

    async def test_interrupt_drops_queued_audio_at_once(self) -> None:
        async with self.run() as r, r.model.session() as s:
            s.say("An answer that is fully queued before the user interrupts it.")
            first = await anext(s)
            while not isinstance(first, AgentAudio):
                first = await anext(s)
            await asyncio.sleep(0.3)  # everything has arrived and waits in the queue
            s.interrupt()  # played: what this iterator yielded
            rest = await turn(s, lambda e: isinstance(e, ResponseDone))
            assert not [e for e in rest if isinstance(e, AgentAudio)]
            await eventually(lambda: bool(self.openai_stats(r).truncates))
            # The whole answer had arrived: nothing to cancel, but truncate what was heard.
            assert self.openai_stats(r).truncates == [
                (first.item_id, int(first.frame.duration * 1000))
            ]

    async def test_function_call_round_trip(self) -> None:
        async with self.run(tools=[WEATHER]) as r, r.model.session() as s:
            s.send_text("What is the weather in Paris?")
            events = await turn(s, lambda e: isinstance(e, FunctionCall))
            call = events[-1]
            assert isinstance(call, FunctionCall) and call.name == "get_weather"
            assert json.loads(call.arguments) == {"query": "What is the weather in Paris?"}
            await turn(s)  # the function-call response ends
            s.send_tool_result(call.call_id, '{"sky": "sunny"}')
            events = await turn(s)
            assert audio_of(events) == tone_for_text('The tool says {"sky": "sunny"}', 24000)
            outputs = [
                i
                for _, i in self.openai_stats(r).items_created
                if i.get("type") == "function_call_output"
            ]
            assert outputs == [
                {
                    "type": "function_call_output",
                    "call_id": call.call_id,
                    "output": '{"sky": "sunny"}',
                    "id": outputs[0]["id"],
                }
            ]

    async def test_reconnect_restores_instructions_voice_tools_and_conversation(self) -> None:
        voice = self.harness.other_voice()
        async with (
            self.run(instructions="You are terse.", tools=[WEATHER]) as r,
            r.model.session() as s,
        ):
            s.update(voice=voice)
            s.send_text("Remember the number 42.")
            await turn(s)
            r.fake.kick(1011)
            events = await turn(s, lambda e: isinstance(e, Reconnected))
            rec = events[-1]
            assert isinstance(rec, Reconnected) and rec.replayed_items == 2
            restored = json.dumps(r.fake.stats.sessions[-1])
            assert "You are terse." in restored and "get_weather" in restored
            assert json.dumps(Voice.wire(s.config.voice)) in restored
            await eventually(
                lambda: sum(c == 1 for c, _ in self.openai_stats(r).items_created) >= 2
            )
            replayed = [i for conn, i in self.openai_stats(r).items_created if conn == 1]
            texts = [(i["role"], i["content"][0]["text"]) for i in replayed]
            reply = r.fake.expected_reply("Remember the number 42.")
            assert texts == [("user", "Remember the number 42."), ("assistant", reply)]
            s.send_text("What was the number?")
            events = await turn(s)
            assert audio_of(events) == tone_for_text(
                r.fake.expected_reply("What was the number?"), 24000
            )


__all__ = [
    "FAST",
    "GUARD",
    "FakeT",
    "OpenAISchemaHarness",
    "RealtimeConformance",
    "RealtimeFake",
    "RealtimeFakeStatsView",
    "RealtimeHarness",
    "Run",
    "audio_of",
    "eventually",
    "speech",
    "turn",
]
