"""Prometheus metrics of every stage (names ``antiphon_*``, label ``provider``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = [
    "AGENT_END_OF_TURN",
    "AGENT_INTERRUPTIONS",
    "AGENT_LLM_TTFT",
    "AGENT_TTS_TTFA",
    "AGENT_TURNS",
    "AGENT_VOICE_TO_VOICE",
    "REALTIME_INTERRUPTIONS",
    "REALTIME_RECONNECTS",
    "REALTIME_RESPONSE_SECONDS",
    "REALTIME_TOKENS",
    "REALTIME_VOICE_TO_VOICE",
    "TTS_AUDIO_SECONDS",
    "TTS_DROPPED_MESSAGES",
    "TTS_ERRORS",
    "TTS_STREAMS",
    "TTS_TTFB",
]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

TTS_TTFB = Histogram(
    "antiphon_tts_time_to_first_audio_seconds",
    "Time from a TTS flush to the first audio byte of its answer.",
    ["provider"],
    buckets=_LATENCY_BUCKETS,
)
TTS_AUDIO_SECONDS = Counter(
    "antiphon_tts_audio_seconds",
    "Seconds of synthesised audio delivered.",
    ["provider"],
)
TTS_STREAMS = Counter(
    "antiphon_tts_streams",
    "Synthesis streams by terminal state (completed, cancelled, failed).",
    ["provider", "outcome"],
)
TTS_ERRORS = Counter(
    "antiphon_tts_errors",
    "TTS errors by kind (the error's class name).",
    ["provider", "kind"],
)
TTS_DROPPED_MESSAGES = Counter(
    "antiphon_tts_dropped_messages",
    "Server messages dropped as stale or invalid (audio after done, after a clear, ...).",
    ["provider", "reason"],
)

# -- realtime (speech-to-speech) sessions

_REALTIME_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
REALTIME_VOICE_TO_VOICE = Histogram(
    "antiphon_realtime_voice_to_voice_seconds",
    "End of user speech (speech_stopped) to the first agent audio of the next response.",
    ["provider"],
    buckets=_REALTIME_BUCKETS,
)
REALTIME_RESPONSE_SECONDS = Histogram(
    "antiphon_realtime_response_seconds",
    "response.created to response.done.",
    ["provider"],
    buckets=_REALTIME_BUCKETS,
)
REALTIME_INTERRUPTIONS = Counter(
    "antiphon_realtime_interruptions", "Responses interrupted by the caller.", ["provider"]
)
REALTIME_TOKENS = Counter(
    "antiphon_realtime_tokens", "Tokens reported by response.done.", ["provider", "direction"]
)
REALTIME_RECONNECTS = Counter(
    "antiphon_realtime_reconnects", "Sessions moved to a new connection.", ["provider"]
)

# -- agent sessions (cascading pipeline)

AGENT_VOICE_TO_VOICE = Histogram(
    "antiphon_agent_voice_to_voice_seconds",
    "End of user speech (VAD) to the first agent audio queued for the transport.",
    buckets=_REALTIME_BUCKETS,
)
AGENT_END_OF_TURN = Histogram(
    "antiphon_agent_end_of_turn_seconds",
    "End of user speech (VAD) to the end of turn being decided (STT final).",
    buckets=_LATENCY_BUCKETS,
)
AGENT_LLM_TTFT = Histogram(
    "antiphon_agent_llm_time_to_first_token_seconds",
    "LLM request to its first token, per agent turn.",
    buckets=_LATENCY_BUCKETS,
)
AGENT_TTS_TTFA = Histogram(
    "antiphon_agent_tts_time_to_first_audio_seconds",
    "First sentence sent to TTS to its first audio, per agent turn.",
    buckets=_LATENCY_BUCKETS,
)
AGENT_TURNS = Counter(
    "antiphon_agent_turns",
    "Agent turns by outcome (completed, interrupted, error).",
    ["outcome"],
)
AGENT_INTERRUPTIONS = Counter(
    "antiphon_agent_interruptions",
    "Times the user interrupted the agent.",
)
