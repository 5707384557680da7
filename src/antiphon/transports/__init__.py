"""Transports: how an agent session reaches people (WebSocket, telephony, files)."""

from antiphon.transports.websocket import BridgeLimits, StarletteSocket, WebSocketBridge

__all__ = ["BridgeLimits", "StarletteSocket", "WebSocketBridge"]
