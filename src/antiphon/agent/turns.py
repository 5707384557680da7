"""Turn-taking state without I/O: what the user said in the turn, and when it is whole.

How it is built: :class:`UserTurn` is a plain object the turn machine feeds —
transcripts as they arrive (:meth:`UserTurn.hear`), the VAD's end of speech
(:meth:`UserTurn.covers`), a recogniser failure (:attr:`UserTurn.lost`) — and asks for
the turn's text when the turn ends (:meth:`UserTurn.take`). It awaits nothing, reads no
clock and owns no task, so every order of events can be driven through it by a property
test (``tests/test_turns.py``). The turn machine (:mod:`antiphon.agent.machine`) owns
one and feeds it; the session (:mod:`antiphon.agent.session`) is the I/O shell that
executes the machine's actions.

The phases of the turn machine are declared here too (:class:`UserPhase`,
:class:`AgentPhase`, :class:`Overlap`) with the typed :class:`Outcome` of a user turn,
so the machine's modules and its property tests share one vocabulary.

The end-of-turn evidence (issue 18): when the VAD's silence window ends, the turn's text
is whole if the recogniser's last word on it was a final (no interim with text came
after it) that reaches the end of the speech, less ``slack`` seconds — both say the user
is done, so the turn ends without waiting for the answer to the flush.

The interruption policy's words: :func:`content_words` counts the words of speech over
the agent that are not :data:`BACKCHANNEL` ("uh-huh", "yeah"); the session yields only
to speech with enough of them (``InterruptionOptions``, docs/agent.md).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

__all__ = [
    "BACKCHANNEL",
    "COVER_SLACK",
    "AgentPhase",
    "Outcome",
    "Overlap",
    "Taken",
    "UserPhase",
    "UserTurn",
    "content_words",
]

COVER_SLACK = 0.3
"""Seconds a final may end before the VAD's end of speech and still cover it (word times
end at the last phoneme; the VAD's decision windows are 20-30 ms and its edges soft)."""


BACKCHANNEL: frozenset[str] = frozenset(
    {
        "uh-huh", "uh huh", "mm-hmm", "mm hmm", "mhm", "mm", "hmm", "uh", "um", "ah", "oh",
        "yeah", "yep", "yes", "right", "okay", "ok", "sure", "alright", "i see", "got it",
    }
)  # fmt: skip
"""The default backchannel: words a listener says to show they follow, not to take the
floor. "no", "wait" and "stop" are deliberately not in it."""

_WORD = re.compile(r"[a-z0-9']+")


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def content_words(text: str, backchannel: frozenset[str] = BACKCHANNEL) -> int:
    """The words of ``text`` that are not backchannel (case, punctuation and hyphens
    ignored; a phrase of the set, such as "got it", counts only when whole)."""
    phrases = sorted({tuple(_tokens(b)) for b in backchannel} - {()}, key=len, reverse=True)
    words = _tokens(text)
    count = i = 0
    while i < len(words):
        for phrase in phrases:
            if tuple(words[i : i + len(phrase)]) == phrase:
                i += len(phrase)
                break
        else:
            count += 1
            i += 1
    return count


@dataclass(frozen=True, slots=True)
class Taken:
    """The text of an ended turn, and whether it is only a fragment of what was said
    (the recogniser failed or fell behind and lost or never finished the rest)."""

    text: str
    fragment: bool


@dataclass(slots=True)
class UserTurn:
    """The user's words of the current turn (see the module docstring).

    ``carry``: text of an earlier turn whose reply was dropped as the user went on; it
    starts this turn's text. ``lost``: the recogniser lost audio of this turn (it failed
    while the user spoke or while the final was owed, or was down when speech began).
    """

    slack: float = COVER_SLACK
    carry: str = ""
    finals: list[str] = field(default_factory=list)
    interim: str = ""
    lost: bool = False
    # end of the speech the finals cover, in seconds of ``_source``'s audio; None once an
    # interim with text says more speech is pending
    _covered_until: float | None = None
    _source: object | None = None

    def hear(self, text: str, *, final: bool, end: float, source: object | None) -> None:
        """A transcript with text (``end``: its end in seconds of ``source``'s audio)."""
        if final:
            self.finals.append(text)
            self.interim = ""
            self._covered_until, self._source = end, source
        else:
            self.interim = text
            self._covered_until = None

    def covers(self, speech_end: float | None, source: object | None) -> bool:
        """Do the finals heard so far cover speech that ended at ``speech_end``?

        ``speech_end`` is in seconds of ``source``'s audio (None: the times cannot be
        compared, as for a recogniser fed only speech): never covered then.
        """
        if speech_end is None or source is None or source is not self._source:
            return False
        if not self.finals or self.interim or self._covered_until is None:
            return False
        return self._covered_until >= speech_end - self.slack

    def text(self, *, with_interim: bool = True) -> str:
        parts = [self.carry, *self.finals]
        if with_interim and self.interim:
            parts.append(self.interim)
        return " ".join(p for p in parts if p).strip()

    def drop_speech(self) -> None:
        """Forget what was heard of the speech (not the carry): it was not a turn."""
        self.finals, self.interim = [], ""
        self._covered_until = None

    def take(self, *, behind: bool) -> Taken:
        """End the turn: its text (interim included) and whether it is a fragment.

        ``behind``: the turn ends without the recogniser's final (it failed or is late).
        Everything is forgotten afterwards, ``lost`` included.
        """
        lost = self.lost
        fragment = (behind or lost) and bool(self.interim or lost)
        taken = Taken(self.text(with_interim=True), fragment)
        self.carry, self.lost = "", False
        self.drop_speech()
        return taken


# ------------------------------------------------------------------------- phases


class UserPhase(enum.Enum):
    QUIET = "quiet"
    """No user turn is open."""
    SPEAKING = "speaking"
    """The VAD hears speech."""
    PAUSED = "paused"
    """The speech paused; the end-of-turn model decides (a hold timer bounds it)."""
    AWAITING_FINAL = "awaiting_final"
    """The speech is over; the STT's final is awaited (the final timer bounds it). With
    an :class:`Overlap`, that final decides whether the speech interrupts."""
    MISSED = "missed"
    """The turn ended empty at the final's timeout; a late final still answers it."""


class AgentPhase(enum.Enum):
    IDLE = "idle"
    """No reply."""
    SPECULATING = "speculating"
    """A reply started on an interim transcript: it thinks, says and shows nothing."""
    THINKING = "thinking"
    """A committed reply before its first audio."""
    SPEAKING = "speaking"
    """A committed reply whose audio plays."""
    CLOSED = "closed"
    """The session closed: every event is refused."""


class Overlap(enum.Enum):
    NONE = "none"
    SPEECH = "speech"
    """The user speaks over the agent's audio (paused when false interruptions resume)."""
    THINKING = "thinking"
    """The user speaks over a committed reply before it spoke (its audio is held)."""


class Outcome(enum.Enum):
    """How a user turn ended (:class:`TurnEnded`)."""

    ANSWERED = "answered"
    UNANSWERED = "unanswered"
    EMPTY = "empty"
    IGNORED = "ignored"
    JOINED = "joined"
    ABANDONED = "abandoned"
