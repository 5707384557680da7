"""What every streaming-TTS protocol session tells its driver, sans I/O.

A provider's protocol module implements :class:`TTSSession` for one stream on one
connection: client-side methods return the messages to send and update the state *before*
anything is sent; :meth:`TTSSession.feed` turns one server frame into an :class:`Action`.
The driver in :mod:`antiphon.services.ws_tts` only ever looks at actions, so whether an
``audio.done`` "counts" is decided by the state machine, never by task scheduling.

Most servers answer each flush once, in order (Deepgram's ``Flushed``, xAI's
``audio.done``, Rime's ``done``, Cartesia's ``flush_done``): their sessions share the
counting of flushes and the journal of what may be replayed in :class:`FlushLedger`, and
keep their own phases and wire. Those that multiplex streams as contexts of one connection
(Rime, Cartesia) also share their phases (:class:`ContextPhase`), the context id and the
start of a cancel in :class:`ContextLedger`.
"""

from __future__ import annotations

import enum
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from antiphon.errors import ProtocolStateError as ProtocolStateError

__all__ = [
    "Act",
    "Action",
    "CharWords",
    "ContextLedger",
    "ContextPhase",
    "FlushLedger",
    "ProtocolStateError",
    "TTSSession",
    "WordTiming",
    "new_context_id",
]


class Act(enum.Enum):
    """What the client should do with an event."""

    DELIVER = "deliver"  # audio of the current stream (Action.audio, wire encoding)
    SEGMENT_DONE = "segment_done"  # one flush answered, more owed
    STREAM_DONE = "stream_done"  # input ended and every flush answered
    CLEAR_DONE = "clear_done"  # the cancel was acknowledged: the connection is idle
    DROP = "drop"  # stale or unexpected: discard (reason in Action.note)
    NOTICE = "notice"  # informational (metadata, warnings): log at most
    FAIL = "fail"  # the stream has failed (reason in Action.note)


@dataclass(frozen=True, slots=True)
class WordTiming:
    """One spoken word and where it lies in the audio, in seconds.

    In an :class:`Action`, times count from the start of the current segment's audio
    (what one flush answers); on a synthesis stream, from the start of the stream's audio.
    """

    word: str
    start: float
    end: float

    def shifted(self, offset: float) -> WordTiming:
        return WordTiming(self.word, self.start + offset, self.end + offset)


@dataclass(frozen=True, slots=True)
class Action:
    act: Act
    event: object
    note: str = ""
    audio: bytes = b""
    words: tuple[WordTiming, ...] = ()
    """Words whose timings this message gave (segment-relative; see :class:`WordTiming`)."""


class CharWords:
    """Per-character timings (xAI, ElevenLabs) → whole words, across messages.

    A word may be cut between two messages: its characters wait here until a space (or
    :meth:`finish`, at the end of a segment) closes it. Times are taken as given; the
    caller makes them segment-relative.
    """

    def __init__(self) -> None:
        self._chars: list[str] = []
        self._start = 0.0
        self._end = 0.0

    def feed(self, chars: Iterable[tuple[str, float, float]]) -> tuple[WordTiming, ...]:
        """Characters with their (start, end); returns the words they completed."""
        out: list[WordTiming] = []
        for char, start, end in chars:
            if char.isspace():
                out.extend(self.finish())
                continue
            if not self._chars:
                self._start = start
            self._chars.append(char)
            self._end = max(self._end, end)
        return tuple(out)

    def finish(self) -> tuple[WordTiming, ...]:
        """The word still open, if any (the segment ended)."""
        if not self._chars:
            return ()
        word = WordTiming("".join(self._chars), self._start, max(self._start, self._end))
        self._chars.clear()
        self._end = 0.0
        return (word,)


class TTSSession(Protocol):
    """The state machine of one synthesis stream on one connection."""

    @property
    def done(self) -> bool:
        """Input ended and every flush answered."""
        ...

    @property
    def awaiting_audio(self) -> bool:
        """The server owes audio or an answer (a deadline should run)."""
        ...

    @property
    def pending_flushes(self) -> int:
        """Flushes sent and not yet answered."""
        ...

    @property
    def clear_needs_ack(self) -> bool:
        """After :meth:`clear`, must the driver wait for ``CLEAR_DONE`` before reuse?

        False when messages carry a context id, so a later stream drops stale audio itself.
        """
        ...

    def speak(self, text: str) -> list[str | bytes]:
        """Messages that send ``text`` (not yet spoken until a flush)."""
        ...

    def flush(self) -> list[str | bytes]:
        """Messages that make the server speak what was sent so far (may be none)."""
        ...

    def end_input(self) -> list[str | bytes]:
        """Flush what is left and mark the input ended; see :attr:`done`."""
        ...

    def clear(self) -> list[str | bytes]:
        """Messages that cancel what the server still has (none if it has nothing)."""
        ...

    def replay(self) -> list[str | bytes] | None:
        """Messages to resend on a new connection, or None if audio was already heard."""
        ...

    def reset_for_replay(self) -> list[str | bytes]:
        """Start over on a fresh connection; returns what to send there."""
        ...

    def feed(self, frame: str | bytes) -> Action:
        """Decide what one server message means."""
        ...


Entry = TypeVar("Entry")


