"""Retry waits: one policy for every provider request and reconnect.

Sans-I/O (no asyncio): :class:`Backoff` computes waits (bounded exponential with full
jitter, so many sessions failing together never retry in the same millisecond), and
:func:`retry_delay` decides whether a failed request may be retried at all. Callers sleep
on their own clock.

The rule every caller shares: retry only what the user has not yet seen or heard
(``delivered``), only retryable errors that are neither timeouts (their deadline is spent)
nor auth failures, and only when the wait — the server's ``retry_after`` if it sent one,
else the backoff — is at most ``max_wait`` and fits in the ``budget`` left.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from antiphon.errors import AuthError, ConfigError, ProviderError, ProviderTimeoutError

__all__ = ["Backoff", "make_backoff", "retry_delay"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Bounded exponential backoff with full jitter.

    Attempt ``n`` (0-based) waits a uniform draw in ``[base * factor**n * (1 - jitter),
    base * factor**n]``, capped at ``cap``. ``jitter=0`` gives the plain exponential series;
    ``rand`` is injectable for tests.
    """

    base: float = 0.25
    factor: float = 2.0
    cap: float = 4.0
    jitter: float = 0.5
    rand: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ConfigError("backoff base and cap must be >= 0 seconds")
        if self.factor < 1:
            raise ConfigError("backoff factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("backoff jitter must be between 0 and 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        # Cap the exponent first: factor**attempt overflows a float for large attempts.
        ceiling = self.base
        for _ in range(attempt):
            ceiling *= self.factor
            if ceiling >= self.cap:
                break
        ceiling = min(ceiling, self.cap)
        return ceiling * (1.0 - self.jitter * self.rand())


def retry_delay(
    error: ProviderError,
    *,
    delivered: bool,
    attempt: int,
    max_retries: int,
    max_wait: float,
    backoff: Backoff | float,
    budget: float | None = None,
) -> float | None:
    """Seconds to wait before retry number ``attempt`` (0-based), or None to give up.

    ``backoff`` is a :class:`Backoff` or a fixed number of seconds.
    """
    if delivered or attempt >= max_retries or not error.retryable:
        return None
    if isinstance(error, AuthError | ProviderTimeoutError):
        return None
    wait: float | None = getattr(error, "retry_after", None)
    if wait is None:
        wait = backoff.delay(attempt) if isinstance(backoff, Backoff) else backoff
    if wait > max_wait or (budget is not None and wait >= budget):
        return None
    return wait


def make_backoff(retry_backoff: float | Backoff) -> Backoff:
    """The :class:`Backoff` of a ``retry_backoff`` option: a ``Backoff`` as is, or a
    number of seconds as the base of a jittered exponential one (capped at 4 s, or the
    base if larger). ``ConfigError`` if negative."""
    if isinstance(retry_backoff, Backoff):
        return retry_backoff
    if (
        isinstance(retry_backoff, bool)
        or not isinstance(retry_backoff, int | float)
        or retry_backoff < 0
    ):
        raise ConfigError(f"retry_backoff must be >= 0 seconds, got {retry_backoff!r}")
    return Backoff(base=float(retry_backoff), cap=max(4.0, float(retry_backoff)))
