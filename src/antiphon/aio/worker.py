"""Owned worker threads: blocking or native work off the event loop (DESIGN rules 3, 14).

- :class:`ThreadWorker`: one dedicated thread that owns one blocking engine (a native
  decoder, an SDK object) and makes every call on it; calls have deadlines, a call that
  misses one marks the worker ``stuck``; :meth:`ThreadWorker.aclose` joins the thread
  within a deadline. Used by in-process STT engines.
- :class:`BatchWorker` (in :mod:`antiphon.aio.batch`, re-exported here): one shared
  thread that runs small jobs of many callers (a VAD window of each of many calls) in
  batches: whatever was queued while it worked runs in the next batch, and the batch's
  results go back to the loop in one thread hop, so the cost per frame on the loop is one
  queue put, whatever the number of calls.

Both are built the same way: a ``queue.SimpleQueue`` of jobs, results posted back with
``loop.call_soon_threadsafe`` (dropped if the loop closed), the thread a daemon so a native
call that never returns cannot keep the process alive, and ``aclose`` waiting (bounded)
for the thread's last act before joining it. They share that idiom and no state, so the
batch worker has its own module; this one keeps the engine's thread with its slot and the
priority of inference threads, which only engine threads take.

Real-time work before batch inference (Linux, where nice is per thread and a new thread
takes its creator's; set by the server, off elsewhere): the threads of inference engines
run :data:`INFERENCE_NICE` below
the event loop and the VAD worker, so five calls' decoding cannot keep a barge-in waiting
for a core. Two ways, because engines make threads in two places:

- a :class:`ThreadWorker` with ``inference=True`` lowers its own thread first, so the
  native pools its engine creates on it (onnxruntime's intra-op pool, whose calling
  thread computes too) inherit the priority;
- :func:`build_niced` builds an engine on a short-lived lowered thread, for engines
  loaded on a thread that is not theirs alone (a shared Whisper model: CTranslate2's
  workers and their OpenMP team).

Lowered threads that hold the GIL could stall the threads that need it (priority
inversion); the engines' threads hold it only between native calls. The pools alone
leave the engine threads (faster-whisper's Python, the onnxruntime caller that computes
a share of each Piper run) competing with the VAD at the same priority; lowering them
too gave the better barge-in p95 in two A/B runs of three on a loaded 2-core machine
(0.18 against 0.31 s, 0.18 against 1.04 s; in the third 0.63 against 0.36 s:
``docs/twilio.md``). Nice values weigh within a scheduling group (a session's autogroup,
a cgroup): a server with its group to itself yields only to its own real-time threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from antiphon.aio.batch import BatchWorker
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError, StreamClosedError

__all__ = [
    "INFERENCE_NICE",
    "NICE_ENV",
    "SERVE_INFERENCE_NICE",
    "BatchWorker",
    "ThreadWorker",
    "WorkerSlot",
    "build_niced",
    "inference_nice_from_env",
    "lower_thread_priority",
    "set_inference_nice",
    "thread_nice",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
E = TypeVar("E")

_worker_ids = itertools.count(1)

INFERENCE_NICE = 0
"""Nice steps by which inference engines' threads run below real-time work (0: off).

