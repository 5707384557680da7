"""ElevenLabs Scribe realtime STT wire format, sans I/O: what goes on the wire.

:class:`ScribeOptions` (the query), :func:`build_url` and :func:`auth_headers`, the
client's messages (:func:`audio_chunk`, :func:`commit`), the server events and
:func:`parse`, which turns a frame into one of them, and the errors: :func:`close_error`
(close codes) and :func:`error_for` (the error message types, :data:`ERROR_TYPES`). No
state: the state machine of a recognition is :mod:`antiphon.protocols.elevenlabs_stt`,
which re-exports every name here.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from antiphon.errors import (
    ConfigError,
    ProviderError,
)
from antiphon.protocols.close_codes import closed_error, reported_error
from antiphon.protocols.stt_session import (
    Malformed,
    json_number,
    json_object,
    ws_url,
)

__all__ = [
    "AUDIO_FORMATS",
    "AUTH_HINT",
    "COMMIT_STRATEGIES",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "ERROR_TYPES",
    "PATH",
    "PROVIDER",
    "Committed",
    "ErrorMessage",
    "Partial",
    "ScribeOptions",
    "ServerEvent",
    "SessionStarted",
    "Unknown",
    "Word",
    "audio_chunk",
    "auth_headers",
    "build_url",
    "close_error",
    "commit",
    "error_for",
    "options_from_query",
    "parse",
]

PROVIDER = "elevenlabs"
DEFAULT_BASE_URL = "wss://api.elevenlabs.io"
PATH = "/v1/speech-to-text/realtime"
DEFAULT_MODEL = "scribe_v2_realtime"
#: ``audio_format`` → (sample rate, bytes per sample on the wire).
AUDIO_FORMATS: dict[str, tuple[int, int]] = {
    "pcm_8000": (8000, 2),
    "pcm_16000": (16000, 2),
    "pcm_22050": (22050, 2),
    "pcm_24000": (24000, 2),
    "pcm_44100": (44100, 2),
    "pcm_48000": (48000, 2),
    "ulaw_8000": (8000, 1),
}
COMMIT_STRATEGIES = ("manual", "vad")
#: Error ``message_type``s (the SDK's ``ReceiveTranscription`` union) and what they mean.
ERROR_TYPES = (
    "error",
    "auth_error",
    "quota_exceeded",
    "commit_throttled",
    "transcriber_error",
    "unaccepted_terms",
    "rate_limited",
    "input_error",
    "invalid_request",
    "queue_overflow",
    "resource_exhausted",
    "session_time_limit_exceeded",
    "chunk_size_exceeded",
    "insufficient_audio_activity",
)
_AUTH_TYPES = {"auth_error", "quota_exceeded", "unaccepted_terms"}
_RETRY_TYPES = {"transcriber_error", "resource_exhausted", "session_time_limit_exceeded"}
AUTH_HINT = "check ELEVENLABS_API_KEY (or the api_key argument)"


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class ScribeOptions:
    """Query parameters of a realtime connection (``None``: the service's default)."""

    model_id: str = DEFAULT_MODEL
    audio_format: str = "pcm_16000"
    commit_strategy: str = "manual"
    language_code: str | None = None
    keyterms: tuple[str, ...] = ()
    vad_silence_threshold_secs: float | None = None
    vad_threshold: float | None = None
    min_speech_duration_ms: int | None = None
    min_silence_duration_ms: int | None = None
    include_timestamps: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not self.model_id.strip():
            raise ConfigError(f"model_id must be a model name, e.g. {DEFAULT_MODEL!r}")
        if self.audio_format not in AUDIO_FORMATS:
            raise ConfigError(
                f"audio_format {self.audio_format!r} is not one of {', '.join(AUDIO_FORMATS)}"
            )
        if self.commit_strategy not in COMMIT_STRATEGIES:
            raise ConfigError("commit_strategy must be 'manual' or 'vad'")
        if isinstance(self.keyterms, str) or not all(
            isinstance(k, str) and k.strip() and len(k) <= 20 for k in self.keyterms
        ):
            raise ConfigError("keyterms must be non-blank words of at most 20 characters")
        if len(self.keyterms) > 50:
            raise ConfigError("ElevenLabs takes at most 50 keyterms")
        checks: list[tuple[str, float, float]] = [
            ("vad_silence_threshold_secs", 0.3, 3.0),
            ("vad_threshold", 0.1, 0.9),
            ("min_speech_duration_ms", 50, 2000),
            ("min_silence_duration_ms", 50, 2000),
        ]
        for name, low, high in checks:
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not low <= value <= high
            ):
                raise ConfigError(f"{name} must be {low} to {high}, got {value!r}")

    @property
    def sample_rate(self) -> int:
        return AUDIO_FORMATS[self.audio_format][0]

    @property
    def width(self) -> int:
        return AUDIO_FORMATS[self.audio_format][1]

    def query(self) -> list[tuple[str, str]]:
        q = [
            ("model_id", self.model_id),
            ("audio_format", self.audio_format),
            ("commit_strategy", self.commit_strategy),
        ]
        for name in (
            "vad_silence_threshold_secs",
            "vad_threshold",
            "min_speech_duration_ms",
            "min_silence_duration_ms",
            "language_code",
        ):
            value = getattr(self, name)
            if value is not None:
                q.append((name, str(value)))
        q.append(("include_timestamps", "true" if self.include_timestamps else "false"))
        q.extend(("keyterms", k) for k in self.keyterms)
        return q


