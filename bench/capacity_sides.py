"""How each side of ``bench/capacity.py`` starts its server, and what its callers say.

How it is built: a side is a server command plus, for the sides whose callers speak, the
questions and the length of one turn's cycle (:class:`Speech`):

- ``antiphon``: ``antiphon serve`` with :func:`antiphon.testing.agent.doubles_agent` (the
  in-process doubles; callers from ``bench/server_load.py`` on ``/ws/agent``);
- ``phone``: the same server and doubles, the callers phone calls on ``/twilio/media``
  (Twilio Media Streams: JSON and base64 μ-law 8 kHz each 20 ms, marks echoed as played);
- ``pipecat``: ``bench/pipecat_agent.py``, the same doubles on Pipecat;
- ``offline``: ``antiphon serve`` with the default offline agent (``PipelineAgent()``:
  Silero VAD, Whisper tiny.en, the offline LLM, Piper), its greeting left out (a call's
  turns are its questions). The callers say :data:`OFFLINE_QUESTIONS` in the packaged
  Piper voice, resampled to 16 kHz: Whisper must hear the words;
- ``cloud``: ``antiphon serve`` with the cloud pipeline (WebRTC VAD, Deepgram STT, an
  OpenAI-compatible chat LLM, Deepgram TTS) whose plugins point at the loopback fakes of
  :mod:`antiphon.testing`, served by a process of their own (``python
  bench/capacity_sides.py --fakes``: it prints their URLs and runs until SIGTERM), so the
  server's CPU is the server's. The callers say :data:`CLOUD_PHRASES` as tone speech,
  which the fake STT names; the fake LLM echoes it ("You said: ...").

:func:`started` runs a side's processes for one size and stops them (SIGTERM, then kill)
whatever happens. :class:`Probe` reads, for the servers that have them, the loop-lag
gauge of ``/metrics`` and the CPU of the event loop's thread against the other threads
(the inference workers) from ``/proc``, so the offline side can say which stage fills
first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchkit import free_port, wait_listening
from server_load import REPLY, SILENCE

__all__ = [
    "CLOUD_PHRASES",
    "DOUBLES_AGENT",
    "OFFLINE_QUESTIONS",
    "SIDES",
    "SPEECH_SIDES",
    "VOICED_ONLY",
    "Probe",
    "Speech",
    "doubles_agent_file",
    "prepare",
    "started",
]

HERE = Path(__file__).resolve().parent
SIDES = ("antiphon", "phone", "pipecat", "offline", "cloud")
SPEECH_SIDES = ("offline", "cloud")
#: Questions the offline FAQ responder answers briefly (its replies: 1-3 s of speech).
OFFLINE_QUESTIONS = ("Hello there.", "Thank you.", "Goodbye.")
#: Phrases whose tone speech WebRTC VAD hears as voice (some tones it does not)
CLOUD_PHRASES = ("what can you do", "who are you", "tell me more")
#: Seconds of one turn: the question, the VAD's silence, the pipeline's delay, the reply
#: and a margin (the offline replies are up to 3.3 s and Whisper takes ~2 s on a busy
#: machine; the cloud echoes are about 1.5 s).
CYCLES = {"offline": 10.0, "cloud": 5.0}

DOUBLES_AGENT = f"""\
from antiphon.testing.agent import doubles_agent

agent = doubles_agent(
    [f"question {{i}}" for i in range(100000)],
    [],
    min_silence={SILENCE},
    default_reply={REPLY!r},
    record=False,  # the doubles keep no history: the server must not grow turn by turn
    {{voiced}}
)
"""
VOICED_ONLY = "voiced_only=True,  # the STT hears words in speech only, as Pipecat's double"


def doubles_agent_file(*, stt_hears_silence: bool = False) -> str:
    """The doubles' agent file (see :func:`prepare` for ``stt_hears_silence``)."""
    return DOUBLES_AGENT.replace("{voiced}", "" if stt_hears_silence else VOICED_ONLY)


OFFLINE_AGENT = """\
from antiphon.server.agents import PipelineAgent

agent = PipelineAgent(greeting="")  # the default offline pipeline, as `antiphon serve` builds
"""
CLOUD_AGENT = """\
import json

from antiphon.agent.pipeline import Endpoint, PipelineSpec
from antiphon.server.agents import PipelineAgent

AT = json.loads({at!r})


class Remote:
    \"\"\"The fakes of another process (bench/capacity_sides.py --fakes), already running.\"\"\"

    async def stt(self, provider, stack, vocabulary):
        return Endpoint(*AT["stt"])

    async def llm(self, stack, provider="openai"):
        return Endpoint(*AT["llm"])

    async def tts(self, provider, stack):
        return Endpoint(*AT["tts"])


agent = PipelineAgent(
    PipelineSpec(vad="webrtc", stt="deepgram", llm="openai:gpt-4o-mini", tts="deepgram",
                 fake=True, fake_vocabulary={phrases!r}),
    greeting="",
    fakes=Remote(),
)
"""


@dataclass(frozen=True, slots=True)
class Speech:
    """What a speaking side's callers say: raw 16 kHz PCM files, one turn per ``cycle``."""

    questions: list[Path]
    cycle: float


