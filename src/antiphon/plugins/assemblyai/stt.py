"""AssemblyAI Universal-Streaming STT (``wss://streaming.assemblyai.com/v3/ws``).

One connection per stream (a v3 session carries one recognition and ends with
``Terminate`` → ``Termination``). One task per stream takes the caller's audio, flushes
and end, and the server's messages from a single mailbox;
:class:`~antiphon.protocols.assemblyai_stt.StreamingSession` decides what each message
means and when the stream is complete. Audio of any rate and channel count is converted
to the wire rate with a streaming resampler and sent in ~50 ms messages (the service
takes 50 to 1000 ms per message).

Turns: AssemblyAI's turn detection ends a turn (``end_of_turn``); that turn — formatted,
with ``format_turns`` — is the stream's final transcript, and the partial turns before it
are interim transcripts. ``flush()`` sends ``ForceEndpoint``, which ends the open turn at
once. ``keyterms`` boost words and phrases (``keyterms_prompt``);
:meth:`AssemblyAIRecognizeStream.update_configuration` changes them (and the end-of-turn
thresholds) mid-stream.

Deadlines: ``connect``; ``process`` for each send; ``final`` from a forced endpoint or
``end_input`` to the answer; ``idle`` between server messages while an answer is owed.
While the caller pushes no audio a ``KeepAlive`` goes out every ``keepalive_interval``.
A connection that drops mid-stream is replaced when the drop is retryable and the
un-finalized audio is still in the bounded journal (at most ``max_reconnects`` times per
stream); result times are shifted so that the caller sees one continuous stream.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from antiphon.audio.resample import AudioConverter
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError, StreamClosedError
from antiphon.net.ws import ConnectionLost, WsConnection, WsOptions, connect
from antiphon.protocols import assemblyai_stt as aai
from antiphon.services.stt import (
    STT,
    AudioInput,
    EndInput,
    FlushInput,
    RecognizeStream,
    STTDeadlines,
    Transcript,
)

__all__ = ["KEY_ENV", "AssemblyAIRecognizeStream", "AssemblyAISTT"]

log = logging.getLogger(__name__)
PROVIDER = aai.PROVIDER
KEY_ENV = "ASSEMBLYAI_API_KEY"


@dataclass(frozen=True, slots=True)
class _ServerMessage:
    conn_id: int
    data: str | bytes


@dataclass(frozen=True, slots=True)
class _Lost:
    conn_id: int
    error: ConnectionLost


@dataclass(frozen=True, slots=True)
class _Configure:
    message: str


class AssemblyAISTT(STT):
    """AssemblyAI Universal-Streaming over the v3 WebSocket (see the module docstring).

    Args:
        api_key: Defaults to ``$ASSEMBLYAI_API_KEY``.
        token: A temporary token (made by your server from the key) instead of the key:
            it goes in the ``token`` query parameter, and no key is needed.
        speech_model: ``universal-streaming-english`` or ``universal-streaming-multilingual``.
        sample_rate: The audio on the wire (pushed audio is converted to it).
        encoding: ``pcm_s16le`` or ``pcm_mulaw``.
        format_turns: Final transcripts with punctuation and casing.
        keyterms: Words and phrases to boost (``keyterms_prompt``).
        end_of_turn_confidence_threshold, min_turn_silence,
        max_turn_silence: AssemblyAI's turn detection (the last two in ms).
        base_url: ``wss://streaming.assemblyai.com`` (EU: ``wss://streaming.eu.assemblyai.com``),
            or a local fake (``ws://127.0.0.1:PORT``).
        keepalive_interval: Seconds without audio before a ``KeepAlive``.
        max_reconnects, journal_seconds: Replay of un-finalized audio after a drop.

    Raises:
        ConfigError: no key, or an option out of range.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str | None = None,
        token: str | None = None,
        speech_model: str = aai.DEFAULT_MODEL,
        sample_rate: int = aai.DEFAULT_SAMPLE_RATE,
        encoding: str = "pcm_s16le",
        format_turns: bool = True,
        keyterms: Sequence[str] = (),
        end_of_turn_confidence_threshold: float | None = None,
        min_turn_silence: int | None = None,
        max_turn_silence: int | None = None,
        inactivity_timeout: int | None = None,
        base_url: str = aai.DEFAULT_BASE_URL,
        deadlines: STTDeadlines | None = None,
        keepalive_interval: float = 4.0,
        max_reconnects: int = 1,
        journal_seconds: float = 30.0,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(KEY_ENV, "")
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ConfigError("token must be a temporary token string (or None to use a key)")
        if token is None and (not isinstance(key, str) or not key.strip()):
            raise ConfigError(f"AssemblyAI STT needs an API key: pass api_key=... or set {KEY_ENV}")
        if not isinstance(keepalive_interval, int | float) or keepalive_interval <= 0:
            raise ConfigError("keepalive_interval must be a positive number of seconds")
        if (
            isinstance(max_reconnects, bool)
            or not isinstance(max_reconnects, int)
            or max_reconnects < 0
        ):
            raise ConfigError("max_reconnects must be an int >= 0 (0: never reconnect)")
        if not isinstance(journal_seconds, int | float) or journal_seconds < 0:
            raise ConfigError("journal_seconds must be >= 0 (0: never replay audio)")
        super().__init__(deadlines=deadlines)
        self.options = aai.StreamingOptions(
            sample_rate=sample_rate,
            encoding=encoding,
            speech_model=speech_model,
            format_turns=format_turns,
            keyterms=tuple(keyterms),
            end_of_turn_confidence_threshold=end_of_turn_confidence_threshold,
            min_turn_silence=min_turn_silence,
            max_turn_silence=max_turn_silence,
            inactivity_timeout=inactivity_timeout,
        )
        self.url = aai.build_url(base_url, self.options, token=token.strip() if token else None)
        self._headers = {} if token else aai.auth_headers(key.strip())
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
            auth_hint=f"check {KEY_ENV} (or the api_key argument)",
        )

    def _new_stream(self, generation: int) -> RecognizeStream:
        return AssemblyAIRecognizeStream(self, generation)


