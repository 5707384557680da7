"""Whisper's encoder window: the 30 s of Whisper itself against the shorter default.

The sets of ``bench/offline_quality.py`` (the human recordings of Debian's
``pocketsphinx-testdata``, and the twelve questions said by Piper's voice and three
espeak-ng voices) are recognised by ``WhisperSTT`` with each window in turn, utterance by
utterance (so both see the same load), through the plugin as the agent uses it
(hotwords included). Per window: WER on each set, the wall time of all the calls, and
the utterances not heard word for word.

    apt-get install pocketsphinx-testdata
    .venv/bin/python bench/whisper_window.py [--windows 30,15]

Prints the JSON it writes to ``bench/results/whisper_window.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import wave
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from offline_quality import QUESTIONS, VOICES, human_set, normalise, wer


async def run(windows: list[float]) -> dict[str, Any]:
    import numpy as np

    from antiphon.agent.pipeline import OFFLINE_HOTWORDS
    from antiphon.audio.frame import AudioFrame
    from antiphon.audio.resample import AudioConverter
    from antiphon.plugins.espeak.engine import Voice, sample_rate, synthesize_pcm
    from antiphon.plugins.piper import PiperVoice, VoiceConfig, packaged_voice
    from antiphon.plugins.whisper import WhisperSTT

    piper = PiperVoice(packaged_voice(), VoiceConfig.from_json(Path(f"{packaged_voice()}.json")))

    def to16k(pcm: bytes, rate: int) -> AudioFrame:
        pad = np.zeros(round(0.3 * rate), "<i2").tobytes()
        conv = AudioConverter(16000, 1)
        frame = AudioFrame(pad + pcm + pad, rate)
        return AudioFrame(conv.process(frame).data + conv.flush().data, 16000)

    def read(path: Path) -> AudioFrame:
        with wave.open(str(path)) as w:
            return AudioFrame(w.readframes(w.getnframes()), w.getframerate())

    items: list[tuple[str, AudioFrame, str]] = [("human", read(p), r) for p, r in human_set()]
    for name, wpm in VOICES[:4]:
        for q, _ in QUESTIONS:
            if name == "piper":
                items.append(("synthetic", to16k(piper.synthesize(q), 22050), q))
            else:
                items.append(
                    ("synthetic", to16k(synthesize_pcm(q, Voice(name, wpm)), sample_rate()), q)
                )
    stts = [WhisperSTT(hotwords=OFFLINE_HOTWORDS, window=w) for w in windows]
    heard: dict[float, dict[str, list[tuple[str, str]]]] = {w: {} for w in windows}
    took = dict.fromkeys(windows, 0.0)
    try:
        for stt in stts:
            await stt.prewarm()
        for kind, audio, ref in items:
            for w, stt in zip(windows, stts, strict=True):
                t = time.perf_counter()
                finals = await stt.recognize(audio)
                took[w] += time.perf_counter() - t
                heard[w].setdefault(kind, []).append((ref, " ".join(f.text for f in finals)))
    finally:
        for stt in stts:
            await stt.aclose()
    return {
        str(w): {
            "wer": {kind: round(wer(pairs), 4) for kind, pairs in heard[w].items()},
            "utterances": {kind: len(pairs) for kind, pairs in heard[w].items()},
            "seconds_in_all": round(took[w], 1),
            "misses": [
                {"said": r, "heard": h}
                for pairs in heard[w].values()
                for r, h in pairs
                if normalise(r) != normalise(h)
            ],
        }
        for w in windows
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", default="30,15", help="encoder windows in seconds")
    args = ap.parse_args()
    results: dict[str, Any] = {"bench": "whisper_window", "load_average_before": os.getloadavg()}
    results["windows"] = asyncio.run(run([float(w) for w in args.windows.split(",")]))
    results["load_average_after"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    path = Path(__file__).parent / "results" / "whisper_window.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
