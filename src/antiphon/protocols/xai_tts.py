"""xAI streaming TTS (``wss://api.x.ai/v1/tts``) wire protocol, sans I/O.

Options and the connection URL (all configuration is in the query string), encoders for
the client messages (``text.delta``, ``text.done``, ``text.clear``), a parser that turns a
frame into a typed event (``audio.delta``, ``audio.done``, ``audio.clear``, ``error``), the
mapping of close codes to typed errors, and :class:`XAISession`, the state machine of one
stream on one connection.

The protocol has no utterance ids: each ``text.done`` is answered by exactly one
``audio.done``, a ``text.clear`` by one ``audio.clear``. The session counts what it owes
*when it decides to send*, before any await, so an ``audio.done`` that arrives before the
driver's ``send(text.done)`` has returned still completes the stream: the order of
events decides, never the scheduler. See ``docs/xai-tts.md`` for sources.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError, ProviderError
from antiphon.protocols.tts_session import (
    Act,
    Action,
    CharWords,
    FlushLedger,
    ProtocolStateError,
)

__all__ = [
    "AUTH_CLOSE_CODES",
    "CODECS",
    "DEFAULT_BASE_URL",
    "DEFAULT_ENCODING",
    "DEFAULT_LANGUAGE",
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_VOICE",
    "ENCODING_ALIASES",
    "G711_SAMPLE_RATES",
    "LANGUAGES",
    "LATENCY_LEVELS",
    "MAX_DELTA_CHARS",
    "PATH",
    "PROVIDER",
    "RETRYABLE_CLOSE_CODES",
    "SAMPLE_RATES",
    "SPEED_RANGE",
    "TEXT_CLEAR",
    "TEXT_DONE",
    "VOICES",
    "AudioClear",
    "AudioDelta",
    "AudioDone",
    "ErrorMessage",
    "Malformed",
    "Message",
    "Phase",
    "ServerEvent",
    "Timestamps",
    "Unknown",
    "XAIOptions",
    "XAISession",
    "auth_headers",
    "build_url",
    "canonical_encoding",
    "canonical_language",
    "close_error",
    "encode_text_delta",
    "parse",
    "split_text",
]

PROVIDER = "xai"
DEFAULT_BASE_URL = "wss://api.x.ai"
PATH = "/v1/tts"
DEFAULT_VOICE = "eve"
DEFAULT_LANGUAGE = "en"
DEFAULT_ENCODING = "linear16"
DEFAULT_SAMPLE_RATE = 24000
#: Built-in voices (``GET /v1/tts/voices``); custom voice ids are accepted as well.
VOICES = ("eve", "ara", "rex", "sal", "leo")
#: ``language`` values (BCP-47, case-insensitive), from xAI's WebSocket spec.
# fmt: off
LANGUAGES = (
    "auto", "en", "ar-EG", "ar-SA", "ar-AE", "bn", "zh", "fr", "de", "hi", "id", "it", "ja",
    "ko", "pt-BR", "pt-PT", "ru", "es-MX", "es-ES", "tr", "vi",
)
# fmt: on
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
#: antiphon's wire encoding -> the ``codec`` query value.
CODECS: dict[str, str] = {"linear16": "pcm", "mulaw": "mulaw", "alaw": "alaw"}
#: Names accepted for an encoding (xAI's codec names and antiphon's).
ENCODING_ALIASES: dict[str, str] = {
    "linear16": "linear16",
    "pcm": "linear16",
    "mulaw": "mulaw",
    "ulaw": "mulaw",
    "alaw": "alaw",
}
#: G.711 (mulaw/alaw) is telephony audio: antiphon asks for it at 8 kHz only.
G711_SAMPLE_RATES = (8000,)
SPEED_RANGE = (0.7, 1.5)
LATENCY_LEVELS = (0, 1, 2)
#: Longest ``text.delta``; longer text is split on whitespace.
MAX_DELTA_CHARS = 15000


# --------------------------------------------------------------------------- config


def canonical_encoding(encoding: str) -> str:
    """``pcm``/``linear16`` -> ``linear16``, ``ulaw``/``mulaw`` -> ``mulaw``, ``alaw``."""
    enc = ENCODING_ALIASES.get(encoding.lower()) if isinstance(encoding, str) else None
    if enc is None:
        raise ConfigError(
            f"xAI streaming TTS: encoding {encoding!r} is not streamed raw; use 'linear16' "
            "(codec pcm), 'mulaw' or 'alaw' (wav and mp3 are containers/compressed: use the "
            "REST endpoint for those)"
        )
    return enc


def canonical_language(language: str) -> str:
    """The spec's spelling of ``language`` (matched case-insensitively)."""
    if isinstance(language, str):
        for known in LANGUAGES:
            if known.lower() == language.lower():
                return known
    raise ConfigError(
        f"xAI TTS does not support language {language!r}; use 'auto' or one of "
        f"{', '.join(LANGUAGES[1:])}"
    )


