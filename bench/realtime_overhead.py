"""Framework overhead of the realtime sessions over a bare websockets client.

Against :class:`~antiphon.testing.realtime.FakeRealtimeServer` (GA, on its own thread),
each round sends a user turn and reads the spoken answer (20 ms audio deltas). Every
figure is per audio delta, from the moment the WebSocket protocol parsed its frame (the
connection's ``process_event``, stamped with ``time.perf_counter_ns()``) to the PCM in the
consumer's hands, so it counts the task hops between the socket and the consumer:

(a) bare: one ``websockets`` connection; the consumer's ``recv()`` wakes (one hop), then
    ``json.loads`` + base64;
(b) antiphon: ``OpenAIRealtime`` session (connection handler, state machine, events); the
    ``AgentAudio`` coming out of ``async for ev in session``.

The same against :class:`~antiphon.testing.gemini_live.FakeGeminiLiveServer` (20 ms
chunks): bare = ``setup``, ``setupComplete``, a ``clientContent`` turn, then per
``serverContent`` with ``modelTurn`` audio, ``json.loads`` + base64 of its ``inlineData``;
antiphon = ``GeminiLive`` (keys ``gemini_*`` in the JSON). And against
:class:`~antiphon.testing.xai_realtime.FakeXAIRealtimeServer`: bare as (a) with xAI's
greeting and session shape, antiphon = ``XAIRealtime`` (keys ``xai_*``).

``--interval`` paces the fake's deltas (default 5 ms) so that the figure is the per-frame
cost, not the wait behind a burst of deltas that arrived together. Also the input side:
the cost of one ``push_audio`` call (20 ms at 16 kHz, resampled to 24 kHz and queued).

``--against DIR`` alternates ``--ab-rounds`` runs of this checkout's ``src`` and DIR's
``src`` (each a fresh process, ``PYTHONPATH=<src>:bench``), so both see the same machine
load, and prints the median of each figure per version.

    .venv/bin/python bench/realtime_overhead.py [--rounds 10] [--interval 0.005]
    .venv/bin/python bench/realtime_overhead.py --against /work/main [--ab-rounds 3]

Prints p50/p99 and writes ``bench/results/realtime_overhead.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame

from antiphon.audio.frame import AudioFrame
from antiphon.net import ws as antiphon_ws
from antiphon.plugins.gemini import GeminiLive
from antiphon.plugins.openai import OpenAIRealtime
from antiphon.plugins.xai import XAIRealtime
from antiphon.protocols import gemini_live as gl
from antiphon.protocols import realtime as rt
from antiphon.protocols import xai_realtime as xr
from antiphon.services.realtime import AgentAudio, ResponseDone
from antiphon.testing import gemini_live as gl_fake
from antiphon.testing.faults import FaultPlan
from antiphon.testing.realtime import DEFAULT_API_KEY, FakeRealtimeServer
from antiphon.testing.server import running_in_thread
from antiphon.testing.xai_realtime import FakeXAIRealtimeServer
from benchkit import alternate, pct

TEXT = "The quick brown fox jumps over the lazy dog, then rests a while."
AUDIO_TYPE = rt.NAMES[rt.Dialect.GA].audio_delta
AUDIO_DELTA = AUDIO_TYPE.encode()
GEMINI_AUDIO = b'"inlineData"'
#: When the protocol parsed each audio frame (``perf_counter_ns``), in order.
PARSED: list[int] = []


def _stamp(event: Any) -> None:
    if type(event) is Frame and (AUDIO_DELTA in event.data[:60] or GEMINI_AUDIO in event.data[:80]):
        PARSED.append(time.perf_counter_ns())


class StampedClient(ClientConnection):
    """The bare client's connection: stamps each audio frame as the protocol parses it."""

    def process_event(self, event: Any) -> None:
        _stamp(event)
        super().process_event(event)


def stamp_antiphon_frames() -> None:
    """Stamp each audio frame antiphon's connections parse (before any routing)."""
    client = antiphon_ws._Client
    original = client.process_event

    def process_event(self: Any, event: Any) -> None:
        _stamp(event)
        original(self, event)

    client.process_event = process_event  # type: ignore[method-assign]


