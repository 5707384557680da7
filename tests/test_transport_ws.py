"""WebSocketBridge on an in-memory socket: the mechanisms, without a server."""

from __future__ import annotations

import asyncio
import json

import pytest

from antiphon.agent import AgentSession
from antiphon.services.vad import VADOptions
from antiphon.testing.agent import EnergyVAD, ScriptedLLM, ScriptedSTT, ToneTTS, speech
from antiphon.testing.leaks import LeakCheck
from antiphon.transports.websocket import BridgeLimits, WebSocketBridge

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
