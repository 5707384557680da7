"""Cartesia Ink STT (``wss://api.cartesia.ai/stt/websocket``, manual finalize).

One connection per stream, driven by :class:`~antiphon.services.ws_stt.WebSocketSTT`;
:class:`~antiphon.protocols.cartesia_stt.InkSession` decides what each message means and
when the stream is complete, and sends the audio in ~50 ms binary messages.

Utterances: ``flush()`` sends ``finalize``; the final chunks it brings, joined, are the
stream's final transcript, emitted at ``flush_done`` (the answer of the flush); the
chunks before are interim ones. ``end_input()`` sends ``close``: the last utterance and
``done`` follow. ink-whisper also finalizes on its own after
``max_silence_duration_secs``; those chunks join the utterance the next flush ends. The
protocol has no keep-alive message (WebSocket pings keep a quiet connection open).

Deadlines, retries with backoff and the replay of unanswered audio after a drop are the
driver's: see :mod:`antiphon.services.ws_stt`.
"""

from __future__ import annotations

from collections.abc import Sequence

from antiphon.errors import ProviderError
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import cartesia_stt as ink
from antiphon.protocols.retry import Backoff
from antiphon.protocols.stt_session import Act, Action, Recognized
from antiphon.services.stt import STTDeadlines
from antiphon.services.ws_stt import Message, WebSocketSTT

__all__ = ["KEY_ENV", "CartesiaSTT"]

PROVIDER = ink.PROVIDER
KEY_ENV = "CARTESIA_API_KEY"


class CartesiaSTT(WebSocketSTT[ink.InkSession]):
    """Cartesia Ink speech to text over its WebSocket (see the module docstring).

    Args:
        api_key: Defaults to ``$CARTESIA_API_KEY``.
        model: ``ink-2`` (default) or ``ink-whisper``.
        sample_rate: The audio on the wire (pushed audio is converted to it).
        encoding: ``pcm_s16le`` or ``pcm_mulaw``.
        language: ISO 639-1 code (``en``).
        keyterms: Words and phrases to boost (``keyterm``).
        max_silence_duration_secs, min_volume: ink-whisper's own finalization.
        api_version: ``Cartesia-Version`` (a date).
        base_url: ``wss://api.cartesia.ai`` (or a local fake ``ws://127.0.0.1:PORT``).
        keepalive_interval: How often a quiet stream's task wakes (no keep-alive message).
        max_reconnects, journal_seconds, backoff, reconnect_budget: Retries of a refused
            or dropped connection, replaying unanswered audio
            (:class:`~antiphon.services.ws_stt.WebSocketSTT`).

    Raises:
        ConfigError: no key, or an option out of range.
    """

    provider = PROVIDER
    error_hint = "see Cartesia's error message above"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = ink.DEFAULT_MODEL,
        sample_rate: int = 16000,
        encoding: str = "pcm_s16le",
        language: str | None = "en",
        keyterms: Sequence[str] = (),
        max_silence_duration_secs: float | None = None,
        min_volume: float | None = None,
        api_version: str = ink.DEFAULT_API_VERSION,
        base_url: str = ink.DEFAULT_BASE_URL,
        deadlines: STTDeadlines | None = None,
        keepalive_interval: float = 4.0,
        max_reconnects: int = 3,
        journal_seconds: float = 30.0,
        backoff: Backoff | None = None,
        reconnect_budget: float = 5.0,
    ) -> None:
        key = require_api_key(api_key, KEY_ENV, "Cartesia STT")
        self.options = ink.InkOptions(
            model=model,
            encoding=encoding,
            sample_rate=sample_rate,
            language=language,
            keyterms=tuple(keyterms),
            max_silence_duration_secs=max_silence_duration_secs,
            min_volume=min_volume,
        )
        super().__init__(
            url=ink.build_url(base_url, self.options),
            headers=ink.auth_headers(key, api_version),
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

    # -- the protocol
    def new_session(self) -> ink.InkSession:
        return ink.InkSession(self.options, journal_seconds=self.journal_seconds)

    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        return ink.close_error(code, reason, stage=stage)

    def flush_input(self, session: ink.InkSession) -> tuple[list[Message], list[Action]]:
        return session.finalize(), []

    def end_input(self, session: ink.InkSession) -> list[Message]:
        return session.close()

    def interpret(self, action: Action) -> Recognized | ProviderError | None:
        if action.act is Act.FAIL and isinstance(action.event, ink.ErrorMessage):
            return ink.error_for(action.event, stage="receive")
        return super().interpret(action)
