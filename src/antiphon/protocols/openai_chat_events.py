"""OpenAI chat completions: what the server sends, up to a typed event (sans-I/O).

Two layers, each incremental and pure:

- :class:`SseParser` turns the response body, in chunks of any size, into server-sent
  events (the WHATWG ``text/event-stream`` rules: ``\\r\\n``, ``\\n`` or ``\\r`` line ends,
  ``data:`` lines joined, ``:`` comments and keep-alives skipped, an incomplete event at
  the end dropped). Bytes that cannot be an event stream raise :class:`Malformed`. The
  Anthropic and Gemini protocols parse their streams with it too.
- :func:`parse_event` (:func:`parse_chunk` for a decoded chunk) turns one event into
  :data:`WireEvent`\\ s: :class:`ContentDelta`, :class:`ToolCallFragment`,
  :class:`Finish`, :class:`UsageReport`, :class:`Done` (the ``data: [DONE]`` sentinel) —
  or raises :class:`StreamErrorEvent` for an in-stream ``{"error": ...}`` and
  :class:`Malformed` for data that is not a chunk. Fields it does not know (``logprobs``,
  ``refusal``, ``reasoning_content``, ``system_fingerprint``) are ignored, as is any
  choice but the first.

Part of :mod:`antiphon.protocols.openai_chat`, which re-exports it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DONE",
    "MAX_LINE",
    "ContentDelta",
    "Done",
    "Finish",
    "Malformed",
    "SseEvent",
    "SseParser",
    "StreamErrorEvent",
    "ToolCallFragment",
    "UsageReport",
    "WireEvent",
    "parse_chunk",
    "parse_event",
]

DONE = "[DONE]"
#: Longest line (bytes) the parser buffers before calling the stream garbage.
MAX_LINE = 1024 * 1024


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
