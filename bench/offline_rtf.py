"""Real-time factors of the offline components on this machine.

Speech is made once with espeak-ng (the sentences below, 0.5 s of silence around each),
then each component runs over it in the same process, on one core:

* VAD (Silero, WebRTC): the whole audio at 16 kHz in 20 ms frames through ``VAD.process``
  (resampling included), plus the cost of one model window;
* PocketSphinx: a ``PocketsphinxSTT`` stream over the 16 kHz audio in 20 ms frames, one
  flush per utterance (the engine thread included: loop, worker, conversion), after a
  prewarm so that model loading is excluded; load time is reported on its own, with the
  words it recognised; ``engine_rtf`` is the bare decoder on the same chunks;
* espeak-ng: ``synthesize_pcm`` of each sentence (compute time per second of audio).

RTF = compute seconds / audio seconds (lower is faster; 0.01 is 100x faster than real
time); wall time (``perf_counter``), best of ``--repeats``. ``process_time`` would count
the engine threads too, but not the event loop's waits.

    .venv/bin/python bench/offline_rtf.py [--repeats 3]

Prints the JSON it writes to ``bench/results/offline_rtf.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.plugins.espeak.engine import Voice, sample_rate, synthesize_pcm
from antiphon.plugins.pocketsphinx import PocketsphinxSTT
from antiphon.plugins.pocketsphinx.stt import PocketsphinxRecognizer
from antiphon.plugins.silero import SileroVAD
from antiphon.plugins.webrtc import WebRtcVAD
from antiphon.services.vad import VAD

SENTENCES = [
    "What can you do?",
    "Hello there, how are you today?",
    "I would like a cup of coffee please.",
    "Turn on the lights in the kitchen.",
    "What is the weather like tomorrow morning?",
]
VOICE = Voice("en-us+f3", 150)  # the voice PocketSphinx hears best (docs/offline.md)


def best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def to16k(frame: AudioFrame) -> AudioFrame:
    conv = AudioConverter(16000, 1)
    return AudioFrame(conv.process(frame).data + conv.flush().data, 16000)


def speech() -> AudioFrame:
    rate = sample_rate()
    pad = bytes(2 * rate // 2)
    pcm = b"".join(pad + synthesize_pcm(s, VOICE) for s in SENTENCES) + pad
    return to16k(AudioFrame(pcm, rate))


def bench_vad(make: Callable[[], VAD], audio: AudioFrame, repeats: int) -> dict[str, Any]:
    frames = audio.split(0.02)
    events: list[object] = []

    def run() -> None:
        vad = make()
        events.clear()
        for f in frames:
            events.extend(vad.process(f))
        events.extend(vad.flush())

    seconds = best(run, repeats)
    vad = make()
    window = np.zeros(vad.window, dtype=np.int16)
    n = 500
    per_window = best(lambda: [vad._probability(window) for _ in range(n)], repeats) / n
    return {
        "rtf": round(seconds / audio.duration, 5),
        "x_realtime": round(audio.duration / seconds, 1),
        "window_ms": round(1000 * vad.window_duration, 1),
        "us_per_window": round(1e6 * per_window, 1),
        "segments": sum(1 for e in events if type(e).__name__ == "SpeechEnd"),
    }


async def bench_pocketsphinx(audio: AudioFrame, repeats: int) -> dict[str, Any]:
    loaded = time.perf_counter()
    async with PocketsphinxSTT(interim_interval=0) as stt:
        await stt.prewarm()
        load = time.perf_counter() - loaded
        parts = []
        start = 0
        one = 16000 // 2
        samples = audio.as_array()
        # the utterances, cut in the middle of their silences (as a VAD would flush them)
        bounds = [0]
        for s in SENTENCES:
            n = len(synthesize_pcm(s, VOICE)) // 2 * 16000 // sample_rate()
            start += one + n
            bounds.append(start + one // 2)
        bounds[-1] = samples.size
        for a, b in itertools.pairwise(bounds):
            parts.append(AudioFrame.from_array(samples[a:b], 16000))
        texts: list[str] = []
        times = []
        for _ in range(repeats):
            texts.clear()
            t = time.perf_counter()
            async with stt.stream() as st:
                for part in parts:
                    for f in part.split(0.02):
                        st.push_audio(f)
                    st.flush()
                st.end_input()
                texts.extend(tr.text for tr in await st.finals())
            times.append(time.perf_counter() - t)
    seconds = min(times)
    engine = PocketsphinxRecognizer()
    chunks = [f.data for f in audio.split(0.02)]

    def raw() -> None:
        engine.start()
        for c in chunks:
            engine.process(c)
        engine.finish()

    raw_seconds = best(raw, repeats)
    engine.close()
    return {
        "rtf": round(seconds / audio.duration, 4),
        "engine_rtf": round(raw_seconds / audio.duration, 4),
        "x_realtime": round(audio.duration / seconds, 1),
        "load_seconds": round(load, 2),
        "heard": texts,
        "said": SENTENCES,
    }


def bench_espeak(repeats: int) -> dict[str, Any]:
    audio = 0.0
    seconds = 0.0
    for s in SENTENCES:
        seconds += best(lambda s=s: synthesize_pcm(s, VOICE), repeats)  # type: ignore[misc]
        audio += len(synthesize_pcm(s, VOICE)) / 2 / sample_rate()
    return {
        "rtf": round(seconds / audio, 4),
        "x_realtime": round(audio / seconds, 1),
        "audio_seconds": round(audio, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    audio = speech()
    report = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor()},
        "audio_seconds": round(audio.duration, 2),
        "vad_silero": bench_vad(SileroVAD, audio, args.repeats),
        "vad_webrtc": bench_vad(WebRtcVAD, audio, args.repeats),
        "stt_pocketsphinx": asyncio.run(bench_pocketsphinx(audio, args.repeats)),
        "tts_espeak": bench_espeak(args.repeats),
    }
    text = json.dumps(report, indent=2)
    out = Path(__file__).parent / "results" / "offline_rtf.json"
    out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
