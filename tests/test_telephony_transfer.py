"""Warm transfers: the TwiML sent to Twilio, and the whisper ``/twilio/whisper`` answers."""

from __future__ import annotations

import base64
from xml.etree import ElementTree

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twilio.twiml.voice_response import Dial, VoiceResponse

from antiphon.errors import ConfigError
from antiphon.protocols import twilio as tw
from antiphon.protocols import twilio_rest as rest
from antiphon.server.app import create_app
from antiphon.server.edge import redact
from antiphon.server.telephony import add_twilio_whisper_route
from antiphon.testing.agent import doubles_agent
from antiphon.testing.asgi import serve_app
from antiphon.testing.twilio_rest import FakeTwilioRest
from antiphon.transports.limits import EdgeLimits
from antiphon.transports.twilio_rest import TwilioAccount, TwilioCalls, transfer_call_tool

#: asyncio only: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

SID, TOKEN = "AC" + "1" * 32, "auth-token"
PUBLIC = "https://a.example"
SUMMARY = 'Ann <ann@x.example> asks about order 12 & a "refund"'


def _number(twiml: str) -> ElementTree.Element:
    number = ElementTree.fromstring(twiml).find("./Dial/Number")
    assert number is not None, twiml
    return number


async def test_a_warm_transfer_dials_a_number_whose_url_is_the_signed_whisper() -> None:
    fake = FakeTwilioRest(SID, TOKEN)
    account = TwilioAccount(SID, TOKEN)
    async with (
        serve_app(fake.app()) as host,
        TwilioCalls(account, base_url=f"http://{host}", public_url=PUBLIC + "/") as calls,
    ):
        call = await calls.create("+15551234567", "+15550000000", PUBLIC + "/x")
        moved = await calls.transfer(
            call.sid, "+15557654321", summary=SUMMARY, hold_message="Please hold & wait."
        )
    assert moved.sid == call.sid
    twiml = fake.requests[-1][1]["Twiml"]
    root = ElementTree.fromstring(twiml)
    assert [child.tag for child in root] == ["Say", "Dial"]
    assert root[0].text == "Please hold & wait."  # said to the caller, escaped
    number = _number(twiml)
    assert number.text == "+15557654321" and number.get("method") == "POST"
    url = number.get("url") or ""
    assert url.startswith(f"{PUBLIC}/twilio/whisper?ticket=")
    ticket = url.split("ticket=", 1)[1]
    assert rest.WhisperSeal(TOKEN).open(ticket) == SUMMARY
    assert rest.WhisperSeal("another-token").open(ticket) is None
    # the summary is not in the TwiML as text, and the access log line hides the ticket
    assert SUMMARY not in twiml and "refund" not in twiml
    assert ticket not in redact(f'"POST /twilio/whisper?ticket={ticket} HTTP/1.1" 200')


def test_the_warm_dial_is_what_the_official_library_writes() -> None:
    url = PUBLIC + "/twilio/whisper?ticket=1.a.b&x=1"
    theirs = VoiceResponse()
    dial = Dial(caller_id="+15550000000")
    dial.number("+15557654321", url=url, method="POST")
    theirs.append(dial)
    ours = rest.dial_twiml("+15557654321", caller_id="+15550000000", whisper_url=url)

    def shape(xml: str) -> list[tuple[str, dict[str, str], str | None]]:
        return [(e.tag, dict(e.attrib), e.text) for e in ElementTree.fromstring(xml).iter()]

    assert shape(ours) == shape(str(theirs))


