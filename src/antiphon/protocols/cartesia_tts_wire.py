"""Cartesia streaming TTS: client messages, server events and close codes, sans I/O.

The wire half of :mod:`antiphon.protocols.cartesia_tts`: :func:`encode_generation` builds
a generation request (text, a flush, or the end of a context) from the options and a context
id, :func:`encode_cancel` a cancel; :func:`parse` turns one frame into a typed event
(``chunk``, ``flush_done``, ``done``, ``timestamps`` with word timings, ``error``), and
:func:`close_error` maps a close code to a typed error. Pure functions and frozen
dataclasses with no state, so the session
(:class:`~antiphon.protocols.cartesia_tts.ContextSession`) and the test fake share them;
everything is re-exported from ``cartesia_tts``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from antiphon.errors import AuthError, ProviderError
from antiphon.protocols.cartesia_tts_options import PROVIDER, CartesiaOptions
from antiphon.protocols.json_events import Malformed, Unknown, excerpt, parse_json_event
from antiphon.protocols.tts_session import WordTiming
from antiphon.protocols.tts_wire import close_code_error, timed_rows

__all__ = [
    "Chunk",
    "Done",
    "ErrorMessage",
    "FlushDone",
    "Malformed",
    "ServerEvent",
    "Timestamps",
    "Unknown",
    "close_error",
    "encode_cancel",
    "encode_generation",
    "parse",
]


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
    rows = timed_rows(value.get("words"), value.get("start"), value.get("end"))
    if rows is None:
        return ()
    return tuple(WordTiming(w, float(a), float(max(a, b))) for w, a, b in rows)


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


ServerEvent = Chunk | FlushDone | Done | Timestamps | ErrorMessage | Unknown | Malformed


def _opt_int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _opt_str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def parse(frame: str | bytes) -> ServerEvent:
    """Turn one WebSocket message into a typed event (Cartesia sends JSON text only)."""
    msg = parse_json_event(frame, provider="Cartesia")
    if isinstance(msg, Malformed):
        return msg
    kind: str = msg["type"]
    cid = _opt_str(msg.get("context_id"))
    if kind == "chunk":
        data = msg.get("data")
        if data is None:
            data = ""
        if not isinstance(data, str):
            return Malformed("chunk whose 'data' is not a string", excerpt(frame))
        try:
            audio = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            return Malformed(f"chunk with invalid base64: {exc}", excerpt(frame))
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
    return close_code_error(
        code,
        f"the server closed the connection: {reason}",
        provider=PROVIDER,
        stage=stage,
        hints=hints,
        retryable=(None, 1000, 1001, 1006, 1011, 1012, 1013, 1014),
    )
