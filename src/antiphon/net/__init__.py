"""Network connections: WebSocket and HTTP with deadlines, pools, prewarm, bounded close."""

from antiphon.net.http import (
    BodyReader,
    HttpAuthError,
    HttpOptions,
    HttpStatusError,
    make_client,
    open_response,
)
from antiphon.net.pool import ConnectionPool, PoolOptions, PoolStats
from antiphon.net.ws import ConnectionLost, WsConnection, WsOptions, connect

__all__ = [
    "BodyReader",
    "ConnectionLost",
    "ConnectionPool",
    "HttpAuthError",
    "HttpOptions",
    "HttpStatusError",
    "PoolOptions",
    "PoolStats",
    "WsConnection",
    "WsOptions",
    "connect",
    "make_client",
    "open_response",
]
