"""``serve_app``: run an ASGI app with uvicorn on loopback, inside a test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from antiphon.server.ws_protocol import CallWebSocketProtocol
from antiphon.testing.poll import until

__all__ = ["serve_app"]


@asynccontextmanager
async def serve_app(app: Any, *, timeout: float = 30.0, **config: Any) -> AsyncIterator[str]:
    """Serve ``app`` on ``127.0.0.1`` (a free port); yields ``"127.0.0.1:PORT"``.

    On exit the server stops (lifespan shutdown included) within ``timeout`` seconds.
    ``config``: more ``uvicorn.Config`` options (e.g. ``ws_max_size``, as ``serve`` sets).
    WebSockets are served by ``antiphon serve``'s protocol
    (:class:`~antiphon.server.ws_protocol.CallWebSocketProtocol`) unless ``ws`` is given.
    """
    options: dict[str, Any] = {
        "log_level": "warning",
        "lifespan": "on",
        "ws": CallWebSocketProtocol,
        **config,
    }
    server_config = uvicorn.Config(app, host="127.0.0.1", port=0, **options)
    server = uvicorn.Server(server_config)
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        await until(lambda: server.started or task.done(), 10)
        if task.done():
            task.result()  # raises why it could not start
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout)
