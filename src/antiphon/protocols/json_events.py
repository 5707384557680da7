"""The two events a JSON provider protocol parses a message it cannot use into.

Every sans-I/O protocol of a JSON WebSocket (the TTS and STT sessions, the realtime
events) maps each server message to a typed event; a message of a type the protocol does
not know is :class:`Unknown` (kept, with its decoded body, for logs and tests, and
otherwise ignored, as the providers ask), and one that is not a message of the protocol
at all (not JSON, not an object, a field of the wrong type) is :class:`Malformed`. They
are defined once here and re-exported by each protocol module, so a consumer matches
``case Unknown()`` whichever protocol it reads.

:func:`parse_json_event` is how those protocols open a server message, written once: a
binary frame, text that is not JSON, and JSON that is no object with a string ``type``
each become a :class:`Malformed` whose reason names the provider; anything else is the
decoded object, for the protocol to read by its ``type``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Malformed", "Unknown", "excerpt", "parse_json_event"]


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message of a type the protocol does not know: its ``type`` and decoded body."""

    type: str
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Malformed:
    """A message that is no message of the protocol: why, and its text."""

    reason: str
    text: str = field(repr=False)


def parse_json_event(
    frame: str | bytes | bytearray | memoryview, *, provider: str, key: str | None = "type"
) -> dict[str, Any] | Malformed:
    """A server message's JSON object, or why it is none (never raises).

    Args:
        frame: one WebSocket message, as received (these protocols send text only).
        provider: who sent it, named in the reasons (``"xAI"``, ``"Deepgram"``).
        key: the field the object must hold as a string (``"type"``), or None when any
            object will do.
    """
    if not isinstance(frame, str):
        return Malformed(f"binary frame ({provider} sends JSON text only)", excerpt(frame))
    try:
        msg = json.loads(frame)
    except ValueError as exc:  # JSONDecodeError, and an integer of too many digits
        return Malformed(f"invalid JSON from {provider}: {exc}", excerpt(frame))
    except RecursionError:
        return Malformed(f"JSON from {provider} nested too deep", excerpt(frame))
    if not isinstance(msg, dict):
        return Malformed(f"JSON message from {provider} that is not an object", excerpt(frame))
    if key is not None and not isinstance(msg.get(key), str):
        return Malformed(f"JSON message from {provider} without a string {key!r}", excerpt(frame))
    return msg


def excerpt(frame: str | bytes | bytearray | memoryview) -> str:
    """The start of a message, for :attr:`Malformed.text`: 200 characters, or 50 bytes' repr."""
    return frame[:200] if isinstance(frame, str) else repr(bytes(frame[:50]))
