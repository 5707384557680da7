"""RealtimeSession's read path: the connection's handler, no reader task.

What the conformance suite cannot see from outside: every server event reaches the
session's output from the protocol callback (no task between the socket and the
consumer), in order while the consumer is busy; a handler that fails takes the session
to one typed failure and never raises into the protocol; a close that cannot be
replaced fails the session from the handler; close leaves no task, handler or socket.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from antiphon.errors import ConfigError, ProviderConnectionError, ProviderError
from antiphon.net.ws import WsConnection
from antiphon.plugins.azure import AzureVoiceLive
from antiphon.plugins.gemini import GeminiLive
from antiphon.plugins.openai import OpenAIRealtime
from antiphon.plugins.xai import XAIRealtime
from antiphon.protocols import realtime as rt
from antiphon.services.realtime import (
    AgentAudio,
    AgentTranscriptDelta,
    RealtimeEvent,
    RealtimeSession,
    ResponseDone,
    SessionReady,
    SessionState,
)
from antiphon.testing.conformance.realtime import FAST, audio_of, turn
from antiphon.testing.faults import FaultPlan
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.testing.realtime import DEFAULT_API_KEY, FakeRealtimeServer
from antiphon.testing.server import serving
from antiphon.testing.synth import tone_for_text

#: asyncio only, the fake in the test's loop: virtual time.
pytestmark = pytest.mark.virtual_time

TEXT = "Tell me something while I am busy."


def _model(fake: FakeRealtimeServer, **kwargs: Any) -> OpenAIRealtime:
    return OpenAIRealtime(
        api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST, server_vad=False, **kwargs
    )


def _record_puts(s: RealtimeSession) -> list[tuple[RealtimeEvent, asyncio.Task[Any] | None]]:
    """Every event put into the session's output, with the task that put it."""
    puts: list[tuple[RealtimeEvent, asyncio.Task[Any] | None]] = []
    put = s._output.put

    def recording(ev: RealtimeEvent) -> ProviderError | None:
        puts.append((ev, asyncio.current_task()))
        return put(ev)

    s._output.put = recording  # type: ignore[method-assign]
    return puts


def _conn(s: RealtimeSession) -> WsConnection:
    conn = s._conn
    assert conn is not None
    return conn


async def test_events_come_from_the_protocol_in_order_while_the_consumer_is_busy() -> None:
    async with serving(FakeRealtimeServer(chunk_ms=20.0)) as fake, _model(fake) as model:
        s = model.session()
        puts = _record_puts(s)
        async with s:
            assert len(model._tasks) == 1  # the session's own task: no reader task
            await until(lambda: _conn(s).has_handler)
            s.send_text(TEXT)
            # the consumer is busy: nothing is read until the whole answer is queued
            await until(lambda: any(isinstance(ev, ResponseDone) for ev, _ in puts))
            events = await turn(s)
        ready, *from_server = puts
        assert isinstance(ready[0], SessionReady) and ready[1] is not None  # the main task
        assert all(task is None for _, task in from_server)  # the protocol callback
        assert events == [ev for ev, _ in puts]  # SessionReady first, then the answer
        assert audio_of(events) == tone_for_text(fake.expected_reply(TEXT), 24000)
        assert sum(isinstance(ev, AgentAudio) for ev in events) > 10
        deltas = "".join(e.text for e in events if isinstance(e, AgentTranscriptDelta))
        assert deltas == fake.expected_reply(TEXT)


async def test_a_failing_handler_fails_the_session_once_with_a_typed_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serving(FakeRealtimeServer(chunk_ms=20.0)) as fake:
        leaks = LeakCheck(ports=[fake.port])
        async with _model(fake) as model, model.session() as s:
            events = s._delivery.events

            def broken(
                ev: rt.ServerEvent, gen: int, loop_time: float
            ) -> tuple[list[RealtimeEvent], ProviderError | None]:
                if isinstance(ev, rt.AudioDelta):
                    raise RuntimeError("a bug in delivery")
                return events(ev, gen, loop_time)

            s._delivery.events = broken  # type: ignore[method-assign]
            s.send_text(TEXT)
            with caplog.at_level(logging.ERROR), pytest.raises(ProviderError) as info:
                await turn(s)
            assert info.value is s.error and s.state is SessionState.FAILED
            assert info.value.stage == "receive" and "a bug in delivery" in str(info.value)
            assert await s.wait() is SessionState.FAILED
        failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
        assert len(failures) == 1  # the later deltas were ignored, not failed again
        assert failures[0].name == "antiphon.services.realtime"  # never the protocol's
        assert s.error is info.value
        await leaks.assert_clean(settle=1.0)


