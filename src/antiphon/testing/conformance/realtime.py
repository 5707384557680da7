"""The realtime conformance suite: every fault of DESIGN.md against a realtime plugin.

A plugin's tests subclass :class:`RealtimeConformance` and set ``harness``::

    class TestOpenAIRealtimeConformance(RealtimeConformance[FakeRealtimeServer]):
        harness = OpenAIHarness()

The suite is generic over the fake (:class:`RealtimeFake`: what every realtime fake
offers, e.g. :class:`~antiphon.testing.realtime.FakeRealtimeServer` or
:class:`~antiphon.testing.gemini_live.FakeGeminiLiveServer`); the few checks that read
what only the OpenAI Realtime schema has (``response.cancel``, ``conversation.item.truncate``,
items) narrow its stats with :meth:`RealtimeConformance.openai_stats`, and a plugin of
another schema overrides those tests with what its service really does.
Each test runs the plugin against its fake
(in the test's loop, on virtual time) with a :class:`~antiphon.testing.FaultPlan`,
asserts the terminal state, the audio and the typed error, and that no task, thread or
socket is left behind.
It also holds one test per defect of issue 4 (stereo guessing, per-chunk resampling,
reordered audio, voice type guessed from the name, barge-in without truncation, function
calls, reconnect without restoring the session). Requires pytest and pytest-asyncio.

The suite is built from groups of cases, one module per kind
(:mod:`~antiphon.testing.conformance.realtime_turns`: healthy turns and issue 4's defects;
:mod:`~antiphon.testing.conformance.realtime_faults`: connect, streaming and close faults)
on the harness of :mod:`~antiphon.testing.conformance.realtime_harness`; this module puts
them together and re-exports the harness. The bases are listed last group first, so that
pytest (which collects base classes first, in reverse MRO) keeps the historical order.
"""

from __future__ import annotations

from antiphon.testing.conformance.realtime_faults import (
    CloseCases,
    ConnectFaultCases,
    StreamFaultCases,
)
from antiphon.testing.conformance.realtime_harness import (
    FAST,
    GUARD,
    WEATHER,
    FakeT,
    OpenAISchemaHarness,
    RealtimeFake,
    RealtimeFakeStatsView,
    RealtimeHarness,
    Run,
    audio_of,
    eventually,
    speech,
    turn,
)
from antiphon.testing.conformance.realtime_turns import HealthyServerCases, Issue4DefectCases


class RealtimeConformance(
    Issue4DefectCases[FakeT],
    CloseCases[FakeT],
    StreamFaultCases[FakeT],
    ConnectFaultCases[FakeT],
    HealthyServerCases[FakeT],
):
    """The suite; subclasses set ``harness``."""


__all__ = [
    "FAST",
    "GUARD",
    "WEATHER",
    "FakeT",
    "OpenAISchemaHarness",
    "RealtimeConformance",
    "RealtimeFake",
    "RealtimeFakeStatsView",
    "RealtimeHarness",
    "Run",
    "audio_of",
    "eventually",
    "speech",
    "turn",
]
