"""STUN/TURN for WebRTC across NAT, without network: ``--ice-server`` is parsed, reaches
aiortc (a fake STUN server on loopback answers its binding request) and the page
(``GET /webrtc/config``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import httpx
import pytest
from aioice import stun
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcicetransport import connection_kwargs

from antiphon.cli import build_parser
from antiphon.errors import ConfigError
from antiphon.server.app import create_app
from antiphon.testing.agent import doubles_agent
from antiphon.transports.ice import IceServer, browser_config
from antiphon.transports.webrtc import WebRTCCall, rtc_configuration

MAPPED = ("203.0.113.7", 40000)  # what the fake STUN server says the caller looks like


def test_parse_stun_and_turn_urls() -> None:
    assert IceServer.parse("stun:stun.example.com") == IceServer("stun:stun.example.com")
    turn = IceServer.parse("turn:al%40ice:s3cr%3At@turn.example.com:3478?transport=tcp")
    assert turn == IceServer("turn:turn.example.com:3478?transport=tcp", "al@ice", "s3cr:t")
    assert "s3cr" not in repr(turn)
    assert IceServer.parse("turns:u:p@[2001:db8::1]:5349").url == "turns:[2001:db8::1]:5349"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("http://stun.example.com", "an ICE server is"),
        ("turn:turn.example.com", "needs a username and a credential"),
        ("turn:user@turn.example.com", "USER:CREDENTIAL@HOST"),
        ("stun:u:p@stun.example.com", "takes no credentials"),
        ("stun:stun.example.com?transport=udp", "only turn: URLs"),
        ("turn:u:p@turn.example.com?transport=sctp", "only turn: URLs"),
        ("stun:", "the host"),
    ],
)
def test_malformed_ice_servers_are_refused_with_the_fix(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        IceServer.parse(text)


def test_the_cli_takes_repeated_ice_servers(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["serve"]).ice_server == []
    args = parser.parse_args(
        ["serve", "--ice-server", "stun:s.example.com", "--ice-server", "turn:u:p@t.example.com"]
    )
    assert args.ice_server == [
        IceServer("stun:s.example.com"),
        IceServer("turn:t.example.com", "u", "p"),
    ]
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--ice-server", "turn:t.example.com"])
    assert "needs a username and a credential" in capsys.readouterr().err


async def test_the_page_gets_the_servers_behind_the_token() -> None:
    servers = [IceServer("stun:s.example.com:3478"), IceServer("turn:t.example.com", "u", "p")]
    app = create_app(doubles_agent([], []), token="tok", ice_servers=servers)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ice") as client:
        assert (await client.get("/webrtc/config")).status_code == 401
        r = await client.get("/webrtc/config?token=tok")
    assert r.status_code == 200
    assert r.json() == {
        "iceServers": [
            {"urls": "stun:s.example.com:3478"},
            {"urls": "turn:t.example.com", "username": "u", "credential": "p"},
        ]
    }
    assert r.json() == browser_config(servers)


def test_aiortc_gets_the_servers_and_no_default_of_its_own() -> None:
    assert rtc_configuration().iceServers == []  # not aiortc's public STUN default
    config = rtc_configuration(
        [IceServer("stun:127.0.0.1:3478"), IceServer("turns:t.example.com?transport=tcp", "u", "p")]
    )
    assert config.iceServers is not None
    assert connection_kwargs(config.iceServers) == {
        "stun_server": ("127.0.0.1", 3478),
        "turn_server": ("t.example.com", 5349),
        "turn_ssl": True,
        "turn_transport": "tcp",
        "turn_username": "u",
        "turn_password": "p",
    }


class FakeStun(asyncio.DatagramProtocol):
    """Answers STUN binding requests with ``MAPPED`` as the reflexive address."""

    def __init__(self) -> None:
        self.requests = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = stun.parse_message(data)
        if request.message_method != stun.Method.BINDING:
            return
        self.requests += 1
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = MAPPED
        assert self.transport is not None
        self.transport.sendto(bytes(response), addr)


@asynccontextmanager
async def fake_stun() -> AsyncIterator[tuple[FakeStun, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(FakeStun, local_addr=("127.0.0.1", 0))
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def _offer() -> str:
    """A caller's offer (audio and the events channel), without its candidates, so the
    server's ICE agent has no one to check and sends nothing beyond the STUN query."""
    caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        caller.addTransceiver("audio", direction="sendrecv")
        caller.createDataChannel("events")
        await caller.setLocalDescription(await caller.createOffer())
        sdp = caller.localDescription.sdp
    finally:
        await caller.close()
    ours = ("a=candidate", "a=end-of-candidates")  # "more to come": ICE waits, idle
    return "".join(line for line in sdp.splitlines(True) if not line.startswith(ours))


@pytest.mark.timeout(120)
async def test_the_call_gathers_a_reflexive_candidate_from_the_stun_server() -> None:
    agent = doubles_agent([], [])
    offer = await _offer()
    async with fake_stun() as (server, port):
        with_stun = WebRTCCall(agent.new_session(), [IceServer(f"stun:127.0.0.1:{port}")])
        try:
            answer = await asyncio.wait_for(with_stun.answer(offer, "offer"), 60)
        finally:
            await with_stun.aclose()
        assert server.requests >= 1
        assert f"{MAPPED[0]} {MAPPED[1]} typ srflx" in answer.sdp

        requests = server.requests
        without = WebRTCCall(agent.new_session())
        try:
            answer = await asyncio.wait_for(without.answer(offer, "offer"), 60)
        finally:
            await without.aclose()
        assert server.requests == requests
        assert "typ srflx" not in answer.sdp and "typ host" in answer.sdp
    await agent.aclose()
