"""The server's edge is hostile: each attack of issue 11 against the real ASGI app.

Every reproduction is a test that shows the server unharmed: the bad peer is refused
with its close code and a healthy call (or ``/healthz``) still answers. Deadlines run on
a :class:`~antiphon.aio.clock.VirtualClock` and are asserted against the configured
values, never against the wall clock.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from antiphon.aio.clock import VirtualClock
from antiphon.errors import ConfigError
from antiphon.protocols import twilio as tw
from antiphon.server.app import create_app, default_allowed_hosts
from antiphon.server.edge import (
    RedactSecrets,
    TicketBook,
    install_redaction,
    origin_ok,
    redact,
)
from antiphon.server.telephony import CarrierSecrets
from antiphon.testing.agent import doubles_agent
from antiphon.testing.asgi import serve_app
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.testing.twilio import SimulatedTwilioCall
from antiphon.transports.base import CallEnded
from antiphon.transports.limits import TIMED_OUT, ConnectionGuard, EdgeLimits, TokenBucket

FRAME = b"\x00\x00" * 320  # 20 ms of 16 kHz PCM16


@asynccontextmanager
async def edge_server(**kwargs: Any) -> AsyncIterator[tuple[str, Any]]:
    leaks = LeakCheck()
    app = create_app(doubles_agent(["hello"], ["Hi there."]), **kwargs)
    async with serve_app(app) as host, asyncio.timeout(60):
        yield host, app
    await leaks.assert_clean(settle=1.0)


async def closed(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Read until the server closes the call; its close code and reason."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(20):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


async def ready(ws: ClientConnection) -> dict[str, Any]:
    message = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["type"] == "ready"
    return dict(message)


async def answers(ws: ClientConnection) -> None:
    """A healthy call still works: ``say`` is spoken (its transcript comes back)."""
    await ws.send(json.dumps({"type": "say", "text": "still here"}))
    async with asyncio.timeout(20):
        while True:
            message = await ws.recv()
            if isinstance(message, str):
                event = json.loads(message)
                if event["type"] == "transcript" and event["role"] == "agent":
                    assert event["text"] == "still here"
                    return


async def healthy(host: str) -> None:
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://{host}/healthz")
    assert health.status_code == 200


def twilio_media(payload: bytes, sid: str = "MZ1") -> str:
    return json.dumps(
        {"event": "media", "streamSid": sid,
         "media": {"track": "inbound", "chunk": "1", "timestamp": "20",
                   "payload": base64.b64encode(payload).decode()}}
    )  # fmt: skip


def twilio_start(parameters: dict[str, str] | None = None) -> str:
    return json.dumps(
        {"event": "start", "streamSid": "MZ1",
         "start": {"streamSid": "MZ1", "callSid": "CA1", "accountSid": "AC1",
                   "tracks": ["inbound"], "customParameters": parameters or {},
                   "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                   "channels": 1}}}
    )  # fmt: skip


# ------------------------------------------------------------------ sizes


async def test_a_huge_audio_message_is_refused_and_other_calls_go_on() -> None:
    async with (
        edge_server() as (host, _app),
        connect(f"ws://{host}/ws/agent", max_size=None) as good,
        connect(f"ws://{host}/ws/agent", max_size=None) as bad,
    ):
        await ready(good)
        await ready(bad)
        await bad.send(b"\x00" * 5_300_000)
        code, reason = await closed(bad)
        assert code == 1009 and str(EdgeLimits().max_audio_bytes) in str(reason)
        await healthy(host)
        await answers(good)


async def test_a_huge_say_text_and_deep_json_are_refused() -> None:
    limits = EdgeLimits(max_say_chars=100)
    async with edge_server(limits=limits) as (host, _app):
        async with connect(f"ws://{host}/ws/agent", max_size=None) as ws:
            await ready(ws)
            await ws.send(json.dumps({"type": "say", "text": "word " * 200_000}))  # 1 MB
            code, reason = await closed(ws)
            assert code == 1009 and str(limits.max_text_bytes) in str(reason)
        async with connect(f"ws://{host}/ws/agent") as ws:
            await ready(ws)
            await ws.send(json.dumps({"type": "say", "text": "x" * 101}))
            code, reason = await closed(ws)
            assert code == 1009 and "at most 100 characters" in str(reason)
        async with connect(f"ws://{host}/ws/agent") as ws:
            await ready(ws)
            await ws.send('{"type": "say", "text": "hi", "x": ' + "[" * 50 + "]" * 50 + "}")
            code, reason = await closed(ws)
            assert code == 1008 and f"deeper than {limits.max_json_depth}" in str(reason)


async def test_a_huge_twilio_media_message_is_refused_with_1009() -> None:
    limits = EdgeLimits()
    async with edge_server(limits=limits) as (host, _app):
        async with connect(f"ws://{host}/twilio/media", max_size=None) as ws:
            await ws.send(twilio_start())
            await ws.send(twilio_media(b"\xff" * 4_000_000))  # 5.3 MB of base64
            code, _ = await closed(ws)
            assert code == 1009
        async with connect(f"ws://{host}/twilio/media") as ws:
            await ws.send(twilio_start())
            await ws.send(twilio_media(b"\xff" * 160))  # 20 ms: fine
            await ws.send(twilio_media(b"\xff" * (limits.max_twilio_media_bytes + 1)))
            code, reason = await closed(ws)
            assert code == 1009 and "media of 801 bytes" in str(reason)
        await healthy(host)


async def test_request_bodies_are_bounded_before_any_check() -> None:
    limits = EdgeLimits(max_http_body_bytes=4096)
    async with (
        edge_server(limits=limits, twilio_auth_token="tok") as (host, _app),
        httpx.AsyncClient() as client,
    ):
        big = b"a=" + b"b" * 10_000
        voice = await client.post(
            f"http://{host}/twilio/voice",
            content=big,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert voice.status_code == 413 and "4096" in voice.text
        offer = await client.post(
            f"http://{host}/webrtc/offer",
            content=b'{"sdp": "' + b"v" * 10_000 + b'", "type": "offer"}',
            headers={"content-type": "application/json"},
        )
        assert offer.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
            for _ in range(10):
                yield b"b" * 1000

        streamed = await client.post(f"http://{host}/twilio/voice", content=chunks())
        assert streamed.status_code == 413


async def test_a_body_that_never_finishes_is_answered_408() -> None:
    limits = EdgeLimits(http_body_timeout=0.3)  # small, so the test is short
    async with edge_server(limits=limits) as (host, _app):
        address, port = host.split(":")
        reader, writer = await asyncio.open_connection(address, int(port))
        try:
            writer.write(
                b"POST /twilio/voice HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 1000\r\n\r\nCallSid=CA"  # and then nothing
            )
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 20)
            assert status.startswith(b"HTTP/1.1 408")
        finally:
            writer.close()
            await writer.wait_closed()
        await healthy(host)


# ------------------------------------------------------------------ rates and budget


def test_the_token_bucket_allows_a_burst_after_a_stall_then_the_sustained_rate() -> None:
    bucket = TokenBucket(rate=3.0, capacity=5.0, now=0.0)
    now = 0.0
    for _ in range(100):  # real time: 1 s of audio a second, for 100 s
        now += 1.0
        assert bucket.take(1.0, now)
    now += 4.0  # a 4 s stall, then the queued 4 s at once
    assert all(bucket.take(0.02, now) for _ in range(200))
    assert bucket.level == pytest.approx(1.0)  # 5 s of burst held, 4 used
    assert not bucket.take(1.5, now)  # more than the burst: refused, nothing spent
    assert bucket.take(1.0, now)


class _Unread:
    """A socket the guard is never asked to read (messages are admitted to it)."""

    async def receive(self) -> bytes | str | None:
        raise AssertionError("not read")

    async def send_bytes(self, data: bytes) -> None:
        pass

    async def send_text(self, data: str) -> None:
        pass

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


@pytest.mark.virtual_time
async def test_messages_admitted_on_the_default_clock_are_timed_by_the_loop() -> None:
    loop = asyncio.get_running_loop()
    limits = EdgeLimits(idle_timeout=12.0, max_audio_speed=1.0, burst_seconds=1.0)
    guard = ConnectionGuard(
        _Unread(), limits, max_binary_bytes=32_000, max_text_bytes=100, audio_rate=16000
    )
    await asyncio.sleep(3.0)
    guard.admit(bytes(32_000))  # 1 s of audio: the whole burst
    assert guard.deadline == (loop.time() + 12.0, "idle for 12 s")
    await asyncio.sleep(0.5)  # half a second of budget back, by the loop's time
    guard.admit(bytes(16_000))
    assert guard.deadline == (loop.time() + 12.0, "idle for 12 s")
    with pytest.raises(CallEnded) as ended:
        guard.admit(bytes(640))
    assert ended.value.code == 4429


async def test_a_fast_sender_is_cut_by_its_audio_budget_and_others_are_unharmed() -> None:
    limits = EdgeLimits()
    async with (
        edge_server(limits=limits) as (host, _app),
        connect(f"ws://{host}/ws/agent") as good,
        connect(f"ws://{host}/ws/agent") as fast,
    ):
        await ready(good)
        await ready(fast)
        second = b"\x00\x00" * 16000  # 1 s of audio in one 32 kB message
        with pytest.raises(ConnectionClosed):
            for _ in range(150):  # what the attack sent every second
                await fast.send(second)
                await asyncio.sleep(0)
            await fast.recv()
        code, reason = await closed(fast)
        assert code == 4429 and f"{limits.max_audio_speed:g}× real time" in str(reason)
        await answers(good)


async def test_a_stalled_client_catching_up_is_not_cut_but_more_than_the_burst_is() -> None:
    clock = VirtualClock()  # time stands still: only the burst allowance counts
    limits = EdgeLimits(burst_seconds=5.0)
    async with (
        edge_server(limits=limits, clock=clock) as (host, _app),
        connect(f"ws://{host}/ws/agent") as ws,
    ):
        await ready(ws)
        for _ in range(240):  # 4.8 s queued during a stall, sent at once
            await ws.send(FRAME)
        await answers(ws)  # still served, in order
        for _ in range(20):  # 0.4 s more at the same instant: past the 5 s burst
            await ws.send(FRAME)
        code, reason = await closed(ws)
        assert code == 4429 and "audio faster than" in str(reason)


# ------------------------------------------------------------------ deadlines


async def guard_of(app: Any) -> ConnectionGuard:
    await until(lambda: len(app.state.guards) == 1, 10)
    return next(iter(app.state.guards))  # type: ignore[no-any-return]


async def test_a_connection_that_never_speaks_is_closed_at_the_first_message_deadline() -> None:
    clock = VirtualClock()
    limits = EdgeLimits(first_message_timeout=7.0)
    async with (
        edge_server(limits=limits, clock=clock) as (host, app),
        connect(f"ws://{host}/ws/agent") as ws,
    ):
        await ready(ws)
        guard = await guard_of(app)
        await until(lambda: clock.sleepers >= 1, 10)
        assert guard.deadline == (7.0, "no message within 7 s")
        await clock.advance(7.0)
        code, reason = await closed(ws)
        assert (code, reason) == (TIMED_OUT, "no message within 7 s")
        await until(lambda: not app.state.calls.calls, 10)


async def test_a_call_that_goes_quiet_is_closed_at_the_idle_deadline() -> None:
    clock = VirtualClock()
    limits = EdgeLimits(idle_timeout=12.0)
    async with (
        edge_server(limits=limits, clock=clock) as (host, app),
        connect(f"ws://{host}/ws/agent") as ws,
    ):
        await ready(ws)
        guard = await guard_of(app)
        await clock.advance(3.0)
        await ws.send(FRAME)  # silence is a message: it keeps the call alive
        await until(lambda: guard.messages == 1, 10)
        assert guard.deadline == (3.0 + 12.0, "idle for 12 s")
        await clock.advance(11.0)
        await ws.send(FRAME)
        await until(lambda: guard.messages == 2, 10)
        assert guard.deadline == (14.0 + 12.0, "idle for 12 s")
        await clock.advance(12.0)
        code, reason = await closed(ws)
        assert (code, reason) == (TIMED_OUT, "idle for 12 s")


async def test_the_maximum_call_duration_ends_a_busy_call() -> None:
    clock = VirtualClock()
    limits = EdgeLimits(idle_timeout=100.0, max_call_duration=30.0)
    async with (
        edge_server(limits=limits, clock=clock) as (host, app),
        connect(f"ws://{host}/ws/agent") as ws,
    ):
        await ready(ws)
        guard = await guard_of(app)
        await ws.send(FRAME)
        await until(lambda: guard.messages == 1, 10)
        assert guard.deadline == (30.0, "longer than 30 s")
        await clock.advance(30.0)
        assert await closed(ws) == (TIMED_OUT, "longer than 30 s")


async def test_a_silent_twilio_stream_is_closed_before_any_session_exists() -> None:
    clock = VirtualClock()
    limits = EdgeLimits(first_message_timeout=5.0)
    async with (
        edge_server(limits=limits, clock=clock) as (host, app),
        connect(f"ws://{host}/twilio/media") as ws,
    ):
        await guard_of(app)
        await until(lambda: clock.sleepers >= 1, 10)
        assert app.state.calls.total == 0  # no agent session for a silent socket
        await clock.advance(5.0)
        assert await closed(ws) == (TIMED_OUT, "no message within 5 s")
        assert app.state.calls.total == 0


async def test_a_webrtc_offer_that_never_connects_is_ended_at_its_deadline() -> None:
    from aiortc import RTCPeerConnection

    clock = VirtualClock()
    limits = EdgeLimits(webrtc_connect_timeout=9.0)
    pc = RTCPeerConnection()  # the browser (its ICE gathering thread predates the leak check)
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        async with edge_server(limits=limits, clock=clock) as (host, app):
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    f"http://{host}/webrtc/offer",
                    json={"sdp": pc.localDescription.sdp, "type": "offer"},
                )
            assert answer.status_code == 200
            assert len(app.state.calls.calls) == 1
            call = next(iter(app.state.calls.calls))
            await until(lambda: clock.sleepers >= 1, 10)
            await clock.advance(9.0)  # the answer is never applied: no connection
            await until(lambda: not app.state.calls.calls, 10)
            assert call.ended == (TIMED_OUT, "not connected within 9 s")
    finally:
        await pc.close()


# ------------------------------------------------------------------ who may call


async def test_the_token_guards_twilio_media_too() -> None:
    async with edge_server(token="s3cret") as (host, app):
        async with SimulatedTwilioCall(f"ws://{host}/twilio/media") as call:
            await until(lambda: call._ws is not None and call._ws.close_code is not None, 10)
            assert call._ws is not None and call._ws.close_code == 4401
        assert app.state.calls.total == 0  # refused before any session
        url = f"ws://{host}/twilio/media"
        async with SimulatedTwilioCall(url, parameters={"token": "s3cret"}) as call:
            await until(lambda: app.state.calls.total == 1, 10)
            assert call._ws is not None and call._ws.close_code is None
            await call.hang_up()
        async with httpx.AsyncClient() as client:
            refused = await client.post(f"http://{host}/twilio/voice", data={"CallSid": "CA1"})
            twiml = await client.post(
                f"http://{host}/twilio/voice?token=s3cret", data={"CallSid": "CA1"}
            )
        assert refused.status_code == 401
        assert twiml.status_code == 200
        assert '<Parameter name="token" value="s3cret"/>' in twiml.text  # for the stream


class _Form(dict[str, list[str]]):
    """A form as the official validator reads one with repeated keys (``getall``)."""

    def getall(self, name: str) -> list[str]:
        return self[name]


async def test_twilio_signatures_with_blank_values_and_a_query_are_accepted() -> None:
    async with (
        edge_server(twilio_auth_token="tok", public_url="https://a.example:443") as (host, _app),
        httpx.AsyncClient() as client,
    ):
        form = {"CallSid": ["CA1"], "CallerCity": [""], "From": ["+1555"], "x": ["2", "1"]}
        url = "https://a.example/twilio/voice?Region=us1"  # Twilio signs without the port
        signature = RequestValidator("tok").compute_signature(url, _Form(form))
        ok = await client.post(
            f"http://{host}/twilio/voice?Region=us1",
            data=form,  # blank values and a repeated key, form-encoded as Twilio does
            headers={"X-Twilio-Signature": signature},
        )
        assert ok.status_code == 200, ok.text
        assert '<Stream url="wss://a.example:443/twilio/media">' in ok.text
        assert '<Parameter name="ticket" value="' in ok.text
        forged = await client.post(
            f"http://{host}/twilio/voice?Region=us1",
            data={**form, "From": ["+1666"]},
            headers={"X-Twilio-Signature": signature},
        )
        assert forged.status_code == 403


async def test_a_json_webhook_is_signed_through_body_sha256() -> None:
    async with (
        edge_server(twilio_auth_token="tok", public_url="https://a.example") as (host, _app),
        httpx.AsyncClient() as client,
    ):
        body = json.dumps({"CallSid": "CA1", "CallerCity": ""}).encode()
        query = f"bodySHA256={tw.body_sha256(body)}"
        signature = RequestValidator("tok").compute_signature(
            f"https://a.example/twilio/voice?{query}", {}
        )
        headers = {"X-Twilio-Signature": signature, "content-type": "application/json"}
        url = f"http://{host}/twilio/voice?{query}"
        ok = await client.post(url, content=body, headers=headers)
        tampered = await client.post(url, content=body.replace(b"CA1", b"CA2"), headers=headers)
        assert (ok.status_code, tampered.status_code) == (200, 403)


async def test_a_replayed_media_stream_signature_gets_no_call() -> None:
    async with (
        edge_server(twilio_auth_token="tok", public_url="https://a.example") as (host, app),
        httpx.AsyncClient() as client,
    ):
        voice_sig = RequestValidator("tok").compute_signature(
            "https://a.example/twilio/voice", {"CallSid": "CA1"}
        )
        twiml = await client.post(
            f"http://{host}/twilio/voice",
            data={"CallSid": "CA1"},
            headers={"X-Twilio-Signature": voice_sig},
        )
        ticket = twiml.text.split('name="ticket" value="')[1].split('"')[0]
        media_sig = RequestValidator("tok").compute_signature("wss://a.example/twilio/media", {})
        headers = {"X-Twilio-Signature": media_sig}
        async with connect(f"ws://{host}/twilio/media", additional_headers=headers) as ws:
            await ws.send(twilio_start({"ticket": ticket}))
            await until(lambda: app.state.calls.total == 1, 10)
            await ws.send(json.dumps({"event": "stop", "stop": {"callSid": "CA1"}}))
            assert (await closed(ws))[0] == 1000
        # the same signed upgrade and ticket again (a replay): refused, no session
        async with connect(f"ws://{host}/twilio/media", additional_headers=headers) as ws:
            await ws.send(twilio_start({"ticket": ticket}))
            assert (await closed(ws))[0] == 4401
        async with connect(f"ws://{host}/twilio/media") as ws:  # no signature at all
            assert (await closed(ws))[0] == 4401
        assert app.state.calls.total == 1


async def test_a_twilio_stream_may_reach_another_process_than_its_webhook() -> None:
    """Behind a load balancer: the ticket of one app is taken by another with the same key."""
    other_key = CarrierSecrets(ticket_secret="another-deployment-ticket-key")
    async with (
        edge_server(twilio_auth_token="tok", public_url="https://a.example") as (webhook, _a),
        edge_server(twilio_auth_token="tok", public_url="https://a.example") as (media, app),
        edge_server(twilio_auth_token="tok", public_url="https://a.example", carriers=other_key)
        as (stranger, stranger_app),
        httpx.AsyncClient() as client,
    ):  # fmt: skip
        voice_sig = RequestValidator("tok").compute_signature(
            "https://a.example/twilio/voice", {"CallSid": "CA1"}
        )
        twiml = await client.post(
            f"http://{webhook}/twilio/voice",
            data={"CallSid": "CA1"},
            headers={"X-Twilio-Signature": voice_sig},
        )
        ticket = twiml.text.split('name="ticket" value="')[1].split('"')[0]
        media_sig = RequestValidator("tok").compute_signature("wss://a.example/twilio/media", {})
        headers = {"X-Twilio-Signature": media_sig}
        async with connect(f"ws://{stranger}/twilio/media", additional_headers=headers) as ws:
            await ws.send(twilio_start({"ticket": ticket}))  # another key: refused
            assert (await closed(ws))[0] == 4401
        async with connect(f"ws://{media}/twilio/media", additional_headers=headers) as ws:
            await ws.send(twilio_start({"ticket": ticket}))
            await until(lambda: app.state.calls.total == 1, 10)
            await ws.send(json.dumps({"event": "stop", "stop": {"callSid": "CA1"}}))
            assert (await closed(ws))[0] == 1000
        assert stranger_app.state.calls.total == 0


def test_tickets_are_single_use_and_expire() -> None:
    clock = VirtualClock()  # its time stands for the wall clock here
    book = TicketBook(b"k" * 32, ttl=60.0, capacity=3, wall=clock.now)
    first = book.issue()
    assert book.redeem(first) and not book.redeem(first)
    late = book.issue()
    clock._now = 60.0  # no sleeper: moving the time is enough
    assert not book.redeem(late)
    used = []
    for _ in range(5):
        clock._now += 1.0
        used.append(book.issue())
        assert book.redeem(used[-1])
    assert len(book) == 3  # bounded whatever the rate
    assert not any(book.redeem(t) for t in used)  # and none forgotten is taken twice


@pytest.mark.parametrize(
    ("origin", "allowed", "code"),
    [
        (None, (), None),  # not a browser
        ("http://{host}", (), None),  # the server's own page
        ("https://evil.example", (), 4403),
        ("null", (), 4403),
        ("https://app.example", ("https://app.example",), None),
        ("https://app.example:443", ("https://APP.example",), None),
    ],
)
async def test_ws_agent_checks_the_origin(
    origin: str | None, allowed: Sequence[str], code: int | None
) -> None:
    async with edge_server(allow_origins=allowed) as (host, _app):
        headers = {"Origin": origin.format(host=host)} if origin else {}
        async with connect(f"ws://{host}/ws/agent", additional_headers=headers) as ws:
            if code is None:
                await ready(ws)
            else:
                assert (await closed(ws))[0] == code


async def test_webrtc_offers_need_json_and_the_right_origin() -> None:
    async with edge_server() as (host, _app), httpx.AsyncClient() as client:
        text_plain = await client.post(
            f"http://{host}/webrtc/offer",
            content=b'{"type": "offer", "sdp": "x"}',
            headers={"content-type": "text/plain"},  # a cross-site form needs no preflight
        )
        assert text_plain.status_code == 415
        cross = await client.post(
            f"http://{host}/webrtc/offer",
            json={"type": "offer", "sdp": "x"},
            headers={"origin": "https://evil.example"},
        )
        assert cross.status_code == 403


async def test_the_host_header_is_checked_against_the_allow_list() -> None:
    hosts = default_allowed_hosts("127.0.0.1", None, ["agent.example"])
    assert hosts is not None
    async with edge_server(allowed_hosts=hosts) as (host, _app), httpx.AsyncClient() as client:
        ok = await client.get(f"http://{host}/healthz")
        named = await client.get(f"http://{host}/healthz", headers={"host": "agent.example"})
        rebound = await client.get(f"http://{host}/healthz", headers={"host": "evil.example"})
        assert (ok.status_code, named.status_code, rebound.status_code) == (200, 200, 400)
        with pytest.raises(InvalidStatus):
            async with connect(
                f"ws://{host}/ws/agent", additional_headers={"Host": "evil.example"}
            ):
                pass


async def test_metrics_can_be_guarded() -> None:
    async with (
        edge_server(token="s3cret", guard_metrics=True) as (host, _app),
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(f"http://{host}/metrics")).status_code == 401
        auth = {"authorization": "Bearer s3cret"}
        assert (await client.get(f"http://{host}/metrics", headers=auth)).status_code == 200
        assert (await client.get(f"http://{host}/healthz")).status_code == 200


def test_an_empty_token_is_an_error() -> None:
    agent = doubles_agent(["x"], ["y"])
    with pytest.raises(ConfigError, match="token is empty"):
        create_app(agent, token="")
    with pytest.raises(ConfigError, match="token is empty"):
        create_app(agent, token="  ")
    with pytest.raises(ConfigError, match="Twilio auth token is empty"):
        create_app(agent, twilio_auth_token="")


def test_serve_refuses_an_empty_token_and_prints_the_url_with_the_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from antiphon import cli
    from antiphon.server import app as app_module

    assert cli.main(["serve", "--token", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "token is empty" in err[0]
    served: dict[str, Any] = {}
    monkeypatch.setattr(app_module, "serve", lambda agent, **kw: served.update(kw))
    assert cli.main(["serve", "--token", "a b&c", "--idle-timeout", "7", "--vad", "webrtc"]) == 0
    out = capsys.readouterr().out
    assert "http://localhost:8000/?token=a%20b%26c" in out
    assert served["token"] == "a b&c" and served["limits"].idle_timeout == 7.0


def test_tokens_never_reach_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    from uvicorn.logging import AccessFormatter

    install_redaction()
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        logging.getLogger("uvicorn.error").info(
            '%s - "WebSocket %s" [accepted]', "1.2.3.4:5", "/ws/agent?token=SECRET&x=1"
        )
        logging.getLogger("uvicorn.error").info(
            '%s - "WebSocket %s" 403', "1.2.3.4:5", "/twilio/media?token=SECRET"
        )
    assert caplog.records and "SECRET" not in caplog.text
    assert "token=[redacted]&x=1" in caplog.text
    # the access log, through uvicorn's own formatter (arguments stay positional)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "GET", "/?token=SECRET", "1.1", 200), None,
    )  # fmt: skip
    assert RedactSecrets().filter(record)
    line = AccessFormatter("%(client_addr)s %(request_line)s %(status_code)s").format(record)
    assert "SECRET" not in line and "token=[redacted]" in line
    assert redact("Authorization: Bearer SECRET") == "Authorization: Bearer [redacted]"


def test_origin_rules() -> None:
    assert origin_ok(None, "h:1", ())
    assert origin_ok("http://localhost:8000", "localhost:8000", ())
    assert origin_ok("https://a.example", "a.example", ())
    assert origin_ok("https://a.example:443", "a.example", ())
    assert not origin_ok("http://localhost:8001", "localhost:8000", ())
    assert not origin_ok("https://a.example.evil", "a.example", ())
    assert origin_ok("https://x.example", "a.example", ("*",))
