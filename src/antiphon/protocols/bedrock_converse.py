"""AWS Bedrock ``ConverseStream`` (sans-I/O): the body, the events, a stream machine, errors.

``POST https://bedrock-runtime.{region}.amazonaws.com/model/{modelId}/converse-stream``
(https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html),
authenticated by a Bedrock API key (``Authorization: Bearer``,
https://docs.aws.amazon.com/bedrock/latest/userguide/api-keys.html) or SigV4 over a key
pair (:func:`~antiphon.protocols.aws_eventstream.sigv4_headers`); the answer is an
``application/vnd.amazon.eventstream`` body (:mod:`antiphon.protocols.aws_eventstream`)
whose messages carry one event each, named by the ``:event-type`` header, its JSON the
payload:

- :func:`build_body` turns a conversation (anything shaped like
  :class:`~antiphon.services.llm.ChatMessage`) and tools into the request: ``system``
  text blocks; ``messages`` of ``user``/``assistant`` turns (consecutive messages of one
  role merged; empty ones dropped) with ``text``, ``toolUse`` (``toolUseId``, ``name``,
  ``input`` an object) and ``toolResult`` blocks (``content: [{"text"}]``);
  ``inferenceConfig``; ``toolConfig`` with ``toolSpec``\\ s (``inputSchema.json``) and
  ``toolChoice``.
- :func:`parse_message` turns one event-stream message into a :data:`ServerEvent`:
  ``messageStart``, ``contentBlockStart`` (a ``toolUse`` start), ``contentBlockDelta``
  (``text`` or a ``toolUse.input`` JSON fragment; reasoning is skipped), ``contentBlockStop``,
  ``messageStop`` (``stopReason``), ``metadata`` (``usage``). Bedrock pads events with a
  random ``p`` field; unknown fields are ignored. An ``exception`` message
  (``:exception-type``) raises :class:`~antiphon.protocols.openai_chat.StreamErrorEvent`.
- :class:`ConverseStream` is the machine (``feed(event) -> actions``): tool calls
  numbered 0, 1, … by block; ``messageStop`` gives the finish reason, ``metadata`` (which
  follows it) the usage and the end (:class:`Done`); a body that ends after
  ``messageStop`` without ``metadata`` is complete too (:attr:`ConverseStream.stopped`).
- :func:`http_error` maps an error answer (``{"message"}``, the kind in
  ``x-amzn-ErrorType``) to a typed error.

The request and event shapes are checked against botocore's ``bedrock-runtime`` service
model in the tests (botocore is a test dependency only).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from antiphon.errors import ConfigError
from antiphon.protocols.aws_eventstream import EventMessage
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
from antiphon.protocols.chat_turns import merge_turns, tool_input
from antiphon.protocols.openai_chat import (
    ChatAuthError,
    ChatHttpError,
    ChatRequestError,
    Malformed,
    MessageLike,
    StreamErrorEvent,
    parse_retry_after,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_REGION",
    "RETRYABLE_EXCEPTIONS",
    "Action",
    "BlockStart",
    "BlockStop",
    "ConverseStream",
    "Done",
    "Finish",
    "Malformed",
    "MessageStart",
    "MessageStop",
    "Metadata",
    "ServerEvent",
    "StreamErrorEvent",
    "TextChunk",
    "TextOut",
    "ToolArgsOut",
    "ToolInputChunk",
    "ToolStartOut",
    "Unknown",
    "UsageOut",
    "build_body",
    "converse_stream_url",
    "finish_reason",
    "http_error",
    "parse_message",
]

DEFAULT_REGION = "us-east-1"
DEFAULT_MAX_TOKENS = 1024
TOOL_CHOICES = ("auto", "any", "required", "none")
_RESERVED = frozenset({"messages", "system", "inferenceConfig", "toolConfig", "modelId"})
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
#: ``:exception-type``\ s of a stream that a retry may cure.
RETRYABLE_EXCEPTIONS = frozenset(
    {"internalServerException", "serviceUnavailableException", "throttlingException"}
)


class ToolLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- requests


def converse_stream_url(
    model: str, *, region: str = DEFAULT_REGION, base_url: str | None = None
) -> str:
    """``https://bedrock-runtime.{region}.amazonaws.com/model/{model}/converse-stream``
    (the model id percent-encoded: ids carry ``:``; ARNs carry ``/``)."""
    if not model or not model.strip():
        raise ConfigError(
            "a Bedrock model id is needed, e.g. 'anthropic.claude-3-5-haiku-20241022-v1:0'"
        )
    if base_url is None:
        if not _REGION.match(region):
            raise ConfigError(f"region must be an AWS region such as 'us-east-1', got {region!r}")
        base_url = f"https://bedrock-runtime.{region}.amazonaws.com"
    base = base_url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base):
        raise ConfigError(f"base_url must be an http(s) URL, got {base_url!r}")
    return f"{base}/model/{quote(model.strip(), safe='')}/converse-stream"


def _blocks(message: MessageLike) -> list[dict[str, Any]]:
    if message.role == "tool":
        result = {"toolUseId": message.tool_call_id or "", "content": [{"text": message.content}]}
        return [{"toolResult": result}]
    blocks: list[dict[str, Any]] = []
    if message.content:  # the API refuses blank text blocks
        blocks.append({"text": message.content})
    for call in message.tool_calls:
        use = {
            "toolUseId": call.id,
            "name": call.name,
            "input": tool_input(call.arguments, call.name),
        }
        blocks.append({"toolUse": use})
    return blocks


def conversation(messages: Iterable[MessageLike]) -> tuple[list[str], list[dict[str, Any]]]:
    """The system texts and the ``messages`` turns (see the module docstring)."""
    return merge_turns(messages, _blocks, is_result=lambda block: "toolResult" in block)


def build_body(
    messages: Iterable[MessageLike],
    tools: Sequence[ToolLike] = (),
    *,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    temperature: float | None = None,
    top_p: float | None = None,
    stop_sequences: Sequence[str] | None = None,
    tool_choice: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of one ``ConverseStream`` request (see the module docstring).

    ``tool_choice``: ``"auto"``, ``"any"`` (``"required"``), ``"none"`` (no tools are
    sent) or a tool's name. ``extra``: ``additionalModelRequestFields`` and the like.
    """
    system, turns = conversation(messages)
    if not turns:
        raise ConfigError("a Bedrock request needs at least one non-empty user turn")
    body: dict[str, Any] = {"messages": turns}
    if system:
        body["system"] = [{"text": text} for text in system]
    config: dict[str, Any] = {}
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        config["maxTokens"] = max_tokens
    if temperature is not None:
        if not 0.0 <= temperature <= 1.0:
            raise ConfigError(f"temperature must be between 0 and 1, got {temperature!r}")
        config["temperature"] = temperature
    if top_p is not None:
        if not 0.0 <= top_p <= 1.0:
            raise ConfigError(f"top_p must be between 0 and 1, got {top_p!r}")
        config["topP"] = top_p
    if stop_sequences is not None:
        if isinstance(stop_sequences, str) or not all(
            isinstance(s, str) and s for s in stop_sequences
        ):
            raise ConfigError("stop_sequences must be a list of non-empty strings")
        config["stopSequences"] = list(stop_sequences)
    if config:
        body["inferenceConfig"] = config
    if (
        tool_choice is not None
        and tool_choice not in TOOL_CHOICES
        and tool_choice not in {t.name for t in tools}
    ):
        raise ConfigError(
            f"tool_choice must be one of {', '.join(TOOL_CHOICES)} or a tool's name, "
            f"got {tool_choice!r}"
        )
    if tools and tool_choice != "none":
        specs = []
        for t in tools:
            schema = t.parameters or {"type": "object", "properties": {}}
            specs.append(
                {
                    "toolSpec": {
                        "name": t.name,
                        "description": t.description or t.name,
                        "inputSchema": {"json": schema},
                    }
                }
            )
        tool_config: dict[str, Any] = {"tools": specs}
        if tool_choice in ("any", "required"):
            tool_config["toolChoice"] = {"any": {}}
        elif tool_choice == "auto":
            tool_config["toolChoice"] = {"auto": {}}
        elif tool_choice is not None:
            tool_config["toolChoice"] = {"tool": {"name": tool_choice}}
        body["toolConfig"] = tool_config
    for key, value in (extra or {}).items():
        if key in _RESERVED or key in body:
            raise ConfigError(f"extra body field {key!r} would replace one antiphon sets")
        body[key] = value
    return body


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


