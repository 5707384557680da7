"""Base of the fake WebSocket provider servers, and two ways to run one.

:class:`FakeWsServer` accepts upgrades (faults of the handshake, numbering of accepted
connections) and hands each connection to a :class:`WsConnection`: the per-connection
message loop, the lifetime watchdog (idle timeout, maximum age), close and abort, and the
plan's mid-stream audio faults (:meth:`WsConnection.stream_audio`). A fake subclasses both
and adds only its protocol: parsing, replies, close codes. The connection bases of one
kind of fake build on :class:`WsConnection`: :mod:`antiphon.testing.listening` (STT) and
:mod:`antiphon.testing.speaking` (TTS).

Fakes bind to loopback only. :func:`serving` runs a fake in the caller's event loop, so
that on a virtual-time loop (``antiphon.testing.vloop``) its delays are virtual too; its
tasks are marked as the fake's (``leaks.fake_side``) so leak checks see only the client.
:func:`running_in_thread` runs it on its own thread and loop, for clients that block the
loop or run on real time anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from antiphon.aio.tasks import TaskGroup
from antiphon.testing.faults import ABORT, FaultPlan
from antiphon.testing.leaks import fake_side

__all__ = [
    "BINARY",
    "INVALID_JSON",
    "NOT_OBJECT",
    "FakeServer",
    "FakeWsServer",
    "LoopbackServer",
    "WsConnection",
    "running_in_thread",
    "serving",
]

#: Problems of a client frame that :meth:`WsConnection.refuse` is asked to answer.
BINARY = "binary messages are not accepted"
INVALID_JSON = "invalid JSON"
NOT_OBJECT = "expected a JSON object"


class FakeServer(Protocol):
    """What tests need of any fake provider server (WebSocket or HTTP)."""

    plan: FaultPlan
    port: int

    @property
    def url(self) -> str: ...

    async def start(self) -> str: ...

    async def aclose(self) -> None: ...


S = TypeVar("S", bound=FakeServer)


class ConnStats(Protocol):
    """The statistics every WebSocket fake keeps."""

    connections: int
    open_connections: int
    closes_sent: list[int]


class LoopbackServer:
    """What every fake server has: a plan, a loopback address, ``async with`` support."""

    scheme = "ws"

    def __init__(self, plan: FaultPlan | None, *, host: str, port: int) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("fake servers bind to loopback only (127.0.0.1 or ::1)")
        self.plan = plan or FaultPlan()
        self.host = host
        self.port = port
        self._server: object | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake server is not started")
        return f"{self.scheme}://{self.host}:{self.port}"

    async def start(self) -> str:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

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


class FakeWsServer(LoopbackServer, ABC):
    """A loopback WebSocket server that speaks one provider's protocol with a FaultPlan."""

    def __init__(self, plan: FaultPlan | None = None, *, host: str = "127.0.0.1", port: int = 0):
        super().__init__(plan, host=host, port=port)
        self._server: Server | None = None
        self._hanging: set[asyncio.Future[None]] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._indices: dict[int, int] = {}  # accepted upgrade -> connection number
        #: Opening handshakes received so far (held ones included).
        self.upgrades = 0

    stats: ConnStats

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

    def count_connection(self, connection: ServerConnection) -> None:
        """Number an accepted upgrade; called before the 101 goes out, so a client that
        sees its connection open also sees it counted."""
        self._indices[id(connection)] = self.stats.connections
        self.stats.connections += 1

    def take_index(self, ws: ServerConnection) -> int:
        """The number :meth:`count_connection` gave this connection."""
        return self._indices.pop(id(ws), self.stats.connections)

    async def run(self, conn: WsConnection) -> None:
        """Serve ``conn``, counted in ``stats.open_connections`` meanwhile."""
        self.stats.open_connections += 1
        try:
            await conn.serve()
        finally:
            self.stats.open_connections -= 1

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