@dataclass(frozen=True, slots=True)
class XAIOptions:
    """Query parameters of a ``/v1/tts`` connection (validated; see :meth:`query`)."""

    voice: str = DEFAULT_VOICE
    language: str = DEFAULT_LANGUAGE
    encoding: str = DEFAULT_ENCODING
    sample_rate: int = DEFAULT_SAMPLE_RATE
    speed: float | None = None
    optimize_streaming_latency: int | None = None
    text_normalization: bool | None = None
    with_timestamps: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.voice, str) or not self.voice.strip() or " " in self.voice:
            raise ConfigError(
                f"xAI voice must be a voice id such as {', '.join(VOICES)} or a custom voice "
                f"id, got {self.voice!r}"
            )
        object.__setattr__(self, "language", canonical_language(self.language))
        object.__setattr__(self, "encoding", canonical_encoding(self.encoding))
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int) or rate not in SAMPLE_RATES:
            raise ConfigError(
                f"xAI TTS does not support sample_rate {rate!r}; use one of "
                f"{', '.join(map(str, SAMPLE_RATES))}"
            )
        if self.encoding != "linear16" and rate not in G711_SAMPLE_RATES:
            raise ConfigError(
                f"xAI encoding {self.encoding!r} (G.711 telephony) is used at sample_rate "
                f"{', '.join(map(str, G711_SAMPLE_RATES))}, not {rate}; use sample_rate=8000, "
                f"or encoding 'linear16' for {rate} Hz"
            )
        if self.speed is not None:
            lo, hi = SPEED_RANGE
            if isinstance(self.speed, bool) or not isinstance(self.speed, int | float):
                raise ConfigError(f"xAI speed must be a number between {lo} and {hi}")
            if not lo <= self.speed <= hi:
                raise ConfigError(f"xAI speed must be between {lo} and {hi}, got {self.speed}")
        lat = self.optimize_streaming_latency
        if lat is not None and (isinstance(lat, bool) or lat not in LATENCY_LEVELS):
            raise ConfigError(
                f"xAI optimize_streaming_latency must be 0, 1 or 2 (or None for the server's "
                f"default), got {lat!r}"
            )
        for name in ("text_normalization", "with_timestamps"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"xAI {name} must be True, False or None, got {value!r}")

    @property
    def codec(self) -> str:
        return CODECS[self.encoding]

    def query(self) -> dict[str, str]:
        """The query string; booleans as lowercase ``true``/``false``."""
        q = {
            "voice": self.voice,
            "language": self.language,
            "codec": self.codec,
            "sample_rate": str(self.sample_rate),
        }
        if self.speed is not None:
            q["speed"] = f"{self.speed:g}"
        if self.optimize_streaming_latency is not None:
            q["optimize_streaming_latency"] = str(self.optimize_streaming_latency)
        if self.text_normalization is not None:
            q["text_normalization"] = _bool(self.text_normalization)
        if self.with_timestamps is not None:
            q["with_timestamps"] = _bool(self.with_timestamps)
        return q


