"""ElevenLabs Scribe realtime STT (``wss://api.elevenlabs.io/v1/speech-to-text/realtime``).

One connection per stream, driven by :class:`~antiphon.services.ws_stt.WebSocketSTT`;
:class:`~antiphon.protocols.elevenlabs_stt.ScribeSession` decides what each message means
and when the stream is complete. Audio goes as base64 PCM in ``input_audio_chunk``
messages of ~50 ms (pushed audio of any rate is converted to the ``audio_format``'s).

Segments: a commit ends one; its committed transcript (the copy with word timestamps)
is the stream's final transcript, and the partials before it are interim ones.
``flush()`` commits. With ``commit_strategy="manual"`` (the default) only flushes and
the end of input commit, so the agent's turn detection decides; ``"vad"`` lets the
service commit on silence too. The protocol has no end-of-session message: after
``end_input()`` the stream completes when the last commit is answered, and closes the
connection itself. It has no keep-alive message either (WebSocket pings keep a quiet
connection open).

Deadlines, retries with backoff and the replay of un-committed audio after a drop are the
driver's: see :mod:`antiphon.services.ws_stt`.
"""

from __future__ import annotations

from collections.abc import Sequence

from antiphon.errors import ConfigError, ProviderError
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import elevenlabs_stt as xi
from antiphon.protocols.retry import Backoff
from antiphon.protocols.stt_session import Act, Action, Recognized
from antiphon.services.stt import STTDeadlines
from antiphon.services.ws_stt import Message, WebSocketSTT

__all__ = ["KEY_ENV", "ElevenLabsSTT"]

PROVIDER = xi.PROVIDER
#: Environment variables read for the key, in order (the TTS plugin reads the same two).
KEY_ENV = ("ELEVENLABS_API_KEY", "ELEVEN_API_KEY")


class ElevenLabsSTT(WebSocketSTT[xi.ScribeSession]):
    """ElevenLabs Scribe realtime transcription (see the module docstring).

    Args:
        api_key: Defaults to ``$ELEVENLABS_API_KEY`` (then ``$ELEVEN_API_KEY``).
        token: A single-use token (made by your server) instead of the key: it goes in
            the ``token`` query parameter, and no key is needed.
        model_id: ``scribe_v2_realtime`` by default.
        audio_format: ``pcm_8000`` ... ``pcm_48000`` or ``ulaw_8000`` (the wire's rate).
        commit_strategy: ``manual`` (flushes commit) or ``vad`` (the service commits on
            silence too).
        language_code: ISO 639-1/3 code, if known.
        keyterms: Words to bias recognition toward (at most 50, 20 characters each).
        vad_silence_threshold_secs, vad_threshold, min_speech_duration_ms,
        min_silence_duration_ms: The service's VAD (``commit_strategy="vad"``).
        base_url: ``wss://api.elevenlabs.io`` (or a local fake ``ws://127.0.0.1:PORT``).
        keepalive_interval: How often a quiet stream's task wakes (no keep-alive message).
        max_reconnects, journal_seconds, backoff, reconnect_budget: Retries of a refused
            or dropped connection, replaying un-committed audio
            (:class:`~antiphon.services.ws_stt.WebSocketSTT`).

    Raises:
        ConfigError: no key, or an option out of range.
    """

    provider = PROVIDER
    error_hint = "see ElevenLabs' error message above"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        token: str | None = None,
        model_id: str = xi.DEFAULT_MODEL,
        audio_format: str = "pcm_16000",
        commit_strategy: str = "manual",
        language_code: str | None = None,
        keyterms: Sequence[str] = (),
        vad_silence_threshold_secs: float | None = None,
        vad_threshold: float | None = None,
        min_speech_duration_ms: int | None = None,
        min_silence_duration_ms: int | None = None,
        base_url: str = xi.DEFAULT_BASE_URL,
        deadlines: STTDeadlines | None = None,
        keepalive_interval: float = 4.0,
        max_reconnects: int = 3,
        journal_seconds: float = 30.0,
        backoff: Backoff | None = None,
        reconnect_budget: float = 5.0,
    ) -> None:
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ConfigError("token must be a single-use token string (or None to use a key)")
        key = (
            ""
            if token is not None
            else require_api_key(api_key, KEY_ENV[0], "ElevenLabs STT", also=KEY_ENV[1:])
        )
        self.options = xi.ScribeOptions(
            model_id=model_id,
            audio_format=audio_format,
            commit_strategy=commit_strategy,
            language_code=language_code,
            keyterms=tuple(keyterms),
            vad_silence_threshold_secs=vad_silence_threshold_secs,
            vad_threshold=vad_threshold,
            min_speech_duration_ms=min_speech_duration_ms,
            min_silence_duration_ms=min_silence_duration_ms,
        )
        super().__init__(
            url=xi.build_url(base_url, self.options, token=token.strip() if token else None),
            headers={} if token else xi.auth_headers(key),
            auth_hint=auth_hint(KEY_ENV[0]),
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
    def new_session(self) -> xi.ScribeSession:
        return xi.ScribeSession(self.options, journal_seconds=self.journal_seconds)

    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        return xi.close_error(code, reason, stage=stage)

    def flush_input(self, session: xi.ScribeSession) -> tuple[list[Message], list[Action]]:
        return session.flush(), []

    def end_input(self, session: xi.ScribeSession) -> list[Message]:
        return session.end_input()

    def interpret(self, action: Action) -> Recognized | ProviderError | None:
        if action.act is Act.FAIL and isinstance(action.event, xi.ErrorMessage):
            return xi.error_for(action.event, stage="receive")
        return super().interpret(action)
