"""Framework overhead of DeepgramTTS over a bare websockets client, on the same fake.

For each audio chunk: latency from the fake server's send to (a) ``ws.recv()`` returning
in a bare client and (b) the ``AudioFrame`` coming out of ``DeepgramTTS``'s stream. Both
clients run in one process, interleaved text by text, against one fake server running on
its own thread. Also CPU seconds (of the client thread) per second of audio.

    .venv/bin/python bench/tts_overhead.py [--texts 12] [--interval 0.002]

Prints a summary and writes ``bench/results/tts_overhead.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from antiphon.plugins.deepgram import DeepgramTTS
from antiphon.protocols import deepgram_tts as dg
from antiphon.testing import FakeDeepgramTTS, FaultPlan, running_in_thread
from antiphon.testing.deepgram import DEFAULT_API_KEY
from antiphon.testing.synth import tone_duration

TEXT = "The quick brown fox jumps over the lazy dog, then rests a while."


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


async def bare_round(ws: Any, fake: FakeDeepgramTTS, text: str) -> tuple[list[float], float]:
    sent = fake.stats.audio_send_times
    start = len(sent)
    recv_ns: list[int] = []
    cpu = time.thread_time()
    await ws.send(json.dumps({"type": "Speak", "text": text}))
    await ws.send(json.dumps({"type": "Flush"}))
    while True:
        msg = await ws.recv()
        if isinstance(msg, bytes):
            recv_ns.append(time.perf_counter_ns())
        elif json.loads(msg).get("type") == "Flushed":
            break
    cpu = time.thread_time() - cpu
    lat = [(r - s) / 1e6 for r, s in zip(recv_ns, sent[start:], strict=True)]
    return lat, cpu


async def antiphon_round(
    tts: DeepgramTTS, fake: FakeDeepgramTTS, text: str
) -> tuple[list[float], float]:
    sent = fake.stats.audio_send_times
    start = len(sent)
    recv_ns: list[int] = []
    cpu = time.thread_time()
    async with tts.synthesize(text) as stream:
        async for _frame in stream:
            recv_ns.append(time.perf_counter_ns())
    cpu = time.thread_time() - cpu
    lat = [(r - s) / 1e6 for r, s in zip(recv_ns, sent[start:], strict=True)]
    return lat, cpu


async def run(texts: int, interval: float) -> dict[str, Any]:
    fake = FakeDeepgramTTS(FaultPlan(chunk_interval=interval))
    fake.stats.record_send_times = True
    with running_in_thread(fake):
        url = dg.build_url(fake.url, dg.SpeakOptions())
        headers = dg.auth_headers(DEFAULT_API_KEY)
        bare_lat: list[float] = []
        ours_lat: list[float] = []
        bare_cpu = ours_cpu = 0.0
        audio_seconds = 0.0
        async with (
            connect(url, additional_headers=headers, compression=None, proxy=None) as ws,
            DeepgramTTS(api_key=DEFAULT_API_KEY, base_url=fake.url) as tts,
        ):
            await tts.prewarm()
            # Warm-up round of each, not counted.
            await bare_round(ws, fake, "Warm up.")
            await antiphon_round(tts, fake, "Warm up.")
            for i in range(texts):
                text = f"{TEXT} Number {i}."
                for which in ("bare", "ours") if i % 2 == 0 else ("ours", "bare"):
                    if which == "bare":
                        lat, cpu = await bare_round(ws, fake, text)
                        bare_lat += lat
                        bare_cpu += cpu
                    else:
                        lat, cpu = await antiphon_round(tts, fake, text)
                        ours_lat += lat
                        ours_cpu += cpu
                audio_seconds += tone_duration(text)
    result: dict[str, Any] = {
        "benchmark": "tts_overhead",
        "provider": "deepgram (local fake)",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "texts": texts,
        "chunks_per_client": len(ours_lat),
        "chunk_interval_s": interval,
        "bare_ms": {
            "p50": pct(bare_lat, 50),
            "p99": pct(bare_lat, 99),
            "mean": statistics.fmean(bare_lat),
        },
        "antiphon_ms": {
            "p50": pct(ours_lat, 50),
            "p99": pct(ours_lat, 99),
            "mean": statistics.fmean(ours_lat),
        },
        "added_latency_ms": {
            "p50": pct(ours_lat, 50) - pct(bare_lat, 50),
            "p99": pct(ours_lat, 99) - pct(bare_lat, 99),
        },
        "latency_ratio": {
            "p50": pct(ours_lat, 50) / pct(bare_lat, 50),
            "p99": pct(ours_lat, 99) / pct(bare_lat, 99),
        },
        "cpu_s_per_audio_s": {
            "bare": bare_cpu / audio_seconds,
            "antiphon": ours_cpu / audio_seconds,
            "ratio": ours_cpu / bare_cpu if bare_cpu else None,
        },
        "target": "added p99 latency < 1 ms",
    }
    result["target_met"] = result["added_latency_ms"]["p99"] < 1.0
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=12, help="texts per client")
    ap.add_argument("--interval", type=float, default=0.002, help="seconds between chunks")
    ap.add_argument("--out", type=Path, default=Path("bench/results/tts_overhead.json"))
    a = ap.parse_args()
    r = asyncio.run(run(a.texts, a.interval))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(r, indent=2) + "\n")
    b, o, d = r["bare_ms"], r["antiphon_ms"], r["added_latency_ms"]
    c = r["cpu_s_per_audio_s"]
    print(f"chunks per client: {r['chunks_per_client']}")
    print(f"bare websockets : p50 {b['p50']:.3f} ms  p99 {b['p99']:.3f} ms")
    print(f"DeepgramTTS     : p50 {o['p50']:.3f} ms  p99 {o['p99']:.3f} ms")
    print(
        f"added latency   : p50 {d['p50']:+.3f} ms  p99 {d['p99']:+.3f} ms "
        f"(ratio p50 {r['latency_ratio']['p50']:.2f}x, p99 {r['latency_ratio']['p99']:.2f}x)"
    )
    print(
        f"CPU s per audio s: bare {c['bare']:.5f}, antiphon {c['antiphon']:.5f} "
        f"(ratio {c['ratio']:.2f}x)"
    )
    print(f"target (added p99 < 1 ms): {'met' if r['target_met'] else 'NOT met'}")
    print(f"wrote {a.out}")
