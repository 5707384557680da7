"""The ElevenLabs multi-context TTS service as the fake plays it: checks and answers, no I/O.

Pure functions and constants, cut from :mod:`antiphon.testing.elevenlabs` (which
re-exports the public ones) so that the fake's server and connection read apart from
what it checks and says: :data:`PATH` and :func:`check_query` validate the upgrade
request like the service; :data:`MAX_CONTEXTS_MESSAGE`, :data:`VOICE_SETTINGS_MESSAGE`
and :func:`inactivity_message` are the service's own words; :func:`synthesize` is the
exact audio of a flush (:func:`~antiphon.testing.synth.tone_for_text` of
:func:`normalize_text`, in the wire encoding) and :func:`char_times` /
:func:`alignment` its character timings, chunk-relative as the service sends them.
"""

from __future__ import annotations

import re
from typing import Any

from antiphon.audio.codecs import alaw_encode, ulaw_encode
from antiphon.errors import ConfigError
from antiphon.protocols import elevenlabs_tts as el
from antiphon.testing.synth import SECONDS_PER_CHAR, tone_for_text

__all__ = [
    "CHUNK_SECONDS",
    "DEFAULT_API_KEY",
    "MAX_CONTEXTS_MESSAGE",
    "PATH",
    "VOICE_SETTINGS_MESSAGE",
    "alignment",
    "char_times",
    "check_query",
    "inactivity_message",
    "normalize_text",
    "synthesize",
]

DEFAULT_API_KEY = "test-key"
CHUNK_SECONDS = 0.02
PATH = re.compile(r"^/v1/text-to-speech/([^/]+)/multi-stream-input/?$")
_BOOL_PARAMS = ("auto_mode", "enable_ssml_parsing", "enable_logging", "sync_alignment")
_KNOWN_PARAMS = {
    "model_id",
    "output_format",
    "language_code",
    "inactivity_timeout",
    "apply_text_normalization",
    "apply_language_text_normalization",
    "seed",
    "authorization",
    *_BOOL_PARAMS,
}
MAX_CONTEXTS_MESSAGE = (
    "Maximum simultaneous contexts per WebSocket connection exceeded (5). "
    "Please close an existing context before opening a new one."
)
VOICE_SETTINGS_MESSAGE = (
    "voice_settings field must be provided in the first message and then either be not "
    "provided or not change."
)


def inactivity_message(seconds: float) -> str:
    """The reason of the service's idle close after ``seconds`` without text."""
    return (
        f"Have not received a new text input within the timeout of {seconds:g} seconds. "
        "Streaming input terminated."
    )


def normalize_text(text: str) -> str:
    """The text the fake speaks for a flush: whitespace collapsed, ends stripped."""
    return " ".join(text.split())


def synthesize(text: str, encoding: str, sample_rate: int) -> bytes:
    """The exact audio the fake sends for ``text`` flushed on its own."""
    pcm = tone_for_text(normalize_text(text), sample_rate)
    if encoding == "mulaw":
        return bytes(ulaw_encode(pcm))
    if encoding == "alaw":
        return bytes(alaw_encode(pcm))
    return pcm


def char_times(text: str) -> list[tuple[str, float, float]]:
    """Each character of ``text`` with its (start, end) in the fake's audio for it, and
    the space the client sent after it (the text is sent in words that end with one),
    timed at the end of the audio."""
    step = SECONDS_PER_CHAR
    times = [(c, i * step, (i + 1) * step) for i, c in enumerate(text)]
    return [*times, (" ", len(text) * step, len(text) * step)]


def alignment(
    timings: list[tuple[str, float, float]], start: float, end: float
) -> dict[str, Any] | None:
    """The ``alignment`` of the chunk ``[start, end)`` (seconds into the flush's audio;
    ``end`` is infinite for the last chunk): the characters that begin in it, in
    milliseconds from the chunk's start, as the service sends them (chunk-relative, so a
    client adds up the chunks)."""
    chars = [(c, a, b) for c, a, b in timings if start <= a < end]
    if not chars:
        return None
    return {
        "chars": [c for c, _, _ in chars],
        "charStartTimesMs": [round((a - start) * 1000) for _, a, _ in chars],
        "charDurationsMs": [round((b - a) * 1000) for _, a, b in chars],
    }


def check_query(query: dict[str, str]) -> tuple[str, int]:
    """Validate the query like the service would; returns the wire encoding and rate."""
    unknown = sorted(set(query) - _KNOWN_PARAMS)
    if unknown:
        raise ConfigError(f"unknown query parameter(s) {', '.join(unknown)}")
    model = query.get("model_id", el.DEFAULT_MODEL)
    if model in el.UNSUPPORTED_MODELS:
        raise ConfigError(el.UNSUPPORTED_MODELS[model])
    encoding, rate = el.parse_output_format(query.get("output_format", "pcm_24000"))
    if rate not in el.ENCODINGS[encoding]:
        raise ConfigError(f"unsupported output_format {query['output_format']!r}")
    for name in _BOOL_PARAMS:
        if name in query and query[name] not in ("true", "false"):
            raise ConfigError(f"{name} must be true or false")
    if "inactivity_timeout" in query:
        value = query["inactivity_timeout"]
        if not value.isdigit() or not 1 <= int(value) <= el.MAX_INACTIVITY_TIMEOUT:
            raise ConfigError("inactivity_timeout must be an integer from 1 to 180")
    norm = query.get("apply_text_normalization")
    if norm is not None and norm not in el.TEXT_NORMALIZATION:
        raise ConfigError("apply_text_normalization must be auto, on or off")
    if "seed" in query and not query["seed"].isdigit():
        raise ConfigError("seed must be an integer")
    return encoding, rate
