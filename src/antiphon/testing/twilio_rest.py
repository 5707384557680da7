"""``FakeTwilioRest``: Twilio's Calls REST API on loopback, for outbound calls and transfers.

An ASGI app (serve it with :func:`antiphon.testing.asgi.serve_app`) answering as
Twilio does (https://www.twilio.com/docs/voice/api/call-resource): ``POST
/2010-04-01/Accounts/{sid}/Calls.json`` creates a call (201 and the call resource),
``POST .../Calls/{CallSid}.json`` updates one (200). HTTP Basic with the account SID
and auth token, else 401 with error 20003; a ``To`` or ``From`` not in E.164 form is
400 with error 21211 (21212 for ``From``), as Twilio's error bodies say; a missing
``Url``/``Twiml`` is 400 with 21205; an unknown call 404 with 20404. Every request's
form is kept in :attr:`FakeTwilioRest.requests`.

A transfer's ``<Number url=...>`` (a warm transfer) is what Twilio fetches when the
human answers: :meth:`FakeTwilioRest.answer_transfer` does that fetch as Twilio would,
signed with the auth token (``X-Twilio-Signature`` over the public URL), and returns the
whisper TwiML the server answered.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.etree import ElementTree

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from antiphon.protocols.twilio import compute_signature
from antiphon.protocols.twilio_rest import is_e164

__all__ = ["FakeTwilioRest"]


def _error(status: int, code: int, message: str) -> JSONResponse:
    body = {"code": code, "message": message, "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}"}  # fmt: skip
    return JSONResponse(body, status_code=status)


class FakeTwilioRest:
    """``app = FakeTwilioRest("AC1", "tok").app()``; then look at ``requests``/``calls``."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.requests: list[tuple[str, dict[str, str]]] = []
        """(path, form) of every request that passed authentication."""
        self.calls: dict[str, dict[str, Any]] = {}

    def _authorized(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Basic {expected}".encode())

    def _resource(self, call: dict[str, Any]) -> dict[str, Any]:
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call['sid']}.json"
        return {**call, "account_sid": self.account_sid, "api_version": "2010-04-01", "uri": uri}

    def app(self) -> FastAPI:
        app = FastAPI()
        prefix = "/2010-04-01/Accounts/{account}/Calls"

        @app.post(prefix + ".json")
        async def create(account: str, request: Request) -> JSONResponse:
            if not self._authorized(request) or account != self.account_sid:
                return _error(401, 20003, "Authenticate")
            form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            self.requests.append((request.url.path, form))
            to, from_ = form.get("To", ""), form.get("From", "")
            if not is_e164(to):
                return _error(400, 21211, f"Invalid 'To' Phone Number: {to}")
            if not is_e164(from_):
                return _error(400, 21212, f"Invalid 'From' Phone Number: {from_}")
            if not form.get("Url") and not form.get("Twiml"):
                return _error(400, 21205, "Url parameter is required.")
            sid = "CA" + secrets.token_hex(16)
            call = {"sid": sid, "to": to, "from": from_, "status": "queued",
                    "direction": "outbound-api", "answered_by": None}  # fmt: skip
            self.calls[sid] = call
            return JSONResponse(self._resource(call), status_code=201)

        @app.post(prefix + "/{call_sid}.json")
        async def update(account: str, call_sid: str, request: Request) -> JSONResponse:
            if not self._authorized(request) or account != self.account_sid:
                return _error(401, 20003, "Authenticate")
            form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            self.requests.append((request.url.path, form))
            call = self.calls.get(call_sid)
            if call is None:
                path = request.url.path
                return _error(404, 20404, f"The requested resource {path} was not found")
            call["status"] = "in-progress"
            if form.get("Twiml"):
                call["twiml"] = form["Twiml"]
            return JSONResponse(self._resource(call))

        return app

    async def answer_transfer(self, call_sid: str, via: str) -> httpx.Response:
        """The human answers the transfer of ``call_sid``: fetch its ``<Number url>``
        as Twilio does (POST, signed over that URL) from the server at ``via``
        (``http://host:port``, the loopback address behind the public URL).

        Raises:
            LookupError: the call's last TwiML dials no ``<Number url>``.
        """
        twiml = self.calls.get(call_sid, {}).get("twiml", "")
        number = ElementTree.fromstring(twiml).find("./Dial/Number") if twiml else None
        url = number.get("url") if number is not None else None
        if number is None or not url:
            raise LookupError(f"call {call_sid} was not transferred to a <Number url>")
        form = {
            "AccountSid": self.account_sid,
            "CallSid": "CA" + secrets.token_hex(16),
            "ParentCallSid": call_sid,
            "To": number.text or "",
            "CallStatus": "in-progress",
        }
        signature = compute_signature(self.auth_token, url, form)
        parts = urlsplit(url)
        target = via.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
        async with httpx.AsyncClient() as client:
            return await client.post(target, data=form, headers={"X-Twilio-Signature": signature})
