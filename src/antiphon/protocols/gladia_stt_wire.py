"""Gladia live STT (v2) wire format, sans I/O: what goes on the wire.

:class:`LiveOptions` (the configuration of ``POST /v2/live``), :func:`init_url`,
:func:`init_headers` and :func:`parse_init_response` (the session's WebSocket URL), the
client's ``stop_recording``, the server events and :func:`parse`, which turns a frame into
one of them, and :func:`close_error`, the close codes as typed errors. No state: the state
machine of a recognition is :mod:`antiphon.protocols.gladia_stt`, which re-exports every
name here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from antiphon.errors import ConfigError, ProviderError
from antiphon.protocols.close_codes import closed_error
from antiphon.protocols.stt_session import (
    Malformed,
    json_number,
    json_object,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "ENCODINGS",
    "END_EVENTS",
    "FLUSH_MARGIN",
    "INIT_PATH",
    "PROVIDER",
    "SAMPLE_RATES",
    "STOP_RECORDING",
    "Ack",
    "ErrorMessage",
    "InitResponse",
    "Lifecycle",
    "LiveOptions",
    "ServerEvent",
    "SpeechEvent",
    "TranscriptMessage",
    "Unknown",
    "Word",
    "close_error",
    "init_headers",
    "init_url",
    "options_from_init",
    "parse",
    "parse_init_response",
]

PROVIDER = "gladia"
DEFAULT_BASE_URL = "https://api.gladia.io"
INIT_PATH = "/v2/live"
DEFAULT_MODEL = "solaria-1"
SAMPLE_RATES = (8000, 16000, 32000, 44100, 48000)
#: Bytes per sample of each encoding we send (from int16 PCM).
ENCODINGS: dict[str, int] = {"wav/pcm": 2, "wav/ulaw": 1}
#: Silence sent past ``endpointing`` at a flush, so the server surely ends the utterance.
FLUSH_MARGIN = 0.05
STOP_RECORDING = json.dumps({"type": "stop_recording"})
#: The lifecycle events after which nothing more is owed.
END_EVENTS = ("end_recording", "end_session")
_LIFECYCLE = ("start_session", "start_recording", *END_EVENTS)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """The session configuration sent in ``POST /v2/live``.

    ``endpointing``: seconds of silence that end an utterance (0.01 to 10);
    ``maximum_duration_without_endpointing``: the longest utterance (5 to 60 s);
    ``languages``: ISO 639-1 codes (none: detected); ``keyterms``: words and phrases to
    boost (``custom_vocabulary``); ``partials``: interim transcripts.
    """

    sample_rate: int = 16000
    encoding: str = "wav/pcm"
    model: str = DEFAULT_MODEL
    endpointing: float = 0.3
    maximum_duration_without_endpointing: float = 30.0
    languages: tuple[str, ...] = ("en",)
    keyterms: tuple[str, ...] = ()
    partials: bool = True

    def __post_init__(self) -> None:
        if self.sample_rate not in SAMPLE_RATES:
            raise ConfigError(
                f"Gladia sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))} Hz, "
                f"got {self.sample_rate!r}"
            )
        if self.encoding not in ENCODINGS:
            raise ConfigError(
                f"Gladia encoding {self.encoding!r} is not supported here; use one of "
                f"{', '.join(ENCODINGS)}"
            )
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"Gladia model must be a model name, e.g. {DEFAULT_MODEL!r}")
        e = self.endpointing
        if isinstance(e, bool) or not isinstance(e, int | float) or not 0.01 <= e <= 10:
            raise ConfigError(f"endpointing must be 0.01 to 10 seconds, got {e!r}")
        m = self.maximum_duration_without_endpointing
        if isinstance(m, bool) or not isinstance(m, int | float) or not 5 <= m <= 60:
            raise ConfigError(
                f"maximum_duration_without_endpointing must be 5 to 60 seconds, got {m!r}"
            )
        if isinstance(self.languages, str) or not all(
            isinstance(lang, str) and 2 <= len(lang.strip()) <= 3 for lang in self.languages
        ):
            raise ConfigError("languages must be a list of ISO 639-1 codes such as 'en'")
        if isinstance(self.keyterms, str) or not all(
            isinstance(k, str) and k.strip() for k in self.keyterms
        ):
            raise ConfigError("keyterms must be a list of non-blank words or phrases")

    @property
    def width(self) -> int:
        return ENCODINGS[self.encoding]

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.width

    def init_request(self) -> dict[str, Any]:
        """The JSON body of ``POST /v2/live``."""
        body: dict[str, Any] = {
            "encoding": self.encoding,
            "bit_depth": 8 * self.width,
            "sample_rate": self.sample_rate,
            "channels": 1,
            "model": self.model,
            "endpointing": self.endpointing,
            "maximum_duration_without_endpointing": self.maximum_duration_without_endpointing,
            "language_config": {"languages": list(self.languages), "code_switching": False},
            "messages_config": {
                "receive_partial_transcripts": self.partials,
                "receive_final_transcripts": True,
                "receive_speech_events": True,
                "receive_pre_processing_events": False,
                "receive_realtime_processing_events": False,
                "receive_post_processing_events": False,
                "receive_acknowledgments": False,
                "receive_errors": True,
                "receive_lifecycle_events": True,
            },
        }
        if self.keyterms:
            body["realtime_processing"] = {
                "custom_vocabulary": True,
                "custom_vocabulary_config": {"vocabulary": list(self.keyterms)},
            }
        return body


def options_from_init(body: Mapping[str, Any]) -> LiveOptions:
    """The options a ``POST /v2/live`` body names (what a server reads); ConfigError if
    one is invalid."""
    try:
        width = ENCODINGS.get(str(body.get("encoding", "wav/pcm")))
        if width is not None and body.get("bit_depth", 16) != 8 * width:
            raise ConfigError(f"bit_depth {body.get('bit_depth')!r} does not fit the encoding")
        if body.get("channels", 1) != 1:
            raise ConfigError("one channel only")
        messages = body.get("messages_config") or {}
        vocabulary = (
            (body.get("realtime_processing") or {}).get("custom_vocabulary_config") or {}
        ).get("vocabulary", [])
        terms = tuple(v if isinstance(v, str) else v["value"] for v in vocabulary)
        return LiveOptions(
            sample_rate=body.get("sample_rate", 16000),
            encoding=body.get("encoding", "wav/pcm"),
            model=body.get("model", DEFAULT_MODEL),
            endpointing=body.get("endpointing", 0.05),
            maximum_duration_without_endpointing=body.get(
                "maximum_duration_without_endpointing", 5
            ),
            languages=tuple((body.get("language_config") or {}).get("languages", [])),
            keyterms=terms,
            partials=messages.get("receive_partial_transcripts", False) is True,
        )
    except (AttributeError, KeyError, TypeError) as exc:
        raise ConfigError(f"invalid configuration: {exc!r}") from None


def init_url(base_url: str) -> str:
    """``{base_url}/v2/live`` (``base_url``: ``https://api.gladia.io`` or a local fake)."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"base_url must be an HTTP URL such as {DEFAULT_BASE_URL!r} or "
            f"'http://127.0.0.1:PORT', got {base_url!r}"
        )
    path = parts.path.rstrip("/")
    if not path.endswith(INIT_PATH):
        path += INIT_PATH
    return f"{parts.scheme}://{parts.netloc}{path}"


