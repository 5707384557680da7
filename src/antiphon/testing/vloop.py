"""An asyncio event loop on virtual time that jumps to its next timer when it is idle.

How it is built: :class:`VirtualTimeLoop` is a ``SelectorEventLoop`` whose ``time()``
returns a virtual clock, with its selector wrapped. asyncio's loop computes how long it
may block (zero when callbacks are ready, else the wait until its next timer) and asks
the selector. The wrapper first looks for I/O without blocking, then for a short *real*
grace (1 ms by default) so that data in flight on a loopback socket is seen; only if
nothing is ready does it move the virtual clock straight to the next timer and return.
So ``asyncio.sleep``, ``asyncio.timeout``, ``call_later`` and every deadline built on
them cost no wall-clock time, and a 1 s deadline fires after exactly 1 s of loop time
however busy the machine is: the model is trio's ``MockClock`` with autojump.

Two things keep the clock honest:

- Work on the loop's executor (``run_in_executor``, ``asyncio.to_thread``, ``getaddrinfo``)
  runs on a real thread. While any is in flight the loop waits in real time and does not
  jump, so a thread's result is never overtaken by a deadline.
- Code on threads the loop does not know of (a native SDK's own threads, an engine worker
  that reports with ``call_soon_threadsafe``) cannot be waited for: tests of such code
  keep the ordinary loop and real time (the ``realtime`` marker, margins from
  :func:`time_scale`).

A fake server must run in the *same* loop as the client (``antiphon.testing.server.
serving``), so that its delays are virtual too. Use the loop with pytest-asyncio through
:func:`pytest_asyncio_loop_factories` (import it into a ``conftest.py``): tests marked
``virtual_time``, or in a class with ``virtual_time = True``, run on it.
"""

from __future__ import annotations

import asyncio
import os
import selectors
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar

__all__ = [
    "CI_TIME_SCALE",
    "DEFAULT_GRACE",
    "VirtualTimeLoop",
    "pytest_asyncio_loop_factories",
    "time_scale",
    "uses_virtual_time",
]

#: Real seconds the loop waits for I/O in flight before it jumps its clock.
DEFAULT_GRACE = float(os.environ.get("ANTIPHON_TEST_GRACE", "0.001"))

#: The real-time margin factor of the CI profile (see :func:`time_scale`).
CI_TIME_SCALE = 3.0

#: How long (real seconds) one wait for an executor job lasts before the loop looks again.
_THREAD_POLL = 0.05

T = TypeVar("T")


def time_scale() -> float:
    """The factor real-time tests multiply their margins by (virtual-time tests ignore it).

    ``ANTIPHON_TEST_TIME_SCALE`` if set (a number > 0); else 3 when ``CI`` is set (CI runs
    on a loaded 2-core machine); else from the machine's load right now: 1 on an idle
    machine, growing with the 1-minute load average per core up to 3, so a developer who
    runs the suite beside ``stress-ng`` gets the CI margins without setting anything.
    """
    raw = os.environ.get("ANTIPHON_TEST_TIME_SCALE", "")
    if raw:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"ANTIPHON_TEST_TIME_SCALE must be a number, not {raw!r}") from None
        if value <= 0:
            raise ValueError("ANTIPHON_TEST_TIME_SCALE must be > 0")
        return value
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return CI_TIME_SCALE
    try:
        per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:  # no load average on this platform
        return 1.0
    return min(CI_TIME_SCALE, max(1.0, per_core))


class _JumpingSelector(selectors.BaseSelector):
    """The loop's selector: real I/O readiness, virtual waiting."""

    def __init__(self, loop: VirtualTimeLoop, inner: selectors.BaseSelector) -> None:
        self._loop = loop
        self._inner = inner

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return self._inner.select(0)
        ready = self._inner.select(0)
        if ready:
            return ready
        loop = self._loop
        if loop.threads_in_flight:
            # A thread's answer is on its way: wait for it in real time, keep the clock.
            wait = _THREAD_POLL if timeout is None else min(timeout, _THREAD_POLL)
            return self._inner.select(wait)
        if timeout is None:
            # No timer at all: only I/O or another thread can wake us.
            return self._inner.select(None)
        ready = self._inner.select(loop.grace)
        if ready:
            return ready
        loop.jumps += 1
        loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock jumps to the next timer whenever it is idle.

    Args:
        grace: real seconds to wait for I/O before each jump (default :data:`DEFAULT_GRACE`,
            ``ANTIPHON_TEST_GRACE`` in the environment).
        start: the virtual time the loop starts at.
    """

    def __init__(self, *, grace: float = DEFAULT_GRACE, start: float = 0.0) -> None:
        if grace < 0:
            raise ValueError("grace must be >= 0 seconds")
        self._virtual_now = start
        self.grace = grace
        #: How many times the clock jumped (for tests of the loop itself).
        self.jumps = 0
        self._threads = 0
        super().__init__(_JumpingSelector(self, selectors.DefaultSelector()))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward (timers due by then run on the next loop turn)."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards; pass seconds >= 0")
        self._virtual_now += seconds

    @property
    def threads_in_flight(self) -> int:
        """Executor jobs submitted and not yet reported back to the loop."""
        return self._threads

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        fut = super().run_in_executor(executor, func, *args)
        self._threads += 1

        def done(_: asyncio.Future[T]) -> None:
            self._threads -= 1

        fut.add_done_callback(done)
        return fut


def uses_virtual_time(item: Any) -> bool:
    """Whether a pytest item runs on :class:`VirtualTimeLoop` (marker or class flag).

    A ``realtime`` mark on the test wins over a module's or class's ``virtual_time``:
    work on threads the loop does not know of needs the wall clock.
    """
    if item.get_closest_marker("realtime") is not None:
        return False
    if item.get_closest_marker("virtual_time") is not None:
        return True
    return bool(getattr(getattr(item, "cls", None), "virtual_time", False))


def pytest_asyncio_loop_factories(
    config: Any, item: Any
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """pytest-asyncio hook: the virtual loop for ``virtual_time`` tests, else the default.

    Import it into your ``conftest.py`` to run the conformance suites on virtual time.
    """
    if uses_virtual_time(item):
        return {"virtual": VirtualTimeLoop}
    return {"asyncio": asyncio.new_event_loop}
