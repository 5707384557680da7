"""Handoff: a worker thread's items reach the loop in order, at most ``maxsize`` in flight.

The thread is a real thread (the point of the hand-off), so these run on real time; every
wait is bounded and on a condition, never a sleep.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from antiphon.aio.channel import ChannelClosed
from antiphon.aio.handoff import Handoff

pytestmark = pytest.mark.realtime
WAIT = 10.0


async def until(condition: object, limit: float = WAIT) -> None:
    assert callable(condition)
    for _ in range(round(limit / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met within {limit}s")


async def test_items_arrive_in_order_and_the_thread_waits_when_full() -> None:
    pipe: Handoff[int] = Handoff(2, name="test")
    returned: list[bool] = []

    def produce() -> None:
        for i in range(6):
            returned.append(pipe.put(i))

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        # two items fill it: the third put cannot return before the reader takes one
        await until(lambda: pipe.qsize() == 2)
        assert len(returned) == 2 and thread.is_alive()
        got = [await pipe.recv() for _ in range(6)]
        assert got == list(range(6)) and returned == [True] * 6  # nothing dropped
    finally:
        thread.join(WAIT)
    assert not thread.is_alive()


async def test_close_wakes_a_waiting_thread_and_drops_what_comes_after() -> None:
    pipe: Handoff[int] = Handoff(1)
    returned: list[bool] = []
    thread = threading.Thread(target=lambda: returned.extend([pipe.put(1), pipe.put(2)]))
    thread.start()
    await until(lambda: pipe.qsize() == 1)  # the second put waits for a slot
    pipe.close()
    await asyncio.to_thread(thread.join, WAIT)
    assert not thread.is_alive() and returned == [True, False]
    assert pipe.closed and pipe.put(3) is False
    with pytest.raises(ChannelClosed):
        await pipe.recv()


def test_a_put_after_the_loop_closed_is_dropped() -> None:
    async def make() -> Handoff[int]:
        return Handoff(1)

    pipe = asyncio.run(make())
    assert pipe.put(1) is False  # nobody reads: the thread is told to stop
    with pytest.raises(ValueError, match="maxsize"):
        asyncio.run(_bad())


async def _bad() -> None:
    Handoff(0)