async def test_the_whisper_says_the_summary_to_whoever_answers_on_any_process() -> None:
    fake = FakeTwilioRest(SID, TOKEN)
    # the app that answers shares only the auth token with the one that transferred
    app = create_app(doubles_agent(["x"], ["y"]), twilio_auth_token=TOKEN, public_url=PUBLIC)
    async with (
        serve_app(fake.app()) as api,
        serve_app(app) as server,
        TwilioCalls(
            TwilioAccount(SID, TOKEN), base_url=f"http://{api}", public_url=PUBLIC
        ) as calls,
    ):
        call = await calls.create("+15551234567", "+15550000000", PUBLIC + "/twilio/voice")
        await calls.transfer(call.sid, "+15557654321", summary=SUMMARY + "\x00\x07 ok")
        answer = await fake.answer_transfer(call.sid, via=f"http://{server}")
        cold = await calls.create("+15551234567", "+15550000000", PUBLIC + "/twilio/voice")
        await calls.transfer(cold.sid, "+15557654321")
        with pytest.raises(LookupError, match="not transferred to a <Number url>"):
            await fake.answer_transfer(cold.sid, via=f"http://{server}")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/xml")
    assert "&lt;ann@x.example&gt;" in answer.text and '&amp; a "refund"' in answer.text
    say = ElementTree.fromstring(answer.text).find("./Say")
    assert say is not None and say.text == SUMMARY + " ok"  # control characters dropped


async def test_the_whisper_refuses_bad_signatures_tickets_and_a_server_without_the_token() -> None:
    now = [1_000_000.0]
    app = FastAPI()
    add_twilio_whisper_route(
        app, twilio_auth_token=TOKEN, public_url=PUBLIC, limits=EdgeLimits(),
        wall=lambda: now[0],
    )  # fmt: skip
    bare = create_app(doubles_agent(["x"], ["y"]))  # no Twilio auth token
    ticket = rest.WhisperSeal(TOKEN, wall=lambda: now[0]).seal("call about billing")
    form = {"CallSid": "CA2", "ParentCallSid": "CA1"}

    def signed(query: str) -> dict[str, str]:
        url = f"{PUBLIC}/twilio/whisper?{query}"
        return {"X-Twilio-Signature": tw.compute_signature(TOKEN, url, form)}

    forged = ticket.rsplit(".", 1)[0] + "." + base64.urlsafe_b64encode(b"x" * 16).decode()
    async with (
        serve_app(app) as host,
        serve_app(bare) as bare_host,
        httpx.AsyncClient(base_url=f"http://{host}") as client,
    ):
        path = f"/twilio/whisper?ticket={ticket}"
        ok = await client.post(path, data=form, headers=signed(f"ticket={ticket}"))
        bad = await client.post(path, data=form, headers={"X-Twilio-Signature": "x"})
        unsigned = await client.post(path, data=form)
        fake = await client.post(
            f"/twilio/whisper?ticket={forged}", data=form, headers=signed(f"ticket={forged}")
        )
        now[0] += rest.WHISPER_TTL
        stale = await client.post(path, data=form, headers=signed(f"ticket={ticket}"))
        async with httpx.AsyncClient(base_url=f"http://{bare_host}") as other:
            off = await other.post(path, data=form, headers=signed(f"ticket={ticket}"))
    assert ok.status_code == 200 and "call about billing" in ok.text
    for refused, says in (
        (bad, "invalid Twilio signature"),
        (unsigned, "invalid Twilio signature"),
        (fake, "no valid whisper ticket (forged or expired)"),
        (stale, "no valid whisper ticket (forged or expired)"),
    ):
        assert (refused.status_code, refused.text) == (403, says)
    assert off.status_code == 404 and off.text.count("\n") == 0
    assert "TWILIO_AUTH_TOKEN" in off.text


