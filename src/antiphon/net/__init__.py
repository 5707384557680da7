"""Network connections: WebSocket with deadlines, pools, prewarm, bounded close."""

from antiphon.net.pool import ConnectionPool, PoolOptions, PoolStats
from antiphon.net.ws import ConnectionLost, WsConnection, WsOptions, connect

__all__ = [
    "ConnectionLost",
    "ConnectionPool",
    "PoolOptions",
    "PoolStats",
    "WsConnection",
    "WsOptions",
    "connect",
]
