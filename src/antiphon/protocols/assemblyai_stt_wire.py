"""AssemblyAI Universal-Streaming STT (v3) wire format, sans I/O: what goes on the wire.

:class:`StreamingOptions` (the query), :func:`build_url` and :func:`auth_headers`, the
client's control messages (``ForceEndpoint``, ``Terminate``, ``KeepAlive``,
:func:`update_configuration`), the server events and :func:`parse`, which turns a frame
into one of them, and :func:`close_error`, the close codes (:data:`CLOSE_CODES`) as typed
errors. No state: the state machine of a recognition is
:mod:`antiphon.protocols.assemblyai_stt`, which re-exports every name here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from antiphon.errors import ConfigError, ProviderError
from antiphon.protocols.close_codes import closed_error
from antiphon.protocols.stt_session import (
    Malformed,
    json_number,
    json_object,
    ws_url,
)

__all__ = [
    "CLOSE_CODES",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_SAMPLE_RATE",
    "ENCODINGS",
    "FORCE_ENDPOINT",
    "KEEPALIVE",
    "MAX_CHUNK_SECONDS",
    "MIN_CHUNK_SECONDS",
    "PATH",
    "PROVIDER",
    "TERMINATE",
    "Begin",
    "ErrorMessage",
    "ServerEvent",
    "SpeechStarted",
    "StreamingOptions",
    "Termination",
    "Turn",
    "Unknown",
    "Word",
    "auth_headers",
    "build_url",
    "close_error",
    "options_from_query",
    "parse",
    "update_configuration",
]

PROVIDER = "assemblyai"
DEFAULT_BASE_URL = "wss://streaming.assemblyai.com"
PATH = "/v3/ws"
DEFAULT_MODEL = "universal-streaming-english"
DEFAULT_SAMPLE_RATE = 16000
#: Bytes per sample of each encoding we send (from int16 PCM).
ENCODINGS: dict[str, int] = {"pcm_s16le": 2, "pcm_mulaw": 1}
#: The service's bounds on one audio message (we send :data:`SEND_CHUNK_SECONDS`).
MIN_CHUNK_SECONDS = 0.05
MAX_CHUNK_SECONDS = 1.0

FORCE_ENDPOINT = json.dumps({"type": "ForceEndpoint"})
TERMINATE = json.dumps({"type": "Terminate"})
KEEPALIVE = json.dumps({"type": "KeepAlive"})


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class StreamingOptions:
    """Query parameters of a ``/v3/ws`` connection (``None``: the service's default).

    ``min_turn_silence`` (silence that ends a turn when the model is confident; the
    older name is ``min_end_of_turn_silence_when_confident``) and ``max_turn_silence`` are
    milliseconds; ``end_of_turn_confidence_threshold`` is 0 to 1; ``keyterms`` boost
    words and phrases (``keyterms_prompt``).
    """

    sample_rate: int = DEFAULT_SAMPLE_RATE
    encoding: str = "pcm_s16le"
    speech_model: str = DEFAULT_MODEL
    format_turns: bool = True
    keyterms: tuple[str, ...] = ()
    end_of_turn_confidence_threshold: float | None = None
    min_turn_silence: int | None = None
    max_turn_silence: int | None = None
    inactivity_timeout: int | None = None

    def __post_init__(self) -> None:
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 48000:
            raise ConfigError(
                f"AssemblyAI sample_rate must be an int between 8000 and 48000 Hz, got {rate!r}"
            )
        if self.encoding not in ENCODINGS:
            raise ConfigError(
                f"AssemblyAI encoding {self.encoding!r} is not supported here; use one of "
                f"{', '.join(ENCODINGS)}"
            )
        if not isinstance(self.speech_model, str) or not self.speech_model.strip():
            raise ConfigError(
                f"AssemblyAI speech_model must be a model name, e.g. {DEFAULT_MODEL!r}"
            )
        if isinstance(self.keyterms, str) or not all(
            isinstance(k, str) and k.strip() and len(k) <= 50 for k in self.keyterms
        ):
            raise ConfigError(
                "keyterms must be a list of non-blank phrases of at most 50 characters"
            )
        if len(self.keyterms) > 100:
            raise ConfigError("AssemblyAI takes at most 100 keyterms")
        threshold = self.end_of_turn_confidence_threshold
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"end_of_turn_confidence_threshold must be 0 to 1, got {threshold!r}")
        for name in ("min_turn_silence", "max_turn_silence"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ConfigError(f"{name} is milliseconds (an int >= 0), got {value!r}")
        t = self.inactivity_timeout
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or not 5 <= t <= 3600):
            raise ConfigError(f"inactivity_timeout must be 5 to 3600 seconds, got {t!r}")

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * ENCODINGS[self.encoding]

    def query(self) -> dict[str, str]:
        q: dict[str, str] = {
            "sample_rate": str(self.sample_rate),
            "encoding": self.encoding,
            "speech_model": self.speech_model,
            "format_turns": "true" if self.format_turns else "false",
        }
        if self.keyterms:
            q["keyterms_prompt"] = json.dumps(list(self.keyterms))
        for name in (
            "end_of_turn_confidence_threshold",
            "min_turn_silence",
            "max_turn_silence",
            "inactivity_timeout",
        ):
            value = getattr(self, name)
            if value is not None:
                q[name] = str(value)
        return q


def _bool(q: Mapping[str, str], name: str, default: bool) -> bool:
    raw = q.get(name)
    if raw is None:
        return default
    if raw.lower() not in ("true", "false"):
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    return raw.lower() == "true"


def options_from_query(q: Mapping[str, str]) -> StreamingOptions:
    """The options a query names (what a server reads); ConfigError if one is invalid."""
    try:
        keyterms = tuple(json.loads(q["keyterms_prompt"])) if "keyterms_prompt" in q else ()
        threshold = q.get("end_of_turn_confidence_threshold")
        q = dict(q)
        if "min_end_of_turn_silence_when_confident" in q:  # the older name
            q.setdefault("min_turn_silence", q.pop("min_end_of_turn_silence_when_confident"))
        ints = {
            name: int(q[name])
            for name in (
                "min_turn_silence",
                "max_turn_silence",
                "inactivity_timeout",
            )
            if name in q
        }
        if "sample_rate" not in q:
            raise ConfigError("sample_rate is required for PCM audio")
        return StreamingOptions(
            sample_rate=int(q["sample_rate"]),
            encoding=q.get("encoding", "pcm_s16le"),
            speech_model=q.get("speech_model", DEFAULT_MODEL),
            format_turns=_bool(q, "format_turns", False),
            keyterms=keyterms,
            end_of_turn_confidence_threshold=float(threshold) if threshold is not None else None,
            **ints,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid query: {exc}") from None


def build_url(base_url: str, options: StreamingOptions, *, token: str | None = None) -> str:
    """``{base_url}/v3/ws?...`` (``base_url``: ``wss://host`` or ``ws://127.0.0.1:PORT``)."""
    query = options.query()
    if token:
        query["token"] = token
    return ws_url(base_url, PATH, query, example=DEFAULT_BASE_URL)


def auth_headers(api_key: str) -> dict[str, str]:
    """The API key goes as it is in ``Authorization`` (no scheme)."""
    return {"Authorization": api_key}


def update_configuration(**fields: Any) -> str:
    """``UpdateConfiguration`` with the given session parameters (``None`` ones left out);
    ``keyterms`` is sent as ``keyterms_prompt``."""
    msg: dict[str, Any] = {"type": "UpdateConfiguration"}
    allowed = {
        "keyterms",
        "end_of_turn_confidence_threshold",
        "min_turn_silence",
        "max_turn_silence",
        "format_turns",
    }
    for name, value in fields.items():
        if name not in allowed:
            raise ConfigError(
                f"UpdateConfiguration cannot change {name!r}; it takes {sorted(allowed)}"
            )
        if value is None:
            continue
        msg["keyterms_prompt" if name == "keyterms" else name] = (
            list(value) if name == "keyterms" else value
        )
    return json.dumps(msg)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start: int  # ms of the connection's audio
    end: int
    confidence: float
    word_is_final: bool


@dataclass(frozen=True, slots=True)
class Begin:
    id: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class Turn:
    turn_order: int
    transcript: str
    end_of_turn: bool
    turn_is_formatted: bool
    end_of_turn_confidence: float
    words: tuple[Word, ...]


@dataclass(frozen=True, slots=True)
class Termination:
    audio_duration_seconds: float | None = None
    session_duration_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    timestamp: int


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    error: str
    code: int | None = None


@dataclass(frozen=True, slots=True)
class Unknown:
    type: str


ServerEvent = Begin | Turn | Termination | SpeechStarted | ErrorMessage | Unknown | Malformed


def _word(w: Any) -> Word | None:
    if not isinstance(w, dict) or not isinstance(w.get("text"), str):
        return None
    start, end, conf = (
        json_number(w.get("start")),
        json_number(w.get("end")),
        json_number(w.get("confidence")),
    )
    if start is None or end is None or start < 0 or end < start:
        return None
    return Word(w["text"], int(start), int(end), conf or 0.0, w.get("word_is_final") is True)


def parse(frame: str | bytes) -> ServerEvent:
    """One server frame as a typed event (never raises)."""
    msg = json_object(frame)
    if isinstance(msg, Malformed):
        return msg
    raw = frame[:200] if isinstance(frame, str) else ""
    kind = msg.get("type")
    if kind == "Turn":
        words_raw = msg.get("words")
        order = msg.get("turn_order")
        if not isinstance(words_raw, list) or isinstance(order, bool) or not isinstance(order, int):
            return Malformed("a Turn without words or turn_order", raw)
        words = tuple(w for w in (_word(x) for x in words_raw) if w is not None)
        if len(words) != len(words_raw):
            return Malformed("a Turn with a malformed word", raw)
        transcript = msg.get("transcript")
        return Turn(
            order,
            transcript if isinstance(transcript, str) else "",
            msg.get("end_of_turn") is True,
            msg.get("turn_is_formatted") is True,
            json_number(msg.get("end_of_turn_confidence")) or 0.0,
            words,
        )
    if kind == "Begin":
        expires = json_number(msg.get("expires_at"))
        return Begin(str(msg.get("id", "")), int(expires or 0))
    if kind == "Termination":
        return Termination(
            json_number(msg.get("audio_duration_seconds")),
            json_number(msg.get("session_duration_seconds")),
        )
    if kind == "SpeechStarted":
        return SpeechStarted(int(json_number(msg.get("timestamp")) or 0))
    if kind == "Error" or (kind is None and "error" in msg):
        code = msg.get("error_code")
        return ErrorMessage(
            str(msg.get("error") or "no detail"), code if isinstance(code, int) else None
        )
    return Unknown(str(kind))


#: Close codes AssemblyAI documents (the SDK's table), and what they mean for a retry.
CLOSE_CODES: dict[int, str] = {
    1008: "Unauthorized connection",
    3005: "Server error",
    3006: "Input validation error",
    3007: "Audio chunk duration violation",
    3008: "Session expired: maximum session duration exceeded",
    3009: "Too many concurrent sessions",
    4001: "Not Authorized",
    4002: "Insufficient Funds",
    4029: "Client sent audio too fast",
    4031: "Session idle for too long",
}
_RETRYABLE = {None, 1000, 1001, 1006, 1011, 1012, 1013, 1014, 3005, 3008, 3009, 4031}
_HINTS = {
    1000: "the server ended the session before every result was sent",
    3005: "the server had an internal error; retrying usually helps",
    3006: "the server refused a message or a query parameter; please report it",
    3007: "an audio message was shorter than 50 ms or longer than 1000 ms",
    3008: "the session reached its maximum duration; a new session continues",
    3009: "too many concurrent sessions for this account",
    4002: "the account has no funds left",
    4029: "audio was sent faster than real time",
    4031: "the session was idle too long; keep keepalive_interval below inactivity_timeout",
}


def close_error(code: int | None, reason: str, *, stage: str) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``."""
    return closed_error(
        code,
        reason,
        provider=PROVIDER,
        stage=stage,
        auth_codes=(1008, 4001, 4003),
        auth_hint="check ASSEMBLYAI_API_KEY (or the api_key argument)",
        hints=_HINTS,
        retryable=_RETRYABLE,
        reasons=CLOSE_CODES,
    )
