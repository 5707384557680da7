"""AssemblyAI Universal-Streaming STT (v3 WebSocket) wire protocol, sans I/O.

The protocol of ``wss://streaming.assemblyai.com/v3/ws``, as documented at
https://www.assemblyai.com/docs/api-reference/streaming-api/streaming-api (the handshake,
query and messages) and https://www.assemblyai.com/docs/streaming/message-sequence (the
order of messages), and typed by the ``assemblyai`` SDK's ``streaming.v3`` models:

- :class:`StreamingOptions` is the query (``sample_rate``, ``encoding`` ``pcm_s16le`` or
  ``pcm_mulaw``, ``speech_model``, ``format_turns``, ``keyterms_prompt`` as a JSON list,
  the end-of-turn thresholds); :func:`build_url` and :func:`auth_headers` (the key itself
  in ``Authorization``) make the handshake.
- Client messages: binary audio (the service takes 50 to 1000 ms per message; we send
  ~50 ms), ``ForceEndpoint`` (end the current turn now), ``UpdateConfiguration``,
  ``KeepAlive`` and ``Terminate``.
- :func:`parse` turns a server frame into a typed event: :class:`Begin`, :class:`Turn`
  (``turn_order``, ``end_of_turn``, ``turn_is_formatted``, ``words`` in milliseconds),
  :class:`Termination`, :class:`SpeechStarted`, :class:`ErrorMessage`, :class:`Unknown`
  or :class:`Malformed`. :func:`close_error` maps close codes to typed errors.
- :class:`StreamingSession` is the state machine of one recognition. A turn's
  end (``end_of_turn``; with ``format_turns`` the formatted message that follows it) is
  antiphon's final transcript; the partial turns before it are interim transcripts of
  the whole turn so far. A flush is ``ForceEndpoint``: the answer is owed when a turn is
  open; ``Terminate`` is owed its ``Termination``. Un-finalized audio is kept in a bounded
  journal so that a dropped connection can be replaced and the audio replayed (times on
  the new connection are shifted to the stream's).

Built from two modules: :mod:`~antiphon.protocols.assemblyai_stt_wire` (options, URL,
messages, events, parser, close codes) and this one, the state machine on
:class:`~antiphon.protocols.stt_session.RecognitionSession`; every name is importable from
here as before. No I/O and no asyncio here; the plugin is
``antiphon.plugins.assemblyai.stt``.
"""

from __future__ import annotations

from collections.abc import Sequence

from antiphon.errors import ProtocolStateError
from antiphon.protocols.assemblyai_stt_wire import CLOSE_CODES as CLOSE_CODES
from antiphon.protocols.assemblyai_stt_wire import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    DEFAULT_SAMPLE_RATE,
    FORCE_ENDPOINT,
    KEEPALIVE,
    PATH,
    PROVIDER,
    TERMINATE,
    Begin,
    ErrorMessage,
    ServerEvent,
    SpeechStarted,
    StreamingOptions,
    Termination,
    Turn,
    Unknown,
    Word,
    auth_headers,
    build_url,
    close_error,
    options_from_query,
    parse,
    update_configuration,
)
from antiphon.protocols.assemblyai_stt_wire import ENCODINGS as ENCODINGS
from antiphon.protocols.assemblyai_stt_wire import MAX_CHUNK_SECONDS as MAX_CHUNK_SECONDS
from antiphon.protocols.assemblyai_stt_wire import MIN_CHUNK_SECONDS as MIN_CHUNK_SECONDS
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
    "DEFAULT_SAMPLE_RATE",
    "FORCE_ENDPOINT",
    "KEEPALIVE",
    "PATH",
    "PROVIDER",
    "TERMINATE",
    "Act",
    "Action",
    "Begin",
    "ErrorMessage",
    "Malformed",
    "Phase",
    "ProtocolStateError",
    "Recognized",
    "ServerEvent",
    "SpeechStarted",
    "StreamingOptions",
    "StreamingSession",
    "Termination",
    "Turn",
    "Unknown",
    "Word",
    "auth_headers",
    "build_url",
    "close_error",
    "options_from_query",
    "parse",
    "update_configuration",
]


# --------------------------------------------------------------------------- state machine


