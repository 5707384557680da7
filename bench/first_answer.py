"""Where the offline agent's voice-to-voice time goes, stage by stage, for one turn.

The default offline pipeline (Silero VAD, Whisper tiny.en, the FAQ responder, Piper)
answers :data:`QUESTIONS` (each said by the Piper voice and by espeak-ng's ``en-us``),
one conversation at a time, fed in real time as ``antiphon talk`` feeds it. Every time
below is measured from the end of the user's speech (``speech_end``: where the VAD put
the start of the silence, the origin of ``TurnMetrics.voice_to_voice``):

- ``vad_end``: the VAD decided the speech ended (its ``min_silence_duration`` + lag);
- ``stt_start`` / ``stt_decode``: when Whisper's (early) transcription of the utterance
  started, and how long the model call took;
- ``stt_final``: the final transcript reached the session;
- ``turn_end``: the end of the turn was decided (the LLM is asked, or was already);
- ``llm_ttft``: the LLM's first token, after its request;
- ``tts_sent``: the first sentence went to synthesis;
- ``tts_synth``: the model time of Piper's first run (phonemes + ONNX), and its text;
- ``voice_to_voice``: the first agent audio was queued for the transport.

Each is given as p50 and p90 over the turns, with every turn's own figures in the JSON.
The Whisper and Piper model calls are timed by wrapping them here (the wrapper also sets
the variant's Whisper window; the plugins are otherwise run as they are).

The variants (:data:`VARIANTS`: how Piper and Whisper ran before, and now) answer each
question in turn, so both see the same load on a shared machine.

    .venv/bin/python bench/first_answer.py [--voices piper,en-us] [--variants before,after] \\
        [--out NAME]

Prints the JSON it writes to ``bench/results/first_answer[-NAME].json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

from benchkit import pct_or_none

QUESTIONS = [
    "What can you do?",
    "What time is it?",
    "What is antiphon?",
    "Hello there.",
    "How are you?",
    "Who made you?",
    "What is the weather?",
    "Are you a language model?",
    "How do I interrupt you?",
    "Goodbye.",
]
#: The stages, in order (seconds from the end of the user's speech, or durations).
KEYS = (
    "vad_end",
    "stt_start",
    "stt_decode",
    "stt_final",
    "turn_end",
    "llm_ttft",
    "tts_sent",
    "tts_synth",
    "tts_ttfa",
    "voice_to_voice",
)


#: (Piper's LEAD, Whisper's window) of each variant; None: the plugin's default. ``before``
#: is how the plugins ran before: one Piper run per sentence from the first word, and
#: Whisper's 30 s window; ``after`` is their defaults (clauses first, a 15 s window).
VARIANTS: dict[str, tuple[float | None, float | None]] = {
    "before": (0.0, 30.0),
    "clauses": (None, 30.0),
    "after": (None, None),
}


async def run(voices: list[str], variants: list[str]) -> dict[str, Any]:
    import numpy as np

    from antiphon.agent.events import (
        AgentSpeaking,
        StateChanged,
        TurnCompleted,
        UserTranscribed,
        UserTurnEnded,
    )
    from antiphon.agent.pipeline import PipelineSpec, make_vad, open_services
    from antiphon.agent.session import AgentSession
    from antiphon.aio.clock import MonotonicClock
    from antiphon.audio.frame import AudioFrame
    from antiphon.audio.resample import AudioConverter
    from antiphon.plugins.espeak.engine import Voice, sample_rate, synthesize_pcm
    from antiphon.plugins.piper import PiperVoice, VoiceConfig, packaged_voice
    from antiphon.plugins.piper import tts as piper_tts
    from antiphon.plugins.piper.voice import PiperVoice as PV
    from antiphon.plugins.whisper import stt as whisper_stt
    from antiphon.plugins.whisper.stt import WhisperRecognizer

    piper = PiperVoice(packaged_voice(), VoiceConfig.from_json(Path(f"{packaged_voice()}.json")))

    def say(text: str, voice: str) -> AudioFrame:
        if voice == "piper":
            rate, pcm = piper.config.sample_rate, piper.synthesize(text)
        else:
            rate, pcm = sample_rate(), synthesize_pcm(text, Voice(voice, 160))
        pad = np.zeros(round(0.3 * rate), "<i2").tobytes()
        conv = AudioConverter(16000, 1)
        frame = AudioFrame(pad + pcm + pad, rate)
        return AudioFrame(conv.process(frame).data + conv.flush().data, 16000)

    # timings of the model calls (loop time: MonotonicClock is the loop's monotonic clock)
    calls: list[tuple[str, float, float, str]] = []
    transcribe = WhisperRecognizer._transcribe
    synthesize = PV.synthesize

    def timed_transcribe(self: Any) -> Any:
        self._window = whisper_window[0]
        t0 = time.monotonic()
        try:
            return transcribe(self)
        finally:
            calls.append(("stt", t0, time.monotonic(), ""))

    def timed_synthesize(self: Any, text: str, *args: Any, **kwargs: Any) -> bytes:
        t0 = time.monotonic()
        try:
            return synthesize(self, text, *args, **kwargs)
        finally:
            calls.append(("tts", t0, time.monotonic(), text))

    WhisperRecognizer._transcribe = timed_transcribe  # type: ignore[method-assign]
    PV.synthesize = timed_synthesize  # type: ignore[method-assign]

    clock = MonotonicClock()
    spec = PipelineSpec()
    turns: list[dict[str, Any]] = []
    default_lead = piper_tts.LEAD
    whisper_window = [whisper_stt.WINDOW]
    t_load = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        services = await open_services(spec, stack)
        load_s = time.monotonic() - t_load
        for voice in voices:
            for question, variant in [(q, v) for q in QUESTIONS for v in variants]:
                lead, window = VARIANTS[variant]
                piper_tts.LEAD = default_lead if lead is None else lead
                whisper_window[0] = whisper_stt.WINDOW if window is None else window
                audio = say(question, voice)
                calls.clear()
                marks: dict[str, float] = {}
                heard: list[str] = []
                metrics: list[Any] = []
                session = AgentSession(
                    vad=make_vad(spec.vad, services.vad_worker),
                    stt=services.stt,
                    llm=services.llm,
                    tts=services.tts,
                    tools=services.tools,
                    clock=clock,
                )
                await session.start()
                events = session.events()

                async def play(session: AgentSession = session) -> None:
                    async for _ in session.output:
                        pass

                async def listen(
                    events: Any = events,
                    marks: dict[str, float] = marks,
                    heard: list[str] = heard,
                    metrics: list[Any] = metrics,
                ) -> None:
                    async for ev in events:
                        now = clock.now()
                        if isinstance(ev, StateChanged) and ev.reason == "speech ended":
                            marks.setdefault("vad_end", now)
                        elif isinstance(ev, UserTranscribed) and ev.is_final:
                            marks.setdefault("stt_final", now)
                            heard.append(ev.text)
                        elif isinstance(ev, UserTurnEnded):
                            marks.setdefault("turn_end", now)
                        elif isinstance(ev, AgentSpeaking):
                            marks.setdefault("tts_sent", now)
                        elif isinstance(ev, TurnCompleted):
                            metrics.append(ev.metrics)

                async def feed(session: AgentSession = session, audio: AudioFrame = audio) -> None:
                    frames = [*audio.split(0.02), *AudioFrame.silence(3.0, 16000).split(0.02)]
                    start, elapsed = clock.now(), 0.0
                    for frame in frames:
                        session.push_audio(frame)
                        elapsed += frame.duration
                        await clock.sleep_until(start + elapsed)
                    session.end_input()

                async with asyncio.TaskGroup() as tg:
                    tg.create_task(play())
                    tg.create_task(listen())
                    try:
                        await feed()
                        await session.wait_idle()
                    finally:
                        await session.aclose(drain=False)
                m = next((m for m in metrics if m.voice_to_voice is not None), None)
                row: dict[str, Any] = {
                    "variant": variant,
                    "voice": voice,
                    "said": question,
                    "heard": heard,
                }
                if m is None:
                    row["error"] = "no answer"
                    turns.append(row)
                    continue
                # speech_end in loop time: the first audio's time less voice_to_voice
                stt = [c for c in calls if c[0] == "stt"]
                tts = [c for c in calls if c[0] == "tts"]
                row["replied"] = m.agent_text
                row["voice_to_voice"] = m.voice_to_voice
                first_audio_at = marks.get("tts_sent", 0.0) + (m.tts_ttfa or 0.0)
                end = first_audio_at - m.voice_to_voice
                for k, v in marks.items():
                    row[k] = v - end
                if stt:
                    last = stt[-1]
                    row["stt_start"] = last[1] - end
                    row["stt_decode"] = last[2] - last[1]
                    row["stt_calls"] = len(stt)
                row["llm_ttft"] = m.llm_ttft
                row["tts_ttfa"] = m.tts_ttfa
                if tts:
                    row["tts_synth"] = tts[0][2] - tts[0][1]
                    row["tts_first_text"] = tts[0][3]
                turns.append(row)
                print(
                    f"{variant:9} {voice:6} {question:28} v2v {m.voice_to_voice:.2f} s  "
                    + " ".join(
                        f"{k}={row[k]:.2f}"
                        for k in KEYS[:-1]
                        if k != "llm_ttft" and isinstance(row.get(k), float)
                    ),
                    file=sys.stderr,
                )
    summary: dict[str, Any] = {}
    for variant in variants:
        rows = [t for t in turns if t["variant"] == variant]
        summary[variant] = {
            "turns": len(rows),
            "answered": sum("voice_to_voice" in t for t in rows),
        }
        for k in KEYS:
            values = [float(t[k]) for t in rows if isinstance(t.get(k), float)]
            summary[variant][k] = {
                "p50_ms": round(1000 * (pct_or_none(values, 0.5) or 0)),
                "p90_ms": round(1000 * (pct_or_none(values, 0.9) or 0)),
            }
    return {
        "load_seconds": round(load_s, 2),
        "variants": {v: VARIANTS[v] for v in variants},
        "piper_lead_seconds": default_lead,
        "whisper_window_seconds": whisper_stt.WINDOW,
        "stages_from_speech_end": summary,
        "per_turn": turns,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voices", default="piper,en-us", help="piper and/or espeak-ng voices")
    ap.add_argument(
        "--variants",
        default="before,after",
        help=f"what to compare, turn by turn: {', '.join(VARIANTS)}",
    )
    ap.add_argument("--out", default="", help="suffix of the result file name")
    args = ap.parse_args()
    results: dict[str, Any] = {
        "bench": "first_answer",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "load_average_before": os.getloadavg(),
    }
    results.update(asyncio.run(run(args.voices.split(","), args.variants.split(","))))
    results["load_average_after"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    name = "first_answer" + (f"-{re.sub(r'[^a-z0-9_-]', '', args.out)}" if args.out else "")
    path = Path(__file__).parent / "results" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "per_turn"}, indent=2))


if __name__ == "__main__":
    main()
