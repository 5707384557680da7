"""The WebSocket STT stream reads its connection with a handler, on the virtual clock.

Each server message is fed to the protocol machine and its transcripts delivered in the
protocol callback that parsed it (``WsConnection.set_handler``), with no reader task:
messages that arrive while the stream's task is busy reach the consumer at once, in the
order sent; a handler that breaks fails the stream once, typed, and raises nothing into
the protocol; a replay moves the handler to the new connection; every way a stream ends
leaves no task, socket or handler behind. Run through the Deepgram plugin.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from antiphon.errors import ProviderError
from antiphon.net.ws import WsConnection
from antiphon.plugins.deepgram import DeepgramSTT
from antiphon.protocols.stt_session import Act, Action
from antiphon.services.stt import StreamState, Transcript
from antiphon.services.ws_stt import WebSocketRecognizeStream
from antiphon.testing import FaultPlan, serving
from antiphon.testing.conformance.stt_ws import FAST, speech
from antiphon.testing.deepgram_stt import DEFAULT_API_KEY, FakeDeepgramSTT
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until

pytestmark = pytest.mark.virtual_time

PHRASE = "What time is it?"


def _deepgram(url: str, **kw: Any) -> DeepgramSTT:
    return DeepgramSTT(api_key=DEFAULT_API_KEY, base_url=url, deadlines=FAST, **kw)


def _stream(stt: DeepgramSTT) -> WebSocketRecognizeStream[Any]:
    s = stt.stream()
    assert isinstance(s, WebSocketRecognizeStream)
    return s


def _record_feed(s: WebSocketRecognizeStream[Any], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the text of every transcript the session emits, in the order it was fed."""
    emitted: list[str] = []
    feed = s._session.feed

    def recording(frame: str | bytes) -> list[Action]:
        actions: list[Action] = feed(frame)
        emitted.extend(a.transcript.text for a in actions if a.act is Act.EMIT and a.transcript)
        return actions

    monkeypatch.setattr(s._session, "feed", recording)
    return emitted


async def test_messages_that_arrive_while_the_task_is_busy_reach_the_consumer_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stream's task waits in a send (a slow socket); the server's results for the
    audio it has arrive meanwhile and are delivered as they come, in the order fed."""
    plan = FaultPlan(first_audio_delay=0.3)  # every result comes after the task is busy
    async with (
        serving(FakeDeepgramSTT(plan, vocabulary=[PHRASE])) as fake,
        _deepgram(fake.url) as stt,
    ):
        s = _stream(stt)
        emitted = _record_feed(s, monkeypatch)
        await until(s._mailbox.receiver_waiting, every=0.001)
        conn = s._conn
        assert conn is not None
        for f in speech(PHRASE).split(0.02):
            s.push_audio(f)  # the direct path: the task stays asleep
        assert not s.behind
        gate, busy = asyncio.Event(), asyncio.Event()
        send = conn.send

        async def slow(message: str | bytes, *, stage: str = "send") -> None:
            busy.set()
            await gate.wait()
            await send(message, stage=stage)

        monkeypatch.setattr(conn, "send", slow)
        s._send_control(s._session.keepalive()[0])  # the task takes it and waits to send
        await busy.wait()
        got: list[Transcript] = []
        async for t in s:
            got.append(t)
            if t.is_final and t.text:
                break
        assert not gate.is_set() and busy.is_set() and not s._task.done()  # still sending
        gate.set()
        s.end_input()
        got += [t async for t in s]
    assert s.state is StreamState.COMPLETED
    assert [t.text for t in got if not t.flushed or t.text] == emitted
    assert any(t.is_final and t.text == PHRASE for t in got)
    ends = [t.end for t in got if t.text]
    assert ends == sorted(ends)


async def test_a_feed_that_raises_fails_the_stream_once_with_a_typed_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the protocol machine at the second message: the transcripts before it are
    yielded, then the stream's one typed failure; the messages after it are not fed, and
    nothing is raised into the protocol (the connection's own catch-all never runs)."""
    async with serving(FakeDeepgramSTT(vocabulary=[PHRASE])) as fake, _deepgram(fake.url) as stt:
        s = _stream(stt)
        feed = s._session.feed
        calls = 0

        def breaking(frame: str | bytes) -> list[Action]:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise RuntimeError("bug")
            result: list[Action] = feed(frame)
            return result

        monkeypatch.setattr(s._session, "feed", breaking)
        finishes: list[tuple[StreamState, bool]] = []
        finish = s._finish

        def counting(state: StreamState, error: ProviderError | None = None) -> bool:
            first = finish(state, error)
            finishes.append((state, first))
            return first

        monkeypatch.setattr(s, "_finish", counting)
        for f in speech(PHRASE).split(0.02):
            s.push_audio(f)
        s.end_input()
        with caplog.at_level(logging.ERROR):
            with pytest.raises(ProviderError, match=r"unexpected error: RuntimeError\('bug'\)"):
                await s.finals()
            await s.aclose()
    assert s.state is StreamState.FAILED and s.error is not None
    assert s.error.stage == "receive"
    assert [f for f in finishes if f[1]] == [(StreamState.FAILED, True)]  # once
    assert calls == 2  # nothing fed after the failure
    assert not [r for r in caplog.records if "message handler failed" in r.getMessage()]


