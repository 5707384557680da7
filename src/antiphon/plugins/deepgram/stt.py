"""Deepgram streaming STT (``wss://api.deepgram.com/v1/listen``).

One connection per stream (a listen connection carries one recognition and ends with
``CloseStream``). One task per stream takes the caller's audio, flushes and end, and the
server's messages from a single mailbox; :class:`~antiphon.protocols.deepgram_stt.ListenSession`
decides what each message means and when the stream is complete. Audio of any rate and
channel count is converted to the wire rate with a streaming resampler.

Deadlines: ``connect``; ``process`` for each send; ``final`` from a flush or
``end_input`` to the answer; ``idle`` between server messages while an answer is owed.
While the caller pushes no audio a ``KeepAlive`` goes out every ``keepalive_interval``
seconds (Deepgram closes a connection with no audio for about 10 s).

A connection that drops mid-stream is replaced when the drop is retryable and the
un-finalized audio is still in the bounded journal: the audio is replayed on a new
connection (at most ``max_reconnects`` times per stream) and result times are shifted,
so the caller sees one continuous stream. Otherwise the stream fails with the typed,
retryable error — unless nothing was owed (input ended and all audio finalized), in
which case it completes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from antiphon.audio.resample import AudioConverter
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError
from antiphon.net.ws import ConnectionLost, WsConnection, WsOptions, connect
from antiphon.protocols import deepgram_stt as dg
from antiphon.services.stt import (
    STT,
    AudioInput,
    EndInput,
    FlushInput,
    RecognizeStream,
    STTDeadlines,
    Transcript,
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


class DeepgramSTT(STT):
    """Deepgram live transcription (Nova models) over the ``/v1/listen`` WebSocket.

    ``api_key`` defaults to ``$DEEPGRAM_API_KEY``; ``base_url`` may point at a local fake
    (``ws://127.0.0.1:PORT``). ``sample_rate``/``encoding``: the audio on the wire (pushed
    audio is converted to it). ``endpointing`` (ms or False), ``utterance_end_ms``,
    ``vad_events``, ``punctuate``, ``smart_format``, ``language``: Deepgram's options.
    ``keepalive_interval``: seconds without audio before a ``KeepAlive`` (docs: 3-5 s).
    ``max_reconnects``/``journal_seconds``: replay of un-finalized audio after a drop.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = dg.DEFAULT_MODEL,
        language: str | None = None,
        sample_rate: int = dg.DEFAULT_SAMPLE_RATE,
        encoding: str = "linear16",
        interim_results: bool = True,
        punctuate: bool | None = True,
        smart_format: bool | None = None,
        endpointing: int | bool | None = None,
        utterance_end_ms: int | None = None,
        vad_events: bool | None = None,
        mip_opt_out: bool | None = None,
        base_url: str = dg.DEFAULT_BASE_URL,
        deadlines: STTDeadlines | None = None,
        keepalive_interval: float = 4.0,
        max_reconnects: int = 1,
        journal_seconds: float = 30.0,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("DEEPGRAM_API_KEY", "")
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(
                "Deepgram STT needs an API key: pass api_key=... or set DEEPGRAM_API_KEY "
                "(create a key in the Deepgram console)"
            )
        if not isinstance(keepalive_interval, int | float) or not 0 < keepalive_interval < 10:
            raise ConfigError(
                "keepalive_interval must be between 0 and 10 seconds (Deepgram closes a "
                "connection that gets nothing for about 10 s; 3-5 s is recommended)"
            )
        if not isinstance(max_reconnects, int) or max_reconnects < 0:
            raise ConfigError("max_reconnects must be an int >= 0 (0: never reconnect)")
        if not isinstance(journal_seconds, int | float) or journal_seconds < 0:
            raise ConfigError("journal_seconds must be >= 0 (0: never replay audio)")
        super().__init__(deadlines=deadlines)
        self.options = dg.ListenOptions(
            model=model,
            language=language,
            encoding=encoding,
            sample_rate=sample_rate,
            channels=1,
            interim_results=interim_results,
            punctuate=punctuate,
            smart_format=smart_format,
            endpointing=endpointing,
            utterance_end_ms=utterance_end_ms,
            vad_events=vad_events,
            mip_opt_out=mip_opt_out,
        )
        self.url = dg.build_url(base_url, self.options)
        self._headers = dg.auth_headers(key.strip())
        self.keepalive_interval = float(keepalive_interval)
        self.max_reconnects = max_reconnects
        self.journal_seconds = float(journal_seconds)
        self._ws_options = WsOptions(
            connect_timeout=self.deadlines.connect,
            send_timeout=self.deadlines.process,
            close_timeout=self.deadlines.close,
        )

    @property
    def sample_rate(self) -> int:
        """The rate of the audio on the wire."""
        return self.options.sample_rate

    async def _connect(self) -> WsConnection:
        return await connect(
            self.url,
            provider=self.provider,
            headers=self._headers,
            options=self._ws_options,
            auth_hint="check DEEPGRAM_API_KEY (or the api_key argument)",
        )

    def _new_stream(self, generation: int) -> RecognizeStream:
        return DeepgramRecognizeStream(self, generation)