def _bool(value: bool) -> str:
    return "true" if value else "false"


def build_url(base_url: str, options: XAIOptions) -> str:
    """``wss://api.x.ai/v1/tts?voice=...``; ``base_url`` is a ws(s) origin, path optional."""
    parts = urlsplit(base_url) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(
            f"xAI base_url must look like 'wss://api.x.ai' (or ws://127.0.0.1:PORT for a "
            f"local fake), got {base_url!r}"
        )
    path = parts.path.rstrip("/")
    if not path.endswith(PATH):
        path += PATH
    return f"{parts.scheme}://{parts.netloc}{path}?{urlencode(options.query())}"


def auth_headers(api_key: str) -> dict[str, str]:
    """``Authorization: Bearer <key>``."""
    return {"Authorization": f"Bearer {api_key}"}


# --------------------------------------------------------------------------- messages


def split_text(text: str, limit: int = MAX_DELTA_CHARS) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at the last space if any.

    The pieces concatenate back to ``text`` exactly.
    """
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind(" ", 0, limit)
        if cut <= 0:
            cut = limit
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    return pieces


def encode_text_delta(text: str) -> list[str]:
    """``text.delta`` messages for ``text`` (split when over MAX_DELTA_CHARS)."""
    return [
        json.dumps({"type": "text.delta", "delta": p}, ensure_ascii=False) for p in split_text(text)
    ]


TEXT_DONE = json.dumps({"type": "text.done"})
TEXT_CLEAR = json.dumps({"type": "text.clear"})


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Timestamps:
    """Per-character timings of ``with_timestamps=true`` (seconds from utterance start)."""

    chars: tuple[str, ...]
    times: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class AudioDelta:
    """Audio in the negotiated codec; may be empty (timestamps only)."""

    data: bytes
    timestamps: Timestamps | None = None


@dataclass(frozen=True, slots=True)
class AudioDone:
    trace_id: str = ""


@dataclass(frozen=True, slots=True)
class AudioClear:
    pass


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    message: str


@dataclass(frozen=True, slots=True)
class Unknown:
    type: str
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Malformed:
    reason: str
    text: str = field(repr=False)


ServerEvent = AudioDelta | AudioDone | AudioClear | ErrorMessage | Unknown | Malformed


def _timestamps(value: object) -> Timestamps | None:
    if not isinstance(value, dict):
        return None
    chars, times = value.get("graph_chars"), value.get("graph_times")
    if not isinstance(chars, list) or not isinstance(times, list) or len(chars) != len(times):
        return None
    pairs: list[tuple[float, float]] = []
    for t in times:
        if not (isinstance(t, list | tuple) and len(t) == 2):
            return None
        start, end = t
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (start, end)):
            return None
        pairs.append((float(start), float(end)))
    return Timestamps(tuple(str(c) for c in chars), tuple(pairs))


def parse(frame: str | bytes) -> ServerEvent:
    """Turn one WebSocket message into a typed event (every message is JSON text)."""
    if isinstance(frame, bytes | bytearray | memoryview):
        return Malformed("unexpected binary frame (xAI sends audio as base64 JSON)", "")
    try:
        msg = json.loads(frame)
    except ValueError as exc:
        return Malformed(f"invalid JSON: {exc}", frame[:200])
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        return Malformed("JSON message without a string 'type'", frame[:200])
    kind = msg["type"]
    if kind == "audio.delta":
        delta = msg.get("delta")
        if delta is None:
            delta = ""
        if not isinstance(delta, str):
            return Malformed("audio.delta with a non-string 'delta'", frame[:200])
        try:
            data = base64.b64decode(delta, validate=True)
        except (binascii.Error, ValueError):
            return Malformed("audio.delta whose 'delta' is not base64", frame[:200])
        return AudioDelta(data, _timestamps(msg.get("audio_timestamps")))
    if kind == "audio.done":
        trace = msg.get("trace_id")
        return AudioDone(trace if isinstance(trace, str) else "")
    if kind == "audio.clear":
        return AudioClear()
    if kind == "error":
        detail = msg.get("message", msg.get("error"))
        if isinstance(detail, dict):  # {"error": {"message": ...}} as some proxies send
            detail = detail.get("message", detail)
        return ErrorMessage(str(detail) if detail not in (None, "") else "no message given")
    return Unknown(kind, msg)


#: Close codes that say the credentials were refused (1008 only with an auth reason).
AUTH_CLOSE_CODES = (4001, 4003, 4401, 4403)
_AUTH_WORDS = ("auth", "credential", "api key", "api_key", "apikey", "token", "forbidden")
#: Closes after which a new connection may succeed (a drop, a restart, the age limit).
RETRYABLE_CLOSE_CODES = (None, 1000, 1001, 1006, 1011, 1012, 1013)


def close_error(code: int | None, reason: str, *, stage: str) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``."""
    text = reason or "no reason given"
    lowered = reason.lower()
    if code in AUTH_CLOSE_CODES or (
        code == 1008 and (not reason or any(w in lowered for w in _AUTH_WORDS))
    ):
        return AuthError(
            f"the server closed the connection: {text}",
            provider=PROVIDER,
            stage=stage,
            code=code,
            hint="check XAI_API_KEY (or the api_key argument) and that the key may use TTS",
        )
    hints = {
        1000: "the server ended the connection (idle or age limit); a new one is opened",
        1001: "the server is going away (restart or connection age limit); retry",
        1003: "the server refused a message antiphon sent; please report it",
        1007: "the server could not decode text we sent (invalid UTF-8?)",
        1008: "the server refused the request (policy); check the text and options",
        1009: "a message was too large; text is split at 15,000 characters per delta",
        1011: "the server had an internal error; retrying usually helps",
        1012: "the server is restarting; retry",
        1013: "the server is overloaded; retry later",
    }
    return ProviderConnectionError(
        f"the server closed the connection: {text}",
        provider=PROVIDER,
        stage=stage,
        code=code if code is not None else 1006,
        hint=hints.get(code or 0, "the connection dropped; check the network"),
        retryable=code in RETRYABLE_CLOSE_CODES,
    )


