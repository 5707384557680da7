"""JSON from a peer, with its nesting bounded before it is parsed.

``json.loads`` recurses once per level: a small message of 100,000 ``[`` costs a deep
recursion (and a ``RecursionError``) before any check could run. :func:`nesting_depth`
measures the depth in one linear pass over the text (strings skipped, escapes honoured)
without building anything, so :func:`loads` refuses a too-deep message first.
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
    if nesting_depth(text, max_depth) > max_depth:
        raise JSONTooDeep(f"JSON nested deeper than {max_depth} levels")
    return json.loads(text)
