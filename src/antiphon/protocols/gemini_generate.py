"""Gemini ``streamGenerateContent`` as SSE (sans-I/O): bodies, events, a stream machine, errors.

The wire protocol of ``POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse``
with the key in ``x-goog-api-key``, as documented at
https://ai.google.dev/api/generate-content (the method, ``GenerateContentResponse``,
``FinishReason``, ``UsageMetadata``), https://ai.google.dev/api/caching#Content
(``Content``/``Part``), https://ai.google.dev/gemini-api/docs/function-calling
(``functionDeclarations``, ``functionCall``/``functionResponse`` parts, ``toolConfig``),
https://ai.google.dev/gemini-api/docs/thought-signatures (``thoughtSignature``) and
https://ai.google.dev/gemini-api/docs/troubleshooting (the error body and statuses):

- :func:`build_body` turns a conversation (anything shaped like
  :class:`~antiphon.services.llm.ChatMessage`) and tools into the request body. System
  messages become ``systemInstruction``; ``assistant`` is role ``model``, its tool calls
  ``functionCall`` parts (``args`` an object), each with the ``thoughtSignature`` the model
  gave it (Gemini 3 refuses a replayed call without it; ``signatures`` maps call ids to
  them); ``tool`` messages become ``functionResponse`` parts (``response: {"output":
  ...}``) of a ``user`` turn. Consecutive messages of one role merge into one turn, and
  empty ones are dropped (the API refuses a turn without parts). Tools are
  ``functionDeclarations`` with the JSON-schema ``parametersJsonSchema``.
- :func:`parse_event` turns one server-sent event (parsed by :class:`GeminiSseParser`:
  the shared SSE parser, plus bare JSON lines, the form of an error mid-stream) into
  :data:`ServerEvent`\\ s: text parts (``thought`` summaries are skipped: never spoken),
  whole ``functionCall`` parts (the API does not fragment arguments), usage and the
  finish reason. An ``{"error": ...}`` event or a blocked prompt raises
  :class:`~antiphon.protocols.openai_chat.StreamErrorEvent`.
- :class:`GenerateStream` is the stream's machine (``feed(event) -> actions``): it numbers
  function calls 0, 1, … and names those the API sent without an ``id``; the chunk with a
  ``finishReason`` ends the response (:class:`Done`) and anything after it is ignored.
  ``STOP`` with calls is ``tool_calls``; ``MAX_TOKENS`` ``length``; the safety reasons
  ``content_filter``; a malformed or unexpected function call is an error.
- :func:`http_error` maps an error response (``{"error": {"code", "message", "status",
  "details"}}``) to a typed error: 401/403, and 400 with reason ``API_KEY_INVALID`` (what
  the API answers a wrong key) → ``ChatAuthError``; 429 and 5xx → retryable
  ``ChatHttpError`` with ``retry_after`` from ``google.rpc.RetryInfo`` (or ``Retry-After``);
  400/404 → ``ChatRequestError`` with the server's message.

No I/O and no asyncio here; the plugin is ``antiphon.plugins.gemini.llm``.
"""

from __future__ import annotations

