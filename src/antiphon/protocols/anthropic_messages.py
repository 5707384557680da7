"""Anthropic Messages, streamed (sans-I/O): request bodies, stream events, a stream machine, errors.

The wire protocol of ``POST {base_url}/v1/messages`` with ``"stream": true``, as
documented at https://docs.anthropic.com/en/api/messages (the body),
https://docs.anthropic.com/en/docs/build-with-claude/streaming (the events),
https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching (``cache_control``)
and https://docs.anthropic.com/en/api/errors (status codes and the error body):

- :func:`build_body` (in :mod:`~antiphon.protocols.anthropic_request`, re-exported here
  with the URL, headers and :func:`http_error`) turns a conversation (anything shaped like
  :class:`~antiphon.services.llm.ChatMessage`) and tools (anything with ``name``,
  ``description`` and a JSON-schema ``parameters``) into the request body. System
  messages become the top-level ``system``; an assistant's tool calls become
  ``tool_use`` blocks (``input``: the arguments as an object); tool messages become
  ``tool_result`` blocks in the next user turn, and consecutive messages of one role are
  merged into one turn of blocks, since the API alternates ``user`` and ``assistant``.
  ``cache_system`` / ``cache_tools`` put an ephemeral ``cache_control`` breakpoint on the
  system prompt / the last tool (prompt caching, opt-in).
- :func:`parse_event` turns one server-sent event (parsed by the shared
  :class:`~antiphon.protocols.openai_chat.SseParser`) into a typed :data:`ServerEvent`;
  ``ping`` is :class:`Ping`, an event type it does not know is :class:`Unknown` (the
  API's versioning policy adds event types), and an ``error`` event raises
  :class:`~antiphon.protocols.openai_chat.StreamErrorEvent`.
- :class:`MessageStream` is the stream's state machine (``feed(event) -> actions``):
  ``message_start`` → content blocks (``text_delta``s, or ``input_json_delta``s of a
  ``tool_use`` block) → ``message_delta`` (``stop_reason``, cumulative usage) →
  ``message_stop``. It numbers tool-use blocks 0, 1, … (the index antiphon's tool-call
  deltas carry) and refuses events out of order (:class:`Malformed`).
- :func:`http_error` maps an error response to a typed error: 401/403 → ``ChatAuthError``;
  429, 500 and 529 (overloaded) → retryable ``ChatHttpError`` with ``retry_after``;
  400/404/413 → ``ChatRequestError`` with the server's message.

No I/O and no asyncio here; the plugin is ``antiphon.plugins.anthropic.llm``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from antiphon.protocols.anthropic_request import (
    API_VERSION,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_TOKENS,
    MESSAGES_PATH,
    build_body,
    http_error,
    messages_url,
    request_headers,
)
from antiphon.protocols.chat_actions import (
    Action,
    Done,
    Finish,
    FinishReason,
    TextOut,
    ToolArgsOut,
    ToolStartOut,
    UsageOut,
)
from antiphon.protocols.openai_chat import (
    Malformed,
    SseEvent,
    StreamErrorEvent,
    encode_body,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_TOKENS",
    "MESSAGES_PATH",
    "Action",
    "BlockStart",
    "BlockStop",
    "Done",
    "Finish",
    "InputJsonChunk",
    "Malformed",
    "MessageDelta",
    "MessageStart",
    "MessageStop",
    "MessageStream",
    "OtherDelta",
    "Phase",
    "Ping",
    "ServerEvent",
    "StreamErrorEvent",
    "TextChunk",
    "TextOut",
    "ToolArgsOut",
    "ToolStartOut",
    "Unknown",
    "UsageOut",
    "build_body",
    "encode_body",
    "finish_reason",
    "http_error",
    "messages_url",
    "parse_event",
    "request_headers",
]

# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class MessageStart:
    id: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


@dataclass(frozen=True, slots=True)
class BlockStart:
    """A content block opens: ``kind`` ``text``, ``tool_use`` (with ``id``, ``name``) or
    another kind (``thinking``, server tools) that antiphon passes over."""

    index: int
    kind: str
    id: str | None = None
    name: str | None = None
    text: str = ""


@dataclass(frozen=True, slots=True)
class TextChunk:
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class InputJsonChunk:
    index: int
    partial_json: str


@dataclass(frozen=True, slots=True)
class OtherDelta:
    """A delta of a kind antiphon does not use (``thinking_delta``, ``citations_delta``)."""

    index: int
    kind: str


@dataclass(frozen=True, slots=True)
class BlockStop:
    index: int


@dataclass(frozen=True, slots=True)
class MessageDelta:
    stop_reason: str | None
    output_tokens: int
    input_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class MessageStop:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Unknown:
    """An event type this module does not know (ignored, as the API asks)."""

    type: str


ServerEvent = (
    MessageStart
    | BlockStart
    | TextChunk
    | InputJsonChunk
    | OtherDelta
    | BlockStop
    | MessageDelta
    | MessageStop
    | Ping
    | Unknown
)


def _count(obj: Mapping[str, Any], key: str, data: str, *, default: int | None = 0) -> int:
    value = obj.get(key, default)
    if value is None and default is not None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Malformed(f"{key} is not a count", data)
    return value


def _obj(value: Any, what: str, data: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not an object", data)
    return value


def _str(value: Any, what: str, data: str) -> str:
    if not isinstance(value, str):
        raise Malformed(f"{what} is not text", data)
    return value


def parse_event(event: SseEvent) -> ServerEvent:
    """One server-sent event as a typed event (see the module docstring)."""
    data = event.data
    try:
        obj = json.loads(data)
    except json.JSONDecodeError:
        raise Malformed("an event is not JSON", data) from None
    obj = _obj(obj, "an event", data)
    kind = obj.get("type", event.event)
    if kind == "error" or event.event == "error":
        err = obj.get("error")
        err = err if isinstance(err, dict) else {}
        raise StreamErrorEvent(
            str(err.get("message") or "the server reported an error"),
            type=str(err["type"]) if err.get("type") is not None else None,
        )
    if kind == "ping":
        return Ping()
    if kind == "message_start":
        message = _obj(obj.get("message"), "message", data)
        usage = _obj(message.get("usage") or {}, "message.usage", data)
        return MessageStart(
            _str(message.get("id", ""), "message.id", data),
            _str(message.get("model", ""), "message.model", data),
            _count(usage, "input_tokens", data),
            _count(usage, "output_tokens", data),
            _count(usage, "cache_creation_input_tokens", data),
            _count(usage, "cache_read_input_tokens", data),
        )
    if kind in ("content_block_start", "content_block_delta", "content_block_stop"):
        index = _count(obj, "index", data, default=None)
        if kind == "content_block_stop":
            return BlockStop(index)
        if kind == "content_block_start":
            block = _obj(obj.get("content_block"), "content_block", data)
            block_kind = _str(block.get("type"), "content_block.type", data)
            if block_kind == "tool_use":
                return BlockStart(
                    index,
                    block_kind,
                    _str(block.get("id"), "tool_use.id", data),
                    _str(block.get("name"), "tool_use.name", data),
                )
            text = block.get("text", "") if block_kind == "text" else ""
            return BlockStart(index, block_kind, text=_str(text, "text", data))
        delta = _obj(obj.get("delta"), "delta", data)
        delta_kind = _str(delta.get("type"), "delta.type", data)
        if delta_kind == "text_delta":
            return TextChunk(index, _str(delta.get("text"), "delta.text", data))
        if delta_kind == "input_json_delta":
            return InputJsonChunk(index, _str(delta.get("partial_json"), "partial_json", data))
        return OtherDelta(index, delta_kind)
    if kind == "message_delta":
        delta = _obj(obj.get("delta") or {}, "delta", data)
        usage = _obj(obj.get("usage") or {}, "usage", data)
        reason = delta.get("stop_reason")
        if reason is not None:
            reason = _str(reason, "stop_reason", data)
        inp = usage.get("input_tokens")
        return MessageDelta(
            reason,
            _count(usage, "output_tokens", data),
            None if inp is None else _count(usage, "input_tokens", data),
        )
    if kind == "message_stop":
        return MessageStop()
    return Unknown(str(kind))


# --------------------------------------------------------------------------- the stream


_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str) -> FinishReason:
    """antiphon's finish reason for Anthropic's ``stop_reason`` (unknown ones: ``stop``)."""
    return _STOP_REASONS.get(stop_reason, "stop")


class Phase(enum.Enum):
    WAITING = "waiting"
    """Before ``message_start``."""
    MESSAGE = "message"
    """Between blocks."""
    BLOCK = "block"
    """Inside a content block."""
    ENDING = "ending"
    """After ``message_delta``: only ``message_stop`` (or another delta) may come."""
    DONE = "done"


class MessageStream:
    """The state machine of one streamed message: events in, actions out.

    Everything that affects the order of a stream lives here: which phase accepts which
    event, which content block is open, and which tool call a block is.
    """

    def __init__(self) -> None:
        self.phase = Phase.WAITING
        self.message_id: str | None = None
        self.stop_reason: str | None = None
        self._open: int | None = None
        self._open_kind = ""
        self._seen: set[int] = set()
        self._tools: dict[int, int] = {}
        self._with_args: set[int] = set()
        self._prompt = 0
        self._completion = 0

    @property
    def tool_calls(self) -> int:
        return len(self._tools)

    def _bad(self, what: str) -> Malformed:
        return Malformed(f"{what} (phase {self.phase.value})")

    def feed(self, event: ServerEvent) -> list[Action]:
        if isinstance(event, Ping | Unknown):
            return []
        if self.phase is Phase.DONE:
            return []  # anything after message_stop is not part of this message
        match event:
            case MessageStart():
                if self.phase is not Phase.WAITING:
                    raise self._bad("a second message_start")
                self.phase = Phase.MESSAGE
                self.message_id = event.id
                self._prompt = (
                    event.input_tokens
                    + event.cache_creation_input_tokens
                    + event.cache_read_input_tokens
                )
                self._completion = event.output_tokens
                return []
            case _ if self.phase is Phase.WAITING:
                raise self._bad(f"{type(event).__name__} before message_start")
            case BlockStart():
                if self.phase is not Phase.MESSAGE or event.index in self._seen:
                    raise self._bad(f"content_block_start #{event.index} out of order")
                self.phase = Phase.BLOCK
                self._open = event.index
                self._open_kind = event.kind
                self._seen.add(event.index)
                if event.kind == "tool_use":
                    tool = len(self._tools)
                    self._tools[event.index] = tool
                    return [ToolStartOut(tool, event.id or "", event.name or "")]
                if event.kind == "text" and event.text:
                    return [TextOut(event.text)]
                return []
            case TextChunk() | InputJsonChunk() | OtherDelta():
                if self.phase is not Phase.BLOCK or event.index != self._open:
                    raise self._bad(f"a delta of block #{event.index}, which is not open")
                if isinstance(event, TextChunk):
                    if self._open_kind != "text":
                        raise self._bad(f"a text_delta in a {self._open_kind} block")
                    return [TextOut(event.text)] if event.text else []
                if isinstance(event, InputJsonChunk):
                    if self._open_kind != "tool_use":
                        raise self._bad(f"an input_json_delta in a {self._open_kind} block")
                    if not event.partial_json:
                        return []
                    self._with_args.add(event.index)
                    return [ToolArgsOut(self._tools[event.index], event.partial_json)]
                return []
            case BlockStop():
                if self.phase is not Phase.BLOCK or event.index != self._open:
                    raise self._bad(f"content_block_stop of block #{event.index}, not open")
                self.phase = Phase.MESSAGE
                self._open = None
                if event.index in self._tools and event.index not in self._with_args:
                    # no input_json_delta: the input is the empty object
                    return [ToolArgsOut(self._tools[event.index], "{}")]
                return []
            case MessageDelta():
                if self.phase not in (Phase.MESSAGE, Phase.ENDING):
                    raise self._bad("message_delta inside a content block")
                self.phase = Phase.ENDING
                if event.input_tokens is not None:
                    self._prompt = max(self._prompt, event.input_tokens)
                self._completion = event.output_tokens
                actions: list[Action] = [UsageOut(self._prompt, self._completion)]
                if event.stop_reason is not None:
                    self.stop_reason = event.stop_reason
                    actions.append(Finish(finish_reason(event.stop_reason), event.stop_reason))
                return actions
            case MessageStop():
                if self.phase is Phase.BLOCK:
                    raise self._bad("message_stop inside a content block")
                self.phase = Phase.DONE
                return [Done()]
        raise self._bad(f"unexpected {event!r}")  # pragma: no cover - exhaustive above
