"""Outbound calls and transfers through Twilio's REST API, against a loopback fake."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from twilio.rest import Client

from antiphon import cli
from antiphon.agent.events import MachineDetected
from antiphon.errors import ConfigError, HttpAuthError, HttpRequestError
from antiphon.protocols import twilio as tw
from antiphon.protocols import twilio_rest as rest
from antiphon.server.app import create_app
from antiphon.testing.agent import doubles_agent, silence
from antiphon.testing.asgi import serve_app
from antiphon.testing.carriers import RecordingAgent
from antiphon.testing.twilio import SimulatedTwilioCall
from antiphon.testing.twilio_rest import FakeTwilioRest
from antiphon.transports.twilio_rest import TwilioAccount, TwilioCalls

#: asyncio only: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

SID, TOKEN = "AC" + "1" * 32, "auth-token"


@pytest.fixture
def twilio_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    for name in ("TWILIO_FROM_NUMBER", "ANTIPHON_PUBLIC_URL", "ANTIPHON_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("antiphon: error: "), err
    return err


def test_missing_credentials_are_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", " ")
    argv = ["call", "+15551234567", "--from", "+15550000000", "--public-url", "https://a.example"]
    assert cli.main(argv) == 2
    assert "set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN" in _one_line_error(capsys)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["call", "555-1234"], "not a phone number in E.164 form"),
        (["call", "+15551234567", "--public-url", "https://a.example"], "give the caller ID"),
        (["call", "+15551234567", "--from", "+15550000000"], "give --public-url"),
    ],
)
@pytest.mark.usefixtures("twilio_env")
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert says in _one_line_error(capsys)


@pytest.mark.usefixtures("twilio_env")
@pytest.mark.realtime  # a refused connect is real I/O
def test_an_unreachable_api_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["call", "+15551234567", "--from", "+15550000000", "--public-url",
            "https://a.example", "--api-base", "http://127.0.0.1:1", "--timeout", "5"]  # fmt: skip
    assert cli.main(argv) == 1
    assert "cannot reach" in _one_line_error(capsys)


@pytest.mark.usefixtures("twilio_env")
async def test_call_places_an_outbound_call_to_the_servers_twiml(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = FakeTwilioRest(SID, TOKEN)
    async with serve_app(fake.app()) as host:
        args = cli.build_parser().parse_args(
            ["call", "+15551234567", "--from", "+15550000000", "--public-url",
             "https://a.example/", "--token", "t/k", "--machine-detection", "Enable",
             "--api-base", f"http://{host}"]
        )  # fmt: skip
        assert await cli._call(args) == 0
    sid = capsys.readouterr().out.strip()
    assert sid in fake.calls and sid.startswith("CA")
    path, form = fake.requests[0]
    assert path == f"/2010-04-01/Accounts/{SID}/Calls.json"
    assert form["To"] == "+15551234567" and form["From"] == "+15550000000"
    assert form["Url"] == "https://a.example/twilio/voice?token=t%2Fk"
    assert (form["MachineDetection"], form["AsyncAmd"]) == ("Enable", "true")
    assert form["AsyncAmdStatusCallback"] == "https://a.example/twilio/amd"


async def test_refusals_are_typed_with_twilios_code() -> None:
    fake = FakeTwilioRest(SID, TOKEN)
    async with serve_app(fake.app()) as host:
        wrong = TwilioAccount(SID, "guess")
        async with TwilioCalls(wrong, base_url=f"http://{host}") as calls:
            with pytest.raises(HttpAuthError, match=r"Authenticate \[Twilio error 20003\]"):
                await calls.create("+15551234567", "+15550000000", "https://a.example/x")
        async with TwilioCalls(TwilioAccount(SID, TOKEN), base_url=f"http://{host}") as calls:
            with pytest.raises(ConfigError, match=r"E\.164"):
                await calls.create("5551234567", "+15550000000", "https://a.example/x")
            with pytest.raises(HttpRequestError, match="20404"):
                await calls.transfer("CA" + "0" * 32, "+15557654321")
    assert not fake.calls  # nothing was created
    assert "guess" not in repr(wrong)


async def test_transfer_replaces_the_live_calls_twiml_with_a_dial() -> None:
    fake = FakeTwilioRest(SID, TOKEN)
    async with (
        serve_app(fake.app()) as host,
        TwilioCalls(TwilioAccount(SID, TOKEN), base_url=f"http://{host}") as calls,
    ):
        call = await calls.create("+15551234567", "+15550000000", "https://a.example/x")
        moved = await calls.transfer(call.sid, "+15557654321", caller_id="+15550000000")
    assert moved.sid == call.sid and moved.status == "in-progress"
    path, form = fake.requests[-1]
    assert path == rest.calls_path(SID, call.sid)
    assert form["Twiml"] == (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Response><Dial callerId="+15550000000">+15557654321</Dial></Response>'
    )


@pytest.mark.realtime  # the official client is synchronous: it runs on a thread
async def test_the_official_client_is_the_fakes_witness() -> None:
    fake = FakeTwilioRest(SID, TOKEN)
    async with serve_app(fake.app()) as host:
        client = Client(SID, TOKEN)
        client.api.base_url = f"http://{host}"

        def place() -> tuple[str, str]:
            call = client.calls.create(
                to="+15551234567", from_="+15550000000", url="https://a.example/twilio/voice"
            )
            updated = client.calls(call.sid).update(twiml=rest.dial_twiml("+15557654321"))
            return str(call.sid), str(updated.status)

        sid, status = await asyncio.to_thread(place)
    assert sid in fake.calls and status == "in-progress"
    # what we send is what the official client sends
    ours = rest.create_form("+15551234567", "+15550000000", "https://a.example/twilio/voice")
    theirs = fake.requests[0][1]
    assert {k: v for k, v in ours if k != "Method"} == theirs


# ------------------------------------------------------------------ answering machines


async def test_answering_machine_detection_reaches_the_live_call() -> None:
    agent = RecordingAgent(doubles_agent(["x"], ["y"]))
    async with (
        serve_app(create_app(agent)) as host,
        SimulatedTwilioCall(f"ws://{host}/twilio/media") as call,
        httpx.AsyncClient(base_url=f"http://{host}") as client,
    ):
        await call.speak(silence(0.1, 8000))  # the call runs
        form = {"CallSid": call.call_sid, "AnsweredBy": "machine_end_beep"}
        assert (await client.post("/twilio/amd", data=form)).status_code == 204
        detected = [e for e in agent.events if isinstance(e, MachineDetected)]
        assert [(e.answered_by, e.machine) for e in detected] == [("machine_end_beep", True)]
        gone = await client.post("/twilio/amd", data={**form, "CallSid": "CA0"})
        assert gone.status_code == 404
        odd = await client.post("/twilio/amd", data={**form, "AnsweredBy": "robot"})
        assert odd.status_code == 400 and "unknown AnsweredBy" in odd.text


async def test_answering_machine_callbacks_are_signed() -> None:
    app = create_app(
        doubles_agent(["x"], ["y"]), twilio_auth_token="tok", public_url="https://a.example"
    )
    async with serve_app(app) as host, httpx.AsyncClient(base_url=f"http://{host}") as client:
        form = {"CallSid": "CA1", "AnsweredBy": "human"}
        bad = await client.post("/twilio/amd", data=form, headers={"X-Twilio-Signature": "x"})
        assert (bad.status_code, bad.text) == (403, "invalid Twilio signature")
        good = tw.compute_signature("tok", "https://a.example/twilio/amd", form)
        ok = await client.post("/twilio/amd", data=form, headers={"X-Twilio-Signature": good})
        assert ok.status_code == 404  # signed, but no such call here
