"""Deepgram streaming TTS (``/v1/speak``) wire protocol, sans I/O.

Encoders for the client messages (``Speak``, ``Flush``, ``Clear``, ``Close``), a parser
that turns a frame into a typed event, and :class:`SpeakSession`, the state machine of one
connection. The state machine is updated when the client *decides* to send, before any
await, so a ``Flushed`` can never arrive "before we noted the Flush": the order of
events, not the scheduler, decides. See ``docs/deepgram-tts.md`` for sources.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError, ProviderError
from antiphon.protocols.json_events import Malformed, Unknown, parse_json_event
from antiphon.protocols.tts_session import Act, Action, FlushLedger, ProtocolStateError
from antiphon.protocols.tts_wire import split_at_spaces

__all__ = [
    "CLEAR",
    "CLOSE",
    "DEFAULT_BASE_URL",
    "DEFAULT_ENCODING",
    "DEFAULT_MODEL",
    "DEFAULT_SAMPLE_RATE",
    "ENCODINGS",
    "FLUSH",
    "MAX_SPEAK_CHARS",
    "PATH",
    "PROVIDER",
    "Audio",
    "Cleared",
    "ErrorMessage",
    "Flushed",
    "Malformed",
    "Message",
    "Metadata",
    "Phase",
    "ServerEvent",
    "SpeakOptions",
    "SpeakSession",
    "Unknown",
    "Warning",
    "auth_headers",
    "build_url",
    "close_error",
    "encode_speak",
    "parse",
]

PROVIDER = "deepgram"
DEFAULT_BASE_URL = "wss://api.deepgram.com"
PATH = "/v1/speak"
DEFAULT_MODEL = "aura-2-thalia-en"
DEFAULT_ENCODING = "linear16"
DEFAULT_SAMPLE_RATE = 24000
#: Streaming encodings and the sample rates each accepts.
ENCODINGS: dict[str, tuple[int, ...]] = {
    "linear16": (8000, 16000, 24000, 32000, 48000),
    "mulaw": (8000, 16000),
    "alaw": (8000, 16000),
}
#: Longest text sent in one ``Speak``; longer text is split on whitespace.
MAX_SPEAK_CHARS = 2000


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class SpeakOptions:
    """Query parameters of a ``/v1/speak`` connection."""

    model: str = DEFAULT_MODEL
    encoding: str = DEFAULT_ENCODING
    sample_rate: int = DEFAULT_SAMPLE_RATE
    speed: float | None = None
    mip_opt_out: bool | None = None

    def __post_init__(self) -> None:
        if not self.model or not isinstance(self.model, str):
            raise ConfigError("Deepgram model must be a voice id such as 'aura-2-thalia-en'")
        rates = ENCODINGS.get(self.encoding)
        if rates is None:
            raise ConfigError(
                f"Deepgram streaming TTS does not support encoding {self.encoding!r}; "
                f"use one of {', '.join(ENCODINGS)} (mp3/opus/flac/aac are REST-only)"
            )
        if self.sample_rate not in rates:
            raise ConfigError(
                f"Deepgram encoding {self.encoding!r} does not support sample_rate "
                f"{self.sample_rate}; use one of {', '.join(map(str, rates))}"
            )
        if self.speed is not None and not (0.7 <= self.speed <= 1.5):
            raise ConfigError(f"Deepgram speed must be between 0.7 and 1.5, got {self.speed}")

    def query(self) -> dict[str, str]:
        q = {"model": self.model, "encoding": self.encoding, "sample_rate": str(self.sample_rate)}
        if self.speed is not None:
            q["speed"] = f"{self.speed:g}"
        if self.mip_opt_out is not None:
            q["mip_opt_out"] = "true" if self.mip_opt_out else "false"
        return q


def build_url(base_url: str, options: SpeakOptions) -> str:
    """``wss://host/v1/speak?model=...``; ``base_url`` is a ws(s) origin, path optional."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(
            f"Deepgram base_url must look like 'wss://api.deepgram.com' (or ws://127.0.0.1:PORT "
            f"for a local fake), got {base_url!r}"
        )
    path = parts.path.rstrip("/")
    if not path.endswith(PATH):
        path += PATH
    return f"{parts.scheme}://{parts.netloc}{path}?{urlencode(options.query())}"


