"""Azure Speech TTS errors (sans I/O): what each failure means and what to check.

How it is built: :data:`STATUS_HINTS` says what to check for each HTTP status of the
REST synthesis endpoint; :func:`sdk_error` maps a Speech SDK cancellation (its
``CancellationErrorCode`` name and details text, in which the SDK reports refused
WebSocket upgrades as ``... (401)``) onto the typed error of :mod:`antiphon.errors`, with
the status found in the text when there is one. Why a module of its own: both transports
(REST and the SDK) share these hints and the provider's names for its credentials, and
the mapping is a table of its own; :mod:`antiphon.protocols.azure_tts` re-exports every
name here.
"""

from __future__ import annotations

import re

from antiphon.errors import (
    AuthError,
    ProviderConnectionError,
    ProviderError,
)

__all__ = [
    "AUTH_HINT",
    "KEY_ENV",
    "PROVIDER",
    "REGION_ENV",
    "STATUS_HINTS",
    "sdk_error",
]

PROVIDER = "azure"
KEY_ENV = "AZURE_SPEECH_KEY"
REGION_ENV = "AZURE_SPEECH_REGION"
AUTH_HINT = (
    f"check {KEY_ENV} (or the api_key/auth_token argument) and that the key belongs to "
    f"the region in {REGION_ENV}"
)

#: What to check for each HTTP status of the synthesis endpoint.
STATUS_HINTS: dict[int, str] = {
    400: (
        "the service refused the request: check the voice name (it must exist in the region), "
        "the style and prosody values, and the output format"
    ),
    401: AUTH_HINT,
    403: AUTH_HINT,
    404: "no synthesis endpoint at this URL; check the region or base_url",
    415: "the request's Content-Type must be application/ssml+xml (please report this)",
    429: "over the resource's request quota (free tier: 20 per minute); slow down or upgrade",
    502: "a network or server problem at Azure (or invalid headers); retrying usually helps",
}


#: ``CancellationErrorCode`` names of the Speech SDK → HTTP-like status for the error.
_SDK_STATUS = {
    "AuthenticationFailure": 401,
    "Forbidden": 403,
    "TooManyRequests": 429,
    "BadRequest": 400,
    "ServiceUnavailable": 503,
    "ServiceError": 500,
}
_CLOSED_BY_SERVER = re.compile(r"closed by the remote host\. Error code: (\d+)")
_STATUS_IN_TEXT = re.compile(r"\((\d{3})\)|\b(?:status|code)[: ]+(\d{3})\b", re.IGNORECASE)


def sdk_error(error_code: str, details: str, *, stage: str) -> ProviderError:
    """The typed error for a Speech SDK cancellation (``error_code`` is the enum's name).

    The SDK reports refused WebSocket upgrades as text (``... (401)``); that status, when
    present, becomes the error's code.
    """
    details = " ".join(details.split())[:400] or "no details"
    closed = _CLOSED_BY_SERVER.search(details)
    if closed and error_code not in ("AuthenticationFailure", "Forbidden"):
        code = int(closed.group(1))
        return ProviderConnectionError(
            f"the service closed the connection: {details}",
            provider=PROVIDER,
            stage=stage,
            code=code,
            hint="the service dropped the connection; retrying usually helps",
            retryable=code in (1001, 1006, 1011, 1012, 1013),
        )
    m = _STATUS_IN_TEXT.search(details)
    status = int(m.group(1) or m.group(2)) if m else _SDK_STATUS.get(error_code)
    if error_code in ("AuthenticationFailure", "Forbidden") or status in (401, 403):
        return AuthError(
            f"the service refused the credentials: {details}",
            provider=PROVIDER,
            stage="connect",
            code=status or 401,
            hint=AUTH_HINT,
        )
    if error_code == "ConnectionFailure" and status is None:
        return ProviderConnectionError(
            f"the connection failed: {details}",
            provider=PROVIDER,
            stage=stage,
            hint="check the region or endpoint and the network",
            retryable=True,
        )
    if error_code == "ServiceTimeout":
        return ProviderConnectionError(
            f"the service timed out: {details}",
            provider=PROVIDER,
            stage=stage,
            hint="the service did not answer in time; retrying usually helps",
            retryable=True,
        )
    retryable = status is not None and (status == 429 or status >= 500)
    if status is None:
        retryable = error_code in ("ServiceError", "ServiceUnavailable", "ConnectionFailure")
    return ProviderError(
        f"synthesis was cancelled ({error_code}): {details}",
        provider=PROVIDER,
        stage="connect" if status is not None and error_code == "ConnectionFailure" else stage,
        code=status if status is not None else error_code,
        hint=STATUS_HINTS.get(status or 0),
        retryable=retryable,
    )
