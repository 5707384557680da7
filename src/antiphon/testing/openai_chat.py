"""A fake OpenAI chat-completions server: ``POST /v1/chat/completions``, streamed as SSE.

:class:`FakeOpenAIChat` is a loopback HTTP/1.1 server (keep-alive, chunked transfer
encoding) that checks what OpenAI checks — the path, ``Authorization: Bearer KEY`` (or,
on Azure's ``/openai/deployments/NAME/chat/completions?api-version=...`` path, the
``api-key`` header), ``Content-Type: application/json``, and the body: ``model``,
``messages`` (roles, assistant ``tool_calls`` answered by ``tool`` messages with their
``tool_call_id``), ``tools``, ``tool_choice``/``parallel_tool_calls`` only with tools,
``stream: true`` — and refuses with OpenAI's error body (``{"error": {"message", "type",
"param", "code"}}``). It streams each answer exactly as OpenAI does: a first chunk with
the role, one chunk per token (``" word"`` pieces), tool calls as an ``id``/``name``
chunk then ``arguments`` in fragments, a chunk with the ``finish_reason``, a usage chunk
when ``stream_options.include_usage`` is set, and ``data: [DONE]``.

Replies are scripted: a :class:`Reply` (every request), a sequence of them (one per
request in order, then :func:`default_reply`), or a function of the request body. The
script, the request reader and the SSE answer are every chat fake's, in
:mod:`antiphon.testing.chat_server` (re-exported here); this module adds OpenAI's events,
checks and error bodies.

Fault plan fields that apply, in this protocol's terms:

- ``hang_connect``: accept TCP, read, never answer.
- ``reject_status``: answer every request (or the first ``reject_requests``) with that
  status and an OpenAI error body; 429 and 503 carry ``Retry-After`` (``retry_after``).
- ``drop_before_audio``: close the connection after reading each of the first N
  requests, without an answer.
- ``silent_after``: requests after the first ``silent_after`` get a ``200`` head and then
  nothing (no token, no end).
- ``first_audio_delay``: seconds between the head and the first chunk (a slow first
  token); ``chunk_interval``: seconds between chunks (a large one stalls the stream after
  its first chunk).
- ``close_mid_audio``: after ``close_after_chunks`` token chunks, cut the stream:
  ``ABORT`` resets the TCP connection, ``1000`` ends the body cleanly but without a
  finish_reason or ``[DONE]``, any other value closes the socket mid-body.
- ``error_mid_stream``: after ``close_after_chunks`` token chunks, send OpenAI's in-stream
  ``{"error": {...}}`` event and end the body.
- ``malformed_mid_stream``: after the first token, a chunk of an unknown shape, a
  keep-alive comment, and then data that is not JSON.
- ``audio_after_done``: that many more token chunks after ``data: [DONE]``, in the same
  body (a client must stop at ``[DONE]``).
- ``odd_chunking``: write the event stream in 7-byte HTTP chunks (cutting lines, UTF-8
  characters and the blank line that ends an event).
- ``idle_close_after`` / ``max_connection_age``: close keep-alive connections idle for
  that long / older than that (a busy one after its response).

Not applicable (no upgrade, close frames or cancel message in HTTP): ``close_on_open``,
``close_on_open_reason``, ``close_reason``, ``audio_after_clear``, ``ignore_clear``. A
client's cancel is a closed connection; ``stats.cancels`` counts those the fake noticed.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from antiphon.testing.chat_server import (
    DEFAULT_API_KEY,
    MAX_BODY,
    ChatConnection,
    ChatFakeStats,
    ChatRequest,
    FakeChatServer,
    Reply,
    Responder,
    ScriptedCall,
    default_reply,
)

__all__ = [
    "ARGUMENT_FRAGMENT",
    "DEFAULT_API_KEY",
    "MAX_BODY",
    "ChatConnection",
    "ChatFakeStats",
    "ChatRequest",
    "FakeChatServer",
    "FakeOpenAIChat",
    "Reply",
    "Responder",
    "ScriptedCall",
    "default_reply",
]

ARGUMENT_FRAGMENT = 8
_ROLES = ("system", "developer", "user", "assistant", "tool")


class FakeOpenAIChat(FakeChatServer):
    """``http://127.0.0.1:PORT/v1/chat/completions`` (point ``base_url`` at :attr:`base_url`).

    ``replies``: see the module docstring. ``reject_requests``: with
    ``plan.reject_status``, refuse only that many requests, then answer normally.
    ``retry_after``: the ``Retry-After`` value sent with 429 and 503.
    """

    @property
    def base_url(self) -> str:
        """The ``base_url`` to give a client (``http://127.0.0.1:PORT/v1``)."""
        return self.url + "/v1"

    def connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> _Conn:
        return _Conn(self, reader, writer, index)


def _error_body(message: str, kind: str, code: str | None, param: str | None = None) -> str:
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


_REJECTIONS: dict[int, tuple[str, str, str | None]] = {
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model.", "invalid_request_error", None),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


class _Conn(ChatConnection):
    """One client connection: requests one after another (keep-alive)."""

    def __init__(
        self,
        server: FakeOpenAIChat,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        index: int,
    ) -> None:
        super().__init__(server, reader, writer, index)
        self.server = server

    def error_text(self, status: int, message: str | None) -> str:
        return message or "request body too large"

    def error_head(self, status: int, length: int, keep_alive: bool) -> list[str]:
        return [
            "Content-Type: application/json",
            f"Content-Length: {length}",
            f"x-request-id: req_fake_{next(self.server._ids)}",
            "Connection: " + ("keep-alive" if keep_alive else "close"),
        ]

    def rejection(self, status: int) -> tuple[str, dict[str, str]]:
        message, kind, code = _REJECTIONS.get(
            status, (f"rejected by fault plan ({status})", "invalid_request_error", None)
        )
        extra = {"Retry-After": self.server.retry_after} if status in (429, 503) else {}
        return _error_body(message, kind, code), extra

    def stream_head(self, keep_alive: bool) -> list[str]:
        return [
            "Content-Type: text/event-stream; charset=utf-8",
            "Transfer-Encoding: chunked",
            "Cache-Control: no-cache",
            f"x-request-id: req_fake_{next(self.server._ids)}",
            "openai-processing-ms: 1",
            "Connection: " + ("keep-alive" if keep_alive else "close"),
        ]

    def check(self, request: ChatRequest) -> tuple[int, str] | None:
        """OpenAI's checks, in its order: path, auth, then the body."""
        h = request.headers
        path = request.path.rstrip("/")
        azure = re.fullmatch(r"/openai/deployments/[A-Za-z0-9._-]+/chat/completions", path)
        if not azure and path != "/v1/chat/completions":
            return 404, _error_body(
                f"Invalid URL (POST {request.path})", "invalid_request_error", None
            )
        if request.method != "POST":
            return 405, _error_body("Use POST.", "invalid_request_error", None)
        if azure:
            if not request.query.get("api-version"):
                return 404, json.dumps(
                    {"error": {"code": "404", "message": "Resource not found (api-version)"}}
                )
            if h.get("api-key") != self.server.api_key:
                return 401, json.dumps(
                    {
                        "error": {
                            "code": "401",
                            "message": "Access denied due to invalid subscription key.",
                        }
                    }
                )
        elif h.get("authorization") != f"Bearer {self.server.api_key}":
            message, kind, code = _REJECTIONS[401]
            return 401, _error_body(message, kind, code)
        if h.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return 400, _error_body(
                "Content-Type must be application/json", "invalid_request_error", None
            )
        problem = _check_body(request.json)
        if problem is not None:
            message, param = problem
            return 400, _error_body(message, "invalid_request_error", None, param)
        return None

    async def stream(self, reply: Reply, body: dict[str, Any]) -> bool:
        """Stream one reply; False if the connection must close afterwards."""
        cid = f"chatcmpl-fake{next(self.server._ids)}"
        model = str(body.get("model"))
        usage_on = bool((body.get("stream_options") or {}).get("include_usage"))

        def event(choices: list[dict[str, Any]], usage: Any = None) -> bytes:
            obj: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            if usage_on:
                obj["usage"] = usage
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        pieces: list[bytes] = []
        first_delta: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        if not reply.text and reply.tool_calls:
            first_delta["content"] = None
        pieces.append(event(choice(first_delta)))
        tokens = reply.tokens()
        for token in tokens:
            pieces.append(event(choice({"content": token})))
        for i, call in enumerate(reply.tool_calls):
            call_id = call.id or f"call_fake{next(self.server._ids)}"
            start = {"index": i, "id": call_id, "type": "function"}
            start["function"] = {"name": call.name, "arguments": ""}
            pieces.append(event(choice({"tool_calls": [start]})))
            args = call.arguments_json()
            for pos in range(0, len(args), ARGUMENT_FRAGMENT):
                frag = {"index": i, "function": {"arguments": args[pos : pos + ARGUMENT_FRAGMENT]}}
                pieces.append(event(choice({"tool_calls": [frag]})))
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        pieces.append(event(choice({}, finish)))
        prompt = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
        completion = len(tokens) + len(reply.tool_calls)
        if usage_on:
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            pieces.append(event([], usage))
        message, kind, code = _REJECTIONS[500]
        error = f"data: {_error_body(message, kind, code)}\n\n".encode()
        return await self.stream_sse(
            [(piece, i > 0) for i, piece in enumerate(pieces)],
            error=lambda: error,
            malformed=(
                b'data: {"object": "chat.completion.unknown", "x": 1}\n\n',
                b": keep-alive\n\n",
                b"data: {this is not json\n\n",
            ),
            done=b"data: [DONE]\n\n",
            stale=lambda: event(choice({"content": " stale"})),
        )


def _check_body(body: Any) -> tuple[str, str | None] | None:
    """OpenAI's validation of a chat-completions body: (message, param) or None."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request.", None
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "you must provide a model parameter", "model"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array", "messages"
    if body.get("stream") is not True:
        return "this fake only streams: set 'stream': true", "stream"
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            return "'tools' must be a non-empty array", "tools"
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(fn, dict):
                return f"Invalid tool at tools[{i}]", f"tools[{i}]"
            if not isinstance(fn.get("name"), str) or not re.fullmatch(
                r"[a-zA-Z0-9_-]{1,64}", fn["name"]
            ):
                return f"Invalid 'tools[{i}].function.name'", f"tools[{i}].function.name"
            params = fn.get("parameters")
            if params is not None and (
                not isinstance(params, dict) or params.get("type") != "object"
            ):
                return f"Invalid schema for function '{fn['name']}'", f"tools[{i}]"
            names.add(fn["name"])
    for key in ("tool_choice", "parallel_tool_calls"):
        if key in body and not tools:
            return f"'{key}' is only allowed when 'tools' are specified.", key
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("function", {}).get("name") not in names:
        return "tool_choice names a tool that is not in 'tools'", "tool_choice"
    pending: set[str] = set()
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return f"Invalid value for '{where}.role'", f"{where}.role"
        role, content = m["role"], m.get("content")
        if pending and role != "tool":
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'. Missing: {', '.join(sorted(pending))}",
                where,
            )
        if role == "tool":
            cid = m.get("tool_call_id")
            if cid not in pending:
                return (
                    "Messages with role 'tool' must be a response to a preceeding message "
                    "with 'tool_calls'.",
                    where,
                )
            pending.discard(cid)
        if content is None and not (role == "assistant" and m.get("tool_calls")):
            return f"Invalid value for '{where}.content': expected a string", f"{where}.content"
        if content is not None and not isinstance(content, str):
            return f"Invalid type for '{where}.content'", f"{where}.content"
        if role == "assistant" and m.get("tool_calls") is not None:
            calls = m["tool_calls"]
            if not isinstance(calls, list) or not calls:
                return f"'{where}.tool_calls' must be a non-empty array", f"{where}.tool_calls"
            for c in calls:
                fn = c.get("function") if isinstance(c, dict) else None
                if (
                    not isinstance(c, dict)
                    or not isinstance(c.get("id"), str)
                    or c.get("type") != "function"
                    or not isinstance(fn, dict)
                    or not isinstance(fn.get("name"), str)
                    or not isinstance(fn.get("arguments"), str)
                ):
                    return f"Invalid '{where}.tool_calls'", f"{where}.tool_calls"
                pending.add(c["id"])
    if pending:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages "
            f"responding to each 'tool_call_id'. Missing: {', '.join(sorted(pending))}",
            "messages",
        )
    return None
