"""The driver shared by every WebSocket streaming-TTS plugin.

A plugin subclasses :class:`WebSocketTTS` and supplies a URL, headers, a session factory
(its protocol module's :class:`~antiphon.protocols.tts_session.TTSSession`) and the
mapping of close codes to errors. This module does the rest, once, for all of them:

- connections come from a :class:`~antiphon.net.pool.ConnectionPool` (warm, reused);
- one task per stream reads a single mailbox that carries both the user's text and the
  server's messages, so their order is the order of events, never of scheduling;
- a connection that drops before any audio of the pending text arrived is replaced and
  the text replayed (``max_reconnects``); a drop after audio fails the stream;
- a cancelled stream's connection is cleared (waiting for the acknowledgement where the
  protocol has no stream ids) and only then pooled again, so old audio never reaches the
  next turn;
- first-audio and idle deadlines bound every wait.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from antiphon import metrics
from antiphon.audio.codecs import decode_to_pcm
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError
from antiphon.net.pool import ConnectionPool, PoolOptions
from antiphon.net.ws import ConnectionLost, WsConnection, WsOptions, connect
from antiphon.protocols.tts_session import Act, Action, TTSSession
from antiphon.services.tts import (
    TTS,
    EndInput,
    FlushInput,
    SynthesisStream,
    TextInput,
    TTSDeadlines,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _ServerMessage:
    conn_id: int
    data: str | bytes


@dataclass(frozen=True, slots=True)
class _Lost:
    conn_id: int
    error: ConnectionLost


class WebSocketTTS(TTS):
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
        self.url = url
        self._headers = dict(headers)
        self._auth_hint = auth_hint
        self.wire_encoding = wire_encoding
        self.max_reconnects = max_reconnects
        self._ws_options = WsOptions(
            connect_timeout=self.deadlines.connect,
            send_timeout=self.deadlines.idle,
            close_timeout=self.deadlines.close,
        )
        self.pool = ConnectionPool(self._connect, name=f"{self.provider}-tts", options=pool)

    @property
    def headers(self) -> Mapping[str, str]:
        """The handshake headers (credentials included: do not log them)."""
        return dict(self._headers)

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
    async def _connect(self) -> WsConnection:
        return await connect(
            self.url,
            provider=self.provider,
            headers=self._headers,
            options=self._ws_options,
            auth_hint=self._auth_hint,
        )

    async def prewarm(self) -> None:
        """Open a connection now so the first stream skips the handshake."""
        await self.pool.prewarm(1)

    def _new_stream(self, generation: int) -> WebSocketSynthesisStream:
        return WebSocketSynthesisStream(self, generation)

    async def _aclose_resources(self) -> None:
        await self.pool.aclose()

    def _recycle(self, conn: WsConnection, session: TTSSession) -> None:
        """After a cancel: clear the server's queue, then pool the connection again."""
        msgs = session.clear()
        if not msgs:
            self.pool.release(conn, reusable=True)
        elif self._tasks.closing or not conn.open:
            self.pool.discard(conn)
        else:
            self._tasks.spawn(self._clear_and_release(conn, session, msgs), name="clear")

    async def _clear_and_release(
        self, conn: WsConnection, session: TTSSession, msgs: list[str | bytes]
    ) -> None:
        reusable = False
        try:
            async with asyncio.timeout(self.deadlines.clear):
                for m in msgs:
                    await conn.send(m, stage="clear")
                while session.clear_needs_ack:
                    action = session.feed(await conn.recv(stage="clear"))
                    if action.act is Act.CLEAR_DONE:
                        break
                    if action.act is Act.DROP:
                        metrics.TTS_DROPPED_MESSAGES.labels(self.provider, "after_clear").inc()
                reusable = True
        except (TimeoutError, ProviderError) as exc:
            log.info(
                "%s: connection #%d not reused after a cancel: %s", self.provider, conn.id, exc
            )
        finally:
            if reusable:
                self.pool.release(conn, reusable=True)
            else:
                self.pool.discard(conn)


