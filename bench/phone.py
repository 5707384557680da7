"""Phone calls that hold up: concurrent Twilio calls against ``antiphon serve``.

The server runs in a child process (its own core, its own memory figure) with the offline
pipeline (Silero VAD, PocketSphinx, the FAQ responder, espeak-ng) or, with ``--fake``,
the cloud pipeline on the fakes (Deepgram STT, an OpenAI-compatible LLM, Deepgram TTS,
each a fake server on loopback; the caller's questions are tone speech that the fake STT
names). Each caller is :class:`~antiphon.testing.twilio.SimulatedTwilioCall` with
``line=True``: 20 ms of μ-law every 20 ms from connect to hang-up (silence between
utterances, as a real line), marks echoed when the audio before them has played.

Each call waits for the greeting, asks ``--questions`` questions (waiting for each answer
to finish), then asks once more and talks over the answer 0.4 s after it starts
(barge-in). Measured per size N (N calls at once):

- answered: questions that got agent audio within ``--answer-timeout`` seconds; a size
  *holds* only if every call answered every question;
- end of speech → first agent audio (the caller's last voiced frame sent → first media
  received), p50/p95;
- barge-in: caller's speech onset → ``clear`` received, p50/p95;
- refused: calls the server refused (1013) — a clean refusal, not a failure to answer.

Memory per call: the server's RSS after 5 and after ``--sequential`` sequential calls
(each: greeting, one question, one barge-in), after the sizes above (the engine pools
are warm), and after each call.

    .venv/bin/python bench/phone.py [--fake] [--sizes 1,2,3,5,6] [--questions 2] [--sequential 50]

Writes ``bench/results/phone[-fake].json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.exceptions import InvalidStatus

from antiphon.audio.frame import AudioFrame
from antiphon.audio.wav import read_wav
from antiphon.testing.twilio import SimulatedTwilioCall
from benchkit import free_port, pct_or_none, rss_mb

ROOT = Path(__file__).resolve().parent.parent
FAKE_PHRASES = ("what can you do", "tell me a joke")


def pct(xs: list[float], q: float) -> float | None:
    value = pct_or_none(xs, q)
    return None if value is None else round(value, 3)


def serve_main(fake: bool, port: int, max_sessions: int | None) -> None:
    """The child process: the server on ``port``."""
    from antiphon.agent.pipeline import PipelineSpec
    from antiphon.server.agents import PipelineAgent
    from antiphon.server.app import serve

    spec = (
        PipelineSpec(
            vad="webrtc",
            stt="deepgram",
            llm="openai:gpt-4o-mini",
            tts="deepgram",
            fake=True,
            fake_vocabulary=FAKE_PHRASES,
        )
        if fake
        else PipelineSpec()
    )
    fakes = None
    if fake:
        from antiphon.testing.registry import LoopbackFakes

        fakes = LoopbackFakes()
    agent = PipelineAgent(spec, output_rate=8000, fakes=fakes)
    kwargs: dict[str, Any] = {}
    if max_sessions is not None:
        kwargs["max_sessions"] = max_sessions
    serve(agent, port=port, **kwargs)


def questions(fake: bool) -> list[AudioFrame]:
    if fake:
        from antiphon.testing.synth import tone_for_text

        return [AudioFrame(tone_for_text(p, 16000), 16000, 1) for p in FAKE_PHRASES]
    audio = [read_wav(ROOT / "examples" / "question.wav")]
    with contextlib.suppress(Exception):  # espeak-synthesised questions, when espeak-ng is here
        for text in ("what can you do", "what time is it"):
            out = subprocess.run(
                ["espeak-ng", "--stdout", "-s", "150", text], capture_output=True, check=True
            )
            import io

            audio.append(read_wav(io.BytesIO(out.stdout)))
    return audio


def lead(audio: AudioFrame) -> float:
    """Seconds of silence before the voice starts (the onset a listener would hear)."""
    x = np.abs(audio.as_array().astype(np.int32))
    block = audio.sample_rate // 100  # 10 ms
    for i in range(0, len(x) - block, block):
        if x[i : i + block].mean() > 300:
            return i / audio.sample_rate
    return 0.0


@dataclass
class CallResult:
    asked: int = 0
    answered: int = 0
    refused: bool = False
    error: str = ""
    latencies: list[float] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)


async def one_call(
    url: str,
    audio: list[AudioFrame],
    n_questions: int,
    timeout: float,
    index: int,
    delay: float = 0.0,
) -> CallResult:
    r = CallResult()
    await asyncio.sleep(delay)  # callers do not all dial at the same instant
    try:
        async with SimulatedTwilioCall(url, line=True) as call:
            got = call.received
            loop = asyncio.get_running_loop()

            async def wait(pred: Any, seconds: float) -> bool:
                end = loop.time() + seconds
                while loop.time() < end:
                    if pred():
                        return True
                    if call._ws is not None and call._ws.close_code is not None:
                        return False
                    await asyncio.sleep(0.02)
                return bool(pred())

            def turns() -> int:  # turns Twilio finished playing (not playout marks)
                return sum(1 for m in got.marks if m.startswith("turn-"))

            await wait(turns, timeout)  # the greeting played
            if call._ws is not None and call._ws.close_code is not None:
                r.refused = call._ws.close_code == 1013
                r.error = f"closed {call._ws.close_code} before the first question"
                return r
            for q in range(n_questions + 1):
                barge = q == n_questions
                marks = turns()
                r.asked += 1
                utt = await call.say(audio[(index + q) % len(audio)])
                if not await wait(lambda u=utt: got.first_media_after(u.end), timeout):
                    continue
                first = got.first_media_after(utt.end)
                assert first is not None
                r.answered += 1
                r.latencies.append(first - utt.end)
                if barge:
                    await asyncio.sleep(0.4)
                    talk = audio[(index + q + 1) % len(audio)]
                    over = await call.say(talk)
                    onset = over.onset + lead(talk)  # the caller's voice begins
                    if await wait(lambda o=onset: got.first_clear_after(o), 5.0):
                        clear = got.first_clear_after(onset)
                        assert clear is not None
                        r.clears.append(clear - onset)
                    r.asked += 1
                    if await wait(lambda o=over: got.first_media_after(o.end + 0.1), timeout):
                        r.answered += 1
                else:
                    await wait(lambda m=marks: turns() > m, timeout)
                await asyncio.sleep(0.3)
            await call.hang_up()
    except InvalidStatus as exc:
        r.refused, r.error = True, repr(exc)
    except Exception as exc:
        r.error = repr(exc)
    return r


async def run_size(url: str, n: int, audio: list[AudioFrame], args: argparse.Namespace) -> Any:
    results = await asyncio.gather(
        *(
            one_call(url, audio, args.questions, args.answer_timeout, i, i * args.stagger)
            for i in range(n)
        )
    )
    refused = sum(1 for r in results if r.refused or (r.asked == 0 and r.error))
    lat = [x for r in results for x in r.latencies]
    clears = [x for r in results for x in r.clears]
    served = [r for r in results if r.asked]
    holds = all(r.answered == r.asked and r.asked > 0 for r in results)
    return {
        "calls": n,
        "holds": holds,
        "calls_fully_answered": sum(1 for r in served if r.answered == r.asked),
        "questions_asked": sum(r.asked for r in results),
        "questions_answered": sum(r.answered for r in results),
        "refused": refused,
        "eos_to_first_audio_p50": pct(lat, 0.5),
        "eos_to_first_audio_p95": pct(lat, 0.95),
        "barge_in_clear_p50": pct(clears, 0.5),
        "barge_in_clear_p95": pct(clears, 0.95),
        "barge_ins_cleared": len(clears),
        "errors": sorted({r.error for r in results if r.error})[:3],
    }


async def memory(url: str, pid: int, audio: list[AudioFrame], args: argparse.Namespace) -> Any:
    rss: list[float] = []
    for i in range(args.sequential):
        await one_call(url, audio, 1, args.answer_timeout, i)
        await asyncio.sleep(0.5)
        rss.append(rss_mb(pid))
    at5, last = rss[min(4, len(rss) - 1)], rss[-1]
    calls = max(1, len(rss) - 5)
    return {
        "sequential_calls": len(rss),
        "rss_mb_after_5": round(at5, 1),
        "rss_mb_after_last": round(last, 1),
        "mb_per_call_after_5": round((last - at5) / calls, 2),
        "rss_mb_each_call": [round(x, 1) for x in rss],
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", "--port", str(port)]
    if args.fake:
        cmd.append("--fake")
    if args.max_sessions:
        cmd += ["--max-sessions", str(args.max_sessions)]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # noqa: ASYNC220
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code:
                        break
                await asyncio.sleep(0.2)
            health = (await http.get(f"http://127.0.0.1:{port}/healthz")).json()
        url = f"ws://127.0.0.1:{port}/twilio/media"
        audio = questions(args.fake)
        await one_call(url, audio, 1, args.answer_timeout, 0)  # warm-up
        sizes = []
        for n in (int(x) for x in args.sizes.split(",")):
            t0 = time.perf_counter()
            row = await run_size(url, n, audio, args)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            print(json.dumps(row), flush=True)
            sizes.append(row)
            await asyncio.sleep(1.0)
        mem = await memory(url, proc.pid, audio, args) if args.sequential else {}
        print(json.dumps(mem), flush=True)
        held = [r["calls"] for r in sizes if r["holds"] and not r["refused"]]
        return {
            "bench": "phone",
            "pipeline": "cloud on fakes" if args.fake else "offline",
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "healthz": health,
            "max_concurrent_held": max(held, default=0),
            "sizes": sizes,
            "memory": mem,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fake", action="store_true", help="the cloud pipeline on the fakes")
    p.add_argument("--sizes", default="1,2,3,5,6")
    p.add_argument("--questions", type=int, default=2)
    p.add_argument("--answer-timeout", type=float, default=15.0)
    p.add_argument("--sequential", type=int, default=12, help="calls for the memory figure")
    p.add_argument("--max-sessions", type=int, default=0, help="the server's (0: its default)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", default="")
    p.add_argument("--stagger", type=float, default=0.5, help="seconds between callers")
    args = p.parse_args()
    if args.serve:
        serve_main(args.fake, args.port, args.max_sessions or None)
        return
    result = asyncio.run(bench(args))
    out = Path(args.out or ROOT / "bench" / "results" / f"phone{'-fake' if args.fake else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "sizes"}, indent=2))


if __name__ == "__main__":
    main()
