"""Typed errors. Each says which provider, which stage, and what to check."""

from __future__ import annotations


class AntiphonError(Exception):
    """Base of every error antiphon raises on purpose."""


class ConfigError(AntiphonError, ValueError):
    """Bad configuration or input, refused at the edge; the message says how to fix it."""


class StreamClosedError(AntiphonError, RuntimeError):
    """An operation on a stream or channel that has already ended."""


class ProviderError(AntiphonError):
    """A provider failed. ``provider`` and ``stage`` say where; ``hint`` what to check."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        stage: str,
        hint: str | None = None,
        code: int | str | None = None,
        retryable: bool = False,
    ) -> None:
        self.provider = provider
        self.stage = stage
        self.hint = hint
        self.code = code
        self.retryable = retryable
        text = f"{provider} {stage}: {message}"
        if code is not None:
            text += f" (code {code})"
        if hint:
            text += f". {hint}"
        super().__init__(text)


class AuthError(ProviderError):
    """The provider refused our credentials."""


class ProviderConnectionError(ProviderError):
    """Could not connect, or the connection was lost."""


class ProviderTimeoutError(ProviderError, TimeoutError):
    """A provider did not answer within its deadline (a ``TimeoutError`` too)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        stage: str,
        timeout: float,
        hint: str | None = None,
    ) -> None:
        self.timeout = timeout
        super().__init__(
            f"{message} within {timeout:g}s",
            provider=provider,
            stage=stage,
            hint=hint,
            retryable=True,
        )