def auth_headers(api_key: str) -> dict[str, str]:
    """``Authorization: Token <key>``, or ``Bearer`` for a temporary JWT (``eyJ...``)."""
    scheme = "Bearer" if api_key.count(".") == 2 and api_key.startswith("eyJ") else "Token"
    return {"Authorization": f"{scheme} {api_key}"}


# --------------------------------------------------------------------------- messages


def encode_speak(text: str) -> list[str]:
    """``Speak`` messages for ``text``, split on whitespace into ≤ MAX_SPEAK_CHARS pieces."""
    pieces = split_at_spaces(text, MAX_SPEAK_CHARS)
    return [json.dumps({"type": "Speak", "text": p}, ensure_ascii=False) for p in pieces]


FLUSH = json.dumps({"type": "Flush"})
CLEAR = json.dumps({"type": "Clear"})
CLOSE = json.dumps({"type": "Close"})


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Audio:
    data: bytes


@dataclass(frozen=True, slots=True)
class Metadata:
    request_id: str
    model_name: str = ""
    model_version: str = ""
    model_uuid: str = ""


@dataclass(frozen=True, slots=True)
class Flushed:
    sequence_id: int


@dataclass(frozen=True, slots=True)
class Cleared:
    sequence_id: int


@dataclass(frozen=True, slots=True)
class Warning:  # the protocol's own name
    code: str
    description: str


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """An in-band error (not in the spec; some servers and proxies send one)."""

    code: str
    description: str


ServerEvent = Audio | Metadata | Flushed | Cleared | Warning | ErrorMessage | Unknown | Malformed


def _int(v: object) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else -1


def parse(frame: str | bytes) -> ServerEvent:
    """Turn one WebSocket message into a typed event (binary frames are audio)."""
    if type(frame) is bytes:  # audio, every chunk: no copy, no union isinstance
        return Audio(frame)
    if not isinstance(frame, str):  # bytearray, memoryview
        return Audio(bytes(frame))
    msg = parse_json_event(frame, provider="Deepgram")
    if isinstance(msg, Malformed):
        return msg
    kind = msg["type"]
    if kind == "Flushed":
        return Flushed(_int(msg.get("sequence_id")))
    if kind == "Cleared":
        return Cleared(_int(msg.get("sequence_id")))
    if kind == "Metadata":
        return Metadata(
            str(msg.get("request_id", "")),
            str(msg.get("model_name", "")),
            str(msg.get("model_version", "")),
            str(msg.get("model_uuid", "")),
        )
    if kind == "Warning":
        # Current shape: code/description; the older one: warn_code/warn_msg.
        return Warning(
            str(msg.get("code", msg.get("warn_code", ""))),
            str(msg.get("description", msg.get("warn_msg", ""))),
        )
    if kind.lower() == "error":
        return ErrorMessage(
            str(msg.get("err_code", msg.get("code", ""))),
            str(msg.get("description", msg.get("err_msg", msg.get("message", "")))),
        )
    return Unknown(kind, msg)


