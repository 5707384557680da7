"""``TwilioCalls``: place outbound calls and transfer live ones through Twilio's REST API.

A thin asyncio shell over :mod:`antiphon.protocols.twilio_rest`: one ``httpx`` client
(HTTP Basic with the account SID and auth token), every request bounded by
``timeout``, and Twilio's answers turned into typed errors that say what to fix:
credentials refused (:class:`~antiphon.errors.HttpAuthError`), a request Twilio
refuses such as an invalid number (:class:`~antiphon.errors.HttpRequestError`, with
Twilio's error code and message), Twilio failing or unreachable
(:class:`~antiphon.errors.HttpStatusError`, :class:`~antiphon.errors.ProviderConnectionError`,
:class:`~antiphon.errors.ProviderTimeoutError`). A number is checked for E.164 form before
any request.

:meth:`TwilioCalls.transfer` is cold by default (``<Dial>``: the caller is bridged to the
number as it answers) and warm with a ``summary``: the human who answers first hears it
(a call whisper, fetched from ``<public_url>/twilio/whisper`` with the summary in a signed,
expiring token; see :mod:`antiphon.protocols.twilio_rest`), then is bridged.
:func:`transfer_call_tool` offers that to an agent's LLM as a ready-made tool.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import httpx

from antiphon.errors import (
    ConfigError,
    HttpAuthError,
    HttpRequestError,
    HttpStatusError,
    ProviderConnectionError,
    ProviderTimeoutError,
)
from antiphon.protocols import twilio_rest as rest
from antiphon.services.tools import FunctionTool, function_tool

__all__ = ["TwilioAccount", "TwilioCalls", "transfer_call_tool"]

PROVIDER = "twilio"


@dataclass(frozen=True, slots=True)
class TwilioAccount:
    """The account's SID (``AC...``) and auth token."""

    sid: str
    auth_token: str

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"TwilioAccount(sid={self.sid!r}, auth_token=<hidden>)"

    @classmethod
    def from_env(cls) -> TwilioAccount:
        """From ``TWILIO_ACCOUNT_SID`` and ``TWILIO_AUTH_TOKEN``.

        Raises:
            ConfigError: one is missing or empty.
        """
        sid = os.environ.get("TWILIO_ACCOUNT_SID", "").strip()
        token = os.environ.get("TWILIO_AUTH_TOKEN", "").strip()
        names = (("TWILIO_ACCOUNT_SID", sid), ("TWILIO_AUTH_TOKEN", token))
        missing = [name for name, value in names if not value]
        if missing:
            raise ConfigError(
                f"set {' and '.join(missing)} (the account SID and auth token, "
                "from the Twilio console)"
            )
        return cls(sid, token)


def _check_number(what: str, number: str) -> None:
    if not rest.is_e164(number):
        raise ConfigError(
            f"{what} {number!r} is not a phone number in E.164 form "
            "(+, the country code, then the number: e.g. +15551234567)"
        )


