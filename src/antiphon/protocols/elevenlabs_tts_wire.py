"""ElevenLabs multi-context TTS: client messages, server events and close codes, sans I/O.

The wire half of :mod:`antiphon.protocols.elevenlabs_tts`: encoders build the client
messages (initialise a context, text, flush, close the context, keep alive), :func:`parse`
turns one frame into a typed event (audio with its per-chunk character ``alignment``,
``isFinal``, an error), :func:`close_error` maps a close code and its reason to a typed
error. Pure functions and frozen dataclasses with no state, so the session
(:class:`~antiphon.protocols.elevenlabs_tts.ContextSession`) and the test fake share them;
everything is re-exported from ``elevenlabs_tts``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from antiphon.errors import AuthError, ProviderConnectionError, ProviderError
from antiphon.protocols.elevenlabs_tts_options import (
    DEFAULT_INACTIVITY_TIMEOUT,
    MAX_CONTEXTS,
    MAX_INACTIVITY_TIMEOUT,
    PROVIDER,
    StreamOptions,
)
from antiphon.protocols.json_events import Malformed, Unknown, excerpt, parse_json_event
from antiphon.protocols.tts_wire import close_code_error, timed_rows

__all__ = [
    "CLOSE_SOCKET",
    "KEY_HINT",
    "Alignment",
    "Audio",
    "ErrorMessage",
    "Final",
    "FlushDone",
    "Malformed",
    "ServerEvent",
    "Unknown",
    "close_error",
    "encode_close_context",
    "encode_flush",
    "encode_init",
    "encode_keepalive",
    "encode_text",
    "parse",
]


# --------------------------------------------------------------------------- messages


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def encode_init(context_id: str, options: StreamOptions | None = None) -> str:
    """Open a context: text ``" "`` plus voice settings etc. (its first message)."""
    msg: dict[str, Any] = {"text": " ", "context_id": context_id}
    if options is not None:
        msg.update(options.init_fields())
    return _dumps(msg)


def encode_text(context_id: str, text: str, *, flush: bool = False) -> str:
    """Text for a context; ``flush`` makes the server speak everything buffered now."""
    msg: dict[str, Any] = {"text": text, "context_id": context_id}
    if flush:
        msg["flush"] = True
    return _dumps(msg)


def encode_flush(context_id: str) -> str:
    return _dumps({"context_id": context_id, "flush": True})


def encode_close_context(context_id: str) -> str:
    return _dumps({"context_id": context_id, "close_context": True})


def encode_keepalive(context_id: str) -> str:
    """Reset a context's inactivity timer (empty text; never a context's first message)."""
    return _dumps({"text": "", "context_id": context_id})


CLOSE_SOCKET = _dumps({"close_socket": True})


# --------------------------------------------------------------------------- events


#: Characters with their (start, end) in seconds from the start of the message's audio.
Alignment = tuple[tuple[str, float, float], ...]


@dataclass(frozen=True, slots=True)
class Audio:
    """Audio of a context; ``alignment`` times its characters, relative to this chunk."""

    data: bytes
    context_id: str | None
    alignment: Alignment | None = None


@dataclass(frozen=True, slots=True)
class Final:
    """``isFinal``: the last message of a context (may carry a last audio chunk)."""

    context_id: str | None
    data: bytes = b""
    alignment: Alignment | None = None


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    error: str
    message: str
    context_id: str | None = None
    code: int | None = None


@dataclass(frozen=True, slots=True)
class FlushDone:
    """``{"type": "flush_done"}``: seen by clients, undocumented; informational."""

    context_id: str | None


ServerEvent = Audio | Final | ErrorMessage | FlushDone | Unknown | Malformed


def _context_id(msg: dict[str, Any]) -> str | None:
    # The schema says contextId; clients report snake_case context_id too.
    for key in ("contextId", "context_id"):
        value = msg.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _alignment(value: object) -> Alignment | None:
    """``alignment``: ``chars``, ``charStartTimesMs``, ``charDurationsMs`` (per chunk).

    The times count from the start of the message's own audio chunk (clients add up the
    chunks, as the SDK's examples do); ``None`` when absent or inconsistent.
    """
    if not isinstance(value, dict):
        return None
    rows = timed_rows(
        value.get("chars"),
        value.get("charStartTimesMs"),
        value.get("charDurationsMs", value.get("charsDurationsMs")),
    )
    if rows is None:
        return None
    return tuple((c, a / 1000.0, (a + d) / 1000.0) for c, a, d in rows)


def parse(frame: str | bytes) -> ServerEvent:
    """Turn one WebSocket message into a typed event (the server sends JSON text only)."""
    msg = parse_json_event(frame, provider="ElevenLabs", key=None)
    if isinstance(msg, Malformed):
        return msg
    ctx = _context_id(msg)
    if msg.get("error"):
        code = msg.get("code")
        return ErrorMessage(
            str(msg["error"]),
            str(msg.get("message") or ""),
            ctx,
            code if isinstance(code, int) and not isinstance(code, bool) else None,
        )
    data = b""
    audio = msg.get("audio")
    if isinstance(audio, str) and audio:
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            return Malformed(f"audio is not base64: {exc}", excerpt(frame))
    alignment = _alignment(msg.get("alignment"))
    if msg.get("isFinal") is True or msg.get("is_final") is True:
        return Final(ctx, data, alignment)
    if data:
        return Audio(data, ctx, alignment)
    kind = msg.get("type")
    if kind == "flush_done":
        return FlushDone(ctx)
    return Unknown(str(kind or ""), msg)


def _reason_has(reason: str, *words: str) -> bool:
    low = reason.lower()
    return any(w in low for w in words)


KEY_HINT = "check ELEVEN_API_KEY (or ELEVENLABS_API_KEY, or the api_key argument)"


def close_error(code: int | None, reason: str, *, stage: str) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``.

    ElevenLabs closes with 1008 (policy violation) for many things; the reason tells them
    apart: a bad key is an :class:`AuthError`, an idle timeout or a transient server fault
    is retryable, too many contexts, quota and voice-settings misuse are not.
    """
    reason = reason or "no reason given"
    msg = f"the server closed the connection: {reason}"
    if code == 1008:
        if _reason_has(
            reason, "api key", "api_key", "unauthorized", "credential", "authenticat", "forbidden"
        ):
            return AuthError(msg, provider=PROVIDER, stage=stage, code=code, hint=KEY_HINT)
        if _reason_has(reason, "max_active_conversations", "simultaneous contexts"):
            hint = (
                f"at most {MAX_CONTEXTS} contexts may be open on one connection; contexts of "
                "cancelled streams must be closed first (please report this)"
            )
            retryable = False
        elif _reason_has(reason, "quota", "credits", "exceeds your"):
            hint = "the account's character quota is used up; check the ElevenLabs plan"
            retryable = False
        elif _reason_has(reason, "voice_settings"):
            hint = "voice settings may only come with a context's first message (please report)"
            retryable = False
        elif _reason_has(reason, "timeout", "have not received", "inactiv"):
            hint = (
                "the server closed an idle connection or context (inactivity_timeout, default "
                f"{DEFAULT_INACTIVITY_TIMEOUT} s, at most {MAX_INACTIVITY_TIMEOUT} s)"
            )
            retryable = True
        elif _reason_has(reason, "something went wrong", "not charged"):
            hint = "a transient server fault; retrying usually helps"
            retryable = True
        else:
            hint = "a policy violation: check the voice id, model_id and output_format"
            retryable = False
        return ProviderConnectionError(
            msg, provider=PROVIDER, stage=stage, code=code, hint=hint, retryable=retryable
        )
    hints = {
        1000: "the server ended the connection",
        1001: "the server is going away; retrying usually helps",
        1009: "a message was too large for the server; send shorter text",
        1011: "the server had an internal error; retrying usually helps",
        1012: "the service is restarting; retrying usually helps",
        1013: "the service is overloaded; try again later",
    }
    return close_code_error(
        code,
        msg,
        provider=PROVIDER,
        stage=stage,
        hints=hints,
        retryable=(None, 1001, 1006, 1011, 1012, 1013),
    )
