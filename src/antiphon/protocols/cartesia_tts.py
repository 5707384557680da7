"""Cartesia streaming TTS (``/tts/websocket``) wire protocol, sans I/O.

Options validation, URL and handshake headers, encoders for the client messages (a
generation request per piece of text, a flush, the end of a context, a cancel), a parser
that turns a frame into a typed event, and :class:`ContextSession`, the state machine of one
stream. Every stream is one Cartesia *context* with its own ``context_id``; whatever the
server sends for another context, or for this one after it finished or was cancelled, is
stale and dropped. The state is updated when the client *decides* to send, before any
await, so a ``flush_done`` can never arrive "before we noted the flush". See
``docs/cartesia-tts.md`` for sources.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError, ProviderError
from antiphon.protocols.tts_session import Act, Action, ProtocolStateError, WordTiming

__all__ = [
    "CARTESIA_ENCODINGS",
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "DEFAULT_ENCODING",
    "DEFAULT_LANGUAGE",
    "DEFAULT_MODEL",
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_VOICE",
    "ENCODINGS",
    "PATH",
    "PROVIDER",
    "SAMPLE_RATES",
    "CartesiaOptions",
    "Chunk",
    "ContextSession",
    "Done",
    "ErrorMessage",
    "FlushDone",
    "Malformed",
    "Message",
    "Phase",
    "ServerEvent",
    "Timestamps",
    "Unknown",
    "auth_headers",
    "build_url",
    "close_error",
    "encode_cancel",
    "encode_generation",
    "new_context_id",
    "parse",
]

PROVIDER = "cartesia"
DEFAULT_BASE_URL = "wss://api.cartesia.ai"
PATH = "/tts/websocket"
#: ``Cartesia-Version`` sent on the handshake: the one Cartesia's own SDK (4.x) sends.
DEFAULT_API_VERSION = "2026-08-14"
DEFAULT_MODEL = "sonic-2"
#: The voice Cartesia's own Python SDK falls back to.
DEFAULT_VOICE = "6ccbfb76-1fc6-48f7-b71d-91ac6298247b"
DEFAULT_LANGUAGE = "en"
DEFAULT_ENCODING = "linear16"
DEFAULT_SAMPLE_RATE = 24000
#: ``output_format.sample_rate`` values the API accepts.
SAMPLE_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 44100, 48000)
#: antiphon's wire encoding -> Cartesia's ``output_format.encoding``.
CARTESIA_ENCODINGS: dict[str, str] = {
    "linear16": "pcm_s16le",
    "mulaw": "pcm_mulaw",
    "alaw": "pcm_alaw",
}
#: Streamed encodings and the sample rates antiphon allows for each (G.711 is for
#: telephony: 8 kHz, or 16 kHz wideband; Cartesia documents no restriction).
ENCODINGS: dict[str, tuple[int, ...]] = {
    "linear16": SAMPLE_RATES,
    "mulaw": (8000, 16000),
    "alaw": (8000, 16000),
}
_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class CartesiaOptions:
    """Everything that is identical in every message of a context.

    ``encoding`` is antiphon's name (``linear16``, ``mulaw``, ``alaw``); Cartesia's
    (``pcm_s16le``, ``pcm_mulaw``, ``pcm_alaw``) are accepted and normalised. ``speed``,
    ``volume`` and ``emotion`` go into ``generation_config`` (Sonic-3 models only);
    ``None`` leaves a field out, so the server's default applies. ``add_timestamps``
    asks for word timings (``type: timestamps`` messages), surfaced on the stream.
    """

    model: str = DEFAULT_MODEL
    voice: str = DEFAULT_VOICE
    language: str | None = DEFAULT_LANGUAGE
    encoding: str = DEFAULT_ENCODING
    sample_rate: int = DEFAULT_SAMPLE_RATE
    api_version: str = DEFAULT_API_VERSION
    speed: float | None = None
    volume: float | None = None
    emotion: str | None = None
    max_buffer_delay_ms: int | None = None
    pronunciation_dict_id: str | None = None
    add_timestamps: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("Cartesia model must be a model id such as 'sonic-2' or 'sonic-3'")
        try:
            uuid.UUID(str(self.voice))
        except ValueError:
            raise ConfigError(
                f"Cartesia voice must be a voice id (a UUID such as {DEFAULT_VOICE!r}), "
                f"got {self.voice!r}; find ids in the Cartesia playground or GET /voices"
            ) from None
        if self.language is not None and not _LANGUAGE_RE.match(self.language):
            raise ConfigError(
                f"Cartesia language must be a language code such as 'en', 'fr' or 'de', "
                f"got {self.language!r}"
            )
        encoding = {v: k for k, v in CARTESIA_ENCODINGS.items()}.get(self.encoding, self.encoding)
        if encoding == "pcm_f32le":
            raise ConfigError(
                "Cartesia encoding 'pcm_f32le' is not streamed by antiphon (frames are 16-bit); "
                "use 'linear16' (pcm_s16le), or 'mulaw'/'alaw' for telephony"
            )
        rates = ENCODINGS.get(encoding)
        if rates is None:
            raise ConfigError(
                f"Cartesia streaming TTS does not support encoding {self.encoding!r}; use one of "
                f"{', '.join(ENCODINGS)} (the WebSocket streams raw audio; mp3/wav are for the "
                "HTTP /tts/bytes endpoint)"
            )
        object.__setattr__(self, "encoding", encoding)
        if isinstance(self.sample_rate, bool) or self.sample_rate not in rates:
            raise ConfigError(
                f"Cartesia encoding {encoding!r} does not support sample_rate "
                f"{self.sample_rate}; use one of {', '.join(map(str, rates))}"
            )
        if not isinstance(self.api_version, str) or not _VERSION_RE.match(self.api_version):
            raise ConfigError(
                f"Cartesia api_version must be a date such as {DEFAULT_API_VERSION!r}, "
                f"got {self.api_version!r}"
            )
        if self.speed is not None and not (0.6 <= self.speed <= 1.5):
            raise ConfigError(f"Cartesia speed must be between 0.6 and 1.5, got {self.speed}")
        if self.volume is not None and not (0.5 <= self.volume <= 2.0):
            raise ConfigError(f"Cartesia volume must be between 0.5 and 2.0, got {self.volume}")
        if self.emotion is not None and not self.emotion.strip():
            raise ConfigError("Cartesia emotion must be a name such as 'neutral' or 'excited'")
        if self.max_buffer_delay_ms is not None and not (0 <= self.max_buffer_delay_ms <= 5000):
            raise ConfigError(
                f"Cartesia max_buffer_delay_ms must be between 0 and 5000, "
                f"got {self.max_buffer_delay_ms}"
            )

    @property
    def cartesia_encoding(self) -> str:
        """The encoding's name on the wire (``pcm_s16le``, ``pcm_mulaw``, ``pcm_alaw``)."""
        return CARTESIA_ENCODINGS[self.encoding]

    def output_format(self) -> dict[str, Any]:
        return {
            "container": "raw",
            "encoding": self.cartesia_encoding,
            "sample_rate": self.sample_rate,
        }

    def fixed_fields(self) -> dict[str, Any]:
        """The fields every message of a context repeats unchanged."""
        fields: dict[str, Any] = {
            "model_id": self.model,
            "voice": {"mode": "id", "id": self.voice},
            "output_format": self.output_format(),
        }
        if self.language is not None:
            fields["language"] = self.language
        config: dict[str, Any] = {}
        if self.speed is not None:
            config["speed"] = self.speed
        if self.volume is not None:
            config["volume"] = self.volume
        if self.emotion is not None:
            config["emotion"] = self.emotion
        if config:
            fields["generation_config"] = config
        if self.max_buffer_delay_ms is not None:
            fields["max_buffer_delay_ms"] = self.max_buffer_delay_ms
        if self.pronunciation_dict_id is not None:
            fields["pronunciation_dict_id"] = self.pronunciation_dict_id
        if self.add_timestamps:
            fields["add_timestamps"] = True
        return fields


