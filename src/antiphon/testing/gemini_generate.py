"""A fake Gemini API: ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse``.

:class:`FakeGeminiGenerate` is a loopback HTTP/1.1 server (keep-alive, chunked transfer
encoding) that checks what the Gemini API checks — the path and ``alt=sse``, the key
(``x-goog-api-key`` or the ``key`` query; a wrong key is ``400 INVALID_ARGUMENT`` with
reason ``API_KEY_INVALID``, as the API answers, a missing one ``403 PERMISSION_DENIED``),
``content-type: application/json`` and the body (:func:`check_body`): ``contents`` of
``user``/``model`` turns with non-empty ``parts`` of exactly one kind each, function
responses answering the previous model turn's calls one for one, ``functionDeclarations``
(names, one parameters schema), ``systemInstruction``, ``toolConfig``,
``generationConfig`` — and, as Gemini 3 does, a replayed ``functionCall`` that the fake
issued with a ``thoughtSignature`` must carry it back unchanged. Errors use Google's body
(``{"error": {"code", "message", "status", "details"}}``); 429 and 503 carry a
``google.rpc.RetryInfo`` ``retryDelay`` (``retry_after`` seconds).

Each answer streams as ``data: <GenerateContentResponse>`` events
(https://ai.google.dev/api/generate-content): one per text token, one with every
function call of the reply (each call whole, the first with a ``thoughtSignature``, as
for parallel calls), and a last one with ``finishReason: STOP`` and the usage; every
event carries ``usageMetadata``, ``modelVersion`` and ``responseId``. Replies are the
:class:`~antiphon.testing.openai_chat.Reply` scripts of the OpenAI fake, so the LLM
conformance suite drives all three chat fakes. Calls without an id get none on the wire
(the API may omit it).

Fault plan fields that apply, in this protocol's terms:

- ``hang_connect``: accept TCP, read, never answer.
- ``reject_status``: answer every request (or the first ``reject_requests``) with that
  status and Google's error body.
- ``drop_before_audio``: close the connection after reading each of the first N
  requests, without an answer.
- ``silent_after``: requests after the first ``silent_after`` get a ``200`` head, then
  nothing.
- ``first_audio_delay`` / ``chunk_interval``: before the first event / after each one.
- ``close_mid_audio``: before counted event ``close_after_chunks`` (text and call events
  from 0; the finish event counts as the one after the last): ``ABORT`` resets TCP,
  ``1000`` ends the body cleanly without a finish reason, any other value closes it.
- ``error_mid_stream``: there, an error (``503 UNAVAILABLE``, "The model is overloaded")
  as bare JSON lines without ``data:`` (the form the ``google-genai`` SDK's reader
  expects), and the end of the body.
- ``malformed_mid_stream``: after the first event, an event of an unknown shape (to be
  ignored), a comment, then data that is not JSON.
- ``audio_after_done``: that many more text events after the finish event.
- ``odd_chunking``, ``idle_close_after``, ``max_connection_age``: as in every HTTP fake.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import re
from typing import Any

from antiphon.testing.chat_server import (
    ChatConnection,
    ChatRequest,
    FakeChatServer,
    Reply,
)

__all__ = ["DEFAULT_API_KEY", "STATUSES", "FakeGeminiGenerate", "check_body", "error_body"]

DEFAULT_API_KEY = "test-key"
_PATH = re.compile(r"^/(v1beta|v1|v1alpha)/models/([A-Za-z0-9._-]+):streamGenerateContent$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
_DATA = ("text", "functionCall", "functionResponse", "inlineData", "fileData")

#: HTTP status → Google's canonical status and a message.
STATUSES: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
    404: ("NOT_FOUND", "models/unknown is not found for API version v1beta."),
    413: ("INVALID_ARGUMENT", "Request payload size exceeds the limit."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def error_body(
    status: int,
    message: str | None = None,
    *,
    reason: str | None = None,
    retry_delay: str | None = None,
    service: str = "generativelanguage.googleapis.com",
) -> str:
    """Google's error body; ``reason`` adds an ``ErrorInfo`` (of ``service``),
    ``retry_delay`` a ``RetryInfo``."""
    kind, default = STATUSES.get(status, ("UNKNOWN", f"rejected by fault plan ({status})"))
    details: list[dict[str, Any]] = []
    if reason is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": service},
            }
        )
    if retry_delay is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        )
    error: dict[str, Any] = {"code": status, "message": message or default, "status": kind}
    if details:
        error["details"] = details
    return json.dumps({"error": error}, indent=2)


def default_reply(body: dict[str, Any]) -> Reply:
    """What the fake answers when nothing was scripted: the last user turn, echoed."""
    contents = body.get("contents") or [{}]
    parts = contents[-1].get("parts") or []
    responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
    if responses:
        output = (responses[-1].get("response") or {}).get("output", "")
        return Reply(f"The tool said: {output}")
    return Reply("You said: " + " ".join(str(p.get("text", "")) for p in parts if "text" in p))


class FakeGeminiGenerate(FakeChatServer):
    """``http://127.0.0.1:PORT`` (the plugin's and the SDK's ``base_url``: :attr:`base_url`).

    ``replies``: see the module docstring. ``reject_requests``: with
    ``plan.reject_status``, refuse only that many requests. ``retry_after``: the
    ``retryDelay`` seconds sent with 429 and 503. ``sent_events``: every event streamed,
    parsed (for witness tests).
    """

    @functools.cached_property
    def signatures(self) -> dict[str, str]:
        """Call id → the thought signature issued with it."""
        return {}

    def default_reply(self, body: dict[str, Any]) -> Reply:
        return default_reply(body)

    def connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> _Conn:
        return _Conn(self, reader, writer, index)


class _Conn(ChatConnection):
    CHUNKED_OVERFLOW = "refuse"
    MALFORMED = (
        b'data: {"unknownShape": {"x": 1}}\r\n\r\n',
        b": keep-alive\r\n\r\n",
        b"data: {this is not json\r\n\r\n",
    )

    @property
    def server(self) -> FakeGeminiGenerate:
        assert isinstance(self.chat, FakeGeminiGenerate)
        return self.chat

    def error_text(self, status: int, message: str | None) -> str:
        return error_body(status, message)

    def error_head(self, status: int, length: int, keep_alive: bool) -> list[str]:
        return [
            "Content-Type: application/json; charset=UTF-8",
            f"Content-Length: {length}",
            "Vary: Origin, X-Origin, Referer",
            "Connection: " + ("keep-alive" if keep_alive else "close"),
        ]

    def rejection(self, status: int) -> tuple[str, dict[str, str]]:
        delay = f"{self.server.retry_after}s" if status in (429, 503) else None
        return error_body(status, retry_delay=delay), {}

    def stream_head(self, keep_alive: bool) -> list[str]:
        return [
            "Content-Type: text/event-stream",
            "Transfer-Encoding: chunked",
            "Vary: Origin, X-Origin, Referer",
            "Connection: " + ("keep-alive" if keep_alive else "close"),
        ]

    def check(self, request: ChatRequest) -> tuple[int, str] | None:
        """The API's checks, in its order: path, method, key, alt, content type, body."""
        match = _PATH.match(request.path)
        if match is None:
            return 404, error_body(404, f"Not found: {request.path}")
        if request.method != "POST":
            return 405, error_body(400, "Use POST.")
        key = request.headers.get("x-goog-api-key") or (request.query.get("key") or [""])[0]
        if not key:
            return 403, error_body(403)
        if key != self.server.api_key:
            return 400, error_body(
                400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"
            )
        if request.query.get("alt") != ["sse"]:
            return 400, error_body(400, "this fake streams server-sent events only: ?alt=sse")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return 400, error_body(400, "Invalid JSON payload: content-type")
        problem = check_body(request.json, self.server.signatures)
        return None if problem is None else (400, error_body(400, problem))

    def encode_event(self, obj: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\r\n\r\n".encode()

    def events(self, reply: Reply, body: dict[str, Any]) -> list[tuple[bytes, bool]]:
        ids = self.server._ids
        response_id = f"fake-response-{next(ids)}"
        model = _PATH.match(self.server.stats.requests[-1].path)
        version = model.group(2) if model else "gemini"
        prompt = _words(body)
        produced = 0

        def event(parts: list[dict[str, Any]], finish: str | None = None) -> bytes:
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
            if finish:
                candidate["finishReason"] = finish
            candidate["index"] = 0
            usage: dict[str, Any] = {"promptTokenCount": prompt, "totalTokenCount": prompt}
            if produced:
                usage = {
                    "promptTokenCount": prompt,
                    "candidatesTokenCount": produced,
                    "totalTokenCount": prompt + produced,
                }
            return self.event(
                {
                    "candidates": [candidate],
                    "usageMetadata": usage,
                    "modelVersion": version,
                    "responseId": response_id,
                }
            )

        out: list[tuple[bytes, bool]] = []
        for token in reply.tokens():
            produced += 1
            out.append((event([{"text": token}]), True))
        if reply.tool_calls:
            parts: list[dict[str, Any]] = []
            for i, call in enumerate(reply.tool_calls):
                fc: dict[str, Any] = {"name": call.name, "args": json.loads(call.arguments_json())}
                part: dict[str, Any] = {"functionCall": fc}
                if call.id:
                    fc["id"] = call.id
                if i == 0:
                    # opaque base64 bytes, as the API's are
                    signature = base64.b64encode(f"signature-{next(ids)}".encode()).decode()
                    part["thoughtSignature"] = signature
                    if call.id:
                        self.server.signatures[call.id] = signature
                parts.append(part)
            produced += len(parts)
            out.append((event(parts), True))
        produced = max(produced, 1)
        finish = {"tool_calls": "STOP", "stop": "STOP", "length": "MAX_TOKENS"}
        reason = finish.get(reply.finish_reason or "stop", reply.finish_reason or "STOP")
        out.append((event([{"text": ""}], reason), True))
        return out

    def error_event(self) -> bytes:
        # bare JSON lines without ``data:``, the form the google-genai SDK's reader expects
        return (error_body(503) + "\r\n").encode()

    def stale_event(self) -> bytes:
        return self.event(
            {"candidates": [{"content": {"parts": [{"text": " stale"}], "role": "model"}}]}
        )


def _words(body: dict[str, Any]) -> int:
    total = 0
    for content in [body.get("systemInstruction") or {}, *(body.get("contents") or [])]:
        for part in content.get("parts") or []:
            total += len(str(part.get("text", "")).split())
    return max(1, total)


def _check_part(part: Any, at: str, role: str) -> str | None:
    if not isinstance(part, dict):
        return f"Invalid JSON payload received. {at}: not an object"
    kinds = [k for k in _DATA if k in part]
    if len(kinds) != 1:
        return f"{at}: a part must have exactly one data field, got {kinds or 'none'}"
    kind = kinds[0]
    if kind == "text" and not isinstance(part["text"], str):
        return f"{at}.text: Invalid value"
    if kind == "functionCall":
        fc = part["functionCall"]
        if role != "model":
            return f"{at}: functionCall parts belong to model turns"
        if not isinstance(fc, dict) or not _NAME.match(str(fc.get("name", ""))):
            return f"{at}.functionCall.name: Invalid function name"
        if not isinstance(fc.get("args", {}), dict):
            return f"{at}.functionCall.args: Invalid value (an object)"
    if kind == "functionResponse":
        fr = part["functionResponse"]
        if role != "user":
            return f"{at}: functionResponse parts belong to user turns"
        if not isinstance(fr, dict) or not _NAME.match(str(fr.get("name", ""))):
            return f"{at}.functionResponse.name: Invalid function name"
        if not isinstance(fr.get("response"), dict):
            return f"{at}.functionResponse.response: Invalid value (an object)"
    signature = part.get("thoughtSignature")
    if signature is not None and not isinstance(signature, str):
        return f"{at}.thoughtSignature: Invalid value"
    return None


def check_body(body: Any, signatures: dict[str, str] | None = None) -> str | None:
    """The API's validation of a ``streamGenerateContent`` body: the message, or None.

    ``signatures``: the thought signatures the server issued, by call id; a replayed call
    with one of those ids must carry its signature.
    """
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    known = {
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "generationConfig",
        "safetySettings",
        "cachedContent",
    }
    unknown = sorted(set(body) - known)
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    system = body.get("systemInstruction")
    if system is not None:
        parts = system.get("parts") if isinstance(system, dict) else None
        if not isinstance(parts, list) or not all(
            isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts
        ):
            return "systemInstruction: parts of text are required"
    names: set[str] = set()
    for i, tool in enumerate(body.get("tools") or []):
        for j, fd in enumerate((tool or {}).get("functionDeclarations") or []):
            at = f"tools[{i}].function_declarations[{j}]"
            if not isinstance(fd, dict) or not _NAME.match(str(fd.get("name", ""))):
                return f"* GenerateContentRequest.{at}.name: Invalid function name."
            if "parameters" in fd and "parametersJsonSchema" in fd:
                return f"* {at}: parameters and parametersJsonSchema are mutually exclusive"
            schema = fd.get("parametersJsonSchema", fd.get("parameters"))
            if schema is not None and (not isinstance(schema, dict) or "type" not in schema):
                return f"* {at}.parameters: a schema of type object is required"
            names.add(fd["name"])
    config = (body.get("toolConfig") or {}).get("functionCallingConfig")
    if config is not None:
        if config.get("mode") not in ("AUTO", "ANY", "NONE", "VALIDATED"):
            return "toolConfig.functionCallingConfig.mode: Invalid value"
        allowed = set(config.get("allowedFunctionNames") or [])
        if allowed - names:
            return f"allowed_function_names: unknown function {sorted(allowed - names)[0]}"
    pending = 0
    for i, content in enumerate(contents):
        at = f"contents[{i}]"
        if not isinstance(content, dict) or content.get("role", "user") not in ("user", "model"):
            return f"* GenerateContentRequest.{at}.role: Please use a valid role: user, model."
        role = content.get("role", "user")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"* GenerateContentRequest.{at}.parts: contents.parts must not be empty."
        for j, part in enumerate(parts):
            problem = _check_part(part, f"{at}.parts[{j}]", role)
            if problem is not None:
                return problem
            fc = part.get("functionCall")
            issued = (signatures or {}).get(str((fc or {}).get("id")))
            if fc is not None and issued is not None and part.get("thoughtSignature") != issued:
                return (
                    "Function call is missing a thought_signature in functionCall parts. "
                    f"Additional data, function call `{fc.get('name')}`, position {j + 1}."
                )
        responses = sum(1 for p in parts if "functionResponse" in p)
        if pending and responses != pending:
            return (
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn."
            )
        if responses and not pending:
            return f"{at}: a function response must follow a model turn with function calls"
        pending = sum(1 for p in parts if "functionCall" in p)
    generation = body.get("generationConfig") or {}
    temperature = generation.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        return "generation_config.temperature: must be in [0.0, 2.0]"
    return None
