"""Call-level chaos on real time: each fault alongside healthy calls, through the real server.

The scenarios of :data:`antiphon.testing.chaos.FAULTS` (the ones ``tests/test_chaos.py``
runs on a virtual clock), here on the loop's own clock: peers send 20 ms of audio every
20 ms, deadlines pass in real time, and every figure is wall time. For each fault:

- how the faulty call ended (the close code the server chose, what the peer got) and
  when, from the start of the fault, against the configured bound where one applies;
- the healthy calls' worst gap between two frames of one reply, as they received them
  (budget: 60 ms), and whether they had every turn answered;
- the worst lateness of a 5 ms timer on the same event loop (``loop lag``): a gap about
  that large was the machine's (a shared, loaded box), not the server's;
- ``/livez`` polled every 50 ms throughout: the worst answer (budget: 100 ms);
- what was left: tasks, threads, sockets, calls in the registry; and the process's
  resident memory and live objects after the measured pass against their baseline after
  a warm-up pass of the same faults (budget: memory within 10 %).

Each scenario builds an app of its own. FastAPI memoises facts about every endpoint
function in module-level ``lru_cache`` s (bounded), which keeps the last apps' closures,
sessions included, alive: one server builds one app, so the bench clears those caches
after each scenario to see what antiphon itself keeps.

    .venv/bin/python bench/chaos.py [--faults never-sends,llm-stall] [--healthy 3]
        [--out bench/results/chaos.json]

Prints a table and writes the JSON results.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

from antiphon.testing.chaos import FAULTS, ChaosResult, run_chaos

GAP_BUDGET = 0.060
LIVEZ_BUDGET = 0.100
MEMORY_BUDGET = 0.10


def forget_apps() -> None:
    """Clear FastAPI's per-endpoint caches (see the module docstring)."""
    import fastapi.dependencies.models as models

    for value in vars(models).values():
        if isinstance(value, functools._lru_cache_wrapper):
            value.cache_clear()


async def one_pass(names: list[str], healthy: int, label: str) -> list[ChaosResult]:
    results = []
    for name in names:
        r = await run_chaos(name, virtual=False, healthy=healthy)
        forget_apps()
        results.append(r)
        print(f"{label} {name}: {ended(r)}, {r.wall:.1f} s", file=sys.stderr)
    return results


def rss_mb() -> float:
    """Resident memory now (Linux /proc), in MB."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ended(r: ChaosResult) -> str:
    code = "-" if r.code is None else str(r.code)
    peer = "" if r.peer_code in (None, r.code) else f" (peer {r.peer_code})"
    when = "" if r.ended is None else f" at {r.ended:.3f} s"
    return f"{code}{peer}{when}"


def verdict(r: ChaosResult) -> list[str]:
    """What broke a budget or a promise in this run (empty: all held)."""
    bad: list[str] = []
    if r.failure:
        bad.append(r.failure)
    if r.bound is not None and (r.ended is None or r.ended > r.bound + 0.5):
        bad.append(f"ended after its bound {r.bound} s")
    if r.worst_gap > GAP_BUDGET:
        bad.append(f"healthy gap {r.worst_gap * 1000:.0f} ms")
    if r.fault != "sigterm-drain" and not all(h.turns >= h.wanted for h in r.healthy):
        bad.append("a healthy call missed a turn")
    if any(status != 200 for status, _ in r.livez):
        bad.append("/livez failed")
    if r.livez_worst > LIVEZ_BUDGET:
        bad.append(f"/livez took {r.livez_worst * 1000:.0f} ms")
    if r.leaks or r.active_after:
        bad.append(f"left: {len(r.leaks)} objects, {r.active_after} calls")
    return bad


def table(results: list[ChaosResult]) -> str:
    head = ("fault", "faulty call: code at", "bound", "healthy worst gap", "loop lag",
            "livez worst", "leaks", "ok")  # fmt: skip
    rows = [head]
    for r in results:
        rows.append(
            (
                r.fault,
                ended(r),
                "-" if r.bound is None else f"{r.bound:g} s",
                f"{r.worst_gap * 1000:.1f} ms",
                f"{r.loop_lag * 1000:.1f} ms",
                f"{r.livez_worst * 1000:.1f} ms ({len(r.livez)})",
                str(len(r.leaks) + r.active_after),
                "yes" if not verdict(r) else "NO: " + "; ".join(verdict(r)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faults", default=",".join(FAULTS), help="comma-separated names")
    ap.add_argument("--healthy", type=int, default=3, help="healthy calls beside each fault")
    ap.add_argument("--out", default="bench/results/chaos.json")
    args = ap.parse_args()
    names = [n for n in args.faults.split(",") if n]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        ap.error(f"unknown faults {unknown}; choose from {', '.join(FAULTS)}")

    await one_pass(names, args.healthy, "warm-up")
    gc.collect()
    baseline, objects0 = rss_mb(), len(gc.get_objects())
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    results = await one_pass(names, args.healthy, "measured")
    cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
    gc.collect()
    after, objects = rss_mb(), len(gc.get_objects())
    growth = (after - baseline) / baseline

    print(table(results))
    print(
        f"\nmemory: {baseline:.1f} MB after warm-up, {after:.1f} MB after the run "
        f"({growth:+.1%}; budget ±{MEMORY_BUDGET:.0%}); live objects {objects0} -> {objects}; "
        f"CPU {cpu:.1f} s over {wall:.1f} s"
    )
    failed = [r.fault for r in results if verdict(r)]
    if abs(growth) > MEMORY_BUDGET:
        failed.append("memory")
    print("all budgets held" if not failed else f"NOT held: {', '.join(failed)}")

    out: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "healthy_calls": args.healthy,
        "budgets": {"gap": GAP_BUDGET, "livez": LIVEZ_BUDGET, "memory": MEMORY_BUDGET},
        "memory_mb": {"baseline": baseline, "after": after, "growth": growth},
        "live_objects": {"baseline": objects0, "after": objects},
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "results": [dict(r.to_dict(), verdict=verdict(r)) for r in results],
        "failed": failed,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))  # noqa: ASYNC240 - once, at the end
    print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
