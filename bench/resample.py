"""Streaming resampler throughput, accuracy and per-frame latency, both engines.

Resamples 60 s of audio (48 kHz -> 16 kHz and 16 kHz -> 24 kHz) in 20 ms chunks with
``StreamResampler`` (its default engine, polyphase at these ratios, and ``engine="soxr"``)
and with an FFT resample of each chunk on its own (numpy, the method of
``scipy.signal.resample``), in the same process. Speed is given as a realtime factor:
seconds of audio per second of CPU (``time.process_time``) and of wall time
(``time.perf_counter``), best of ``--repeats``. Accuracy is measured against the exact
answer: the test signal is a sum of sines, so the ideal output is the same sines sampled
at the output rate; errors are reported in int16 LSB, separately for output samples next
to a chunk edge (where the per-chunk FFT wraps around) and for the rest.

Then, for the ratios of phone and speech calls, the cost of one 20 ms frame through
``StreamResampler.process`` (µs of CPU, ``time.process_time`` in a timeit loop, best of
``--repeats``) on each engine, the samples out per 20 ms frame in (the first
``PATTERN_FRAMES``), and when the first audio comes out (ms of input fed).

    .venv/bin/python bench/resample.py [--seconds 60] [--repeats 3]

Prints the JSON it writes to ``bench/results/resample.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import ENGINES, StreamResampler

CHUNK = 0.02
PHONE_RATIOS = (
    (24000, 8000),
    (16000, 8000),
    (48000, 8000),
    (8000, 16000),
    (8000, 24000),
    (16000, 24000),
    (24000, 16000),
    (48000, 16000),
    (16000, 48000),
    (44100, 16000),  # not a small ratio: soxr on both
)
PATTERN_FRAMES = 12
FRAME_LOOPS = 2000  # process() calls per timing
TONES = ((300.0, 0.25), (1234.5, 0.2), (3456.0, 0.15))  # Hz, amplitude: below every Nyquist
EDGE = 2  # output samples either side of a chunk boundary counted as "at the edge"
SKIP = 0.05  # seconds ignored at the start and end of the stream (filter start-up)

F64 = npt.NDArray[np.float64]
Converter = Callable[[AudioFrame], AudioFrame]


def tones(rate: int, n: int) -> F64:
    """The test signal at ``rate``, in int16 units (not rounded)."""
    t = np.arange(n) / rate
    x = np.zeros(n)
    for freq, amp in TONES:
        x += amp * 32767 * np.sin(2 * np.pi * freq * t)
    return x


def fft_resample(x: F64, num: int) -> F64:
    """Resample ``x`` to ``num`` samples by zero-padding/cutting its spectrum.

    What ``scipy.signal.resample`` does for real input: exact for a periodic signal,
    wrong at the edges of anything else (the chunk is treated as one period).
    """
    n = len(x)
    spec = np.fft.rfft(x)
    out = np.zeros(num // 2 + 1, dtype=np.complex128)
    m = min(n, num)
    keep = m // 2 + 1
    out[:keep] = spec[:keep]
    if m % 2 == 0:
        if num < n:
            out[m // 2] *= 2.0
        elif num > n:
            out[m // 2] *= 0.5
    return np.fft.irfft(out, num) * (num / n)


def naive_converter(in_rate: int, out_rate: int) -> Converter:
    """A per-chunk FFT resampler with the same frame-in, frame-out shape as ours."""

    def convert(frame: AudioFrame) -> AudioFrame:
        num = round(frame.samples_per_channel * out_rate / in_rate)
        y = fft_resample(frame.as_array().astype(np.float64), num)
        pcm = np.clip(np.rint(y), -32768, 32767).astype("<i2")
        return AudioFrame(pcm.tobytes(), out_rate, 1, frame.generation)

    return convert


def native_int16_converter(in_rate: int, out_rate: int) -> Converter:
    """soxr's own int16 stream (dithered, not reproducible): the cost floor of soxr."""
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")

    def convert(frame: AudioFrame) -> AudioFrame:
        y = stream.resample_chunk(frame.as_array())
        return AudioFrame(y.tobytes(), out_rate, 1, frame.generation)

    return convert


def run(
    make: Callable[[], tuple[Converter, Callable[[], bytes]]],
    frames: list[AudioFrame],
    repeats: int,
) -> tuple[bytes, float, float]:
    """Best CPU and wall seconds of ``repeats`` runs over ``frames``, and the output."""
    best_cpu = best_wall = float("inf")
    out = b""
    for _ in range(repeats):
        convert, finish = make()
        pieces: list[bytes] = []
        cpu, wall = time.process_time(), time.perf_counter()
        for f in frames:
            pieces.append(convert(f).data)
        pieces.append(finish())
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        best_cpu, best_wall = min(best_cpu, cpu), min(best_wall, wall)
        out = b"".join(pieces)
    return out, best_cpu, best_wall


