"""OpenAI chat completions: an error response, to a typed error (sans-I/O).

:func:`http_error` maps an error response (status, headers, body) to the one HTTP error
tree of :mod:`antiphon.errors`: 401/403 → :class:`ChatAuthError`; 429 and 5xx →
retryable :class:`ChatHttpError` with ``retry_after`` (:func:`parse_retry_after`:
``retry-after-ms`` or ``Retry-After``, seconds or an HTTP date); 400/404/413/422 →
:class:`ChatRequestError` (a ``ConfigError`` too) with the server's own message and a
hint. The ``Chat*`` names are aliases of the :mod:`antiphon.errors` classes, kept so
that callers can name the error by the protocol they speak.

Part of :mod:`antiphon.protocols.openai_chat`, which re-exports it.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any

from antiphon.errors import HttpAuthError, HttpRequestError, HttpStatusError

__all__ = [
    "ChatAuthError",
    "ChatHttpError",
    "ChatRequestError",
    "http_error",
    "parse_retry_after",
]


ChatHttpError = HttpStatusError
"""An error status from the server (the one HTTP error class of :mod:`antiphon.errors`)."""
ChatAuthError = HttpAuthError
ChatRequestError = HttpRequestError


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = float("nan")
        if value == value and value >= 0:
            return value
    raw = (lower.get("retry-after") or "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_HINTS = {
    400: "the request was refused; the server's message says which field",
    404: "check the model name (or Azure deployment) and the base URL",
    413: "the conversation is too large; shorten the history",
    422: "the request was refused; the server's message says which field",
    429: "rate limited or out of quota; slow down, or check the plan's limits",
}


def http_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    provider: str,
    stage: str = "request",
    auth_hint: str = "check the API key (OPENAI_API_KEY or api_key=...)",
) -> ChatHttpError:
    """The typed error for an error response (see the module docstring)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message, kind, code, param = _error_fields(text)
    retry_after = parse_retry_after(headers)
    fields: dict[str, Any] = {
        "provider": provider,
        "stage": stage,
        "status": status,
        "retry_after": retry_after,
        "error_type": kind,
        "error_code": code,
        "param": param,
    }
    summary = f"HTTP {status}" + (f": {message}" if message else "")
    if status in (401, 403):
        return ChatAuthError(summary, hint=auth_hint, **fields)
    if status == 429 or status >= 500:
        hint = _HINTS.get(status, "a server-side problem; retrying usually helps")
        if retry_after is not None:
            hint += f"; the server asks to retry after {retry_after:g}s"
        return ChatHttpError(summary, hint=hint, retryable=True, **fields)
    if status in _HINTS:
        return ChatRequestError(summary, hint=_HINTS[status], **fields)
    return ChatHttpError(summary, **fields)


def _error_fields(text: str) -> tuple[str, str | None, str | None, str | None]:
    """message, type, code and param of an OpenAI-style error body (or its plain text)."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return " ".join(text.split())[:300], None, None, None
    err = obj.get("error", obj) if isinstance(obj, dict) else obj
    if isinstance(err, str):  # Ollama: {"error": "model 'x' not found"}
        return err[:300], None, None, None
    if isinstance(err, dict):
        message = err.get("message") or err.get("detail") or json.dumps(err)[:300]

        def opt(key: str) -> str | None:
            value = err.get(key)
            return str(value) if value is not None else None

        return str(message)[:300], opt("type"), opt("code"), opt("param")
    return " ".join(text.split())[:300], None, None, None
