"""Capacity of the real server against Pipecat: calls one process holds, and what each costs.

How it is built: for each size and each side, a server runs in a subprocess (one
process, one event loop) and answers every call with an agent on the same in-process
doubles (scripted STT and LLM, tone TTS, energy VAD):

- **antiphon**: ``antiphon serve`` with :func:`antiphon.testing.agent.doubles_agent`;
- **pipecat**: ``bench/pipecat_agent.py``, the same doubles as Pipecat services on
  Pipecat's own FastAPI WebSocket transport under uvicorn (see that file).

The callers run in other subprocesses, at most ``--calls-per-client-process`` (40)
calls each (``bench/server_load.py --clients``: each streams 20 ms of PCM every 20 ms in
real time, a question then silence, turn after turn, over ``/ws/agent``, binary PCM both
ways, and times the agent's frames), the same client against both servers. So the
server is measured, not the clients, and each size starts from a fresh server. Sides
alternate size by size (antiphon n, Pipecat n, antiphon m, ...), so both see the same
machine load; the load average is recorded with each run.

A size *holds* by ``bench/verdict.py``: every call answered every turn it asked, the
whole reply's audio came back (within 5 %), and no frame was late by more than 20 ms.
An overloaded server that answers nothing therefore fails instead of passing vacuously.
Each side's figure is the largest size that holds; its sizes run in increasing order and
stop after the first that does not (``--keep-going`` runs them all). Server CPU (user +
system, all threads, from ``/proc``) and resident memory are read for the server process
alone: CPU per call is the share of one core per call; memory per call is the growth
over the idle server divided by the calls. ``calls per core by CPU`` is 100 over the CPU
per call: how many calls a fully used core would carry, the figure that does not depend
on how late the shared machine makes every process. A server starved of CPU does
less of the work it owes (it answers fewer turns), so its CPU per call reads low; the
figure that holds then is the **CPU per frame handled** (every caller frame sent plus
every agent frame received), and ``calls per core by CPU per frame`` is what one core
would carry at that cost (a call moves ``FRAMES_PER_CALL_SECOND`` frames a second). Both
are compared side to side at each size both ran; CPU per call also where neither server
used over ``SATURATED`` (0.8) of a core. A third process meanwhile times a
20 ms sleep over and over: its p99 lateness says how much of a frame's lateness the
machine itself adds.

    .venv/bin/python bench/capacity.py [--sizes 10,20,40,60,100,150,200] [--seconds 10]
        [--pipecat-sizes 5,10,20,40] [--sides antiphon,pipecat] [--keep-going]

The Pipecat side needs Pipecat and its dependencies (``bench/requirements-pipecat.txt``).
Prints a table and writes ``bench/results/capacity.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import cpu_seconds, free_port, pct, rss_mb, wait_listening
from server_load import CYCLE, FRAME, REPLY, REPLY_FRAMES, SILENCE
from verdict import CallTally, judge

HERE = Path(__file__).resolve().parent
AGENT_FILE = f"""\
from antiphon.testing.agent import doubles_agent

agent = doubles_agent(
    [f"question {{i}}" for i in range(100000)], [], min_silence={SILENCE}, default_reply={REPLY!r}
)
"""
SIDES = ("antiphon", "pipecat")
#: frames a call moves per second: 50 from the caller, the reply's share of each turn back
FRAMES_PER_CALL_SECOND = 1 / FRAME + REPLY_FRAMES / CYCLE
SATURATED = 0.8  # cores: above this a one-loop server is short of CPU on a loaded machine


def load_average() -> float:
    """The machine's one-minute load average now."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def server_command(side: str, agent_file: Path, port: int, n: int) -> list[str]:
    if side == "antiphon":
        return [
            str(Path(sys.executable).with_name("antiphon")), "serve", str(agent_file),
            "--port", str(port), "--max-sessions", str(n + 10),
        ]  # fmt: skip
    return [
        sys.executable, str(HERE / "pipecat_agent.py"), "--port", str(port),
        "--min-silence", str(SILENCE), "--reply", REPLY,
    ]  # fmt: skip


