"""CPU per pushed 20 ms frame of WebSocket STT streams (Deepgram plugin, in-process fake).

How it is built: ``--streams`` streams of :class:`~antiphon.plugins.deepgram.DeepgramSTT`
against :class:`~antiphon.testing.deepgram_stt.FakeDeepgramSTT` in the same loop, each
pushing a spoken phrase in 20 ms frames at real-time pace (a ``sleep(0.02)`` after each
frame, so the stream's task waits for every frame, as in a call), then ``end_input`` and
the finals. ``time.process_time()`` per round divided by the frames pushed: the fake's
work is included (the same in every run), so compare runs of two checkouts
(``PYTHONPATH=<other src>``), alternated, not the absolute figure.

    .venv/bin/python bench/stt_frame_cost.py [--streams 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from antiphon.audio.frame import AudioFrame
from antiphon.plugins.deepgram import DeepgramSTT
from antiphon.testing import serving
from antiphon.testing.conformance.stt_ws import speech
from antiphon.testing.deepgram_stt import DEFAULT_API_KEY, FakeDeepgramSTT

TEXT = "What time is it?"


async def _one(stt: DeepgramSTT, frames: list[AudioFrame]) -> None:
    async with stt.stream() as s:
        for f in frames:
            s.push_audio(f)
            await asyncio.sleep(0.02)
        s.end_input()
        await s.finals()


async def run(streams: int, rounds: int) -> list[float]:
    frames = speech(TEXT).split(0.02)
    out = []
    async with (
        serving(FakeDeepgramSTT(vocabulary=[TEXT])) as fake,
        DeepgramSTT(api_key=DEFAULT_API_KEY, base_url=fake.url) as stt,
    ):
        await asyncio.gather(*(_one(stt, frames) for _ in range(streams)))  # warm-up
        for _ in range(rounds):
            cpu = time.process_time()
            await asyncio.gather(*(_one(stt, frames) for _ in range(streams)))
            out.append((time.process_time() - cpu) / (streams * len(frames)) * 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--streams", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    per_round = asyncio.run(run(a.streams, a.rounds))
    print(
        "µs per frame (fake included): "
        + " ".join(f"{x:.1f}" for x in per_round)
        + f"  (load {' '.join(f'{x:.1f}' for x in os.getloadavg())})"
    )


if __name__ == "__main__":
    main()
