"""What a WebSocket server says went wrong, as a typed error, for every protocol.

Each provider has its own table: which codes mean the credentials were refused, which a
new connection may cure, what to tell the user about each. The mapping itself is one:
:func:`close_code_error` turns a close whose code alone decides into a
:class:`~antiphon.errors.ProviderConnectionError` (the provider's hint for that code, its
own set of retryable codes; no close frame at all reads as 1006), and :func:`closed_error`
puts the credential codes in front of it as an :class:`~antiphon.errors.AuthError`. A
protocol module's ``close_error`` is then its table and one call. :func:`reported_error` does
the same for an error *message* the server sends before it closes, told apart by its type.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from antiphon.errors import AuthError, ProviderConnectionError, ProviderError

__all__ = ["RETRYABLE_CLOSES", "close_code_error", "closed_error", "reported_error"]

#: Closes a new connection may cure: none at all (a drop), a normal close before every
#: answer came, going away, abnormal, internal error, restart, try again later, bad gateway.
RETRYABLE_CLOSES: tuple[int | None, ...] = (None, 1000, 1001, 1006, 1011, 1012, 1013, 1014)

_EMPTY: Mapping[int, str] = {}


def close_code_error(
    code: int | None,
    message: str,
    *,
    provider: str,
    stage: str,
    hints: Mapping[int, str],
    retryable: Collection[int | None],
) -> ProviderConnectionError:
    """The error for a close told apart by its code alone (``None``: no close frame, 1006)."""
    return ProviderConnectionError(
        message,
        provider=provider,
        stage=stage,
        code=code if code is not None else 1006,
        hint=hints.get(code or 0, "the connection dropped; check the network"),
        retryable=code in retryable,
    )


def closed_error(
    code: int | None,
    reason: str,
    *,
    provider: str,
    stage: str,
    auth_codes: Collection[int],
    auth_hint: str,
    hints: Mapping[int, str] = _EMPTY,
    retryable: Collection[int | None] = RETRYABLE_CLOSES,
    reasons: Mapping[int, str] = _EMPTY,
) -> ProviderError:
    """``the server closed the connection: <reason>`` as an :class:`AuthError` for one of
    ``auth_codes``, else as :func:`close_code_error` says.

    Args:
        code: The close code (``None``: the connection dropped without one).
        reason: The close reason; empty: the provider's name for the code (``reasons``)
            or "no reason given".
        provider: Named in the error.
        stage: Where the close was met (``connect``, ``send``, ``receive``...).
        auth_codes: Codes that mean the credentials were refused.
        auth_hint: What to check then (the key's variable).
        hints: What to do about each other code (default: check the network).
        retryable: Codes a new connection may cure.
        reasons: The provider's name of each code, said when the reason is empty.
    """
    reason = reason or reasons.get(code or 0, "no reason given")
    message = f"the server closed the connection: {reason}"
    if code in auth_codes:
        return AuthError(message, provider=provider, stage=stage, code=code, hint=auth_hint)
    return close_code_error(
        code, message, provider=provider, stage=stage, hints=hints, retryable=retryable
    )


def reported_error(
    text: str,
    kind: str,
    *,
    provider: str,
    stage: str,
    auth_kinds: Collection[str],
    auth_hint: str,
    retry_kinds: Collection[str],
    retry_hint: str,
    hint: str,
) -> ProviderError:
    """An error message of type ``kind``, saying ``text``, as a typed error.

    An :class:`AuthError` for one of ``auth_kinds`` (credentials, quota, terms), a
    retryable :class:`ProviderConnectionError` for one of ``retry_kinds`` (a new session
    may cure it), else a :class:`ProviderError` with ``hint``.
    """
    if kind in auth_kinds:
        return AuthError(text, provider=provider, stage=stage, hint=auth_hint)
    if kind in retry_kinds:
        return ProviderConnectionError(
            text, provider=provider, stage=stage, code=None, hint=retry_hint, retryable=True
        )
    return ProviderError(text, provider=provider, stage=stage, hint=hint)
