"""A fake AWS Bedrock runtime: ``POST /model/{modelId}/converse-stream``, as an event stream.

:class:`FakeBedrockConverse` is a loopback HTTP/1.1 server (keep-alive, chunked transfer
encoding) that checks what Bedrock checks — the path, the credentials (a Bedrock API key
as ``Authorization: Bearer``, or a SigV4 signature, verified against the fake's key
pair: a wrong one is ``403 UnrecognizedClientException`` / ``InvalidSignatureException``),
``content-type: application/json`` and the body (:func:`check_body`: ``messages`` that
start with ``user`` and alternate, content blocks of one kind each, non-blank text,
``toolUse`` only from the assistant and every one answered by a ``toolResult`` in the next
turn, ``toolSpec`` names and object schemas, ``inferenceConfig`` fields, no unknown
field) — refusing with Bedrock's error answer (``{"message"}`` and ``x-amzn-ErrorType``).

Each answer streams as ``application/vnd.amazon.eventstream`` messages
(https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html):
``messageStart``, a ``contentBlockDelta`` per text token, per tool call a
``contentBlockStart`` (``toolUse``), its ``input`` in 8-character fragments and
``contentBlockStop``; ``messageStop`` (``stopReason``) and ``metadata`` (usage). Events
carry Bedrock's random ``p`` padding. Replies are the
:class:`~antiphon.testing.openai_chat.Reply` scripts of the other chat fakes, so the LLM
conformance suite drives it too.

Fault plan fields, as the other chat fakes (counted events: text and input deltas, then
``messageStop`` as the one after the last): ``close_mid_audio`` (``1000`` ends the body
cleanly without ``messageStop``), ``error_mid_stream`` (an ``exception`` message,
``modelStreamErrorException``), ``malformed_mid_stream`` (an event of an unknown type,
to be ignored, then an event whose payload is not JSON), ``audio_after_done`` (text deltas
after ``metadata``), ``reject_status``, ``silent_after``, ``first_audio_delay``,
``chunk_interval``, ``drop_before_audio``, ``hang_connect``, ``odd_chunking``,
``idle_close_after``, ``max_connection_age``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from typing import Any
from urllib.parse import unquote

from antiphon.protocols.aws_eventstream import encode_message, sigv4_headers
from antiphon.testing.chat_server import ChatConnection, ChatRequest, FakeChatServer, Reply

__all__ = [
    "ACCESS_KEY",
    "DEFAULT_API_KEY",
    "ERRORS",
    "SECRET_KEY",
    "FakeBedrockConverse",
    "check_body",
    "default_reply",
    "error_body",
]

DEFAULT_API_KEY = "test-key"
#: The key pair whose SigV4 signatures the fake accepts.
ACCESS_KEY = "AKIDFAKE"
SECRET_KEY = "fake-secret"
ARGUMENT_FRAGMENT = 8
_PATH = re.compile(r"^/model/([^/]+)/converse-stream$")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_KINDS = ("text", "toolUse", "toolResult", "image", "document", "reasoningContent")
_TOP = {
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
}
_INFERENCE = {"maxTokens", "temperature", "topP", "stopSequences"}

#: status → (x-amzn-ErrorType, message).
ERRORS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "Malformed input request."),
    403: (
        "AccessDeniedException",
        "You don't have access to the model with the specified model ID.",
    ),
    404: ("ResourceNotFoundException", "Could not resolve the foundation model."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error."),
    503: ("ServiceUnavailableException", "The service is temporarily unavailable."),
}


def error_body(status: int, message: str | None = None) -> str:
    default = ERRORS.get(status, ("InternalServerException", f"fault plan ({status})"))[1]
    return json.dumps({"message": message or default})


def default_reply(body: dict[str, Any]) -> Reply:
    """What the fake answers when nothing was scripted: the last user turn, echoed."""
    messages = body.get("messages") or [{}]
    blocks = messages[-1].get("content") or []
    results = [b["toolResult"] for b in blocks if isinstance(b, dict) and "toolResult" in b]
    if results:
        said = " ".join(str(c.get("text", "")) for c in results[-1].get("content") or [])
        return Reply(f"The tool said: {said}")
    return Reply("You said: " + " ".join(str(b.get("text", "")) for b in blocks if "text" in b))


def _check_block(block: Any, at: str, role: str, answered: set[str]) -> str | None:
    if not isinstance(block, dict):
        return f"{at}: a content block must be an object"
    kinds = [k for k in _KINDS if k in block]
    if len(kinds) != 1 or len(block) != 1:
        return f"{at}: a content block must have exactly one member, got {sorted(block)}"
    kind = kinds[0]
    value = block[kind]
    if kind == "text" and (not isinstance(value, str) or not value.strip()):
        return f"{at}.text: The text field in the ContentBlock object is blank."
    if kind == "toolUse":
        if role != "assistant":
            return f"{at}: toolUse blocks belong to assistant turns"
        if not isinstance(value, dict) or not isinstance(value.get("input"), dict):
            return f"{at}.toolUse: toolUseId, name and an input object are required"
        if not _TOOL_NAME.match(str(value.get("name", ""))) or not value.get("toolUseId"):
            return f"{at}.toolUse: toolUseId and a valid name are required"
    if kind == "toolResult":
        if role != "user":
            return f"{at}: toolResult blocks belong to user turns"
        if not isinstance(value, dict) or not isinstance(value.get("content"), list):
            return f"{at}.toolResult: toolUseId and content are required"
        answered.add(str(value.get("toolUseId")))
    return None


def check_body(body: Any) -> str | None:
    """Bedrock's validation of a ``ConverseStream`` body: the message, or None."""
    if not isinstance(body, dict):
        return "Malformed input request, please reformat your input and try again."
    unknown = sorted(set(body) - _TOP)
    if unknown:
        return f'Unknown parameter in input: "{unknown[0]}"'
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "A conversation must start with a user message."
    for i, block in enumerate(body.get("system") or []):
        if not isinstance(block, dict) or not isinstance(block.get("text"), str):
            return f"system.{i}: a system block needs text"
    inference = body.get("inferenceConfig") or {}
    if set(inference) - _INFERENCE:
        return f'Unknown parameter in inferenceConfig: "{sorted(set(inference) - _INFERENCE)[0]}"'
    if "maxTokens" in inference and (
        not isinstance(inference["maxTokens"], int) or inference["maxTokens"] < 1
    ):
        return "inferenceConfig.maxTokens: must be >= 1"
    names: set[str] = set()
    tool_config = body.get("toolConfig")
    if tool_config is not None:
        for j, tool in enumerate(tool_config.get("tools") or []):
            spec = tool.get("toolSpec") if isinstance(tool, dict) else None
            if not isinstance(spec, dict) or not _TOOL_NAME.match(str(spec.get("name", ""))):
                return f"toolConfig.tools.{j}.toolSpec.name: must match [a-zA-Z0-9_-]+"
            schema = (spec.get("inputSchema") or {}).get("json")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                return f"toolConfig.tools.{j}.toolSpec.inputSchema.json: an object schema"
            names.add(spec["name"])
        choice = tool_config.get("toolChoice")
        if choice is not None:
            if (
                not isinstance(choice, dict)
                or len(choice) != 1
                or next(iter(choice)) not in ("auto", "any", "tool")
            ):
                return "toolConfig.toolChoice: one of auto, any, tool"
            if "tool" in choice and choice["tool"].get("name") not in names:
                return "toolConfig.toolChoice.tool.name: not one of the tools"
    pending: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            return (
                "A conversation must alternate between user and assistant roles "
                f"(message {i} is {role!r})."
            )
        content = message.get("content")
        if not isinstance(content, list) or not content:
            return f"messages.{i}.content: at least one content block is required"
        answered: set[str] = set()
        uses: set[str] = set()
        for j, block in enumerate(content):
            problem = _check_block(block, f"messages.{i}.content.{j}", role, answered)
            if problem:
                return problem
            if "toolUse" in block:
                uses.add(str(block["toolUse"]["toolUseId"]))
        if pending and pending - answered:
            return (
                "Expected toolResult blocks at messages."
                f"{i}.content for the following Ids: {', '.join(sorted(pending - answered))}"
            )
        if answered - pending:
            return f"messages.{i}: a toolResult answers no toolUse of the previous turn"
        pending = uses
    return None


