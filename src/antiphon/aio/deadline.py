"""Deadlines that turn an expired wait into a typed, explanatory error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from antiphon.errors import ProviderTimeoutError

__all__ = ["deadline"]


@asynccontextmanager
async def deadline(
    seconds: float | None,
    *,
    provider: str,
    stage: str,
    hint: str | None = None,
    what: str | None = None,
) -> AsyncIterator[asyncio.Timeout]:
    """Run the block within ``seconds``; on expiry raise :class:`ProviderTimeoutError`.

    ``None`` means no deadline. The yielded ``asyncio.Timeout`` may be rescheduled.
    ``what`` says what did not happen in time (default: "no answer during <stage>"); the
    error carries ``provider``, ``stage`` and the deadline (``timeout``). Only this
    block's own expiry is converted: a ``TimeoutError`` raised inside passes through.
    """
    cm = asyncio.timeout(seconds)
    try:
        async with cm:
            yield cm
    except TimeoutError as exc:
        if cm.expired() and seconds is not None:
            raise ProviderTimeoutError(
                what or f"no answer during {stage}",
                provider=provider,
                stage=stage,
                timeout=seconds,
                hint=hint,
            ) from exc
        raise
