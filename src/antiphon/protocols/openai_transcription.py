"""OpenAI realtime transcription (a Realtime *transcription* session), sans I/O.

The protocol of ``wss://api.openai.com/v1/realtime?intent=transcription`` (GA), as
documented in the realtime transcription guide
(https://developers.openai.com/api/docs/guides/realtime-transcription: connect with
``intent=transcription`` and no model in the URL, then ``session.update`` with
``session.type = "transcription"``), the client events reference
(https://developers.openai.com/api/reference/resources/realtime/client-events:
``session.update``, ``input_audio_buffer.append``/``commit``) and the server events
reference (https://developers.openai.com/api/reference/resources/realtime/server-events:
``input_audio_buffer.speech_started``/``speech_stopped``/``committed``,
``conversation.item.input_audio_transcription.delta``/``completed``/``failed``,
``error``), and typed by the ``openai`` SDK's ``openai.types.realtime`` models (the
witness, ``tests/test_sdk_openai_stt.py``). The beta protocol of the same endpoint
(``OpenAI-Beta: realtime=v1``, ``transcription_session.update``) is not spoken.

- :class:`TranscriptionOptions` is the session: the model (``gpt-4o-transcribe`` by
  default), ``language``, ``prompt``, ``turn_detection`` (server VAD by default, None:
  the client commits), ``noise_reduction``; :func:`session_update` encodes it. Audio is
  PCM16 at 24 kHz (the only PCM rate the GA API takes), base64 in
  ``input_audio_buffer.append``.
- :func:`parse` turns a server frame into a typed event; :func:`close_error` maps close
  codes to typed errors.
- :class:`TranscriptionSession` is the state machine of one recognition. The service
  transcribes *committed* audio: the server's VAD commits each speech run by itself;
  a flush commits what the server has not (only speech in progress when VAD is on), the
  end of input all that is left, and each ``committed`` item is owed its ``completed``
  transcript. Deltas of an item are
  antiphon's interim transcripts (the text so far), ``completed`` its final one. The
  protocol has no end-of-session message: after the end of input the last commits are
  answered, and the stream is complete when no transcript is owed (the client closes).
  Audio not yet covered by a completed transcript is kept in a bounded journal, so a
  dropped connection can be replaced: the session configured again and the audio
  replayed, times shifted to the stream's.

Built from two modules: :mod:`~antiphon.protocols.openai_transcription_wire` (options,
URL, messages, events, parser, close codes) and this one, the state machine on
:class:`~antiphon.protocols.stt_session.RecognitionSession`; every name is importable from
here as before. No I/O and no asyncio here; the plugin is ``antiphon.plugins.openai.stt``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from antiphon.errors import ConfigError
from antiphon.protocols.openai_transcription_wire import BYTES_PER_SECOND as BYTES_PER_SECOND
from antiphon.protocols.openai_transcription_wire import (
    COMMIT,
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    PATH,
    PROVIDER,
    SAMPLE_RATE,
    Committed,
    ErrorMessage,
    Informational,
    ServerEvent,
    SpeechStarted,
    SpeechStopped,
    TranscriptCompleted,
    TranscriptDelta,
    TranscriptFailed,
    TranscriptionOptions,
    Unknown,
    append,
    auth_headers,
    build_url,
    close_error,
    parse,
    session_update,
)
from antiphon.protocols.openai_transcription_wire import COMMIT_EMPTY as COMMIT_EMPTY
from antiphon.protocols.openai_transcription_wire import INFORMATIONAL as INFORMATIONAL
from antiphon.protocols.openai_transcription_wire import MAX_APPEND_SECONDS as MAX_APPEND_SECONDS
from antiphon.protocols.openai_transcription_wire import MIN_COMMIT_SECONDS as MIN_COMMIT_SECONDS
from antiphon.protocols.stt_session import (
    Act,
    Action,
    Malformed,
    Message,
    Phase,
    RecognitionSession,
    Recognized,
)

__all__ = [
    "COMMIT",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "PATH",
    "PROVIDER",
    "SAMPLE_RATE",
    "Act",
    "Action",
    "Committed",
    "ErrorMessage",
    "Informational",
    "Malformed",
    "Phase",
    "Recognized",
    "ServerEvent",
    "SpeechStarted",
    "SpeechStopped",
    "TranscriptCompleted",
    "TranscriptDelta",
    "TranscriptFailed",
    "TranscriptionOptions",
    "TranscriptionSession",
    "Unknown",
    "append",
    "auth_headers",
    "build_url",
    "close_error",
    "parse",
    "session_update",
]


# --------------------------------------------------------------------------- state machine


@dataclass(slots=True)
class _Item:
    start: float  # stream seconds
    end: float
    text: str = ""


class TranscriptionSession(RecognitionSession):
    """State of one recognition, possibly across reconnects.

    Stream seconds: ``sent`` (audio appended), ``buffer_start`` (where the audio not yet
    committed begins), ``finalized`` (where the audio a transcript still needs begins).
    ``items`` are the committed (or VAD-stopped) speech runs whose transcript has not
    completed, in audio order; ``commits`` the ends of the client's commits not yet
    acknowledged. A flush or the end makes every item then pending *owed* (a deadline
    runs until they complete).
    """

    def __init__(self, options: TranscriptionOptions, *, journal_seconds: float = 30.0) -> None:
        super().__init__(
            sample_rate=SAMPLE_RATE,
            width=2,
            journal_seconds=journal_seconds,
            chunked=False,  # every push goes at once, in appends of MAX_APPEND_SECONDS at most
        )
        self.options = options
        self.buffer_start = 0.0
        self.items: dict[str, _Item] = {}
        self.commits: deque[float] = deque()
        self.owed: set[str] = set()
        self.speaking: tuple[str, float] | None = None  # VAD: item and start of speech

    def _owes_answer(self) -> bool:
        return bool(self.commits or self.owed)

    def _owed_requests(self) -> list[Message]:
        return [COMMIT] if self.journal and (self.awaiting or self.items) else []

    def _reconnected(self, replayed: list[Message]) -> None:
        self.buffer_start = self.offset
        self.items.clear()
        self.owed.clear()
        self.speaking = None
        self.commits.clear()
        if replayed[-1] == COMMIT:
            self.commits.append(self.sent)  # owed: its item's transcript becomes owed

    def _wire(self, chunk: bytes) -> Message:
        return append(chunk)

    @property
    def uncommitted(self) -> float:
        return max(0.0, self.sent - self.buffer_start)

    def lost_is_harmless(self) -> bool:
        """A drop now loses nothing: the input ended and every transcript arrived."""
        return self.phase is Phase.CLOSING and not self.commits and not self.items

    # -- client side
    def start(self) -> list[Message]:
        """What opens a connection: the session's configuration."""
        return [session_update(self.options)]

    def audio(self, pcm: bytes) -> list[Message]:
        """``input_audio_buffer.append`` messages for int16 PCM at 24 kHz."""
        self._require_open("send audio")
        if len(pcm) % 2:
            raise ConfigError(f"audio of {len(pcm)} bytes is not whole 16-bit samples")
        step = round(MAX_APPEND_SECONDS * SAMPLE_RATE) * 2
        return [self._send(pcm[i : i + step]) for i in range(0, len(pcm), step)]

    def _commit(self, *, last: bool) -> list[Message]:
        """A commit of the buffer, when it holds what the server has not committed.

        With VAD a flush commits only speech in progress (the server commits each run it
        heard; what follows is silence). The ``last`` commit, at the end of input, takes
        whatever is left: a server that never reported on it owes an answer for it.
        """
        if self.options.vad and self.speaking is None and not last:
            return []
        if self.uncommitted < MIN_COMMIT_SECONDS - 1e-9:
            return []  # too short to commit: it stays in the buffer
        if self.commits and self.commits[-1] >= self.sent - 1e-9:
            return []  # already asked
        self.commits.append(self.sent)
        return [COMMIT]

    def flush(self) -> list[Message]:
        """Commit what is uncommitted; every transcript pending now is owed."""
        self._require_open("flush")
        msgs = self._commit(last=False)
        self.owed.update(self.items)
        return msgs

    def end_input(self) -> list[Message]:
        """The last commit; the stream completes once every transcript owed arrived."""
        self._require_open("end the input")
        msgs = self._commit(last=True)
        self.owed.update(self.items)
        self.phase = Phase.CLOSING
        self._check_done()
        return msgs

    # -- journal and replay
    def _journal_trim(self) -> None:
        """Forget audio before every pending item and the uncommitted buffer."""
        keep = min(
            [self.buffer_start, *(i.start for i in self.items.values())]
            + ([self.speaking[1]] if self.speaking else [])
        )
        # not _finalize_to: a new connection's buffer starts again at the replay's start
        self.finalized = keep
        self.journal.trim(keep)

    def replay(self) -> list[Message] | None:
        """What to send on a new connection to recover (the session's configuration first),
        or None if audio was lost."""
        msgs = super().replay()
        return None if msgs is None else [*self.start(), *msgs]

    # -- server side
    def feed(self, frame: str | bytes) -> list[Action]:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> list[Action]:
        if self.phase is Phase.DONE:
            return [Action(Act.DROP, event, note="message after the stream completed")]
        match event:
            case SpeechStarted(item_id=item, audio_start_ms=ms):
                self.speaking = (item, self.offset + ms / 1000)
                return [Action(Act.NOTICE, event)]
            case SpeechStopped(item_id=item, audio_end_ms=ms):
                start = self.speaking[1] if self.speaking else self.buffer_start
                end = max(start, self.offset + ms / 1000)
                self.speaking = None
                self.items.setdefault(item, _Item(start, end))
                self.buffer_start = max(self.buffer_start, end)
                return [Action(Act.NOTICE, event)]
            case Committed(item_id=item):
                return self._committed(item, event)
            case TranscriptDelta(item_id=item, delta=delta):
                pending = self.items.get(item)
                if pending is None:
                    return [Action(Act.DROP, event, note=f"a delta for unknown item {item!r}")]
                pending.text += delta
                if not pending.text.strip():
                    return []
                rec = Recognized(
                    pending.text.strip(), False, pending.start, pending.end, 0.0, self.utterance
                )
                return [Action(Act.EMIT, event, transcript=rec)]
            case TranscriptCompleted(item_id=item, transcript=text, logprobs=lps):
                return self._completed(item, text, lps, event)
            case TranscriptFailed(item_id=item, message=message):
                return [Action(Act.FAIL, event, note=f"transcription of {item} failed: {message}")]
            case ErrorMessage(code=code, message=message, type=kind):
                if code == COMMIT_EMPTY and self.commits:
                    self.commits.popleft()  # nothing to transcribe: the commit is answered
                    return [Action(Act.NOTICE, event), *self._check_done()]
                return [Action(Act.FAIL, event, note=f"{code or kind}: {message}")]
            case Informational():
                return [Action(Act.NOTICE, event)]
            case Unknown(type=kind):
                return [Action(Act.DROP, event, note=f"unknown message type {kind!r}")]
            case Malformed(reason=reason):
                return [Action(Act.DROP, event, note=reason)]
        return [Action(Act.DROP, event, note="unexpected event")]  # pragma: no cover

    def _committed(self, item: str, event: Committed) -> list[Action]:
        ours = bool(self.commits) and (
            item not in self.items or (self.speaking is not None and self.speaking[0] == item)
        )
        if ours:
            end = self.commits.popleft()
            start = self.speaking[1] if self.speaking else self.buffer_start
            self.speaking = None
            self.items[item] = _Item(min(start, end), end)
            self.buffer_start = max(self.buffer_start, end)
            self.owed.add(item)
        elif item not in self.items:  # a VAD commit we did not see stop (or speech at once)
            start = self.speaking[1] if self.speaking else self.buffer_start
            self.speaking = None
            self.items[item] = _Item(start, max(start, self.sent))
            self.buffer_start = max(self.buffer_start, self.sent)
            if self.phase is Phase.CLOSING:
                self.owed.add(item)
        self._journal_trim()
        return [Action(Act.NOTICE, event)]

    def _completed(
        self, item: str, text: str, logprobs: tuple[float, ...], event: TranscriptCompleted
    ) -> list[Action]:
        pending = self.items.pop(item, None)
        if pending is None:
            return [Action(Act.DROP, event, note=f"a transcript for unknown item {item!r}")]
        self.owed.discard(item)
        out: list[Action] = []
        if text.strip():
            conf = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 1.0
            rec = Recognized(
                text.strip(), True, pending.start, pending.end, min(1.0, conf), self.utterance
            )
            self.utterance += 1
            out.append(Action(Act.EMIT, event, transcript=rec))
        self._journal_trim()
        return [*out, *self._check_done()]

    def _check_done(self) -> list[Action]:
        if self.phase is Phase.CLOSING and not self.commits and not self.items and not self.owed:
            self.phase = Phase.DONE
            return [Action(Act.DONE)]
        return []
