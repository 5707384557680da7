"""Transports: how an agent session reaches people (WebSocket, telephony, files)."""

from antiphon.transports.limits import ConnectionGuard, EdgeLimits
from antiphon.transports.websocket import BridgeLimits, StarletteSocket, WebSocketBridge

__all__ = ["BridgeLimits", "ConnectionGuard", "EdgeLimits", "StarletteSocket", "WebSocketBridge"]
