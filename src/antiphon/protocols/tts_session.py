"""What every streaming-TTS protocol session tells its driver, sans I/O.

A provider's protocol module implements :class:`TTSSession` for one stream on one
connection: client-side methods return the messages to send and update the state *before*
anything is sent; :meth:`TTSSession.feed` turns one server frame into an :class:`Action`.
The driver in :mod:`antiphon.services.ws_tts` only ever looks at actions, so whether an
``audio.done`` "counts" is decided by the state machine, never by task scheduling.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from antiphon.errors import ProtocolStateError as ProtocolStateError


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
class Action:
    act: Act
    event: object
    note: str = ""
    audio: bytes = b""


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
