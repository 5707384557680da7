"""Speechmatics real-time STT (``wss://eu2.rt.speechmatics.com/v2``).

One connection per stream (a real-time session carries one recognition and ends with
``EndOfStream`` → ``EndOfTranscript``), driven by
:class:`~antiphon.services.ws_stt.WebSocketSTT`;
:class:`~antiphon.protocols.speechmatics_stt.RealtimeSession` decides what each message
means and when the stream is complete, and sends the audio in ~50 ms messages.

Connecting includes the session's start: the client must not send audio before the
server answers ``StartRecognition`` with ``RecognitionStarted``, so the plugin sends it
and waits for that answer (within the ``connect`` deadline) before the driver reads the
connection; every replacement connection starts the same way. An ``Error`` instead
(a refused key, no quota, a bad option) is a typed error at once.

Utterances: the service finalizes words in segments and ends an utterance after
``end_of_utterance_silence`` seconds of silence (``EndOfUtterance``); the utterance's
segments, joined, are the stream's final transcript, and the partials before it are
interim ones. ``flush()`` sends ``ForceEndOfUtterance``. The protocol has no keep-alive
message; WebSocket pings keep a quiet connection open.

Deadlines and the retry of a refused or dropped connection with backoff (replaying the
un-finalized audio, times shifted so that the caller sees one continuous stream) are the
driver's: see :mod:`antiphon.services.ws_stt`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError
from antiphon.net.ws import ConnectionLost, WsConnection
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import speechmatics_stt as sm
from antiphon.protocols.retry import Backoff
from antiphon.protocols.stt_session import Act, Action, Recognized
from antiphon.services.stt import STTDeadlines
from antiphon.services.ws_stt import Message, WebSocketSTT

__all__ = ["KEY_ENV", "SpeechmaticsSTT"]

PROVIDER = sm.PROVIDER
KEY_ENV = "SPEECHMATICS_API_KEY"


class SpeechmaticsSTT(WebSocketSTT[sm.RealtimeSession]):
    """Speechmatics real-time transcription over its WebSocket (see the module docstring).

    Args:
        api_key: Defaults to ``$SPEECHMATICS_API_KEY``.
        token: A temporary key (made by your server from the key) instead of the key:
            it goes in the ``jwt`` query parameter, and no key is needed.
        language: A language code (``en``, ``de``, ...), or ``multi``.
        model: ``standard``, ``enhanced`` or ``melia-1`` (None: the service's default).
        sample_rate: The audio on the wire (pushed audio is converted to it).
        encoding: ``pcm_s16le`` or ``mulaw``.
        enable_partials: Interim transcripts (``AddPartialTranscript``).
        max_delay: Seconds (0.7 to 4) by which a word is finalized at the latest.
        end_of_utterance_silence: Seconds of silence that end an utterance (None: only
            ``flush()`` and the end of input do; melia-1 needs None).
        additional_vocab: Words and phrases to boost.
        domain: A domain language pack (e.g. ``finance``).
        base_url: ``wss://eu2.rt.speechmatics.com/v2`` (or another region's endpoint,
            or a local fake ``ws://127.0.0.1:PORT/v2``).
        keepalive_interval: How often a quiet stream's task wakes (no keep-alive message).
        max_reconnects, journal_seconds, backoff, reconnect_budget: Retries of a refused
            or dropped connection, replaying un-finalized audio
            (:class:`~antiphon.services.ws_stt.WebSocketSTT`).

    Raises:
        ConfigError: no key, or an option out of range.
    """

    provider = PROVIDER
    error_hint = "see Speechmatics' error message above"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        token: str | None = None,
        language: str = "en",
        model: str | None = None,
        sample_rate: int = sm.DEFAULT_SAMPLE_RATE,
        encoding: str = "pcm_s16le",
        enable_partials: bool = True,
        max_delay: float | None = None,
        end_of_utterance_silence: float | None = 0.5,
        additional_vocab: Sequence[str] = (),
        domain: str | None = None,
        base_url: str = sm.DEFAULT_BASE_URL,
        deadlines: STTDeadlines | None = None,
        keepalive_interval: float = 4.0,
        max_reconnects: int = 3,
        journal_seconds: float = 30.0,
        backoff: Backoff | None = None,
        reconnect_budget: float = 5.0,
    ) -> None:
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ConfigError("token must be a temporary key string (or None to use a key)")
        key = require_api_key(api_key, KEY_ENV, "Speechmatics STT") if token is None else ""
        self.options = sm.RealtimeOptions(
            sample_rate=sample_rate,
            encoding=encoding,
            language=language,
            model=model,
            enable_partials=enable_partials,
            max_delay=max_delay,
            end_of_utterance_silence=end_of_utterance_silence,
            additional_vocab=tuple(additional_vocab),
            domain=domain,
        )
        super().__init__(
            url=sm.build_url(base_url, token=token.strip() if token else None),
            headers={} if token else sm.auth_headers(key),
            auth_hint=auth_hint(KEY_ENV),
            deadlines=deadlines,
            keepalive_interval=keepalive_interval,
            max_reconnects=max_reconnects,
            journal_seconds=journal_seconds,
            backoff=backoff,
            reconnect_budget=reconnect_budget,
        )

    @property
    def sample_rate(self) -> int:
        """The rate of the audio on the wire."""
        return self.options.sample_rate

    # -- connecting: the upgrade, then StartRecognition → RecognitionStarted
    async def _connect(self) -> WsConnection:
        conn = await super()._connect()
        try:
            await self._start(conn)
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _start(self, conn: WsConnection) -> None:
        timeout = self.deadlines.connect
        window = asyncio.timeout(timeout)
        try:
            async with window:
                await conn.send(self.options.start_recognition(), stage="connect")
                while True:
                    event = sm.parse(await conn.recv(stage="connect"))
                    if isinstance(event, sm.RecognitionStarted):
                        return
                    if isinstance(event, sm.ErrorMessage):
                        raise sm.error_for(event, stage="connect")
                    # Info, Warning and anything else before the start: nothing to do
        except TimeoutError:
            if not window.expired():
                raise
            raise ProviderTimeoutError(
                "no RecognitionStarted after StartRecognition",
                provider=self.provider,
                stage="connect",
                timeout=timeout,
                hint="the server accepted the connection but did not start the session",
            ) from None
        except ConnectionLost as exc:
            raise self.close_error(exc.close_code, exc.close_reason, stage="connect") from None

    # -- the protocol
    def new_session(self) -> sm.RealtimeSession:
        return sm.RealtimeSession(self.options, journal_seconds=self.journal_seconds)

    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        return sm.close_error(code, reason, stage=stage)

    def flush_input(self, session: sm.RealtimeSession) -> tuple[list[Message], list[Action]]:
        return session.force_end_of_utterance(), []

    def end_input(self, session: sm.RealtimeSession) -> list[Message]:
        return session.end_of_stream()

    def settle(self, session: sm.RealtimeSession) -> list[Action]:
        return session.settle()

    def interpret(self, action: Action) -> Recognized | ProviderError | None:
        if action.act is Act.FAIL and isinstance(action.event, sm.ErrorMessage):
            return sm.error_for(action.event, stage="receive")
        return super().interpret(action)
