"""The ``antiphon`` command line: ``say`` and ``fake-server``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence

from antiphon.errors import AntiphonError
from antiphon.services.tts import TTS, TTSDeadlines

TTS_PROVIDERS = ("deepgram",)


def _make_tts(args: argparse.Namespace, base_url: str | None, api_key: str | None) -> TTS:
    if args.tts == "deepgram":
        from antiphon.plugins.deepgram import DeepgramTTS
        from antiphon.protocols import deepgram_tts as dg

        return DeepgramTTS(
            api_key=api_key,
            model=args.model or dg.DEFAULT_MODEL,
            encoding=args.encoding or dg.DEFAULT_ENCODING,
            sample_rate=args.sample_rate or dg.DEFAULT_SAMPLE_RATE,
            base_url=base_url or dg.DEFAULT_BASE_URL,
            deadlines=TTSDeadlines(),
        )
    raise AntiphonError(f"unknown TTS {args.tts!r}; choose one of {', '.join(TTS_PROVIDERS)}")


@contextlib.asynccontextmanager
async def _fake_for(provider: str) -> AsyncIterator[tuple[str, str]]:
    """Start the provider's fake server in this process: yields (base_url, api_key)."""
    if provider == "deepgram":
        from antiphon.testing.deepgram import DEFAULT_API_KEY, FakeDeepgramTTS

        async with FakeDeepgramTTS() as fake:
            yield fake.url, DEFAULT_API_KEY
        return
    raise AntiphonError(f"no fake server for {provider!r}")


async def _say(args: argparse.Namespace) -> int:
    from antiphon.audio.wav import WavWriter

    text = " ".join(args.text).strip()
    if not text:
        raise AntiphonError('nothing to say: give the text, e.g. antiphon say "Hello there"')
    async with contextlib.AsyncExitStack() as stack:
        base_url, api_key = args.base_url, args.api_key
        if args.fake:
            base_url, api_key = await stack.enter_async_context(_fake_for(args.tts))
        tts = await stack.enter_async_context(_make_tts(args, base_url, api_key))
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
        where = "fake server" if args.fake else (base_url or "service")
        ttfb = f"{first * 1000:.0f} ms" if first is not None else "n/a"
        print(
            f"wrote {args.out}: {seconds:.2f} s of audio at {tts.sample_rate} Hz "
            f"from {args.tts} ({where}); first audio after {ttfb}"
        )
    return 0


async def _fake_server(args: argparse.Namespace) -> int:
    from antiphon.testing.deepgram import DEFAULT_API_KEY, FakeDeepgramTTS
    from antiphon.testing.faults import FaultPlan

    if args.provider != "deepgram":
        raise AntiphonError(f"no fake server for {args.provider!r}; choose deepgram")
    plan = FaultPlan(chunk_interval=0.02 if args.realtime else 0.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with FakeDeepgramTTS(plan, port=args.port, api_key=args.api_key) as fake:
        print(
            f"fake deepgram TTS listening on {fake.url}/v1/speak (key: {args.api_key})", flush=True
        )
        if args.api_key == DEFAULT_API_KEY:
            print(
                f'use: antiphon say "Hi" --tts deepgram --base-url {fake.url} '
                f"--api-key {DEFAULT_API_KEY} --out hi.wav",
                flush=True,
            )
        await stop.wait()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="antiphon", description="Real-time voice agents.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    say = sub.add_parser("say", help="synthesise text to a WAV file with a streaming TTS")
    say.add_argument("text", nargs="+", help="the text to speak")
    say.add_argument("--tts", choices=TTS_PROVIDERS, default="deepgram")
    say.add_argument("--out", default="out.wav", help="WAV file to write (default out.wav)")
    say.add_argument("--base-url", help="provider URL, e.g. ws://127.0.0.1:8765 for a fake")
    say.add_argument("--api-key", help="API key (default: the provider's environment variable)")
    say.add_argument(
        "--fake",
        action="store_true",
        help="start the provider's fake server in-process and use it (no key)",
    )
    say.add_argument("--model", help="voice/model id (provider default if omitted)")
    say.add_argument("--encoding", help="wire encoding, e.g. linear16, mulaw")
    say.add_argument("--sample-rate", type=int, help="output sample rate in Hz")

    fake = sub.add_parser("fake-server", help="run a provider's fake server on loopback")
    fake.add_argument("provider", choices=TTS_PROVIDERS)
    fake.add_argument("--port", type=int, default=8765)
    fake.add_argument("--api-key", default="test-key", help="key the fake accepts")
    fake.add_argument(
        "--realtime",
        action="store_true",
        help="pace audio in real time instead of as fast as possible",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    runner = _say if args.command == "say" else _fake_server
    try:
        return asyncio.run(runner(args))
    except AntiphonError as exc:
        print(f"antiphon: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
