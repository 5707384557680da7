"""An owner for tasks: everything it starts, its ``aclose()`` cancels and awaits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from antiphon.errors import StreamClosedError

T = TypeVar("T")
log = logging.getLogger(__name__)


class TaskOwner:
    """Owns background tasks of one object (a plugin, a pool, a session).

    ``spawn`` refuses work after ``aclose`` began; ``aclose`` is idempotent, may be called
    from several tasks at once, and returns within ``timeout`` plus one scheduling round.
    A task that fails is logged and its exception kept in :attr:`errors`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._closed = asyncio.Event()
        self.errors: list[BaseException] = []

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closing(self) -> bool:
        return self._closing

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Start ``coro`` as a task owned here."""
        if self._closing:
            coro.close()
            raise StreamClosedError(f"{self.name} is closed; cannot start {name}")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.errors.append(exc)
            log.warning("%s: task %s failed: %r", self.name, task.get_name(), exc)

    async def drain(self, timeout: float) -> bool:
        """Wait (without cancelling) for the tasks running now; True if all ended."""
        pending = list(self._tasks)
        if not pending:
            return True
        _, still = await asyncio.wait(pending, timeout=timeout)
        return not still

    async def aclose(self, timeout: float = 5.0) -> None:
        """Cancel and await every owned task (bounded by ``timeout``)."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            await cancel_and_wait(list(self._tasks), timeout=timeout, what=self.name)
        finally:
            self._closed.set()


async def cancel_and_wait(
    tasks: list[asyncio.Task[Any]], *, timeout: float, what: str = "tasks"
) -> None:
    """Cancel ``tasks`` and wait for them to finish, at most ``timeout`` seconds.

    If the caller is cancelled while waiting, the tasks stay cancelled and finish on their
    own; a task that ignores cancellation past the deadline is logged.
    """
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if not pending:
        return
    _, still = await asyncio.wait(pending, timeout=timeout)
    if still:
        log.error("%s: %d task(s) ignored cancellation for %.1fs", what, len(still), timeout)
