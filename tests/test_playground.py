"""The browser playground end to end: headless Chromium with a fake microphone.

Chromium plays a WAV file as its microphone (a tone the energy VAD hears as speech, then
silence). The page captures it, streams it to ``/ws/agent``, plays the agent's answer,
and shows both transcripts, the agent's state and the turn's latencies.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.audio.wav import write_wav
from antiphon.server.app import create_app
from antiphon.testing.agent import doubles_agent, silence, speech
from antiphon.testing.asgi import serve_app
from antiphon.testing.browser import chromium
from antiphon.testing.vloop import time_scale

#: A real browser on real time: waits scale with the CI profile (docs/testing.md).
SCALE = time_scale()
pytestmark = [pytest.mark.realtime, pytest.mark.timeout(120 * SCALE)]

REPLY = "Hello from the agent. I heard you."


async def test_a_person_talks_in_the_browser_and_hears_the_agent(tmp_path: Path) -> None:
    mic = tmp_path / "mic.wav"
    audio = silence(0.5, 48000).data + speech(1.0, 48000).data + silence(6.0, 48000).data
    write_wav(str(mic), AudioFrame(audio, 48000, 1))

    app = create_app(doubles_agent(["hello agent"], [REPLY]))
    async with serve_app(app) as host, chromium(fake_audio=mic) as browser:
        page = await browser.open(f"http://{host}/?raw=1")
        await page.evaluate("document.getElementById('talk').click()")
        user = await page.wait_for(
            "[...document.querySelectorAll('#log .user')].map(e => e.textContent).join('|')",
            timeout=30 * SCALE,
        )
        assert user == "You: hello agent"
        agent = await page.wait_for(
            "(t => t.endsWith('I heard you.') && t)("
            "[...document.querySelectorAll('#log .agent')].map(e => e.textContent).join('|'))",
            timeout=20 * SCALE,
        )
        assert agent == f"Agent: {REPLY}"
        heard = await page.wait_for(  # the words as they played (AgentWords)
            "(t => t.endsWith('you.') && t)("
            "document.querySelector('#log .agent')?.dataset.heard || '')",
            timeout=20 * SCALE,
        )
        assert heard == REPLY
        played = await page.wait_for(
            "window.antiphon.framesPlayed > 10 && window.antiphon", timeout=20 * SCALE
        )
        assert played["framesReceived"] >= played["framesPlayed"] > 10
        assert played["framesSent"] > 50  # the microphone streamed 20 ms frames
        states = await page.evaluate(
            "window.antiphon.events.filter(e => e.type === 'state').map(e => e.state)"
        )
        assert "speaking" in states and "thinking" in states
        rows = await page.wait_for(
            "document.querySelectorAll('#turns tbody tr').length", timeout=20 * SCALE
        )
        assert rows == 1


async def test_talking_over_the_agent_in_the_browser_interrupts_it(tmp_path: Path) -> None:
    long_reply = "This is a long answer that goes on and on, so that you can talk over it."

    mic = tmp_path / "mic.wav"
    rate = 48000
    audio = (
        silence(0.5, rate).data
        + speech(0.8, rate).data
        + silence(2.0, rate).data  # the agent answers meanwhile
        + speech(1.0, rate, freq=500).data  # the user talks over it
        + silence(4.0, rate).data
    )
    write_wav(str(mic), AudioFrame(audio, rate, 1))

    app = create_app(doubles_agent(["tell me", "stop"], [long_reply, "Okay."]))
    async with serve_app(app) as host, chromium(fake_audio=mic) as browser:
        page = await browser.open(f"http://{host}/?raw=1")
        await page.evaluate("document.getElementById('talk').click()")
        clears = await page.wait_for("window.antiphon.clears", timeout=30 * SCALE)
        assert clears == 1
        cut = await page.wait_for(
            "document.querySelector('#log .agent.cut')?.textContent", timeout=5 * SCALE
        )
        assert cut.startswith("Agent: This is a long answer")
        log = await page.wait_for(
            "(t => t.includes('Okay.') && t)(document.getElementById('log').textContent)",
            timeout=20 * SCALE,
        )
        assert "You: stop" in log


async def test_a_webrtc_call_from_the_browser(tmp_path: Path) -> None:
    mic = tmp_path / "mic.wav"
    # Chromium's fake microphone plays from the moment the page opens it, but WebRTC
    # carries media only once ICE and DTLS are done: on a loaded machine that takes
    # seconds, and speech played before it is never heard. The lead-in silence covers
    # the setup (the page could instead open the track when the connection is up).
    lead = 0.5 + 3.0 * SCALE
    audio = silence(lead, 48000).data + speech(1.0, 48000).data + silence(6.0, 48000).data
    write_wav(str(mic), AudioFrame(audio, 48000, 1))
    app = create_app(doubles_agent(["hello agent"], [REPLY]))
    async with serve_app(app) as host, chromium(fake_audio=mic) as browser:
        page = await browser.open(f"http://{host}/?raw=1&transport=webrtc")
        await page.evaluate("document.getElementById('talk').click()")
        user = await page.wait_for(
            "[...document.querySelectorAll('#log .user')].map(e => e.textContent).join('|')",
            timeout=30 * SCALE,
        )
        assert user == "You: hello agent"
        agent = await page.wait_for(
            "(t => t.endsWith('I heard you.') && t)("
            "[...document.querySelectorAll('#log .agent')].map(e => e.textContent).join('|'))",
            timeout=20 * SCALE,
        )
        assert agent == f"Agent: {REPLY}"
        got = await page.wait_for(
            "window.antiphon.framesReceived > 50 && window.antiphon", timeout=20 * SCALE
        )
        assert got["transport"] == "webrtc" and got["framesSent"] > 50
