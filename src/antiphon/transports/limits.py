"""What a peer may send a call: :class:`EdgeLimits`, enforced by :class:`ConnectionGuard`.

Every inbound byte is bounded (rule 15 of DESIGN.md). One frozen dataclass names every
limit of the server's edge, with defaults an operator of a phone-facing service can
keep; ``antiphon serve`` exposes the ones an operator would set.

:class:`ConnectionGuard` wraps a call's socket (it is itself a
:class:`~antiphon.transports.base.WebSocketLike`, so a bridge reads through it unchanged):

- **Size**: a binary or text message over its limit ends the call with 1009 before it is
  looked at.
- **Rate**: two token buckets, messages per second and audio seconds per wall second
  (``max_audio_speed`` times real time). Each holds ``burst_seconds`` worth, so a client
  that stalled (a tab in the background, a congested link) may send what it queued at
  once; a sender that stays faster than that is ended with 4429. A bucket, unlike a
  fixed one-second window, never counts a healthy client's catch-up as abuse.
- **Deadlines**: :meth:`ConnectionGuard.watch`, one task per call run by its owner,
  sleeps on a :class:`~antiphon.aio.clock.Clock` until the first-message deadline, then
  the idle deadline (any message resets it: real clients stream silence as frames), and
  the maximum call duration; when one passes, the call is ended with 4408 (through
  ``on_expire``, or by closing the socket while no call runs yet). Tests run it on a
  :class:`~antiphon.aio.clock.VirtualClock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from antiphon.aio.clock import Clock, MonotonicClock
from antiphon.errors import ConfigError
from antiphon.transports.base import (
    NORMAL,
    RATE_LIMITED,
    TOO_BIG,
    CallEnded,
    DirectWire,
    WebSocketLike,
)

__all__ = ["TIMED_OUT", "ConnectionGuard", "EdgeLimits", "TokenBucket", "guard_of"]

TIMED_OUT = 4408
"""Close code of a call that missed a deadline (no first message, idle, too long)."""


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """Every limit of the server's edge (see the threat model in docs/server.md)."""

    # -- sizes (bytes unless named otherwise)
    max_audio_bytes: int = 32_000
    """One ``/ws/agent`` audio message: 1 s of 16 kHz PCM16 (the page sends 640)."""
    max_text_bytes: int = 16_384
    """One ``/ws/agent`` text (JSON) message."""
    max_say_chars: int = 4_000
    """The text of one ``say`` message."""
    max_json_depth: int = 8
    """Nesting of any JSON a peer sends, checked before it is parsed."""
    max_twilio_message_bytes: int = 8_192
    """One Media Streams message (a 20 ms ``media`` message is ~330 bytes)."""
    max_twilio_media_bytes: int = 800
    """The μ-law of one ``media`` message: Twilio sends 160 (20 ms); 100 ms at most."""
    max_http_body_bytes: int = 65_536
    """A request body read before any check: ``/twilio/voice``, ``/webrtc/offer``."""
    http_body_timeout: float = 10.0
    """The longest a request body may take to arrive (a slow sender holds nothing)."""
    # -- rates
    max_messages_per_second: int = 200
    """Messages per second, sustained (50 a second is real time in 20 ms frames)."""
    max_audio_speed: float = 3.0
    """Audio seconds per wall second, sustained."""
    burst_seconds: float = 5.0
    """How far behind a client may fall and catch up at once, in seconds of either rate."""
    # -- deadlines (seconds)
    first_message_timeout: float = 10.0
    """From the upgrade to the peer's first message."""
    idle_timeout: float = 20.0
    """The longest gap between two messages (not silence: silence arrives as frames)."""
    webrtc_connect_timeout: float = 15.0
    """From the answer to a connected WebRTC call."""
    max_call_duration: float | None = None
    """The longest call (None: no limit)."""
    send_timeout: float = 5.0
    """The longest one send may take before the call is closed (a client not reading)."""
    end_timeout: float = 20.0
    """After ``end``: the longest the reply in progress may take to finish."""

    def __post_init__(self) -> None:
        sizes = (
            self.max_audio_bytes, self.max_text_bytes, self.max_say_chars,
            self.max_json_depth, self.max_twilio_message_bytes, self.max_twilio_media_bytes,
            self.max_http_body_bytes, self.max_messages_per_second,
        )  # fmt: skip
        if any(not isinstance(n, int) or n < 2 for n in sizes):
            raise ConfigError("EdgeLimits: sizes, depth and message rate must be integers >= 2")
        seconds = (
            self.max_audio_speed, self.burst_seconds, self.first_message_timeout,
            self.http_body_timeout,
            self.idle_timeout, self.webrtc_connect_timeout, self.send_timeout, self.end_timeout,
        )  # fmt: skip
        if any(not math.isfinite(s) or s <= 0 for s in seconds):
            raise ConfigError("EdgeLimits: rates and timeouts must be positive seconds")
        if self.max_call_duration is not None and not self.max_call_duration > 0:
            raise ConfigError("EdgeLimits: max_call_duration must be positive seconds or None")
        if self.max_audio_speed < 1.0:
            raise ConfigError("EdgeLimits: max_audio_speed below 1.0 refuses real-time audio")

    @property
    def max_ws_message_bytes(self) -> int:
        """The largest WebSocket message any endpoint accepts (for the server's reader)."""
        return max(self.max_audio_bytes, self.max_text_bytes, self.max_twilio_message_bytes)


