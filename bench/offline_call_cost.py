"""Memory and CPU of one call on the offline pipeline, through ``antiphon serve``.

A server process runs the default offline agent (Silero VAD, PocketSphinx, the offline
LLM, espeak-ng). This process opens ``--calls`` calls at once; each streams espeak-ng
speech (a question, then silence) in 20 ms messages every 20 ms, turn after turn, for
``--seconds``. The server's resident memory (``/proc/PID/statm``) and CPU time
(``/proc/PID/stat``, every thread included) are read when idle, then over the calls:

- memory per call: (RSS with the calls - idle RSS) / calls;
- CPU per call: the server's CPU seconds per wall second over the calls / calls (1.0 is
  one core), and the turns the agent answered;
- the server's RSS 2 s after each of ``--rounds`` rounds of calls (growth from round to
  round would be a leak; a first step up is the allocator keeping its arenas).

    .venv/bin/python bench/offline_call_cost.py [--calls 4] [--seconds 20]

Prints and writes ``bench/results/offline_call_cost.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from antiphon.plugins.espeak.engine import Voice, sample_rate, synthesize_pcm

STEP = 0.02
RATE = 16000


def question_pcm() -> bytes:
    """'What time is it?' as 16 kHz PCM16 (espeak-ng, resampled)."""
    from antiphon.audio.frame import AudioFrame
    from antiphon.audio.resample import AudioConverter

    pcm = synthesize_pcm("What time is it?", Voice())
    converter = AudioConverter(RATE, 1)
    out = converter.process(AudioFrame(pcm, sample_rate(), 1)).data + converter.flush().data
    return bytes(out)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


async def call(host: str, speech: bytes, seconds: float, turns: list[int]) -> None:
    frame = round(STEP * RATE) * 2
    chunks = [speech[i : i + frame].ljust(frame, b"\0") for i in range(0, len(speech), frame)]
    quiet = b"\0" * frame
    loop = asyncio.get_running_loop()
    async with connect(f"ws://{host}/ws/agent", max_size=None) as ws:

        async def read() -> None:
            async for message in ws:
                if isinstance(message, str) and json.loads(message).get("type") == "turn":
                    turns.append(1)

        reader = loop.create_task(read())
        start, k = loop.time(), 0
        plan = (chunks + [quiet] * 150) * 1000  # speech, then 3 s of silence, again
        try:
            while loop.time() - start < seconds:
                await ws.send(plan[k])
                k += 1
                await asyncio.sleep(max(0.0, start + k * STEP - loop.time()))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of calls on one server")
    ap.add_argument("--out", default="bench/results/offline_call_cost.json")
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"127.0.0.1:{port}"
    exe = str(Path(sys.executable).with_name("antiphon"))
    server = await asyncio.create_subprocess_exec(
        exe, "serve", "--port", str(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://{host}/livez")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        speech = question_pcm()
        await asyncio.gather(*(call(host, speech, 5.0, []) for _ in range(1)))  # warm-up
        await asyncio.sleep(1.0)
        idle_rss = rss_mb(server.pid)
        turns: list[int] = []
        cpu0, wall0 = cpu_s(server.pid), time.perf_counter()
        peak = idle_rss

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_mb(server.pid))
                await asyncio.sleep(0.5)

        sampler = asyncio.get_running_loop().create_task(sample())
        await asyncio.gather(*(call(host, speech, args.seconds, turns) for _ in range(args.calls)))
        sampler.cancel()
        cpu, wall = cpu_s(server.pid) - cpu0, time.perf_counter() - wall0
        await asyncio.sleep(2.0)
        after_rss = [rss_mb(server.pid)]
        for _ in range(args.rounds - 1):  # the same again: does the server keep growing?
            await asyncio.gather(*(call(host, speech, args.seconds, []) for _ in range(args.calls)))
            await asyncio.sleep(2.0)
            after_rss.append(rss_mb(server.pid))
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
    result: dict[str, Any] = {
        "calls": args.calls,
        "seconds": args.seconds,
        "turns_answered": len(turns),
        "idle_rss_mb": idle_rss,
        "peak_rss_mb": peak,
        "rss_after_each_round_mb": after_rss,
        "memory_per_call_mb": (peak - idle_rss) / args.calls,
        "cpu_cores_total": cpu / wall,
        "cpu_cores_per_call": cpu / wall / args.calls,
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))  # noqa: ASYNC240 - once, at the end


if __name__ == "__main__":
    asyncio.run(main())
