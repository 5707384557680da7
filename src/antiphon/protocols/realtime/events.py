"""Server events: :func:`parse` turns one frame into a typed event (``Malformed`` or
``Unknown`` for garbage, never an exception; :func:`parse_message` does the same for a
frame already decoded) and :func:`close_error` maps a close to a typed error."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from antiphon.errors import AuthError, ProviderConnectionError, ProviderError
from antiphon.protocols.json_events import Malformed, Unknown, excerpt, parse_json_event
from antiphon.protocols.realtime.config import NAMES, Dialect

__all__ = [
    "FATAL_ERROR_CODES",
    "RETRYABLE_CLOSES",
    "SERVER",
    "AudioDelta",
    "AudioDone",
    "ConnectionEnding",
    "FunctionArgsDelta",
    "FunctionArgsDone",
    "FunctionCallReady",
    "Ignored",
    "InputTranscript",
    "ItemTruncated",
    "Malformed",
    "OutputItemAdded",
    "OutputItemDone",
    "ResponseCreated",
    "ResponseDone",
    "ServerError",
    "ServerEvent",
    "SessionCreated",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "TranscriptDelta",
    "TranscriptDone",
    "Unknown",
    "Usage",
    "close_error",
    "parse",
    "parse_message",
]

#: Who sends the frames, as named in the reasons of :class:`Malformed`.
SERVER = "the realtime server"


# --------------------------------------------------------------------------- server events


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one response (``response.done``)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class SessionCreated:
    session_id: str


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    session: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class InputTranscript:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True, slots=True)
class OutputItemAdded:
    response_id: str
    item_id: str
    item_type: str
    call_id: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class OutputItemDone:
    response_id: str
    item_id: str
    item_type: str
    call_id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class AudioDelta:
    response_id: str
    item_id: str
    content_index: int
    audio: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    response_id: str
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class FunctionArgsDelta:
    response_id: str
    item_id: str
    call_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class FunctionArgsDone:
    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class FunctionCallReady:
    """A complete function call (made by the state machine, never parsed)."""

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """``reason``: why a response was cancelled or incomplete (``status_details.reason``);
    ``error``: why it failed (``status_details.error``, which the server may send without
    an ``error`` event)."""

    response_id: str
    status: str
    reason: str = ""
    usage: Usage | None = None
    error: ServerError | None = None


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ServerError:
    type: str
    code: str
    message: str
    param: str = ""
    event_id: str = ""


@dataclass(frozen=True, slots=True)
class ConnectionEnding:
    """The server will close this connection in ``time_left`` seconds (Gemini Live's
    ``goAway``): the session should move to a new one before the cut."""

    time_left: float
    notice: str = ""


@dataclass(frozen=True, slots=True)
class Ignored:
    """A known event antiphon has no use for (content parts, rate limits, acks...)."""

    type: str


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | InputTranscript
    | ResponseCreated
    | OutputItemAdded
    | OutputItemDone
    | AudioDelta
    | AudioDone
    | TranscriptDelta
    | TranscriptDone
    | FunctionArgsDelta
    | FunctionArgsDone
    | FunctionCallReady
    | ResponseDone
    | ItemTruncated
    | ServerError
    | ConnectionEnding
    | Ignored
    | Unknown
    | Malformed
)

_IGNORED = frozenset(
    {
        "conversation.created",
        "conversation.item.done",
        "conversation.item.retrieved",
        "conversation.item.deleted",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.segment",
        "conversation.item.input_audio_transcription.failed",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "response.content_part.added",
        "response.content_part.done",
        "rate_limits.updated",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "warning",
    }
)


def _s(v: object) -> str:
    return v if isinstance(v, str) else ""


def _i(v: object) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _d(v: object) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    inp, out = _d(raw.get("input_token_details")), _d(raw.get("output_token_details"))
    return Usage(
        _i(raw.get("input_tokens")),
        _i(raw.get("output_tokens")),
        _i(raw.get("total_tokens")),
        _i(inp.get("audio_tokens")),
        _i(out.get("audio_tokens")),
        _i(inp.get("cached_tokens")),
    )


def _server_error(err: dict[str, Any]) -> ServerError:
    """An ``error`` event's ``error``, or a failed response's ``status_details.error``."""
    return ServerError(
        _s(err.get("type")) or "error",
        _s(err.get("code")),
        _s(err.get("message")) or "no message",
        _s(err.get("param")),
        _s(err.get("event_id")),
    )


def parse(frame: str | bytes, dialect: Dialect) -> ServerEvent:
    """Turn one WebSocket message into a typed event of ``dialect``."""
    msg = parse_json_event(frame, provider=SERVER)
    if isinstance(msg, Malformed):
        return msg
    return parse_message(msg, dialect, frame)


def parse_message(msg: dict[str, Any], dialect: Dialect, frame: str | bytes) -> ServerEvent:
    """:func:`parse` of a message already decoded (by ``parse_json_event``: an object with
    a string ``type``), for a protocol that reads some of its messages first; ``frame``
    is the text it came from (quoted when it is malformed)."""
    kind: str = msg["type"]
    n = NAMES[dialect]
    rid, iid = _s(msg.get("response_id")), _s(msg.get("item_id"))
    if kind == n.audio_delta:
        try:
            audio = base64.b64decode(_s(msg.get("delta")), validate=True)
        except (binascii.Error, ValueError) as exc:
            return Malformed(f"audio delta is not base64: {exc}", excerpt(frame))
        return AudioDelta(rid, iid, _i(msg.get("content_index")), audio)
    if kind == n.audio_done:
        return AudioDone(rid, iid)
    if kind in (n.transcript_delta, n.text_delta):
        return TranscriptDelta(rid, iid, _s(msg.get("delta")))
    if kind in (n.transcript_done, n.text_done):
        return TranscriptDone(rid, iid, _s(msg.get("transcript", msg.get("text"))))
    if kind == "response.function_call_arguments.delta":
        return FunctionArgsDelta(rid, iid, _s(msg.get("call_id")), _s(msg.get("delta")))
    if kind == "response.function_call_arguments.done":
        return FunctionArgsDone(
            rid, iid, _s(msg.get("call_id")), _s(msg.get("name")), _s(msg.get("arguments"))
        )
    if kind == "response.created":
        return ResponseCreated(_s(_d(msg.get("response")).get("id")))
    if kind == "response.done":
        resp = _d(msg.get("response"))
        details = _d(resp.get("status_details"))
        err = details.get("error")
        return ResponseDone(
            _s(resp.get("id")),
            _s(resp.get("status")) or "completed",
            _s(details.get("reason")),
            _usage(resp.get("usage")),
            _server_error(err) if isinstance(err, dict) else None,
        )
    if kind in ("response.output_item.added", "response.output_item.done"):
        item = _d(msg.get("item"))
        args = (_s(item.get("id")), _s(item.get("type")), _s(item.get("call_id")))
        if kind == "response.output_item.added":
            return OutputItemAdded(rid, *args, _s(item.get("name")))
        return OutputItemDone(rid, *args, _s(item.get("name")), _s(item.get("arguments")))
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(iid, _i(msg.get("audio_start_ms")))
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped(iid, _i(msg.get("audio_end_ms")))
    if kind == "conversation.item.input_audio_transcription.completed":
        return InputTranscript(iid, _s(msg.get("transcript")))
    if kind == "conversation.item.truncated":
        return ItemTruncated(iid, _i(msg.get("audio_end_ms")))
    if kind == "session.created":
        return SessionCreated(_s(_d(msg.get("session")).get("id")))
    if kind == "session.updated":
        return SessionUpdated(_d(msg.get("session")))
    if kind == "error":
        return _server_error(_d(msg.get("error")))
    if kind in n.item_added or kind in _IGNORED:
        return Ignored(kind)
    return Unknown(kind, msg)


#: Server error codes after which the session cannot go on.
FATAL_ERROR_CODES = frozenset({"session_expired"})
#: Close codes after which a reconnect may restore the session.
RETRYABLE_CLOSES = frozenset({1000, 1001, 1006, 1011, 1012, 1013})


def close_error(
    code: int | None, reason: str, *, provider: str, stage: str, auth_hint: str
) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``."""
    reason = reason or "no reason given"
    if code == 1008:
        return AuthError(
            f"the server closed the connection: {reason}",
            provider=provider,
            stage=stage,
            code=code,
            hint=auth_hint,
        )
    if code == 4000:
        return ProviderError(
            f"the server refused the protocol shape: {reason}",
            provider=provider,
            stage=stage,
            code=code,
            hint="the endpoint speaks another Realtime dialect (GA vs preview); check the plugin",
        )
    hints = {
        1001: "the server ended the session (maximum duration?)",
        1011: "the server had an internal error; reconnecting usually helps",
    }
    return ProviderConnectionError(
        f"the server closed the connection: {reason}",
        provider=provider,
        stage=stage,
        code=code if code is not None else 1006,
        hint=hints.get(code or 0, "the connection dropped; check the network"),
        retryable=code is None or code in RETRYABLE_CLOSES,
    )
