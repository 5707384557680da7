"""Gemini ``streamGenerateContent`` as SSE (sans-I/O): the stream machine, and the face.

The wire protocol of ``POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse``
with the key in ``x-goog-api-key`` (https://ai.google.dev/api/generate-content), in four
modules with one rule each, like h11's:

- :mod:`~antiphon.protocols.gemini_generate_request`: what the client sends (the URL, the
  headers, :func:`build_body` from a conversation and tools, with the tool schema);
- :mod:`~antiphon.protocols.gemini_generate_events`: what the server sends, up to a typed
  event (:class:`GeminiSseParser`, :func:`parse_event`, :func:`finish_reason`);
- :mod:`~antiphon.protocols.gemini_generate_errors`: an error response, to a typed error
  (:func:`http_error`);
- here: :class:`GenerateStream`, the stream's machine (``feed(event) -> actions``): it
  numbers function calls 0, 1, … and names those the API sent without an ``id``; the chunk
  with a ``finishReason`` ends the response (:class:`Done`) and anything after it is
  ignored. ``STOP`` with calls is ``tool_calls``; ``MAX_TOKENS`` ``length``; the safety
  reasons ``content_filter``; a malformed or unexpected function call is an error.

This module re-exports the names of the other three, so ``gemini_generate`` stays the one
import of the plugin. No I/O and no asyncio here; the plugin is
``antiphon.plugins.gemini.llm``.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from antiphon.protocols.gemini_generate_errors import http_error
from antiphon.protocols.gemini_generate_events import (
    FAILED,
    CallPart,
    FinishEvent,
    FinishReason,
    GeminiSseParser,
    ServerEvent,
    TextPart,
    UsageEvent,
    finish_reason,
    parse_event,
)
from antiphon.protocols.gemini_generate_request import (
    API_VERSION,
    DEFAULT_BASE_URL,
    GENERATED_ID_PREFIX,
    NamedMessageLike,
    ToolLike,
    build_body,
    request_headers,
    stream_url,
)
from antiphon.protocols.openai_chat import Malformed, StreamErrorEvent, encode_body

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
    "NamedMessageLike",
    "Phase",
    "ServerEvent",
    "StreamErrorEvent",
    "TextOut",
    "TextPart",
    "ToolCallOut",
    "ToolLike",
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
