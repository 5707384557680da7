"""How the load benches decide that a number of calls "holds".

A capacity figure counts only calls that were answered. Judging by the frames that were
sent is not enough: an overloaded server that answers nothing has no late frame. A size
holds only when all three hold:

1. **every call answered every turn** it asked within the run (a turn is answered when
   a run of agent audio came back for it);
2. **the audio was whole**: each call got its expected number of agent frames within
   ``tolerance`` (5 %), so a reply cut short or doubled fails;
3. **no frame was late** by more than ``late_budget_ms`` (20 ms) after its release time.

:func:`judge` returns the verdict and, when a size does not hold, which criterion failed
and for how many calls, so the output says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchkit import pct

__all__ = ["CallTally", "judge", "pct", "runs_of"]

FRAME = 0.02


@dataclass(frozen=True, slots=True)
class CallTally:
    """What one call asked and got back."""

    turns_asked: int
    turns_answered: int
    frames: int
    frames_expected: int


def runs_of(times: Sequence[float], gap: float = 0.1) -> list[int]:
    """Frame counts of each run of audio (frames closer than ``gap`` s belong to one run)."""
    runs: list[int] = []
    last = None
    for t in times:
        if last is None or t - last > gap:
            runs.append(0)
        runs[-1] += 1
        last = t
    return runs


def judge(
    calls: Sequence[CallTally],
    late_ms: Sequence[float],
    *,
    tolerance: float = 0.05,
    late_budget_ms: float = 20.0,
) -> dict[str, Any]:
    """The verdict for one size: ``holds`` and, when it does not, ``failed`` (reasons)."""
    failed: list[str] = []
    if not calls:
        failed.append("no call ran")
    unanswered = [c for c in calls if c.turns_answered < c.turns_asked]
    if unanswered:
        missing = sum(c.turns_asked - c.turns_answered for c in unanswered)
        failed.append(f"{len(unanswered)} of {len(calls)} calls left {missing} turns unanswered")
    if any(c.turns_asked == 0 for c in calls):
        failed.append("a call asked no complete turn (run longer)")
    off = [
        c
        for c in calls
        if c.frames_expected and abs(c.frames - c.frames_expected) > tolerance * c.frames_expected
    ]
    if off:
        failed.append(
            f"{len(off)} of {len(calls)} calls got agent audio more than {tolerance:.0%} "
            "off the expected frame count"
        )
    late = sum(1 for x in late_ms if x > late_budget_ms)
    if late:
        failed.append(f"{late} of {len(late_ms)} frames late by over {late_budget_ms:g} ms")
    return {
        "holds": not failed,
        "failed": failed,
        "turns_asked": sum(c.turns_asked for c in calls),
        "turns_answered": sum(c.turns_answered for c in calls),
        "frames": sum(c.frames for c in calls),
        "frames_expected": sum(c.frames_expected for c in calls),
        "frames_late_over_budget": late,
    }
