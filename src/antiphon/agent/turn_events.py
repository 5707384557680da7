"""What the turn machine hears (events) and what it asks for (actions).

Everything the session feeds :class:`~antiphon.agent.machine.TurnMachine` and everything
it gets back is a small frozen dataclass here, as in h11's ``_events.py``: the shell
builds events from the VAD, the STT, a reply's task, a timer, the turn model, ``say()``
and ``send_text()``; it executes actions in the order given. Times are data (``at``:
the session clock's time when it happened), so the machine reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from antiphon.agent.events import AgentEvent, AgentState
from antiphon.agent.turns import Outcome
from antiphon.errors import ProviderError

__all__ = [
    "AbandonReply",
    "Action",
    "ArmTimer",
    "AskTurnModel",
    "CancelTimer",
    "CancelTurnModel",
    "ChangeState",
    "ClearTurnAudio",
    "Close",
    "CommitReply",
    "DropOutput",
    "Emit",
    "EndReply",
    "Event",
    "Fail",
    "FlushStt",
    "ForgetUser",
    "InterruptReply",
    "PauseOutput",
    "RecordUser",
    "ReplyAudio",
    "ReplyDone",
    "ReplyFailed",
    "ResumeOutput",
    "SayRequested",
    "SpeechEnded",
    "SpeechLasted",
    "SpeechStarted",
    "StartReply",
    "SttFailed",
    "TextTyped",
    "TimerFired",
    "Transcribed",
    "TurnEnded",
    "Verdict",
]


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The VAD heard speech begin; ``heard``: a recogniser is up to transcribe it."""

    heard: bool = True


@dataclass(frozen=True, slots=True)
class SpeechLasted:
    """The current speech has lasted ``duration`` seconds (at the interruption marks)."""

    duration: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The VAD's silence window ended. ``at``: clock time the speech ended;
    ``stt_end``: the same end in seconds of ``source``'s audio (None: not comparable)."""

    at: float
    stt_end: float | None = None
    source: object | None = None


@dataclass(frozen=True, slots=True)
class Transcribed:
    """A transcript. ``current``: from the STT stream in use (not a replaced one)."""

    text: str
    final: bool
    at: float
    end: float = 0.0
    source: object | None = None
    flushed: bool = False
    current: bool = True


@dataclass(frozen=True, slots=True)
class TimerFired:
    """The timer armed by ``ArmTimer(kind, _, token)`` fired; ``behind``: the STT
    stream says it is behind the audio."""

    kind: Literal["final", "hold"]
    token: int
    at: float
    behind: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """The end-of-turn model on the pause numbered ``pause``: wait ``hold`` more seconds."""

    pause: int
    hold: float


@dataclass(frozen=True, slots=True)
class ReplyAudio:
    """The reply's first audio reached the output."""

    generation: int


@dataclass(frozen=True, slots=True)
class ReplyDone:
    generation: int


@dataclass(frozen=True, slots=True)
class ReplyFailed:
    """The reply failed. ``apology``: who may say the error line —
    the session's TTS (``"online"``), the offline fallback TTS, or nobody."""

    generation: int
    error: ProviderError
    apology: Literal["online", "offline"] | None = None
    fatal: bool = False  # no retry can mend it (credentials, quota): the session fails


@dataclass(frozen=True, slots=True)
class SayRequested:
    text: str
    allow_interruptions: bool = True
    add_to_history: bool = True


@dataclass(frozen=True, slots=True)
class TextTyped:
    text: str


@dataclass(frozen=True, slots=True)
class SttFailed:
    """The STT stream failed (recoverably; a new one follows after a backoff)."""

    at: float


@dataclass(frozen=True, slots=True)
class Close:
    reason: str = "closed"


Event = (
    SpeechStarted
    | SpeechLasted
    | SpeechEnded
    | Transcribed
    | TimerFired
    | Verdict
    | ReplyAudio
    | ReplyDone
    | ReplyFailed
    | SayRequested
    | TextTyped
    | SttFailed
    | Close
)

# ---------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class ArmTimer:
    """Replace the timer: fire ``TimerFired(kind, token)`` in ``seconds``."""

    kind: Literal["final", "hold"]
    seconds: float
    token: int


@dataclass(frozen=True, slots=True)
class CancelTimer:
    pass


@dataclass(frozen=True, slots=True)
class FlushStt:
    """Ask the STT stream to finalise what it heard."""


@dataclass(frozen=True, slots=True)
class AskTurnModel:
    """Ask the end-of-turn model about the pause numbered ``pause`` (answer: Verdict)."""

    pause: int


@dataclass(frozen=True, slots=True)
class CancelTurnModel:
    pass


@dataclass(frozen=True, slots=True)
class ClearTurnAudio:
    """The turn ended: the turn model's audio buffer starts over."""


@dataclass(frozen=True, slots=True)
class StartReply:
    """Run a reply (``fixed_text``: say it, no LLM); the LLM context is the history plus
    ``user_text`` (unless fixed). ``shown_text``: the user words its metrics show."""

    generation: int
    user_text: str
    fixed_text: str | None = None
    allow_interruptions: bool = True
    add_to_history: bool = True
    notice: bool = False
    offline: bool = False
    shown_text: str = ""
    speech_end_at: float | None = None


@dataclass(frozen=True, slots=True)
class CommitReply:
    """The turn is decided: the reply may speak."""

    generation: int
    final_delay: float | None


@dataclass(frozen=True, slots=True)
class AbandonReply:
    """Cancel a reply that spoke nothing (nothing of it reaches the history)."""

    generation: int
    reason: str


@dataclass(frozen=True, slots=True)
class InterruptReply:
    """The user barged in: drop the output (below ``generation + 1``), keep what was heard."""

    generation: int


@dataclass(frozen=True, slots=True)
class EndReply:
    """The reply ended (``done``: all of it was heard; ``failed``: what was played)."""

    generation: int
    how: Literal["done", "failed"]


@dataclass(frozen=True, slots=True)
class RecordUser:
    """Add the user's words to the history."""

    text: str


@dataclass(frozen=True, slots=True)
class ForgetUser:
    """Take back the history's last user message if it is ``text``."""

    text: str


@dataclass(frozen=True, slots=True)
class PauseOutput:
    pass


@dataclass(frozen=True, slots=True)
class ResumeOutput:
    pass


@dataclass(frozen=True, slots=True)
class DropOutput:
    """Drop queued audio; generations below ``below`` are dropped from now on."""

    below: int


@dataclass(frozen=True, slots=True)
class ChangeState:
    old: AgentState
    new: AgentState
    reason: str
    generation: int


@dataclass(frozen=True, slots=True)
class Fail:
    """A reply failed beyond recovery: the session fails with ``error``."""

    error: ProviderError


@dataclass(frozen=True, slots=True)
class Emit:
    event: AgentEvent


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """User turn number ``turn`` ended with ``outcome`` (answered by ``generation``)."""

    turn: int
    outcome: Outcome
    text: str = ""
    generation: int | None = None


Action = (
    ArmTimer
    | CancelTimer
    | FlushStt
    | AskTurnModel
    | CancelTurnModel
    | ClearTurnAudio
    | StartReply
    | CommitReply
    | AbandonReply
    | InterruptReply
    | EndReply
    | RecordUser
    | ForgetUser
    | PauseOutput
    | ResumeOutput
    | DropOutput
    | ChangeState
    | Emit
    | Fail
    | TurnEnded
)
