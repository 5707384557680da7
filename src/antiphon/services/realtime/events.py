"""What a realtime session yields (typed events, each with its generation), its states
and its deadlines. Plain frozen dataclasses: no I/O, no asyncio."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError
from antiphon.protocols.realtime import Usage

__all__ = [
    "AgentAudio",
    "AgentTranscriptDelta",
    "AgentTranscriptDone",
    "FunctionCall",
    "RealtimeDeadlines",
    "RealtimeError",
    "RealtimeEvent",
    "Reconnected",
    "ResponseDone",
    "SessionReady",
    "SessionState",
    "UserSpeechStarted",
    "UserSpeechStopped",
    "UserTranscript",
]

# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class SessionReady:
    """The session is connected and its configuration applied."""

    session_id: str
    generation: int = 0


@dataclass(frozen=True, slots=True)
class UserSpeechStarted:
    item_id: str
    audio_start_ms: int
    generation: int = 0


@dataclass(frozen=True, slots=True)
class UserSpeechStopped:
    item_id: str
    audio_end_ms: int
    generation: int = 0


@dataclass(frozen=True, slots=True)
class UserTranscript:
    """The final transcript of what the user said (may arrive after the answer began)."""

    text: str
    item_id: str
    generation: int = 0


@dataclass(frozen=True, slots=True)
class AgentTranscriptDelta:
    text: str
    item_id: str
    response_id: str
    generation: int = 0


@dataclass(frozen=True, slots=True)
class AgentTranscriptDone:
    text: str
    item_id: str
    response_id: str
    generation: int = 0


@dataclass(frozen=True, slots=True)
class AgentAudio:
    """Agent speech; ``frame.generation`` equals ``generation``."""

    frame: AudioFrame
    item_id: str
    response_id: str
    generation: int = 0


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """``status``: completed, cancelled, incomplete or failed; ``reason`` says why it was
    cancelled or incomplete, ``error`` why it failed (the server's type, code, message)."""

    response_id: str
    status: str
    usage: Usage | None = None
    reason: str = ""
    generation: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """The model calls a tool; answer with ``send_tool_result(call_id, output)``."""

    call_id: str
    name: str
    arguments: str
    item_id: str = ""
    response_id: str = ""
    generation: int = 0


@dataclass(frozen=True, slots=True)
class RealtimeError:
    """An error event from the server; the session goes on unless ``fatal``."""

    error: ProviderError
    fatal: bool = False
    generation: int = 0


@dataclass(frozen=True, slots=True)
class Reconnected:
    """The connection dropped (or the server announced its end) and a new one carries
    the session on.

    ``attempt``: reconnects after drops so far (``session.reconnects``; a move that
    resumed the session with the server's handle, Gemini Live's ``goAway``, does not
    count one: ``session.resumptions`` does); ``replayed_items``: text items of the
    conversation sent again (0 after a resumption: the server kept them);
    ``response_requested``: a response that had produced no audio yet was asked for
    again; ``lost_response``: a response that was partly delivered was lost with the old
    connection.
    """

    attempt: int
    reason: str
    replayed_items: int
    response_requested: bool
    lost_response: bool
    generation: int = 0


RealtimeEvent = (
    SessionReady
    | UserSpeechStarted
    | UserSpeechStopped
    | UserTranscript
    | AgentTranscriptDelta
    | AgentTranscriptDone
    | AgentAudio
    | ResponseDone
    | FunctionCall
    | RealtimeError
    | Reconnected
)

#: Events of an interrupted generation that the iterator drops.
DROPPABLE = (AgentAudio, AgentTranscriptDelta, AgentTranscriptDone)


class SessionState(enum.Enum):
    CONNECTING = "connecting"
    RUNNING = "running"
    CLOSED = "closed"  # by the caller
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RealtimeDeadlines:
    """Every wait on a realtime provider, in seconds.

    ``connect``: open the WebSocket. ``ready``: ``session.created`` and the
    acknowledgement of our ``session.update``. ``response``: from asking for a response
    to its first event. ``idle``: longest gap between events while a response is owed.
    ``send``: one WebSocket send. ``close``: closing the connection and the session.
    """

    connect: float = 5.0
    ready: float = 5.0
    response: float = 10.0
    idle: float = 5.0
    send: float = 5.0
    close: float = 2.0

    def __post_init__(self) -> None:
        for name in ("connect", "ready", "response", "idle", "send", "close"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"RealtimeDeadlines.{name} must be a positive number of seconds")
