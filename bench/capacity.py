"""Capacity of the real server: calls one ``antiphon serve`` process holds, and what each costs.

How it is built: for each size, ``antiphon serve`` runs in a subprocess (one process, one
event loop) with an agent on the in-process doubles (scripted STT and LLM, tone TTS,
energy VAD: see :func:`antiphon.testing.agent.doubles_agent`); the callers run in a
second subprocess (``bench/server_load.py --clients``: each streams 20 ms of PCM every
20 ms in real time, a question then silence, turn after turn, and times the agent's
frames). So the server is measured, not the clients, and each size starts from a fresh
server.

A size *holds* by ``bench/verdict.py``: every call answered every turn it asked, the
whole reply's audio came back (within 5 %), and no frame was late by more than 20 ms.
An overloaded server that answers nothing therefore fails instead of passing vacuously.
The figure is the largest size that holds; sizes run in increasing order and stop after
the first that does not (``--keep-going`` runs them all). Server CPU (user + system,
from ``/proc``) and resident memory are read for the server process alone: CPU per call
is the share of one core per call; memory per call is the growth over the idle server
divided by the calls. A third process meanwhile times a 20 ms sleep over and over: its
p99 lateness says how much of a frame's lateness the machine itself adds (a shared
machine under load fails the 20 ms budget with any server).

The server is one event loop, so "calls per core" is the calls one server process holds.

    .venv/bin/python bench/capacity.py [--sizes 10,20,30,40,60,80,100] [--seconds 10]

Prints a table and writes ``bench/results/capacity.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from server_load import FRAME, REPLY, REPLY_FRAMES, SILENCE
from verdict import CallTally, judge, pct

HERE = Path(__file__).resolve().parent
AGENT_FILE = f"""\
from antiphon.testing.agent import doubles_agent

agent = doubles_agent(
    [f"question {{i}}" for i in range(100000)], [], min_silence={SILENCE}, default_reply={REPLY!r}
)
"""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_listening(port: int, proc: asyncio.subprocess.Process, limit: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while loop.time() < end:
        if proc.returncode is not None:
            raise RuntimeError(f"antiphon serve exited with {proc.returncode}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        w.close()
        await w.wait_closed()
        return
    raise RuntimeError(f"antiphon serve did not listen on {port} within {limit} s")


async def run_size(n: int, seconds: float, agent_file: Path) -> dict[str, Any]:
    port = free_port()
    log = agent_file.with_name(f"serve-{n}.log").open("wb")
    server = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("antiphon")), "serve", str(agent_file),
        "--port", str(port), "--max-sessions", str(n + 10),
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        await wait_listening(port, server, 60.0)
        await asyncio.sleep(0.5)
        idle_rss = rss_mb(server.pid)
        cpu0, wall0 = cpu_seconds(server.pid), time.perf_counter()
        clients = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "server_load.py"), "--clients", f"127.0.0.1:{port}",
            "--sizes", str(n), "--seconds", str(seconds), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        peak_rss = idle_rss
        communicate = asyncio.ensure_future(clients.communicate())
        noise: list[float] = []
        loop = asyncio.get_running_loop()
        while not communicate.done():
            peak_rss = max(peak_rss, rss_mb(server.pid))
            for _ in range(25):  # a third process's 20 ms timer: how late the machine is
                t = loop.time()
                await asyncio.sleep(FRAME)
                noise.append((loop.time() - t - FRAME) * 1000)
        out, _ = await communicate
        cpu = cpu_seconds(server.pid) - cpu0
        wall = time.perf_counter() - wall0
    finally:
        if server.returncode is None:
            server.terminate()
            try:
                await asyncio.wait_for(server.wait(), 10)
            except TimeoutError:
                server.kill()
                await server.wait()
        log.close()
    log_lines = agent_file.with_name(f"serve-{n}.log").read_text(errors="replace").splitlines()
    got = json.loads(out.decode().strip().splitlines()[-1])
    late: list[float] = got["late"]
    calls = [
        CallTally(c["asked"], c["answered"], c["frames"], c["asked"] * REPLY_FRAMES)
        for c in got["calls"]
    ]
    verdict = judge(calls, late)
    cores = cpu / wall
    return {
        "calls": n,
        **verdict,
        "late_p50_ms": pct(late, 0.5),
        "late_p99_ms": pct(late, 0.99),
        "late_max_ms": max(late) if late else None,
        "machine_timer_late_p99_ms": pct(noise, 0.99),
        "server_cpu_cores": cores,
        "server_cpu_pct_of_core_per_call": 100 * cores / n,
        "server_rss_idle_mb": idle_rss,
        "server_rss_peak_mb": peak_rss,
        "server_rss_mb_per_call": (peak_rss - idle_rss) / n,
        "server_log_warnings": [x for x in log_lines if "WARNING" in x or "ERROR" in x][-5:],
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="10,20,30,40,60,80,100")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--keep-going", action="store_true", help="run every size")
    ap.add_argument("--out", default="bench/results/capacity.json")
    a = ap.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        agent_file = Path(tmp) / "doubles_agent.py"
        agent_file.write_text(AGENT_FILE)
        for n in (int(x) for x in a.sizes.split(",")):
            r = await run_size(n, a.seconds, agent_file)
            runs.append(r)
            print(
                f"{n:>4} calls  {'holds' if r['holds'] else 'fails'}  late p99 "
                f"{r['late_p99_ms']:.1f} ms max {r['late_max_ms'] or 0:.1f} ms (idle timer p99 "
                f"{r['machine_timer_late_p99_ms']:.1f} ms)  server CPU "
                f"{r['server_cpu_cores']:.2f} cores ({r['server_cpu_pct_of_core_per_call']:.2f} "
                f"%/call)  RSS {r['server_rss_peak_mb']:.0f} MB "
                f"({r['server_rss_mb_per_call']:.2f} MB/call)"
                + ("" if r["holds"] else f"  why: {'; '.join(r['failed'])}"),
                flush=True,
            )
            if not r["holds"] and not a.keep_going:
                break
    held = [r["calls"] for r in runs if r["holds"]]
    result = {
        "benchmark": "capacity",
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "server": "antiphon serve (subprocess, one event loop), agent on the in-process doubles",
        "clients": "bench/server_load.py --clients in a second subprocess",
        "criteria": "bench/verdict.py: every turn answered, audio whole, no frame late > 20 ms",
        "seconds_per_size": a.seconds,
        "runs": runs,
        "calls_held_per_server_process": max(held) if held else 0,
    }
    print("calls held by one server process (one core):", result["calls_held_per_server_process"])
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")  # noqa: ASYNC240 - once, at the end
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
