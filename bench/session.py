"""Agent session benchmarks: voice-to-voice overhead, interruption, concurrent sessions.

All on the in-process doubles of :mod:`antiphon.testing.agent` (energy VAD, scripted STT,
scripted LLM, tone TTS) with *known* latencies, on the real clock, so what is measured
beyond those latencies is the framework's own cost:

1. ``overhead``: one session, many turns. Voice-to-voice (end of user speech → first
   agent audio queued for the transport) minus what the doubles are told to take
   (VAD silence + LLM first token + TTS first chunk) is the framework's overhead.
2. ``interruption``: the user talks over a long reply. From the push of the audio frame
   that makes the interruption (``min_duration`` reached, ``false_interruption="ignore"``)
   to the decision (audio dropped), and how many frames of the old reply the transport
   still got after it (the budget: none later than one 20 ms frame).
3. ``concurrency``: N sessions in this one process (one core: one event loop thread),
   each a transport pushing user audio and reading agent audio in real time, turn after
   turn. A frame is late by how far after its release time (its run's start + k × 20 ms)
   the transport got it. The largest N that *holds* (``bench/verdict.py``: every session
   answered every turn with its whole reply, and no frame late by more than 20 ms) is
   the figure DESIGN.md asks for.

    .venv/bin/python bench/session.py [--turns 20] [--sizes 50,100,200,400] [--seconds 8]
        [--loop asyncio|uvloop]

Prints a summary and writes ``bench/results/session.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from antiphon.agent import (
    AgentOptions,
    AgentSession,
    AgentState,
    Interrupted,
    InterruptionOptions,
)
from antiphon.aio.clock import MonotonicClock
from antiphon.audio.frame import AudioFrame
from antiphon.services.vad import VADOptions
from antiphon.testing.agent import EnergyVAD, ScriptedLLM, ScriptedSTT, ToneTTS, silence, speech
from antiphon.testing.synth import tone_duration
from verdict import CallTally, judge, pct, runs_of

SILENCE = 0.3  # VAD min_silence_duration
LLM_FIRST = 0.05  # the scripted LLM's delay per token
TTS_CHUNK = 0.01  # the tone TTS's delay per chunk
FRAME = 0.02


def make_session(clock: MonotonicClock, turns: int, reply: str, **opts: Any) -> AgentSession:
    vad = EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=SILENCE, padding=0))
    return AgentSession(
        vad=vad,
        stt=ScriptedSTT([f"question {i}" for i in range(turns * 4)]),
        llm=ScriptedLLM(default=reply, token_delay=LLM_FIRST, clock=clock),
        tts=ToneTTS(chunk=0.05, chunk_delay=TTS_CHUNK, clock=clock),
        clock=clock,
        options=AgentOptions(**opts),
    )


async def close_all(session: AgentSession) -> None:
    await session.aclose()
    for service in (session.stt, session.llm, session.tts):
        await service.aclose()


async def feed(session: AgentSession, clock: MonotonicClock, audio: AudioFrame) -> None:
    """Push ``audio`` in real time, 20 ms at a time."""
    start = clock.now()
    t = 0.0
    for frame in audio.split(FRAME):
        session.push_audio(frame)
        t += frame.duration
        await clock.sleep_until(start + t)


async def drain_output(
    session: AgentSession,
    clock: MonotonicClock,
    late: list[float],
    times: list[float] | None = None,
) -> None:
    """Read the paced output as a transport does; record each frame's lateness (and time)."""
    run_start: float | None = None
    k = 0
    last = -1.0
    async for _ in session.output:
        now = clock.now()
        if run_start is None or now - last > 0.1:  # a new run of audio (a new reply)
            run_start, k = now, 0
        late.append(now - (run_start + k * FRAME))
        k += 1
        last = now
        if times is not None:
            times.append(now)


async def bench_overhead(turns: int) -> dict[str, Any]:
    clock = MonotonicClock()
    session = make_session(clock, turns, "Fine.")
    late: list[float] = []
    async with asyncio.TaskGroup() as tg:
        await session.start()
        tg.create_task(drain_output(session, clock, late))
        try:
            for _ in range(turns):
                await feed(session, clock, speech(0.5))
                await feed(session, clock, silence(SILENCE + 0.1))
                async with asyncio.timeout(10):
                    await session.wait_for(AgentState.SPEAKING)
                    await session.wait_for(AgentState.LISTENING)
                await feed(session, clock, silence(0.3))
        finally:
            await close_all(session)
    v2v = [t.voice_to_voice for t in session.turns if t.voice_to_voice is not None]
    # what the doubles take: the VAD's silence, one LLM token, one TTS chunk
    budget = SILENCE + LLM_FIRST + TTS_CHUNK
    over = [(v - budget) * 1000 for v in v2v]
    return {
        "turns": len(v2v),
        "doubles_latency_ms": budget * 1000,
        "voice_to_voice_p50_ms": statistics.median(v2v) * 1000,
        "overhead_p50_ms": statistics.median(over),
        "overhead_p99_ms": pct(over, 0.99),
        "overhead_max_ms": max(over),
        "ratio_v2v_to_doubles_p50": statistics.median(v2v) / budget,
    }


