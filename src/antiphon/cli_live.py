"""The commands of ``antiphon`` that run the agent live: serve, console and call.

Split from :mod:`antiphon.cli_commands` along the line between the commands that work on
files and engines (say, talk, realtime, fake-server: a WAV in or out, then exit) and these,
which face the outside world: ``serve`` runs the server (a port, a token, edge limits),
``console`` opens this computer's microphone and speaker, and ``call`` asks Twilio to ring
a number whose answer streams to ``serve``. They share the errors and helpers of
``cli_commands`` (:class:`~antiphon.cli_commands.Unavailable`, the progress line, the
loopback fakes behind ``--fake``) and import their server and transports inside the
function that runs them, so ``antiphon --help`` loads none of it. :mod:`antiphon.cli`
imports the commands from here.
"""

from __future__ import annotations

import argparse
import os
from urllib.parse import quote

from antiphon.cli_commands import Unavailable, _fakes, _progress
from antiphon.errors import AntiphonError

__all__: list[str] = []


def _serve(args: argparse.Namespace) -> int:
    """Run the server with the agent of a file, or the pipeline named on the command line."""
    from antiphon.agent.pipeline import PipelineSpec
    from antiphon.server.agents import AgentFactory, PipelineAgent, load_agent_file
    from antiphon.server.app import serve
    from antiphon.transports.limits import EdgeLimits

    token = args.token if args.token is not None else os.environ.get("ANTIPHON_TOKEN")
    if token is not None and not token.strip():
        raise AntiphonError(
            'the token is empty: give a secret, e.g. --token "$(openssl rand -hex 16)", '
            "or leave --token out on a loopback-only server"
        )
    if args.guard_metrics and token is None:
        raise AntiphonError("--guard-metrics needs --token (or ANTIPHON_TOKEN)")
    try:
        limits = EdgeLimits(
            first_message_timeout=args.first_message_timeout,
            idle_timeout=args.idle_timeout,
            max_call_duration=args.max_call_duration,
            max_audio_speed=args.max_audio_speed,
            max_messages_per_second=args.max_messages_per_second,
        )
    except ValueError as exc:
        raise AntiphonError(str(exc)) from None
    _check_port(args.host, args.port)
    agent: AgentFactory
    if args.agent_file:
        agent = load_agent_file(args.agent_file)
    else:
        spec = PipelineSpec(vad=args.vad, stt=args.stt, llm=args.llm, tts=args.tts, fake=args.fake)
        agent = PipelineAgent(spec, fakes=_fakes() if args.fake else None)
    query = f"?token={quote(token, safe='')}" if token else ""
    print(f"antiphon: the playground is at http://localhost:{args.port}/{query}", flush=True)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        print(
            "antiphon: other machines need https (browsers allow the microphone only on "
            "https or localhost): put a TLS proxy in front, see docs/deploy.md",
            flush=True,
        )
    print(
        f"antiphon: Ctrl-C stops: open calls drain first (up to {args.drain_timeout:g} s); "
        "press Ctrl-C again to stop at once",
        flush=True,
    )
    serve(
        agent,
        host=args.host,
        port=args.port,
        token=token,
        limits=limits,
        allow_origins=args.allow_origin,
        allow_hosts=args.allow_host,
        guard_metrics=args.guard_metrics,
        max_sessions=args.max_sessions,
        drain_timeout=args.drain_timeout,
        twilio_auth_token=args.twilio_auth_token or os.environ.get("TWILIO_AUTH_TOKEN"),
        public_url=args.public_url,
        ice_servers=args.ice_server,
        record_dir=args.record_dir,
    )
    return 0


def _check_port(host: str, port: int) -> None:
    """Refuse at once, in one line, a port the server could not listen on."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind(address)
    except OSError as exc:
        raise Unavailable(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another with --port"
        ) from None


async def _console(args: argparse.Namespace) -> int:
    """Talk to the agent with this computer's microphone and speaker, until Ctrl-C."""
    from antiphon.agent.pipeline import PipelineSpec
    from antiphon.agent.session import AgentSession
    from antiphon.server.agents import PipelineAgent
    from antiphon.transports.console import ConsoleAudio, _sounddevice

    sd = _sounddevice()  # before the models load: a missing PortAudio is one line, at once
    try:
        sd.query_devices(kind="input")
        sd.query_devices(kind="output")
    except Exception as exc:  # sounddevice.PortAudioError, ValueError: no such device
        raise Unavailable(
            f"no sound device ({exc}); plug in a microphone and a speaker, "
            "or use antiphon talk FILE.wav"
        ) from None
    _progress("loading the models...")
    agent = PipelineAgent(
        PipelineSpec(vad=args.vad, stt=args.stt, llm=args.llm, tts=args.tts, fake=args.fake),
        fakes=_fakes() if args.fake else None,
    )
    await agent.start()
    session: AgentSession | None = None
    console: ConsoleAudio | None = None
    try:
        session = agent.new_session()
        await session.start()
        console = ConsoleAudio(session, sd=sd)
        try:
            await console.start()
        except Exception as exc:  # PortAudio refused the stream
            raise Unavailable(f"cannot open the sound device: {exc}") from None
        print("antiphon: listening; speak (Ctrl-C to stop)", flush=True)
        async for event in session.events():
            print(f"  {type(event).__name__}: {event}", flush=True)
    finally:
        if console is not None:
            await console.aclose()
        if session is not None:
            await session.aclose()
        await agent.aclose()
    return 0


async def _call(args: argparse.Namespace) -> int:
    """Call a number through Twilio's REST API; the answered call streams to the server at
    --public-url (``antiphon serve``), whose /twilio/voice gives Twilio the TwiML."""
    from antiphon.errors import ProviderConnectionError, ProviderTimeoutError
    from antiphon.protocols.twilio_rest import is_e164
    from antiphon.transports.twilio_rest import TwilioAccount, TwilioCalls

    if not is_e164(args.number):
        raise AntiphonError(
            f"{args.number!r} is not a phone number in E.164 form "
            "(+, the country code, then the number: e.g. +15551234567)"
        )
    caller = args.from_ or os.environ.get("TWILIO_FROM_NUMBER")
    if not caller:
        raise AntiphonError(
            "give the caller ID: --from +1... (a number of your Twilio account) or "
            "TWILIO_FROM_NUMBER"
        )
    public = (args.public_url or os.environ.get("ANTIPHON_PUBLIC_URL") or "").rstrip("/")
    if not public.startswith(("https://", "http://")):
        raise AntiphonError(
            "give --public-url https://... (or ANTIPHON_PUBLIC_URL): the address of "
            "`antiphon serve` as Twilio reaches it"
        )
    account = TwilioAccount.from_env()
    token = args.token if args.token is not None else os.environ.get("ANTIPHON_TOKEN")
    url = f"{public}/twilio/voice" + (f"?token={quote(token, safe='')}" if token else "")
    amd = args.machine_detection
    try:
        async with TwilioCalls(account, base_url=args.api_base, timeout=args.timeout) as calls:
            call = await calls.create(
                args.number, caller, url, machine_detection=amd,
                amd_callback=f"{public}/twilio/amd" if amd else None,
            )  # fmt: skip
    except (ProviderConnectionError, ProviderTimeoutError) as exc:
        raise Unavailable(str(exc)) from None
    _progress(f"calling {call.to} from {call.from_}: {call.status}")
    print(call.sid)
    return 0
