"""What a streamed chat answer's machine tells its plugin, sans I/O: one vocabulary.

The Anthropic Messages and Bedrock ``ConverseStream`` machines (``feed(event) ->
actions``) both stream text, tool calls opened with an id and a name and filled by
argument fragments, usage, a finish reason and the end; these are their actions, and
:class:`~antiphon.services.http_llm.HttpChatStream` reports them
(:meth:`~antiphon.services.http_llm.HttpChatStream._report_action`), so each plugin maps
only its wire protocol, not this vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Action",
    "Done",
    "Finish",
    "FinishReason",
    "TextOut",
    "ToolArgsOut",
    "ToolStartOut",
    "UsageOut",
]

FinishReason = Literal["stop", "tool_calls", "length", "content_filter"]


@dataclass(frozen=True, slots=True)
class TextOut:
    text: str


@dataclass(frozen=True, slots=True)
class ToolStartOut:
    """Tool call ``tool_index`` (0, 1, … in the answer) opens with its id and name."""

    tool_index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolArgsOut:
    """A fragment of tool call ``tool_index``'s JSON arguments."""

    tool_index: int
    arguments: str


@dataclass(frozen=True, slots=True)
class UsageOut:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Finish:
    """antiphon's finish ``reason`` and the provider's own (``stop_reason``)."""

    reason: FinishReason
    stop_reason: str


@dataclass(frozen=True, slots=True)
class Done:
    """The answer is complete."""


Action = TextOut | ToolStartOut | ToolArgsOut | UsageOut | Finish | Done
