"""``EventHub``: every listener of a session gets every event, in order, from when it joined."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from antiphon.agent.events import AgentEvent
from antiphon.aio.channel import Channel, ChannelClosed

log = logging.getLogger(__name__)


class EventHub:
    """Fan events out to subscribers; :meth:`close` ends every subscription."""

    def __init__(self) -> None:
        self._subscribers: list[Channel[AgentEvent]] = []
        self._listeners: list[Callable[[AgentEvent], None]] = []
        self._closed = False

    def add_listener(self, fn: Callable[[AgentEvent], None]) -> Callable[[], None]:
        """Call ``fn(event)`` synchronously as each event happens; returns the remover.

        For transports that must act in step with the session (e.g. send ``clear`` before
        any audio of the next turn); ``fn`` must not block and should not raise.
        """
        self._listeners.append(fn)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(fn)

        return remove

    async def subscribe(self) -> AsyncIterator[AgentEvent]:
        """Every event from now on, until :meth:`close`."""
        if self._closed:
            return
        sub: Channel[AgentEvent] = Channel()
        self._subscribers.append(sub)
        try:
            while True:
                try:
                    yield await sub.recv()
                except ChannelClosed:
                    return
        finally:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(sub)

    def emit(self, event: AgentEvent) -> None:
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:
                log.exception("an agent event listener failed")
        for sub in self._subscribers:
            with contextlib.suppress(ChannelClosed):
                sub.send_nowait(event)

    def close(self) -> None:
        self._closed = True
        for sub in self._subscribers:
            sub.close()