def errors(out: bytes, out_rate: int, in_chunk: int, in_rate: int) -> dict[str, float]:
    """Error against the ideal output, in LSB, at chunk edges and elsewhere."""
    y = np.frombuffer(out, dtype="<i2").astype(np.float64)
    ref = tones(out_rate, len(y))
    err = np.abs(y - ref)
    out_chunk = in_chunk * out_rate // in_rate
    idx = np.arange(len(y))
    pos = idx % out_chunk
    near_edge = (pos < EDGE) | (pos >= out_chunk - EDGE)
    inside = (idx >= SKIP * out_rate) & (idx < len(y) - SKIP * out_rate)
    signal_rms = float(np.sqrt(np.mean(ref[inside] ** 2)))
    noise_rms = float(np.sqrt(np.mean(err[inside] ** 2)))
    return {
        "max_abs_error_lsb_at_chunk_edges": round(float(err[inside & near_edge].max()), 3),
        "max_abs_error_lsb_elsewhere": round(float(err[inside & ~near_edge].max()), 3),
        "rms_error_lsb": round(noise_rms, 3),
        "snr_db": round(20 * np.log10(signal_rms / max(noise_rms, 1e-12)), 1),
    }


def stats(seconds: float, cpu: float, wall: float) -> dict[str, float]:
    return {
        "cpu_s": round(cpu, 4),
        "wall_s": round(wall, 4),
        "realtime_factor_cpu": round(seconds / cpu, 1),
        "realtime_factor_wall": round(seconds / wall, 1),
    }


def bench_case(in_rate: int, out_rate: int, seconds: float, repeats: int) -> dict[str, Any]:
    n = round(seconds * in_rate)
    x = np.rint(tones(in_rate, n)).astype(np.int16)
    whole = AudioFrame.from_array(x, in_rate)
    frames = whole.split(CHUNK)
    in_chunk = frames[0].samples_per_channel

    def ours() -> tuple[Converter, Callable[[], bytes]]:
        r = StreamResampler(in_rate, out_rate)
        return r.process, lambda: r.flush().data

    def ours_soxr() -> tuple[Converter, Callable[[], bytes]]:
        r = StreamResampler(in_rate, out_rate, engine="soxr")
        return r.process, lambda: r.flush().data

    def naive() -> tuple[Converter, Callable[[], bytes]]:
        return naive_converter(in_rate, out_rate), lambda: b""

    def native() -> tuple[Converter, Callable[[], bytes]]:
        return native_int16_converter(in_rate, out_rate), lambda: b""

    result: dict[str, Any] = {"in_rate": in_rate, "out_rate": out_rate, "chunks": len(frames)}
    for name, make in (
        ("stream_resampler", ours),
        ("stream_resampler_soxr", ours_soxr),
        ("naive_fft_per_chunk", naive),
        ("soxr_native_int16_no_flush", native),
    ):
        out, cpu, wall = run(make, frames, repeats)
        entry: dict[str, Any] = stats(seconds, cpu, wall)
        if name != "soxr_native_int16_no_flush":
            entry["output_samples"] = len(out) // 2
            entry["error"] = errors(out, out_rate, in_chunk, in_rate)
        result[name] = entry
    ours_r, naive_r = result["stream_resampler"], result["naive_fft_per_chunk"]
    result["speedup_vs_naive_cpu"] = round(naive_r["cpu_s"] / ours_r["cpu_s"], 2)
    result["speedup_vs_naive_wall"] = round(naive_r["wall_s"] / ours_r["wall_s"], 2)
    return result


def frame_case(in_rate: int, out_rate: int, repeats: int) -> dict[str, Any]:
    """µs of CPU per 20 ms frame and the samples-out pattern, on each engine."""
    x = np.rint(tones(in_rate, round(in_rate * CHUNK * PATTERN_FRAMES))).astype(np.int16)
    frames = AudioFrame.from_array(x, in_rate).split(CHUNK)
    result: dict[str, Any] = {"in_rate": in_rate, "out_rate": out_rate}
    for engine in ENGINES:
        r = StreamResampler(in_rate, out_rate, engine=engine)
        pattern = [r.process(f).samples_per_channel for f in frames]
        first = next((i for i, n in enumerate(pattern) if n), None)
        us = min(
            timeit.repeat(
                functools.partial(r.process, frames[0]),
                number=FRAME_LOOPS,
                repeat=repeats,
                timer=time.process_time,
            )
        )
        result[engine] = {
            "polyphase": r.polyphase,
            "us_per_frame": round(us / FRAME_LOOPS * 1e6, 2),
            "samples_out_per_frame": pattern,
            "first_audio_after_ms": None if first is None else round((first + 1) * 1000 * CHUNK),
            "delay_ms": None if r.delay is None else round(r.delay * 1000, 2),
        }
    result["cpu_ratio_auto_to_soxr"] = round(
        result["auto"]["us_per_frame"] / result["soxr"]["us_per_frame"], 2
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cases = [
        bench_case(a, b, args.seconds, args.repeats) for a, b in ((48000, 16000), (16000, 24000))
    ]
    per_frame = [frame_case(a, b, max(args.repeats, 5)) for a, b in PHONE_RATIOS]
    report = {
        "benchmark": "resample",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "numpy": np.__version__,
        "soxr": soxr.__version__,
        "audio_seconds": args.seconds,
        "chunk_seconds": CHUNK,
        "repeats": args.repeats,
        "cases": cases,
        "per_frame": per_frame,
    }
    text = json.dumps(report, indent=2)
    out = Path(__file__).parent / "results" / "resample.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
