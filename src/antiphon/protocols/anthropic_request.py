"""Anthropic Messages requests and error responses (sans-I/O), for :mod:`anthropic_messages`.

How it is built: the request side of ``POST {base_url}/v1/messages`` — the URL, the
headers, and :func:`build_body`, which turns a conversation (anything shaped like
:class:`~antiphon.services.llm.ChatMessage`) and tools into the body: system messages
become the top-level ``system``, an assistant's tool calls ``tool_use`` blocks, tool
messages ``tool_result`` blocks in the next user turn, consecutive messages of one role
one turn of blocks (the API alternates ``user`` and ``assistant``), and ``cache_system``
/ ``cache_tools`` put an ephemeral ``cache_control`` breakpoint (prompt caching, opt-in)
— and :func:`http_error`, which maps an error response to a typed error. Documented at
https://docs.anthropic.com/en/api/messages, .../prompt-caching and
https://docs.anthropic.com/en/api/errors. The stream's events and state machine are in
:mod:`antiphon.protocols.anthropic_messages`, which re-exports all of this.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from antiphon.errors import ConfigError
from antiphon.protocols.chat_turns import merge_turns, tool_input
from antiphon.protocols.openai_chat import (
    ChatAuthError,
    ChatHttpError,
    ChatRequestError,
    MessageLike,
    parse_retry_after,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_TOKENS",
    "MESSAGES_PATH",
    "TOOL_CHOICES",
    "ToolLike",
    "build_body",
    "conversation",
    "http_error",
    "messages_url",
    "request_headers",
]

DEFAULT_BASE_URL = "https://api.anthropic.com"
MESSAGES_PATH = "/v1/messages"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
TOOL_CHOICES = ("auto", "any", "required", "none")
_RESERVED = frozenset({"model", "messages", "stream", "system", "tools", "max_tokens"})
_EPHEMERAL = {"type": "ephemeral"}


class ToolLike(Protocol):
    """A tool with a JSON-schema ``parameters`` object (a ``FunctionTool`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]: ...


def messages_url(base_url: str = DEFAULT_BASE_URL) -> str:
    """``{base_url}/v1/messages``; a ``base_url`` ending in ``/v1`` is taken as is."""
    base = base_url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base):
        raise ConfigError(
            f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL!r}, got {base_url!r}"
        )
    if base.endswith(MESSAGES_PATH):
        return base
    if base.endswith("/v1"):
        return base + "/messages"
    return base + MESSAGES_PATH


def request_headers(
    api_key: str, *, version: str = API_VERSION, beta: Sequence[str] = ()
) -> dict[str, str]:
    """``x-api-key``, ``anthropic-version`` (and ``anthropic-beta``) and the content types."""
    headers = {
        "x-api-key": api_key,
        "anthropic-version": version,
        "content-type": "application/json",
        "accept": "text/event-stream",
    }
    if beta:
        headers["anthropic-beta"] = ",".join(beta)
    return headers


def _blocks(message: MessageLike) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content}
        ]
    blocks: list[dict[str, Any]] = []
    if message.content:  # the API refuses empty text blocks
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": tool_input(call.arguments, call.name),
            }
        )
    return blocks


def _is_result(block: dict[str, Any]) -> bool:
    return bool(block["type"] == "tool_result")


def conversation(messages: Iterable[MessageLike]) -> tuple[list[str], list[dict[str, Any]]]:
    """The system texts and the ``messages`` turns (see the module docstring)."""
    system, turns = merge_turns(messages, _blocks, is_result=_is_result)
    for turn in turns:  # one text block alone is sent as plain text, as most clients do
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return system, turns


def build_body(
    messages: Iterable[MessageLike],
    tools: Sequence[ToolLike] = (),
    *,
    model: str,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    stop_sequences: Sequence[str] | None = None,
    tool_choice: str | None = None,
    parallel_tool_calls: bool | None = None,
    cache_system: bool = False,
    cache_tools: bool = False,
    user_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of a streamed message (see the module docstring).

    ``tool_choice``: ``"auto"``, ``"any"`` (or ``"required"``), ``"none"`` or a tool's
    name. ``parallel_tool_calls=False`` sends ``disable_parallel_tool_use``. Options left
    at ``None`` are not sent. ``extra`` adds fields (it may not replace those set here).
    """
    if not isinstance(model, str) or not model.strip():
        raise ConfigError("model is required, e.g. 'claude-sonnet-4-5'")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    system, turns = conversation(messages)
    if not turns:
        raise ConfigError("a message needs at least one user or assistant message")
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": turns,
        "stream": True,
    }
    if system:
        text = "\n\n".join(system)
        if cache_system:
            body["system"] = [{"type": "text", "text": text, "cache_control": dict(_EPHEMERAL)}]
        else:
            body["system"] = text
    if tools:
        wire = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in tools
        ]
        if cache_tools:
            wire[-1]["cache_control"] = dict(_EPHEMERAL)
        body["tools"] = wire
    if temperature is not None:
        if not 0.0 <= temperature <= 1.0:
            raise ConfigError(f"temperature must be between 0 and 1, got {temperature!r}")
        body["temperature"] = temperature
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}")
        body["top_p"] = top_p
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
        body["top_k"] = top_k
    if stop_sequences is not None:
        if isinstance(stop_sequences, str) or not all(
            isinstance(s, str) and s.strip() for s in stop_sequences
        ):
            raise ConfigError("stop_sequences must be a list of non-blank strings")
        body["stop_sequences"] = list(stop_sequences)
    choice = _tool_choice(tool_choice, tools, parallel_tool_calls)
    if choice is not None:
        body["tool_choice"] = choice
    if user_id is not None:
        body["metadata"] = {"user_id": user_id}
    for key, value in (extra or {}).items():
        if key in _RESERVED or key in body:
            raise ConfigError(f"extra body field {key!r} would replace one antiphon sets")
        body[key] = value
    return body


def _tool_choice(
    choice: str | None, tools: Sequence[ToolLike], parallel: bool | None
) -> dict[str, Any] | None:
    if choice is None and (parallel is None or not tools):
        return None
    if choice is not None and not tools:
        raise ConfigError("tool_choice needs tools; pass tools=... or drop tool_choice")
    out: dict[str, Any]
    if choice is None or choice == "auto":
        out = {"type": "auto"}
    elif choice in ("any", "required"):
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif choice in {t.name for t in tools}:
        out = {"type": "tool", "name": choice}
    else:
        raise ConfigError(
            f"tool_choice must be one of {', '.join(TOOL_CHOICES)} or a tool's name, got {choice!r}"
        )
    if parallel is not None:
        out["disable_parallel_tool_use"] = not parallel
    return out


_HINTS = {
    400: "the request was refused; the server's message says which field",
    404: "check the model name and the base URL",
    413: "the request is too large; shorten the history",
    429: "rate limited; slow down, or check your organisation's rate limits",
    529: "Anthropic's API is overloaded; retry later",
}


def http_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    provider: str,
    stage: str = "request",
    auth_hint: str = "check the API key (ANTHROPIC_API_KEY or api_key=...)",
) -> ChatHttpError:
    """The typed error for an error response (see the module docstring)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message, kind = _error_fields(text)
    retry_after = parse_retry_after(headers)
    fields: dict[str, Any] = {
        "provider": provider,
        "stage": stage,
        "status": status,
        "retry_after": retry_after,
        "error_type": kind,
    }
    summary = f"HTTP {status}" + (f" {kind}" if kind else "") + (f": {message}" if message else "")
    if status in (401, 403):
        return ChatAuthError(summary, hint=auth_hint, **fields)
    if status == 429 or status >= 500:
        hint = _HINTS.get(status, "a server-side problem; retrying usually helps")
        if retry_after is not None:
            hint += f"; the server asks to retry after {retry_after:g}s"
        return ChatHttpError(summary, hint=hint, retryable=True, **fields)
    if status in _HINTS:
        return ChatRequestError(summary, hint=_HINTS[status], **fields)
    return ChatHttpError(summary, **fields)


def _error_fields(text: str) -> tuple[str, str | None]:
    """message and type of ``{"type": "error", "error": {"type", "message"}}``."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return " ".join(text.split())[:300], None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict):
        kind = err.get("type")
        return str(err.get("message") or "")[:300], str(kind) if kind is not None else None
    return " ".join(text.split())[:300], None
