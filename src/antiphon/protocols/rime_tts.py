"""Rime streaming TTS over the JSON WebSocket (``/ws3``), sans I/O.

The protocol as Rime documents it (there is no official Python SDK on the package index,
so no witness: the documentation is the only source, and what it leaves open is marked
*assumed* below):

- https://docs.rime.ai/api-reference/mistv3/websockets-json (``/ws3``: messages, the
  ``done`` event, word timestamps, the bearer key) and
  https://docs.rime.ai/api-reference/endpoint/websockets-json (the same JSON messages on
  ``/ws2``; context ids);
- https://docs.rime.ai/docs/websockets (``wss://users-ws.rime.ai/ws3``, the flagship
  endpoint for every model).

Synthesis options are query parameters of the upgrade (``speaker``, ``modelId``,
``audioFormat``, ``samplingRate``, ``lang``, ``speedAlpha``, ``segment``); the key is
``Authorization: Bearer``. The client sends ``{"text", "contextId"}`` messages and the
operations ``{"operation": "flush" | "clear" | "eos"}``; the server answers ``chunk``
(base64 audio, with the context id of the text it speaks), ``timestamps``
(``word_timestamps``: parallel ``words``/``start``/``end`` lists, seconds from the start
of that synthesis), ``done`` (a synthesis is complete) and ``error`` (the connection stays
open). Rime keeps no parallel contexts: a context id only tags what comes back.

How antiphon uses it: every stream is a new context id on a pooled connection; antiphon
segments text itself, so it asks for ``segment=never`` (the server speaks on ``flush``
only) and *assumes* one ``done`` per flush, carrying that context id. A cancel sends
``clear``, which Rime does not acknowledge: the connection goes back to the pool at once,
and the next stream's session drops whatever still comes for the old context. The end of
input is a flush, not ``eos`` (which would close a connection antiphon wants to reuse).
Word timestamps are parsed into :class:`WordTimestamps` and reported as notices.

Encoders, a parser to typed events, and :class:`RimeSession`, the
:class:`~antiphon.protocols.tts_session.TTSSession` of one stream.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError, ProviderError
from antiphon.protocols.json_events import Malformed, Unknown, excerpt, parse_json_event
from antiphon.protocols.tts_session import Act, Action, ContextLedger, ProtocolStateError
from antiphon.protocols.tts_session import ContextPhase as Phase
from antiphon.protocols.tts_session import new_context_id as new_context_id
from antiphon.protocols.tts_wire import split_at_spaces

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_SPEAKER",
    "ENCODINGS",
    "MAX_TEXT_CHARS",
    "PATH",
    "PROVIDER",
    "SAMPLE_RATES",
    "Chunk",
    "Done",
    "ErrorMessage",
    "Malformed",
    "Phase",
    "RimeOptions",
    "RimeSession",
    "ServerEvent",
    "Unknown",
    "WordTimestamps",
    "auth_headers",
    "build_url",
    "close_error",
    "encode_operation",
    "encode_text",
    "parse",
]

PROVIDER = "rime"
DEFAULT_BASE_URL = "wss://users-ws.rime.ai"
PATH = "/ws3"
DEFAULT_MODEL = "arcana"
DEFAULT_SPEAKER = "astra"
DEFAULT_SAMPLE_RATE = 24000
#: antiphon's wire encodings → Rime's ``audioFormat`` (mp3 is not streamed as PCM).
ENCODINGS = {"linear16": "pcm", "mulaw": "mulaw"}
#: Sample rates antiphon asks for (assumed supported by every model; Rime names no list).
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
#: Rime's limit on the text of one request; longer text is split on whitespace.
MAX_TEXT_CHARS = 500
SEGMENTS = ("never", "bySentence", "immediate")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class RimeOptions:
    """The query parameters of a ``/ws3`` connection."""

    speaker: str = DEFAULT_SPEAKER
    model: str = DEFAULT_MODEL
    encoding: str = "linear16"
    sample_rate: int = DEFAULT_SAMPLE_RATE
    language: str | None = None
    speed_alpha: float | None = None
    segment: str = "never"

    def __post_init__(self) -> None:
        if not isinstance(self.speaker, str) or not self.speaker.strip():
            raise ConfigError("Rime speaker must name a voice, e.g. 'astra' (see Rime's voices)")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("Rime model must be a model id such as 'arcana' or 'mistv2'")
        if self.encoding not in ENCODINGS:
            raise ConfigError(
                f"Rime encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r} "
                "(mp3 is not offered: antiphon streams PCM)"
            )
        if self.sample_rate not in SAMPLE_RATES:
            raise ConfigError(
                f"Rime sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))}, "
                f"got {self.sample_rate!r}"
            )
        if self.speed_alpha is not None and not 0.1 <= self.speed_alpha <= 10.0:
            raise ConfigError(
                f"Rime speed_alpha must be between 0.1 and 10 (1 is normal; lower is faster), "
                f"got {self.speed_alpha!r}"
            )
        if self.segment not in SEGMENTS:
            raise ConfigError(f"Rime segment must be one of {', '.join(SEGMENTS)}")

    def query(self) -> dict[str, str]:
        q = {
            "speaker": self.speaker,
            "modelId": self.model,
            "audioFormat": ENCODINGS[self.encoding],
            "samplingRate": str(self.sample_rate),
            "segment": self.segment,
        }
        if self.language:
            q["lang"] = self.language
        if self.speed_alpha is not None:
            q["speedAlpha"] = f"{self.speed_alpha:g}"
        return q

    @classmethod
    def from_query(cls, query: dict[str, str]) -> RimeOptions:
        """The options a query names (what the fake checks); ConfigError or ValueError."""
        formats = {v: k for k, v in ENCODINGS.items()}
        audio_format = query.get("audioFormat", "mp3")
        if audio_format not in formats:
            raise ConfigError(f"audioFormat {audio_format!r} is not streamed here")
        speed = query.get("speedAlpha")
        return cls(
            speaker=query.get("speaker", ""),
            model=query.get("modelId", "mistv2"),
            encoding=formats[audio_format],
            sample_rate=int(query.get("samplingRate", "22050")),
            language=query.get("lang"),
            speed_alpha=float(speed) if speed is not None else None,
            segment=query.get("segment", "bySentence"),
        )


def build_url(base_url: str, options: RimeOptions) -> str:
    """``wss://users-ws.rime.ai/ws3?speaker=...``; ``base_url`` is a ws(s) origin, path
    optional (``/ws2`` is kept if given)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(
            f"Rime base_url must look like {DEFAULT_BASE_URL!r} (or ws://127.0.0.1:PORT for "
            f"a local fake), got {base_url!r}"
        )
    path = parts.path.rstrip("/") or PATH
    return f"{parts.scheme}://{parts.netloc}{path}?{urlencode(options.query())}"


