"""Deepgram streaming STT (``wss://api.deepgram.com/v1/listen``).

One connection per stream (a listen connection carries one recognition and ends with
``CloseStream``), driven by :class:`~antiphon.services.ws_stt.WebSocketSTT`;
:class:`~antiphon.protocols.deepgram_stt.ListenSession` decides what each message means
and when the stream is complete. This module maps the contract onto it: a flush is a
``Finalize`` (or, when everything is finalized already, ends the utterance at once), the
end of input a ``CloseStream``.

Deadlines: ``connect``; ``process`` for each send; ``final`` from a flush or
``end_input`` to the answer; ``idle`` between server messages while an answer is owed.
While the caller pushes no audio a ``KeepAlive`` goes out every ``keepalive_interval``
seconds (Deepgram closes a connection with no audio for about 10 s).

A connection that is refused or drops mid-stream is retried with backoff and the
un-finalized audio replayed (see :mod:`antiphon.services.ws_stt`); a drop when nothing
was owed (input ended and all audio finalized) completes the stream.
"""

from __future__ import annotations

from antiphon.errors import ConfigError, ProviderError
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import deepgram_stt as dg
from antiphon.protocols.retry import Backoff
from antiphon.protocols.stt_session import Action
from antiphon.services.stt import RecognizeStream, STTDeadlines
from antiphon.services.ws_stt import Message, WebSocketRecognizeStream, WebSocketSTT

__all__ = ["DeepgramRecognizeStream", "DeepgramSTT"]

PROVIDER = dg.PROVIDER


class DeepgramSTT(WebSocketSTT[dg.ListenSession]):
    """Deepgram live transcription (Nova models) over the ``/v1/listen`` WebSocket.

    ``api_key`` defaults to ``$DEEPGRAM_API_KEY``; ``base_url`` may point at a local fake
    (``ws://127.0.0.1:PORT``). ``sample_rate``/``encoding``: the audio on the wire (pushed
    audio is converted to it). ``endpointing`` (ms or False), ``utterance_end_ms``,
    ``vad_events``, ``punctuate``, ``smart_format``, ``language``: Deepgram's options.
    ``keepalive_interval``: seconds without audio before a ``KeepAlive`` (docs: 3-5 s).
    ``max_reconnects``/``journal_seconds``/``backoff``/``reconnect_budget``: retries of a
    refused or dropped connection, replaying un-finalized audio
    (:class:`~antiphon.services.ws_stt.WebSocketSTT`).
    """

    provider = PROVIDER
    error_hint = "see Deepgram's error description above"

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
        max_reconnects: int = 3,
        journal_seconds: float = 30.0,
        backoff: Backoff | None = None,
        reconnect_budget: float = 5.0,
    ) -> None:
        key = require_api_key(
            api_key, "DEEPGRAM_API_KEY", "Deepgram STT", how="create a key in the Deepgram console"
        )
        if not isinstance(keepalive_interval, int | float) or not 0 < keepalive_interval < 10:
            raise ConfigError(
                "keepalive_interval must be between 0 and 10 seconds (Deepgram closes a "
                "connection that gets nothing for about 10 s; 3-5 s is recommended)"
            )
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
        super().__init__(
            url=dg.build_url(base_url, self.options),
            headers=dg.auth_headers(key),
            auth_hint=auth_hint("DEEPGRAM_API_KEY"),
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
    def new_session(self) -> dg.ListenSession:
        return dg.ListenSession(self.options, journal_seconds=self.journal_seconds)

    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        return dg.close_error(code, reason, stage=stage)

    def flush_input(self, session: dg.ListenSession) -> tuple[list[Message], list[Action]]:
        msgs = session.finalize()
        if not msgs and not session.marks:  # all finalized: the utterance ends now
            return [], session.end_utterance()
        return msgs, []

    def end_input(self, session: dg.ListenSession) -> list[Message]:
        return session.close_stream()

    def settle(self, session: dg.ListenSession) -> list[Action]:
        return session.end_utterance()

    def _new_stream(self, generation: int) -> RecognizeStream:
        return DeepgramRecognizeStream(self, generation)


class DeepgramRecognizeStream(WebSocketRecognizeStream[dg.ListenSession]):
    """One recognition on its own ``/v1/listen`` connection."""
