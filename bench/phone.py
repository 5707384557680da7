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
(barge-in), ``--barge-ins`` times in a row (each talk-over is a question whose answer
the next one talks over), so the p95 is over enough barge-ins to be a percentile.
Measured per size N (N calls at once), ``--rounds`` times:

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
        [--barge-ins 5] [--rounds 3] [--variants base,listen+nice=5]

With ``--variants``, each variant (settings of the server: ``--help``) runs on a server
of its own, all started side by side, and their rounds alternate (A B B A ...), so the
machine's outside load falls on each alike; each row carries the 1-minute load average
at its start and end. Each server runs in a session of its own, as a deployed service.

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


VARIANT_HELP = """a variant is '+'-joined settings of the server ('base': none of them):
listen (the session acts on VAD results as the worker delivers them), nice=N (inference
N steps lower: aio.worker.INFERENCE_NICE), pools-only (with nice: only the native pools,
not the engines' own threads), engine-nice=N (the engines' own worker
threads, which hold the GIL, N steps lower too: the earlier attempt), min-speech=S
(Silero's minimum speech duration before a speech start, seconds)"""


def apply_variant(variant: str) -> None:
    """In the server's process: set what ``variant`` names (see ``VARIANT_HELP``)."""
    from antiphon.aio import worker
    from antiphon.plugins.silero import vad as silero
    from antiphon.services.vad import VAD, VADOptions

    os.environ[worker.NICE_ENV] = "0"  # serve() reads it; a variant names its own
    listen = False
    for part in filter(None, variant.split("+")):
        key, _, value = part.partition("=")
        if key == "base":
            continue
        if key == "listen":
            listen = True
        elif key == "nice":
            os.environ[worker.NICE_ENV] = str(int(value))
        elif key == "engine-nice":
            steps = int(value)
            main = worker.ThreadWorker._main

            def lowered(self: Any, main: Any = main, steps: int = steps) -> None:
                worker.lower_thread_priority(steps)
                main(self)

            worker.ThreadWorker._main = lowered  # type: ignore[method-assign]
        elif key == "pools-only":  # the engines' own threads keep the default priority
            from antiphon.plugins.whisper import stt as whisper

            init_worker = worker.ThreadWorker.__init__

            def normal(self: Any, *a: Any, init: Any = init_worker, **kw: Any) -> None:
                kw.pop("inference", None)
                init(self, *a, **kw)

            setattr(worker.ThreadWorker, "__init__", normal)  # noqa: B010
            setattr(whisper, "lower_thread_priority", lambda steps: False)  # noqa: B010
        elif key == "min-speech":
            options = VADOptions(min_speech_duration=float(value))
            init = silero.SileroVAD.__init__

            def shorter(
                self: Any, opts: Any = None, *, init: Any = init, dflt: Any = options, **kw: Any
            ) -> None:
                init(self, opts or dflt, **kw)

            setattr(silero.SileroVAD, "__init__", shorter)  # noqa: B010
        else:
            raise SystemExit(f"unknown variant setting {part!r}; {VARIANT_HELP}")
    if not listen:
        VAD.on_decided = lambda self, listener: None  # type: ignore[method-assign]


def serve_main(fake: bool, port: int, max_sessions: int | None, variant: str = "") -> None:
    """The child process: the server on ``port``, with ``variant``'s settings."""
    if variant:
        apply_variant(variant)
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
    uncleared: int = 0  # barge-ins over audio that got no clear within 5 s


async def one_call(
    url: str,
    audio: list[AudioFrame],
    n_questions: int,
    timeout: float,
    index: int,
    delay: float = 0.0,
    barge_ins: int = 1,
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
                barge = q == n_questions and barge_ins > 0
                marks = turns()
                r.asked += 1
                utt = await call.say(audio[(index + q) % len(audio)])
                if not await wait(lambda u=utt: got.first_media_after(u.end), timeout):
                    continue
                first = got.first_media_after(utt.end)
                assert first is not None
                r.answered += 1
                r.latencies.append(first - utt.end)
                # each barge-in talks over the answer to the one before (a question too)
                for b in range(barge_ins if barge else 0):
                    await asyncio.sleep(0.4)
                    talk = audio[(index + q + 1 + b) % len(audio)]
                    over = await call.say(talk)
                    onset = over.onset + lead(talk)  # the caller's voice begins
                    if await wait(lambda o=onset: got.first_clear_after(o), 5.0):
                        clear = got.first_clear_after(onset)
                        assert clear is not None
                        r.clears.append(clear - onset)
                    else:
                        r.uncleared += 1
                    r.asked += 1
                    if not await wait(lambda o=over: got.first_media_after(o.end + 0.1), timeout):
                        break
                    r.answered += 1
                if not barge:
                    await wait(lambda m=marks: turns() > m, timeout)
                await asyncio.sleep(0.3)
            await call.hang_up()
    except InvalidStatus as exc:
        r.refused, r.error = True, repr(exc)
    except Exception as exc:
        r.error = repr(exc)
    return r


async def run_size(url: str, n: int, audio: list[AudioFrame], args: argparse.Namespace) -> Any:
    load_before = os.getloadavg()
    results = await asyncio.gather(
        *(
            one_call(
                url,
                audio,
                args.questions,
                args.answer_timeout,
                i,
                i * args.stagger,
                args.barge_ins,
            )
            for i in range(n)
        )
    )
    load_after = os.getloadavg()
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
        "barge_ins_uncleared": sum(r.uncleared for r in results),
        "errors": sorted({r.error for r in results if r.error})[:3],
        "load_average_1min": [round(load_before[0], 2), round(load_after[0], 2)],
        "_latencies": lat,
        "_clears": clears,
    }


