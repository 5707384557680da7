"""ElevenLabs Scribe realtime STT (WebSocket ``/v1/speech-to-text/realtime``), sans I/O.

The protocol of ``wss://api.elevenlabs.io/v1/speech-to-text/realtime``, as documented in
the realtime guides (https://elevenlabs.io/docs/eleven-api/guides/how-to/speech-to-text/realtime/server-side-streaming,
"Transcripts and commit strategies" and the event reference beside it), and typed by the
``elevenlabs`` SDK (2.78: ``realtime/scribe.py``, ``realtime/connection.py`` and the
``ReceiveTranscription`` union of payload models):

- :class:`ScribeOptions` is the query (``model_id``, ``audio_format`` ``pcm_<rate>`` or
  ``ulaw_8000``, ``commit_strategy`` ``manual`` or ``vad`` with its thresholds,
  ``language_code``, ``keyterms`` repeated, ``include_timestamps``); the key goes in the
  ``xi-api-key`` header, or a single-use ``token`` in the query.
- Client messages are JSON only: ``input_audio_chunk`` with base64 PCM, ``commit``
  (true on an empty chunk: end the segment now) and ``sample_rate``.
- :func:`parse` turns a server frame into a typed event: :class:`SessionStarted`,
  :class:`Partial` (``partial_transcript``), :class:`Committed`
  (``committed_transcript``, and ``committed_transcript_with_timestamps`` with its
  ``words``), :class:`ErrorMessage` (the fourteen error types, each its own
  ``message_type``), :class:`Unknown` or :class:`Malformed`.
- :class:`ScribeSession` is the state machine of one recognition. A committed segment
  is antiphon's final transcript (the timed copy: it follows the plain one, which is
  dropped); partials are interim transcripts of the open segment. A flush is a commit;
  each commit the client sends is owed one committed transcript, in order. The protocol
  has no end-of-session message: after ``end_input`` the last commit's answer completes
  the stream, and the client closes. With ``commit_strategy="manual"`` (the default here)
  only the client commits, so the accounting is exact; with ``vad`` the server commits
  on silence too, and a server commit answering before the client's cannot be told apart
  (no segment id): the stream may then complete one answer early.

Un-committed audio is kept in a bounded journal so that a dropped connection can be
replaced and the audio replayed (word times on the new connection shifted to the
stream's). No I/O and no asyncio here; the plugin is ``antiphon.plugins.elevenlabs.stt``.

Built from two modules: :mod:`~antiphon.protocols.elevenlabs_stt_wire` (options, URL,
messages, events, parser, errors) and this one, the state machine on
:class:`~antiphon.protocols.stt_session.RecognitionSession`; every name is importable from
here as before.
"""

from __future__ import annotations

import math
from collections import deque

from antiphon.errors import (
    ProtocolStateError,
)
from antiphon.protocols.elevenlabs_stt_wire import (
    AUDIO_FORMATS,
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    ERROR_TYPES,
    PATH,
    PROVIDER,
    Committed,
    ErrorMessage,
    Partial,
    ScribeOptions,
    ServerEvent,
    SessionStarted,
    Unknown,
    Word,
    audio_chunk,
    auth_headers,
    build_url,
    close_error,
    commit,
    error_for,
    options_from_query,
    parse,
)
from antiphon.protocols.elevenlabs_stt_wire import AUTH_HINT as AUTH_HINT
from antiphon.protocols.elevenlabs_stt_wire import COMMIT_STRATEGIES as COMMIT_STRATEGIES
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
    "AUDIO_FORMATS",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "ERROR_TYPES",
    "PATH",
    "PROVIDER",
    "Act",
    "Action",
    "Committed",
    "ErrorMessage",
    "Malformed",
    "Partial",
    "Phase",
    "ProtocolStateError",
    "Recognized",
    "ScribeOptions",
    "ScribeSession",
    "ServerEvent",
    "SessionStarted",
    "Unknown",
    "Word",
    "audio_chunk",
    "auth_headers",
    "build_url",
    "close_error",
    "commit",
    "error_for",
    "options_from_query",
    "parse",
]


# --------------------------------------------------------------------------- state machine


