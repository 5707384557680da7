"""What every streaming-TTS protocol session tells its driver, sans I/O.

A provider's protocol module implements :class:`TTSSession` for one stream on one
connection: client-side methods return the messages to send and update the state *before*
anything is sent; :meth:`TTSSession.feed` turns one server frame into an :class:`Action`.
The driver in :mod:`antiphon.services.ws_tts` only ever looks at actions, so whether an
``audio.done`` "counts" is decided by the state machine, never by task scheduling.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from antiphon.errors import ProtocolStateError as ProtocolStateError

__all__ = [
    "Act",
    "Action",
    "CharWords",
    "ProtocolStateError",
    "TTSSession",
    "WordTiming",
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