def merge(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One size's rounds of one variant, as one row (percentiles over every sample)."""
    lat = [x for r in rows for x in r["_latencies"]]
    clears = [x for r in rows for x in r["_clears"]]
    loads = [x for r in rows for x in r["load_average_1min"]]
    return {
        "calls": rows[0]["calls"],
        "rounds": len(rows),
        "holds": all(r["holds"] for r in rows),
        "questions_asked": sum(r["questions_asked"] for r in rows),
        "questions_answered": sum(r["questions_answered"] for r in rows),
        "refused": sum(r["refused"] for r in rows),
        "eos_to_first_audio_p50": pct(lat, 0.5),
        "eos_to_first_audio_p95": pct(lat, 0.95),
        "barge_in_clear_p50": pct(clears, 0.5),
        "barge_in_clear_p95": pct(clears, 0.95),
        "barge_in_clear_max": pct(clears, 1.0),
        "barge_ins_cleared": len(clears),
        "barge_ins_uncleared": sum(r["barge_ins_uncleared"] for r in rows),
        "load_average_1min_min_max": [min(loads), max(loads)],
        "errors": sorted({e for r in rows for e in r["errors"]})[:3],
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


async def start_server(
    args: argparse.Namespace, variant: str
) -> tuple[subprocess.Popen[bytes], str]:
    """A server child process with ``variant``'s settings; its Twilio URL once it is up."""
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", "--port", str(port), "--variant", variant]
    if args.fake:
        cmd.append("--fake")
    if args.max_sessions:
        cmd += ["--max-sessions", str(args.max_sessions)]
    # a session of its own, as a deployed service has (its own autogroup or cgroup):
    # Linux weighs nice values within a group, so the server's lowered inference then
    # yields to the server's own loop and VAD, not to the callers simulated here
    proc = subprocess.Popen(  # noqa: ASYNC220
        cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True
    )
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code:
                    break
            await asyncio.sleep(0.2)
    return proc, f"ws://127.0.0.1:{port}/twilio/media"


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every size, ``--rounds`` times; with several variants, their rounds alternate
    (A B B A ...), each variant on a server of its own, so outside load falls on all."""
    variants = args.variants.split(",") if args.variants else [""]
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for v in variants:
            servers[v] = await start_server(args, v)
        audio = questions(args.fake)
        for v in variants:
            await one_call(servers[v][1], audio, 1, args.answer_timeout, 0)  # warm-up
        rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for n in (int(x) for x in args.sizes.split(",")):
            for r in range(args.rounds):
                order = variants if r % 2 == 0 else variants[::-1]
                for v in order:
                    t0 = time.perf_counter()
                    row = await run_size(servers[v][1], n, audio, args)
                    row["seconds"] = round(time.perf_counter() - t0, 1)
                    shown = {k: x for k, x in row.items() if not k.startswith("_")}
                    print(json.dumps({"variant": v or "default", "round": r, **shown}), flush=True)
                    rows.setdefault((v, n), []).append(row)
                    await asyncio.sleep(1.0)
        sizes = [{"variant": v or "default", **merge(rs)} for (v, _), rs in rows.items()]
        first = variants[0]
        mem = {}
        if args.sequential:
            mem = await memory(servers[first][1], servers[first][0].pid, audio, args)
        print(json.dumps(mem), flush=True)
        held = [r["calls"] for r in sizes if r["holds"] and not r["refused"]]
        return {
            "bench": "phone",
            "pipeline": "cloud on fakes" if args.fake else "offline",
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "command": " ".join(sys.argv),
            "barge_ins_per_call": args.barge_ins,
            "max_concurrent_held": max(held, default=0),
            "sizes": sizes,
            "memory": mem,
        }
    finally:
        for proc, _ in servers.values():
            stop_server(proc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fake", action="store_true", help="the cloud pipeline on the fakes")
    p.add_argument("--sizes", default="1,2,3,5,6")
    p.add_argument("--questions", type=int, default=2)
    p.add_argument("--answer-timeout", type=float, default=15.0)
    p.add_argument("--sequential", type=int, default=12, help="calls for the memory figure")
    p.add_argument("--max-sessions", type=int, default=0, help="the server's (0: its default)")
    p.add_argument("--barge-ins", type=int, default=1, help="barge-ins per call (chained)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of each size (and variant)")
    p.add_argument("--variants", default="", help="comma-separated; " + VARIANT_HELP)
    p.add_argument("--variant", default="", help=argparse.SUPPRESS)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", default="")
    p.add_argument("--stagger", type=float, default=0.5, help="seconds between callers")
    args = p.parse_args()
    if args.serve:
        serve_main(args.fake, args.port, args.max_sessions or None, args.variant)
        return
    result = asyncio.run(bench(args))
    out = Path(args.out or ROOT / "bench" / "results" / f"phone{'-fake' if args.fake else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "sizes"}, indent=2))


if __name__ == "__main__":
    main()
