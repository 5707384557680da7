"""Twilio Media Streams: the protocol module, and calls through the server's endpoint."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import wave
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from antiphon.protocols import twilio as tw
from antiphon.server.app import create_app
from antiphon.server.twilio import public_address
from antiphon.testing.agent import doubles_agent, silence, speech
from antiphon.testing.asgi import serve_app
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.testing.twilio import SimulatedTwilioCall

#: asyncio only: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

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


def test_public_address_is_on_the_public_url_else_on_the_requests_base() -> None:
    base = "http://10.0.0.7:8000"
    assert public_address("https://a.example/", base, "/twilio/media") == (
        "https://a.example/twilio/media"
    )  # one slash, with or without the public URL's own
    assert public_address("https://a.example", base, "/telnyx/voice") == (
        "https://a.example/telnyx/voice"
    )
    assert public_address(None, base, "/plivo/voice", "a=1&b=2") == (
        "http://10.0.0.7:8000/plivo/voice?a=1&b=2"
    )


def test_signature_is_hmac_sha1_of_url_and_sorted_params() -> None:
    url, params = "https://example.com/twilio/voice", {"To": "+1", "CallSid": "CA1", "From": "+2"}
    data = url + "CallSid" + "CA1" + "From" + "+2" + "To" + "+1"
    expected = base64.b64encode(hmac.new(b"tok", data.encode(), hashlib.sha1).digest()).decode()
    assert tw.compute_signature("tok", url, params) == expected
    assert tw.validate_signature("tok", url, params, expected)
    assert not tw.validate_signature("tok", url, {**params, "To": "+3"}, expected)
    assert not tw.validate_signature("other", url, params, expected)


# Requests as Twilio makes them: blank values, repeated keys, URLs with a query, with
# and without a port; the official library's RequestValidator is the witness.
_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_names = st.sampled_from(["CallSid", "From", "To", "CallerCity", "Digits", "a", "A", "b"]) | _text
_pairs = st.lists(st.tuples(_names, _text | st.just("")), max_size=8)
_hosts = st.sampled_from(["example.com", "a.example.com", "127.0.0.1", "xn--bcher-kva.example"])


@st.composite
def _urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["https", "http"]))
    port = draw(st.sampled_from(["", ":443" if scheme == "https" else ":80"]))
    path = draw(st.sampled_from(["/twilio/voice", "/twilio/media", "/", "/a/b"]))
    query = draw(st.lists(st.tuples(_names, _text), max_size=3))
    q = ("?" + urlencode(query)) if query else ""
    return f"{scheme}://{draw(_hosts)}{port}{path}{q}"


class _MultiDict:
    """A form with repeated keys, as the validator reads one (``getall``)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def __iter__(self) -> Iterator[str]:
        return iter({k: None for k, _ in self.pairs})

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def getall(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]


@settings(max_examples=3000, deadline=None)
@given(_urls(), _pairs, st.booleans(), st.sampled_from([tw.HMAC_SHA1, tw.HMAC_SHA256]))
def test_signatures_agree_with_the_official_validator(
    url: str, pairs: list[tuple[str, str]], with_port: bool, algorithm: str
) -> None:
    validator = RequestValidator("auth-token")
    form = _MultiDict(pairs)
    # Twilio signs one of the two spellings of the URL; the server sees the other, too
    without, with_ = tw.url_variants(url)  # default ports only: two spellings
    signed_url = with_ if with_port else without
    theirs = validator.compute_signature(signed_url, form, algorithm)
    assert tw.compute_signature("auth-token", signed_url, pairs, algorithm=algorithm) == theirs
    # the body arrives form-encoded; parse it as the server does
    body = urlencode(pairs).encode()
    parsed = tw.parse_form(body)
    assert parsed == pairs
    for seen_url in (url, without, with_):
        assert validator.validate(seen_url, form, theirs, algorithm)
        assert tw.validate_signature("auth-token", seen_url, parsed, theirs, algorithm=algorithm)
    forged = theirs[:-2] + ("AA" if not theirs.endswith("AA=") else "BB") + "="
    assert not validator.validate(url, form, forged, algorithm)
    assert not tw.validate_signature("auth-token", url, parsed, forged, algorithm=algorithm)
    if pairs:  # one value changed: refused by both
        name, value = pairs[0]
        changed = [(name, value + "x"), *pairs[1:]]
        ok = tw.validate_signature("auth-token", url, changed, theirs, algorithm=algorithm)
        assert ok == validator.validate(url, _MultiDict(changed), theirs, algorithm)


@settings(max_examples=500, deadline=None)
@given(_urls(), st.binary(max_size=300).map(lambda b: b.hex()), st.booleans())
def test_json_bodies_are_signed_through_body_sha256(url: str, text: str, tamper: bool) -> None:
    body = json.dumps({"data": text}).encode()
    sep = "&" if "?" in url else "?"
    signed_url = f"{url}{sep}bodySHA256={tw.body_sha256(body)}"
    validator = RequestValidator("auth-token")
    signature = validator.compute_signature(signed_url, {})
    sent = body + b" " if tamper else body
    assert tw.validate_signature("auth-token", signed_url, (), signature, body=sent) == (
        validator.validate(signed_url, sent.decode(), signature)
    )
    assert tw.validate_signature("auth-token", signed_url, (), signature, body=sent) is not tamper


