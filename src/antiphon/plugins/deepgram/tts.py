"""Deepgram streaming TTS (``wss://api.deepgram.com/v1/speak``).

Connections are pooled and reused across turns; a cancelled stream sends ``Clear`` and
its connection goes back to the pool only after ``Cleared`` (old audio in between is
dropped), so audio of an interrupted turn never reaches the next one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from antiphon import metrics
from antiphon.audio.codecs import decode_to_pcm
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError
from antiphon.net.pool import ConnectionPool, PoolOptions
from antiphon.net.ws import ConnectionLost, WsConnection, WsOptions, connect
from antiphon.protocols import deepgram_tts as dg
from antiphon.protocols.deepgram_tts import Act, SpeakSession
from antiphon.services.tts import (
    TTS,
    EndInput,
    FlushInput,
    SynthesisStream,
    TextInput,
    TTSDeadlines,
)

log = logging.getLogger(__name__)
PROVIDER = dg.PROVIDER


@dataclass(frozen=True, slots=True)
class _ServerMessage:
    conn_id: int
    data: str | bytes


@dataclass(frozen=True, slots=True)
class _Lost:
    conn_id: int
    error: ConnectionLost


class DeepgramTTS(TTS):
    """Deepgram Aura streaming TTS.

    ``api_key`` defaults to ``$DEEPGRAM_API_KEY``. ``base_url`` may point at a local fake
    (``ws://127.0.0.1:PORT``). ``max_reconnects``: how often a stream may move to a new
    connection when one drops before any audio of the pending text arrived.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = dg.DEFAULT_MODEL,
        encoding: str = dg.DEFAULT_ENCODING,
        sample_rate: int = dg.DEFAULT_SAMPLE_RATE,
        speed: float | None = None,
        mip_opt_out: bool | None = None,
        base_url: str = dg.DEFAULT_BASE_URL,
        deadlines: TTSDeadlines | None = None,
        pool: PoolOptions | None = None,
        max_reconnects: int = 1,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("DEEPGRAM_API_KEY", "")
        if not key.strip():
            raise ConfigError(
                "Deepgram TTS needs an API key: pass api_key=... or set DEEPGRAM_API_KEY "
                "(create a key in the Deepgram console)"
            )
        if max_reconnects < 0:
            raise ConfigError("max_reconnects must be >= 0")
        self.options = dg.SpeakOptions(model, encoding, sample_rate, speed, mip_opt_out)
        super().__init__(sample_rate=sample_rate, channels=1, deadlines=deadlines)
        self.url = dg.build_url(base_url, self.options)
        self._headers = dg.auth_headers(key.strip())
        self._ws_options = WsOptions(
            connect_timeout=self.deadlines.connect,
            send_timeout=self.deadlines.idle,
            close_timeout=self.deadlines.close,
        )
        self.max_reconnects = max_reconnects
        self.pool = ConnectionPool(self._connect, name="deepgram-tts", options=pool)

    async def _connect(self) -> WsConnection:
        return await connect(
            self.url,
            provider=PROVIDER,
            headers=self._headers,
            options=self._ws_options,
            auth_hint="check DEEPGRAM_API_KEY (or the api_key argument)",
        )

    async def prewarm(self) -> None:
        """Open a connection now so the first stream skips the handshake."""
        await self.pool.prewarm(1)

    def _new_stream(self, generation: int) -> DeepgramSynthesisStream:
        return DeepgramSynthesisStream(self, generation)

    async def _aclose_resources(self) -> None:
        await self.pool.aclose()

    def _recycle(self, conn: WsConnection, session: SpeakSession) -> None:
        """After a cancel: Clear, drop old audio until Cleared, then pool the connection."""
        msgs = session.clear()
        if not msgs:
            self.pool.release(conn, reusable=True)
        elif self._tasks.closing or not conn.open:
            self.pool.discard(conn)
        else:
            self._tasks.spawn(self._clear_and_release(conn, session, msgs), name="clear")

    async def _clear_and_release(
        self, conn: WsConnection, session: SpeakSession, msgs: list[str]
    ) -> None:
        reusable = False
        try:
            async with asyncio.timeout(self.deadlines.clear):
                for m in msgs:
                    await conn.send(m, stage="clear")
                while True:
                    action = session.receive(dg.parse(await conn.recv(stage="clear")))
                    if action.act is Act.CLEAR_DONE:
                        reusable = True
                        break
                    if action.act is Act.DROP:
                        metrics.TTS_DROPPED_MESSAGES.labels(PROVIDER, "after_clear").inc()
        except (TimeoutError, ProviderError) as exc:
            log.info("deepgram: connection #%d not reused after Clear: %s", conn.id, exc)
        finally:
            if reusable:
                self.pool.release(conn, reusable=True)
            else:
                self.pool.discard(conn)


class DeepgramSynthesisStream(SynthesisStream):
    """One synthesis over a pooled ``/v1/speak`` connection."""

    def __init__(self, tts: DeepgramTTS, generation: int) -> None:
        self._tts = tts
        self._session = SpeakSession()
        self._conn: WsConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._carry = b""
        super().__init__(
            provider=PROVIDER,
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

    async def _send(self, msgs: list[str]) -> None:
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
        error = dg.close_error(exc.close_code, exc.close_reason, stage=exc.stage)
        replay = self._session.replay()
        if not error.retryable or replay is None or self._reconnects >= self._tts.max_reconnects:
            raise error from None
        self._reconnects += 1
        log.info("deepgram: connection lost (%s); replaying on a new one", exc)
        old = await self._detach()
        if old is not None:
            self._tts.pool.discard(old)
        self._carry = b""
        await self._attach()
        await self._send(self._session.reset_for_replay())
        self._progress_at = asyncio.get_running_loop().time()

    # -- the loop
    async def _run(self) -> None:
        self._reconnects = 0
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
        deadlines = self._tts.deadlines
        session = self._session
        self._progress_at = loop.time()
        heard_in_segment = False
        flush_times: list[float] = []
        while True:
            when: float | None = None
            if session.awaiting_audio:
                wait = deadlines.idle if heard_in_segment else deadlines.first_audio
                when = self._progress_at + wait
            try:
                async with asyncio.timeout_at(when):
                    item = await self._mailbox.recv()
            except TimeoutError:
                what = (
                    "audio stopped before the done marker"
                    if heard_in_segment
                    else ("no audio after flush")
                )
                raise ProviderTimeoutError(
                    what,
                    provider=PROVIDER,
                    stage="receive",
                    timeout=deadlines.idle if heard_in_segment else deadlines.first_audio,
                    hint="the server went silent; the connection is discarded",
                ) from None
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
                action = session.receive(dg.parse(item.data))
                if action.act is Act.DELIVER:
                    if not heard_in_segment and flush_times:
                        metrics.TTS_TTFB.labels(PROVIDER).observe(loop.time() - flush_times[0])
                    heard_in_segment = True
                    self._progress_at = loop.time()
                    self._deliver(action.event)
                elif action.act in (Act.SEGMENT_DONE, Act.STREAM_DONE):
                    heard_in_segment = False
                    self._progress_at = loop.time()
                    if flush_times:
                        flush_times.pop(0)
                    if action.act is Act.STREAM_DONE:
                        return self._end_audio()
                elif action.act is Act.FAIL:
                    raise ProviderError(
                        f"the server reported an error: {action.note}",
                        provider=PROVIDER,
                        stage="receive",
                    )
                elif action.act is Act.DROP:
                    metrics.TTS_DROPPED_MESSAGES.labels(PROVIDER, "unexpected").inc()
                    log.debug("deepgram: dropped %s", action.note)
                elif action.act is Act.NOTICE and isinstance(action.event, dg.Warning):
                    log.warning(
                        "deepgram warning %s: %s", action.event.code, action.event.description
                    )
            elif isinstance(item, _Lost) and item.conn_id == self._conn_id():
                await self._recover(item.error)

    def _conn_id(self) -> int:
        return self._conn.id if self._conn is not None else -1

    def _release_after_cancel(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()  # recv is cancel-safe; the recycler reads from here on
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._tts._tasks.closing:
            self._tts.pool.discard(conn)
            return
        self._tts.pool.returning(conn)
        if reader is not None and not reader.done():
            # Let the reader finish cancelling before anyone else reads the socket.
            self._tts._tasks.spawn(self._recycle_after(reader, conn), name="recycle")
        else:
            self._tts._recycle(conn, self._session)

    async def _recycle_after(self, reader: asyncio.Task[None], conn: WsConnection) -> None:
        try:
            await asyncio.wait([reader])
        except asyncio.CancelledError:
            self._tts.pool.discard(conn)
            raise
        self._tts._recycle(conn, self._session)

    def _deliver(self, event: dg.ServerEvent) -> None:
        assert isinstance(event, dg.Audio)
        data = event.data
        if self._tts.options.encoding == "linear16":
            if self._carry:
                data = self._carry + data
                self._carry = b""
            if len(data) % 2:
                data, self._carry = data[:-1], data[-1:]
        else:
            data = decode_to_pcm(self._tts.options.encoding, data)
        if data:
            self._emit(AudioFrame(data, self.sample_rate, 1, self.generation))

    def _end_audio(self) -> None:
        if self._carry:
            log.warning("deepgram: dropped a trailing odd byte of 16-bit audio")
            self._carry = b""