async def run_size(
    side: str, n: int, seconds: float, agent_file: Path, per_process: int
) -> dict[str, Any]:
    port = free_port()
    log_path = agent_file.with_name(f"{side}-{n}.log")
    log = log_path.open("wb")
    server = await asyncio.create_subprocess_exec(
        *server_command(side, agent_file, port, n), stdout=log, stderr=log
    )
    load_start = load_average()
    try:
        await wait_listening(port, server, 60.0)
        await asyncio.sleep(0.5)
        idle_rss = rss_mb(server.pid)
        cpu0, wall0 = cpu_seconds(server.pid), time.perf_counter()
        # the callers in processes of at most `per_process` calls each: one Python
        # process cannot drive hundreds of real-time calls, and a late client is not a
        # late server
        procs = -(-n // per_process)
        shares = [n // procs + (i < n % procs) for i in range(procs)]
        clients = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(HERE / "server_load.py"),
                "--clients",
                f"127.0.0.1:{port}",
                "--sizes",
                str(m),
                "--seconds",
                str(seconds),
                stdout=asyncio.subprocess.PIPE,
            )
            for m in shares
        ]
        peak_rss = idle_rss
        communicate = asyncio.ensure_future(asyncio.gather(*(c.communicate() for c in clients)))
        noise: list[float] = []
        loop = asyncio.get_running_loop()
        while not communicate.done():
            peak_rss = max(peak_rss, rss_mb(server.pid))
            for _ in range(25):  # a third process's 20 ms timer: how late the machine is
                t = loop.time()
                await asyncio.sleep(FRAME)
                noise.append((loop.time() - t - FRAME) * 1000)
        outs = await communicate
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
    log_lines = log_path.read_text(errors="replace").splitlines()
    got = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outs]
    late: list[float] = [x for g in got for x in g["late"]]
    calls = [
        CallTally(c["asked"], c["answered"], c["frames"], c["asked"] * REPLY_FRAMES)
        for g in got
        for c in g["calls"]
    ]
    verdict = judge(calls, late)
    cores = cpu / wall
    handled = sum(c["sent"] + c["received"] for g in got for c in g["calls"])
    return {
        "side": side,
        "calls": n,
        "load_average": [load_start, load_average()],
        **verdict,
        "late_p50_ms": pct(late, 0.5),
        "late_p99_ms": pct(late, 0.99),
        "late_max_ms": max(late) if late else None,
        "machine_timer_late_p99_ms": pct(noise, 0.99),
        "machine_timer_late_max_ms": max(noise) if noise else None,
        "server_cpu_cores": cores,
        "server_cpu_pct_of_core_per_call": 100 * cores / n,
        "calls_per_core_by_cpu": n / cores if cores else None,
        # what a starved server did not do costs it nothing: CPU per frame it handled
        # (every caller frame sent, every agent frame received) is the cost that holds
        "frames_handled": handled,
        "server_cpu_us_per_frame": 1e6 * cpu / handled if handled else None,
        # calls one core would carry at that cost: a call is FRAMES_PER_CALL_SECOND frames
        "calls_per_core_by_cpu_per_frame": (
            1e6 / (1e6 * cpu / handled * FRAMES_PER_CALL_SECOND) if handled and cpu else None
        ),
        "server_rss_idle_mb": idle_rss,
        "server_rss_peak_mb": peak_rss,
        "server_rss_mb_per_call": (peak_rss - idle_rss) / n,
        "client_processes": procs,
        "client_cpu_cores": sum(g["cpu_s"] for g in got) / wall,
        "server_log_warnings": [x for x in log_lines if "WARNING" in x or "ERROR" in x][-5:],
    }


def line(r: dict[str, Any]) -> str:
    return (
        f"{r['side']:>8} {r['calls']:>4} calls  {'holds' if r['holds'] else 'fails'}  "
        f"late p99 {r['late_p99_ms']:.1f} max {r['late_max_ms'] or 0:.1f} ms (idle timer p99 "
        f"{r['machine_timer_late_p99_ms']:.1f} max {r['machine_timer_late_max_ms'] or 0:.0f})  "
        f"CPU {r['server_cpu_cores']:.2f} cores "
        f"({r['server_cpu_pct_of_core_per_call']:.2f} %/call, "
        f"{r['server_cpu_us_per_frame'] or 0:.0f} us/frame)  RSS {r['server_rss_peak_mb']:.0f} "
        f"MB ({r['server_rss_mb_per_call']:.2f} MB/call)  clients {r['client_cpu_cores']:.2f} "
        f"cores in {r['client_processes']}  load {r['load_average'][0]:.1f}"
        + ("" if r["holds"] else f"  why: {'; '.join(r['failed'])}")
    )


