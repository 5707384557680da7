"""Typed errors: one tree, one root. Each says which provider, which stage, what to check.

Every error antiphon raises on purpose is an :class:`AntiphonError`, so
``except AntiphonError`` catches exactly ours. None of them is an ``OSError`` or a
builtin ``TimeoutError``: an ``except TimeoutError`` around ``asyncio.timeout`` catches
only the deadline it guards, never a provider's timeout raised from inside the block.

.. code-block:: text

    AntiphonError
    ├── ConfigError (also ValueError)         bad configuration or input, refused at the edge
    │   └── HttpRequestError                  400/404/413/422: the request itself is wrong
    ├── StreamClosedError (also RuntimeError) an operation on something that has ended
    │   └── ChannelClosed                     (antiphon.aio.channel)
    ├── ChannelFull                           a bounded queue refused an item (policy "fail")
    ├── ProtocolStateError (also RuntimeError) a state machine was asked for what its phase
    │                                          forbids (a bug in the caller)
    ├── InternalError                         an owned task raised unexpectedly (a bug);
    │                                          the original exception is ``__cause__``
    ├── CallEnded                             why a call ends: close code and reason
    │                                          (antiphon.transports.base)
    ├── ToolArgumentError (also ValueError)   the model's tool arguments do not fit the schema
    ├── ToolTimeoutError                      a tool did not return within its timeout
    └── ProviderError                         a provider failed: ``provider``, ``stage``,
        │                                      ``hint``, ``code``, ``retryable``
        ├── AuthError                         the provider refused our credentials
        │   └── HttpAuthError                 401/403 over HTTP (also an HttpStatusError)
        ├── ProviderConnectionError           could not connect, or the connection was lost
        │   └── ConnectionLost                (antiphon.net.ws) with the close code/reason
        ├── ProviderTimeoutError              no answer within a deadline: ``timeout`` says
        │                                      which deadline fired, ``stage`` where
        └── HttpStatusError                   a non-2xx answer: ``status``, ``retry_after``,
            ├── HttpAuthError                  ``body`` and the server's error fields
            └── HttpRequestError

``ToolArgumentError``/``ToolTimeoutError`` live in :mod:`antiphon.services.tools`,
``ChannelClosed`` in :mod:`antiphon.aio.channel`, ``ConnectionLost`` in
:mod:`antiphon.net.ws` and ``CallEnded`` in :mod:`antiphon.transports.base`; the rest
here. ``ChatHttpError``, ``ChatAuthError`` and ``ChatRequestError`` of
:mod:`antiphon.protocols.openai_chat` are other names of the HTTP errors.
"""

from __future__ import annotations

__all__ = [
    "AntiphonError",
    "AuthError",
    "ChannelFull",
    "ConfigError",
    "HttpAuthError",
    "HttpRequestError",
    "HttpStatusError",
    "InternalError",
    "ProtocolStateError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeoutError",
    "StreamClosedError",
]


class AntiphonError(Exception):
    """Base of every error antiphon raises on purpose."""


class ConfigError(AntiphonError, ValueError):
    """Bad configuration or input, refused at the edge; the message says how to fix it."""


class StreamClosedError(AntiphonError, RuntimeError):
    """An operation on a stream or channel that has already ended."""


class ChannelFull(AntiphonError):
    """A bounded queue whose overflow policy is "fail" refused an item.

    ``maxsize`` is the bound; ``what`` names the queue.
    """

    def __init__(self, message: str, *, maxsize: int = 0, what: str = "channel") -> None:
        super().__init__(message)
        self.maxsize = maxsize
        self.what = what


class ProtocolStateError(AntiphonError, RuntimeError):
    """A protocol state machine was asked for something its phase forbids (a bug)."""


class InternalError(AntiphonError):
    """An owned task raised an exception nobody expected (a bug in antiphon or a plugin).

    ``owner`` and ``task`` name where; the original exception is ``__cause__``.
    """

    def __init__(self, message: str, *, owner: str, task: str) -> None:
        super().__init__(f"{owner}: {task}: {message}")
        self.owner = owner
        self.task = task


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


class ProviderTimeoutError(ProviderError):
    """A provider did not answer within its deadline.

    ``timeout`` is the deadline that fired (seconds), ``stage`` what was awaited. Not a
    builtin ``TimeoutError``: catch it as a ``ProviderError`` (or by its own name).
    """

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


class HttpStatusError(ProviderError):
    """The server answered with a non-2xx status.

    ``status`` is the HTTP status (also ``code``), ``retry_after`` the seconds from a
    ``Retry-After`` header (None without one), ``body`` the start of the error body, and
    ``error_type``/``error_code``/``param`` the server's error fields when it sent them.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        stage: str,
        status: int,
        retry_after: float | None = None,
        body: str = "",
        error_type: str | None = None,
        error_code: str | None = None,
        param: str | None = None,
        hint: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        self.body = body
        self.error_type = error_type
        self.error_code = error_code
        self.param = param
        super().__init__(
            message, provider=provider, stage=stage, hint=hint, code=status, retryable=retryable
        )


class HttpAuthError(AuthError, HttpStatusError):
    """401 or 403: the credentials were refused."""


class HttpRequestError(HttpStatusError, ConfigError):
    """400/404/413/422: the request itself is wrong (model name, deployment, messages,
    tool schema, context too long); the message is the server's."""
