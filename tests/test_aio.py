"""aio helpers: closable channel, virtual clock, deadlines, task owner."""

from __future__ import annotations

import asyncio

import pytest

from antiphon.aio import Channel, ChannelClosed, ChannelFull, TaskOwner, VirtualClock, deadline
from antiphon.errors import ProviderTimeoutError, StreamClosedError

#: asyncio only: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


async def test_close_wakes_every_receiver_and_sender() -> None:
    ch: Channel[int] = Channel(maxsize=1)
    ch.send_nowait(1)
    blocked_sender = asyncio.create_task(ch.send(2))
    empty: Channel[int] = Channel()
    receivers = [asyncio.create_task(empty.recv()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not blocked_sender.done()
    assert not any(r.done() for r in receivers)
    ch.close()
    empty.close()
    with pytest.raises(ChannelClosed):
        await blocked_sender
    for r in receivers:
        with pytest.raises(ChannelClosed):
            await r


async def test_receivers_drain_before_the_close_error() -> None:
    ch: Channel[str] = Channel()
    ch.send_nowait("a")
    ch.send_nowait("b")
    boom = ValueError("provider failed")
    ch.close(boom)
    ch.close(RuntimeError("second close is ignored"))
    assert await ch.recv() == "a"
    assert await ch.recv() == "b"
    with pytest.raises(ValueError, match="provider failed"):
        await ch.recv()
    with pytest.raises(ChannelClosed):
        ch.send_nowait("c")
    assert isinstance(ChannelClosed(), StreamClosedError)


async def test_async_iteration_ends_on_close() -> None:
    ch: Channel[int] = Channel()

    async def produce() -> None:
        for i in range(5):
            await ch.send(i)
        ch.close()

    task = asyncio.create_task(produce())
    assert [i async for i in ch] == [0, 1, 2, 3, 4]
    await task


async def test_bounded_channel_and_clear_unblocks_senders() -> None:
    ch: Channel[int] = Channel(maxsize=2)
    ch.send_nowait(1)
    ch.send_nowait(2)
    with pytest.raises(ChannelFull):
        ch.send_nowait(3)
    sender = asyncio.create_task(ch.send(3))
    await asyncio.sleep(0)
    assert not sender.done()
    assert ch.clear() == 2
    await sender
    assert ch.qsize() == 1
    assert ch.recv_nowait() == 3
    with pytest.raises(asyncio.QueueEmpty):
        ch.recv_nowait()
    with pytest.raises(ValueError, match=">= 0"):
        Channel(maxsize=-1)


async def test_virtual_clock_wakes_sleepers_in_order() -> None:
    clock = VirtualClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, when: float) -> None:
        await clock.sleep_until(when)
        woke.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper(n, t)) for n, t in [("b", 0.5), ("a", 0.2), ("c", 2)]]
    await asyncio.sleep(0)
    assert clock.sleepers == 3
    await clock.advance(1.0)
    await asyncio.sleep(0)
    assert woke == [("a", 0.2), ("b", 0.5)]
    assert clock.now() == 1.0
    await clock.advance(1.5)
    await asyncio.gather(*tasks)
    assert woke[-1] == ("c", 2)
    with pytest.raises(ValueError, match="backwards"):
        await clock.advance(-1)


async def test_deadline_raises_typed_error() -> None:
    with pytest.raises(ProviderTimeoutError) as info:
        async with deadline(0.01, provider="acme", stage="first audio", hint="check the model"):
            await asyncio.sleep(5)
    err = info.value
    assert (err.provider, err.stage, err.timeout) == ("acme", "first audio", 0.01)
    assert "check the model" in str(err)
    assert isinstance(err, TimeoutError)


async def test_deadline_none_and_foreign_timeouts_pass_through() -> None:
    async with deadline(None, provider="acme", stage="x"):
        await asyncio.sleep(0)
    with pytest.raises(TimeoutError) as info:
        async with deadline(10, provider="acme", stage="x"):
            raise TimeoutError("from inside")
    assert not isinstance(info.value, ProviderTimeoutError)


async def test_task_owner_cancels_and_awaits_everything() -> None:
    owner = TaskOwner("pool")
    cancelled: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    tasks = [owner.spawn(forever(f"t{i}"), name=f"t{i}") for i in range(3)]
    assert len(owner) == 3
    # Two concurrent closes: both return once everything has ended.
    await asyncio.gather(owner.aclose(), owner.aclose())
    assert sorted(cancelled) == ["t0", "t1", "t2"]
    assert all(t.done() for t in tasks)
    assert len(owner) == 0
    with pytest.raises(StreamClosedError, match="closed"):
        owner.spawn(forever("late"), name="late")


async def test_task_owner_records_failures_and_drains() -> None:
    owner = TaskOwner("session")

    async def fail() -> None:
        raise RuntimeError("boom")

    owner.spawn(fail(), name="fail")
    assert await owner.drain(1.0)
    assert [str(e) for e in owner.errors] == ["boom"]
    await owner.aclose()
