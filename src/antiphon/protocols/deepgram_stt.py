r"""Deepgram streaming STT (``/v1/listen``) wire protocol, sans I/O.

Options and URL, encoders for the client messages (binary audio, ``KeepAlive``,
``Finalize``, ``CloseStream``), a parser that turns a frame into a typed event, the mapping
of close codes to typed errors, and :class:`ListenSession`, the state machine of one
recognition. The session is told what the client *decides* to send before any await, and
turns server events into :class:`Action`\ s; it alone decides when the stream is complete,
so no scheduling order can make it end early or hang. See ``docs/deepgram-stt.md``.

Utterances: Deepgram cuts one utterance into several ``is_final`` segments and marks its
end with ``speech_final`` (endpointing), ``from_finalize`` (our ``Finalize``) or an
``UtteranceEnd``. The session joins the segments, so the caller gets one final transcript
per utterance and interim ones that always cover the whole utterance so far.

Built from two modules: :mod:`~antiphon.protocols.deepgram_stt_wire` (options, URL, client
messages, events, parser, close codes) and this one, the state machine on
:class:`~antiphon.protocols.stt_session.RecognitionSession`; every name is importable from
here as before.
"""

from __future__ import annotations

from collections import deque

from antiphon.audio.codecs import encode_pcm
from antiphon.errors import ConfigError, ProtocolStateError
from antiphon.protocols.deepgram_stt_wire import (
    CLOSE_STREAM,
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    DEFAULT_SAMPLE_RATE,
    ENCODINGS,
    FINALIZE,
    KEEPALIVE,
    MAX_CHUNK_SECONDS,
    PATH,
    PROVIDER,
    ErrorMessage,
    ListenOptions,
    Malformed,
    Metadata,
    Results,
    ServerEvent,
    SpeechStarted,
    Unknown,
    UtteranceEnd,
    Word,
    build_url,
    close_error,
    options_from_query,
    parse,
)
from antiphon.protocols.deepgram_tts import auth_headers
from antiphon.protocols.stt_session import (
    TIME_TOLERANCE,
    Act,
    Action,
    AudioJournal,
    Message,
    Phase,
    RecognitionSession,
    Recognized,
)

__all__ = [
    "CLOSE_STREAM",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_SAMPLE_RATE",
    "ENCODINGS",
    "FINALIZE",
    "KEEPALIVE",
    "MAX_CHUNK_SECONDS",
    "PATH",
    "PROVIDER",
    "TIME_TOLERANCE",
    "Act",
    "Action",
    "AudioJournal",
    "ErrorMessage",
    "ListenOptions",
    "ListenSession",
    "Malformed",
    "Message",
    "Metadata",
    "Phase",
    "ProtocolStateError",
    "Recognized",
    "Results",
    "ServerEvent",
    "SpeechStarted",
    "Unknown",
    "UtteranceEnd",
    "Word",
    "auth_headers",
    "build_url",
    "close_error",
    "options_from_query",
    "parse",
]

_EPS = 1e-6


# --------------------------------------------------------------------------- state machine


