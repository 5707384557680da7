"""``EventHub``: every listener of a session gets every event, in order, from when it joined.

Two kinds of listener:

- a *listener* (:meth:`EventHub.add_listener`) is called synchronously as each event is
  emitted — for transports that must act in step with the session;
- a *subscription* (:meth:`EventHub.subscribe`) is an async iterator with its own
  bounded queue (``max_queued`` events, default 1,024). It is registered when
  ``subscribe()`` is called, not at its first ``__anext__``, so it sees every event
  emitted after the call. Overflow policy: **disconnect**. A subscriber that falls
  ``max_queued`` events behind is dropped from the hub; it still gets the events queued
  for it, then :class:`~antiphon.errors.ChannelFull` is raised from its iteration — it
  never misses an event silently. A subscription nobody holds any more is forgotten
  (the hub keeps subscriptions weakly).

:meth:`EventHub.close` ends every subscription (each drains what was queued, then stops).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable

from antiphon.agent.events import AgentEvent
from antiphon.aio.channel import Channel, ChannelClosed, Overflow
from antiphon.errors import ChannelFull

__all__ = ["EventHub", "Subscription"]

log = logging.getLogger(__name__)


class Subscription(AsyncIterator[AgentEvent]):
    """The events of one subscriber, in order; iteration ends when the hub closes.

    Raises :class:`~antiphon.errors.ChannelFull` (after the queued events) if the
    subscriber fell too far behind and was disconnected. :meth:`aclose` unsubscribes.
    """

    def __init__(self, hub: EventHub, max_queued: int) -> None:
        self._hub = hub
        self._queue: Channel[AgentEvent] = Channel(
            max_queued, Overflow.FAIL, name="events() subscription"
        )

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> AgentEvent:
        try:
            return await self._queue.recv()
        except ChannelClosed:
            raise StopAsyncIteration from None

    def _put(self, event: AgentEvent) -> bool:
        """Queue ``event``; False if this subscriber is gone or was disconnected."""
        try:
            self._queue.send_nowait(event)
        except ChannelClosed:
            return False
        except ChannelFull as exc:
            log.warning("an events() subscriber fell %d events behind: disconnected", exc.maxsize)
            self._queue.close(
                ChannelFull(
                    f"events() subscriber fell {exc.maxsize} events behind and was "
                    "disconnected; read events as they come, or use on_event()",
                    maxsize=exc.maxsize,
                    what="events() subscription",
                )
            )
            return False
        return True

    def _end(self) -> None:
        self._queue.close()

    async def aclose(self) -> None:
        """Stop receiving events (what was queued is dropped)."""
        self._hub._subscribers.discard(self)
        self._queue.clear()
        self._queue.close()


class EventHub:
    """Fan events out to listeners and subscriptions; :meth:`close` ends every subscription.

    ``max_queued``: events a subscription may hold unread before it is disconnected.
    """

    def __init__(self, *, max_queued: int = 1024) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be >= 1")
        self.max_queued = max_queued
        self._subscribers: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._listeners: list[Callable[[AgentEvent], None]] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def add_listener(self, fn: Callable[[AgentEvent], None]) -> Callable[[], None]:
        """Call ``fn(event)`` synchronously as each event happens; returns the remover.

        For transports that must act in step with the session (e.g. send ``clear`` before
        any audio of the next turn); ``fn`` must not block and should not raise (what it
        raises is logged).
        """
        self._listeners.append(fn)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(fn)

        return remove

    def subscribe(self) -> Subscription:
        """Every event from now on (from this call, not the first ``__anext__``), until
        :meth:`close`; an iterator that ends at once if the hub is closed."""
        sub = Subscription(self, self.max_queued)
        if self._closed:
            sub._end()
        else:
            self._subscribers.add(sub)
        return sub

    def emit(self, event: AgentEvent) -> None:
        """Deliver ``event`` to every listener and subscription (nothing once closed)."""
        if self._closed:
            return
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:
                log.exception("an agent event listener failed")
        for sub in list(self._subscribers):
            if not sub._put(event):
                self._subscribers.discard(sub)

    def close(self) -> None:
        """End every subscription (each drains what it has, then stops); idempotent."""
        self._closed = True
        for sub in list(self._subscribers):
            sub._end()
        self._subscribers.clear()
        self._listeners.clear()
