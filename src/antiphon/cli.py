"""The ``antiphon`` command line: talk, serve, console, say, realtime, call and fake-server.

Built for a newcomer: ``--help`` imports nothing heavy (each command imports its engines
when it runs); every failure is one line on stderr, ``antiphon: error: ...``, with exit
2 for bad input (an :class:`AntiphonError`) and 1 when something needed is missing
(:class:`Unavailable`: a busy port, no sound device, a service down, nothing heard).
Progress lines go to stderr only when it is a terminal, so piped output stays clean.

This module holds the argument parser (:func:`build_parser`, its help texts) and
:func:`main`, which dispatches to the commands of :mod:`antiphon.cli_commands` (on files
and engines) and :mod:`antiphon.cli_live` (serve, console, call); their names are
re-exported here, so ``antiphon.cli`` stays the one entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from antiphon.cli_commands import (
    OFFLINE_STTS,
    OFFLINE_TTSS,
    Unavailable,
    _fake_server,
    _realtime,
    _say,
    _talk,
)
from antiphon.cli_live import _call as _call  # re-exported: tests drive it directly
from antiphon.cli_live import _console, _serve
from antiphon.errors import AntiphonError
from antiphon.plugins.registry import TTS_PROVIDERS

__all__ = ["Unavailable", "build_parser", "main"]

if TYPE_CHECKING:
    from antiphon.transports.ice import IceServer


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return port


def _ice_server(text: str) -> IceServer:
    from antiphon.transports.ice import IceServer  # not at import: it loads the transports

    try:
        return IceServer.parse(text)
    except AntiphonError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


STT_NAMES = [
    *OFFLINE_STTS,
    "deepgram",
    "assemblyai",
    "openai",
    "speechmatics",
    "elevenlabs",
    "cartesia",
    "gladia",
    "azure",
]
VAD_NAMES = ["silero", "silero-ggml", "webrtc", "silero-batched"]
VAD_HELP = (
    "voice activity detection: silero (default: ONNX, batched across calls), silero-ggml "
    "(one detector a call) or webrtc (light); silero-batched is silero"
)
STT_HELP = "speech recognition: whisper (default, offline), pocketsphinx (offline) or a cloud one"
TTS_HELP = "the voice: piper (default, offline), espeak (offline, light) or a cloud one"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="antiphon", description="Real-time voice agents.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    talk = sub.add_parser(
        "talk", help="talk to an agent: WAV in, spoken answer out (offline by default)"
    )
    talk.add_argument("input", help="WAV file with what the user says")
    talk.add_argument("--out", default="reply.wav", help="WAV file for the agent's audio")
    talk.add_argument("--vad", choices=VAD_NAMES, default="silero", help=VAD_HELP)
    talk.add_argument("--stt", choices=STT_NAMES, default="whisper", help=STT_HELP)
    talk.add_argument(
        "--llm",
        default="offline",
        help="offline (default), SERVER:MODEL (e.g. openai:gpt-4o-mini), anthropic:MODEL, "
        "gemini:MODEL, bedrock:MODEL, or llamacpp:FILE.gguf (a local model behind the FAQ; "
        "antiphon[local-llm])",
    )
    talk.add_argument("--llm-base-url", help="OpenAI-compatible endpoint (Ollama, vLLM, Groq ...)")
    talk.add_argument(
        "--tts", choices=[*OFFLINE_TTSS, *TTS_PROVIDERS], default="piper", help=TTS_HELP
    )
    talk.add_argument(
        "--fake", action="store_true", help="run cloud services against local fake servers"
    )
    talk.add_argument("--instructions", help="the agent's system prompt")
    talk.add_argument("--turn-log", help="append one JSON line per turn to this file")
    talk.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the agent")

    srv = sub.add_parser("serve", help="serve an agent: browser playground, /ws/agent, /metrics")
    srv.add_argument("agent_file", nargs="?", help="a Python file defining `agent`")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    srv.add_argument("--port", type=_port, default=8000, help="port to listen on (default 8000)")
    srv.add_argument(
        "--token",
        help="require ?token=TOKEN (or a Bearer header) on every call endpoint, Twilio's "
        "included (default ANTIPHON_TOKEN)",
    )
    srv.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin allowed to call besides the server's own, e.g. "
        "https://app.example.com (repeatable; * for any)",
    )
    srv.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name the server answers besides loopback, e.g. agent.example.com or "
        "*.example.com (repeatable; against DNS rebinding)",
    )
    srv.add_argument("--guard-metrics", action="store_true", help="/metrics needs the token too")
    srv.add_argument(
        "--first-message-timeout",
        type=float,
        default=10.0,
        help="seconds a new connection may stay silent before its first message",
    )
    srv.add_argument(
        "--idle-timeout",
        type=float,
        default=20.0,
        help="seconds without any message before a call is ended (clients stream silence)",
    )
    srv.add_argument(
        "--max-call-duration", type=float, help="seconds after which any call is ended"
    )
    srv.add_argument(
        "--max-audio-speed",
        type=float,
        default=3.0,
        help="audio seconds a caller may send per second, sustained (default 3)",
    )
    srv.add_argument("--max-messages-per-second", type=int, default=200, help="per call, sustained")
    srv.add_argument(
        "--max-sessions",
        type=int,
        default=None,
        help="calls served at once (default: the pipeline's measured capacity, else 100)",
    )
    srv.add_argument(
        "--drain-timeout",
        type=float,
        default=300.0,  # antiphon.server.ops.DRAIN_TIMEOUT (not imported: no FastAPI here)
        help="seconds active calls may go on after SIGTERM (default %(default)g; keep "
        "Kubernetes' terminationGracePeriodSeconds above it, docs/deploy.md)",
    )
    srv.add_argument("--vad", choices=VAD_NAMES, default="silero", help=VAD_HELP)
    srv.add_argument("--stt", choices=STT_NAMES, default="whisper", help=STT_HELP)
    srv.add_argument("--llm", default="offline", help="offline, SERVER:MODEL or llamacpp:FILE.gguf")
    srv.add_argument(
        "--tts", choices=[*OFFLINE_TTSS, *TTS_PROVIDERS], default="piper", help=TTS_HELP
    )
    srv.add_argument("--fake", action="store_true", help="cloud services on local fakes")
    srv.add_argument(
        "--twilio-auth-token",
        help="check Twilio's request signatures (default TWILIO_AUTH_TOKEN)",
    )
    srv.add_argument("--public-url", help="the server's address as Twilio sees it (https://...)")
    srv.add_argument(
        "--ice-server",
        action="append",
        type=_ice_server,
        default=[],
        metavar="URL",
        help="a STUN/TURN server for WebRTC calls across NAT, repeatable: stun:HOST[:PORT] "
        "or turn:USER:CREDENTIAL@HOST[:PORT][?transport=udp|tcp] (default: none)",
    )

    srv.add_argument(
        "--record-dir",
        metavar="DIR",
        help="record each call (/ws/agent, phone, WebRTC) to one stereo WAV in DIR "
        "(user left, agent right)",
    )

    con = sub.add_parser("console", help="talk to an agent with this computer's mic and speaker")
    con.add_argument("--vad", choices=VAD_NAMES, default="silero", help=VAD_HELP)
    con.add_argument("--stt", choices=STT_NAMES, default="whisper", help=STT_HELP)
    con.add_argument("--llm", default="offline", help="offline, SERVER:MODEL or llamacpp:FILE.gguf")
    con.add_argument(
        "--tts", choices=[*OFFLINE_TTSS, *TTS_PROVIDERS], default="piper", help=TTS_HELP
    )
    con.add_argument("--fake", action="store_true", help="cloud services on local fakes")

    say = sub.add_parser("say", help="synthesise text to a WAV file with a streaming TTS")
    say.add_argument("text", nargs="+", help="the text to speak")
    say.add_argument(
        "--tts",
        choices=[*OFFLINE_TTSS, *TTS_PROVIDERS],
        default="piper",
        help="the voice: piper (default, offline), espeak (offline, light) or a cloud provider",
    )
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

    rt = sub.add_parser("realtime", help="talk to a speech-to-speech model: WAV in, WAV out")
    rt.add_argument("input", help="WAV file with what the user says")
    rt.add_argument(
        "--provider",
        choices=["openai", "azure", "gemini", "xai"],
        default="openai",
        help="default openai",
    )
    rt.add_argument("--out", default="reply.wav", help="WAV file for the answer")
    rt.add_argument("--base-url", help="endpoint (Azure: https://<resource>.services.ai.azure.com)")
    rt.add_argument(
        "--api-key",
        help="key (default OPENAI_API_KEY / AZURE_VOICELIVE_API_KEY / GOOGLE_API_KEY)",
    )
    rt.add_argument("--fake", action="store_true", help="use the local fake server (no key)")
    rt.add_argument("--voice", help="voice name (provider default if omitted)")
    rt.add_argument(
        "--instructions",
        default="You are a helpful voice assistant.",
        help="the model's system prompt",
    )
    rt.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer")

    call = sub.add_parser(
        "call", help="call a phone number through Twilio and connect it to a served agent"
    )
    call.add_argument("number", help="the number to call, E.164 (+15551234567)")
    call.add_argument(
        "--from",
        dest="from_",
        metavar="NUMBER",
        help="caller ID, a number of the account (TWILIO_FROM_NUMBER)",
    )
    call.add_argument(
        "--public-url",
        help="where `antiphon serve` runs, as Twilio reaches it (ANTIPHON_PUBLIC_URL)",
    )
    call.add_argument("--token", help="the server's --token, if any (default ANTIPHON_TOKEN)")
    call.add_argument(
        "--machine-detection",
        choices=["Enable", "DetectMessageEnd"],
        help="answering-machine detection; the agent gets MachineDetected",
    )
    call.add_argument("--api-base", default="https://api.twilio.com", help="Twilio's REST API")
    call.add_argument("--timeout", type=float, default=15.0, help="seconds for Twilio to answer")

    fake = sub.add_parser("fake-server", help="run a provider's fake server on loopback")
    fake.add_argument("provider", choices=list(TTS_PROVIDERS), help="whose TTS to imitate")
    fake.add_argument("--port", type=_port, default=8765, help="port on 127.0.0.1 (default 8765)")
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
    # the server's shutdown steps (draining open calls) are shown without -v
    logging.getLogger("antiphon.server.calls").setLevel(logging.INFO)
    if args.command == "serve":
        try:
            return _serve(args)  # runs its own event loop (uvicorn)
        except AntiphonError as exc:
            print(f"antiphon: error: {exc}", file=sys.stderr)
            return 1 if isinstance(exc, Unavailable) else 2
    runners = {
        "talk": _talk,
        "console": _console,
        "say": _say,
        "realtime": _realtime,
        "fake-server": _fake_server,
        "call": _call,
    }
    runner = runners[args.command]
    try:
        return asyncio.run(runner(args))
    except AntiphonError as exc:
        print(f"antiphon: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, Unavailable) else 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # ``python -m antiphon.cli`` runs this file as ``__main__``, a second copy of the module
    # beside the ``antiphon.cli`` the rest of the package imports: its classes and state would
    # be duplicates (an ``isinstance`` against one copy fails for the other's). Run the
    # imported module's ``main`` instead, so one copy of everything serves the process.
    from antiphon.cli import main as _main

    sys.exit(_main())
