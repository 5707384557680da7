"""Twilio's Calls REST API, sans I/O: outbound calls and live-call updates (transfer).

Sources: https://www.twilio.com/docs/voice/api/call-resource (create: ``POST
/2010-04-01/Accounts/{AccountSid}/Calls.json`` with ``To``, ``From`` and ``Url`` or
``Twiml``; update: ``POST .../Calls/{CallSid}.json`` with ``Twiml``),
https://www.twilio.com/docs/voice/answering-machine-detection (``MachineDetection``,
``AsyncAmd``, ``AsyncAmdStatusCallback``; the callback's ``AnsweredBy``),
https://www.twilio.com/docs/usage/twilios-response (error bodies: ``code``,
``message``, ``more_info``, ``status``).

Requests are HTTP Basic with the account SID and auth token, form-encoded. An outbound
call fetches its TwiML from this server's ``/twilio/voice`` (``Url``): that signed
webhook is what issues the stream's single-use ticket, so outbound and inbound calls
are admitted the same way, and the TwiML is the same ``<Connect><Stream>``. A transfer
replaces the live call's TwiML with a ``<Dial>``: the media stream ends and Twilio
bridges the caller to the number.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "API_BASE", "E164", "CallInfo", "RestError", "calls_path", "create_form",
    "dial_twiml", "is_e164", "parse_call", "parse_error", "update_form",
]  # fmt: skip

API_BASE = "https://api.twilio.com"
E164 = re.compile(r"^\+[1-9]\d{1,14}$")


def is_e164(number: str) -> bool:
    """Whether ``number`` is in E.164 form: ``+``, a country code, at most 15 digits."""
    return bool(E164.fullmatch(number))


def calls_path(account_sid: str, call_sid: str | None = None) -> str:
    """The path of the account's Calls list, or of one call."""
    tail = f"/{call_sid}" if call_sid else ""
    return f"/2010-04-01/Accounts/{account_sid}/Calls{tail}.json"


def create_form(
    to: str,
    from_: str,
    url: str,
    *,
    machine_detection: str | None = None,
    amd_callback: str | None = None,
    timeout: int | None = None,
) -> list[tuple[str, str]]:
    """The form of a new outbound call whose TwiML comes from ``url``.

    ``machine_detection``: ``Enable`` or ``DetectMessageEnd`` (answering-machine
    detection, asynchronous: the call connects at once and ``amd_callback`` gets
    ``AnsweredBy`` later).
    """
    form = [("To", to), ("From", from_), ("Url", url), ("Method", "POST")]
    if machine_detection:
        form += [("MachineDetection", machine_detection), ("AsyncAmd", "true")]
        if amd_callback:
            form += [("AsyncAmdStatusCallback", amd_callback),
                     ("AsyncAmdStatusCallbackMethod", "POST")]  # fmt: skip
    if timeout is not None:
        form.append(("Timeout", str(timeout)))
    return form


def dial_twiml(number: str, *, caller_id: str | None = None) -> str:
    """TwiML that bridges the call to ``number`` (a cold transfer)."""
    attr = f" callerId={quoteattr(caller_id)}" if caller_id else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Dial{attr}>{escape(number)}</Dial></Response>"
    )


def update_form(twiml: str) -> list[tuple[str, str]]:
    """The form that replaces a live call's instructions with ``twiml``."""
    return [("Twiml", twiml)]


@dataclass(frozen=True, slots=True)
class CallInfo:
    sid: str
    status: str
    to: str
    from_: str


@dataclass(frozen=True, slots=True)
class RestError:
    """Twilio's error body: ``code`` (e.g. 21211, an invalid ``To``), ``message``."""

    status: int
    code: int | None
    message: str


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def parse_call(body: bytes) -> CallInfo:
    """A call resource (the answer to a create or an update).

    Raises:
        ValueError: not a call resource.
    """
    data = _json(body)
    if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
        raise ValueError(f"not a call resource: {body[:200]!r}")
    return CallInfo(
        data["sid"], str(data.get("status", "")), str(data.get("to", "")),
        str(data.get("from", "")),
    )  # fmt: skip


def parse_error(status: int, body: bytes) -> RestError:
    """A non-2xx answer: Twilio's error fields when it sent them, else the body's start."""
    data = _json(body)
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        code = data.get("code")
        return RestError(status, code if isinstance(code, int) else None, data["message"])
    text = body[:200].decode("utf-8", "replace").strip()
    return RestError(status, None, text or f"HTTP {status}")
