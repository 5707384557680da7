"""Gladia live STT (v2) wire protocol, sans I/O.

The protocol as documented at https://docs.gladia.io/chapters/live-stt/getting-started
(the flow), https://docs.gladia.io/api-reference/v2/live/init (``POST /v2/live``) and
https://docs.gladia.io/api-reference/v2/live/websocket (the WebSocket messages; also
https://docs.gladia.io/asyncapi.yaml). The official Python SDK (``gladiaio-sdk``) is
the witness (``tests/test_sdk_gladia.py``): the init request and every message are
checked against its types, strictly.

- A session starts with ``POST /v2/live`` (key in ``x-gladia-key``) carrying the
  configuration (:class:`LiveOptions`, :meth:`LiveOptions.init_request`); the answer
  (:func:`parse_init_response`) holds the session's WebSocket URL, whose ``token``
  authenticates the connection. One session per connection here: a replacement
  connection starts a new session and the journal's audio is replayed on it.
- Client messages: binary audio frames (we send ~50 ms each) and ``stop_recording``.
  The protocol has no message to end an utterance now, nor a keep-alive.
- :func:`parse` turns a server frame into a typed event: :class:`TranscriptMessage`
  (``is_final``, the utterance with its words, times in seconds of the session's audio),
  :class:`SpeechEvent` (``speech_start``/``speech_end``), :class:`Lifecycle`
  (``start_session``, ``start_recording``, ``end_recording``, ``end_session``),
  :class:`Ack` (of ``audio_chunk`` and ``stop_recording``: a refusal carries an error,
  the SDK's only typed error of the session), :class:`ErrorMessage` (a bare ``error``
  message: no SDK type, read as a failure in case the server sends one),
  :class:`Unknown` or :class:`Malformed`. ``start_session`` is not expected on the
  WebSocket (the SDK makes it up from the ``POST`` answer) but is harmless.
- :class:`LiveSession` is the state machine of one recognition. Partials are interim
  transcripts of the open utterance; the final ``transcript`` ends it. Utterances end on
  the server's endpointing (``endpointing`` seconds of silence), so a flush sends that
  much silence (and a little more): the final it brings answers the flush when an
  utterance was open. ``stop_recording`` is owed ``end_recording`` (or ``end_session``);
  the server then closes with 1000.

Built from two modules: :mod:`~antiphon.protocols.gladia_stt_wire` (options, the session
request, messages, events, parser, close codes) and this one, the state machine on
:class:`~antiphon.protocols.stt_session.RecognitionSession`; every name is importable from
here as before. No I/O and no asyncio here; the plugin is ``antiphon.plugins.gladia.stt``.
"""

from __future__ import annotations

from collections.abc import Sequence

from antiphon.protocols.gladia_stt_wire import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    ENCODINGS,
    INIT_PATH,
    PROVIDER,
    SAMPLE_RATES,
    STOP_RECORDING,
    Ack,
    ErrorMessage,
    InitResponse,
    Lifecycle,
    LiveOptions,
    ServerEvent,
    SpeechEvent,
    TranscriptMessage,
    Unknown,
    Word,
    close_error,
    init_headers,
    init_url,
    options_from_init,
    parse,
    parse_init_response,
)
from antiphon.protocols.gladia_stt_wire import END_EVENTS as END_EVENTS
from antiphon.protocols.gladia_stt_wire import FLUSH_MARGIN as FLUSH_MARGIN
from antiphon.protocols.stt_session import (
    TIME_TOLERANCE,
    Act,
    Action,
    Malformed,
    Message,
    Phase,
    RecognitionSession,
    Recognized,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "ENCODINGS",
    "INIT_PATH",
    "PROVIDER",
    "SAMPLE_RATES",
    "STOP_RECORDING",
    "Ack",
    "ErrorMessage",
    "InitResponse",
    "Lifecycle",
    "LiveOptions",
    "LiveSession",
    "Malformed",
    "ServerEvent",
    "SpeechEvent",
    "TranscriptMessage",
    "Unknown",
    "Word",
    "close_error",
    "init_headers",
    "init_url",
    "options_from_init",
    "parse",
    "parse_init_response",
]


# --------------------------------------------------------------------------- state machine


