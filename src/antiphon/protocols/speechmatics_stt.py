"""Speechmatics real-time STT (WebSocket ``/v2``) wire protocol, sans I/O.

The protocol of ``wss://eu2.rt.speechmatics.com/v2``, as documented in the Realtime API
reference (https://docs.speechmatics.com/api-ref/realtime-transcription-websocket: the
handshake, ``Authorization: Bearer`` or a temporary key in ``?jwt=``, the messages and
the close codes to retry), the turn-detection guide
(https://docs.speechmatics.com/speech-to-text/realtime/turn-detection: ``EndOfUtterance``,
``conversation_config.end_of_utterance_silence_trigger``, ``ForceEndOfUtterance``) and
the quickstart (https://docs.speechmatics.com/speech-to-text/realtime/quickstart), and
typed by the ``speechmatics-rt`` SDK's models:

- :class:`RealtimeOptions` is the ``StartRecognition`` message (``audio_format`` raw
  ``pcm_s16le`` or ``mulaw`` at a rate; ``transcription_config`` with language, model,
  partials, ``max_delay``, additional vocabulary and the end-of-utterance silence);
  :func:`build_url` and :func:`auth_headers` make the handshake. The client must wait for
  ``RecognitionStarted`` before it sends audio: the plugin does that as part of connecting.
- Client messages: binary audio (``AddAudio``; the server acks each with ``AudioAdded``
  and its ``seq_no``), ``ForceEndOfUtterance`` (end the utterance now) and
  ``EndOfStream`` with ``last_seq_no`` (the number of audio messages sent).
- :func:`parse` turns a server frame into a typed event: :class:`RecognitionStarted`,
  :class:`AudioAdded`, :class:`TranscriptSegment` (``AddPartialTranscript`` and
  ``AddTranscript``), :class:`EndOfUtterance`, :class:`EndOfTranscript`,
  :class:`ServerNotice` (``Info``, ``Warning``), :class:`ErrorMessage`, :class:`Unknown`
  or :class:`Malformed`. :func:`close_error` and :func:`error_for` map close codes and
  ``Error`` types to typed errors.
- :class:`RealtimeSession` is the state machine of one recognition. Speechmatics
  finalizes words in segments (``AddTranscript``, every ``max_delay`` at most) and marks
  the end of an utterance with ``EndOfUtterance``; antiphon's final transcript is the
  utterance: the finalized segments joined, emitted at its ``EndOfUtterance`` (or at
  ``EndOfTranscript``). Interim transcripts are the finalized text so far plus the
  current partial. A flush is ``ForceEndOfUtterance``, owed its ``EndOfUtterance`` when
  an utterance is open; ``EndOfStream`` is owed its ``EndOfTranscript``. Audio no
  segment has finalized is kept in a bounded journal so that a dropped connection can be
  replaced and the audio replayed (times on the new connection shifted to the stream's).

Built from two modules: :mod:`~antiphon.protocols.speechmatics_stt_wire` (options, URL,
messages, events, parser, errors) and this one, the state machine on
:class:`~antiphon.protocols.stt_session.RecognitionSession`; every name is importable from
here as before. No I/O and no asyncio here; the plugin is
``antiphon.plugins.speechmatics.stt``.
"""

from __future__ import annotations

from collections.abc import Sequence

from antiphon.errors import ProtocolStateError
from antiphon.protocols.speechmatics_stt_wire import AUTH_HINT as AUTH_HINT
from antiphon.protocols.speechmatics_stt_wire import CLOSE_CODES as CLOSE_CODES
from antiphon.protocols.speechmatics_stt_wire import (
    DEFAULT_BASE_URL,
    DEFAULT_SAMPLE_RATE,
    ENCODINGS,
    PROVIDER,
    AudioAdded,
    EndOfTranscript,
    EndOfUtterance,
    ErrorMessage,
    RealtimeOptions,
    RecognitionStarted,
    ServerEvent,
    ServerNotice,
    TranscriptSegment,
    Unknown,
    Word,
    auth_headers,
    build_url,
    close_error,
    end_of_stream,
    error_for,
    force_end_of_utterance,
    options_from_start,
    parse,
)
from antiphon.protocols.speechmatics_stt_wire import MODELS as MODELS
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
    "DEFAULT_SAMPLE_RATE",
    "ENCODINGS",
    "PROVIDER",
    "Act",
    "Action",
    "AudioAdded",
    "EndOfTranscript",
    "EndOfUtterance",
    "ErrorMessage",
    "Malformed",
    "Phase",
    "ProtocolStateError",
    "RealtimeOptions",
    "RealtimeSession",
    "RecognitionStarted",
    "Recognized",
    "ServerEvent",
    "ServerNotice",
    "TranscriptSegment",
    "Unknown",
    "Word",
    "auth_headers",
    "build_url",
    "close_error",
    "end_of_stream",
    "error_for",
    "force_end_of_utterance",
    "join_segments",
    "options_from_start",
    "parse",
]

#: Punctuation that attaches to the word before it when segments are joined.
_ATTACHING = ".,?!;:%)]}"


# --------------------------------------------------------------------------- state machine


def join_segments(pieces: Sequence[str]) -> str:
    """Finalized segments' text as one transcript (punctuation stays on its word)."""
    out = ""
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        if out and piece[0] not in _ATTACHING:
            out += " "
        out += piece
    return out