def init_headers(api_key: str) -> dict[str, str]:
    return {"x-gladia-key": api_key, "Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class InitResponse:
    id: str
    url: str


def parse_init_response(body: bytes | str) -> InitResponse:
    """The session id and WebSocket URL of a ``POST /v2/live`` answer."""
    try:
        msg = json.loads(body)
    except ValueError:
        msg = None
    url = msg.get("url") if isinstance(msg, dict) else None
    if not isinstance(url, str) or urlsplit(url).scheme not in ("ws", "wss"):
        raise ProviderError(
            "the session answer holds no WebSocket URL",
            provider=PROVIDER,
            stage="connect",
            hint="POST /v2/live answered without a ws(s):// url; check base_url",
        )
    assert isinstance(msg, dict)
    return InitResponse(str(msg.get("id", "")), url)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float  # seconds of the session's audio
    end: float
    confidence: float


@dataclass(frozen=True, slots=True)
class TranscriptMessage:
    id: str
    is_final: bool
    text: str
    start: float
    end: float
    confidence: float
    words: tuple[Word, ...]


@dataclass(frozen=True, slots=True)
class SpeechEvent:
    type: str  # speech_start or speech_end
    time: float


@dataclass(frozen=True, slots=True)
class Lifecycle:
    type: str  # start_session, start_recording, end_recording, end_session


@dataclass(frozen=True, slots=True)
class Ack:
    type: str  # audio_chunk or stop_recording
    acknowledged: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    error: str


@dataclass(frozen=True, slots=True)
class Unknown:
    type: str


ServerEvent = TranscriptMessage | SpeechEvent | Lifecycle | Ack | ErrorMessage | Unknown | Malformed


def _word(w: Any) -> Word | None:
    if not isinstance(w, dict) or not isinstance(w.get("word"), str):
        return None
    start, end = json_number(w.get("start")), json_number(w.get("end"))
    if start is None or end is None or start < 0 or end < start:
        return None
    return Word(w["word"], start, end, json_number(w.get("confidence")) or 0.0)


def _error_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("message") or value)
    return str(value or "no detail")


