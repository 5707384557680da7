"""The harness of the realtime conformance suite: the fake and plugin contracts, helpers.

:class:`RealtimeFake` and :class:`RealtimeFakeStatsView` say what the suite needs of a
realtime fake; :class:`RealtimeHarness` (and :class:`OpenAISchemaHarness`) is what a
plugin's tests provide; :class:`RealtimeSuiteBase` runs one plugin against its fake
(:meth:`RealtimeSuiteBase.run`, leak check included) and is the base of every group of test
cases (:mod:`~antiphon.testing.conformance.realtime_turns`,
:mod:`~antiphon.testing.conformance.realtime_faults`), which
:class:`~antiphon.testing.conformance.realtime.RealtimeConformance` puts together.
Cut out of ``conformance/realtime.py`` so that the harness and the cases are read apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np

from antiphon.audio.frame import AudioFrame
from antiphon.services.realtime import (
    AgentAudio,
    RealtimeDeadlines,
    RealtimeEvent,
    RealtimeModel,
    RealtimeSession,
    ResponseDone,
)
from antiphon.testing.faults import FaultPlan
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.realtime import FakeRealtimeServer, RealtimeFakeStats
from antiphon.testing.server import FakeServer, serving

__all__ = [
    "FAST",
    "GUARD",
    "WEATHER",
    "FakeT",
    "OpenAISchemaHarness",
    "RealtimeFake",
    "RealtimeFakeStatsView",
    "RealtimeHarness",
    "RealtimeSuiteBase",
    "Run",
    "audio_of",
    "eventually",
    "speech",
    "turn",
]

#: Short deadlines so that faults resolve quickly; the guard catches real hangs.
FAST = RealtimeDeadlines(connect=1.0, ready=1.0, response=1.0, idle=1.0, send=1.0, close=0.5)
GUARD = 20.0
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


class RealtimeFakeStatsView(Protocol):
    """What the suite reads of every realtime fake's stats."""

    @property
    def connections(self) -> int: ...
    @property
    def session_updates(self) -> int:
        """Configurations received (``session.update``, Gemini's ``setup``)."""

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """Each configuration as received, in order."""

    @property
    def audio_in(self) -> bytearray:
        """The user audio received, as sent on the wire."""

    @property
    def closes_sent(self) -> list[int]: ...


class RealtimeFake(FakeServer, Protocol):
    """What the suite needs of a realtime fake server."""

    upgrades: int

    @property
    def stats(self) -> RealtimeFakeStatsView: ...

    def expected_reply(self, user_text: str) -> str:
        """What the fake answers to ``user_text``."""

    def kick(self, code: int = 1011, reason: str = "kicked by the test") -> None:
        """Close every open connection with ``code``."""


FakeT = TypeVar("FakeT", bound=RealtimeFake)


class RealtimeHarness(ABC, Generic[FakeT]):
    """What the suite needs to know about one plugin and its fake."""

    #: Wire input rates the plugin can be configured for (besides 24000).
    input_rates: ClassVar[tuple[int, ...]] = (24000,)

    @abstractmethod
    def fake(self, plan: FaultPlan, **kwargs: Any) -> FakeT:
        """The plugin's fake with ``plan``; ``kwargs`` are ``transcripts``, ``api_key``,
        ``chunk_ms`` (what every realtime fake takes)."""

    def url_for_port(self, port: int) -> str:
        return f"ws://127.0.0.1:{port}"

    @abstractmethod
    def make_model(
        self, base_url: str, *, deadlines: RealtimeDeadlines, **kwargs: Any
    ) -> RealtimeModel:
        """The plugin pointed at ``base_url`` with valid test credentials; ``kwargs`` are
        ``instructions``, ``voice``, ``tools``, ``max_reconnects``, ``input_sample_rate``,
        ``max_input_backlog``, ``turn_detection`` (None: off)."""

    @abstractmethod
    def other_voice(self) -> Any:
        """A valid voice different from the default (for update/restore tests)."""


class OpenAISchemaHarness(RealtimeHarness[FakeRealtimeServer]):
    """A harness whose fake is :class:`~antiphon.testing.realtime.FakeRealtimeServer` in
    ``dialect`` ``"ga"`` (OpenAI) or ``"beta"`` (Azure Voice Live)."""

    dialect: ClassVar[str] = "ga"

    def fake(self, plan: FaultPlan, **kwargs: Any) -> FakeRealtimeServer:
        return FakeRealtimeServer(plan, dialect=self.dialect, **kwargs)


@dataclass
class Run(Generic[FakeT]):
    fake: FakeT
    model: RealtimeModel


async def turn(
    s: RealtimeSession, until: Callable[[RealtimeEvent], bool] | None = None
) -> list[RealtimeEvent]:
    """Events up to and including the first ``ResponseDone`` (or ``until``)."""
    stop = until or (lambda e: isinstance(e, ResponseDone))
    out: list[RealtimeEvent] = []
    async for ev in s:
        out.append(ev)
        if stop(ev):
            break
    return out


async def eventually(check: Callable[[], bool], timeout: float = 1.0) -> None:
    """Wait (bounded) until the fake has caught up."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        if loop.time() >= end:
            raise AssertionError("the fake server did not get there in time")
        await asyncio.sleep(0.01)


def audio_of(events: list[RealtimeEvent]) -> bytes:
    return b"".join(e.frame.data for e in events if isinstance(e, AgentAudio))


def speech(seconds: float, rate: int, *, channels: int = 1, freq: float = 300.0) -> AudioFrame:
    """A loud tone that the fake's VAD hears as speech."""
    t = np.arange(round(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)
    if channels > 1:
        x = np.repeat(x[:, None], channels, axis=1)
    return AudioFrame.from_array(x, rate)


class RealtimeSuiteBase(Generic[FakeT]):
    """What every group of the suite's test cases stands on; subclasses set ``harness``."""

    harness: RealtimeHarness[FakeT]
    #: Run on :class:`~antiphon.testing.vloop.VirtualTimeLoop`: the fake runs in the test's
    #: loop and every deadline is exact virtual time.
    virtual_time: ClassVar[bool] = True

    @contextlib.asynccontextmanager
    async def run(
        self,
        plan: FaultPlan | None = None,
        *,
        base_url: str | None = None,
        fake_kwargs: dict[str, Any] | None = None,
        **model_kwargs: Any,
    ) -> AsyncIterator[Run[FakeT]]:
        fake = self.harness.fake(plan or FaultPlan(), **(fake_kwargs or {}))
        async with serving(fake):
            url = base_url or fake.url
            port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
            leaks = LeakCheck(ports=[port])
            model = self.harness.make_model(url, deadlines=FAST, **model_kwargs)
            try:
                async with asyncio.timeout(GUARD):
                    yield Run(fake, model)
            finally:
                await model.aclose()
            await leaks.assert_clean(settle=0.5)
            assert model.active_sessions == 0

    @staticmethod
    def openai_stats(r: Run[FakeT]) -> RealtimeFakeStats:
        """The fake's stats for a check of the OpenAI Realtime schema (cancels, truncates,
        items); a fake of another schema fails here, and its plugin overrides the test."""
        stats = r.fake.stats
        assert isinstance(stats, RealtimeFakeStats), "this check needs the OpenAI schema"
        return stats
