"""The ASGI server: ``/ws/agent`` calls, the playground page; ``/livez``, ``/readyz``
(``/healthz``) and ``/metrics`` come from :mod:`antiphon.server.ops`.

``create_app(agent)`` builds a FastAPI app around an
:class:`~antiphon.server.agents.AgentFactory`; :func:`serve` runs it with uvicorn.

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
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from antiphon.aio import worker
from antiphon.aio.clock import Clock, MonotonicClock
from antiphon.audio.recording import CallRecorder, call_recorder
from antiphon.errors import ConfigError
from antiphon.protocols import bounded_json
from antiphon.protocols import twilio as tw
from antiphon.server.agents import AgentFactory
from antiphon.server.calls import CallRegistry, DrainingServer
from antiphon.server.edge import (
    LOOPBACK_HOSTS,
    BodyTooLarge,
    HostCheck,
    TicketBook,
    install_redaction,
    normalize_origin,
    origin_ok,
    read_body,
    token_ok,
)
from antiphon.server.ops import DRAIN_TIMEOUT, add_ops
from antiphon.server.telephony import (
    CarrierSecrets,
    add_carrier_routes,
    add_twilio_amd_route,
    add_twilio_whisper_route,
    read_until_start,
)
from antiphon.transports.base import (
    TRY_AGAIN,
    UNAUTHORIZED,
    CallBridge,
    CallEnded,
)
from antiphon.transports.ice import IceServer, browser_config
from antiphon.transports.limits import TIMED_OUT, ConnectionGuard, EdgeLimits
from antiphon.transports.twilio import TwilioBridge
from antiphon.transports.websocket import StarletteSocket, WebSocketBridge

__all__ = ["FORBIDDEN", "CallRegistry", "create_app", "default_allowed_hosts", "serve"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
FORBIDDEN = 4403
"""Close code of a call from a browser origin that is not allowed."""


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

    @app.get("/webrtc/config")
    async def webrtc_config(request: Request) -> JSONResponse:
        """The browser's ``RTCPeerConnection`` configuration: the same ICE servers."""
        query, header = request.query_params.get("token"), request.headers.get("authorization")
        if not token_ok(token, query, header):  # TURN credentials are not for everyone
            return JSONResponse({"error": "missing or wrong token"}, status_code=401)
        return JSONResponse(browser_config(ice_servers))

    @app.post("/webrtc/offer")
    async def webrtc_offer(request: Request) -> JSONResponse:
        """A WebRTC call: the browser's SDP offer in, the answer out (JSON ``sdp``/``type``)."""
        refusal = refused(request)
        if refusal is not None:
            status = 403 if refusal[0] == FORBIDDEN else 401
            return JSONResponse({"error": refusal[1]}, status_code=status)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return JSONResponse({"error": "POST the offer as application/json"}, 415)
        try:
            body = await read_body(request, lim.max_http_body_bytes, lim.http_body_timeout)
        except BodyTooLarge as exc:
            return JSONResponse({"error": str(exc)}, status_code=413)
        except TimeoutError:
            return JSONResponse({"error": "the request body came too slowly"}, 408)
        try:
            from antiphon.transports.webrtc import WebRTCCall
        except ImportError:
            return JSONResponse(
                {"error": "WebRTC needs aiortc: pip install 'antiphon[webrtc]'"}, status_code=501
            )
        try:
            offer = bounded_json.loads(body, max_depth=lim.max_json_depth)
            sdp, kind = str(offer["sdp"]), str(offer["type"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'POST {"type": "offer", "sdp": "..."}'}, 400)
        recorder = call_recorder(record_dir, "webrtc") if record_dir is not None else None
        call = WebRTCCall(agent.new_session(), ice_servers, recorder=recorder)
        if not registry.admit(call):
            await call.aclose()
            return JSONResponse({"error": "too many sessions"}, status_code=503)
        try:
            await call.session.start()
            answer = await call.answer(sdp, kind)
        except Exception as exc:
            await call.aclose()
            registry.leave(call)
            return JSONResponse({"error": f"cannot answer the offer: {exc}"}, status_code=400)
        greeting = getattr(agent, "greeting", "")
        if isinstance(greeting, str) and greeting:
            call.session.say(greeting)

        async def deadlines() -> None:
            """Not connected in time: end the call; then the maximum duration, if any."""
            started = clock.now()
            await clock.sleep_until(started + lim.webrtc_connect_timeout)
            if not call.connected:
                why = f"not connected within {lim.webrtc_connect_timeout:g} s"
                call.end(TIMED_OUT, why)
                return
            if lim.max_call_duration is not None:
                await clock.sleep_until(started + lim.max_call_duration)
                call.end(TIMED_OUT, f"longer than {lim.max_call_duration:g} s")

        async def run() -> None:
            watch = asyncio.get_running_loop().create_task(deadlines(), name="webrtc-deadlines")
            try:
                await call.wait()
            finally:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
                await call.aclose()
                registry.leave(call)

        task = asyncio.get_running_loop().create_task(run(), name="webrtc-call")
        webrtc_calls.add(task)
        task.add_done_callback(webrtc_calls.discard)
        return JSONResponse({"sdp": answer.sdp, "type": answer.type})

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
            recorder = None
            if record_dir is not None:  # one stereo WAV per call: user left, agent right
                name = f"call-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}.wav"
                recorder = CallRecorder(Path(record_dir) / name)
            bridge = WebSocketBridge(
                agent.new_session(), guard, input_rate=input_rate, limits=lim, recorder=recorder
            )
            guard.on_expire = bridge.end
            await run_call(bridge)

    def _public(request_url: str, path: str) -> str:
        base = (public_url or request_url).rstrip("/")
        return base + path

    def _ws_scheme(url: str) -> str:
        return url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)

    @app.post("/twilio/voice")
    async def twilio_voice(request: Request) -> Response:
        try:
            body = await read_body(request, lim.max_http_body_bytes, lim.http_body_timeout)
        except BodyTooLarge as exc:
            return PlainTextResponse(str(exc), status_code=413)
        except TimeoutError:
            return PlainTextResponse("the request body came too slowly", status_code=408)
        base = f"{request.url.scheme}://{request.url.netloc}"
        parameters: dict[str, str] = {}
        if twilio_auth_token is not None:
            query = request.url.query
            url = _public(base, "/twilio/voice") + (f"?{query}" if query else "")
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            try:
                # Twilio posts a form; a JSON body is signed through ?bodySHA256=
                form = [] if ctype == "application/json" else tw.parse_form(body)
            except ValueError:
                return PlainTextResponse("too many form fields", status_code=413)
            signature = request.headers.get("x-twilio-signature")
            algorithm = tw.signature_algorithm(
                request.headers.get("x-twilio-webhooks-signature-settings")
            )
            if signature is None or not tw.validate_signature(
                twilio_auth_token,
                url,
                form,
                signature,
                body=body if ctype == "application/json" else None,
                algorithm=algorithm,
            ):
                return PlainTextResponse("invalid Twilio signature", status_code=403)
            parameters["ticket"] = tickets.issue("twilio")  # the stream's single-use pass
        elif token is not None:
            if not token_ok(
                token, request.query_params.get("token"), request.headers.get("authorization")
            ):
                return PlainTextResponse("missing or wrong token", status_code=401)
            parameters["token"] = token  # comes back in the stream's start message
        ws_url = _ws_scheme(_public(base, "/twilio/media"))
        return Response(tw.twiml_connect(ws_url, parameters), media_type="text/xml")

    @app.websocket("/twilio/media")
    async def twilio_media(ws: WebSocket) -> None:
        signed = True
        if twilio_auth_token is not None:
            base = f"{'https' if ws.url.scheme == 'wss' else 'http'}://{ws.url.netloc}"
            query = ws.url.query
            url = _ws_scheme(_public(base, "/twilio/media")) + (f"?{query}" if query else "")
            signature = ws.headers.get("x-twilio-signature")
            signed = signature is not None and tw.validate_signature(
                twilio_auth_token, url, (), signature
            )
        await ws.accept()
        socket = StarletteSocket(ws)
        if not signed:
            await socket.close(UNAUTHORIZED, "invalid Twilio signature")
            return
        guard = ConnectionGuard(
            socket,
            lim,
            max_binary_bytes=lim.max_twilio_message_bytes,
            max_text_bytes=lim.max_twilio_message_bytes,
            clock=clock,
        )
        async with watched(guard):
            try:
                start, preface = await read_until_start(guard, tw.DIALECT, lim)
            except CallEnded as ended:
                await guard.close(ended.code, ended.reason)
                return
            if not preface:
                return  # gone before saying anything
            if twilio_auth_token is not None:
                # the signature can be replayed; the ticket /twilio/voice issued cannot
                ticket = start.parameters.get("ticket") if start else None
                if not tickets.redeem(ticket, "twilio"):
                    await guard.close(UNAUTHORIZED, "no valid ticket: calls come via /twilio/voice")
                    return
            elif token is not None:
                given = start.parameters.get("token") if start else None
                if not token_ok(
                    token,
                    given or ws.query_params.get("token"),
                    ws.headers.get("authorization"),
                ):
                    await guard.close(UNAUTHORIZED, "missing or wrong token")
                    return
            guard.unread(*preface)
            recorder = call_recorder(record_dir, "twilio") if record_dir is not None else None
            bridge = TwilioBridge(
                agent.new_session(), guard, send_timeout=lim.send_timeout, recorder=recorder
            )
            guard.on_expire = bridge.end
            await run_call(bridge)

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
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=int(drain_timeout) + 5,
        ws_max_size=lim.max_ws_message_bytes,  # a bigger message is refused unread (1009)
        # PCM and base64 audio barely compress, and deflating every 20 ms frame cost about
        # a tenth of the server's CPU per call (bench/profile_server.py): not offered.
        ws_per_message_deflate=False,
    )
    install_redaction()  # uvicorn configures its loggers again in Config
    server = DrainingServer(config, app.state.calls, drain_timeout)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(server.run_draining())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (``pip install antiphon[fast]``), unless
    ``ANTIPHON_LOOP=asyncio``; else asyncio's own (None)."""
    if os.environ.get("ANTIPHON_LOOP", "auto") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