class WebSocketSynthesisStream(SynthesisStream):
    """One synthesis over a pooled connection of a :class:`WebSocketTTS`."""

    def __init__(self, tts: WebSocketTTS, generation: int) -> None:
        self._tts = tts
        self._session = tts.new_session()
        self._conn: WsConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._carry = b""
        self._reconnects = 0
        self._progress_at = 0.0
        super().__init__(
            provider=tts.provider,
            sample_rate=tts.sample_rate,
            channels=1,
            generation=generation,
            owner=tts._tasks,
            close_timeout=tts.deadlines.close,
        )

    # -- connection handling
    async def _attach(self) -> WsConnection:
        conn = await self._tts.pool.acquire()
        self._conn = conn
        self._reader = self._tts._tasks.spawn(self._read(conn), name=f"read#{conn.id}")
        return conn

    async def _read(self, conn: WsConnection) -> None:
        mailbox = self._mailbox
        try:
            while True:
                data = await conn.recv()
                if mailbox.closed:
                    return
                mailbox.send_nowait(_ServerMessage(conn.id, data))
        except ConnectionLost as exc:
            if not mailbox.closed:
                mailbox.send_nowait(_Lost(conn.id, exc))

    async def _detach(self) -> WsConnection | None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.wait([reader])
        conn, self._conn = self._conn, None
        return conn

    async def _send(self, msgs: list[str | bytes]) -> None:
        for m in msgs:
            conn = self._conn
            assert conn is not None
            try:
                await conn.send(m)
            except ConnectionLost as exc:
                await self._recover(exc)
                return  # the replay resent everything owed, this message included

    async def _recover(self, exc: ConnectionLost) -> None:
        """Move to a new connection if nothing of the pending text was heard yet."""
        error = self._tts.close_error(exc.close_code, exc.close_reason, stage=exc.stage)
        replay = self._session.replay()
        if not error.retryable or replay is None or self._reconnects >= self._tts.max_reconnects:
            raise error from None
        self._reconnects += 1
        log.info("%s: connection lost (%s); replaying on a new one", self.provider, exc)
        old = await self._detach()
        if old is not None:
            self._tts.pool.discard(old)
        self._carry = b""
        await self._attach()
        await self._send(self._session.reset_for_replay())
        self._progress_at = asyncio.get_running_loop().time()

    # -- the loop
    async def _run(self) -> None:
        await self._attach()
        try:
            await self._loop()
        except asyncio.CancelledError:
            self._release_after_cancel()
            raise
        except BaseException:
            old = await self._detach()
            if old is not None:
                self._tts.pool.discard(old)
            raise
        old = await self._detach()
        if old is not None:
            self._tts.pool.release(old, reusable=True)

    async def _loop(self) -> None:
        """Take text and server messages from the mailbox until the stream is done."""
        loop = asyncio.get_running_loop()
        session = self._session
        provider = self.provider
        self._progress_at = loop.time()
        heard_in_segment = False
        flush_times: list[float] = []
        while True:
            if session.awaiting_audio and loop.time() >= self._due(heard_in_segment):
                raise self._timeout(heard_in_segment)  # noise alone does not keep it alive
            try:
                item = self._mailbox.recv_nowait()  # no timer when something is waiting
            except asyncio.QueueEmpty:
                item = await self._next_item(session, heard_in_segment)
            if isinstance(item, TextInput):
                await self._send(session.speak(item.text))
            elif isinstance(item, FlushInput | EndInput):
                msgs = session.flush() if isinstance(item, FlushInput) else session.end_input()
                if msgs:
                    if session.pending_flushes == 1:  # the deadline starts now
                        self._progress_at = loop.time()
                    flush_times.append(loop.time())
                await self._send(msgs)
                if session.done:
                    return self._end_audio()
            elif isinstance(item, _ServerMessage):
                if item.conn_id != self._conn_id():
                    continue  # left over from a connection we moved away from
                action = session.feed(item.data)
                if action.act is Act.DELIVER:
                    if not heard_in_segment and flush_times:
                        metrics.TTS_TTFB.labels(provider).observe(loop.time() - flush_times[0])
                    heard_in_segment = True
                    self._progress_at = loop.time()
                    self._deliver(action.audio)
                elif action.act in (Act.SEGMENT_DONE, Act.STREAM_DONE):
                    if action.audio:  # some protocols put audio in the done marker
                        self._deliver(action.audio)
                    heard_in_segment = False
                    self._progress_at = loop.time()
                    if flush_times:
                        flush_times.pop(0)
                    if action.act is Act.STREAM_DONE:
                        return self._end_audio()
                elif action.act is Act.FAIL:
                    raise ProviderError(
                        f"the server reported an error: {action.note}",
                        provider=provider,
                        stage="receive",
                    )
                elif action.act is Act.DROP:
                    metrics.TTS_DROPPED_MESSAGES.labels(provider, "unexpected").inc()
                    log.debug("%s: dropped %s", provider, action.note)
                elif action.act is Act.NOTICE:
                    self._tts.notice(action)
            elif isinstance(item, _Lost) and item.conn_id == self._conn_id():
                await self._recover(item.error)
                if session.done:  # the replay left nothing owed
                    return self._end_audio()

    def _due(self, heard_in_segment: bool) -> float:
        d = self._tts.deadlines
        return self._progress_at + (d.idle if heard_in_segment else d.first_audio)

    def _timeout(self, heard_in_segment: bool) -> ProviderTimeoutError:
        d = self._tts.deadlines
        return ProviderTimeoutError(
            "audio stopped before the done marker" if heard_in_segment else "no audio after flush",
            provider=self.provider,
            stage="receive",
            timeout=d.idle if heard_in_segment else d.first_audio,
            hint="the server went silent; the connection is discarded",
        )

    async def _next_item(self, session: TTSSession, heard_in_segment: bool) -> object:
        """Wait for the next mailbox item, within the deadline of what the server owes."""
        when = self._due(heard_in_segment) if session.awaiting_audio else None
        try:
            async with asyncio.timeout_at(when):
                return await self._mailbox.recv()
        except TimeoutError:
            raise self._timeout(heard_in_segment) from None

    def _conn_id(self) -> int:
        return self._conn.id if self._conn is not None else -1

    def _release_after_cancel(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()  # recv is cancel-safe; the recycler reads from here on
        conn, self._conn = self._conn, None
        if conn is None:
            return
        tts = self._tts
        if tts._tasks.closing:
            tts.pool.discard(conn)
            return
        tts.pool.returning(conn)
        if reader is not None and not reader.done():
            # Let the reader finish cancelling before anyone else reads the socket.
            tts._tasks.spawn(self._recycle_after(reader, conn), name="recycle")
        else:
            tts._recycle(conn, self._session)

    async def _recycle_after(self, reader: asyncio.Task[None], conn: WsConnection) -> None:
        try:
            await asyncio.wait([reader])
        except asyncio.CancelledError:
            self._tts.pool.discard(conn)
            raise
        self._tts._recycle(conn, self._session)

    def _deliver(self, data: bytes) -> None:
        if self._tts.wire_encoding == "linear16":
            if self._carry:
                data = self._carry + data
                self._carry = b""
            if len(data) % 2:
                data, self._carry = data[:-1], data[-1:]
        else:
            data = decode_to_pcm(self._tts.wire_encoding, data)
        if data:
            self._emit(AudioFrame(data, self.sample_rate, 1, self.generation))

    def _end_audio(self) -> None:
        if self._carry:
            log.warning("%s: dropped a trailing odd byte of 16-bit audio", self.provider)
            self._carry = b""