# --------------------------------------------------------------------------- state machine


class Phase(enum.Enum):
    IDLE = "idle"  # nothing sent or everything answered: audio now is stale
    ACTIVE = "active"  # text sent for the current stream
    CLEARING = "clearing"  # text.clear sent, waiting for audio.clear: audio now is stale


Message = str | bytes


class XAISession(FlushLedger[Message]):
    """State of one stream on one ``/v1/tts`` connection.

    Implements :class:`~antiphon.protocols.tts_session.TTSSession`. Client-side methods
    return the messages to send and update the state *now*, before the driver awaits the
    send; :meth:`receive` decides what each server event means:

    - ``audio.delta`` is delivered only while an utterance of this stream is open (text
      sent and its ``audio.done`` not yet received); otherwise it is stale and dropped;
    - ``audio.done`` answers the oldest outstanding ``text.done``; with none owed it is
      dropped, so an extra marker can never end a later stream;
    - ``audio.clear`` ends a cancel; ``error`` fails the stream.

    Word timings (``with_timestamps=true``): the per-character ``audio_timestamps``
    (seconds from the utterance's start, which is where a segment starts) are grouped into
    words on :attr:`Action.words`; a word still open at ``audio.done`` ends there.
    """

    #: No utterance ids on the wire: after text.clear, wait for audio.clear before reuse.
    clear_needs_ack = True

    def __init__(self) -> None:
        super().__init__(TEXT_DONE)  # the journal holds the messages since the last audio.done
        self.phase = Phase.IDLE
        self.trace_ids: list[str] = []
        self._words = CharWords()

    # -- client side
    def _require_open(self, what: str) -> None:
        if self.phase is Phase.CLEARING or self.input_ended:
            raise ProtocolStateError(f"cannot {what} in phase {self.phase.value}")

    def speak(self, text: str) -> list[Message]:
        """``text.delta`` message(s) for ``text``; spoken at the next flush."""
        self._require_open("speak")
        if not text:
            return []
        msgs: list[Message] = list(encode_text_delta(text))
        self.phase = Phase.ACTIVE
        self._spoke(text, *msgs)
        return msgs

    def flush(self) -> list[Message]:
        """``text.done`` if non-blank text was sent since the last one (one audio.done owed)."""
        self._require_open("flush")
        return [TEXT_DONE] if self._flushed() else []

    def _finish(self) -> None:
        self.phase = Phase.IDLE  # every text.done answered by its audio.done

    @property
    def awaiting_audio(self) -> bool:
        """The server owes audio.done or audio.clear (a deadline should run)."""
        return self.pending_flushes > 0 or self.phase is Phase.CLEARING

    @property
    def utterance_open(self) -> bool:
        """Audio now belongs to this stream (text sent, its audio.done not yet seen)."""
        return self.phase is Phase.ACTIVE and (self.pending_flushes > 0 or self._unflushed)

    def clear(self) -> list[Message]:
        """``text.clear`` to drop what the server still has; nothing if it has nothing."""
        if self.phase is Phase.CLEARING:
            return []
        if not self._unflushed and self.pending_flushes == 0:
            self.phase = Phase.IDLE
            return []
        self.phase = Phase.CLEARING
        self.pending_flushes = 0
        self._unflushed = False
        self._journal.clear()
        self._words = CharWords()
        return [TEXT_CLEAR]

    def replay(self) -> list[Message] | None:
        """Messages to resend on a new connection, or None if audio was already received."""
        if self.audio_since_ack:
            return None
        return list(self._journal)

    def reset_for_replay(self) -> list[Message]:
        """Start over on a fresh connection with the journal; returns what to send."""
        msgs = list(self._journal)
        self.phase = Phase.ACTIVE if msgs else Phase.IDLE
        self._words = CharWords()
        return msgs

    # -- server side
    def feed(self, frame: str | bytes) -> Action:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> Action:
        if isinstance(event, AudioDelta):
            if not self.utterance_open:
                return Action(Act.DROP, event, f"audio while {self._state_note()}")
            ts = event.timestamps
            words = (
                self._words.feed((c, a, b) for c, (a, b) in zip(ts.chars, ts.times, strict=True))
                if ts is not None
                else ()
            )
            if not event.data:
                return Action(Act.NOTICE, event, "audio.delta without audio", words=words)
            self.audio_since_ack = True
            return Action(Act.DELIVER, event, audio=event.data, words=words)
        if isinstance(event, AudioDone):
            if self.phase is not Phase.ACTIVE or self.pending_flushes == 0:
                return Action(Act.DROP, event, f"audio.done while {self._state_note()}")
            self.trace_ids.append(event.trace_id)
            return self._answered(event, self._words.finish())
        if isinstance(event, AudioClear):
            if self.phase is Phase.CLEARING:
                self.phase = Phase.IDLE
                return Action(Act.CLEAR_DONE, event)
            return Action(Act.DROP, event, "audio.clear without a text.clear")
        if isinstance(event, ErrorMessage):
            return Action(Act.FAIL, event, event.message)
        if isinstance(event, Unknown):
            return Action(Act.DROP, event, f"unknown message type {event.type!r}")
        return Action(Act.DROP, event, event.reason)

    def _state_note(self) -> str:
        if self.phase is Phase.ACTIVE:
            return "active with no utterance open"
        return str(self.phase.value)
