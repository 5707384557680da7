"""A fake Anthropic Messages server: ``POST /v1/messages``, streamed as server-sent events.

:class:`FakeAnthropicMessages` is a loopback HTTP/1.1 server (keep-alive, chunked transfer
encoding) that checks what the Messages API checks — the path, the key (``x-api-key``, or
``Authorization: Bearer`` as the ``anthropic`` SDK 2.x sends it), the
``anthropic-version`` header, ``content-type: application/json`` and the body: ``model``,
``max_tokens``, ``messages`` with ``user``/``assistant`` roles only (a system prompt goes
in the top-level ``system``), content blocks (no empty text; every ``tool_use`` answered
by a ``tool_result`` in the next user turn), ``tools`` (names, an object
``input_schema``), ``tool_choice`` only with tools, ``cache_control`` of type
``ephemeral`` on at most four blocks, ``stream: true`` — and refuses with Anthropic's
error body (``{"type": "error", "error": {"type", "message"}, "request_id"}``). It streams
each answer as Anthropic does (https://docs.anthropic.com/en/docs/build-with-claude/streaming):
``message_start`` (the message with empty ``content`` and the input usage), then per
content block ``content_block_start``, a ``ping`` after the first, ``text_delta``s (one
per word) or ``input_json_delta``s (the arguments in fragments, after an empty one),
``content_block_stop``; then ``message_delta`` (``stop_reason``, output usage) and
``message_stop``. Every event has both its ``event:`` name and its ``type``.

Replies are the :class:`~antiphon.testing.openai_chat.Reply` scripts of the OpenAI fake
(a reply, a sequence, or a function of the request body), so the LLM conformance suite
drives both. Tool calls without an id get ``toolu_fake…`` ids.

Fault plan fields that apply, in this protocol's terms:

- ``hang_connect``: accept TCP, read, never answer.
- ``reject_status``: answer every request (or the first ``reject_requests``) with that
  status and Anthropic's error body (401 ``authentication_error``, 403
  ``permission_error``, 429 ``rate_limit_error``, 500 ``api_error``, 529
  ``overloaded_error``); 429, 503 and 529 carry ``retry-after`` (``retry_after``).
- ``drop_before_audio``: close the connection after reading each of the first N
  requests, without an answer.
- ``silent_after``: requests after the first ``silent_after`` get a ``200`` head, then
  nothing.
- ``first_audio_delay``: seconds between the head and ``message_start``;
  ``chunk_interval``: seconds after each delta (a large one stalls after the first).
- ``close_mid_audio``: before delta number ``close_after_chunks`` (counting text and
  non-empty JSON deltas from 0; ``message_delta`` counts as the one after the last),
  cut the stream: ``ABORT`` resets the TCP connection, ``1000`` ends the body cleanly
  without ``message_stop``, any other value closes the socket mid-body.
- ``error_mid_stream``: at that same point, an ``error`` event (``overloaded_error``,
  as Anthropic sends under load) and the end of the body.
- ``malformed_mid_stream``: after the first delta, an event of an unknown type (which a
  client must ignore), a comment, then data that is not JSON.
- ``audio_after_done``: that many ``text_delta`` events after ``message_stop``.
- ``odd_chunking``: write the body in 7-byte HTTP chunks.
- ``idle_close_after`` / ``max_connection_age``: close keep-alive connections idle for
  that long / older than that (a busy one after its response).

Not applicable: ``close_on_open``, ``close_on_open_reason``, ``close_reason``,
``audio_after_clear``, ``ignore_clear``. A client's cancel is a closed connection;
``stats.cancels`` counts those the fake noticed.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from antiphon.testing.chat_server import (
    ChatConnection,
    ChatRequest,
    FakeChatServer,
    Reply,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_API_KEY",
    "FakeAnthropicMessages",
    "check_body",
    "default_reply",
    "error_body",
]

DEFAULT_API_KEY = "test-key"
API_VERSION = "2023-06-01"
MAX_BODY = 4 * 1024 * 1024
ARGUMENT_FRAGMENT = 8
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")

#: status → (error type, message), as the API documents them.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    413: ("invalid_request_error", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}


def error_body(status: int, message: str | None = None, request_id: str = "req_fake") -> str:
    kind, default = ERRORS.get(status, ("api_error", f"rejected by fault plan ({status})"))
    return json.dumps(
        {
            "type": "error",
            "error": {"type": kind, "message": message or default},
            "request_id": request_id,
        }
    )


def default_reply(body: dict[str, Any]) -> Reply:
    """What the fake answers when nothing was scripted: the last user text, echoed."""
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content") or ""
    if isinstance(content, list):
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            return Reply(f"The tool said: {_text_of(results[-1].get('content'))}")
        content = " ".join(_text_of(b.get("text")) for b in content if isinstance(b, dict))
    return Reply(f"You said: {content}")


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(str(b.get("text", "")) for b in value if isinstance(b, dict))
    return ""


class FakeAnthropicMessages(FakeChatServer):
    """``http://127.0.0.1:PORT/v1/messages`` (the SDK's and the plugin's ``base_url`` is
    :attr:`base_url`, ``http://127.0.0.1:PORT``).

    ``replies``: see the module docstring. ``reject_requests``: with
    ``plan.reject_status``, refuse only that many requests. ``retry_after``: the
    ``retry-after`` value sent with 429, 503 and 529. ``sent_events``: every event
    streamed, parsed (for witness tests).
    """

    def default_reply(self, body: dict[str, Any]) -> Reply:
        return default_reply(body)

    def connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> _Conn:
        return _Conn(self, reader, writer, index)


class _Conn(ChatConnection):
    """One client connection: requests one after another (keep-alive)."""

    CHUNKED_OVERFLOW = "refuse"
    MALFORMED = (
        b'event: unknown_event\ndata: {"type": "unknown_event"}\n\n',
        b": keep-alive\n\n",
        b"event: content_block_delta\ndata: {this is not json\n\n",
    )

    def error_text(self, status: int, message: str | None) -> str:
        return error_body(status, message)

    def error_head(self, status: int, length: int, keep_alive: bool) -> list[str]:
        return [
            "content-type: application/json",
            f"content-length: {length}",
            f"request-id: req_fake{next(self.chat._ids)}",
            "x-should-retry: " + ("true" if status in (429, 500, 503, 529) else "false"),
            "connection: " + ("keep-alive" if keep_alive else "close"),
        ]

    def rejection(self, status: int) -> tuple[str, dict[str, str]]:
        retry = status in (429, 503, 529)
        return error_body(status), {"retry-after": self.chat.retry_after} if retry else {}

    def stream_head(self, keep_alive: bool) -> list[str]:
        return [
            "content-type: text/event-stream; charset=utf-8",
            "transfer-encoding: chunked",
            "cache-control: no-cache",
            f"request-id: req_fake{next(self.chat._ids)}",
            "connection: " + ("keep-alive" if keep_alive else "close"),
        ]

    def check(self, request: ChatRequest) -> tuple[int, str] | None:
        """The API's checks, in its order: path, method, auth, version, then the body."""
        h = request.headers
        problem = self._problem(request, h)
        return None if problem is None else (problem[0], error_body(*problem))

    def _problem(self, request: ChatRequest, h: dict[str, str]) -> tuple[int, str] | None:
        if request.path.rstrip("/") != "/v1/messages":
            return 404, f"Not found: {request.path}"
        if request.method != "POST":
            return 405, "Use POST."
        key = self.chat.api_key
        if h.get("x-api-key") != key and h.get("authorization") != f"Bearer {key}":
            return 401, "invalid x-api-key"
        if not h.get("anthropic-version"):
            return 400, "anthropic-version: header is required"
        if h.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return 400, "content-type must be application/json"
        problem = check_body(request.json)
        return None if problem is None else (400, problem)

    def encode_event(self, obj: dict[str, Any]) -> bytes:
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        return f"event: {obj['type']}\ndata: {data}\n\n".encode()

    def events(self, reply: Reply, body: dict[str, Any]) -> list[tuple[bytes, bool]]:
        ids = self.chat._ids
        prompt = _words(body)
        out: list[tuple[bytes, bool]] = []
        usage = {
            "input_tokens": prompt,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
        }
        message: dict[str, Any] = {
            "id": f"msg_fake{next(ids)}",
            "type": "message",
            "role": "assistant",
            "model": str(body.get("model")),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        out.append((self.event({"type": "message_start", "message": message}), False))
        index = 0
        tokens = reply.tokens()
        if tokens:
            start = {"type": "text", "text": ""}
            out.append((self.event(_block_start(index, start)), False))
            out.append((self.event({"type": "ping"}), False))
            for token in tokens:
                delta = {"type": "text_delta", "text": token}
                out.append((self.event(_block_delta(index, delta)), True))
            out.append((self.event({"type": "content_block_stop", "index": index}), False))
            index += 1
        for call in reply.tool_calls:
            call_id = call.id or f"toolu_fake{next(ids)}"
            block = {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}
            out.append((self.event(_block_start(index, block)), False))
            if index == 0:
                out.append((self.event({"type": "ping"}), False))
            empty = {"type": "input_json_delta", "partial_json": ""}
            out.append((self.event(_block_delta(index, empty)), False))
            args = call.arguments_json()
            if args.strip() in ("", "{}"):
                args = ""  # the API streams an empty input as no JSON at all
            for pos in range(0, len(args), ARGUMENT_FRAGMENT):
                part = {
                    "type": "input_json_delta",
                    "partial_json": args[pos : pos + ARGUMENT_FRAGMENT],
                }
                out.append((self.event(_block_delta(index, part)), True))
            out.append((self.event({"type": "content_block_stop", "index": index}), False))
            index += 1
        reason = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        stop = {"tool_calls": "tool_use", "stop": "end_turn", "length": "max_tokens"}
        final = {
            "type": "message_delta",
            "delta": {"stop_reason": stop.get(reason, reason), "stop_sequence": None},
            "usage": {"output_tokens": max(1, len(tokens) + len(reply.tool_calls))},
        }
        out.append((self.event(final), True))
        out.append((self.event({"type": "message_stop"}), False))
        return out

    def error_event(self) -> bytes:
        err = json.loads(error_body(529))  # overloaded_error, as Anthropic sends under load
        del err["request_id"]
        return self.event(err)

    def stale_event(self) -> bytes:
        return self.event(_block_delta(0, {"type": "text_delta", "text": " stale"}))


def _block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _block_delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def _words(body: dict[str, Any]) -> int:
    total = len(_text_of(body.get("system")).split())
    for m in body.get("messages") or []:
        content = m.get("content")
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            total += sum(len(_text_of(b.get("text") or b.get("content")).split()) for b in content)
    return max(1, total)


def _cache_marks(value: Any) -> int:
    """Blocks that carry ``cache_control`` (anywhere in ``value``); ValueError if bad."""
    if isinstance(value, list):
        return sum(_cache_marks(v) for v in value)
    if not isinstance(value, dict):
        return 0
    marks = 0
    if "cache_control" in value:
        cc = value["cache_control"]
        if not isinstance(cc, dict) or cc.get("type") != "ephemeral":
            raise ValueError("cache_control.type: Input should be 'ephemeral'")
        marks = 1
    return marks + sum(_cache_marks(v) for k, v in value.items() if k == "content")


def check_body(body: Any) -> str | None:
    """The API's validation of a Messages body: the error message, or None."""
    if not isinstance(body, dict):
        return "The request body is not valid JSON."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens: Field required (a positive integer)"
    if body.get("stream") is not True:
        return "this fake only streams: set 'stream': true"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    system = body.get("system")
    blocks_ok = isinstance(system, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        for b in system
    )
    if system is not None and not isinstance(system, str) and not blocks_ok:
        return "system: Input should be a valid string or a list of text blocks"
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or not _NAME.match(str(t.get("name", ""))):
                return f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
            schema = t.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                return f"tools.{i}.input_schema.type: Input should be 'object'"
            if t["name"] in names:
                return "tools: Tool names must be unique."
            names.add(t["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not tools and choice.get("type") != "none":
            return "tool_choice may only be specified while providing tools."
        if choice.get("type") == "tool" and choice.get("name") not in names:
            return f"Tool '{choice.get('name')}' not found in tools"
    pending: set[str] = set()
    for i, m in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            role = m.get("role") if isinstance(m, dict) else None
            return (
                f"{where}.role: Unexpected role {role!r}. The Messages API accepts a top-level "
                '`system` parameter, not "system" as an input message role.'
            )
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            return f"{where}: all messages must have non-empty content"
        answered = {
            b.get("tool_use_id")
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "tool_result"
        }
        if pending and (m["role"] != "user" or not pending <= answered):
            return (
                f"{where}: `tool_use` ids were found without `tool_result` blocks immediately "
                f"after: {', '.join(sorted(pending - answered))}. Each `tool_use` block must "
                "have a corresponding `tool_result` block in the next message."
            )
        previous, pending = pending, set()
        for j, b in enumerate(blocks):
            at = f"{where}.content.{j}"
            kind = b.get("type") if isinstance(b, dict) else None
            if kind == "text":
                if not isinstance(b.get("text"), str) or not b["text"].strip():
                    return f"{at}: text content blocks must be non-empty"
            elif kind == "tool_use" and m["role"] == "assistant":
                if not isinstance(b.get("id"), str) or not isinstance(b.get("input"), dict):
                    return f"{at}: tool_use blocks need an id and an input object"
                pending.add(b["id"])
            elif kind == "tool_result" and m["role"] == "user":
                if b.get("tool_use_id") not in previous:
                    return (
                        f"{at}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{b.get('tool_use_id')}. Each `tool_result` block must have a "
                        "corresponding `tool_use` block in the previous message."
                    )
            else:
                return f"{at}.type: Input tag {kind!r} is not expected here"
    if pending:
        return "the last assistant message has `tool_use` blocks without `tool_result`s"
    try:
        marks = _cache_marks(system) + _cache_marks(tools) + _cache_marks(messages)
    except ValueError as exc:
        return str(exc)
    if marks > 4:
        return f"A maximum of 4 blocks with cache_control may be provided. Found {marks}."
    return None
