"""Touch-tones reach the agent: Twilio's ``dtmf`` and ``/ws/agent``'s ``{"type": "dtmf"}``."""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from antiphon.agent.events import DTMFReceived
from antiphon.server.app import create_app
from antiphon.testing.agent import doubles_agent
from antiphon.testing.asgi import serve_app
from antiphon.testing.carriers import RecordingAgent
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.testing.twilio import SimulatedTwilioCall

#: asyncio only: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


def _digits(agent: RecordingAgent) -> list[str]:
    return [e.digit for e in agent.events if isinstance(e, DTMFReceived)]


async def test_twilio_dtmf_messages_reach_the_session_as_events() -> None:
    leaks = LeakCheck()
    agent = RecordingAgent(doubles_agent(["x"], ["y"]))
    async with (
        serve_app(create_app(agent)) as host,
        SimulatedTwilioCall(f"ws://{host}/twilio/media") as call,
    ):
        for digit in "12#":
            await call._send(
                {"event": "dtmf", "streamSid": call.stream_sid, "dtmf": {"digit": digit}}
            )
        await until(lambda: len(_digits(agent)) == 3, 10)
        assert _digits(agent) == ["1", "2", "#"]
        await call._send({"event": "dtmf", "streamSid": call.stream_sid, "dtmf": {"digit": "99"}})
        await until(lambda: call._ws is not None and call._ws.close_code is not None, 10)
        assert call._ws is not None and call._ws.close_code == 1008
        assert "not a DTMF key" in (call._ws.close_reason or "")
    await leaks.assert_clean(settle=1.0)


async def test_ws_agent_dtmf_message_reaches_the_session() -> None:
    leaks = LeakCheck()
    agent = RecordingAgent(doubles_agent(["x"], ["y"]))
    async with serve_app(create_app(agent)) as host:
        async with connect(f"ws://{host}/ws/agent") as ws:
            await ws.send(json.dumps({"type": "dtmf", "digit": "*"}))
            await until(lambda: _digits(agent) == ["*"], 10)
            await ws.send(json.dumps({"type": "dtmf", "digit": 5}))  # not a string
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
        assert ws.close_code == 1008
    await leaks.assert_clean(settle=1.0)