async def bare_round(url: str, *, xai: bool = False) -> list[float]:
    out: list[float] = []
    async with connect(
        f"{url}/v1/realtime?model=m",
        additional_headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"},
        compression=None,
        create_connection=StampedClient,
    ) as ws:
        await ws.recv()  # session.created (xAI: conversation.created)
        if xai:
            cfg = rt.SessionConfig(turn_detection=None, voice=rt.Voice("eve", "xai"))
            await ws.send(xr.encode_session_update(cfg))
        else:
            cfg = rt.SessionConfig(turn_detection=None)
            await ws.send(rt.encode_session_update(rt.Dialect.GA, cfg))
        PARSED.clear()
        await ws.send(rt.encode_message(rt.Dialect.GA, "user", TEXT))
        await ws.send(rt.encode_response_create())
        i = 0
        while True:
            raw = await ws.recv()
            msg = json.loads(raw)
            if msg["type"] == AUDIO_TYPE:
                pcm = base64.b64decode(msg["delta"])
                assert pcm
                out.append((time.perf_counter_ns() - PARSED[i]) / 1e3)
                i += 1
            elif msg["type"] == "response.done":
                return out


async def antiphon_round(url: str, *, xai: bool = False) -> tuple[list[float], list[float]]:
    out: list[float] = []
    push: list[float] = []
    model: OpenAIRealtime | XAIRealtime
    if xai:
        model = XAIRealtime(api_key=DEFAULT_API_KEY, base_url=url, server_vad=False)
    else:
        model = OpenAIRealtime(api_key=DEFAULT_API_KEY, base_url=url, server_vad=False)
    async with model, model.session() as s:
        PARSED.clear()
        s.send_text(TEXT)
        i = 0
        async for ev in s:
            if isinstance(ev, AgentAudio):
                out.append((time.perf_counter_ns() - PARSED[i]) / 1e3)
                i += 1
            elif isinstance(ev, ResponseDone):
                break
        for f in AudioFrame.silence(1.0, 16000).split(0.02):
            t0 = time.perf_counter_ns()
            s.push_audio(f)
            push.append((time.perf_counter_ns() - t0) / 1e3)
    return out, push


async def gemini_bare_round(url: str) -> list[float]:
    out: list[float] = []
    async with connect(
        rt.build_url(url, gl.PATH, {}),
        additional_headers={"x-goog-api-key": gl_fake.DEFAULT_API_KEY},
        compression=None,
        create_connection=StampedClient,
    ) as ws:
        cfg = rt.SessionConfig(turn_detection=None)
        await ws.send(
            gl.encode_setup(
                cfg, model="m", voice=gl.DEFAULT_VOICE, automatic_activity_detection=False
            )
        )
        while "setupComplete" not in json.loads(await ws.recv()):
            pass
        PARSED.clear()
        await ws.send(gl.encode_client_content([("user", TEXT)], turn_complete=True))
        i = 0
        while True:
            raw = await ws.recv()
            content = json.loads(raw).get("serverContent", {})
            parts = content.get("modelTurn", {}).get("parts", [])
            pcm = b"".join(base64.b64decode(p["inlineData"]["data"]) for p in parts)
            if pcm:
                out.append((time.perf_counter_ns() - PARSED[i]) / 1e3)
                i += 1
            if content.get("turnComplete"):
                return out


async def gemini_round(url: str) -> list[float]:
    out: list[float] = []
    model = GeminiLive(
        api_key=gl_fake.DEFAULT_API_KEY, base_url=url, automatic_activity_detection=False
    )
    async with model, model.session() as s:
        PARSED.clear()
        s.send_text(TEXT)
        i = 0
        async for ev in s:
            if isinstance(ev, AgentAudio):
                out.append((time.perf_counter_ns() - PARSED[i]) / 1e3)
                i += 1
            elif isinstance(ev, ResponseDone):
                break
    return out


