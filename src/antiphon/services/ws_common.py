"""What the WebSocket TTS and STT streams share: the items a connection's handler posts to
the stream's task, and sending a stream's messages in order.

Both drivers (:mod:`antiphon.services.ws_tts_stream`, :mod:`antiphon.services.ws_stt_stream`)
read a connection with a handler (no task) and tell the stream's task only what it must
act on; each item names the connection it came from, so an item of a connection that was
replaced is recognised and ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from antiphon.net.ws import ConnectionLost, WsConnection

__all__ = ["ConnDone", "ConnLost", "send_all"]


@dataclass(frozen=True, slots=True)
class ConnDone:
    """The handler fed connection ``conn_id``'s last message: the stream's work is over."""

    conn_id: int


@dataclass(frozen=True, slots=True)
class ConnLost:
    """Connection ``conn_id`` is gone (its handler's second callback)."""

    conn_id: int
    error: ConnectionLost


async def send_all(conn: WsConnection, msgs: Iterable[str | bytes]) -> ConnectionLost | None:
    """Send ``msgs`` in order on ``conn``: None, or the loss that stopped them (the caller
    recovers; a replay resends what is owed, the message that failed included)."""
    for m in msgs:
        try:
            await conn.send(m)
        except ConnectionLost as exc:
            return exc
    return None