async def test_a_consumer_that_falls_behind_fails_the_stream_from_the_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(WebSocketRecognizeStream, "max_output", 2)
    async with serving(FakeDeepgramSTT(vocabulary=[PHRASE])) as fake, _deepgram(fake.url) as stt:
        s = _stream(stt)
        for f in speech(PHRASE).split(0.02):
            s.push_audio(f)
        s.end_input()
        await s.wait()  # nobody reads
        got: list[Transcript] = []
        with pytest.raises(ProviderError) as info:
            async for t in s:
                got.append(t)
    assert s.state is StreamState.FAILED and info.value.stage == "output"
    assert len(got) == 2  # what fit, then the error


async def test_a_replay_moves_the_handler_to_the_new_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = FaultPlan(drop_before_audio=1)  # a 1011 at the first CloseStream, unanswered
    async with (
        serving(FakeDeepgramSTT(plan, vocabulary=[PHRASE])) as fake,
        _deepgram(fake.url, max_reconnects=1) as stt,
    ):
        s = _stream(stt)
        conns: list[WsConnection] = []
        start = s._start_reading

        def recording(conn: WsConnection) -> None:
            conns.append(conn)
            start(conn)

        monkeypatch.setattr(s, "_start_reading", recording)
        for f in speech(PHRASE).split(0.02):
            s.push_audio(f)
        s.end_input()
        finals = await s.finals()
        assert s.state is StreamState.COMPLETED and s.reconnects == 1
        assert [t.text for t in finals] == [PHRASE]
        assert len(conns) == 2
        assert not conns[0].has_handler and not conns[0].open  # dropped when replaced
    assert not conns[1].has_handler and not conns[1].open


async def _first_transcript(s: WebSocketRecognizeStream[Any]) -> None:
    for f in speech(PHRASE).split(0.02):
        s.push_audio(f)
        await asyncio.sleep(0.02)
        if s._out.qsize():
            return
    raise AssertionError("no transcript while the audio was pushed")


@pytest.mark.parametrize("how", ["cancel", "complete", "server error", "service close"])
async def test_every_end_leaves_no_task_socket_or_handler(how: str) -> None:
    plan = FaultPlan(error_mid_stream=how == "server error", close_after_chunks=10)
    async with serving(FakeDeepgramSTT(plan, vocabulary=[PHRASE])) as fake:
        leaks = LeakCheck(ports=[fake.port])
        stt = _deepgram(fake.url)
        s = _stream(stt)
        await until(lambda: s._conn is not None, every=0.001)
        conn = s._conn
        assert conn is not None and conn.has_handler
        if how == "server error":
            for f in speech(PHRASE).split(0.02):
                s.push_audio(f)
            with pytest.raises(ProviderError):
                await s.finals()
        else:
            await _first_transcript(s)
            if how == "cancel":
                await s.aclose()
            elif how == "complete":
                s.end_input()
                await s.finals()
            else:
                await stt.aclose()
        expected = {
            "cancel": StreamState.CANCELLED,
            "complete": StreamState.COMPLETED,
            "server error": StreamState.FAILED,
            "service close": StreamState.CANCELLED,
        }[how]
        assert s.state is expected
        await s.aclose()
        assert s._task.done() and s._conn is None
        await until(lambda: not stt._tasks, every=0.001)  # (its done-callback ran)
        assert not conn.has_handler and not conn.open
        await stt.aclose()
        await leaks.assert_clean(settle=1.0)
