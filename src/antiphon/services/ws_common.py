"""What the WebSocket TTS and STT drivers share: where a service connects
(:class:`WsEndpoint`), the items a connection's handler posts to the stream's task, and
sending a stream's messages in order.

Both drivers (:mod:`antiphon.services.ws_tts_stream`,
:mod:`antiphon.services.ws_stt_stream`), and the realtime session for :class:`ConnLost`,
read a connection with a handler (no task) and tell the stream's task only what it must
act on; each item names the connection it came from, so an item of a connection that was
replaced is recognised and ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from antiphon.net.ws import ConnectionLost, WsConnection, WsOptions, connect

__all__ = ["ConnDone", "ConnLost", "WsEndpoint", "send_all"]


class WsEndpoint:
    """Where a WebSocket service connects: its URL, handshake headers and socket deadlines.

    A base of :class:`~antiphon.services.ws_tts.WebSocketTTS` and
    :class:`~antiphon.services.ws_stt.WebSocketSTT`; each sets it up in its
    ``__init__`` (:meth:`_set_endpoint`) with the deadlines its service has.
    """

    provider: ClassVar[str]
    url: str
    _headers: dict[str, str]
    _auth_hint: str
    _ws_options: WsOptions

    def _set_endpoint(
        self,
        url: str,
        headers: Mapping[str, str],
        auth_hint: str,
        *,
        connect_timeout: float,
        send_timeout: float,
        close_timeout: float,
    ) -> None:
        self.url = url
        self._headers = dict(headers)
        self._auth_hint = auth_hint
        self._ws_options = WsOptions(
            connect_timeout=connect_timeout, send_timeout=send_timeout, close_timeout=close_timeout
        )

    @property
    def headers(self) -> Mapping[str, str]:
        """The handshake headers (credentials included: do not log them)."""
        return dict(self._headers)

    async def open_url(self) -> str:
        """The URL of a new connection: :attr:`url`, or, for a protocol that asks an HTTP
        endpoint for a session first, that session's URL (errors typed, stage
        ``connect``, within the ``connect`` deadline)."""
        return self.url

    async def _connect(self) -> WsConnection:
        return await connect(
            await self.open_url(),
            provider=self.provider,
            headers=self._headers,
            options=self._ws_options,
            auth_hint=self._auth_hint,
        )


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
