"""A conversation as the turn-based chat APIs take it, sans I/O: system texts apart, one
turn per run of messages of one role.

Anthropic Messages and Bedrock ``Converse`` both want the system prompt outside the turns,
``user``/``assistant`` turns of content blocks (tool results in a ``user`` turn, before any
text of it), and no empty turn. :func:`merge_turns` does that grouping once; each protocol
module gives it the blocks of one message in its own shape. :func:`tool_input` parses a
call's JSON arguments into the object those APIs want, refusing what is not one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from antiphon.errors import ConfigError
from antiphon.protocols.openai_chat import MessageLike

__all__ = ["merge_turns", "tool_input"]

Block = dict[str, Any]


def tool_input(arguments: str, name: str) -> dict[str, Any]:
    """A tool call's arguments as an object (``{}`` when empty); ConfigError otherwise."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        raise ConfigError(f"tool call {name}: its arguments are not JSON") from None
    if not isinstance(value, dict):
        raise ConfigError(f"tool call {name}: its arguments are not a JSON object")
    return value


def merge_turns(
    messages: Iterable[MessageLike],
    blocks: Callable[[MessageLike], list[Block]],
    *,
    is_result: Callable[[Block], bool],
) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, turns): ``blocks(message)`` of each non-system message, consecutive
    messages of one role merged into one turn, a tool result placed before the text of the
    user turn it joins (``is_result`` tells a result block), messages without blocks
    dropped."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            if m.content.strip():
                system.append(m.content)
            continue
        role = "assistant" if m.role == "assistant" else "user"
        new = blocks(m)
        if not new:
            continue
        if turns and turns[-1]["role"] == role:
            previous = turns[-1]["content"]
            if m.role == "tool":
                at = sum(1 for b in previous if is_result(b))
                previous[at:at] = new
            else:
                previous.extend(new)
        else:
            turns.append({"role": role, "content": new})
    return system, turns
