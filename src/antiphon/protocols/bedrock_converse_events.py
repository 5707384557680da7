"""AWS Bedrock ``ConverseStream``: what the server sends, up to a typed event (sans-I/O).

The answer is an ``application/vnd.amazon.eventstream`` body
(:mod:`antiphon.protocols.aws_eventstream` frames it) whose messages carry one event each,
named by the ``:event-type`` header, its JSON the payload. :func:`parse_message` turns one
message into a :data:`ServerEvent`: ``messageStart``, ``contentBlockStart`` (a ``toolUse``
start), ``contentBlockDelta`` (``text`` or a ``toolUse.input`` JSON fragment; reasoning is
skipped), ``contentBlockStop``, ``messageStop`` (``stopReason``), ``metadata``
(``usage``). Bedrock pads events with a random ``p`` field; unknown fields are ignored.
An ``exception`` message (``:exception-type``) raises
:class:`~antiphon.protocols.openai_chat.StreamErrorEvent`; :data:`RETRYABLE_EXCEPTIONS`
names those a retry may cure. :func:`finish_reason` maps ``stopReason`` to antiphon's.
What a sequence of events means is the machine's,
:class:`~antiphon.protocols.bedrock_converse.ConverseStream`.

Part of :mod:`antiphon.protocols.bedrock_converse`, which re-exports it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from antiphon.protocols.aws_eventstream import EventMessage
from antiphon.protocols.chat_actions import FinishReason
from antiphon.protocols.openai_chat import Malformed, StreamErrorEvent

__all__ = [
    "RETRYABLE_EXCEPTIONS",
    "BlockStart",
    "BlockStop",
    "MessageStart",
    "MessageStop",
    "Metadata",
    "ServerEvent",
    "TextChunk",
    "ToolInputChunk",
    "Unknown",
    "finish_reason",
    "parse_message",
]

#: ``:exception-type``\ s of a stream that a retry may cure.
RETRYABLE_EXCEPTIONS = frozenset(
    {"internalServerException", "serviceUnavailableException", "throttlingException"}
)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class MessageStart:
    role: str


@dataclass(frozen=True, slots=True)
class BlockStart:
    """A ``toolUse`` block starts (text blocks start with their first delta)."""

    index: int
    tool_use_id: str
    name: str


@dataclass(frozen=True, slots=True)
class TextChunk:
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolInputChunk:
    index: int
    input: str


@dataclass(frozen=True, slots=True)
class BlockStop:
    index: int


@dataclass(frozen=True, slots=True)
class MessageStop:
    stop_reason: str


@dataclass(frozen=True, slots=True)
class Metadata:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Unknown:
    """An event type this module does not know, or a delta it skips (reasoning)."""

    type: str


ServerEvent = (
    MessageStart
    | BlockStart
    | TextChunk
    | ToolInputChunk
    | BlockStop
    | MessageStop
    | Metadata
    | Unknown
)


def _obj(value: Any, what: str, data: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not an object", data)
    return value


def _index(obj: Mapping[str, Any], data: str) -> int:
    value = obj.get("contentBlockIndex")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Malformed("contentBlockIndex is not an index", data)
    return value


def _count(obj: Mapping[str, Any], key: str, data: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Malformed(f"usage.{key} is not a count", data)
    return value


def parse_message(message: EventMessage) -> ServerEvent:
    """The event of one event-stream message (see the module docstring)."""
    kind = message.header(":message-type") or "event"
    try:
        data = message.payload.decode("utf-8")
        obj = json.loads(data) if data.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Malformed("an event's payload is not JSON", message.payload[:200]) from None
    if kind == "exception":
        name = message.header(":exception-type") or "exception"
        said = (obj.get("message") or obj.get("Message")) if isinstance(obj, dict) else None
        raise StreamErrorEvent(str(said or name), code=name, type=name)
    if kind == "error":
        code = message.header(":error-code") or "error"
        raise StreamErrorEvent(message.header(":error-message") or code, code=code, type=code)
    if kind != "event":
        return Unknown(kind)
    event = message.header(":event-type") or ""
    obj = _obj(obj, event or "an event", data)
    match event:
        case "messageStart":
            return MessageStart(str(obj.get("role", "assistant")))
        case "contentBlockStart":
            start = _obj(obj.get("start") or {}, "start", data)
            tool = start.get("toolUse")
            if tool is None:
                return Unknown("contentBlockStart")
            tool = _obj(tool, "start.toolUse", data)
            tool_id, tool_name = tool.get("toolUseId"), tool.get("name")
            if not isinstance(tool_id, str) or not isinstance(tool_name, str) or not tool_name:
                raise Malformed("a toolUse start without toolUseId and name", data)
            return BlockStart(_index(obj, data), tool_id, tool_name)
        case "contentBlockDelta":
            delta = _obj(obj.get("delta"), "delta", data)
            if "text" in delta:
                if not isinstance(delta["text"], str):
                    raise Malformed("delta.text is not text", data)
                return TextChunk(_index(obj, data), delta["text"])
            if "toolUse" in delta:
                fragment = _obj(delta["toolUse"], "delta.toolUse", data).get("input", "")
                if not isinstance(fragment, str):
                    raise Malformed("delta.toolUse.input is not text", data)
                return ToolInputChunk(_index(obj, data), fragment)
            return Unknown("contentBlockDelta")  # reasoning, citations: not for speech
        case "contentBlockStop":
            return BlockStop(_index(obj, data))
        case "messageStop":
            reason = obj.get("stopReason")
            if not isinstance(reason, str):
                raise Malformed("messageStop without a stopReason", data)
            return MessageStop(reason)
        case "metadata":
            usage = _obj(obj.get("usage") or {}, "usage", data)
            return Metadata(_count(usage, "inputTokens", data), _count(usage, "outputTokens", data))
    return Unknown(event)


_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


def finish_reason(stop_reason: str) -> FinishReason:
    """antiphon's finish reason for Bedrock's ``stopReason`` (unknown ones: ``stop``)."""
    return _FINISH.get(stop_reason, "stop")
