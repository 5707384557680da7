"""Gemini ``streamGenerateContent`` requests (sans-I/O): the URL, the headers, the body.

Everything the client sends lives here; the rule of the module: a conversation goes in, a
JSON-ready ``dict`` comes out, and anything the API would refuse is refused first with a
:class:`~antiphon.errors.ConfigError` that says how to fix it. Sources:
https://ai.google.dev/api/generate-content (the request), https://ai.google.dev/api/caching#Content
(``Content``/``Part``), https://ai.google.dev/gemini-api/docs/function-calling
(``functionDeclarations``, ``functionCall``/``functionResponse`` parts, ``toolConfig``) and
https://ai.google.dev/gemini-api/docs/thought-signatures (``thoughtSignature``).

:func:`build_body` turns a conversation (anything shaped like
:class:`~antiphon.services.llm.ChatMessage`) and tools into the body. System messages
become ``systemInstruction``; ``assistant`` is role ``model``, its tool calls
``functionCall`` parts (``args`` an object), each with the ``thoughtSignature`` the model
gave it (Gemini 3 refuses a replayed call without it; ``signatures`` maps call ids to
them); ``tool`` messages become ``functionResponse`` parts (``response: {"output": ...}``)
of a ``user`` turn. Consecutive messages of one role merge into one turn, and empty ones
are dropped (the API refuses a turn without parts). Tools are ``functionDeclarations``
with the JSON-schema ``parametersJsonSchema``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from antiphon.errors import ConfigError
from antiphon.protocols.openai_chat import MessageLike

__all__ = [
    "API_VERSION",
    "DEFAULT_BASE_URL",
    "GENERATED_ID_PREFIX",
    "TOOL_CHOICES",
    "NamedMessageLike",
    "ToolLike",
    "build_body",
    "request_headers",
    "stream_url",
]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"
#: Ids antiphon gives calls the API sent without one (never sent back as ``id``).
GENERATED_ID_PREFIX = "antiphon-fc-"
TOOL_CHOICES = {"auto": "AUTO", "any": "ANY", "required": "ANY", "none": "NONE"}
_RESERVED = frozenset({"contents", "systemInstruction", "tools", "toolConfig"})
_MODEL = re.compile(r"^[A-Za-z0-9._-]+$")


class ToolLike(Protocol):
    """A tool with a JSON-schema ``parameters`` object (a ``FunctionTool`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]: ...


class NamedMessageLike(MessageLike, Protocol):
    @property
    def name(self) -> str | None: ...


def stream_url(base_url: str, model: str, api_version: str = API_VERSION) -> str:
    """``{base_url}/{api_version}/models/{model}:streamGenerateContent?alt=sse``."""
    base = base_url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base):
        raise ConfigError(
            f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL!r}, got {base_url!r}"
        )
    name = model.strip().removeprefix("models/")
    if not name or not _MODEL.match(name):
        raise ConfigError(f"model must name a Gemini model, e.g. 'gemini-2.5-flash', got {model!r}")
    return f"{base}/{api_version.strip('/')}/models/{name}:streamGenerateContent?alt=sse"


def request_headers(api_key: str) -> dict[str, str]:
    """``x-goog-api-key`` and the content types."""
    return {
        "x-goog-api-key": api_key,
        "content-type": "application/json",
        "accept": "text/event-stream",
    }


def _args(arguments: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        raise ConfigError(f"tool call {name}: arguments are not JSON") from None
    if not isinstance(value, dict):
        raise ConfigError(f"tool call {name}: arguments are not a JSON object")
    return value


def _turns(
    messages: Iterable[NamedMessageLike], signatures: Mapping[str, str]
) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, contents): one content per run of messages of one role."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for m in messages:
        parts: list[dict[str, Any]] = []
        if m.role == "system":
            if m.content:
                system.append(m.content)
            continue
        if m.role == "tool":
            call_id = m.tool_call_id or ""
            name = m.name or names.get(call_id)
            if not name:
                raise ConfigError(f"the tool result for call {call_id!r} names no tool")
            response: dict[str, Any] = {"name": name, "response": {"output": m.content}}
            if call_id and not call_id.startswith(GENERATED_ID_PREFIX):
                response = {"id": call_id, **response}
            parts.append({"functionResponse": response})
            role = "user"
        else:
            role = "model" if m.role == "assistant" else "user"
            if m.content:
                parts.append({"text": m.content})
            for call in m.tool_calls:
                names[call.id] = call.name
                fc: dict[str, Any] = {"name": call.name, "args": _args(call.arguments, call.name)}
                if call.id and not call.id.startswith(GENERATED_ID_PREFIX):
                    fc = {"id": call.id, **fc}
                part: dict[str, Any] = {"functionCall": fc}
                if call.id in signatures:
                    part["thoughtSignature"] = signatures[call.id]
                parts.append(part)
        if not parts:
            continue  # the API refuses a turn without parts
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def _declaration(tool: ToolLike) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name, "description": tool.description}
    params = tool.parameters
    if params.get("properties"):
        out["parametersJsonSchema"] = params
    return out


def build_body(
    messages: Iterable[NamedMessageLike],
    tools: Sequence[ToolLike] = (),
    *,
    signatures: Mapping[str, str] | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    max_output_tokens: int | None = None,
    stop_sequences: Sequence[str] | None = None,
    thinking_budget: int | None = None,
    tool_choice: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of one ``streamGenerateContent`` request (see the module docstring).

    ``tool_choice``: ``"auto"``, ``"any"`` (``"required"``), ``"none"`` or a tool's name
    (``ANY`` restricted to it). Options left at ``None`` are not sent.
    """
    system, contents = _turns(messages, signatures or {})
    if not contents:
        raise ConfigError("a Gemini request needs at least one non-empty user or model turn")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    if tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in tools]}]
    if tool_choice is not None:
        if not tools:
            raise ConfigError("tool_choice needs tools; pass tools=... or drop tool_choice")
        if tool_choice in TOOL_CHOICES:
            config: dict[str, Any] = {"mode": TOOL_CHOICES[tool_choice]}
        elif tool_choice in {t.name for t in tools}:
            config = {"mode": "ANY", "allowedFunctionNames": [tool_choice]}
        else:
            raise ConfigError(
                f"tool_choice must be one of {', '.join(TOOL_CHOICES)} or a tool's name, "
                f"got {tool_choice!r}"
            )
        body["toolConfig"] = {"functionCallingConfig": config}
    generation: dict[str, Any] = {}
    if temperature is not None:
        if not 0.0 <= temperature <= 2.0:
            raise ConfigError(f"temperature must be between 0 and 2, got {temperature!r}")
        generation["temperature"] = temperature
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}")
        generation["topP"] = top_p
    for key, label, value, least in (
        ("topK", "top_k", top_k, 1),
        ("maxOutputTokens", "max_output_tokens", max_output_tokens, 1),
        ("thinkingBudget", "thinking_budget", thinking_budget, -1),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{label} must be an integer >= {least}, got {value!r}")
        if key == "thinkingBudget":
            generation["thinkingConfig"] = {"thinkingBudget": value}
        else:
            generation[key] = value
    if stop_sequences is not None:
        if isinstance(stop_sequences, str) or not all(
            isinstance(s, str) and s for s in stop_sequences
        ):
            raise ConfigError("stop_sequences must be a list of non-empty strings")
        generation["stopSequences"] = list(stop_sequences)
    if generation:
        body["generationConfig"] = generation
    for key, value in (extra or {}).items():
        if key in _RESERVED or key in body:
            raise ConfigError(f"extra body field {key!r} would replace one antiphon sets")
        body[key] = value
    return body
