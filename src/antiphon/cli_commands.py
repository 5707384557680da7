"""The commands of ``antiphon`` on files and engines: talk, say, realtime and fake-server.

Split from :mod:`antiphon.cli`, which keeps the argument parser and ``main`` and imports
this module for its commands; the commands that run the agent live (serve, console, call)
are in :mod:`antiphon.cli_live`, which shares this module's :class:`Unavailable`, progress
line and loopback fakes. Each command imports its engines (and, for ``--fake`` and
``fake-server`` only, the loopback fakes of :mod:`antiphon.testing`) inside the function
that runs it, never at import time, so ``antiphon --help`` stays fast and production
imports load no fake. A command raises :class:`AntiphonError` for bad input (exit 2) and
:class:`Unavailable` when something it needs is missing (exit 1); ``main`` prints either
as one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from antiphon.audio.frame import AudioFrame
from antiphon.errors import AntiphonError
from antiphon.plugins.registry import TTSSettings, tts_provider
from antiphon.services.tts import TTS, TTSDeadlines

__all__ = ["OFFLINE_STTS", "OFFLINE_TTSS", "Unavailable"]

#: The offline engines, defaults first (as antiphon.agent.pipeline names them; it is
#: imported lazily, so the names are repeated here).
OFFLINE_STTS = ("whisper", "pocketsphinx")
OFFLINE_TTSS = ("piper", "espeak")

if TYPE_CHECKING:
    from antiphon.agent.pipeline import FakeBackends
    from antiphon.services.realtime import RealtimeModel


class Unavailable(AntiphonError):
    """Something the command needs is not there (a port, a device, a service): exit 1."""


def _progress(message: str) -> None:
    """A status line for a person at a terminal; nothing when stderr is piped or captured."""
    if sys.stderr.isatty():
        print(f"antiphon: {message}", file=sys.stderr, flush=True)


def _make_tts(args: argparse.Namespace, base_url: str | None, api_key: str | None) -> TTS:
    if args.tts in OFFLINE_TTSS and (args.fake or base_url or api_key or args.encoding):
        raise AntiphonError(
            f"{args.tts} is an offline voice: --fake, --base-url, --api-key and --encoding "
            "are for the cloud voices (e.g. --tts deepgram)"
        )
    if args.tts == "piper":
        from antiphon.plugins.piper import PiperTTS

        return PiperTTS(voice=args.voice, sample_rate=args.sample_rate)
    if args.tts == "espeak":
        from antiphon.plugins.espeak import EspeakTTS

        if args.voice:
            raise AntiphonError("--voice is for piper and the cloud voices, not espeak")
        return EspeakTTS(sample_rate=args.sample_rate)
    settings = TTSSettings(
        api_key=api_key,
        base_url=base_url,
        voice=args.voice,
        encoding=args.encoding,
        sample_rate=args.sample_rate,
        deadlines=TTSDeadlines(),
    )
    return tts_provider(args.tts).make(settings)


@contextlib.asynccontextmanager
async def _fake_for(name: str) -> AsyncIterator[tuple[str, str]]:
    """Start the provider's fake server in this process: yields (base_url, api_key)."""
    async with contextlib.AsyncExitStack() as stack:
        at = await _fakes().tts(tts_provider(name).name, stack)
        yield at.url, at.api_key


def _fakes() -> FakeBackends:
    """The loopback fakes behind ``--fake`` (test code, loaded only when asked for)."""
    from antiphon.testing.registry import LoopbackFakes

    return LoopbackFakes()


async def _say(args: argparse.Namespace) -> int:
    from antiphon.audio.wav import WavWriter

    text = " ".join(args.text).strip()
    if not text:
        raise AntiphonError('nothing to say: give the text, e.g. antiphon say "Hello there"')
    async with contextlib.AsyncExitStack() as stack:
        base_url, api_key = args.base_url, args.api_key
        if args.fake and args.tts not in OFFLINE_TTSS:
            base_url, api_key = await stack.enter_async_context(_fake_for(args.tts))
        _progress(f"loading the {args.tts} voice...")
        tts = await stack.enter_async_context(_make_tts(args, base_url, api_key))
        _progress("speaking...")
        started = time.perf_counter()
        first: float | None = None
        seconds = 0.0
        with WavWriter(args.out, sample_rate=tts.sample_rate, channels=tts.channels) as wav:
            async with tts.synthesize(text) as stream:
                async for frame in stream:
                    if first is None:
                        first = time.perf_counter() - started
                    wav.write(frame)
                    seconds += frame.duration
        where = (
            "offline"
            if args.tts in OFFLINE_TTSS
            else "fake server"
            if args.fake
            else (base_url or "service")
        )
        ttfb = f"{first * 1000:.0f} ms" if first is not None else "n/a"
        print(
            f"wrote {args.out}: {seconds:.2f} s of audio at {tts.sample_rate} Hz "
            f"from {args.tts} ({where}); first audio after {ttfb}"
        )
    return 0