Off by default: in a library, a test or ``antiphon talk`` there is no real-time work to
yield to, and a lowered engine would only yield to unrelated processes of the same
scheduling group (on a busy CI machine, a test's models starved). The server sets it
(:func:`antiphon.server.app.serve`: :data:`SERVE_INFERENCE_NICE`, or the
``ANTIPHON_INFERENCE_NICE`` environment variable, see :func:`inference_nice_from_env`)
before its models load; it is read when an engine is built."""

SERVE_INFERENCE_NICE = 5
"""What ``antiphon serve`` uses. At +5 a busy inference thread weighs about a third of a
default one in Linux's fair scheduler: the event loop and the VAD get a core first when
they wake, and inference still gets its share when the machine is loaded by other work.
+10 (a tenth) starved inference on a loaded 2-core machine: calls went unanswered and the
server's model load missed its deadline (``docs/twilio.md``)."""

NICE_ENV = "ANTIPHON_INFERENCE_NICE"


def inference_nice_from_env(default: int) -> int:
    """``ANTIPHON_INFERENCE_NICE`` (an int from 0 to 19), else ``default``.

    Raises:
        ConfigError: the variable is set to something else (one line saying what to set).
    """
    raw = os.environ.get(NICE_ENV, "").strip()
    if not raw:
        return default
    try:
        steps = int(raw)
    except ValueError:
        steps = -1
    if not 0 <= steps <= 19:
        raise ConfigError(f"{NICE_ENV} must be an integer from 0 (off) to 19, got {raw!r}")
    return steps


def set_inference_nice(steps: int) -> None:
    """Run engines built from now on ``steps`` nice values below real-time work (0: off)."""
    global INFERENCE_NICE
    if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps <= 19:
        raise ConfigError(f"inference nice must be an int from 0 to 19, got {steps!r}")
    INFERENCE_NICE = steps


def thread_nice(native_id: int | None = None) -> int | None:
    """The nice value of a thread (the calling one by default); None where unknown."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return os.getpriority(os.PRIO_PROCESS, native_id or threading.get_native_id())
    except OSError:
        return None


def lower_thread_priority(steps: int) -> bool:
    """Run the calling thread ``steps`` nice values below the process's main thread.

    Idempotent: a thread already that low (or lower) stays as it is; the value is capped
    at 19. Linux only (there ``PRIO_PROCESS`` with a thread id acts on that one thread);
    elsewhere, or when refused, nothing changes and it returns False. It cannot be undone
    without privilege: call it only on a thread that does nothing but inference, never
    on the event loop's.
    """
    if steps <= 0:
        return False
    current, base = thread_nice(), thread_nice(os.getpid())  # the main thread's id is the pid
    if current is None or base is None:
        return False
    target = min(19, base + steps)
    if current >= target:
        return True
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), target)
    except OSError:
        return False
    return True


def build_niced(factory: Callable[[], T], *, name: str, nice: int | None = None) -> T:
    """``factory()``, run on a new thread lowered by ``nice`` steps, and joined.

    The native threads the factory creates (a CTranslate2 model's workers and OpenMP
    team, an onnxruntime session's intra-op pool) inherit the lower priority; the calling
    thread keeps its own. Blocking: call it on an engine's worker thread, never on the
    event loop. ``nice`` defaults to :data:`INFERENCE_NICE` (read at call time); its
    exception is re-raised here.
    """
    steps = INFERENCE_NICE if nice is None else nice
    if steps <= 0:
        return factory()
    out: list[T] = []
    err: list[BaseException] = []

    def main() -> None:
        lower_thread_priority(steps)
        try:
            out.append(factory())
        except BaseException as exc:
            err.append(exc)

    thread = threading.Thread(target=main, name=f"{name}-build", daemon=True)
    thread.start()
    thread.join()
    if err:
        raise err[0]
    return out[0]


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class ThreadWorker(Generic[E]):
    """A dedicated thread that owns one blocking engine and makes every call on it.

    The engine is built on the thread by ``factory`` (its first job). :meth:`call` runs a
    function of the engine there and waits for it within a deadline; a call that misses
    it marks the worker ``stuck`` (it is then never reused). With ``inference=True`` the
    thread runs :data:`INFERENCE_NICE` below the event loop (see the module doc).
    :meth:`aclose` asks the
    thread to close the engine and end, and joins it within a deadline; a native call
    that never returns cannot be interrupted, so the thread is a daemon and finishes the
    close by itself if the call ever returns.
    """

    def __init__(
        self,
        factory: Callable[[], E],
        *,
        provider: str,
        close: Callable[[E], None] | None = None,
        inference: bool = False,
    ) -> None:
        self.id = next(_worker_ids)
        self.inference = inference
        self.provider = provider
        self._loop = asyncio.get_running_loop()
        self._factory = factory
        self._close_engine = close
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._engine: E | None = None
        self._exited: asyncio.Future[None] = self._loop.create_future()
        self.stuck: str | None = None
        self._closing = False
        self._thread = threading.Thread(
            target=self._main, name=f"{provider}-engine-{self.id}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"<ThreadWorker {self.provider}#{self.id} stuck={self.stuck}>"

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def loaded(self) -> bool:
        """The engine was built (its factory ran) and not closed."""
        return self._engine is not None

    @property
    def usable(self) -> bool:
        """Healthy and not closing: may take another stream."""
        return self.stuck is None and not self._closing and self._thread.is_alive()

    # -- on the thread
    def _main(self) -> None:
        if self.inference:  # and the native pools its engine creates here inherit it
            lower_thread_priority(INFERENCE_NICE)
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    break
                job()
        finally:
            engine, self._engine = self._engine, None
            if engine is not None and self._close_engine is not None:
                try:
                    self._close_engine(engine)
                except Exception:
                    log.exception("%s: closing the engine failed", self.provider)
            del engine
            self.post(_settle, self._exited, None, None)

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop (from any thread; dropped if it closed)."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)

    # -- on the loop
    def submit(self, fn: Callable[[E], T]) -> asyncio.Future[T]:
        """Queue ``fn(engine)`` on the thread; the future resolves on the loop."""
        if self._closing:
            raise StreamClosedError(f"{self.provider} engine worker is closed")
        fut: asyncio.Future[T] = self._loop.create_future()
        fut.add_done_callback(_retrieve)

        def job() -> None:
            if fut.cancelled():
                return
            try:
                if self._engine is None:
                    self._engine = self._factory()
                result: Any = fn(self._engine)
            except BaseException as exc:
                self.post(_settle, fut, None, exc)
            else:
                self.post(_settle, fut, result, None)

        self._jobs.put(job)
        return fut

    async def call(self, fn: Callable[[E], T], *, timeout: float, stage: str) -> T:
        """Run ``fn(engine)`` on the thread within ``timeout`` seconds.

        Raises ``ProviderTimeoutError`` (and marks the worker stuck) on expiry, the
        function's ``ProviderError`` as is, and any other exception as ``ProviderError``.
        """
        fut = self.submit(fn)
        try:
            done, _ = await asyncio.wait([fut], timeout=timeout)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        if not done:
            fut.cancel()
            self.stuck = stage
            raise ProviderTimeoutError(
                "the engine did not return",
                provider=self.provider,
                stage=stage,
                timeout=timeout,
                hint="the engine thread is abandoned; it ends by itself if the call returns",
            )
        exc = fut.exception()
        if exc is None:
            return fut.result()
        if isinstance(exc, ProviderError):
            raise exc
        raise ProviderError(
            f"the engine raised {exc!r}", provider=self.provider, stage=stage
        ) from exc

    async def load(self, timeout: float) -> None:
        """Build the engine now if it is not (within ``timeout``), so that a failed load
        is the caller's error at once rather than a job's that nobody awaits."""
        if not self.loaded:
            await self.call(lambda engine: None, timeout=timeout, stage="load")

    def retire(self) -> None:
        """Take no more jobs; the thread ends by itself after the queued ones (idempotent)."""
        if not self._closing:
            self._closing = True
            self._jobs.put(None)

    async def aclose(self, timeout: float) -> bool:
        """Stop the thread (after queued jobs) and join it; True if it ended in time."""
        self.retire()
        if not self._exited.done():
            await asyncio.wait([self._exited], timeout=timeout)
        if not self._exited.done():
            log.error(
                "%s: engine thread %s still busy (%s) after %.1fs; abandoned (daemon)",
                self.provider,
                self._thread.name,
                self.stuck or "closing",
                timeout,
            )
            return False
        self._thread.join(timeout=0.5)  # it has posted its last act: returns at once
        return not self._thread.is_alive()


class WorkerSlot(Generic[E]):
    """The one :class:`ThreadWorker` of an engine plugin, replaced when a call on it hung.

    :meth:`get` gives the current worker, or a fresh one from ``make`` when there is none
    or the current one is stuck or closing; a replaced worker is retired (its thread ends
    by itself once the hung call returns) and kept until its thread has ended, so
    :attr:`threads` and :meth:`aclose` still see it.
    """

    def __init__(self, make: Callable[[], ThreadWorker[E]]) -> None:
        self._make = make
        self.current: ThreadWorker[E] | None = None
        self._retired: list[ThreadWorker[E]] = []

    def get(self) -> ThreadWorker[E]:
        w = self.current
        if w is None or not w.usable:
            if w is not None:
                w.retire()
                self._retired.append(w)
            self._retired = [r for r in self._retired if r.thread.is_alive()]
            w = self.current = self._make()
        return w

    def _all(self) -> list[ThreadWorker[E]]:
        return [*self._retired, *([self.current] if self.current else [])]

    @property
    def threads(self) -> list[threading.Thread]:
        """The engine threads alive now (for leak checks)."""
        return [w.thread for w in self._all() if w.thread.is_alive()]

    async def aclose(self, timeout: float) -> None:
        """Close every worker (the current and the retired), each within ``timeout``."""
        workers = self._all()
        self.current, self._retired = None, []
        if workers:
            await asyncio.gather(*(w.aclose(timeout) for w in workers))
