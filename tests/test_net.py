"""WebSocket connect error mapping and the warm connection pool, against loopback servers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import ServerConnection

from antiphon.errors import (
    AuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    StreamClosedError,
)
from antiphon.net.pool import ConnectionPool, PoolOptions
from antiphon.net.ws import ConnectionLost, WsConnection, WsOptions, connect
from antiphon.testing.faults import FaultPlan
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.testing.server import FakeWsServer

#: asyncio only, the servers in the test's loop: virtual time, so every wait below is
#: exact and the loop is idle before the clock moves (docs/testing.md).
pytestmark = pytest.mark.virtual_time


class EchoServer(FakeWsServer):
    """Echoes text and binary; ``push <n>`` sends n unsolicited messages; ``bye`` closes
    with 1000; ``fragments`` and ``bad utf-8`` send what they say."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        super().__init__(plan)
        self.connections = 0
        self.live: set[ServerConnection] = set()

    async def handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.live.add(ws)
        try:
            async for msg in ws:
                if msg == "bye":
                    await ws.close(1000, "bye")
                elif isinstance(msg, str) and msg.startswith("push "):
                    for i in range(int(msg.split()[1])):
                        await ws.send(f"stale {i}")
                elif msg == "fragments":  # one text and one binary message, in fragments
                    await ws.send(["frag", "ment", "ed"])
                    await ws.send([b"\x01", b"\x02\x03"])
                elif msg == "bad utf-8":
                    await ws.send(b"\xff\xfe", text=True)
                else:
                    await ws.send(msg)
        finally:
            self.live.discard(ws)

    async def close_all(self) -> None:
        for ws in list(self.live):
            await ws.close(1001, "going away")


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    async with EchoServer() as server:
        yield server


FAST = WsOptions(connect_timeout=0.5, send_timeout=0.5, close_timeout=0.3)


def opener(url: str) -> ConnectionPool:
    async def open_one() -> WsConnection:
        return await connect(url, provider="echo", options=FAST)

    return ConnectionPool(open_one, name="echo", options=PoolOptions(max_idle=2))


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (401, AuthError, False),
        (403, AuthError, False),
        (429, ProviderError, True),
        (503, ProviderError, True),
        (400, ProviderError, False),
    ],
)
async def test_rejected_upgrade_maps_to_typed_errors(
    status: int, error: type[ProviderError], retryable: bool
) -> None:
    async with EchoServer(FaultPlan(reject_status=status)) as server:
        with pytest.raises(error) as info:
            await connect(server.url, provider="echo", options=FAST)
    assert info.value.retryable is retryable
    assert info.value.stage == "connect"
    assert str(status) in str(info.value)


async def test_unreachable_and_hanging_servers() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ProviderConnectionError) as info:
        await connect(f"ws://127.0.0.1:{port}", provider="echo", options=FAST)
    assert info.value.retryable
    async with EchoServer(FaultPlan(hang_connect=True)) as server:
        with pytest.raises(ProviderTimeoutError) as t:
            await connect(server.url, provider="echo", options=FAST)
    assert t.value.timeout == FAST.connect_timeout


async def test_closed_connection_raises_connection_lost(echo: EchoServer) -> None:
    conn = await connect(echo.url, provider="echo", options=FAST)
    await conn.send("bye")
    with pytest.raises(ConnectionLost) as info:
        await conn.recv()
    assert info.value.close_code == 1000
    assert not conn.open
    with pytest.raises(ConnectionLost):
        await conn.send("again")
    await asyncio.gather(conn.aclose(), conn.aclose())


async def test_pool_reuses_warm_connections(echo: EchoServer) -> None:
    leaks = LeakCheck(ports=[echo.port])
    pool = opener(echo.url)
    await pool.prewarm(5)  # capped at max_idle
    assert pool.idle_count == 2
    a = await pool.acquire()
    await a.send("hi")
    assert await a.recv() == "hi"
    pool.release(a, reusable=True)
    b = await pool.acquire()
    assert b is a
    assert (pool.stats.connects, pool.stats.reused) == (2, 2)
    pool.release(b, reusable=False)  # not reusable: closed, not kept
    await until(lambda: not b.open)
    assert pool.idle_count == 1
    await pool.aclose()
    await pool.aclose()
    with pytest.raises(StreamClosedError):
        await pool.acquire()
    await leaks.assert_clean()


