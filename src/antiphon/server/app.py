"""The ASGI server: ``/ws/agent`` calls, ``/healthz``, ``/metrics``, the playground page.

``create_app(agent)`` builds a FastAPI app around an
:class:`~antiphon.server.agents.AgentFactory`; :func:`serve` runs it with uvicorn.

- **Calls**: each WebSocket on ``/ws/agent`` gets a new agent session, bridged by
  :class:`~antiphon.transports.websocket.WebSocketBridge`. Beyond ``max_sessions`` a call
  is refused with 1013; with a ``token``, a call without it gets 4401.
- **Shutdown** (:meth:`CallRegistry.drain`): new calls are refused, active calls may finish
  for ``drain_timeout`` seconds, then they are ended with 1001, all bounded.
- The server binds to loopback unless told otherwise; exposing it without a token logs
  a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl

import uvicorn
from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from antiphon.protocols import twilio as tw
from antiphon.server.agents import AgentFactory
from antiphon.transports.base import GOING_AWAY, TRY_AGAIN, UNAUTHORIZED, CallBridge
from antiphon.transports.twilio import TwilioBridge
from antiphon.transports.websocket import BridgeLimits, StarletteSocket, WebSocketBridge

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


class Call(Protocol):
    """A call the registry can end (a bridge, or a WebRTC call)."""

    def end(self, code: int, reason: str) -> None: ...


class CallRegistry:
    """The active calls, and the server's draining state."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.calls: set[Call] = set()
        self.draining = False
        self._empty = asyncio.Event()
        self._empty.set()
        self.total = 0

    @property
    def full(self) -> bool:
        """No room for another call (``/healthz`` answers 503: not ready)."""
        return len(self.calls) >= self.max_sessions

    def admit(self, bridge: Call) -> bool:
        if self.draining or len(self.calls) >= self.max_sessions:
            return False
        self.calls.add(bridge)
        self.total += 1
        self._empty.clear()
        return True

    def leave(self, bridge: Call) -> None:
        self.calls.discard(bridge)
        if not self.calls:
            self._empty.set()

    async def drain(self, timeout: float) -> int:
        """Refuse new calls, wait up to ``timeout`` for active ones, end the rest (1001).

        Returns how many calls had to be ended.
        """
        self.draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._empty.wait()
        left = list(self.calls)
        for bridge in left:
            bridge.end(GOING_AWAY, "the server is shutting down")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                await self._empty.wait()
        return len(left)


def admission_limit(agent: AgentFactory, max_sessions: int | None) -> int:
    """``max_sessions`` if given, else the agent's ``capacity`` (calls it serves in real
    time, when it knows), else 100."""
    if max_sessions is not None:
        return max_sessions
    capacity = getattr(agent, "capacity", None)
    return capacity if isinstance(capacity, int) and capacity > 0 else 100


def _token_ok(expected: str | None, query: str | None, header: str | None) -> bool:
    if expected is None:
        return True
    given = query or ""
    if header and header.lower().startswith("bearer "):
        given = header[7:]
    return hmac.compare_digest(given.encode(), expected.encode())