async def bench_interruption(rounds: int) -> dict[str, Any]:
    clock = MonotonicClock()
    long_reply = "This is a long reply that goes on and on so that the user can cut it off. " * 3
    opts = {"interruption": InterruptionOptions(min_duration=0.3, false_interruption="ignore")}
    decision_ms: list[float] = []
    after_frames: list[int] = []
    for _ in range(rounds):
        session = make_session(clock, 4, long_reply, **opts)
        heard: list[tuple[float, int]] = []
        cut_at: list[float] = []

        async def read(s: AgentSession = session, h: list[tuple[float, int]] = heard) -> None:
            async for frame in s.output:
                h.append((clock.now(), frame.generation))

        async def listen(s: AgentSession = session, c: list[float] = cut_at) -> None:
            async for ev in s.events():
                if isinstance(ev, Interrupted):
                    c.append(clock.now())

        async with asyncio.TaskGroup() as tg:
            await session.start()
            tg.create_task(read())
            tg.create_task(listen())
            try:
                await feed(session, clock, speech(0.5))
                await feed(session, clock, silence(SILENCE + 0.1))
                async with asyncio.timeout(5):
                    await session.wait_for(AgentState.SPEAKING)
                await feed(session, clock, silence(0.5))
                # the user talks over the agent: the frame that reaches 0.3 s decides
                pushes: list[float] = []
                start = clock.now()
                t = 0.0
                for frame in speech(0.6).split(FRAME):
                    pushes.append(clock.now())
                    session.push_audio(frame)
                    t += frame.duration
                    await clock.sleep_until(start + t)
                await feed(session, clock, silence(0.2))
            finally:
                await close_all(session)
        if cut_at:
            decision_ms.append((cut_at[0] - max(p for p in pushes if p <= cut_at[0])) * 1000)
            old = [when for when, gen in heard if gen == 1 and when > cut_at[0] + FRAME]
            after_frames.append(len(old))
    return {
        "rounds": rounds,
        "decision_after_push_p50_ms": statistics.median(decision_ms) if decision_ms else None,
        "decision_after_push_max_ms": max(decision_ms) if decision_ms else None,
        "old_frames_later_than_one_frame_after_decision": sum(after_frames),
    }


async def bench_concurrency(n: int, seconds: float) -> dict[str, Any]:
    clock = MonotonicClock()
    reply = "Sure, here is a short answer for you."
    reply_frames = round(tone_duration(reply) / FRAME)
    sessions = [make_session(clock, 50, reply) for _ in range(n)]
    late: list[float] = []
    times: list[list[float]] = [[] for _ in sessions]
    asked = [0] * n

    async def converse(i: int, s: AgentSession, offset: float) -> None:
        await clock.sleep_until(clock.now() + offset)  # not all in lockstep
        end = clock.now() + seconds
        while clock.now() < end:
            await feed(s, clock, speech(0.6))
            await feed(s, clock, silence(SILENCE + tone_duration(reply) + 0.5))
            asked[i] += 1  # a whole turn: its reply had time to play

    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for i, s in enumerate(sessions):
            await s.start()
            tg.create_task(drain_output(s, clock, late, times[i]))
        try:
            async with asyncio.TaskGroup() as talkers:
                for i, s in enumerate(sessions):
                    talkers.create_task(converse(i, s, (i % 50) * 0.02))
        finally:
            for s in sessions:
                await close_all(s)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    calls = []
    for i in range(n):
        runs = runs_of(times[i])
        answered = sum(1 for r in runs if r >= 0.95 * reply_frames)
        calls.append(CallTally(asked[i], answered, sum(runs), asked[i] * reply_frames))
    late_ms = [x * 1000 for x in late]
    return {
        "sessions": n,
        **judge(calls, late_ms),
        "late_p50_ms": pct(late_ms, 0.5),
        "late_p99_ms": pct(late_ms, 0.99),
        "late_max_ms": max(late_ms) if late_ms else None,
        "cpu_share_of_one_core": cpu / wall,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sizes", default="50,100,200,400")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--out", default="bench/results/session.json")
    ap.add_argument("--loop", default="asyncio", help="event loop: asyncio or uvloop")
    args = ap.parse_args()

    result: dict[str, Any] = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
    }
    result["overhead"] = await bench_overhead(args.turns)
    print("voice-to-voice overhead:", json.dumps(result["overhead"]))
    result["interruption"] = await bench_interruption(args.rounds)
    print("interruption:", json.dumps(result["interruption"]))
    result["concurrency"] = []
    for n in (int(x) for x in args.sizes.split(",")):
        r = await bench_concurrency(n, args.seconds)
        result["concurrency"].append(r)
        print("concurrency:", json.dumps(r))
    ok = [r["sessions"] for r in result["concurrency"] if r["holds"]]
    result["max_sessions_held"] = best = max(ok) if ok else 0
    print("sessions held on one core (every turn answered, audio whole, none late):", best)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))  # noqa: ASYNC240 - once, at the end


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        if "--loop" in sys.argv and sys.argv[sys.argv.index("--loop") + 1] == "uvloop":
            try:  # optional, not a dependency: pip install uvloop
                uvloop = importlib.import_module("uvloop")
            except ImportError:
                sys.exit("--loop uvloop needs uvloop: .venv/bin/pip install uvloop")
            uvloop.run(main())
        else:
            asyncio.run(main())
