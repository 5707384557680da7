"""AWS Bedrock ``ConverseStream`` (sans-I/O): the stream machine, and the face.

``POST https://bedrock-runtime.{region}.amazonaws.com/model/{modelId}/converse-stream``
(https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html),
authenticated by a Bedrock API key (``Authorization: Bearer``,
https://docs.aws.amazon.com/bedrock/latest/userguide/api-keys.html) or SigV4 over a key
pair (:func:`~antiphon.protocols.aws_eventstream.sigv4_headers`); the answer is an
``application/vnd.amazon.eventstream`` body (:mod:`antiphon.protocols.aws_eventstream`).
In four modules with one rule each, like h11's (and ``gemini_generate``):

- :mod:`~antiphon.protocols.bedrock_converse_request`: what the client sends (the URL,
  :func:`build_body` from a conversation and tools);
- :mod:`~antiphon.protocols.bedrock_converse_events`: what the server sends, up to a typed
  event (:func:`parse_message`, :func:`finish_reason`, :data:`RETRYABLE_EXCEPTIONS`);
- :mod:`~antiphon.protocols.bedrock_converse_errors`: an error answer, to a typed error
  (:func:`http_error`);
- here: :class:`ConverseStream`, the machine (``feed(event) -> actions``): tool calls
  numbered 0, 1, … by block; ``messageStop`` gives the finish reason, ``metadata`` (which
  follows it) the usage and the end (:class:`Done`); a body that ends after
  ``messageStop`` without ``metadata`` is complete too (:attr:`ConverseStream.stopped`).

This module re-exports the names of the other three, so ``bedrock_converse`` stays the one
import of the plugin (``antiphon.plugins.bedrock.llm``). The request and event shapes are
checked against botocore's ``bedrock-runtime`` service model in the tests (botocore is a
test dependency only).
"""

from __future__ import annotations

import enum

from antiphon.protocols.bedrock_converse_errors import http_error
from antiphon.protocols.bedrock_converse_events import (
    RETRYABLE_EXCEPTIONS,
    BlockStart,
    BlockStop,
    MessageStart,
    MessageStop,
    Metadata,
    ServerEvent,
    TextChunk,
    ToolInputChunk,
    Unknown,
    finish_reason,
    parse_message,
)
from antiphon.protocols.bedrock_converse_request import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_REGION,
    TOOL_CHOICES,
    ToolLike,
    build_body,
    conversation,
    converse_stream_url,
)
from antiphon.protocols.chat_actions import (
    Action,
    Done,
    Finish,
    TextOut,
    ToolArgsOut,
    ToolStartOut,
    UsageOut,
)
from antiphon.protocols.openai_chat import Malformed, StreamErrorEvent

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_REGION",
    "RETRYABLE_EXCEPTIONS",
    "TOOL_CHOICES",
    "Action",
    "BlockStart",
    "BlockStop",
    "ConverseStream",
    "Done",
    "Finish",
    "Malformed",
    "MessageStart",
    "MessageStop",
    "Metadata",
    "ServerEvent",
    "StreamErrorEvent",
    "TextChunk",
    "TextOut",
    "ToolArgsOut",
    "ToolInputChunk",
    "ToolLike",
    "ToolStartOut",
    "Unknown",
    "UsageOut",
    "build_body",
    "conversation",
    "converse_stream_url",
    "finish_reason",
    "http_error",
    "parse_message",
]


# --------------------------------------------------------------------------- machine


class Phase(enum.Enum):
    WAITING = "waiting"  # before messageStart
    MESSAGE = "message"
    STOPPED = "stopped"  # after messageStop, before metadata
    DONE = "done"


class ConverseStream:
    """The machine of one streamed answer: events in, actions out (see the module docstring)."""

    def __init__(self) -> None:
        self.phase = Phase.WAITING
        self.stop_reason: str | None = None
        self._tools: dict[int, int] = {}
        self._with_args: set[int] = set()

    @property
    def stopped(self) -> bool:
        """``messageStop`` arrived: the answer is whole even if ``metadata`` never does."""
        return self.phase in (Phase.STOPPED, Phase.DONE)

    def _bad(self, what: str) -> Malformed:
        return Malformed(f"{what} (phase {self.phase.value})")

    def feed(self, event: ServerEvent) -> list[Action]:
        if isinstance(event, Unknown) or self.phase is Phase.DONE:
            return []
        match event:
            case MessageStart():
                if self.phase is not Phase.WAITING:
                    raise self._bad("a second messageStart")
                self.phase = Phase.MESSAGE
                return []
            case Metadata(prompt, completion):
                if self.phase is Phase.WAITING:
                    raise self._bad("metadata before messageStart")
                self.phase = Phase.DONE
                return [UsageOut(prompt, completion), Done()]
            case _ if self.phase is not Phase.MESSAGE:
                raise self._bad(f"{type(event).__name__} outside the message")
            case BlockStart(index, tool_use_id, name):
                if index in self._tools:
                    raise self._bad(f"toolUse block #{index} started twice")
                tool = len(self._tools)
                self._tools[index] = tool
                return [ToolStartOut(tool, tool_use_id, name)]
            case TextChunk(index, text):
                if index in self._tools:
                    raise self._bad(f"text in toolUse block #{index}")
                return [TextOut(text)] if text else []
            case ToolInputChunk(index, fragment):
                if index not in self._tools:
                    raise self._bad(f"toolUse input for block #{index}, which is no toolUse")
                if not fragment:
                    return []
                self._with_args.add(index)
                return [ToolArgsOut(self._tools[index], fragment)]
            case BlockStop(index):
                if index in self._tools and index not in self._with_args:
                    self._with_args.add(index)
                    return [ToolArgsOut(self._tools[index], "{}")]
                return []
            case MessageStop(reason):
                self.phase = Phase.STOPPED
                self.stop_reason = reason
                return [Finish(finish_reason(reason), reason)]
        raise self._bad(f"unexpected {event!r}")  # pragma: no cover - exhaustive above
