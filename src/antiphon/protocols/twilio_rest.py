"""Twilio's Calls REST API, sans I/O: outbound calls and live-call updates (transfer).

Sources: https://www.twilio.com/docs/voice/api/call-resource (create: ``POST
/2010-04-01/Accounts/{AccountSid}/Calls.json`` with ``To``, ``From`` and ``Url`` or
``Twiml``; update: ``POST .../Calls/{CallSid}.json`` with ``Twiml``),
https://www.twilio.com/docs/voice/answering-machine-detection (``MachineDetection``,
``AsyncAmd``, ``AsyncAmdStatusCallback``; the callback's ``AnsweredBy``),
https://www.twilio.com/docs/voice/twiml/number (``<Number url>``: TwiML run on the called
party's end once they answer, before the parties are connected: a call whisper),
https://www.twilio.com/docs/usage/twilios-response (error bodies: ``code``,
``message``, ``more_info``, ``status``).

Requests are HTTP Basic with the account SID and auth token, form-encoded. An outbound
call fetches its TwiML from this server's ``/twilio/voice`` (``Url``): that signed
webhook is what issues the stream's single-use ticket, so outbound and inbound calls
are admitted the same way, and the TwiML is the same ``<Connect><Stream>``. A transfer
replaces the live call's TwiML with a ``<Dial>``: the media stream ends and Twilio
bridges the caller to the number. A warm transfer dials ``<Number url=...>``: when the
human answers, Twilio fetches that URL (this server's ``/twilio/whisper``) and plays its
``<Say>`` of the agent's summary to them alone, then bridges; the caller hears the
optional hold message, then ringing, meanwhile.

The summary rides in the whisper URL as a :class:`WhisperSeal` token, HMAC-signed with a
key derived from the account's auth token and expiring, so any process of a deployment
that knows the auth token answers the whisper (no shared store behind a load balancer),
and a forged or stale token gets no TwiML. The token is signed, not encrypted: it sits in
the ``ticket`` query parameter, which the server's log filter redacts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "API_BASE", "E164", "MAX_SUMMARY_CHARS", "MAX_TWIML_CHARS", "WHISPER_TTL", "CallInfo",
    "RestError", "WhisperSeal", "calls_path", "check_summary", "create_form", "dial_twiml",
    "is_e164", "parse_call", "parse_error", "update_form", "whisper_twiml",
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


MAX_SUMMARY_CHARS = 600
"""The longest whisper summary: about 40 s of speech, and it must fit, signed and encoded
in the whisper URL, in the update's ``Twiml`` (:data:`MAX_TWIML_CHARS`)."""

MAX_TWIML_CHARS = 4000
"""The longest ``Twiml`` parameter Twilio takes on a call create or update (error 32018,
https://www.twilio.com/docs/api/errors/32018)."""

WHISPER_TTL = 300.0
"""Seconds a whisper token stays good: it is fetched when the human answers, after the
update, the dial and the ringing (``<Dial timeout>`` is 30 s by default)."""


def _xml_text(text: str) -> str:
    """``text`` with the characters XML 1.0 cannot carry (controls, surrogates, U+FFFE,
    U+FFFF) turned to spaces."""
    return "".join(
        " "
        if (unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n\r") or c in "\ufffe\uffff"
        else c
        for c in text
    )


def check_summary(summary: str) -> str:
    """The summary, stripped, if a whisper can carry it.

    Raises:
        ValueError: empty, or longer than :data:`MAX_SUMMARY_CHARS`.
    """
    text = " ".join(_xml_text(summary).split())
    if not text:
        raise ValueError("the transfer summary is empty: give one, or None for a cold transfer")
    if len(text) > MAX_SUMMARY_CHARS:
        raise ValueError(
            f"the transfer summary has {len(text)} characters; a whisper has at most "
            f"{MAX_SUMMARY_CHARS} (about 40 s of speech): shorten it"
        )
    return text


def dial_twiml(
    number: str,
    *,
    caller_id: str | None = None,
    whisper_url: str | None = None,
    hold_message: str | None = None,
) -> str:
    """TwiML that bridges the call to ``number``.

    Cold without ``whisper_url``; warm with it: ``<Number url=...>``, whose TwiML Twilio
    plays to the human who answers before bridging. ``hold_message`` is said to the
    caller first (e.g. "Please hold while I connect you.").
    """
    attr = f" callerId={quoteattr(caller_id)}" if caller_id else ""
    say = f"<Say>{escape(_xml_text(hold_message))}</Say>" if hold_message else ""
    if whisper_url:
        target = f'<Number url={quoteattr(whisper_url)} method="POST">{escape(number)}</Number>'
    else:
        target = escape(number)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response>{say}<Dial{attr}>{target}</Dial></Response>"
    )


def whisper_twiml(summary: str) -> str:
    """The whisper: ``summary`` said to the human who took the transfer (then Twilio
    bridges the caller)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Say>{escape(_xml_text(summary))}</Say></Response>"
    )


_WHISPER_CONTEXT = b"antiphon call whisper v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class WhisperSeal:
    """Signs a summary into a token and opens it again: ``<expiry ms>.<summary>.<mac>``.

    The key is an HMAC of the account's auth token (never the token itself), so the
    process that transfers and the one Twilio's whisper request reaches agree without a
    shared store; the MAC (HMAC-SHA256, 128 bits) covers the expiry and the summary.
    Expiry is wall-clock time (``wall``; tests inject theirs). Not single-use: Twilio may
    fetch a whisper again, and it only says the summary.
    """

    def __init__(
        self, auth_token: str, *, ttl: float = WHISPER_TTL, wall: Callable[[], float] = time.time
    ) -> None:
        if not auth_token:
            raise ValueError("a whisper seal needs the account's auth token")
        self._key = hmac.new(auth_token.encode(), _WHISPER_CONTEXT, hashlib.sha256).digest()
        self.ttl = ttl
        self.wall = wall

    def __repr__(self) -> str:
        return f"WhisperSeal(ttl={self.ttl})"

    def _mac(self, expires: int, payload: str) -> str:
        signed = f"{expires}.{payload}".encode()
        return _b64(hmac.new(self._key, signed, hashlib.sha256).digest()[:16])

    def seal(self, summary: str) -> str:
        """A token carrying ``summary`` (checked by :func:`check_summary`).

        Raises:
            ValueError: the summary is empty or too long.
        """
        payload = _b64(check_summary(summary).encode())
        expires = int((self.wall() + self.ttl) * 1000)
        return f"{expires}.{payload}.{self._mac(expires, payload)}"

    def open(self, token: str | None) -> str | None:
        """The summary in ``token``, or None if it is forged, malformed or expired."""
        if not token or len(token) > 4 * MAX_SUMMARY_CHARS * 2:
            return None
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        expires, payload, mac = int(parts[0]), parts[1], parts[2]
        if not hmac.compare_digest(mac.encode(), self._mac(expires, payload).encode()):
            return None
        if expires <= int(self.wall() * 1000):
            return None
        try:
            return _unb64(payload).decode()
        except ValueError:
            return None


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
