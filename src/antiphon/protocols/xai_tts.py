"""xAI streaming TTS (``wss://api.x.ai/v1/tts``) wire protocol, sans I/O.

Options and the connection URL (all configuration is in the query string), encoders for
the client messages (``text.delta``, ``text.done``, ``text.clear``), a parser that turns a
frame into a typed event (``audio.delta``, ``audio.done``, ``audio.clear``, ``error``), the
mapping of close codes to typed errors, and :class:`XAISession`, the state machine of one
stream on one connection.

The protocol has no utterance ids: each ``text.done`` is answered by exactly one
``audio.done``, a ``text.clear`` by one ``audio.clear``. The session counts what it owes
*when it decides to send*, before any await, so an ``audio.done`` that arrives before the
driver's ``send(text.done)`` has returned still completes the stream: the order of
events decides, never the scheduler. See ``docs/xai-tts.md`` for sources.

Built from three modules: :mod:`~antiphon.protocols.xai_tts_options` (options, URL,
handshake headers), :mod:`~antiphon.protocols.xai_tts_wire` (encoders, events, parser,
close codes) and this one, the state machine of one stream; every name is importable from
here as before.
"""

from __future__ import annotations

import enum

from antiphon.protocols.tts_session import (
    Act,
    Action,
    CharWords,
    FlushLedger,
    ProtocolStateError,
)
from antiphon.protocols.xai_tts_options import (
    CODECS,
    DEFAULT_BASE_URL,
    DEFAULT_ENCODING,
    DEFAULT_LANGUAGE,
    DEFAULT_SAMPLE_RATE,
    DEFAULT_VOICE,
    ENCODING_ALIASES,
    G711_SAMPLE_RATES,
    LANGUAGES,
    LATENCY_LEVELS,
    PATH,
    PROVIDER,
    SAMPLE_RATES,
    SPEED_RANGE,
    VOICES,
    XAIOptions,
    auth_headers,
    build_url,
    canonical_encoding,
    canonical_language,
)
from antiphon.protocols.xai_tts_wire import (
    AUTH_CLOSE_CODES,
    MAX_DELTA_CHARS,
    RETRYABLE_CLOSE_CODES,
    TEXT_CLEAR,
    TEXT_DONE,
    AudioClear,
    AudioDelta,
    AudioDone,
    ErrorMessage,
    Malformed,
    ServerEvent,
    Timestamps,
    Unknown,
    close_error,
    encode_text_delta,
    parse,
    split_text,
)

__all__ = [
    "AUTH_CLOSE_CODES",
    "CODECS",
    "DEFAULT_BASE_URL",
    "DEFAULT_ENCODING",
    "DEFAULT_LANGUAGE",
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_VOICE",
    "ENCODING_ALIASES",
    "G711_SAMPLE_RATES",
    "LANGUAGES",
    "LATENCY_LEVELS",
    "MAX_DELTA_CHARS",
    "PATH",
    "PROVIDER",
    "RETRYABLE_CLOSE_CODES",
    "SAMPLE_RATES",
    "SPEED_RANGE",
    "TEXT_CLEAR",
    "TEXT_DONE",
    "VOICES",
    "AudioClear",
    "AudioDelta",
    "AudioDone",
    "ErrorMessage",
    "Malformed",
    "Message",
    "Phase",
    "ServerEvent",
    "Timestamps",
    "Unknown",
    "XAIOptions",
    "XAISession",
    "auth_headers",
    "build_url",
    "canonical_encoding",
    "canonical_language",
    "close_error",
    "encode_text_delta",
    "parse",
    "split_text",
]


class Phase(enum.Enum):
    IDLE = "idle"  # nothing sent or everything answered: audio now is stale
    ACTIVE = "active"  # text sent for the current stream
    CLEARING = "clearing"  # text.clear sent, waiting for audio.clear: audio now is stale


Message = str | bytes


