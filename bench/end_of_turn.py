"""End of turn: Smart Turn v3.2 plus silence against silence alone, on labelled utterances.

The set (each utterance twice: *complete*, and *incomplete* — cut mid-sentence):

* **human**: the recordings of Debian's ``pocketsphinx-testdata`` (LibriVox read speech,
  spoken card names, commands; 16 kHz), when the package is installed;
* **synthetic**: :data:`SENTENCES` spoken by the packaged Piper voice (``en_US-joe-medium``).

Words are aligned to the audio with PocketSphinx (forced alignment to the known text).
The complete version runs from the first word's start to the last word's end; the
incomplete one ends after a word that leaves the sentence unfinished — the function word
("to", "of", "a", "my", "than"...) nearest the middle of the sentence (30-80 % of its
words), else the middle word — i.e. where a speaker could pause mid-sentence.

Each endpointer sees what a session would give it: the speech, then silence (the
recording's own quietest stretch, repeated). What it decides is turned into time:

* **silence S**: the turn ends S seconds after the speech stops.
* **model + silence** (:class:`antiphon.services.turn.EndOfTurn`): after ``probe``
  seconds of silence the model is asked (on its worker thread; its measured wall time
  counts); if it says complete the turn ends then; if not, after ``max_silence``; if it
  did not answer within ``model_timeout``, after ``fallback_silence``.

Measured: **premature cut-ins** — an incomplete utterance whose speaker pauses P seconds
(0.5, 1.0, 1.5) before going on, and the endpointer ended the turn before that; **missed
ends** — a complete utterance the model called incomplete (it then waits ``max_silence``);
**latency** — end of speech to end of turn on complete utterances (p50, p95), and the
latency *added* against silence 0.5 s (antiphon's default ``min_silence_duration``).

    .venv/bin/python bench/end_of_turn.py [--threads 1]

Needs ``antiphon[turn]`` (docs/turns.md). Prints the JSON it writes to
``bench/results/end_of_turn.json``, then a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.plugins.smart_turn import MODEL_FILE, PINS, SmartTurnDetector
from antiphon.services.turn import EndOfTurn, EndOfTurnOptions
from benchkit import pct_linear

RATE = 16_000
FRAME = RATE // 50  # 20 ms
TESTDATA = Path("/usr/share/pocketsphinx/test/data")
#: Pauses (seconds) an incomplete utterance's speaker takes before going on.
PAUSES = (0.5, 1.0, 1.5)
SILENCES = (0.5, 0.8, 1.2)
BASELINE = 0.5
#: (probe, threshold) of the model + silence endpointers.
MODEL_CONFIGS = ((0.2, 0.5), (0.2, 0.7), (0.3, 0.5))
MAX_SILENCE = 2.0

SENTENCES = [
    "I would like to book a table for two people tonight.",
    "What time does the library open tomorrow morning?",
    "Can you tell me how to get to the train station?",
    "My order number is four five six seven and it has not arrived yet.",
    "Please cancel my appointment on Friday afternoon.",
    "How much does it cost to send a parcel to Canada?",
    "I need to change the address on my account.",
    "Could you remind me to call my sister at six?",
    "The heating in my apartment stopped working last night.",
    "Is there a pharmacy open near the city center on Sunday?",
    "I want to transfer fifty dollars to my savings account.",
    "Which platform does the next train to Boston leave from?",
    "We are looking for a hotel with a pool and free parking.",
    "Can I pay the rest of the bill next month instead?",
    "Tell me the weather forecast for the weekend please.",
    "My daughter has a fever and a sore throat since yesterday.",
    "I forgot my password and cannot log in to the website.",
    "Do you have this jacket in a larger size?",
    "Set an alarm for seven thirty tomorrow morning.",
    "What is the difference between the basic and the premium plan?",
]


_FUNCTION_WORDS = (
    "a an the to of for in on at from with about and or but than my your his her our their "
    "is are was were be been have has had would could can will do does did i we he she it "
    "this that these those some no"
)
#: Words after which a sentence cannot end: a cut there is surely unfinished.
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())
#: The transcripts of the recordings without a transcription file of their own.
RAW_TRANSCRIPTS = {
    "goforward": "go forward ten meters",
    "something": "go somewhere and do something",
}


@dataclass(frozen=True, slots=True)
class Utterance:
    name: str
    source: str  # human | synthetic
    speech: npt.NDArray[np.int16]  # complete: from the first word's start to the last's end
    cut: npt.NDArray[np.int16]  # incomplete: the same, ending after a word mid-sentence
    silence: npt.NDArray[np.int16]  # the recording's quietest 0.2 s
    text: str
    cut_text: str


def _rms(x: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    n = len(x) // FRAME
    frames = x[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    out: npt.NDArray[np.float64] = np.sqrt((frames**2).mean(axis=1))
    return out


class Aligner:
    """Word times by PocketSphinx forced alignment (its packaged US English model)."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder  # type: ignore[import-untyped]

        self._decoder = Decoder(samprate=RATE, loglevel="FATAL")

    def words(self, audio: npt.NDArray[np.int16], text: str) -> list[tuple[str, float, float]]:
        d = self._decoder
        d.set_align_text(text)
        d.start_utt()
        d.process_raw(audio.tobytes(), full_utt=True)
        d.end_utt()
        out = []
        for seg in d.seg():
            word = seg.word.split("(")[0]
            if word.startswith(("<", "[")):
                continue
            out.append((word, seg.start_frame / 100, (seg.end_frame + 1) / 100))
        return out


