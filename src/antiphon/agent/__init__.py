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
from antiphon.agent.handoff import Agent, AgentFlow, Handoff
from antiphon.agent.options import AgentOptions, InterruptionOptions, TurnOptions
from antiphon.agent.playback import Playback
from antiphon.agent.session import AgentSession
from antiphon.agent.sounds import BackgroundAudio, Sound
from antiphon.agent.tracing import TurnTracer

__all__ = [
    "Agent",
    "AgentError",
    "AgentEvent",
    "AgentFlow",
    "AgentOptions",
    "AgentReplied",
    "AgentSession",
    "AgentSpeaking",
    "AgentState",
    "AgentWords",
    "BackgroundAudio",
    "FalseInterruption",
    "Handoff",
    "Interrupted",
    "InterruptionOptions",
    "Playback",
    "Sound",
    "StateChanged",
    "ToolCalled",
    "TurnCompleted",
    "TurnMetrics",
    "TurnOptions",
    "TurnTracer",
    "UserTranscribed",
    "UserTurnEnded",
]
