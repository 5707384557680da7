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

How it is built: :meth:`EventHub.emit` runs for every event of every call, so the
listeners and the subscriptions are tuples, replaced (copy on write) when one joins or
leaves, never copied per event; a subscription is held by a weak reference whose callback
takes it out of the tuple when it is collected (that callback holds the hub weakly too:
no cycle).
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
        self._ref: weakref.ref[Subscription] | None = None  # its entry in the hub
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
        self._hub._drop(self._ref)
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
        # copied on write (emit iterates them as they are): weak references to the
        # subscriptions, and the listeners
        self._subscribers: tuple[weakref.ref[Subscription], ...] = ()
        self._listeners: tuple[Callable[[AgentEvent], None], ...] = ()
        self._closed = False
        hub = weakref.ref(self)  # the callback must not hold the hub: a cycle

        def forget(ref: weakref.ref[Subscription]) -> None:
            live = hub()
            if live is not None:
                live._drop(ref)

        self._forget = forget

    @property
    def closed(self) -> bool:
        return self._closed

    def add_listener(self, fn: Callable[[AgentEvent], None]) -> Callable[[], None]:
        """Call ``fn(event)`` synchronously as each event happens; returns the remover.

        For transports that must act in step with the session (e.g. send ``clear`` before
        any audio of the next turn); ``fn`` must not block and should not raise (what it
        raises is logged).
        """
        self._listeners = (*self._listeners, fn)

        def remove() -> None:
            listeners = list(self._listeners)
            with contextlib.suppress(ValueError):
                listeners.remove(fn)
                self._listeners = tuple(listeners)

        return remove

    def subscribe(self) -> Subscription:
        """Every event from now on (from this call, not the first ``__anext__``), until
        :meth:`close`; an iterator that ends at once if the hub is closed."""
        sub = Subscription(self, self.max_queued)
        if self._closed:
            sub._end()
        else:
            sub._ref = weakref.ref(sub, self._forget)
            self._subscribers = (*self._subscribers, sub._ref)
        return sub

    def _drop(self, ref: weakref.ref[Subscription] | None) -> None:
        """Forget a subscription (by its reference: also the callback when it is collected)."""
        kept = tuple(r for r in self._subscribers if r is not ref)
        if len(kept) < len(self._subscribers):
            self._subscribers = kept

    def emit(self, event: AgentEvent) -> None:
        """Deliver ``event`` to every listener and subscription (nothing once closed)."""
        if self._closed:
            return
        for fn in self._listeners:
            try:
                fn(event)
            except Exception:
                log.exception("an agent event listener failed")
        for ref in self._subscribers:
            sub = ref()
            if sub is None or not sub._put(event):
                self._drop(ref)

    def close(self) -> None:
        """End every subscription (each drains what it has, then stops); idempotent."""
        self._closed = True
        subscribers, self._subscribers = self._subscribers, ()
        for ref in subscribers:
            sub = ref()
            if sub is not None:
                sub._end()
        self._listeners = ()