async def test_pool_drops_stale_messages_and_dead_idle_connections(echo: EchoServer) -> None:
    leaks = LeakCheck(ports=[echo.port])
    pool = opener(echo.url)
    conn = await pool.acquire()
    await conn.send("push 3")  # the server keeps talking after the user is done
    pool.release(conn, reusable=True)
    for _ in range(100):
        if pool.stats.stale_messages == 3:
            break
        await asyncio.sleep(0.01)
    assert pool.stats.stale_messages == 3
    again = await pool.acquire()
    assert again is conn
    await again.send("fresh")
    assert await again.recv() == "fresh"  # nothing stale reaches the next user
    pool.release(again, reusable=True)
    await echo.close_all()
    for _ in range(100):
        if pool.idle_count == 0:
            break
        await asyncio.sleep(0.01)
    assert (pool.idle_count, pool.stats.dropped_idle) == (0, 1)
    fresh = await pool.acquire()
    assert fresh is not conn and fresh.open
    pool.release(fresh, reusable=True)
    await pool.aclose()
    await leaks.assert_clean()


async def test_pool_expires_old_connections(echo: EchoServer) -> None:
    async def open_one() -> WsConnection:
        return await connect(echo.url, provider="echo", options=FAST)

    pool = ConnectionPool(open_one, name="echo", options=PoolOptions(max_age=0.05))
    conn = await pool.acquire()
    pool.release(conn, reusable=True)
    await asyncio.sleep(0.1)
    fresh = await pool.acquire()
    assert fresh is not conn
    assert pool.stats.expired == 1
    pool.release(fresh, reusable=True)
    await pool.aclose()


async def test_acquire_waits_for_a_returning_connection(echo: EchoServer) -> None:
    pool = opener(echo.url)
    conn = await pool.acquire()
    pool.returning(conn)
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.05)
    assert not waiter.done()  # it waits for the connection on its way back
    pool.release(conn, reusable=True)
    assert await waiter is conn
    assert pool.stats.connects == 1
    # A waiter is released with a clear error when the pool closes under it.
    pool.returning(conn)
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)
    await pool.aclose()
    with pytest.raises(StreamClosedError):
        await waiter
    await conn.aclose()


class DeafServer(FakeWsServer):
    """Accepts the connection and never reads: its socket fills up."""

    async def handle(self, ws: ServerConnection) -> None:
        await asyncio.Future()


async def test_a_send_that_must_wait_ends_at_its_deadline() -> None:
    """Sends that cannot wait take no timer; one that waits (the peer stopped reading,
    the write buffer is full) fails after exactly ``send_timeout``."""
    async with DeafServer() as server:
        conn = await connect(server.url, provider="echo", options=FAST)
        loop = asyncio.get_running_loop()
        chunk = bytes(1024 * 1024)
        with pytest.raises(ProviderTimeoutError) as info:
            for _ in range(1000):
                started = loop.time()
                await conn.send(chunk)
        assert (info.value.stage, info.value.timeout) == ("send", FAST.send_timeout)
        assert loop.time() - started == pytest.approx(FAST.send_timeout, abs=1e-6)
        conn.abort()
        await conn.aclose()


async def test_a_send_while_writing_is_paused_ends_at_its_deadline() -> None:
    """Writing paused (the transport's buffer went over its high-water mark; it may have
    drained to nothing since): the send waits, so it has the deadline, and the
    connection is not :attr:`~WsConnection.writable` for a direct write."""
    async with DeafServer() as server:
        conn = await connect(server.url, provider="echo", options=FAST)
        assert conn.writable
        conn._ws.pause_writing()
        assert not conn.writable
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ProviderTimeoutError) as info:
            await conn.send(b"x")
        assert (info.value.stage, info.value.timeout) == ("send", FAST.send_timeout)
        assert loop.time() - started == pytest.approx(FAST.send_timeout, abs=1e-6)
        conn.abort()
        await conn.aclose()


