"""A shared worker thread that runs many callers' small jobs in batches (DESIGN rule 14).

:class:`BatchWorker` serves work that is small, frequent and the same for every call (a
VAD window of each of many calls): whatever was queued while the thread worked runs in
the next batch, and the batch's results go back to the loop in one thread hop, so the
cost per frame on the loop is one queue put, whatever the number of calls.

Built like :class:`~antiphon.aio.worker.ThreadWorker` (which owns one blocking engine for
one caller): a ``queue.SimpleQueue`` of jobs, results posted back with
``loop.call_soon_threadsafe`` (dropped if the loop closed), the thread a daemon so a
native call that never returns cannot keep the process alive, and ``aclose`` waiting
(bounded) for the thread's last act before joining it. The two share that idiom and no
state, so each has its module; ``antiphon.aio.worker`` re-exports this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["BatchWorker"]

log = logging.getLogger("antiphon.aio.worker")  # the workers' logger, as before the split
T = TypeVar("T")


class BatchWorker:
    """A shared thread running many callers' small jobs in batches (see the module doc).

    :meth:`submit` queues ``job()`` (run on the thread) and, when it returns,
    ``done(result)`` on the loop; ``done`` calls of one batch are made in one thread hop,
    in submission order. A job that raises is logged and its ``done`` is not called.
    ``max_pending`` bounds the queue: beyond it :meth:`submit` returns False (the caller
    decides: run inline, drop, fail). Close with :meth:`aclose` (idempotent).
    """

    def __init__(self, name: str, *, max_pending: int = 4096) -> None:
        self.name = name
        self.max_pending = max_pending
        self.batches = 0
        self.jobs = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[Any], None]] | None] = (
            queue.SimpleQueue()
        )
        self._pending = 0
        self._lock = threading.Lock()
        self._closing = False
        self._exited: asyncio.Future[None] | None = None
        self._thread: threading.Thread | None = None

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return self._pending

    def _ensure(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._exited = self._loop.create_future()
            self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
            self._thread.start()

    def submit(self, job: Callable[[], T], done: Callable[[T], None]) -> bool:
        """Queue ``job``; ``done(result)`` runs on the loop. False when full or closed."""
        if self._closing:
            return False
        with self._lock:
            if self._pending >= self.max_pending:
                return False
            self._pending += 1
        self._ensure()
        self._jobs.put((job, done))
        return True

    def _main(self) -> None:
        try:
            while True:
                first = self._jobs.get()
                if first is None:
                    break
                batch = [first]
                stop = False
                while True:
                    try:
                        item = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                results: list[tuple[Callable[[Any], None], Any]] = []
                for job, done in batch:
                    try:
                        results.append((done, job()))
                    except Exception:
                        log.exception("%s: a job failed", self.name)
                with self._lock:
                    self._pending -= len(batch)
                self.batches += 1
                self.jobs += len(batch)
                self._post(_deliver, results)
                if stop:
                    break
        finally:
            if self._exited is not None:
                self._post(_resolve, self._exited)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)

    async def aclose(self, timeout: float = 2.0) -> bool:
        """Run what is queued, stop the thread and join it; True if it ended in time."""
        self._closing = True
        if self._thread is None:
            return True
        self._jobs.put(None)
        assert self._exited is not None
        if not self._exited.done():
            await asyncio.wait([self._exited], timeout=timeout)
        if not self._exited.done():
            log.error(
                "%s: worker thread still busy after %.1fs; abandoned (daemon)", self.name, timeout
            )
            return False
        self._thread.join(timeout=0.5)
        return not self._thread.is_alive()


def _deliver(results: list[tuple[Callable[[Any], None], Any]]) -> None:
    for done, result in results:
        try:
            done(result)
        except Exception:
            log.exception("a batch result's callback failed")


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