class LiveSession(RecognitionSession):
    """State of one recognition, possibly across connections (one session each).

    Time is in seconds of the stream's audio: ``sent`` (audio sent so far, flush silence
    included) and ``finalized`` (the end of the last final utterance). ``forced`` is true
    while a flush sent during an open utterance waits for that utterance's final.
    """

    def __init__(self, options: LiveOptions, *, journal_seconds: float = 30.0) -> None:
        super().__init__(
            sample_rate=options.sample_rate, width=options.width, journal_seconds=journal_seconds
        )
        self.options = options
        self.forced = False
        self._open: str | None = None  # id of the utterance with a partial and no final
        self._finals: set[str] = set()  # ids finalized on this connection

    def _owes_answer(self) -> bool:
        return self.forced

    def _owed_requests(self) -> list[Message]:
        return [STOP_RECORDING] if self.phase is Phase.CLOSING else []

    def _reconnected(self, replayed: list[Message]) -> None:
        self._open = None
        self._finals.clear()

    @property
    def utterance_open(self) -> bool:
        return self._open is not None

    # -- client side
    def flush(self) -> list[Message]:
        """The audio left, then silence past ``endpointing`` so that the server ends the
        utterance; its final is owed when an utterance is open."""
        self._require_open("flush")
        msgs = self._tail()
        if self.unfinalized <= TIME_TOLERANCE:
            return msgs
        seconds = self.options.endpointing + FLUSH_MARGIN
        silence = bytes(round(seconds * self.options.sample_rate) * 2)  # int16 zeros
        msgs += [self._send(c) for c in self._chunks().push(silence)]
        msgs += self._tail()
        if self.utterance_open:
            self.forced = True
        return msgs

    def stop_recording(self) -> list[Message]:
        """The audio left, then ``stop_recording``: the last results and
        ``end_recording`` follow."""
        self._require_open("stop the recording")
        msgs = self._tail()
        self.phase = Phase.CLOSING
        return [*msgs, STOP_RECORDING]

    # -- server side
    def feed(self, frame: str | bytes) -> list[Action]:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> list[Action]:
        if self.phase is Phase.DONE:
            return [Action(Act.DROP, event, note="message after the end of the recording")]
        match event:
            case TranscriptMessage():
                return self._transcript(event)
            case Lifecycle(type=kind) if kind in END_EVENTS:
                if self.phase is not Phase.CLOSING:
                    return [Action(Act.FAIL, event, note=f"the server sent {kind} unasked")]
                self.phase = Phase.DONE
                self.forced = False
                return [Action(Act.DONE, event)]
            case Lifecycle() | SpeechEvent():
                return [Action(Act.NOTICE, event)]
            case Ack(acknowledged=False):
                return [Action(Act.FAIL, event, note=f"{event.type} refused: {event.error}")]
            case Ack():
                return [Action(Act.NOTICE, event)]
            case ErrorMessage():
                return [Action(Act.FAIL, event, note=event.error)]
            case Unknown():
                return [Action(Act.DROP, event, note=f"unknown message type {event.type!r}")]
            case Malformed():
                return [Action(Act.DROP, event, note=event.reason)]
        return [Action(Act.DROP, event, note="unexpected event")]  # pragma: no cover

    def _transcript(self, msg: TranscriptMessage) -> list[Action]:
        if msg.id in self._finals:
            return [Action(Act.DROP, msg, note=f"utterance {msg.id} already final")]
        text = msg.text.strip() or " ".join(w.word.strip() for w in msg.words).strip()
        words: Sequence[Word] = msg.words
        start = (words[0].start if words else msg.start) + self.offset
        end = (words[-1].end if words else msg.end) + self.offset
        conf = sum(w.confidence for w in words) / len(words) if words else msg.confidence
        if not msg.is_final:
            if not text:
                return []
            self._open = msg.id
            rec = Recognized(text, False, start, max(start, end), conf, self.utterance)
            return [Action(Act.EMIT, msg, transcript=rec)]
        self._finals.add(msg.id)
        self._open = None
        self.forced = False
        self._finalize_to(end)
        if not text:
            return []
        rec = Recognized(text, True, start, max(start, end), conf, self.utterance)
        self.utterance += 1
        return [Action(Act.EMIT, msg, transcript=rec)]
