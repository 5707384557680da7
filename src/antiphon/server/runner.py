"""Running an app: uvicorn on an asyncio runner, on uvloop when it is installed.

How it is built: :func:`run_app` is the whole of ``antiphon serve`` after the app is
made. uvicorn's ``Config`` is set for calls: WebSocket messages beyond the edge's size
are refused unread, no per-message deflate, and the protocol of
:mod:`~antiphon.server.ws_protocol`, which lets a call's frames skip ASGI's queues.
:class:`~antiphon.server.calls.DrainingServer` makes the first signal drain the calls
before the server stops. The loop is an :class:`asyncio.Runner`'s, made by
:func:`loop_factory` (uvloop's, unless ``ANTIPHON_LOOP=asyncio``). Kept apart from
:mod:`antiphon.server.app` so that the app factory, which tests drive in their own
loop, never touches the process's loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from antiphon.server.calls import DrainingServer
from antiphon.server.edge import install_redaction
from antiphon.server.ws_protocol import CallWebSocketProtocol
from antiphon.transports.limits import EdgeLimits

__all__ = ["loop_factory", "run_app"]


def run_app(
    app: FastAPI, *, host: str, port: int, drain_timeout: float, limits: EdgeLimits
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, then drain its calls (bounded) and stop.

    Args:
        app: an app of :func:`~antiphon.server.app.create_app` (its ``state.calls``
            is drained).
        host: the address to bind.
        port: the port to bind.
        drain_timeout: how long active calls may finish after the first signal.
        limits: the edge's limits (the largest WebSocket message).
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=int(drain_timeout) + 5,
        ws_max_size=limits.max_ws_message_bytes,  # a bigger message is refused unread (1009)
        # PCM and base64 audio barely compress, and deflating every 20 ms frame cost about
        # a tenth of the server's CPU per call (bench/profile_server.py): not offered.
        ws_per_message_deflate=False,
        ws=CallWebSocketProtocol,  # uvicorn's sans-I/O protocol with a direct path for calls
    )
    install_redaction()  # uvicorn configures its loggers again in Config
    server = DrainingServer(config, app.state.calls, drain_timeout)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(server.run_draining())


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (``pip install antiphon[fast]``), unless
    ``ANTIPHON_LOOP=asyncio``; else asyncio's own (None)."""
    if os.environ.get("ANTIPHON_LOOP", "auto") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
