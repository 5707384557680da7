"""WebSocketBridge on an in-memory socket: the mechanisms, without a server."""

from __future__ import annotations

import asyncio
import json

import pytest

from antiphon.agent import AgentOptions, AgentSession, AgentState, Interrupted
from antiphon.aio.clock import VirtualClock
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ProviderError
from antiphon.services.vad import VADOptions
from antiphon.testing.agent import (
    EnergyVAD,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    silence,
    speech,
)
from antiphon.testing.leaks import LeakCheck
from antiphon.transports.websocket import BridgeLimits, WebSocketBridge

LONG_REPLY = (
    "Once upon a time there was a long story to tell. It went on and on for a while. "
    "Nobody could stop it easily. It had many sentences in it."
)

#: asyncio only: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


class MemorySocket:
    """The client side is a queue; ``stall_after`` sends, sending blocks for ever."""

    def __init__(self, stall_after: int | None = None) -> None:
        self.inbox: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self.sent: list[bytes | str] = []
        self.closed: tuple[int, str] | None = None
        self.stall_after = stall_after

    async def receive(self) -> bytes | str | None:
        return await self.inbox.get()

    async def _send(self, data: bytes | str) -> None:
        if self.stall_after is not None and len(self.sent) >= self.stall_after:
            await asyncio.Event().wait()  # a client that stopped reading
        self.sent.append(data)

    async def send_bytes(self, data: bytes) -> None:
        await self._send(data)

    async def send_text(self, data: str) -> None:
        await self._send(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


def session() -> tuple[AgentSession, list[object]]:
    services: list[object] = [
        ScriptedSTT(["talk"]),
        ScriptedLLM(["This reply is long enough to fill a slow client's buffer. " * 4]),
        ToneTTS(),
    ]
    vad = EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=0.3, padding=0))
    s = AgentSession(vad=vad, stt=services[0], llm=services[1], tts=services[2])  # type: ignore[arg-type]
    return s, services


async def test_a_client_that_stops_reading_is_closed_within_the_send_deadline() -> None:
    leaks = LeakCheck()
    s, services = session()
    ws = MemorySocket(stall_after=5)
    bridge = WebSocketBridge(s, ws, limits=BridgeLimits(send_timeout=0.5))
    await s.start()
    run = asyncio.create_task(bridge.run())
    for frame in speech(0.6).split(0.02):
        ws.inbox.put_nowait(frame.data)
    for _ in range(40):
        ws.inbox.put_nowait(b"\x00\x00" * 320)
    code = await asyncio.wait_for(run, 20)
    assert code == 1008 and ws.closed == (1008, "the peer stopped reading")
    assert s.state.value == "closed"
    for service in services:
        await service.aclose()  # type: ignore[attr-defined]
    await leaks.assert_clean(settle=1.0)


async def test_say_and_end_messages() -> None:
    s, services = session()
    ws = MemorySocket()
    bridge = WebSocketBridge(s, ws)
    await s.start()
    run = asyncio.create_task(bridge.run())
    ws.inbox.put_nowait(json.dumps({"type": "say", "text": "Welcome."}))
    ws.inbox.put_nowait(json.dumps({"type": "end"}))
    assert await asyncio.wait_for(run, 20) == 1000
    texts = [json.loads(m) for m in ws.sent if isinstance(m, str)]
    assert texts[0]["type"] == "ready"
    said = [t for t in texts if t["type"] == "transcript" and t["role"] == "agent"]
    assert [t["text"] for t in said] == ["Welcome."]
    audio = [m for m in ws.sent if isinstance(m, bytes)]
    assert len(audio) * 0.02 >= 0.4  # the welcome was spoken in full before the end
    for service in services:
        await service.aclose()  # type: ignore[attr-defined]


