"""Where a speaking pipeline's time goes, for ``bench/capacity.py``'s offline and cloud sides.

How it is built: plain functions over the rows ``bench/capacity.py`` writes.
:func:`stage_latencies` gives p50/p90 of each stage of the turns' metrics (the ``turn``
messages of ``/ws/agent``); :func:`limiting_stage` reads a side's rows, smallest size to
largest, and names the part of the pipeline that fills first: a stage whose error events
(an engine past its deadline) appear at the first size that fails, else the stage whose
p90 grew most, else the frames' delivery on the event loop when they were later than
the loop's lag and the machine's own noise explain. The engines' error lines in the
server's log (:data:`ENGINE_ERROR`) are counted beside them.
"""

from __future__ import annotations

import re
from typing import Any

from benchkit import pct_or_none

__all__ = ["ENGINE_ERROR", "STAGES", "limiting_stage", "stage_latencies"]

STAGES = ("stt_final_delay", "end_of_turn_delay", "llm_ttft", "tts_ttfa", "voice_to_voice")


def stage_latencies(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """p50 and p90 (seconds) of each stage over the turns that have it."""
    out: dict[str, Any] = {}
    for k in STAGES:
        xs = [t[k] for t in turns if t.get(k) is not None]
        out[k] = {"p50": pct_or_none(xs, 0.5), "p90": pct_or_none(xs, 0.9), "n": len(xs)}
    return out


STAGE_NAMES = {
    "offline": {"stt_final_delay": "STT (Whisper tiny.en)", "tts_ttfa": "TTS (Piper)"},
    "cloud": {"stt_final_delay": "STT (Deepgram, fake)", "tts_ttfa": "TTS (Deepgram, fake)"},
}


#: seconds of p90 growth that name a stage (less is the shared machine's noise)
GREW = 0.2
#: the error events' stage names (substrings) of each stage
ERROR_STAGES = {
    "stt_final_delay": ("stt", "final", "process", "engine pool", "transcri", "recogn"),
    "tts_ttfa": ("tts", "synth"),
    "llm_ttft": ("llm",),
}
#: an engine worker's error line in the server's log: ``antiphon.aio.worker: whisper: ...``
ENGINE_ERROR = re.compile(r"ERROR antiphon\.aio\.worker: ([\w-]+):")


def limiting_stage(side: str, mine: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Which part of a speaking pipeline fills first, in this order of evidence:

    1. error events at the first size that fails (an engine past its deadline) name their
       stage;
    2. else the stage whose p90 latency grew most (by over :data:`GREW`) from the
       smallest size to the largest run;
    3. else, if that size's late frames are later than the loop-lag samples and the
       machine's own timer noise explain (by over 20 ms), the frames' delivery: the
       server's event loop;
    4. else nothing measurable: the machine's noise.
    """
    rows = sorted((r for r in mine if "stages_s" in r), key=lambda r: r["calls"])
    if not rows:
        return None
    lo, hi = rows[0], rows[-1]
    growth = {
        k: hi["stages_s"][k]["p90"] - lo["stages_s"][k]["p90"]
        for k in ("stt_final_delay", "llm_ttft", "tts_ttfa")
        if hi["stages_s"][k]["p90"] is not None and lo["stages_s"][k]["p90"] is not None
    }
    names = {"llm_ttft": "LLM", **STAGE_NAMES.get(side, {})}
    worst = max(growth, key=lambda k: growth[k]) if growth else None
    fail = next((r for r in rows if not r["holds"]), None)
    errors: dict[str, int] = (fail.get("agent_errors") or {}) if fail is not None else {}
    behind = False
    if fail is not None and fail["frames_late_over_budget"]:
        noise = max(fail["loop_lag_max_ms"] or 0.0, fail["machine_timer_late_max_ms"] or 0.0)
        behind = (fail["late_max_ms"] or 0.0) > noise + 20
    if fail is not None and errors:
        failing = max(errors, key=lambda k: errors[k])
        kind = next(
            (k for k, words in ERROR_STAGES.items() if any(w in failing for w in words)), ""
        )
        stage = f"{names.get(kind, failing)}: {errors[failing]} {failing!r} errors"
    elif worst and growth[worst] > GREW:
        stage = f"{names.get(worst, worst)}: its p90 grew {growth[worst]:.2f} s"
    elif behind:
        stage = "frame delivery on the event loop: frames late beyond the machine's noise"
    else:
        stage = "none measurable: the late frames are within the machine's noise"
    return {
        "stage": stage,
        "first_failing_calls": fail["calls"] if fail else None,
        "first_failure": fail["failed"] if fail else [],
        "first_failure_agent_errors": errors,
        "first_failure_engine_errors": fail["server_log_engine_errors"] if fail else {},
        "late_beyond_noise": behind,
        "p90_growth_s": {"from_calls": lo["calls"], "to_calls": hi["calls"], **growth},
        "loop_thread_cores": [r["loop_thread_cores"] for r in rows],
        "other_threads_cores": [r["other_threads_cores"] for r in rows],
        "loop_lag_max_ms": [r["loop_lag_max_ms"] for r in rows],
    }