import enum
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from antiphon.errors import ConfigError
from antiphon.protocols.openai_chat import (
    MAX_LINE,
    ChatAuthError,
    ChatHttpError,
    ChatRequestError,
    Malformed,
    MessageLike,
    SseEvent,
    SseParser,
    StreamErrorEvent,
    encode_body,
    parse_retry_after,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_BASE_URL",
    "FAILED",
    "GENERATED_ID_PREFIX",
    "Action",
    "CallPart",
    "Done",
    "Finish",
    "FinishEvent",
    "GeminiSseParser",
    "GenerateStream",
    "Malformed",
    "Phase",
    "ServerEvent",
    "StreamErrorEvent",
    "TextOut",
    "TextPart",
    "ToolCallOut",
    "UsageEvent",
    "UsageOut",
    "build_body",
    "encode_body",
    "finish_reason",
    "http_error",
    "parse_event",
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
FinishReason = Literal["stop", "tool_calls", "length", "content_filter"]


# --------------------------------------------------------------------------- requests


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


# --------------------------------------------------------------------------- events


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


# --------------------------------------------------------------------------- machine


class Phase(enum.Enum):
    STREAMING = "streaming"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class TextOut:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallOut:
    """Function call ``index`` (0, 1, … in the response), whole."""

    index: int
    id: str
    name: str
    arguments: str
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class UsageOut:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    gemini_reason: str


@dataclass(frozen=True, slots=True)
class Done:
    """The response is complete."""


Action = TextOut | ToolCallOut | UsageOut | Finish | Done


def _new_id() -> str:
    return GENERATED_ID_PREFIX + uuid.uuid4().hex[:16]


class GenerateStream:
    """The response's machine: events in, actions out (see the module docstring).

    ``new_id`` names a call the API sent without an id (injectable for tests).
    """

    def __init__(self, *, new_id: Callable[[], str] = _new_id) -> None:
        self.phase = Phase.STREAMING
        self.calls = 0
        self.gemini_reason: str | None = None
        self._new_id = new_id

    def feed(self, event: ServerEvent) -> list[Action]:
        if self.phase is Phase.DONE:
            return []  # nothing after the finish reason counts
        match event:
            case TextPart(text):
                return [TextOut(text)]
            case CallPart(cid, name, args, signature):
                index = self.calls
                self.calls += 1
                return [ToolCallOut(index, cid or self._new_id(), name, args, signature)]
            case UsageEvent(prompt, completion):
                return [UsageOut(prompt, completion)]
            case FinishEvent(reason, message):
                if reason in FAILED:
                    detail = f": {message}" if message else ""
                    raise StreamErrorEvent(
                        f"the model failed ({reason}){detail}", code=reason, type=reason
                    )
                self.phase = Phase.DONE
                self.gemini_reason = reason
                return [Finish(finish_reason(reason, calls=self.calls > 0), reason), Done()]
        raise AssertionError(f"unknown event {event!r}")  # pragma: no cover


# --------------------------------------------------------------------------- errors


def _duration(value: Any) -> float | None:
    """Seconds of a protobuf ``Duration`` in JSON (``"1.5s"``)."""
    if not isinstance(value, str) or not value.endswith("s"):
        return None
    try:
        seconds = float(value[:-1])
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _error_fields(text: str) -> tuple[str, str | None, str | None, float | None]:
    """message, status, reason (ErrorInfo) and retry delay (RetryInfo) of an error body."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return " ".join(text.split())[:300], None, None, None
    if isinstance(obj, list) and obj:  # some proxies wrap the error in a list
        obj = obj[0]
    err = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(err, dict):
        return " ".join(text.split())[:300], None, None, None
    reason: str | None = None
    delay: float | None = None
    for detail in err.get("details") or []:
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.ErrorInfo") and detail.get("reason"):
            reason = str(detail["reason"])
        elif kind.endswith("google.rpc.RetryInfo"):
            delay = _duration(detail.get("retryDelay"))
    status = err.get("status")
    message = str(err.get("message") or status or "error")[:300]
    return message, str(status) if status is not None else None, reason, delay


_HINTS = {
    400: "the request was refused; the server's message says which field",
    404: "check the model name (e.g. 'gemini-2.5-flash') and the API version",
    429: "rate limited or out of quota; slow down, or check the project's limits",
}


def http_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    provider: str,
    stage: str = "request",
    auth_hint: str = "check the API key (GOOGLE_API_KEY or GEMINI_API_KEY, or api_key=...)",
) -> ChatHttpError:
    """The typed error for an error response (see the module docstring)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message, kind, reason, delay = _error_fields(text)
    retry_after = delay if delay is not None else parse_retry_after(headers)
    fields: dict[str, Any] = {
        "provider": provider,
        "stage": stage,
        "status": status,
        "retry_after": retry_after,
        "error_type": kind,
        "error_code": reason,
    }
    summary = f"HTTP {status}" + (f": {message}" if message else "")
    if status in (401, 403) or reason == "API_KEY_INVALID":
        return ChatAuthError(summary, hint=auth_hint, **fields)
    if status == 429 or status >= 500:
        hint = _HINTS.get(status, "a server-side problem; retrying usually helps")
        if retry_after is not None:
            hint += f"; the server asks to retry after {retry_after:g}s"
        return ChatHttpError(summary, hint=hint, retryable=True, **fields)
    if status in _HINTS:
        return ChatRequestError(summary, hint=_HINTS[status], **fields)
    return ChatHttpError(summary, **fields)
