"""JSON from a peer, with its nesting bounded before it is parsed.

``json.loads`` recurses once per level: a small message of 100,000 ``[`` costs a deep
recursion (and a ``RecursionError``) before any check could run. :func:`nesting_depth`
measures the depth in one linear pass over the text (strings skipped, escapes honoured)
without building anything, so :func:`loads` refuses a too-deep message first.

That pass is a Python-level regex loop, several times the cost of the parse itself, and
:func:`loads` runs on every media message (50 a second per call). So :func:`loads` first
counts the opening brackets with ``str.count`` (C speed): the depth can never exceed that
count (each level opens with a bracket; brackets inside strings only add to the count),
so a message with at most ``max_depth`` of them (a media message has two) goes straight
to ``json.loads``, and only the others are scanned. Sizes are bounded before this, by the
transport (the WebSocket's ``max_size``, the HTTP body limit).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["JSONTooDeep", "loads", "nesting_depth"]

# Brackets, and strings as one token each (so brackets inside strings do not count).
_TOKENS = re.compile(r'[\[\]{}]|"(?:[^"\\]|\\.)*"?', re.DOTALL)


class JSONTooDeep(ValueError):
    """A JSON text nests deeper than allowed."""


def nesting_depth(text: str, stop_at: int | None = None) -> int:
    """The deepest nesting of arrays and objects in ``text`` (0 for a scalar).

    Stops counting once the depth passes ``stop_at`` (returns ``stop_at + 1``).
    """
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_at is not None and deepest > stop_at:
                    return deepest
        elif token in ("]", "}"):
            depth -= 1
    return deepest


def loads(text: str | bytes, *, max_depth: int) -> Any:
    """``json.loads(text)``, refusing (before parsing) a text deeper than ``max_depth``.

    Raises:
        JSONTooDeep: the text nests deeper than ``max_depth``.
        ValueError: the text is not JSON (``json.JSONDecodeError``).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if text.count("{") + text.count("[") <= max_depth:
        return json.loads(text)  # it cannot nest deeper than its brackets
    if nesting_depth(text, max_depth) > max_depth:
        raise JSONTooDeep(f"JSON nested deeper than {max_depth} levels")
    return json.loads(text)