class DeepgramRecognizeStream(RecognizeStream):
    """One recognition on its own ``/v1/listen`` connection."""

    def __init__(self, stt: DeepgramSTT, generation: int) -> None:
        self._stt = stt
        self._session = dg.ListenSession(stt.options, journal_seconds=stt.journal_seconds)
        self._conn: WsConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reconnects = 0
        super().__init__(
            provider=stt.provider,
            generation=generation,
            owner=stt._tasks,
            close_timeout=stt.deadlines.close,
        )

    # -- connection handling
    async def _attach(self) -> None:
        conn = await self._stt._connect()
        self._conn = conn
        self._reader = self._stt._tasks.spawn(self._read(conn), name=f"dg-listen#{conn.id}")

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

    async def _detach(self, *, graceful: bool) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait([reader])
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if graceful:
            await conn.aclose()
        else:
            conn.abort()

    def _conn_id(self) -> int:
        return self._conn.id if self._conn is not None else -1

    async def _send(self, msgs: list[str | bytes]) -> bool:
        """Send ``msgs``; on a lost connection recover. True when the stream is complete."""
        for m in msgs:
            conn = self._conn
            assert conn is not None
            try:
                await conn.send(m)
            except ConnectionLost as exc:
                return await self._recover(exc)  # the replay resent everything owed
        self._last_send = asyncio.get_running_loop().time()
        return False

    async def _recover(self, exc: ConnectionLost) -> bool:
        """After a drop: complete if nothing was owed, else replay on a new connection."""
        session = self._session
        if session.lost_is_harmless():
            self._flush_utterance()
            return True
        error = dg.close_error(exc.close_code, exc.close_reason, stage=exc.stage)
        replay = session.replay()
        if not error.retryable or replay is None or self._reconnects >= self._stt.max_reconnects:
            raise error from None
        self._reconnects += 1
        log.info("%s: connection lost (%s); replaying on a new one", self.provider, exc)
        await self._detach(graceful=False)
        await self._attach()
        return await self._send(session.begin_replay())

    # -- the loop
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_send = loop.time()
        graceful = False
        try:
            await self._attach()
            self._last_send = loop.time()
            await self._loop()
            graceful = True
        finally:
            await self._detach(graceful=graceful and not self._stt._tasks.closing)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stt, session = self._stt, self._session
        dl = stt.deadlines
        converter = AudioConverter(stt.options.sample_rate, 1)
        owed_since = 0.0  # when the current answer became owed
        heard_at = 0.0  # last server message
        while True:
            now = loop.time()
            fail_at: float | None = None
            if session.awaiting:
                fail_at = min(owed_since + dl.final, max(owed_since, heard_at) + dl.idle)
            keep_at = (
                self._last_send + stt.keepalive_interval if session.phase is dg.Phase.OPEN else None
            )
            if fail_at is not None and now >= fail_at:
                raise self._timeout(owed_since, now)
            try:
                item = self._mailbox.recv_nowait()
            except asyncio.QueueEmpty:
                waits = [t for t in (fail_at, keep_at) if t is not None]
                when = min(waits) if waits else None
                try:
                    async with asyncio.timeout_at(when):
                        item = await self._mailbox.recv()
                except TimeoutError:
                    due = keep_at is not None and loop.time() >= keep_at
                    if due and await self._send(session.keepalive()):
                        return
                    continue
            if isinstance(item, AudioInput):
                pcm = converter.process(item.frame).data
                if pcm and await self._send(session.audio(pcm)):
                    return
            elif isinstance(item, FlushInput | EndInput):
                tail = converter.flush().data
                if tail and await self._send(session.audio(tail)):
                    return
                was_awaiting = session.awaiting
                if isinstance(item, FlushInput):
                    msgs = session.finalize()
                    if not msgs and not session.marks:  # all finalized: the utterance ends
                        self._flush_utterance()
                else:
                    msgs = session.close_stream()
                if not was_awaiting and session.awaiting:
                    owed_since = loop.time()
                if msgs and await self._send(msgs):
                    return
            elif isinstance(item, _ServerMessage):
                if item.conn_id != self._conn_id():
                    continue  # left over from a connection we moved away from
                heard_at = loop.time()
                was_awaiting = session.awaiting
                for action in session.feed(item.data):
                    self._act(action)
                if session.done:
                    return
                if was_awaiting and not session.awaiting:
                    owed_since = 0.0
            elif isinstance(item, _Lost) and item.conn_id == self._conn_id():
                if await self._recover(item.error):
                    return
                heard_at = loop.time()

    def _act(self, action: dg.Action) -> None:
        if action.act is dg.Act.EMIT and action.transcript is not None:
            self._emit_recognized(action.transcript)
        elif action.act is dg.Act.FAIL:
            raise ProviderError(
                f"the server reported an error: {action.note}",
                provider=self.provider,
                stage="receive",
                hint="see Deepgram's error description above",
            )
        elif action.act is dg.Act.DROP:
            log.debug(
                "%s: dropped %s (%s)", self.provider, type(action.event).__name__, action.note
            )
        elif action.act is dg.Act.NOTICE:
            log.debug("%s: %s", self.provider, action.event)

    def _emit_recognized(self, r: dg.Recognized) -> None:
        self._emit(
            Transcript(
                r.text, r.is_final, r.start, r.end, r.confidence, r.utterance, self.generation
            )
        )

    def _flush_utterance(self) -> None:
        for action in self._session.end_utterance():
            self._act(action)

    def _timeout(self, owed_since: float, now: float) -> ProviderTimeoutError:
        dl = self._stt.deadlines
        if now >= owed_since + dl.final:
            return ProviderTimeoutError(
                "no final transcript after flush/end_input",
                provider=self.provider,
                stage="final",
                timeout=dl.final,
                hint="the server went silent; the connection is closed",
            )
        return ProviderTimeoutError(
            "the server stopped answering while results were owed",
            provider=self.provider,
            stage="receive",
            timeout=dl.idle,
            hint="the server went silent; the connection is closed",
        )
