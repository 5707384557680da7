"""Clocks. Scheduling logic takes a ``Clock`` so tests can run it on virtual time.

:class:`VirtualClock` moves only when a test advances it; after each step it lets the
loop run until no callback is ready (not a fixed number of turns), so whatever a step
woke has finished reacting before the test looks. For whole suites on virtual time (a
fake server included), see ``antiphon.testing.vloop``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Protocol

__all__ = ["Clock", "MonotonicClock", "VirtualClock"]


class Clock(Protocol):
    """A source of time in seconds and a way to sleep until a point of it."""

    def now(self) -> float:
        """Current time in seconds (monotonic, arbitrary origin)."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return once ``now() >= when``."""
        ...


class MonotonicClock:
    """The running event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, when: float) -> None:
        delay = when - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self.now() + seconds)


class VirtualClock:
    """A clock that moves only when a test calls :meth:`advance`.

    Sleepers wake in deadline order, each woken sleeper getting a chance to run before
    time moves further, so scheduling code behaves as it would in real time.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), fut))
        await fut

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + seconds)

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in order as time passes."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards; pass seconds >= 0")
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if not fut.done():
                fut.set_result(None)
            await _settle()
        self._now = target
        await _settle()


#: Loop turns :func:`_settle` allows before it gives up on the loop going idle.
SETTLE_LIMIT = 10_000


async def _settle(limit: int = SETTLE_LIMIT) -> None:
    """Let woken tasks run until the loop is idle: no callback ready, twice in a row (the
    second turn also takes in I/O that is already readable). Bounded by ``limit`` turns,
    for code that reschedules itself forever (a busy ``sleep(0)`` loop)."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)  # asyncio's run queue (BaseEventLoop)
    if ready is None:  # another loop implementation: a generous fixed number of turns
        for _ in range(100):
            await asyncio.sleep(0)
        return
    quiet = 0
    for _ in range(limit):
        await asyncio.sleep(0)
        if ready:
            quiet = 0
            continue
        quiet += 1
        if quiet >= 2:
            return
