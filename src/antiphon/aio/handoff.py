"""A bounded hand-off of items from a worker thread to a task on the event loop.

An engine thread (a voice synthesising audio) cannot ``await`` a full
:class:`~antiphon.aio.channel.Channel`, and ``call_soon_threadsafe`` into one that is
full would have to drop or fail. :class:`Handoff` keeps the bound on the thread's side
instead (DESIGN rule 13, policy ``BLOCK``, nothing lost): the thread takes one of
``maxsize`` slots (a ``threading.Semaphore``) before it posts an item, and the reader
gives the slot back when it receives the item. So at most ``maxsize`` items are ever in
flight, the channel behind (``Overflow.FAIL`` as a guard) never overflows, and a reader
that falls behind slows the engine down rather than growing memory.

``close()`` (the reader is done: finished, failed or cancelled) wakes a thread waiting
for a slot; its ``put`` then returns ``False`` so the job can stop. Items posted after a
close, or after the loop closed, are dropped (nobody would read them).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Generic, TypeVar

from antiphon.aio.channel import Channel, Overflow

__all__ = ["Handoff"]

T = TypeVar("T")


class Handoff(Generic[T]):
    """At most ``maxsize`` items from one thread to the loop; the thread blocks when full.

    Made on the event loop (it binds the running loop). ``put`` is called on the thread,
    ``recv`` and ``close`` on the loop.
    """

    def __init__(self, maxsize: int, *, name: str = "handoff") -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._loop = asyncio.get_running_loop()
        self._maxsize = maxsize
        self._slots = threading.Semaphore(maxsize)
        self._closed = threading.Event()
        self._channel: Channel[T] = Channel(maxsize, Overflow.FAIL, name=name)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def qsize(self) -> int:
        """Items that reached the loop and wait for :meth:`recv`."""
        return self._channel.qsize()

    def put(self, item: T) -> bool:
        """Post ``item`` (on the worker thread), waiting for a slot; ``False`` once closed."""
        self._slots.acquire()
        if self._closed.is_set():
            self._slots.release()  # let any other waiter see the close too
            return False
        try:
            self._loop.call_soon_threadsafe(self._deliver, item)
        except RuntimeError:  # the loop is closed: nobody reads any more
            return False
        return True

    def _deliver(self, item: T) -> None:
        if self._closed.is_set():
            return
        self._channel.send_nowait(item)  # never full: a slot was taken for it

    async def recv(self) -> T:
        """The next item (``ChannelClosed`` after :meth:`close`)."""
        item = await self._channel.recv()
        self._slots.release()
        return item

    def close(self) -> None:
        """The reader is done: drop what is queued and wake a thread waiting for a slot."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._channel.clear()
        self._channel.close()
        self._slots.release()  # a waiting put wakes, sees the close, and passes it on
