"""The agent layer: a voice conversation over the service contracts."""

from antiphon.agent.events import (
    AgentError,
    AgentEvent,
    AgentReplied,
    AgentSpeaking,
    AgentState,
    AgentWords,
    FalseInterruption,
    Interrupted,
    StateChanged,
    ToolCalled,
    TurnCompleted,
    TurnMetrics,
    UserTranscribed,
    UserTurnEnded,
)
from antiphon.agent.options import AgentOptions, InterruptionOptions, TurnOptions
from antiphon.agent.playback import Playback
from antiphon.agent.session import AgentSession

__all__ = [
    "AgentError",
    "AgentEvent",
    "AgentOptions",
    "AgentReplied",
    "AgentSession",
    "AgentSpeaking",
    "AgentState",
    "AgentWords",
    "FalseInterruption",
    "Interrupted",
    "InterruptionOptions",
    "Playback",
    "StateChanged",
    "ToolCalled",
    "TurnCompleted",
    "TurnMetrics",
    "TurnOptions",
    "UserTranscribed",
    "UserTurnEnded",
]
