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
from antiphon.plugins.registry import TTS_PROVIDERS, TTSSettings, tts_provider
from antiphon.services.tts import TTS, TTSDeadlines
from antiphon.testing.faults import FaultPlan


def _make_tts(args: argparse.Namespace, base_url: str | None, api_key: str | None) -> TTS:
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
    provider = tts_provider(name)
    fake = provider.fake(FaultPlan(), 0, provider.fake_key)
    await fake.start()
    try:
        yield fake.url, provider.fake_key
    finally:
        await fake.aclose()


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
    provider = tts_provider(args.provider)
    plan = FaultPlan(chunk_interval=0.02 if args.realtime else 0.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    fake = provider.fake(plan, args.port, args.api_key)
    await fake.start()
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="antiphon", description="Real-time voice agents.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    say = sub.add_parser("say", help="synthesise text to a WAV file with a streaming TTS")
    say.add_argument("text", nargs="+", help="the text to speak")
    say.add_argument("--tts", choices=list(TTS_PROVIDERS), default="deepgram")
    say.add_argument("--out", default="out.wav", help="WAV file to write (default out.wav)")
    say.add_argument("--base-url", help="provider URL, e.g. ws://127.0.0.1:8765 for a fake")
    say.add_argument(
        "--api-key",
        help="API key (default: the provider's environment variable, e.g. DEEPGRAM_API_KEY)",
    )
    say.add_argument(
        "--fake",
        action="store_true",
        help="start the provider's fake server in-process and use it (no key)",
    )
    say.add_argument(
        "--voice", "--model", dest="voice", help="voice or model id (provider default if omitted)"
    )
    say.add_argument("--encoding", help="wire encoding, e.g. linear16, mulaw")
    say.add_argument("--sample-rate", type=int, help="output sample rate in Hz")

    fake = sub.add_parser("fake-server", help="run a provider's fake server on loopback")
    fake.add_argument("provider", choices=list(TTS_PROVIDERS))
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
