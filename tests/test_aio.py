"""aio helpers: closable channel, virtual clock, deadlines, task owner."""

from __future__ import annotations

import asyncio

import pytest

from antiphon.aio import Channel, ChannelClosed, ChannelFull, TaskOwner, VirtualClock, deadline
from antiphon.aio.channel import Overflow
from antiphon.aio.stream import InputStream, StreamState
from antiphon.aio.tasks import shielded_wait
from antiphon.errors import AntiphonError, ProviderError, ProviderTimeoutError, StreamClosedError

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


async def test_a_cancelled_waiter_leaves_no_trace_and_the_next_one_is_woken() -> None:
    ch: Channel[int] = Channel(maxsize=1)
    gone = asyncio.create_task(ch.recv())
    kept = asyncio.create_task(ch.recv())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    ch.send_nowait(7)
    assert await kept == 7
    # a sender cancelled while the channel is full: its item never arrives
    ch.send_nowait(1)
    dropped = asyncio.create_task(ch.send(2))
    waiting = asyncio.create_task(ch.send(3))
    await asyncio.sleep(0)
    dropped.cancel()
    await asyncio.gather(dropped, return_exceptions=True)
    assert ch.recv_nowait() == 1
    await waiting
    assert ch.recv_nowait() == 3 and ch.qsize() == 0


async def test_two_receivers_each_get_one_item() -> None:
    ch: Channel[int] = Channel(maxsize=4)
    receivers = [asyncio.create_task(ch.recv()) for _ in range(2)]
    await asyncio.sleep(0)
    ch.send_nowait(1)
    ch.send_nowait(2)
    assert sorted(await asyncio.gather(*receivers)) == [1, 2]


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
    # typed, and not a builtin TimeoutError/OSError: an `except TimeoutError` around an
    # asyncio.timeout() must never take a provider's timeout for its own deadline
    assert isinstance(err, AntiphonError) and not isinstance(err, TimeoutError | OSError)


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


# ------------------------------------------------------------------ overflow policies


async def test_block_policy_waits_for_room_and_refuses_send_nowait() -> None:
    ch: Channel[int] = Channel(2, Overflow.BLOCK, name="q")
    ch.send_nowait(1)
    ch.send_nowait(2)
    with pytest.raises(ChannelFull, match=r"q is full \(2 items queued, policy block\)") as info:
        ch.send_nowait(3)
    assert info.value.maxsize == 2 and isinstance(info.value, AntiphonError)
    blocked = asyncio.create_task(ch.send(3))
    await asyncio.sleep(0)
    assert not blocked.done()
    assert ch.recv_nowait() == 1
    await blocked
    assert [ch.recv_nowait(), ch.recv_nowait()] == [2, 3]


async def test_drop_oldest_policy_keeps_the_newest_and_counts() -> None:
    ch: Channel[int] = Channel(3, Overflow.DROP_OLDEST)
    for i in range(5):
        ch.send_nowait(i)
    await ch.send(5)  # never waits
    assert ch.dropped == 3 and ch.qsize() == 3
    assert [ch.recv_nowait() for _ in range(3)] == [3, 4, 5]


async def test_fail_policy_raises_to_sender_and_keeps_the_channel_usable() -> None:
    ch: Channel[int] = Channel(1, Overflow.FAIL)
    await ch.send(1)
    with pytest.raises(ChannelFull):
        await ch.send(2)  # does not wait
    with pytest.raises(ChannelFull):
        ch.send_nowait(2)
    assert ch.recv_nowait() == 1
    ch.send_nowait(3)
    assert ch.recv_nowait() == 3


def test_discard_drops_matching_items_in_order() -> None:
    ch: Channel[int] = Channel(10)
    for i in range(8):
        ch.send_nowait(i)
    assert ch.discard(lambda i: i % 2 == 0, limit=2) == 2
    assert ch.discard(lambda i: i > 5) == 2
    assert [ch.recv_nowait() for _ in range(ch.qsize())] == [1, 3, 4, 5]


# ------------------------------------------------------------------ nursery semantics


async def test_task_owner_reports_a_failure_at_once_but_not_a_cancellation() -> None:
    failures: list[tuple[str, BaseException]] = []
    owner = TaskOwner("sess", on_failure=lambda t, e: failures.append((t.get_name(), e)))

    async def boom() -> None:
        raise KeyError("x")

    async def forever() -> None:
        await asyncio.Event().wait()

    sibling = owner.spawn(forever(), name="sibling")
    owner.spawn(boom(), name="boom")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [(n, type(e)) for n, e in failures] == [("sess:boom", KeyError)]
    assert owner.failed
    sibling.cancel()
    await asyncio.sleep(0)
    assert len(failures) == 1  # a cancelled task is no failure
    await owner.aclose(1.0)


async def test_shielded_wait_finishes_the_close_then_reraises() -> None:
    release = asyncio.Event()
    finished: list[str] = []

    async def close() -> str:
        await release.wait()
        finished.append("closed")
        return "ok"

    inner = asyncio.create_task(close())
    outer = asyncio.create_task(shielded_wait(inner))
    await asyncio.sleep(0)
    outer.cancel()
    await asyncio.sleep(0)
    assert not outer.done() and not inner.cancelled()
    outer.cancel()  # twice: still waits
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert finished == ["closed"] and inner.result() == "ok"
    assert await shielded_wait(inner) == "ok"


class _Numbers(InputStream[int]):
    """Emits each pushed number; ``hold`` keeps it from taking its mailbox."""

    max_output = 3
    max_input = 2

    def __init__(self, owner: TaskOwner, hold: asyncio.Event) -> None:
        self._hold = hold
        super().__init__(provider="numbers", generation=0, close_timeout=1.0)
        self._launch(owner, "numbers")

    def push(self, n: int) -> None:
        self._check_input("push")
        self._mailbox.send_nowait(n)

    async def _run(self) -> None:
        await self._hold.wait()
        async for n in self._mailbox:
            assert isinstance(n, int)
            self._out.send_nowait(n)


async def test_a_stream_whose_consumer_falls_behind_fails_typed() -> None:
    owner = TaskOwner("t")
    go = asyncio.Event()
    go.set()
    s = _Numbers(owner, go)
    for n in range(4):  # one more than max_output, nobody reading
        s.push(n)
        await asyncio.sleep(0)
    assert await asyncio.wait_for(s.wait(), 1) is StreamState.FAILED
    assert s.error is not None and s.error.stage == "output"
    assert "fell behind: 3 items unread" in str(s.error)
    got = []
    with pytest.raises(ProviderError, match="fell behind"):
        async for n in s:
            got.append(n)
    assert got == [0, 1, 2]
    await owner.aclose(1.0)


async def test_a_stream_whose_provider_falls_behind_its_input_fails_typed() -> None:
    owner = TaskOwner("t")
    s = _Numbers(owner, asyncio.Event())  # never takes its mailbox
    s.push(1)
    s.push(2)
    with pytest.raises(StreamClosedError, match="fell behind its input: 2 inputs queued"):
        s.push(3)
    assert s.state is StreamState.FAILED and s.error is not None
    assert s.error.stage == "input" and s.error.retryable
    with pytest.raises(StreamClosedError):
        s.push(4)
    await s.aclose()
    await owner.aclose(1.0)
    assert not owner.failed