def summary(runs: list[dict[str, Any]], sides: list[str]) -> dict[str, Any]:
    """Per side: calls held, and CPU/memory per call; ratios at the sizes both ran."""
    out: dict[str, Any] = {}
    for side in sides:
        mine = [r for r in runs if r["side"] == side]
        held = [r["calls"] for r in mine if r["holds"]]
        out[side] = {
            "calls_held_per_server_process": max(held) if held else 0,
            "cpu_pct_of_core_per_call": {
                r["calls"]: r["server_cpu_pct_of_core_per_call"] for r in mine
            },
            "rss_mb_per_call": {r["calls"]: r["server_rss_mb_per_call"] for r in mine},
        }
    if set(SIDES) <= set(sides):
        a, p = out["antiphon"], out["pipecat"]
        both = sorted(set(a["cpu_pct_of_core_per_call"]) & set(p["cpu_pct_of_core_per_call"]))
        out["pipecat_cpu_per_call_over_antiphon"] = {
            n: p["cpu_pct_of_core_per_call"][n] / a["cpu_pct_of_core_per_call"][n] for n in both
        }
        # a server short of CPU does less work per call than it owes: compare CPU per call
        # only where both servers used less than SATURATED of a core
        cores = {(r["side"], r["calls"]): r["server_cpu_cores"] for r in runs}
        fair = [n for n in both if max(cores["antiphon", n], cores["pipecat", n]) < SATURATED]
        out["pipecat_cpu_per_call_over_antiphon_unsaturated"] = {
            n: out["pipecat_cpu_per_call_over_antiphon"][n] for n in fair
        }
        per_frame = {(r["side"], r["calls"]): r["server_cpu_us_per_frame"] for r in runs}
        out["pipecat_cpu_per_frame_over_antiphon"] = {
            n: per_frame["pipecat", n] / per_frame["antiphon", n]
            for n in both
            if per_frame["pipecat", n] and per_frame["antiphon", n]
        }
        out["held_ratio"] = (
            a["calls_held_per_server_process"] / p["calls_held_per_server_process"]
            if p["calls_held_per_server_process"]
            else None
        )
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="10,20,40,60,100,150,200")
    ap.add_argument(
        "--pipecat-sizes", default="5,10,20,40", help="Pipecat's sizes (it needs ~4x the CPU)"
    )
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--sides", default=",".join(SIDES))
    ap.add_argument("--keep-going", action="store_true", help="run every size")
    ap.add_argument("--calls-per-client-process", type=int, default=40)
    ap.add_argument("--out", default="bench/results/capacity.json")
    a = ap.parse_args()
    sides = [x for x in a.sides.split(",") if x]
    runs: list[dict[str, Any]] = []
    going = set(sides)
    with tempfile.TemporaryDirectory() as tmp:
        agent_file = Path(tmp) / "doubles_agent.py"
        agent_file.write_text(AGENT_FILE)
        plan = {
            "antiphon": [int(x) for x in a.sizes.split(",")],
            "pipecat": [int(x) for x in a.pipecat_sizes.split(",")],
        }
        # increasing sizes, the sides alternating at each: both see the same machine load
        order = sorted(
            ((n, side) for side in sides for n in plan[side]), key=lambda x: (x[0], x[1])
        )
        for n, side in order:
            if side not in going:
                continue
            r = await run_size(side, n, a.seconds, agent_file, a.calls_per_client_process)
            runs.append(r)
            print(line(r), flush=True)
            if not r["holds"] and not a.keep_going:
                going.discard(side)
    result = {
        "benchmark": "capacity",
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "servers": {
            "antiphon": "antiphon serve: one process, one event loop, the in-process doubles",
            "pipecat": "bench/pipecat_agent.py: Pipecat 1.14, FastAPI WebSocket, same doubles",
        },
        "clients": "bench/server_load.py --clients in a second subprocess",
        "criteria": "bench/verdict.py: every turn answered, audio whole, no frame late > 20 ms",
        "seconds_per_size": a.seconds,
        "runs": runs,
        "summary": summary(runs, sides),
    }
    for side in sides:
        s = result["summary"][side]
        print(f"{side}: calls held by one server process: {s['calls_held_per_server_process']}")
    if "pipecat_cpu_per_call_over_antiphon" in result["summary"]:
        print(
            f"Pipecat CPU per call / antiphon's, same sizes, both under {SATURATED} cores:",
            {
                n: round(x, 2)
                for n, x in result["summary"][
                    "pipecat_cpu_per_call_over_antiphon_unsaturated"
                ].items()
            },
        )
        print(
            "Pipecat CPU per frame handled / antiphon's, same sizes:",
            {
                n: round(x, 2)
                for n, x in result["summary"]["pipecat_cpu_per_frame_over_antiphon"].items()
            },
        )
        print(
            "Pipecat CPU per call / antiphon's, same sizes:",
            {
                n: round(x, 2)
                for n, x in result["summary"]["pipecat_cpu_per_call_over_antiphon"].items()
            },
        )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")  # noqa: ASYNC240 - once, at the end
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