class GatedSocket(MemorySocket):
    """Sends wait while ``gate`` is clear (a slow peer); nothing is lost."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()

    async def _send(self, data: bytes | str) -> None:
        await self.gate.wait()
        self.sent.append(data)


async def test_a_failed_session_ends_the_call_with_1011_and_the_reason() -> None:
    leaks = LeakCheck()
    stt = ScriptedSTT(["talk"], fail_streams={0: 0.1})
    services: list[object] = [stt, ScriptedLLM(["Hi."]), ToneTTS()]
    s = AgentSession(
        vad=EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=0.3)),
        stt=stt,
        llm=services[1],  # type: ignore[arg-type]
        tts=services[2],  # type: ignore[arg-type]
        options=AgentOptions(max_stt_restarts=0),
    )
    ws = MemorySocket()
    bridge = WebSocketBridge(s, ws)
    await s.start()
    run = asyncio.create_task(bridge.run())
    for frame in speech(0.3).split(0.02):
        ws.inbox.put_nowait(frame.data)
    assert await asyncio.wait_for(run, 20) == 1011
    assert ws.closed is not None and ws.closed[0] == 1011
    assert ws.closed[1].startswith("the agent failed: scripted-stt stream: injected STT failure")
    assert len(ws.closed[1].encode()) <= 123
    # the peer got the error (and the closed state) before the close
    texts = [json.loads(m) for m in ws.sent if isinstance(m, str)]
    errors = [t for t in texts if t["type"] == "error"]
    assert errors and errors[-1]["recoverable"] is False
    assert texts[-1] == {"type": "state", "state": "closed", "generation": 0}
    assert isinstance(s.error, ProviderError) and s.state is AgentState.CLOSED
    for service in services:
        await service.aclose()  # type: ignore[attr-defined]
    await leaks.assert_clean(settle=1.0)


async def test_a_cancelled_call_still_closes_session_and_socket() -> None:
    s, services = session()
    ws = MemorySocket()
    bridge = WebSocketBridge(s, ws)
    await s.start()
    run = asyncio.create_task(bridge.run())
    await asyncio.sleep(0.05)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert ws.closed == (1001, "the call was cancelled")
    assert s.state is AgentState.CLOSED and s.output.closed
    for service in services:
        await service.aclose()  # type: ignore[attr-defined]


async def test_a_slow_peers_audio_backlog_never_delays_the_barge_in_clear() -> None:
    """Audio piles up for a peer that reads slowly; the user barges in: the queued audio
    is dropped and ``clear`` is the next thing the peer gets (after the send in flight)."""
    clock = VirtualClock()
    stt = ScriptedSTT(["tell me a story", "stop"])
    llm = ScriptedLLM(default=LONG_REPLY, clock=clock)  # preemptive replies too
    tts = ToneTTS(clock=clock)
    s = AgentSession(
        vad=EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=0.3, padding=0)),
        stt=stt,
        llm=llm,
        tts=tts,
        clock=clock,
    )
    ws = GatedSocket()
    bridge = WebSocketBridge(s, ws, limits=BridgeLimits(send_timeout=30))
    interrupted: list[Interrupted] = []
    s.on_event(lambda e: interrupted.append(e) if isinstance(e, Interrupted) else None)
    await s.start()
    run = asyncio.create_task(bridge.run())

    async def feed(audio: AudioFrame) -> None:
        for frame in audio.split(0.02):
            ws.inbox.put_nowait(frame.data)
            for _ in range(20):
                await asyncio.sleep(0)
            await clock.advance(0.02)
            for _ in range(20):
                await asyncio.sleep(0)

    try:
        async with asyncio.timeout(20):
            await feed(speech(0.6))
            while s.state is not AgentState.SPEAKING:
                await feed(silence(0.02))
            await feed(silence(0.2))
            ws.gate.clear()  # the peer stops keeping up
            stalled_at = len(ws.sent)
            await feed(silence(1.0))  # ~50 frames of agent audio pile up in the outbox
            backlog = bridge._audio_queued
            assert backlog >= 40
            await feed(speech(0.8))  # the user talks over the agent
            assert interrupted
            assert bridge._audio_queued < 5 and bridge.audio_dropped >= backlog
            ws.gate.set()
            for _ in range(50):
                await asyncio.sleep(0)
        after = ws.sent[stalled_at:]
        clear = next(i for i, m in enumerate(after) if isinstance(m, str) and '"clear"' in m)
        # at most the one frame that was in flight went before the clear
        assert sum(isinstance(m, bytes) for m in after[:clear]) <= 1
        # and the messages queued during the stall kept their order (state, transcripts)
        assert all(isinstance(m, str) for m in after[1:clear])
    finally:
        ws.gate.set()
        bridge.end(1000, "done")
        await asyncio.wait_for(run, 10)
        for service in (stt, llm, tts):
            await service.aclose()


async def test_outbox_drops_the_oldest_audio_and_ends_the_call_on_too_many_messages() -> None:
    s, services = session()
    ws = GatedSocket()
    ws.gate.clear()  # nothing is sent: everything stays queued
    bridge = WebSocketBridge(s, ws)
    bridge.max_queued_audio, bridge.max_queued_messages = 3, 4
    await s.start()
    run = asyncio.create_task(bridge.run())
    for i in range(6):
        bridge._queue(bytes([i, 0]), audio=True)
    bridge._queue("m1")
    queued = [(audio, item) for audio, item in bridge._out._items]
    assert [item for audio, item in queued if audio] == [
        bytes([3, 0]),
        bytes([4, 0]),
        bytes([5, 0]),
    ]
    assert queued[-1] == (False, "m1")  # order kept: the message after the audio
    assert bridge.audio_dropped == 3
    for i in range(2, 7):  # at most 4 messages wait ("ready" may be one of them)
        bridge._queue(f"m{i}")
    assert await asyncio.wait_for(run, 10) == 1008
    assert ws.closed is None or ws.closed[0] == 1008
    for service in services:
        await service.aclose()  # type: ignore[attr-defined]