class RealtimeSession(RecognitionSession):
    """State of one recognition, possibly across reconnects.

    Time is in seconds of the stream's audio: ``sent`` (audio sent so far) and
    ``finalized`` (the end of the last finalized segment). ``seq`` counts the audio
    messages of the current connection (``EndOfStream``'s ``last_seq_no``). The open
    utterance is ``_segments`` (finalized, joined for the final transcript) and
    ``_partial`` (the newest partial); ``forced`` is true while a ``ForceEndOfUtterance``
    sent during an open utterance waits for its ``EndOfUtterance``.
    """

    def __init__(self, options: RealtimeOptions, *, journal_seconds: float = 30.0) -> None:
        super().__init__(
            sample_rate=options.sample_rate,
            width=ENCODINGS[options.encoding],
            journal_seconds=journal_seconds,
        )
        self.options = options
        self.seq = 0
        self.forced = False
        self._segments: list[str] = []
        self._partial = ""
        self._span: tuple[float, float] | None = None  # the open utterance's stream times
        self._confidences: list[float] = []

    def _owes_answer(self) -> bool:
        return self.forced

    def _owed_requests(self) -> list[Message]:
        msgs: list[Message] = []
        if self.forced:
            msgs.append(force_end_of_utterance(self.sent - (self.journal.start or self.sent)))
        if self.phase is Phase.CLOSING:
            msgs.append(end_of_stream(sum(1 for _ in self.journal)))
        return msgs

    def _reconnected(self, replayed: list[Message]) -> None:
        self.seq = sum(1 for m in replayed if isinstance(m, bytes))
        self._partial = ""

    @property
    def utterance_open(self) -> bool:
        return bool(self._segments or self._partial)

    # -- client side
    def _send(self, chunk: bytes) -> Message:
        self.seq += 1
        return super()._send(chunk)

    def force_end_of_utterance(self) -> list[Message]:
        """The audio left, then ``ForceEndOfUtterance``; owed its answer when an utterance
        is open."""
        self._require_open("force the end of an utterance")
        msgs = self._tail()
        if self.unfinalized <= TIME_TOLERANCE and not self.utterance_open:
            return msgs
        if self.utterance_open:
            self.forced = True
        return [*msgs, force_end_of_utterance(self.sent - self.offset)]

    def end_of_stream(self) -> list[Message]:
        """The audio left, then ``EndOfStream``: the last segments and
        ``EndOfTranscript`` follow."""
        self._require_open("end the stream")
        msgs = self._tail()
        self.phase = Phase.CLOSING
        return [*msgs, end_of_stream(self.seq)]

    def settle(self) -> list[Action]:
        """Close the open utterance (the stream completes without the server's end)."""
        actions = self._end_utterance(None)
        self.phase = Phase.DONE
        return actions

    # -- server side
    def feed(self, frame: str | bytes) -> list[Action]:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> list[Action]:
        if self.phase is Phase.DONE:
            return [Action(Act.DROP, event, note="message after EndOfTranscript")]
        match event:
            case TranscriptSegment():
                return self._segment(event)
            case EndOfUtterance():
                self._finalize_to(min(self.sent, event.end + self.offset))
                return self._end_utterance(event)
            case EndOfTranscript():
                if self.phase is not Phase.CLOSING:
                    return [Action(Act.FAIL, event, note="the server ended the transcript")]
                actions = self._end_utterance(event)
                self.phase = Phase.DONE
                return [*actions, Action(Act.DONE, event)]
            case AudioAdded() | RecognitionStarted() | ServerNotice():
                return [Action(Act.NOTICE, event)]
            case ErrorMessage():
                return [Action(Act.FAIL, event, note=f"{event.type}: {event.reason}")]
            case Unknown():
                return [Action(Act.DROP, event, note=f"unknown message {event.message!r}")]
            case Malformed():
                return [Action(Act.DROP, event, note=event.reason)]
        return [Action(Act.DROP, event, note="unexpected event")]  # pragma: no cover

    def _segment(self, seg: TranscriptSegment) -> list[Action]:
        if seg.final and seg.words:
            self._finalize_to(min(self.sent, seg.end + self.offset))
        if not seg.words or not seg.transcript.strip():
            if not seg.final:
                self._partial = ""
            return []
        start, end = seg.words[0].start + self.offset, seg.words[-1].end + self.offset
        if seg.final:
            self._segments.append(seg.transcript)
            self._confidences.extend(w.confidence for w in seg.words if not w.punctuation)
            self._partial = ""
            self._span = (self._span[0] if self._span else start, max(end, start))
        else:
            self._partial = seg.transcript
        first = self._span[0] if self._span else start
        last = max(self._span[1] if self._span else end, end)
        text = join_segments([*self._segments, self._partial])
        rec = Recognized(text, False, first, max(first, last), 0.0, self.utterance)
        return [Action(Act.EMIT, seg, transcript=rec)]

    def _end_utterance(self, event: object) -> list[Action]:
        self.forced = False
        self._partial = ""
        if not self._segments:
            self._span = None
            return []
        text = join_segments(self._segments)
        first, last = self._span or (self.finalized, self.finalized)
        conf = sum(self._confidences) / len(self._confidences) if self._confidences else 1.0
        rec = Recognized(text, True, first, max(first, last), conf, self.utterance)
        self.utterance += 1
        self._segments, self._confidences, self._span = [], [], None
        return [Action(Act.EMIT, event, transcript=rec)]
