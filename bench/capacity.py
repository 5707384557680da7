"""Capacity of the real server: calls one process holds, and what each costs, per pipeline.

How it is built: for each size and each side, a server runs in a subprocess (one
process, one event loop) and answers every call (the sides: ``bench/capacity_sides.py``):

- **antiphon**: ``antiphon serve`` with :func:`antiphon.testing.agent.doubles_agent` (the
  in-process doubles: scripted STT and LLM, tone TTS, energy VAD);
- **pipecat**: ``bench/pipecat_agent.py``, the same doubles as Pipecat services on
  Pipecat's own FastAPI WebSocket transport under uvicorn (see that file);
- **offline**: ``antiphon serve`` with the default offline agent (Silero VAD, Whisper
  tiny.en, the offline LLM, Piper), callers speaking Piper-voiced questions;
- **cloud**: ``antiphon serve`` with Deepgram STT, an OpenAI-compatible chat LLM and
  Deepgram TTS pointed at the loopback fakes of :mod:`antiphon.testing`, which run in a
  process of their own (their CPU is reported apart), callers speaking tone speech
  that the fake STT names.

The callers run in other subprocesses, at most ``--calls-per-client-process`` (40)
calls each: for the doubles ``bench/server_load.py --clients`` (20 ms of PCM every 20 ms
in real time, a question then silence, turn after turn, over ``/ws/agent``, binary PCM
both ways), for the speaking sides ``bench/speech_callers.py`` (the same, with real
questions, one per cycle). Every side's calls start spread over one turn cycle, as
independent callers speak (``--bunched``: the doubles' calls all start in one second, so
their turns coincide, the pattern of the earlier figures). So the server is measured, not
the clients, and each size starts from a fresh server. Sides alternate size by size
(antiphon n, Pipecat n, antiphon m, ...), so they see the same machine load; the load
average is recorded with each run.

A size *holds* by ``bench/verdict.py``: every call answered every turn it asked, the
whole reply's audio came back (within 5 %), and no frame was late by more than 20 ms.
For a speaking side, the whole reply is what a lone call got for the same question, in
a turn without an error, on the side's first server (its warm-up call), within 10 %
(Piper's lengths vary a few % from one synthesis to the next); a frame is late against
its reply's first frame, so a pause between two synthesised sentences counts. An overloaded server
that answers nothing therefore fails instead of passing vacuously. Each side's figure
is the largest size that holds; its sizes run in increasing order and stop after the
first that does not (``--keep-going`` runs them all). Server CPU (user + system, all
threads, from ``/proc``) and resident memory are read for the server process alone: CPU
per call is the share of one core per call (the run's average, which includes the calls'
staggered starts and ends; the busiest 2 s of the server's CPU is also given: what it
needed with every call up); memory per call is the growth over the idle
server (after the warm-up call) divided by the calls. ``calls per core by CPU`` is 100
over the CPU per call: how many calls a fully used core would carry, the figure that
does not depend on how late the shared machine makes every process. A server starved of
CPU does less of the work it owes (it answers fewer turns), so its CPU per call reads
low; the figure that holds then is the **CPU per frame handled** (every caller frame
sent plus every agent frame received), and ``calls per core by CPU per frame`` is what
one core would carry at that cost. Both are compared side to side at each size both
ran; CPU per call also where neither server used over ``SATURATED`` (0.8) of a core. A
third process meanwhile times a 20 ms sleep over and over: its p99 lateness says how
much of a frame's lateness the machine itself adds.

For the speaking sides each row also says where the time goes: each turn's stage
latencies (the ``turn`` messages' metrics: end of speech to STT final, LLM first token,
TTS first audio, voice to voice), the server's loop lag (``/metrics``) and its CPU on
the event loop's thread against its other threads (the inference workers), the error
events by stage and the engines' errors in the server's log; the summary names the part
that fills first (``bench/capacity_stages.py``: a stage's errors at the first size that
fails, else the stage whose p90 grew most, else the frames' delivery on the loop).

    .venv/bin/python bench/capacity.py [--sides antiphon,pipecat,offline,cloud]
        [--sizes 10,20,40,60,100,150,200] [--pipecat-sizes 5,10,20,40]
        [--offline-sizes 1,2,3,5] [--cloud-sizes 5,10,20,40] [--seconds 10]
        [--speech-seconds 40] [--keep-going] [--bunched]

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
from collections import Counter
from pathlib import Path
from typing import Any

from benchkit import cpu_seconds, pct, rss_mb
from capacity_sides import SIDES, SPEECH_SIDES, Probe, Speech, doubles_agent_file, prepare, started
from capacity_stages import ENGINE_ERROR, limiting_stage, stage_latencies
from server_load import CYCLE, FRAME, REPLY_FRAMES
from verdict import CallTally, judge

HERE = Path(__file__).resolve().parent
AGENT_FILE = doubles_agent_file()  # the doubles' agent file (bench/profile_server.py uses it)
#: frames a call moves per second: 50 from the caller, the reply's share of each turn back
FRAMES_PER_CALL_SECOND = 1 / FRAME + REPLY_FRAMES / CYCLE
SATURATED = 0.8  # cores: above this a one-loop server is short of CPU on a loaded machine


def load_average() -> float:
    """The machine's one-minute load average now."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def client_command(
    side: str, port: int, m: int, seconds: float, speech: Speech | None, first: int, n: int,
    reference: list[int] | None, *, bunched: bool = False,
) -> list[str]:  # fmt: skip
    """The command of one client process: ``m`` calls of ``n``, from call ``first``."""
    host = f"127.0.0.1:{port}"
    if speech is None:
        return [
            sys.executable, str(HERE / "server_load.py"), "--clients", host,
            "--sizes", str(m), "--seconds", str(seconds), "--first-index", str(first),
            "--of", str(n), *(["--phone"] if side == "phone" else []),
            *(["--bunched"] if bunched else []),
        ]  # fmt: skip
    return [
        sys.executable, str(HERE / "speech_callers.py"), "--host", host, "--calls", str(m),
        "--seconds", str(seconds), "--cycle", str(speech.cycle),
        "--questions", ",".join(str(q) for q in speech.questions),
        "--reference", ",".join(str(x) for x in reference or []),
        "--first-index", str(first), "--of", str(n),
    ]  # fmt: skip


