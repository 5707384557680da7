"""The harness of the TTS conformance suite: the plugin contract, deadlines, helpers.

:class:`TTSHarness` says what the suite needs of one plugin and its fake server (a
plugin's tests provide one); :data:`FAST` are the short deadlines every test runs the
plugin with (:data:`GUARD` bounds a whole test); :func:`slow_sends` slows the client's
WebSocket sends, with a :class:`SendProbe` to see them, for the cancel-during-send cases
of this suite and of :mod:`antiphon.testing.conformance.stt_ws`. Cut out of
:mod:`antiphon.testing.conformance.tts`, which holds the cases and re-exports the names
here, so that the harness and the cases are read apart (as ``realtime_harness`` is).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from antiphon.net.pool import PoolOptions
from antiphon.net.ws import WsConnection
from antiphon.services.tts import TTS, SynthesisStream, TTSDeadlines
from antiphon.testing.faults import FaultPlan
from antiphon.testing.server import FakeServer, FakeWsServer

__all__ = [
    "FAST",
    "GUARD",
    "Run",
    "SendProbe",
    "TTSHarness",
    "all_audio",
    "free_port",
    "slow_sends",
]

#: Short deadlines so that faults resolve quickly; the guard catches real hangs.
FAST = TTSDeadlines(connect=1.0, first_audio=1.0, idle=1.0, clear=0.5, close=0.5)
GUARD = 15.0


class TTSHarness(ABC):
    """What the suite needs to know about one plugin and its fake server."""

    #: Messages carry a stream (context) id: a cancel needs no acknowledgement, since a
    #: later stream drops whatever still arrives for the old one.
    context_ids: ClassVar[bool] = False

    def url_for_port(self, port: int) -> str:
        """The plugin's base URL for a local server on ``port``."""
        return f"ws://127.0.0.1:{port}"

    @abstractmethod
    def fake(self, plan: FaultPlan) -> FakeServer:
        """A new (not started) fake server following ``plan``."""

    @abstractmethod
    def make_tts(
        self, base_url: str, *, deadlines: TTSDeadlines, pool: PoolOptions | None = None
    ) -> TTS:
        """The plugin pointed at ``base_url``, with valid test credentials."""

    @abstractmethod
    def expected_pcm(self, text: str, tts: TTS) -> bytes:
        """The exact int16 PCM the plugin must yield for ``text`` spoken alone."""

    @abstractmethod
    def connections(self, fake: Any) -> int:
        """How many connections the fake has accepted so far."""

    @abstractmethod
    def cancels(self, fake: Any) -> int:
        """How many cancel/clear messages the fake has received."""

    def make_timed_tts(self, base_url: str, *, deadlines: TTSDeadlines) -> TTS | None:
        """The plugin configured to send word timings, or None if its service sends none
        (then its streams must say so: ``words is None``)."""
        return None

    def connect_attempts(self, fake: Any) -> int:
        """How many connections reached the fake, held ones (``hang_connect``) included."""
        if isinstance(fake, FakeWsServer):
            return fake.upgrades
        return self.connections(fake)


@dataclass
class Run:
    """One test's plugin and fake, running (what the suite's ``run`` yields)."""

    fake: Any
    tts: TTS
    harness: TTSHarness


def free_port() -> int:
    """A loopback port free right now (nobody listens on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class SendProbe:
    """What the patched sends saw: ``entered`` is set when a send begins; ``interrupted``
    counts sends cancelled while they waited."""

    entered: asyncio.Event
    interrupted: int = 0


@contextlib.contextmanager
def slow_sends(
    monkeypatch: pytest.MonkeyPatch, *, before: float = 0.0, after: float = 0.0
) -> Iterator[SendProbe]:
    """Make every WebSocket send of the client wait before and/or after the write."""
    original = WsConnection.send
    probe = SendProbe(asyncio.Event())

    async def send(self: WsConnection, message: str | bytes, *, stage: str = "send") -> None:
        probe.entered.set()
        try:
            if before:
                await asyncio.sleep(before)
        except asyncio.CancelledError:
            probe.interrupted += 1
            raise
        await original(self, message, stage=stage)
        if after:
            await asyncio.sleep(after)

    monkeypatch.setattr(WsConnection, "send", send)
    yield probe
    monkeypatch.setattr(WsConnection, "send", original)


async def all_audio(stream: SynthesisStream) -> bytes:
    """All the audio of ``stream``, to its end."""
    return b"".join([f.data async for f in stream])