class ListenSession(RecognitionSession):
    """State of one recognition, possibly across reconnects.

    Time bookkeeping is in seconds of the stream's audio: ``sent`` (audio sent so far) and
    ``finalized`` (end of the last final result). Each ``Finalize`` sent while audio was
    un-finalized leaves a *mark* (``sent`` at that moment); a mark is answered by a result
    with ``from_finalize`` or by a final result reaching it, whichever comes first, so a
    server that answers without the flag cannot make the stream wait. ``CloseStream``
    moves to ``CLOSING``; the ``Metadata`` after it completes the stream.

    Un-finalized audio is kept in a journal of at most ``journal_seconds``, so a dropped
    connection can be replaced and the audio replayed (:meth:`replay`); results on the new
    connection are shifted by the stream time where the replay starts.
    """

    def __init__(self, options: ListenOptions, *, journal_seconds: float = 30.0) -> None:
        super().__init__(
            sample_rate=options.sample_rate,
            width=ENCODINGS[options.encoding] * options.channels,
            journal_seconds=journal_seconds,
            chunked=False,  # every push goes at once, in pieces of MAX_CHUNK_SECONDS at most
        )
        self.options = options
        self.marks: deque[float] = deque()
        self._segments: list[Results] = []  # final segments of the open utterance (shifted)

    def _owes_answer(self) -> bool:
        return bool(self.marks)

    def _owed_requests(self) -> list[Message]:
        return [
            *([FINALIZE] if self.marks else []),
            *([CLOSE_STREAM] if self.phase is Phase.CLOSING else []),
        ]

    def _reconnected(self, replayed: list[Message]) -> None:
        # Only the last Finalize is resent: it answers every earlier mark as well.
        if len(self.marks) > 1:
            self.marks = deque([self.marks[-1]])

    # -- client side
    def audio(self, pcm: bytes) -> list[Message]:
        """Binary messages for int16 PCM ``pcm`` (wire-encoded, split into short chunks)."""
        self._require_open("send audio")
        wire = (
            pcm if self.options.encoding == "linear16" else encode_pcm(self.options.encoding, pcm)
        )
        if len(wire) % self._width:
            raise ConfigError(
                f"audio of {len(wire)} bytes is not whole {self.options.channels}-channel samples"
            )
        step = max(self._width, int(MAX_CHUNK_SECONDS * self.options.sample_rate) * self._width)
        return [self._send(wire[i : i + step]) for i in range(0, len(wire), step)]

    def finalize(self) -> list[Message]:
        """``Finalize`` if any audio is un-finalized (else nothing is owed: send nothing)."""
        self._require_open("finalize")
        if self.unfinalized <= TIME_TOLERANCE or (self.marks and self.marks[-1] >= self.sent):
            return []
        self.marks.append(self.sent)
        return [FINALIZE]

    def close_stream(self) -> list[Message]:
        """``CloseStream``: the server finishes, sends ``Metadata`` and closes."""
        self._require_open("close the stream")
        self.phase = Phase.CLOSING
        return [CLOSE_STREAM]

    def keepalive(self) -> list[Message]:
        return [KEEPALIVE] if self.phase is Phase.OPEN else []

    # -- server side
    def feed(self, frame: str | bytes) -> list[Action]:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> list[Action]:
        if self.phase is Phase.DONE:
            return [Action(Act.DROP, event, note="message after the stream completed")]
        if isinstance(event, Results):
            return self._results(event)
        if isinstance(event, UtteranceEnd):
            return self._close_utterance(event)
        if isinstance(event, Metadata):
            if self.phase is Phase.CLOSING:
                out = self._close_utterance(event)
                self.phase = Phase.DONE
                self.marks.clear()
                return [*out, Action(Act.DONE, event)]
            return [Action(Act.NOTICE, event)]
        if isinstance(event, SpeechStarted):
            return [Action(Act.NOTICE, event)]
        if isinstance(event, ErrorMessage):
            note = f"{event.variant or 'Error'}: {event.description or event.code or 'no detail'}"
            return [Action(Act.FAIL, event, note=note)]
        if isinstance(event, Unknown):
            return [Action(Act.DROP, event, note=f"unknown message type {event.type!r}")]
        return [Action(Act.DROP, event, note=event.reason)]

    def _shift(self, r: Results) -> Results:
        if not self.offset:
            return r
        words = tuple(
            Word(
                w.word, w.start + self.offset, w.end + self.offset, w.confidence, w.punctuated_word
            )
            for w in r.words
        )
        return Results(
            r.transcript,
            r.confidence,
            words,
            r.start + self.offset,
            r.duration,
            r.is_final,
            r.speech_final,
            r.from_finalize,
            r.channel_index,
        )

    def _results(self, raw: Results) -> list[Action]:
        r = self._shift(raw)
        if not r.is_final:
            if r.end <= self.finalized + _EPS and r.duration > 0:
                return [Action(Act.DROP, r, note="interim result for finalized audio")]
            if not r.transcript.strip():
                return []
            return [Action(Act.EMIT, r, transcript=self._join(r, final=False))]
        if r.end <= self.finalized + _EPS and r.duration > 0 and not r.from_finalize:
            return [Action(Act.DROP, r, note="final result for audio already finalized")]
        self._finalize_to(r.end)
        answered = False
        if r.from_finalize and self.marks:
            self.marks.popleft()
            answered = True
        while self.marks and self.marks[0] <= self.finalized + TIME_TOLERANCE:
            self.marks.popleft()
            answered = True
        if r.transcript.strip():
            self._segments.append(r)
        out: list[Action] = []
        if r.speech_final or r.from_finalize or answered:
            out = self._close_utterance(r)
        elif r.transcript.strip():
            out = [Action(Act.EMIT, r, transcript=self._join(None, final=False))]
        return out

    def _join(self, interim: Results | None, *, final: bool) -> Recognized:
        parts = [*self._segments, *([interim] if interim is not None else [])]
        text = " ".join(p.transcript.strip() for p in parts if p.transcript.strip())
        first, last = parts[0], parts[-1]
        start = first.words[0].start if first.words else first.start
        end = last.words[-1].end if last.words else last.end
        conf = sum(p.confidence for p in parts) / len(parts)
        return Recognized(text, final, start, max(start, end), conf, self.utterance)

    def end_utterance(self) -> list[Action]:
        """The client ends the open utterance (a flush with nothing left to finalize)."""
        return self._close_utterance(None)

    def _close_utterance(self, event: object) -> list[Action]:
        if not self._segments:
            return []
        rec = self._join(None, final=True)
        self._segments = []
        self.utterance += 1
        return [Action(Act.EMIT, event, transcript=rec)]