def auth_headers(api_key: str) -> dict[str, str]:
    """``Authorization: Bearer <key>``."""
    return {"Authorization": f"Bearer {api_key}"}


# --------------------------------------------------------------------------- messages


def encode_text(text: str, context_id: str) -> list[str]:
    """Text messages for ``text``, split on whitespace into ≤ MAX_TEXT_CHARS pieces."""
    pieces = split_at_spaces(text, MAX_TEXT_CHARS)
    return [json.dumps({"text": p, "contextId": context_id}, ensure_ascii=False) for p in pieces]


def encode_operation(operation: Literal["flush", "clear", "eos"]) -> str:
    return json.dumps({"operation": operation})


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Chunk:
    audio: bytes = field(repr=False)
    context_id: str | None


@dataclass(frozen=True, slots=True)
class WordTimestamps:
    """Which words the audio of a synthesis speaks, when (seconds from its start)."""

    words: tuple[str, ...]
    start: tuple[float, ...]
    end: tuple[float, ...]
    context_id: str | None


@dataclass(frozen=True, slots=True)
class Done:
    context_id: str | None


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    message: str
    context_id: str | None = None


ServerEvent = Chunk | WordTimestamps | Done | ErrorMessage | Unknown | Malformed


def _context(msg: dict[str, Any]) -> str | None:
    cid = msg.get("contextId")
    return cid if isinstance(cid, str) else None


def _timestamps(msg: dict[str, Any], frame: str | bytes) -> ServerEvent:
    wt = msg.get("word_timestamps")
    if not isinstance(wt, dict):
        return Malformed("timestamps without a word_timestamps object", excerpt(frame))
    words, start, end = wt.get("words"), wt.get("start"), wt.get("end")
    if not (isinstance(words, list) and isinstance(start, list) and isinstance(end, list)):
        return Malformed("word_timestamps lists are missing", excerpt(frame))
    if not len(words) == len(start) == len(end):
        return Malformed("word_timestamps lists differ in length", excerpt(frame))
    numbers = [*start, *end]
    if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in numbers):
        return Malformed("word_timestamps times are not numbers", excerpt(frame))
    return WordTimestamps(
        tuple(str(w) for w in words),
        tuple(float(t) for t in start),
        tuple(float(t) for t in end),
        _context(msg),
    )


