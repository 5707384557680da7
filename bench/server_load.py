"""Load test: concurrent calls through the server's ``/ws/agent``, as real clients.

The server (uvicorn, one process, one event loop) runs in this process; an agent on the
in-process doubles answers every call. Each simulated client streams 20 ms of PCM every
20 ms in real time (speech, then silence, turn after turn) and receives the agent's paced
frames. A received frame is late by how far after its expected time it arrived (its run's
first frame + k × 20 ms); the figure is the largest number of calls with no frame late
by more than 20 ms. Bounded: each size runs ``--seconds`` and stops by itself.

    .venv/bin/python bench/server_load.py [--sizes 10,25,50,100] [--seconds 10]

Prints a summary and writes ``bench/results/server_load.json``. The clients run in a
second process (this machine has two cores: one for the server, one for the clients).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from antiphon.server.app import create_app
from antiphon.testing.agent import doubles_agent, silence, speech
from antiphon.testing.asgi import serve_app

FRAME = 0.02
REPLY = "Sure, here is a short answer for you."


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else float("nan")


async def client(host: str, seconds: float, late: list[float], offset: float) -> int:
    """One call for ``seconds``; returns the number of agent frames received."""
    await asyncio.sleep(offset)
    turn = [f.data for f in (speech(0.6).split(FRAME) + silence(2.4).split(FRAME))]
    got = 0
    async with connect(f"ws://{host}/ws/agent", max_queue=None) as ws:
        loop = asyncio.get_running_loop()

        async def receive() -> None:
            nonlocal got
            run_start, k, last = 0.0, 0, -1.0
            async for message in ws:
                if isinstance(message, bytes):
                    now = loop.time()
                    if now - last > 0.1:
                        run_start, k = now, 0
                    late.append((now - (run_start + k * FRAME)) * 1000)
                    k += 1
                    last = now
                    got += 1

        reader = asyncio.create_task(receive())
        start = loop.time()
        sent = 0
        while loop.time() - start < seconds:
            await ws.send(turn[sent % len(turn)])
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * FRAME - loop.time()))
        await ws.close()
        await asyncio.gather(reader, return_exceptions=True)
    return got


async def run(n: int, seconds: float) -> dict[str, Any]:
    script = [f"question {i}" for i in range(n * 20)]
    agent = doubles_agent(script, [], min_silence=0.3, default_reply=REPLY)
    app = create_app(agent, max_sessions=n + 10)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with serve_app(app) as host:
        # the clients run in another process, so they do not share the server's loop
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--clients", host, "--sizes", str(n),
            "--seconds", str(seconds), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
    wall = time.perf_counter() - wall0
    got = json.loads(out.decode().strip().splitlines()[-1])
    late: list[float] = got["late"]
    return {
        "calls": n,
        "agent_frames": got["frames"],
        "late_p50_ms": pct(late, 0.5),
        "late_p99_ms": pct(late, 0.99),
        "late_max_ms": max(late) if late else None,
        "frames_late_over_20ms": sum(1 for x in late if x > 20),
        "server_cpu_share_of_one_core": (time.process_time() - cpu0) / wall,
    }


async def clients(host: str, n: int, seconds: float) -> None:
    """The client side (a process of its own): prints the frames' lateness as JSON."""
    late: list[float] = []
    frames = await asyncio.gather(
        *(client(host, seconds, late, (i % 50) * FRAME) for i in range(n))
    )
    print(json.dumps({"frames": sum(frames), "late": [round(x, 3) for x in late]}))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,25,50,100")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", default="bench/results/server_load.json")
    ap.add_argument("--clients", help=argparse.SUPPRESS)  # HOST: run the client side only
    args = ap.parse_args()
    if args.clients:
        await clients(args.clients, int(args.sizes), args.seconds)
        return
    result: dict[str, Any] = {"machine": platform.platform(), "runs": []}
    for n in (int(x) for x in args.sizes.split(",")):
        r = await run(n, args.seconds)
        result["runs"].append(r)
        print(json.dumps(r))
    ok = [r["calls"] for r in result["runs"] if r["frames_late_over_20ms"] == 0]
    result["max_calls_no_frame_late_over_20ms"] = max(ok) if ok else 0
    print(
        "calls held with no frame late by over 20 ms:", result["max_calls_no_frame_late_over_20ms"]
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))  # noqa: ASYNC240 - once, at the end


if __name__ == "__main__":
    asyncio.run(main())
