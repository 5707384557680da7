"""Gemini (and Google REST) error responses (sans-I/O): the body, the typed error.

Google's REST APIs answer an error with one JSON shape, ``google.rpc.Status``
(``{"error": {"code", "message", "status", "details"}}``,
https://ai.google.dev/gemini-api/docs/troubleshooting and
https://cloud.google.com/apis/design/errors), with an ``ErrorInfo`` detail naming the
reason (``API_KEY_INVALID``) and a ``RetryInfo`` detail with the delay to wait.
:func:`error_fields` reads that body (the shape of any Google REST API's errors);
:func:`http_error` maps an error response of ``streamGenerateContent`` to a typed error:
401/403, and 400 with reason ``API_KEY_INVALID`` (what the API answers a wrong key) →
``ChatAuthError``; 429 and 5xx → retryable ``ChatHttpError`` with ``retry_after``
from ``google.rpc.RetryInfo`` (or ``Retry-After``); 400/404 → ``ChatRequestError`` with
the server's message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from antiphon.protocols.openai_chat import (
    ChatAuthError,
    ChatHttpError,
    ChatRequestError,
    parse_retry_after,
)

__all__ = ["error_fields", "http_error"]


def _duration(value: Any) -> float | None:
    """Seconds of a protobuf ``Duration`` in JSON (``"1.5s"``)."""
    if not isinstance(value, str) or not value.endswith("s"):
        return None
    try:
        seconds = float(value[:-1])
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_fields(text: str) -> tuple[str, str | None, str | None, float | None]:
    """message, status, reason (ErrorInfo) and retry delay (RetryInfo) of an error body."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return " ".join(text.split())[:300], None, None, None
    if isinstance(obj, list) and obj:  # some proxies wrap the error in a list
        obj = obj[0]
    err = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(err, dict):
        return " ".join(text.split())[:300], None, None, None
    reason: str | None = None
    delay: float | None = None
    for detail in err.get("details") or []:
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.ErrorInfo") and detail.get("reason"):
            reason = str(detail["reason"])
        elif kind.endswith("google.rpc.RetryInfo"):
            delay = _duration(detail.get("retryDelay"))
    status = err.get("status")
    message = str(err.get("message") or status or "error")[:300]
    return message, str(status) if status is not None else None, reason, delay


_HINTS = {
    400: "the request was refused; the server's message says which field",
    404: "check the model name (e.g. 'gemini-2.5-flash') and the API version",
    429: "rate limited or out of quota; slow down, or check the project's limits",
}


def http_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    provider: str,
    stage: str = "request",
    auth_hint: str = "check the API key (GOOGLE_API_KEY or GEMINI_API_KEY, or api_key=...)",
) -> ChatHttpError:
    """The typed error for an error response (see the module docstring)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message, kind, reason, delay = error_fields(text)
    retry_after = delay if delay is not None else parse_retry_after(headers)
    fields: dict[str, Any] = {
        "provider": provider,
        "stage": stage,
        "status": status,
        "retry_after": retry_after,
        "error_type": kind,
        "error_code": reason,
    }
    summary = f"HTTP {status}" + (f": {message}" if message else "")
    if status in (401, 403) or reason == "API_KEY_INVALID":
        return ChatAuthError(summary, hint=auth_hint, **fields)
    if status == 429 or status >= 500:
        hint = _HINTS.get(status, "a server-side problem; retrying usually helps")
        if retry_after is not None:
            hint += f"; the server asks to retry after {retry_after:g}s"
        return ChatHttpError(summary, hint=hint, retryable=True, **fields)
    if status in _HINTS:
        return ChatRequestError(summary, hint=_HINTS[status], **fields)
    return ChatHttpError(summary, **fields)
