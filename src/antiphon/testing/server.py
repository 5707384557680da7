"""Base of the fake WebSocket provider servers, and two ways to run one.

Fakes bind to loopback only. :func:`serving` runs a fake in the caller's event loop, so
that on a virtual-time loop (``antiphon.testing.vloop``) its delays are virtual too; its
tasks are marked as the fake's (``leaks.fake_side``) so leak checks see only the client.
:func:`running_in_thread` runs it on its own thread and loop, for clients that block the
loop or run on real time anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Protocol, Self, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from antiphon.testing.faults import FaultPlan
from antiphon.testing.leaks import fake_side

__all__ = ["FakeServer", "FakeWsServer", "running_in_thread", "serving"]


class FakeServer(Protocol):
    """What tests need of any fake provider server (WebSocket or HTTP)."""

    plan: FaultPlan
    port: int

    @property
    def url(self) -> str: ...

    async def start(self) -> str: ...

    async def aclose(self) -> None: ...


S = TypeVar("S", bound=FakeServer)


class FakeWsServer(ABC):
    """A loopback WebSocket server that speaks one provider's protocol with a FaultPlan."""

    scheme = "ws"

    def __init__(self, plan: FaultPlan | None = None, *, host: str = "127.0.0.1", port: int = 0):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("fake servers bind to loopback only (127.0.0.1 or ::1)")
        self.plan = plan or FaultPlan()
        self.host = host
        self.port = port
        self._server: Server | None = None
        self._hanging: set[asyncio.Future[None]] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        #: Opening handshakes received so far (held ones included).
        self.upgrades = 0

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake server is not started")
        return f"{self.scheme}://{self.host}:{self.port}"

    async def start(self) -> str:
        """Listen and return the base URL (``ws://127.0.0.1:PORT``)."""
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            compression=None,
            ping_interval=None,
            open_timeout=None,
            close_timeout=1.0,
            max_size=4 * 1024 * 1024,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        return self.url

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        self.upgrades += 1
        if self.plan.hang_connect:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._hanging.add(fut)
            try:
                await fut
            finally:
                self._hanging.discard(fut)
        if self.plan.reject_status is not None:
            return connection.respond(self.plan.reject_status, "rejected by fault plan\n")
        return self.check_request(connection, request)

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Validate path, query and auth; return a Response to refuse the upgrade."""
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self.handle(ws)
        finally:
            self._handlers.discard(task)

    @abstractmethod
    async def handle(self, ws: ServerConnection) -> None:
        """Serve one connection."""

    async def aclose(self) -> None:
        for fut in list(self._hanging):
            fut.cancel()
        for task in list(self._handlers):
            task.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3.0):
                    await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def serving(server: S) -> AsyncIterator[S]:
    """Run ``server`` in the running event loop, its tasks marked as the fake's; close it
    on exit."""
    with fake_side() as ctx:
        await asyncio.get_running_loop().create_task(server.start(), context=ctx)
        try:
            yield server
        finally:
            await asyncio.get_running_loop().create_task(server.aclose(), context=ctx)


@contextlib.contextmanager
def running_in_thread(server: S, *, timeout: float = 5.0) -> Iterator[S]:
    """Run ``server`` on a dedicated thread with its own event loop; stop and join on exit."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    errors: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:
            errors.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=main, name=f"fake-{type(server).__name__}", daemon=True)
    thread.start()
    if not ready.wait(timeout):
        raise RuntimeError("fake server did not start in time")
    if errors:
        thread.join(timeout)
        raise errors[0]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError("fake server thread did not stop in time")
