"""The realtime conformance cases of DESIGN.md's faults, grouped by when they strike.

:class:`ConnectFaultCases` (refused, hanging, rejected upgrades, cancel while connecting),
:class:`StreamFaultCases` (silence, closes and errors mid-response, malformed events, slow
or dropped audio, idle closes, bounded reconnects and input backlog) and
:class:`CloseCases` (``aclose`` from anywhere, one terminal state, refused input). Each
stands on :class:`~antiphon.testing.conformance.realtime_harness.RealtimeSuiteBase`; the
suite (:class:`~antiphon.testing.conformance.realtime.RealtimeConformance`) inherits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

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
from antiphon.services.realtime import (
    RealtimeError,
    RealtimeEvent,
    Reconnected,
    ResponseDone,
    SessionState,
)
from antiphon.testing.conformance.realtime_harness import (
    FAST,
    FakeT,
    RealtimeSuiteBase,
    audio_of,
    turn,
)
from antiphon.testing.faults import ABORT, FaultPlan
from antiphon.testing.poll import until
from antiphon.testing.synth import tone_for_text

__all__ = ["CloseCases", "ConnectFaultCases", "StreamFaultCases"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ConnectFaultCases(RealtimeSuiteBase[FakeT]):
    """Faults while connecting: the session never starts, with the right typed error."""

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


class StreamFaultCases(RealtimeSuiteBase[FakeT]):
    """Faults of a running session: it fails, reconnects or goes on, as DESIGN.md says."""

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


class CloseCases(RealtimeSuiteBase[FakeT]):
    """Closing: idempotent from anywhere, exactly one terminal state, input refused."""

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
