"""Framework overhead of each WebSocket STT plugin over a bare websockets client.

For the WebSocket STT plugins (Deepgram, AssemblyAI, OpenAI realtime transcription,
Speechmatics, ElevenLabs Scribe, Cartesia Ink, Gladia live),
against each provider's fake server (on its own thread, same speech, same messages):

(a) a bare client: one ``websockets`` connection, the provider's sans-I/O protocol session
    to encode audio and decode answers, nothing else (Gladia: one ``httpx`` request for the
    session's URL first, as the plugin's);
(b) the plugin: ``stt.stream()`` (the shared driver: stream task, the connection's
    handler, deadlines, journal, transcripts out).

Per transcript, the latency from the fake's send of the message that carries it to (a)
``session.feed`` returning it and (b) the ``Transcript`` coming out of the stream. Both
clients push the audio in 20 ms frames at ``--speed`` times real time (each converts it
to the wire rate as it goes) while they read; the fake spaces its transcript messages by
``--interval`` so each one is told apart. The two run interleaved, utterance by
utterance, in one process.

    .venv/bin/python bench/stt_overhead.py [--utterances 12] [--speed 10] [--only openai]

Prints a summary and writes ``bench/results/stt_overhead.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.plugins.assemblyai import AssemblyAISTT
from antiphon.plugins.cartesia.stt import CartesiaSTT
from antiphon.plugins.deepgram import DeepgramSTT
from antiphon.plugins.elevenlabs.stt import ElevenLabsSTT
from antiphon.plugins.gladia import GladiaSTT
from antiphon.plugins.openai import OpenAISTT
from antiphon.plugins.speechmatics.stt import SpeechmaticsSTT
from antiphon.protocols import gladia_stt as gl
from antiphon.protocols import speechmatics_stt as sm
from antiphon.protocols.stt_session import Act
from antiphon.services.ws_stt import WebSocketSTT
from antiphon.testing import FaultPlan, running_in_thread
from antiphon.testing import assemblyai_stt as aai_fake
from antiphon.testing import cartesia_stt as ink_fake
from antiphon.testing import deepgram_stt as dg_fake
from antiphon.testing import elevenlabs_stt as xi_fake
from antiphon.testing import gladia_stt as gl_fake
from antiphon.testing import openai_transcription as oai_fake
from antiphon.testing import speechmatics_stt as sm_fake
from antiphon.testing.server import FakeWsServer
from antiphon.testing.synth import tone_for_text
from benchkit import WS_SENT, after_last_send, clock_ws_sends, overhead_summary, pct

PHRASES = ("What time is it?", "Turn on the lights.", "Thank you very much.")
RATE = 16000


@dataclass(frozen=True)
class Provider:
    name: str
    fake: Callable[[FaultPlan], FakeWsServer]
    make: Callable[[str], WebSocketSTT[Any]]
    carries: tuple[str, ...]
    """Substrings of a server frame that carries a transcript."""
    start: Callable[[ClientConnection, Any], Awaitable[None]] | None = None
    """A handshake after the upgrade, before any audio (as the plugin's ``_connect``)."""
    open_url: Callable[[Any], Awaitable[str]] | None = None
    """The WebSocket URL when a request must ask for it (as the plugin's ``open_url``)."""


async def speechmatics_start(ws: ClientConnection, stt: Any) -> None:
    """``StartRecognition``, then wait for ``RecognitionStarted``."""
    await ws.send(stt.options.start_recognition())
    while not isinstance(sm.parse(await ws.recv()), sm.RecognitionStarted):
        pass


async def gladia_open(stt: Any) -> str:
    """``POST /v2/live`` with a plain ``httpx`` client: the session's WebSocket URL."""
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            stt.url,
            headers=gl.init_headers(gl_fake.DEFAULT_API_KEY),
            json=stt.options.init_request(),
        )
    return gl.parse_init_response(answer.content).url


PROVIDERS = [
    Provider(
        "deepgram",
        lambda plan: dg_fake.FakeDeepgramSTT(plan, vocabulary=PHRASES),
        lambda url: DeepgramSTT(api_key=dg_fake.DEFAULT_API_KEY, base_url=url),
        ('"Results"',),
    ),
    Provider(
        "assemblyai",
        lambda plan: aai_fake.FakeAssemblyAISTT(plan, vocabulary=PHRASES),
        lambda url: AssemblyAISTT(api_key=aai_fake.DEFAULT_API_KEY, base_url=url),
        ('"Turn"',),
    ),
    Provider(
        "openai",
        lambda plan: oai_fake.FakeOpenAITranscription(plan, vocabulary=PHRASES),
        lambda url: OpenAISTT(
            api_key=oai_fake.DEFAULT_API_KEY,
            base_url=url,
            turn_detection={"type": "server_vad", "silence_duration_ms": 300},
        ),
        ("input_audio_transcription.delta", "input_audio_transcription.completed"),
    ),
    Provider(
        "speechmatics",
        lambda plan: sm_fake.FakeSpeechmaticsSTT(plan, vocabulary=PHRASES),
        lambda url: SpeechmaticsSTT(api_key=sm_fake.DEFAULT_API_KEY, base_url=url),
        ('"AddPartialTranscript"', '"AddTranscript"'),
        speechmatics_start,
    ),
    Provider(
        "elevenlabs",
        lambda plan: xi_fake.FakeElevenLabsSTT(plan, vocabulary=PHRASES),
        lambda url: ElevenLabsSTT(api_key=xi_fake.DEFAULT_API_KEY, base_url=url),
        ('"partial_transcript"', '"committed_transcript'),
    ),
    Provider(
        "cartesia",
        lambda plan: ink_fake.FakeCartesiaSTT(plan, vocabulary=PHRASES),
        lambda url: CartesiaSTT(api_key=ink_fake.DEFAULT_API_KEY, base_url=url),
        ('"transcript"',),
    ),
    Provider(
        "gladia",
        lambda plan: gl_fake.FakeGladiaSTT(plan, vocabulary=PHRASES),
        lambda url: GladiaSTT(api_key=gl_fake.DEFAULT_API_KEY, base_url=url),
        ('"transcript"',),
        open_url=gladia_open,
    ),
]