def _offline_questions(tmp: Path) -> list[Path]:
    from antiphon.audio.frame import AudioFrame
    from antiphon.audio.resample import AudioConverter
    from antiphon.plugins.piper import PiperVoice, VoiceConfig, packaged_voice

    voice = PiperVoice(packaged_voice(), VoiceConfig.from_json(Path(f"{packaged_voice()}.json")))
    paths = []
    try:
        for i, text in enumerate(OFFLINE_QUESTIONS):
            conv = AudioConverter(16000, 1)
            pcm = conv.process(AudioFrame(voice.synthesize(text), voice.config.sample_rate, 1))
            lead = b"\0" * 6400  # 0.2 s before the voice
            paths.append(tmp / f"offline-{i}.pcm")
            paths[-1].write_bytes(lead + bytes(pcm.data) + bytes(conv.flush().data))
    finally:
        voice.close()
    return paths


def prepare(side: str, tmp: Path, *, stt_hears_silence: bool = False) -> tuple[Path, Speech | None]:
    """The side's agent file (written in ``tmp``) and, for a speaking side, its questions.

    ``stt_hears_silence``: the doubles' scripted STT hears the next line in a caller's
    silence too (every frame counts: the doubles before ``voiced_only``, for an A/B run
    against such a version)."""
    agent = tmp / f"{side}_agent.py"
    if side == "offline":
        agent.write_text(OFFLINE_AGENT)
        return agent, Speech(_offline_questions(tmp), CYCLES[side])
    if side == "cloud":
        from antiphon.testing.synth import tone_for_text

        paths = []
        for i, phrase in enumerate(CLOUD_PHRASES):
            paths.append(tmp / f"cloud-{i}.pcm")
            paths[-1].write_bytes(b"\0" * 6400 + tone_for_text(phrase, 16000))
        return agent, Speech(paths, CYCLES[side])  # the agent file names the fakes' ports
    agent.write_text(doubles_agent_file(stt_hears_silence=stt_hears_silence))
    return agent, None


def server_command(side: str, agent_file: Path, port: int, n: int) -> list[str]:
    if side == "pipecat":
        return [
            sys.executable, str(HERE / "pipecat_agent.py"), "--port", str(port),
            "--min-silence", str(SILENCE), "--reply", REPLY,
        ]  # fmt: skip
    return [
        str(Path(sys.executable).with_name("antiphon")), "serve", str(agent_file),
        "--port", str(port), "--max-sessions", str(n + 10),
    ]  # fmt: skip


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@dataclass
class Running:
    """One size's processes: the server, its port, and helpers (the cloud fakes)."""

    server: asyncio.subprocess.Process
    port: int
    helpers: list[asyncio.subprocess.Process] = field(default_factory=list)


@contextlib.asynccontextmanager
async def started(side: str, n: int, agent_file: Path, log_path: Path) -> AsyncIterator[Running]:
    """The side's server (and the cloud fakes) for ``n`` calls, listening; stopped after."""
    port = free_port()
    helpers: list[asyncio.subprocess.Process] = []
    with log_path.open("wb") as log:
        try:
            if side == "cloud":
                fakes = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--fakes", stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                )  # fmt: skip
                helpers.append(fakes)
                assert fakes.stdout is not None
                at = (await asyncio.wait_for(fakes.stdout.readline(), 60)).decode()
                if not at:
                    raise RuntimeError(f"the fakes process did not start: see {log_path}")
                text = CLOUD_AGENT.format(at=at.strip(), phrases=CLOUD_PHRASES)
                agent_file.write_text(text)  # noqa: ASYNC240 - once, before the server
            server = await asyncio.create_subprocess_exec(
                *server_command(side, agent_file, port, n), stdout=log, stderr=log
            )
            try:
                await wait_listening(port, server, 120.0)
                yield Running(server, port, helpers)
            finally:
                await _stop(server)
        finally:
            for h in helpers:
                await _stop(h)


def thread_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid``'s main thread (the event loop) and of all its other threads."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            s = (int(fields[11]) + int(fields[12])) / tick
            if task.name == str(pid):
                main += s
            else:
                other += s
    return main, other


class Probe:
    """Loop lag (``/metrics``) and CPU by thread of a server, sampled while calls run."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid, self.port = pid, port
        self.lags: list[float] = []
        self.start = thread_cpu(pid)
        self._http = httpx.AsyncClient(timeout=2.0)

    async def sample(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            text = (await self._http.get(f"http://127.0.0.1:{self.port}/metrics")).text
            for line in text.splitlines():
                if line.startswith("antiphon_event_loop_lag_seconds "):
                    self.lags.append(float(line.split()[1]))

    async def finish(self, wall: float) -> dict[str, float | None]:
        await self._http.aclose()
        main, other = thread_cpu(self.pid)
        return {
            "loop_thread_cores": (main - self.start[0]) / wall,
            "other_threads_cores": (other - self.start[1]) / wall,
            "loop_lag_max_ms": 1000 * max(self.lags) if self.lags else None,
        }


async def fakes_main() -> None:
    """The cloud fakes in this process: prints their endpoints, runs until SIGTERM."""
    from antiphon.testing.registry import LoopbackFakes

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fakes = LoopbackFakes()
    async with contextlib.AsyncExitStack() as stack:
        stt = await fakes.stt("deepgram", stack, CLOUD_PHRASES)
        llm = await fakes.llm(stack)
        tts = await fakes.tts("deepgram", stack)
        at = {k: [e.url, e.api_key] for k, e in (("stt", stt), ("llm", llm), ("tts", tts))}
        print(json.dumps(at), flush=True)
        await stop.wait()


if __name__ == "__main__":
    if sys.argv[1:] == ["--fakes"]:
        asyncio.run(fakes_main())
    else:
        raise SystemExit("usage: capacity_sides.py --fakes (bench/capacity.py starts it)")