def parse(frame: str | bytes) -> ServerEvent:
    """Turn one WebSocket message into a typed event."""
    msg = parse_json_event(frame, provider="Rime")
    if isinstance(msg, Malformed):
        return msg
    kind = msg["type"]
    if kind == "chunk":
        data = msg.get("data")
        if not isinstance(data, str):
            return Malformed("a chunk without base64 'data'", excerpt(frame))
        try:
            audio = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return Malformed("a chunk whose data is not base64", excerpt(frame))
        return Chunk(audio, _context(msg))
    if kind == "timestamps":
        return _timestamps(msg, frame)
    if kind == "done":
        return Done(_context(msg))
    if kind == "error":
        message = str(msg.get("message") or "the server reported an error")
        return ErrorMessage(message, _context(msg))
    return Unknown(kind, msg)


def close_error(code: int | None, reason: str, *, stage: str) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``.

    Rime documents no close codes; a bad key is refused with HTTP 401 on the upgrade
    (:mod:`antiphon.net.ws` maps it to :class:`~antiphon.errors.AuthError`), and 1008
    after it is taken as the same.
    """
    reason = reason or "no reason given"
    if code == 1008:
        return AuthError(
            f"the server closed the connection: {reason}",
            provider=PROVIDER,
            stage=stage,
            code=code,
            hint="check RIME_API_KEY (or the api_key argument)",
        )
    hints = {
        1000: "the server ended the connection (idle timeout or eos); a new one is opened",
        1001: "the server is going away; a new connection is opened",
        1009: "a message was too large for the server; send shorter text",
        1011: "the server had an internal error; retrying usually helps",
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


Message = str | bytes
_Op = tuple[Literal["speak", "flush"], str]
_FLUSH: _Op = ("flush", "")


class RimeSession(ContextLedger[_Op]):
    """State of one stream: one context id on one (pooled) connection.

    Implements :class:`~antiphon.protocols.tts_session.TTSSession`. Client-side methods
    return the messages to send and update the state *now*; :meth:`receive` decides what
    an incoming event means. Each flush is owed one ``done`` of this context.
    """

    def __init__(self, *, context_ids: Callable[[], str] = new_context_id) -> None:
        # The journal holds operations, encoded again under a new context id if the
        # connection drops before any audio of them arrived.
        super().__init__(_FLUSH, context_ids)

    def _encode(self, op: _Op, context_id: str) -> list[Message]:
        kind, text = op
        if kind == "speak":
            return list(encode_text(text, context_id))
        return [encode_operation("flush")]

    # -- client side
    def speak(self, text: str) -> list[Message]:
        """Text messages for ``text`` (leading blank text is not sent)."""
        op: _Op = ("speak", text)
        return self._encode(op, self.context_id) if self._speaking(text, op) else []

    def flush(self) -> list[Message]:
        """``flush`` if any non-blank text was sent since the last one."""
        self._require_open("flush")
        return self._encode(_FLUSH, self.context_id) if self._flushed() else []

    def clear(self) -> list[Message]:
        """``clear`` what the server still holds; nothing if this context sent nothing."""
        return [encode_operation("clear")] if self._cancelled() else []

    def replay(self) -> list[Message] | None:
        """Messages to resend on a new connection (under a new context id), or None if
        audio was already received."""
        return self._replay_messages(self.context_id) if self._replayable else None

    def _replay_messages(self, context_id: str) -> list[Message]:
        return [m for op in self._journal for m in self._encode(op, context_id)]

    def reset_for_replay(self) -> list[Message]:
        """Start over on a fresh connection under a new context id; returns what to send."""
        if self.replay() is None:
            raise ProtocolStateError("nothing can be replayed: audio was already received")
        self.context_id = self._context_ids()
        self.audio_since_ack = False
        self.phase = Phase.ACTIVE if self._journal else Phase.IDLE
        return self._replay_messages(self.context_id)

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
            if phase is not Phase.ACTIVE:
                return Action(Act.DROP, event, f"error while {phase.value}: {event.message}")
            return Action(Act.FAIL, event, event.message)
        if event.context_id != self.context_id:
            return Action(Act.DROP, event, f"message of another context {event.context_id!r}")
        if phase is not Phase.ACTIVE:
            return Action(Act.DROP, event, f"{type(event).__name__} while {phase.value}")
        if isinstance(event, Chunk):
            if not event.audio:
                return Action(Act.NOTICE, event, "chunk without audio")
            self.audio_since_ack = True
            return Action(Act.DELIVER, event, audio=event.audio)
        if isinstance(event, WordTimestamps):
            return Action(Act.NOTICE, event, "word timestamps")
        if self.pending_flushes == 0:
            return Action(Act.DROP, event, "done, none owed")
        return self._answered(event)