def create_app(
    agent: AgentFactory,
    *,
    token: str | None = None,
    max_sessions: int | None = None,
    drain_timeout: float = 10.0,
    limits: BridgeLimits | None = None,
    input_rate: int = 16000,
    twilio_auth_token: str | None = None,
    public_url: str | None = None,
) -> FastAPI:
    """The FastAPI app serving ``agent`` (see the module docstring).

    Telephony: ``POST /twilio/voice`` answers a Twilio call with TwiML connecting it to
    ``/twilio/media``. With ``twilio_auth_token``, requests must carry Twilio's signature
    (checked against ``public_url``, the server's address as Twilio sees it).
    """
    registry = CallRegistry(admission_limit(agent, max_sessions))
    webrtc_calls: set[asyncio.Task[None]] = set()  # the calls' tasks, awaited at shutdown

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

    @app.post("/webrtc/offer")
    async def webrtc_offer(request: Request) -> JSONResponse:
        """A WebRTC call: the browser's SDP offer in, the answer out (JSON ``sdp``/``type``)."""
        if not _token_ok(
            token, request.query_params.get("token"), request.headers.get("authorization")
        ):
            return JSONResponse({"error": "missing or wrong token"}, status_code=401)
        try:
            from antiphon.transports.webrtc import WebRTCCall
        except ImportError:
            return JSONResponse(
                {"error": "WebRTC needs aiortc: pip install 'antiphon[webrtc]'"}, status_code=501
            )
        try:
            offer = await request.json()
            sdp, kind = str(offer["sdp"]), str(offer["type"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'POST {"type": "offer", "sdp": "..."}'}, 400)
        call = WebRTCCall(agent.new_session())
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

        async def run() -> None:
            try:
                await call.wait()
            finally:
                await call.aclose()
                registry.leave(call)

        task = asyncio.get_running_loop().create_task(run(), name="webrtc-call")
        webrtc_calls.add(task)
        task.add_done_callback(webrtc_calls.discard)
        return JSONResponse({"sdp": answer.sdp, "type": answer.type})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse(
            {
                "ok": not registry.draining,
                "active_sessions": len(registry.calls),
                "max_sessions": registry.max_sessions,
                "total_sessions": registry.total,
            },
            status_code=503 if registry.draining or registry.full else 200,
        )

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws/agent")
    async def agent_call(ws: WebSocket) -> None:
        await ws.accept()
        socket = StarletteSocket(ws)
        if not _token_ok(token, ws.query_params.get("token"), ws.headers.get("authorization")):
            await socket.close(UNAUTHORIZED, "missing or wrong token")
            return
        session = agent.new_session()
        await run_call(WebSocketBridge(session, socket, input_rate=input_rate, limits=limits))

    def _public(request_url: str, path: str) -> str:
        base = (public_url or request_url).rstrip("/")
        return base + path

    def _signed(url: str, params: dict[str, str], signature: str | None) -> bool:
        if twilio_auth_token is None:
            return True
        return signature is not None and tw.validate_signature(
            twilio_auth_token, url, params, signature
        )

    @app.post("/twilio/voice")
    async def twilio_voice(request: Request) -> Response:
        # Twilio posts application/x-www-form-urlencoded (no multipart parser needed)
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        base = f"{request.url.scheme}://{request.url.netloc}"
        if not _signed(
            _public(base, "/twilio/voice"), form, request.headers.get("x-twilio-signature")
        ):
            return PlainTextResponse("invalid Twilio signature", status_code=403)
        ws_base = _public(base, "/twilio/media").replace("https://", "wss://")
        ws_url = ws_base.replace("http://", "ws://")
        return Response(tw.twiml_connect(ws_url), media_type="text/xml")

    @app.websocket("/twilio/media")
    async def twilio_media(ws: WebSocket) -> None:
        base = f"{'https' if ws.url.scheme == 'wss' else 'http'}://{ws.url.netloc}"
        signed = _signed(
            _public(base, "/twilio/media")
            .replace("https://", "wss://")
            .replace("http://", "ws://"),
            {},
            ws.headers.get("x-twilio-signature"),
        )
        await ws.accept()
        socket = StarletteSocket(ws)
        if not signed:
            await socket.close(UNAUTHORIZED, "invalid Twilio signature")
            return
        await run_call(TwilioBridge(agent.new_session(), socket))

    if (STATIC / "index.html").is_file():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/")
        async def index(request: Request) -> RedirectResponse:
            query = request.url.query  # ?token=..., ?transport=webrtc, ?raw=1 pass through
            return RedirectResponse("/static/index.html" + (f"?{query}" if query else ""))

    return app


def serve(
    agent: AgentFactory,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    max_sessions: int | None = None,
    drain_timeout: float = 10.0,
    twilio_auth_token: str | None = None,
    public_url: str | None = None,
) -> None:
    """Run the server until SIGINT/SIGTERM, then drain active calls (bounded) and stop."""
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        log.warning(
            "serving on %s without a token: anyone who reaches this address can talk to the "
            "agent (and spend your provider credits); pass --token",
            host,
        )
    app = create_app(
        agent,
        token=token,
        max_sessions=max_sessions,
        drain_timeout=drain_timeout,
        twilio_auth_token=twilio_auth_token,
        public_url=public_url,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=int(drain_timeout) + 5,
    )
    server = _DrainingServer(config, app.state.calls, drain_timeout)
    asyncio.run(server.run_draining())


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, but the first SIGINT/SIGTERM drains calls before it stops.

    A second signal stops at once (uvicorn's own handling).
    """

    def __init__(self, config: uvicorn.Config, registry: CallRegistry, drain_timeout: float):
        super().__init__(config)
        self._registry = registry
        self._drain_timeout = drain_timeout
        self._draining: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._draining is not None or self._loop is None:
            super().handle_exit(sig, frame)
            return
        log.info("draining active calls (up to %.0f s), then stopping", self._drain_timeout)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        await self._registry.drain(self._drain_timeout)
        self.should_exit = True

    async def run_draining(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self.serve()
        finally:
            if self._draining is not None:
                self._draining.cancel()
                await asyncio.gather(self._draining, return_exceptions=True)
