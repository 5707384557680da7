"""``EventHub``: every listener of a session gets every event, in order, from when it joined."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from antiphon.agent.events import AgentEvent
from antiphon.aio.channel import Channel, ChannelClosed


class EventHub:
    """Fan events out to subscribers; :meth:`close` ends every subscription."""

    def __init__(self) -> None:
        self._subscribers: list[Channel[AgentEvent]] = []
        self._closed = False

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
        for sub in self._subscribers:
            with contextlib.suppress(ChannelClosed):
                sub.send_nowait(event)

    def close(self) -> None:
        self._closed = True
        for sub in self._subscribers:
            sub.close()