class FakeBedrockConverse(FakeChatServer):
    """``http://127.0.0.1:PORT`` (the plugin's ``base_url``: :attr:`base_url`).

    ``api_key``: the Bedrock API key it accepts; SigV4 requests must be signed with
    :data:`ACCESS_KEY`/:data:`SECRET_KEY`. ``sent_events``: every event streamed
    (``{"event": type, "payload": {...}}``), for witness tests.
    """

    def default_reply(self, body: dict[str, Any]) -> Reply:
        return default_reply(body)

    def connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> _Conn:
        return _Conn(self, reader, writer, index)


def _padding(n: int) -> str:
    return "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[: 4 + n % 30]


class _Conn(ChatConnection):
    CHUNKED_OVERFLOW = "refuse"
    MALFORMED = (
        encode_message(
            {
                ":event-type": "somethingNew",
                ":content-type": "application/json",
                ":message-type": "event",
            },
            b'{"x": 1}',
        ),
        encode_message(
            {
                ":event-type": "contentBlockDelta",
                ":content-type": "application/json",
                ":message-type": "event",
            },
            b"{this is not json",
        ),
    )

    def error_text(self, status: int, message: str | None) -> str:
        return error_body(status, message)

    def error_head(self, status: int, length: int, keep_alive: bool) -> list[str]:
        kind = ERRORS.get(status, ("InternalServerException", ""))[0]
        return self._error_head(kind, length, keep_alive)

    def _error_head(self, kind: str, length: int, keep_alive: bool) -> list[str]:
        return [
            "Content-Type: application/json",
            f"Content-Length: {length}",
            f"x-amzn-RequestId: fake-{next(self.chat._ids)}",
            f"x-amzn-ErrorType: {kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "Connection: " + ("keep-alive" if keep_alive else "close"),
        ]

    def rejection(self, status: int) -> tuple[str, dict[str, str]]:
        extra = {"Retry-After": self.chat.retry_after} if status in (429, 503) else {}
        return error_body(status), extra

    def stream_head(self, keep_alive: bool) -> list[str]:
        return [
            "Content-Type: application/vnd.amazon.eventstream",
            "Transfer-Encoding: chunked",
            f"x-amzn-RequestId: fake-{next(self.chat._ids)}",
            "Connection: " + ("keep-alive" if keep_alive else "close"),
        ]

    def _auth_problem(self, request: ChatRequest) -> tuple[int, str] | None:
        h = request.headers
        auth = h.get("authorization", "")
        if auth.startswith("Bearer "):
            if auth != f"Bearer {self.chat.api_key}":
                return 403, "Invalid API Key format: Must start with pre-defined prefix"
            return None
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return 403, "Missing Authentication Token"
        if f"Credential={ACCESS_KEY}/" not in auth:
            return 403, "The security token included in the request is invalid."
        match = re.search(r"SignedHeaders=([^,]+)", auth)
        stamp = h.get("x-amz-date", "")
        try:
            when = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            return 403, "X-Amz-Date is missing or invalid"
        if match is None:
            return 403, "Authorization header requires SignedHeaders"
        skip = {"host", "x-amz-date", "x-amz-security-token"}
        signed = {n: h.get(n, "") for n in match.group(1).split(";") if n not in skip}
        query = "&".join(f"{k}={v}" for k, vs in request.query.items() for v in vs)
        url = f"http://{h.get('host', '')}{request.path}" + (f"?{query}" if query else "")
        expected = sigv4_headers(
            request.method,
            url,
            signed,
            request.body,
            service="bedrock",
            region=_region(auth),
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            session_token=h.get("x-amz-security-token"),
            now=when,
        )
        if expected["Authorization"] != auth:
            return 403, (
                "The request signature we calculated does not match the signature you provided."
            )
        return None

    def check(self, request: ChatRequest) -> tuple[int, str] | None:
        """Bedrock's checks, in its order: path, method, credentials, content type, body."""
        if _PATH.match(request.path) is None:
            return 404, error_body(404, f"Unknown operation: {request.path}")
        if request.method != "POST":
            return 404, error_body(404, "Unknown operation")
        problem = self._auth_problem(request)
        if problem is not None:
            return problem[0], error_body(*problem)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return 400, error_body(400, "content-type must be application/json")
        message = check_body(request.json)
        return None if message is None else (400, error_body(400, message))

    def encode_event(self, obj: dict[str, Any]) -> bytes:
        headers = {
            ":event-type": obj["event"],
            ":content-type": "application/json",
            ":message-type": "event",
        }
        return encode_message(headers, json.dumps(obj["payload"]).encode())

    def _ev(self, name: str, payload: dict[str, Any]) -> bytes:
        n = next(self.chat._ids)
        return self.event({"event": name, "payload": {**payload, "p": _padding(n)}})

    def events(self, reply: Reply, body: dict[str, Any]) -> list[tuple[bytes, bool]]:
        out: list[tuple[bytes, bool]] = [(self._ev("messageStart", {"role": "assistant"}), False)]
        index = 0
        tokens = reply.tokens()
        if tokens:
            for token in tokens:
                delta = {"contentBlockIndex": index, "delta": {"text": token}}
                out.append((self._ev("contentBlockDelta", delta), True))
            out.append((self._ev("contentBlockStop", {"contentBlockIndex": index}), False))
            index += 1
        for call in reply.tool_calls:
            call_id = call.id or f"tooluse_fake{next(self.chat._ids)}"
            start = {"toolUse": {"toolUseId": call_id, "name": call.name}}
            out.append(
                (self._ev("contentBlockStart", {"contentBlockIndex": index, "start": start}), False)
            )
            args = call.arguments_json()
            for pos in range(0, len(args), ARGUMENT_FRAGMENT):
                delta = {"toolUse": {"input": args[pos : pos + ARGUMENT_FRAGMENT]}}
                out.append(
                    (
                        self._ev("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}),
                        True,
                    )
                )
            out.append((self._ev("contentBlockStop", {"contentBlockIndex": index}), False))
            index += 1
        reason = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        stop = {"tool_calls": "tool_use", "stop": "end_turn", "length": "max_tokens"}
        out.append((self._ev("messageStop", {"stopReason": stop.get(reason, reason)}), True))
        completion = max(1, len(tokens) + len(reply.tool_calls))
        prompt = _words(body)
        usage = {
            "inputTokens": prompt,
            "outputTokens": completion,
            "totalTokens": prompt + completion,
        }
        out.append((self._ev("metadata", {"usage": usage, "metrics": {"latencyMs": 10}}), False))
        return out

    def error_event(self) -> bytes:
        headers = {
            ":exception-type": "modelStreamErrorException",
            ":content-type": "application/json",
            ":message-type": "exception",
        }
        return encode_message(headers, b'{"message": "The model stream failed (fault plan)."}')

    def stale_event(self) -> bytes:
        return self._ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " stale"}})


def _region(auth: str) -> str:
    match = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/", auth)
    return match.group(1) if match else ""


def _words(body: dict[str, Any]) -> int:
    total = 0
    for block in body.get("system") or []:
        total += len(str(block.get("text", "")).split())
    for message in body.get("messages") or []:
        for block in message.get("content") or []:
            total += len(str(block.get("text", "")).split())
    return max(1, total)


def model_of(path: str) -> str | None:
    """The model id of a request path (percent-decoded)."""
    match = _PATH.match(path)
    return unquote(match.group(1)) if match else None
