"""OpenAI chat completions, streamed (sans-I/O): the face of three modules.

The wire protocol of ``POST {base_url}/chat/completions`` with ``"stream": true``, which
OpenAI, Azure OpenAI, Ollama, vLLM, xAI and Groq all speak, in three modules with one
rule each, like h11's:

- :mod:`~antiphon.protocols.openai_chat_request`: what the client sends (the URL,
  :func:`build_body` from a conversation and tools, :func:`encode_body`);
- :mod:`~antiphon.protocols.openai_chat_events`: what the server sends, up to a typed
  event (:class:`SseParser` for the ``text/event-stream`` framing, :func:`parse_event` /
  :func:`parse_chunk` for the ``chat.completion.chunk`` objects in it);
- :mod:`~antiphon.protocols.openai_chat_errors`: an error response, to a typed error
  (:func:`http_error`, :func:`parse_retry_after`).

This module re-exports them all, so ``openai_chat`` stays the one import of the plugins
and of the other LLM protocols that reuse its pieces. No I/O and no asyncio here; the
plugin is ``antiphon.plugins.openai.llm``.
"""

from __future__ import annotations

from antiphon.protocols.openai_chat_errors import (
    ChatAuthError,
    ChatHttpError,
    ChatRequestError,
    http_error,
    parse_retry_after,
)
from antiphon.protocols.openai_chat_events import (
    DONE,
    MAX_LINE,
    ContentDelta,
    Done,
    Finish,
    Malformed,
    SseEvent,
    SseParser,
    StreamErrorEvent,
    ToolCallFragment,
    UsageReport,
    WireEvent,
    parse_chunk,
    parse_event,
)
from antiphon.protocols.openai_chat_request import (
    AZURE_API_VERSION,
    CHAT_PATH,
    DEFAULT_BASE_URL,
    TOOL_CHOICES,
    MessageLike,
    ToolCallLike,
    ToolLike,
    azure_chat_url,
    build_body,
    chat_url,
    encode_body,
    message_to_wire,
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