class TwilioCalls:
    """``async with TwilioCalls(account) as calls: await calls.create(...)``.

    Args:
        account: the credentials.
        base_url: Twilio's API (a fake's address in tests).
        timeout: the deadline of each request, in seconds.
        public_url: this server's public address (``https://...``), where Twilio fetches
            a warm transfer's whisper (``/twilio/whisper``); needed only for those.
    """

    def __init__(
        self,
        account: TwilioAccount,
        *,
        base_url: str = rest.API_BASE,
        timeout: float = 15.0,
        public_url: str | None = None,
    ) -> None:
        self.account = account
        self.timeout = timeout
        self.public_url = public_url.rstrip("/") if public_url else None
        self._seal = rest.WhisperSeal(account.auth_token)
        self._client = httpx.AsyncClient(
            base_url=base_url,
            auth=(account.sid, account.auth_token),
            timeout=httpx.Timeout(timeout),
        )

    async def __aenter__(self) -> TwilioCalls:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def create(
        self,
        to: str,
        from_: str,
        url: str,
        *,
        machine_detection: str | None = None,
        amd_callback: str | None = None,
    ) -> rest.CallInfo:
        """Call ``to`` from ``from_``; Twilio fetches the call's TwiML from ``url``.

        Raises:
            ConfigError: a number not in E.164 form.
            ProviderError: Twilio refused or failed (see the module docstring).
        """
        _check_number("the number to call", to)
        _check_number("the caller ID (--from)", from_)
        form = rest.create_form(
            to, from_, url, machine_detection=machine_detection, amd_callback=amd_callback
        )
        return await self._post("create the call", rest.calls_path(self.account.sid), form)

    async def transfer(
        self,
        call_sid: str,
        number: str,
        *,
        summary: str | None = None,
        caller_id: str | None = None,
        hold_message: str | None = None,
    ) -> rest.CallInfo:
        """Bridge the live call ``call_sid`` to ``number`` (its media stream ends).

        ``summary`` None: a cold transfer. Else a warm one: the human who answers hears
        ``summary`` (at most :data:`~antiphon.protocols.twilio_rest.MAX_SUMMARY_CHARS`
        characters) before being bridged; the server at ``public_url`` must serve
        ``/twilio/whisper`` with this account's auth token. ``hold_message`` is said to
        the caller before the dial.

        Raises:
            ConfigError: a number not in E.164 form; a summary empty or too long; a warm
                transfer without ``public_url``; TwiML over Twilio's limit.
            ProviderError: Twilio refused or failed.
        """
        _check_number("the transfer number", number)
        whisper_url = None
        if summary is not None:
            if not self.public_url:
                raise ConfigError(
                    "a warm transfer needs the server's public URL, where Twilio fetches "
                    "the whisper: TwilioCalls(..., public_url='https://...')"
                )
            try:
                ticket = self._seal.seal(summary)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            whisper_url = f"{self.public_url}/twilio/whisper?ticket={ticket}"
        twiml = rest.dial_twiml(
            number, caller_id=caller_id, whisper_url=whisper_url, hold_message=hold_message
        )
        if len(twiml) > rest.MAX_TWIML_CHARS:
            raise ConfigError(
                f"the transfer's TwiML has {len(twiml)} characters; Twilio takes at most "
                f"{rest.MAX_TWIML_CHARS}: shorten the summary or the hold message"
            )
        form = rest.update_form(twiml)
        return await self._post(
            "transfer the call", rest.calls_path(self.account.sid, call_sid), form
        )

    async def _post(self, stage: str, path: str, form: list[tuple[str, str]]) -> rest.CallInfo:
        try:
            response = await self._client.post(path, data=dict(form))
        except httpx.TimeoutException:
            raise ProviderTimeoutError(
                "no answer", provider=PROVIDER, stage=stage, timeout=self.timeout
            ) from None
        except httpx.TransportError as exc:
            raise ProviderConnectionError(
                f"cannot reach {self._client.base_url}: {exc}", provider=PROVIDER, stage=stage
            ) from None
        if response.is_success:
            try:
                return rest.parse_call(response.content)
            except ValueError as exc:
                raise HttpStatusError(
                    str(exc), provider=PROVIDER, stage=stage, status=response.status_code
                ) from None
        error = rest.parse_error(response.status_code, response.content)
        message = " ".join(error.message.split())  # one line
        message += f" [Twilio error {error.code}]" if error.code else ""
        code = str(error.code) if error.code else None
        if error.status in (401, 403):
            raise HttpAuthError(
                message, provider=PROVIDER, stage=stage, status=error.status, error_code=code,
                hint="check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
            )  # fmt: skip
        if 400 <= error.status < 500:
            raise HttpRequestError(
                message, provider=PROVIDER, stage=stage, status=error.status, error_code=code
            )
        raise HttpStatusError(
            message, provider=PROVIDER, stage=stage, status=error.status, error_code=code,
            retryable=True,
        )  # fmt: skip


def transfer_call_tool(
    calls: TwilioCalls,
    number: str,
    call_sid: Callable[[], str | None],
    *,
    hold_message: str | None = "Please hold while I connect you.",
    caller_id: str | None = None,
    name: str = "transfer_call",
) -> FunctionTool:
    """A tool the agent's LLM calls with a summary to hand the caller to a human at
    ``number`` (a warm transfer: the human hears the summary first).

    ``call_sid`` gives the live call's ``CallSid`` (None: no call to transfer), e.g. read
    from the Twilio stream's start. ``calls`` needs its ``public_url``.

    Raises:
        ConfigError: ``number`` is not in E.164 form, or ``calls`` has no public URL.
    """
    _check_number("the transfer number", number)
    if not calls.public_url:
        raise ConfigError(
            "the transfer tool needs the server's public URL: TwilioCalls(..., public_url=...)"
        )

    async def transfer_call(summary: str) -> str:
        """Transfer the caller to a human colleague, who first hears your summary.

        Args:
            summary: one or two sentences for the colleague: who is calling and what they
                need, already found out.
        """
        sid = call_sid()
        if not sid:
            return "there is no live phone call to transfer"
        await calls.transfer(
            sid, number, summary=summary, caller_id=caller_id, hold_message=hold_message
        )
        return "transferring: the colleague hears the summary, then the caller is connected"

    return function_tool(name=name)(transfer_call)
