"""Speechmatics real-time STT (WebSocket ``/v2``) wire format, sans I/O: what goes on the wire.

:class:`RealtimeOptions` (the ``StartRecognition`` message), :func:`build_url` and
:func:`auth_headers`, the client's control messages (``ForceEndOfUtterance``,
``EndOfStream``), the server events and :func:`parse`, which turns a frame into one of
them, and the errors: :func:`close_error` (close codes) and :func:`error_for` (``Error``
messages). No state: the state machine of a recognition is
:mod:`antiphon.protocols.speechmatics_stt`, which re-exports every name here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from antiphon.errors import (
    ConfigError,
    ProviderError,
)
from antiphon.protocols.close_codes import closed_error, reported_error
from antiphon.protocols.stt_session import (
    Malformed,
    json_number,
    json_object,
)

__all__ = [
    "AUTH_HINT",
    "CLOSE_CODES",
    "DEFAULT_BASE_URL",
    "DEFAULT_SAMPLE_RATE",
    "ENCODINGS",
    "MODELS",
    "PROVIDER",
    "AudioAdded",
    "EndOfTranscript",
    "EndOfUtterance",
    "ErrorMessage",
    "RealtimeOptions",
    "RecognitionStarted",
    "ServerEvent",
    "ServerNotice",
    "TranscriptSegment",
    "Unknown",
    "Word",
    "auth_headers",
    "build_url",
    "close_error",
    "end_of_stream",
    "error_for",
    "force_end_of_utterance",
    "options_from_start",
    "parse",
]

PROVIDER = "speechmatics"
DEFAULT_BASE_URL = "wss://eu2.rt.speechmatics.com/v2"
DEFAULT_SAMPLE_RATE = 16000
#: Bytes per sample of each raw encoding we send (from int16 PCM).
ENCODINGS: dict[str, int] = {"pcm_s16le": 2, "mulaw": 1}
MODELS = ("standard", "enhanced", "melia-1")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class RealtimeOptions:
    """``StartRecognition`` (``None``: the service's default).

    ``max_delay`` (seconds, 0.7 to 4) bounds how late a word is finalized;
    ``end_of_utterance_silence`` (seconds, 0 to 2; ``None``: no ``EndOfUtterance``) is
    the silence that ends an utterance; ``additional_vocab`` boosts words and phrases.
    """

    sample_rate: int = DEFAULT_SAMPLE_RATE
    encoding: str = "pcm_s16le"
    language: str = "en"
    model: str | None = None
    enable_partials: bool = True
    max_delay: float | None = None
    end_of_utterance_silence: float | None = 0.5
    additional_vocab: tuple[str, ...] = ()
    domain: str | None = None

    def __post_init__(self) -> None:
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 48000:
            raise ConfigError(
                f"Speechmatics sample_rate must be an int between 8000 and 48000 Hz, got {rate!r}"
            )
        if self.encoding not in ENCODINGS:
            raise ConfigError(
                f"Speechmatics encoding {self.encoding!r} is not supported here; use one of "
                f"{', '.join(ENCODINGS)}"
            )
        if not isinstance(self.language, str) or not self.language.strip():
            raise ConfigError("language must be a language code such as 'en' (or 'multi')")
        if self.model is not None and self.model not in MODELS:
            raise ConfigError(f"Speechmatics model must be one of {', '.join(MODELS)}")
        delay = self.max_delay
        if delay is not None and (
            isinstance(delay, bool) or not isinstance(delay, int | float) or not 0.7 <= delay <= 4
        ):
            raise ConfigError(f"max_delay must be 0.7 to 4 seconds, got {delay!r}")
        eou = self.end_of_utterance_silence
        if eou is not None and (
            isinstance(eou, bool) or not isinstance(eou, int | float) or not 0 < eou <= 2
        ):
            raise ConfigError(
                f"end_of_utterance_silence must be over 0 and at most 2 seconds, got {eou!r}"
            )
        if isinstance(self.additional_vocab, str) or not all(
            isinstance(v, str) and v.strip() for v in self.additional_vocab
        ):
            raise ConfigError("additional_vocab must be a list of non-blank words or phrases")

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * ENCODINGS[self.encoding]

    def transcription_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"language": self.language}
        if self.model is not None:
            config["model"] = self.model
        if self.enable_partials:
            config["enable_partials"] = True
        if self.max_delay is not None:
            config["max_delay"] = self.max_delay
        if self.domain is not None:
            config["domain"] = self.domain
        if self.additional_vocab:
            config["additional_vocab"] = [{"content": v} for v in self.additional_vocab]
        if self.end_of_utterance_silence is not None:
            config["conversation_config"] = {
                "end_of_utterance_silence_trigger": self.end_of_utterance_silence
            }
        return config

    def start_recognition(self) -> str:
        """The ``StartRecognition`` message (the first one on every connection)."""
        return json.dumps(
            {
                "message": "StartRecognition",
                "audio_format": {
                    "type": "raw",
                    "encoding": self.encoding,
                    "sample_rate": self.sample_rate,
                },
                "transcription_config": self.transcription_config(),
            }
        )


def options_from_start(msg: Mapping[str, Any]) -> RealtimeOptions:
    """The options a ``StartRecognition`` names (what a server reads); ConfigError if one
    is invalid or missing."""
    audio = msg.get("audio_format")
    config = msg.get("transcription_config")
    if not isinstance(audio, dict) or audio.get("type") != "raw":
        raise ConfigError("audio_format must be raw audio with an encoding and a sample_rate")
    if not isinstance(config, dict) or not isinstance(config.get("language"), str):
        raise ConfigError("transcription_config.language is required")
    conversation = config.get("conversation_config") or {}
    vocab = config.get("additional_vocab") or []
    try:
        return RealtimeOptions(
            sample_rate=audio.get("sample_rate", 0),
            encoding=str(audio.get("encoding")),
            language=config["language"],
            model=config.get("model"),
            enable_partials=config.get("enable_partials") is True,
            max_delay=config.get("max_delay"),
            end_of_utterance_silence=conversation.get("end_of_utterance_silence_trigger"),
            additional_vocab=tuple(str(v.get("content")) for v in vocab if isinstance(v, dict)),
            domain=config.get("domain"),
        )
    except (TypeError, AttributeError) as exc:
        raise ConfigError(f"invalid StartRecognition: {exc}") from None


def build_url(base_url: str, *, token: str | None = None) -> str:
    """``base_url`` (``wss://host/v2`` or ``ws://127.0.0.1:PORT/v2``), with a temporary key
    in ``jwt`` when given."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(
            f"base_url must be a WebSocket URL such as {DEFAULT_BASE_URL!r} or "
            f"'ws://127.0.0.1:PORT/v2', got {base_url!r}"
        )
    path = parts.path.rstrip("/") or "/v2"
    query = f"?{urlencode({'jwt': token})}" if token else ""
    return f"{parts.scheme}://{parts.netloc}{path}{query}"


def auth_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def force_end_of_utterance(timestamp: float | None = None) -> str:
    """``ForceEndOfUtterance``; ``timestamp``: seconds of the connection's audio it marks."""
    msg: dict[str, Any] = {"message": "ForceEndOfUtterance"}
    if timestamp is not None:
        msg["timestamp"] = round(timestamp, 3)
    return json.dumps(msg)


def end_of_stream(last_seq_no: int) -> str:
    return json.dumps({"message": "EndOfStream", "last_seq_no": last_seq_no})


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Word:
    content: str
    start: float  # seconds of the connection's audio
    end: float
    confidence: float
    punctuation: bool


@dataclass(frozen=True, slots=True)
class RecognitionStarted:
    id: str


@dataclass(frozen=True, slots=True)
class AudioAdded:
    seq_no: int


@dataclass(frozen=True, slots=True)
class TranscriptSegment:
    """``AddTranscript`` (``final``) or ``AddPartialTranscript``."""

    final: bool
    transcript: str
    start: float
    end: float
    words: tuple[Word, ...]


@dataclass(frozen=True, slots=True)
class EndOfUtterance:
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class EndOfTranscript:
    pass


@dataclass(frozen=True, slots=True)
class ServerNotice:
    """``Info`` or ``Warning`` (``kind``), with its ``type`` and ``reason``."""

    kind: str
    type: str
    reason: str


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    type: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unknown:
    message: str


ServerEvent = (
    RecognitionStarted
    | AudioAdded
    | TranscriptSegment
    | EndOfUtterance
    | EndOfTranscript
    | ServerNotice
    | ErrorMessage
    | Unknown
    | Malformed
)


def _word(r: Any) -> Word | None:
    if not isinstance(r, dict) or r.get("type") not in ("word", "punctuation"):
        return None
    start, end = json_number(r.get("start_time")), json_number(r.get("end_time"))
    alts = r.get("alternatives")
    if start is None or end is None or start < 0 or end < start:
        return None
    if not isinstance(alts, list) or not alts or not isinstance(alts[0], dict):
        return None
    content = alts[0].get("content")
    if not isinstance(content, str):
        return None
    conf = json_number(alts[0].get("confidence"))
    return Word(content, start, end, conf if conf is not None else 0.0, r["type"] != "word")


def parse(frame: str | bytes) -> ServerEvent:
    """One server frame as a typed event (never raises)."""
    msg = json_object(frame)
    if isinstance(msg, Malformed):
        return msg
    raw = frame[:200] if isinstance(frame, str) else ""
    kind = msg.get("message")
    if kind in ("AddTranscript", "AddPartialTranscript"):
        meta, results = msg.get("metadata"), msg.get("results")
        if not isinstance(meta, dict) or not isinstance(results, list):
            return Malformed(f"{kind} without metadata or results", raw)
        start, end = json_number(meta.get("start_time")), json_number(meta.get("end_time"))
        text = meta.get("transcript")
        if start is None or end is None or not isinstance(text, str):
            return Malformed(f"{kind} with malformed metadata", raw)
        words = tuple(w for w in (_word(r) for r in results) if w is not None)
        if len(words) != len(results):
            return Malformed(f"{kind} with a malformed result", raw)
        return TranscriptSegment(kind == "AddTranscript", text, start, end, words)
    if kind == "AudioAdded":
        seq = msg.get("seq_no")
        return AudioAdded(seq if isinstance(seq, int) and not isinstance(seq, bool) else -1)
    if kind == "EndOfUtterance":
        meta = msg.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        return EndOfUtterance(
            json_number(meta.get("start_time")) or 0.0, json_number(meta.get("end_time")) or 0.0
        )
    if kind == "EndOfTranscript":
        return EndOfTranscript()
    if kind == "RecognitionStarted":
        return RecognitionStarted(str(msg.get("id", "")))
    if kind in ("Info", "Warning"):
        return ServerNotice(kind, str(msg.get("type", "")), str(msg.get("reason", "")))
    if kind == "Error":
        return ErrorMessage(str(msg.get("type", "unknown_error")), str(msg.get("reason", "")))
    return Unknown(str(kind))


#: Close codes of the Realtime API reference (those it says to retry after 5-10 s).
CLOSE_CODES: dict[int, str] = {
    1011: "internal_error",
    4001: "not_authorised",
    4005: "quota_exceeded",
    4013: "job_error",
}
_RETRYABLE = {None, 1000, 1001, 1006, 1011, 1012, 1013, 1014, 4005, 4013}
_AUTH_CODES = {1008, 4001}
#: ``Error`` types that are about credentials, and those that a retry may cure.
_AUTH_TYPES = {"not_authorised", "insufficient_funds", "not_allowed"}
_RETRY_TYPES = {"quota_exceeded", "job_error", "internal_error", "idle_timeout"}
_HINTS = {
    1000: "the server ended the session before every result was sent",
    1011: "the server had an internal error; retrying usually helps",
    4005: "the account's concurrent sessions are all in use; retry in a few seconds",
    4013: "the server could not run the session; retrying usually helps",
}
AUTH_HINT = "check SPEECHMATICS_API_KEY (or the api_key argument)"


def close_error(code: int | None, reason: str, *, stage: str) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``."""
    return closed_error(
        code,
        reason,
        provider=PROVIDER,
        stage=stage,
        auth_codes=_AUTH_CODES,
        auth_hint=AUTH_HINT,
        hints=_HINTS,
        retryable=_RETRYABLE,
        reasons=CLOSE_CODES,
    )


def error_for(event: ErrorMessage, *, stage: str) -> ProviderError:
    """The typed error for an ``Error`` message (before the server closes)."""
    return reported_error(
        f"the server reported {event.type}: {event.reason or 'no detail'}",
        event.type,
        provider=PROVIDER,
        stage=stage,
        auth_kinds=_AUTH_TYPES,
        auth_hint=AUTH_HINT,
        retry_kinds=_RETRY_TYPES,
        retry_hint="a new session usually works; retry in a few seconds",
        hint="check the options of StartRecognition",
    )
