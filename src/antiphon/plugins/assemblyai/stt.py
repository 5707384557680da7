"""AssemblyAI Universal-Streaming STT (``wss://streaming.assemblyai.com/v3/ws``).

One connection per stream (a v3 session carries one recognition and ends with
``Terminate`` → ``Termination``), driven by :class:`~antiphon.services.ws_stt.WebSocketSTT`;
:class:`~antiphon.protocols.assemblyai_stt.StreamingSession` decides what each message
means and when the stream is complete, and sends the audio in ~50 ms messages (the
service takes 50 to 1000 ms per message).

Turns: AssemblyAI's turn detection ends a turn (``end_of_turn``); that turn — formatted,
with ``format_turns`` — is the stream's final transcript, and the partial turns before it
are interim transcripts. ``flush()`` sends ``ForceEndpoint``, which ends the open turn at
once. ``keyterms`` boost words and phrases (``keyterms_prompt``);
:meth:`AssemblyAIRecognizeStream.update_configuration` changes them (and the end-of-turn
thresholds) mid-stream, in order with the audio pushed before.

Deadlines, keep-alives, and the retry of a refused or dropped connection with backoff
(replaying the un-finalized audio, times shifted so that the caller sees one continuous
stream) are the driver's: see :mod:`antiphon.services.ws_stt`.
"""

from __future__ import annotations

from collections.abc import Sequence

from antiphon.errors import ConfigError, ProviderError
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import assemblyai_stt as aai
from antiphon.protocols.retry import Backoff
from antiphon.protocols.stt_session import Action
from antiphon.services.stt import RecognizeStream, STTDeadlines
from antiphon.services.ws_stt import Message, WebSocketRecognizeStream, WebSocketSTT

__all__ = ["KEY_ENV", "AssemblyAIRecognizeStream", "AssemblyAISTT"]

PROVIDER = aai.PROVIDER
KEY_ENV = "ASSEMBLYAI_API_KEY"


class AssemblyAISTT(WebSocketSTT[aai.StreamingSession]):
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
        max_reconnects, journal_seconds, backoff, reconnect_budget: Retries of a refused
            or dropped connection, replaying un-finalized audio
            (:class:`~antiphon.services.ws_stt.WebSocketSTT`).

    Raises:
        ConfigError: no key, or an option out of range.
    """

    provider = PROVIDER
    error_hint = "see AssemblyAI's error message above"

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
        max_reconnects: int = 3,
        journal_seconds: float = 30.0,
        backoff: Backoff | None = None,
        reconnect_budget: float = 5.0,
    ) -> None:
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ConfigError("token must be a temporary token string (or None to use a key)")
        key = require_api_key(api_key, KEY_ENV, "AssemblyAI STT") if token is None else ""
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
        super().__init__(
            url=aai.build_url(base_url, self.options, token=token.strip() if token else None),
            headers={} if token else aai.auth_headers(key),
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
    def new_session(self) -> aai.StreamingSession:
        return aai.StreamingSession(self.options, journal_seconds=self.journal_seconds)

    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        return aai.close_error(code, reason, stage=stage)

    def flush_input(self, session: aai.StreamingSession) -> tuple[list[Message], list[Action]]:
        return session.force_endpoint(), []

    def end_input(self, session: aai.StreamingSession) -> list[Message]:
        return session.terminate()

    def _new_stream(self, generation: int) -> RecognizeStream:
        return AssemblyAIRecognizeStream(self, generation)


class AssemblyAIRecognizeStream(WebSocketRecognizeStream[aai.StreamingSession]):
    """One recognition on its own ``/v3/ws`` session."""

    def update_configuration(
        self,
        *,
        keyterms: Sequence[str] | None = None,
        end_of_turn_confidence_threshold: float | None = None,
        min_turn_silence: int | None = None,
        max_turn_silence: int | None = None,
    ) -> None:
        """Send ``UpdateConfiguration`` (in order with the audio pushed before it).

        Raises:
            StreamClosedError: the stream has ended or its input has.
        """
        message = aai.update_configuration(
            keyterms=keyterms,
            end_of_turn_confidence_threshold=end_of_turn_confidence_threshold,
            min_turn_silence=min_turn_silence,
            max_turn_silence=max_turn_silence,
        )
        self._send_control(message)