def options_from_query(q: Mapping[str, list[str]]) -> ScribeOptions:
    """The options a query names (what a server reads); ConfigError if one is invalid."""

    def one(name: str) -> str | None:
        values = q.get(name)
        return values[-1] if values else None

    try:
        model = one("model_id")
        if model is None:
            raise ConfigError("model_id is required")
        numbers: dict[str, Any] = {}
        for name, kind in (
            ("vad_silence_threshold_secs", float),
            ("vad_threshold", float),
            ("min_speech_duration_ms", int),
            ("min_silence_duration_ms", int),
        ):
            raw = one(name)
            if raw is not None:
                numbers[name] = kind(raw)
        return ScribeOptions(
            model_id=model,
            audio_format=one("audio_format") or "pcm_16000",
            commit_strategy=one("commit_strategy") or "manual",
            language_code=one("language_code"),
            keyterms=tuple(q.get("keyterms", [])),
            include_timestamps=one("include_timestamps") == "true",
            **numbers,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid query: {exc}") from None


def build_url(base_url: str, options: ScribeOptions, *, token: str | None = None) -> str:
    """``{base_url}/v1/speech-to-text/realtime?...``."""
    query = options.query()
    if token:
        query.append(("token", token))
    return ws_url(base_url, PATH, query, example=DEFAULT_BASE_URL)


def auth_headers(api_key: str) -> dict[str, str]:
    return {"xi-api-key": api_key}


def audio_chunk(wire: bytes, sample_rate: int) -> str:
    """``input_audio_chunk`` carrying ``wire`` (encoded audio)."""
    return json.dumps(
        {
            "message_type": "input_audio_chunk",
            "audio_base_64": base64.b64encode(wire).decode("ascii"),
            "commit": False,
            "sample_rate": sample_rate,
        }
    )


def commit(sample_rate: int) -> str:
    """An empty ``input_audio_chunk`` with ``commit``: end the segment now."""
    return json.dumps(
        {
            "message_type": "input_audio_chunk",
            "audio_base_64": "",
            "commit": True,
            "sample_rate": sample_rate,
        }
    )


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start: float  # seconds of the connection's audio
    end: float
    logprob: float | None


@dataclass(frozen=True, slots=True)
class SessionStarted:
    session_id: str


@dataclass(frozen=True, slots=True)
class Partial:
    text: str


@dataclass(frozen=True, slots=True)
class Committed:
    """A committed segment: ``timed`` for ``committed_transcript_with_timestamps``."""

    text: str
    timed: bool
    words: tuple[Word, ...] = ()
    language_code: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    type: str
    error: str


@dataclass(frozen=True, slots=True)
class Unknown:
    type: str


ServerEvent = SessionStarted | Partial | Committed | ErrorMessage | Unknown | Malformed


def parse(frame: str | bytes) -> ServerEvent:
    """One server frame as a typed event (never raises)."""
    msg = json_object(frame)
    if isinstance(msg, Malformed):
        return msg
    raw = frame[:200] if isinstance(frame, str) else ""
    kind = msg.get("message_type")
    text = msg.get("text")
    if kind in ("partial_transcript", "committed_transcript"):
        if not isinstance(text, str):
            return Malformed(f"a {kind} without text", raw)
        return Partial(text) if kind == "partial_transcript" else Committed(text, False)
    if kind == "committed_transcript_with_timestamps":
        words_raw = msg.get("words") or []
        if not isinstance(text, str) or not isinstance(words_raw, list):
            return Malformed("a timed committed transcript without text or words", raw)
        words: list[Word] = []
        for w in words_raw:
            if not isinstance(w, dict):
                return Malformed("a malformed word", raw)
            if w.get("type", "word") != "word":
                continue  # spacing, audio events
            start, end = json_number(w.get("start")), json_number(w.get("end"))
            if not isinstance(w.get("text"), str) or start is None or end is None or end < start:
                return Malformed("a malformed word", raw)
            words.append(Word(w["text"], start, end, json_number(w.get("logprob"))))
        lang = msg.get("language_code")
        return Committed(text, True, tuple(words), lang if isinstance(lang, str) else None)
    if kind == "session_started":
        return SessionStarted(str(msg.get("session_id", "")))
    if kind in ERROR_TYPES or kind == "commit_throttled":
        return ErrorMessage(str(kind), str(msg.get("error") or "no detail"))
    return Unknown(str(kind))


def close_error(code: int | None, reason: str, *, stage: str) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``."""
    return closed_error(
        code,
        reason,
        provider=PROVIDER,
        stage=stage,
        auth_codes=(1008, 4001, 4003),
        auth_hint=AUTH_HINT,
    )


def error_for(event: ErrorMessage, *, stage: str) -> ProviderError:
    """The typed error for an error message."""
    return reported_error(
        f"the server reported {event.type}: {event.error}",
        event.type,
        provider=PROVIDER,
        stage=stage,
        auth_kinds=_AUTH_TYPES,
        auth_hint=AUTH_HINT,
        retry_kinds=_RETRY_TYPES,
        retry_hint="a new session usually works",
        hint="see ElevenLabs' error message above",
    )
