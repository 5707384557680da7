"""The server's heap: full collections off a busy server's loop, unless memory grows.

CPython's cycle collector pauses the event loop while it scans, and a full collection
scans every tracked object it has not been told to skip: in a server, the models,
modules and app that startup made, and every live call's tasks, coroutines and buffers
(about 430 objects a call). At 200 calls that is 40–60 ms, every call's audio late by
as much, and CPython makes one every few seconds under a steady load: it counts the
objects *promoted* to the oldest generation since the last full collection, and each
turn of a call promotes some that reference counting frees a second later.

:class:`HeapKeeper` runs in ``antiphon serve``:

- **Once started** (:meth:`HeapKeeper.settle`): a full collection, then ``gc.freeze()``
  moves every object left into the permanent generation, which collections skip.
- **Every second while calls run** (:meth:`HeapKeeper.tick`): a young collection
  (generations 0 and 1), then ``gc.freeze()`` again, in one step: young cyclic garbage
  has just been collected, what survived is frozen, and the full collections CPython
  still makes find next to nothing to scan. A frozen object is still freed by reference
  counting when its last reference goes, and antiphon leaves nothing of a call in a
  reference cycle (``tests/test_no_cycles.py``), so a call's objects go when it ends.
- **A full collection of everything** (unfreeze, collect, freeze), which pauses the loop
  as long as CPython's own (it scans what startup made too), only when it may find
  something: once each time the server falls idle after calls, and while calls run,
  when the process's peak memory has grown by a quarter since the last one and
  :data:`FULL_EVERY` has passed since it. So a reference cycle some library leaves
  behind after it was frozen holds at most that growth, or waits for that time.

Every step is O(1) in the heap's size but the collections themselves (``gc.freeze()``
moves whole lists; ``gc.get_freeze_count()``, which walks them, is not called while
calls run). Measured in ``docs/performance.md`` ("Full collections off the loop").
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import time
from collections.abc import Callable
from typing import Literal, Protocol

__all__ = [
    "FULL_EVERY",
    "MEMORY_GROWTH",
    "TICK_EVERY",
    "Collector",
    "HeapKeeper",
    "peak_memory",
]

log = logging.getLogger(__name__)

TICK_EVERY = 1.0
"""Seconds between two young collections and freezes while calls run."""
MEMORY_GROWTH = 0.25
"""Growth of the peak memory, as a share of it at the last full collection, that lets
the next full one run while calls run."""
FULL_EVERY = 300.0
"""Seconds at least between two full collections while calls run."""


class Collector(Protocol):
    """The part of :mod:`gc` the keeper uses (a test passes its own)."""

    def collect(self, generation: int = 2) -> int: ...
    def freeze(self) -> None: ...
    def unfreeze(self) -> None: ...


def peak_memory() -> int:
    """The process's peak resident memory, in the platform's unit (only ratios are used)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class HeapKeeper:
    """Keeps full collections off a busy server's loop (see the module docstring).

    ``idle``: whether the server has no call now; ``memory``: the peak memory (any unit);
    ``clock``: seconds, monotonic.
    """

    def __init__(
        self,
        idle: Callable[[], bool],
        *,
        growth: float = MEMORY_GROWTH,
        full_every: float = FULL_EVERY,
        collector: Collector = gc,
        memory: Callable[[], int] = peak_memory,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle = idle
        self._growth = growth
        self._full_every = full_every
        self._gc = collector
        self._memory = memory
        self._clock = clock
        self._froze_since_full = False
        self._last_full = clock()
        self.base = 0
        """The peak memory right after the last full collection."""
        self.full_collections = 0
        """Full collections made by the keeper (``settle`` included)."""
        self.found = 0
        """Unreachable objects those full collections found."""

    def settle(self) -> int:
        """A full collection, then everything left is frozen; returns what it found."""
        found = self._gc.collect()
        self._gc.freeze()
        self.found += found
        self.base = self._memory()
        self.full_collections += 1
        self._froze_since_full = False
        self._last_full = self._clock()
        return found

    def tick(self) -> Literal["idle", "froze", "collected"]:
        """One step: nothing while idle with nothing new; else a young collection and a
        freeze, and a full collection when the rule in the module docstring says so."""
        busy = not self._idle()
        if not busy and not self._froze_since_full:
            return "idle"
        self._gc.collect(1)
        self._gc.freeze()
        if busy:
            self._froze_since_full = True
            grown = self._memory() > self.base * (1.0 + self._growth)
            if not grown or self._clock() - self._last_full < self._full_every:
                return "froze"
        self._gc.unfreeze()
        found = self.settle()
        log.debug("full collection (%s): %d unreachable found", "busy" if busy else "idle", found)
        return "collected"

    async def run(self, every: float = TICK_EVERY) -> None:
        """:meth:`tick` every ``every`` seconds until cancelled."""
        while True:
            await asyncio.sleep(every)
            self.tick()