async def test_a_close_that_cannot_be_replaced_fails_from_the_handler() -> None:
    async with serving(FakeRealtimeServer()) as fake:
        leaks = LeakCheck(ports=[fake.port])
        async with _model(fake, max_reconnects=0) as model, model.session() as s:
            assert isinstance(await anext(s), SessionReady)
            await until(lambda: _conn(s).has_handler)
            closed_by: list[asyncio.Task[Any] | None] = []
            close = s._output.close

            def recording(error: ProviderError | None) -> None:
                closed_by.append(asyncio.current_task())
                close(error)

            s._output.close = recording  # type: ignore[method-assign]
            fake.kick(1011)
            with pytest.raises(ProviderConnectionError) as info:
                await anext(s)
            assert info.value.code == 1011 and info.value is s.error
            assert closed_by == [None]  # the consumer heard it from the handler
        await leaks.assert_clean(settle=1.0)


async def test_close_mid_answer_leaves_no_task_no_handler_and_no_socket() -> None:
    async with serving(FakeRealtimeServer(FaultPlan(chunk_interval=0.02))) as fake:
        leaks = LeakCheck(ports=[fake.port])
        async with _model(fake) as model:
            s = model.session()
            async with s:
                conn = _conn(s)
                s.send_text(TEXT)
                async for ev in s:
                    if isinstance(ev, AgentAudio):
                        break  # the answer is still streaming
                await s.aclose()
                assert s.state is SessionState.CLOSED
                assert len(model._tasks) == 0
                assert not conn.has_handler and not conn.open
                assert s._conn is None
        await leaks.assert_clean(settle=1.0)


_PLUGINS: dict[str, Any] = {
    "openai": lambda **kw: OpenAIRealtime(api_key="k", **kw),
    "xai": lambda **kw: XAIRealtime(api_key="k", **kw),
    "gemini": lambda **kw: GeminiLive(api_key="k", **kw),
    "azure": lambda **kw: AzureVoiceLive(
        endpoint="https://r.services.ai.azure.com", api_key="k", **kw
    ),
}


@pytest.mark.parametrize("plugin", sorted(_PLUGINS))
def test_every_realtime_plugin_takes_max_output_backlog(plugin: str) -> None:
    """Each plugin passes ``max_output_backlog`` to the model (default 120 s) and refuses a
    non-positive one by name."""
    make = _PLUGINS[plugin]
    assert make().max_output_backlog == 120.0
    assert make(max_output_backlog=7.5).max_output_backlog == 7.5
    for bad in (0.0, -1.0):
        with pytest.raises(
            ConfigError, match=rf"^max_output_backlog must be > 0 seconds, got {bad}$"
        ):
            make(max_output_backlog=bad)
        with pytest.raises(
            ConfigError, match=rf"^max_input_backlog must be > 0 seconds, got {bad}$"
        ):
            make(max_input_backlog=bad)


async def test_a_consumer_that_falls_behind_fails_the_session_from_the_handler() -> None:
    """Backpressure on the agent's audio: past ``max_output_backlog`` seconds unread, the
    session fails (policy fail), at the delta that overflowed; what was queued before is
    still read, then the error."""
    async with serving(FakeRealtimeServer(chunk_ms=20.0)) as fake:
        leaks = LeakCheck(ports=[fake.port])
        async with _model(fake, max_output_backlog=0.1) as model:
            s = model.session()
            puts = _record_puts(s)
            async with s:
                s.send_text(TEXT)
                await s.wait()  # nobody reads
                assert s.state is SessionState.FAILED and s.error is not None
                assert s.error.stage == "deliver" and "0.1s of agent audio" in str(s.error)
                received: list[RealtimeEvent] = []
                with pytest.raises(ProviderError) as info:
                    async for ev in s:
                        received.append(ev)
                assert info.value is s.error
        audio = [ev for ev, _ in puts if isinstance(ev, AgentAudio)]
        assert all(task is None for ev, task in puts if isinstance(ev, AgentAudio))
        assert len(audio) == 6  # 0.12 s put: the sixth 20 ms delta overflowed
        assert received == [ev for ev, _ in puts][:-1]  # all but the one that overflowed
        await leaks.assert_clean(settle=1.0)
