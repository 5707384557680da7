"""A closable channel: closing wakes every waiter; sending after close raises."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from antiphon.errors import StreamClosedError

T = TypeVar("T")


class ChannelClosed(StreamClosedError):
    """The channel was closed (and, for receivers, drained)."""


class ChannelFull(RuntimeError):
    """``send_nowait`` on a bounded channel that is full."""


class Channel(Generic[T]):
    """A FIFO between tasks with an explicit end.

    ``maxsize=0`` is unbounded. ``close(error)`` lets receivers drain what was sent, then
    raises ``error`` (or :class:`ChannelClosed`) to them; senders fail at once.
    ``clear()`` drops everything queued in O(1).
    """

    def __init__(self, maxsize: int = 0) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be >= 0 (0 means unbounded)")
        self._maxsize = maxsize
        self._items: deque[T] = deque()
        self._closed = False
        self._error: BaseException | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def qsize(self) -> int:
        return len(self._items)

    def _update(self) -> None:
        if self._items or self._closed:
            self._readable.set()
        else:
            self._readable.clear()
        if self._closed or not self._maxsize or len(self._items) < self._maxsize:
            self._writable.set()
        else:
            self._writable.clear()

    def send_nowait(self, item: T) -> None:
        if self._closed:
            raise ChannelClosed("send on a closed channel")
        if self._maxsize and len(self._items) >= self._maxsize:
            raise ChannelFull(f"channel is full ({self._maxsize} items)")
        self._items.append(item)
        self._update()

    async def send(self, item: T) -> None:
        while True:
            if self._closed:
                raise ChannelClosed("send on a closed channel")
            if not self._maxsize or len(self._items) < self._maxsize:
                self.send_nowait(item)
                return
            await self._writable.wait()

    def recv_nowait(self) -> T:
        """Return the next item; ``ChannelClosed`` (or the close error) when ended."""
        if self._items:
            item = self._items.popleft()
            self._update()
            return item
        if self._closed:
            if self._error is not None:
                raise self._error
            raise ChannelClosed("channel closed")
        raise asyncio.QueueEmpty

    async def recv(self) -> T:
        while True:
            try:
                return self.recv_nowait()
            except asyncio.QueueEmpty:
                await self._readable.wait()

    def close(self, error: BaseException | None = None) -> None:
        """End the channel; idempotent (the first error wins)."""
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._update()

    def clear(self) -> int:
        """Drop every queued item at once; return how many were dropped."""
        n = len(self._items)
        self._items = deque()
        self._update()
        return n

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[T]:
        while True:
            try:
                item = await self.recv()
            except ChannelClosed:
                return
            yield item
