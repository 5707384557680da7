"""The WebSocket TTS driver's one deadline timer: which window applies, and when it fires.

The timer is re-armed lazily (a chunk only moves a timestamp) and moved earlier when the
window shrinks: once audio of a flush was heard, silence fails the stream after ``idle``,
not after the longer ``first_audio`` it was first armed with. Virtual time.
"""

from __future__ import annotations

import asyncio
import contextlib
from unittest import mock

import pytest
from websockets.asyncio.server import ServerConnection, serve

from antiphon.errors import ProviderTimeoutError
from antiphon.plugins.deepgram import DeepgramTTS
from antiphon.services.tts import StreamState, TTSDeadlines
from antiphon.testing import FakeDeepgramTTS, FaultPlan, serving
from antiphon.testing.deepgram import DEFAULT_API_KEY

pytestmark = pytest.mark.virtual_time

DEADLINES = TTSDeadlines(connect=1.0, first_audio=8.0, idle=2.0, clear=0.5, close=0.5)


async def _one_chunk_then_silence(ws: ServerConnection) -> None:
    """A Speak server that answers a Flush with one audio chunk, then nothing."""
    async for msg in ws:
        if isinstance(msg, str) and '"Flush"' in msg:
            await ws.send(bytes(640))


@pytest.mark.parametrize("window", ["first_audio", "idle"])
async def test_silence_fails_after_the_window_that_applies(window: str) -> None:
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        if window == "idle":
            server = await stack.enter_async_context(
                serve(_one_chunk_then_silence, "127.0.0.1", 0, compression=None)
            )
            url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        else:  # silent after the Speak: the Flush is never answered
            url = (
                await stack.enter_async_context(serving(FakeDeepgramTTS(FaultPlan(silent_after=1))))
            ).url
        tts = await stack.enter_async_context(
            DeepgramTTS(api_key=DEFAULT_API_KEY, base_url=url, deadlines=DEADLINES)
        )
        s = tts.synthesize("Anyone there?")
        started = loop.time()
        frames = 0
        with pytest.raises(ProviderTimeoutError) as info:
            async for _ in s:
                frames += 1
        elapsed = loop.time() - started
    limit = getattr(DEADLINES, window)
    assert info.value.timeout == limit
    assert s.state is StreamState.FAILED
    assert (frames > 0) == (window == "idle")
    # not before its window, and the idle one is not left waiting for the first-audio one
    assert elapsed >= limit
    if window == "idle":
        assert elapsed < DEADLINES.first_audio


async def test_steady_audio_arms_no_timer_per_chunk() -> None:
    """A whole synthesis arms the timer a handful of times, not once per chunk."""
    loop = asyncio.get_running_loop()
    async with (
        serving(FakeDeepgramTTS(FaultPlan(chunk_interval=0.01))) as fake,
        DeepgramTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=DEADLINES) as tts,
    ):
        with mock.patch.object(loop, "call_at", wraps=loop.call_at) as call_at:
            chunks = [f async for f in tts.synthesize("A sentence long enough for many chunks.")]
    armed = [
        c for c in call_at.call_args_list if getattr(c.args[1], "__name__", "") == "_on_watchdog"
    ]
    assert len(chunks) > 4
    assert 1 <= len(armed) <= 3  # at the flush, moved earlier when audio is first heard
