"""What the caller of a realtime session iterates: :class:`SessionOutput`.

How it is built: one bounded channel of typed events, filled by the connection's handler
(no task: the consumer's wake-up is the one task hop per audio delta) and read by the
caller (``async for ev in session``). It is bounded in seconds of agent audio, not in
items (policy: fail: a caller that stops reading fails the session instead of growing
memory). An interruption is O(1): it raises the generation below which audio, transcripts
and calls are skipped as they are read, so queued agent audio is dropped at once without
touching the queue. It remembers how much audio of each recent item was yielded, which is
what the user heard when the caller does not say (the truncation point of
``interrupt()``).
"""

from __future__ import annotations

from antiphon.aio.channel import Channel, ChannelClosed
from antiphon.errors import ProviderError
from antiphon.services.realtime.events import DROPPABLE, AgentAudio, RealtimeEvent

__all__ = ["SessionOutput"]

#: Items whose yielded audio is remembered (the newest is the one being heard).
_RECENT_ITEMS = 16


class SessionOutput:
    """The session's output queue (see the module docstring).

    Args:
        provider: for the error.
        max_backlog: seconds of agent audio allowed to wait for the caller.
    """

    def __init__(self, provider: str, max_backlog: float) -> None:
        self.provider = provider
        self.max_backlog = max_backlog
        self._out: Channel[RealtimeEvent] = Channel(name="realtime session output")
        self._seconds = 0.0
        self._drop_below = 0  # events of older generations are skipped when read
        self.generation = 0  # of the newest event put
        self._yielded_ms: dict[str, float] = {}

    def put(self, ev: RealtimeEvent) -> ProviderError | None:
        """Queue ``ev``; the error that must fail the session if the caller fell behind."""
        self.generation = max(self.generation, ev.generation)
        if isinstance(ev, AgentAudio):
            self._seconds += ev.frame.duration
            if self._seconds > self.max_backlog:
                return ProviderError(
                    f"more than {self.max_backlog:g}s of agent audio was not read",
                    provider=self.provider,
                    stage="deliver",
                    hint="iterate the session (async for ev in session) while it runs",
                )
        self._out.send_nowait(ev)
        return None

    def close(self, error: ProviderError | None) -> None:
        """No more events; the reader sees ``error`` (if any) after the queued ones."""
        self._out.close(error)

    def interrupt(self) -> tuple[int, str, float]:
        """Skip everything queued up to now: (the generation interrupted, the item being
        heard, milliseconds of it yielded)."""
        target = self.generation
        self._drop_below = max(self._drop_below, target + 1)
        item, yielded = next(reversed(self._yielded_ms.items()), ("", 0.0))
        return target, item, yielded

    async def next(self) -> RealtimeEvent:
        """The next event to yield (raises StopAsyncIteration at the end)."""
        while True:
            try:
                ev = await self._out.recv()
            except ChannelClosed:
                raise StopAsyncIteration from None
            if isinstance(ev, AgentAudio):
                self._seconds -= ev.frame.duration
            if isinstance(ev, DROPPABLE) and ev.generation < self._drop_below:
                continue
            if isinstance(ev, AgentAudio):
                ms = self._yielded_ms.pop(ev.item_id, 0.0) + ev.frame.duration * 1000
                self._yielded_ms[ev.item_id] = ms  # re-inserted: the newest item is last
                while len(self._yielded_ms) > _RECENT_ITEMS:
                    del self._yielded_ms[next(iter(self._yielded_ms))]
            return ev
