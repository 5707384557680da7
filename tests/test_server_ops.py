"""The operations endpoints (``/livez``, ``/readyz``, ``/healthz``, ``/metrics``) through
the ASGI app, and the event-loop lag monitor on a clock the test controls."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from antiphon.cli import build_parser
from antiphon.server.app import CallRegistry, create_app, serve
from antiphon.server.ops import DRAIN_TIMEOUT, LoopLagMonitor, Ops
from antiphon.testing.agent import doubles_agent
from antiphon.testing.asgi import serve_app
from antiphon.testing.poll import until


class Pinned:
    """A call that stays until the test (or a drain) ends it."""

    def __init__(self, registry: CallRegistry) -> None:
        self.registry = registry
        self.ended: list[int] = []

    def end(self, code: int, reason: str) -> None:
        self.ended.append(code)
        self.registry.leave(self)


def _app(max_sessions: int = 2) -> FastAPI:
    return create_app(doubles_agent(["hi"], ["Hello."]), max_sessions=max_sessions)


@asynccontextmanager
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as c:
        yield c


def gauges(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("antiphon_")
    }


async def test_livez_answers_while_full_and_draining() -> None:
    app = _app(max_sessions=1)
    registry: CallRegistry = app.state.calls
    async with client(app) as c:
        assert (await c.get("/livez")).text == "ok\n"
        assert registry.admit(Pinned(registry))
        registry.draining = True
        r = await c.get("/livez")
        assert r.status_code == 200 and r.text == "ok\n"


async def test_readyz_is_503_when_full_and_when_draining() -> None:
    app = _app(max_sessions=2)
    registry: CallRegistry = app.state.calls
    async with client(app) as c:
        r = await c.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "ready"
        first, second = Pinned(registry), Pinned(registry)
        assert registry.admit(first)
        assert (await c.get("/readyz")).status_code == 200  # 1 of 2
        assert registry.admit(second)
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {
            "ok": False,
            "status": "full",
            "active_sessions": 2,
            "max_sessions": 2,
            "total_sessions": 2,
            "draining": False,
        }
        first.end(1000, "")
        assert (await c.get("/readyz")).status_code == 200  # room again

        drained = asyncio.create_task(registry.drain(timeout=30))
        await until(lambda: registry.draining)
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "draining"
        second.end(1000, "")  # the last call ends by itself: the drain ends no call
        assert await asyncio.wait_for(drained, 30) == 0
        assert second.ended == [1000]
        assert (await c.get("/readyz")).status_code == 503  # a drained server stays out


async def test_healthz_is_readyz_with_the_old_fields() -> None:
    app = _app(max_sessions=1)
    registry: CallRegistry = app.state.calls
    async with client(app) as c:
        r = await c.get("/healthz")
        assert r.status_code == 200
        assert r.json() == {
            "ok": True,
            "active_sessions": 0,
            "max_sessions": 1,
            "total_sessions": 0,
        }
        assert registry.admit(Pinned(registry))
        r = await c.get("/healthz")  # full: before, /healthz said 200 here
        assert r.status_code == 503 and r.json()["ok"] is False


async def test_metrics_gauges_follow_the_registry() -> None:
    app = _app(max_sessions=3)
    registry: CallRegistry = app.state.calls
    async with client(app) as c:
        r = await c.get("/metrics")
        assert r.headers["content-type"].startswith("text/plain")
        g = gauges(r.text)
        assert g["antiphon_calls_active"] == 0
        assert g["antiphon_calls_capacity"] == 3
        assert g["antiphon_draining"] == 0
        assert g["antiphon_event_loop_lag_seconds"] == 0
        assert registry.admit(Pinned(registry)) and registry.admit(Pinned(registry))
        registry.draining = True
        g = gauges((await c.get("/metrics")).text)
        assert (g["antiphon_calls_active"], g["antiphon_draining"]) == (2, 1)


async def test_two_apps_in_one_process_keep_their_own_gauges() -> None:
    one, two = _app(max_sessions=4), _app(max_sessions=7)
    async with client(one) as c1, client(two) as c2:
        g1 = gauges((await c1.get("/metrics")).text)
        g2 = gauges((await c2.get("/metrics")).text)
    assert (g1["antiphon_calls_capacity"], g2["antiphon_calls_capacity"]) == (4, 7)


class LateClock:
    """A clock whose timers fire ``late`` seconds after they are due (a busy loop)."""

    def __init__(self, late: float) -> None:
        self.late = late
        self._now = 0.0
        self.sleeps = 0

    def now(self) -> float:
        return self._now

    async def sleep_until(self, when: float) -> None:
        self.sleeps += 1
        await asyncio.sleep(0)
        self._now = max(self._now, when) + self.late


async def test_lag_monitor_reports_how_late_timers_fire() -> None:
    clock = LateClock(late=0.25)
    monitor = LoopLagMonitor(interval=1.0, clock=clock)
    async with monitor.running():
        await until(lambda: monitor.samples >= 3)
    assert monitor.lag == 0.25 and monitor.max_lag == 0.25
    samples = monitor.samples
    await asyncio.sleep(0)
    assert monitor.samples == samples  # the sampler stopped with the block
    assert clock.sleeps in (samples, samples + 1)


def test_lag_monitor_refuses_a_zero_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        LoopLagMonitor(interval=0)


async def test_lag_monitor_runs_with_the_app_and_stops_with_it() -> None:
    app = _app()
    ops: Ops = app.state.ops
    tasks_before = {t.get_name() for t in asyncio.all_tasks()}
    assert "loop-lag-monitor" not in tasks_before
    async with serve_app(app) as host:
        await until(lambda: ops.lag.samples >= 1, 30)
        assert any(t.get_name() == "loop-lag-monitor" for t in asyncio.all_tasks())
        async with httpx.AsyncClient() as c:
            g = gauges((await c.get(f"http://{host}/metrics", timeout=30)).text)
        assert 0 <= g["antiphon_event_loop_lag_seconds"] <= ops.lag.max_lag
    assert not any(t.get_name() == "loop-lag-monitor" for t in asyncio.all_tasks())


def test_the_drain_default_is_sized_for_calls() -> None:
    args = build_parser().parse_args(["serve"])
    assert args.drain_timeout == DRAIN_TIMEOUT >= 60
    assert inspect.signature(serve).parameters["drain_timeout"].default == DRAIN_TIMEOUT
