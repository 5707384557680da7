"""Two versions of the server side by side: ``bench/capacity.py``'s doubles side, this
checkout's ``src`` against another's, alternating run by run (``--side phone``: the
phone side, Twilio Media Streams calls on ``/twilio/media``).

How it is built: each round runs ``bench/capacity.py --sides antiphon --sizes N`` once
with this checkout's ``src`` first on ``PYTHONPATH`` and once with the other's (the
server, its callers and the agent file are subprocesses, so they all run that version),
so both see the same machine in turn. Per round it reports each version's server CPU per
frame, frames more than 20 ms late and the verdict, and the ratio of CPU per frame
(this / other) in that round; the median ratio is the figure to read, the spread says
how much the machine moved. A version to compare with can be exported with e.g.
``git archive <commit> src | tar -x -C /tmp/before`` or a ``git worktree``.

    .venv/bin/python bench/capacity_ab.py --against /tmp/before [--side phone] [--calls 120]
        [--rounds 5] [--bunched] [--stt-hears-silence]

Writes ``bench/results/capacity_ab.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchkit import ab_versions, version_env

HERE = Path(__file__).resolve().parent


def run_once(
    src: Path, side: str, calls: int, seconds: float, *, flags: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One capacity run of a doubles side at ``calls``, with ``src`` first on the path."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "capacity.json"
        command = [sys.executable, str(HERE / "capacity.py"), "--sides", side]
        command += [f"--{'phone-' if side == 'phone' else ''}sizes", str(calls)]
        command += ["--seconds", str(seconds), "--out", str(out)]
        command += list(flags)
        subprocess.run(
            command,
            env=version_env(src),
            check=True,
            capture_output=True,
        )
        (run,) = json.loads(out.read_text())["runs"]
    return {
        "holds": run["holds"],
        "us_per_frame": round(run["server_cpu_us_per_frame"], 1),
        "server_cpu_cores": round(run["server_cpu_cores"], 3),
        "frames_late_over_budget": run["frames_late_over_budget"],
        "late_p99_ms": run["late_p99_ms"],
        "load_average": run["load_average"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--against", type=Path, required=True, help="another checkout")
    ap.add_argument(
        "--side",
        choices=("antiphon", "phone"),
        default="antiphon",
        help="browser calls on /ws/agent, or Twilio phone calls on /twilio/media",
    )
    ap.add_argument("--calls", type=int, default=120)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bunched", action="store_true", help="see bench/capacity.py")
    ap.add_argument(
        "--stt-hears-silence",
        action="store_true",
        help="see bench/capacity.py (needed against a version before ScriptedSTT's voiced_only)",
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "capacity_ab.json")
    a = ap.parse_args()
    versions = ab_versions(a.against)
    flags = tuple(
        f
        for f, on in (("--bunched", a.bunched), ("--stt-hears-silence", a.stt_hears_silence))
        if on
    )
    rounds: list[dict[str, Any]] = []
    for i in range(a.rounds):
        r = {
            name: run_once(src, a.side, a.calls, a.seconds, flags=flags)
            for name, src in versions.items()
        }
        r["ratio_us_per_frame"] = round(r["this"]["us_per_frame"] / r["against"]["us_per_frame"], 3)
        rounds.append(r)
        print(f"round {i + 1}: {json.dumps(r)}", flush=True)
    ratios = [r["ratio_us_per_frame"] for r in rounds]
    result = {
        "benchmark": "capacity_ab",
        "side": a.side,
        "calls": a.calls,
        "seconds": a.seconds,
        "flags": list(flags),
        "against": str(a.against.resolve()),
        "rounds": rounds,
        "ratio_us_per_frame_median": statistics.median(ratios),
        "ratio_us_per_frame_range": [min(ratios), max(ratios)],
        "late_frames_total": {
            name: sum(r[name]["frames_late_over_budget"] for r in rounds) for name in versions
        },
        "rounds_held": {name: sum(r[name]["holds"] for r in rounds) for name in versions},
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}))


if __name__ == "__main__":
    main()