async def _fake_server(args: argparse.Namespace) -> int:
    from antiphon.testing.faults import FaultPlan
    from antiphon.testing.registry import tts_fake

    provider = tts_provider(args.provider)
    plan = FaultPlan(chunk_interval=0.02 if args.realtime else 0.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    fake = tts_fake(provider.name).make(plan, args.port, args.api_key)
    try:
        await fake.start()
    except OSError as exc:
        raise Unavailable(
            f"cannot listen on port {args.port}: {exc.strerror or exc}; choose another with --port"
        ) from None
    try:
        print(f"fake {provider.name} TTS listening on {fake.url} (key: {args.api_key})", flush=True)
        print(
            f'use: antiphon say "Hi" --tts {provider.name} --base-url {fake.url} '
            f"--api-key {args.api_key} --out hi.wav",
            flush=True,
        )
        await stop.wait()
    finally:
        await fake.aclose()
    return 0


def _make_realtime(
    provider: str, base_url: str | None, api_key: str | None, args: argparse.Namespace
) -> RealtimeModel:
    common: dict[str, Any] = {"instructions": args.instructions}
    if args.voice:
        common["voice"] = args.voice
    if provider == "openai":
        from antiphon.plugins.openai import OpenAIRealtime

        if base_url:
            common["base_url"] = base_url
        return OpenAIRealtime(api_key=api_key, **common)
    if provider == "azure":
        from antiphon.plugins.azure.voicelive import AzureVoiceLive

        return AzureVoiceLive(endpoint=base_url, api_key=api_key, **common)
    if provider == "gemini":
        from antiphon.plugins.gemini import GeminiLive

        if base_url:
            common["base_url"] = base_url
        return GeminiLive(api_key=api_key, **common)
    if provider == "xai":
        from antiphon.plugins.xai import XAIRealtime

        if base_url:
            common["base_url"] = base_url
        return XAIRealtime(api_key=api_key, **common)
    raise AntiphonError(
        f"unknown realtime provider {provider!r}; choose openai, azure, gemini or xai"
    )


def _read_input(path: str) -> AudioFrame:
    """The user's WAV file, or one clear error: missing, unreadable, not 16-bit PCM, empty."""
    from antiphon.audio.wav import read_wav
    from antiphon.errors import ConfigError

    try:
        audio = read_wav(path)
    except ConfigError:
        raise
    except OSError as exc:
        raise AntiphonError(
            f"cannot read {path!r}: {exc.strerror or exc}; give a PCM WAV file"
        ) from None
    if audio.duration <= 0:
        raise AntiphonError(f"{path}: the WAV file holds no audio; give one with speech")
    return audio


async def _realtime(args: argparse.Namespace) -> int:
    """Talk to a speech-to-speech model: a WAV file in, the spoken answer to a WAV file."""
    from antiphon.audio.wav import WavWriter
    from antiphon.services.realtime import (
        AgentAudio,
        AgentTranscriptDone,
        ResponseDone,
        UserTranscript,
    )

    audio = _read_input(args.input)
    async with contextlib.AsyncExitStack() as stack:
        base_url, api_key = args.base_url, args.api_key
        if args.fake and args.provider == "gemini":
            from antiphon.testing.gemini_live import DEFAULT_API_KEY as GEMINI_KEY
            from antiphon.testing.gemini_live import FakeGeminiLiveServer

            gemini_fake = await stack.enter_async_context(FakeGeminiLiveServer())
            base_url, api_key = gemini_fake.url, GEMINI_KEY
        elif args.fake and args.provider == "xai":
            from antiphon.testing.xai_realtime import DEFAULT_API_KEY as XAI_KEY
            from antiphon.testing.xai_realtime import FakeXAIRealtimeServer

            xai_fake = await stack.enter_async_context(FakeXAIRealtimeServer())
            base_url, api_key = xai_fake.url, XAI_KEY
        elif args.fake:
            from antiphon.testing.realtime import DEFAULT_API_KEY, FakeRealtimeServer

            dialect = "ga" if args.provider == "openai" else "beta"
            fake = await stack.enter_async_context(FakeRealtimeServer(dialect=dialect))
            base_url, api_key = fake.url, DEFAULT_API_KEY
        if args.fake:
            print(
                "(--fake: a local stand-in model; it hears loudness, not words: whatever "
                "you say, its transcript is a fixed phrase)"
            )
        model = await stack.enter_async_context(
            _make_realtime(args.provider, base_url, api_key, args)
        )
        session = await stack.enter_async_context(model.session())
        wav = stack.enter_context(
            WavWriter(args.out, sample_rate=model.output_sample_rate, channels=1)
        )
        _progress(f"sending {args.input} in real time ({audio.duration:.1f} s), then waiting...")
        started = time.perf_counter()

        async def feed() -> None:
            # Paced in real time, then a second of silence so turn detection ends the turn.
            frames = [*audio.split(0.02), *AudioFrame.silence(1.0, audio.sample_rate).split(0.02)]
            for frame in frames:
                session.push_audio(frame)
                await asyncio.sleep(0.02)

        feeder = asyncio.create_task(feed())
        first: float | None = None
        try:
            async with asyncio.timeout(args.timeout):
                async for event in session:
                    if isinstance(event, UserTranscript):
                        print(f"user:  {event.text}")
                    elif isinstance(event, AgentTranscriptDone):
                        print(f"agent: {event.text}")
                    elif isinstance(event, AgentAudio):
                        if first is None:
                            first = time.perf_counter() - started
                        wav.write(event.frame)
                    elif isinstance(event, ResponseDone):
                        break
        except TimeoutError:
            raise AntiphonError(
                f"no complete answer within {args.timeout:g} s; is the input speech?"
            ) from None
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
        after = f"{first:.2f} s after the input started" if first is not None else "none"
        print(f"wrote {args.out}: {wav.duration:.2f} s of agent audio (first audio {after})")
    return 0


async def _talk(args: argparse.Namespace) -> int:
    """One conversation: a WAV file of the user in, the agent's spoken answer out."""
    from antiphon.agent.pipeline import PipelineSpec
    from antiphon.agent.talk import talk

    audio = _read_input(args.input)
    spec = PipelineSpec(
        vad=args.vad,
        stt=args.stt,
        llm=args.llm,
        tts=args.tts,
        fake=args.fake,
        llm_base_url=args.llm_base_url,
    )
    where = (
        "local fakes, no keys"
        if spec.fake
        else "offline, no keys"
        if spec.offline
        else "with provider keys"
    )
    print(f"agent: vad={spec.vad} stt={spec.stt} llm={spec.llm} tts={spec.tts} ({where})")
    kwargs: dict[str, Any] = {"timeout": args.timeout, "turn_log": args.turn_log}
    if args.instructions:
        kwargs["instructions"] = args.instructions
    if spec.fake:
        kwargs["fakes"] = _fakes()
    _progress(
        f"loading the models, then listening to {args.input} in real time "
        f"({audio.duration:.1f} s) and answering..."
    )
    result = await talk(audio, args.out, spec=spec, **kwargs)
    if not result.heard:
        raise Unavailable(
            f"nothing recognised in {args.input} ({audio.duration:.1f} s): is it speech, "
            "loud and clear enough? (try --stt pocketsphinx, or -v to see the recogniser)"
        )
    for text in result.heard:
        print(f"user:  {text}")
    for text in result.replies:
        print(f"agent: {text}")
    unmeasured = False
    for number, m in enumerate(result.turns, start=1):
        delays = (
            m.end_of_turn_delay,
            m.stt_final_delay,
            m.llm_ttft,
            m.tts_ttfa,
            m.voice_to_voice,
        )
        unmeasured = unmeasured or None in delays
        print(
            f"turn {number}: end of turn {_ms(m.end_of_turn_delay)}, "
            f"STT final {_ms(m.stt_final_delay)}, LLM first token {_ms(m.llm_ttft)}, "
            f"TTS first audio {_ms(m.tts_ttfa)}, voice-to-voice {_ms(m.voice_to_voice)}"
        )
        if m.error:
            print(f"turn {number}: error: {m.error}")
    if unmeasured:
        print("  (- : not measured in this turn, e.g. the STT final came before the VAD's end)")
    print(f"wrote {args.out}: {result.audio_seconds:.2f} s of agent audio")
    if result.errors:
        raise Unavailable(f"the agent could not answer properly: {result.errors[0]}")
    if not result.replies:
        raise Unavailable(
            f"the agent heard {' '.join(result.heard)!r} but did not answer "
            "(no end of turn: too short or too quiet for the voice detector?); try -v"
        )
    return 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"