def utterance(
    aligner: Aligner, name: str, source: str, audio: npt.NDArray[np.int16], text: str
) -> Utterance:
    words = aligner.words(audio, text)
    if len(words) != len(text.split()):
        raise RuntimeError(f"{name}: aligned {len(words)} of {len(text.split())} words")
    n = len(words)
    middle = (n - 1) / 2
    inner = [k for k in range(n - 1) if 0.3 <= (k + 1) / n <= 0.8] or [max(0, n // 2 - 1)]
    function = [k for k in inner if words[k][0] in FUNCTION_WORDS]
    k = min(function or inner, key=lambda i: abs(i - middle))
    start, end, cut_end = words[0][1], words[-1][2], words[k][2]
    first, last, cut = round(start * RATE), round(end * RATE), round(cut_end * RATE)
    rms = _rms(audio)
    quiet = int(np.argmin(np.convolve(rms, np.ones(10), "valid")))  # quietest 0.2 s
    silence = audio[quiet * FRAME : (quiet + 10) * FRAME]
    cut_text = " ".join(w for w, _, _ in words[: k + 1])
    return Utterance(name, source, audio[first:last], audio[first:cut], silence, text, cut_text)


def _transcripts(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "(" in line:
            words, _, key = line.rpartition("(")
            text = " ".join(w for w in words.split() if not w.startswith("<"))
            out[key.strip(" )")] = text
    return out


def human_set(aligner: Aligner) -> list[Utterance]:
    out: list[Utterance] = []
    for folder, listing in (("librivox", "transcription"), ("cards", "cards.transcription")):
        if not (TESTDATA / folder / listing).is_file():
            continue
        texts = _transcripts(TESTDATA / folder / listing)
        for path in sorted((TESTDATA / folder).glob("*.wav")):
            with wave.open(str(path)) as w:
                assert w.getframerate() == RATE and w.getnchannels() == 1
                audio = np.frombuffer(w.readframes(w.getnframes()), "<i2")
            name = f"{folder}/{path.stem}"
            out.append(utterance(aligner, name, "human", audio, texts[path.stem]))
    for stem, text in RAW_TRANSCRIPTS.items():
        raw = TESTDATA / f"{stem}.raw"
        if raw.is_file():  # 16 kHz mono int16 without a header
            out.append(utterance(aligner, stem, "human", np.fromfile(raw, "<i2"), text))
    return out


def synthetic_set(aligner: Aligner) -> list[Utterance]:
    from antiphon.plugins.piper import PiperVoice, VoiceConfig, packaged_voice

    voice = PiperVoice(packaged_voice(), VoiceConfig.from_json(Path(f"{packaged_voice()}.json")))
    out = []
    try:
        for i, text in enumerate(SENTENCES):
            conv = AudioConverter(RATE)
            frame = AudioFrame(voice.synthesize(text), voice.config.sample_rate)
            pcm = conv.process(frame).data + conv.flush().data
            pad = np.zeros(RATE // 2, np.int16)
            audio = np.concatenate([pad, np.frombuffer(pcm, "<i2"), pad])
            words = re.sub(r"[^a-z ]", "", text.lower())
            out.append(utterance(aligner, f"piper/{i:02d}", "synthetic", audio, words))
    finally:
        voice.close()
    return out


def with_silence(
    speech: npt.NDArray[np.int16], silence: npt.NDArray[np.int16], s: float
) -> AudioFrame:
    n = round(s * RATE)
    tail = np.resize(silence, n).astype(np.int16)
    return AudioFrame.from_array(np.concatenate([speech, tail]), RATE)


def pct(values: list[float], q: float) -> float:
    return round(pct_linear(values, q / 100), 3)


async def measure(items: list[Utterance], threads: int) -> dict[str, Any]:
    detector = SmartTurnDetector(threads=threads)
    await detector.prewarm()
    # one EndOfTurn decision per (utterance, version, probe); its verdict and time
    verdicts: dict[tuple[str, str, float, float], tuple[float, str, float | None]] = {}
    inference: list[float] = []
    try:
        for u in items:
            for version, speech in (("complete", u.speech), ("incomplete", u.cut)):
                for probe in sorted({p for p, _ in MODEL_CONFIGS}):
                    for _, threshold in (c for c in MODEL_CONFIGS if c[0] == probe):
                        opts = EndOfTurnOptions(threshold=threshold, max_silence=MAX_SILENCE)
                        audio = with_silence(speech, u.silence, probe)
                        start = time.perf_counter()
                        v = await EndOfTurn(detector, opts).decide(audio, silent_for=probe)
                        took = time.perf_counter() - start
                        inference.append(took)
                        await detector.idle()  # a late answer is not the next one's wait
                        decided = probe + took + v.hold  # seconds after the speech stopped
                        verdicts[(u.name, version, probe, threshold)] = (
                            decided,
                            v.source,
                            v.probability,
                        )
    finally:
        await detector.aclose()

    def row(label: str, decide: Any, subset: list[Utterance]) -> dict[str, Any]:
        complete = [decide(u, "complete")[0] for u in subset]
        incomplete = [decide(u, "incomplete")[0] for u in subset]
        missed = sum(1 for u in subset if decide(u, "complete")[1] == "wait")
        cut_ins = {
            f"pause_{p}": round(sum(1 for d in incomplete if d < p) / len(subset), 3)
            for p in PAUSES
        }
        added = [c - BASELINE for c in complete]
        return {
            "endpointer": label,
            "utterances": len(subset),
            "premature_cut_in_rate": cut_ins,
            "missed_end_rate": round(missed / len(subset), 3),
            "latency_p50": pct(complete, 50),
            "latency_p95": pct(complete, 95),
            "added_vs_silence_0.5_p50": pct(added, 50),
            "added_vs_silence_0.5_p95": pct(added, 95),
        }

    def silence_only(s: float) -> Any:
        return lambda _u, _v: (s, "silence")

    def model(probe: float, threshold: float) -> Any:
        def decide(u: Utterance, version: str) -> tuple[float, str]:
            decided, source, probability = verdicts[(u.name, version, probe, threshold)]
            ended = source == "model" and probability is not None and probability >= threshold
            return decided, "end" if ended else ("wait" if source == "model" else source)

        return decide

    report: dict[str, Any] = {}
    for name, subset in (
        ("human", [u for u in items if u.source == "human"]),
        ("synthetic", [u for u in items if u.source == "synthetic"]),
        ("all", items),
    ):
        if not subset:
            continue
        rows = [row(f"silence {s} s", silence_only(s), subset) for s in SILENCES]
        rows += [
            row(f"Smart Turn + silence (probe {p} s, threshold {t})", model(p, t), subset)
            for p, t in MODEL_CONFIGS
        ]
        report[name] = rows
    report["inference_seconds"] = {
        "p50": pct(inference, 50),
        "p95": pct(inference, 95),
        "max": round(max(inference), 3),
        "calls": len(inference),
        "fallbacks": sum(1 for v in verdicts.values() if v[1] != "model"),
    }
    probe, threshold = MODEL_CONFIGS[0]

    def probability(u: Utterance, version: str) -> float | None:
        p = verdicts[(u.name, version, probe, threshold)][2]
        return None if p is None else round(p, 3)

    report["utterances"] = [
        {
            "name": u.name,
            "text": u.text,
            "cut_after": u.cut_text,
            "p_complete": probability(u, "complete"),
            "p_complete_of_cut": probability(u, "incomplete"),
        }
        for u in items
    ]
    return report


def table(report: dict[str, Any]) -> str:
    head = (
        "| set | endpointer | n | cut-ins at pause 0.5 / 1.0 / 1.5 s | missed ends "
        "| latency p50 / p95 (s) | added vs silence 0.5 s p50 / p95 (s) |\n"
        "|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for name in ("human", "synthetic", "all"):
        for r in report.get(name, []):
            cut = " / ".join(f"{100 * v:.0f} %" for v in r["premature_cut_in_rate"].values())
            lines.append(
                f"| {name} | {r['endpointer']} | {r['utterances']} | {cut} "
                f"| {100 * r['missed_end_rate']:.0f} % "
                f"| {r['latency_p50']:.2f} / {r['latency_p95']:.2f} "
                f"| {r['added_vs_silence_0.5_p50']:+.2f} / {r['added_vs_silence_0.5_p95']:+.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    args = parser.parse_args()
    aligner = Aligner()
    items = human_set(aligner) + synthetic_set(aligner)
    body = asyncio.run(measure(items, args.threads))
    report = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "model": {"file": MODEL_FILE, "sha256": PINS[MODEL_FILE], "threads": args.threads},
        "max_silence": MAX_SILENCE,
        "human_recordings": TESTDATA.is_dir(),
        **body,
    }
    text = json.dumps(report, indent=2)
    out = Path(__file__).parent / "results" / "end_of_turn.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")
    print(text)
    print(table(report))


if __name__ == "__main__":
    main()