@pytest.mark.parametrize(
    ("signed", "seen"),
    [("wss://a.example/twilio/media", "wss://a.example/twilio/media"),
     ("wss://a.example:443/twilio/media", "wss://a.example/twilio/media"),
     ("wss://a.example/twilio/media?t=1", "wss://a.example:443/twilio/media?t=1"),
     ("https://a.example:8443/twilio/voice", "https://a.example:8443/twilio/voice")],
)  # fmt: skip
def test_websocket_and_other_port_urls(signed: str, seen: str) -> None:
    signature = RequestValidator("tok").compute_signature(signed, {})
    assert tw.validate_signature("tok", seen, (), signature)
    assert not tw.validate_signature("tok", seen.replace("a.example", "b.example"), (), signature)


def test_blank_values_and_repeated_keys_are_signed() -> None:
    body = b"CallSid=CA1&CallerCity=&From=%2B1555&Digits=1&Digits=2"
    url = "https://a.example/twilio/voice?x=1"
    signature = RequestValidator("tok").compute_signature(
        url, _MultiDict([("CallSid", "CA1"), ("CallerCity", ""), ("From", "+1555"),
                         ("Digits", "1"), ("Digits", "2")])
    )  # fmt: skip
    assert tw.validate_signature("tok", url, tw.parse_form(body), signature)
    # what the server used to do: blank values dropped, repeated keys collapsed
    assert not tw.validate_signature("tok", url, dict(parse_qsl(body.decode())), signature)


def test_too_deep_json_is_malformed_without_parsing() -> None:
    deep = '{"event": "media", "media": ' + "[" * 100_000 + "]" * 100_000 + "}"
    event = tw.parse(deep)
    assert isinstance(event, tw.Malformed) and "deeper than 8" in event.reason


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


# ------------------------------------------------------------------ recording


def read_recording(folder: Path, kind: str) -> npt.NDArray[np.float64]:
    """The one recording of ``kind`` in ``folder``: 16 kHz stereo, (samples, 2)."""
    [path] = list(folder.glob(f"{kind}-*.wav"))
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 16000)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return pcm.astype(np.float64)


def voiced(x: npt.NDArray[np.float64], block: int = 320) -> npt.NDArray[np.bool_]:
    """Which 20 ms blocks of ``x`` (16 kHz) are loud."""
    blocks = x[: len(x) // block * block].reshape(-1, block)
    return np.asarray(np.sqrt((blocks**2).mean(axis=1)) > 1000)


async def test_a_recorded_phone_call_has_the_caller_left_and_the_agent_right(
    tmp_path: Path,
) -> None:
    reply = "Thanks for calling. How can I help?"
    async with (
        phone_server(["hello"], [reply], record_dir=tmp_path) as host,
        SimulatedTwilioCall(f"ws://{host}/twilio/media") as call,
    ):
        await call.speak(speech(0.6, 8000))
        await call.speak(silence(0.6, 8000))
        await until(lambda: "turn-1" in call.received.marks, 20)
        await call.hang_up()
        await until(lambda: call._ws is not None and call._ws.close_code is not None, 10)
    pcm = read_recording(tmp_path, "twilio")
    user, agent = voiced(pcm[:, 0]), voiced(pcm[:, 1])
    # the caller's 0.6 s on the left (the first blocks), nothing of it on the right
    assert 25 <= int(user[:40].sum()) <= 31 and not agent[:30].any()
    # the whole reply on the right, as many voiced blocks as media frames sent for it
    sent = len(call.received.media)
    assert abs(int(agent.sum()) - sent) <= 3
    first = int(np.flatnonzero(agent)[0])
    assert first >= 30  # it starts after the caller stopped (aligned in time)
    assert not user[first:].any()  # and the caller was silent meanwhile


async def test_a_phone_call_dropped_mid_reply_keeps_its_recording(tmp_path: Path) -> None:
    """The caller's socket closes while the agent talks, with no ``stop``: the file holds
    everything up to the drop and is a valid WAV."""
    long_reply = "This is a long answer on the phone that goes on and on. " * 3
    async with phone_server(["tell me"], [long_reply], record_dir=tmp_path) as host:
        async with SimulatedTwilioCall(f"ws://{host}/twilio/media") as call:
            await call.speak(speech(0.6, 8000))
            await call.speak(silence(0.6, 8000))
            await until(lambda: len(call.received.media) >= 50, 20)  # a second of reply
        # leaving without hang_up: the socket closes mid-reply
        heard = len(call.received.media)
    pcm = read_recording(tmp_path, "twilio")
    agent = voiced(pcm[:, 1])
    assert int(voiced(pcm[:, 0]).sum()) >= 25  # the caller's words
    # the agent's audio sent before the drop is there (the bridge may have sent a few
    # frames more than the caller read before it left); never the untold rest
    assert heard - 3 <= int(agent.sum()) < len(long_reply) * 0.06 / 0.02 / 2