class XAISession(FlushLedger[Message]):
    """State of one stream on one ``/v1/tts`` connection.

    Implements :class:`~antiphon.protocols.tts_session.TTSSession`. Client-side methods
    return the messages to send and update the state *now*, before the driver awaits the
    send; :meth:`receive` decides what each server event means:

    - ``audio.delta`` is delivered only while an utterance of this stream is open (text
      sent and its ``audio.done`` not yet received); otherwise it is stale and dropped;
    - ``audio.done`` answers the oldest outstanding ``text.done``; with none owed it is
      dropped, so an extra marker can never end a later stream;
    - ``audio.clear`` ends a cancel; ``error`` fails the stream.

    Word timings (``with_timestamps=true``): the per-character ``audio_timestamps``
    (seconds from the utterance's start, which is where a segment starts) are grouped into
    words on :attr:`Action.words`; a word still open at ``audio.done`` ends there.
    """

    #: No utterance ids on the wire: after text.clear, wait for audio.clear before reuse.
    clear_needs_ack = True

    def __init__(self) -> None:
        super().__init__(TEXT_DONE)  # the journal holds the messages since the last audio.done
        self.phase = Phase.IDLE
        self.trace_ids: list[str] = []
        self._words = CharWords()

    # -- client side
    def _require_open(self, what: str) -> None:
        if self.phase is Phase.CLEARING or self.input_ended:
            raise ProtocolStateError(f"cannot {what} in phase {self.phase.value}")

    def speak(self, text: str) -> list[Message]:
        """``text.delta`` message(s) for ``text``; spoken at the next flush."""
        self._require_open("speak")
        if not text:
            return []
        msgs: list[Message] = list(encode_text_delta(text))
        self.phase = Phase.ACTIVE
        self._spoke(text, *msgs)
        return msgs

    def flush(self) -> list[Message]:
        """``text.done`` if non-blank text was sent since the last one (one audio.done owed)."""
        self._require_open("flush")
        return [TEXT_DONE] if self._flushed() else []

    def _finish(self) -> None:
        self.phase = Phase.IDLE  # every text.done answered by its audio.done

    @property
    def awaiting_audio(self) -> bool:
        """The server owes audio.done or audio.clear (a deadline should run)."""
        return self.pending_flushes > 0 or self.phase is Phase.CLEARING

    @property
    def utterance_open(self) -> bool:
        """Audio now belongs to this stream (text sent, its audio.done not yet seen)."""
        return self.phase is Phase.ACTIVE and (self.pending_flushes > 0 or self._unflushed)

    def clear(self) -> list[Message]:
        """``text.clear`` to drop what the server still has; nothing if it has nothing."""
        if self.phase is Phase.CLEARING:
            return []
        if not self._unflushed and self.pending_flushes == 0:
            self.phase = Phase.IDLE
            return []
        self.phase = Phase.CLEARING
        self.pending_flushes = 0
        self._unflushed = False
        self._journal.clear()
        self._words = CharWords()
        return [TEXT_CLEAR]

    def replay(self) -> list[Message] | None:
        """Messages to resend on a new connection, or None if audio was already received."""
        if self.audio_since_ack:
            return None
        return list(self._journal)

    def reset_for_replay(self) -> list[Message]:
        """Start over on a fresh connection with the journal; returns what to send."""
        msgs = list(self._journal)
        self.phase = Phase.ACTIVE if msgs else Phase.IDLE
        self._words = CharWords()
        return msgs

    # -- server side
    def feed(self, frame: str | bytes) -> Action:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> Action:
        if isinstance(event, AudioDelta):
            if not self.utterance_open:
                return Action(Act.DROP, event, f"audio while {self._state_note()}")
            ts = event.timestamps
            words = (
                self._words.feed((c, a, b) for c, (a, b) in zip(ts.chars, ts.times, strict=True))
                if ts is not None
                else ()
            )
            if not event.data:
                return Action(Act.NOTICE, event, "audio.delta without audio", words=words)
            self.audio_since_ack = True
            return Action(Act.DELIVER, event, audio=event.data, words=words)
        if isinstance(event, AudioDone):
            if self.phase is not Phase.ACTIVE or self.pending_flushes == 0:
                return Action(Act.DROP, event, f"audio.done while {self._state_note()}")
            self.trace_ids.append(event.trace_id)
            return self._answered(event, self._words.finish())
        if isinstance(event, AudioClear):
            if self.phase is Phase.CLEARING:
                self.phase = Phase.IDLE
                return Action(Act.CLEAR_DONE, event)
            return Action(Act.DROP, event, "audio.clear without a text.clear")
        if isinstance(event, ErrorMessage):
            return Action(Act.FAIL, event, event.message)
        if isinstance(event, Unknown):
            return Action(Act.DROP, event, f"unknown message type {event.type!r}")
        return Action(Act.DROP, event, event.reason)

    def _state_note(self) -> str:
        if self.phase is Phase.ACTIVE:
            return "active with no utterance open"
        return str(self.phase.value)
