"""OpenAI chat completions: what the client sends (sans-I/O).

The URL (:func:`chat_url`, :func:`azure_chat_url`) and the JSON request body of
``POST {base_url}/chat/completions`` with ``"stream": true``. :func:`build_body` turns a
conversation (anything shaped like :class:`MessageLike`, which
:class:`~antiphon.services.llm.ChatMessage` fits) and tools (anything with a ``schema()``
in the ``{"type": "function", ...}`` format, :class:`ToolLike`) into the body, with
``stream_options: {"include_usage": true}``; assistant messages carry ``tool_calls``,
tool messages their ``tool_call_id``. Every option is checked here, before any socket is
opened, so a bad value is a :class:`~antiphon.errors.ConfigError` at the call, not an
HTTP 400 later. The other LLM protocols (Anthropic, Gemini, Bedrock) read conversations
through the same :class:`MessageLike`, and reuse :func:`encode_body`.

Part of :mod:`antiphon.protocols.openai_chat`, which re-exports it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from antiphon.errors import ConfigError

__all__ = [
    "AZURE_API_VERSION",
    "CHAT_PATH",
    "DEFAULT_BASE_URL",
    "TOOL_CHOICES",
    "MessageLike",
    "ToolCallLike",
    "ToolLike",
    "azure_chat_url",
    "build_body",
    "chat_url",
    "encode_body",
    "message_to_wire",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
CHAT_PATH = "/chat/completions"
AZURE_API_VERSION = "2024-10-21"
TOOL_CHOICES = ("auto", "none", "required")
_RESERVED = frozenset({"model", "messages", "stream", "stream_options", "tools"})


class ToolCallLike(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def arguments(self) -> str: ...


class MessageLike(Protocol):
    """What :func:`build_body` reads of a message (a ``ChatMessage`` fits)."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...

    @property
    def tool_calls(self) -> Sequence[ToolCallLike]: ...

    @property
    def tool_call_id(self) -> str | None: ...


class ToolLike(Protocol):
    """A tool that knows its chat-completions schema (a ``FunctionTool`` fits)."""

    @property
    def name(self) -> str: ...

    def schema(self) -> dict[str, Any]: ...


def chat_url(base_url: str = DEFAULT_BASE_URL) -> str:
    """``{base_url}/chat/completions`` (``base_url`` ends in ``/v1`` for most servers)."""
    base = base_url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base):
        raise ConfigError(
            f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL!r} or "
            f"'http://localhost:11434/v1' (Ollama), got {base_url!r}"
        )
    if base.endswith(CHAT_PATH):
        return base
    return base + CHAT_PATH


def azure_chat_url(endpoint: str, deployment: str, api_version: str = AZURE_API_VERSION) -> str:
    """Azure OpenAI's URL: ``{endpoint}/openai/deployments/{deployment}/chat/completions``
    with the ``api-version`` query."""
    base = endpoint.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+$", base):
        raise ConfigError(
            "azure_endpoint must be the resource URL, e.g. "
            f"'https://NAME.openai.azure.com', got {endpoint!r}"
        )
    if not deployment or not re.match(r"^[A-Za-z0-9._-]+$", deployment):
        raise ConfigError(f"azure_deployment must name a deployment, got {deployment!r}")
    if not api_version.strip():
        raise ConfigError("api_version must be an Azure OpenAI API version, e.g. '2024-10-21'")
    return f"{base}/openai/deployments/{deployment}{CHAT_PATH}?api-version={api_version.strip()}"


def message_to_wire(message: MessageLike) -> dict[str, Any]:
    """One message in the chat-completions format."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments or "{}"},
            }
            for c in message.tool_calls
        ]
    return out


def build_body(
    messages: Iterable[MessageLike],
    tools: Sequence[ToolLike] = (),
    *,
    model: str,
    include_usage: bool = True,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    max_completion_tokens: int | None = None,
    stop: Sequence[str] | None = None,
    seed: int | None = None,
    tool_choice: str | None = None,
    parallel_tool_calls: bool | None = None,
    user: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of a streamed chat completion (see the module docstring).

    ``tool_choice``: ``"auto"``, ``"none"``, ``"required"`` or the name of one tool.
    ``extra`` adds provider-specific fields (it may not replace the ones set here).
    Options left at ``None`` are not sent, so the server's defaults apply.
    """
    if not model or not isinstance(model, str) or not model.strip():
        raise ConfigError("model is required, e.g. 'gpt-4o-mini' (or the name your server uses)")
    wire = [message_to_wire(m) for m in messages]
    if not wire:
        raise ConfigError("a chat completion needs at least one message")
    body: dict[str, Any] = {"model": model, "messages": wire, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    if tools:
        body["tools"] = [t.schema() for t in tools]
    if temperature is not None:
        if not 0.0 <= temperature <= 2.0:
            raise ConfigError(f"temperature must be between 0 and 2, got {temperature!r}")
        body["temperature"] = temperature
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}")
        body["top_p"] = top_p
    for name, value in (
        ("max_tokens", max_tokens),
        ("max_completion_tokens", max_completion_tokens),
    ):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
            body[name] = value
    if stop is not None:
        if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
            raise ConfigError("stop must be a list of non-empty strings")
        body["stop"] = list(stop)
    if seed is not None:
        body["seed"] = seed
    if tool_choice is not None:
        if not tools:
            raise ConfigError("tool_choice needs tools; pass tools=... or drop tool_choice")
        if tool_choice in TOOL_CHOICES:
            body["tool_choice"] = tool_choice
        elif tool_choice in {t.name for t in tools}:
            body["tool_choice"] = {"type": "function", "function": {"name": tool_choice}}
        else:
            raise ConfigError(
                f"tool_choice must be one of {', '.join(TOOL_CHOICES)} or a tool's name, "
                f"got {tool_choice!r}"
            )
    if parallel_tool_calls is not None and tools:
        body["parallel_tool_calls"] = parallel_tool_calls
    if user is not None:
        body["user"] = user
    for key, value in (extra or {}).items():
        if key in _RESERVED or key in body:
            raise ConfigError(f"extra body field {key!r} would replace one antiphon sets")
        body[key] = value
    return body


def encode_body(body: Mapping[str, Any]) -> bytes:
    """The body as compact UTF-8 JSON."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
