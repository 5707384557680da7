"""A bounded pool of worker threads for synchronous tools (DESIGN rule 14).

How it is built: a ``ThreadPoolExecutor`` of ``max_threads`` threads whose every call is
awaited on the loop within its timeout. A Python thread cannot be killed, so a call past
its deadline keeps its thread until the function returns: it is counted as
:attr:`ToolThreads.overdue`, named in the timeout message, and logged when it holds the
whole pool, so a hung tool cannot exhaust the pool silently. :mod:`antiphon.services.tools`
runs synchronous tools here and re-exports both names.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
from collections.abc import Callable
from typing import Any

from antiphon.errors import AntiphonError, ConfigError

__all__ = ["ToolThreads", "ToolTimeoutError"]

log = logging.getLogger(__name__)


class ToolTimeoutError(AntiphonError):
    """A tool did not return within its timeout (``timeout``, seconds; ``tool``).

    Not a builtin ``TimeoutError``: a tool's own ``TimeoutError`` stays distinct.
    """

    def __init__(self, message: str, *, tool: str = "", timeout: float | None = None) -> None:
        super().__init__(message)
        self.tool = tool
        self.timeout = timeout


class ToolThreads:
    """A bounded pool of worker threads for synchronous tools.

    ``max_threads`` calls run at once; more wait for a thread (within their timeout).
    :attr:`overdue` counts calls whose deadline passed while their thread still runs
    (a thread cannot be killed). :meth:`aclose` refuses new calls, lets idle threads
    exit and waits (bounded) for running ones; a thread still running then is logged.
    """

    def __init__(self, max_threads: int = 4, *, name: str = "antiphon-tool") -> None:
        if not isinstance(max_threads, int) or isinstance(max_threads, bool) or max_threads < 1:
            raise ConfigError(f"max_threads must be a positive int, got {max_threads!r}")
        self.max_threads = max_threads
        self.name = name
        self._executor = concurrent.futures.ThreadPoolExecutor(max_threads, thread_name_prefix=name)
        self._futures: set[concurrent.futures.Future[Any]] = set()
        self._overdue: set[concurrent.futures.Future[Any]] = set()
        self._closed = False

    @property
    def running(self) -> int:
        """Threads running a tool now."""
        return sum(1 for f in self._futures if f.running())

    @property
    def overdue(self) -> int:
        """Calls past their deadline whose thread has not returned yet."""
        return sum(1 for f in self._overdue if not f.done())

    async def run(self, fn: Callable[[], Any], *, timeout: float | None, what: str) -> Any:
        """Run ``fn()`` on a thread; :class:`ToolTimeoutError` after ``timeout`` seconds
        (the thread goes on until ``fn`` returns; its result is dropped)."""
        if self._closed:
            raise ConfigError(f"{self.name} threads are shut down; cannot run {what}")
        ctx = contextvars.copy_context()
        future = self._executor.submit(ctx.run, fn)
        self._futures = {f for f in self._futures if not f.done()}
        self._futures.add(future)
        waiter = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait([waiter], timeout=timeout)
        except asyncio.CancelledError:
            self._abandon(future)
            waiter.cancel()
            raise
        if not done:
            self._abandon(future)
            waiter.cancel()  # the thread's late result (or error) is dropped
            assert timeout is not None
            stuck = self.overdue
            raise ToolTimeoutError(
                f"tool {what} did not return within {timeout:g}s"
                + (
                    f" ({stuck} of {self.max_threads} tool threads are still running calls "
                    "past their timeout)"
                    if not future.cancelled()
                    else " (it waited for a free tool thread)"
                ),
                tool=what,
                timeout=timeout,
            )
        return waiter.result()

    def _abandon(self, future: concurrent.futures.Future[Any]) -> None:
        if not future.cancel():  # running: the thread cannot be stopped
            self._overdue = {f for f in self._overdue if not f.done()}
            self._overdue.add(future)
            if len(self._overdue) >= self.max_threads:
                log.warning(
                    "%s: all %d tool threads run calls past their timeout",
                    self.name,
                    self.max_threads,
                )

    def shutdown(self) -> None:
        """Refuse new calls and let idle threads exit (does not wait)."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def aclose(self, timeout: float = 1.0) -> None:
        """Shut down, and wait up to ``timeout`` seconds for running tools to return."""
        self.shutdown()
        running = [asyncio.wrap_future(f) for f in self._futures if not f.done()]
        if running:
            await asyncio.wait(running, timeout=timeout)
            for w in running:
                w.cancel()
        if self.running:
            log.warning(
                "%s: %d tool thread(s) still running a tool at close; "
                "a thread cannot be killed, it ends when the tool returns",
                self.name,
                self.running,
            )
