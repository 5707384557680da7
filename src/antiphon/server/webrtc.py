"""WebRTC's routes: ``GET /webrtc/config`` and ``POST /webrtc/offer``.

How it is built: :func:`add_webrtc_routes` adds both to the app of
:func:`~antiphon.server.app.create_app`, which passes in what they share with the other
call endpoints (the registry, the edge check ``refused``, the limits and the clock), as
:func:`~antiphon.server.telephony.add_carrier_routes` does for the carriers.

- ``/webrtc/config`` gives the page the same ICE servers as the server's peer
  connections, behind the token (TURN credentials are not for everyone).
- ``/webrtc/offer`` takes the browser's SDP offer as JSON (its body read under the
  edge's size and time limits), admits a :class:`~antiphon.transports.webrtc.WebRTCCall`
  (503 beyond ``max_sessions``) and answers. Unlike a WebSocket call, the request ends
  before the call does: the call runs in its own task, kept in ``calls`` for the app's
  shutdown to await, with its deadlines (connected within ``webrtc_connect_timeout``,
  then ``max_call_duration``) on the app's clock. aiortc is imported only here, on the
  first offer (501 without it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse

from antiphon.aio.clock import Clock
from antiphon.audio.recording import call_recorder
from antiphon.protocols import bounded_json
from antiphon.server.agents import AgentFactory
from antiphon.server.calls import CallRegistry
from antiphon.server.edge import FORBIDDEN, BodyTooLarge, read_body, token_ok
from antiphon.transports.ice import IceServer, browser_config
from antiphon.transports.limits import TIMED_OUT, EdgeLimits

__all__ = ["add_webrtc_routes"]


def add_webrtc_routes(
    app: FastAPI,
    *,
    agent: AgentFactory,
    registry: CallRegistry,
    token: str | None,
    refused: Callable[[Request | WebSocket], tuple[int, str] | None],
    limits: EdgeLimits,
    clock: Clock,
    ice_servers: Sequence[IceServer],
    record_dir: str | Path | None,
    calls: set[asyncio.Task[None]],
) -> None:
    """Serve ``/webrtc/config`` and ``/webrtc/offer`` (see the module docstring).

    Args:
        app: the app to add the routes to.
        agent: makes one session per call.
        registry: admits the calls (and drains them at shutdown).
        token: needed for the ICE configuration (None: no token).
        refused: the edge's check of a call request (origin, token): why it is refused.
        limits: the body's size and time limits, the calls' deadlines.
        clock: the clock of the deadlines.
        ice_servers: STUN/TURN servers, the server's and the page's.
        record_dir: record each call there (``webrtc-<time>-<id>.wav``; None: not).
        calls: the calls' tasks; each adds itself and leaves when it ends.
    """
    lim = limits

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
        calls.add(task)
        task.add_done_callback(calls.discard)
        return JSONResponse({"sdp": answer.sdp, "type": answer.type})
