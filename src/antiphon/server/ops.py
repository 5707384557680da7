"""Operations endpoints: ``/livez``, ``/readyz`` (``/healthz``), and ``/metrics`` gauges.

What a load balancer or an orchestrator needs to run many ``antiphon serve`` processes
side by side (docs/deploy.md):

- ``GET /livez`` answers ``200 ok`` while the process and its event loop are alive. It
  reads nothing the calls use and awaits nothing, so a busy server still answers it; only
  a stuck event loop fails it (which is what a liveness probe is for).
- ``GET /readyz`` answers 200 while the server takes new calls, 503 while it drains
  (after SIGTERM) or while it is full (``max_sessions`` calls). A load balancer that
  checks it stops sending calls there; calls already pinned to the process go on.
  ``GET /healthz`` is the same check under its old name, with its old JSON body
  (``ok``, ``active_sessions``, ``max_sessions``, ``total_sessions``); it now also says
  503 when the server is full.
- ``GET /metrics`` serves the process's Prometheus registry plus gauges read from the
  :class:`~antiphon.server.calls.CallRegistry` at scrape time: ``antiphon_calls_active``,
  ``antiphon_calls_capacity``, ``antiphon_draining``, and ``antiphon_event_loop_lag_seconds``
  (the load figure: how late a timer fires, measured by :class:`LoopLagMonitor`). The
  gauges live in a registry of their own per app, so several apps in one process (tests)
  never collide in the global one.

How it is built: :func:`add_ops` adds the routes and wraps the app's lifespan so the lag
monitor's one task is started with the app and cancelled and awaited when it stops (the
app owns it, rule 1). The gauges are a collector, not values pushed on every admit and
leave: the registry stays the single source of truth.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from antiphon.aio.clock import Clock, MonotonicClock
from antiphon.aio.tasks import cancel_and_wait

if TYPE_CHECKING:
    from antiphon.server.calls import CallRegistry

__all__ = ["DRAIN_TIMEOUT", "LAG_INTERVAL", "LoopLagMonitor", "Ops", "add_ops"]

DRAIN_TIMEOUT = 300.0
"""Default seconds a draining server lets its calls finish (``antiphon serve
--drain-timeout``). Kubernetes' ``terminationGracePeriodSeconds`` must exceed it plus the
``preStop`` pause, or the kubelet kills the calls first (deploy/kubernetes/)."""

LAG_INTERVAL = 0.5
"""Seconds between two event-loop lag samples."""


class LoopLagMonitor:
    """How late the event loop wakes a timer: one owned task sleeping ``interval`` at a time.

    ``lag`` is the last sample (seconds past the due time, never negative); ``max_lag``
    the largest since start. A loop that runs heavy work inline, or simply too many calls,
    shows it here long before frames are late.
    """

    def __init__(self, interval: float = LAG_INTERVAL, clock: Clock | None = None) -> None:
        if interval <= 0:
            raise ValueError(f"the lag interval must be > 0 seconds, got {interval}")
        self.interval = interval
        self.lag = 0.0
        self.max_lag = 0.0
        self.samples = 0
        self._clock: Clock = clock or MonotonicClock()

    async def run(self) -> None:
        """Sample forever (until cancelled)."""
        clock = self._clock
        while True:
            due = clock.now() + self.interval
            await clock.sleep_until(due)
            self.lag = max(0.0, clock.now() - due)
            self.max_lag = max(self.max_lag, self.lag)
            self.samples += 1

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LoopLagMonitor]:
        """Run the sampler for the duration of the block; cancel and await it on exit."""
        task = asyncio.get_running_loop().create_task(self.run(), name="loop-lag-monitor")
        try:
            yield self
        finally:
            await cancel_and_wait([task], timeout=5.0, what="loop-lag monitor")


class _Gauges(Collector):
    """The registry's state as Prometheus gauges, read when scraped."""

    def __init__(self, registry: CallRegistry, lag: LoopLagMonitor) -> None:
        self._registry = registry
        self._lag = lag

    def collect(self) -> Iterator[Metric]:
        r = self._registry
        yield GaugeMetricFamily(
            "antiphon_calls_active", "Calls in progress in this process.", len(r.calls)
        )
        yield GaugeMetricFamily(
            "antiphon_calls_capacity",
            "Calls this process admits at once (--max-sessions).",
            r.max_sessions,
        )
        yield GaugeMetricFamily(
            "antiphon_draining",
            "1 while the process drains (refuses new calls, lets active ones finish).",
            1.0 if r.draining else 0.0,
        )
        yield GaugeMetricFamily(
            "antiphon_event_loop_lag_seconds",
            "How late the event loop woke the last timer (sampled every "
            f"{self._lag.interval:g} s).",
            self._lag.lag,
        )


class Ops:
    """What :func:`add_ops` added: the lag monitor and the app's own metrics registry."""

    def __init__(self, registry: CallRegistry, lag: LoopLagMonitor) -> None:
        self.calls = registry
        self.lag = lag
        self.metrics = CollectorRegistry(auto_describe=True)
        self.metrics.register(_Gauges(registry, lag))

    def ready(self) -> tuple[bool, str]:
        """Whether the server takes new calls, and why not."""
        r = self.calls
        if r.draining:
            return False, "draining"
        if len(r.calls) >= r.max_sessions:
            return False, "full"
        return True, "ready"

    def exposition(self) -> bytes:
        """The text of ``/metrics``: the process's global registry, then these gauges."""
        return generate_latest(REGISTRY) + generate_latest(self.metrics)


def add_ops(
    app: FastAPI,
    registry: CallRegistry,
    *,
    lag_interval: float = LAG_INTERVAL,
    clock: Clock | None = None,
    metrics_refused: Callable[[Request], bool] | None = None,
) -> Ops:
    """Add ``/livez``, ``/readyz``, ``/healthz`` and ``/metrics`` to ``app`` (see the module
    docstring) and run the lag monitor with the app's lifespan.

    Call it before other routes are added: the first route of a path wins.
    ``metrics_refused(request)``: True when ``/metrics`` must answer 401 (a token guard).
    """
    ops = Ops(registry, LoopLagMonitor(lag_interval, clock))
    app.state.ops = ops

    async def livez() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    def readiness(extra: bool) -> JSONResponse:
        ok, status = ops.ready()
        r = ops.calls
        body: dict[str, object] = {
            "ok": ok,
            "active_sessions": len(r.calls),
            "max_sessions": r.max_sessions,
            "total_sessions": r.total,
        }
        if extra:
            body.update(status=status, draining=r.draining)
        return JSONResponse(body, status_code=200 if ok else 503)

    async def readyz() -> JSONResponse:
        return readiness(extra=True)

    async def healthz() -> JSONResponse:
        return readiness(extra=False)  # the old body, field for field

    async def metrics(request: Request) -> PlainTextResponse:
        if metrics_refused is not None and metrics_refused(request):
            return PlainTextResponse("missing or wrong token", status_code=401)
        return PlainTextResponse(ops.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/livez", livez, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/healthz", healthz, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)

    inner: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with ops.lag.running(), inner(app) as state:
            yield state

    app.router.lifespan_context = lifespan
    return ops
