"""``run_chaos``: one fault alongside healthy calls through the real server, on loopback.

Serves the app, opens the healthy calls, injects the fault, polls ``/livez`` and the
loop's lag meanwhile, and checks for leaks afterwards (see :mod:`antiphon.testing.chaos`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from antiphon.agent.options import AgentOptions, TurnOptions
from antiphon.aio.clock import Clock, MonotonicClock
from antiphon.testing.asgi import serve_app
from antiphon.testing.chaos.calls import (
    Chaos,
    ChaosAgent,
    ChaosResult,
    HealthyCall,
    TickClock,
)
from antiphon.testing.chaos.faults import FAULTS, TURNS, Fault
from antiphon.testing.leaks import LeakCheck

__all__ = ["run_chaos"]

# ---------------------------------------------------------------------------- runner


@contextlib.contextmanager
def _fakes(names: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    from antiphon.testing.server import running_in_thread

    with contextlib.ExitStack() as stack:
        fakes: dict[str, Any] = {}
        for name in names:
            if name == "openai":
                from antiphon.testing.openai_chat import FakeOpenAIChat

                fakes[name] = stack.enter_context(running_in_thread(FakeOpenAIChat()))
            elif name == "deepgram-tts":
                from antiphon.testing.deepgram import FakeDeepgramTTS

                fakes[name] = stack.enter_context(running_in_thread(FakeDeepgramTTS()))
        yield fakes


async def _poll_livez(host: str, into: list[tuple[int, float]], every: float) -> None:
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            start = loop.time()
            try:
                status = (await client.get(f"http://{host}/livez")).status_code
            except httpx.HTTPError:
                status = 0
            into.append((status, loop.time() - start))
            await asyncio.sleep(every)


async def _probe_lag(result: ChaosResult, every: float = 0.005) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every
        await asyncio.sleep(every)
        result.loop_lag = max(result.loop_lag, loop.time() - due)


@asynccontextmanager
async def _watching(host: str, result: ChaosResult, every: float) -> AsyncIterator[None]:
    """``/livez`` polled every ``every`` seconds, and the loop's lag, while the block runs."""
    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(_poll_livez(host, result.livez, every), name="livez"),
        loop.create_task(_probe_lag(result), name="loop-lag"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_chaos(fault: Fault | str, *, virtual: bool = True, healthy: int = 3) -> ChaosResult:
    """Run one fault alongside ``healthy`` calls; see the module docstring."""
    from antiphon.server.app import create_app

    f = FAULTS[fault] if isinstance(fault, str) else fault
    result = ChaosResult(f.name, virtual, expected=f.expected)
    wall = time.perf_counter()
    clock: Clock = TickClock() if virtual else MonotonicClock()
    options = f.options or AgentOptions(turn=TurnOptions(final_timeout=1.0))
    with _fakes(f.fakes) as fakes:
        leaks = LeakCheck(ports=[getattr(x, "port", 0) for x in fakes.values()])
        agent = ChaosAgent(clock, options)
        app = create_app(agent, limits=f.limits, clock=clock, drain_timeout=5.0)
        try:
            # the reader's size limit of antiphon.server.app.serve: a bigger message is
            # refused (1009) before it is read
            served = serve_app(app, ws_max_size=f.limits.max_ws_message_bytes)
            async with served as host, _watching(host, result, 0.05):
                leaks.ports.add(int(host.rsplit(":", 1)[1]))
                chaos = Chaos(
                    app=app,
                    host=host,
                    clock=clock,
                    agent=agent,
                    limits=f.limits,
                    result=result,
                    fakes=fakes,
                )
                try:
                    for i in range(healthy):
                        await chaos.open(f"healthy-{i}", talk_turns=TURNS)
                    await chaos.run_until(
                        lambda: all(p.turns >= 1 for p in chaos.healthy()), what="healthy turns"
                    )
                    chaos.fault_start = clock.now()
                    await f.act(chaos)
                    await chaos.run_until(
                        lambda: all(p.answered or p.closed_at is not None for p in chaos.healthy()),
                        what="every healthy turn answered",
                    )
                    await chaos.finish()
                except AssertionError as exc:
                    result.failure = str(exc) or repr(exc)
                finally:
                    for p in chaos.peers:
                        if p.ws is not None:
                            p.ws.transport.abort()
                        if p.reader is not None:
                            await asyncio.gather(p.reader, return_exceptions=True)
                for p in chaos.healthy():
                    result.healthy.append(
                        HealthyCall(p.name, p.turns, p.talk_turns, p.worst_gap(),
                                    p.close_code, p.server_code)
                    )  # fmt: skip
                result.active_after = len(app.state.calls.calls)
        finally:
            with contextlib.suppress(AssertionError):
                await leaks.assert_clean(settle=2.0)
            result.leaks = leaks.leftovers()
    result.wall = time.perf_counter() - wall
    return result