# --------------------------------------------------------------------------- machine


class Phase(enum.Enum):
    WAITING = "waiting"  # before messageStart
    MESSAGE = "message"
    STOPPED = "stopped"  # after messageStop, before metadata
    DONE = "done"


class ConverseStream:
    """The machine of one streamed answer: events in, actions out (see the module docstring)."""

    def __init__(self) -> None:
        self.phase = Phase.WAITING
        self.stop_reason: str | None = None
        self._tools: dict[int, int] = {}
        self._with_args: set[int] = set()

    @property
    def stopped(self) -> bool:
        """``messageStop`` arrived: the answer is whole even if ``metadata`` never does."""
        return self.phase in (Phase.STOPPED, Phase.DONE)

    def _bad(self, what: str) -> Malformed:
        return Malformed(f"{what} (phase {self.phase.value})")

    def feed(self, event: ServerEvent) -> list[Action]:
        if isinstance(event, Unknown) or self.phase is Phase.DONE:
            return []
        match event:
            case MessageStart():
                if self.phase is not Phase.WAITING:
                    raise self._bad("a second messageStart")
                self.phase = Phase.MESSAGE
                return []
            case Metadata(prompt, completion):
                if self.phase is Phase.WAITING:
                    raise self._bad("metadata before messageStart")
                self.phase = Phase.DONE
                return [UsageOut(prompt, completion), Done()]
            case _ if self.phase is not Phase.MESSAGE:
                raise self._bad(f"{type(event).__name__} outside the message")
            case BlockStart(index, tool_use_id, name):
                if index in self._tools:
                    raise self._bad(f"toolUse block #{index} started twice")
                tool = len(self._tools)
                self._tools[index] = tool
                return [ToolStartOut(tool, tool_use_id, name)]
            case TextChunk(index, text):
                if index in self._tools:
                    raise self._bad(f"text in toolUse block #{index}")
                return [TextOut(text)] if text else []
            case ToolInputChunk(index, fragment):
                if index not in self._tools:
                    raise self._bad(f"toolUse input for block #{index}, which is no toolUse")
                if not fragment:
                    return []
                self._with_args.add(index)
                return [ToolArgsOut(self._tools[index], fragment)]
            case BlockStop(index):
                if index in self._tools and index not in self._with_args:
                    self._with_args.add(index)
                    return [ToolArgsOut(self._tools[index], "{}")]
                return []
            case MessageStop(reason):
                self.phase = Phase.STOPPED
                self.stop_reason = reason
                return [Finish(finish_reason(reason), reason)]
        raise self._bad(f"unexpected {event!r}")  # pragma: no cover - exhaustive above


