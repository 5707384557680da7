"""What an agent session tells its listeners: states, transcripts, replies and turn metrics.

Every event carries the ``generation`` of the turn it belongs to (DESIGN rule 8), so a
transport can drop what belongs to an interrupted turn.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from antiphon.errors import AntiphonError
from antiphon.services.tts import WordTiming

__all__ = [
    "AgentError",
    "AgentEvent",
    "AgentPaused",
    "AgentReplied",
    "AgentResumed",
    "AgentSpeaking",
    "AgentState",
    "AgentWords",
    "DTMFReceived",
    "FalseInterruption",
    "Interrupted",
    "MachineDetected",
    "StateChanged",
    "ToolCalled",
    "TurnCompleted",
    "TurnMetrics",
    "TurnUnanswered",
    "UserTranscribed",
    "UserTurnEnded",
]


class AgentState(enum.Enum):
    """Where the conversation is."""

    LISTENING = "listening"
    """Waiting for the user (nobody speaks)."""
    USER_SPEAKING = "user_speaking"
    """The user speaks (the VAD hears speech)."""
    THINKING = "thinking"
    """The user's turn ended; the agent prepares its reply (LLM, tools, first audio)."""
    SPEAKING = "speaking"
    """Agent audio is playing."""
    CLOSED = "closed"
    """The session ended."""


@dataclass(frozen=True, slots=True)
class StateChanged:
    old: AgentState
    new: AgentState
    reason: str
    generation: int


@dataclass(frozen=True, slots=True)
class UserTranscribed:
    """What the user said: interim (replaced later) or final for one utterance."""

    text: str
    is_final: bool
    generation: int


@dataclass(frozen=True, slots=True)
class UserTurnEnded:
    """End of the user's turn was decided; ``text`` is what the agent answers."""

    text: str
    generation: int


@dataclass(frozen=True, slots=True)
class AgentSpeaking:
    """A sentence of the reply was sent to speech synthesis."""

    text: str
    generation: int


@dataclass(frozen=True, slots=True)
class AgentWords:
    """Words of the reply that just started to play: a transcript synced to playback.

    Sent as the output track's playout position reaches each word (not when the text was
    generated), in order, each word once; an interrupted reply sends no more. ``words``:
    each word with its start and end in seconds of the reply's audio; ``played``: how far
    the reply had played when this was sent. ``estimated``: the TTS sent no word timings,
    so the words are placed in proportion to their characters over the sentence's audio.
    """

    words: tuple[WordTiming, ...]
    played: float
    estimated: bool
    generation: int

    @property
    def text(self) -> str:
        return " ".join(w.word for w in self.words)


@dataclass(frozen=True, slots=True)
class AgentReplied:
    """The reply ended: ``text`` is what was spoken (all of it unless ``interrupted``)."""

    text: str
    interrupted: bool
    generation: int


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The user spoke over the agent; its audio stopped.

    ``played``: seconds of the reply heard; ``dropped``: seconds of queued audio dropped;
    ``text``: what the history keeps (the part that was heard).
    """

    played: float
    dropped: float
    text: str
    generation: int


@dataclass(frozen=True, slots=True)
class FalseInterruption:
    """Speech over the agent that did not become an interruption (noise, a cough, a
    backchannel such as "uh-huh"). ``text``: what was recognised of it, if anything (it
    joins no turn and no history)."""

    duration: float
    resumed: bool
    generation: int
    text: str = ""


@dataclass(frozen=True, slots=True)
class AgentPaused:
    """The agent's audio is held: the user may be interrupting (speech over the agent).

    Followed by :class:`Interrupted` (the audio is dropped) or :class:`AgentResumed` (it
    plays on from where it was held). A transport with a buffer at its peer (a phone
    carrier) clears that buffer now, so the user stops hearing the agent at once.
    """

    generation: int


@dataclass(frozen=True, slots=True)
class AgentResumed:
    """The agent's held audio plays again (the speech over it was not an interruption)."""

    generation: int


@dataclass(frozen=True, slots=True)
class TurnUnanswered:
    """The user's turn could not be answered within its budget: ``reason`` says why (the
    speech recogniser was behind or failed); the agent says ``fallback`` instead of
    staying silent."""

    reason: str
    fallback: str
    generation: int


@dataclass(frozen=True, slots=True)
class ToolsStarted:
    """The LLM's tool calls of one round began to run (all at once): ``names``, in order.

    Each ends with a :class:`ToolCalled`; a listener can fill the wait (a thinking sound).
    """

    names: tuple[str, ...]
    generation: int


@dataclass(frozen=True, slots=True)
class ToolCalled:
    """A tool call ended. ``seconds``: how long the batch of calls it ran in took (the
    calls of one LLM round run at once), on the session's clock."""

    name: str
    arguments: str
    output: str
    error: str | None
    generation: int
    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class AgentError:
    """A stage failed; the session recovered (``recoverable``) or is closing.

    ``error`` is typed: a ``ProviderError`` for a provider's failure, an
    ``InternalError`` (with the original as ``__cause__``) for a bug. When not
    ``recoverable``, the session's ``StateChanged(..., CLOSED)`` follows at once.
    """

    stage: str
    error: AntiphonError
    recoverable: bool
    generation: int


@dataclass(slots=True)
class TurnMetrics:
    """Latencies of one agent turn, in seconds (``None``: the stage did not happen).

    ``end_of_turn_delay``: end of user speech (VAD) → end of turn decided.
    ``stt_final_delay``: end of user speech (VAD) → the STT final transcript.
    ``llm_ttft``: LLM request → first token. ``tts_ttfa``: first sentence sent to TTS →
    its first audio. ``voice_to_voice``: end of user speech → first agent audio queued
    for the transport.
    """

    generation: int
    user_text: str = ""
    agent_text: str = ""
    interrupted: bool = False
    end_of_turn_delay: float | None = None
    stt_final_delay: float | None = None
    llm_ttft: float | None = None
    tts_ttfa: float | None = None
    voice_to_voice: float | None = None
    tool_calls: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (one line of the turn log)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TurnCompleted:
    metrics: TurnMetrics
    generation: int


@dataclass(frozen=True, slots=True)
class DTMFReceived:
    """The caller pressed a key (a touch-tone: ``0``-``9``, ``*``, ``#``, ``A``-``D``).

    Sent by the phone transports (Twilio, Telnyx, Plivo, Vonage, Exotel) and by a
    ``{"type": "dtmf", "digit": "5"}`` message on ``/ws/agent``; handle it with
    ``session.on_event`` or ``session.events()``.
    """

    digit: str
    generation: int


@dataclass(frozen=True, slots=True)
class MachineDetected:
    """Who answered an outbound call, by Twilio's answering-machine detection.

    ``answered_by``: ``human``, ``machine_start``, ``machine_end_beep``,
    ``machine_end_silence``, ``machine_end_other``, ``fax`` or ``unknown``. The agent
    decides (leave a message after the beep, hang up, carry on).
    """

    answered_by: str
    generation: int

    @property
    def machine(self) -> bool:
        return self.answered_by.startswith("machine") or self.answered_by == "fax"


AgentEvent = (
    StateChanged
    | UserTranscribed
    | UserTurnEnded
    | AgentSpeaking
    | AgentWords
    | AgentReplied
    | Interrupted
    | FalseInterruption
    | AgentPaused
    | AgentResumed
    | TurnUnanswered
    | ToolsStarted
    | ToolCalled
    | AgentError
    | TurnCompleted
    | DTMFReceived
    | MachineDetected
)
