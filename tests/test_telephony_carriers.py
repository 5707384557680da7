"""Telnyx, Plivo, Vonage and Exotel: their dialects, signatures, and calls on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from antiphon.agent.events import DTMFReceived
from antiphon.errors import ConfigError
from antiphon.protocols import exotel, plivo, telnyx, vonage
from antiphon.protocols import media_stream as ms
from antiphon.server.app import create_app
from antiphon.server.telephony import CarrierSecrets
from antiphon.testing.agent import doubles_agent, silence, speech
from antiphon.testing.asgi import serve_app
from antiphon.testing.carriers import (
    ENCODINGS,
    RecordingAgent,
    SimulatedCarrierCall,
    dialect_of,
)
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until

#: asyncio only: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

CARRIERS = ["telnyx", "plivo", "vonage", "exotel"]
SEC = "a-signature-secret-of-32-bytes!!"
VSEC = "another-signature-secret-32-byte"

# ------------------------------------------------------------------ dialects


def test_documented_start_messages_parse() -> None:
    exotel_start = {  # developer.exotel.com/docs/agentstream/websocket-protocol
        "event": "start", "sequence_number": "1", "stream_sid": "MZ1",
        "start": {"stream_sid": "MZ1", "call_sid": "CA1", "account_sid": "AC1",
                  "from": "+919876543210", "to": "+918047491899",
                  "custom_parameters": {"key1": "value1"},
                  "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000",
                                   "bit_rate": "16"}},
    }  # fmt: skip
    start = exotel.DIALECT.parse(json.dumps(exotel_start))
    assert start == ms.Start("MZ1", "CA1", "AC1", "audio/x-raw", 8000, 1, (), {"key1": "value1"})
    exotel.DIALECT.new_state().feed(start)  # a format it accepts

    telnyx_start = {
        "event": "start", "sequence_number": "1", "stream_id": "32DE",
        "start": {"user_id": "u1", "call_control_id": "v2:T1", "client_state": "aGk=",
                  "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}},
    }  # fmt: skip
    start = telnyx.DIALECT.parse(json.dumps(telnyx_start))
    assert isinstance(start, ms.Start)
    assert (start.stream_sid, start.call_sid, start.encoding) == ("32DE", "v2:T1", "PCMU")
    telnyx.DIALECT.new_state().feed(start)

    plivo_start = {
        "event": "start", "sequenceNumber": 0, "extra_headers": "{}",
        "start": {"callId": "c1", "streamId": "s1", "accountId": "a1", "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}},
    }  # fmt: skip
    start = plivo.DIALECT.parse(json.dumps(plivo_start))
    assert isinstance(start, ms.Start)
    assert (start.stream_sid, start.call_sid, start.tracks) == ("s1", "c1", ("inbound",))
    plivo.DIALECT.new_state().feed(start)

    connected = {"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
                 "uuid": "u-1", "lang": "en"}  # fmt: skip
    start = vonage.DIALECT.parse(json.dumps(connected))
    assert isinstance(start, ms.Start)
    assert (start.encoding, start.sample_rate, start.stream_sid) == ("audio/l16", 16000, "u-1")
    assert start.parameters["lang"] == "en"
    vonage.DIALECT.new_state().feed(start)
    state = vonage.DIALECT.new_state()
    with pytest.raises(ms.ProtocolViolation):  # an 8 kHz stream where 16 kHz was asked
        state.feed(
            vonage.DIALECT.parse(json.dumps({**connected, "content-type": "audio/l16;rate=8000"}))
        )


def test_media_dtmf_marks_and_stop_parse_in_each_dialect() -> None:
    payload = base64.b64encode(b"\x01\x02").decode()
    for dialect, sid in ((telnyx.DIALECT, "stream_id"), (plivo.DIALECT, "streamId"),
                         (exotel.DIALECT, "stream_sid")):  # fmt: skip
        media = {"event": "media", sid: "s", "media": {"chunk": "2", "timestamp": "40",
                                                     "payload": payload}}  # fmt: skip
        assert dialect.parse(json.dumps(media)) == ms.Media(b"\x01\x02", "", 2, 40)
        dtmf = {"event": "dtmf", sid: "s", "dtmf": {"digit": "7", "duration": "100"}}
        assert dialect.parse(json.dumps(dtmf)) == ms.Dtmf("7")
        assert isinstance(dialect.parse(json.dumps({"event": "stop", sid: "s"})), ms.Stop)
        assert isinstance(dialect.parse(b"\x00\x01"), ms.Malformed)  # JSON text only
    assert telnyx.DIALECT.parse('{"event": "mark", "mark": {"name": "p0.2"}}') == ms.Mark("p0.2")
    played = {"event": "playedStream", "streamId": "s", "name": "p0.2"}
    assert plivo.DIALECT.parse(json.dumps(played)) == ms.Mark("p0.2")
    assert isinstance(plivo.DIALECT.parse('{"event": "clearedAudio"}'), ms.Unknown)

    v = vonage.DIALECT
    assert v.parse(b"\x00\x01" * 320) == ms.Media(b"\x00\x01" * 320, "inbound", 0, 0)
    assert isinstance(v.parse(b"\x00"), ms.Malformed)  # half a sample
    assert v.parse('{"event": "websocket:dtmf", "digit": "#", "duration": 260}') == ms.Dtmf("#")
    notify = {"event": "websocket:notify", "payload": {"name": "turn-1"}}
    assert v.parse(json.dumps(notify)) == ms.Mark("turn-1")
    assert isinstance(v.parse('{"event": "websocket:cleared"}'), ms.Unknown)
    assert isinstance(v.parse("{"), ms.Malformed)


def test_encoders_speak_each_carriers_words() -> None:
    assert json.loads(telnyx.DIALECT.encode_media("s", b"\x00\x01")) == {
        "event": "media", "media": {"payload": "AAE="}}  # fmt: skip
    assert json.loads(telnyx.DIALECT.encode_clear("s")) == {"event": "clear"}
    assert json.loads(telnyx.DIALECT.encode_mark("s", "m")) == {"event": "mark",
                                                                "mark": {"name": "m"}}  # fmt: skip
    assert json.loads(plivo.DIALECT.encode_media("s", b"\x00\x01")) == {
        "event": "playAudio", "streamId": "s",
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": "AAE="},
    }  # fmt: skip
    assert json.loads(plivo.DIALECT.encode_mark("s", "m")) == {
        "event": "checkpoint", "streamId": "s", "name": "m"}  # fmt: skip
    assert json.loads(plivo.DIALECT.encode_clear("s")) == {"event": "clearAudio", "streamId": "s"}
    assert json.loads(exotel.DIALECT.encode_clear("s")) == {"event": "clear", "stream_sid": "s"}
    assert exotel.DIALECT.frame_bytes == 1600  # 100 ms of 16-bit 8 kHz: 5 x 320 bytes
    assert vonage.DIALECT.encode_media("u", b"\x00\x01") == b"\x00\x01"  # binary
    assert vonage.DIALECT.frame_bytes == 640  # 20 ms at 16 kHz
    assert json.loads(vonage.DIALECT.encode_clear("u")) == {"action": "clear"}
    assert json.loads(vonage.DIALECT.encode_mark("u", "m")) == {
        "action": "notify", "payload": {"name": "m"}}  # fmt: skip


def test_answer_documents() -> None:
    texml = telnyx.texml_connect("wss://a.example/telnyx/media?ticket=t&x=1")
    assert '<Stream url="wss://a.example/telnyx/media?ticket=t&amp;x=1"' in texml
    assert 'bidirectionalMode="rtp"' in texml
    xml = plivo.stream_xml("wss://a.example/plivo/media?ticket=t&x=1")
    assert 'bidirectional="true" keepCallAlive="true"' in xml
    assert ">wss://a.example/plivo/media?ticket=t&amp;x=1</Stream>" in xml
    ncco = vonage.ncco_connect("wss://a.example/vonage/media", {"lang": "en"})
    assert ncco == [{"action": "connect", "randomFromNumber": True, "endpoint": [{
        "type": "websocket", "uri": "wss://a.example/vonage/media",
        "content-type": "audio/l16;rate=16000", "headers": {"lang": "en"}}]}]  # fmt: skip
    called = vonage.ncco_connect("wss://a.example/vonage/media", number="+14155550100")
    assert called[0]["from"] == "14155550100" and "randomFromNumber" not in called[0]
    assert "from" not in vonage.ncco_connect("wss://x", number="Vonage")[0]


def _vocabulary(carrier: str) -> list[str | bytes]:
    """Messages the carrier sends, and garbage, for any-order tests."""
    if carrier == "vonage":
        return [
            json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=16000"}),
            b"\x00\x01" * 320, b"\x00", '{"event": "websocket:dtmf", "digit": "1"}',
            '{"event": "websocket:notify", "payload": {"name": "p0.2"}}',
            '{"event": "websocket:cleared"}', '{"event": 3}', "[", "{}",
        ]  # fmt: skip
    d = dialect_of(carrier)
    assert isinstance(d, ms.JsonDialect)
    k = d.spelling
    fmt = {"encoding": ENCODINGS[carrier], k.sample_rate: d.sample_rate}
    mark = {"name": "p0.2"} if k.flat_mark else {"mark": {"name": "p0.2"}}
    return [
        json.dumps({"event": "connected"}),
        json.dumps({"event": "start", k.stream: "s", "start": {k.media_format: fmt}}),
        json.dumps({"event": "media", "media": {"payload": "AAE="}}),
        json.dumps({"event": "media", "media": {"payload": "@"}}),
        json.dumps({"event": "dtmf", "dtmf": {"digit": "1"}}),
        json.dumps({"event": k.played, **mark}),
        json.dumps({"event": "stop"}), json.dumps({"event": "start"}), b"\x00", "{", "[]",
    ]  # fmt: skip


@pytest.mark.parametrize("carrier", CARRIERS)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_order_of_messages_is_accepted_or_refused_never_crashes(
    carrier: str, data: st.DataObject
) -> None:
    dialect = dialect_of(carrier)
    vocabulary = _vocabulary(carrier)
    state = dialect.new_state()
    for message in data.draw(st.lists(st.sampled_from(vocabulary), max_size=12)):
        event = dialect.parse(message)
        if isinstance(event, ms.Malformed):
            continue  # the bridge closes with 1008
        try:
            state.feed(event)
        except ms.ProtocolViolation:
            return
        if isinstance(event, ms.Media | ms.Mark | ms.Dtmf):
            assert state.start is not None  # never before the start


# ------------------------------------------------------------------ signatures


def _telnyx_keys() -> tuple[Ed25519PrivateKey, str]:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, base64.b64encode(raw).decode()


def _telnyx_sign(private: Ed25519PrivateKey, body: bytes, ts: int) -> dict[str, str]:
    signature = base64.b64encode(private.sign(f"{ts}|".encode() + body)).decode()
    return {"telnyx-signature-ed25519": signature, "telnyx-timestamp": str(ts)}


def test_telnyx_ed25519_signature() -> None:
    private, public = _telnyx_keys()
    body, now = b'{"data": {"event_type": "call.initiated"}}', 1_700_000_000
    h = _telnyx_sign(private, body, now)
    sig, ts = h["telnyx-signature-ed25519"], h["telnyx-timestamp"]
    assert telnyx.verify_signature(public, body, sig, ts, now=now + 10)
    assert not telnyx.verify_signature(public, body + b" ", sig, ts, now=now)  # body
    assert not telnyx.verify_signature(public, body, sig, str(now + 1), now=now)  # timestamp
    assert not telnyx.verify_signature(public, body, sig, ts, now=now + 301)  # a replay
    assert not telnyx.verify_signature(_telnyx_keys()[1], body, sig, ts, now=now)  # other key
    assert not telnyx.verify_signature(public, body, "@@", ts, now=now)
    assert not telnyx.verify_signature(public, body, None, ts, now=now)


def _plivo_reference(token: str, base: str, nonce: str) -> str:
    digest = hmac.new(token.encode(), f"{base}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def test_plivo_v3_signature_follows_the_reference_construction() -> None:
    url = "https://a.example/plivo/voice?b=2&a=1"
    form = [("From", "+1555"), ("CallUUID", "c1"), ("To", "")]
    # query sorted as k=v&..., then "." and the POST fields sorted as namevalue
    base = "https://a.example/plivo/voice?a=1&b=2.CallUUIDc1From+1555To"
    expected = _plivo_reference("tok", base, "n1")
    assert plivo.compute_signature("tok", "POST", url, "n1", form) == expected
    assert plivo.validate_signature("tok", "POST", url, "n1", f"other,{expected}", form)
    assert not plivo.validate_signature("tok", "POST", url, "n2", expected, form)
    assert not plivo.validate_signature("tok", "POST", url, "n1", expected, form[:2])
    assert not plivo.validate_signature("bad", "POST", url, "n1", expected, form)
    # no query: "?" then the fields; GET: the sorted query only
    plain = "https://a.example/plivo/voice"
    assert plivo.compute_signature("tok", "POST", plain, "n", form[:1]) == _plivo_reference(
        "tok", plain + "?From+1555", "n"
    )
    assert plivo.compute_signature("tok", "GET", url, "n") == _plivo_reference(
        "tok", "https://a.example/plivo/voice?a=1&b=2", "n"
    )


def test_vonage_jwt_with_pyjwt_as_witness() -> None:
    now, body = time.time(), b'{"uuid": "u-1"}'
    digest = hashlib.sha256(body).hexdigest()
    good = jwt.encode({"iat": int(now), "jti": "j", "payload_hash": digest}, SEC, "HS256")
    assert vonage.verify_jwt(SEC, f"Bearer {good}", body, now=now)
    assert not vonage.verify_jwt("other", f"Bearer {good}", body, now=now)
    assert not vonage.verify_jwt(SEC, f"Bearer {good}", body + b" ", now=now)
    no_body = jwt.encode({"iat": int(now)}, SEC, "HS256")
    assert vonage.verify_jwt(SEC, f"Bearer {no_body}", b"", now=now)  # a GET answer_url
    assert not vonage.verify_jwt(SEC, f"Bearer {no_body}", body, now=now)  # body unsigned
    old = jwt.encode({"iat": int(now) - 900, "exp": int(now) - 600}, SEC, "HS256")
    assert not vonage.verify_jwt(SEC, f"Bearer {old}", b"", now=now)
    none_alg = jwt.encode({"iat": int(now)}, "", algorithm="none")
    assert not vonage.verify_jwt(SEC, f"Bearer {none_alg}", b"", now=now)
    assert not vonage.verify_jwt(SEC, None, b"", now=now)


def test_exotel_basic_auth() -> None:
    header = "Basic " + base64.b64encode(b"key:token").decode()
    assert exotel.basic_auth_ok("key:token", header)
    assert not exotel.basic_auth_ok("key:other", header)
    assert not exotel.basic_auth_ok("key:token", "Bearer x")
    assert not exotel.basic_auth_ok("key:token", "Basic @@")


def test_carrier_secrets_are_checked() -> None:
    agent = doubles_agent(["x"], ["y"])
    with pytest.raises(ConfigError, match="empty"):
        create_app(agent, carriers=CarrierSecrets(plivo_auth_token=" "))
    with pytest.raises(ConfigError, match="KEY:TOKEN"):
        create_app(agent, carriers=CarrierSecrets(exotel_credentials="nocolon"))


# ------------------------------------------------------------------ calls on loopback


@asynccontextmanager
async def phone_server(
    script: Sequence[str], replies: Sequence[str], **kwargs: Any
) -> AsyncIterator[tuple[str, RecordingAgent]]:
    leaks = LeakCheck()
    agent = RecordingAgent(doubles_agent(script, replies))
    app = create_app(agent, **kwargs)
    async with serve_app(app) as host, asyncio.timeout(60):
        yield host, agent
    await leaks.assert_clean(settle=1.0)


def _seconds(call: SimulatedCarrierCall) -> float:
    width = 1 if call.dialect.codec == "mulaw" else 2
    return sum(len(a) for a in call.heard.audio) / (call.dialect.sample_rate * width)


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_a_call_is_answered_in_the_carriers_format_and_touch_tones_reach_the_agent(
    carrier: str,
) -> None:
    reply = "Thanks for calling. How can I help?"
    async with phone_server(["hello"], [reply]) as (host, agent):
        async with SimulatedCarrierCall(carrier, f"ws://{host}/{carrier}/media") as call:
            await call.press("5")
            await call.speak(speech(0.6, 8000))
            await call.speak(silence(0.6, 8000))
            await until(lambda: "turn-1" in call.heard.marks, 20)
            assert {len(a) for a in call.heard.audio} == {call.dialect.frame_bytes}
            assert _seconds(call) == pytest.approx(len(reply) * 0.06, abs=0.15)  # all of it
            assert call.heard.played == len(call.heard.audio)
            await call.press("#")
            await until(lambda: sum(isinstance(e, DTMFReceived) for e in agent.events) == 2)
            digits = [e.digit for e in agent.events if isinstance(e, DTMFReceived)]
            assert digits == ["5", "#"]
            await call.hang_up()
            await until(lambda: call.ws.close_code is not None, 10)
        assert call.close_code == 1000


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_barge_in_clears_the_carriers_buffer(carrier: str) -> None:
    long_reply = "This is a long answer on the phone that goes on so you can cut it off. " * 2
    async with (
        phone_server(["tell me", "stop"], [long_reply, "Okay."]) as (host, _),
        SimulatedCarrierCall(carrier, f"ws://{host}/{carrier}/media") as call,
    ):
        await call.speak(speech(0.6, 8000))
        await call.speak(silence(1.5, 8000))
        assert call.heard.audio  # the agent is talking
        await call.speak(speech(0.8, 8000, freq=450))
        await call.speak(silence(1.0, 8000))
        await until(lambda: "turn-2" in call.heard.marks, 20)
        assert call.heard.clears == 1
        at = call.heard.events.index("clear")  # after it, only "Okay." (~0.3 s)
        after = call.heard.events[at:].count("media") * call.dialect.frame_seconds
        assert 0.1 < after < 0.7


async def test_a_signed_webhook_connects_the_stream_with_a_single_use_ticket() -> None:
    private, public = _telnyx_keys()
    secrets = CarrierSecrets(telnyx_public_key=public, plivo_auth_token="ptok",
                             vonage_signature_secret=VSEC)  # fmt: skip
    async with (
        phone_server(["hello"], ["Hi."], carriers=secrets, public_url="https://a.example") as (
            host,
            _,
        ),
        httpx.AsyncClient(base_url=f"http://{host}") as client,
    ):
        body = b'{"data": {"event_type": "call.initiated"}}'
        ok = await client.post("/telnyx/voice", content=body,
                               headers=_telnyx_sign(private, body, int(time.time())))  # fmt: skip
        assert ok.status_code == 200, ok.text
        assert "wss://a.example/telnyx/media?ticket=" in ok.text
        ticket = ok.text.split("ticket=")[1].split('"')[0]
        url = f"ws://{host}/telnyx/media?ticket={ticket}"
        async with SimulatedCarrierCall("telnyx", url) as call:
            await call.speak(speech(0.6, 8000))
            await call.speak(silence(0.6, 8000))
            await until(lambda: "turn-1" in call.heard.marks, 20)
        with pytest.raises(ConnectionClosed) as refused:  # used once: not again
            async with SimulatedCarrierCall("telnyx", url) as again:
                await again.ws.recv()
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 4401

        form = {"CallUUID": "c1", "From": "+1555"}
        headers = {"X-Plivo-Signature-V3-Nonce": "n1", "X-Plivo-Signature-V3":
                   plivo.compute_signature("ptok", "POST", "https://a.example/plivo/voice",
                                           "n1", form.items())}  # fmt: skip
        ok = await client.post("/plivo/voice", data=form, headers=headers)
        assert ok.status_code == 200 and "wss://a.example/plivo/media?ticket=" in ok.text

        token = jwt.encode({"iat": int(time.time())}, VSEC, "HS256")
        ok = await client.get("/vonage/voice", headers={"Authorization": f"Bearer {token}"},
                              params={"to": "14155550100", "from": "447700900000"})  # fmt: skip
        uri = ok.json()[0]["endpoint"][0]["uri"]
        assert ok.status_code == 200 and uri.startswith("wss://a.example/vonage/media?ticket=")
        assert ok.json()[0]["from"] == "14155550100"  # the number that was called


@pytest.mark.parametrize("carrier", ["telnyx", "plivo", "vonage"])
async def test_a_bad_signature_is_refused_with_one_line(carrier: str) -> None:
    secrets = CarrierSecrets(telnyx_public_key=_telnyx_keys()[1], plivo_auth_token="ptok",
                             vonage_signature_secret=VSEC)  # fmt: skip
    async with (
        phone_server(["x"], ["y"], carriers=secrets) as (host, _),
        httpx.AsyncClient(base_url=f"http://{host}") as client,
    ):
        forged = {"telnyx-signature-ed25519": base64.b64encode(b"x" * 64).decode(),
                  "telnyx-timestamp": str(int(time.time())), "X-Plivo-Signature-V3": "x",
                  "X-Plivo-Signature-V3-Nonce": "n", "Authorization": "Bearer a.b.c"}  # fmt: skip
        bad = await client.post(f"/{carrier}/voice", data={"CallUUID": "c"}, headers=forged)
        assert bad.status_code == 403
        assert bad.text == f"invalid {carrier.capitalize()} signature"
        async with connect(f"ws://{host}/{carrier}/media") as ws:  # no ticket
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 4401 and (ws.close_reason or "").startswith("no valid ticket")


async def test_exotel_streams_need_the_applets_credentials() -> None:
    secrets = CarrierSecrets(exotel_credentials="key:token")
    good = {"Authorization": "Basic " + base64.b64encode(b"key:token").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"key:guess").decode()}
    async with phone_server(["hello"], ["Hi."], carriers=secrets) as (host, _):
        async with SimulatedCarrierCall("exotel", f"ws://{host}/exotel/media", headers=good) as c:
            await c.speak(speech(0.6, 8000))
            await c.speak(silence(0.6, 8000))
            await until(lambda: "turn-1" in c.heard.marks, 20)
        async with connect(f"ws://{host}/exotel/media", additional_headers=bad) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert (ws.close_code, ws.close_reason) == (4401, "invalid Exotel credentials")


async def test_a_signed_form_webhook_is_parsed_once_and_its_fields_reach_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from antiphon.protocols import twilio as tw

    parsed: list[bytes] = []
    parse_form = tw.parse_form

    def counting(body: bytes, **kw: Any) -> list[tuple[str, str]]:
        parsed.append(body)
        return parse_form(body, **kw)

    monkeypatch.setattr(tw, "parse_form", counting)
    async with (
        phone_server(["x"], ["y"], carriers=CarrierSecrets(vonage_signature_secret=VSEC),
                     public_url="https://a.example") as (host, _),
        httpx.AsyncClient(base_url=f"http://{host}") as client,
    ):  # fmt: skip
        body = b"to=14155550100&from=447700900000"
        claims = {"iat": int(time.time()), "payload_hash": hashlib.sha256(body).hexdigest()}
        token = jwt.encode(claims, VSEC, "HS256")
        ok = await client.post("/vonage/voice", content=body, headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert ok.status_code == 200, ok.text
        assert ok.json()[0]["from"] == "14155550100"  # a field of the signed form
        assert parsed == [body]  # once: for the signature check and the answer alike
        tampered = body.replace(b"14155550100", b"19005550100")  # the signature is the body's
        bad = await client.post("/vonage/voice", content=tampered, headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert bad.status_code == 403