async def main(rounds: int, interval: float) -> dict[str, Any]:
    stamp_antiphon_frames()
    bare: list[float] = []
    ours: list[float] = []
    push: list[float] = []
    with running_in_thread(
        FakeRealtimeServer(FaultPlan(chunk_interval=interval), dialect="ga", chunk_ms=20.0)
    ) as fake:
        for _ in range(rounds):
            bare += await bare_round(fake.url)
            o, p = await antiphon_round(fake.url)
            ours += o
            push += p
    g_bare: list[float] = []
    g_ours: list[float] = []
    with running_in_thread(
        gl_fake.FakeGeminiLiveServer(FaultPlan(chunk_interval=interval), chunk_ms=20.0)
    ) as live:
        for _ in range(rounds):
            g_bare += await gemini_bare_round(live.url)
            g_ours += await gemini_round(live.url)
    x_bare: list[float] = []
    x_ours: list[float] = []
    with running_in_thread(
        FakeXAIRealtimeServer(FaultPlan(chunk_interval=interval), chunk_ms=20.0)
    ) as xfake:
        for _ in range(rounds):
            x_bare += await bare_round(xfake.url, xai=True)
            x_ours += (await antiphon_round(xfake.url, xai=True))[0]
    res = {
        "what": "per 20 ms audio delta: frame parsed -> PCM in the consumer (microseconds)",
        "rounds": rounds,
        "server_interval_s": interval,
        "deltas": len(ours),
        "bare_p50_us": statistics.median(bare),
        "bare_p99_us": pct(bare, 0.99),
        "antiphon_p50_us": statistics.median(ours),
        "antiphon_p99_us": pct(ours, 0.99),
        "push_audio_16k_to_24k_p50_us": statistics.median(push),
        "push_audio_16k_to_24k_p99_us": pct(push, 0.99),
        "gemini_deltas": len(g_ours),
        "gemini_bare_p50_us": statistics.median(g_bare),
        "gemini_bare_p99_us": pct(g_bare, 0.99),
        "gemini_antiphon_p50_us": statistics.median(g_ours),
        "gemini_antiphon_p99_us": pct(g_ours, 0.99),
        "xai_deltas": len(x_ours),
        "xai_bare_p50_us": statistics.median(x_bare),
        "xai_bare_p99_us": pct(x_bare, 0.99),
        "xai_antiphon_p50_us": statistics.median(x_ours),
        "xai_antiphon_p99_us": pct(x_ours, 0.99),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    return res


#: The figures an A/B run compares (median over its runs).
AB_KEYS = (
    "bare_p50_us",
    "antiphon_p50_us",
    "antiphon_p99_us",
    "gemini_bare_p50_us",
    "gemini_antiphon_p50_us",
    "gemini_antiphon_p99_us",
    "xai_bare_p50_us",
    "xai_antiphon_p50_us",
    "xai_antiphon_p99_us",
    "push_audio_16k_to_24k_p50_us",
)


def against(a: argparse.Namespace) -> dict[str, Any]:
    args = ["--rounds", str(a.rounds), "--interval", str(a.interval), "--json"]
    runs = alternate(
        Path(__file__), a.against, a.ab_rounds, args, lambda r: {k: round(r[k], 1) for k in AB_KEYS}
    )
    return {
        "what": "median over alternated runs of each figure (microseconds)",
        "against": str(a.against),
        "ab_rounds": a.ab_rounds,
        "rounds": a.rounds,
        "server_interval_s": a.interval,
        **{
            f"{name}_{k}": statistics.median(r[k] for r in rs)
            for name, rs in runs.items()
            for k in AB_KEYS
        },
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument(
        "--interval",
        type=float,
        default=0.005,
        help="seconds between the fake's audio deltas (0: whole answer in one burst, "
        "which measures queueing behind the burst as well)",
    )
    ap.add_argument("--against", type=Path, help="another checkout: alternate runs with it")
    ap.add_argument("--ab-rounds", type=int, default=3, help="alternations with --against")
    ap.add_argument("--json", action="store_true", help="print only the result, as JSON")
    ap.add_argument("--out", type=Path, help="where to write the JSON result")
    args = ap.parse_args()
    if args.json:
        print(json.dumps(asyncio.run(main(args.rounds, args.interval))))
        raise SystemExit(0)
    result = against(args) if args.against else asyncio.run(main(args.rounds, args.interval))
    for k, v in result.items():
        print(f"{k:40} {v:.4g}" if isinstance(v, float) else f"{k:40} {v}")
    name = "realtime_overhead_ab.json" if args.against else "realtime_overhead.json"
    out = args.out or Path(__file__).parent / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
