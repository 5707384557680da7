"""OpenAI realtime transcription wire format, sans I/O: what goes on the wire.

:class:`TranscriptionOptions` and :func:`session_update` (the session's configuration),
:func:`build_url` and :func:`auth_headers`, the client's messages (``append``, the
commit), the server events and :func:`parse`, which turns a frame into one of them, and
:func:`close_error`, the close codes as typed errors. No state: the state machine of a
recognition is :mod:`antiphon.protocols.openai_transcription`, which re-exports every
name here.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from antiphon.errors import ConfigError, ProviderError
from antiphon.protocols.close_codes import closed_error
from antiphon.protocols.stt_session import (
    Malformed,
    json_object,
)

__all__ = [
    "BYTES_PER_SECOND",
    "COMMIT",
    "COMMIT_EMPTY",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "INFORMATIONAL",
    "MAX_APPEND_SECONDS",
    "MIN_COMMIT_SECONDS",
    "PATH",
    "PROVIDER",
    "SAMPLE_RATE",
    "Committed",
    "ErrorMessage",
    "Informational",
    "ServerEvent",
    "SpeechStarted",
    "SpeechStopped",
    "TranscriptCompleted",
    "TranscriptDelta",
    "TranscriptFailed",
    "TranscriptionOptions",
    "Unknown",
    "append",
    "auth_headers",
    "build_url",
    "close_error",
    "parse",
    "session_update",
]

PROVIDER = "openai"
DEFAULT_BASE_URL = "wss://api.openai.com"
PATH = "/v1/realtime"
DEFAULT_MODEL = "gpt-4o-transcribe"
#: The GA API's only PCM rate (``audio/pcm`` with ``rate: 24000``).
SAMPLE_RATE = 24000
BYTES_PER_SECOND = SAMPLE_RATE * 2
#: The service refuses to commit less than 100 ms (``input_audio_buffer_commit_empty``).
MIN_COMMIT_SECONDS = 0.1
#: One ``input_audio_buffer.append`` carries at most this much audio.
MAX_APPEND_SECONDS = 0.5
COMMIT_EMPTY = "input_audio_buffer_commit_empty"

COMMIT = json.dumps({"type": "input_audio_buffer.commit"})

#: Server events that carry nothing a transcription stream acts on.
INFORMATIONAL = frozenset(
    {
        "session.created",
        "session.updated",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.created",
        "input_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "conversation.item.input_audio_transcription.segment",
        "rate_limits.updated",
    }
)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class TranscriptionOptions:
    """The transcription session (``session.update`` with ``type: "transcription"``).

    ``turn_detection``: a ``server_vad``/``semantic_vad`` object, or None to commit only
    on the client's flush. ``noise_reduction``: ``{"type": "near_field"|"far_field"}``
    or None. ``logprobs``: ask for log probabilities (the final's confidence).
    """

    model: str = DEFAULT_MODEL
    language: str | None = None
    prompt: str | None = None
    turn_detection: Mapping[str, Any] | None = field(default_factory=lambda: {"type": "server_vad"})
    noise_reduction: Mapping[str, Any] | None = None
    logprobs: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("model must name a transcription model, e.g. 'gpt-4o-transcribe'")
        td = self.turn_detection
        if td is not None and (
            not isinstance(td, Mapping) or td.get("type") not in ("server_vad", "semantic_vad")
        ):
            raise ConfigError(
                "turn_detection must be None or an object with type 'server_vad' or 'semantic_vad'"
            )
        nr = self.noise_reduction
        if nr is not None and (
            not isinstance(nr, Mapping) or nr.get("type") not in ("near_field", "far_field")
        ):
            raise ConfigError("noise_reduction must be None or {'type': 'near_field'|'far_field'}")

    @property
    def vad(self) -> bool:
        return self.turn_detection is not None


def session_update(options: TranscriptionOptions) -> str:
    """The ``session.update`` that configures the transcription session."""
    transcription: dict[str, Any] = {"model": options.model}
    if options.language:
        transcription["language"] = options.language
    if options.prompt:
        transcription["prompt"] = options.prompt
    audio_input: dict[str, Any] = {
        "format": {"type": "audio/pcm", "rate": SAMPLE_RATE},
        "transcription": transcription,
        "turn_detection": dict(options.turn_detection) if options.turn_detection else None,
    }
    if options.noise_reduction is not None:
        audio_input["noise_reduction"] = dict(options.noise_reduction)
    session: dict[str, Any] = {"type": "transcription", "audio": {"input": audio_input}}
    if options.logprobs:
        session["include"] = ["item.input_audio_transcription.logprobs"]
    return json.dumps({"type": "session.update", "session": session})


def append(pcm: bytes) -> str:
    """``input_audio_buffer.append`` of int16 PCM at 24 kHz."""
    return json.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode("ascii")}
    )


def build_url(base_url: str, path: str = PATH) -> str:
    """``wss://host/v1/realtime?intent=transcription`` (no model: the session names it)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(f"base_url must be ws:// or wss://host[:port], got {base_url!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}{path}?intent=transcription"


def auth_headers(api_key: str) -> dict[str, str]:
    """``Authorization: Bearer`` with an API key or an ephemeral client secret."""
    return {"Authorization": f"Bearer {api_key}"}


# --------------------------------------------------------------------------- server events


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class Committed:
    item_id: str


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class TranscriptCompleted:
    item_id: str
    transcript: str
    logprobs: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class TranscriptFailed:
    item_id: str
    message: str


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    type: str
    code: str | None
    message: str


@dataclass(frozen=True, slots=True)
class Informational:
    type: str


@dataclass(frozen=True, slots=True)
class Unknown:
    type: object


ServerEvent = (
    SpeechStarted
    | SpeechStopped
    | Committed
    | TranscriptDelta
    | TranscriptCompleted
    | TranscriptFailed
    | ErrorMessage
    | Informational
    | Unknown
    | Malformed
)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _logprobs(value: object) -> tuple[float, ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for entry in value:
        lp = entry.get("logprob") if isinstance(entry, dict) else None
        if isinstance(lp, int | float) and not isinstance(lp, bool):
            out.append(float(lp))
    return tuple(out)


def parse(frame: str | bytes) -> ServerEvent:
    """One server frame as a typed event (never raises)."""
    msg = json_object(frame)
    if isinstance(msg, Malformed):
        return msg
    raw = frame[:200] if isinstance(frame, str) else ""
    kind = msg.get("type")
    item = _str(msg.get("item_id"))
    if kind in INFORMATIONAL:
        return Informational(str(kind))
    if kind == "error":
        err = msg.get("error")
        if not isinstance(err, dict):
            return Malformed("an error without its error object", raw)
        return ErrorMessage(
            _str(err.get("type")) or "error",
            _str(err.get("code")),
            _str(err.get("message")) or "no message",
        )
    if (
        item is None
        and isinstance(kind, str)
        and kind.startswith(("input_audio_buffer.", "conversation.item.input_audio_transcription."))
    ):
        return Malformed(f"{kind} without item_id", raw)
    if item is None:
        return Unknown(kind)
    if kind == "input_audio_buffer.speech_started":
        ms = _int(msg.get("audio_start_ms"))
        return SpeechStarted(item, ms) if ms is not None else Malformed("no audio_start_ms")
    if kind == "input_audio_buffer.speech_stopped":
        ms = _int(msg.get("audio_end_ms"))
        return SpeechStopped(item, ms) if ms is not None else Malformed("no audio_end_ms")
    if kind == "input_audio_buffer.committed":
        return Committed(item)
    if kind == "conversation.item.input_audio_transcription.delta":
        return TranscriptDelta(item, _str(msg.get("delta")) or "")
    if kind == "conversation.item.input_audio_transcription.completed":
        text = _str(msg.get("transcript"))
        if text is None:
            return Malformed("a completed transcription without transcript", raw)
        return TranscriptCompleted(item, text, _logprobs(msg.get("logprobs")))
    if kind == "conversation.item.input_audio_transcription.failed":
        err = msg.get("error")
        detail = _str(err.get("message")) if isinstance(err, dict) else None
        return TranscriptFailed(item, detail or "no detail")
    return Unknown(kind)


def close_error(code: int | None, reason: str, *, stage: str) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``.

    ``retryable`` where a new connection may help (drops, going away, internal errors,
    the session's maximum duration); 1008 (policy: credentials) is an :class:`AuthError`.
    """
    return closed_error(
        code,
        reason,
        provider=PROVIDER,
        stage=stage,
        auth_codes=(1008,),
        auth_hint="check OPENAI_API_KEY (or the api_key argument)",
    )
