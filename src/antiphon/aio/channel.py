"""A closable, bounded channel: closing wakes every waiter; sending after close raises.

Every queue between tasks is bounded and says what happens when it is full (DESIGN
rule 13). The three policies of :class:`Overflow`:

- ``BLOCK``: ``send`` waits for room; ``send_nowait`` raises :class:`ChannelFull`.
  For producers that can wait (backpressure).
- ``DROP_OLDEST``: the oldest queued item is dropped to make room (counted in
  :attr:`Channel.dropped`). For live data where the newest matters most.
- ``FAIL``: ``send`` and ``send_nowait`` raise :class:`ChannelFull`. For queues whose
  overflow means the consumer is stuck: the producer turns it into a typed failure.

``maxsize=0`` (unbounded) exists for tests and legacy callers; code in ``antiphon``
states a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

from antiphon.errors import ChannelFull, StreamClosedError

__all__ = ["Channel", "ChannelClosed", "ChannelFull", "Overflow"]

T = TypeVar("T")


class ChannelClosed(StreamClosedError):
    """The channel was closed (and, for receivers, drained)."""


class Overflow(enum.Enum):
    """What a full channel does with one more item."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    FAIL = "fail"


class Channel(Generic[T]):
    """A FIFO between tasks with an explicit end and an explicit bound.

    ``maxsize`` bounds the queued items (0: unbounded); ``overflow`` says what a full
    channel does (see the module docstring); ``name`` appears in errors.
    ``close(error)`` lets receivers drain what was sent, then raises ``error`` (or
    :class:`ChannelClosed`) to them; senders fail at once. ``clear()`` drops everything
    queued in O(1); ``discard(predicate)`` drops some items, keeping the others' order.
    """

    def __init__(
        self, maxsize: int = 0, overflow: Overflow = Overflow.BLOCK, *, name: str = "channel"
    ) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be >= 0 (0 means unbounded)")
        if not isinstance(overflow, Overflow):
            raise ValueError(f"overflow must be an Overflow policy, got {overflow!r}")
        self._maxsize = maxsize
        self.overflow = overflow
        self.name = name
        self.dropped = 0
        """Items dropped by the ``DROP_OLDEST`` policy."""
        self._items: deque[T] = deque()
        self._closed = False
        self._error: BaseException | None = None
        # Futures of the tasks waiting for an item / for room. A put or get with nobody
        # waiting creates no future and touches no event: the fast path is a deque op.
        self._getters: list[asyncio.Future[None]] = []
        self._putters: list[asyncio.Future[None]] = []

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def closed(self) -> bool:
        return self._closed

    def qsize(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return bool(self._maxsize) and len(self._items) >= self._maxsize

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]]) -> None:
        """Wake every waiter (each checks the channel again, as with an ``Event``)."""
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        waiters.clear()

    async def _wait(self, waiters: list[asyncio.Future[None]]) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        try:
            await fut
        finally:
            if not fut.done() or fut.cancelled():
                with contextlib.suppress(ValueError):
                    waiters.remove(fut)

    def _full_error(self) -> ChannelFull:
        return ChannelFull(
            f"{self.name} is full ({self._maxsize} items queued, policy {self.overflow.value})",
            maxsize=self._maxsize,
            what=self.name,
        )

    def send_nowait(self, item: T) -> None:
        """Queue ``item`` now; a full channel applies its policy (``BLOCK`` raises)."""
        if self._closed:
            raise ChannelClosed(f"send on a closed {self.name}")
        items = self._items
        if self._maxsize and len(items) >= self._maxsize:
            if self.overflow is not Overflow.DROP_OLDEST:
                raise self._full_error()
            items.popleft()
            self.dropped += 1
        items.append(item)
        getters = self._getters
        if getters:  # _wake written out: this is every chunk's path to its consumer
            for fut in getters:
                if not fut.done():
                    fut.set_result(None)
            getters.clear()

    async def send(self, item: T) -> None:
        """Queue ``item``; with ``BLOCK``, wait while the channel is full."""
        while True:
            if self._closed:
                raise ChannelClosed(f"send on a closed {self.name}")
            if self.overflow is not Overflow.BLOCK or not self.full():
                self.send_nowait(item)
                return
            await self._wait(self._putters)

    def recv_nowait(self) -> T:
        """Return the next item; ``ChannelClosed`` (or the close error) when ended."""
        if self._items:
            item = self._items.popleft()
            if self._putters:
                self._wake(self._putters)
            return item
        if self._closed:
            if self._error is not None:
                raise self._error
            raise ChannelClosed(f"{self.name} closed")
        raise asyncio.QueueEmpty

    async def recv(self) -> T:
        while True:
            if self._items:  # the fast path: no exception, no future
                item = self._items.popleft()
                if self._putters:
                    self._wake(self._putters)
                return item
            if self._closed:
                return self.recv_nowait()  # raises the close error
            # _wait inlined: one coroutine less per wake-up on the per-chunk path
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                if fut in self._getters:
                    self._getters.remove(fut)
                raise

    def close(self, error: BaseException | None = None) -> None:
        """End the channel; idempotent (the first error wins)."""
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._wake(self._getters)
        self._wake(self._putters)

    def clear(self) -> int:
        """Drop every queued item at once; return how many were dropped."""
        n = len(self._items)
        self._items = deque()
        self._wake(self._putters)
        return n

    def discard(self, predicate: Callable[[T], bool], *, limit: int | None = None) -> int:
        """Drop queued items for which ``predicate`` is true (at most ``limit``, oldest
        first), keeping the order of the rest; return how many were dropped."""
        kept: deque[T] = deque()
        n = 0
        for item in self._items:
            if (limit is None or n < limit) and predicate(item):
                n += 1
            else:
                kept.append(item)
        if n:
            self._items = kept
            self._wake(self._putters)
        return n

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        """The next item; ``StopAsyncIteration`` once closed and drained (a close error
        is raised instead).

        :meth:`recv` written out again, not awaited: this is the per-chunk wake-up of
        every stream's consumer, and one coroutine frame fewer to create and resume
        per item is measurable there (an async generator would add two).
        """
        items = self._items
        while True:
            if items:
                item = items.popleft()
                if self._putters:
                    self._wake(self._putters)
                return item
            if self._closed:
                try:
                    return self.recv_nowait()  # raises the close error
                except ChannelClosed:
                    raise StopAsyncIteration from None
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                if fut in self._getters:
                    self._getters.remove(fut)
                raise
            items = self._items  # ``clear()`` swaps the deque
