"""Prometheus metrics of every stage (names ``antiphon_*``, label ``provider``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
