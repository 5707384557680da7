"""Voice-to-voice latency of a control turn through the cloud pipeline, on loopback fakes.

One :class:`~antiphon.agent.AgentSession` runs Deepgram STT, an OpenAI-compatible LLM and
Deepgram TTS, each against its fake server on loopback (``antiphon.testing``), with the
energy VAD of the test doubles. The user says one phrase (a tone the fake STT names,
:func:`antiphon.testing.synth.tone_for_text`) then stays silent; the fakes are healthy and
fast, so the latency is the framework's turn-taking: the VAD's silence window, the wait
for the STT's final, and the loopback round trips.

The fake STT ends an utterance with ``speech_final`` after ``endpointing`` ms of silence
(300 ms by default), before the VAD's window (500 ms) ends: the ordinary order with a
fast STT. Before issue 18 the session then waited its whole ``final_timeout`` (1 s).

``--tail SECONDS`` adds a quiet tail after the phrase (RMS 300 of 32768: a breath, a
noise) that the VAD hears (its threshold lowered to 0.005) and the recogniser does not:
the end-of-speech final then comes early and does not reach the VAD's end of speech, and
the session's Finalize is answered empty. Before ``Transcript.flushed`` that order waited
``final_timeout`` (1 s); 0.8 s is longer than endpointing plus the cover slack.

Per turn: ``voice_to_voice`` (end of user speech to first agent audio queued),
``end_of_turn_delay`` (end of speech to the turn's commit) and the LLM requests made.

    .venv/bin/python bench/turn_latency.py [--turns 10] [--loop real|virtual]
        [--tail 0.8] [--out bench/results/turn_latency.json]

``--loop real`` (default) runs on the ordinary asyncio loop: wall-clock figures.
``--loop virtual`` runs on :class:`~antiphon.testing.vloop.VirtualTimeLoop`: the same
turn, deterministic, with every wait at its configured length and no CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from antiphon.agent import AgentOptions, AgentSession, AgentState
from antiphon.aio.clock import MonotonicClock
from antiphon.audio.frame import AudioFrame
from antiphon.plugins.deepgram import DeepgramSTT, DeepgramTTS
from antiphon.plugins.openai import OpenAILLM
from antiphon.services.vad import VADOptions
from antiphon.testing.agent import EnergyVAD
from antiphon.testing.deepgram import DEFAULT_API_KEY as TTS_KEY
from antiphon.testing.deepgram import FakeDeepgramTTS
from antiphon.testing.deepgram_stt import DEFAULT_API_KEY as STT_KEY
from antiphon.testing.deepgram_stt import FakeDeepgramSTT
from antiphon.testing.openai_chat import DEFAULT_API_KEY as LLM_KEY
from antiphon.testing.openai_chat import FakeOpenAIChat
from antiphon.testing.synth import tone_for_text
from antiphon.testing.vloop import VirtualTimeLoop

PHRASE = "what can you do"
RATE = 16000
FRAME = 0.02
VAD_SILENCE = 0.5


async def feed(session: AgentSession, audio: AudioFrame) -> None:
    """Push ``audio`` paced like a transport: 20 ms every 20 ms of the loop's clock."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    t = 0.0
    for frame in audio.split(FRAME):
        session.push_audio(frame)
        t += frame.duration
        await asyncio.sleep(max(0.0, start + t - loop.time()))


def quiet_tail(seconds: float) -> AudioFrame:
    """A 150 Hz hum at RMS 300: speech to the lowered VAD threshold, not to the fake STT."""
    t = np.arange(round(seconds * RATE)) / RATE
    return AudioFrame(
        (np.sin(2 * np.pi * 150.0 * t) * 300 * np.sqrt(2)).astype("<i2").tobytes(), RATE
    )


async def run(turns: int, tail: float = 0.0) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        stt_fake = await stack.enter_async_context(FakeDeepgramSTT(vocabulary=(PHRASE,)))
        llm_fake = await stack.enter_async_context(FakeOpenAIChat())
        tts_fake = FakeDeepgramTTS()
        await tts_fake.start()
        stack.push_async_callback(tts_fake.aclose)
        stt = DeepgramSTT(api_key=STT_KEY, base_url=stt_fake.url)
        llm = OpenAILLM("gpt-4o-mini", api_key=LLM_KEY, base_url=llm_fake.base_url)
        tts = DeepgramTTS(api_key=TTS_KEY, base_url=tts_fake.url)
        for service in (stt, llm, tts):
            stack.push_async_callback(service.aclose)
        vad = EnergyVAD(
            VADOptions(min_speech_duration=0.06, min_silence_duration=VAD_SILENCE),
            threshold=0.005 if tail else 0.02,
        )
        session = AgentSession(
            vad=vad, stt=stt, llm=llm, tts=tts, clock=MonotonicClock(), options=AgentOptions()
        )
        stack.push_async_callback(session.aclose)
        await session.start()
        reader = asyncio.get_running_loop().create_task(_drain(session))
        stack.callback(reader.cancel)
        utterance = AudioFrame(tone_for_text(PHRASE, RATE), RATE)
        requests: list[int] = []
        for _ in range(turns):
            before = len(llm_fake.stats.requests)
            await feed(session, AudioFrame.silence(0.3, RATE))
            await feed(session, utterance)
            if tail:
                await feed(session, quiet_tail(tail))
            done = len(session.turns) + 1
            while len(session.turns) < done:
                await feed(session, AudioFrame.silence(FRAME, RATE))
            async with asyncio.timeout(30):
                await session.wait_for(AgentState.LISTENING)
            requests.append(len(llm_fake.stats.requests) - before)
        metrics = list(session.turns)
    v2v = [m.voice_to_voice for m in metrics if m.voice_to_voice is not None]
    eot = [m.end_of_turn_delay for m in metrics if m.end_of_turn_delay is not None]
    return {
        "turns": len(metrics),
        "answered": sum(1 for m in metrics if m.agent_text and not m.error),
        "user_text": sorted({m.user_text for m in metrics}),
        "voice_to_voice_p50_ms": _ms(statistics.median(v2v)) if v2v else None,
        "voice_to_voice_max_ms": _ms(max(v2v)) if v2v else None,
        "voice_to_voice_ms": [_ms(v) for v in v2v],
        "end_of_turn_p50_ms": _ms(statistics.median(eot)) if eot else None,
        "vad_silence_ms": VAD_SILENCE * 1000,
        "quiet_tail_s": tail,
        "llm_requests_per_turn": requests,
    }


async def _drain(session: AgentSession) -> None:
    async for _ in session.output:
        pass


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--loop", choices=("real", "virtual"), default="real")
    parser.add_argument("--tail", type=float, default=0.0, help="seconds of quiet tail")
    parser.add_argument("--out", type=Path, default=Path("bench/results/turn_latency.json"))
    args = parser.parse_args()
    if args.loop == "virtual":
        loop = VirtualTimeLoop()
        try:
            result = loop.run_until_complete(run(args.turns, args.tail))
        finally:
            loop.close()
    else:
        result = asyncio.run(run(args.turns, args.tail))
    result = {"loop": args.loop, "python": platform.python_version(), **result}
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0 if result["answered"] == args.turns else 1


if __name__ == "__main__":
    sys.exit(main())