async def test_a_bad_summary_is_a_one_line_config_error_and_sends_nothing() -> None:
    fake = FakeTwilioRest(SID, TOKEN)
    account = TwilioAccount(SID, TOKEN)
    async with serve_app(fake.app()) as host:
        async with TwilioCalls(account, base_url=f"http://{host}", public_url=PUBLIC) as calls:
            call = await calls.create("+15551234567", "+15550000000", PUBLIC + "/x")
            long = "word " * (rest.MAX_SUMMARY_CHARS // 4)
            with pytest.raises(ConfigError) as too_long:
                await calls.transfer(call.sid, "+15557654321", summary=long)
            with pytest.raises(ConfigError, match="the transfer summary is empty"):
                await calls.transfer(call.sid, "+15557654321", summary=" \n ")
            with pytest.raises(ConfigError, match=r"TwiML has .* characters; Twilio takes at most"):
                await calls.transfer(
                    call.sid, "+15557654321", summary="ok", hold_message="hold " * 800
                )
        async with TwilioCalls(account, base_url=f"http://{host}") as calls:
            with pytest.raises(ConfigError, match="needs the server's public URL"):
                await calls.transfer(call.sid, "+15557654321", summary="ok")
    message = str(too_long.value)
    assert "\n" not in message
    assert f"at most {rest.MAX_SUMMARY_CHARS}" in message and "shorten it" in message
    assert len(fake.requests) == 1  # only the create: no transfer went out


def test_the_longest_summary_fits_twilios_twiml_limit() -> None:
    seal = rest.WhisperSeal(TOKEN)
    widest = "\U0001f600" * rest.MAX_SUMMARY_CHARS  # 4 bytes each in UTF-8
    url = f"{PUBLIC}/twilio/whisper?ticket={seal.seal(widest)}"
    twiml = rest.dial_twiml("+15557654321", caller_id="+15550000000", whisper_url=url)
    assert len(twiml) <= rest.MAX_TWIML_CHARS
    assert seal.open(url.split("ticket=", 1)[1]) == widest


async def test_the_transfer_tool_hands_the_llms_summary_to_a_warm_transfer() -> None:
    fake = FakeTwilioRest(SID, TOKEN)
    live: list[str] = []
    async with (
        serve_app(fake.app()) as host,
        TwilioCalls(
            TwilioAccount(SID, TOKEN), base_url=f"http://{host}", public_url=PUBLIC
        ) as calls,
    ):
        tool = transfer_call_tool(calls, "+15557654321", lambda: live[0] if live else None)
        assert tool.name == "transfer_call"
        assert tool.parameters["required"] == ["summary"]
        assert "colleague" in tool.parameters["properties"]["summary"]["description"]
        none = await tool.call('{"summary": "x"}')
        live.append((await calls.create("+15551234567", "+15550000000", PUBLIC + "/x")).sid)
        said = await tool.call('{"summary": "Bob wants to cancel his plan."}')
        async with TwilioCalls(TwilioAccount(SID, TOKEN)) as private:
            with pytest.raises(ConfigError, match="public URL"):
                transfer_call_tool(private, "+15557654321", lambda: None)
        with pytest.raises(ConfigError, match=r"E\.164"):
            transfer_call_tool(calls, "555", lambda: None)
    assert none == "there is no live phone call to transfer"
    assert said.startswith("transferring")
    twiml = fake.calls[live[0]]["twiml"]
    ticket = (_number(twiml).get("url") or "").split("ticket=", 1)[1]
    assert rest.WhisperSeal(TOKEN).open(ticket) == "Bob wants to cancel his plan."
    assert ElementTree.fromstring(twiml)[0].text == "Please hold while I connect you."


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=rest.MAX_SUMMARY_CHARS))
@example("a\ufffeb\uffff \x1b[0m c")
def test_any_summary_is_refused_or_whispered_exactly_as_checked(summary: str) -> None:
    try:
        text = rest.check_summary(summary)
    except ValueError as exc:  # none is too long here: only nothing left to say
        assert "the transfer summary is empty" in str(exc)
        return
    say = ElementTree.fromstring(rest.whisper_twiml(text)).find("./Say")
    assert say is not None and (say.text or "") == text
    assert rest.WhisperSeal(TOKEN).open(rest.WhisperSeal(TOKEN).seal(summary)) == text
