"""The response deadline of a realtime session: one timer per session, re-armed lazily.

How it is built: the connection's handler only moves a timestamp (:meth:`ResponseWatchdog.progress`)
on every server message; nothing is cancelled or re-created per message. The timer is
started when a response becomes owed (:meth:`ResponseWatchdog.track`), and when it fires
early (progress was made since it was set) it sets itself again at the new due time.
While a response is being produced the limit is the ``idle`` deadline (the response
stopped), before it started the ``response`` deadline (no response).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from antiphon.aio.callbacks import ignore
from antiphon.errors import ProviderTimeoutError
from antiphon.protocols.realtime import RealtimeState
from antiphon.services.realtime.events import RealtimeDeadlines

__all__ = ["ResponseWatchdog"]


class ResponseWatchdog:
    """Fails a session (``on_expire``) when the server goes silent while a response is
    owed by ``sm``.

    Args:
        sm: the session's state machine (``awaiting``, ``current``).
        deadlines: ``response`` (until a response starts) and ``idle`` (within one).
        provider: for the error.
        on_expire: called once with the :class:`ProviderTimeoutError`.
    """

    def __init__(
        self,
        sm: RealtimeState,
        deadlines: RealtimeDeadlines,
        provider: str,
        on_expire: Callable[[ProviderTimeoutError], None],
    ) -> None:
        self._sm = sm
        self._deadlines = deadlines
        self._provider = provider
        self._on_expire = on_expire
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._progress_at = 0.0
        self._was_awaiting = False
        self._stopped = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._progress_at = loop.time()

    def progress(self) -> None:
        """The server said something (read lazily by the timer)."""
        if self._loop is not None:
            self._progress_at = self._loop.time()

    def track(self) -> None:
        """Start the deadline when a response becomes owed; keep the timer no later than due."""
        if self._loop is None or self._stopped:
            return
        awaiting = self._sm.awaiting
        if awaiting and not self._was_awaiting:
            self._progress_at = self._loop.time()
        self._was_awaiting = awaiting
        if awaiting:
            self._arm()

    def stop(self) -> None:
        """Cancel the timer for good (the session ended), and let go of ``on_expire``
        (the session's method: the session holds this watchdog, a cycle)."""
        self._stopped = True
        self._on_expire = ignore
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _limit(self) -> float:
        d = self._deadlines
        return d.idle if self._sm.current is not None else d.response

    def _arm(self) -> None:
        assert self._loop is not None
        due = self._progress_at + self._limit()
        timer = self._timer
        if timer is not None:
            if timer.when() <= due:
                return
            timer.cancel()
        self._timer = self._loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._stopped or not self._sm.awaiting:
            return  # armed again when a response is owed
        assert self._loop is not None
        limit = self._limit()
        if self._loop.time() < self._progress_at + limit:
            self._arm()
            return
        self._on_expire(
            ProviderTimeoutError(
                "the response stopped" if self._sm.current is not None else "no response",
                provider=self._provider,
                stage="receive",
                timeout=limit,
                hint="the server went silent while a response was owed",
            )
        )
