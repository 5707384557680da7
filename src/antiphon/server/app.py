"""The ASGI server: ``/ws/agent`` calls, the playground page; ``/livez``, ``/readyz``
(``/healthz``) and ``/metrics`` come from :mod:`antiphon.server.ops`.

``create_app(agent)`` builds a FastAPI app around an
:class:`~antiphon.server.agents.AgentFactory`; :func:`serve` runs it with uvicorn.

How it is built: :func:`create_app` checks its arguments, owns what every call endpoint
shares (the :class:`~antiphon.server.calls.CallRegistry`, the edge check ``refused``,
``watched`` for a connection's deadlines, ``run_call`` to admit and run a bridge, the
tickets) and serves ``/ws/agent`` itself; each other family of routes lives in a module
of its own, handed those pieces: :mod:`~antiphon.server.webrtc`,
:mod:`~antiphon.server.twilio` (Twilio's four), :mod:`~antiphon.server.telephony` (the
other carriers) and :mod:`~antiphon.server.ops`. :func:`serve` makes
the app and hands it to :func:`~antiphon.server.runner.run_app` (uvicorn, the loop).

- **Calls**: each WebSocket on ``/ws/agent`` gets a new agent session, bridged by
  :class:`~antiphon.transports.websocket.WebSocketBridge`. Beyond ``max_sessions`` a call
  is refused with 1013.
- **The edge** (docs/server.md has the threat model): every call endpoint checks the
  token (4401), a browser's ``Origin`` (4403 / 403) and, when configured, the ``Host``
  (:mod:`antiphon.server.edge`); every connection reads through a
  :class:`~antiphon.transports.limits.ConnectionGuard` (sizes 1009, rates and audio
  budget 4429) whose deadlines (first message, idle, call length: 4408) run in one task
  per connection on the app's clock. Twilio's media stream is read up to its ``start``
  before a session exists, so its ``customParameters`` can carry the token, or the
  single-use ticket ``/twilio/voice`` issued when Twilio's signature is the guard.
- **Shutdown** (:meth:`~antiphon.server.calls.CallRegistry.drain`): new calls are
  refused, active calls may finish for ``drain_timeout`` seconds, then they are ended
  with 1001, all bounded.
- The server binds to loopback unless told otherwise; exposing it without a token logs
  a warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from antiphon.aio import worker
from antiphon.aio.clock import Clock, MonotonicClock
from antiphon.audio.recording import call_recorder
from antiphon.errors import ConfigError
from antiphon.server.agents import AgentFactory
from antiphon.server.calls import CallRegistry
from antiphon.server.edge import (
    FORBIDDEN,
    LOOPBACK_HOSTS,
    HostCheck,
    TicketBook,
    install_redaction,
    normalize_origin,
    origin_ok,
    token_ok,
)
from antiphon.server.ops import DRAIN_TIMEOUT, add_ops
from antiphon.server.runner import run_app
from antiphon.server.telephony import CarrierSecrets, add_carrier_routes
from antiphon.server.twilio import (
    add_twilio_amd_route,
    add_twilio_routes,
    add_twilio_whisper_route,
)
from antiphon.server.webrtc import add_webrtc_routes
from antiphon.transports.base import TRY_AGAIN, UNAUTHORIZED, CallBridge
from antiphon.transports.ice import IceServer
from antiphon.transports.limits import ConnectionGuard, EdgeLimits
from antiphon.transports.websocket import StarletteSocket, WebSocketBridge

__all__ = ["FORBIDDEN", "CallRegistry", "create_app", "default_allowed_hosts", "serve"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def admission_limit(agent: AgentFactory, max_sessions: int | None) -> int:
    """``max_sessions`` if given, else the agent's ``capacity`` (calls it serves in real
    time, when it knows), else 100."""
    if max_sessions is not None:
        return max_sessions
    capacity = getattr(agent, "capacity", None)
    return capacity if isinstance(capacity, int) and capacity > 0 else 100


def create_app(
    agent: AgentFactory,
    *,
    token: str | None = None,
    max_sessions: int | None = None,
    drain_timeout: float = 10.0,
    limits: EdgeLimits | None = None,
    input_rate: int = 16000,
    twilio_auth_token: str | None = None,
    public_url: str | None = None,
    allow_origins: Sequence[str] = (),
    allowed_hosts: Sequence[str] | None = None,
    guard_metrics: bool = False,
    clock: Clock | None = None,
    ice_servers: Sequence[IceServer] = (),
    carriers: CarrierSecrets | None = None,
    record_dir: str | Path | None = None,
) -> FastAPI:
    """The FastAPI app serving ``agent`` (see the module docstring and docs/server.md).

    Args:
        agent: makes one session per call.
        token: required on every call endpoint (None: no token).
        max_sessions: calls at once (None: the agent's ``capacity``, else 100); beyond,
            a call is refused with 1013.
        drain_timeout: on shutdown, how long active calls may finish.
        limits: sizes, rates and deadlines of every endpoint.
        input_rate: the sample rate of ``/ws/agent`` audio.
        twilio_auth_token: Twilio requests must carry Twilio's signature (checked
            against ``public_url``, the server's address as Twilio sees it).
        public_url: the server's public address (``https://...``).
        allow_origins: browser origins allowed besides the server's own (``*``: any).
        allowed_hosts: ``Host`` names served (None: any; ``*.example.com`` patterns).
        guard_metrics: ``/metrics`` needs the token too.
        clock: the clock of the deadlines (tests pass a virtual one).
        ice_servers: STUN/TURN servers for WebRTC, given to the server's peer connections
            and, through ``GET /webrtc/config``, to the page's.
        carriers: the secrets that check Telnyx, Plivo, Vonage and Exotel requests
            (:mod:`antiphon.server.telephony`; None: none checked).
        record_dir: record every call to one stereo WAV in this folder (the user left,
            the agent right; None: no recording): ``call-<time>-<id>.wav`` for
            ``/ws/agent``, ``twilio-…`` (and each carrier's name) for phone calls,
            ``webrtc-…`` for WebRTC.

    Raises:
        ConfigError: an empty token or carrier secret, limits that make no sense, or a
            ``record_dir`` that is no folder.
    """
    if token is not None and not token.strip():
        raise ConfigError("the token is empty: give a secret (e.g. openssl rand -hex 16)")
    if twilio_auth_token is not None and not twilio_auth_token.strip():
        raise ConfigError("the Twilio auth token is empty: give the account's auth token")
    if guard_metrics and token is None:
        raise ConfigError("guarding /metrics needs a token")
    if record_dir is not None and not Path(record_dir).is_dir():
        raise ConfigError(f"record_dir {str(record_dir)!r} is not a folder: create it first")
    lim = limits or EdgeLimits()
    clock = clock or MonotonicClock()
    origins = frozenset(normalize_origin(o) for o in allow_origins)
    if public_url:
        origins |= {normalize_origin(public_url)}
    registry = CallRegistry(admission_limit(agent, max_sessions))
    tickets = TicketBook((carriers or CarrierSecrets()).ticket_key(twilio_auth_token))
    guards: set[ConnectionGuard] = set()  # the live connections' guards (deadlines)
    webrtc_calls: set[asyncio.Task[None]] = set()  # the calls' tasks, awaited at shutdown
    install_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await agent.start()
        try:
            yield
        finally:
            await registry.drain(drain_timeout)
            if webrtc_calls:
                await asyncio.wait(list(webrtc_calls), timeout=10.0)
            await agent.aclose()

    app = FastAPI(title="antiphon", lifespan=lifespan)
    app.state.calls = registry
    app.state.guards = guards
    app.state.tickets = tickets
    app.state.limits = lim
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=tuple(allowed_hosts))

    def metrics_refused(request: Request) -> bool:
        """``/metrics`` with ``guard_metrics``: the token is needed."""
        query, header = request.query_params.get("token"), request.headers.get("authorization")
        return not token_ok(token, query, header)

    # /livez, /readyz (= /healthz), /metrics: server/ops.py
    add_ops(app, registry, metrics_refused=metrics_refused if guard_metrics else None)

    async def run_call(bridge: CallBridge[Any]) -> None:
        """Admit the call (or refuse it with 1013), start its session, run it to the end."""
        session = bridge.session
        if not registry.admit(bridge):
            await session.aclose()
            reason = "the server is shutting down" if registry.draining else "too many sessions"
            await bridge.ws.close(TRY_AGAIN, reason)
            return
        try:
            await session.start()
            greeting = getattr(agent, "greeting", "")
            if isinstance(greeting, str) and greeting:
                session.say(greeting)
            await bridge.run()
        finally:
            await session.aclose()
            registry.leave(bridge)

    @asynccontextmanager
    async def watched(guard: ConnectionGuard) -> AsyncIterator[ConnectionGuard]:
        """Run the connection's deadlines for as long as the block runs."""
        watch = asyncio.get_running_loop().create_task(guard.watch(), name="edge-deadlines")
        guards.add(guard)
        try:
            yield guard
        finally:
            guards.discard(guard)
            guard.on_expire = None  # the bridge's method: the bridge holds the guard
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    def refused(request: Request | WebSocket) -> tuple[int, str] | None:
        """Why a call request is refused before anything runs (code, reason), if it is."""
        if not origin_ok(request.headers.get("origin"), request.headers.get("host"), origins):
            return FORBIDDEN, "origin not allowed (the server's own page, or --allow-origin)"
        if not token_ok(
            token, request.query_params.get("token"), request.headers.get("authorization")
        ):
            return UNAUTHORIZED, "missing or wrong token"
        return None

    # /webrtc/config, /webrtc/offer: server/webrtc.py
    add_webrtc_routes(
        app, agent=agent, registry=registry, token=token, refused=refused, limits=lim,
        clock=clock, ice_servers=ice_servers, record_dir=record_dir, calls=webrtc_calls,
    )  # fmt: skip

    @app.websocket("/ws/agent")
    async def agent_call(ws: WebSocket) -> None:
        await ws.accept()
        socket = StarletteSocket(ws)
        refusal = refused(ws)
        if refusal is not None:
            await socket.close(*refusal)
            return
        guard = ConnectionGuard(
            socket,
            lim,
            max_binary_bytes=lim.max_audio_bytes,
            max_text_bytes=lim.max_text_bytes,
            audio_rate=input_rate,
            clock=clock,
        )
        async with watched(guard):
            # one stereo WAV per call: user left, agent right
            recorder = call_recorder(record_dir, "call") if record_dir is not None else None
            bridge = WebSocketBridge(
                agent.new_session(), guard, input_rate=input_rate, limits=lim, recorder=recorder
            )
            guard.on_expire = bridge.end
            await run_call(bridge)

    # /twilio/voice, /twilio/media: server/twilio.py
    add_twilio_routes(
        app, agent=agent, token=token, twilio_auth_token=twilio_auth_token,
        public_url=public_url, limits=lim, clock=clock, tickets=tickets, watched=watched,
        run_call=run_call, record_dir=record_dir,
    )  # fmt: skip
    # /telnyx, /plivo, /vonage, /exotel: server/telephony.py
    add_carrier_routes(
        app, agent=agent, secrets=carriers or CarrierSecrets(), token=token,
        public_url=public_url, limits=lim, clock=clock, tickets=tickets, watched=watched,
        run_call=run_call, record_dir=record_dir,
    )  # fmt: skip
    add_twilio_amd_route(
        app, registry=registry, twilio_auth_token=twilio_auth_token, token=token,
        public_url=public_url, limits=lim,
    )  # fmt: skip
    add_twilio_whisper_route(
        app, twilio_auth_token=twilio_auth_token, public_url=public_url, limits=lim
    )

    if (STATIC / "index.html").is_file():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/")
        async def index(request: Request) -> RedirectResponse:
            query = request.url.query  # ?token=..., ?transport=webrtc, ?raw=1 pass through
            return RedirectResponse("/static/index.html" + (f"?{query}" if query else ""))

    return app


def default_allowed_hosts(
    host: str, public_url: str | None, allow_hosts: Sequence[str] = ()
) -> list[str] | None:
    """The ``Host`` names a server bound to ``host`` answers (None: not checked).

    Loopback names always; the public URL's host; ``allow_hosts``. A server exposed on
    another address with none of these cannot know its names: not checked (a warning).
    """
    names = list(allow_hosts)
    if public_url:
        names.append(urlsplit(public_url).hostname or "")
    exposed = host not in LOOPBACK_HOSTS
    if exposed and not names:
        log.warning(
            "serving on %s without --allow-host: the Host header is not checked "
            "(DNS rebinding); pass --allow-host NAME",
            host,
        )
        return None
    return [*LOOPBACK_HOSTS, *([host] if exposed and host not in ("0.0.0.0", "::") else []),
            *[n for n in names if n]]  # fmt: skip


def serve(
    agent: AgentFactory,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    max_sessions: int | None = None,
    drain_timeout: float = DRAIN_TIMEOUT,
    twilio_auth_token: str | None = None,
    public_url: str | None = None,
    limits: EdgeLimits | None = None,
    allow_origins: Sequence[str] = (),
    allow_hosts: Sequence[str] = (),
    guard_metrics: bool = False,
    ice_servers: Sequence[IceServer] = (),
    carriers: CarrierSecrets | None = None,
    record_dir: str | Path | None = None,
) -> None:
    """Run the server until SIGINT/SIGTERM, then drain active calls (bounded) and stop.

    ``record_dir``: record each call there (see :func:`create_app`).

    ``carriers`` None: the carriers' secrets from the environment
    (:meth:`~antiphon.server.telephony.CarrierSecrets.from_env`).
    """
    # a server's real-time work (the loop, the VAD) before its models' inference, set
    # before any model loads (aio/worker.py; ANTIPHON_INFERENCE_NICE=0 turns it off)
    worker.set_inference_nice(worker.inference_nice_from_env(worker.SERVE_INFERENCE_NICE))
    if host not in LOOPBACK_HOSTS and token is None:
        log.warning(
            "serving on %s without a token: anyone who reaches this address can talk to the "
            "agent (and spend your provider credits); pass --token",
            host,
        )
    lim = limits or EdgeLimits()
    app = create_app(
        agent,
        token=token,
        max_sessions=max_sessions,
        drain_timeout=drain_timeout,
        limits=lim,
        twilio_auth_token=twilio_auth_token,
        public_url=public_url,
        allow_origins=allow_origins,
        allowed_hosts=default_allowed_hosts(host, public_url, allow_hosts),
        guard_metrics=guard_metrics,
        ice_servers=ice_servers,
        carriers=carriers if carriers is not None else CarrierSecrets.from_env(),
        record_dir=record_dir,
    )
    run_app(app, host=host, port=port, drain_timeout=drain_timeout, limits=lim)
