"""Twilio Media Streams: the protocol module, and calls through the server's endpoint."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from antiphon.protocols import twilio as tw
from antiphon.server.app import create_app
from antiphon.testing.agent import doubles_agent, silence, speech
from antiphon.testing.asgi import serve_app
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.testing.twilio import SimulatedTwilioCall

START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": "MZ1",
    "start": {
        "accountSid": "AC1",
        "streamSid": "MZ1",
        "callSid": "CA1",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"lang": "en"},
    },
}


def media(payload: bytes = b"\xff" * 160, chunk: int = 1) -> str:
    return json.dumps(
        {
            "event": "media",
            "streamSid": "MZ1",
            "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(chunk * 20),
                      "payload": base64.b64encode(payload).decode()},
        }
    )  # fmt: skip


def test_every_message_parses_to_its_event() -> None:
    assert tw.parse('{"event": "connected", "protocol": "Call", "version": "1.0.0"}') == (
        tw.Connected("Call", "1.0.0")
    )
    start = tw.parse(json.dumps(START))
    assert isinstance(start, tw.Start)
    assert (start.stream_sid, start.call_sid, start.sample_rate) == ("MZ1", "CA1", 8000)
    assert start.parameters == {"lang": "en"}
    m = tw.parse(media(b"\x01\x02", chunk=7))
    assert m == tw.Media(b"\x01\x02", "inbound", 7, 140)
    assert tw.parse('{"event": "mark", "streamSid": "MZ1", "mark": {"name": "t1"}}') == tw.Mark(
        "t1"
    )
    assert tw.parse('{"event": "dtmf", "dtmf": {"digit": "5"}}') == tw.Dtmf("5")
    assert tw.parse('{"event": "stop", "stop": {"callSid": "CA1"}}') == tw.Stop("CA1")
    assert tw.parse('{"event": "future"}') == tw.Unknown("future")


@pytest.mark.parametrize(
    "raw",
    ["not json", "[]", '{"no": "event"}', '{"event": "media"}',
     '{"event": "media", "media": {"payload": "@@@"}}', '{"event": "mark", "mark": 3}'],
)  # fmt: skip
def test_garbage_is_malformed(raw: str) -> None:
    assert isinstance(tw.parse(raw), tw.Malformed)


def test_encoders_match_the_documented_shapes() -> None:
    assert json.loads(tw.encode_media("MZ1", b"\x00\x01")) == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": "AAE="},
    }
    assert json.loads(tw.encode_mark("MZ1", "x")) == {
        "event": "mark",
        "streamSid": "MZ1",
        "mark": {"name": "x"},
    }
    assert json.loads(tw.encode_clear("MZ1")) == {"event": "clear", "streamSid": "MZ1"}


def test_twiml_connects_the_call_to_the_stream() -> None:
    xml = tw.twiml_connect("wss://example.com/twilio/media", {"who": 'a "b" & c'})
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Connect>')
    assert '<Stream url="wss://example.com/twilio/media">' in xml
    assert """<Parameter name="who" value='a "b" &amp; c'/>""" in xml  # escaped XML


def test_signature_is_hmac_sha1_of_url_and_sorted_params() -> None:
    url, params = "https://example.com/twilio/voice", {"To": "+1", "CallSid": "CA1", "From": "+2"}
    data = url + "CallSid" + "CA1" + "From" + "+2" + "To" + "+1"
    expected = base64.b64encode(hmac.new(b"tok", data.encode(), hashlib.sha1).digest()).decode()
    assert tw.compute_signature("tok", url, params) == expected
    assert tw.validate_signature("tok", url, params, expected)
    assert not tw.validate_signature("tok", url, {**params, "To": "+3"}, expected)
    assert not tw.validate_signature("other", url, params, expected)


def test_state_refuses_media_before_start_and_a_second_start() -> None:
    s = tw.StreamState()
    with pytest.raises(tw.ProtocolViolation, match="before start"):
        s.feed(tw.parse(media()))
    s.feed(tw.parse(json.dumps(START)))
    with pytest.raises(tw.ProtocolViolation, match="second start"):
        s.feed(tw.parse(json.dumps(START)))
    s.sent_mark("a")
    s.feed(tw.Mark("a"))
    assert s.pending_marks == []
    s.feed(tw.Stop("CA1"))
    with pytest.raises(tw.ProtocolViolation, match="after stop"):
        s.feed(tw.parse(media()))


events = st.sampled_from(
    [json.dumps(START), media(), '{"event": "mark", "mark": {"name": "m"}}',
     '{"event": "stop", "stop": {}}', '{"event": "dtmf", "dtmf": {"digit": "1"}}', "garbage"]
)  # fmt: skip


@given(st.lists(events, max_size=12))
def test_any_order_of_messages_is_accepted_or_refused_never_crashes(seq: list[str]) -> None:
    s = tw.StreamState()
    for raw in seq:
        ev = tw.parse(raw)
        try:
            s.feed(ev)
        except tw.ProtocolViolation:
            continue
        if isinstance(ev, tw.Media):
            assert s.start is not None  # media is only ever accepted after start


# ------------------------------------------------------------------ calls


@asynccontextmanager
async def phone_server(
    script: Sequence[str], replies: Sequence[str], **kwargs: Any
) -> AsyncIterator[str]:
    leaks = LeakCheck()
    app = create_app(doubles_agent(script, replies), **kwargs)
    async with serve_app(app) as host, asyncio.timeout(60):
        yield host
    await leaks.assert_clean(settle=1.0)


async def test_a_phone_call_is_answered_in_mulaw() -> None:
    reply = "Thanks for calling. How can I help?"
    async with phone_server(["hello"], [reply]) as host:
        async with SimulatedTwilioCall(f"ws://{host}/twilio/media") as call:
            await call.speak(speech(0.6, 8000))
            await call.speak(silence(0.6, 8000))
            await until(lambda: "turn-1" in call.received.marks, 20)
            assert all(len(m) == 160 for m in call.received.media)
            seconds = len(call.received.media) * 0.02
            assert seconds == pytest.approx(len(reply) * 0.06, abs=0.1)  # the whole reply
            assert call.received.played == len(call.received.media)
            await call.hang_up()
            await until(lambda: call._ws is not None and call._ws.close_code is not None, 10)
        assert call.close_code == 1000


async def test_barge_in_on_the_phone_sends_clear_and_no_old_audio_after_it() -> None:
    long_reply = "This is a long answer on the phone that goes on so you can cut it off. " * 2
    async with (
        phone_server(["tell me", "stop"], [long_reply, "Okay."]) as host,
        SimulatedTwilioCall(f"ws://{host}/twilio/media") as call,
    ):
        await call.speak(speech(0.6, 8000))
        await call.speak(silence(1.5, 8000))
        assert call.received.media  # the agent is talking
        await call.speak(speech(0.8, 8000, freq=450))
        await call.speak(silence(1.0, 8000))
        await until(lambda: "turn-2" in call.received.marks, 20)
        assert call.received.clears == 1
        # after the clear, only the new turn's audio came: "Okay." (~0.3 s)
        at = call.received.events.index("clear")
        after = call.received.events[at:].count("media")
        assert 0.1 < after * 0.02 < 0.6
        turns = [m for m in call.received.marks if m.startswith("turn-")]
        assert turns[0] == "turn-1"  # echoed by the clear


async def test_twiml_endpoint_checks_the_signature() -> None:
    async with phone_server(
        ["x"], ["y"], twilio_auth_token="tok", public_url="https://a.example"
    ) as host:
        params = {"CallSid": "CA1", "From": "+1555"}
        good = tw.compute_signature("tok", "https://a.example/twilio/voice", params)
        async with httpx.AsyncClient() as client:
            ok = await client.post(
                f"http://{host}/twilio/voice", data=params, headers={"X-Twilio-Signature": good}
            )
            bad = await client.post(
                f"http://{host}/twilio/voice", data=params, headers={"X-Twilio-Signature": "x"}
            )
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/xml")
        assert '<Stream url="wss://a.example/twilio/media">' in ok.text
        assert bad.status_code == 403


async def test_a_malformed_stream_is_closed_with_1008() -> None:
    from websockets.asyncio.client import connect

    async with phone_server(["x"], ["y"]) as host, connect(f"ws://{host}/twilio/media") as ws:
        await ws.send(media())  # media before start
        with pytest.raises(Exception):  # noqa: B017 - the connection closes
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1008
