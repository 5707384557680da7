"""AWS Bedrock ``ConverseStream``: what the client sends (sans-I/O).

:func:`converse_stream_url` is
``https://bedrock-runtime.{region}.amazonaws.com/model/{modelId}/converse-stream`` (the
model id percent-encoded: ids carry ``:``, ARNs ``/``). :func:`build_body` turns a
conversation (anything shaped like :class:`~antiphon.services.llm.ChatMessage`) and tools
into the request: ``system`` text blocks; ``messages`` of ``user``/``assistant`` turns
(:func:`conversation`: consecutive messages of one role merged, empty ones dropped, by
:func:`~antiphon.protocols.chat_turns.merge_turns`) with ``text``, ``toolUse``
(``toolUseId``, ``name``, ``input`` an object) and ``toolResult`` blocks
(``content: [{"text"}]``); ``inferenceConfig``; ``toolConfig`` with ``toolSpec``\\ s
(``inputSchema.json``) and ``toolChoice``. Every option is checked here, so a bad value
is a :class:`~antiphon.errors.ConfigError` before any request.

Part of :mod:`antiphon.protocols.bedrock_converse`, which re-exports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote

from antiphon.errors import ConfigError
from antiphon.protocols.chat_turns import merge_turns, tool_input
from antiphon.protocols.openai_chat import MessageLike

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_REGION",
    "TOOL_CHOICES",
    "ToolLike",
    "build_body",
    "conversation",
    "converse_stream_url",
]

DEFAULT_REGION = "us-east-1"
DEFAULT_MAX_TOKENS = 1024
TOOL_CHOICES = ("auto", "any", "required", "none")
_RESERVED = frozenset({"messages", "system", "inferenceConfig", "toolConfig", "modelId"})
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")


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
