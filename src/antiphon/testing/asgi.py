"""Run an ASGI app for a test: :func:`serve_app` with uvicorn on loopback, inside the
test's event loop; :func:`open_protocol`, ``antiphon serve``'s WebSocket protocol on a
transport double, without a socket, with the client's side of the same bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from antiphon.server.ws_protocol import CallWebSocketProtocol
from antiphon.testing.poll import until

__all__ = ["open_protocol", "serve_app"]


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


def open_protocol(
    app: Any,
    transport: asyncio.BaseTransport,
    *,
    path: str = "/ws",
    kind: type[CallWebSocketProtocol] = CallWebSocketProtocol,
    **config: Any,
) -> tuple[CallWebSocketProtocol, ClientProtocol]:
    """A server protocol of ``kind`` serving ``app`` on ``transport`` (a double), and a
    ``websockets`` client protocol whose upgrade request to ``path`` it has been fed.

    The app runs (and accepts) when the loop next runs; what the server writes goes to
    ``transport``, for the client's ``receive_data``. ``config``: more
    ``uvicorn.Config`` options (``log_level`` is ``warning`` unless given).
    """
    server_config = uvicorn.Config(app, **{"log_level": "warning", **config})
    server_config.load()
    protocol = kind(server_config, uvicorn.server.ServerState(), {})
    protocol.connection_made(transport)
    client = ClientProtocol(parse_uri(f"ws://127.0.0.1:8000{path}"))
    client.send_request(client.connect())
    protocol.data_received(b"".join(client.data_to_send()))
    return protocol, client