class FlushLedger(ABC, Generic[Entry]):
    """The flush bookkeeping of a session whose server answers every flush once, in order.

    It counts the flushes sent (:attr:`flushes_sent`) and those still owed an answer
    (:attr:`pending_flushes`), and keeps a journal of what was sent since the last answer
    (an ``Entry`` each: the message itself, or an operation that the session encodes again
    under a new context id), which a new connection may replay as long as no audio
    answered it (:attr:`audio_since_ack`). The session keeps its phases: it says how to
    flush (:meth:`flush`, after :meth:`_flushed`) and which phase a finished stream is in
    (:meth:`_finish`), and calls :meth:`_spoke` for the text it sends and
    :meth:`_answered` for each answer.
    """

    def __init__(self, flush_entry: Entry) -> None:
        self.input_ended = False
        self.pending_flushes = 0  # flushes sent and not yet answered
        self.flushes_sent = 0
        self._unflushed = False  # non-blank text sent since the last flush
        # What was sent since the last answer, and whether audio answered it: if the
        # connection drops before any audio, it can be replayed on a new one.
        self._journal: list[Entry] = []
        self.audio_since_ack = False
        self._flush_entry = flush_entry  # what a flush leaves in the journal

    @abstractmethod
    def flush(self) -> list[str | bytes]:
        """Messages that make the server speak what was sent so far (may be none)."""

    @abstractmethod
    def _finish(self) -> None:
        """Put the session in the phase of a stream whose every flush is answered."""

    @property
    def done(self) -> bool:
        """Input ended and every flush answered."""
        return self.input_ended and self.pending_flushes == 0

    def end_input(self) -> list[str | bytes]:
        """Flush what is left and mark the input ended; see :attr:`done`."""
        msgs = self.flush()
        self.input_ended = True
        if self.pending_flushes == 0:
            self._finish()
        return msgs

    def _spoke(self, text: str, *entries: Entry) -> None:
        """Note ``text``, sent as ``entries`` (only non-blank text is owed a flush)."""
        if text.strip():
            self._unflushed = True
        self._journal.extend(entries)

    def _flushed(self) -> bool:
        """Whether a flush is due (non-blank text was sent since the last one); if it is,
        it is counted as sent and owed an answer, and journaled."""
        if not self._unflushed:
            return False
        self._unflushed = False
        self.pending_flushes += 1
        self.flushes_sent += 1
        self._journal.append(self._flush_entry)
        return True

    def _answered(self, event: object, words: tuple[WordTiming, ...] = ()) -> Action:
        """The action for ``event``, the answer to the oldest flush owed.

        What that flush answered leaves the journal (text sent after it is still owed);
        the stream is done (:meth:`_finish`) if it was the last flush after the input
        ended.
        """
        self.pending_flushes -= 1
        if self._flush_entry in self._journal:
            del self._journal[: self._journal.index(self._flush_entry) + 1]
        self.audio_since_ack = False
        if self.done:
            self._finish()
            return Action(Act.STREAM_DONE, event, words=words)
        return Action(Act.SEGMENT_DONE, event, words=words)


class ContextPhase(enum.Enum):
    """Where a stream on one context of a shared connection is (:class:`ContextLedger`)."""

    IDLE = "idle"  # nothing sent on the context yet: audio now is stale
    ACTIVE = "active"  # text sent on the context
    DONE = "done"  # input ended and every flush answered: audio now is stale
    CANCELLED = "cancelled"  # cancel sent: everything now is stale


def new_context_id() -> str:
    """A fresh context id (a random UUID, as the providers' SDKs generate)."""
    return str(uuid.uuid4())


class ContextLedger(FlushLedger[Entry]):
    """A :class:`FlushLedger` for one stream as one context id of a shared connection.

    Every message carries the context id, so a later stream on the connection drops this
    one's audio by itself (no cancel needs an answer), and a replay on a new connection
    uses a new id. The session moves through :class:`ContextPhase`: it calls
    :meth:`_require_open` before it sends, :meth:`_speaking` for the text it sends (which
    sets ``ACTIVE``), and :meth:`_cancelled` where its ``clear`` starts.
    """

    #: Messages carry the context id: a later stream drops this one's audio by itself.
    clear_needs_ack = False

    def __init__(self, flush_entry: Entry, context_ids: Callable[[], str]) -> None:
        super().__init__(flush_entry)
        self._context_ids = context_ids
        self.context_id = context_ids()
        self.phase = ContextPhase.IDLE

    def _require_open(self, what: str) -> None:
        """Refuse to ``what`` once the input ended or the stream is over.

        Raises:
            ProtocolStateError: the input ended, or the phase is DONE or CANCELLED.
        """
        if self.input_ended or self.phase in (ContextPhase.DONE, ContextPhase.CANCELLED):
            raise ProtocolStateError(f"cannot {what} in phase {self.phase.value}")

    def _finish(self) -> None:
        self.phase = ContextPhase.DONE

    def _speaking(self, text: str, entry: Entry) -> bool:
        """Whether ``text`` is to be sent, as ``entry`` (leading blank text is not): if it
        is, the context is active and ``entry`` journaled.

        Raises:
            ProtocolStateError: the input ended, or the phase is DONE or CANCELLED.
        """
        self._require_open("speak")
        if not text or (self.phase is ContextPhase.IDLE and not text.strip()):
            return False
        self.phase = ContextPhase.ACTIVE
        self._spoke(text, entry)
        return True

    @property
    def awaiting_audio(self) -> bool:
        """The server owes audio or an answer (a deadline should run)."""
        return self.phase is ContextPhase.ACTIVE and self.pending_flushes > 0

    @property
    def _replayable(self) -> bool:
        """No audio answered what the journal holds, and the stream is not over."""
        return not self.audio_since_ack and self.phase not in (
            ContextPhase.DONE,
            ContextPhase.CANCELLED,
        )

    def _cancelled(self) -> bool:
        """Cancel the stream (nothing is owed or replayed any more); returns whether the
        context had started, i.e. whether the server must be told."""
        started = self.phase is ContextPhase.ACTIVE
        self.phase = ContextPhase.CANCELLED
        self.pending_flushes = 0
        self._unflushed = False
        self._journal.clear()
        return started
