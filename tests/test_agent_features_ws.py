"""Handoff, per-turn traces and background audio through the real ``/ws/agent`` transport.

One call on loopback (uvicorn + websockets) to a server whose sessions run on the
doubles, with an :class:`AgentFlow`, a :class:`TurnTracer` and a
:class:`BackgroundAudio` attached to each: the caller hears the bed before anyone
speaks, the front desk hands over, the billing agent greets in its own voice, and the
turn is traced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from antiphon.agent import AgentOptions, AgentSession, TurnOptions
from antiphon.agent.handoff import Agent, AgentFlow, Handoff
from antiphon.agent.sounds import BackgroundAudio, Sound
from antiphon.agent.tracing import TurnTracer
from antiphon.server.agents import CallableAgent
from antiphon.server.app import create_app
from antiphon.services.vad import VADOptions
from antiphon.testing.agent import (
    EnergyVAD,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    ToolCallScript,
    silence,
    speech,
)
from antiphon.testing.asgi import serve_app
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until


@dataclass
class Call:
    ws: ClientConnection
    events: list[dict[str, Any]] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)

    async def collect(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.audio.append(message)
                else:
                    self.events.append(json.loads(message))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


async def push(ws: ClientConnection, seconds: float, *, loud: bool) -> None:
    audio = speech(seconds) if loud else silence(seconds)
    for frame in audio.split(0.02):
        await ws.send(frame.data)
        await asyncio.sleep(0.02)


@pytest.mark.virtual_time
async def test_a_call_is_handed_over_traced_and_has_its_bed() -> None:
    leaks = LeakCheck()
    stt = ScriptedSTT(["i have a question about my bill"])
    front_llm = ScriptedLLM(
        [[ToolCallScript("transfer_to_billing", {"summary": "A billing question."})], "One moment."]
    )
    front_tts, billing_tts = ToneTTS(), ToneTTS()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    flows: list[AgentFlow] = []

    def make() -> AgentSession:
        vad = EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=0.3, padding=0))
        session = AgentSession(
            vad=vad,
            stt=stt,
            llm=front_llm,
            tts=front_tts,
            options=AgentOptions(turn=TurnOptions(preemptive=False)),
        )
        flow = AgentFlow(
            [
                Agent("front_desk", "Route callers.", handoffs=[Handoff("billing", "summary")]),
                Agent("billing", "Answer about bills.", tts=billing_tts, greeting="Billing here."),
            ]
        )
        flow.attach(session)
        flows.append(flow)
        TurnTracer(tracer_provider=provider).attach(session)
        BackgroundAudio(ambient=Sound.ambient_tone(), ambient_gain=0.2).attach(session)
        return session

    async def stop() -> None:
        for service in (stt, front_llm, front_tts, billing_tts):
            await service.aclose()

    app = create_app(CallableAgent(make, stop=stop))
    async with (
        serve_app(app) as host,
        asyncio.timeout(60),
        connect(f"ws://{host}/ws/agent") as ws,
    ):
        call = Call(ws)
        reader = asyncio.create_task(call.collect())
        await until(lambda: call.of("ready"))
        await push(ws, 0.4, loud=False)
        # the bed plays before anyone speaks
        await until(lambda: len(call.audio) >= 10)
        assert all(np.frombuffer(frame, "<i2").any() for frame in call.audio[:10])
        await push(ws, 0.8, loud=True)
        await push(ws, 0.5, loud=False)

        def agent_lines() -> list[str]:
            return [e["text"] for e in call.of("transcript") if e["role"] == "agent"]

        await until(lambda: "Billing here." in agent_lines(), timeout=20)
        assert agent_lines() == ["One moment.", "Billing here."]
        [flow] = flows
        assert flow.current.name == "billing"
        assert front_tts.spoken == ["One moment."] and billing_tts.spoken == ["Billing here."]
        await until(lambda: any(s.name == "antiphon.turn" for s in exporter.get_finished_spans()))
        root = next(s for s in exporter.get_finished_spans() if s.name == "antiphon.turn")
        attrs: dict[str, Any] = dict(root.attributes or {})
        assert attrs["antiphon.tool_calls"] == ("transfer_to_billing",)
        assert "antiphon.user_text" not in attrs
        await ws.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(reader, 10)
    provider.shutdown()
    await leaks.assert_clean(settle=1.0)
