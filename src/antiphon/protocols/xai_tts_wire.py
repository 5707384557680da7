"""xAI streaming TTS: client messages, server events and close codes, sans I/O.

The wire half of :mod:`antiphon.protocols.xai_tts`: encoders for the client messages
(``text.delta``, split at :data:`MAX_DELTA_CHARS`; ``text.done``; ``text.clear``),
:func:`parse`, which turns one frame into a typed event (``audio.delta`` with its optional
per-character timestamps, ``audio.done``, ``audio.clear``, ``error``; anything else is
``Unknown`` or ``Malformed``, never an exception), and :func:`close_error`, which maps a
close code and its reason to a typed error. Pure functions and frozen dataclasses with no
state, so the session (:class:`~antiphon.protocols.xai_tts.XAISession`) and the test fake
share them; everything is re-exported from ``xai_tts``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from antiphon.errors import AuthError, ProviderConnectionError, ProviderError
from antiphon.protocols.json_events import Malformed, Unknown, excerpt, parse_json_event
from antiphon.protocols.tts_wire import split_at_spaces
from antiphon.protocols.xai_tts_options import PROVIDER

__all__ = [
    "AUTH_CLOSE_CODES",
    "MAX_DELTA_CHARS",
    "RETRYABLE_CLOSE_CODES",
    "TEXT_CLEAR",
    "TEXT_DONE",
    "AudioClear",
    "AudioDelta",
    "AudioDone",
    "ErrorMessage",
    "Malformed",
    "ServerEvent",
    "Timestamps",
    "Unknown",
    "close_error",
    "encode_text_delta",
    "parse",
    "split_text",
]

#: Longest ``text.delta``; longer text is split on whitespace.
MAX_DELTA_CHARS = 15000


# --------------------------------------------------------------------------- messages


def split_text(text: str, limit: int = MAX_DELTA_CHARS) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at the last space if any.

    The pieces concatenate back to ``text`` exactly.
    """
    return split_at_spaces(text, limit)


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
    msg = parse_json_event(frame, provider="xAI")
    if isinstance(msg, Malformed):
        return msg
    kind = msg["type"]
    if kind == "audio.delta":
        delta = msg.get("delta")
        if delta is None:
            delta = ""
        if not isinstance(delta, str):
            return Malformed("audio.delta with a non-string 'delta'", excerpt(frame))
        try:
            data = base64.b64decode(delta, validate=True)
        except (binascii.Error, ValueError):
            return Malformed("audio.delta whose 'delta' is not base64", excerpt(frame))
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


# --------------------------------------------------------------------------- close codes


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