def parse(frame: str | bytes) -> ServerEvent:
    """One server frame as a typed event (never raises)."""
    msg = json_object(frame)
    if isinstance(msg, Malformed):
        return msg
    raw = frame[:200] if isinstance(frame, str) else ""
    kind = msg.get("type")
    data = msg.get("data")
    if kind == "transcript":
        utt = data.get("utterance") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(utt, dict):
            return Malformed("a transcript without its utterance", raw)
        words_raw = utt.get("words", [])
        start, end = json_number(utt.get("start")), json_number(utt.get("end"))
        text = utt.get("text")
        if not isinstance(words_raw, list) or start is None or end is None or end < start:
            return Malformed("a transcript with bad times or words", raw)
        if not isinstance(text, str):
            return Malformed("a transcript without text", raw)
        words = tuple(w for w in (_word(x) for x in words_raw) if w is not None)
        if len(words) != len(words_raw):
            return Malformed("a transcript with a malformed word", raw)
        return TranscriptMessage(
            str(data.get("id", "")),
            data.get("is_final") is True,
            text,
            start,
            end,
            json_number(utt.get("confidence")) or 0.0,
            words,
        )
    if kind in ("speech_start", "speech_end"):
        time = json_number(data.get("time")) if isinstance(data, dict) else None
        return SpeechEvent(str(kind), time or 0.0)
    if kind in _LIFECYCLE:
        return Lifecycle(str(kind))
    if kind in ("audio_chunk", "stop_recording"):
        ok = msg.get("acknowledged") is True
        return Ack(str(kind), ok, "" if ok else _error_text(msg.get("error")))
    if kind == "error" or (kind is None and "error" in msg):
        return ErrorMessage(_error_text(msg.get("error") or msg.get("message")))
    return Unknown(str(kind))


_HINTS = {
    1000: "the server ended the session before every result was sent",
    1011: "the server had an internal error; retrying usually helps",
    4029: "too many concurrent sessions for this account (a free account has one)",
}


def close_error(code: int | None, reason: str, *, stage: str) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``."""
    return closed_error(
        code,
        reason,
        provider=PROVIDER,
        stage=stage,
        auth_codes=(1008, 4001, 4003, 4401, 4403),
        auth_hint="the session token was refused; check GLADIA_API_KEY (or api_key)",
        hints=_HINTS,
    )