# --------------------------------------------------------------------------- errors

_HINTS = {
    400: "the request was refused; the server's message says which field",
    404: "check the model id and the region (is the model enabled in this region?)",
    408: "the model took too long; retry, or shorten the request",
    424: "the model failed; retrying usually helps",
    429: "throttled; slow down, or raise the account's Bedrock quotas",
}


def http_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    provider: str,
    stage: str = "request",
    auth_hint: str = "check the credentials (AWS_BEARER_TOKEN_BEDROCK, or AWS_ACCESS_KEY_ID "
    "and AWS_SECRET_ACCESS_KEY) and the model's access in the Bedrock console",
) -> ChatHttpError:
    """The typed error for an error answer: ``{"message"}``, the kind in ``x-amzn-ErrorType``."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        obj = json.loads(text)
        message = (
            str(obj.get("message") or obj.get("Message") or "")[:300]
            if isinstance(obj, dict)
            else ""
        )
    except (json.JSONDecodeError, ValueError):
        message = " ".join(text.split())[:300]
    kind = next((v for k, v in headers.items() if k.lower() == "x-amzn-errortype"), None)
    kind = kind.split(":")[0] if kind else None
    retry_after = parse_retry_after(headers)
    fields: dict[str, Any] = {
        "provider": provider,
        "stage": stage,
        "status": status,
        "retry_after": retry_after,
        "error_type": kind,
    }
    summary = f"HTTP {status}" + (f" {kind}" if kind else "") + (f": {message}" if message else "")
    auth_kinds = (
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
    )
    if status in (401, 403) or kind in auth_kinds:
        return ChatAuthError(summary, hint=auth_hint, **fields)
    if status in (408, 424, 429) or status >= 500:
        hint = _HINTS.get(status, "a server-side problem; retrying usually helps")
        return ChatHttpError(summary, hint=hint, retryable=True, **fields)
    if status in _HINTS:
        return ChatRequestError(summary, hint=_HINTS[status], **fields)
    return ChatHttpError(summary, **fields)
