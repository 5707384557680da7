"""OpenAI chat completions, streamed (sans-I/O): request bodies, SSE parsing, chunks, errors.

The wire protocol of ``POST {base_url}/chat/completions`` with ``"stream": true``, which
OpenAI, Azure OpenAI, Ollama, vLLM, xAI and Groq all speak:

- :func:`build_body` turns a conversation (anything shaped like
  :class:`~antiphon.services.llm.ChatMessage`) and tools (anything with a ``schema()``
  in the ``{"type": "function", ...}`` format) into the JSON request body, with
  ``stream: true`` and ``stream_options: {"include_usage": true}``; assistant messages
  carry ``tool_calls``, tool messages their ``tool_call_id``.
- :class:`SseParser` turns the response body, in chunks of any size, into server-sent
  events (the WHATWG ``text/event-stream`` rules: ``\\r\\n``, ``\\n`` or ``\\r`` line ends,
  ``data:`` lines joined, ``:`` comments and keep-alives skipped, an incomplete event at
  the end dropped). Bytes that cannot be an event stream raise :class:`Malformed`.
- :func:`parse_event` (:func:`parse_chunk` for a decoded chunk) turns one event into
  :data:`WireEvent`\\ s: :class:`ContentDelta`,
  :class:`ToolCallFragment`, :class:`Finish`, :class:`UsageReport`, :class:`Done` (the
  ``data: [DONE]`` sentinel) — or raises :class:`StreamErrorEvent` for an in-stream
  ``{"error": ...}`` and :class:`Malformed` for data that is not a chunk. Fields it does
  not know (``logprobs``, ``refusal``, ``reasoning_content``, ``system_fingerprint``) are
  ignored, as is any choice but the first.
- :func:`http_error` maps an error response (status, headers, body) to a typed error:
  401/403 → :class:`ChatAuthError`; 429 and 5xx → retryable :class:`ChatHttpError` with
  ``retry_after`` (``retry-after-ms`` or ``Retry-After``); 400/404/413/422 →
  :class:`ChatRequestError` (a ``ConfigError`` too) with the server's own message.

No I/O and no asyncio here; the plugin is ``antiphon.plugins.openai.llm``.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from antiphon.errors import (
    ConfigError,
    HttpAuthError,
    HttpRequestError,
    HttpStatusError,
)

__all__ = [
    "AZURE_API_VERSION",
    "CHAT_PATH",
    "DEFAULT_BASE_URL",
    "DONE",
    "MAX_LINE",
    "TOOL_CHOICES",
    "ChatAuthError",
    "ChatHttpError",
    "ChatRequestError",
    "ContentDelta",
    "Done",
    "Finish",
    "Malformed",
    "MessageLike",
    "SseEvent",
    "SseParser",
    "StreamErrorEvent",
    "ToolCallFragment",
    "ToolCallLike",
    "ToolLike",
    "UsageReport",
    "WireEvent",
    "azure_chat_url",
    "build_body",
    "chat_url",
    "encode_body",
    "http_error",
    "message_to_wire",
    "parse_chunk",
    "parse_event",
    "parse_retry_after",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
CHAT_PATH = "/chat/completions"
AZURE_API_VERSION = "2024-10-21"
DONE = "[DONE]"
#: Longest line (bytes) the parser buffers before calling the stream garbage.
MAX_LINE = 1024 * 1024
TOOL_CHOICES = ("auto", "none", "required")
_RESERVED = frozenset({"model", "messages", "stream", "stream_options", "tools"})


# --------------------------------------------------------------------------- requests


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


# --------------------------------------------------------------------------- SSE


class Malformed(ValueError):
    """The response is not a chat-completions event stream (``data`` shows the start)."""

    def __init__(self, message: str, data: str | bytes = "") -> None:
        self.data = data[:200] if data else data
        super().__init__(f"{message}: {self.data!r}" if data else message)


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event: its ``data`` (lines joined by ``\\n``), type and id."""

    data: str
    event: str = "message"
    id: str | None = None


_EOL = re.compile(rb"\r\n|\r|\n")


