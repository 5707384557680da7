"""Framework overhead of each streaming TTS plugin over a bare client of its protocol.

For every provider in the registry whose plugin is a ``WebSocketTTS``, against that
provider's fake server (on its own thread, same text, same frames):

(a) a bare client: one ``websockets`` connection, the provider's sans-I/O protocol session
    to encode text and decode answers, nothing else;
(b) the plugin: ``tts.synthesize(text)`` (pool, stream task, mailbox, frames, metrics).

Per audio chunk, the latency from the fake's send to (a) ``recv()`` returning and (b) the
``AudioFrame`` coming out; and CPU seconds of the client thread per second of audio. The
two run interleaved, text by text, in one process.

For the HTTP streaming plugins (OpenAI, Hume; the ``http`` transport in the registry but
Azure, whose fake is not a streamed body), the bare client is one ``httpx`` streaming POST
of the same body with the same headers, reading ``aiter_raw()``. The fake's send times are
taken by wrapping its ``HttpConnection.write``; besides the per-chunk latency, the time to
the first audio byte (from the request, or from ``synthesize()``) is compared.

    .venv/bin/python bench/tts_overhead.py [--texts 12] [--interval 0.002] [--only deepgram]

Prints a summary and writes ``bench/results/tts_overhead.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from antiphon.plugins.registry import TTS_PROVIDERS, TTSProvider, TTSSettings
from antiphon.protocols.tts_session import Act
from antiphon.services.ws_tts import WebSocketTTS
from antiphon.testing import FaultPlan, running_in_thread
from antiphon.testing.registry import tts_fake
from antiphon.testing.synth import tone_duration
from benchkit import HTTP_SENT, after_last_send, clock_http_writes, overhead_summary

TEXT = "The quick brown fox jumps over the lazy dog, then rests a while."
HTTP_PROVIDERS = ("openai", "hume")


async def http_bare_round(
    client: httpx.AsyncClient, tts: Any, text: str
) -> tuple[list[float], float, float]:
    """(per-chunk latencies, time to first byte in ms, client-thread CPU seconds)."""
    start = len(HTTP_SENT)
    recv_ns: list[int] = []
    cpu = time.thread_time()
    t0 = time.perf_counter_ns()
    async with client.stream("POST", tts.url, content=tts.body(text), headers=tts.headers) as r:
        r.raise_for_status()
        async for data in r.aiter_raw():
            if data:
                recv_ns.append(time.perf_counter_ns())
    cpu = time.thread_time() - cpu
    return after_last_send(HTTP_SENT[start:], recv_ns), (recv_ns[0] - t0) / 1e6, cpu


async def http_plugin_round(tts: Any, text: str) -> tuple[list[float], float, float]:
    start = len(HTTP_SENT)
    recv_ns: list[int] = []
    cpu = time.thread_time()
    t0 = time.perf_counter_ns()
    async with tts.synthesize(text) as stream:
        async for _frame in stream:
            recv_ns.append(time.perf_counter_ns())
    cpu = time.thread_time() - cpu
    return after_last_send(HTTP_SENT[start:], recv_ns), (recv_ns[0] - t0) / 1e6, cpu


async def bench_http_provider(provider: TTSProvider, texts: int, interval: float) -> dict[str, Any]:
    entry = tts_fake(provider.name)
    fake = entry.make(FaultPlan(chunk_interval=interval), 0, entry.key)
    lat: dict[str, list[float]] = {"bare": [], "ours": []}
    ttfb: dict[str, list[float]] = {"bare": [], "ours": []}
    cpu = {"bare": 0.0, "ours": 0.0}
    audio_seconds = 0.0
    with running_in_thread(fake):
        tts = provider.make(TTSSettings(api_key=entry.key, base_url=fake.url))
        async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client, tts:
            await http_bare_round(client, tts, "Warm up.")  # not counted
            await http_plugin_round(tts, "Warm up.")
            for i in range(texts):
                text = f"{TEXT} Number {i}."
                for which in ("bare", "ours") if i % 2 == 0 else ("ours", "bare"):
                    if which == "bare":
                        chunk_lat, first, c = await http_bare_round(client, tts, text)
                    else:
                        chunk_lat, first, c = await http_plugin_round(tts, text)
                    lat[which] += chunk_lat
                    ttfb[which].append(first)
                    cpu[which] += c
                audio_seconds += tone_duration(text)
    result: dict[str, Any] = {
        "provider": provider.name,
        "transport": "http",
        "chunks_per_client": len(lat["ours"]),
        **overhead_summary(lat["bare"], lat["ours"]),
        "first_byte": overhead_summary(ttfb["bare"], ttfb["ours"]),
        "cpu_s_per_audio_s": {
            "bare": cpu["bare"] / audio_seconds,
            "plugin": cpu["ours"] / audio_seconds,
            "ratio": cpu["ours"] / cpu["bare"] if cpu["bare"] else None,
        },
    }
    result["target_met"] = result["added_latency_ms"]["p99"] < 1.0
    return result


def send_times(fake: Any) -> list[int]:
    times: list[int] = fake.stats.audio_send_times
    return times


async def bare_round(
    ws: ClientConnection, tts: WebSocketTTS, fake: Any, text: str
) -> tuple[list[float], float]:
    sent = send_times(fake)
    start = len(sent)
    recv_ns: list[int] = []
    cpu = time.thread_time()
    session = tts.new_session()
    for m in [*session.speak(text), *session.end_input()]:
        await ws.send(m)
    while not session.done:
        action = session.feed(await ws.recv())
        if action.act is Act.DELIVER:
            recv_ns.append(time.perf_counter_ns())
        elif action.act is Act.FAIL:
            raise RuntimeError(action.note)
    cpu = time.thread_time() - cpu
    lat = [(r - s) / 1e6 for r, s in zip(recv_ns, sent[start:], strict=True)]
    return lat, cpu


async def plugin_round(tts: WebSocketTTS, fake: Any, text: str) -> tuple[list[float], float]:
    sent = send_times(fake)
    start = len(sent)
    recv_ns: list[int] = []
    cpu = time.thread_time()
    async with tts.synthesize(text) as stream:
        async for _frame in stream:
            recv_ns.append(time.perf_counter_ns())
    cpu = time.thread_time() - cpu
    lat = [(r - s) / 1e6 for r, s in zip(recv_ns, sent[start:], strict=True)]
    return lat, cpu


async def bench_provider(provider: TTSProvider, texts: int, interval: float) -> dict[str, Any]:
    entry = tts_fake(provider.name)
    fake = entry.make(FaultPlan(chunk_interval=interval), 0, entry.key)
    fake_any: Any = fake
    fake_any.stats.record_send_times = True
    with running_in_thread(fake):
        tts = provider.make(TTSSettings(api_key=entry.key, base_url=fake.url))
        assert isinstance(tts, WebSocketTTS)
        bare_lat: list[float] = []
        ours_lat: list[float] = []
        bare_cpu = ours_cpu = 0.0
        audio_seconds = 0.0
        async with (
            connect(tts.url, additional_headers=tts.headers, compression=None, proxy=None) as ws,
            tts,
        ):
            await tts.prewarm()
            await bare_round(ws, tts, fake, "Warm up.")  # not counted
            await plugin_round(tts, fake, "Warm up.")
            for i in range(texts):
                text = f"{TEXT} Number {i}."
                for which in ("bare", "ours") if i % 2 == 0 else ("ours", "bare"):
                    if which == "bare":
                        lat, cpu = await bare_round(ws, tts, fake, text)
                        bare_lat += lat
                        bare_cpu += cpu
                    else:
                        lat, cpu = await plugin_round(tts, fake, text)
                        ours_lat += lat
                        ours_cpu += cpu
                audio_seconds += tone_duration(text)
    result: dict[str, Any] = {
        "provider": provider.name,
        "chunks_per_client": len(ours_lat),
        **overhead_summary(bare_lat, ours_lat),
        "cpu_s_per_audio_s": {
            "bare": bare_cpu / audio_seconds,
            "plugin": ours_cpu / audio_seconds,
            "ratio": ours_cpu / bare_cpu if bare_cpu else None,
        },
    }
    result["target_met"] = result["added_latency_ms"]["p99"] < 1.0
    return result


async def run(texts: int, interval: float, only: list[str]) -> dict[str, Any]:
    clock_http_writes()
    results = []
    for name, provider in TTS_PROVIDERS.items():
        if only and name not in only:
            continue
        if provider.transport == "websocket":
            results.append(await bench_provider(provider, texts, interval))
        elif name in HTTP_PROVIDERS:
            results.append(await bench_http_provider(provider, texts, interval))
    return {
        "benchmark": "tts_overhead",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "texts": texts,
        "chunk_interval_s": interval,
        "target": "added p99 latency < 1 ms per audio chunk",
        "providers": results,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--texts", type=int, default=12, help="texts per client")
    ap.add_argument("--interval", type=float, default=0.002, help="seconds between chunks")
    ap.add_argument("--only", action="append", default=[], help="provider name (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/tts_overhead.json"))
    a = ap.parse_args()
    r = asyncio.run(run(a.texts, a.interval, a.only))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(r, indent=2) + "\n")
    print(
        f"{'provider':<11} {'chunks':>6} {'bare p50/p99 ms':>16} {'plugin p50/p99 ms':>18} "
        f"{'added p99 ms':>12} {'CPU ratio':>9}"
    )
    for p in r["providers"]:
        b, o, d, c = p["bare_ms"], p["plugin_ms"], p["added_latency_ms"], p["cpu_s_per_audio_s"]
        met = "met" if p["target_met"] else "NOT met"
        print(
            f"{p['provider']:<11} {p['chunks_per_client']:>6} "
            f"{b['p50']:>7.3f}/{b['p99']:<8.3f} {o['p50']:>8.3f}/{o['p99']:<9.3f} "
            f"{d['p99']:>+12.3f} {c['ratio'] or 0:>8.2f}x  {met}"
        )
    for p in r["providers"]:
        if "first_byte" in p:
            b, o = p["first_byte"]["bare_ms"], p["first_byte"]["plugin_ms"]
            print(
                f"{p['provider']:<11} first audio byte p50/p99 ms: bare {b['p50']:.3f}/"
                f"{b['p99']:.3f}, plugin {o['p50']:.3f}/{o['p99']:.3f}"
            )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