def build_url(base_url: str, options: CartesiaOptions) -> str:
    """``wss://host/tts/websocket?cartesia_version=...``; ``base_url`` is a ws(s) origin."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(
            f"Cartesia base_url must look like 'wss://api.cartesia.ai' (or ws://127.0.0.1:PORT "
            f"for a local fake), got {base_url!r}"
        )
    path = parts.path.rstrip("/")
    if not path.endswith(PATH):
        path += PATH
    query = urlencode({"cartesia_version": options.api_version})
    return f"{parts.scheme}://{parts.netloc}{path}?{query}"


def auth_headers(api_key: str, api_version: str = DEFAULT_API_VERSION) -> dict[str, str]:
    """``Authorization: Bearer <key>`` and ``Cartesia-Version: <date>``, as Cartesia's own
    SDK sends them (the service still takes the older ``X-API-Key`` too)."""
    return {"Authorization": f"Bearer {api_key}", "Cartesia-Version": api_version}


# --------------------------------------------------------------------------- messages


def encode_generation(
    options: CartesiaOptions,
    context_id: str,
    transcript: str,
    *,
    cont: bool = True,
    flush: bool = False,
) -> str:
    """A generation request: ``transcript`` appended to the context (verbatim).

    ``cont=False`` ends the context (the server speaks what is left, then ``done``);
    ``flush=True`` (with an empty transcript) asks for a ``flush_done`` after the audio
    of everything sent so far.
    """
    msg: dict[str, Any] = {
        "model_id": options.model,
        "transcript": transcript,
        **{k: v for k, v in options.fixed_fields().items() if k != "model_id"},
        "context_id": context_id,
        "continue": cont,
    }
    if flush:
        msg["flush"] = True
    return json.dumps(msg, ensure_ascii=False)


def encode_cancel(context_id: str) -> str:
    """Stop a context: the server sends nothing more for it (no acknowledgement)."""
    return json.dumps({"context_id": context_id, "cancel": True})


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Chunk:
    """``type: chunk``: base64-decoded audio of a context."""

    context_id: str | None
    audio: bytes = field(repr=False)
    flush_id: int | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class FlushDone:
    """``type: flush_done``: all audio of flush ``flush_id`` (1-based) was sent."""

    context_id: str | None
    flush_id: int | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """``type: done``: the context is finished (after ``continue: false``)."""

    context_id: str | None


@dataclass(frozen=True, slots=True)
class Timestamps:
    """``type: timestamps`` / ``phoneme_timestamps``.

    ``words``: for ``timestamps``, the ``word_timestamps`` (``words``, ``start``, ``end``
    in seconds from the start of the context's audio); empty for phonemes or when absent.
    """

    context_id: str | None
    kind: str
    raw: dict[str, Any] = field(repr=False)
    words: tuple[WordTiming, ...] = ()


def _word_timestamps(value: object) -> tuple[WordTiming, ...]:
    if not isinstance(value, dict):
        return ()
    words, starts, ends = value.get("words"), value.get("start"), value.get("end")
    if not (isinstance(words, list) and isinstance(starts, list) and isinstance(ends, list)):
        return ()
    if not len(words) == len(starts) == len(ends):
        return ()
    out: list[WordTiming] = []
    for w, a, b in zip(words, starts, ends, strict=True):
        if not isinstance(w, str) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b)
        ):
            return ()
        out.append(WordTiming(w, float(a), float(max(a, b))))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """``type: error``; without a ``context_id`` it concerns the whole connection."""

    context_id: str | None
    message: str
    status_code: int | None = None
    error_code: str = ""
    title: str = ""

    def describe(self) -> str:
        parts = [p for p in (self.title, self.message) if p]
        text = ": ".join(parts) or "unspecified error"
        if self.status_code is not None:
            text += f" (status {self.status_code})"
        if self.error_code:
            text += f" [{self.error_code}]"
        return text


@dataclass(frozen=True, slots=True)
class Unknown:
    type: str
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Malformed:
    reason: str
    text: str = field(repr=False)


ServerEvent = Chunk | FlushDone | Done | Timestamps | ErrorMessage | Unknown | Malformed


def _opt_int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _opt_str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def parse(frame: str | bytes) -> ServerEvent:
    """Turn one WebSocket message into a typed event (Cartesia sends JSON text only)."""
    if isinstance(frame, bytes | bytearray | memoryview):
        return Malformed("unexpected binary frame", repr(bytes(frame[:40])))
    try:
        msg = json.loads(frame)
    except ValueError as exc:
        return Malformed(f"invalid JSON: {exc}", frame[:200])
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        return Malformed("JSON message without a string 'type'", frame[:200])
    kind: str = msg["type"]
    cid = _opt_str(msg.get("context_id"))
    if kind == "chunk":
        data = msg.get("data")
        if data is None:
            data = ""
        if not isinstance(data, str):
            return Malformed("chunk whose 'data' is not a string", frame[:200])
        try:
            audio = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            return Malformed(f"chunk with invalid base64: {exc}", frame[:200])
        return Chunk(cid, audio, _opt_int(msg.get("flush_id")), msg.get("done") is True)
    if kind == "flush_done":
        return FlushDone(cid, _opt_int(msg.get("flush_id")))
    if kind == "done":
        return Done(cid)
    if kind in ("timestamps", "phoneme_timestamps"):
        words = _word_timestamps(msg.get("word_timestamps")) if kind == "timestamps" else ()
        return Timestamps(cid, kind, msg, words)
    if kind == "error":
        message = msg.get("message", msg.get("error", ""))
        return ErrorMessage(
            cid,
            str(message) if message is not None else "",
            _opt_int(msg.get("status_code")),
            str(msg.get("error_code") or ""),
            str(msg.get("title") or ""),
        )
    return Unknown(kind, msg)


def close_error(code: int | None, reason: str, *, stage: str) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``.

    1008 (policy violation) is how a WebSocket server refuses credentials after the
    upgrade; the real API refuses a bad key with HTTP 401 on the upgrade instead, which
    :mod:`antiphon.net.ws` maps to :class:`~antiphon.errors.AuthError` itself.
    """
    reason = reason or "no reason given"
    if code == 1008:
        return AuthError(
            f"the server closed the connection: {reason}",
            provider=PROVIDER,
            stage=stage,
            code=code,
            hint="check CARTESIA_API_KEY (or the api_key argument) and the Cartesia-Version",
        )
    hints = {
        1000: "the server ended the connection (idle timeout?); a new one is opened",
        1001: "the server is going away or the connection is too old; a new one is opened",
        1003: "antiphon sent a message the server does not accept; please report it",
        1009: "a message was too large for the server; send shorter text",
        1011: "the server had an internal error; retrying usually helps",
        1012: "the server is restarting; retrying usually helps",
        1013: "the server is overloaded; try again later",
    }
    return ProviderConnectionError(
        f"the server closed the connection: {reason}",
        provider=PROVIDER,
        stage=stage,
        code=code if code is not None else 1006,
        hint=hints.get(code or 0, "the connection dropped; check the network"),
        retryable=code in (None, 1000, 1001, 1006, 1011, 1012, 1013, 1014),
    )


# --------------------------------------------------------------------------- state machine


class Phase(enum.Enum):
    IDLE = "idle"  # nothing sent on the context yet: audio now is stale
    ACTIVE = "active"  # text sent on the context
    DONE = "done"  # input ended and the server said done: audio now is stale
    CANCELLED = "cancelled"  # cancel sent: everything now is stale


Message = str | bytes
_Op = tuple[Literal["speak", "flush", "end"], str]


def new_context_id() -> str:
    """A fresh context id (a random UUID, as Cartesia's SDK generates)."""
    return str(uuid.uuid4())


class ContextSession:
    """State of one stream: one Cartesia context on one (pooled) connection.

    Implements :class:`~antiphon.protocols.tts_session.TTSSession`. Client-side methods
    return the messages to send and update the state *now*; :meth:`receive` decides what
    an incoming event means. A flush is answered by ``flush_done``, the end of input
    (``continue: false``) by ``done``; both count in :attr:`pending_flushes`.

    Word timings count from the start of the context's audio; the session keeps the
    context's audio seconds (from the raw encoding's bytes) and where the current
    segment began, and hands them on segment-relative in :attr:`Action.words`.
    """

    #: Messages carry the context id: a later stream drops this one's audio by itself.
    clear_needs_ack = False

    def __init__(
        self,
        options: CartesiaOptions | None = None,
        *,
        context_ids: Callable[[], str] = new_context_id,
    ) -> None:
        self.options = options or CartesiaOptions()
        self._context_ids = context_ids
        self.context_id = context_ids()
        self._next_context_id: str | None = None
        self.phase = Phase.IDLE
        self.input_ended = False
        self.flushes_sent = 0
        self._flushes_owed = 0
        self._end_owed = False
        self._unflushed = False
        # What was sent since the last answer, as operations (re-encoded with a new
        # context id if the connection drops before any audio of it arrived).
        self._journal: list[_Op] = []
        self.audio_since_ack = False
        self._audio_seconds = 0.0  # of this context
        self._segment_at = 0.0  # where the current segment's audio began in it
        width = 2 if self.options.encoding == "linear16" else 1
        self._bytes_per_second = float(width * self.options.sample_rate)

    # -- encoding
    def _encode(self, op: _Op, context_id: str) -> str:
        kind, text = op
        if kind == "speak":
            return encode_generation(self.options, context_id, text)
        if kind == "flush":
            return encode_generation(self.options, context_id, "", flush=True)
        return encode_generation(self.options, context_id, "", cont=False)

    # -- client side
    def _require_open(self, what: str) -> None:
        if self.input_ended or self.phase in (Phase.DONE, Phase.CANCELLED):
            raise ProtocolStateError(f"cannot {what} in phase {self.phase.value}")

    def speak(self, text: str) -> list[Message]:
        """A generation request appending ``text`` (leading blank text is not sent)."""
        self._require_open("speak")
        if not text or (self.phase is Phase.IDLE and not text.strip()):
            return []
        op: _Op = ("speak", text)
        self.phase = Phase.ACTIVE
        if text.strip():
            self._unflushed = True
        self._journal.append(op)
        return [self._encode(op, self.context_id)]

    def flush(self) -> list[Message]:
        """``flush: true`` if any non-blank text was sent since the last flush."""
        self._require_open("flush")
        if not self._unflushed:
            return []
        op: _Op = ("flush", "")
        self._unflushed = False
        self._flushes_owed += 1
        self.flushes_sent += 1
        self._journal.append(op)
        return [self._encode(op, self.context_id)]

    def end_input(self) -> list[Message]:
        """``continue: false``: the server speaks what is left, then sends ``done``."""
        self._require_open("end input")
        self.input_ended = True
        if self.phase is Phase.IDLE:  # nothing was ever sent: nothing owed
            self.phase = Phase.DONE
            return []
        op: _Op = ("end", "")
        self._unflushed = False
        self._end_owed = True
        self._journal.append(op)
        return [self._encode(op, self.context_id)]

    @property
    def pending_flushes(self) -> int:
        """Flushes and the end of input sent and not yet answered."""
        return self._flushes_owed + int(self._end_owed)

    @property
    def done(self) -> bool:
        """Input ended and every flush (and the end) answered."""
        return self.input_ended and self.pending_flushes == 0

    @property
    def awaiting_audio(self) -> bool:
        """The server owes audio or an answer (a deadline should run)."""
        return self.phase is Phase.ACTIVE and self.pending_flushes > 0

    def clear(self) -> list[Message]:
        """Cancel the context; nothing to send if it never started or already finished."""
        started = self.phase is Phase.ACTIVE
        self.phase = Phase.CANCELLED
        self._flushes_owed = 0
        self._end_owed = False
        self._unflushed = False
        self._journal.clear()
        return [encode_cancel(self.context_id)] if started else []

    def replay(self) -> list[Message] | None:
        """Messages to resend on a new connection, or None if audio was already received.

        The replay uses a new context id (the old context died with its connection).
        """
        if self.audio_since_ack or self.phase in (Phase.DONE, Phase.CANCELLED):
            return None
        if self._next_context_id is None:
            self._next_context_id = self._context_ids()
        return [self._encode(op, self._next_context_id) for op in self._journal]

    def reset_for_replay(self) -> list[Message]:
        """Start over on a fresh connection under a new context id; returns what to send."""
        msgs = self.replay()
        if msgs is None:
            raise ProtocolStateError("nothing can be replayed: audio was already received")
        assert self._next_context_id is not None
        self.context_id, self._next_context_id = self._next_context_id, None
        self._audio_seconds = self._segment_at = 0.0  # the new context's timings start at 0
        ops = self._journal
        self._flushes_owed = sum(1 for kind, _ in ops if kind == "flush")
        self._end_owed = any(kind == "end" for kind, _ in ops)
        last_flush = max((i for i, (kind, _) in enumerate(ops) if kind == "flush"), default=-1)
        self._unflushed = not self._end_owed and any(
            kind == "speak" and text.strip() for kind, text in ops[last_flush + 1 :]
        )
        self.phase = Phase.ACTIVE if ops else Phase.IDLE
        self.audio_since_ack = False
        return msgs

    # -- server side
    def feed(self, frame: str | bytes) -> Action:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> Action:
        if isinstance(event, Malformed):
            return Action(Act.DROP, event, event.reason)
        if isinstance(event, Unknown):
            return Action(Act.DROP, event, f"unknown message type {event.type!r}")
        phase = self.phase
        if isinstance(event, ErrorMessage):
            if event.context_id not in (None, self.context_id):
                return Action(Act.DROP, event, f"error of another context {event.context_id!r}")
            if phase in (Phase.DONE, Phase.CANCELLED):
                return Action(Act.DROP, event, f"error while {phase.value}: {event.describe()}")
            return Action(Act.FAIL, event, event.describe())
        if event.context_id != self.context_id:
            return Action(Act.DROP, event, f"message of another context {event.context_id!r}")
        if phase is not Phase.ACTIVE:
            return Action(Act.DROP, event, f"{type(event).__name__} while {phase.value}")
        if isinstance(event, Chunk):
            if not event.audio:
                return Action(Act.NOTICE, event, "chunk without audio")
            self.audio_since_ack = True
            self._audio_seconds += len(event.audio) / self._bytes_per_second
            return Action(Act.DELIVER, event, audio=event.audio)
        if isinstance(event, FlushDone):
            if self._flushes_owed == 0:
                return Action(Act.DROP, event, f"flush_done {event.flush_id}, none owed")
            self._flushes_owed -= 1
            # Forget what this flush answered; text sent after it is still owed.
            cut = next(i for i, (kind, _) in enumerate(self._journal) if kind == "flush")
            del self._journal[: cut + 1]
            self.audio_since_ack = False
            self._segment_at = self._audio_seconds
            return Action(Act.SEGMENT_DONE, event)
        if isinstance(event, Done):
            if not self._end_owed:
                return Action(
                    Act.FAIL, event, "the server ended the context before the input ended"
                )
            self._end_owed = False
            self._flushes_owed = 0  # nothing more comes for this context
            self._journal.clear()
            self.phase = Phase.DONE
            return Action(Act.STREAM_DONE, event)
        if isinstance(event, Timestamps) and event.words:
            at = -self._segment_at
            return Action(Act.NOTICE, event, words=tuple(w.shifted(at) for w in event.words))
        return Action(Act.NOTICE, event)
