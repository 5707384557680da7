"""How well the offline agent hears and speaks: the old stack and the new, side by side.

Stacks: ``old`` = PocketSphinx + espeak-ng, ``new`` = Whisper tiny.en + Piper
(``en_US-joe-medium``); both with Silero VAD and the FAQ responder. Each stack runs in a
subprocess of its own, so its memory is its own:

* **STT word error rate and real-time factor** over (a) the human recordings of
  Debian's ``pocketsphinx-testdata`` (``apt-get install pocketsphinx-testdata``: 5
  LibriVox sentences, 5 card names; 16 kHz WAV with transcripts) and (b) synthetic
  questions: :data:`QUESTIONS` spoken by each voice of :data:`VOICES` (Piper's joe, then
  espeak-ng voices). One
  stream per utterance (``STT.recognize``), after a prewarm; RTF = wall time / audio time.
  WER = (substitutions + deletions + insertions) / reference words, summed over the set,
  after normalising both sides: lower case, no punctuation, digits and "mr" spelled out
  as the transcripts spell them.
* **TTS**: each FAQ answer spoken by the stack's TTS: real-time factor, time to first
  audio, and the WER of Whisper hearing it back (an intelligibility check).
* **Voice to voice**: ``antiphon talk`` (real-time feeding, the whole pipeline) on each
  question of each voice: the reply must be the FAQ entry's answer (for the time, the
  clock tool's "It is H:MM AM."), and the turn's ``voice_to_voice`` (end of the user's
  speech, as the VAD placed it, to the first agent audio) is collected: p50, p90, max.
* **Memory**: the process's RSS after imports, after the STT and TTS are loaded, and
  its peak after all the calls (one call at a time, so peak - baseline is what one call
  of this stack needs).

    apt-get install pocketsphinx-testdata
    .venv/bin/python bench/offline_quality.py [--stacks old,new] [--voices 4]

Prints the JSON it writes to ``bench/results/offline_quality.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

from benchkit import pct_or_none

TESTDATA = Path("/usr/share/pocketsphinx/test/data")
QUESTIONS: list[tuple[str, str]] = [
    # (what the user says, the FAQ question whose answer is right; "clock": the tool)
    ("What can you do?", "What can you do?"),
    ("What time is it?", "clock"),
    ("What is antiphon?", "What is antiphon?"),
    ("Hello there.", "Hello"),
    ("How are you?", "How are you?"),
    ("Which providers does antiphon support?", "Which providers does antiphon support?"),
    ("Are you a language model?", "Are you a language model?"),
    ("How do I interrupt you?", "How do I interrupt you?"),
    ("Who made you?", "Who made you?"),
    ("What is the weather?", "What is the weather?"),
    ("Thank you.", "Thank you"),
    ("Goodbye.", "Goodbye"),
]
#: Voices that say the synthetic questions: the Piper voice (``en_US-joe-medium``, the
#: speaker's rate) and espeak-ng voices (name, words per minute).
VOICES: list[tuple[str, int]] = [
    ("piper", 0),
    ("en-us", 160),
    ("en-us+f3", 150),
    ("en", 170),
    ("en-us+m3", 175),
    ("en-us+f2", 165),
]
CLOCK = re.compile(r"^It is \d{1,2}:\d{2} [AP]M\.$")
_ONES = [
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    *("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen"),
    *("seventeen", "eighteen", "nineteen"),
]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _number(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    return " ".join(_ONES[int(d)] for d in str(n))


def normalise(text: str) -> list[str]:
    text = re.sub(r"<[^>]+>|\([^)]*\)$", " ", text.lower())
    text = re.sub(r"\bmr\b\.?", "mister", text)
    text = re.sub(r"\d+", lambda m: f" {_number(int(m.group()))} ", text)
    text = re.sub(r"[-–—]", " ", text)
    return re.findall(r"[a-z']+", text.replace("'", "'"))


def edits(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)]


def wer(pairs: list[tuple[str, str]]) -> float:
    words = sum(len(normalise(r)) for r, _ in pairs)
    return sum(edits(normalise(r), normalise(h)) for r, h in pairs) / max(1, words)


def human_set() -> list[tuple[Path, str]]:
    """(wav, transcript) of the recordings of pocketsphinx-testdata."""
    found: list[tuple[Path, str]] = []
    for folder, name in (("librivox", "transcription"), ("cards", "cards.transcription")):
        for line in (TESTDATA / folder / name).read_text().splitlines():
            m = re.match(r"<s>(.*)</s>\s*\(([^)]+)\)", line.strip())
            if m:
                found.append((TESTDATA / folder / f"{m.group(2)}.wav", m.group(1).strip()))
    return found


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ----------------------------------------------------------------- one stack (subprocess)


async def run_stack(stack: str, n_voices: int) -> dict[str, Any]:
    import numpy as np

    from antiphon.agent.pipeline import OFFLINE_HOTWORDS, PipelineSpec
    from antiphon.agent.talk import talk
    from antiphon.audio.frame import AudioFrame
    from antiphon.audio.resample import AudioConverter
    from antiphon.plugins.espeak import EspeakTTS
    from antiphon.plugins.espeak.engine import Voice, sample_rate, synthesize_pcm
    from antiphon.plugins.offline import load_faq
    from antiphon.plugins.piper import PiperTTS, PiperVoice, VoiceConfig, packaged_voice
    from antiphon.plugins.pocketsphinx import PocketsphinxSTT
    from antiphon.plugins.whisper import WhisperSTT
    from antiphon.services.stt import STT
    from antiphon.services.tts import TTS

    def to16k(frame: AudioFrame) -> AudioFrame:
        conv = AudioConverter(16000, 1)
        return AudioFrame(conv.process(frame).data + conv.flush().data, 16000)

    def read(path: Path) -> AudioFrame:
        with wave.open(str(path)) as w:
            return AudioFrame(w.readframes(w.getnframes()), w.getframerate(), w.getnchannels())

    piper = PiperVoice(packaged_voice(), VoiceConfig.from_json(Path(f"{packaged_voice()}.json")))

    def say(text: str, voice: tuple[str, int]) -> AudioFrame:
        if voice[0] == "piper":
            rate, pcm = piper.config.sample_rate, piper.synthesize(text)
        else:
            rate, pcm = sample_rate(), synthesize_pcm(text, Voice(*voice))
        pad = np.zeros(round(0.3 * rate), "<i2").tobytes()
        return to16k(AudioFrame(pad + pcm + pad, rate))

    baseline = rss_mb()
    stt: STT = PocketsphinxSTT() if stack == "old" else WhisperSTT(hotwords=OFFLINE_HOTWORDS)
    tts: TTS = EspeakTTS() if stack == "old" else PiperTTS()
    t = time.perf_counter()
    await stt.prewarm()
    await tts.prewarm()
    load_s = time.perf_counter() - t
    loaded = rss_mb()
    out: dict[str, Any] = {
        "stt": "pocketsphinx" if stack == "old" else "whisper",
        "tts": "espeak" if stack == "old" else "piper",
        "load_seconds": round(load_s, 2),
    }

    async def transcribe(audio: AudioFrame) -> tuple[str, float]:
        t = time.perf_counter()
        finals = await stt.recognize(audio)
        return " ".join(f.text for f in finals), time.perf_counter() - t

    # STT on human speech and on synthetic questions
    voices = VOICES[:n_voices]
    for name, items in (
        ("human", [(read(p), ref) for p, ref in human_set()]),
        ("synthetic", [(say(q, v), q) for v in voices for q, _ in QUESTIONS]),
    ):
        pairs, compute, audio_s, misses = [], 0.0, 0.0, []
        for audio, ref in items:
            hyp, took = await transcribe(audio)
            pairs.append((ref, hyp))
            compute += took
            audio_s += audio.duration
            if normalise(ref) != normalise(hyp):
                misses.append({"said": ref, "heard": hyp})
        out[f"stt_{name}"] = {
            "utterances": len(items),
            "words": sum(len(normalise(r)) for r, _ in pairs),
            "wer": round(wer(pairs), 4),
            "rtf": round(compute / audio_s, 3),
            "exact": len(items) - len(misses),
            "misses": misses[:20],
        }

    # TTS: speed, first audio, and what Whisper hears of it
    answers = [e.answer for e in load_faq()]
    spoken: list[tuple[str, AudioFrame]] = []
    first_audio, compute, audio_s = [], 0.0, 0.0
    for text in answers:
        t = time.perf_counter()
        s = tts.synthesize(text)
        chunks, first = [], None
        async for f in s:
            first = first if first is not None else time.perf_counter() - t
            chunks.append(f.data)
        compute += time.perf_counter() - t
        frame = AudioFrame(b"".join(chunks), s.sample_rate)
        audio_s += frame.duration
        first_audio.append(first or 0.0)
        spoken.append((text, frame))
    await tts.aclose()  # the STT stays open: the agents' STT share its loaded model

    # voice to voice through `antiphon talk`, one call at a time
    spec = PipelineSpec(stt=out["stt"], tts=out["tts"])
    faq = load_faq()
    v2v: list[float] = []
    calls, wrong = 0, []
    for voice in voices:
        for question, entry in QUESTIONS:
            calls += 1
            result = await talk(say(question, voice), io.BytesIO(), spec=spec, timeout=30)
            expected = (
                CLOCK
                if entry == "clock"
                else re.compile(
                    re.escape(next(e.answer for e in faq if e.question.startswith(entry))) + "$"
                )
            )
            ok = len(result.replies) == 1 and bool(expected.match(result.replies[0]))
            if not ok:
                wrong.append(
                    {
                        "voice": voice[0],
                        "said": question,
                        "heard": result.heard,
                        "replied": result.replies,
                    }
                )
            v2v.extend(t.voice_to_voice for t in result.turns if t.voice_to_voice is not None)
    out["voice_to_voice"] = {
        "calls": calls,
        "answered_right": calls - len(wrong),
        "wrong": wrong,
        "p50_ms": round(1000 * (pct_or_none(v2v, 0.5) or 0)),
        "p90_ms": round(1000 * (pct_or_none(v2v, 0.9) or 0)),
        "max_ms": round(1000 * max(v2v, default=0)),
    }
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    await stt.aclose()

    # intelligibility of the TTS, heard by Whisper (the judge, loaded last)
    async with WhisperSTT() as judge:
        pairs = [
            (text, " ".join(f.text for f in await judge.recognize(to16k(a)))) for text, a in spoken
        ]
    out["tts"] = {
        "engine": out.pop("tts"),
        "rtf": round(compute / audio_s, 3),
        "first_audio_p50_ms": round(1000 * (pct_or_none(first_audio, 0.5) or 0)),
        "first_audio_max_ms": round(1000 * max(first_audio)),
        "whisper_wer_on_its_audio": round(wer(pairs), 4),
    }
    out["memory_mb"] = {
        "after_imports": round(baseline),
        "stt_and_tts_loaded": round(loaded),
        "peak_over_calls": round(peak),
        "one_call_needs": round(peak - baseline),
    }
    return out


# ----------------------------------------------------------------- driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stacks", default="old,new", help="old, new or old,new")
    ap.add_argument("--voices", type=int, default=4, help=f"voices (1-{len(VOICES)})")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # run one stack here (subprocess)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(run_stack(args.one, args.voices))))
        return
    if not TESTDATA.is_dir():
        sys.exit("the human recordings are missing: apt-get install pocketsphinx-testdata")
    results: dict[str, Any] = {
        "bench": "offline_quality",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "load_average_before": os.getloadavg(),
        "stacks": {},
    }
    for stack in args.stacks.split(","):
        done = subprocess.run(
            [sys.executable, __file__, "--one", stack, "--voices", str(args.voices)],
            check=True,
            capture_output=True,
            text=True,
        )
        results["stacks"][stack] = json.loads(done.stdout.strip().splitlines()[-1])
    results["load_average_after"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    path = Path(__file__).parent / "results" / "offline_quality.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
