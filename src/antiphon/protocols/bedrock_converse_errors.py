"""AWS Bedrock ``ConverseStream``: an error answer, to a typed error (sans-I/O).

:func:`http_error` reads Bedrock's error body (``{"message"}``, the kind in the
``x-amzn-ErrorType`` header) into the one HTTP error tree of :mod:`antiphon.errors`: 401/403
and the signature/access kinds are auth errors; 408, 424, 429 and 5xx are retryable (with
``Retry-After`` when sent); 400/404 a refused request with a hint.

Part of :mod:`antiphon.protocols.bedrock_converse`, which re-exports it.
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

__all__ = ["http_error"]

# --------------------------------------------------------------------------- errors

_HINTS = {
    400: "the request was refused; the server's message says which field",
    404: "check the model id and the region (is the model enabled in this region?)",
    408: "the model took too long; retry, or shorten the request",
    424: "the model failed; retrying usually helps",
    429: "throttled; slow down, or raise the account's Bedrock quotas",
}


def http_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    provider: str,
    stage: str = "request",
    auth_hint: str = "check the credentials (AWS_BEARER_TOKEN_BEDROCK, or AWS_ACCESS_KEY_ID "
    "and AWS_SECRET_ACCESS_KEY) and the model's access in the Bedrock console",
) -> ChatHttpError:
    """The typed error for an error answer: ``{"message"}``, the kind in ``x-amzn-ErrorType``."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        obj = json.loads(text)
        message = (
            str(obj.get("message") or obj.get("Message") or "")[:300]
            if isinstance(obj, dict)
            else ""
        )
    except (json.JSONDecodeError, ValueError):
        message = " ".join(text.split())[:300]
    kind = next((v for k, v in headers.items() if k.lower() == "x-amzn-errortype"), None)
    kind = kind.split(":")[0] if kind else None
    retry_after = parse_retry_after(headers)
    fields: dict[str, Any] = {
        "provider": provider,
        "stage": stage,
        "status": status,
        "retry_after": retry_after,
        "error_type": kind,
    }
    summary = f"HTTP {status}" + (f" {kind}" if kind else "") + (f": {message}" if message else "")
    auth_kinds = (
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
    )
    if status in (401, 403) or kind in auth_kinds:
        return ChatAuthError(summary, hint=auth_hint, **fields)
    if status in (408, 424, 429) or status >= 500:
        hint = _HINTS.get(status, "a server-side problem; retrying usually helps")
        return ChatHttpError(summary, hint=hint, retryable=True, **fields)
    if status in _HINTS:
        return ChatRequestError(summary, hint=_HINTS[status], **fields)
    return ChatHttpError(summary, **fields)
