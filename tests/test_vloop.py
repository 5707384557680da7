"""The suite's control of time: the virtual-time loop, fake-side leak checks, the CI
profile, and VirtualClock settling until idle."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
from websockets.asyncio.server import ServerConnection

from antiphon.aio.clock import VirtualClock
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.server import FakeWsServer, serving
from antiphon.testing.vloop import VirtualTimeLoop, time_scale


class SlowEcho(FakeWsServer):
    """Echoes each message after ``delay`` seconds of (loop) time; stays open."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def handle(self, ws: ServerConnection) -> None:
        async for message in ws:
            await asyncio.sleep(self.delay)
            await ws.send(message)


@pytest.mark.virtual_time
async def test_an_hour_of_sleep_is_an_hour_of_loop_time() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    began, jumps = loop.time(), loop.jumps
    await asyncio.sleep(3600)
    assert loop.time() - began == 3600
    assert loop.jumps == jumps + 1


@pytest.mark.virtual_time
async def test_timers_fire_in_order_at_their_own_times() -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    fired: list[tuple[str, float]] = []

    def fire(name: str) -> None:
        fired.append((name, loop.time() - began))

    for name, delay in (("c", 3.0), ("a", 1.0), ("b", 2.0)):
        loop.call_later(delay, fire, name)
    await asyncio.sleep(5)
    assert fired == [("a", 1.0), ("b", 2.0), ("c", 3.0)]


@pytest.mark.virtual_time
@pytest.mark.parametrize(("deadline", "answered"), [(1.0, True), (0.4, False)])
async def test_a_deadline_races_a_fake_in_the_same_loop_exactly(
    deadline: float, answered: bool
) -> None:
    """The fake answers after 0.5 s: a 1 s deadline sees the answer, a 0.4 s one fires at
    exactly 0.4 s; the socket traffic in between never lets the clock skip ahead."""
    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    async with serving(SlowEcho(0.5)) as fake, connect(fake.url) as ws:
        began = loop.time()
        await ws.send("ping")
        if answered:
            async with asyncio.timeout(deadline):
                assert await ws.recv() == "ping"
            assert loop.time() - began == pytest.approx(0.5)
        else:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(deadline):
                    await ws.recv()
            assert loop.time() - began == pytest.approx(deadline)


@pytest.mark.virtual_time
async def test_the_clock_waits_for_executor_threads() -> None:
    """A thread's result is never overtaken by a deadline: while an executor job runs,
    the loop waits in real time and the virtual clock stands still."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    go = threading.Event()
    began = loop.time()
    job = loop.run_in_executor(None, go.wait, 30)
    loop.call_soon(threading.Timer(0.05, go.set).start)
    async with asyncio.timeout(0.001):  # far shorter than the thread takes in real time
        assert await job is True
    assert loop.time() == began and loop.threads_in_flight == 0


@pytest.mark.virtual_time
async def test_leak_check_tells_the_fakes_tasks_from_the_clients() -> None:
    from websockets.asyncio.client import connect

    async with serving(SlowEcho(0.0)) as fake:
        leaks = LeakCheck(ports=[fake.port])
        async with connect(fake.url) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            # The fake's handler is alive and is not counted; the client's socket is.
            assert any("socket" in item for item in leaks.leftovers())
        await leaks.assert_clean(settle=0.5)  # the fake's tasks still run: not leaks
        stray = asyncio.create_task(asyncio.sleep(60), name="stray")
        with pytest.raises(AssertionError, match="stray"):
            await leaks.assert_clean(settle=0.5)
        stray.cancel()


class TestVirtualTimeClass:
    virtual_time = True

    async def test_a_class_flag_selects_the_virtual_loop(self) -> None:
        assert isinstance(asyncio.get_running_loop(), VirtualTimeLoop)


async def test_unmarked_tests_keep_the_ordinary_loop() -> None:
    assert not isinstance(asyncio.get_running_loop(), VirtualTimeLoop)


def test_time_scale_comes_from_one_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTIPHON_TEST_TIME_SCALE", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert time_scale() == 1.0  # an idle machine
    monkeypatch.setattr(os, "getloadavg", lambda: (100.0, 100.0, 100.0))
    assert time_scale() == 3.0  # a loaded one: the CI margins, capped
    monkeypatch.setenv("CI", "true")
    assert time_scale() == 3.0
    monkeypatch.setenv("ANTIPHON_TEST_TIME_SCALE", "5")
    assert time_scale() == 5.0
    monkeypatch.setenv("ANTIPHON_TEST_TIME_SCALE", "fast")
    with pytest.raises(ValueError, match="ANTIPHON_TEST_TIME_SCALE"):
        time_scale()


async def test_virtual_clock_settles_until_the_loop_is_idle() -> None:
    """A sleeper woken by ``advance`` finishes a long chain of hand-offs before
    ``advance`` returns (a fixed five loop turns would stop half way)."""
    clock = VirtualClock()
    steps: list[int] = []

    async def relay() -> None:
        await clock.sleep(1.0)
        for i in range(50):
            await asyncio.sleep(0)
            steps.append(i)

    task = asyncio.create_task(relay())
    await asyncio.sleep(0)
    await clock.advance(1.0)
    assert len(steps) == 50 and task.done()
