"""The WebSocket STT driver's one timer for its deadlines and keep-alives. Virtual time.

The stream's task waits for the caller's audio between 20 ms frames; each send and each
server message only moves a timestamp, and one timer, re-armed lazily, wakes the task
when an answer is overdue or a keep-alive is due. (The conformance suite checks the
deadlines themselves and the keep-alives; this checks that they cost no timer per frame.)
"""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest

from antiphon.plugins.deepgram import DeepgramSTT
from antiphon.services.stt import StreamState
from antiphon.testing import serving
from antiphon.testing.conformance.stt_ws import FAST, speech
from antiphon.testing.deepgram_stt import DEFAULT_API_KEY, FakeDeepgramSTT

pytestmark = pytest.mark.virtual_time

TEXT = "What time is it?"


def _armed(call_at: mock.MagicMock) -> int:
    return sum(
        1 for c in call_at.call_args_list if getattr(c.args[1], "__name__", "") == "_on_watchdog"
    )


async def test_paced_audio_arms_no_timer_per_frame() -> None:
    """Frames pushed at their own pace (the task waits for each): a handful of timers."""
    loop = asyncio.get_running_loop()
    frames = speech(TEXT).split(0.02)
    async with (
        serving(FakeDeepgramSTT(vocabulary=[TEXT])) as fake,
        DeepgramSTT(
            api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST, keepalive_interval=1.0
        ) as stt,
        stt.stream() as s,
    ):
        with mock.patch.object(loop, "call_at", wraps=loop.call_at) as call_at:
            for f in frames:
                s.push_audio(f)
                await asyncio.sleep(0.02)
            s.end_input()
            finals = await s.finals()
    assert s.state is StreamState.COMPLETED
    assert [f.text for f in finals] == [TEXT]
    assert len(frames) > 50
    assert fake.stats.count("KeepAlive") == 0  # audio flowed: no keep-alive was due
    # armed while the keep-alive is the next thing due, moved to the final's deadline
    # at the end of input, set again once when it fired early: never once per frame
    assert 1 <= _armed(call_at) <= 4


async def test_a_pause_gets_its_keepalives_from_the_one_timer() -> None:
    """A caller that stops pushing: keep-alives every interval, then the stream goes on."""
    async with (
        serving(FakeDeepgramSTT(vocabulary=[TEXT])) as fake,
        DeepgramSTT(
            api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST, keepalive_interval=0.5
        ) as stt,
        stt.stream() as s,
    ):
        s.push_audio(speech(TEXT).split(0.02)[0])
        await asyncio.sleep(1.6)  # keep-alives due at 0.5, 1.0 and 1.5 s
        assert fake.stats.count("KeepAlive") == 3
        for f in speech(TEXT).split(0.02)[1:]:
            s.push_audio(f)
        s.end_input()
        finals = await s.finals()
    assert s.state is StreamState.COMPLETED
    assert [f.text for f in finals] == [TEXT]