class SseParser:
    """Incremental ``text/event-stream`` parser: bytes in any chunking → events.

    :meth:`feed` returns the events completed by the bytes given; :meth:`close` ends the
    stream (an event not ended by a blank line is dropped, as the standard says).
    ``comments`` counts comment lines (keep-alives).
    """

    def __init__(self, *, max_line: int = MAX_LINE) -> None:
        self._buf = bytearray()
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._first = True
        self._max_line = max_line
        self.comments = 0
        self.closed = False

    def feed(self, data: bytes) -> list[SseEvent]:
        if self.closed:
            raise Malformed("data after the end of the stream")
        self._buf += data
        events: list[SseEvent] = []
        pos = 0
        buf = self._buf
        while True:
            m = _EOL.search(buf, pos)
            if m is None:
                break
            if m.group() == b"\r" and m.end() == len(buf):
                break  # a "\r" at the end may be the first half of "\r\n"
            self._line(bytes(buf[pos : m.start()]), events)
            pos = m.end()
        del buf[:pos]
        if len(buf) > self._max_line:
            raise Malformed(f"a line longer than {self._max_line} bytes", bytes(buf[:200]))
        return events

    def close(self) -> list[SseEvent]:
        """End of the body: a pending ``\\r`` ends its line; no partial event is emitted."""
        events: list[SseEvent] = []
        if self._buf.endswith(b"\r"):
            self._line(bytes(self._buf[:-1]), events)
            self._buf.clear()
        self._buf.clear()
        self._data.clear()
        self.closed = True
        return events

    def _line(self, raw: bytes, events: list[SseEvent]) -> None:
        if self._first:
            self._first = False
            if raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("the event stream is not UTF-8", raw) from None
        if not line:
            if self._data:
                events.append(SseEvent("\n".join(self._data), self._event or "message", self._id))
            self._data = []
            self._event = ""
            return
        if line.startswith(":"):
            self.comments += 1
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        # "retry" and unknown fields are ignored, as the standard says


# --------------------------------------------------------------------------- chunks


