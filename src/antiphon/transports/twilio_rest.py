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
"""

from __future__ import annotations

import os
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

__all__ = ["TwilioAccount", "TwilioCalls"]

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
    """

    def __init__(
        self, account: TwilioAccount, *, base_url: str = rest.API_BASE, timeout: float = 15.0
    ) -> None:
        self.account = account
        self.timeout = timeout
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
        self, call_sid: str, number: str, *, caller_id: str | None = None
    ) -> rest.CallInfo:
        """Bridge the live call ``call_sid`` to ``number`` (its media stream ends).

        Raises:
            ConfigError: a number not in E.164 form.
            ProviderError: Twilio refused or failed.
        """
        _check_number("the transfer number", number)
        form = rest.update_form(rest.dial_twiml(number, caller_id=caller_id))
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
