"""An owner for tasks: everything it starts, its ``aclose()`` cancels and awaits.

Nursery semantics (DESIGN rule 12, after trio): a task that dies with an exception is
reported to its owner at once through ``on_failure``, so the owner can enter a terminal
failed state instead of living on as a zombie. :func:`shielded_wait` lets a close
finish even when the caller is cancelled mid-way, then re-raises the cancellation.

A cancelled task keeps its ``CancelledError`` (and so the traceback, its frames and their
locals, often the object that holds the task) until someone asks for its result: a
reference cycle that only a full garbage collection frees, and on a busy server those
pause the event loop for tens of milliseconds. :func:`reap` drops it; the owner reaps
every task it owned, and the session's other cancelled tasks are reaped where they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, TypeVar

from antiphon.errors import StreamClosedError

__all__ = ["TaskGroup", "TaskOwner", "cancel_and_wait", "reap", "shielded_wait"]

T = TypeVar("T")
log = logging.getLogger(__name__)

FailureHandler = Callable[[asyncio.Task[Any], BaseException], None]


def reap(task: asyncio.Future[Any]) -> None:
    """Drop the cancellation a finished, cancelled ``task`` keeps (see the module doc).

    Usable as a done callback. Does nothing to a task that is running, or that ended
    otherwise (its result or exception stays for whoever awaits it).
    """
    if task.cancelled():
        with contextlib.suppress(asyncio.CancelledError):
            task.exception()  # hands over the kept CancelledError, which is dropped here


class TaskGroup(asyncio.TaskGroup):
    """:class:`asyncio.TaskGroup` that leaves no reference cycle when it is cancelled.

    Its tasks are reaped as they end (:func:`reap`). And a group cancelled from outside
    re-raises the ``CancelledError`` from ``__aexit__``, whose frame keeps that error in
    a local while the error's traceback keeps the frame (CPython 3.11 to 3.13): the
    error leaves here without that traceback, which only said where the group waited.
    """

    def create_task(
        self,
        coro: Generator[Any, None, T] | Coroutine[Any, Any, T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        """Start ``coro`` in the group; the task is reaped when it ends."""
        task = super().create_task(coro, name=name, context=context)
        task.add_done_callback(reap)
        return task

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await super().__aexit__(et, exc, tb)
            return
        except asyncio.CancelledError as error:
            cancelled = error.with_traceback(None)
        et = exc = tb = None
        try:
            raise cancelled
        finally:
            del cancelled  # not kept by this frame, which the new traceback holds


class TaskOwner:
    """Owns background tasks of one object (a plugin, a pool, a session).

    ``spawn`` refuses work after ``aclose`` began; ``aclose`` is idempotent, may be called
    from several tasks at once, and returns within ``timeout`` plus one scheduling round.
    A task that fails (ends with an exception other than cancellation) is logged, its
    exception kept in :attr:`errors`, and ``on_failure(task, exc)`` is called at once,
    synchronously: the owner reacts there (cancel the siblings, enter a failed state).
    ``on_failure`` must not block; what it raises is logged.
    """

    def __init__(self, name: str, *, on_failure: FailureHandler | None = None) -> None:
        self.name = name
        self.on_failure = on_failure
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
        if task.cancelled():
            reap(task)
        elif (exc := task.exception()) is not None:
            self.errors.append(exc)
            log.warning("%s: task %s failed: %r", self.name, task.get_name(), exc)
            if self.on_failure is not None:
                try:
                    self.on_failure(task, exc)
                except Exception:
                    log.exception("%s: the failure handler failed", self.name)

    @property
    def failed(self) -> bool:
        """Whether an owned task has failed."""
        return bool(self.errors)

    async def drain(self, timeout: float) -> bool:
        """Wait (without cancelling) for the tasks running now; True if all ended."""
        pending = list(self._tasks)
        if not pending:
            return True
        _, still = await asyncio.wait(pending, timeout=timeout)
        return not still

    async def aclose(self, timeout: float = 5.0) -> None:
        """Cancel and await every owned task (bounded by ``timeout``).

        Then the failure handler is let go (it is usually a method of the owner, which
        holds this: a cycle); a task that ignored the cancellation and fails later is
        only logged, its owner being closed.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            await cancel_and_wait(list(self._tasks), timeout=timeout, what=self.name)
        finally:
            self.on_failure = None
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


async def shielded_wait(task: asyncio.Future[T]) -> T:
    """Wait for ``task`` to end even if the caller is cancelled meanwhile.

    For a close that must complete (DESIGN rule 12): the caller's cancellation does not
    reach ``task``; once ``task`` has ended, the cancellation is re-raised (never
    swallowed). ``task`` must be bounded in time (its own deadlines), or this waits as
    long as it runs. If ``task`` itself was cancelled, ``CancelledError`` is raised.
    """
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    if cancelled is not None:
        raise cancelled
    return task.result()
