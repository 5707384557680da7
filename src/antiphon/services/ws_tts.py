"""The driver shared by every WebSocket streaming-TTS plugin.

A plugin subclasses :class:`WebSocketTTS` and supplies a URL, headers, a session factory
(its protocol module's :class:`~antiphon.protocols.tts_session.TTSSession`) and the
mapping of close codes to errors. The driver does the rest, once, for all of them. It is
built in two modules, one per lifetime:

- this one, the service, which outlives its streams:

  - connections come from a :class:`~antiphon.net.pool.ConnectionPool` (warm, reused);
  - a cancelled stream's connection is cleared (waiting for the acknowledgement where the
    protocol has no stream ids; a handler feeds what arrives meanwhile to the session)
    and only then pooled again, so old audio never reaches the next turn. The clearing
    outlives the cancelled stream, so a task of the service runs it;

- :mod:`antiphon.services.ws_tts_stream`, one synthesis
  (:class:`WebSocketSynthesisStream`): the connection's message handler that puts audio
  straight into the stream's output, the stream's mailbox loop, the replay on a new
  connection, the first-audio and idle deadlines and the word timings (its docstring
  says how).

Both classes are importable from here, where plugins import them.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Mapping
from functools import partial

from antiphon import metrics
from antiphon.errors import ConfigError, ProviderError
from antiphon.net.pool import ConnectionPool, PoolOptions
from antiphon.net.ws import WsConnection
from antiphon.protocols.tts_session import Act, Action, TTSSession
from antiphon.services.tts import TTS, TTSDeadlines
from antiphon.services.ws_common import WsEndpoint
from antiphon.services.ws_tts_stream import WebSocketSynthesisStream

__all__ = [
    "WebSocketSynthesisStream",
    "WebSocketTTS",
]

log = logging.getLogger(__name__)


class WebSocketTTS(TTS, WsEndpoint):
    """Base of streaming TTS plugins over a WebSocket with a pooled connection.

    ``wire_encoding`` is the audio encoding on the wire (linear16, mulaw or alaw); frames
    always come out as int16 PCM. ``max_reconnects``: how often a stream may move to a new
    connection when one drops before any audio of the pending text arrived.
    """

    def __init__(
        self,
        *,
        url: str,
        headers: Mapping[str, str],
        auth_hint: str,
        sample_rate: int,
        wire_encoding: str,
        deadlines: TTSDeadlines | None = None,
        pool: PoolOptions | None = None,
        max_reconnects: int = 1,
    ) -> None:
        if max_reconnects < 0:
            raise ConfigError("max_reconnects must be >= 0")
        if wire_encoding not in ("linear16", "mulaw", "alaw"):
            raise ConfigError(f"{self.provider}: unsupported wire encoding {wire_encoding!r}")
        super().__init__(sample_rate=sample_rate, channels=1, deadlines=deadlines)
        self._set_endpoint(
            url,
            headers,
            auth_hint,
            connect_timeout=self.deadlines.connect,
            send_timeout=self.deadlines.idle,
            close_timeout=self.deadlines.close,
        )
        self.wire_encoding = wire_encoding
        self.max_reconnects = max_reconnects
        self.pool = ConnectionPool(self._connect, name=f"{self.provider}-tts", options=pool)

    # -- what a plugin supplies
    @abstractmethod
    def new_session(self) -> TTSSession:
        """A fresh protocol session for one stream."""

    @abstractmethod
    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        """The typed error for a server close (``retryable`` decides about replay)."""

    def notice(self, action: Action) -> None:
        """An informational server message (override to log warnings)."""
        log.debug("%s: %s", self.provider, action.event)

    # -- connections
    async def prewarm(self) -> None:
        """Open a connection now so the first stream skips the handshake."""
        await self.pool.prewarm(1)

    def _new_stream(self, generation: int) -> WebSocketSynthesisStream:
        return WebSocketSynthesisStream(self, generation)

    async def _aclose_resources(self) -> None:
        await self.pool.aclose()

    def _recycle(self, conn: WsConnection, session: TTSSession) -> None:
        """After a cancel: clear the server's queue, then pool the connection again.

        Synchronous, in the cancelled stream's task: the stream's handler is replaced at
        once, so from here on every message reaches the session of the clearing.
        """
        msgs = session.clear()
        if not msgs:
            conn.clear_handler()
            self.pool.release(conn, reusable=True)
        elif self._tasks.closing or not conn.open:
            conn.clear_handler()
            self.pool.discard(conn)
        else:
            cleared: asyncio.Future[BaseException | None] = (
                asyncio.get_running_loop().create_future()
            )
            conn.set_handler(
                partial(self._clearing, session, cleared),
                partial(_settle, cleared),
                stage="clear",
            )
            task = self._tasks.spawn(
                self._clear_and_release(conn, session, msgs, cleared), name="clear"
            )
            task.add_done_callback(partial(self._unstarted, conn))

    def _unstarted(self, conn: WsConnection, task: asyncio.Task[None]) -> None:
        """A clearing cancelled before it ran (the service closing) never reached its
        ``finally``: the connection is not back in the pool; discard it."""
        if task.cancelled() and self.pool.is_returning(conn):
            conn.clear_handler()
            self.pool.discard(conn)

    def _clearing(
        self,
        session: TTSSession,
        cleared: asyncio.Future[BaseException | None],
        data: str | bytes,
    ) -> None:
        """A message while the server clears: fed to the session until it acknowledges."""
        if cleared.done():
            self.pool.stats.stale_messages += 1
            return
        try:
            action = session.feed(data)
        except Exception as exc:  # a protocol bug: the connection is not reused
            cleared.set_result(exc)
            return
        if action.act is Act.CLEAR_DONE or not session.clear_needs_ack:
            cleared.set_result(None)
        elif action.act is Act.DROP:
            metrics.TTS_DROPPED_MESSAGES.labels(self.provider, "after_clear").inc()

    async def _clear_and_release(
        self,
        conn: WsConnection,
        session: TTSSession,
        msgs: list[str | bytes],
        cleared: asyncio.Future[BaseException | None],
    ) -> None:
        reusable = False
        try:
            async with asyncio.timeout(self.deadlines.clear):
                for m in msgs:
                    await conn.send(m, stage="clear")
                if session.clear_needs_ack:
                    error = await cleared
                    if error is not None:
                        raise error
                reusable = True
        except (TimeoutError, ProviderError) as exc:
            log.info(
                "%s: connection #%d not reused after a cancel: %s", self.provider, conn.id, exc
            )
        finally:
            conn.clear_handler()
            if reusable:
                self.pool.release(conn, reusable=True)
            else:
                self.pool.discard(conn)


def _settle(cleared: asyncio.Future[BaseException | None], error: BaseException) -> None:
    """The connection was lost while the server cleared: it is not reused."""
    if not cleared.done():
        cleared.set_result(error)
