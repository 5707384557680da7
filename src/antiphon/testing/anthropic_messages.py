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
import contextlib
import itertools
import json
import re
from collections.abc import Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from antiphon.testing.faults import ABORT, FaultPlan
from antiphon.testing.openai_chat import (
    ChatFakeStats,
    ChatRequest,
    Reply,
    Responder,
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


class _Closed(Exception):
    """The client went away."""


class FakeAnthropicMessages:
    """``http://127.0.0.1:PORT/v1/messages`` (point ``base_url`` at :attr:`url`).

    ``replies``: see the module docstring. ``reject_requests``: with
    ``plan.reject_status``, refuse only that many requests. ``retry_after``: the
    ``retry-after`` value sent with 429, 503 and 529.
    """

    scheme = "http"

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        replies: Reply | Sequence[Reply] | Responder | None = None,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        reject_requests: int | None = None,
        retry_after: str = "1",
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("fake servers bind to loopback only (127.0.0.1 or ::1)")
        self.plan = plan or FaultPlan()
        self.api_key = api_key
        self.host = host
        self.port = port
        self.reject_requests = reject_requests
        self.retry_after = retry_after
        self.stats = ChatFakeStats()
        self.sent_events: list[dict[str, Any]] = []
        """Every event streamed, parsed (for witness tests)."""
        self._script: list[Reply] = []
        self._responder: Responder = default_reply
        if isinstance(replies, Reply):
            fixed = replies
            self._responder = lambda _body: fixed
        elif callable(replies):
            self._responder = replies
        elif replies is not None:
            self._script = list(replies)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ids = itertools.count(1)
        self._rejected = 0
        self._answered = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the SDK's and the plugin's ``base_url``)."""
        if self._server is None:
            raise RuntimeError("the fake server is not started")
        return f"{self.scheme}://{self.host}:{self.port}"

    base_url = url

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def aclose(self) -> None:
        """Stop listening, cut every connection and wait (bounded) for the handlers."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        handlers = list(self._handlers)
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=0.5)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=3.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3.0):
                    await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def next_reply(self, body: dict[str, Any]) -> Reply:
        if self._script:
            return self._script.pop(0)
        return self._responder(body)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        index = self.stats.connections
        self.stats.connections += 1
        self.stats.open_connections += 1
        try:
            if self.plan.hang_connect:
                while await reader.read(65536):
                    pass
            else:
                await _Conn(self, reader, writer, index).serve()
        except (_Closed, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            if self._server is not None and self._server.is_serving():
                raise
        finally:
            self.stats.open_connections -= 1
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.transport.abort()

    def _take_rejection(self) -> int | None:
        status = self.plan.reject_status
        if status is None:
            return None
        if self.reject_requests is not None and self._rejected >= self.reject_requests:
            return None
        self._rejected += 1
        return status


class _Conn:
    """One client connection: requests one after another (keep-alive)."""

    def __init__(
        self,
        server: FakeAnthropicMessages,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        index: int,
    ) -> None:
        self.server = server
        self.plan = server.plan
        self.stats = server.stats
        self.reader = reader
        self.writer = writer
        self.index = index
        self.loop = asyncio.get_running_loop()
        self.opened = self.loop.time()

    def _wait_limit(self) -> float | None:
        limits: list[float] = []
        if self.plan.idle_close_after is not None:
            limits.append(self.plan.idle_close_after)
        if self.plan.max_connection_age is not None:
            limits.append(self.opened + self.plan.max_connection_age - self.loop.time())
        return max(0.0, min(limits)) if limits else None

    async def serve(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._wait_limit()):
                    first = await self.reader.readline()
            except TimeoutError:
                self.stats.idle_closes += 1
                return
            if not first or not await self._serve_one(first):
                return
            age = self.plan.max_connection_age
            if age is not None and self.loop.time() - self.opened >= age:
                return

    async def _read_request(self, first: bytes) -> ChatRequest | None:
        try:
            method, target, _version = first.decode("latin-1").rstrip("\r\n").split(" ", 2)
        except ValueError:
            await self._respond(400, error_body(400, "malformed request line"), keep_alive=False)
            return None
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if not line:
                raise _Closed
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await self.reader.readline()
                    break
                body += (await self.reader.readexactly(size + 2))[:-2]
                if len(body) > MAX_BODY:
                    await self._respond(413, error_body(413), keep_alive=False)
                    return None
        else:
            length = int(headers.get("content-length", "0") or "0")
            if length > MAX_BODY:
                await self._respond(413, error_body(413), keep_alive=False)
                return None
            body = await self.reader.readexactly(length)
        try:
            parsed: Any = json.loads(body) if body else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = None
        split = urlsplit(target)
        request = ChatRequest(
            method, split.path, parse_qs(split.query), headers, body, parsed, self.index
        )
        self.stats.requests.append(request)
        return request

    async def _serve_one(self, first: bytes) -> bool:
        request = await self._read_request(first)
        if request is None:
            return False
        server, plan = self.server, self.plan
        keep_alive = request.headers.get("connection", "").lower() != "close"
        if self.stats.dropped_requests < plan.drop_before_audio:
            self.stats.dropped_requests += 1
            return False
        status = server._take_rejection()
        if status is not None:
            extra = {"retry-after": server.retry_after} if status in (429, 503, 529) else {}
            await self._respond(status, error_body(status), extra=extra)
            return keep_alive
        problem = self._check(request)
        if problem is not None:
            await self._respond(problem[0], error_body(problem[0], problem[1]))
            return keep_alive
        body: dict[str, Any] = request.json
        server._answered += 1
        silent = plan.silent_after is not None and server._answered > plan.silent_after
        await self._write_head(keep_alive)
        if silent:
            while await self.reader.read(65536):
                pass
            raise _Closed
        reply = server.next_reply(body)
        self.stats.replies.append(reply)
        return await self._stream(reply, body) and keep_alive

    def _check(self, request: ChatRequest) -> tuple[int, str] | None:
        """The API's checks, in its order: path, method, auth, version, then the body."""
        h = request.headers
        if request.path.rstrip("/") != "/v1/messages":
            return 404, f"Not found: {request.path}"
        if request.method != "POST":
            return 405, "Use POST."
        key = self.server.api_key
        if h.get("x-api-key") != key and h.get("authorization") != f"Bearer {key}":
            return 401, "invalid x-api-key"
        if not h.get("anthropic-version"):
            return 400, "anthropic-version: header is required"
        if h.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return 400, "content-type must be application/json"
        problem = check_body(request.json)
        return None if problem is None else (400, problem)

    # -- writing
    async def _write(self, data: bytes) -> None:
        if self.writer.is_closing() or self.reader.at_eof():
            raise _Closed
        self.writer.write(data)
        try:
            await self.writer.drain()
        except ConnectionError:
            raise _Closed from None

    async def _respond(
        self,
        status: int,
        body: str,
        *,
        keep_alive: bool = True,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.stats.statuses.append(status)
        data = body.encode()
        head = [
            f"HTTP/1.1 {status} {_reason(status)}",
            "content-type: application/json",
            f"content-length: {len(data)}",
            f"request-id: req_fake{next(self.server._ids)}",
            "x-should-retry: " + ("true" if status in (429, 500, 503, 529) else "false"),
            "connection: " + ("keep-alive" if keep_alive else "close"),
            *(f"{k}: {v}" for k, v in (extra or {}).items()),
        ]
        await self._write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)

    async def _write_head(self, keep_alive: bool) -> None:
        self.stats.statuses.append(200)
        head = [
            "HTTP/1.1 200 OK",
            "content-type: text/event-stream; charset=utf-8",
            "transfer-encoding: chunked",
            "cache-control: no-cache",
            f"request-id: req_fake{next(self.server._ids)}",
            "connection: " + ("keep-alive" if keep_alive else "close"),
        ]
        await self._write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))

    async def _chunk(self, data: bytes) -> None:
        step = 7 if self.plan.odd_chunking else len(data)
        for pos in range(0, len(data), step):
            part = data[pos : pos + step]
            await self._write(f"{len(part):x}\r\n".encode() + part + b"\r\n")

    async def _pause(self, seconds: float) -> None:
        """Sleep, but notice the client closing meanwhile."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    if not await self.reader.read(65536):
                        raise _Closed
        except TimeoutError:
            return

    def _event(self, obj: dict[str, Any]) -> bytes:
        self.server.sent_events.append(obj)
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        return f"event: {obj['type']}\ndata: {data}\n\n".encode()

    def _events(self, reply: Reply, body: dict[str, Any]) -> list[tuple[bytes, bool]]:
        """The stream of ``reply``: (event bytes, whether it is a counted delta)."""
        ids = self.server._ids
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
        out.append((self._event({"type": "message_start", "message": message}), False))
        index = 0
        tokens = reply.tokens()
        if tokens:
            start = {"type": "text", "text": ""}
            out.append((self._event(_block_start(index, start)), False))
            out.append((self._event({"type": "ping"}), False))
            for token in tokens:
                delta = {"type": "text_delta", "text": token}
                out.append((self._event(_block_delta(index, delta)), True))
            out.append((self._event({"type": "content_block_stop", "index": index}), False))
            index += 1
        for call in reply.tool_calls:
            call_id = call.id or f"toolu_fake{next(ids)}"
            block = {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}
            out.append((self._event(_block_start(index, block)), False))
            if index == 0:
                out.append((self._event({"type": "ping"}), False))
            empty = {"type": "input_json_delta", "partial_json": ""}
            out.append((self._event(_block_delta(index, empty)), False))
            args = call.arguments_json()
            if args.strip() in ("", "{}"):
                args = ""  # the API streams an empty input as no JSON at all
            for pos in range(0, len(args), ARGUMENT_FRAGMENT):
                part = {
                    "type": "input_json_delta",
                    "partial_json": args[pos : pos + ARGUMENT_FRAGMENT],
                }
                out.append((self._event(_block_delta(index, part)), True))
            out.append((self._event({"type": "content_block_stop", "index": index}), False))
            index += 1
        reason = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        stop = {"tool_calls": "tool_use", "stop": "end_turn", "length": "max_tokens"}
        final = {
            "type": "message_delta",
            "delta": {"stop_reason": stop.get(reason, reason), "stop_sequence": None},
            "usage": {"output_tokens": max(1, len(tokens) + len(reply.tool_calls))},
        }
        out.append((self._event(final), True))
        out.append((self._event({"type": "message_stop"}), False))
        return out

    async def _stream(self, reply: Reply, body: dict[str, Any]) -> bool:
        """Stream one reply; False if the connection must close afterwards."""
        plan = self.plan
        events = self._events(reply, body)
        deltas = 0
        try:
            if plan.first_audio_delay:
                await self._pause(plan.first_audio_delay)
            for data, counted in events:
                if counted:
                    at_cut = deltas >= plan.close_after_chunks
                    if plan.close_mid_audio is not None and at_cut:
                        self.stats.cut_streams += 1
                        if plan.close_mid_audio == ABORT:
                            self.writer.transport.abort()
                        elif plan.close_mid_audio == 1000:
                            await self._write(b"0\r\n\r\n")
                            return True
                        else:
                            self.writer.close()
                        raise _Closed
                    if plan.error_mid_stream and at_cut:
                        err = json.loads(error_body(529))
                        del err["request_id"]
                        await self._chunk(self._event(err))
                        await self._write(b"0\r\n\r\n")
                        return True
                    if plan.malformed_mid_stream and deltas == 1:
                        await self._chunk(
                            b'event: unknown_event\ndata: {"type": "unknown_event"}\n\n'
                        )
                        await self._chunk(b": keep-alive\n\n")
                        await self._chunk(
                            b"event: content_block_delta\ndata: {this is not json\n\n"
                        )
                    deltas += 1
                await self._chunk(data)
                if counted and plan.chunk_interval:
                    await self._pause(plan.chunk_interval)
            for _ in range(plan.audio_after_done):
                stale = _block_delta(0, {"type": "text_delta", "text": " stale"})
                await self._chunk(self._event(stale))
            await self._write(b"0\r\n\r\n")
            self.stats.completed += 1
        except _Closed:
            if plan.close_mid_audio is None:
                self.stats.cancels += 1
            raise
        return True


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


def _reason(status: int) -> str:
    if status == 529:
        return "Overloaded"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