class StreamingSession(RecognitionSession):
    """State of one recognition, possibly across reconnects.

    Time is in seconds of the stream's audio: ``sent`` (audio sent so far, padding
    included) and ``finalized`` (the end of the last final turn's last word). Audio is
    sent in messages of :data:`SEND_CHUNK_SECONDS`; a flush or the end sends what is
    left, padded with silence to the service's 50 ms minimum. ``forced`` is true while
    a ``ForceEndpoint`` sent during an open turn waits for that turn's end.
    """

    def __init__(self, options: StreamingOptions, *, journal_seconds: float = 30.0) -> None:
        super().__init__(
            sample_rate=options.sample_rate,
            width=ENCODINGS[options.encoding],
            journal_seconds=journal_seconds,
            cut=False,  # whole messages: the service bounds a message's length
        )
        self.options = options
        self.forced = False
        self.session_id: str | None = None
        self._open_turn: int | None = None  # turn_order of a partial turn with words
        self._last_final = -1  # turn_order of the last final turn on this connection

    def _owes_answer(self) -> bool:
        return self.forced

    def _owed_requests(self) -> list[Message]:
        return [
            *([FORCE_ENDPOINT] if self.forced else []),
            *([TERMINATE] if self.phase is Phase.CLOSING else []),
        ]

    def _reconnected(self, replayed: list[Message]) -> None:
        self._open_turn = None
        self._last_final = -1

    @property
    def turn_open(self) -> bool:
        return self._open_turn is not None

    # -- client side
    def _padded_tail(self) -> list[Message]:
        """What is left of the audio, padded with silence to the 50 ms minimum."""
        return self._tail(round(MIN_CHUNK_SECONDS * self.options.sample_rate) * self._width)

    def force_endpoint(self) -> list[Message]:
        """The audio left, then ``ForceEndpoint``; its answer is owed when a turn is open."""
        self._require_open("force an endpoint")
        msgs = self._padded_tail()
        if self.unfinalized <= TIME_TOLERANCE:
            return msgs
        if self.turn_open:
            self.forced = True
        return [*msgs, FORCE_ENDPOINT]

    def terminate(self) -> list[Message]:
        """The audio left, then ``Terminate``: the last turns and ``Termination`` follow."""
        self._require_open("terminate")
        msgs = self._padded_tail()
        self.phase = Phase.CLOSING
        return [*msgs, TERMINATE]

    def keepalive(self) -> list[Message]:
        return [KEEPALIVE] if self.phase is Phase.OPEN else []

    # -- server side
    def feed(self, frame: str | bytes) -> list[Action]:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> list[Action]:
        if self.phase is Phase.DONE:
            return [Action(Act.DROP, event, note="message after Termination")]
        match event:
            case Turn():
                return self._turn(event)
            case Termination():
                if self.phase is not Phase.CLOSING:
                    return [Action(Act.FAIL, event, note="the server ended the session")]
                self.phase = Phase.DONE
                self.forced = False
                return [Action(Act.DONE, event)]
            case Begin():
                self.session_id = event.id
                return [Action(Act.NOTICE, event)]
            case SpeechStarted():
                return [Action(Act.NOTICE, event)]
            case ErrorMessage():
                note = f"{event.code or 'Error'}: {event.error}"
                return [Action(Act.FAIL, event, note=note)]
            case Unknown():
                return [Action(Act.DROP, event, note=f"unknown message type {event.type!r}")]
            case Malformed():
                return [Action(Act.DROP, event, note=event.reason)]
        return [Action(Act.DROP, event, note="unexpected event")]  # pragma: no cover

    def _turn(self, turn: Turn) -> list[Action]:
        if turn.turn_order <= self._last_final:
            return [Action(Act.DROP, turn, note=f"turn {turn.turn_order} already ended")]
        final = turn.end_of_turn and (turn.turn_is_formatted or not self.options.format_turns)
        if turn.end_of_turn and not final:
            # the unformatted end of turn: its formatted copy follows and is the final
            return [Action(Act.DROP, turn, note="unformatted end of turn")]
        if not turn.words and not (final and turn.transcript.strip()):
            if final:  # an empty turn ends nothing the caller saw
                self._end_turn(turn)
            return []
        rec = self._recognized(turn, final)
        if not final:
            self._open_turn = turn.turn_order
            return [Action(Act.EMIT, turn, transcript=rec)]
        self._end_turn(turn)
        self._finalize_to(rec.end)
        self.utterance += 1
        return [Action(Act.EMIT, turn, transcript=rec)]

    def _end_turn(self, turn: Turn) -> None:
        self._last_final = turn.turn_order
        self._open_turn = None
        self.forced = False

    def _recognized(self, turn: Turn, final: bool) -> Recognized:
        words: Sequence[Word] = turn.words
        text = turn.transcript.strip() if final else ""
        if not text:
            text = " ".join(w.text for w in words).strip()
        if words:
            start = words[0].start / 1000 + self.offset
            end = words[-1].end / 1000 + self.offset
            conf = sum(w.confidence for w in words) / len(words)
        else:
            start = end = self.finalized
            conf = 0.0
        return Recognized(text, final, start, max(start, end), conf, self.utterance)
