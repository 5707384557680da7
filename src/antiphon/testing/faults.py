"""``FaultPlan``: what a fake provider server does wrong, on purpose.

One plan type serves every fake; each fake documents which fields apply to its protocol.
The defaults describe a healthy, fast server.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from websockets.frames import EXTERNAL_CLOSE_CODES

from antiphon.errors import ConfigError

__all__ = ["ABORT", "FaultPlan"]

#: Close code that means "drop the TCP connection without a close frame" (peer sees 1006).
ABORT = 1006


def _sendable(code: object) -> bool:
    """A close code a server can send (or ``ABORT``); a bool is a mistake, not 1."""
    if not isinstance(code, int) or isinstance(code, bool):
        return False
    return code == ABORT or code in EXTERNAL_CLOSE_CODES or 3000 <= code <= 4999


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Faults of DESIGN.md's conformance list, as knobs of a fake server."""

    # -- connecting
    hang_connect: bool = False
    """Accept TCP but never answer the WebSocket upgrade."""
    reject_status: int | None = None
    """Answer the upgrade with this HTTP status (401, 403, 429, 500, ...)."""
    close_on_open: int | None = None
    """Accept the upgrade, then close at once with this code (1008: auth rejected)."""
    close_on_open_reason: str = "Invalid credentials"

    # -- while streaming
    silent_after: int | None = None
    """After reading this many client messages, answer nothing more (no audio, no ack)."""
    close_mid_audio: int | None = None
    """Close with this code (``ABORT`` drops TCP) after ``close_after_chunks`` chunks."""
    close_after_chunks: int = 2
    close_reason: str = "NET-0001"
    drop_before_audio: int = 0
    """Close (1011) the first N connections when they get their first flush, before audio."""
    error_mid_stream: bool = False
    """Send the protocol's error message after ``close_after_chunks`` chunks."""
    malformed_mid_stream: bool = False
    """Send invalid JSON and an unknown message type in the middle of the audio."""
    audio_after_done: int = 0
    """Send this many extra audio chunks right after the done marker."""
    audio_after_clear: int = 0
    """On a cancel, keep sending this many chunks of old audio before acknowledging it."""
    ignore_clear: bool = False
    """Never acknowledge a cancel (Clear)."""
    first_audio_delay: float = 0.0
    """Seconds before the first audio chunk of each answer (a slow server)."""
    chunk_interval: float = 0.0
    """Seconds between audio chunks (0: as fast as the socket takes them)."""
    odd_chunking: bool = False
    """Cut 16-bit audio at odd byte offsets, as real servers may."""

    # -- connection lifetime
    idle_close_after: float | None = None
    """Close a connection that received nothing for this long (an idle timeout)."""
    max_connection_age: float | None = None
    """Close any connection older than this many seconds."""

    def __post_init__(self) -> None:
        for name in ("close_on_open", "close_mid_audio"):
            code = getattr(self, name)
            if code is None:
                continue
            if not _sendable(code):
                raise ConfigError(
                    f"FaultPlan {name} is a WebSocket close code, got {code!r}: use e.g. "
                    "1011 (server error), 1008 (policy) or ABORT (drop TCP, the client "
                    "sees 1006)"
                )

    def describe(self) -> str:
        """The non-default fields, for test ids and logs."""
        default = FaultPlan()
        parts = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        ]
        return ", ".join(parts) or "healthy"
