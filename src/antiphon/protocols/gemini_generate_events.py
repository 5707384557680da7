"""Gemini ``streamGenerateContent`` responses (sans-I/O): the SSE reader and the events.

Everything the server sends, up to a typed event, lives here (the machine that numbers
calls and ends the response is :mod:`antiphon.protocols.gemini_generate`). Sources:
https://ai.google.dev/api/generate-content (``GenerateContentResponse``, ``FinishReason``,
``UsageMetadata``) and https://ai.google.dev/gemini-api/docs/troubleshooting (an error
mid-stream).

:func:`parse_event` turns one server-sent event (parsed by :class:`GeminiSseParser`: the
shared SSE parser, plus bare JSON lines, the form of an error mid-stream) into
:data:`ServerEvent`\\ s: text parts (``thought`` summaries are skipped: never spoken),
whole ``functionCall`` parts (the API does not fragment arguments), usage and the finish
reason. An ``{"error": ...}`` event or a blocked prompt raises
:class:`~antiphon.protocols.openai_chat.StreamErrorEvent`. :func:`finish_reason` maps
Gemini's finish reasons onto antiphon's: ``STOP`` with calls is ``tool_calls``,
``MAX_TOKENS`` ``length``, the safety reasons ``content_filter``; those in :data:`FAILED`
(a malformed or unexpected function call) are errors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from antiphon.protocols.openai_chat import (
    MAX_LINE,
    Malformed,
    SseEvent,
    SseParser,
    StreamErrorEvent,
)

__all__ = [
    "FAILED",
    "CallPart",
    "FinishEvent",
    "FinishReason",
    "GeminiSseParser",
    "ServerEvent",
    "TextPart",
    "UsageEvent",
    "finish_reason",
    "parse_event",
]

FinishReason = Literal["stop", "tool_calls", "length", "content_filter"]


class GeminiSseParser(SseParser):
    """The shared SSE parser, plus what the API does for an error mid-stream: JSON lines
    without ``data:`` (as the ``google-genai`` SDK's reader expects), gathered until they
    parse and emitted as one event of type ``raw``."""

    def __init__(self, *, max_line: int = MAX_LINE) -> None:
        super().__init__(max_line=max_line)
        self._raw: list[str] = []
        self._raw_size = 0

    def _line(self, raw: bytes, events: list[SseEvent]) -> None:
        stripped = raw.strip()
        if not self._raw and not stripped.startswith((b"{", b"[")):
            super()._line(raw, events)
            return
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("the event stream is not UTF-8", raw) from None
        self._raw.append(line)
        self._raw_size += len(raw)
        if self._raw_size > MAX_LINE:
            raise Malformed("a JSON block without data: grew too long", "\n".join(self._raw))
        text = "\n".join(self._raw)
        try:
            json.loads(text)
        except json.JSONDecodeError:
            return  # not complete yet
        self._raw.clear()
        self._raw_size = 0
        events.append(SseEvent(text, "raw"))


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class CallPart:
    """A whole ``functionCall`` part: ``args`` as JSON text, ``signature`` if it had one."""

    id: str | None
    name: str
    args: str
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class UsageEvent:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class FinishEvent:
    reason: str
    message: str | None = None


ServerEvent = TextPart | CallPart | UsageEvent | FinishEvent


def _obj(value: Any, what: str, data: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not an object", data)
    return value


def _count(obj: Mapping[str, Any], key: str, data: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Malformed(f"usageMetadata.{key} is not a count", data)
    return value


def _part(part: Any, data: str) -> ServerEvent | None:
    part = _obj(part, "a part", data)
    if part.get("thought") is True:
        return None  # a thought summary: never spoken
    signature = part.get("thoughtSignature")
    if signature is not None and not isinstance(signature, str):
        raise Malformed("thoughtSignature is not text", data)
    if "functionCall" in part:
        fc = _obj(part["functionCall"], "functionCall", data)
        name, args, cid = fc.get("name"), fc.get("args", {}), fc.get("id")
        if not isinstance(name, str) or not name:
            raise Malformed("a functionCall has no name", data)
        if args is None:
            args = {}
        _obj(args, "functionCall.args", data)
        if cid is not None and not isinstance(cid, str):
            raise Malformed("functionCall.id is not text", data)
        return CallPart(cid or None, name, json.dumps(args, ensure_ascii=False), signature)
    text = part.get("text")
    if text is not None:
        if not isinstance(text, str):
            raise Malformed("a part's text is not text", data)
        return TextPart(text) if text else None
    return None  # inline data, code execution and parts to come: not for speech


def parse_event(event: SseEvent) -> list[ServerEvent]:
    """The events of one SSE ``data:`` (a ``GenerateContentResponse``), in order: parts,
    usage, then the finish reason."""
    data = event.data.strip()
    try:
        obj = json.loads(data)
    except json.JSONDecodeError:
        raise Malformed("an event is not JSON", data) from None
    obj = _obj(obj, "an event", data)
    if obj.get("error") is not None:
        err = obj["error"]
        if isinstance(err, dict):
            status = err.get("status")
            raise StreamErrorEvent(
                str(err.get("message") or "the server reported an error"),
                code=str(err.get("code")) if err.get("code") is not None else None,
                type=str(status) if status is not None else None,
            )
        raise StreamErrorEvent(str(err))
    feedback = obj.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        blocked = str(feedback["blockReason"])
        raise StreamErrorEvent(f"the prompt was blocked ({blocked})", code=blocked, type=blocked)
    out: list[ServerEvent] = []
    candidates = obj.get("candidates")
    if candidates is None:
        candidates = []
    if not isinstance(candidates, list):
        raise Malformed("candidates is not a list", data)
    first = next((c for c in candidates if isinstance(c, dict) and c.get("index", 0) == 0), None)
    reason: Any = None
    if first is not None:
        content = first.get("content") or {}
        parts = _obj(content, "candidate.content", data).get("parts") or []
        if not isinstance(parts, list):
            raise Malformed("content.parts is not a list", data)
        for raw in parts:
            part = _part(raw, data)
            if part is not None:
                out.append(part)
        reason = first.get("finishReason")
        if reason is not None and not isinstance(reason, str):
            raise Malformed("finishReason is not text", data)
    usage = obj.get("usageMetadata")
    if usage is not None:
        usage = _obj(usage, "usageMetadata", data)
        out.append(
            UsageEvent(
                _count(usage, "promptTokenCount", data),
                _count(usage, "candidatesTokenCount", data)
                + _count(usage, "thoughtsTokenCount", data),
            )
        )
    if reason is not None and first is not None:
        message = first.get("finishMessage")
        out.append(FinishEvent(reason, str(message) if message else None))
    return out


_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "stop",
    "OTHER": "stop",
}
#: Finish reasons that mean the model failed to answer: raised as stream errors.
FAILED = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"})


def finish_reason(reason: str, *, calls: bool) -> FinishReason:
    """antiphon's finish reason for Gemini's (unknown ones: ``stop``)."""
    mapped = _FINISH.get(reason, "stop")
    return "tool_calls" if mapped == "stop" and calls else mapped
