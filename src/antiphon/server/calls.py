"""The server's calls: :class:`CallRegistry` (admission, draining) and
:class:`DrainingServer` (uvicorn, but the first signal drains calls before it stops).

Shutdown: new calls are refused, active calls may finish for ``drain_timeout`` seconds,
then they are ended with 1001, all bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, Protocol

import uvicorn

from antiphon.server.heap import HeapKeeper
from antiphon.transports.base import GOING_AWAY

__all__ = ["Call", "CallRegistry", "DrainingServer"]

log = logging.getLogger(__name__)


class Call(Protocol):
    """A call the registry can end (a bridge, or a WebRTC call)."""

    def end(self, code: int, reason: str) -> None: ...


class CallRegistry:
    """The active calls, and the server's draining state."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.calls: set[Call] = set()
        self.draining = False
        self._empty = asyncio.Event()
        self._empty.set()
        self.total = 0

    def admit(self, bridge: Call) -> bool:
        if self.draining or len(self.calls) >= self.max_sessions:
            return False
        self.calls.add(bridge)
        self.total += 1
        self._empty.clear()
        return True

    def leave(self, bridge: Call) -> None:
        self.calls.discard(bridge)
        if not self.calls:
            self._empty.set()

    async def drain(self, timeout: float) -> int:
        """Refuse new calls, wait up to ``timeout`` for active ones, end the rest (1001).

        Returns how many calls had to be ended.
        """
        self.draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._empty.wait()
        left = list(self.calls)
        for bridge in left:
            bridge.end(GOING_AWAY, "the server is shutting down")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                await self._empty.wait()
        return len(left)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but the first SIGINT/SIGTERM drains calls before it stops.

    A second signal stops at once (uvicorn's own handling). Once started, its
    :class:`~antiphon.server.heap.HeapKeeper` settles the heap and keeps full collections
    off the loop while calls run (``heap``).
    """

    def __init__(self, config: uvicorn.Config, registry: CallRegistry, drain_timeout: float):
        super().__init__(config)
        self._registry = registry
        self._drain_timeout = drain_timeout
        self._draining: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.heap = HeapKeeper(idle=lambda: not registry.calls)
        self._keeping: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._draining is not None or self._loop is None:
            super().handle_exit(sig, frame)
            return
        log.info("draining active calls (up to %.0f s), then stopping", self._drain_timeout)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        await self._registry.drain(self._drain_timeout)
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup (the agent's models load there), then the heap is settled
        and kept."""
        await super().startup(sockets)
        if self.started:
            self.heap.settle()
            self._keeping = asyncio.get_running_loop().create_task(self.heap.run())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self._stop_keeping()
        await super().shutdown(sockets)

    async def _stop_keeping(self) -> None:
        if self._keeping is not None:
            self._keeping.cancel()
            await asyncio.gather(self._keeping, return_exceptions=True)
            self._keeping = None

    async def run_draining(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self.serve()
        finally:
            await self._stop_keeping()
            if self._draining is not None:
                self._draining.cancel()
                await asyncio.gather(self._draining, return_exceptions=True)
