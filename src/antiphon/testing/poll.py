"""``until``: wait for a condition that no event signals (a fake's counters, a DOM)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["until"]


async def until(
    predicate: Callable[[], object], timeout: float = 15.0, every: float = 0.02
) -> None:
    """Check ``predicate()`` every ``every`` seconds until true; ``TimeoutError`` after
    ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(every)