class AssemblyAIRecognizeStream(RecognizeStream):
    """One recognition on its own ``/v3/ws`` session."""

    def __init__(self, stt: AssemblyAISTT, generation: int) -> None:
        self._stt = stt
        self._session = aai.StreamingSession(stt.options, journal_seconds=stt.journal_seconds)
        self._conn: WsConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reconnects = 0
        super().__init__(
            provider=stt.provider,
            generation=generation,
            owner=stt._tasks,
            close_timeout=stt.deadlines.close,
        )

    def update_configuration(
        self,
        *,
        keyterms: Sequence[str] | None = None,
        end_of_turn_confidence_threshold: float | None = None,
        min_turn_silence: int | None = None,
        max_turn_silence: int | None = None,
    ) -> None:
        """Send ``UpdateConfiguration`` (in order with the audio pushed before it)."""
        if self.done:
            raise StreamClosedError(f"the stream is {self.state.value}")
        message = aai.update_configuration(
            keyterms=keyterms,
            end_of_turn_confidence_threshold=end_of_turn_confidence_threshold,
            min_turn_silence=min_turn_silence,
            max_turn_silence=max_turn_silence,
        )
        self._mailbox.send_nowait(_Configure(message))

    # -- connection handling
    async def _attach(self) -> None:
        conn = await self._stt._connect()
        self._conn = conn
        self._reader = self._stt._tasks.spawn(self._read(conn), name=f"aai-stream#{conn.id}")

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
                return await self._recover(exc)
        self._last_send = asyncio.get_running_loop().time()
        return False

    async def _recover(self, exc: ConnectionLost) -> bool:
        """After a drop: complete if nothing was owed, else replay on a new connection."""
        session = self._session
        if session.lost_is_harmless():
            return True
        error = aai.close_error(exc.close_code, exc.close_reason, stage=exc.stage)
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
        owed_since = 0.0
        heard_at = 0.0
        while True:
            now = loop.time()
            fail_at: float | None = None
            if session.awaiting:
                fail_at = min(owed_since + dl.final, max(owed_since, heard_at) + dl.idle)
            keep_at = (
                self._last_send + stt.keepalive_interval
                if session.phase is aai.Phase.OPEN
                else None
            )
            if fail_at is not None and now >= fail_at:
                raise self._timeout(owed_since, now)
            try:
                item = self._mailbox.recv_nowait()
            except asyncio.QueueEmpty:
                waits = [t for t in (fail_at, keep_at) if t is not None]
                try:
                    async with asyncio.timeout_at(min(waits) if waits else None):
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
                    msgs = session.force_endpoint()
                else:
                    msgs = session.terminate()
                if not was_awaiting and session.awaiting:
                    owed_since = loop.time()
                if msgs and await self._send(msgs):
                    return
            elif isinstance(item, _Configure):
                if session.phase is aai.Phase.OPEN and await self._send([item.message]):
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

    def _act(self, action: aai.Action) -> None:
        if action.act is aai.Act.EMIT and action.transcript is not None:
            r = action.transcript
            self._emit(
                Transcript(
                    r.text, r.is_final, r.start, r.end, r.confidence, r.utterance, self.generation
                )
            )
        elif action.act is aai.Act.FAIL:
            raise ProviderError(
                f"the server reported an error: {action.note}",
                provider=self.provider,
                stage="receive",
                hint="see AssemblyAI's error message above",
            )
        elif action.act is aai.Act.DROP:
            log.debug(
                "%s: dropped %s (%s)", self.provider, type(action.event).__name__, action.note
            )

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
