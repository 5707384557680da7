"""A pool of warm connections: prewarm, reuse, maximum age, idle reading, bounded close.

An idle connection is read by a handler (:meth:`WsConnection.set_handler
<antiphon.net.ws.WsConnection.set_handler>`), not a task: what the server sends after a
stream ended is counted and dropped as it arrives, and a connection lost while idle is
taken out of the pool at once. Leasing one clears that handler and releasing sets it:
no task is started or cancelled per stream, and ``acquire`` of a warm connection does
not wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from antiphon.aio.tasks import TaskOwner
from antiphon.errors import ConfigError, StreamClosedError
from antiphon.net.ws import ConnectionLost, WsConnection

__all__ = ["ConnectionPool", "PoolOptions", "PoolStats"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """``max_age``: connections older than this are closed instead of reused (seconds).

    ``max_idle``: warm connections kept at most. ``close_timeout``: bound of ``aclose``.
    """

    max_age: float = 3000.0
    max_idle: int = 4
    close_timeout: float = 3.0

    def __post_init__(self) -> None:
        if self.max_age <= 0:
            raise ConfigError("PoolOptions.max_age must be > 0 seconds")
        if self.max_idle < 0:
            raise ConfigError("PoolOptions.max_idle must be >= 0")


@dataclass(slots=True)
class PoolStats:
    connects: int = 0
    reused: int = 0
    expired: int = 0
    dropped_idle: int = 0  # idle connections the server closed
    stale_messages: int = 0  # messages read while idle (e.g. audio after the done marker)


class ConnectionPool:
    """Hands out one connection per user at a time and keeps idle ones warm.

    Idle connections are read by the pool's handler, so that anything the server sends
    after a stream ended is dropped rather than seen by the next stream, and a connection
    the server closes while idle is noticed and discarded. A leased connection has no
    handler: its user reads it (``recv``) or sets its own.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[WsConnection]],
        *,
        name: str,
        options: PoolOptions | None = None,
    ) -> None:
        self._connect = connect
        self.options = options or PoolOptions()
        self.stats = PoolStats()
        self._idle: list[WsConnection] = []
        self._tasks = TaskOwner(f"pool:{name}")
        self._closed = False
        # Connections on their way back (e.g. after a cancel, until the server confirms
        # it dropped the old audio); acquire() waits for one rather than connecting anew.
        self._returning: set[int] = set()
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _expired(self, conn: WsConnection) -> bool:
        return conn.age(self._now()) >= self.options.max_age

    async def acquire(self) -> WsConnection:
        """A warm, young, open connection, or a new one (connect deadline applies)."""
        while True:
            if self._closed:
                raise StreamClosedError("connection pool is closed")
            if self._idle or not self._returning:
                break
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
        while self._idle:
            conn = self._idle.pop()
            conn.clear_handler()
            if conn.open and not self._expired(conn):
                self.stats.reused += 1
                return conn
            if conn.open:
                self.stats.expired += 1
            self._close_soon(conn)
        conn = await self._connect()
        self.stats.connects += 1
        if self._closed:  # closed while we were connecting
            await conn.aclose()
            raise StreamClosedError("connection pool is closed")
        return conn

    def returning(self, conn: WsConnection) -> None:
        """Note that ``conn`` will come back through ``release``/``discard`` shortly."""
        self._returning.add(conn.id)

    def is_returning(self, conn: WsConnection) -> bool:
        """Whether ``conn`` was announced by :meth:`returning` and is not back yet."""
        return conn.id in self._returning

    def _returned(self, conn: WsConnection) -> None:
        if conn.id in self._returning:
            self._returning.discard(conn.id)
            for fut in self._waiters:
                if not fut.done():
                    fut.set_result(None)

    def release(self, conn: WsConnection, *, reusable: bool) -> None:
        """Give ``conn`` back: kept warm if reusable, open, young and there is room."""
        self._release(conn, reusable=reusable)
        self._returned(conn)

    def _release(self, conn: WsConnection, *, reusable: bool) -> None:
        if (
            not reusable
            or self._closed
            or not conn.open
            or self._expired(conn)
            or len(self._idle) >= self.options.max_idle
        ):
            if conn.open and self._expired(conn):
                self.stats.expired += 1
            self._close_soon(conn)
            return
        self._idle.append(conn)
        conn.set_handler(self._stale, partial(self._lost_idle, conn), stage="idle")

    def discard(self, conn: WsConnection) -> None:
        """Close ``conn`` in the background (owned by the pool)."""
        self._close_soon(conn)
        self._returned(conn)

    def _close_soon(self, conn: WsConnection) -> None:
        if self._tasks.closing:
            conn.abort()  # too late for a close handshake: drop the socket now
            return
        self._tasks.spawn(conn.aclose(), name=f"close#{conn.id}")

    def _stale(self, data: str | bytes) -> None:
        """A message on an idle connection (e.g. audio after the done marker): dropped."""
        self.stats.stale_messages += 1

    def _lost_idle(self, conn: WsConnection, error: ConnectionLost) -> None:
        """Closed by the server (or dropped) while idle: forget it, free its socket."""
        if conn in self._idle:
            self._idle.remove(conn)
            self.stats.dropped_idle += 1
        self._close_soon(conn)

    async def prewarm(self, count: int = 1) -> None:
        """Open connections ahead of use so the first stream skips the handshake."""
        missing = max(0, min(count, self.options.max_idle) - len(self._idle))
        if missing == 0:
            return
        conns = await asyncio.gather(*(self._connect() for _ in range(missing)))
        for c in conns:
            self.stats.connects += 1
            self.release(c, reusable=True)

    async def aclose(self) -> None:
        """Close idle connections and stop every pool task; idempotent and bounded."""
        if self._closed:
            await self._tasks.aclose(self.options.close_timeout)
            return
        self._closed = True
        idle, self._idle = self._idle, []
        for c in idle:
            c.clear_handler()
            self._tasks.spawn(c.aclose(), name=f"close#{c.id}")
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        # Let close handshakes in flight finish (each is bounded), then stop the rest.
        await self._tasks.drain(self.options.close_timeout)
        await self._tasks.aclose(self.options.close_timeout)