async def warm_up(port: int, speech: Speech, refs: dict[int, int]) -> list[int]:
    """Lone calls asking each question once: the frames of each reply, the reference.

    A reply is taken only from a turn without an error event (an engine that missed its
    deadline answers something else); ``refs`` keeps them across the side's sizes (the
    replies' audio does not depend on the load), and up to three lone calls fill it.
    """
    seconds = len(speech.questions) * speech.cycle + FRAME
    for _ in range(3):
        proc = await asyncio.create_subprocess_exec(
            *client_command("", port, 1, seconds, speech, 0, 1, None),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        got = json.loads(out.decode().strip().splitlines()[-1])["calls"][0]
        for q, f, err in zip(
            got["cycle_questions"], got["cycle_frames"], got["cycle_errors"], strict=True
        ):
            if f and not err:
                refs.setdefault(q, f)
        if len(refs) == len(speech.questions):
            return [refs[q] for q in range(len(speech.questions))]
    raise RuntimeError(f"three lone calls got no clean reply to some question: {refs}")


async def run_size(
    side: str,
    n: int,
    seconds: float,
    agent_file: Path,
    speech: Speech | None,
    per_process: int,
    refs: dict[int, int],
    *,
    bunched: bool = False,
) -> dict[str, Any]:
    log_path = agent_file.with_name(f"{side}-{n}.log")
    load_start = load_average()
    async with started(side, n, agent_file, log_path) as run:
        server = run.server
        await asyncio.sleep(0.5)
        reference = await warm_up(run.port, speech, refs) if speech else None
        await asyncio.sleep(0.5)
        idle_rss = rss_mb(server.pid)
        cpu0, wall0 = cpu_seconds(server.pid), time.perf_counter()
        helpers0 = sum(cpu_seconds(h.pid) for h in run.helpers)
        probe = Probe(server.pid, run.port) if speech else None
        # the callers in processes of at most `per_process` calls each: one Python
        # process cannot drive hundreds of real-time calls, and a late client is not a
        # late server
        procs = -(-n // per_process)
        shares = [n // procs + (i < n % procs) for i in range(procs)]
        firsts = [sum(shares[:i]) for i in range(procs)]
        clients = [
            await asyncio.create_subprocess_exec(
                *client_command(
                    side, run.port, m, seconds, speech, f, n, reference, bunched=bunched
                ),
                stdout=asyncio.subprocess.PIPE,
            )
            for m, f in zip(shares, firsts, strict=True)
        ]
        peak_rss = idle_rss
        communicate = asyncio.ensure_future(asyncio.gather(*(c.communicate() for c in clients)))
        noise: list[float] = []
        loop = asyncio.get_running_loop()
        cpu_samples: list[tuple[float, float]] = []
        while not communicate.done():
            peak_rss = max(peak_rss, rss_mb(server.pid))
            cpu_samples.append((time.perf_counter(), cpu_seconds(server.pid)))
            if probe is not None:
                await probe.sample()
            for _ in range(25):  # a third process's 20 ms timer: how late the machine is
                t = loop.time()
                await asyncio.sleep(FRAME)
                noise.append((loop.time() - t - FRAME) * 1000)
        outs = await communicate
        cpu = cpu_seconds(server.pid) - cpu0
        wall = time.perf_counter() - wall0
        helpers_cpu = sum(cpu_seconds(h.pid) for h in run.helpers) - helpers0
        threads = await probe.finish(wall) if probe is not None else {}
    log_lines = log_path.read_text(errors="replace").splitlines()
    got = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outs]
    late: list[float] = [x for g in got for x in g["late"]]
    calls = [
        CallTally(
            c["asked"],
            c["answered"],
            c["frames"],
            c["expected"] if speech else c["asked"] * REPLY_FRAMES,
        )
        for g in got
        for c in g["calls"]
    ]
    # Piper's lengths vary a few % from one synthesis of a text to the next (its
    # stochastic durations): a speaking side's audio is whole within 10 %
    verdict = judge(calls, late, tolerance=0.1 if speech else 0.05)
    cores = cpu / wall
    handled = sum(c["sent"] + c["received"] for g in got for c in g["calls"])
    row: dict[str, Any] = {
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
        # the run's average includes the calls' staggered starts and ends: the busiest
        # 2 s is what the server needed with every call up
        "server_cpu_cores_busiest_2s": busiest(cpu_samples, 2.0),
        "server_cpu_pct_of_core_per_call": 100 * cores / n,
        "calls_per_core_by_cpu": n / cores if cores else None,
        # what a starved server did not do costs it nothing: CPU per frame it handled
        # (every caller frame sent, every agent frame received) is the cost that holds
        "frames_handled": handled,
        "server_cpu_us_per_frame": 1e6 * cpu / handled if handled else None,
        # calls one core would carry at that cost (a call is FRAMES_PER_CALL_SECOND
        # frames); not for a speaking side, whose cost is its turns' inference
        "calls_per_core_by_cpu_per_frame": (
            1e6 / (1e6 * cpu / handled * FRAMES_PER_CALL_SECOND)
            if handled and cpu and not speech
            else None
        ),
        "server_rss_idle_mb": idle_rss,
        "server_rss_peak_mb": peak_rss,
        "server_rss_mb_per_call": (peak_rss - idle_rss) / n,
        "client_processes": procs,
        "client_cpu_cores": sum(g["cpu_s"] for g in got) / wall,
        "server_log_warnings": [x for x in log_lines if "WARNING" in x or "ERROR" in x][-5:],
        # engines past their deadline (``whisper: engine thread ... abandoned``), by engine
        "server_log_engine_errors": dict(
            Counter(m.group(1) for x in log_lines if (m := ENGINE_ERROR.search(x)))
        ),
    }
    if speech:
        row |= {
            "reference_reply_frames": reference,
            "interrupted": sum(c["interrupted"] for g in got for c in g["calls"]),
            "reply_frames_by_call": [c["cycle_frames"] for g in got for c in g["calls"]],
            # the stage of each error event (an engine past its deadline, ...), counted
            "agent_errors": dict(
                Counter(e for g in got for c in g["calls"] for es in c["cycle_errors"] for e in es)
            ),
            "stages_s": stage_latencies([t for g in got for t in g["turns"]]),
            **threads,
        }
    if run.helpers:
        row["fakes_cpu_cores"] = helpers_cpu / wall
    return row


def busiest(samples: list[tuple[float, float]], window: float) -> float | None:
    """The highest CPU rate (cores) over ``window`` seconds or a little more, from
    ``(wall, cpu)`` samples in time order; None if the run was shorter."""
    best: float | None = None
    j = 0
    for t, c in samples:
        while j < len(samples) and samples[j][0] - t < window:
            j += 1
        if j == len(samples):
            break
        rate = (samples[j][1] - c) / (samples[j][0] - t)
        best = rate if best is None else max(best, rate)
    return best


def line(r: dict[str, Any]) -> str:
    return (
        f"{r['side']:>8} {r['calls']:>4} calls  {'holds' if r['holds'] else 'fails'}  "
        f"late p99 {r['late_p99_ms']:.1f} max {r['late_max_ms'] or 0:.1f} ms (idle timer p99 "
        f"{r['machine_timer_late_p99_ms']:.1f} max {r['machine_timer_late_max_ms'] or 0:.0f})  "
        f"CPU {r['server_cpu_cores']:.2f} cores (busiest 2 s "
        f"{r['server_cpu_cores_busiest_2s'] or 0:.2f}, "
        f"{r['server_cpu_pct_of_core_per_call']:.2f} %/call, "
        f"{r['server_cpu_us_per_frame'] or 0:.0f} us/frame)  RSS {r['server_rss_peak_mb']:.0f} "
        f"MB ({r['server_rss_mb_per_call']:.2f} MB/call)  clients {r['client_cpu_cores']:.2f} "
        f"cores in {r['client_processes']}  load {r['load_average'][0]:.1f}"
        + (
            f"\n{'':>15}stages p90 s: "
            + ", ".join(f"{k} {v['p90'] or 0:.2f}" for k, v in r["stages_s"].items())
            + f"  loop thread {r['loop_thread_cores']:.2f} cores, other threads "
            f"{r['other_threads_cores']:.2f}, loop lag max {r['loop_lag_max_ms'] or 0:.0f} ms"
            if "stages_s" in r
            else ""
        )
        + ("" if r["holds"] else f"  why: {'; '.join(r['failed'])}")
    )


def summary(runs: list[dict[str, Any]], sides: list[str]) -> dict[str, Any]:
    """Per side: calls held, and CPU/memory per call; ratios at the sizes both ran."""
    out: dict[str, Any] = {}
    for side in sides:
        mine = [r for r in runs if r["side"] == side]
        held = [r["calls"] for r in mine if r["holds"]]
        most = max(held) if held else 0
        out[side] = {
            "calls_held_per_server_process": most,
            # with --keep-going a size may hold above one that failed (a run at the edge)
            "smaller_sizes_failed": [
                r["calls"] for r in mine if r["calls"] < most and not r["holds"]
            ],
            "cpu_pct_of_core_per_call": {
                r["calls"]: r["server_cpu_pct_of_core_per_call"] for r in mine
            },
            "rss_mb_per_call": {r["calls"]: r["server_rss_mb_per_call"] for r in mine},
            "calls_per_core_by_cpu": {r["calls"]: r["calls_per_core_by_cpu"] for r in mine},
        }
        if side in SPEECH_SIDES:
            out[side]["limiting_stage"] = limiting_stage(side, mine)
    if {"antiphon", "pipecat"} <= set(sides):
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
    ap.add_argument("--offline-sizes", default="1,2,3,5", help="the offline pipeline's sizes")
    ap.add_argument("--cloud-sizes", default="5,10,20,40", help="the cloud fakes' sizes")
    ap.add_argument("--phone-sizes", default="10,20,40,60,100,150", help="phone calls' sizes")
    ap.add_argument("--seconds", type=float, default=10.0, help="per size, doubles sides")
    ap.add_argument(
        "--speech-seconds", type=float, default=40.0, help="per size, offline and cloud sides"
    )
    ap.add_argument("--sides", default=",".join(SIDES))
    ap.add_argument("--keep-going", action="store_true", help="run every size")
    ap.add_argument("--calls-per-client-process", type=int, default=40)
    ap.add_argument(
        "--stt-hears-silence",
        action="store_true",
        help="the doubles' STT hears the next line in silence too (for A/B runs against a "
        "version before ScriptedSTT's voiced_only)",
    )
    ap.add_argument(
        "--bunched",
        action="store_true",
        help="doubles sides: every call starts within one second, so their turns coincide "
        "(default: spread over the turn cycle, as independent callers)",
    )
    ap.add_argument("--out", default="bench/results/capacity.json")
    a = ap.parse_args()
    sides = [x for x in a.sides.split(",") if x]
    runs: list[dict[str, Any]] = []
    going = set(sides)
    unknown = set(sides) - set(SIDES)
    if unknown:
        raise SystemExit(f"unknown sides {sorted(unknown)}; choose from {', '.join(SIDES)}")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = {
            side: prepare(side, Path(tmp), stt_hears_silence=a.stt_hears_silence) for side in sides
        }
        sizes = {
            "antiphon": a.sizes,
            "phone": a.phone_sizes,
            "pipecat": a.pipecat_sizes,
            "offline": a.offline_sizes,
            "cloud": a.cloud_sizes,
        }
        plan = {side: [int(x) for x in sizes[side].split(",")] for side in sides}
        refs: dict[str, dict[int, int]] = {side: {} for side in sides}
        # increasing sizes, the sides alternating at each: both see the same machine load
        order = sorted(
            ((n, side) for side in sides for n in plan[side]), key=lambda x: (x[0], x[1])
        )
        for n, side in order:
            if side not in going:
                continue
            agent_file, speech = prepared[side]
            seconds = a.speech_seconds if speech else a.seconds
            r = await run_size(
                side, n, seconds, agent_file, speech, a.calls_per_client_process, refs[side],
                bunched=a.bunched,
            )  # fmt: skip
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
            "phone": "antiphon serve, the same doubles: Twilio Media Streams on /twilio/media",
            "pipecat": "bench/pipecat_agent.py: Pipecat 1.14, FastAPI WebSocket, same doubles",
            "offline": "antiphon serve: the default offline agent (Silero, Whisper tiny.en, "
            "offline LLM, Piper), no greeting",
            "cloud": "antiphon serve: WebRTC VAD, Deepgram STT, OpenAI chat, Deepgram TTS on "
            "the loopback fakes of antiphon.testing in another process",
        },
        "clients": "bench/server_load.py --clients [--phone] (doubles), bench/speech_callers.py "
        "(offline, cloud), in other subprocesses",
        "criteria": "bench/verdict.py: every turn answered, audio whole, no frame late > 20 ms",
        "doubles_turns": "bunched in one second" if a.bunched else "spread over the cycle",
        "doubles_stt": "every frame counts" if a.stt_hears_silence else "voiced frames only",
        "seconds_per_size": a.seconds,
        "speech_seconds_per_size": a.speech_seconds,
        "runs": runs,
        "summary": summary(runs, sides),
    }
    for side in sides:
        s = result["summary"][side]
        failed = s["smaller_sizes_failed"]
        edge = f" (but {', '.join(map(str, failed))} did not)" if failed else ""
        print(
            f"{side}: calls held by one server process: {s['calls_held_per_server_process']}{edge}"
        )
        if s.get("limiting_stage"):
            print(f"{side}: limiting stage: {json.dumps(s['limiting_stage'])}")
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
