"""Callers that speak: concurrent ``/ws/agent`` calls asking recorded questions, judged per turn.

How it is built: each call streams 20 ms of 16 kHz PCM every 20 ms in real time for
``--seconds``, one question per ``--cycle`` seconds (the question's audio, then silence
to the end of the cycle), the first of ``--questions`` first, then the others in turn
from the call's index (:func:`question_of`; the questions are raw PCM
files: real speech for the offline pipeline, tone speech that the fake STT names for the
cloud fakes). Calls start spread evenly over one cycle (call ``i`` of ``N`` at
``i / N`` of it), as callers that do not all speak at the same instant.

What a call reports, for :mod:`verdict` (``bench/capacity.py`` judges): the complete
cycles it asked, those answered (agent audio came back in the cycle), the agent frames
received in them, and the frames expected (``--reference``: the frames of each
question's reply on a lone call; none without it). A frame is late by how far after
``first + k × 20 ms`` it arrived, ``first`` being the cycle's first agent frame: a
reply's audio is one run, so a pause between two synthesised sentences (a TTS engine
that fell behind) counts as lateness, as a listener hears it. Each ``turn`` message's
metrics (``TurnMetrics``: STT final delay, LLM time to first token, TTS time to first
audio, voice to voice) are passed on, and each ``error`` message's stage is kept with
its cycle, to say which stage slows down or fails first.

    .venv/bin/python bench/speech_callers.py --host 127.0.0.1:PORT --calls N --seconds S \\
        --cycle C --questions A.pcm,B.pcm [--reference 120,80] [--first-index I --of N]

Prints one JSON line: ``calls``, ``late``, ``turns`` (metrics) and ``cpu_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

__all__ = ["FRAME", "RATE", "call"]

FRAME = 0.02
RATE = 16000
FRAME_BYTES = round(FRAME * RATE) * 2
STAGES = ("stt_final_delay", "end_of_turn_delay", "llm_ttft", "tts_ttfa", "voice_to_voice")


def question_of(cycle: int, index: int, n: int) -> int:
    """Which of ``n`` questions call ``index`` asks in ``cycle``: the first one first,
    then in turn from the call's index (a fresh WebRTC VAD hears only some tones as voice
    before it has heard one: the first question is one it hears)."""
    return 0 if cycle == 0 else (index + cycle) % n


def cycle_frames(question: bytes, cycle: float) -> list[bytes]:
    """One cycle's caller frames: the question, then silence to the end of the cycle."""
    n = round(cycle / FRAME)
    pcm = question[: n * FRAME_BYTES].ljust(n * FRAME_BYTES, b"\0")
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


async def call(
    host: str,
    questions: list[bytes],
    reference: list[int] | None,
    cycle: float,
    seconds: float,
    index: int,
    offset: float,
    late: list[float],
    turns: list[dict[str, Any]],
) -> dict[str, Any]:
    """One call for ``seconds``; what it asked and got back, cycle by cycle."""
    await asyncio.sleep(offset)
    n = len(questions)
    plan = [cycle_frames(questions[question_of(c, index, n)], cycle) for c in range(2)]
    per_cycle = len(plan[0])
    times: list[float] = []
    errors: list[tuple[float, str]] = []  # (time, stage) of each error event
    interrupted = 0
    async with connect(f"ws://{host}/ws/agent", max_queue=None, max_size=None) as ws:
        loop = asyncio.get_running_loop()

        async def receive() -> None:
            nonlocal interrupted
            async for message in ws:
                if isinstance(message, bytes):
                    times.append(loop.time())
                    continue
                event = json.loads(message)
                if event.get("type") == "turn":
                    turns.append({k: event["metrics"].get(k) for k in STAGES})
                elif event.get("type") == "interrupted":
                    interrupted += 1
                elif event.get("type") == "error":
                    errors.append((loop.time(), str(event.get("stage"))))

        reader = asyncio.create_task(receive())
        start = loop.time()
        sent = 0
        while loop.time() - start < seconds:
            c, k = divmod(sent, per_cycle)
            if k == 0 and c >= len(plan):
                plan.append(cycle_frames(questions[question_of(c, index, n)], cycle))
            await ws.send(plan[c][k])
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * FRAME - loop.time()))
        await ws.close()
        await asyncio.gather(reader, return_exceptions=True)
    asked = sent // per_cycle  # complete cycles only: each had time for its reply
    frames = [0] * asked
    first: list[float | None] = [None] * asked
    for t in times:
        c = int((t - start) / cycle)
        if c < asked:
            anchor = first[c]
            if anchor is None:
                anchor = first[c] = t
            late.append((t - (anchor + frames[c] * FRAME)) * 1000)
            frames[c] += 1
    qs = [question_of(c, index, n) for c in range(asked)]
    failed: list[list[str]] = [[] for _ in range(asked)]
    for t, stage in errors:
        c = int((t - start) / cycle)
        if c < asked:
            failed[c].append(stage)
    return {
        "asked": asked,
        "answered": sum(1 for f in frames if f > 0),
        "frames": sum(frames),
        "expected": sum(reference[q] for q in qs) if reference else 0,
        "cycle_frames": frames,
        "cycle_questions": qs,
        "cycle_errors": failed,
        "interrupted": interrupted,
        "sent": sent,
        "received": len(times),
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--calls", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--cycle", type=float, required=True)
    ap.add_argument("--questions", required=True, help="comma-separated raw PCM files")
    ap.add_argument("--reference", default="", help="each question's reply frames")
    ap.add_argument("--first-index", type=int, default=0)
    ap.add_argument("--of", type=int, default=0, help="calls in all processes (spread)")
    a = ap.parse_args()
    questions = [Path(p).read_bytes() for p in a.questions.split(",")]  # noqa: ASYNC240
    reference = [int(x) for x in a.reference.split(",")] if a.reference else None
    total = a.of or a.calls
    late: list[float] = []
    turns: list[dict[str, Any]] = []
    cpu = time.process_time()
    calls = await asyncio.gather(
        *(
            call(
                a.host,
                questions,
                reference,
                a.cycle,
                a.seconds,
                i,
                i / total * a.cycle,
                late,
                turns,
            )
            for i in range(a.first_index, a.first_index + a.calls)
        )
    )
    cpu = time.process_time() - cpu
    out = {"calls": calls, "late": [round(x, 3) for x in late], "turns": turns, "cpu_s": cpu}
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