@dataclass(frozen=True, slots=True)
class ContentDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallFragment:
    """Part of tool call ``index``: ``id`` and ``name`` come once, ``arguments`` in parts."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str


@dataclass(frozen=True, slots=True)
class UsageReport:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Done:
    """``data: [DONE]``: the response is complete."""


WireEvent = ContentDelta | ToolCallFragment | Finish | UsageReport | Done


class StreamErrorEvent(Exception):
    """The server reported an error inside the stream (``{"error": {...}}``)."""

    def __init__(self, message: str, *, code: str | None = None, type: str | None = None):
        self.message = message
        self.code = code
        self.type = type
        super().__init__(message)


def _int(value: Any, where: str, data: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Malformed(f"{where} is not a count", data)
    return value


def parse_event(event: SseEvent) -> list[WireEvent]:
    """The chat events in one SSE event (often one; none for an empty keep-alive chunk)."""
    data = event.data.strip()
    if data == DONE:
        return [Done()]
    try:
        obj = json.loads(data)
    except json.JSONDecodeError:
        raise Malformed("an event is not JSON", data) from None
    if not isinstance(obj, dict):
        raise Malformed("an event is not a JSON object", data)
    if obj.get("error") is not None or event.event == "error":
        raise _stream_error(obj)
    return parse_chunk(obj, data)


def parse_chunk(obj: Mapping[str, Any], data: str = "") -> list[WireEvent]:
    """The chat events in one decoded ``chat.completion.chunk`` object (what an SSE event
    carries, or what an in-process engine with the same API yields); ``data`` is quoted in
    a :class:`Malformed` error."""
    if obj.get("error") is not None:
        raise _stream_error(dict(obj))
    out: list[WireEvent] = []
    choices = obj.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise Malformed("choices is not a list of objects", data)
    first = next((c for c in choices if c.get("index", 0) == 0), None)
    if first is not None:
        delta = first.get("delta") or {}
        if not isinstance(delta, dict):
            raise Malformed("delta is not an object", data)
        content = delta.get("content")
        if content is not None:
            if not isinstance(content, str):
                raise Malformed("delta.content is not text", data)
            if content:
                out.append(ContentDelta(content))
        calls = delta.get("tool_calls") or []
        if not isinstance(calls, list):
            raise Malformed("delta.tool_calls is not a list", data)
        for position, call in enumerate(calls):
            out.append(_fragment(call, position, data))
        reason = first.get("finish_reason")
        if reason is not None:
            if not isinstance(reason, str):
                raise Malformed("finish_reason is not text", data)
            out.append(Finish(reason))
    usage = obj.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise Malformed("usage is not an object", data)
        out.append(
            UsageReport(
                _int(usage.get("prompt_tokens", 0), "usage.prompt_tokens", data),
                _int(usage.get("completion_tokens", 0), "usage.completion_tokens", data),
            )
        )
    return out


def _fragment(call: Any, position: int, data: str) -> ToolCallFragment:
    if not isinstance(call, dict):
        raise Malformed("a tool call delta is not an object", data)
    index = call.get("index", position)  # some servers (older Ollama) send no index
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise Malformed("a tool call's index is not a count", data)
    fn = call.get("function") or {}
    if not isinstance(fn, dict):
        raise Malformed("a tool call's function is not an object", data)
    cid, name, args = call.get("id"), fn.get("name"), fn.get("arguments")
    if isinstance(args, dict):  # some servers send the arguments as an object
        args = json.dumps(args)
    for what, value in (("id", cid), ("name", name), ("arguments", args)):
        if value is not None and not isinstance(value, str):
            raise Malformed(f"a tool call's {what} is not text", data)
    return ToolCallFragment(index, cid or None, name or None, args or "")


def _stream_error(obj: dict[str, Any]) -> StreamErrorEvent:
    err = obj.get("error", obj)
    if isinstance(err, dict):
        message = str(err.get("message") or "the server reported an error")
        code = err.get("code")
        kind = err.get("type")
        return StreamErrorEvent(
            message,
            code=str(code) if code is not None else None,
            type=str(kind) if kind is not None else None,
        )
    return StreamErrorEvent(str(err))


# --------------------------------------------------------------------------- errors


ChatHttpError = HttpStatusError
"""An error status from the server (the one HTTP error class of :mod:`antiphon.errors`)."""
ChatAuthError = HttpAuthError
ChatRequestError = HttpRequestError


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = float("nan")
        if value == value and value >= 0:
            return value
    raw = (lower.get("retry-after") or "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_HINTS = {
    400: "the request was refused; the server's message says which field",
    404: "check the model name (or Azure deployment) and the base URL",
    413: "the conversation is too large; shorten the history",
    422: "the request was refused; the server's message says which field",
    429: "rate limited or out of quota; slow down, or check the plan's limits",
}


def http_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    provider: str,
    stage: str = "request",
    auth_hint: str = "check the API key (OPENAI_API_KEY or api_key=...)",
) -> ChatHttpError:
    """The typed error for an error response (see the module docstring)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message, kind, code, param = _error_fields(text)
    retry_after = parse_retry_after(headers)
    fields: dict[str, Any] = {
        "provider": provider,
        "stage": stage,
        "status": status,
        "retry_after": retry_after,
        "error_type": kind,
        "error_code": code,
        "param": param,
    }
    summary = f"HTTP {status}" + (f": {message}" if message else "")
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


def _error_fields(text: str) -> tuple[str, str | None, str | None, str | None]:
    """message, type, code and param of an OpenAI-style error body (or its plain text)."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return " ".join(text.split())[:300], None, None, None
    err = obj.get("error", obj) if isinstance(obj, dict) else obj
    if isinstance(err, str):  # Ollama: {"error": "model 'x' not found"}
        return err[:300], None, None, None
    if isinstance(err, dict):
        message = err.get("message") or err.get("detail") or json.dumps(err)[:300]

        def opt(key: str) -> str | None:
            value = err.get(key)
            return str(value) if value is not None else None

        return str(message)[:300], opt("type"), opt("code"), opt("param")
    return " ".join(text.split())[:300], None, None, None