class TokenBucket:
    """``rate`` units a second, at most ``capacity`` saved up; time is passed in."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self._at = now

    def take(self, cost: float, now: float) -> bool:
        """Spend ``cost`` if the bucket holds it; False (nothing spent) if not."""
        if now > self._at:
            self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
            self._at = now
        if cost > self.level:
            return False
        self.level -= cost
        return True


class ConnectionGuard:
    """A call's socket with its limits enforced (see the module docstring).

    Args:
        ws: the accepted socket.
        limits: the limits.
        max_binary_bytes: the largest binary message.
        max_text_bytes: the largest text message.
        audio_rate: binary messages are PCM16 mono at this rate and count against the
            audio budget (None: the reader calls :meth:`spend_audio` itself).
        clock: time for the rates and deadlines (default: the event loop's).
    """

    def __init__(
        self,
        ws: WebSocketLike,
        limits: EdgeLimits,
        *,
        max_binary_bytes: int,
        max_text_bytes: int,
        audio_rate: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.ws = ws
        self.limits = limits
        self.max_binary_bytes = max_binary_bytes
        self.max_text_bytes = max_text_bytes
        self.audio_rate = audio_rate
        self.clock: Clock = clock or MonotonicClock()
        self.on_expire: Callable[[int, str], None] | None = None
        """How to end the call when a deadline passes (default: close the socket)."""
        self.messages = 0
        self.expired: CallEnded | None = None
        self._pending: deque[bytes | str] = deque()
        self._started: float | None = None
        self._last = 0.0
        self._rate: TokenBucket | None = None
        self._audio: TokenBucket | None = None
        self._closing = False
        self._loop_time: Callable[[], float] | None = None  # the call's loop's clock

    def _begin(self) -> float:
        now = self.clock.now()
        if self._started is None:
            # what MonotonicClock.now reads, without its asyncio.get_running_loop() per
            # read (a system call on Python 3.11): the loop the call runs in
            self._loop_time = asyncio.get_running_loop().time
            self._started = self._last = now
            lim = self.limits
            rate = lim.max_messages_per_second
            self._rate = TokenBucket(rate, rate * lim.burst_seconds, now)
            self._audio = TokenBucket(lim.max_audio_speed, lim.burst_seconds, now)
        return now

    def _now(self) -> float:
        """``clock.now()``; on the default clock, once the call began, read directly."""
        loop_time = self._loop_time
        if loop_time is not None and type(self.clock) is MonotonicClock:
            return loop_time()
        return self.clock.now()

    # -- WebSocketLike
    async def receive(self) -> bytes | str | None:
        """The next message within the limits; raises :class:`CallEnded` otherwise."""
        if self.expired is not None:
            raise self.expired
        if self._pending:
            return self._pending.popleft()
        if self._started is None:
            self._begin()
        message = await self.ws.receive()
        if message is None:
            if self.expired is not None:
                raise self.expired
            return None
        self._check(message, self._now())
        return message

    def admit(self, message: bytes | str) -> None:
        """Check a message the socket handed over outside :meth:`receive` (its direct
        path) as :meth:`receive` would; raises :class:`CallEnded` if it is over a limit."""
        if self.expired is not None:
            raise self.expired
        if self._started is None:
            self._begin()
        self._check(message, self._now())

    def _check(self, message: bytes | str, now: float) -> None:
        self._last = now
        self.messages += 1
        if isinstance(message, bytes):
            size = len(message)
            if size > self.max_binary_bytes:
                limit = self.max_binary_bytes
                raise CallEnded(TOO_BIG, f"binary messages are at most {limit} bytes")
            rate = self.audio_rate
            if rate is not None:  # the clock read once per message
                self._spend_audio(size / (2 * rate), now)
        elif len(message) > self.max_text_bytes or (
            # characters ≤ bytes: encode only a text that may be over the limit
            4 * len(message) > self.max_text_bytes and len(message.encode()) > self.max_text_bytes
        ):
            raise CallEnded(TOO_BIG, f"text messages are at most {self.max_text_bytes} bytes")
        assert self._rate is not None
        if not self._rate.take(1.0, now):
            raise CallEnded(
                RATE_LIMITED,
                f"more than {self.limits.max_messages_per_second} messages a second",
            )

    @property
    def direct(self) -> DirectWire | None:
        """The socket's direct path, if its server offers one."""
        direct: DirectWire | None = getattr(self.ws, "direct", None)
        return direct

    @property
    def pending(self) -> bool:
        """Whether messages given back by :meth:`unread` wait to be received."""
        return bool(self._pending)

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def send_text(self, data: str) -> None:
        await self.ws.send_text(data)

    async def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Close the socket once (later calls do nothing; a gone peer is not an error)."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.limits.send_timeout):
                await self.ws.close(code, reason)

    # -- the call's budget and deadlines
    def unread(self, *messages: bytes | str) -> None:
        """Give messages already read (and checked) back, to be received again first."""
        self._pending.extend(messages)

    def spend_audio(self, seconds: float) -> None:
        """Count ``seconds`` of the peer's audio; :class:`CallEnded` (4429) if too fast."""
        self._spend_audio(seconds, self._begin())

    def _spend_audio(self, seconds: float, now: float) -> None:
        assert self._audio is not None
        if not self._audio.take(seconds, now):
            speed = self.limits.max_audio_speed
            raise CallEnded(RATE_LIMITED, f"audio faster than {speed:g}× real time")

    @property
    def deadline(self) -> tuple[float, str]:
        """When the call ends unless a message arrives, and why."""
        lim = self.limits
        start = self._started if self._started is not None else self.clock.now()
        if self.messages == 0:
            due = start + lim.first_message_timeout
            why = f"no message within {lim.first_message_timeout:g} s"
        else:
            due, why = self._last + lim.idle_timeout, f"idle for {lim.idle_timeout:g} s"
        if lim.max_call_duration is not None and start + lim.max_call_duration < due:
            due, why = start + lim.max_call_duration, f"longer than {lim.max_call_duration:g} s"
        return due, why

    async def watch(self) -> None:
        """Sleep until a deadline passes, then end the call (4408); run by the call's owner."""
        self._begin()
        while True:
            due, why = self.deadline
            if self.clock.now() >= due:
                break
            await self.clock.sleep_until(due)
        self.expired = CallEnded(TIMED_OUT, why)
        if self.on_expire is not None:
            self.on_expire(TIMED_OUT, why)
        else:
            await self.close(TIMED_OUT, why)


def guard_of(ws: WebSocketLike) -> tuple[EdgeLimits, ConnectionGuard | None]:
    """The limits a bridge reading ``ws`` applies, and the guard if ``ws`` is one."""
    if isinstance(ws, ConnectionGuard):
        return ws.limits, ws
    return _DEFAULT, None


_DEFAULT = EdgeLimits()
