"""Many concurrent TTS streams in one process: antiphon's streaming path against a bare client.

How it is built: a loopback server speaking the Deepgram Speak protocol runs in a
**separate process** (so its work is not charged to the client), answers every ``Flush``
with ``--chunks`` binary audio chunks ``--interval`` seconds apart and then ``Flushed``.
Each chunk starts with the server's ``time.monotonic_ns()`` at send (a clock shared by
processes on one machine), so a client measures each chunk's latency from the server's
send to the moment the chunk reaches its consumer:

(a) **bare**: one ``websockets`` connection per stream, the same sans-I/O protocol
    session to encode text and decode answers, nothing else; latency at ``recv()``;
(b) **antiphon**: ``DeepgramTTS.synthesize(text)`` over a prewarmed pool; latency when the
    ``AudioFrame`` comes out of the stream's iterator.

A round runs ``--streams`` streams at once; rounds alternate bare/antiphon so both see the
same machine. CPU is the client process's CPU time per phase (and per round, with each
antiphon round's ratio to the bare round beside it: the spread on a busy machine; the
load average at the end of each phase is in the JSON). Then ``--deadline-streams``
(200) streams at once, ``--deadline-rounds`` rounds per client interleaved, count deadline
failures: for antiphon,
streams that failed with a timeout; for bare, streams whose first chunk or any gap
between chunks exceeded the same deadlines.

Targets (DESIGN "Performance budgets"): with 50 streams, antiphon's p99 chunk latency
within 2x of bare and its CPU within 1.1x; with 200 streams, no antiphon stream fails a
deadline the bare client met.

    .venv/bin/python bench/stream_hops.py [--streams 50] [--rounds 4] [--chunks 100]
        [--interval 0.02] [--deadline-streams 200] [--deadline-rounds 2] [--idle 5.0]

Prints a summary and writes ``bench/results/stream_hops.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import struct
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from antiphon.errors import ProviderError, ProviderTimeoutError
from antiphon.net.pool import PoolOptions
from antiphon.plugins.deepgram.tts import DeepgramTTS
from antiphon.protocols.tts_session import Act
from antiphon.services.tts import TTSDeadlines
from verdict import pct

TEXT = "The quick brown fox jumps over the lazy dog."
CHUNK_BYTES = 640  # 20 ms of 16 kHz int16
STAMP = struct.Struct("<q")


# ---------------------------------------------------------------- the server process
def _serve(port_out: Any, chunks: int, interval: float) -> None:
    asyncio.run(_server_main(port_out, chunks, interval))


async def _server_main(port_out: Any, chunks: int, interval: float) -> None:
    pad = bytes(CHUNK_BYTES - STAMP.size)

    async def handler(ws: ServerConnection) -> None:
        seq = 0
        loop = asyncio.get_running_loop()
        async for msg in ws:
            if not isinstance(msg, str) or '"Flush"' not in msg:
                if isinstance(msg, str) and '"Close"' in msg:
                    return
                continue
            due = loop.time()
            for _ in range(chunks):
                await ws.send(STAMP.pack(time.monotonic_ns()) + pad)
                due += interval
                await asyncio.sleep(max(0.0, due - loop.time()))
            await ws.send(json.dumps({"type": "Flushed", "sequence_id": seq}))
            seq += 1

    async with serve(handler, "127.0.0.1", 0, compression=None, max_queue=None) as server:
        port_out.send(server.sockets[0].getsockname()[1])
        await asyncio.Future()


# ---------------------------------------------------------------- the two clients
class Tally:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.timeouts = 0
        self.other_failures = 0
        self.missed_deadlines = 0  # bare: first chunk or a gap beyond the deadlines

    def chunk(self, data: bytes) -> int:
        now = time.monotonic_ns()
        self.latencies_ms.append((now - STAMP.unpack_from(data)[0]) / 1e6)
        return now


async def bare_stream(ws: ClientConnection, tts: DeepgramTTS, tally: Tally) -> None:
    d = tts.deadlines
    session = tts.new_session()
    for m in [*session.speak(TEXT), *session.end_input()]:
        await ws.send(m)
    last = time.monotonic_ns()
    first = True
    late = False
    while not session.done:
        action = session.feed(await ws.recv())
        if action.act is Act.DELIVER:
            now = tally.chunk(action.audio)
            if (now - last) / 1e9 > (d.first_audio if first else d.idle):
                late = True
            first = False
            last = now
        elif action.act is Act.FAIL:
            raise RuntimeError(action.note)
    tally.missed_deadlines += late


async def antiphon_stream(tts: DeepgramTTS, tally: Tally) -> None:
    try:
        async with tts.synthesize(TEXT) as stream:
            async for frame in stream:
                tally.chunk(frame.data)
    except ProviderTimeoutError:
        tally.timeouts += 1
    except ProviderError:
        tally.other_failures += 1


async def bare_round(conns: list[ClientConnection], tts: DeepgramTTS, tally: Tally) -> float:
    cpu = time.process_time()
    async with asyncio.TaskGroup() as tg:
        for ws in conns:
            tg.create_task(bare_stream(ws, tts, tally))
    return time.process_time() - cpu


async def antiphon_round(tts: DeepgramTTS, n: int, tally: Tally) -> float:
    cpu = time.process_time()
    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(antiphon_stream(tts, tally))
    return time.process_time() - cpu


def make_tts(url: str, n: int, idle: float) -> DeepgramTTS:
    return DeepgramTTS(
        api_key="bench",
        base_url=url,
        sample_rate=16000,
        deadlines=TTSDeadlines(idle=idle, first_audio=max(idle, 10.0)),
        pool=PoolOptions(max_idle=n),
    )


async def phase(url: str, n: int, rounds: int, idle: float) -> dict[str, Any]:
    """``rounds`` rounds of ``n`` streams for each client, interleaved."""
    tts = make_tts(url, n, idle)
    bare, ours = Tally(), Tally()
    bare_cpu = ours_cpu = 0.0
    bare_rounds: list[float] = []  # CPU µs per chunk of each round
    ours_rounds: list[float] = []
    conns = [
        await connect(tts.url, additional_headers=tts.headers, compression=None, proxy=None)
        for _ in range(n)
    ]
    try:
        async with tts:
            await tts.pool.prewarm(n)
            await bare_round(conns, tts, Tally())  # warm-up, not counted
            await antiphon_round(tts, n, Tally())
            for i in range(rounds):
                for which in ("bare", "ours") if i % 2 == 0 else ("ours", "bare"):
                    if which == "bare":
                        before = len(bare.latencies_ms)
                        cpu = await bare_round(conns, tts, bare)
                        bare_cpu += cpu
                        bare_rounds.append(cpu / max(1, len(bare.latencies_ms) - before) * 1e6)
                    else:
                        before = len(ours.latencies_ms)
                        cpu = await antiphon_round(tts, n, ours)
                        ours_cpu += cpu
                        ours_rounds.append(cpu / max(1, len(ours.latencies_ms) - before) * 1e6)
    finally:
        for ws in conns:
            await ws.close()

    def side(t: Tally, cpu: float, per_round: list[float]) -> dict[str, Any]:
        return {
            "chunks": len(t.latencies_ms),
            "cpu_us_per_chunk": cpu / max(1, len(t.latencies_ms)) * 1e6,
            "cpu_us_per_chunk_rounds": per_round,
            "p50_ms": pct(t.latencies_ms, 0.5),
            "p99_ms": pct(t.latencies_ms, 0.99),
            "max_ms": max(t.latencies_ms, default=float("nan")),
            "cpu_s": cpu,
            "timeouts": t.timeouts,
            "other_failures": t.other_failures,
            "missed_deadlines": t.missed_deadlines,
        }

    b, o = side(bare, bare_cpu, bare_rounds), side(ours, ours_cpu, ours_rounds)
    return {
        "streams": n,
        "rounds": rounds,
        "bare": b,
        "antiphon": o,
        "p50_ratio": o["p50_ms"] / b["p50_ms"],
        "p99_ratio": o["p99_ms"] / b["p99_ms"],
        "cpu_ratio": ours_cpu / bare_cpu if bare_cpu else None,
        # round i of antiphon against round i of bare (they ran back to back)
        "cpu_ratio_rounds": [o / b for o, b in zip(ours_rounds, bare_rounds, strict=True)],
        "loadavg": os.getloadavg(),
    }


async def run(a: argparse.Namespace, url: str) -> dict[str, Any]:
    main = await phase(url, a.streams, a.rounds, a.idle)
    load = await phase(url, a.deadline_streams, a.deadline_rounds, a.idle)
    main["target_met"] = main["p99_ratio"] <= 2.0 and (main["cpu_ratio"] or 0) <= 1.1
    ours_failed = load["antiphon"]["timeouts"]
    load["target_met"] = ours_failed <= load["bare"]["missed_deadlines"]
    return {
        "benchmark": "stream_hops",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load": {
            "chunks_per_stream": a.chunks,
            "chunk_bytes": CHUNK_BYTES,
            "interval_s": a.interval,
            "idle_deadline_s": a.idle,
            "server": "separate process, Deepgram Speak protocol",
        },
        "targets": {
            "concurrent": "p99 <= 2x bare and CPU <= 1.1x bare",
            "deadline": "no antiphon timeout beyond the bare client's missed deadlines",
        },
        "concurrent": main,
        "deadline": load,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--streams", type=int, default=50, help="concurrent streams per round")
    ap.add_argument("--rounds", type=int, default=4, help="rounds per client")
    ap.add_argument("--chunks", type=int, default=100, help="audio chunks per stream")
    ap.add_argument("--interval", type=float, default=0.02, help="seconds between chunks")
    ap.add_argument("--deadline-streams", type=int, default=200)
    ap.add_argument("--deadline-rounds", type=int, default=2, help="rounds per client")
    ap.add_argument("--idle", type=float, default=5.0, help="idle deadline (seconds)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/stream_hops.json"))
    a = ap.parse_args()
    ctx = multiprocessing.get_context("spawn")
    recv_end, send_end = ctx.Pipe(duplex=False)
    server = ctx.Process(target=_serve, args=(send_end, a.chunks, a.interval), daemon=True)
    server.start()
    try:
        port = recv_end.recv()
        r = asyncio.run(run(a, f"ws://127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.join(5)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(r, indent=2) + "\n")
    for key in ("concurrent", "deadline"):
        p = r[key]
        b, o = p["bare"], p["antiphon"]
        print(
            f"{key:<10} {p['streams']:>3} streams  bare p50/p99 {b['p50_ms']:.2f}/"
            f"{b['p99_ms']:.2f} ms  antiphon {o['p50_ms']:.2f}/{o['p99_ms']:.2f} ms  "
            f"p99 x{p['p99_ratio']:.2f}  CPU x{p['cpu_ratio'] or 0:.2f}  timeouts "
            f"{o['timeouts']} (bare missed {b['missed_deadlines']})  "
            f"{'met' if p['target_met'] else 'NOT met'}"
        )
        print(
            f"{'':<10} CPU µs/chunk bare {b['cpu_us_per_chunk']:.1f} antiphon "
            f"{o['cpu_us_per_chunk']:.1f}; per round x"
            + " x".join(f"{x:.2f}" for x in p["cpu_ratio_rounds"])
            + f"  (load {' '.join(f'{x:.1f}' for x in p['loadavg'])})"
        )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