class ScribeSession(RecognitionSession):
    """State of one recognition, possibly across reconnects.

    Time is in seconds of the stream's audio: ``sent`` (audio sent so far) and
    ``finalized`` (where the last answered commit cut; also ``committed``). ``commits``
    holds the stream time of each commit the client sent that no committed transcript has
    answered yet (in order: the service answers commits in order). Audio goes as
    base64 in ``input_audio_chunk`` messages.
    """

    def __init__(self, options: ScribeOptions, *, journal_seconds: float = 30.0) -> None:
        super().__init__(
            sample_rate=options.sample_rate, width=options.width, journal_seconds=journal_seconds
        )
        self.options = options
        self.last_commit = 0.0  # stream time of the last commit sent (or answered)
        self.commits: deque[float] = deque()
        self._partial = ""

    @property
    def committed(self) -> float:
        """Where the last answered commit cut (:attr:`finalized`, by the protocol's word)."""
        return self.finalized

    def _owes_answer(self) -> bool:
        return bool(self.commits)  # the end of input is owed the last commit's answer too

    def _owed_requests(self) -> list[Message]:
        return [commit(self.options.sample_rate)] if self.commits else []

    def _reconnected(self, replayed: list[Message]) -> None:
        if self.commits:  # the commits owed become one (the replayed audio is committed once)
            self.commits = deque([self.commits[-1]])
        self._partial = ""

    def _wire(self, chunk: bytes) -> Message:
        return audio_chunk(chunk, self.options.sample_rate)

    def lost_is_harmless(self) -> bool:
        """A drop now loses nothing: the input ended and every commit was answered."""
        return self.phase is not Phase.OPEN and not self.commits

    # -- client side
    def _commit(self) -> list[Message]:
        msgs = self._tail()
        if self.sent - self.last_commit <= TIME_TOLERANCE:
            return msgs  # nothing new to commit
        self.commits.append(self.sent)
        self.last_commit = self.sent
        return [*msgs, commit(self.options.sample_rate)]

    def flush(self) -> list[Message]:
        """The audio left, then a commit (owed its committed transcript)."""
        self._require_open("flush")
        return self._commit()

    def end_input(self) -> list[Message]:
        """The last commit; the stream completes when every commit is answered."""
        self._require_open("end the input")
        msgs = self._commit()
        self.phase = Phase.DONE if not self.commits else Phase.CLOSING
        return msgs

    # -- server side
    def feed(self, frame: str | bytes) -> list[Action]:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> list[Action]:
        if self.phase is Phase.DONE:
            return [Action(Act.DROP, event, note="message after the last answer")]
        match event:
            case Partial():
                return self._partial_text(event)
            case Committed():
                if event.timed is not self.options.include_timestamps:
                    return [Action(Act.DROP, event, note="the other copy of the segment")]
                return self._committed(event)
            case SessionStarted():
                return [Action(Act.NOTICE, event)]
            case ErrorMessage():
                return [Action(Act.FAIL, event, note=f"{event.type}: {event.error}")]
            case Unknown():
                return [Action(Act.DROP, event, note=f"unknown message type {event.type!r}")]
            case Malformed():
                return [Action(Act.DROP, event, note=event.reason)]
        return [Action(Act.DROP, event, note="unexpected event")]  # pragma: no cover

    def _partial_text(self, event: Partial) -> list[Action]:
        text = event.text.strip()
        if not text or text == self._partial:
            return []
        self._partial = text
        start = self.finalized
        rec = Recognized(text, False, start, max(start, self.sent), 0.0, self.utterance)
        return [Action(Act.EMIT, event, transcript=rec)]

    def _committed(self, event: Committed) -> list[Action]:
        words_end = event.words[-1].end + self.offset if event.words else None
        if self.commits:
            cut = self.commits.popleft()  # the answer of the oldest commit sent
        else:  # the server committed (``vad``): up to its last word
            cut = words_end if words_end is not None else self.finalized
        self._partial = ""
        actions: list[Action] = []
        text = event.text.strip()
        if text:
            if event.words:
                start = event.words[0].start + self.offset
                end = event.words[-1].end + self.offset
            else:
                start, end = self.finalized, cut
            probs = [w.logprob for w in event.words if w.logprob is not None]
            conf = min(1.0, math.exp(sum(probs) / len(probs))) if probs else 1.0
            rec = Recognized(text, True, start, max(start, end), conf, self.utterance)
            self.utterance += 1
            actions.append(Action(Act.EMIT, event, transcript=rec))
        self._finalize_to(min(cut, self.sent))
        if self.phase is Phase.CLOSING and not self.commits:
            self.phase = Phase.DONE
            actions.append(Action(Act.DONE, event))
        return actions