class Inbox:
    """A handler's two callbacks, recording what they got."""

    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.lost: list[ConnectionLost] = []

    def on_message(self, data: str | bytes) -> None:
        self.messages.append(data)

    def on_lost(self, error: ConnectionLost) -> None:
        self.lost.append(error)


async def test_a_handler_gets_every_message_in_order_then_recv_again(echo: EchoServer) -> None:
    leaks = LeakCheck(ports=[echo.port])
    conn = await connect(echo.url, provider="echo", options=FAST)
    await conn.send("push 2")
    # Both wait in websockets' own queue (its frames), as nobody reads yet.
    await until(lambda: len(conn._ws.recv_messages.frames) == 2)
    inbox = Inbox()
    conn.set_handler(inbox.on_message, inbox.on_lost)
    assert inbox.messages == ["stale 0", "stale 1"]  # the queued ones first, at once
    await conn.send("text")
    await conn.send(b"\x00\x01")
    await conn.send("fragments")
    await until(lambda: len(inbox.messages) == 6)
    assert inbox.messages[2:] == ["text", b"\x00\x01", "fragmented", b"\x01\x02\x03"]
    with pytest.raises(RuntimeError, match="handler"):
        await conn.recv()  # the handler takes the messages
    conn.clear_handler()
    await conn.send("mine")
    assert await conn.recv() == "mine"
    assert inbox.lost == []
    await conn.aclose()
    assert inbox.lost == []  # a cleared handler hears nothing more
    await leaks.assert_clean()


async def test_a_handler_hears_the_close_once_with_its_code(echo: EchoServer) -> None:
    conn = await connect(echo.url, provider="echo", options=FAST)
    inbox = Inbox()
    conn.set_handler(inbox.on_message, inbox.on_lost, stage="speak")
    await conn.send("bye")
    await until(lambda: bool(inbox.lost))
    [error] = inbox.lost
    assert (error.close_code, error.stage) == (1000, "speak")
    late = Inbox()
    conn.set_handler(late.on_message, late.on_lost)  # already closed: told at once
    assert len(late.lost) == 1 and len(inbox.lost) == 1
    await conn.aclose()


async def test_a_failing_handler_or_bad_text_drops_the_connection(echo: EchoServer) -> None:
    leaks = LeakCheck(ports=[echo.port])
    conn = await connect(echo.url, provider="echo", options=FAST)
    inbox = Inbox()

    def broken(data: str | bytes) -> None:
        raise ValueError("a bug")

    conn.set_handler(broken, inbox.on_lost)
    await conn.send("boom")
    await until(lambda: bool(inbox.lost))
    assert "handler failed" in str(inbox.lost[0])
    assert not conn.open
    await conn.aclose()

    conn = await connect(echo.url, provider="echo", options=FAST)
    inbox = Inbox()
    conn.set_handler(inbox.on_message, inbox.on_lost)
    await conn.send("bad utf-8")
    await until(lambda: bool(inbox.lost))
    assert inbox.messages == []
    assert "UTF-8" in str(inbox.lost[0])
    await conn.aclose()
    await leaks.assert_clean()


async def test_the_pool_starts_no_task_to_lease_or_keep_a_connection(echo: EchoServer) -> None:
    pool = opener(echo.url)
    await pool.prewarm(2)
    before = len(asyncio.all_tasks())
    for _ in range(3):
        conn = await pool.acquire()
        assert not conn.has_handler  # the user reads it
        assert len(asyncio.all_tasks()) == before
        pool.release(conn, reusable=True)
        assert conn.has_handler  # the pool reads it while idle
        assert len(asyncio.all_tasks()) == before
    assert (pool.stats.connects, pool.stats.reused) == (2, 3)
    await pool.aclose()


def test_options_validate() -> None:
    with pytest.raises(ValueError, match="max_age"):
        PoolOptions(max_age=0)
    with pytest.raises(ValueError, match="connect_timeout"):
        WsOptions(connect_timeout=0)
