"""The two events a JSON provider protocol parses a message it cannot use into.

Every sans-I/O protocol of a JSON WebSocket (the TTS and STT sessions, the realtime
events) maps each server message to a typed event; a message of a type the protocol does
not know is :class:`Unknown` (kept, with its decoded body, for logs and tests, and
otherwise ignored, as the providers ask), and one that is not a message of the protocol
at all (not JSON, not an object, a field of the wrong type) is :class:`Malformed`. They
are defined once here and re-exported by each protocol module, so a consumer matches
``case Unknown()`` whichever protocol it reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Malformed", "Unknown"]


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