class WsConnection:
    """One client connection of a fake: the loop, the watchdog, closing, audio faults.

    Subclasses set :attr:`IDLE_CLOSE`/:attr:`AGE_CLOSE` (what the service closes with),
    answer frames (:meth:`on_message`, or :meth:`on_frame` for non-JSON protocols) and
    may start work in :meth:`on_open` (send a greeting, :meth:`spawn` a speaker).
    """

    #: Code and reason of the close after ``idle_close_after`` without a client message.
    IDLE_CLOSE: tuple[int, str] = (1011, "idle timeout")
    #: Code and reason of the close after ``max_connection_age``.
    AGE_CLOSE: tuple[int, str] = (1011, "maximum connection duration")
    #: Keep reading while closing (``close(drain=...)``'s default).
    DRAIN_ON_CLOSE = False

    def __init__(self, server: FakeWsServer, ws: ServerConnection, *, index: int) -> None:
        self.plan = server.plan
        self.ws = ws
        self.index = index
        self._closes = server.stats.closes_sent
        loop = asyncio.get_running_loop()
        self.opened = loop.time()
        self.last_message = loop.time()
        self.received = 0  # client messages
        self.chunks_sent = 0
        self.closed = False
        self.tasks: set[asyncio.Task[None]] = set()
        self._tg: asyncio.TaskGroup | None = None

    # -- closing
    async def close(self, code: int, reason: str = "", *, drain: bool | None = None) -> None:
        """Close with ``code`` (``ABORT``: drop TCP); once. ``drain``: read what the client
        still sends meanwhile, so its close frame is read at once (only the reading task
        may drain)."""
        if self.closed:
            return
        self.closed = True
        self._closes.append(code)
        if code == ABORT:
            if self.ws.transport is not None:
                self.ws.transport.abort()
            return
        drain = self.DRAIN_ON_CLOSE if drain is None else drain
        drainer = asyncio.create_task(self._drain()) if drain else None
        try:
            with contextlib.suppress(ConnectionClosed):
                await self.ws.close(code, reason)
        finally:
            if drainer is not None:
                drainer.cancel()
                await asyncio.wait([drainer])

    async def _drain(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in self.ws:
                pass

    async def send_json(self, msg: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(msg))

    # -- the connection
    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` for the connection's life (cancelled when it ends)."""
        assert self._tg is not None, "spawn() runs while the connection is served"
        task = self._tg.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def on_open(self) -> None:
        """After the upgrade (unless ``close_on_open``): greet, spawn background work."""

    def busy(self) -> bool:
        """Still answering (the idle timeout waits)."""
        return False

    def idle_limit(self) -> float | None:
        return self.plan.idle_close_after

    def idle_close(self) -> tuple[int, str]:
        return self.IDLE_CLOSE

    async def serve(self) -> None:
        plan = self.plan
        if plan.close_on_open is not None:
            await self.close(plan.close_on_open, plan.close_on_open_reason)
            return
        try:
            async with TaskGroup() as tg:
                self._tg = tg
                self.spawn(self._lifetime())
                try:
                    await self.on_open()
                    await self._read_loop()
                except ConnectionClosed:
                    pass
                finally:
                    for task in list(self.tasks):
                        task.cancel()
        except* ConnectionClosed:
            pass

    async def _lifetime(self) -> None:
        idle, age = self.idle_limit(), self.plan.max_connection_age
        if idle is None and age is None:
            return
        loop = asyncio.get_running_loop()
        while not self.closed:
            await asyncio.sleep(0.02)
            now = loop.time()
            if idle is not None and not self.busy() and now - self.last_message > idle:
                await self.close(*self.idle_close(), drain=False)
                return
            if age is not None and now - self.opened > age:
                await self.close(*self.AGE_CLOSE, drain=False)
                return

    # -- reading
    @property
    def silent(self) -> bool:
        """The plan's ``silent_after`` has run out: read, answer nothing."""
        after = self.plan.silent_after
        return after is not None and self.received > after

    async def _read_loop(self) -> None:
        async for raw in self.ws:
            self.last_message = asyncio.get_running_loop().time()
            self.received += 1
            if not await self.on_frame(raw):
                return

    async def on_frame(self, raw: str | bytes) -> bool:
        """Answer one frame; False ends the connection. By default: one JSON object per
        text frame, recorded by :meth:`record`, then :meth:`on_message` unless silent."""
        if isinstance(raw, bytes):
            return await self.refuse(BINARY)
        try:
            msg = json.loads(raw)
        except ValueError:
            return await self.refuse(INVALID_JSON)
        if not isinstance(msg, dict):
            return await self.refuse(NOT_OBJECT)
        self.record(msg)
        if self.silent:
            return True
        return await self.on_message(msg)

    async def refuse(self, problem: str) -> bool:
        """Answer a frame that is no JSON object (``problem``: BINARY, INVALID_JSON,
        NOT_OBJECT); False ends the connection."""
        await self.close(1003 if problem == BINARY else 1008, problem)
        return False

    def record(self, msg: dict[str, Any]) -> None:
        """Note a client message in the stats."""

    async def on_message(self, msg: dict[str, Any]) -> bool:
        """Answer one client message; False ends the connection."""
        raise NotImplementedError

    # -- audio
    async def stream_audio(
        self,
        audio: bytes,
        step: int,
        send: Callable[[bytes], Awaitable[None]],
        *,
        stopped: Callable[[], bool] = lambda: False,
        error: Callable[[], Awaitable[bool]] | None = None,
        malformed: Sequence[str | bytes] | Callable[[], Awaitable[None]] = (),
        at: Callable[[int], None] | None = None,
        per_answer: bool = False,
    ) -> bool:
        """Send ``audio`` in ``step``-byte chunks with the plan's mid-stream faults; True
        when all of it went out.

        Before each chunk: ``at(offset)``; stop if ``stopped()``; ``close_mid_audio``
        once ``close_after_chunks`` chunks went out on the connection (``per_answer``: in
        this answer); ``error()`` (the
        protocol's error; True stops) at chunk ``close_after_chunks`` if
        ``error_mid_stream``; the ``malformed`` frames (or call) before the second chunk
        if ``malformed_mid_stream``. ``chunk_interval`` paces the chunks.
        """
        plan = self.plan
        for i, pos in enumerate(range(0, len(audio), step)):
            if at is not None:
                at(pos)
            if stopped():
                return False
            sent = i if per_answer else self.chunks_sent
            if plan.close_mid_audio is not None and sent >= plan.close_after_chunks:
                await self.close(plan.close_mid_audio, plan.close_reason)
                return False
            fail = plan.error_mid_stream and i == plan.close_after_chunks and error is not None
            if fail and error is not None and await error():
                return False
            if plan.malformed_mid_stream and i == 1:
                if callable(malformed):
                    await malformed()
                else:
                    for frame in malformed:
                        await self.ws.send(frame)
            await send(audio[pos : pos + step])
            if plan.chunk_interval:
                await asyncio.sleep(plan.chunk_interval)
        return True


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