def close_error(code: int | None, reason: str, *, stage: str) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``."""
    reason = reason or "no reason given"
    if code == 1008 and not reason.startswith("DATA-"):
        return AuthError(
            f"the server closed the connection: {reason}",
            provider=PROVIDER,
            stage=stage,
            code=code,
            hint="check DEEPGRAM_API_KEY (or the api_key argument) and the project's access",
        )
    hints = {
        1003: "antiphon sent a message type the server does not accept; please report it",
        1008: "the server could not decode the data we sent",
        1009: "the text was too long for the server; send shorter pieces",
        1011: "the server had an internal error or timed out; retrying usually helps",
    }
    return ProviderConnectionError(
        f"the server closed the connection: {reason}",
        provider=PROVIDER,
        stage=stage,
        code=code if code is not None else 1006,
        hint=hints.get(code or 0, "the connection dropped; check the network"),
        retryable=code in (None, 1006, 1011),
    )


# --------------------------------------------------------------------------- state machine


class Phase(enum.Enum):
    IDLE = "idle"  # nothing outstanding: audio now is stale
    ACTIVE = "active"  # text sent for the current stream
    CLEARING = "clearing"  # Clear sent, waiting for Cleared: audio now is stale
    CLOSED = "closed"


Message = str | bytes


class SpeakSession(FlushLedger[Message]):
    """State of one ``/v1/speak`` connection as used by one stream at a time.

    Implements :class:`~antiphon.protocols.tts_session.TTSSession`. Client-side methods
    return the messages to send and update the state *now*; :meth:`receive` decides what
    an incoming event means.
    """

    #: Deepgram messages carry no stream id: after ``Clear`` wait for ``Cleared``.
    clear_needs_ack = True

    def __init__(self) -> None:
        super().__init__(FLUSH)  # the journal holds the messages sent since the last Flushed
        self.phase = Phase.IDLE

    # -- client side
    def _require_open(self, what: str) -> None:
        if self.phase in (Phase.CLEARING, Phase.CLOSED) or self.input_ended:
            raise ProtocolStateError(f"cannot {what} in phase {self.phase.value}")

    def speak(self, text: str) -> list[Message]:
        self._require_open("speak")
        if not text:
            return []
        msgs: list[Message] = list(encode_speak(text))
        self.phase = Phase.ACTIVE
        self._spoke(text, *msgs)
        return msgs

    def flush(self) -> list[Message]:
        """``Flush`` if any non-blank text was sent since the last one."""
        self._require_open("flush")
        return [FLUSH] if self._flushed() else []

    def _finish(self) -> None:
        self.phase = Phase.IDLE  # every Flush answered: the connection is free

    @property
    def awaiting_audio(self) -> bool:
        """The server owes us audio or an answer (a deadline should run)."""
        return self.pending_flushes > 0 or self.phase is Phase.CLEARING

    def clear(self) -> list[Message]:
        """``Clear`` to drop what the server still has; nothing if it has nothing."""
        if self.phase is Phase.CLOSED:
            return []
        if self.phase is Phase.IDLE and not self._unflushed and self.pending_flushes == 0:
            return []
        self.phase = Phase.CLEARING
        self.pending_flushes = 0
        self._unflushed = False
        self._journal.clear()
        return [CLEAR]

    def close(self) -> list[Message]:
        if self.phase is Phase.CLOSED:
            return []
        self.phase = Phase.CLOSED
        return [CLOSE]

    def replay(self) -> list[Message] | None:
        """Messages to resend on a new connection, or None if audio was already received."""
        if self.audio_since_ack:
            return None
        return list(self._journal)

    def reset_for_replay(self) -> list[Message]:
        """Start over on a fresh connection with the journal; returns what to send."""
        msgs = list(self._journal)
        self.phase = Phase.ACTIVE if msgs else Phase.IDLE
        return msgs

    def begin_stream(self) -> None:
        """Reuse an idle connection for the next stream."""
        if self.phase is not Phase.IDLE:
            raise ProtocolStateError(f"connection is {self.phase.value}, not idle")
        self.pending_flushes = 0
        self.input_ended = False
        self._unflushed = False
        self._journal.clear()
        self.audio_since_ack = False

    # -- server side
    def feed(self, frame: str | bytes) -> Action:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> Action:
        if isinstance(event, Audio):
            if self.phase is Phase.ACTIVE:
                self.audio_since_ack = True
                return Action(Act.DELIVER, event, audio=event.data)
            return Action(Act.DROP, event, f"audio while {self.phase.value}")
        if isinstance(event, Flushed):
            if self.phase is not Phase.ACTIVE or self.pending_flushes == 0:
                return Action(Act.DROP, event, f"Flushed while {self.phase.value}, none owed")
            return self._answered(event)
        if isinstance(event, Cleared):
            if self.phase is Phase.CLEARING:
                self.phase = Phase.IDLE
                return Action(Act.CLEAR_DONE, event)
            return Action(Act.DROP, event, "Cleared without a Clear")
        if isinstance(event, ErrorMessage):
            return Action(Act.FAIL, event, event.description or event.code)
        if isinstance(event, Metadata | Warning):
            return Action(Act.NOTICE, event)
        if isinstance(event, Unknown):
            return Action(Act.DROP, event, f"unknown message type {event.type!r}")
        return Action(Act.DROP, event, event.reason)