def speech(text: str) -> AudioFrame:
    silence = bytes(round(0.4 * RATE) * 2)
    return AudioFrame(silence + tone_for_text(text, RATE) + silence, RATE)


async def bare_round(
    p: Provider, stt: WebSocketSTT[Any], audio: AudioFrame, speed: float
) -> tuple[list[float], int]:
    start = len(WS_SENT)
    converter = AudioConverter(stt.sample_rate, 1)
    session = stt.new_session()
    pieces = [converter.process(f).data for f in audio.split(0.02)] + [converter.flush().data]
    received: list[int] = []
    ws: ClientConnection

    async def send_all() -> None:
        for m in stt.opening(session):
            await ws.send(m)
        for pcm in pieces:  # paced as the plugin's caller pushes them
            for m in session.audio(pcm) if pcm else []:
                await ws.send(m)
            await asyncio.sleep(0.02 / speed)
        for m in stt.end_input(session):
            await ws.send(m)

    url = stt.url if p.open_url is None else await p.open_url(stt)
    async with connect(url, additional_headers=stt.headers, compression=None) as ws:
        if p.start is not None:
            await p.start(ws, stt)
        sender = asyncio.create_task(send_all())
        try:
            while not session.done:
                for action in session.feed(await ws.recv()):
                    if action.act is Act.EMIT:
                        received.append(time.perf_counter_ns())
                    elif action.act is Act.FAIL:
                        raise RuntimeError(action.note)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    return after_last_send(WS_SENT[start:], received), len(received)


async def plugin_round(
    stt: WebSocketSTT[Any], audio: AudioFrame, speed: float
) -> tuple[list[float], int]:
    start = len(WS_SENT)
    received: list[int] = []
    async with stt.stream() as s:

        async def push_all() -> None:
            for f in audio.split(0.02):
                s.push_audio(f)
                await asyncio.sleep(0.02 / speed)
            s.end_input()

        pusher = asyncio.create_task(push_all())
        async for _t in s:
            received.append(time.perf_counter_ns())
        await pusher
    return after_last_send(WS_SENT[start:], received), len(received)


async def bench_provider(
    p: Provider, utterances: int, interval: float, speed: float
) -> dict[str, Any]:
    clock_ws_sends(p.carries)
    fake = p.fake(FaultPlan(chunk_interval=interval))
    bare: list[float] = []
    ours: list[float] = []
    counts = {"bare": 0, "plugin": 0}
    with running_in_thread(fake):
        async with p.make(fake.url) as stt:
            await bare_round(p, stt, speech(PHRASES[0]), speed)  # warm up, not counted
            await plugin_round(stt, speech(PHRASES[0]), speed)
            for i in range(utterances):
                audio = speech(PHRASES[i % len(PHRASES)])
                for which in ("bare", "plugin") if i % 2 == 0 else ("plugin", "bare"):
                    if which == "bare":
                        lat, n = await bare_round(p, stt, audio, speed)
                        bare += lat
                    else:
                        lat, n = await plugin_round(stt, audio, speed)
                        ours += lat
                    counts[which] += n
    return {
        "provider": p.name,
        "transcripts": counts,
        **overhead_summary(bare, ours),
        "target_met": pct(ours, 0.99) - pct(bare, 0.99) < 1.0,
    }


async def run(utterances: int, interval: float, speed: float, only: list[str]) -> dict[str, Any]:
    results = [
        await bench_provider(p, utterances, interval, speed)
        for p in PROVIDERS
        if not only or p.name in only
    ]
    return {
        "benchmark": "stt_overhead",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "utterances": utterances,
        "chunk_interval_s": interval,
        "audio_speed": speed,
        "target": "added p99 latency < 1 ms per transcript",
        "providers": results,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--utterances", type=int, default=12, help="utterances per client")
    ap.add_argument("--interval", type=float, default=0.002, help="seconds between messages")
    ap.add_argument("--speed", type=float, default=10.0, help="audio pushed at N x real time")
    ap.add_argument("--only", action="append", default=[], help="provider name (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/stt_overhead.json"))
    a = ap.parse_args()
    r = asyncio.run(run(a.utterances, a.interval, a.speed, a.only))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(r, indent=2) + "\n")
    print(
        f"{'provider':<12} {'transcripts':>11} {'bare p50/p99 ms':>16} "
        f"{'plugin p50/p99 ms':>18} {'added p99 ms':>12}"
    )
    for p in r["providers"]:
        b, o, d = p["bare_ms"], p["plugin_ms"], p["added_latency_ms"]
        met = "met" if p["target_met"] else "NOT met"
        n = p["transcripts"]
        print(
            f"{p['provider']:<12} {n['bare']:>5}/{n['plugin']:<5} "
            f"{b['p50']:>7.3f}/{b['p99']:<8.3f} {o['p50']:>8.3f}/{o['p99']:<9.3f} "
            f"{d['p99']:>+12.3f}  {met}"
        )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
